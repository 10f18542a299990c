//! What providers tell about messages: receipts for outbound messages, and inbound messages.
//!
//! Both lock the (channel account, provider id) pairs they touch first: a receipt then cannot
//! slip between a `sent` outcome and its commit unseen, nor can one inbound message be stored
//! twice by two deliveries at once.

use super::lock_provider_ids;
use super::rows::{self, NewEvent};
use super::timeline::{Observation, Timeline};
use crate::parts::{self, Part};
use crate::{InboundMessage, Receipt, Result, StoreError};
use parley_domain::{
    Channel, Direction, ErrorInfo, EventId, EventKind, Message, MessageEvent, MessageId, MessageState, Millis,
    WorkspaceId,
};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// A receipt as kept in `pending_receipts`, or as just received.
pub(super) struct ReceiptRow {
    pub id: Option<i64>,
    pub provider_message_id: String,
    pub state: MessageState,
    pub occurred_at: Millis,
    pub error: Option<ErrorInfo>,
    pub details: Option<serde_json::Value>,
}

impl ReceiptRow {
    fn of(receipt: &Receipt) -> ReceiptRow {
        ReceiptRow {
            id: None,
            provider_message_id: receipt.provider_message_id.clone(),
            state: receipt.state,
            occurred_at: receipt.occurred_at,
            error: receipt.error.clone(),
            details: receipt.details.clone(),
        }
    }
}

pub(super) fn apply_receipt(timeline: &mut Timeline, message: MessageId, receipt: &ReceiptRow, now: Millis) {
    timeline.record(
        message,
        EventKind::from(receipt.state),
        Observation {
            occurred_at: receipt.occurred_at,
            recorded_at: now,
            provider_message_id: Some(receipt.provider_message_id.clone()),
            error: receipt.error.clone(),
            details: receipt.details.clone(),
            ..Observation::default()
        },
    );
}

/// The parts of the messages a transaction holds (see [`crate::parts`]), read after their
/// message rows are locked: whoever holds a message's row is the only one to change its parts,
/// so two receipts for two parts of one message cannot both miss the moment every part is final.
#[derive(Default)]
pub(super) struct Parts {
    by_message: HashMap<MessageId, Vec<Part>>,
    /// (message, part's provider id) of the parts whose state changed.
    changed: BTreeSet<(MessageId, String)>,
}

impl Parts {
    /// The parts of `ids` (messages whose rows the transaction has locked).
    pub async fn load(conn: &mut PgConnection, ids: &[String]) -> Result<Parts> {
        let mut parts = Parts::default();
        if ids.is_empty() {
            return Ok(parts);
        }
        let rows = sqlx::query(
            "SELECT message_id, provider_message_id, part_index, part_count, state, error_code, error_detail, \
             error_permanent FROM message_parts WHERE message_id = ANY($1::text[]) ORDER BY message_id, part_index",
        )
        .bind(ids)
        .fetch_all(conn)
        .await?;
        for row in &rows {
            let id = rows::parse_message_id(&row.try_get::<String, _>("message_id")?)?;
            let number = |column: &str| -> Result<i32> {
                let n: i64 = row.try_get(column)?;
                i32::try_from(n).map_err(|_| rows::corrupt(column, &n.to_string()))
            };
            let code: Option<String> = row.try_get("error_code")?;
            let detail: Option<String> = row.try_get("error_detail")?;
            let permanent: Option<bool> = row.try_get("error_permanent")?;
            let part = Part {
                provider_message_id: row.try_get("provider_message_id")?,
                index: number("part_index")?,
                count: number("part_count")?,
                state: row.try_get::<Option<String>, _>("state")?.map(|s| rows::state(&s)).transpose()?,
                error: code.map(|code| ErrorInfo {
                    code,
                    detail: detail.unwrap_or_default(),
                    permanent: permanent.unwrap_or(false),
                }),
            };
            parts.by_message.entry(id).or_default().push(part);
        }
        Ok(parts)
    }

