-- Parley schema, PostgreSQL flavour. Kept in step with ../sqlite/0001_init.sql: the same tables and
-- columns (a test compares them). Times are BIGINT milliseconds since the Unix epoch, UTC;
-- flags are BOOLEAN; JSON is TEXT, so that both backends store the same serialisation.
-- Ids are compared and ordered byte-wise (COLLATE "C"): UUIDv7 hex sorts by creation time, which
-- cursor pagination relies on, whatever the database's default collation.

CREATE TABLE workspaces (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT COLLATE "C" PRIMARY KEY,
    workspace_id  TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id),
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    hash          TEXT NOT NULL UNIQUE,
    scopes        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX api_keys_workspace ON api_keys (workspace_id, id);

CREATE TABLE channel_accounts (
    id                     TEXT COLLATE "C" PRIMARY KEY,
    workspace_id           TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id),
    channel                TEXT NOT NULL,
    provider               TEXT NOT NULL,
    name                   TEXT NOT NULL,
    config                 TEXT NOT NULL,
    rate_limit_per_second  BIGINT NOT NULL,
    max_in_flight          BIGINT NOT NULL,
    is_default             BOOLEAN NOT NULL,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);
CREATE INDEX channel_accounts_workspace ON channel_accounts (workspace_id, channel);

CREATE TABLE messages (
    id                   TEXT COLLATE "C" PRIMARY KEY,
    workspace_id         TEXT COLLATE "C" NOT NULL,
    direction            TEXT NOT NULL,
    channel              TEXT NOT NULL,
    channel_account_id   TEXT COLLATE "C" NOT NULL,
    to_address           TEXT NOT NULL,
    from_address         TEXT,
    status               TEXT NOT NULL,
    content              TEXT NOT NULL,
    send_at              BIGINT,
    expires_at           BIGINT NOT NULL,
    validity_seconds     BIGINT NOT NULL,
    metadata             TEXT NOT NULL,
    client_reference     TEXT,
    provider_message_id  TEXT,
    attempts             BIGINT NOT NULL,
    error_code           TEXT,
    error_detail         TEXT,
    error_permanent      BOOLEAN,
    sequence             BIGINT NOT NULL,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
CREATE INDEX messages_workspace ON messages (workspace_id, id);
CREATE INDEX messages_workspace_status ON messages (workspace_id, status, id);
CREATE INDEX messages_workspace_to ON messages (workspace_id, to_address, id);
-- Not unique: some providers (SMPP) reuse ids over time; the newest match wins.
CREATE INDEX messages_provider ON messages (channel_account_id, provider_message_id);

-- One row per observation of a message. `position` orders the whole feed (tail, streams).
CREATE TABLE message_events (
    position             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                   TEXT COLLATE "C" NOT NULL UNIQUE,
    message_id           TEXT COLLATE "C" NOT NULL,
    workspace_id         TEXT COLLATE "C" NOT NULL,
    sequence             BIGINT NOT NULL,
    kind                 TEXT NOT NULL,
    occurred_at          BIGINT NOT NULL,
    recorded_at          BIGINT NOT NULL,
    applied              BOOLEAN NOT NULL,
    attempt              BIGINT,
    provider_message_id  TEXT,
    error_code           TEXT,
    error_detail         TEXT,
    error_permanent      BOOLEAN,
    retry_at             BIGINT,
    UNIQUE (message_id, sequence)
);
CREATE INDEX message_events_workspace ON message_events (workspace_id, position);

-- The durable queue: one row per outbound message still to be handed to a provider.
CREATE TABLE dispatch_jobs (
    message_id          TEXT COLLATE "C" PRIMARY KEY,
    workspace_id        TEXT COLLATE "C" NOT NULL,
    channel_account_id  TEXT COLLATE "C" NOT NULL,
    due_at              BIGINT NOT NULL,
    attempt             BIGINT NOT NULL,
    lease_owner         TEXT,
    lease_until         BIGINT,
    created_at          BIGINT NOT NULL
);
CREATE INDEX dispatch_jobs_due ON dispatch_jobs (due_at);
-- message_stats counts a workspace's jobs; release_leases finds an owner's.
CREATE INDEX dispatch_jobs_workspace ON dispatch_jobs (workspace_id);
CREATE INDEX dispatch_jobs_owner ON dispatch_jobs (lease_owner) WHERE lease_owner IS NOT NULL;

-- Receipts that arrived before the `sent` outcome they belong to was committed.
CREATE TABLE pending_receipts (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel_account_id   TEXT COLLATE "C" NOT NULL,
    provider_message_id  TEXT NOT NULL,
    state                TEXT NOT NULL,
    occurred_at          BIGINT NOT NULL,
    error_code           TEXT,
    error_detail         TEXT,
    error_permanent      BOOLEAN,
    received_at          BIGINT NOT NULL
);
CREATE INDEX pending_receipts_lookup ON pending_receipts (channel_account_id, provider_message_id);

CREATE TABLE idempotency_keys (
    workspace_id     TEXT COLLATE "C" NOT NULL,
    key              TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    response_status  BIGINT NOT NULL,
    response_body    BYTEA NOT NULL,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, key)
);
-- purge_idempotency deletes by age.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
