-- Community lists users share and subscribe to, and their moderation.

CREATE TABLE community_lists (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_user_id   UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    description     TEXT CHECK (char_length(description) <= 2000),
    criteria        TEXT NOT NULL CHECK (char_length(criteria) BETWEEN 1 AND 500),
    visibility      TEXT NOT NULL DEFAULT 'public' CHECK (visibility IN ('public', 'unlisted', 'private')),
    status          TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'under_review', 'hidden', 'removed')),
    version         INTEGER NOT NULL DEFAULT 1 CHECK (version > 0),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (owner_user_id, name)
);
CREATE INDEX community_lists_public_idx ON community_lists (created_at DESC)
    WHERE visibility = 'public' AND status = 'active';
CREATE TRIGGER community_lists_updated_at BEFORE UPDATE ON community_lists
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE community_list_items (
    list_id         UUID NOT NULL REFERENCES community_lists (id) ON DELETE CASCADE,
    artist_id       UUID NOT NULL REFERENCES artists (id) ON DELETE CASCADE,
    rationale       TEXT CHECK (char_length(rationale) <= 1000),
    source_url      TEXT,
    added_by        UUID REFERENCES users (id) ON DELETE SET NULL,
    added_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (list_id, artist_id)
);
CREATE INDEX community_list_items_artist_idx ON community_list_items (artist_id);

CREATE TABLE community_list_subscriptions (
    user_id             UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    list_id             UUID NOT NULL REFERENCES community_lists (id) ON DELETE CASCADE,
    version_pinned      INTEGER CHECK (version_pinned > 0),
    auto_update         BOOLEAN NOT NULL DEFAULT TRUE,
    subscribed_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, list_id)
);
CREATE INDEX community_list_subscriptions_list_idx ON community_list_subscriptions (list_id);

CREATE TABLE content_reports (
    id                  UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    reporter_user_id    UUID REFERENCES users (id) ON DELETE SET NULL,
    target_type         TEXT NOT NULL CHECK (target_type IN ('community_list', 'list_item', 'user')),
    target_id           TEXT NOT NULL,
    reason              TEXT NOT NULL CHECK (reason IN ('spam', 'harassment', 'misinformation', 'hate', 'other')),
    details             TEXT CHECK (char_length(details) <= 2000),
    status              TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'reviewing', 'actioned', 'dismissed')),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at         TIMESTAMPTZ
);
CREATE INDEX content_reports_open_idx ON content_reports (created_at) WHERE status IN ('open', 'reviewing');
CREATE INDEX content_reports_target_idx ON content_reports (target_type, target_id);

CREATE TABLE moderation_actions (
    id                  UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    report_id           UUID REFERENCES content_reports (id) ON DELETE SET NULL,
    moderator_user_id   UUID REFERENCES users (id) ON DELETE SET NULL,
    target_type         TEXT NOT NULL,
    target_id           TEXT NOT NULL,
    action              TEXT NOT NULL CHECK (action IN ('warn', 'hide', 'remove', 'restore', 'suspend_user', 'dismiss')),
    reason              TEXT NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX moderation_actions_target_idx ON moderation_actions (target_type, target_id, created_at DESC);
CREATE INDEX moderation_actions_report_idx ON moderation_actions (report_id);
