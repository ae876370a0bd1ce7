-- Plays per hour of day (UTC), split by the subscription level at the time of the play.
-- Hours without any play have no row.
SELECT
    t.hour AS hour,
    SUM(CASE WHEN sp.level = 'free' THEN 1 ELSE 0 END) AS free_plays,
    SUM(CASE WHEN sp.level = 'paid' THEN 1 ELSE 0 END) AS paid_plays,
    COUNT(*) AS plays
FROM songplays sp
JOIN time t ON t.start_time = sp.start_time
GROUP BY t.hour
ORDER BY t.hour
