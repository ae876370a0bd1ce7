-- The users with the most plays, with their current subscription level (users.level).
SELECT
    sp.user_id AS user_id,
    u.first_name AS first_name,
    u.last_name AS last_name,
    u.level AS current_level,
    COUNT(*) AS plays
FROM songplays sp
LEFT JOIN users u ON u.user_id = sp.user_id
GROUP BY sp.user_id, u.first_name, u.last_name, u.level
ORDER BY plays DESC, user_id
LIMIT 20
