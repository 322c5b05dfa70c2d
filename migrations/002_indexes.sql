-- Indexes for the queries the backend runs on every request.

CREATE INDEX users_created_at_idx ON users (created_at);
CREATE INDEX artists_canonical_name_lower_idx ON artists (lower(canonical_name));
CREATE INDEX artists_aliases_gin_idx ON artists USING gin (aliases);
CREATE INDEX artist_external_ids_artist_idx ON artist_external_ids (artist_id);
CREATE INDEX user_streaming_connections_user_idx ON user_streaming_connections (user_id);
CREATE INDEX user_streaming_connections_expiring_idx ON user_streaming_connections (token_expires_at)
    WHERE status = 'active';
CREATE INDEX dnp_lists_user_idx ON dnp_lists (user_id);
CREATE UNIQUE INDEX dnp_lists_one_default_per_user_idx ON dnp_lists (user_id) WHERE is_default;
CREATE INDEX dnp_entries_artist_idx ON dnp_entries (artist_id);
CREATE INDEX dnp_entries_created_at_idx ON dnp_entries (list_id, created_at DESC);
