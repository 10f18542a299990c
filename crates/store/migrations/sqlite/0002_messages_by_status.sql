-- Messages by state across workspaces: at start-up the engine hands the messages still waiting
-- for a receipt (state `sent`) back to their connectors.
CREATE INDEX messages_status ON messages (status, id);
