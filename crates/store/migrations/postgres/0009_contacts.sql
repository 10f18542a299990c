-- Contacts: the customers of a workspace, and their identities. Kept in step with
-- ../sqlite/0009_contacts.sql. `attributes` is a JSON object, `tags` and `preferred_channels`
-- JSON arrays (in the order given); `contact_tags` repeats the tags for search.
-- A deleted contact keeps its row and its identities (its personal data wiped), so that its
-- consent history still applies to those addresses; a merged one keeps its row as a tombstone
-- pointing at the contact it was merged into.
CREATE TABLE contacts (
    id                  TEXT COLLATE "C" PRIMARY KEY,
    workspace_id        TEXT COLLATE "C" NOT NULL,
    name                TEXT,
    locale              TEXT,
    time_zone           TEXT,
    time_zone_source    TEXT,
    attributes          TEXT NOT NULL,
    tags                TEXT NOT NULL,
    preferred_channels  TEXT NOT NULL,
    merged_into         TEXT COLLATE "C",
    deleted_at          BIGINT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
-- Listing, newest first: the live contacts of a workspace by id.
CREATE INDEX contacts_workspace ON contacts (workspace_id, id) WHERE merged_into IS NULL AND deleted_at IS NULL;

-- An identity belongs to one contact of a workspace: the key says so.
CREATE TABLE contact_identities (
    workspace_id  TEXT COLLATE "C" NOT NULL,
    channel       TEXT NOT NULL,
    address       TEXT NOT NULL,
    contact_id    TEXT COLLATE "C" NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, channel, address)
);
CREATE INDEX contact_identities_contact ON contact_identities (contact_id);

-- Tags for search: one row per tag of a live contact.
CREATE TABLE contact_tags (
    workspace_id  TEXT COLLATE "C" NOT NULL,
    tag           TEXT NOT NULL,
    contact_id    TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (workspace_id, tag, contact_id)
);
CREATE INDEX contact_tags_contact ON contact_tags (contact_id);
