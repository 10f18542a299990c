//! The use cases behind `/v1/webhook-endpoints` and `/v1/webhook-events/{id}/redeliver`.

use super::filter::{EventTypeFilter, UnknownEventType};
use super::ssrf::{UrlRefused, check_syntax, resolve_and_check};
use crate::{Engine, EngineError, Result};
use parley_domain::{EventId, Millis, WebhookAttemptId, WebhookEndpointId, WebhookSecret, WorkspaceId};
use parley_store::{WebhookAttempt, WebhookDelivery, WebhookEndpoint};
use std::time::Duration;

/// How long registering an endpoint may wait for DNS.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// An endpoint to register.
#[derive(Clone, Debug)]
pub struct NewEndpoint {
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    pub enabled: bool,
}

/// A change to an endpoint (JSON Merge Patch: `None` leaves a field as it is).
#[derive(Clone, Debug, Default)]
pub struct EndpointChanges {
    pub url: Option<String>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<String>>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// Why an endpoint's settings are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Url(#[from] UrlRefused),
    #[error(transparent)]
    EventType(#[from] UnknownEventType),
}

/// A redelivery that was scheduled: the endpoints that will receive the event again.
#[derive(Clone, Debug)]
pub struct Redelivery {
    pub event_id: EventId,
    pub endpoints: Vec<WebhookEndpointId>,
}

impl Engine {
    /// Register an endpoint; it receives the events recorded from now on. The answer holds the
    /// signing secret (the API shows it this once).
    pub async fn create_webhook_endpoint(&self, workspace: WorkspaceId, new: NewEndpoint) -> Result<WebhookEndpoint> {
        let url = self.check_endpoint_url(&new.url).await?;
        let event_types = EventTypeFilter::parse(&new.event_types).map_err(WebhookError::from)?;
        let now = Millis::now();
        let endpoint = WebhookEndpoint {
            id: WebhookEndpointId::new(),
            workspace_id: workspace,
            url,
            description: new.description,
            event_types: event_types.into_entries(),
            enabled: new.enabled,
            secret: WebhookSecret::generate().expose().to_owned(),
            previous_secret: None,
            previous_secret_expires_at: None,
            cursor: self.store().latest_event_position(workspace).await?,
            failing_since: None,
            disabled_reason: None,
            disabled_at: None,
            created_at: now,
            updated_at: now,
        };
        self.store().create_webhook_endpoint(&endpoint).await?;
        Ok(endpoint)
    }

    /// Apply `changes`; `None` when the workspace has no such endpoint. Enabling a disabled
    /// endpoint starts it from the events recorded from now on (what it missed can be asked for
    /// again with redeliver) and forgets why it was disabled.
    pub async fn update_webhook_endpoint(
        &self,
        workspace: WorkspaceId,
        id: WebhookEndpointId,
        changes: EndpointChanges,
    ) -> Result<Option<WebhookEndpoint>> {
        let Some(mut endpoint) = self.store().get_webhook_endpoint(workspace, id).await? else {
            return Ok(None);
        };
        if let Some(url) = changes.url {
            endpoint.url = self.check_endpoint_url(&url).await?;
        }
        if let Some(description) = changes.description {
            endpoint.description = description;
        }
        if let Some(types) = changes.event_types {
            endpoint.event_types = EventTypeFilter::parse(&types).map_err(WebhookError::from)?.into_entries();
        }
        if let Some(enabled) = changes.enabled {
            if enabled && !endpoint.enabled {
                endpoint.cursor = self.store().latest_event_position(workspace).await?;
                endpoint.failing_since = None;
                endpoint.disabled_reason = None;
                endpoint.disabled_at = None;
            }
            endpoint.enabled = enabled;
        }
        endpoint.updated_at = Millis::now();
        if !self.store().update_webhook_endpoint(&endpoint).await? {
            return Ok(None);
        }
        Ok(self.store().get_webhook_endpoint(workspace, id).await?)
    }

