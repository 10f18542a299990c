-- Conversations: one continuous thread with a contact across every channel. A contact has at most
-- one open conversation (the partial unique index); messages point at theirs
-- (messages.conversation_id, migration 0008).
CREATE TABLE conversations (
    id                               TEXT PRIMARY KEY,
    workspace_id                     TEXT NOT NULL,
    contact_id                       TEXT NOT NULL,
    status                           TEXT NOT NULL,
    assignee_kind                    TEXT,
    assignee_id                      TEXT,
    last_channel                     TEXT NOT NULL,
    last_inbound_channel             TEXT,
    last_inbound_channel_account_id  TEXT,
    last_inbound_at                  BIGINT,
    last_message_at                  BIGINT NOT NULL,
    message_count                    BIGINT NOT NULL,
    opened_at                        BIGINT NOT NULL,
    closed_at                        BIGINT,
    close_reason                     TEXT,
    created_at                       BIGINT NOT NULL,
    updated_at                       BIGINT NOT NULL
);
CREATE UNIQUE INDEX conversations_open_per_contact ON conversations (workspace_id, contact_id) WHERE status = 'open';
CREATE INDEX conversations_workspace ON conversations (workspace_id, id);
CREATE INDEX conversations_contact ON conversations (workspace_id, contact_id, id);
-- The idle closer's scan: open conversations by their last message.
CREATE INDEX conversations_idle ON conversations (last_message_at) WHERE status = 'open';

-- What happened to a conversation besides its messages (opened, assigned, handed off, closed).
CREATE TABLE conversation_activities (
    id               TEXT PRIMARY KEY,
    conversation_id  TEXT NOT NULL,
    workspace_id     TEXT NOT NULL,
    kind             TEXT NOT NULL,
    assignee_kind    TEXT,
    assignee_id      TEXT,
    note             TEXT,
    reason           TEXT,
    at               BIGINT NOT NULL
);
CREATE INDEX conversation_activities_conversation ON conversation_activities (conversation_id, at, id);
