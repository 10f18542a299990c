//! Writes, run on the writer thread inside the group-commit transaction (each in a savepoint).

use super::reads::events_of;
use super::rows::{self, MESSAGE_COLUMNS, PROGRESS_COLUMNS, Progress, write_error};
use crate::parts::{self, Part};
use crate::{
    ApiKey, CancelOutcome, ChannelAccount, ClaimBatch, ClaimedJob, CreateMessages, CreateOutcome, DispatchOutcome,
    IDEMPOTENCY_TTL_MS, OutcomeKind, Result, Workspace,
};
use parley_domain::{
    ApiKeyId, Direction, ErrorInfo, EventId, EventKind, FallbackReason, InboundMessage, Message, MessageEvent,
    MessageId, MessageState, Millis, Receipt, RouteDecision, WorkspaceId,
};
use rusqlite::{Connection, OptionalExtension, params};

pub fn create_workspace(c: &Connection, w: &Workspace) -> Result<()> {
    c.prepare_cached("INSERT INTO workspaces (id, name, created_at) VALUES (?1, ?2, ?3)")?
        .execute(params![w.id.to_string(), w.name, w.created_at.0])
        .map_err(write_error)?;
    Ok(())
}

pub fn create_api_key(c: &Connection, k: &ApiKey) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO api_keys (id, workspace_id, name, prefix, hash, scopes, created_at, revoked_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        k.id.to_string(),
        k.workspace_id.to_string(),
        k.name,
        k.prefix,
        k.hash,
        k.scopes.to_stored(),
        k.created_at.0,
        k.revoked_at.map(|m| m.0)
    ])
    .map_err(write_error)?;
    Ok(())
}

pub fn revoke_api_key(c: &Connection, workspace: WorkspaceId, id: ApiKeyId, now: Millis) -> Result<Option<ApiKey>> {
    c.prepare_cached("UPDATE api_keys SET revoked_at = ?3 WHERE id = ?1 AND workspace_id = ?2 AND revoked_at IS NULL")?
        .execute(params![id.to_string(), workspace.to_string(), now.0])?;
    let mut st = c.prepare_cached(&format!(
        "SELECT {} FROM api_keys WHERE id = ?1 AND workspace_id = ?2",
        rows::API_KEY_COLUMNS
    ))?;
    let mut found = st.query(params![id.to_string(), workspace.to_string()])?;
    found.next()?.map(rows::api_key).transpose()
}

pub fn create_channel_account(c: &Connection, a: &ChannelAccount) -> Result<()> {
    take_default(c, a)?;
    c.prepare_cached(
        "INSERT INTO channel_accounts (id, workspace_id, channel, provider, name, config, rate_limit_per_second, \
         max_in_flight, is_default, created_at, updated_at, credentials, credentials_hint, deleted_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        a.id.to_string(),
        a.workspace_id.to_string(),
        a.channel.as_str(),
        a.provider,
        a.name,
        a.config.to_string(),
        a.rate_limit_per_second,
        a.max_in_flight,
        a.is_default,
        a.created_at.0,
        a.updated_at.0,
        a.credentials,
        a.credentials_hint.as_ref().map(|h| h.to_string()),
        a.deleted_at.map(|t| t.0)
    ])
    .map_err(write_error)?;
    Ok(())
}

/// When `a` is to be its channel's default, the workspace's other accounts of the channel stop
/// being it.
fn take_default(c: &Connection, a: &ChannelAccount) -> Result<()> {
    if a.is_default && a.deleted_at.is_none() {
        c.prepare_cached(
            "UPDATE channel_accounts SET is_default = 0 WHERE workspace_id = ?1 AND channel = ?2 AND id <> ?3 \
             AND is_default = 1",
        )?
        .execute(params![a.workspace_id.to_string(), a.channel.as_str(), a.id.to_string()])?;
    }
    Ok(())
}

pub fn update_channel_account(c: &Connection, a: &ChannelAccount) -> Result<bool> {
    let exists = c
        .prepare_cached("SELECT 1 FROM channel_accounts WHERE id = ?1 AND workspace_id = ?2 AND deleted_at IS NULL")?
        .exists(params![a.id.to_string(), a.workspace_id.to_string()])?;
    if !exists {
        return Ok(false);
    }
    take_default(c, a)?;
    c.prepare_cached(
        "UPDATE channel_accounts SET name = ?3, config = ?4, rate_limit_per_second = ?5, max_in_flight = ?6, \
         is_default = ?7, updated_at = ?8, credentials = ?9, credentials_hint = ?10, deleted_at = ?11 \
         WHERE id = ?1 AND workspace_id = ?2",
    )?
    .execute(params![
        a.id.to_string(),
        a.workspace_id.to_string(),
        a.name,
        a.config.to_string(),
        a.rate_limit_per_second,
        a.max_in_flight,
        a.is_default && a.deleted_at.is_none(),
        a.updated_at.0,
        a.credentials,
        a.credentials_hint.as_ref().map(|h| h.to_string()),
        a.deleted_at.map(|t| t.0)
    ])?;
    Ok(true)
}

