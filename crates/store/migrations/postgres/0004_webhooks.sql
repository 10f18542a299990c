-- Webhooks. Kept in step with ../sqlite/0004_webhooks.sql (a test compares them).

-- Where a workspace's events are POSTed. `cursor` is the feed position (message_events.position)
-- up to which the endpoint's deliverer has handled every event; `event_types` is a JSON array of
-- strings. One deliverer holds an endpoint at a time (`lease_owner` until `lease_until`).
CREATE TABLE webhook_endpoints (
    id                          TEXT COLLATE "C" PRIMARY KEY,
    workspace_id                TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id),
    url                         TEXT NOT NULL,
    description                 TEXT,
    event_types                 TEXT NOT NULL,
    enabled                     BOOLEAN NOT NULL,
    secret                      TEXT NOT NULL,
    previous_secret             TEXT,
    previous_secret_expires_at  BIGINT,
    cursor                      BIGINT NOT NULL,
    failing_since               BIGINT,
    disabled_reason             TEXT,
    disabled_at                 BIGINT,
    created_at                  BIGINT NOT NULL,
    updated_at                  BIGINT NOT NULL,
    lease_owner                 TEXT,
    lease_until                 BIGINT
);
CREATE INDEX webhook_endpoints_workspace ON webhook_endpoints (workspace_id, id);

-- Events owed to an endpoint outside its feed order: retries and redeliveries.
CREATE TABLE webhook_deliveries (
    endpoint_id       TEXT COLLATE "C" NOT NULL,
    workspace_id      TEXT COLLATE "C" NOT NULL,
    event_id          TEXT COLLATE "C" NOT NULL,
    position          BIGINT NOT NULL,
    attempts          BIGINT NOT NULL,
    next_attempt_at   BIGINT NOT NULL,
    first_attempt_at  BIGINT NOT NULL,
    manual            BOOLEAN NOT NULL,
    PRIMARY KEY (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_at);

-- One row per attempt to deliver an event to an endpoint.
CREATE TABLE webhook_attempts (
    id                TEXT COLLATE "C" PRIMARY KEY,
    workspace_id      TEXT COLLATE "C" NOT NULL,
    endpoint_id       TEXT COLLATE "C" NOT NULL,
    event_id          TEXT COLLATE "C" NOT NULL,
    event_type        TEXT NOT NULL,
    attempt           BIGINT NOT NULL,
    manual            BOOLEAN NOT NULL,
    status_code       BIGINT,
    succeeded         BOOLEAN NOT NULL,
    error             TEXT,
    latency_ms        BIGINT NOT NULL,
    response_excerpt  TEXT,
    attempted_at      BIGINT NOT NULL,
    next_attempt_at   BIGINT
);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, id);

-- Events about a workspace rather than one message (`endpoint.disabled`); `data` is a JSON object.
CREATE TABLE workspace_events (
    id            TEXT COLLATE "C" PRIMARY KEY,
    workspace_id  TEXT COLLATE "C" NOT NULL,
    event_type    TEXT NOT NULL,
    data          TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX workspace_events_workspace ON workspace_events (workspace_id, created_at, id);
