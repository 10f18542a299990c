-- The parts of a message the provider split (SMPP long SMS), each with its own provider id: a
-- receipt for a part is found here, and the part's state is kept until every part is final.
CREATE TABLE message_parts (
    channel_account_id   TEXT COLLATE "C" NOT NULL,
    provider_message_id  TEXT NOT NULL,
    message_id           TEXT COLLATE "C" NOT NULL REFERENCES messages (id),
    part_index           BIGINT NOT NULL,
    part_count           BIGINT NOT NULL,
    state                TEXT,
    error_code           TEXT,
    error_detail         TEXT,
    error_permanent      BOOLEAN,
    PRIMARY KEY (channel_account_id, provider_message_id)
);
CREATE INDEX message_parts_message ON message_parts (message_id);
