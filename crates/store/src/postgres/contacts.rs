//! [`crate::ContactStore`] on postgres.
//!
//! Every write to a workspace's contacts takes the workspace's contact lock (a transaction-level
//! advisory lock) first and holds it to its commit: the owners of a write's identities and the
//! target's row cannot change between its reads and its writes, so two callers with the same new
//! identity are applied one after the other (the second finds the first's contact), and a merge
//! never races an upsert of one of the identities it moves. One lock per transaction cannot
//! deadlock. Reads take no lock.
//!
//! Each change is announced by its workspace event (`contact.created`, `.updated`, `.merged`,
//! `.deleted`) in the same transaction. Recording events takes the feed lock, which must be the
//! transaction's last lock: a transaction's events go in at its end, after every change, in one
//! statement per table however many rows a chunk of an import changed ([`insert_events`]).
//!
//! An import chunk's consent records cost two statements whatever their number, and none for a
//! chunk without: the ledgers of the rows' contacts are read in one query once every write is
//! done, and the records appended in one insert, before the events (the rows' own in row order,
//! each followed by its consent records').

use super::PgStore;
use super::rows::corrupt;
use crate::consent::{consent_event, consents_to_append};
use crate::contacts::{
    apply_write, channels_json, deleted_event, erased, merged, merged_event, parse_channels, parse_object, parse_tags,
    phone_siblings, resolve_target, tombstone, write_event, write_identities,
};
use crate::model::WORKSPACE_EVENT_KIND;
use crate::{
    Contact, ContactChange, ContactFilter, ContactRow, ContactRowOutcome, ContactStore, ContactTarget, ContactWrite,
    ContactWriteOutcome, MergeOutcome, Result, StoreError, WorkspaceEvent,
};
use async_trait::async_trait;
use parley_domain::{Channel, ContactId, Identity, Millis, TimeZoneSource, WorkspaceId};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};

/// The first key of the per-workspace contact locks (`'Pact'`); the second is a hash of the
/// workspace id.
const CONTACT_LOCK_CLASS: i32 = 0x5061_6374;

macro_rules! contact_columns {
    () => {
        "id, workspace_id, name, locale, time_zone, time_zone_source, attributes, tags, preferred_channels, \
         merged_into, deleted_at, created_at, updated_at"
    };
}

fn contact_row(row: &PgRow) -> Result<Contact> {
    let id: String = row.try_get("id")?;
    let workspace: String = row.try_get("workspace_id")?;
    let source: Option<String> = row.try_get("time_zone_source")?;
    let merged_into: Option<String> = row.try_get("merged_into")?;
    Ok(Contact {
        id: ContactId::parse(&id).map_err(|_| corrupt("contact id", &id))?,
        workspace_id: WorkspaceId::parse(&workspace).map_err(|_| corrupt("workspace id", &workspace))?,
        name: row.try_get("name")?,
        locale: row.try_get("locale")?,
        time_zone: row.try_get("time_zone")?,
        time_zone_source: source.as_deref().and_then(TimeZoneSource::parse),
        attributes: parse_object(row.try_get("attributes")?)?,
        tags: parse_tags(row.try_get("tags")?)?,
        preferred_channels: parse_channels(row.try_get("preferred_channels")?)?,
        identities: Vec::new(),
        identity_created_at: Vec::new(),
        merged_into: match merged_into {
            Some(m) => Some(ContactId::parse(&m).map_err(|_| corrupt("contact id", &m))?),
            None => None,
        },
        deleted_at: row.try_get::<Option<i64>, _>("deleted_at")?.map(Millis),
        created_at: Millis(row.try_get("created_at")?),
        updated_at: Millis(row.try_get("updated_at")?),
    })
}

