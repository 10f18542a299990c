//! [`crate::ConsentStore`] on sqlite.

use super::SqliteStore;
use crate::consent::{CONSENT_COLUMNS, ConsentParts, consent_from_parts};
use crate::{Consent, ConsentStore, Result, StoreError};
use async_trait::async_trait;
use parley_domain::{Channel, ChannelAccountId, ConsentId, ContactId, Millis, Purpose, WorkspaceId};
use rusqlite::{Connection, OptionalExtension, params};

fn consent(row: &rusqlite::Row<'_>) -> Result<Consent> {
    consent_from_parts(ConsentParts {
        id: row.get(0)?,
        workspace_id: row.get(1)?,
        contact_id: row.get(2)?,
        channel: row.get(3)?,
        purpose: row.get(4)?,
        status: row.get(5)?,
        source: row.get(6)?,
        evidence: row.get(7)?,
        address: row.get(8)?,
        recorded_at: row.get(9)?,
    })
}

fn collect(mut rows: rusqlite::Rows<'_>) -> Result<Vec<Consent>> {
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(consent(row)?);
    }
    Ok(out)
}

/// Insert the records, each with its event (`contact.opted_in` / `.opted_out`), on the caller's
/// transaction.
pub(super) fn append(c: &Connection, records: &[Consent]) -> Result<()> {
    let mut st = c.prepare_cached(&format!(
        "INSERT INTO consents ({CONSENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))?;
    for r in records {
        st.execute(params![
            r.id.to_string(),
            r.workspace_id.to_string(),
            r.contact_id.to_string(),
            r.channel.as_str(),
            r.purpose.as_str(),
            r.status.as_str(),
            r.source.as_str(),
            r.evidence.to_string(),
            r.address,
            r.recorded_at.0,
        ])
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                StoreError::Conflict(format!("consent {} exists already", r.id))
            }
            other => other.into(),
        })?;
        super::webhooks::insert_workspace_event(c, &crate::consent::consent_event(r)?)?;
    }
    Ok(())
}

/// The whole ledger of a contact, on the caller's transaction (one probe of `consents_contact`).
pub(super) fn ledger(c: &Connection, workspace: WorkspaceId, contact: ContactId) -> Result<Vec<Consent>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {CONSENT_COLUMNS} FROM consents WHERE workspace_id = ?1 AND contact_id = ?2 ORDER BY id"
    ))?;
    collect(st.query(params![workspace.to_string(), contact.to_string()])?)
}

#[async_trait]
impl ConsentStore for SqliteStore {
    async fn append_consents(&self, records: Vec<Consent>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.write(move |c| append(c, &records)).await
    }

    async fn list_consents(
        &self,
        workspace: WorkspaceId,
        contact: ContactId,
        before: Option<ConsentId>,
        limit: Option<u32>,
    ) -> Result<Vec<Consent>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {CONSENT_COLUMNS} FROM consents WHERE workspace_id = ?1 AND contact_id = ?2 \
                 AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
            ))?;
            let limit = limit.map_or(-1, i64::from);
            collect(st.query(params![
                workspace.to_string(),
                contact.to_string(),
                before.map(|b| b.to_string()),
                limit
            ])?)
        })
        .await
    }

    async fn list_opt_outs(
        &self,
        workspace: WorkspaceId,
        channel: Option<Channel>,
        before: Option<ConsentId>,
        limit: u32,
    ) -> Result<Vec<Consent>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT r.id, r.workspace_id, r.contact_id, r.channel, r.purpose, r.status, r.source, r.evidence, \
                 r.address, r.recorded_at FROM consents AS r \
                 WHERE r.workspace_id = ?1 AND r.status = 'opted_out' \
                 AND (?2 IS NULL OR r.channel = ?2 OR r.channel = '*') AND (?3 IS NULL OR r.id < ?3) \
                 AND NOT EXISTS (SELECT 1 FROM consents AS s WHERE s.workspace_id = r.workspace_id \
                   AND s.contact_id = r.contact_id AND s.id > r.id \
                   AND (s.channel = r.channel OR s.channel = '*' OR s.channel = ?2) \
                   AND (s.purpose = r.purpose OR s.purpose = '*')) \
                 ORDER BY r.id DESC LIMIT ?4",
            )?;
            collect(st.query(params![
                workspace.to_string(),
                channel.map(Channel::as_str),
                before.map(|b| b.to_string()),
                limit
            ])?)
        })
        .await
    }

    async fn get_messaging_policy(&self, workspace: WorkspaceId) -> Result<Option<serde_json::Value>> {
        self.read(move |c| {
            let text: Option<String> = c
                .prepare_cached("SELECT policy FROM messaging_policies WHERE workspace_id = ?1")?
                .query_row([workspace.to_string()], |r| r.get(0))
                .optional()?;
            text.map(|t| {
                serde_json::from_str(&t)
                    .map_err(|e| StoreError::Corrupt(format!("messaging policy of {workspace}: {e}")))
            })
            .transpose()
        })
        .await
    }

    async fn put_messaging_policy(
        &self,
        workspace: WorkspaceId,
        policy: &serde_json::Value,
        now: Millis,
    ) -> Result<()> {
        let text = policy.to_string();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO messaging_policies (workspace_id, policy, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (workspace_id) DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at",
            )?
            .execute(params![workspace.to_string(), text, now.0])?;
            Ok(())
        })
        .await
    }

    async fn last_inbound_at(&self, account: ChannelAccountId, from: &str) -> Result<Option<Millis>> {
        let from = from.to_string();
        self.read(move |c| {
            let at: Option<i64> = c
                .prepare_cached(
                    "SELECT created_at FROM messages WHERE channel_account_id = ?1 AND from_address = ?2 \
                     AND direction = 'inbound' ORDER BY created_at DESC LIMIT 1",
                )?
                .query_row(params![account.to_string(), from], |r| r.get(0))
                .optional()?;
            Ok(at.map(Millis))
        })
        .await
    }

    async fn recent_sends(
        &self,
        workspace: WorkspaceId,
        contact: ContactId,
        purpose: &Purpose,
        since: Millis,
        limit: u32,
    ) -> Result<Vec<Millis>> {
        let purpose = purpose.as_str().to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT created_at FROM messages WHERE workspace_id = ?1 AND contact_id = ?2 AND created_at >= ?3 \
                 AND direction = 'outbound' AND purpose = ?4 AND status NOT IN ('rejected', 'canceled') \
                 ORDER BY created_at DESC LIMIT ?5",
            )?;
            let rows = st
                .query_map(params![workspace.to_string(), contact.to_string(), since.0, purpose, limit], |r| {
                    r.get::<_, i64>(0)
                })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.into_iter().map(Millis).collect())
        })
        .await
    }
}
