-- Core tables: users, artists with their ids on each streaming service,
-- users' connections to streaming services, and per-user do-not-play (DNP) lists.

CREATE EXTENSION IF NOT EXISTS pgcrypto;  -- gen_random_uuid() before PostgreSQL 13
CREATE EXTENSION IF NOT EXISTS citext;

CREATE TABLE users (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email           CITEXT NOT NULL UNIQUE CHECK (email ~ '^[^@[:space:]]+@[^@[:space:]]+$'),
    password_hash   TEXT NOT NULL CHECK (password_hash LIKE '$argon2%'),
    display_name    TEXT CHECK (char_length(display_name) <= 100),
    email_verified  BOOLEAN NOT NULL DEFAULT FALSE,
    totp_secret     TEXT,
    totp_enabled    BOOLEAN NOT NULL DEFAULT FALSE,
    settings        JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_login_at   TIMESTAMPTZ,
    CHECK (NOT totp_enabled OR totp_secret IS NOT NULL)
);

CREATE TYPE streaming_service AS ENUM (
    'spotify', 'apple_music', 'youtube_music', 'tidal', 'deezer', 'amazon_music', 'musicbrainz'
);

CREATE TABLE artists (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    canonical_name  TEXT NOT NULL CHECK (char_length(canonical_name) BETWEEN 1 AND 200),
    aliases         TEXT[] NOT NULL DEFAULT '{}',
    image_url       TEXT,
    genres          TEXT[] NOT NULL DEFAULT '{}',
    metadata        JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per (artist, service): the artist's id on that service.
CREATE TABLE artist_external_ids (
    artist_id       UUID NOT NULL REFERENCES artists (id) ON DELETE CASCADE,
    service         streaming_service NOT NULL,
    external_id     TEXT NOT NULL CHECK (external_id <> ''),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (artist_id, service),
    UNIQUE (service, external_id)
);

CREATE TABLE user_streaming_connections (
    id                      UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                 UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    service                 streaming_service NOT NULL,
    provider_user_id        TEXT NOT NULL,
    access_token_encrypted  BYTEA,
    refresh_token_encrypted BYTEA,
    token_expires_at        TIMESTAMPTZ,
    scopes                  TEXT[] NOT NULL DEFAULT '{}',
    status                  TEXT NOT NULL DEFAULT 'active'
                            CHECK (status IN ('active', 'expired', 'revoked', 'error')),
    last_sync_at            TIMESTAMPTZ,
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (user_id, service),
    UNIQUE (service, provider_user_id)
);

-- The do-not-play list: artists a user never wants to hear.
CREATE TABLE dnp_lists (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        TEXT NOT NULL DEFAULT 'My DNP list' CHECK (char_length(name) BETWEEN 1 AND 100),
    is_default  BOOLEAN NOT NULL DEFAULT TRUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (user_id, name)
);

CREATE TABLE dnp_entries (
    list_id     UUID NOT NULL REFERENCES dnp_lists (id) ON DELETE CASCADE,
    artist_id   UUID NOT NULL REFERENCES artists (id) ON DELETE CASCADE,
    tags        TEXT[] NOT NULL DEFAULT '{}',
    note        TEXT CHECK (char_length(note) <= 500),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (list_id, artist_id)
);

CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER users_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER artists_updated_at BEFORE UPDATE ON artists
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER user_streaming_connections_updated_at BEFORE UPDATE ON user_streaming_connections
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER dnp_lists_updated_at BEFORE UPDATE ON dnp_lists
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
