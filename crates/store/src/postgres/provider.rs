//! What providers tell about messages: receipts for outbound messages, and inbound messages.
//!
//! Both lock the (channel account, provider id) pairs they touch first: a receipt then cannot
//! slip between a `sent` outcome and its commit unseen, nor can one inbound message be stored
//! twice by two deliveries at once.

use super::lock_provider_ids;
use super::rows::{self, NewEvent};
use super::timeline::{Observation, Timeline};
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
    pub state: MessageState,
    pub occurred_at: Millis,
    pub error: Option<ErrorInfo>,
}

pub(super) fn apply_receipt(
    timeline: &mut Timeline,
    message: MessageId,
    provider_id: &str,
    receipt: &ReceiptRow,
    now: Millis,
) {
    timeline.record(
        message,
        EventKind::from(receipt.state),
        Observation {
            occurred_at: receipt.occurred_at,
            recorded_at: now,
            provider_message_id: Some(provider_id.to_string()),
            error: receipt.error.clone(),
            ..Observation::default()
        },
    );
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
         RETURNING id, channel_account_id, provider_message_id, state, occurred_at, error_code, error_detail, error_permanent",
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
            state: rows::state(&row.try_get::<String, _>("state")?)?,
            occurred_at: Millis(row.try_get("occurred_at")?),
            error: code.map(|code| ErrorInfo {
                code,
                detail: detail.unwrap_or_default(),
                permanent: permanent.unwrap_or(false),
            }),
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

    // The newest outbound message with each (account, provider id): providers may reuse ids.
    let (accounts, provider_ids) = unzip_pairs(&pairs);
    let rows = sqlx::query(
        "SELECT DISTINCT ON (channel_account_id, provider_message_id) id, channel_account_id, provider_message_id \
         FROM messages WHERE direction = 'outbound' AND (channel_account_id, provider_message_id) IN \
         (SELECT * FROM UNNEST($1::text[], $2::text[])) \
         ORDER BY channel_account_id, provider_message_id, id DESC",
    )
    .bind(accounts)
    .bind(provider_ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut matches: HashMap<(String, String), MessageId> = HashMap::new();
    for row in &rows {
        let id = rows::parse_message_id(&row.try_get::<String, _>("id")?)?;
        matches.insert((row.try_get("channel_account_id")?, row.try_get("provider_message_id")?), id);
    }
    let ids: Vec<String> = matches.values().collect::<BTreeSet<_>>().iter().map(ToString::to_string).collect();
    let mut timeline = Timeline::new(rows::lock_messages(&mut tx, &ids).await?);

    let mut kept: Vec<&Receipt> = Vec::new();
    for (receipt, pair) in receipts.iter().zip(&pairs) {
        let row = ReceiptRow {
            id: None,
            state: receipt.state,
            occurred_at: receipt.occurred_at,
            error: receipt.error.clone(),
        };
        match matches.get(pair) {
            Some(id) if timeline.get(*id).is_some() => {
                apply_receipt(&mut timeline, *id, &receipt.provider_message_id, &row, now);
            }
            _ => kept.push(receipt),
        }
    }
    if !kept.is_empty() {
        keep_receipts(&mut tx, &kept, now).await?;
    }
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
    sqlx::query(
        "INSERT INTO pending_receipts (channel_account_id, provider_message_id, state, occurred_at, error_code, \
         error_detail, error_permanent, received_at) \
         SELECT a, p, s, o, c, d, pe, $8 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], \
         $6::text[], $7::boolean[]) AS t(a, p, s, o, c, d, pe)",
    )
    .bind(accounts)
    .bind(provider_ids)
    .bind(states)
    .bind(occurred)
    .bind(codes)
    .bind(details)
    .bind(permanents)
    .bind(now.0)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn record_inbound(pool: &PgPool, inbound: Vec<InboundMessage>) -> Result<Vec<Message>> {
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
    let messages: Vec<&Message> = stored.iter().map(|(m, _)| m).collect();
    rows::insert_messages(&mut tx, &messages).await?;
    let events: Vec<NewEvent<'_>> =
        stored.iter().map(|(m, e)| NewEvent { workspace_id: m.workspace_id, event: e }).collect();
    super::lock_feed(&mut tx).await?;
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
        provider_message_id: Some(m.provider_message_id),
        attempts: 0,
        error: None,
        sequence: 1,
        created_at: m.received_at,
        updated_at: m.received_at,
        events: None,
    };
    (message, event)
}