/// Fill in the identities of `contacts`, in one query.
async fn with_identities(conn: &mut PgConnection, mut contacts: Vec<Contact>) -> Result<Vec<Contact>> {
    if contacts.is_empty() {
        return Ok(contacts);
    }
    let ids: Vec<String> = contacts.iter().map(|c| c.id.to_string()).collect();
    let rows = sqlx::query(
        "SELECT contact_id, channel, address, created_at FROM contact_identities WHERE contact_id = ANY($1) \
         ORDER BY created_at, channel, address",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let owner: String = row.try_get("contact_id")?;
        let channel: String = row.try_get("channel")?;
        let channel = Channel::parse(&channel).ok_or_else(|| corrupt("channel", &channel))?;
        if let Some(contact) = contacts.iter_mut().find(|c| c.id.to_string() == owner) {
            contact.identities.push(Identity::from_stored(channel, row.try_get("address")?));
            contact.identity_created_at.push(Millis(row.try_get("created_at")?));
        }
    }
    Ok(contacts)
}

async fn load(conn: &mut PgConnection, workspace: WorkspaceId, id: ContactId) -> Result<Option<Contact>> {
    let row = sqlx::query(concat!("SELECT ", contact_columns!(), " FROM contacts WHERE id = $1 AND workspace_id = $2"))
        .bind(id.to_string())
        .bind(workspace.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(row) => Ok(with_identities(conn, vec![contact_row(&row)?]).await?.pop()),
        None => Ok(None),
    }
}

async fn owner(
    conn: &mut PgConnection,
    workspace: WorkspaceId,
    identity: &Identity,
) -> Result<Option<(ContactId, bool)>> {
    let row = sqlx::query(
        "SELECT i.contact_id, c.deleted_at IS NOT NULL AS deleted FROM contact_identities i \
         JOIN contacts c ON c.id = i.contact_id \
         WHERE i.workspace_id = $1 AND i.channel = $2 AND i.address = $3",
    )
    .bind(workspace.to_string())
    .bind(identity.channel.as_str())
    .bind(&identity.address)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => {
            let id: String = row.try_get("contact_id")?;
            Ok(Some((ContactId::parse(&id).map_err(|_| corrupt("contact id", &id))?, row.try_get("deleted")?)))
        }
        None => Ok(None),
    }
}

