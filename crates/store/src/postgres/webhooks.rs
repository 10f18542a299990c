//! Webhooks on PostgreSQL: endpoints and their leases, deliveries waiting for a retry, attempts,
//! and the workspace's own events.
//!
//! Locks: an endpoint's row serialises what happens to the endpoint. Leasing locks the rows it
//! takes in id order; a deliverer's progress locks its endpoint's row (the UPDATE that checks the
//! lease) before touching its deliveries; scheduling deliveries locks (shares) their endpoints'
//! rows in id order first, and a deletion deletes the endpoint's row first. So a progress and a
//! scheduling of the same endpoint never interleave, and nothing is left of an endpoint deleted
//! meanwhile. Many-row writes are single UNNEST statements, in (endpoint, event) order.

use super::map_write_error;
use super::read::{feed_event_from_row, feed_select};
use super::rows::corrupt;
use crate::model::WORKSPACE_EVENT_KIND;
use crate::{
    FeedEvent, Result, StoreError, WebhookAttempt, WebhookBacklog, WebhookDelivery, WebhookEndpoint, WebhookProgress,
    WorkspaceEvent,
};
use parley_domain::{EventId, IdError, Millis, WebhookAttemptId, WebhookEndpointId, WorkspaceId};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use std::collections::{BTreeMap, BTreeSet};

/// The columns of `webhook_endpoints` but the lease.
macro_rules! endpoint_columns {
    () => {
        "id, workspace_id, url, description, event_types, enabled, secret, previous_secret, \
         previous_secret_expires_at, cursor, failing_since, disabled_reason, disabled_at, created_at, updated_at"
    };
}

macro_rules! delivery_columns {
    () => {
        "endpoint_id, workspace_id, event_id, position, attempts, next_attempt_at, first_attempt_at, manual"
    };
}

macro_rules! attempt_columns {
    () => {
        "id, workspace_id, endpoint_id, event_id, event_type, attempt, manual, status_code, succeeded, error, \
         latency_ms, response_excerpt, attempted_at, next_attempt_at"
    };
}

macro_rules! workspace_event_columns {
    () => {
        "id, workspace_id, event_type, data, created_at"
    };
}

// ---- rows ------------------------------------------------------------------------------------

fn id<T>(row: &PgRow, column: &str, parse: fn(&str) -> Result<T, IdError>) -> Result<T> {
    let s: String = row.try_get(column)?;
    parse(&s).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn opt_millis(row: &PgRow, column: &str) -> Result<Option<Millis>> {
    Ok(row.try_get::<Option<i64>, _>(column)?.map(Millis))
}

fn small<T: TryFrom<i64>>(row: &PgRow, column: &str) -> Result<T> {
    let n: i64 = row.try_get(column)?;
    T::try_from(n).map_err(|_| corrupt(column, &n.to_string()))
}

fn to_json<T: serde::Serialize>(value: &T, what: &str) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Database(format!("cannot serialise {what}: {e}")))
}

fn endpoint_from_row(row: &PgRow) -> Result<WebhookEndpoint> {
    let event_types: String = row.try_get("event_types")?;
    Ok(WebhookEndpoint {
        id: id(row, "id", WebhookEndpointId::parse)?,
        workspace_id: id(row, "workspace_id", WorkspaceId::parse)?,
        url: row.try_get("url")?,
        description: row.try_get("description")?,
        event_types: serde_json::from_str(&event_types)
            .map_err(|e| StoreError::Corrupt(format!("webhook event types: {e}")))?,
        enabled: row.try_get("enabled")?,
        secret: row.try_get("secret")?,
        previous_secret: row.try_get("previous_secret")?,
        previous_secret_expires_at: opt_millis(row, "previous_secret_expires_at")?,
        cursor: row.try_get("cursor")?,
        failing_since: opt_millis(row, "failing_since")?,
        disabled_reason: row.try_get("disabled_reason")?,
        disabled_at: opt_millis(row, "disabled_at")?,
        created_at: Millis(row.try_get("created_at")?),
        updated_at: Millis(row.try_get("updated_at")?),
    })
}

