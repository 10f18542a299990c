//! Webhooks on SQLite: endpoints and their leases, deliveries waiting for a retry, attempts, and
//! the workspace's own events.
//!
//! The writes run on the writer thread inside the group-commit transaction, and may run twice
//! (the first run rolled back, see [`super::SqliteStore`]): they depend on nothing but the
//! database and their arguments. The reads run on the reader pool. Every statement is prepared
//! once per connection (`prepare_cached`); the many-row parts of a deliverer's progress are one
//! cached statement executed per row, which on SQLite costs about what a multi-row statement
//! would, without building SQL.

use super::reads::{FEED_EXTRA_COLUMNS, FEED_FOUND, FEED_JOINS, feed_event, feed_event_columns};
use super::rows::{self, write_error};
use crate::model::WORKSPACE_EVENT_KIND;
use crate::{
    FeedEvent, Result, StoreError, WebhookAttempt, WebhookBacklog, WebhookDelivery, WebhookEndpoint, WebhookProgress,
    WorkspaceEvent,
};
use parley_domain::{EventId, Millis, WebhookAttemptId, WebhookEndpointId, WorkspaceId};
use rusqlite::{Connection, Row, params};

/// The columns of `webhook_endpoints` but the lease, in the order [`endpoint`] reads them.
const ENDPOINT_COLUMNS: &str = "id, workspace_id, url, description, event_types, enabled, secret, previous_secret, \
     previous_secret_expires_at, cursor, failing_since, disabled_reason, disabled_at, created_at, updated_at";

const DELIVERY_COLUMNS: &str =
    "endpoint_id, workspace_id, event_id, position, attempts, next_attempt_at, first_attempt_at, manual";

const ATTEMPT_COLUMNS: &str = "id, workspace_id, endpoint_id, event_id, event_type, attempt, manual, status_code, \
     succeeded, error, latency_ms, response_excerpt, attempted_at, next_attempt_at";

const WORKSPACE_EVENT_COLUMNS: &str = "id, workspace_id, event_type, data, created_at";

// ---- rows ------------------------------------------------------------------------------------

fn id<T, E>(row: &Row<'_>, index: usize, what: &str, parse: fn(&str) -> Result<T, E>) -> Result<T> {
    let value: String = row.get(index)?;
    parse(&value).map_err(|_| rows::corrupt(what, &value))
}

fn opt_millis(row: &Row<'_>, index: usize) -> Result<Option<Millis>> {
    Ok(row.get::<_, Option<i64>>(index)?.map(Millis))
}

fn to_json<T: serde::Serialize>(value: &T, what: &str) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Database(format!("cannot serialise {what}: {e}")))
}

/// A row selected with [`ENDPOINT_COLUMNS`].
fn endpoint(row: &Row<'_>) -> Result<WebhookEndpoint> {
    let event_types: String = row.get(4)?;
    Ok(WebhookEndpoint {
        id: id(row, 0, "webhook endpoint id", WebhookEndpointId::parse)?,
        workspace_id: id(row, 1, "workspace id", WorkspaceId::parse)?,
        url: row.get(2)?,
        description: row.get(3)?,
        event_types: serde_json::from_str(&event_types)
            .map_err(|_| rows::corrupt("webhook event types", &event_types))?,
        enabled: row.get(5)?,
        secret: row.get(6)?,
        previous_secret: row.get(7)?,
        previous_secret_expires_at: opt_millis(row, 8)?,
        cursor: row.get(9)?,
        failing_since: opt_millis(row, 10)?,
        disabled_reason: row.get(11)?,
        disabled_at: opt_millis(row, 12)?,
        created_at: Millis(row.get(13)?),
        updated_at: Millis(row.get(14)?),
    })
}