    /// The provider ids of the message's parts, in order; empty for a single-part message.
    pub fn ids_of(&self, message: MessageId) -> Vec<String> {
        self.by_message
            .get(&message)
            .map(|parts| parts.iter().map(|p| p.provider_message_id.clone()).collect())
            .unwrap_or_default()
    }

    /// Apply a receipt for one part of `message`: the part's event (never applied, with which
    /// part in its details), and the message's own event once every part is final. `false` when
    /// the receipt is for no part of the message (then it is the caller's to apply).
    pub fn apply(&mut self, timeline: &mut Timeline, message: MessageId, receipt: &ReceiptRow, now: Millis) -> bool {
        let Some(parts) = self.by_message.get_mut(&message) else { return false };
        let Some(step) = parts::apply(parts, &receipt.provider_message_id, receipt.state, receipt.error.as_ref())
        else {
            return false;
        };
        if step.changed {
            self.changed.insert((message, receipt.provider_message_id.clone()));
        }
        timeline.record(
            message,
            EventKind::from(receipt.state),
            Observation {
                occurred_at: receipt.occurred_at,
                recorded_at: now,
                provider_message_id: Some(receipt.provider_message_id.clone()),
                error: receipt.error.clone(),
                details: Some(parts::part_details(receipt.details.as_ref(), step.index, step.count)),
                never_applied: true,
                ..Observation::default()
            },
        );
        if let Some(resolution) = step.resolution {
            let provider_message_id = timeline.get(message).and_then(|m| m.provider_message_id.clone());
            timeline.record(
                message,
                EventKind::from(resolution.state),
                Observation {
                    occurred_at: receipt.occurred_at,
                    recorded_at: now,
                    provider_message_id,
                    error: resolution.error,
                    details: Some(serde_json::json!({ "parts": step.count })),
                    ..Observation::default()
                },
            );
        }
        true
    }

