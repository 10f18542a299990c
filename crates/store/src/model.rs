//! The records the store keeps and the requests it takes, beside the domain's [`Message`].

use parley_domain::{
    ApiKeyId, Channel, ChannelAccountId, ErrorInfo, EventId, Message, MessageEvent, MessageId, MessageState, Millis,
    Scopes, WebhookAttemptId, WebhookEndpointId, WorkspaceId,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    pub created_at: Millis,
}

/// An API key as stored: only the SHA-256 of the secret is kept, with its first characters
/// (`prefix`) so that a person can tell keys apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    /// The visible start of the key, e.g. `pk_3f9a1c`.
    pub prefix: String,
    /// Lower-case hex SHA-256 of the whole key.
    pub hash: String,
    pub scopes: Scopes,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// A configured connection to a provider.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelAccount {
    pub id: ChannelAccountId,
    pub workspace_id: WorkspaceId,
    pub channel: Channel,
    /// The connector that speaks for it: `sandbox` (later `smpp`, `whatsapp`, `rbm`, …).
    pub provider: String,
    pub name: String,
    /// Connector-specific public settings (JSON object, or `null`).
    pub config: serde_json::Value,
    /// The account's secrets, sealed by the engine (the store never sees them in the clear).
    pub credentials: Option<String>,
    /// A masked view of the secrets for display (`{"auth_token": "…a1b2"}`).
    pub credentials_hint: Option<serde_json::Value>,
    /// Messages per second handed to the provider, at most.
    pub rate_limit_per_second: u32,
    /// Sends waiting for the provider's answer at once, at most.
    pub max_in_flight: u32,
    /// The account used for its channel when a send names none.
    pub is_default: bool,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Deleted accounts are kept for the messages that refer to them, and never used again.
    pub deleted_at: Option<Millis>,
}

/// One new outbound message, ready to store.
#[derive(Clone, Debug)]
pub struct NewOutbound {
    /// The message as it is after acceptance: `status` is `queued` (or `scheduled` when
    /// `send_at` is in the future), `sequence` is the number of `events`, `attempts` is 0.
    pub message: Message,
    /// Its first events, in order: `accepted`, then `queued` or `scheduled`.
    pub events: Vec<MessageEvent>,
    /// When its dispatch job becomes due (now, or `send_at`).
    pub due_at: Millis,
}

/// The idempotency key of a create request and the response to replay for it.
#[derive(Clone, Debug)]
pub struct IdempotentRequest {
    pub key: String,
    /// A fingerprint of the request (method, path and body); a different one with the same key
    /// is refused.
    pub request_hash: String,
    /// The HTTP status and body to answer now and to replay for 24 h.
    pub response_status: u16,
    pub response_body: Vec<u8>,
}

/// A request to store outbound messages (one for `POST /v1/messages`, many for the batch route).
#[derive(Clone, Debug)]
pub struct CreateMessages {
    pub workspace_id: WorkspaceId,
    pub messages: Vec<NewOutbound>,
    pub idempotency: Option<IdempotentRequest>,
    pub now: Millis,
}

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateOutcome {
    /// Stored and committed.
    Created,
    /// The key was used before (less than 24 h ago) with the same request: nothing was stored,
    /// and this is the response given the first time.
    Replayed { status: u16, body: Vec<u8> },
    /// The key was used before with a different request: nothing was stored.
    KeyReused,
}

/// Filters of `GET /v1/messages`. `before` is the cursor: only ids smaller than it.
#[derive(Clone, Debug, Default)]
pub struct MessageFilter {
    pub status: Option<MessageState>,
    pub channel: Option<Channel>,
    pub to: Option<String>,
    /// `created_at >= created_from`
    pub created_from: Option<Millis>,
    /// `created_at < created_to`
    pub created_to: Option<Millis>,
    pub before: Option<MessageId>,
}

#[derive(Clone, Debug)]
pub enum CancelOutcome {
    /// Canceled now; the message as it is afterwards.
    Canceled(Box<Message>),
    NotFound,
    /// Too late: the message is in this state (handed to a provider, or final).
    NotCancelable(MessageState),
    /// A dispatcher holds it right now; it may be with the provider.
    InFlight,
}

