-- Test artists and their real ids on the streaming services the schema models.
-- Only ids checked against the services' public catalogues are listed; Chris
-- Brown's Deezer id is left out because it could not be confirmed.

INSERT INTO artists (id, canonical_name, aliases, genres)
VALUES
    ('5eed0000-0000-4000-b000-000000000001', 'Drake', '{"Drizzy", "Aubrey Graham"}', '{"hip hop", "r&b"}'),
    ('5eed0000-0000-4000-b000-000000000002', 'Kanye West', '{"Ye"}', '{"hip hop"}'),
    ('5eed0000-0000-4000-b000-000000000003', 'Chris Brown', '{"Breezy"}', '{"r&b", "pop"}')
ON CONFLICT (id) DO UPDATE SET
    canonical_name = EXCLUDED.canonical_name,
    aliases = EXCLUDED.aliases,
    genres = EXCLUDED.genres
WHERE current_setting('dbctl.refresh', true) = 'on';

-- An id that already belongs to another artist (one a developer added by hand)
-- is skipped rather than failing the whole seed on UNIQUE (service, external_id).
INSERT INTO artist_external_ids (artist_id, service, external_id)
SELECT v.artist_id::uuid, v.service::streaming_service, v.external_id
FROM (VALUES
    ('5eed0000-0000-4000-b000-000000000001', 'spotify', '3TVXtAsR1Inumwj472S9r4'),
    ('5eed0000-0000-4000-b000-000000000001', 'apple_music', '271256'),
    ('5eed0000-0000-4000-b000-000000000001', 'deezer', '246791'),
    ('5eed0000-0000-4000-b000-000000000001', 'musicbrainz', '9fff2f8a-21e6-47de-a2b8-7f449929d43f'),
    ('5eed0000-0000-4000-b000-000000000002', 'spotify', '5K4W6rqBFWDnAN6FQUkS6x'),
    ('5eed0000-0000-4000-b000-000000000002', 'apple_music', '2715720'),
    ('5eed0000-0000-4000-b000-000000000002', 'deezer', '230'),
    ('5eed0000-0000-4000-b000-000000000002', 'musicbrainz', '164f0d73-1234-4e2c-8743-d77bf2191051'),
    ('5eed0000-0000-4000-b000-000000000003', 'spotify', '7bXgB6jMjp9ATFy66eO08Z'),
    ('5eed0000-0000-4000-b000-000000000003', 'apple_music', '95705522'),
    ('5eed0000-0000-4000-b000-000000000003', 'musicbrainz', 'c234fa42-e6a6-443e-937e-2f4b073538a3')
) AS v (artist_id, service, external_id)
WHERE NOT EXISTS (
    SELECT 1 FROM artist_external_ids e
    WHERE e.service = v.service::streaming_service AND e.external_id = v.external_id
      AND e.artist_id <> v.artist_id::uuid
)
ON CONFLICT (artist_id, service) DO UPDATE SET
    external_id = EXCLUDED.external_id
WHERE current_setting('dbctl.refresh', true) = 'on';
