-- Example community lists with items, and the test users' subscriptions to them.

INSERT INTO community_lists (owner_user_id, name, description, criteria, visibility)
SELECT u.id, v.name, v.description, v.criteria, v.visibility
FROM (VALUES
    ('dev@example.com', 'Overplayed hip-hop',
     'Seed data: artists the owner hears too often.', 'Chart-topping hip-hop artists', 'public'),
    ('test@example.com', 'Test list',
     'Seed data for testing unlisted lists.', 'Anything the tests need', 'unlisted')
) AS v (email, name, description, criteria, visibility)
JOIN users u ON u.email = v.email
ON CONFLICT (owner_user_id, name) DO UPDATE SET
    description = EXCLUDED.description,
    criteria = EXCLUDED.criteria,
    visibility = EXCLUDED.visibility,
    status = 'active'
WHERE current_setting('dbctl.refresh', true) = 'on';

INSERT INTO community_list_items (list_id, artist_id, rationale, added_by)
SELECT l.id, v.artist_id::uuid, v.rationale, u.id
FROM (VALUES
    ('dev@example.com', 'Overplayed hip-hop', '5eed0000-0000-4000-b000-000000000001', 'On every playlist'),
    ('dev@example.com', 'Overplayed hip-hop', '5eed0000-0000-4000-b000-000000000002', 'On every playlist'),
    ('test@example.com', 'Test list', '5eed0000-0000-4000-b000-000000000003', 'Seed item for testing')
) AS v (email, list_name, artist_id, rationale)
JOIN users u ON u.email = v.email
JOIN community_lists l ON l.owner_user_id = u.id AND l.name = v.list_name
ON CONFLICT (list_id, artist_id) DO UPDATE SET
    rationale = EXCLUDED.rationale
WHERE current_setting('dbctl.refresh', true) = 'on';

INSERT INTO community_list_subscriptions (user_id, list_id, auto_update)
SELECT s.id, l.id, TRUE
FROM (VALUES
    ('test@example.com', 'dev@example.com', 'Overplayed hip-hop'),
    ('dev@example.com', 'test@example.com', 'Test list')
) AS v (subscriber, owner, list_name)
JOIN users s ON s.email = v.subscriber
JOIN users o ON o.email = v.owner
JOIN community_lists l ON l.owner_user_id = o.id AND l.name = v.list_name
ON CONFLICT (user_id, list_id) DO UPDATE SET
    version_pinned = NULL,
    auto_update = EXCLUDED.auto_update
WHERE current_setting('dbctl.refresh', true) = 'on';
