//! The dispatch queue: claims, the dispatcher's outcomes, cancellation, released leases.
//!
//! Locks are always taken in the same order, so that these transactions cannot deadlock on one
//! another: provider-id locks, then job rows, then message rows (by id), then the rows of their
//! parts (`message_parts`, written only by whoever holds the message row), then the feed lock.

use super::provider::{Parts, ReceiptRow, apply_receipt, insert_parts, take_pending_receipts};
use super::rows::{self, message_columns};
use super::timeline::{Observation, Timeline};
use super::{lock_provider_ids, map_write_error};
use crate::parts;
use crate::{CancelOutcome, ClaimBatch, ClaimedJob, DispatchOutcome, OutcomeKind, Result};
use parley_domain::{ErrorInfo, EventKind, MessageId, MessageState, Millis, RouteDecision, WorkspaceId};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The error of a message whose validity ran out while it waited.
fn validity_expired() -> ErrorInfo {
    ErrorInfo {
        code: "validity_expired".into(),
        detail: "the message's validity ran out before it could be sent".into(),
        permanent: true,
    }
}

async fn delete_jobs(conn: &mut PgConnection, ids: &BTreeSet<MessageId>) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    sqlx::query("DELETE FROM dispatch_jobs WHERE message_id = ANY($1::text[])").bind(ids).execute(conn).await?;
    Ok(())
}

pub(super) async fn claim_jobs(
    pool: &PgPool,
    owner: &str,
    now: Millis,
    lease_ms: i64,
    limit: u32,
) -> Result<ClaimBatch> {
    if limit == 0 {
        return Ok(ClaimBatch::default());
    }
    let lease_until = now.plus_millis(lease_ms);
    let mut tx = pool.begin().await?;
    // SKIP LOCKED: jobs another claimer is taking right now are passed over, not waited for.
    let rows = sqlx::query(
        "UPDATE dispatch_jobs AS j SET lease_owner = $1, lease_until = $2, attempt = j.attempt + 1 \
         FROM (SELECT message_id FROM dispatch_jobs \
               WHERE due_at <= $3 AND (lease_until IS NULL OR lease_until <= $3) \
               ORDER BY due_at, message_id LIMIT $4 FOR UPDATE SKIP LOCKED) AS due \
         WHERE j.message_id = due.message_id \
         RETURNING j.message_id, j.attempt, j.due_at",
    )
    .bind(owner)
    .bind(lease_until.0)
    .bind(now.0)
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(ClaimBatch::default());
    }
    let mut claimed = Vec::with_capacity(rows.len());
    for row in &rows {
        let id = rows::parse_message_id(&row.try_get::<String, _>("message_id")?)?;
        let attempt: i64 = row.try_get("attempt")?;
        let attempt = i32::try_from(attempt).map_err(|_| rows::corrupt("job attempt", &attempt.to_string()))?;
        claimed.push((row.try_get::<i64, _>("due_at")?, id, attempt));
    }
    claimed.sort();

    let ids: Vec<String> = claimed.iter().map(|(_, id, _)| id.to_string()).collect();
    let mut timeline = Timeline::new(rows::lock_messages(&mut tx, &ids).await?);
    let mut batch = ClaimBatch::default();
    let mut finished = BTreeSet::new();
    let mut held = Vec::new();
    // Jobs of routed messages to look at again later (their step's deadline), and jobs whose
    // message moved on to its next step (its attempts start again).
    let mut waiting: Vec<(MessageId, Millis)> = Vec::new();
    let mut moved_on = Vec::new();
    for (_, id, mut attempt) in claimed {
        let Some(message) = timeline.get(id) else {
            tracing::warn!(message = %id, "dispatch job without a message; deleted");
            finished.insert(id);
            continue;
        };
        if let Some(route) = &message.route {
            match route.decide(message.status, now, message.expires_at) {
                RouteDecision::Send => {}
                RouteDecision::Settled => {
                    finished.insert(id);
                    continue;
                }
                RouteDecision::WaitUntil(at) => {
                    waiting.push((id, at));
                    continue;
                }
                RouteDecision::FallBack(reason) => {
                    timeline.fall_back(id, reason, now);
                    attempt = 1;
                    moved_on.push(id);
                }
            }
        }
        let Some(message) = timeline.get(id) else { continue };
        let (status, expired) = (message.status, message.expires_at <= now);
        if !matches!(
            status,
            MessageState::Accepted | MessageState::Scheduled | MessageState::Queued | MessageState::Sending
        ) {
            // Already handed over, or ended: nothing is left to dispatch.
            tracing::warn!(message = %id, status = status.as_str(), "dispatch job of a message past sending; deleted");
            finished.insert(id);
            continue;
        }
        if expired {
            timeline.record(id, EventKind::Expired, at(now, None, Some(validity_expired())));
            finished.insert(id);
            batch.expired.push(id);
            continue;
        }
        if status == MessageState::Scheduled {
            timeline.record(id, EventKind::Queued, at(now, None, None));
        }
        if status != MessageState::Sending {
            timeline.record(id, EventKind::Sending, at(now, Some(attempt), None));
        }
        if let Some(m) = timeline.edit(id) {
            m.attempts = attempt;
            m.updated_at = m.updated_at.max(now);
        }
        held.push((id, attempt));
    }
    delete_jobs(&mut tx, &finished).await?;
    if !waiting.is_empty() {
        let ids: Vec<String> = waiting.iter().map(|(id, _)| id.to_string()).collect();
        let due: Vec<i64> = waiting.iter().map(|(_, at)| at.0).collect();
        sqlx::query(
            "UPDATE dispatch_jobs AS j SET due_at = u.due, attempt = 0, lease_owner = NULL, lease_until = NULL \
             FROM UNNEST($1::text[], $2::bigint[]) AS u(id, due) WHERE j.message_id = u.id",
        )
        .bind(ids)
        .bind(due)
        .execute(&mut *tx)
        .await?;
    }
    if !moved_on.is_empty() {
        let ids: Vec<String> = moved_on.iter().map(ToString::to_string).collect();
        let accounts: Vec<String> =
            moved_on.iter().filter_map(|id| timeline.get(*id).map(|m| m.channel_account_id.to_string())).collect();
        sqlx::query(
            "UPDATE dispatch_jobs AS j SET attempt = 1, channel_account_id = u.account \
             FROM UNNEST($1::text[], $2::text[]) AS u(id, account) WHERE j.message_id = u.id",
        )
        .bind(ids)
        .bind(accounts)
        .execute(&mut *tx)
        .await?;
    }
    timeline.flush(&mut tx).await?;
    let consent_changes = latest_consents_at(&mut tx, &timeline, &held).await?;
    tx.commit().await?;
    batch.jobs = held
        .into_iter()
        .filter_map(|(id, attempt)| {
            timeline.message(id).map(|message| {
                let consent_changed_at =
                    message.contact_id.and_then(|contact| consent_changes.get(&contact.to_string()).copied());
                ClaimedJob { message, attempt, lease_until, consent_changed_at }
            })
        })
        .collect();
    Ok(batch)
}

