//! `create_messages` with group commit.
//!
//! Callers queue their requests; a few writer tasks each take whatever is queued (up to
//! [`MAX_BATCH`]) and apply it in one transaction with multi-row inserts. If anything in the
//! batch fails (a duplicate id, say), the batch is rolled back to its start and replayed request
//! by request, each in its own savepoint, so that one bad request fails alone.
//!
//! Idempotency keys rely on the unique index of `idempotency_keys`: a second transaction
//! inserting a key that an uncommitted one holds waits for it, then sees its row. Within one
//! batch, the first request with a key owns it and the later ones compare against it, exactly as
//! if they had come one after the other.

use super::rows::{self, NewEvent};
use crate::{CreateMessages, CreateOutcome, IDEMPOTENCY_TTL_MS, Result, StoreError};
use parley_domain::{EventId, Message};
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Executor, Row};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Requests applied in one transaction, at most.
pub(super) const MAX_BATCH: usize = 256;
/// Requests waiting for a writer, at most; callers beyond wait to queue (back-pressure).
const QUEUE_DEPTH: usize = 4 * MAX_BATCH;

struct Pending {
    request: CreateMessages,
    reply: oneshot::Sender<Result<CreateOutcome>>,
}

/// The handle callers queue requests through. The writers stop when it is dropped.
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Pending>,
}

impl GroupCommit {
    pub fn start(pool: PgPool, writers: usize) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_DEPTH);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..writers.max(1) {
            tokio::spawn(writer(pool.clone(), receiver.clone()));
        }
        GroupCommit { queue }
    }

    pub async fn submit(&self, request: CreateMessages) -> Result<CreateOutcome> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Pending { request, reply }).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

async fn writer(pool: PgPool, receiver: Arc<Mutex<mpsc::Receiver<Pending>>>) {
    loop {
        // Only one writer waits on the queue at a time; it takes what has piled up and lets the
        // next writer wait while it works.
        let batch = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else { return };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(pending) => batch.push(pending),
                    Err(_) => break,
                }
            }
            batch
        };
        let requests: Vec<&CreateMessages> = batch.iter().map(|p| &p.request).collect();
        let outcomes = apply(&pool, &requests).await;
        for (pending, outcome) in batch.into_iter().zip(outcomes) {
            // The caller may have given up waiting; its request is committed all the same.
            let _ = pending.reply.send(outcome);
        }
    }
}

/// Apply a batch in one transaction; one outcome per request, in order.
async fn apply(pool: &PgPool, requests: &[&CreateMessages]) -> Vec<Result<CreateOutcome>> {
    let all_failed = |e: &StoreError| requests.iter().map(|_| Err(copy_error(e))).collect::<Vec<_>>();
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => return all_failed(&e.into()),
    };
    let stored = if requests.len() == 1 {
        store(&mut tx, requests).await.map(|outcomes| outcomes.into_iter().map(Ok).collect())
    } else {
        store_batch(&mut tx, requests).await
    };
    match stored {
        Ok(outcomes) => match tx.commit().await {
            Ok(()) => outcomes,
            Err(e) => all_failed(&e.into()),
        },
        Err(e) => {
            // At once, rather than when the connection is next used: the keys and rows this
            // transaction holds would block others until then.
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "rollback of a failed group commit failed");
            }
            all_failed(&e)
        }
    }
}

fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Database(s) => StoreError::Database(s.clone()),
        StoreError::Closed => StoreError::Closed,
        StoreError::Conflict(s) => StoreError::Conflict(s.clone()),
        StoreError::Corrupt(s) => StoreError::Corrupt(s.clone()),
    }
}

async fn savepoint(conn: &mut PgConnection, sql: &'static str) -> Result<()> {
    // A plain string runs as a simple query: nothing to prepare.
    conn.execute(sql).await?;
    Ok(())
}