/// A row selected with [`DELIVERY_COLUMNS`].
fn delivery(row: &Row<'_>) -> Result<WebhookDelivery> {
    Ok(WebhookDelivery {
        endpoint_id: id(row, 0, "webhook endpoint id", WebhookEndpointId::parse)?,
        workspace_id: id(row, 1, "workspace id", WorkspaceId::parse)?,
        event_id: id(row, 2, "event id", EventId::parse)?,
        position: row.get(3)?,
        attempts: row.get(4)?,
        next_attempt_at: Millis(row.get(5)?),
        first_attempt_at: Millis(row.get(6)?),
        manual: row.get(7)?,
    })
}

/// A row selected with [`ATTEMPT_COLUMNS`].
fn attempt(row: &Row<'_>) -> Result<WebhookAttempt> {
    Ok(WebhookAttempt {
        id: id(row, 0, "webhook attempt id", WebhookAttemptId::parse)?,
        workspace_id: id(row, 1, "workspace id", WorkspaceId::parse)?,
        endpoint_id: id(row, 2, "webhook endpoint id", WebhookEndpointId::parse)?,
        event_id: id(row, 3, "event id", EventId::parse)?,
        event_type: row.get(4)?,
        attempt: row.get(5)?,
        manual: row.get(6)?,
        status_code: row.get(7)?,
        succeeded: row.get(8)?,
        error: row.get(9)?,
        latency_ms: row.get(10)?,
        response_excerpt: row.get(11)?,
        attempted_at: Millis(row.get(12)?),
        next_attempt_at: opt_millis(row, 13)?,
    })
}

/// A row selected with [`WORKSPACE_EVENT_COLUMNS`].
fn workspace_event(row: &Row<'_>) -> Result<WorkspaceEvent> {
    let data: String = row.get(3)?;
    Ok(WorkspaceEvent {
        id: id(row, 0, "event id", EventId::parse)?,
        workspace_id: id(row, 1, "workspace id", WorkspaceId::parse)?,
        event_type: row.get(2)?,
        data: serde_json::from_str(&data).map_err(|_| rows::corrupt("workspace event data", &data))?,
        created_at: Millis(row.get(4)?),
    })
}

fn collect<T>(mut found: rusqlite::Rows<'_>, map: fn(&Row<'_>) -> Result<T>) -> Result<Vec<T>> {
    let mut out = Vec::new();
    while let Some(row) = found.next()? {
        out.push(map(row)?);
    }
    Ok(out)
}

/// A JSON array of the ids' texts: one parameter for any number of ids (`json_each`).
fn id_list<T: std::fmt::Display>(ids: impl Iterator<Item = T>) -> String {
    serde_json::Value::Array(ids.map(|id| serde_json::Value::String(id.to_string())).collect()).to_string()
}

// ---- writes ----------------------------------------------------------------------------------

pub fn create_endpoint(c: &Connection, e: &WebhookEndpoint) -> Result<()> {
    c.prepare_cached(&format!(
        "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}, lease_owner, lease_until) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, NULL, NULL)"
    ))?
    .execute(params![
        e.id.to_string(),
        e.workspace_id.to_string(),
        e.url,
        e.description,
        to_json(&e.event_types, "webhook event types")?,
        e.enabled,
        e.secret,
        e.previous_secret,
        e.previous_secret_expires_at.map(|t| t.0),
        e.cursor,
        e.failing_since.map(|t| t.0),
        e.disabled_reason,
        e.disabled_at.map(|t| t.0),
        e.created_at.0,
        e.updated_at.0
    ])
    .map_err(write_error)?;
    Ok(())
}

pub fn update_endpoint(c: &Connection, e: &WebhookEndpoint) -> Result<bool> {
    let changed = c
        .prepare_cached(
            "UPDATE webhook_endpoints SET url = ?3, description = ?4, event_types = ?5, enabled = ?6, secret = ?7, \
             previous_secret = ?8, previous_secret_expires_at = ?9, cursor = MAX(cursor, ?10), failing_since = ?11, \
             disabled_reason = ?12, disabled_at = ?13, updated_at = ?14 WHERE id = ?1 AND workspace_id = ?2",
        )?
        .execute(params![
            e.id.to_string(),
            e.workspace_id.to_string(),
            e.url,
            e.description,
            to_json(&e.event_types, "webhook event types")?,
            e.enabled,
            e.secret,
            e.previous_secret,
            e.previous_secret_expires_at.map(|t| t.0),
            e.cursor,
            e.failing_since.map(|t| t.0),
            e.disabled_reason,
            e.disabled_at.map(|t| t.0),
            e.updated_at.0
        ])?;
    Ok(changed > 0)
}