fn delivery_from_row(row: &PgRow) -> Result<WebhookDelivery> {
    Ok(WebhookDelivery {
        endpoint_id: id(row, "endpoint_id", WebhookEndpointId::parse)?,
        workspace_id: id(row, "workspace_id", WorkspaceId::parse)?,
        event_id: id(row, "event_id", EventId::parse)?,
        position: row.try_get("position")?,
        attempts: small(row, "attempts")?,
        next_attempt_at: Millis(row.try_get("next_attempt_at")?),
        first_attempt_at: Millis(row.try_get("first_attempt_at")?),
        manual: row.try_get("manual")?,
    })
}

fn attempt_from_row(row: &PgRow) -> Result<WebhookAttempt> {
    let status_code = match row.try_get::<Option<i64>, _>("status_code")? {
        None => None,
        Some(n) => Some(u16::try_from(n).map_err(|_| corrupt("status_code", &n.to_string()))?),
    };
    Ok(WebhookAttempt {
        id: id(row, "id", WebhookAttemptId::parse)?,
        workspace_id: id(row, "workspace_id", WorkspaceId::parse)?,
        endpoint_id: id(row, "endpoint_id", WebhookEndpointId::parse)?,
        event_id: id(row, "event_id", EventId::parse)?,
        event_type: row.try_get("event_type")?,
        attempt: small(row, "attempt")?,
        manual: row.try_get("manual")?,
        status_code,
        succeeded: row.try_get("succeeded")?,
        error: row.try_get("error")?,
        latency_ms: row.try_get("latency_ms")?,
        response_excerpt: row.try_get("response_excerpt")?,
        attempted_at: Millis(row.try_get("attempted_at")?),
        next_attempt_at: opt_millis(row, "next_attempt_at")?,
    })
}

fn workspace_event_from_row(row: &PgRow) -> Result<WorkspaceEvent> {
    let data: String = row.try_get("data")?;
    Ok(WorkspaceEvent {
        id: id(row, "id", EventId::parse)?,
        workspace_id: id(row, "workspace_id", WorkspaceId::parse)?,
        event_type: row.try_get("event_type")?,
        data: serde_json::from_str(&data).map_err(|e| StoreError::Corrupt(format!("workspace event data: {e}")))?,
        created_at: Millis(row.try_get("created_at")?),
    })
}

// ---- writes ----------------------------------------------------------------------------------

pub(super) async fn create_endpoint(pool: &PgPool, e: &WebhookEndpoint) -> Result<()> {
    sqlx::query(concat!(
        "INSERT INTO webhook_endpoints (",
        endpoint_columns!(),
        ", lease_owner, lease_until) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, NULL, NULL)"
    ))
    .bind(e.id.to_string())
    .bind(e.workspace_id.to_string())
    .bind(&e.url)
    .bind(e.description.as_deref())
    .bind(to_json(&e.event_types, "webhook event types")?)
    .bind(e.enabled)
    .bind(&e.secret)
    .bind(e.previous_secret.as_deref())
    .bind(e.previous_secret_expires_at.map(|t| t.0))
    .bind(e.cursor)
    .bind(e.failing_since.map(|t| t.0))
    .bind(e.disabled_reason.as_deref())
    .bind(e.disabled_at.map(|t| t.0))
    .bind(e.created_at.0)
    .bind(e.updated_at.0)
    .execute(pool)
    .await
    .map_err(map_write_error)?;
    Ok(())
}