fn insert_message(c: &Connection, m: &Message) -> Result<()> {
    let content = serde_json::to_string(&m.content).map_err(|e| crate::StoreError::Database(e.to_string()))?;
    let metadata = serde_json::to_string(&m.metadata).map_err(|e| crate::StoreError::Database(e.to_string()))?;
    c.prepare_cached(&format!(
        "INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)"
    ))?
    .execute(params![
        m.id.to_string(),
        m.workspace_id.to_string(),
        m.direction.as_str(),
        m.channel.as_str(),
        m.channel_account_id.to_string(),
        m.to,
        m.from,
        m.status.as_str(),
        content,
        m.send_at.map(|t| t.0),
        m.expires_at.0,
        m.validity_seconds,
        metadata,
        m.client_reference,
        m.provider_message_id,
        m.attempts,
        m.error.as_ref().map(|e| e.code.as_str()),
        m.error.as_ref().map(|e| e.detail.as_str()),
        m.error.as_ref().map(|e| e.permanent),
        m.sequence,
        m.created_at.0,
        m.updated_at.0,
        m.contact_id.map(|id| id.to_string()),
        m.purpose.as_ref().map(|p| p.as_str()),
        m.conversation_id.map(|id| id.to_string()),
        m.route.as_ref().map(serde_json::to_string).transpose().map_err(|e| crate::StoreError::Database(e.to_string()))?
    ])
    .map_err(write_error)?;
    Ok(())
}

fn insert_event(c: &Connection, workspace: WorkspaceId, e: &MessageEvent) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO message_events (id, message_id, workspace_id, sequence, kind, occurred_at, recorded_at, applied, \
         attempt, provider_message_id, error_code, error_detail, error_permanent, retry_at, details) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        e.id.to_string(),
        e.message_id.to_string(),
        workspace.to_string(),
        e.sequence,
        e.kind.as_str(),
        e.occurred_at.0,
        e.recorded_at.0,
        e.applied,
        e.attempt,
        e.provider_message_id,
        e.error.as_ref().map(|x| x.code.as_str()),
        e.error.as_ref().map(|x| x.detail.as_str()),
        e.error.as_ref().map(|x| x.permanent),
        e.retry_at.map(|t| t.0),
        e.details.as_ref().map(|d| d.to_string())
    ])
    .map_err(write_error)?;
    Ok(())
}

/// Details of an event beyond its kind and time.
#[derive(Default)]
struct EventExtra {
    attempt: Option<i32>,
    provider_message_id: Option<String>,
    error: Option<ErrorInfo>,
    retry_at: Option<Millis>,
    details: Option<serde_json::Value>,
    /// Recorded without moving the message whatever its kind (a receipt for one of its parts).
    never_applied: bool,
}

/// Record an event on `m` (in memory and in the events table) and move its state when the event
/// is a state the message can advance to. A failure that is applied sets the message's error to
/// the event's: the error that ended the message. `updated_at` never goes back. The caller saves
/// `m` with [`write_progress`].
///
/// On a route (see `parley_domain::route`), a failure of a step that has a next one is recorded
/// without ending the message: the step keeps the error and the dispatch job comes due now, to
/// move on. A `fallback` event puts the message back to `queued`, on its next step.
fn append_event(
    c: &Connection,
    m: &mut Progress,
    kind: EventKind,
    occurred_at: Millis,
    now: Millis,
    extra: EventExtra,
) -> Result<bool> {
    let mut applied = !extra.never_applied && kind.state().is_some_and(|s| m.status.can_advance_to(s));
    let mut details = extra.details;
    let step_failed = applied && kind.ends_a_step() && m.route.as_ref().is_some_and(|r| r.falls_back_on_failure());
    if step_failed && let Some(route) = m.route.as_mut() {
        applied = false;
        route.step_failed(extra.error.clone());
        details = Some(crate::route::step_details(details, route.current_step, true));
        m.route_changed = true;
        m.falls_back = true;
        c.prepare_cached(
            "UPDATE dispatch_jobs SET due_at = ?2, lease_owner = NULL, lease_until = NULL WHERE message_id = ?1",
        )?
        .execute(params![m.id.to_string(), now.0])?;
    } else if let Some(route) = m.route.as_ref().filter(|_| kind != EventKind::Fallback) {
        details = Some(crate::route::step_details(details, route.current_step, false));
    }
    if kind == EventKind::Fallback {
        applied = true;
    }
    m.sequence += 1;
    let event = MessageEvent {
        id: EventId::new(),
        message_id: m.id,
        sequence: m.sequence,
        kind,
        occurred_at,
        recorded_at: now,
        applied,
        attempt: extra.attempt,
        provider_message_id: extra.provider_message_id,
        error: extra.error.clone(),
        retry_at: extra.retry_at,
        details,
    };
    insert_event(c, m.workspace_id, &event)?;
    if kind == EventKind::Fallback {
        m.status = MessageState::Queued;
        m.error = None;
    } else if let (true, Some(state)) = (applied, kind.state()) {
        m.status = state;
        if state.is_failure() {
            m.error = extra.error;
        }
    }
    m.updated_at = m.updated_at.max(now);
    Ok(applied)
}