async fn lock_workspace(conn: &mut PgConnection, workspace: WorkspaceId) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(CONTACT_LOCK_CLASS)
        .bind(workspace.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Write `next` over `previous` (`None`: a new row): the row, its tags and its identities.
async fn save(conn: &mut PgConnection, next: &Contact, previous: Option<&Contact>) -> Result<()> {
    let id = next.id.to_string();
    let workspace = next.workspace_id.to_string();
    sqlx::query(
        "INSERT INTO contacts (id, workspace_id, name, locale, time_zone, time_zone_source, attributes, tags, \
         preferred_channels, merged_into, deleted_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, locale = excluded.locale, \
         time_zone = excluded.time_zone, time_zone_source = excluded.time_zone_source, \
         attributes = excluded.attributes, tags = excluded.tags, preferred_channels = excluded.preferred_channels, \
         merged_into = excluded.merged_into, deleted_at = excluded.deleted_at, updated_at = excluded.updated_at",
    )
    .bind(&id)
    .bind(&workspace)
    .bind(&next.name)
    .bind(&next.locale)
    .bind(&next.time_zone)
    .bind(next.time_zone_source.map(TimeZoneSource::as_str))
    .bind(serde_json::Value::Object(next.attributes.clone()).to_string())
    .bind(serde_json::Value::from(next.tags.clone()).to_string())
    .bind(channels_json(&next.preferred_channels))
    .bind(next.merged_into.map(|m| m.to_string()))
    .bind(next.deleted_at.map(|m| m.0))
    .bind(next.created_at.0)
    .bind(next.updated_at.0)
    .execute(&mut *conn)
    .await?;
    // Only live contacts are searched by tag.
    let searchable: &[String] = if next.is_live() { &next.tags } else { &[] };
    let before: &[String] = match previous {
        Some(p) if p.is_live() => &p.tags,
        _ => &[],
    };
    if searchable != before {
        sqlx::query("DELETE FROM contact_tags WHERE contact_id = $1").bind(&id).execute(&mut *conn).await?;
        sqlx::query(
            "INSERT INTO contact_tags (workspace_id, tag, contact_id) SELECT $1, t, $3 FROM UNNEST($2::text[]) AS t",
        )
        .bind(&workspace)
        .bind(searchable)
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    }
    let old: &[Identity] = previous.map(|p| p.identities.as_slice()).unwrap_or(&[]);
    let (gone_channels, gone_addresses): (Vec<&str>, Vec<&str>) =
        old.iter().filter(|i| !next.identities.contains(i)).map(|i| (i.channel.as_str(), i.address.as_str())).unzip();
    if !gone_channels.is_empty() {
        sqlx::query(
            "DELETE FROM contact_identities i USING UNNEST($2::text[], $3::text[]) AS g(channel, address) \
             WHERE i.workspace_id = $1 AND i.channel = g.channel AND i.address = g.address AND i.contact_id = $4",
        )
        .bind(&workspace)
        .bind(&gone_channels)
        .bind(&gone_addresses)
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    }
    let mut channels = Vec::new();
    let mut addresses = Vec::new();
    let mut times = Vec::new();
    for (identity, at) in next.identities.iter().zip(&next.identity_created_at) {
        if !old.contains(identity) {
            channels.push(identity.channel.as_str());
            addresses.push(identity.address.as_str());
            times.push(at.0);
        }
    }
    if !channels.is_empty() {
        sqlx::query(
            "INSERT INTO contact_identities (workspace_id, channel, address, contact_id, created_at) \
             SELECT $1, channel, address, $2, created_at FROM UNNEST($3::text[], $4::text[], $5::bigint[]) \
             AS n(channel, address, created_at)",
        )
        .bind(&workspace)
        .bind(&id)
        .bind(&channels)
        .bind(&addresses)
        .bind(&times)
        .execute(&mut *conn)
        .await
        .map_err(super::map_write_error)?;
    }
    Ok(())
}

/// Record new workspace events on the caller's transaction, in order, as
/// `super::webhooks::insert_workspace_event` does one by one (a `workspace_events` row, and a
/// `message_events` row of kind [`WORKSPACE_EVENT_KIND`] for its feed position), but in one
/// statement per table: an import chunk of a thousand changed rows costs three round trips, not
/// three thousand. Takes the feed lock, so call it last. The ids are new (`EventId::new`).
async fn insert_events(conn: &mut PgConnection, events: &[WorkspaceEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(events.len());
    let mut workspaces = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut data = Vec::with_capacity(events.len());
    let mut times = Vec::with_capacity(events.len());
    for e in events {
        ids.push(e.id.to_string());
        workspaces.push(e.workspace_id.to_string());
        types.push(e.event_type.as_str());
        data.push(e.data.to_string());
        times.push(e.created_at.0);
    }
    sqlx::query(
        "INSERT INTO workspace_events (id, workspace_id, event_type, data, created_at) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])",
    )
    .bind(&ids)
    .bind(&workspaces)
    .bind(&types)
    .bind(&data)
    .bind(&times)
    .execute(&mut *conn)
    .await
    .map_err(super::map_write_error)?;
    super::lock_feed(&mut *conn).await?;
    // A function scan yields the arrays in order, so the positions follow the events' order.
    sqlx::query(
        "INSERT INTO message_events (id, message_id, workspace_id, sequence, kind, occurred_at, recorded_at, applied) \
         SELECT e.id, e.id, e.workspace_id, 0, $4, e.at, e.at, TRUE \
         FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS e(id, workspace_id, at)",
    )
    .bind(&ids)
    .bind(&workspaces)
    .bind(&times)
    .bind(WORKSPACE_EVENT_KIND)
    .execute(&mut *conn)
    .await
    .map_err(super::map_write_error)?;
    Ok(())
}

async fn write_one(
    conn: &mut PgConnection,
    workspace: WorkspaceId,
    write: &ContactWrite,
    now: Millis,
) -> Result<ContactWriteOutcome> {
    let mut owners = Vec::new();
    for identity in write_identities(write) {
        owners.push(owner(conn, workspace, identity).await?);
    }
    if write.target == ContactTarget::Ensure
        && let (Some(None), Some(identity)) = (owners.first(), write_identities(write).first())
    {
        for sibling in phone_siblings(identity) {
            if let Some((id, false)) = owner(conn, workspace, &sibling).await? {
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
        Some(id) => match load(conn, workspace, id).await? {
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
    save(conn, &next, current.as_ref()).await?;
    Ok(if created {
        ContactWriteOutcome::Created(Box::new(next))
    } else {
        ContactWriteOutcome::Updated(Box::new(next))
    })
}

async fn merge(
    conn: &mut PgConnection,
    workspace: WorkspaceId,
    survivor: ContactId,
    absorbed: ContactId,
    now: Millis,
) -> Result<MergeOutcome> {
    let Some(into) = load(conn, workspace, survivor).await?.filter(Contact::is_live) else {
        return Ok(MergeOutcome::NotFound(survivor));
    };
    let Some(from) = load(conn, workspace, absorbed).await?.filter(Contact::is_live) else {
        return Ok(MergeOutcome::NotFound(absorbed));
    };
    let next = match merged(&into, &from, now) {
        Ok(n) => n,
        Err(e) => return Ok(MergeOutcome::Invalid(e)),
    };
    let (ws, into_id, from_id) = (workspace.to_string(), survivor.to_string(), absorbed.to_string());
    // The identities move first, so that saving the survivor finds them attached already.
    for sql in [
        "UPDATE contact_identities SET contact_id = $1 WHERE workspace_id = $2 AND contact_id = $3",
        "UPDATE messages SET contact_id = $1 WHERE workspace_id = $2 AND contact_id = $3",
        "UPDATE consents SET contact_id = $1 WHERE workspace_id = $2 AND contact_id = $3",
    ] {
        sqlx::query(sql).bind(&into_id).bind(&ws).bind(&from_id).execute(&mut *conn).await?;
    }
    let mut before = into.clone();
    before.identities = next.identities.clone();
    save(conn, &next, Some(&before)).await?;
    save(conn, &tombstone(&from, survivor, now), None).await?;
    sqlx::query("DELETE FROM contact_tags WHERE contact_id = $1").bind(&from_id).execute(&mut *conn).await?;
    sqlx::query("UPDATE contacts SET merged_into = $1, updated_at = $2 WHERE workspace_id = $3 AND merged_into = $4")
        .bind(&into_id)
        .bind(now.0)
        .bind(&ws)
        .bind(&from_id)
        .execute(&mut *conn)
        .await?;
    // The absorbed contact's conversations follow it (the conversations' own rule). The events go
    // last, as they take the feed lock: the merge's own first, then the conversations'.
    let events = super::conversations::on_contacts_merged(conn, workspace, absorbed, survivor, now).await?;
    insert_events(conn, &[merged_event(workspace, survivor, absorbed, now)]).await?;
    super::conversations::insert_events(conn, &events).await?;
    Ok(MergeOutcome::Merged(Box::new(next)))
}

#[async_trait]
impl ContactStore for PgStore {
    async fn get_contact(&self, workspace: WorkspaceId, id: ContactId) -> Result<Option<Contact>> {
        let mut conn = self.pool().acquire().await?;
        load(&mut conn, workspace, id).await
    }

    async fn contact_by_identity(&self, workspace: WorkspaceId, identity: &Identity) -> Result<Option<Contact>> {
        let mut conn = self.pool().acquire().await?;
        match owner(&mut conn, workspace, identity).await? {
            Some((id, _)) => load(&mut conn, workspace, id).await,
            None => Ok(None),
        }
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
        match self.write_contact(workspace, write, now).await? {
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
        let mut outcomes = self.write_contacts(workspace, vec![write], now).await?;
        outcomes.pop().ok_or_else(|| StoreError::Database("no outcome for a contact write".into()))
    }

    async fn write_contact_rows(
        &self,
        workspace: WorkspaceId,
        rows: Vec<ContactRow>,
        now: Millis,
    ) -> Result<Vec<ContactRowOutcome>> {
        let mut tx = self.pool().begin().await?;
        lock_workspace(&mut tx, workspace).await?;
        let mut outcomes = Vec::with_capacity(rows.len());
        for row in &rows {
            outcomes.push(write_one(&mut tx, workspace, &row.write, now).await?);
        }
        // The consent records, decided on the ledgers as they are now (under the contact lock).
        let with_consents: Vec<ContactId> = rows
            .iter()
            .zip(&outcomes)
            .filter(|(row, _)| !row.consents.is_empty())
            .filter_map(|(_, outcome)| outcome.contact().map(|c| c.id))
            .collect();
        let mut ledgers = super::consent::ledgers(&mut tx, workspace, &with_consents).await?;
        let mut events: Vec<WorkspaceEvent> = Vec::new();
        let mut records = Vec::new();
        let mut done = Vec::with_capacity(rows.len());
        for (row, contact) in rows.iter().zip(outcomes) {
            events.extend(write_event(&contact, now));
            let consents = match contact.contact() {
                Some(c) if !row.consents.is_empty() => {
                    consents_to_append(workspace, c.id, ledgers.entry(c.id).or_default(), &row.consents, now)
                }
                _ => Vec::new(),
            };
            for record in &consents {
                events.push(consent_event(record)?);
            }
            records.extend(consents.iter().cloned());
            done.push(ContactRowOutcome { contact, consents });
        }
        super::consent::insert_consents(&mut tx, &records).await?;
        // Last: recording the events takes the feed lock.
        insert_events(&mut tx, &events).await?;
        tx.commit().await?;
        Ok(done)
    }

    async fn delete_contact(&self, workspace: WorkspaceId, id: ContactId, now: Millis) -> Result<bool> {
        let mut tx = self.pool().begin().await?;
        lock_workspace(&mut tx, workspace).await?;
        let Some(contact) = load(&mut tx, workspace, id).await?.filter(Contact::is_live) else {
            return Ok(false);
        };
        save(&mut tx, &erased(&contact, now), Some(&contact)).await?;
        // Last: it takes the feed lock.
        insert_events(&mut tx, &[deleted_event(workspace, id, now)]).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn merge_contacts(
        &self,
        workspace: WorkspaceId,
        survivor: ContactId,
        absorbed: ContactId,
        now: Millis,
    ) -> Result<MergeOutcome> {
        let mut tx = self.pool().begin().await?;
        lock_workspace(&mut tx, workspace).await?;
        let outcome = merge(&mut tx, workspace, survivor, absorbed, now).await?;
        if matches!(outcome, MergeOutcome::Merged(_)) {
            tx.commit().await?;
        }
        Ok(outcome)
    }

    async fn list_contacts(&self, workspace: WorkspaceId, filter: &ContactFilter, limit: u32) -> Result<Vec<Contact>> {
        let mut conn = self.pool().acquire().await?;
        // One static statement: each filter is an array that is empty when not used.
        let (keys, values): (Vec<&str>, Vec<&str>) =
            filter.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).unzip();
        let rows = sqlx::query(concat!(
            "SELECT ",
            contact_columns!(),
            " FROM contacts c WHERE c.workspace_id = $1 AND c.merged_into IS NULL AND c.deleted_at IS NULL \
             AND ($2::text IS NULL OR c.id IN (SELECT contact_id FROM contact_identities \
                  WHERE workspace_id = $1 AND channel = $2 AND address = $3)) \
             AND (cardinality($4::text[]) = 0 OR c.id IN (SELECT contact_id FROM contact_tags \
                  WHERE workspace_id = $1 AND tag = ANY($4) GROUP BY contact_id \
                  HAVING count(*) = cardinality($4::text[]))) \
             AND NOT EXISTS (SELECT 1 FROM UNNEST($5::text[], $6::text[]) AS a(key, value) WHERE NOT COALESCE( \
                  jsonb_typeof(c.attributes::jsonb -> a.key) IN ('string', 'number', 'boolean') \
                  AND (c.attributes::jsonb ->> a.key) = a.value, false)) \
             AND ($7::text IS NULL OR c.id < $7) \
             ORDER BY c.id DESC LIMIT $8"
        ))
        .bind(workspace.to_string())
        .bind(filter.identity.as_ref().map(|i| i.channel.as_str()))
        .bind(filter.identity.as_ref().map(|i| i.address.as_str()))
        .bind(&filter.tags)
        .bind(&keys)
        .bind(&values)
        .bind(filter.before.map(|b| b.to_string()))
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        let contacts = rows.iter().map(contact_row).collect::<Result<Vec<_>>>()?;
        with_identities(&mut conn, contacts).await
    }
}
