-- Routes with fallback. A routed message keeps its steps (channel, account, address, own content,
-- condition to move on) and what happened on each as JSON in `route`; `channel`,
-- `channel_account_id` and `to_address` are those of its current step. Its dispatch job stays
-- until the route is settled: due at the current step's deadline, it is the stored fallback timer.
ALTER TABLE messages ADD COLUMN route TEXT;

-- The provider ids of the steps a message has left, so that a late receipt for one is recorded
-- on its message (without changing it) instead of waiting for a message that never comes.
CREATE TABLE superseded_sends (
    channel_account_id   TEXT NOT NULL,
    provider_message_id  TEXT NOT NULL,
    message_id           TEXT NOT NULL,
    step                 BIGINT NOT NULL,
    PRIMARY KEY (channel_account_id, provider_message_id)
);