/// When the consent ledgers of the claimed messages' contacts last changed, by contact id.
async fn latest_consents_at(
    conn: &mut PgConnection,
    timeline: &Timeline,
    held: &[(MessageId, i32)],
) -> Result<HashMap<String, Millis>> {
    let (workspaces, contacts): (Vec<String>, Vec<String>) = held
        .iter()
        .filter_map(|(id, _)| timeline.get(*id))
        .filter_map(|m| m.contact_id.map(|contact| (m.workspace_id.to_string(), contact.to_string())))
        .unzip();
    if contacts.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.contact_id, MAX(c.recorded_at) FROM consents AS c \
         JOIN UNNEST($1::text[], $2::text[]) AS u(workspace_id, contact_id) \
         ON c.workspace_id = u.workspace_id AND c.contact_id = u.contact_id GROUP BY c.contact_id",
    )
    .bind(workspaces)
    .bind(contacts)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(contact, at)| (contact, Millis(at))).collect())
}

/// An observation made by Parley at `now`.
fn at(now: Millis, attempt: Option<i32>, error: Option<ErrorInfo>) -> Observation {
    Observation { occurred_at: now, recorded_at: now, attempt, error, ..Observation::default() }
}

/// The job a claim holds, as it is now.
struct JobState {
    lease_owner: Option<String>,
    attempt: i64,
}