pub(super) async fn update_endpoint(pool: &PgPool, e: &WebhookEndpoint) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET url = $3, description = $4, event_types = $5, enabled = $6, secret = $7, \
         previous_secret = $8, previous_secret_expires_at = $9, cursor = GREATEST(cursor, $10), \
         failing_since = $11, disabled_reason = $12, disabled_at = $13, updated_at = $14 \
         WHERE id = $1 AND workspace_id = $2",
    )
    .bind(e.id.to_string())
    .bind(e.workspace_id.to_string())
    .bind(&e.url)
    .bind(e.description.as_deref())
    .bind(to_json(&e.event_types, "webhook event types")?)
    .bind(e.enabled)
    .bind(&e.secret)
    .bind(e.previous_secret.as_deref())
    .bind(e.previous_secret_expires_at.map(|t| t.0))
    .bind(e.cursor)
    .bind(e.failing_since.map(|t| t.0))
    .bind(e.disabled_reason.as_deref())
    .bind(e.disabled_at.map(|t| t.0))
    .bind(e.updated_at.0)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn delete_endpoint(pool: &PgPool, workspace: WorkspaceId, id: WebhookEndpointId) -> Result<bool> {
    let id = id.to_string();
    let mut tx = pool.begin().await?;
    // The endpoint's row first: a deliverer's progress or a scheduling under way finishes before,
    // and one that comes after finds no endpoint.
    let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1 AND workspace_id = $2")
        .bind(&id)
        .bind(workspace.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1").bind(&id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM webhook_attempts WHERE endpoint_id = $1").bind(&id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(true)
}

/// The rows to take are locked in id order (so that two callers cannot deadlock); a row another
/// caller is leasing right now is waited for and checked again once it commits, so a lease that
/// caller took is seen as held and left alone.
pub(super) async fn lease_endpoints(
    pool: &PgPool,
    owner: &str,
    now: Millis,
    lease_ms: i64,
) -> Result<Vec<WebhookEndpoint>> {
    let rows = sqlx::query(concat!(
        "UPDATE webhook_endpoints AS w SET lease_owner = $1, lease_until = $2 \
         FROM (SELECT id FROM webhook_endpoints \
               WHERE enabled AND (lease_owner IS NULL OR lease_until <= $3 OR lease_owner = $1) \
               ORDER BY id FOR UPDATE) AS free \
         WHERE w.id = free.id RETURNING ",
        "w.id, w.workspace_id, w.url, w.description, w.event_types, w.enabled, w.secret, w.previous_secret, \
         w.previous_secret_expires_at, w.cursor, w.failing_since, w.disabled_reason, w.disabled_at, w.created_at, \
         w.updated_at"
    ))
    .bind(owner)
    .bind(now.plus_millis(lease_ms).0)
    .bind(now.0)
    .fetch_all(pool)
    .await?;
    let mut held = rows.iter().map(endpoint_from_row).collect::<Result<Vec<_>>>()?;
    held.sort_by_key(|e| e.id);
    Ok(held)
}

pub(super) async fn release_leases(pool: &PgPool, owner: &str) -> Result<u64> {
    let done =
        sqlx::query("UPDATE webhook_endpoints SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1")
            .bind(owner)
            .execute(pool)
            .await?;
    Ok(done.rows_affected())
}

/// Insert or replace deliveries in one statement. A statement may not upsert one row twice, so a
/// later delivery of the same (endpoint, event) replaces an earlier one here first; the rows go
/// in (endpoint, event) order, the order every transaction locks them in.
async fn upsert_deliveries(conn: &mut PgConnection, deliveries: &[&WebhookDelivery]) -> Result<()> {
    let unique: BTreeMap<(String, String), &WebhookDelivery> =
        deliveries.iter().map(|d| ((d.endpoint_id.to_string(), d.event_id.to_string()), *d)).collect();
    if unique.is_empty() {
        return Ok(());
    }
    let n = unique.len();
    let mut endpoints = Vec::with_capacity(n);
    let mut workspaces = Vec::with_capacity(n);
    let mut events = Vec::with_capacity(n);
    let mut positions = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut next = Vec::with_capacity(n);
    let mut first = Vec::with_capacity(n);
    let mut manual = Vec::with_capacity(n);
    for ((endpoint, event), d) in unique {
        endpoints.push(endpoint);
        workspaces.push(d.workspace_id.to_string());
        events.push(event);
        positions.push(d.position);
        attempts.push(i64::from(d.attempts));
        next.push(d.next_attempt_at.0);
        first.push(d.first_attempt_at.0);
        manual.push(d.manual);
    }
    sqlx::query(concat!(
        "INSERT INTO webhook_deliveries (",
        delivery_columns!(),
        ") SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], \
         $7::bigint[], $8::boolean[]) \
         ON CONFLICT (endpoint_id, event_id) DO UPDATE SET workspace_id = EXCLUDED.workspace_id, \
         position = EXCLUDED.position, attempts = EXCLUDED.attempts, next_attempt_at = EXCLUDED.next_attempt_at, \
         first_attempt_at = EXCLUDED.first_attempt_at, manual = EXCLUDED.manual"
    ))
    .bind(endpoints)
    .bind(workspaces)
    .bind(events)
    .bind(positions)
    .bind(attempts)
    .bind(next)
    .bind(first)
    .bind(manual)
    .execute(conn)
    .await
    .map_err(map_write_error)?;
    Ok(())
}

pub(super) async fn schedule_deliveries(pool: &PgPool, deliveries: Vec<WebhookDelivery>) -> Result<()> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let endpoints: Vec<String> =
        deliveries.iter().map(|d| d.endpoint_id).collect::<BTreeSet<_>>().iter().map(ToString::to_string).collect();
    let mut tx = pool.begin().await?;
    // The endpoints, shared until the commit: not deleted, nor progressed, meanwhile.
    let rows =
        sqlx::query("SELECT id, workspace_id FROM webhook_endpoints WHERE id = ANY($1::text[]) ORDER BY id FOR SHARE")
            .bind(&endpoints)
            .fetch_all(&mut *tx)
            .await?;
    let mut found = BTreeSet::new();
    for row in &rows {
        found.insert((row.try_get::<String, _>("id")?, row.try_get::<String, _>("workspace_id")?));
    }
    let kept: Vec<&WebhookDelivery> = deliveries
        .iter()
        .filter(|d| found.contains(&(d.endpoint_id.to_string(), d.workspace_id.to_string())))
        .collect();
    upsert_deliveries(&mut tx, &kept).await?;
    tx.commit().await?;
    Ok(())
}

