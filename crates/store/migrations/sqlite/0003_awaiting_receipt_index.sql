-- Replaces messages_status: the only query by state across workspaces asks for the messages in
-- state `sent` (handed back to their connectors at start-up). A partial index is written only
-- when a message enters or leaves that state, instead of on every change of state.
DROP INDEX messages_status;
CREATE INDEX messages_awaiting_receipt ON messages (id) WHERE status = 'sent';
