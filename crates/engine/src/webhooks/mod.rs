//! Outbound webhooks: a workspace's endpoints receive its events, signed per Standard Webhooks.
//!
//! - [`endpoints`]: the use cases behind `/v1/webhook-endpoints` (register, change, rotate the
//!   secret, list attempts, redeliver).
//! - [`deliver`]: the deliverer. Each endpoint follows the store's event feed from its own
//!   cursor (the feed is the durable outbox: events are committed with the change they describe),
//!   one task per endpoint so that a slow or dead one delays nobody else.
//! - [`http`]: one attempt over HTTP, through the SSRF guard ([`ssrf`]).
//! - [`schedule`]: when a failed delivery is tried again.
//! - [`filter`]: which event types an endpoint wants.

pub mod deliver;
pub mod endpoints;
pub mod filter;
pub mod http;
pub mod schedule;
pub mod ssrf;

pub use endpoints::{EndpointChanges, NewEndpoint, Redelivery, WebhookError};
pub use filter::{EventTypeFilter, UnknownEventType};
pub use ssrf::{
    AddressClass, Cidr, CidrError, MAX_URL_LEN, UrlPolicy, UrlRefused, check_syntax, classify, resolve_and_check,
};

use crate::clock::Clock;
use std::time::Duration;

/// How webhooks are delivered; the defaults are the documented behaviour, tests shorten them.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// Which non-public addresses endpoints may reach (none by default).
    pub policy: UrlPolicy,
    /// An attempt that has no answer (headers and excerpt) within this is a failure.
    pub timeout: Duration,
    /// The wait before each attempt of a delivery (the first is the immediate one).
    pub retry_schedule: Vec<Duration>,
    /// An endpoint whose attempts have all failed for this long is disabled.
    pub disable_after: Duration,
    /// After a secret rotation, the old secret signs too for this long.
    pub secret_overlap: Duration,
    /// Attempts are kept this long, then deleted.
    pub attempt_retention: Duration,
    /// Bytes of a response body kept with its attempt.
    pub excerpt_bytes: usize,
    /// Events of the feed read at once by one endpoint.
    pub page: u32,
    /// Attempts in flight at once, per endpoint.
    pub concurrency: usize,
    /// How long this process holds an endpoint before another may take it (renewed every
    /// `refresh`).
    pub lease_ms: i64,
    /// How often endpoints are leased again (picking up new, changed and removed ones).
    pub refresh: Duration,
    /// How often an endpoint with nothing to do looks again.
    pub poll: Duration,
    /// The deliverer's time (tests move it forward).
    pub clock: Clock,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            policy: UrlPolicy::default(),
            timeout: Duration::from_secs(15),
            retry_schedule: schedule::default_schedule(),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            secret_overlap: Duration::from_secs(24 * 3600),
            attempt_retention: Duration::from_secs(30 * 24 * 3600),
            excerpt_bytes: 1024,
            page: 500,
            concurrency: 64,
            lease_ms: 30_000,
            refresh: Duration::from_secs(1),
            poll: Duration::from_millis(100),
            clock: Clock::default(),
        }
    }
}