async fn insert_attempts(conn: &mut PgConnection, list: &[WebhookAttempt]) -> Result<()> {
    if list.is_empty() {
        return Ok(());
    }
    let n = list.len();
    let mut ids = Vec::with_capacity(n);
    let mut workspaces = Vec::with_capacity(n);
    let mut endpoints = Vec::with_capacity(n);
    let mut events = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut numbers = Vec::with_capacity(n);
    let mut manual = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut succeeded = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    let mut latencies = Vec::with_capacity(n);
    let mut excerpts = Vec::with_capacity(n);
    let mut attempted = Vec::with_capacity(n);
    let mut next = Vec::with_capacity(n);
    for a in list {
        ids.push(a.id.to_string());
        workspaces.push(a.workspace_id.to_string());
        endpoints.push(a.endpoint_id.to_string());
        events.push(a.event_id.to_string());
        types.push(a.event_type.as_str());
        numbers.push(i64::from(a.attempt));
        manual.push(a.manual);
        statuses.push(a.status_code.map(i64::from));
        succeeded.push(a.succeeded);
        errors.push(a.error.as_deref());
        latencies.push(a.latency_ms);
        excerpts.push(a.response_excerpt.as_deref());
        attempted.push(a.attempted_at.0);
        next.push(a.next_attempt_at.map(|t| t.0));
    }
    // An attempt already recorded (the caller retrying a call whose answer it lost) is kept.
    sqlx::query(concat!(
        "INSERT INTO webhook_attempts (",
        attempt_columns!(),
        ") SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
         $7::boolean[], $8::bigint[], $9::boolean[], $10::text[], $11::bigint[], $12::text[], $13::bigint[], \
         $14::bigint[]) ON CONFLICT (id) DO NOTHING"
    ))
    .bind(ids)
    .bind(workspaces)
    .bind(endpoints)
    .bind(events)
    .bind(types)
    .bind(numbers)
    .bind(manual)
    .bind(statuses)
    .bind(succeeded)
    .bind(errors)
    .bind(latencies)
    .bind(excerpts)
    .bind(attempted)
    .bind(next)
    .execute(conn)
    .await
    .map_err(map_write_error)?;
    Ok(())
}