pub fn delete_endpoint(c: &Connection, workspace: WorkspaceId, id: WebhookEndpointId) -> Result<bool> {
    let id = id.to_string();
    let deleted = c
        .prepare_cached("DELETE FROM webhook_endpoints WHERE id = ?1 AND workspace_id = ?2")?
        .execute(params![id, workspace.to_string()])?;
    if deleted == 0 {
        return Ok(false);
    }
    c.prepare_cached("DELETE FROM webhook_deliveries WHERE endpoint_id = ?1")?.execute([&id])?;
    c.prepare_cached("DELETE FROM webhook_attempts WHERE endpoint_id = ?1")?.execute([&id])?;
    Ok(true)
}

/// Writes are serialised on the writer thread, so one statement takes and renews the leases.
pub fn lease_endpoints(c: &Connection, owner: &str, now: Millis, lease_ms: i64) -> Result<Vec<WebhookEndpoint>> {
    let mut st = c.prepare_cached(&format!(
        "UPDATE webhook_endpoints SET lease_owner = ?1, lease_until = ?2 \
         WHERE enabled AND (lease_owner IS NULL OR lease_until <= ?3 OR lease_owner = ?1) \
         RETURNING {ENDPOINT_COLUMNS}"
    ))?;
    let mut held = collect(st.query(params![owner, now.plus_millis(lease_ms).0, now.0])?, endpoint)?;
    held.sort_by_key(|e| e.id);
    Ok(held)
}

pub fn release_leases(c: &Connection, owner: &str) -> Result<u64> {
    let released = c
        .prepare_cached("UPDATE webhook_endpoints SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?1")?
        .execute([owner])?;
    Ok(released as u64)
}

/// Insert `d`, or replace the delivery of the same endpoint and event, if its endpoint exists in
/// its workspace (a delivery of a deleted endpoint is dropped).
fn upsert_delivery(c: &Connection, d: &WebhookDelivery) -> Result<()> {
    c.prepare_cached(&format!(
        "INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS}) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 \
         WHERE EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = ?1 AND workspace_id = ?2) \
         ON CONFLICT (endpoint_id, event_id) DO UPDATE SET workspace_id = excluded.workspace_id, \
         position = excluded.position, attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at, \
         first_attempt_at = excluded.first_attempt_at, manual = excluded.manual"
    ))?
    .execute(params![
        d.endpoint_id.to_string(),
        d.workspace_id.to_string(),
        d.event_id.to_string(),
        d.position,
        d.attempts,
        d.next_attempt_at.0,
        d.first_attempt_at.0,
        d.manual
    ])?;
    Ok(())
}

pub fn schedule_deliveries(c: &Connection, deliveries: &[WebhookDelivery]) -> Result<()> {
    for d in deliveries {
        upsert_delivery(c, d)?;
    }
    Ok(())
}

