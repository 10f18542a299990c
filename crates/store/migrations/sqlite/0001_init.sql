-- Parley schema, SQLite flavour. Kept in step with ../postgres/0001_init.sql: the same tables and
-- columns (a test compares them). Times are INTEGER milliseconds since the Unix epoch, UTC;
-- booleans are INTEGER 0/1; JSON is TEXT.

CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    hash          TEXT NOT NULL UNIQUE,
    scopes        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);
CREATE INDEX api_keys_workspace ON api_keys (workspace_id, id);

CREATE TABLE channel_accounts (
    id                     TEXT PRIMARY KEY,
    workspace_id           TEXT NOT NULL REFERENCES workspaces(id),
    channel                TEXT NOT NULL,
    provider               TEXT NOT NULL,
    name                   TEXT NOT NULL,
    config                 TEXT NOT NULL,
    rate_limit_per_second  INTEGER NOT NULL,
    max_in_flight          INTEGER NOT NULL,
    is_default             INTEGER NOT NULL,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL
);
CREATE INDEX channel_accounts_workspace ON channel_accounts (workspace_id, channel);

CREATE TABLE messages (
    id                   TEXT PRIMARY KEY,
    workspace_id         TEXT NOT NULL,
    direction            TEXT NOT NULL,
    channel              TEXT NOT NULL,
    channel_account_id   TEXT NOT NULL,
    to_address           TEXT NOT NULL,
    from_address         TEXT,
    status               TEXT NOT NULL,
    content              TEXT NOT NULL,
    send_at              INTEGER,
    expires_at           INTEGER NOT NULL,
    validity_seconds     INTEGER NOT NULL,
    metadata             TEXT NOT NULL,
    client_reference     TEXT,
    provider_message_id  TEXT,
    attempts             INTEGER NOT NULL,
    error_code           TEXT,
    error_detail         TEXT,
    error_permanent      INTEGER,
    sequence             INTEGER NOT NULL,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);
CREATE INDEX messages_workspace ON messages (workspace_id, id);
CREATE INDEX messages_workspace_status ON messages (workspace_id, status, id);
CREATE INDEX messages_workspace_to ON messages (workspace_id, to_address, id);
-- Not unique: some providers (SMPP) reuse ids over time; the newest match wins.
CREATE INDEX messages_provider ON messages (channel_account_id, provider_message_id);

-- One row per observation of a message. `position` orders the whole feed (tail, streams).
CREATE TABLE message_events (
    position             INTEGER PRIMARY KEY AUTOINCREMENT,
    id                   TEXT NOT NULL UNIQUE,
    message_id           TEXT NOT NULL,
    workspace_id         TEXT NOT NULL,
    sequence             INTEGER NOT NULL,
    kind                 TEXT NOT NULL,
    occurred_at          INTEGER NOT NULL,
    recorded_at          INTEGER NOT NULL,
    applied              INTEGER NOT NULL,
    attempt              INTEGER,
    provider_message_id  TEXT,
    error_code           TEXT,
    error_detail         TEXT,
    error_permanent      INTEGER,
    retry_at             INTEGER,
    UNIQUE (message_id, sequence)
);
CREATE INDEX message_events_workspace ON message_events (workspace_id, position);

-- The durable queue: one row per outbound message still to be handed to a provider.
CREATE TABLE dispatch_jobs (
    message_id          TEXT PRIMARY KEY,
    workspace_id        TEXT NOT NULL,
    channel_account_id  TEXT NOT NULL,
    due_at              INTEGER NOT NULL,
    attempt             INTEGER NOT NULL,
    lease_owner         TEXT,
    lease_until         INTEGER,
    created_at          INTEGER NOT NULL
);
CREATE INDEX dispatch_jobs_due ON dispatch_jobs (due_at);

-- Receipts that arrived before the `sent` outcome they belong to was committed.
CREATE TABLE pending_receipts (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_account_id   TEXT NOT NULL,
    provider_message_id  TEXT NOT NULL,
    state                TEXT NOT NULL,
    occurred_at          INTEGER NOT NULL,
    error_code           TEXT,
    error_detail         TEXT,
    error_permanent      INTEGER,
    received_at          INTEGER NOT NULL
);
CREATE INDEX pending_receipts_lookup ON pending_receipts (channel_account_id, provider_message_id);

CREATE TABLE idempotency_keys (
    workspace_id     TEXT NOT NULL,
    key              TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    response_status  INTEGER NOT NULL,
    response_body    BLOB NOT NULL,
    created_at       INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, key)
);
