-- A default do-not-play list for each test user, with sample entries.
-- Users are found by email, so a developer who registered test@example.com
-- through the app before seeding gets the same data.

INSERT INTO dnp_lists (user_id, name, is_default)
SELECT u.id, 'My DNP list', TRUE
FROM (VALUES ('test@example.com'), ('dev@example.com')) AS v (email)
JOIN users u ON u.email = v.email
ON CONFLICT (user_id, name) DO UPDATE SET
    is_default = EXCLUDED.is_default
WHERE current_setting('dbctl.refresh', true) = 'on';

INSERT INTO dnp_entries (list_id, artist_id, tags, note)
SELECT l.id, v.artist_id::uuid, v.tags::text[], v.note
FROM (VALUES
    ('test@example.com', '5eed0000-0000-4000-b000-000000000001', '{"overplayed"}', 'Seed entry: hears him everywhere'),
    ('test@example.com', '5eed0000-0000-4000-b000-000000000003', '{"conduct"}', 'Seed entry: 2009 felony assault conviction'),
    ('dev@example.com', '5eed0000-0000-4000-b000-000000000002', '{"statements"}', 'Seed entry for testing')
) AS v (email, artist_id, tags, note)
JOIN users u ON u.email = v.email
JOIN dnp_lists l ON l.user_id = u.id AND l.name = 'My DNP list'
ON CONFLICT (list_id, artist_id) DO UPDATE SET
    tags = EXCLUDED.tags,
    note = EXCLUDED.note
WHERE current_setting('dbctl.refresh', true) = 'on';