/// The whole batch at once; when that fails, request by request. An `Err` here means the
/// transaction cannot go on.
async fn store_batch(conn: &mut PgConnection, requests: &[&CreateMessages]) -> Result<Vec<Result<CreateOutcome>>> {
    savepoint(conn, "SAVEPOINT parley_batch").await?;
    match store(conn, requests).await {
        Ok(outcomes) => return Ok(outcomes.into_iter().map(Ok).collect()),
        Err(e) => {
            tracing::debug!(error = %e, size = requests.len(), "group commit batch failed; replaying it request by request")
        }
    }
    savepoint(conn, "ROLLBACK TO SAVEPOINT parley_batch").await?;

    // Messages and jobs request by request; the events of all that succeeded at the end, so that
    // no request waits for another transaction while this one holds the feed lock.
    let mut outcomes = Vec::with_capacity(requests.len());
    let mut stored: Vec<&CreateMessages> = Vec::new();
    let mut event_ids: HashSet<EventId> = HashSet::new();
    for request in requests {
        savepoint(conn, "SAVEPOINT parley_request").await?;
        match store_without_events(conn, request, &event_ids).await {
            Ok((outcome, created)) => {
                savepoint(conn, "RELEASE SAVEPOINT parley_request").await?;
                if created {
                    stored.push(request);
                    event_ids.extend(request.messages.iter().flat_map(|m| m.events.iter().map(|e| e.id)));
                }
                outcomes.push(Ok(outcome));
            }
            Err(e) => {
                savepoint(conn, "ROLLBACK TO SAVEPOINT parley_request").await?;
                outcomes.push(Err(e));
            }
        }
    }
    insert_events(conn, &stored).await?;
    Ok(outcomes)
}

/// Store requests with multi-row inserts; any failure fails them all.
async fn store(conn: &mut PgConnection, requests: &[&CreateMessages]) -> Result<Vec<CreateOutcome>> {
    let decisions = resolve_keys(conn, requests).await?;
    let created: Vec<&CreateMessages> =
        requests.iter().zip(&decisions).filter(|(_, d)| **d == CreateOutcome::Created).map(|(r, _)| *r).collect();
    check_event_ids(&created, &HashSet::new())?;
    insert_messages_and_jobs(conn, &created).await?;
    insert_events(conn, &created).await?;
    Ok(decisions)
}

/// One request without its events (see [`store_batch`]); tells whether it stored messages.
async fn store_without_events(
    conn: &mut PgConnection,
    request: &CreateMessages,
    taken_event_ids: &HashSet<EventId>,
) -> Result<(CreateOutcome, bool)> {
    let outcome = resolve_keys(conn, &[request]).await?.pop().unwrap_or(CreateOutcome::KeyReused);
    if outcome != CreateOutcome::Created {
        return Ok((outcome, false));
    }
    check_event_ids(&[request], taken_event_ids)?;
    let ids: Vec<String> = request.messages.iter().flat_map(|m| m.events.iter().map(|e| e.id.to_string())).collect();
    let existing: Option<String> =
        sqlx::query_scalar("SELECT id FROM message_events WHERE id = ANY($1::text[]) LIMIT 1")
            .bind(&ids)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some(id) = existing {
        return Err(StoreError::Conflict(format!("event {id} is already stored")));
    }
    insert_messages_and_jobs(conn, &[request]).await?;
    Ok((outcome, true))
}

/// Event ids must be new, and (message, sequence) pairs unique; checked before the insert so that
/// the insert made under the feed lock does not fail.
fn check_event_ids(requests: &[&CreateMessages], taken: &HashSet<EventId>) -> Result<()> {
    let mut ids = HashSet::new();
    let mut sequences = HashSet::new();
    for event in requests.iter().flat_map(|r| r.messages.iter().flat_map(|m| m.events.iter())) {
        if taken.contains(&event.id) || !ids.insert(event.id) {
            return Err(StoreError::Conflict(format!("event {} is given twice", event.id)));
        }
        if !sequences.insert((event.message_id, event.sequence)) {
            return Err(StoreError::Conflict(format!(
                "message {} has two events with sequence {}",
                event.message_id, event.sequence
            )));
        }
    }
    Ok(())
}