/// Write back the fields that events and dispatch change. The provider id is written only when
/// `with_provider_id` (a `sent` outcome, the one change of it): SQLite rewrites the index entries
/// of every column an UPDATE sets, changed or not.
fn write_progress(c: &Connection, m: &Progress, with_provider_id: bool) -> Result<()> {
    const WITHOUT: &str = "UPDATE messages SET status = ?2, sequence = ?3, updated_at = ?4, attempts = ?5, \
                           error_code = ?6, error_detail = ?7, error_permanent = ?8 WHERE id = ?1";
    const WITH: &str = "UPDATE messages SET status = ?2, sequence = ?3, updated_at = ?4, attempts = ?5, \
                        error_code = ?6, error_detail = ?7, error_permanent = ?8, provider_message_id = ?9 \
                        WHERE id = ?1";
    let (id, status, code, detail, permanent) = (
        m.id.to_string(),
        m.status.as_str(),
        m.error.as_ref().map(|e| e.code.as_str()),
        m.error.as_ref().map(|e| e.detail.as_str()),
        m.error.as_ref().map(|e| e.permanent),
    );
    let mut values: Vec<&dyn rusqlite::ToSql> =
        vec![&id, &status, &m.sequence, &m.updated_at.0, &m.attempts, &code, &detail, &permanent];
    let sql = if with_provider_id {
        values.push(&m.provider_message_id);
        WITH
    } else {
        WITHOUT
    };
    c.prepare_cached(sql)?.execute(values.as_slice())?;
    if m.route_changed
        && let Some(route) = &m.route
    {
        c.prepare_cached("UPDATE messages SET route = ?2 WHERE id = ?1")?
            .execute(params![id, crate::route::to_json(route)?])?;
    }
    Ok(())
}

fn load_message(c: &Connection, id: MessageId) -> Result<Option<Message>> {
    let mut st = c.prepare_cached(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1"))?;
    let mut found = st.query([id.to_string()])?;
    found.next()?.map(rows::message).transpose()
}

fn load_progress(c: &Connection, id: MessageId) -> Result<Option<Progress>> {
    let mut st = c.prepare_cached(&format!("SELECT {PROGRESS_COLUMNS} FROM messages WHERE id = ?1"))?;
    let mut found = st.query([id.to_string()])?;
    found.next()?.map(rows::progress).transpose()
}

fn delete_job(c: &Connection, id: MessageId) -> Result<()> {
    c.prepare_cached("DELETE FROM dispatch_jobs WHERE message_id = ?1")?.execute([id.to_string()])?;
    Ok(())
}

pub fn create_messages(c: &Connection, req: &CreateMessages, conversation_idle_ms: i64) -> Result<CreateOutcome> {
    if let Some(idem) = &req.idempotency {
        let existing = c
            .prepare_cached(
                "SELECT request_hash, response_status, response_body, created_at FROM idempotency_keys \
                 WHERE workspace_id = ?1 AND key = ?2",
            )?
            .query_row(params![req.workspace_id.to_string(), idem.key], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, u16>(1)?, r.get::<_, Vec<u8>>(2)?, r.get::<_, i64>(3)?))
            })
            .optional()?;
        match existing {
            Some((hash, status, body, created_at)) if created_at > req.now.0 - IDEMPOTENCY_TTL_MS => {
                return Ok(if hash == idem.request_hash {
                    CreateOutcome::Replayed { status, body }
                } else {
                    CreateOutcome::KeyReused
                });
            }
            _ => {}
        }
        c.prepare_cached(
            "INSERT OR REPLACE INTO idempotency_keys (workspace_id, key, request_hash, response_status, response_body, \
             created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            req.workspace_id.to_string(),
            idem.key,
            idem.request_hash,
            idem.response_status,
            idem.response_body,
            req.now.0
        ])?;
    }
    for new in &req.messages {
        // A message with a contact joins the contact's conversation (see `conversations::join`).
        let joined;
        let message = if new.message.conversation_id.is_some() {
            let mut m = new.message.clone();
            super::conversations::join(c, &mut m, conversation_idle_ms)?;
            joined = m;
            &joined
        } else {
            &new.message
        };
        insert_message(c, message)?;
        for e in &new.events {
            insert_event(c, new.message.workspace_id, e)?;
        }
        // A message refused before sending (policy) is stored final, with nothing to dispatch.
        if new.message.status.is_final() {
            continue;
        }
        c.prepare_cached(
            "INSERT INTO dispatch_jobs (message_id, workspace_id, channel_account_id, due_at, attempt, lease_owner, \
             lease_until, created_at) VALUES (?1, ?2, ?3, ?4, 0, NULL, NULL, ?5)",
        )?
        .execute(params![
            new.message.id.to_string(),
            new.message.workspace_id.to_string(),
            new.message.channel_account_id.to_string(),
            new.due_at.0,
            req.now.0
        ])
        .map_err(write_error)?;
    }
    Ok(CreateOutcome::Created)
}

