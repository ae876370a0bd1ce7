-- All plays at a glance. A play is "matched" when the job found its song in the
-- catalogue (song_id not null); song and artist rankings can only count those.
SELECT
    COUNT(*) AS plays,
    COUNT(sp.song_id) AS matched_plays,
    CAST(COUNT(sp.song_id) AS DOUBLE) / NULLIF(COUNT(*), 0) AS matched_share,
    COUNT(DISTINCT sp.user_id) AS users,
    CAST(MIN(sp.start_time) AS DATE) AS first_day,
    CAST(MAX(sp.start_time) AS DATE) AS last_day
FROM songplays sp