async fn insert_messages_and_jobs(conn: &mut PgConnection, requests: &[&CreateMessages]) -> Result<()> {
    let messages: Vec<&Message> = requests.iter().flat_map(|r| r.messages.iter().map(|m| &m.message)).collect();
    if messages.is_empty() {
        return Ok(());
    }
    rows::insert_messages(conn, &messages).await?;
    super::conversations::count_outbound(conn, &messages).await?;
    let mut ids = Vec::with_capacity(messages.len());
    let mut workspaces = Vec::with_capacity(messages.len());
    let mut accounts = Vec::with_capacity(messages.len());
    let mut due = Vec::with_capacity(messages.len());
    let mut created = Vec::with_capacity(messages.len());
    for request in requests {
        // A message refused before sending (policy) is stored final, with nothing to dispatch.
        for new in request.messages.iter().filter(|new| !new.message.status.is_final()) {
            ids.push(new.message.id.to_string());
            workspaces.push(new.message.workspace_id.to_string());
            accounts.push(new.message.channel_account_id.to_string());
            due.push(new.due_at.0);
            created.push(request.now.0);
        }
    }
    sqlx::query(
        "INSERT INTO dispatch_jobs (message_id, workspace_id, channel_account_id, due_at, attempt, created_at) \
         SELECT id, ws, account, due, 0, created \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[]) AS t(id, ws, account, due, created)",
    )
    .bind(ids)
    .bind(workspaces)
    .bind(accounts)
    .bind(due)
    .bind(created)
    .execute(conn)
    .await
    .map_err(super::map_write_error)?;
    Ok(())
}

/// The first events of the stored messages, last in the transaction (it takes the feed lock).
async fn insert_events(conn: &mut PgConnection, requests: &[&CreateMessages]) -> Result<()> {
    let events: Vec<NewEvent<'_>> = requests
        .iter()
        .flat_map(|r| r.messages.iter())
        .flat_map(|m| m.events.iter().map(|e| NewEvent { workspace_id: m.message.workspace_id, event: e }))
        .collect();
    if events.is_empty() {
        return Ok(());
    }
    super::lock_feed(conn).await?;
    rows::insert_events(conn, &events).await
}

/// A stored idempotency record.
struct KeyRecord {
    request_hash: String,
    status: u16,
    body: Vec<u8>,
    created_at: i64,
}

/// (workspace, idempotency key).
type Key = (String, String);

/// Decide, for every request, whether it goes ahead (`Created`), is a replay, or reuses a key.
/// Records the keys of the requests that go ahead; a record older than the TTL is taken over.
async fn resolve_keys(conn: &mut PgConnection, requests: &[&CreateMessages]) -> Result<Vec<CreateOutcome>> {
    // Each key → the first request that brings it. Sorted, so that concurrent transactions take
    // the keys in the same order and cannot deadlock on them.
    let mut owners: BTreeMap<Key, usize> = BTreeMap::new();
    for (i, request) in requests.iter().enumerate() {
        if let Some(idem) = &request.idempotency {
            owners.entry((request.workspace_id.to_string(), idem.key.clone())).or_insert(i);
        }
    }
    let mut owned: HashSet<Key> = HashSet::new();
    let mut existing: HashMap<Key, KeyRecord> = HashMap::new();
    let mut todo: Vec<Key> = owners.keys().cloned().collect();
    // A record that made the insert do nothing may be purged before it is read; then the insert
    // is tried again.
    for _ in 0..3 {
        if todo.is_empty() {
            break;
        }
        let inserted = insert_keys(conn, requests, &owners, &todo).await?;
        let (new, missing): (Vec<Key>, Vec<Key>) = todo.into_iter().partition(|k| inserted.contains(k));
        owned.extend(new);
        let found = lock_keys(conn, &missing).await?;
        todo = missing.into_iter().filter(|k| !found.contains_key(k)).collect();
        existing.extend(found);
    }
    if let Some((_, key)) = todo.first() {
        return Err(StoreError::Conflict(format!("the idempotency key '{key}' is being purged; try again")));
    }

    // A record is replayed for less than the TTL; after that it is forgotten, and the first
    // request that brings its key again takes it over and goes ahead.
    let mut expired = Vec::new();
    for (key, record) in &existing {
        if let Some(owner) = owners.get(key).and_then(|&i| requests.get(i))
            && record.created_at <= owner.now.0.saturating_sub(IDEMPOTENCY_TTL_MS)
        {
            expired.push((key.clone(), *owner));
        }
    }
    for (key, owner) in expired {
        take_over(conn, owner, &key).await?;
        existing.remove(&key);
        owned.insert(key);
    }

    let decide = |hash: &str, earlier_hash: &str, status: u16, body: &[u8]| {
        if hash == earlier_hash {
            CreateOutcome::Replayed { status, body: body.to_vec() }
        } else {
            CreateOutcome::KeyReused
        }
    };
    let mut decisions = Vec::with_capacity(requests.len());
    for (i, request) in requests.iter().enumerate() {
        let Some(idem) = &request.idempotency else {
            decisions.push(CreateOutcome::Created);
            continue;
        };
        let key = (request.workspace_id.to_string(), idem.key.clone());
        let owner = owners.get(&key).copied().unwrap_or(i);
        let decision = if owned.contains(&key) {
            match requests.get(owner).and_then(|r| r.idempotency.as_ref()) {
                _ if owner == i => CreateOutcome::Created,
                Some(first) => {
                    decide(&idem.request_hash, &first.request_hash, first.response_status, &first.response_body)
                }
                None => CreateOutcome::KeyReused,
            }
        } else {
            match existing.get(&key) {
                Some(r) => decide(&idem.request_hash, &r.request_hash, r.status, &r.body),
                None => CreateOutcome::KeyReused,
            }
        };
        decisions.push(decision);
    }
    Ok(decisions)
}