pub fn cancel_message(c: &Connection, workspace: WorkspaceId, id: MessageId, now: Millis) -> Result<CancelOutcome> {
    let Some(mut m) = load_message(c, id)?.filter(|m| m.workspace_id == workspace) else {
        return Ok(CancelOutcome::NotFound);
    };
    if !m.status.is_cancelable() {
        return Ok(CancelOutcome::NotCancelable(m.status));
    }
    let job = c
        .prepare_cached("SELECT lease_until FROM dispatch_jobs WHERE message_id = ?1")?
        .query_row([id.to_string()], |r| r.get::<_, Option<i64>>(0))
        .optional()?;
    match job {
        None => return Ok(CancelOutcome::NotCancelable(m.status)),
        Some(Some(lease_until)) if lease_until > now.0 => return Ok(CancelOutcome::InFlight),
        Some(_) => {}
    }
    let mut progress = Progress::of(&m);
    append_event(c, &mut progress, EventKind::Canceled, now, now, EventExtra::default())?;
    write_progress(c, &progress, false)?;
    delete_job(c, id)?;
    progress.apply_to(&mut m);
    Ok(CancelOutcome::Canceled(Box::new(m)))
}

/// When the contact's consent ledger last changed.
fn latest_consent_at(
    c: &Connection,
    workspace: WorkspaceId,
    contact: parley_domain::ContactId,
) -> Result<Option<Millis>> {
    let at: Option<i64> = c
        .prepare_cached("SELECT MAX(recorded_at) FROM consents WHERE workspace_id = ?1 AND contact_id = ?2")?
        .query_row(params![workspace.to_string(), contact.to_string()], |r| r.get(0))?;
    Ok(at.map(Millis))
}

pub fn claim_jobs(c: &Connection, owner: &str, now: Millis, lease_ms: i64, limit: u32) -> Result<ClaimBatch> {
    // The due jobs with their messages, in one statement. (A job always has its message: both are
    // written in one transaction, and only deleting the job ends it.)
    let due: Vec<(Message, i32)> = {
        let columns: Vec<String> = MESSAGE_COLUMNS.split(", ").map(|column| format!("m.{column}")).collect();
        let mut st = c.prepare_cached(&format!(
            "SELECT {}, j.attempt FROM dispatch_jobs AS j JOIN messages AS m ON m.id = j.message_id \
             WHERE j.due_at <= ?1 AND (j.lease_until IS NULL OR j.lease_until <= ?1) \
             ORDER BY j.due_at, j.message_id LIMIT ?2",
            columns.join(", ")
        ))?;
        let mut rows = st.query(params![now.0, limit])?;
        let mut due = Vec::new();
        while let Some(row) = rows.next()? {
            // `j.attempt` comes right after the message's columns.
            due.push((rows::message(row)?, row.get(columns.len())?));
        }
        due
    };
    let lease_until = now.plus_millis(lease_ms);
    let mut batch = ClaimBatch::default();
    for (mut m, mut previous_attempt) in due {
        let id = m.id;
        if let Some(route) = &m.route {
            match route.decide(m.status, now, m.expires_at) {
                RouteDecision::Send => {}
                RouteDecision::Settled => {
                    delete_job(c, id)?;
                    continue;
                }
                RouteDecision::WaitUntil(at) => {
                    c.prepare_cached(
                        "UPDATE dispatch_jobs SET due_at = ?2, lease_owner = NULL, lease_until = NULL \
                         WHERE message_id = ?1",
                    )?
                    .execute(params![id.to_string(), at.0])?;
                    continue;
                }
                RouteDecision::FallBack(reason) => {
                    fall_back(c, &mut m, reason, now)?;
                    previous_attempt = 0;
                }
            }
        }
        if m.status.is_final() || matches!(m.status, MessageState::Sent | MessageState::Delivered) {
            delete_job(c, id)?;
            continue;
        }
        let mut progress = Progress::of(&m);
        if m.expires_at <= now {
            let error = expired_error();
            append_event(
                c,
                &mut progress,
                EventKind::Expired,
                now,
                now,
                EventExtra { error: Some(error), ..Default::default() },
            )?;
            write_progress(c, &progress, false)?;
            delete_job(c, id)?;
            batch.expired.push(id);
            continue;
        }
        let attempt = previous_attempt + 1;
        c.prepare_cached(
            "UPDATE dispatch_jobs SET lease_owner = ?2, lease_until = ?3, attempt = ?4 WHERE message_id = ?1",
        )?
        .execute(params![id.to_string(), owner, lease_until.0, attempt])?;
        if progress.status == MessageState::Scheduled {
            append_event(c, &mut progress, EventKind::Queued, now, now, EventExtra::default())?;
        }
        if progress.status != MessageState::Sending {
            append_event(
                c,
                &mut progress,
                EventKind::Sending,
                now,
                now,
                EventExtra { attempt: Some(attempt), ..Default::default() },
            )?;
        }
        progress.attempts = attempt;
        progress.updated_at = progress.updated_at.max(now);
        write_progress(c, &progress, false)?;
        progress.apply_to(&mut m);
        let consent_changed_at = match m.contact_id {
            Some(contact) => latest_consent_at(c, m.workspace_id, contact)?,
            None => None,
        };
        batch.jobs.push(ClaimedJob { message: m, attempt, lease_until, consent_changed_at });
    }
    Ok(batch)
}