pub(super) async fn record_outcomes(pool: &PgPool, outcomes: Vec<DispatchOutcome>) -> Result<()> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> =
        outcomes.iter().map(|o| o.message_id).collect::<BTreeSet<_>>().iter().map(ToString::to_string).collect();
    let mut tx = pool.begin().await?;

    // (channel account, provider id) of every `sent` outcome: locked first, so that a receipt
    // for it either commits before (and is found below) or waits and finds the message.
    let mut sent_pairs: Vec<(String, String)> = Vec::new();
    if outcomes.iter().any(|o| matches!(o.kind, OutcomeKind::Sent { .. })) {
        let rows = sqlx::query("SELECT id, channel_account_id FROM messages WHERE id = ANY($1::text[])")
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
        let mut accounts = HashMap::new();
        for row in &rows {
            accounts.insert(row.try_get::<String, _>("id")?, row.try_get::<String, _>("channel_account_id")?);
        }
        for o in &outcomes {
            if let (OutcomeKind::Sent { provider_message_id, part_ids }, Some(account)) =
                (&o.kind, accounts.get(&o.message_id.to_string()))
            {
                // Every part's id: kept receipts of any part are taken below.
                for id in std::iter::once(provider_message_id).chain(part_ids) {
                    sent_pairs.push((account.clone(), id.clone()));
                }
            }
        }
        lock_provider_ids(&mut tx, &sent_pairs).await?;
    }

    let mut jobs: HashMap<MessageId, JobState> = HashMap::new();
    let rows = sqlx::query(
        "SELECT message_id, lease_owner, attempt FROM dispatch_jobs WHERE message_id = ANY($1::text[]) \
         ORDER BY message_id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    for row in &rows {
        let id = rows::parse_message_id(&row.try_get::<String, _>("message_id")?)?;
        jobs.insert(id, JobState { lease_owner: row.try_get("lease_owner")?, attempt: row.try_get("attempt")? });
    }
    let mut timeline = Timeline::new(rows::lock_messages(&mut tx, &ids).await?);
    // The parts of messages sent in several, kept before their kept receipts are applied.
    let mut split = Vec::new();
    for o in &outcomes {
        if let (OutcomeKind::Sent { part_ids, .. }, Some(message)) = (&o.kind, timeline.get(o.message_id))
            && let Some(parts) = parts::of_outcome(part_ids)
        {
            split.push((o.message_id, message.channel_account_id.to_string(), parts));
        }
    }
    let mut parts = Parts::default();
    if !split.is_empty() {
        insert_parts(&mut tx, &split).await?;
        let ids: Vec<String> =
            split.iter().map(|(id, _, _)| *id).collect::<BTreeSet<_>>().iter().map(ToString::to_string).collect();
        parts = Parts::load(&mut tx, &ids).await?;
    }
    let mut pending = take_pending_receipts(&mut tx, &sent_pairs).await?;

    let mut finished = BTreeSet::new();
    // message → (due at, attempt): jobs handed back to the queue.
    let mut requeued: BTreeMap<MessageId, (Millis, i64)> = BTreeMap::new();
    for o in outcomes {
        let id = o.message_id;
        let Some(message) = timeline.get(id) else {
            tracing::warn!(message = %id, "outcome for an unknown message; ignored");
            continue;
        };
        let account = message.channel_account_id.to_string();
        let dispatching = message.status.can_advance_to(MessageState::Sent);
        // Only the claim that holds the job may hand it back; a stale one (its lease ran out and
        // another dispatcher took the job) is recorded but leaves the job alone.
        let holds_claim = jobs.get(&id).is_some_and(|j| {
            j.lease_owner.as_deref() == Some(o.lease_owner.as_str()) && j.attempt == i64::from(o.attempt)
        });
        let observation = |error: Option<ErrorInfo>| Observation {
            occurred_at: o.at,
            recorded_at: o.at,
            attempt: Some(o.attempt),
            error,
            ..Observation::default()
        };
        let event = o.kind.event().unwrap_or(EventKind::Failed);
        match o.kind {
            OutcomeKind::Sent { provider_message_id, .. } => {
                let applied = timeline.record(
                    id,
                    EventKind::Sent,
                    Observation { provider_message_id: Some(provider_message_id.clone()), ..observation(None) },
                );
                if let Some(m) = timeline.edit(id) {
                    m.provider_message_id = Some(provider_message_id.clone());
                    // The transient error of an earlier attempt is over.
                    if applied == Some(true) {
                        m.error = None;
                    }
                }
                // A routed message with a step after this one keeps its job, due when the step
                // must be looked at again (the stored fallback timer).
                match timeline.route_sent(id, &provider_message_id, o.at) {
                    Some(due) => {
                        finished.remove(&id);
                        requeued.insert(id, (due, 0));
                    }
                    None => {
                        finished.insert(id);
                        requeued.remove(&id);
                    }
                }
                let mut part_ids = parts.ids_of(id);
                if part_ids.is_empty() {
                    part_ids.push(provider_message_id);
                }
                let mut receipts: Vec<ReceiptRow> = part_ids
                    .into_iter()
                    .flat_map(|pid| pending.remove(&(account.clone(), pid)).unwrap_or_default())
                    .collect();
                receipts.sort_by_key(|r| (r.occurred_at, r.id));
                for receipt in receipts {
                    if !parts.apply(&mut timeline, id, &receipt, o.at) {
                        apply_receipt(&mut timeline, id, &receipt, o.at);
                    }
                }
            }
            OutcomeKind::Retry { error, retry_at } => {
                timeline.record(
                    id,
                    EventKind::AttemptFailed,
                    Observation { retry_at: Some(retry_at), ..observation(Some(error.clone())) },
                );
                if dispatching && let Some(m) = timeline.edit(id) {
                    m.error = Some(error);
                }
                if holds_claim && !finished.contains(&id) {
                    requeued.insert(id, (retry_at, i64::from(o.attempt)));
                }
            }
            OutcomeKind::Failed { error } | OutcomeKind::Rejected { error } => {
                timeline.record(id, event, observation(Some(error)));
                // A step with a next one leaves its job to move on (due now, at flush).
                if !timeline.falls_back(id) {
                    finished.insert(id);
                }
                requeued.remove(&id);
            }
            OutcomeKind::Expired { error } => {
                timeline.record(id, EventKind::Expired, observation(Some(error)));
                finished.insert(id);
                requeued.remove(&id);
            }
            OutcomeKind::Release { due_at } => {
                if holds_claim && !finished.contains(&id) {
                    let attempt = (i64::from(o.attempt) - 1).max(0);
                    requeued.insert(id, (due_at, attempt));
                    if let Some(m) = timeline.edit(id) {
                        m.attempts = i32::try_from(attempt).unwrap_or(0);
                    }
                }
            }
        }
    }

    if !requeued.is_empty() {
        let ids: Vec<String> = requeued.keys().map(ToString::to_string).collect();
        let due: Vec<i64> = requeued.values().map(|(d, _)| d.0).collect();
        let attempts: Vec<i64> = requeued.values().map(|(_, a)| *a).collect();
        sqlx::query(
            "UPDATE dispatch_jobs AS j SET due_at = u.due, attempt = u.attempt, lease_owner = NULL, lease_until = NULL \
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS u(id, due, attempt) WHERE j.message_id = u.id",
        )
        .bind(ids)
        .bind(due)
        .bind(attempts)
        .execute(&mut *tx)
        .await?;
    }
    delete_jobs(&mut tx, &finished).await?;
    parts.save(&mut tx).await?;
    timeline.flush(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn cancel_message(
    pool: &PgPool,
    workspace: WorkspaceId,
    id: MessageId,
    now: Millis,
) -> Result<CancelOutcome> {
    let mut tx = pool.begin().await?;
    let job = sqlx::query(
        "SELECT lease_owner, lease_until FROM dispatch_jobs WHERE message_id = $1 AND workspace_id = $2 FOR UPDATE",
    )
    .bind(id.to_string())
    .bind(workspace.to_string())
    .fetch_optional(&mut *tx)
    .await?;
    let row = sqlx::query(concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages WHERE id = $1 AND workspace_id = $2 FOR UPDATE"
    ))
    .bind(id.to_string())
    .bind(workspace.to_string())
    .fetch_optional(&mut *tx)
    .await?;
    let refusal = match (&row, &job) {
        (None, _) => Some(CancelOutcome::NotFound),
        (Some(row), job) => {
            let message = rows::message_from_row(row)?;
            match job {
                _ if !message.status.is_cancelable() => Some(CancelOutcome::NotCancelable(message.status)),
                None => Some(CancelOutcome::NotCancelable(message.status)),
                Some(job) => {
                    let lease_owner: Option<String> = job.try_get("lease_owner")?;
                    let lease_until: Option<i64> = job.try_get("lease_until")?;
                    (lease_owner.is_some() && lease_until.is_some_and(|until| until > now.0))
                        .then_some(CancelOutcome::InFlight)
                }
            }
        }
    };
    // Roll back at once: a rollback left to the drop of the transaction would keep the job row
    // locked (and skipped by claimers) until the connection is next used.
    if let Some(refusal) = refusal {
        tx.rollback().await?;
        return Ok(refusal);
    }
    let Some(row) = row else { return Ok(CancelOutcome::NotFound) };
    let message = rows::message_from_row(&row)?;
    let mut timeline = Timeline::new(vec![message]);
    timeline.record(id, EventKind::Canceled, at(now, None, None));
    delete_jobs(&mut tx, &BTreeSet::from([id])).await?;
    timeline.flush(&mut tx).await?;
    tx.commit().await?;
    match timeline.into_message(id) {
        Some(message) => Ok(CancelOutcome::Canceled(Box::new(message))),
        None => Ok(CancelOutcome::NotFound),
    }
}

pub(super) async fn release_leases(pool: &PgPool, owner: &str) -> Result<u64> {
    // The claim's attempt is given back: the job was not tried.
    let released: i64 = sqlx::query_scalar(
        "WITH released AS ( \
             UPDATE dispatch_jobs SET lease_owner = NULL, lease_until = NULL, attempt = GREATEST(attempt - 1, 0) \
             WHERE lease_owner = $1 RETURNING message_id, attempt), \
         touched AS ( \
             UPDATE messages AS m SET attempts = r.attempt FROM released AS r WHERE m.id = r.message_id RETURNING 1) \
         SELECT count(*) FROM released",
    )
    .bind(owner)
    .fetch_one(pool)
    .await
    .map_err(map_write_error)?;
    Ok(u64::try_from(released).unwrap_or(0))
}