    /// Write back the parts whose state changed.
    pub async fn save(&self, conn: &mut PgConnection) -> Result<()> {
        if self.changed.is_empty() {
            return Ok(());
        }
        let changed: Vec<(&MessageId, &Part)> = self
            .changed
            .iter()
            .filter_map(|(message, provider_id)| {
                let parts = self.by_message.get(message)?;
                parts.iter().find(|p| &p.provider_message_id == provider_id).map(|p| (message, p))
            })
            .collect();
        let messages: Vec<String> = changed.iter().map(|(m, _)| m.to_string()).collect();
        let provider_ids: Vec<&str> = changed.iter().map(|(_, p)| p.provider_message_id.as_str()).collect();
        let states: Vec<Option<&str>> = changed.iter().map(|(_, p)| p.state.map(MessageState::as_str)).collect();
        let codes: Vec<Option<&str>> = changed.iter().map(|(_, p)| p.error.as_ref().map(|e| e.code.as_str())).collect();
        let details: Vec<Option<&str>> =
            changed.iter().map(|(_, p)| p.error.as_ref().map(|e| e.detail.as_str())).collect();
        let permanents: Vec<Option<bool>> =
            changed.iter().map(|(_, p)| p.error.as_ref().map(|e| e.permanent)).collect();
        sqlx::query(
            "UPDATE message_parts AS p SET state = u.s, error_code = u.c, error_detail = u.d, error_permanent = u.pe \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[]) \
             AS u(m, pid, s, c, d, pe) WHERE p.message_id = u.m AND p.provider_message_id = u.pid",
        )
        .bind(messages)
        .bind(provider_ids)
        .bind(states)
        .bind(codes)
        .bind(details)
        .bind(permanents)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Keep the parts of messages just sent: (message, its channel account, its parts). A part
/// already kept for the same message (a second `sent` outcome for it) keeps its state; one of
/// another message (the provider reused the id) starts again.
pub(super) async fn insert_parts(conn: &mut PgConnection, sent: &[(MessageId, String, Vec<Part>)]) -> Result<()> {
    // One row per (account, provider id), the last outcome's: one statement cannot upsert a row twice.
    let mut rows: BTreeMap<(&str, &str), (String, i64, i64)> = BTreeMap::new();
    for (message, account, parts) in sent {
        for p in parts {
            rows.insert(
                (account.as_str(), p.provider_message_id.as_str()),
                (message.to_string(), i64::from(p.index), i64::from(p.count)),
            );
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let accounts: Vec<&str> = rows.keys().map(|(a, _)| *a).collect();
    let provider_ids: Vec<&str> = rows.keys().map(|(_, p)| *p).collect();
    let messages: Vec<&str> = rows.values().map(|(m, _, _)| m.as_str()).collect();
    let indexes: Vec<i64> = rows.values().map(|(_, i, _)| *i).collect();
    let counts: Vec<i64> = rows.values().map(|(_, _, n)| *n).collect();
    sqlx::query(
        "INSERT INTO message_parts AS p (channel_account_id, provider_message_id, message_id, part_index, part_count) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[]) \
         ON CONFLICT (channel_account_id, provider_message_id) DO UPDATE SET \
         state = CASE WHEN p.message_id = excluded.message_id THEN p.state END, \
         error_code = CASE WHEN p.message_id = excluded.message_id THEN p.error_code END, \
         error_detail = CASE WHEN p.message_id = excluded.message_id THEN p.error_detail END, \
         error_permanent = CASE WHEN p.message_id = excluded.message_id THEN p.error_permanent END, \
         message_id = excluded.message_id, part_index = excluded.part_index, part_count = excluded.part_count",
    )
    .bind(accounts)
    .bind(provider_ids)
    .bind(messages)
    .bind(indexes)
    .bind(counts)
    .execute(conn)
    .await?;
    Ok(())
}

/// Pairs as two arrays, for `(a, b) IN (SELECT * FROM UNNEST($1, $2))`.
fn unzip_pairs(pairs: &[(String, String)]) -> (Vec<&str>, Vec<&str>) {
    pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())).unzip()
}

/// Remove and return the kept receipts of the given (channel account, provider id) pairs, each
/// pair's in the order they happened.
pub(super) async fn take_pending_receipts(
    conn: &mut PgConnection,
    pairs: &[(String, String)],
) -> Result<HashMap<(String, String), Vec<ReceiptRow>>> {
    let mut found: HashMap<(String, String), Vec<ReceiptRow>> = HashMap::new();
    if pairs.is_empty() {
        return Ok(found);
    }
    let (accounts, provider_ids) = unzip_pairs(pairs);
    let rows = sqlx::query(
        "DELETE FROM pending_receipts WHERE (channel_account_id, provider_message_id) IN \
         (SELECT * FROM UNNEST($1::text[], $2::text[])) \
         RETURNING id, channel_account_id, provider_message_id, state, occurred_at, error_code, error_detail, \
         error_permanent, details",
    )
    .bind(accounts)
    .bind(provider_ids)
    .fetch_all(conn)
    .await?;
    for row in &rows {
        let code: Option<String> = row.try_get("error_code")?;
        let detail: Option<String> = row.try_get("error_detail")?;
        let permanent: Option<bool> = row.try_get("error_permanent")?;
        let receipt = ReceiptRow {
            id: Some(row.try_get("id")?),
            provider_message_id: row.try_get("provider_message_id")?,
            state: rows::state(&row.try_get::<String, _>("state")?)?,
            occurred_at: Millis(row.try_get("occurred_at")?),
            error: code.map(|code| ErrorInfo {
                code,
                detail: detail.unwrap_or_default(),
                permanent: permanent.unwrap_or(false),
            }),
            details: parts::parse_details(row.try_get("details")?)?,
        };
        let key = (row.try_get("channel_account_id")?, row.try_get("provider_message_id")?);
        found.entry(key).or_default().push(receipt);
    }
    for receipts in found.values_mut() {
        receipts.sort_by_key(|r| (r.occurred_at, r.id));
    }
    Ok(found)
}

pub(super) async fn record_receipts(pool: &PgPool, receipts: Vec<Receipt>) -> Result<()> {
    if receipts.is_empty() {
        return Ok(());
    }
    let now = Millis::now();
    let pairs: Vec<(String, String)> =
        receipts.iter().map(|r| (r.channel_account_id.to_string(), r.provider_message_id.clone())).collect();
    let mut tx = pool.begin().await?;
    lock_provider_ids(&mut tx, &pairs).await?;

    // Parts of multi-part messages (kept by the `sent` outcome, under the same pair locks).
    let (accounts, provider_ids) = unzip_pairs(&pairs);
    let rows = sqlx::query(
        "SELECT channel_account_id, provider_message_id, message_id FROM message_parts \
         WHERE (channel_account_id, provider_message_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
    )
    .bind(&accounts)
    .bind(&provider_ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut part_of: HashMap<(String, String), MessageId> = HashMap::new();
    for row in &rows {
        let id = rows::parse_message_id(&row.try_get::<String, _>("message_id")?)?;
        part_of.insert((row.try_get("channel_account_id")?, row.try_get("provider_message_id")?), id);
    }

    // The newest outbound message with each (account, provider id): providers may reuse ids.
    let rows = sqlx::query(
        "SELECT DISTINCT ON (channel_account_id, provider_message_id) id, channel_account_id, provider_message_id, \
         route IS NOT NULL AS routed FROM messages WHERE direction = 'outbound' AND (channel_account_id, provider_message_id) IN \
         (SELECT * FROM UNNEST($1::text[], $2::text[])) \
         ORDER BY channel_account_id, provider_message_id, id DESC",
    )
    .bind(accounts)
    .bind(provider_ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut matches: HashMap<(String, String), MessageId> = HashMap::new();
    // Messages on a route: a receipt that fails their step makes their job due.
    let mut routed: BTreeSet<MessageId> = BTreeSet::new();
    for row in &rows {
        let id = rows::parse_message_id(&row.try_get::<String, _>("id")?)?;
        if row.try_get::<bool, _>("routed")? {
            routed.insert(id);
        }
        matches.insert((row.try_get("channel_account_id")?, row.try_get("provider_message_id")?), id);
    }
    // Receipts for route steps their messages have left (rare: looked up only when some match
    // nothing else).
    let unmatched: Vec<&(String, String)> =
        pairs.iter().filter(|p| !matches.contains_key(*p) && !part_of.contains_key(*p)).collect();
    let mut superseded: HashMap<(String, String), (MessageId, i64)> = HashMap::new();
    if !unmatched.is_empty() {
        let accounts: Vec<&str> = unmatched.iter().map(|(a, _)| a.as_str()).collect();
        let provider_ids: Vec<&str> = unmatched.iter().map(|(_, p)| p.as_str()).collect();
        let rows = sqlx::query(
            "SELECT channel_account_id, provider_message_id, message_id, step FROM superseded_sends \
             WHERE (channel_account_id, provider_message_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
        )
        .bind(accounts)
        .bind(provider_ids)
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let id = rows::parse_message_id(&row.try_get::<String, _>("message_id")?)?;
            let key = (row.try_get("channel_account_id")?, row.try_get("provider_message_id")?);
            superseded.insert(key, (id, row.try_get("step")?));
        }
    }
    let ids: Vec<String> = matches
        .values()
        .chain(part_of.values())
        .chain(superseded.values().map(|(id, _)| id))
        .collect::<BTreeSet<_>>()
        .iter()
        .map(ToString::to_string)
        .collect();
    // The jobs of routed messages (and of split ones, whose last part's receipt may fail a step)
    // first, the lock order of `queue`: a receipt that fails a route step makes the job due.
    let jobs: Vec<String> = routed.iter().chain(part_of.values()).map(ToString::to_string).collect();
    if !jobs.is_empty() {
        sqlx::query(
            "SELECT message_id FROM dispatch_jobs WHERE message_id = ANY($1::text[]) ORDER BY message_id FOR UPDATE",
        )
        .bind(&jobs)
        .fetch_all(&mut *tx)
        .await?;
    }
    let mut timeline = Timeline::new(rows::lock_messages(&mut tx, &ids).await?);
    let with_parts: Vec<String> = part_of.values().collect::<BTreeSet<_>>().iter().map(ToString::to_string).collect();
    let mut parts = Parts::load(&mut tx, &with_parts).await?;

    let mut kept: Vec<&Receipt> = Vec::new();
    for (receipt, pair) in receipts.iter().zip(&pairs) {
        let row = ReceiptRow::of(receipt);
        if let Some(id) = part_of.get(pair)
            && timeline.get(*id).is_some()
            && parts.apply(&mut timeline, *id, &row, now)
        {
            continue;
        }
        match matches.get(pair) {
            Some(id) if timeline.get(*id).is_some() => apply_receipt(&mut timeline, *id, &row, now),
            _ => match superseded.get(pair) {
                Some((id, step)) if timeline.get(*id).is_some() => {
                    let observation = Observation {
                        occurred_at: row.occurred_at,
                        recorded_at: now,
                        provider_message_id: Some(row.provider_message_id.clone()),
                        error: row.error.clone(),
                        details: Some(crate::route::superseded_details(row.details.clone(), *step)),
                        never_applied: true,
                        ..Observation::default()
                    };
                    timeline.record(*id, EventKind::from(row.state), observation);
                }
                _ => kept.push(receipt),
            },
        }
    }
    if !kept.is_empty() {
        keep_receipts(&mut tx, &kept, now).await?;
    }
    parts.save(&mut tx).await?;
    timeline.flush(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Keep receipts that match no message yet; the `sent` outcome of their message applies them.
async fn keep_receipts(conn: &mut PgConnection, receipts: &[&Receipt], now: Millis) -> Result<()> {
    let accounts: Vec<String> = receipts.iter().map(|r| r.channel_account_id.to_string()).collect();
    let provider_ids: Vec<&str> = receipts.iter().map(|r| r.provider_message_id.as_str()).collect();
    let states: Vec<&str> = receipts.iter().map(|r| r.state.as_str()).collect();
    let occurred: Vec<i64> = receipts.iter().map(|r| r.occurred_at.0).collect();
    let codes: Vec<Option<&str>> = receipts.iter().map(|r| r.error.as_ref().map(|e| e.code.as_str())).collect();
    let details: Vec<Option<&str>> = receipts.iter().map(|r| r.error.as_ref().map(|e| e.detail.as_str())).collect();
    let permanents: Vec<Option<bool>> = receipts.iter().map(|r| r.error.as_ref().map(|e| e.permanent)).collect();
    let said: Vec<Option<String>> = receipts.iter().map(|r| r.details.as_ref().map(ToString::to_string)).collect();
    sqlx::query(
        "INSERT INTO pending_receipts (channel_account_id, provider_message_id, state, occurred_at, error_code, \
         error_detail, error_permanent, received_at, details) \
         SELECT a, p, s, o, c, d, pe, $8, x FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], \
         $5::text[], $6::text[], $7::boolean[], $9::text[]) AS t(a, p, s, o, c, d, pe, x)",
    )
    .bind(accounts)
    .bind(provider_ids)
    .bind(states)
    .bind(occurred)
    .bind(codes)
    .bind(details)
    .bind(permanents)
    .bind(now.0)
    .bind(said)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn record_inbound(
    pool: &PgPool,
    inbound: Vec<InboundMessage>,
    conversation_idle_ms: i64,
) -> Result<Vec<Message>> {
    if inbound.is_empty() {
        return Ok(Vec::new());
    }
    let pairs: Vec<(String, String)> =
        inbound.iter().map(|m| (m.channel_account_id.to_string(), m.provider_message_id.clone())).collect();
    let mut tx = pool.begin().await?;
    // Two deliveries of the same message at once: the second waits here, then finds the first.
    lock_provider_ids(&mut tx, &pairs).await?;

    let (accounts, provider_ids) = unzip_pairs(&pairs);
    let rows = sqlx::query(
        "SELECT channel_account_id, provider_message_id FROM messages \
         WHERE (channel_account_id, provider_message_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
    )
    .bind(accounts)
    .bind(provider_ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for row in &rows {
        seen.insert((row.try_get("channel_account_id")?, row.try_get("provider_message_id")?));
    }

    let account_ids: Vec<String> = pairs.iter().map(|(a, _)| a.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let rows = sqlx::query("SELECT id, workspace_id, channel, name FROM channel_accounts WHERE id = ANY($1::text[])")
        .bind(&account_ids)
        .fetch_all(&mut *tx)
        .await?;
    let mut accounts: HashMap<String, (WorkspaceId, Channel, String)> = HashMap::new();
    for row in &rows {
        let workspace: String = row.try_get("workspace_id")?;
        let workspace = WorkspaceId::parse(&workspace).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let channel = rows::channel(&row.try_get::<String, _>("channel")?)?;
        accounts.insert(row.try_get("id")?, (workspace, channel, row.try_get("name")?));
    }

    let mut stored: Vec<(Message, MessageEvent)> = Vec::new();
    for (m, pair) in inbound.into_iter().zip(pairs) {
        let Some((workspace_id, channel, account_name)) = accounts.get(&pair.0) else {
            tracing::warn!(account = %m.channel_account_id, "inbound message for an unknown channel account; dropped");
            continue;
        };
        if !seen.insert(pair) {
            continue;
        }
        let (message, event) = inbound_message(m, *workspace_id, *channel, account_name);
        stored.push((message, event));
    }
    if stored.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    // Each message with a contact joins the contact's conversation (opened where needed).
    let (mut joined, events): (Vec<Message>, Vec<MessageEvent>) = stored.into_iter().unzip();
    let conversation_events = super::conversations::join_inbound(&mut tx, &mut joined, conversation_idle_ms).await?;
    // Event ids grow with time, and the feed has a conversation's `opened` before the message
    // that opened it: the messages' events take their ids now, after the conversations' events.
    let events = events.into_iter().map(|e| MessageEvent { id: parley_domain::EventId::new(), ..e });
    let stored: Vec<(Message, MessageEvent)> = joined.into_iter().zip(events).collect();
    let messages: Vec<&Message> = stored.iter().map(|(m, _)| m).collect();
    rows::insert_messages(&mut tx, &messages).await?;
    let events: Vec<NewEvent<'_>> =
        stored.iter().map(|(m, e)| NewEvent { workspace_id: m.workspace_id, event: e }).collect();
    super::lock_feed(&mut tx).await?;
    super::conversations::insert_events(&mut tx, &conversation_events).await?;
    rows::insert_events(&mut tx, &events).await?;
    tx.commit().await?;
    Ok(stored.into_iter().map(|(m, e)| Message { events: Some(vec![e]), ..m }).collect())
}

/// An inbound message as stored, with its one event. Sent to no address the provider named, it
/// is taken to be addressed to the channel account itself.
fn inbound_message(
    m: InboundMessage,
    workspace_id: WorkspaceId,
    channel: Channel,
    account_name: &str,
) -> (Message, MessageEvent) {
    let id = MessageId::new();
    let event = MessageEvent {
        id: EventId::new(),
        message_id: id,
        sequence: 1,
        kind: EventKind::Received,
        occurred_at: m.received_at,
        recorded_at: m.received_at,
        applied: true,
        attempt: None,
        provider_message_id: Some(m.provider_message_id.clone()),
        error: None,
        retry_at: None,
        details: None,
    };
    let message = Message {
        id,
        workspace_id,
        direction: Direction::Inbound,
        channel,
        channel_account_id: m.channel_account_id,
        to: m.to.unwrap_or_else(|| account_name.to_string()),
        from: Some(m.from),
        status: MessageState::Received,
        content: m.content,
        send_at: None,
        expires_at: m.received_at,
        validity_seconds: 0,
        metadata: BTreeMap::new(),
        client_reference: None,
        contact_id: m.contact_id,
        conversation_id: None,
        purpose: None,
        provider_message_id: Some(m.provider_message_id),
        attempts: 0,
        error: None,
        sequence: 1,
        created_at: m.received_at,
        updated_at: m.received_at,
        route: None,
        events: None,
    };
    (message, event)
}
