-- The most played artists, over matched plays only, with how many users played them.
SELECT
    a.name AS artist,
    COUNT(*) AS plays,
    COUNT(DISTINCT sp.user_id) AS users
FROM songplays sp
JOIN artists a ON a.artist_id = sp.artist_id
GROUP BY a.name
ORDER BY plays DESC, artist NULLS LAST
LIMIT 20
