-- The consent ledger: append-only opt-ins and opt-outs per contact, channel and purpose (`*` for
-- every channel or every purpose). The consent in force is the newest record that covers the
-- (channel, purpose) asked about; records are never updated, except that a contact merge moves
-- them to the surviving contact.
CREATE TABLE consents (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL,
    contact_id    TEXT NOT NULL,
    channel       TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    status        TEXT NOT NULL,
    source        TEXT NOT NULL,
    evidence      TEXT NOT NULL,
    address       TEXT,
    recorded_at   INTEGER NOT NULL
);
-- A contact's ledger, newest first (the send path reads it for every message to a contact).
CREATE INDEX consents_contact ON consents (workspace_id, contact_id, id);
-- The workspace's opt-outs, newest first (GET /v1/opt-outs).
CREATE INDEX consents_opt_outs ON consents (workspace_id, id) WHERE status = 'opted_out';

-- A workspace's messaging policy (quiet hours, caps, keywords, replies) as JSON; none: defaults.
CREATE TABLE messaging_policies (
    workspace_id  TEXT PRIMARY KEY,
    policy        TEXT NOT NULL,
    updated_at    INTEGER NOT NULL
);
