//! [`crate::ConsentStore`] on postgres.

use super::PgStore;
use crate::consent::{ConsentParts, consent_from_parts};
use crate::{Consent, ConsentStore, Result, StoreError};
use async_trait::async_trait;
use parley_domain::{Channel, ChannelAccountId, ConsentId, ContactId, Millis, Purpose, WorkspaceId};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};
use std::collections::HashMap;

macro_rules! consent_columns {
    () => {
        "r.id, r.workspace_id, r.contact_id, r.channel, r.purpose, r.status, r.source, r.evidence, r.address, \
         r.recorded_at"
    };
}

fn consent(row: &PgRow) -> Result<Consent> {
    consent_from_parts(ConsentParts {
        id: row.try_get(0)?,
        workspace_id: row.try_get(1)?,
        contact_id: row.try_get(2)?,
        channel: row.try_get(3)?,
        purpose: row.try_get(4)?,
        status: row.try_get(5)?,
        source: row.try_get(6)?,
        evidence: row.try_get(7)?,
        address: row.try_get(8)?,
        recorded_at: row.try_get(9)?,
    })
}

/// Insert the records in one statement on the caller's transaction, without their events (the
/// caller records them, last: they take the feed lock). A record whose id is stored already is a
/// `Conflict`.
pub(super) async fn insert_consents(conn: &mut PgConnection, records: &[Consent]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut cols: [Vec<String>; 8] = Default::default();
    let mut addresses = Vec::with_capacity(records.len());
    let mut times = Vec::with_capacity(records.len());
    for r in records {
        let values = [
            r.id.to_string(),
            r.workspace_id.to_string(),
            r.contact_id.to_string(),
            r.channel.as_str().to_string(),
            r.purpose.as_str().to_string(),
            r.status.as_str().to_string(),
            r.source.as_str().to_string(),
            r.evidence.to_string(),
        ];
        for (col, value) in cols.iter_mut().zip(values) {
            col.push(value);
        }
        addresses.push(r.address.clone());
        times.push(r.recorded_at.0);
    }
    let [ids, workspaces, contacts, channels, purposes, statuses, sources, evidence] = cols;
    sqlx::query(
        "INSERT INTO consents (id, workspace_id, contact_id, channel, purpose, status, source, evidence, address, \
         recorded_at) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[])",
    )
    .bind(ids)
    .bind(workspaces)
    .bind(contacts)
    .bind(channels)
    .bind(purposes)
    .bind(statuses)
    .bind(sources)
    .bind(evidence)
    .bind(addresses)
    .bind(times)
    .execute(conn)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict("a consent record with this id exists already".into())
        }
        other => other.into(),
    })?;
    Ok(())
}

/// The whole ledgers of `contacts`, in one query on the caller's transaction, by contact.
pub(super) async fn ledgers(
    conn: &mut PgConnection,
    workspace: WorkspaceId,
    contacts: &[ContactId],
) -> Result<HashMap<ContactId, Vec<Consent>>> {
    let mut out: HashMap<ContactId, Vec<Consent>> = HashMap::new();
    if contacts.is_empty() {
        return Ok(out);
    }
    let ids: Vec<String> = contacts.iter().map(ContactId::to_string).collect();
    let rows = sqlx::query(concat!(
        "SELECT ",
        consent_columns!(),
        " FROM consents AS r WHERE r.workspace_id = $1 AND r.contact_id = ANY($2) ORDER BY r.id"
    ))
    .bind(workspace.to_string())
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    for row in &rows {
        let record = consent(row)?;
        out.entry(record.contact_id).or_default().push(record);
    }
    Ok(out)
}

#[async_trait]
impl ConsentStore for PgStore {
    async fn append_consents(&self, records: Vec<Consent>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        insert_consents(&mut tx, &records).await?;
        // Last: recording the events takes the feed lock.
        for r in &records {
            super::webhooks::insert_workspace_event(&mut tx, &crate::consent::consent_event(r)?).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_consents(
        &self,
        workspace: WorkspaceId,
        contact: ContactId,
        before: Option<ConsentId>,
        limit: Option<u32>,
    ) -> Result<Vec<Consent>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            consent_columns!(),
            " FROM consents AS r WHERE r.workspace_id = $1 AND r.contact_id = $2 \
             AND ($3::text IS NULL OR r.id < $3) ORDER BY r.id DESC LIMIT $4"
        ))
        .bind(workspace.to_string())
        .bind(contact.to_string())
        .bind(before.map(|b| b.to_string()))
        .bind(limit.map(i64::from))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(consent).collect()
    }

    async fn list_opt_outs(
        &self,
        workspace: WorkspaceId,
        channel: Option<Channel>,
        before: Option<ConsentId>,
        limit: u32,
    ) -> Result<Vec<Consent>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            consent_columns!(),
            " FROM consents AS r WHERE r.workspace_id = $1 AND r.status = 'opted_out' \
             AND ($2::text IS NULL OR r.channel = $2 OR r.channel = '*') AND ($3::text IS NULL OR r.id < $3) \
             AND NOT EXISTS (SELECT 1 FROM consents AS s WHERE s.workspace_id = r.workspace_id \
               AND s.contact_id = r.contact_id AND s.id > r.id \
               AND (s.channel = r.channel OR s.channel = '*' OR s.channel = $2) \
               AND (s.purpose = r.purpose OR s.purpose = '*')) \
             ORDER BY r.id DESC LIMIT $4"
        ))
        .bind(workspace.to_string())
        .bind(channel.map(Channel::as_str))
        .bind(before.map(|b| b.to_string()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(consent).collect()
    }

    async fn get_messaging_policy(&self, workspace: WorkspaceId) -> Result<Option<serde_json::Value>> {
        let text: Option<String> = sqlx::query_scalar("SELECT policy FROM messaging_policies WHERE workspace_id = $1")
            .bind(workspace.to_string())
            .fetch_optional(&self.pool)
            .await?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("messaging policy of {workspace}: {e}")))
        })
        .transpose()
    }

    async fn put_messaging_policy(
        &self,
        workspace: WorkspaceId,
        policy: &serde_json::Value,
        now: Millis,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO messaging_policies (workspace_id, policy, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (workspace_id) DO UPDATE SET policy = EXCLUDED.policy, updated_at = EXCLUDED.updated_at",
        )
        .bind(workspace.to_string())
        .bind(policy.to_string())
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn last_inbound_at(&self, account: ChannelAccountId, from: &str) -> Result<Option<Millis>> {
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT created_at FROM messages WHERE channel_account_id = $1 AND from_address = $2 \
             AND direction = 'inbound' ORDER BY created_at DESC LIMIT 1",
        )
        .bind(account.to_string())
        .bind(from)
        .fetch_optional(&self.pool)
        .await?;
        Ok(at.map(Millis))
    }

    async fn recent_sends(
        &self,
        workspace: WorkspaceId,
        contact: ContactId,
        purpose: &Purpose,
        since: Millis,
        limit: u32,
    ) -> Result<Vec<Millis>> {
        let times: Vec<i64> = sqlx::query_scalar(
            "SELECT created_at FROM messages WHERE workspace_id = $1 AND contact_id = $2 AND created_at >= $3 \
             AND direction = 'outbound' AND purpose = $4 AND status NOT IN ('rejected', 'canceled') \
             ORDER BY created_at DESC LIMIT $5",
        )
        .bind(workspace.to_string())
        .bind(contact.to_string())
        .bind(since.0)
        .bind(purpose.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(times.into_iter().map(Millis).collect())
    }
}
