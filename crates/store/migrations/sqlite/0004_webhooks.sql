-- Webhooks. Kept in step with ../postgres/0004_webhooks.sql (a test compares them).

-- Where a workspace's events are POSTed. `cursor` is the feed position (message_events.position)
-- up to which the endpoint's deliverer has handled every event; `event_types` is a JSON array of
-- strings. One deliverer holds an endpoint at a time (`lease_owner` until `lease_until`).
CREATE TABLE webhook_endpoints (
    id                          TEXT PRIMARY KEY,
    workspace_id                TEXT NOT NULL REFERENCES workspaces(id),
    url                         TEXT NOT NULL,
    description                 TEXT,
    event_types                 TEXT NOT NULL,
    enabled                     INTEGER NOT NULL,
    secret                      TEXT NOT NULL,
    previous_secret             TEXT,
    previous_secret_expires_at  INTEGER,
    cursor                      INTEGER NOT NULL,
    failing_since               INTEGER,
    disabled_reason             TEXT,
    disabled_at                 INTEGER,
    created_at                  INTEGER NOT NULL,
    updated_at                  INTEGER NOT NULL,
    lease_owner                 TEXT,
    lease_until                 INTEGER
);
CREATE INDEX webhook_endpoints_workspace ON webhook_endpoints (workspace_id, id);

-- Events owed to an endpoint outside its feed order: retries and redeliveries.
CREATE TABLE webhook_deliveries (
    endpoint_id       TEXT NOT NULL,
    workspace_id      TEXT NOT NULL,
    event_id          TEXT NOT NULL,
    position          INTEGER NOT NULL,
    attempts          INTEGER NOT NULL,
    next_attempt_at   INTEGER NOT NULL,
    first_attempt_at  INTEGER NOT NULL,
    manual            INTEGER NOT NULL,
    PRIMARY KEY (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_at);

-- One row per attempt to deliver an event to an endpoint.
CREATE TABLE webhook_attempts (
    id                TEXT PRIMARY KEY,
    workspace_id      TEXT NOT NULL,
    endpoint_id       TEXT NOT NULL,
    event_id          TEXT NOT NULL,
    event_type        TEXT NOT NULL,
    attempt           INTEGER NOT NULL,
    manual            INTEGER NOT NULL,
    status_code       INTEGER,
    succeeded         INTEGER NOT NULL,
    error             TEXT,
    latency_ms        INTEGER NOT NULL,
    response_excerpt  TEXT,
    attempted_at      INTEGER NOT NULL,
    next_attempt_at   INTEGER
);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, id);

-- Events about a workspace rather than one message (`endpoint.disabled`); `data` is a JSON object.
CREATE TABLE workspace_events (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    data          TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX workspace_events_workspace ON workspace_events (workspace_id, created_at, id);
