-- Where the plays come from: the user's location as logged with each play.
SELECT
    sp.location AS location,
    COUNT(*) AS plays,
    COUNT(DISTINCT sp.user_id) AS users
FROM songplays sp
WHERE sp.location IS NOT NULL
GROUP BY sp.location
ORDER BY plays DESC, location
LIMIT 20