/// The lease check is the UPDATE of the endpoint's own fields: it locks the endpoint's row (as
/// `SELECT … FOR UPDATE` would), waits for a transaction holding it, and checks the owner on the
/// row as that one left it. When it matches nothing (no such endpoint, or another owner holds
/// it), the transaction is rolled back: nothing is written.
pub(super) async fn record_progress(
    pool: &PgPool,
    endpoint: WebhookEndpointId,
    owner: &str,
    p: WebhookProgress,
) -> Result<bool> {
    let endpoint_id = endpoint.to_string();
    let mut tx = pool.begin().await?;
    let held = sqlx::query(
        "UPDATE webhook_endpoints SET cursor = GREATEST(cursor, COALESCE($2, cursor)), failing_since = $3 \
         WHERE id = $1 AND lease_owner = $4",
    )
    .bind(&endpoint_id)
    .bind(p.cursor)
    .bind(p.failing_since.map(|t| t.0))
    .bind(owner)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if held == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    insert_attempts(&mut tx, &p.attempts).await?;
    upsert_deliveries(&mut tx, &p.retries.iter().collect::<Vec<_>>()).await?;
    if !p.finished.is_empty() {
        let mut finished: Vec<String> = p.finished.iter().map(ToString::to_string).collect();
        finished.sort();
        finished.dedup();
        sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1 AND event_id = ANY($2::text[])")
            .bind(&endpoint_id)
            .bind(finished)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(disable) = &p.disable {
        sqlx::query(
            "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $2, disabled_at = $3, \
             updated_at = GREATEST(updated_at, $3), lease_owner = NULL, lease_until = NULL WHERE id = $1",
        )
        .bind(&endpoint_id)
        .bind(&disable.reason)
        .bind(disable.at.0)
        .execute(&mut *tx)
        .await?;
        // Last: it takes the feed lock.
        insert_workspace_event(&mut tx, &disable.event).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Record a workspace event and its place in the feed on the caller's transaction: its
/// `workspace_events` row and a `message_events` row of kind [`WORKSPACE_EVENT_KIND`] with the
/// same id (as `id` and `message_id`), which gets the next feed position. Takes the feed lock
/// ([`super::lock_feed`]), so call it last in the transaction, after every other lock. An event
/// whose id is recorded already is left as it was.
pub(crate) async fn insert_workspace_event(conn: &mut PgConnection, event: &WorkspaceEvent) -> Result<()> {
    let id = event.id.to_string();
    let workspace = event.workspace_id.to_string();
    let inserted = sqlx::query(concat!(
        "INSERT INTO workspace_events (",
        workspace_event_columns!(),
        ") VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING"
    ))
    .bind(&id)
    .bind(&workspace)
    .bind(&event.event_type)
    .bind(event.data.to_string())
    .bind(event.created_at.0)
    .execute(&mut *conn)
    .await
    .map_err(map_write_error)?
    .rows_affected();
    if inserted == 0 {
        return Ok(());
    }
    super::lock_feed(&mut *conn).await?;
    sqlx::query(
        "INSERT INTO message_events (id, message_id, workspace_id, sequence, kind, occurred_at, recorded_at, applied) \
         VALUES ($1, $1, $2, 0, $3, $4, $4, TRUE)",
    )
    .bind(&id)
    .bind(&workspace)
    .bind(WORKSPACE_EVENT_KIND)
    .bind(event.created_at.0)
    .execute(&mut *conn)
    .await
    .map_err(map_write_error)?;
    Ok(())
}

pub(super) async fn record_workspace_events(pool: &PgPool, events: Vec<WorkspaceEvent>) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    for event in &events {
        insert_workspace_event(&mut tx, event).await?;
    }
    tx.commit().await?;
    Ok(())
}

// ---- reads -----------------------------------------------------------------------------------

pub(super) async fn get_endpoint(
    pool: &PgPool,
    workspace: WorkspaceId,
    id: WebhookEndpointId,
) -> Result<Option<WebhookEndpoint>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        endpoint_columns!(),
        " FROM webhook_endpoints WHERE workspace_id = $1 AND id = $2"
    ))
    .bind(workspace.to_string())
    .bind(id.to_string())
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(endpoint_from_row).transpose()
}