/// A job the caller now holds.
///
/// Claiming moves the message forward in the same transaction: a `scheduled` message gets a
/// `queued` event, then every message not yet `sending` gets a `sending` event (with the attempt
/// number); a message already `sending` (a retry, or a job whose previous holder died) gets no
/// new event. A claimed message whose `expires_at <= now` is not returned: it becomes `expired`
/// (event with error code `validity_expired`, permanent) and its job is deleted. A job whose
/// message is already final (should not happen) is deleted and not returned.
#[derive(Clone, Debug)]
pub struct ClaimedJob {
    /// The message after the claim (status `sending`).
    pub message: Message,
    /// 1 for the first claim, +1 for every claim after (released jobs give theirs back).
    pub attempt: i32,
    pub lease_until: Millis,
    /// When the consent ledger of the message's contact last changed (none: no contact, or no
    /// record). A change after the message was accepted means the dispatcher must check consent
    /// again before sending: an opt-out applies to messages already waiting.
    pub consent_changed_at: Option<Millis>,
}

#[derive(Clone, Debug, Default)]
pub struct ClaimBatch {
    pub jobs: Vec<ClaimedJob>,
    /// Messages that expired while waiting (already recorded as such).
    pub expired: Vec<MessageId>,
}

/// What became of one claimed job.
#[derive(Clone, Debug)]
pub struct DispatchOutcome {
    pub message_id: MessageId,
    /// The claim this outcome belongs to.
    pub lease_owner: String,
    pub attempt: i32,
    pub at: Millis,
    pub kind: OutcomeKind,
}

#[derive(Clone, Debug)]
pub enum OutcomeKind {
    /// The provider took it: `sent` event (applied if the state can advance), provider id stored
    /// on the message, job deleted, then any kept receipts for (account, provider id) applied.
    ///
    /// A message the provider split into parts lists every part's provider id in `part_ids`, the
    /// first one being `provider_message_id` (empty for a single part). The parts are kept (see
    /// [`crate::Store::record_receipts`]), and kept receipts of every part are applied.
    Sent { provider_message_id: String, part_ids: Vec<String> },
    /// Transient error: `attempt_failed` event (not applied) with the error and `retry_at`;
    /// message `error` set; the job is due again at `retry_at` with its lease cleared.
    Retry { error: ErrorInfo, retry_at: Millis },
    /// Permanent error: `failed` event with the error, message `error` set, job deleted.
    Failed { error: ErrorInfo },
    /// Out of validity before it could be sent: `expired` event with the error, job deleted.
    Expired { error: ErrorInfo },
    /// Refused by Parley before the hand-off (the recipient opted out after acceptance):
    /// `rejected` event with the error, job deleted; a route's step with a next one moves on,
    /// as after `Failed`.
    Rejected { error: ErrorInfo },
    /// Not attempted (rate limit, shutdown): no event; job due at `due_at`, lease cleared, and
    /// the claim's attempt given back (attempt − 1).
    Release { due_at: Millis },
}

impl OutcomeKind {
    /// The message event this outcome records (none for a job given back unattempted).
    pub fn event(&self) -> Option<parley_domain::EventKind> {
        use parley_domain::EventKind;
        match self {
            OutcomeKind::Sent { .. } => Some(EventKind::Sent),
            OutcomeKind::Retry { .. } => Some(EventKind::AttemptFailed),
            OutcomeKind::Failed { .. } => Some(EventKind::Failed),
            OutcomeKind::Expired { .. } => Some(EventKind::Expired),
            OutcomeKind::Rejected { .. } => Some(EventKind::Rejected),
            OutcomeKind::Release { .. } => None,
        }
    }
}

pub use parley_domain::{InboundMessage, Receipt};

/// An event of the store's feed with its position: an event of one message, or an event about
/// the workspace ([`WorkspaceEvent`]: `endpoint.disabled`, `conversation.opened`, …). Both kinds
/// share one sequence of positions, so followers (webhooks, the live stream) see them in the
/// order they were committed and resume past either.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedEvent {
    pub position: i64,
    pub item: FeedItem,
}