/// Move a routed message from its current step to the next (see `parley_domain::route`): record
/// the `fallback` event, keep the left step's provider ids (and its parts') for late receipts, and
/// point the message and its job at the next step's channel, account and address.
fn fall_back(c: &Connection, m: &mut Message, reason: FallbackReason, now: Millis) -> Result<()> {
    let Some(route) = m.route.as_mut() else { return Ok(()) };
    let left = route.current_step;
    let details = route.advance(reason, now);
    let id = m.id.to_string();
    if let Some(provider_id) = &m.provider_message_id {
        c.prepare_cached(
            "INSERT OR REPLACE INTO superseded_sends (channel_account_id, provider_message_id, message_id, step) \
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![m.channel_account_id.to_string(), provider_id, id, left])?;
    }
    c.prepare_cached(
        "INSERT OR REPLACE INTO superseded_sends (channel_account_id, provider_message_id, message_id, step) \
         SELECT channel_account_id, provider_message_id, message_id, ?2 FROM message_parts WHERE message_id = ?1",
    )?
    .execute(params![id, left])?;
    c.prepare_cached("DELETE FROM message_parts WHERE message_id = ?1")?.execute([&id])?;
    let step = route.step().clone();
    m.channel = step.channel;
    m.channel_account_id = step.channel_account_id;
    m.to = step.to;
    m.provider_message_id = None;
    m.attempts = 0;
    let mut progress = Progress::of(m);
    append_event(
        c,
        &mut progress,
        EventKind::Fallback,
        now,
        now,
        EventExtra { details: Some(details), ..Default::default() },
    )?;
    write_progress(c, &progress, true)?;
    progress.apply_to(m);
    c.prepare_cached(
        "UPDATE messages SET channel = ?2, channel_account_id = ?3, to_address = ?4, route = ?5 WHERE id = ?1",
    )?
    .execute(params![
        id,
        m.channel.as_str(),
        m.channel_account_id.to_string(),
        m.to,
        m.route.as_ref().map(crate::route::to_json).transpose()?
    ])?;
    c.prepare_cached("UPDATE dispatch_jobs SET channel_account_id = ?2, attempt = 0 WHERE message_id = ?1")?
        .execute(params![id, m.channel_account_id.to_string()])?;
    Ok(())
}

/// After a `sent` outcome: the job of a routed message with a step after this one stays, due when
/// the step must be looked at again (its stored fallback timer); any other job is done.
fn settle_sent_job(c: &Connection, m: &mut Progress, provider_message_id: &str, at: Millis) -> Result<()> {
    let watch = match m.route.as_mut() {
        Some(route) => {
            m.route_changed = true;
            route.sent(provider_message_id, at, m.expires_at)
        }
        None => None,
    };
    match watch {
        Some(due) => {
            c.prepare_cached(
                "UPDATE dispatch_jobs SET due_at = ?2, lease_owner = NULL, lease_until = NULL, attempt = 0 \
                 WHERE message_id = ?1",
            )?
            .execute(params![m.id.to_string(), due.0])?;
            Ok(())
        }
        None => delete_job(c, m.id),
    }
}

pub fn expired_error() -> ErrorInfo {
    ErrorInfo {
        code: "validity_expired".into(),
        detail: "the message's validity ran out before it could be sent".into(),
        permanent: true,
    }
}

/// Outcomes are the dispatcher's own observations: recorded at the time it gives (`at`).
pub fn record_outcomes(c: &Connection, outcomes: &[DispatchOutcome]) -> Result<()> {
    // Receipts are rarely kept waiting: look for them only when some are.
    let receipts_kept =
        c.prepare_cached("SELECT EXISTS (SELECT 1 FROM pending_receipts)")?.query_row([], |r| r.get(0))?;
    for o in outcomes {
        let Some(mut m) = load_progress(c, o.message_id)? else { continue };
        let attempt = Some(o.attempt);
        match &o.kind {
            OutcomeKind::Sent { provider_message_id, part_ids } => {
                let extra = EventExtra {
                    attempt,
                    provider_message_id: Some(provider_message_id.clone()),
                    ..Default::default()
                };
                let applied = append_event(c, &mut m, EventKind::Sent, o.at, o.at, extra)?;
                m.provider_message_id = Some(provider_message_id.clone());
                // The transient error of an earlier attempt is over; the error that ended a
                // message (a stale claim's `sent` after another claim failed it) stays.
                if applied {
                    m.error = None;
                }
                settle_sent_job(c, &mut m, provider_message_id, o.at)?;
                if let Some(parts) = parts::of_outcome(part_ids) {
                    insert_parts(c, &m, &parts)?;
                }
                if receipts_kept {
                    apply_pending_receipts(c, &mut m, o.at)?;
                }
            }
            OutcomeKind::Retry { error, retry_at } => {
                // The message's error while it is retried; once it is past sending (another
                // claim sent or ended it), this stale attempt's error is only recorded.
                if m.status.can_advance_to(MessageState::Sent) {
                    m.error = Some(error.clone());
                }
                let extra =
                    EventExtra { attempt, error: Some(error.clone()), retry_at: Some(*retry_at), ..Default::default() };
                append_event(c, &mut m, EventKind::AttemptFailed, o.at, o.at, extra)?;
                // Only the claim that still holds the job may reschedule it: a worker whose lease
                // ran out must not free a job that another worker holds now.
                c.prepare_cached(
                    "UPDATE dispatch_jobs SET due_at = ?2, lease_owner = NULL, lease_until = NULL \
                     WHERE message_id = ?1 AND lease_owner = ?3 AND attempt = ?4",
                )?
                .execute(params![o.message_id.to_string(), retry_at.0, o.lease_owner, o.attempt])?;
            }
            OutcomeKind::Failed { error } | OutcomeKind::Expired { error } | OutcomeKind::Rejected { error } => {
                append_event(
                    c,
                    &mut m,
                    o.kind.event().unwrap_or(EventKind::Failed),
                    o.at,
                    o.at,
                    EventExtra { attempt, error: Some(error.clone()), ..Default::default() },
                )?;
                // A step with a next one leaves its job to move on (due now).
                if !m.falls_back {
                    delete_job(c, o.message_id)?;
                }
            }
            OutcomeKind::Release { due_at } => {
                let released = c
                    .prepare_cached(
                        "UPDATE dispatch_jobs SET due_at = ?2, lease_owner = NULL, lease_until = NULL, \
                         attempt = MAX(attempt - 1, 0) WHERE message_id = ?1 AND lease_owner = ?3 AND attempt = ?4",
                    )?
                    .execute(params![o.message_id.to_string(), due_at.0, o.lease_owner, o.attempt])?;
                if released > 0 {
                    m.attempts = (o.attempt - 1).max(0);
                }
            }
        }
        if matches!(o.kind, OutcomeKind::Sent { .. }) {
            write_progress(c, &m, true)?;
        } else {
            write_progress(c, &m, false)?;
        }
    }
    Ok(())
}

fn apply_receipt(c: &Connection, m: &mut Progress, r: &Receipt, now: Millis) -> Result<()> {
    let extra = EventExtra {
        provider_message_id: Some(r.provider_message_id.clone()),
        error: r.error.clone(),
        details: r.details.clone(),
        ..Default::default()
    };
    append_event(c, m, EventKind::from(r.state), r.occurred_at, now, extra)?;
    Ok(())
}

/// Keep the parts of a message that was just sent. A part already kept for this message (a
/// second `sent` outcome for it) keeps its state; one of another message (the provider reused
/// the id) starts again.
fn insert_parts(c: &Connection, m: &Progress, parts: &[Part]) -> Result<()> {
    let mut st = c.prepare_cached(
        "INSERT INTO message_parts (channel_account_id, provider_message_id, message_id, part_index, part_count, \
         state, error_code, error_detail, error_permanent) VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, NULL, NULL) \
         ON CONFLICT (channel_account_id, provider_message_id) DO UPDATE SET \
         state = CASE WHEN message_id = excluded.message_id THEN state END, \
         error_code = CASE WHEN message_id = excluded.message_id THEN error_code END, \
         error_detail = CASE WHEN message_id = excluded.message_id THEN error_detail END, \
         error_permanent = CASE WHEN message_id = excluded.message_id THEN error_permanent END, \
         message_id = excluded.message_id, part_index = excluded.part_index, part_count = excluded.part_count",
    )?;
    for p in parts {
        st.execute(params![
            m.channel_account_id.to_string(),
            p.provider_message_id,
            m.id.to_string(),
            p.index,
            p.count
        ])?;
    }
    Ok(())
}

/// The message that the part (account, provider id) belongs to, if it is one.
fn find_part(c: &Connection, r: &Receipt) -> Result<Option<MessageId>> {
    let id: Option<String> = c
        .prepare_cached(
            "SELECT message_id FROM message_parts WHERE channel_account_id = ?1 AND provider_message_id = ?2",
        )?
        .query_row(params![r.channel_account_id.to_string(), r.provider_message_id], |row| row.get(0))
        .optional()?;
    id.map(|id| MessageId::parse(&id).map_err(|_| rows::corrupt("message id", &id))).transpose()
}

/// Every part of the message, in order (none for a single-part message).
fn parts_of(c: &Connection, id: MessageId) -> Result<Vec<Part>> {
    let mut st = c.prepare_cached(
        "SELECT provider_message_id, part_index, part_count, state, error_code, error_detail, error_permanent \
         FROM message_parts WHERE message_id = ?1 ORDER BY part_index",
    )?;
    let mut found = st.query([id.to_string()])?;
    let mut parts = Vec::new();
    while let Some(row) = found.next()? {
        let state: Option<String> = row.get(3)?;
        let (code, detail, permanent): (Option<String>, Option<String>, Option<bool>) =
            (row.get(4)?, row.get(5)?, row.get(6)?);
        parts.push(Part {
            provider_message_id: row.get(0)?,
            index: row.get(1)?,
            count: row.get(2)?,
            state: state.map(|s| MessageState::parse(&s).ok_or_else(|| rows::corrupt("part state", &s))).transpose()?,
            error: code.map(|code| ErrorInfo {
                code,
                detail: detail.unwrap_or_default(),
                permanent: permanent.unwrap_or(false),
            }),
        });
    }
    Ok(parts)
}

/// Apply a receipt for one part of `m` (see [`crate::Store::record_receipts`]). The parts are
/// read from the database each time: a batch may run twice, and several receipts of one batch
/// may be for the same message.
fn apply_part_receipt(c: &Connection, m: &mut Progress, r: &Receipt, now: Millis) -> Result<()> {
    let mut parts = parts_of(c, m.id)?;
    let Some(step) = parts::apply(&mut parts, &r.provider_message_id, r.state, r.error.as_ref()) else {
        // Not one of its parts after all: a receipt for the message itself.
        return apply_receipt(c, m, r, now);
    };
    if step.changed
        && let Some(part) = parts.iter().find(|p| p.provider_message_id == r.provider_message_id)
    {
        c.prepare_cached(
            "UPDATE message_parts SET state = ?3, error_code = ?4, error_detail = ?5, error_permanent = ?6 \
             WHERE channel_account_id = ?1 AND provider_message_id = ?2",
        )?
        .execute(params![
            m.channel_account_id.to_string(),
            part.provider_message_id,
            part.state.map(MessageState::as_str),
            part.error.as_ref().map(|e| e.code.as_str()),
            part.error.as_ref().map(|e| e.detail.as_str()),
            part.error.as_ref().map(|e| e.permanent)
        ])?;
    }
    let extra = EventExtra {
        provider_message_id: Some(r.provider_message_id.clone()),
        error: r.error.clone(),
        details: Some(parts::part_details(r.details.as_ref(), step.index, step.count)),
        never_applied: true,
        ..Default::default()
    };
    append_event(c, m, EventKind::from(r.state), r.occurred_at, now, extra)?;
    if let Some(resolution) = step.resolution {
        let extra = EventExtra {
            provider_message_id: m.provider_message_id.clone(),
            error: resolution.error,
            details: Some(serde_json::json!({ "parts": step.count })),
            ..Default::default()
        };
        append_event(c, m, EventKind::from(resolution.state), r.occurred_at, now, extra)?;
    }
    Ok(())
}

/// Apply the kept receipts of a message just sent: those of its provider id, or of every one of
/// its parts' ids, in the order they happened.
fn apply_pending_receipts(c: &Connection, m: &mut Progress, now: Millis) -> Result<()> {
    let Some(provider_id) = m.provider_message_id.clone() else { return Ok(()) };
    let parts = parts_of(c, m.id)?;
    let ids: Vec<String> = if parts.is_empty() {
        vec![provider_id]
    } else {
        parts.iter().map(|p| p.provider_message_id.clone()).collect()
    };
    // (row id, provider id, state, occurred_at, error code, error detail, error permanent, details)
    type PendingRow = (i64, String, String, i64, Option<String>, Option<String>, Option<bool>, Option<String>);
    let pending: Vec<PendingRow> = {
        let mut st = c.prepare_cached(
            "SELECT id, provider_message_id, state, occurred_at, error_code, error_detail, error_permanent, details \
             FROM pending_receipts WHERE channel_account_id = ?1 \
             AND provider_message_id IN (SELECT value FROM json_each(?2)) ORDER BY occurred_at, id",
        )?;
        let ids = serde_json::to_string(&ids).map_err(|e| crate::StoreError::Database(e.to_string()))?;
        let mapped = st.query_map(params![m.channel_account_id.to_string(), ids], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
        })?;
        mapped.collect::<Result<_, _>>()?
    };
    for (row_id, provider_message_id, state, occurred_at, code, detail, permanent, details) in pending {
        let state = MessageState::parse(&state).ok_or_else(|| rows::corrupt("receipt state", &state))?;
        let receipt = Receipt {
            channel_account_id: m.channel_account_id,
            provider_message_id,
            state,
            occurred_at: Millis(occurred_at),
            error: code.map(|code| ErrorInfo {
                code,
                detail: detail.unwrap_or_default(),
                permanent: permanent.unwrap_or(false),
            }),
            details: parts::parse_details(details)?,
        };
        if parts.is_empty() {
            apply_receipt(c, m, &receipt, now)?;
        } else {
            apply_part_receipt(c, m, &receipt, now)?;
        }
        c.prepare_cached("DELETE FROM pending_receipts WHERE id = ?1")?.execute([row_id])?;
    }
    Ok(())
}

