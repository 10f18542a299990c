-- Messages learn who they are for and why: the contact they were sent to or came from (when
-- Parley knows one), the contact's conversation they belong to, and the purpose of an outbound
-- message (`transactional`, `marketing`, …), which consent, quiet hours and frequency caps depend
-- on. Earlier messages have none of them.
ALTER TABLE messages ADD COLUMN contact_id TEXT;
ALTER TABLE messages ADD COLUMN conversation_id TEXT;
ALTER TABLE messages ADD COLUMN purpose TEXT;
-- A contact's messages in time order: its history, a merge re-pointing them, frequency caps.
CREATE INDEX messages_contact ON messages (workspace_id, contact_id, created_at) WHERE contact_id IS NOT NULL;
-- A conversation's cross-channel timeline, in order.
CREATE INDEX messages_conversation ON messages (conversation_id, created_at) WHERE conversation_id IS NOT NULL;
