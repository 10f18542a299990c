-- GET /v1/analytics/messages reads the outbound messages of a workspace created in a window, and
-- for each asks whether its recipient wrote back on the same channel account within 24 hours.
-- Both indexes are partial, so each direction pays only for the index it uses.
--
-- The window: a range of created_at within the workspace (outbound messages only).
CREATE INDEX messages_outbound_created ON messages (workspace_id, created_at) WHERE direction = 'outbound';
-- Replies: inbound messages by channel account and sender, in time order, so that the reply check
-- of one outbound message is a single index range probe.
CREATE INDEX messages_inbound_from ON messages (channel_account_id, from_address, created_at)
    WHERE direction = 'inbound';