fn find_by_provider_id(c: &Connection, r: &Receipt) -> Result<Option<Progress>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {PROGRESS_COLUMNS} FROM messages WHERE channel_account_id = ?1 AND provider_message_id = ?2 \
         AND direction = 'outbound' ORDER BY id DESC LIMIT 1"
    ))?;
    let mut found = st.query(params![r.channel_account_id.to_string(), r.provider_message_id])?;
    found.next()?.map(rows::progress).transpose()
}

/// A receipt for a route step that its message has left: recorded on the message, never applied
/// (the message has moved on; the customer is not messaged again for it). `false` when the
/// receipt is not for such a step.
fn apply_superseded_receipt(c: &Connection, r: &Receipt, now: Millis) -> Result<bool> {
    let found: Option<(String, i64)> = c
        .prepare_cached(
            "SELECT message_id, step FROM superseded_sends WHERE channel_account_id = ?1 AND provider_message_id = ?2",
        )?
        .query_row(params![r.channel_account_id.to_string(), r.provider_message_id], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let Some((id, step)) = found else { return Ok(false) };
    let id = MessageId::parse(&id).map_err(|_| rows::corrupt("message id", &id))?;
    let Some(mut m) = load_progress(c, id)? else { return Ok(false) };
    let extra = EventExtra {
        provider_message_id: Some(r.provider_message_id.clone()),
        error: r.error.clone(),
        details: Some(crate::route::superseded_details(r.details.clone(), step)),
        never_applied: true,
        ..Default::default()
    };
    append_event(c, &mut m, EventKind::from(r.state), r.occurred_at, now, extra)?;
    write_progress(c, &m, false)?;
    Ok(true)
}

pub fn record_receipts(c: &Connection, receipts: &[Receipt], now: Millis) -> Result<()> {
    for r in receipts {
        // A part of a multi-part message (its first part's id is the message's provider id too).
        if let Some(id) = find_part(c, r)?
            && let Some(mut m) = load_progress(c, id)?
        {
            apply_part_receipt(c, &mut m, r, now)?;
            write_progress(c, &m, false)?;
            continue;
        }
        match find_by_provider_id(c, r)? {
            Some(mut m) => {
                apply_receipt(c, &mut m, r, now)?;
                write_progress(c, &m, false)?;
            }
            None if apply_superseded_receipt(c, r, now)? => {}
            None => {
                c.prepare_cached(
                    "INSERT INTO pending_receipts (channel_account_id, provider_message_id, state, occurred_at, \
                     error_code, error_detail, error_permanent, received_at, details) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    r.channel_account_id.to_string(),
                    r.provider_message_id,
                    r.state.as_str(),
                    r.occurred_at.0,
                    r.error.as_ref().map(|e| e.code.as_str()),
                    r.error.as_ref().map(|e| e.detail.as_str()),
                    r.error.as_ref().map(|e| e.permanent),
                    now.0,
                    r.details.as_ref().map(|d| d.to_string())
                ])?;
            }
        }
    }
    Ok(())
}

