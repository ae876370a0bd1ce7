-- Plays and distinct active users per calendar day (UTC).
SELECT
    CAST(sp.start_time AS DATE) AS day,
    COUNT(*) AS plays,
    COUNT(DISTINCT sp.user_id) AS users
FROM songplays sp
GROUP BY CAST(sp.start_time AS DATE)
ORDER BY day