/// The lease check and the endpoint's own changes are one UPDATE: when it matches no row (no such
/// endpoint, or another owner holds it) nothing has been written and nothing else is.
pub fn record_progress(c: &Connection, endpoint: WebhookEndpointId, owner: &str, p: &WebhookProgress) -> Result<bool> {
    let endpoint_id = endpoint.to_string();
    let held = c
        .prepare_cached(
            "UPDATE webhook_endpoints SET cursor = MAX(cursor, COALESCE(?2, cursor)), failing_since = ?3 \
             WHERE id = ?1 AND lease_owner = ?4",
        )?
        .execute(params![endpoint_id, p.cursor, p.failing_since.map(|t| t.0), owner])?;
    if held == 0 {
        return Ok(false);
    }
    if !p.attempts.is_empty() {
        // An attempt already recorded (the caller retrying a call whose answer it lost) is kept.
        let mut insert = c.prepare_cached(&format!(
            "INSERT INTO webhook_attempts ({ATTEMPT_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) ON CONFLICT (id) DO NOTHING"
        ))?;
        for a in &p.attempts {
            insert.execute(params![
                a.id.to_string(),
                a.workspace_id.to_string(),
                a.endpoint_id.to_string(),
                a.event_id.to_string(),
                a.event_type,
                a.attempt,
                a.manual,
                a.status_code,
                a.succeeded,
                a.error,
                a.latency_ms,
                a.response_excerpt,
                a.attempted_at.0,
                a.next_attempt_at.map(|t| t.0)
            ])?;
        }
    }
    for d in &p.retries {
        upsert_delivery(c, d)?;
    }
    if !p.finished.is_empty() {
        let mut delete = c.prepare_cached("DELETE FROM webhook_deliveries WHERE endpoint_id = ?1 AND event_id = ?2")?;
        for event in &p.finished {
            delete.execute(params![endpoint_id, event.to_string()])?;
        }
    }
    if let Some(disable) = &p.disable {
        c.prepare_cached(
            "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?2, disabled_at = ?3, \
             updated_at = MAX(updated_at, ?3), lease_owner = NULL, lease_until = NULL WHERE id = ?1",
        )?
        .execute(params![endpoint_id, disable.reason, disable.at.0])?;
        insert_workspace_event(c, &disable.event)?;
    }
    Ok(true)
}

/// Record a workspace event and its place in the feed: its `workspace_events` row and a
/// `message_events` row of kind [`WORKSPACE_EVENT_KIND`] with the same id (as `id` and
/// `message_id`), so that it gets the next feed position, on the caller's transaction. An event
/// whose id is recorded already is left as it was (a write may run twice).
pub(crate) fn insert_workspace_event(c: &Connection, event: &WorkspaceEvent) -> Result<()> {
    let id = event.id.to_string();
    let workspace = event.workspace_id.to_string();
    let inserted = c
        .prepare_cached(&format!(
            "INSERT INTO workspace_events ({WORKSPACE_EVENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (id) DO NOTHING"
        ))?
        .execute(params![id, workspace, event.event_type, event.data.to_string(), event.created_at.0])
        .map_err(write_error)?;
    if inserted == 0 {
        return Ok(());
    }
    c.prepare_cached(
        "INSERT INTO message_events (id, message_id, workspace_id, sequence, kind, occurred_at, recorded_at, applied) \
         VALUES (?1, ?1, ?2, 0, ?3, ?4, ?4, 1)",
    )?
    .execute(params![id, workspace, WORKSPACE_EVENT_KIND, event.created_at.0])
    .map_err(write_error)?;
    Ok(())
}

pub fn record_workspace_events(c: &Connection, events: &[WorkspaceEvent]) -> Result<()> {
    for event in events {
        insert_workspace_event(c, event)?;
    }
    Ok(())
}

// ---- reads -----------------------------------------------------------------------------------

pub fn get_endpoint(c: &Connection, workspace: WorkspaceId, id: WebhookEndpointId) -> Result<Option<WebhookEndpoint>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ?1 AND workspace_id = ?2"
    ))?;
    let mut found = st.query([id.to_string(), workspace.to_string()])?;
    found.next()?.map(endpoint).transpose()
}

pub fn list_endpoints(
    c: &Connection,
    workspace: WorkspaceId,
    before: Option<WebhookEndpointId>,
    limit: u32,
) -> Result<Vec<WebhookEndpoint>> {
    // Two statements rather than `(?2 IS NULL OR id < ?2)`, which SQLite cannot plan as a range.
    match before {
        None => {
            let mut st = c.prepare_cached(&format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE workspace_id = ?1 ORDER BY id DESC LIMIT ?2"
            ))?;
            collect(st.query(params![workspace.to_string(), limit])?, endpoint)
        }
        Some(before) => {
            let mut st = c.prepare_cached(&format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE workspace_id = ?1 AND id < ?2 \
                 ORDER BY id DESC LIMIT ?3"
            ))?;
            collect(st.query(params![workspace.to_string(), before.to_string(), limit])?, endpoint)
        }
    }
}