async fn insert_keys(
    conn: &mut PgConnection,
    requests: &[&CreateMessages],
    owners: &BTreeMap<Key, usize>,
    keys: &[Key],
) -> Result<HashSet<Key>> {
    let mut workspaces = Vec::with_capacity(keys.len());
    let mut names = Vec::with_capacity(keys.len());
    let mut hashes = Vec::with_capacity(keys.len());
    let mut statuses = Vec::with_capacity(keys.len());
    let mut bodies = Vec::with_capacity(keys.len());
    let mut created = Vec::with_capacity(keys.len());
    for key in keys {
        let Some(request) = owners.get(key).and_then(|&i| requests.get(i)) else { continue };
        let Some(idem) = &request.idempotency else { continue };
        workspaces.push(key.0.as_str());
        names.push(key.1.as_str());
        hashes.push(idem.request_hash.as_str());
        statuses.push(i64::from(idem.response_status));
        bodies.push(idem.response_body.as_slice());
        created.push(request.now.0);
    }
    let rows = sqlx::query(
        "INSERT INTO idempotency_keys (workspace_id, key, request_hash, response_status, response_body, created_at) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bytea[], $6::bigint[]) \
         ON CONFLICT (workspace_id, key) DO NOTHING RETURNING workspace_id, key",
    )
    .bind(workspaces)
    .bind(names)
    .bind(hashes)
    .bind(statuses)
    .bind(bodies)
    .bind(created)
    .fetch_all(conn)
    .await?;
    rows.iter().map(|row| Ok((row.try_get("workspace_id")?, row.try_get("key")?))).collect()
}

/// The records of `keys` that exist, locked until the end of the transaction, so that two
/// requests cannot both take over the same expired record.
async fn lock_keys(conn: &mut PgConnection, keys: &[Key]) -> Result<HashMap<Key, KeyRecord>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let workspaces: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    let names: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
    let rows = sqlx::query(
        "SELECT workspace_id, key, request_hash, response_status, response_body, created_at FROM idempotency_keys \
         WHERE (workspace_id, key) IN (SELECT * FROM UNNEST($1::text[], $2::text[])) \
         ORDER BY workspace_id, key COLLATE \"C\" FOR UPDATE",
    )
    .bind(workspaces)
    .bind(names)
    .fetch_all(conn)
    .await?;
    let mut found = HashMap::with_capacity(rows.len());
    for row in &rows {
        let status: i64 = row.try_get("response_status")?;
        let record = KeyRecord {
            request_hash: row.try_get("request_hash")?,
            status: u16::try_from(status)
                .map_err(|_| rows::corrupt("idempotency response status", &status.to_string()))?,
            body: row.try_get("response_body")?,
            created_at: row.try_get("created_at")?,
        };
        found.insert((row.try_get("workspace_id")?, row.try_get("key")?), record);
    }
    Ok(found)
}

/// Overwrite an expired record with the request that now brings its key.
async fn take_over(conn: &mut PgConnection, request: &CreateMessages, key: &Key) -> Result<()> {
    let Some(idem) = &request.idempotency else { return Ok(()) };
    sqlx::query(
        "UPDATE idempotency_keys SET request_hash = $3, response_status = $4, response_body = $5, created_at = $6 \
         WHERE workspace_id = $1 AND key = $2",
    )
    .bind(&key.0)
    .bind(&key.1)
    .bind(&idem.request_hash)
    .bind(i64::from(idem.response_status))
    .bind(&idem.response_body)
    .bind(request.now.0)
    .execute(conn)
    .await?;
    Ok(())
}