    /// Give the endpoint a new secret; the old one goes on signing beside it for the overlap
    /// (24 h by default), so that receivers can switch without losing an event. The answer
    /// holds the new secret.
    pub async fn rotate_webhook_secret(
        &self,
        workspace: WorkspaceId,
        id: WebhookEndpointId,
    ) -> Result<Option<WebhookEndpoint>> {
        let Some(mut endpoint) = self.store().get_webhook_endpoint(workspace, id).await? else {
            return Ok(None);
        };
        let settings = &self.config().webhooks;
        let now = settings.clock.now();
        let overlap = crate::clock::duration_ms(settings.secret_overlap);
        endpoint.previous_secret =
            Some(std::mem::replace(&mut endpoint.secret, WebhookSecret::generate().expose().to_owned()));
        endpoint.previous_secret_expires_at = Some(now.plus_millis(overlap));
        endpoint.updated_at = Millis::now();
        if !self.store().update_webhook_endpoint(&endpoint).await? {
            return Ok(None);
        }
        Ok(Some(endpoint))
    }

    /// The endpoint's attempts, newest first; `None` when the workspace has no such endpoint.
    pub async fn webhook_attempts(
        &self,
        workspace: WorkspaceId,
        id: WebhookEndpointId,
        before: Option<WebhookAttemptId>,
        limit: u32,
    ) -> Result<Option<Vec<WebhookAttempt>>> {
        if self.store().get_webhook_endpoint(workspace, id).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(self.store().list_webhook_attempts(workspace, id, before, limit).await?))
    }

    /// Deliver one of the workspace's events again, now, to every enabled endpoint that wants
    /// its type (with the full retry schedule); `None` when the workspace has no such event.
    pub async fn redeliver_event(&self, workspace: WorkspaceId, id: EventId) -> Result<Option<Redelivery>> {
        let Some(event) = self.store().feed_events_by_id(workspace, &[id]).await?.into_iter().next() else {
            return Ok(None);
        };
        let event_type = event.event_type();
        let now = self.config().webhooks.clock.now();
        let mut deliveries = Vec::new();
        let mut before = None;
        loop {
            let page = self.store().list_webhook_endpoints(workspace, before, 1000).await?;
            let Some(last) = page.last() else { break };
            before = Some(last.id);
            let full = page.len() == 1000;
            for endpoint in page {
                if endpoint.enabled && EventTypeFilter::from_stored(endpoint.event_types).matches(event_type) {
                    deliveries.push(WebhookDelivery {
                        endpoint_id: endpoint.id,
                        workspace_id: workspace,
                        event_id: id,
                        position: event.position,
                        attempts: 0,
                        next_attempt_at: now,
                        first_attempt_at: now,
                        manual: true,
                    });
                }
            }
            if !full {
                break;
            }
        }
        let endpoints = deliveries.iter().map(|d| d.endpoint_id).collect();
        if !deliveries.is_empty() {
            self.store().schedule_webhook_deliveries(deliveries).await?;
        }
        Ok(Some(Redelivery { event_id: id, endpoints }))
    }

    /// The URL as it will be stored, if it is well-formed and reaches an allowed address.
    async fn check_endpoint_url(&self, url: &str) -> Result<String> {
        let parsed = check_syntax(url).map_err(WebhookError::from)?;
        let policy = &self.config().webhooks.policy;
        match tokio::time::timeout(RESOLVE_TIMEOUT, resolve_and_check(policy, &parsed)).await {
            Ok(Ok(_)) => Ok(parsed.to_string()),
            Ok(Err(refused)) => Err(EngineError::Webhook(refused.into())),
            Err(_) => Err(EngineError::Webhook(
                UrlRefused::Unresolvable {
                    host: parsed.host_str().unwrap_or_default().to_owned(),
                    reason: "the lookup took too long".into(),
                }
                .into(),
            )),
        }
    }
}