/// What a feed position holds.
#[derive(Clone, Debug, PartialEq)]
pub enum FeedItem {
    /// An event of one message, with its message's channel.
    Message { channel: Channel, event: MessageEvent },
    /// An event about the workspace rather than one message.
    Workspace(WorkspaceEvent),
}

/// The `kind` of a `message_events` row that stands for a workspace event: its `id` and
/// `message_id` are the workspace event's id (no message has it, so no timeline picks it up) and
/// its body is the `workspace_events` row of that id.
pub(crate) const WORKSPACE_EVENT_KIND: &str = "workspace_event";

impl FeedEvent {
    pub fn id(&self) -> EventId {
        match &self.item {
            FeedItem::Message { event, .. } => event.id,
            FeedItem::Workspace(event) => event.id,
        }
    }

    /// `resource.past_tense_verb`: `message.delivered`, `endpoint.disabled`, …
    pub fn event_type(&self) -> &str {
        match &self.item {
            FeedItem::Message { event, .. } => event.kind.event_type(),
            FeedItem::Workspace(event) => &event.event_type,
        }
    }

    /// The message event, if this is one.
    pub fn message_event(&self) -> Option<&MessageEvent> {
        match &self.item {
            FeedItem::Message { event, .. } => Some(event),
            FeedItem::Workspace(_) => None,
        }
    }

    /// The channel of the event's message; `None` for a workspace event.
    pub fn channel(&self) -> Option<Channel> {
        match &self.item {
            FeedItem::Message { channel, .. } => Some(*channel),
            FeedItem::Workspace(_) => None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageStats {
    /// (state, count) for every state with at least one message.
    pub by_state: Vec<(MessageState, i64)>,
    pub jobs_waiting: i64,
}

impl MessageStats {
    pub fn count(&self, state: MessageState) -> i64 {
        self.by_state.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n)
    }

    pub fn total(&self) -> i64 {
        self.by_state.iter().map(|(_, n)| n).sum()
    }
}

/// What `/metrics` reads from the store at scrape time (see [`crate::Store::metrics_snapshot`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// (channel, state, count) for every pair with at least one message, of every workspace,
    /// ordered by channel and state name.
    pub messages: Vec<(Channel, MessageState, i64)>,
    /// Dispatch jobs a dispatcher could claim now: due, and not held by a live lease.
    pub due_jobs: i64,
    /// When the oldest of those jobs became due (`None` when there is none).
    pub oldest_due_at: Option<Millis>,
}

/// How long after an outbound message was created an inbound message from its recipient, on the
/// same channel account, counts as a reply to it (see [`AnalyticsRow::replied`]).
pub const REPLY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// One outbound message of an analytics window, narrowed to what the figures need (see
/// [`crate::Store::outbound_analytics`]). The figures themselves are computed from these rows
/// outside the store, so that they are the same on every backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnalyticsRow {
    pub id: MessageId,
    pub channel: Channel,
    pub channel_account_id: ChannelAccountId,
    /// The template's name when the content is a template; `None` for any other content.
    pub template: Option<String>,
    /// The message's state now.
    pub status: MessageState,
    /// The code of the message's error: the one that ended it, or the latest transient one.
    pub error_code: Option<String>,
    pub created_at: Millis,
    /// `occurred_at` of the message's earliest `delivered` event (applied or not; the receipts of
    /// single parts of a multi-part message do not count, only the message's own); `None` when it
    /// has none.
    pub first_delivered_at: Option<Millis>,
    /// Whether an inbound message of the same workspace and channel account, whose `from` is this
    /// message's `to`, was created in `[created_at, created_at + REPLY_WINDOW_MS)`.
    pub replied: bool,
}

// ---- webhooks ------------------------------------------------------------------------------------

