-- Channel accounts get sealed credentials (encrypted by the engine; the store never sees them in
-- the clear), a masked hint of them for display, and soft deletion (messages keep referring to
-- a deleted account).
ALTER TABLE channel_accounts ADD COLUMN credentials TEXT;
ALTER TABLE channel_accounts ADD COLUMN credentials_hint TEXT;
ALTER TABLE channel_accounts ADD COLUMN deleted_at BIGINT;

-- What else a provider said about an event (WhatsApp's pricing and conversation, an SMPP
-- receipt's text), kept as JSON on the event and on a receipt waiting for its message.
ALTER TABLE message_events ADD COLUMN details TEXT;
ALTER TABLE pending_receipts ADD COLUMN details TEXT;