pub fn record_inbound(c: &Connection, inbound: &[InboundMessage], conversation_idle_ms: i64) -> Result<Vec<Message>> {
    let mut stored = Vec::new();
    for i in inbound {
        let exists = c
            .prepare_cached("SELECT 1 FROM messages WHERE channel_account_id = ?1 AND provider_message_id = ?2")?
            .query_row(params![i.channel_account_id.to_string(), i.provider_message_id], |_| Ok(()))
            .optional()?
            .is_some();
        if exists {
            continue;
        }
        let account = c
            .prepare_cached("SELECT workspace_id, channel, name FROM channel_accounts WHERE id = ?1")?
            .query_row([i.channel_account_id.to_string()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })
            .optional()?;
        let Some((workspace, channel, account_name)) = account else { continue };
        // Sent to no address the provider named, it is taken to be addressed to the channel
        // account itself; it was created (and is recorded) when it was received.
        let now = i.received_at;
        let mut m = Message {
            id: MessageId::new(),
            workspace_id: WorkspaceId::parse(&workspace).map_err(|_| rows::corrupt("workspace id", &workspace))?,
            direction: Direction::Inbound,
            channel: parley_domain::Channel::parse(&channel).ok_or_else(|| rows::corrupt("channel", &channel))?,
            channel_account_id: i.channel_account_id,
            to: i.to.clone().unwrap_or(account_name),
            from: Some(i.from.clone()),
            status: MessageState::Received,
            content: i.content.clone(),
            send_at: None,
            expires_at: i.received_at,
            validity_seconds: 0,
            metadata: Default::default(),
            client_reference: None,
            contact_id: i.contact_id,
            conversation_id: None,
            purpose: None,
            provider_message_id: Some(i.provider_message_id.clone()),
            attempts: 0,
            error: None,
            sequence: 1,
            created_at: now,
            updated_at: now,
            route: None,
            events: None,
        };
        super::conversations::join(c, &mut m, conversation_idle_ms)?;
        insert_message(c, &m)?;
        let event = MessageEvent {
            id: EventId::new(),
            message_id: m.id,
            sequence: 1,
            kind: EventKind::Received,
            occurred_at: i.received_at,
            recorded_at: now,
            applied: true,
            attempt: None,
            provider_message_id: Some(i.provider_message_id.clone()),
            error: None,
            retry_at: None,
            details: None,
        };
        insert_event(c, m.workspace_id, &event)?;
        m.events = Some(events_of(c, m.id)?);
        stored.push(m);
    }
    Ok(stored)
}

/// The claim's attempt is given back, on the job and on its message: the job was not tried.
pub fn release_leases(c: &Connection, owner: &str) -> Result<u64> {
    c.prepare_cached(
        "UPDATE messages SET attempts = (SELECT MAX(j.attempt - 1, 0) FROM dispatch_jobs AS j \
         WHERE j.message_id = messages.id) \
         WHERE id IN (SELECT message_id FROM dispatch_jobs WHERE lease_owner = ?1)",
    )?
    .execute([owner])?;
    let n = c
        .prepare_cached(
            "UPDATE dispatch_jobs SET lease_owner = NULL, lease_until = NULL, attempt = MAX(attempt - 1, 0) \
             WHERE lease_owner = ?1",
        )?
        .execute([owner])?;
    Ok(n as u64)
}