pub fn due_deliveries(
    c: &Connection,
    endpoint: WebhookEndpointId,
    now: Millis,
    limit: u32,
) -> Result<Vec<WebhookDelivery>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = ?1 AND next_attempt_at <= ?2 \
         ORDER BY next_attempt_at, event_id LIMIT ?3"
    ))?;
    collect(st.query(params![endpoint.to_string(), now.0, limit])?, delivery)
}

pub fn list_attempts(
    c: &Connection,
    workspace: WorkspaceId,
    endpoint: WebhookEndpointId,
    before: Option<WebhookAttemptId>,
    limit: u32,
) -> Result<Vec<WebhookAttempt>> {
    match before {
        None => {
            let mut st = c.prepare_cached(&format!(
                "SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts WHERE endpoint_id = ?1 AND workspace_id = ?2 \
                 ORDER BY id DESC LIMIT ?3"
            ))?;
            collect(st.query(params![endpoint.to_string(), workspace.to_string(), limit])?, attempt)
        }
        Some(before) => {
            let mut st = c.prepare_cached(&format!(
                "SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts WHERE endpoint_id = ?1 AND workspace_id = ?2 \
                 AND id < ?3 ORDER BY id DESC LIMIT ?4"
            ))?;
            collect(st.query(params![endpoint.to_string(), workspace.to_string(), before.to_string(), limit])?, attempt)
        }
    }
}

/// One range of the `message_events_workspace` index (workspace, position) and one of the
/// deliveries' primary key per endpoint.
pub fn backlog(c: &Connection) -> Result<Vec<WebhookBacklog>> {
    let mut st = c.prepare_cached(
        "SELECT w.id, w.enabled, \
         (SELECT COUNT(*) FROM message_events AS e WHERE e.workspace_id = w.workspace_id AND e.position > w.cursor), \
         (SELECT COUNT(*) FROM webhook_deliveries AS d WHERE d.endpoint_id = w.id) \
         FROM webhook_endpoints AS w ORDER BY w.id",
    )?;
    collect(st.query([])?, |row| {
        Ok(WebhookBacklog {
            endpoint_id: id(row, 0, "webhook endpoint id", WebhookEndpointId::parse)?,
            enabled: row.get(1)?,
            unhandled_events: row.get(2)?,
            pending_retries: row.get(3)?,
        })
    })
}

/// As [`super::reads::events_after`], for the events among `ids`.
/// The events are found by id (the unary `+` keeps SQLite from scanning the workspace's whole
/// feed through `message_events_workspace` instead), then sorted.
pub fn feed_events_by_id(c: &Connection, workspace: WorkspaceId, ids: &[EventId]) -> Result<Vec<FeedEvent>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let cols = feed_event_columns();
    let mut st = c.prepare_cached(&format!(
        "SELECT {cols}, e.position, {FEED_EXTRA_COLUMNS} FROM message_events e {FEED_JOINS} \
         WHERE e.id IN (SELECT value FROM json_each(?1)) AND +e.workspace_id = ?2 AND {FEED_FOUND} \
         ORDER BY e.position"
    ))?;
    collect(st.query(params![id_list(ids.iter()), workspace.to_string()])?, feed_event)
}

pub fn list_workspace_events(c: &Connection, workspace: WorkspaceId, limit: u32) -> Result<Vec<WorkspaceEvent>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {WORKSPACE_EVENT_COLUMNS} FROM workspace_events WHERE workspace_id = ?1 \
         ORDER BY created_at DESC, id DESC LIMIT ?2"
    ))?;
    collect(st.query(params![workspace.to_string(), limit])?, workspace_event)
}