/// Where a workspace's events are POSTed, signed per Standard Webhooks.
///
/// Delivery follows the store's event feed: `cursor` is the feed position up to which this
/// endpoint's deliverer has handled every event (delivered it, or kept a [`WebhookDelivery`] to
/// retry it). The feed itself is the durable outbox: an event is committed with the message change
/// it describes, and stays until every endpoint's cursor has passed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: WebhookEndpointId,
    pub workspace_id: WorkspaceId,
    pub url: String,
    pub description: Option<String>,
    /// Event types it wants: exact (`message.delivered`) or wildcards (`message.*`, `*`). Empty
    /// means every type.
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// The signing secret (`whsec_…`).
    pub secret: String,
    /// The secret before the last rotation, still used to sign (beside the new one) until
    /// `previous_secret_expires_at`.
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<Millis>,
    /// Feed position up to which every event was handled for this endpoint.
    pub cursor: i64,
    /// When the current run of failed attempts began (`None` after a success).
    pub failing_since: Option<Millis>,
    /// Why Parley disabled it (`gone`: it answered 410; `failing`: it failed for 5 days);
    /// `None` when enabled or disabled by a person.
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// An event owed to an endpoint that is not in its feed order any more: an attempt failed and
/// the next is due at `next_attempt_at`, or someone asked to deliver the event again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookDelivery {
    pub endpoint_id: WebhookEndpointId,
    pub workspace_id: WorkspaceId,
    pub event_id: EventId,
    /// The event's feed position (to load it again).
    pub position: i64,
    /// Attempts made so far for this delivery.
    pub attempts: i32,
    pub next_attempt_at: Millis,
    /// When this delivery was first attempted (its retry schedule runs from here).
    pub first_attempt_at: Millis,
    /// Asked for by a person (`POST /v1/webhook-events/{id}/redeliver`), not a scheduled retry.
    pub manual: bool,
}

/// What one attempt to deliver an event gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookAttempt {
    pub id: WebhookAttemptId,
    pub workspace_id: WorkspaceId,
    pub endpoint_id: WebhookEndpointId,
    pub event_id: EventId,
    pub event_type: String,
    /// 1 for the first attempt of a delivery, +1 for each retry.
    pub attempt: i32,
    pub manual: bool,
    /// The HTTP status answered; `None` when there was no answer (timeout, refused, refused by
    /// the address guard).
    pub status_code: Option<u16>,
    pub succeeded: bool,
    /// Why there was no answer, or what was wrong with it.
    pub error: Option<String>,
    pub latency_ms: i64,
    /// The start of the response body (bounded, UTF-8 lossily).
    pub response_excerpt: Option<String>,
    pub attempted_at: Millis,
    /// When the next attempt is due (`None`: no more attempts).
    pub next_attempt_at: Option<Millis>,
}

/// What one pass of an endpoint's deliverer learned, committed at once
/// (see [`crate::Store::record_webhook_progress`]).
#[derive(Clone, Debug, Default)]
pub struct WebhookProgress {
    /// Move the endpoint's cursor forward to this position (never backwards).
    pub cursor: Option<i64>,
    pub attempts: Vec<WebhookAttempt>,
    /// Deliveries to keep (inserted, or replacing the one of the same endpoint and event).
    pub retries: Vec<WebhookDelivery>,
    /// Deliveries finished (succeeded, or given up): deleted.
    pub finished: Vec<EventId>,
    /// The endpoint's new `failing_since`, written as it is (`None` clears it).
    pub failing_since: Option<Millis>,
    /// Disable the endpoint (and record the event that says so).
    pub disable: Option<EndpointDisabled>,
}

/// Backlog of one endpoint, for `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookBacklog {
    pub endpoint_id: WebhookEndpointId,
    pub enabled: bool,
    /// Events of its workspace after its cursor (not yet handled).
    pub unhandled_events: i64,
    /// Deliveries waiting for a retry.
    pub pending_retries: i64,
}

/// An event about the workspace rather than one message (`endpoint.disabled`,
/// `conversation.opened`, `contact.opted_out`, …), kept with the change it describes and given a
/// position in the feed in the same transaction (see [`FeedItem::Workspace`]).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkspaceEvent {
    pub id: EventId,
    pub workspace_id: WorkspaceId,
    /// `resource.past_tense_verb`, e.g. `endpoint.disabled`.
    pub event_type: String,
    /// The resource at that moment (JSON object).
    pub data: serde_json::Value,
    pub created_at: Millis,
}

/// Parley disabling an endpoint, with the event that says so.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointDisabled {
    /// `gone` (it answered 410) or `failing` (it failed for 5 days).
    pub reason: String,
    pub at: Millis,
    pub event: WorkspaceEvent,
}
