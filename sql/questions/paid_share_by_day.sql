-- The share of plays made on a paid subscription, per calendar day (UTC).
SELECT
    CAST(sp.start_time AS DATE) AS day,
    COUNT(*) AS plays,
    SUM(CASE WHEN sp.level = 'paid' THEN 1 ELSE 0 END) AS paid_plays,
    CAST(SUM(CASE WHEN sp.level = 'paid' THEN 1 ELSE 0 END) AS DOUBLE) / COUNT(*) AS paid_share
FROM songplays sp
GROUP BY CAST(sp.start_time AS DATE)
ORDER BY day
