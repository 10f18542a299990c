//! [`crate::ContactStore`] on sqlite.
//!
//! Writes run on the writer thread, so a write's reads (the owners of its identities, the
//! target's row) and its changes see no other writer in between: two callers with the same new
//! identity are applied one after the other, and the second finds the first's contact. Like every
//! write here they may run twice and depend on nothing but the database and their arguments.
//!
//! Each change is announced by its workspace event (`contact.created`, `.updated`, `.merged`,
//! `.deleted`), recorded in the same transaction right after the change. An import row's consent
//! records follow its write there, with their own events.

use super::SqliteStore;
use super::rows::corrupt;
use super::webhooks::insert_workspace_event;
use crate::consent::consents_to_append;
use crate::contacts::{
    apply_write, attribute_path, channels_json, deleted_event, erased, merged, merged_event, parse_channels,
    parse_object, parse_tags, phone_siblings, resolve_target, tombstone, write_event, write_identities,
};
use crate::{
    Contact, ContactChange, ContactFilter, ContactRow, ContactRowOutcome, ContactStore, ContactTarget, ContactWrite,
    ContactWriteOutcome, MergeOutcome, Result, StoreError,
};
use async_trait::async_trait;
use parley_domain::{Channel, ContactId, Identity, Millis, TimeZoneSource, WorkspaceId};
use rusqlite::{Connection, OptionalExtension, Row, params};

const CONTACT_COLUMNS: &str = "id, workspace_id, name, locale, time_zone, time_zone_source, attributes, tags, \
     preferred_channels, merged_into, deleted_at, created_at, updated_at";

fn contact_row(row: &Row<'_>) -> Result<Contact> {
    let id: String = row.get(0)?;
    let workspace: String = row.get(1)?;
    let source: Option<String> = row.get(5)?;
    let merged_into: Option<String> = row.get(9)?;
    Ok(Contact {
        id: ContactId::parse(&id).map_err(|_| corrupt("contact id", &id))?,
        workspace_id: WorkspaceId::parse(&workspace).map_err(|_| corrupt("workspace id", &workspace))?,
        name: row.get(2)?,
        locale: row.get(3)?,
        time_zone: row.get(4)?,
        time_zone_source: source.as_deref().and_then(TimeZoneSource::parse),
        attributes: parse_object(&row.get::<_, String>(6)?)?,
        tags: parse_tags(&row.get::<_, String>(7)?)?,
        preferred_channels: parse_channels(&row.get::<_, String>(8)?)?,
        identities: Vec::new(),
        identity_created_at: Vec::new(),
        merged_into: match merged_into {
            Some(m) => Some(ContactId::parse(&m).map_err(|_| corrupt("contact id", &m))?),
            None => None,
        },
        deleted_at: row.get::<_, Option<i64>>(10)?.map(Millis),
        created_at: Millis(row.get(11)?),
        updated_at: Millis(row.get(12)?),
    })
}

/// Fill in the identities of `contacts` (one query per contact, on an index).
fn with_identities(conn: &Connection, mut contacts: Vec<Contact>) -> Result<Vec<Contact>> {
    let mut stmt = conn.prepare_cached(
        "SELECT channel, address, created_at FROM contact_identities WHERE contact_id = ?1 \
         ORDER BY created_at, channel, address",
    )?;
    for contact in &mut contacts {
        let mut rows = stmt.query([contact.id.to_string()])?;
        while let Some(row) = rows.next()? {
            let channel: String = row.get(0)?;
            let channel = Channel::parse(&channel).ok_or_else(|| corrupt("channel", &channel))?;
            contact.identities.push(Identity::from_stored(channel, row.get(1)?));
            contact.identity_created_at.push(Millis(row.get(2)?));
        }
    }
    Ok(contacts)
}

fn load(conn: &Connection, workspace: WorkspaceId, id: ContactId) -> Result<Option<Contact>> {
    let sql = format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE id = ?1 AND workspace_id = ?2");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([id.to_string(), workspace.to_string()])?;
    let contact = match rows.next()? {
        Some(row) => contact_row(row)?,
        None => return Ok(None),
    };
    Ok(with_identities(conn, vec![contact])?.pop())
}