pub(super) async fn list_endpoints(
    pool: &PgPool,
    workspace: WorkspaceId,
    before: Option<WebhookEndpointId>,
    limit: u32,
) -> Result<Vec<WebhookEndpoint>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        endpoint_columns!(),
        " FROM webhook_endpoints WHERE workspace_id = $1 AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(workspace.to_string())
    .bind(before.map(|id| id.to_string()))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(endpoint_from_row).collect()
}

pub(super) async fn due_deliveries(
    pool: &PgPool,
    endpoint: WebhookEndpointId,
    now: Millis,
    limit: u32,
) -> Result<Vec<WebhookDelivery>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        delivery_columns!(),
        " FROM webhook_deliveries WHERE endpoint_id = $1 AND next_attempt_at <= $2 \
         ORDER BY next_attempt_at, event_id LIMIT $3"
    ))
    .bind(endpoint.to_string())
    .bind(now.0)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(delivery_from_row).collect()
}

/// Two statements, so that each is one range of `webhook_attempts_endpoint` (endpoint, id)
/// whatever the cursor: an endpoint may have many attempts.
pub(super) async fn list_attempts(
    pool: &PgPool,
    workspace: WorkspaceId,
    endpoint: WebhookEndpointId,
    before: Option<WebhookAttemptId>,
    limit: u32,
) -> Result<Vec<WebhookAttempt>> {
    let query = match before {
        None => sqlx::query(concat!(
            "SELECT ",
            attempt_columns!(),
            " FROM webhook_attempts WHERE endpoint_id = $1 AND workspace_id = $2 ORDER BY id DESC LIMIT $3"
        ))
        .bind(endpoint.to_string())
        .bind(workspace.to_string())
        .bind(i64::from(limit)),
        Some(before) => sqlx::query(concat!(
            "SELECT ",
            attempt_columns!(),
            " FROM webhook_attempts WHERE endpoint_id = $1 AND workspace_id = $2 AND id < $3 \
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(endpoint.to_string())
        .bind(workspace.to_string())
        .bind(before.to_string())
        .bind(i64::from(limit)),
    };
    let rows = query.fetch_all(pool).await?;
    rows.iter().map(attempt_from_row).collect()
}

/// One range of `message_events_workspace` (workspace, position) and one of the deliveries'
/// primary key per endpoint.
pub(super) async fn backlog(pool: &PgPool) -> Result<Vec<WebhookBacklog>> {
    let rows = sqlx::query(
        "SELECT w.id, w.enabled, \
         (SELECT count(*) FROM message_events AS e WHERE e.workspace_id = w.workspace_id AND e.position > w.cursor) \
         AS unhandled, \
         (SELECT count(*) FROM webhook_deliveries AS d WHERE d.endpoint_id = w.id) AS retries \
         FROM webhook_endpoints AS w ORDER BY w.id",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(WebhookBacklog {
                endpoint_id: id(row, "id", WebhookEndpointId::parse)?,
                enabled: row.try_get("enabled")?,
                unhandled_events: row.try_get("unhandled")?,
                pending_retries: row.try_get("retries")?,
            })
        })
        .collect()
}

/// As [`super::read::events_after`], for the events among `ids`.
pub(super) async fn feed_events_by_id(
    pool: &PgPool,
    workspace: WorkspaceId,
    ids: &[EventId],
) -> Result<Vec<FeedEvent>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let rows =
        sqlx::query(concat!(feed_select!(), "e.id = ANY($2::text[]) AND e.workspace_id = $1 ORDER BY e.position"))
            .bind(workspace.to_string())
            .bind(&ids)
            .fetch_all(pool)
            .await?;
    rows.iter().map(feed_event_from_row).collect()
}

pub(super) async fn list_workspace_events(
    pool: &PgPool,
    workspace: WorkspaceId,
    limit: u32,
) -> Result<Vec<WorkspaceEvent>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        workspace_event_columns!(),
        " FROM workspace_events WHERE workspace_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
    ))
    .bind(workspace.to_string())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(workspace_event_from_row).collect()
}
