//! The deliverer: every endpoint this process holds a lease on gets a task that follows the
//! workspace's event feed from the endpoint's cursor and POSTs each wanted event, up to
//! [`WebhookSettings::concurrency`] at once.
//!
//! A pass reads one page of the feed and the retries that are due, attempts them all, then
//! commits in one store transaction what it learned: the attempts, the retries still owed (with
//! their next time), the new cursor, and whether the endpoint is failing or gone. Until that
//! commit nothing is forgotten: a crash replays the page (delivery is at-least-once; the
//! `webhook-id` header, the event id, lets receivers drop repeats). Leases keep two processes
//! from serving one endpoint; a pass whose lease was lost in the meantime writes nothing.

use super::WebhookSettings;
use super::filter::EventTypeFilter;
use super::http::{AttemptResult, Delivery, Verdict, WebhookClient};
use super::schedule::next_wait;
use crate::Engine;
use crate::clock::duration_ms;
use crate::stream::{StreamEvent, envelopes};
use futures::StreamExt;
use parley_domain::webhook::signature_header;
use parley_domain::{EventId, Millis, WebhookAttemptId, WebhookEndpointId, WebhookSecret};
use parley_store::{
    EndpointDisabled, FeedEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookProgress, WorkspaceEvent,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Lease endpoints, run a task for each, and keep them in step with the store until shutdown.
pub(crate) async fn run(engine: Engine) {
    let settings = engine.config().webhooks.clone();
    let client = match WebhookClient::new(settings.policy.clone(), settings.timeout, settings.excerpt_bytes) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks will not be delivered");
            return;
        }
    };
    let owner = engine.config().worker_id.clone();
    let shutdown = engine.shutdown_token();
    let mut running: HashMap<WebhookEndpointId, Running> = HashMap::new();
    loop {
        match engine.store().lease_webhook_endpoints(&owner, settings.clock.now(), settings.lease_ms).await {
            Ok(held) => {
                let held_ids: HashSet<WebhookEndpointId> = held.iter().map(|e| e.id).collect();
                running.retain(|id, task| {
                    let keep = held_ids.contains(id) && !task.handle.is_finished();
                    if !keep {
                        task.stop.cancel();
                    }
                    keep
                });
                for endpoint in held {
                    if let Some(task) = running.get(&endpoint.id) {
                        task.config.send_replace(endpoint);
                        continue;
                    }
                    let id = endpoint.id;
                    let stop = shutdown.child_token();
                    let (config, config_rx) = watch::channel(endpoint.clone());
                    let task = EndpointTask {
                        engine: engine.clone(),
                        client: client.clone(),
                        settings: settings.clone(),
                        owner: owner.clone(),
                        config: config_rx,
                        cursor: endpoint.cursor,
                        failing_since: endpoint.failing_since,
                        paused_until: None,
                        stop: stop.clone(),
                    };
                    let handle = tokio::spawn(task.run());
                    running.insert(id, Running { config, stop, handle });
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not lease webhook endpoints; trying again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.refresh) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    for (_, task) in running {
        task.stop.cancel();
        let _ = task.handle.await;
    }
    if let Err(e) = engine.store().release_webhook_leases(&owner).await {
        tracing::warn!(error = %e, "could not release webhook endpoint leases at shutdown");
    }
}

struct Running {
    config: watch::Sender<WebhookEndpoint>,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

/// What a pass found.
enum Pass {
    /// There may be more to do at once.
    Busy,
    /// Nothing more for now.
    Idle,
    /// The endpoint was disabled, or another process holds it now.
    Ended,
}

struct EndpointTask {
    engine: Engine,
    client: WebhookClient,
    settings: WebhookSettings,
    owner: String,
    config: watch::Receiver<WebhookEndpoint>,
    /// Every event up to here is handled (kept in memory while this task holds the lease).
    cursor: i64,
    failing_since: Option<Millis>,
    /// A 429 or 503 asked to wait until then.
    paused_until: Option<Millis>,
    stop: CancellationToken,
}

/// One event to attempt in a pass.
struct Item {
    event: Arc<StreamEvent>,
    /// The delivery it belongs to when it is a retry or a redelivery.
    delivery: Option<WebhookDelivery>,
}

impl EndpointTask {
    async fn run(mut self) {
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            let endpoint = self.config.borrow_and_update().clone();
            self.cursor = self.cursor.max(endpoint.cursor);
            let stop = self.stop.clone();
            let pass = tokio::select! {
                pass = self.pass(&endpoint) => pass,
                _ = stop.cancelled() => return,
            };
            let wait = match pass {
                Ok(Pass::Busy) => continue,
                Ok(Pass::Ended) => return,
                Ok(Pass::Idle) => self.settings.poll,
                Err(e) => {
                    tracing::warn!(error = %e, endpoint = %endpoint.id, "a webhook delivery pass failed; trying again");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }

    async fn pass(&mut self, endpoint: &WebhookEndpoint) -> crate::Result<Pass> {
        let store = self.engine.store().clone();
        let now = self.settings.clock.now();
        if self.paused_until.is_some_and(|until| until > now) {
            return Ok(Pass::Idle);
        }
        let page = self.settings.page.max(1);
        let workspace = endpoint.workspace_id;
        let due = store.due_webhook_deliveries(endpoint.id, now, page).await?;
        let feed = store.events_after(workspace, self.cursor, page).await?;
        if due.is_empty() && feed.is_empty() {
            return Ok(Pass::Idle);
        }
        let busy = feed.len() >= page as usize || due.len() >= page as usize;
        let new_cursor = feed.last().map(|e| e.position);
        let filter = EventTypeFilter::from_stored(endpoint.event_types.clone());
        let wanted: Vec<FeedEvent> = feed.into_iter().filter(|e| filter.matches(e.event_type())).collect();

        let mut items: Vec<Item> = envelopes(store.as_ref(), workspace, wanted)
            .await?
            .into_iter()
            .map(|event| Item { event, delivery: None })
            .collect();
        let mut finished: Vec<EventId> = Vec::new();
        if !due.is_empty() {
            let ids: Vec<EventId> = due.iter().map(|d| d.event_id).collect();
            let owed = envelopes(store.as_ref(), workspace, store.feed_events_by_id(workspace, &ids).await?).await?;
            let mut by_id: HashMap<EventId, Arc<StreamEvent>> = owed.into_iter().map(|e| (e.id, e)).collect();
            for delivery in due {
                match by_id.remove(&delivery.event_id) {
                    Some(event) => items.push(Item { event, delivery: Some(delivery) }),
                    // Its event cannot be read any more: nothing left to deliver.
                    None => finished.push(delivery.event_id),
                }
            }
        }

        let secrets = signing_secrets(endpoint, now);
        let secrets: Vec<&WebhookSecret> = secrets.iter().collect();
        let client = &self.client;
        let clock = &self.settings.clock;
        let url = endpoint.url.as_str();
        let refused = client.refusal(url);
        let results: Vec<(Item, Millis, AttemptResult)> = futures::stream::iter(items)
            .map(|item| {
                let secrets = &secrets;
                let refused = &refused;
                async move {
                    let attempted_at = clock.now();
                    if let Some(why) = refused {
                        return (item, attempted_at, AttemptResult::failed(why.clone(), 0));
                    }
                    let timestamp_secs = attempted_at.0.div_euclid(1000);
                    let webhook_id = item.event.id.to_string();
                    let body = item.event.json();
                    let signature = signature_header(secrets, &webhook_id, timestamp_secs, body.as_bytes());
                    let result = client
                        .send(Delivery { url, webhook_id: &webhook_id, timestamp_secs, signature: &signature, body })
                        .await;
                    (item, attempted_at, result)
                }
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await;

        let done = self.settings.clock.now();
        let mut progress = WebhookProgress { cursor: new_cursor, finished, ..Default::default() };
        let mut any_success = false;
        let mut first_failure: Option<Millis> = None;
        let mut gone = false;
        let metrics = self.engine.metrics();
        let endpoint_label = endpoint.id.to_string();
        for (item, attempted_at, result) in results {
            let previous = item.delivery.as_ref().map_or(0, |d| d.attempts);
            let attempt = previous + 1;
            let mut next_attempt_at = None;
            let outcome = match &result.verdict {
                Verdict::Delivered => {
                    any_success = true;
                    if let Some(d) = &item.delivery {
                        progress.finished.push(d.event_id);
                    }
                    "delivered"
                }
                Verdict::Gone => {
                    gone = true;
                    if let Some(d) = &item.delivery {
                        progress.finished.push(d.event_id);
                    }
                    "gone"
                }
                Verdict::Failed { retry_after } => {
                    first_failure = Some(first_failure.map_or(attempted_at, |f| Millis(f.0.min(attempted_at.0))));
                    if let Some(wait) = retry_after {
                        let until = done.plus_millis(duration_ms(*wait));
                        self.paused_until = Some(self.paused_until.map_or(until, |p| Millis(p.0.max(until.0))));
                    }
                    match next_wait(
                        &self.settings.retry_schedule,
                        usize::try_from(attempt).unwrap_or(usize::MAX),
                        *retry_after,
                    ) {
                        Some(wait) => {
                            let at = done.plus_millis(duration_ms(wait));
                            next_attempt_at = Some(at);
                            progress.retries.push(WebhookDelivery {
                                endpoint_id: endpoint.id,
                                workspace_id: workspace,
                                event_id: item.event.id,
                                position: item.event.position,
                                attempts: attempt,
                                next_attempt_at: at,
                                first_attempt_at: item.delivery.as_ref().map_or(attempted_at, |d| d.first_attempt_at),
                                manual: item.delivery.as_ref().is_some_and(|d| d.manual),
                            });
                        }
                        None => {
                            if let Some(d) = &item.delivery {
                                progress.finished.push(d.event_id);
                            }
                        }
                    }
                    "failed"
                }
            };
            metrics.webhook_attempt(&endpoint_label, outcome, Duration::from_millis(result.latency_ms.max(0) as u64));
            progress.attempts.push(WebhookAttempt {
                id: WebhookAttemptId::new(),
                workspace_id: workspace,
                endpoint_id: endpoint.id,
                event_id: item.event.id,
                event_type: item.event.event_type.to_string(),
                attempt,
                manual: item.delivery.as_ref().is_some_and(|d| d.manual),
                status_code: result.status_code,
                succeeded: result.verdict == Verdict::Delivered,
                error: result.error,
                latency_ms: result.latency_ms,
                response_excerpt: result.response_excerpt,
                attempted_at,
                next_attempt_at,
            });
        }
        if any_success {
            self.failing_since = None;
        } else if let Some(first) = first_failure {
            self.failing_since = Some(self.failing_since.unwrap_or(first));
        }
        progress.failing_since = self.failing_since;
        let disable_after = duration_ms(self.settings.disable_after);
        let reason = if gone {
            Some("gone")
        } else if self.failing_since.is_some_and(|since| done.0 - since.0 >= disable_after) {
            Some("failing")
        } else {
            None
        };
        if let Some(reason) = reason {
            progress.disable = Some(disabled(endpoint, reason, done, self.failing_since));
        }
        if !store.record_webhook_progress(endpoint.id, &self.owner, progress).await? {
            tracing::info!(endpoint = %endpoint.id, "this process no longer holds the webhook endpoint");
            return Ok(Pass::Ended);
        }
        if let Some(cursor) = new_cursor {
            self.cursor = self.cursor.max(cursor);
        }
        if let Some(reason) = reason {
            tracing::warn!(endpoint = %endpoint.id, workspace = %workspace, reason, "webhook endpoint disabled");
            return Ok(Pass::Ended);
        }
        Ok(if busy { Pass::Busy } else { Pass::Idle })
    }
}

/// The secrets that sign now: the current one, and the one before it while the overlap lasts.
fn signing_secrets(endpoint: &WebhookEndpoint, now: Millis) -> Vec<WebhookSecret> {
    let mut secrets = Vec::with_capacity(2);
    match WebhookSecret::parse(&endpoint.secret) {
        Ok(secret) => secrets.push(secret),
        Err(e) => tracing::error!(endpoint = %endpoint.id, error = %e, "a stored webhook secret is unreadable"),
    }
    if let (Some(previous), Some(until)) = (&endpoint.previous_secret, endpoint.previous_secret_expires_at)
        && until > now
        && let Ok(previous) = WebhookSecret::parse(previous)
    {
        secrets.push(previous);
    }
    secrets
}

/// Parley disabling `endpoint`, and the `endpoint.disabled` event that says so.
fn disabled(endpoint: &WebhookEndpoint, reason: &str, at: Millis, failing_since: Option<Millis>) -> EndpointDisabled {
    let data = serde_json::json!({
        "endpoint": {
            "id": endpoint.id.to_string(),
            "url": endpoint.url,
            "enabled": false,
            "disabled_reason": reason,
            "disabled_at": at.to_string(),
            "failing_since": failing_since.map(|f| f.to_string()),
        }
    });
    EndpointDisabled {
        reason: reason.to_owned(),
        at,
        event: WorkspaceEvent {
            id: EventId::new(),
            workspace_id: endpoint.workspace_id,
            event_type: "endpoint.disabled".to_owned(),
            data,
            created_at: at,
        },
    }
}