/// The owner of `identity` and whether it is deleted.
fn owner(conn: &Connection, workspace: WorkspaceId, identity: &Identity) -> Result<Option<(ContactId, bool)>> {
    let found: Option<(String, bool)> = conn
        .prepare_cached(
            "SELECT i.contact_id, c.deleted_at IS NOT NULL FROM contact_identities i \
             JOIN contacts c ON c.id = i.contact_id \
             WHERE i.workspace_id = ?1 AND i.channel = ?2 AND i.address = ?3",
        )?
        .query_row(params![workspace.to_string(), identity.channel.as_str(), identity.address], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    match found {
        Some((id, deleted)) => Ok(Some((ContactId::parse(&id).map_err(|_| corrupt("contact id", &id))?, deleted))),
        None => Ok(None),
    }
}

/// Write `next` over `previous` (`None`: a new row): the row, its tags and its identities.
fn save(conn: &Connection, next: &Contact, previous: Option<&Contact>) -> Result<()> {
    let id = next.id.to_string();
    let workspace = next.workspace_id.to_string();
    conn.prepare_cached(
        "INSERT INTO contacts (id, workspace_id, name, locale, time_zone, time_zone_source, attributes, tags, \
         preferred_channels, merged_into, deleted_at, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, locale = excluded.locale, \
         time_zone = excluded.time_zone, time_zone_source = excluded.time_zone_source, \
         attributes = excluded.attributes, tags = excluded.tags, preferred_channels = excluded.preferred_channels, \
         merged_into = excluded.merged_into, deleted_at = excluded.deleted_at, updated_at = excluded.updated_at",
    )?
    .execute(params![
        id,
        workspace,
        next.name,
        next.locale,
        next.time_zone,
        next.time_zone_source.map(TimeZoneSource::as_str),
        serde_json::Value::Object(next.attributes.clone()).to_string(),
        serde_json::Value::from(next.tags.clone()).to_string(),
        channels_json(&next.preferred_channels),
        next.merged_into.map(|m| m.to_string()),
        next.deleted_at.map(|m| m.0),
        next.created_at.0,
        next.updated_at.0,
    ])?;
    // Only live contacts are searched by tag.
    let searchable: &[String] = if next.is_live() { &next.tags } else { &[] };
    let before: &[String] = match previous {
        Some(p) if p.is_live() => &p.tags,
        _ => &[],
    };
    if searchable != before {
        conn.prepare_cached("DELETE FROM contact_tags WHERE contact_id = ?1")?.execute([&id])?;
        let mut insert =
            conn.prepare_cached("INSERT INTO contact_tags (workspace_id, tag, contact_id) VALUES (?1, ?2, ?3)")?;
        for tag in searchable {
            insert.execute(params![workspace, tag, id])?;
        }
    }
    let old: &[Identity] = previous.map(|p| p.identities.as_slice()).unwrap_or(&[]);
    let mut delete = conn.prepare_cached(
        "DELETE FROM contact_identities WHERE workspace_id = ?1 AND channel = ?2 AND address = ?3 AND contact_id = ?4",
    )?;
    for gone in old.iter().filter(|i| !next.identities.contains(i)) {
        delete.execute(params![workspace, gone.channel.as_str(), gone.address, id])?;
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO contact_identities (workspace_id, channel, address, contact_id, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (identity, at) in next.identities.iter().zip(&next.identity_created_at) {
        if !old.contains(identity) {
            insert
                .execute(params![workspace, identity.channel.as_str(), identity.address, id, at.0])
                .map_err(|e| StoreError::Conflict(format!("identity {identity} could not be attached: {e}")))?;
        }
    }
    Ok(())
}

fn write_one(
    conn: &Connection,
    workspace: WorkspaceId,
    write: &ContactWrite,
    now: Millis,
) -> Result<ContactWriteOutcome> {
    let mut owners = Vec::new();
    for identity in write_identities(write) {
        owners.push(owner(conn, workspace, identity)?);
    }
    if write.target == ContactTarget::Ensure
        && let (Some(None), Some(identity)) = (owners.first(), write_identities(write).first())
    {
        for sibling in phone_siblings(identity) {
            if let Some((id, false)) = owner(conn, workspace, &sibling)? {
                owners[0] = Some((id, false));
                break;
            }
        }
    }
    let target = match resolve_target(write, &owners) {
        Ok(t) => t,
        Err(outcome) => return Ok(outcome),
    };
    let current = match target {
        Some(id) => match load(conn, workspace, id)? {
            Some(c) => Some(c),
            None => return Ok(ContactWriteOutcome::NotFound),
        },
        None => None,
    };
    let (next, created) = match apply_write(workspace, write, current.as_ref(), now) {
        Ok(r) => r,
        Err(outcome) => return Ok(outcome),
    };
    if current.as_ref() == Some(&next) {
        return Ok(ContactWriteOutcome::Unchanged(Box::new(next)));
    }
    save(conn, &next, current.as_ref())?;
    let outcome = if created {
        ContactWriteOutcome::Created(Box::new(next))
    } else {
        ContactWriteOutcome::Updated(Box::new(next))
    };
    if let Some(event) = write_event(&outcome, now) {
        insert_workspace_event(conn, &event)?;
    }
    Ok(outcome)
}

/// A row's write, then its consent records (only for a row that has some: one probe of the
/// contact's ledger).
fn write_row(conn: &Connection, workspace: WorkspaceId, row: &ContactRow, now: Millis) -> Result<ContactRowOutcome> {
    let contact = write_one(conn, workspace, &row.write, now)?;
    let consents = match contact.contact() {
        Some(c) if !row.consents.is_empty() => {
            let mut ledger = super::consent::ledger(conn, workspace, c.id)?;
            let records = consents_to_append(workspace, c.id, &mut ledger, &row.consents, now);
            super::consent::append(conn, &records)?;
            records
        }
        _ => Vec::new(),
    };
    Ok(ContactRowOutcome { contact, consents })
}

fn merge(
    conn: &Connection,
    workspace: WorkspaceId,
    survivor: ContactId,
    absorbed: ContactId,
    now: Millis,
) -> Result<MergeOutcome> {
    let live = |id| -> Result<Option<Contact>> { Ok(load(conn, workspace, id)?.filter(Contact::is_live)) };
    let Some(into) = live(survivor)? else { return Ok(MergeOutcome::NotFound(survivor)) };
    let Some(from) = live(absorbed)? else { return Ok(MergeOutcome::NotFound(absorbed)) };
    let next = match merged(&into, &from, now) {
        Ok(n) => n,
        Err(e) => return Ok(MergeOutcome::Invalid(e)),
    };
    let (ws, into_id, from_id) = (workspace.to_string(), survivor.to_string(), absorbed.to_string());
    // The identities move first, so that saving the survivor finds them attached already.
    conn.prepare_cached("UPDATE contact_identities SET contact_id = ?1 WHERE workspace_id = ?2 AND contact_id = ?3")?
        .execute(params![into_id, ws, from_id])?;
    let mut before = into.clone();
    before.identities = next.identities.clone();
    save(conn, &next, Some(&before))?;
    save(conn, &tombstone(&from, survivor, now), None)?;
    conn.prepare_cached("DELETE FROM contact_tags WHERE contact_id = ?1")?.execute([&from_id])?;
    conn.prepare_cached(
        "UPDATE contacts SET merged_into = ?1, updated_at = ?2 WHERE workspace_id = ?3 AND merged_into = ?4",
    )?
    .execute(params![into_id, now.0, ws, from_id])?;
    conn.prepare_cached("UPDATE messages SET contact_id = ?1 WHERE workspace_id = ?2 AND contact_id = ?3")?
        .execute(params![into_id, ws, from_id])?;
    conn.prepare_cached("UPDATE consents SET contact_id = ?1 WHERE workspace_id = ?2 AND contact_id = ?3")?
        .execute(params![into_id, ws, from_id])?;
    // Announced before what follows from it (the conversations' events), as on PostgreSQL.
    insert_workspace_event(conn, &merged_event(workspace, survivor, absorbed, now))?;
    // The absorbed contact's conversations follow it (the conversations' own rule).
    super::conversations::on_contacts_merged(conn, workspace, absorbed, survivor, now)?;
    Ok(MergeOutcome::Merged(Box::new(next)))
}

fn list(conn: &Connection, workspace: WorkspaceId, filter: &ContactFilter, limit: u32) -> Result<Vec<Contact>> {
    // Filters are added as fixed fragments with bound values; only their number varies.
    let mut sql = format!(
        "SELECT {} FROM contacts c WHERE c.workspace_id = ?1 AND c.merged_into IS NULL AND c.deleted_at IS NULL",
        CONTACT_COLUMNS.split(", ").map(|col| format!("c.{col}")).collect::<Vec<_>>().join(", ")
    );
    let mut values: Vec<rusqlite::types::Value> = vec![workspace.to_string().into()];
    let next = |values: &mut Vec<rusqlite::types::Value>, v: String| {
        values.push(v.into());
        values.len()
    };
    if let Some(identity) = &filter.identity {
        let (a, b) = (next(&mut values, identity.channel.as_str().into()), next(&mut values, identity.address.clone()));
        sql.push_str(&format!(
            " AND c.id IN (SELECT contact_id FROM contact_identities WHERE workspace_id = ?1 AND channel = ?{a} \
             AND address = ?{b})"
        ));
    }
    for tag in &filter.tags {
        let t = next(&mut values, tag.clone());
        sql.push_str(&format!(
            " AND c.id IN (SELECT contact_id FROM contact_tags WHERE workspace_id = ?1 AND tag = ?{t})"
        ));
    }
    for (key, value) in &filter.attributes {
        let (p, v) = (next(&mut values, attribute_path(key)), next(&mut values, value.clone()));
        sql.push_str(&format!(
            " AND ((json_type(c.attributes, ?{p}) IN ('text', 'integer', 'real') \
             AND CAST(json_extract(c.attributes, ?{p}) AS TEXT) = ?{v}) \
             OR (json_type(c.attributes, ?{p}) IN ('true', 'false') AND json_type(c.attributes, ?{p}) = ?{v}))"
        ));
    }
    if let Some(before) = filter.before {
        let b = next(&mut values, before.to_string());
        sql.push_str(&format!(" AND c.id < ?{b}"));
    }
    let l = next(&mut values, limit.to_string());
    sql.push_str(&format!(" ORDER BY c.id DESC LIMIT CAST(?{l} AS INTEGER)"));
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(values))?;
    let mut contacts = Vec::new();
    while let Some(row) = rows.next()? {
        contacts.push(contact_row(row)?);
    }
    with_identities(conn, contacts)
}

#[async_trait]
impl ContactStore for SqliteStore {
    async fn get_contact(&self, workspace: WorkspaceId, id: ContactId) -> Result<Option<Contact>> {
        self.read(move |c| load(c, workspace, id)).await
    }

    async fn contact_by_identity(&self, workspace: WorkspaceId, identity: &Identity) -> Result<Option<Contact>> {
        let identity = identity.clone();
        self.read(move |c| match owner(c, workspace, &identity)? {
            Some((id, _)) => load(c, workspace, id),
            None => Ok(None),
        })
        .await
    }

    async fn ensure_contact(&self, workspace: WorkspaceId, identity: &Identity, now: Millis) -> Result<Contact> {
        if let Some(found) = self.contact_by_identity(workspace, identity).await?
            && found.is_live()
        {
            return Ok(found);
        }
        let write = ContactWrite {
            target: ContactTarget::Ensure,
            change: ContactChange { identities: Some(vec![identity.clone()]), ..Default::default() },
        };
        match self.write(move |c| write_one(c, workspace, &write, now)).await? {
            ContactWriteOutcome::Created(c) | ContactWriteOutcome::Updated(c) | ContactWriteOutcome::Unchanged(c) => {
                Ok(*c)
            }
            other => Err(StoreError::Conflict(format!("cannot ensure a contact for {identity}: {other:?}"))),
        }
    }

    async fn write_contact(
        &self,
        workspace: WorkspaceId,
        write: ContactWrite,
        now: Millis,
    ) -> Result<ContactWriteOutcome> {
        self.write(move |c| write_one(c, workspace, &write, now)).await
    }

    async fn write_contact_rows(
        &self,
        workspace: WorkspaceId,
        rows: Vec<ContactRow>,
        now: Millis,
    ) -> Result<Vec<ContactRowOutcome>> {
        self.write(move |c| rows.iter().map(|row| write_row(c, workspace, row, now)).collect()).await
    }

    async fn delete_contact(&self, workspace: WorkspaceId, id: ContactId, now: Millis) -> Result<bool> {
        self.write(move |c| match load(c, workspace, id)?.filter(Contact::is_live) {
            Some(contact) => {
                save(c, &erased(&contact, now), Some(&contact))?;
                insert_workspace_event(c, &deleted_event(workspace, id, now))?;
                Ok(true)
            }
            None => Ok(false),
        })
        .await
    }

    async fn merge_contacts(
        &self,
        workspace: WorkspaceId,
        survivor: ContactId,
        absorbed: ContactId,
        now: Millis,
    ) -> Result<MergeOutcome> {
        self.write(move |c| merge(c, workspace, survivor, absorbed, now)).await
    }

    async fn list_contacts(&self, workspace: WorkspaceId, filter: &ContactFilter, limit: u32) -> Result<Vec<Contact>> {
        let filter = filter.clone();
        self.read(move |c| list(c, workspace, &filter, limit)).await
    }
}
