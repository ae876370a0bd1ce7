-- The most played songs, over matched plays only (an unmatched play has no song).
-- A song is a title by an artist name: catalogue duplicates of one recording count once.
SELECT
    s.title AS title,
    a.name AS artist,
    COUNT(*) AS plays
FROM songplays sp
JOIN songs s ON s.song_id = sp.song_id
LEFT JOIN artists a ON a.artist_id = s.artist_id
GROUP BY s.title, a.name
ORDER BY plays DESC, title, artist NULLS LAST
LIMIT 20
