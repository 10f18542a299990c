//! Webhooks: endpoints (scoped by workspace), their leases, a deliverer's progress, deliveries
//! waiting for a retry, attempts, the backlog `/metrics` reads, and the feed events a deliverer
//! loads again by id.

use crate::support::*;
use parley_domain::{WebhookAttemptId, WebhookEndpointId};
use parley_store::{
    EndpointDisabled, FeedItem, WebhookAttempt, WebhookBacklog, WebhookDelivery, WebhookEndpoint, WebhookProgress,
    WorkspaceEvent,
};

fn new_endpoint(ws: WorkspaceId, url: &str) -> WebhookEndpoint {
    WebhookEndpoint {
        id: WebhookEndpointId::new(),
        workspace_id: ws,
        url: url.into(),
        description: Some(format!("posts to {url}")),
        event_types: vec!["message.*".into(), "endpoint.disabled".into()],
        enabled: true,
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        previous_secret: None,
        previous_secret_expires_at: None,
        cursor: 0,
        failing_since: None,
        disabled_reason: None,
        disabled_at: None,
        created_at: T0,
        updated_at: T0,
    }
}

async fn create(f: &Fixture, ws: WorkspaceId, url: &str) -> WebhookEndpoint {
    let endpoint = new_endpoint(ws, url);
    f.store.create_webhook_endpoint(&endpoint).await.unwrap();
    endpoint
}

async fn get(f: &Fixture, endpoint: &WebhookEndpoint) -> WebhookEndpoint {
    f.store.get_webhook_endpoint(endpoint.workspace_id, endpoint.id).await.unwrap().expect("the endpoint exists")
}

fn ids(endpoints: &[WebhookEndpoint]) -> Vec<WebhookEndpointId> {
    endpoints.iter().map(|e| e.id).collect()
}

fn attempt(endpoint: &WebhookEndpoint, event: EventId, n: i32, at: Millis, succeeded: bool) -> WebhookAttempt {
    WebhookAttempt {
        id: WebhookAttemptId::new(),
        workspace_id: endpoint.workspace_id,
        endpoint_id: endpoint.id,
        event_id: event,
        event_type: "message.delivered".into(),
        attempt: n,
        manual: false,
        status_code: Some(if succeeded { 204 } else { 503 }),
        succeeded,
        error: (!succeeded).then(|| "the endpoint answered 503".to_string()),
        latency_ms: 42,
        response_excerpt: Some("ok".into()),
        attempted_at: at,
        next_attempt_at: (!succeeded).then(|| at.plus_seconds(5)),
    }
}

fn delivery(endpoint: &WebhookEndpoint, event: EventId, position: i64, next: Millis) -> WebhookDelivery {
    WebhookDelivery {
        endpoint_id: endpoint.id,
        workspace_id: endpoint.workspace_id,
        event_id: event,
        position,
        attempts: 1,
        next_attempt_at: next,
        first_attempt_at: T0,
        manual: false,
    }
}

fn disabled(endpoint: &WebhookEndpoint, reason: &str, at: Millis) -> EndpointDisabled {
    EndpointDisabled {
        reason: reason.into(),
        at,
        event: WorkspaceEvent {
            id: EventId::new(),
            workspace_id: endpoint.workspace_id,
            event_type: "endpoint.disabled".into(),
            data: serde_json::json!({"id": endpoint.id.to_string(), "reason": reason}),
            created_at: at,
        },
    }
}

/// Progress that writes a bit of everything.
fn busy_progress(endpoint: &WebhookEndpoint) -> WebhookProgress {
    let event = EventId::new();
    WebhookProgress {
        cursor: Some(99),
        attempts: vec![attempt(endpoint, event, 1, T0, false)],
        retries: vec![delivery(endpoint, event, 7, T0.plus_seconds(5))],
        finished: vec![EventId::new()],
        failing_since: Some(T0),
        disable: Some(disabled(endpoint, "gone", T0)),
    }
}

pub async fn endpoints_crud_and_workspace_isolation(f: Fixture) {
    let other = workspace(f.store.as_ref(), "Other").await;
    let first = create(&f, f.ws, "https://acme.example/hooks/1").await;
    let second = create(&f, f.ws, "https://acme.example/hooks/2").await;
    let theirs = create(&f, other, "https://other.example/hooks").await;

    assert_eq!(get(&f, &first).await, first, "round trip");
    assert_eq!(f.store.get_webhook_endpoint(other, first.id).await.unwrap(), None, "not another workspace's");
    assert_eq!(f.store.get_webhook_endpoint(f.ws, theirs.id).await.unwrap(), None);
    assert!(matches!(f.store.create_webhook_endpoint(&first).await, Err(StoreError::Conflict(_))), "same id twice");

    // Newest first, with the cursor and the limit.
    assert_eq!(f.store.list_webhook_endpoints(f.ws, None, 10).await.unwrap(), vec![second.clone(), first.clone()]);
    assert_eq!(ids(&f.store.list_webhook_endpoints(f.ws, None, 1).await.unwrap()), [second.id]);
    assert_eq!(ids(&f.store.list_webhook_endpoints(f.ws, Some(second.id), 10).await.unwrap()), [first.id]);
    assert!(f.store.list_webhook_endpoints(f.ws, Some(first.id), 10).await.unwrap().is_empty());
    assert_eq!(ids(&f.store.list_webhook_endpoints(other, None, 10).await.unwrap()), [theirs.id]);

    // Update: every field but the id, the workspace and the creation time; the cursor moves forward only.
    let mut changed = first.clone();
    changed.url = "https://acme.example/hooks/new".into();
    changed.description = None;
    changed.event_types = vec![];
    changed.enabled = false;
    changed.secret = "whsec_new".into();
    changed.previous_secret = Some(first.secret.clone());
    changed.previous_secret_expires_at = Some(T0.plus_seconds(86_400));
    changed.cursor = 10;
    changed.failing_since = Some(T0.plus_seconds(1));
    changed.disabled_reason = Some("failing".into());
    changed.disabled_at = Some(T0.plus_seconds(2));
    changed.updated_at = T0.plus_seconds(3);
    let mut sent = changed.clone();
    sent.created_at = T0.plus_seconds(99);
    assert!(f.store.update_webhook_endpoint(&sent).await.unwrap());
    assert_eq!(get(&f, &first).await, changed);
    let mut back = changed.clone();
    back.cursor = 4;
    back.url = "https://acme.example/hooks/newer".into();
    assert!(f.store.update_webhook_endpoint(&back).await.unwrap());
    let now = get(&f, &first).await;
    assert_eq!((now.cursor, now.url.as_str()), (10, "https://acme.example/hooks/newer"), "the cursor never goes back");

    // Another workspace's endpoint cannot be updated or deleted through this one.
    let mut hijack = theirs.clone();
    hijack.workspace_id = f.ws;
    hijack.url = "https://evil.example".into();
    assert!(!f.store.update_webhook_endpoint(&hijack).await.unwrap());
    assert!(!f.store.update_webhook_endpoint(&new_endpoint(f.ws, "https://nowhere.example")).await.unwrap());
    assert_eq!(get(&f, &theirs).await, theirs);
    assert!(!f.store.delete_webhook_endpoint(f.ws, theirs.id).await.unwrap());
    assert_eq!(get(&f, &theirs).await, theirs);

    // Deleting takes the endpoint's deliveries and attempts along, and no one else's.
    let owner = "deliverer-1";
    assert_eq!(f.store.lease_webhook_endpoints(owner, T0, LEASE_MS).await.unwrap().len(), 2, "second and theirs");
    for endpoint in [&second, &theirs] {
        let event = EventId::new();
        let progress = WebhookProgress {
            attempts: vec![attempt(endpoint, event, 1, T0, false)],
            retries: vec![delivery(endpoint, event, 1, T0.plus_seconds(5))],
            ..WebhookProgress::default()
        };
        assert!(f.store.record_webhook_progress(endpoint.id, owner, progress).await.unwrap());
    }
    assert_eq!((f.db.count("webhook_attempts").await, f.db.count("webhook_deliveries").await), (2, 2));
    assert!(f.store.delete_webhook_endpoint(f.ws, second.id).await.unwrap());
    assert!(!f.store.delete_webhook_endpoint(f.ws, second.id).await.unwrap(), "only once");
    assert_eq!(f.store.get_webhook_endpoint(f.ws, second.id).await.unwrap(), None);
    assert_eq!((f.db.count("webhook_attempts").await, f.db.count("webhook_deliveries").await), (1, 1));
    assert_eq!(f.store.list_webhook_attempts(other, theirs.id, None, 10).await.unwrap().len(), 1);
    assert_eq!(ids(&f.store.list_webhook_endpoints(f.ws, None, 10).await.unwrap()), [first.id]);
    // A deleted endpoint takes no progress.
    let late = WebhookProgress { cursor: Some(5), ..WebhookProgress::default() };
    assert!(!f.store.record_webhook_progress(second.id, owner, late).await.unwrap());
}

pub async fn leases_are_exclusive_until_they_run_out(f: Fixture) {
    let other = workspace(f.store.as_ref(), "Other").await;
    let ours = create(&f, f.ws, "https://acme.example/hooks").await;
    let theirs = create(&f, other, "https://other.example/hooks").await;
    let mut off = new_endpoint(f.ws, "https://acme.example/off");
    off.enabled = false;
    f.store.create_webhook_endpoint(&off).await.unwrap();
    let peer = f.peer().await;

    // Every enabled endpoint of every workspace, for the first caller only.
    let a = f.store.lease_webhook_endpoints("a", T0, LEASE_MS).await.unwrap();
    assert_eq!(a, vec![ours.clone(), theirs.clone()], "by id, as stored");
    assert!(peer.lease_webhook_endpoints("b", T0.plus_millis(1), LEASE_MS).await.unwrap().is_empty());
    // The holder renews; the lease then holds from the renewal.
    let renewed = T0.plus_millis(10);
    assert_eq!(ids(&f.store.lease_webhook_endpoints("a", renewed, LEASE_MS).await.unwrap()), [ours.id, theirs.id]);
    assert!(peer.lease_webhook_endpoints("b", T0.plus_millis(LEASE_MS + 5), LEASE_MS).await.unwrap().is_empty());
    // Once it runs out, another owner takes them, and the first gets nothing.
    let lapsed = renewed.plus_millis(LEASE_MS);
    assert_eq!(ids(&peer.lease_webhook_endpoints("b", lapsed, LEASE_MS).await.unwrap()), [ours.id, theirs.id]);
    assert!(f.store.lease_webhook_endpoints("a", lapsed.plus_millis(1), LEASE_MS).await.unwrap().is_empty());
    // Progress of the old holder is refused now.
    let progress = WebhookProgress { cursor: Some(3), ..WebhookProgress::default() };
    assert!(!f.store.record_webhook_progress(ours.id, "a", progress.clone()).await.unwrap());
    assert!(peer.record_webhook_progress(ours.id, "b", progress).await.unwrap());
    assert_eq!(get(&f, &ours).await.cursor, 3);

    // Released leases are free at once.
    assert_eq!(f.store.release_webhook_leases("a").await.unwrap(), 0);
    assert_eq!(peer.release_webhook_leases("b").await.unwrap(), 2);
    assert_eq!(peer.release_webhook_leases("b").await.unwrap(), 0);
    let now = lapsed.plus_millis(2);
    assert_eq!(ids(&f.store.lease_webhook_endpoints("a", now, LEASE_MS).await.unwrap()), [ours.id, theirs.id]);

    // A disabled endpoint is never leased, even when free; enabled again, it is.
    assert_eq!(f.db.count("webhook_endpoints WHERE lease_owner IS NULL").await, 1, "only the disabled one is free");
    let mut on = off.clone();
    on.enabled = true;
    assert!(f.store.update_webhook_endpoint(&on).await.unwrap());
    assert_eq!(ids(&peer.lease_webhook_endpoints("b", now, LEASE_MS).await.unwrap()), [off.id]);
    // And a holder's endpoint that gets disabled is not handed out any more, to anyone.
    assert!(f.store.update_webhook_endpoint(&off).await.unwrap());
    assert!(peer.lease_webhook_endpoints("b", now, LEASE_MS).await.unwrap().is_empty());
    let taken = f.store.lease_webhook_endpoints("c", now.plus_millis(LEASE_MS), LEASE_MS).await.unwrap();
    assert_eq!(ids(&taken), [ours.id, theirs.id], "once a's leases ran out; never the disabled one");
}

/// Many deliverers leasing at once (on PostgreSQL, each with its own store): each endpoint goes
/// to exactly one of them.
pub async fn concurrent_leases_never_share_an_endpoint(f: Fixture) {
    let mut all = Vec::new();
    for i in 0..20 {
        all.push(create(&f, f.ws, &format!("https://acme.example/hooks/{i}")).await.id);
    }
    let mut tasks = Vec::new();
    for owner in 0..6 {
        let store = f.peer().await;
        tasks.push(tokio::spawn(async move {
            let mut held = Vec::new();
            for round in 0..5 {
                let now = T0.plus_millis(round);
                held.extend(ids(&store.lease_webhook_endpoints(&format!("d{owner}"), now, LEASE_MS).await.unwrap()));
            }
            held.sort();
            held.dedup();
            held
        }));
    }
    let mut seen = Vec::new();
    for task in tasks {
        seen.extend(task.await.unwrap());
    }
    seen.sort();
    assert_eq!(seen, all, "every endpoint leased, by one owner only");
}

pub async fn progress_is_refused_to_anyone_but_the_lease_owner(f: Fixture) {
    let endpoint = create(&f, f.ws, "https://acme.example/hooks").await;
    let before = get(&f, &endpoint).await;

    // Not leased at all: refused.
    assert!(!f.store.record_webhook_progress(endpoint.id, "a", busy_progress(&endpoint)).await.unwrap());
    assert_eq!(f.store.lease_webhook_endpoints("a", T0, LEASE_MS).await.unwrap().len(), 1);
    // Another owner, an unknown endpoint: refused, and nothing written.
    assert!(!f.store.record_webhook_progress(endpoint.id, "b", busy_progress(&endpoint)).await.unwrap());
    let unknown = new_endpoint(f.ws, "https://nowhere.example");
    assert!(!f.store.record_webhook_progress(unknown.id, "a", busy_progress(&unknown)).await.unwrap());
    assert_eq!(get(&f, &endpoint).await, before);
    for table in ["webhook_attempts", "webhook_deliveries", "workspace_events"] {
        assert_eq!(f.db.count(table).await, 0, "{table}");
    }
    assert!(f.store.list_workspace_events(f.ws, 10).await.unwrap().is_empty());
    // The owner's lease is untouched by the refusals.
    assert_eq!(f.store.lease_webhook_endpoints("a", T0.plus_millis(1), LEASE_MS).await.unwrap().len(), 1);
    // Released: the owner holds it no more.
    assert_eq!(f.store.release_webhook_leases("a").await.unwrap(), 1);
    assert!(!f.store.record_webhook_progress(endpoint.id, "a", busy_progress(&endpoint)).await.unwrap());
    assert_eq!(f.db.count("webhook_attempts").await, 0);
}

pub async fn progress_records_attempts_retries_finished_cursor_and_failing_since(f: Fixture) {
    let endpoint = create(&f, f.ws, "https://acme.example/hooks").await;
    let owner = "deliverer";
    assert_eq!(f.store.lease_webhook_endpoints(owner, T0, LEASE_MS).await.unwrap().len(), 1);
    let (e1, e2, e3) = (EventId::new(), EventId::new(), EventId::new());

    // A pass: e1 failed (retry later), e2 failed (retry later), e3 delivered; cursor to 30.
    let first_attempts = vec![
        attempt(&endpoint, e1, 1, T0, false),
        attempt(&endpoint, e2, 1, T0, false),
        attempt(&endpoint, e3, 1, T0, true),
    ];
    let pass = WebhookProgress {
        cursor: Some(30),
        attempts: first_attempts.clone(),
        retries: vec![delivery(&endpoint, e1, 10, T0.plus_seconds(5)), delivery(&endpoint, e2, 20, T0.plus_seconds(6))],
        finished: vec![],
        failing_since: Some(T0),
        disable: None,
    };
    assert!(f.store.record_webhook_progress(endpoint.id, owner, pass).await.unwrap());
    let now = get(&f, &endpoint).await;
    assert_eq!((now.cursor, now.failing_since, now.enabled), (30, Some(T0), true));
    let due = f.store.due_webhook_deliveries(endpoint.id, T0.plus_seconds(10), 10).await.unwrap();
    assert_eq!(
        due,
        vec![delivery(&endpoint, e1, 10, T0.plus_seconds(5)), delivery(&endpoint, e2, 20, T0.plus_seconds(6))]
    );
    let listed = f.store.list_webhook_attempts(f.ws, endpoint.id, None, 10).await.unwrap();
    assert_eq!(listed, first_attempts.iter().rev().cloned().collect::<Vec<_>>(), "as recorded, newest first");

    // The next pass: e1 fails again (its retry replaced), e2 succeeds (finished), the cursor is
    // not moved back, the failing run is over; an attempt recorded already is not an error.
    let retry =
        WebhookDelivery { attempts: 2, next_attempt_at: T0.plus_seconds(30), ..delivery(&endpoint, e1, 10, T0) };
    let second_attempts =
        vec![attempt(&endpoint, e1, 2, T0.plus_seconds(5), false), attempt(&endpoint, e2, 2, T0.plus_seconds(6), true)];
    let mut again = second_attempts.clone();
    again.push(first_attempts[0].clone());
    let pass = WebhookProgress {
        cursor: Some(12),
        attempts: again,
        retries: vec![retry.clone()],
        finished: vec![e2, EventId::new()],
        failing_since: None,
        disable: None,
    };
    assert!(f.store.record_webhook_progress(endpoint.id, owner, pass).await.unwrap());
    let now = get(&f, &endpoint).await;
    assert_eq!((now.cursor, now.failing_since), (30, None));
    assert_eq!(f.store.due_webhook_deliveries(endpoint.id, T0.plus_seconds(60), 10).await.unwrap(), vec![retry]);
    assert_eq!(f.db.count("webhook_attempts").await, 5);
    assert_eq!(
        f.store.list_webhook_attempts(f.ws, endpoint.id, None, 2).await.unwrap(),
        vec![second_attempts[1].clone(), second_attempts[0].clone()]
    );
    // A pass without a cursor leaves it; the lease is still the owner's.
    let idle = WebhookProgress { failing_since: Some(T0.plus_seconds(7)), ..WebhookProgress::default() };
    assert!(f.store.record_webhook_progress(endpoint.id, owner, idle).await.unwrap());
    let now = get(&f, &endpoint).await;
    assert_eq!((now.cursor, now.failing_since), (30, Some(T0.plus_seconds(7))));
    assert_eq!(f.store.lease_webhook_endpoints(owner, T0.plus_seconds(1), LEASE_MS).await.unwrap(), vec![now]);

    // Many attempts in one pass (a busy endpoint).
    let many: Vec<WebhookAttempt> =
        (0..500).map(|i| attempt(&endpoint, EventId::new(), 1, T0.plus_millis(i), true)).collect();
    let busy = WebhookProgress { cursor: Some(530), attempts: many, ..WebhookProgress::default() };
    assert!(f.store.record_webhook_progress(endpoint.id, owner, busy).await.unwrap());
    assert_eq!(f.db.count("webhook_attempts").await, 505);
    assert_eq!(get(&f, &endpoint).await.cursor, 530);
}

pub async fn disabling_records_the_workspace_event_and_clears_the_lease(f: Fixture) {
    let other = workspace(f.store.as_ref(), "Other").await;
    let endpoint = create(&f, f.ws, "https://acme.example/hooks").await;
    let kept = create(&f, f.ws, "https://acme.example/other").await;
    let owner = "deliverer";
    assert_eq!(f.store.lease_webhook_endpoints(owner, T0, LEASE_MS).await.unwrap().len(), 2);

    f.send("+4915111111111", T0).await;
    let before = f.store.latest_event_position(f.ws).await.unwrap();
    let at = T0.plus_seconds(9);
    let gone = disabled(&endpoint, "gone", at);
    let event = gone.event.clone();
    let last = attempt(&endpoint, EventId::new(), 1, at, false);
    let progress = WebhookProgress {
        cursor: Some(4),
        attempts: vec![last.clone()],
        failing_since: Some(at),
        disable: Some(gone),
        ..WebhookProgress::default()
    };
    assert!(f.store.record_webhook_progress(endpoint.id, owner, progress).await.unwrap());
    let now = get(&f, &endpoint).await;
    assert!(!now.enabled);
    assert_eq!((now.disabled_reason.as_deref(), now.disabled_at, now.updated_at), (Some("gone"), Some(at), at));
    assert_eq!((now.cursor, now.failing_since), (4, Some(at)));
    assert_eq!(f.store.list_webhook_attempts(f.ws, endpoint.id, None, 10).await.unwrap(), vec![last]);
    assert_eq!(f.store.list_workspace_events(f.ws, 10).await.unwrap(), vec![event.clone()]);
    assert!(f.store.list_workspace_events(other, 10).await.unwrap().is_empty());
    // The event has its place in the feed (after the message sent before), so it is delivered.
    let feed = f.store.events_after(f.ws, before, 10).await.unwrap();
    assert_eq!(feed.iter().map(|e| e.item.clone()).collect::<Vec<_>>(), [FeedItem::Workspace(event.clone())]);
    assert!(feed[0].position > before);
    assert_eq!(f.store.feed_events_by_id(f.ws, &[event.id]).await.unwrap(), feed);
    assert!(f.store.events_after(other, 0, 10).await.unwrap().is_empty());

    // The lease went with it: the owner keeps only the other endpoint, and its progress on the
    // disabled one is refused.
    assert_eq!(f.db.count("webhook_endpoints WHERE lease_owner IS NOT NULL").await, 1);
    assert_eq!(ids(&f.store.lease_webhook_endpoints(owner, T0.plus_seconds(10), LEASE_MS).await.unwrap()), [kept.id]);
    let late = WebhookProgress { cursor: Some(8), ..WebhookProgress::default() };
    assert!(!f.store.record_webhook_progress(endpoint.id, owner, late).await.unwrap());
    assert_eq!(f.store.release_webhook_leases(owner).await.unwrap(), 1);

    // A second disabling (of the other endpoint) comes first in the list, newest first; the limit holds.
    assert_eq!(f.store.lease_webhook_endpoints(owner, T0.plus_seconds(11), LEASE_MS).await.unwrap().len(), 1);
    let failing = disabled(&kept, "failing", T0.plus_seconds(12));
    let second = failing.event.clone();
    let progress = WebhookProgress { disable: Some(failing), ..WebhookProgress::default() };
    assert!(f.store.record_webhook_progress(kept.id, owner, progress).await.unwrap());
    assert_eq!(f.store.list_workspace_events(f.ws, 10).await.unwrap(), vec![second.clone(), event]);
    assert_eq!(f.store.list_workspace_events(f.ws, 1).await.unwrap(), vec![second]);

    // Enabled again by a person, it is leased again.
    let mut on = get(&f, &endpoint).await;
    on.enabled = true;
    on.disabled_reason = None;
    on.disabled_at = None;
    assert!(f.store.update_webhook_endpoint(&on).await.unwrap());
    assert_eq!(
        ids(&f.store.lease_webhook_endpoints(owner, T0.plus_seconds(13), LEASE_MS).await.unwrap()),
        [endpoint.id]
    );
}

pub async fn due_deliveries_are_ordered_and_limited_and_scheduling_replaces(f: Fixture) {
    let other = workspace(f.store.as_ref(), "Other").await;
    let endpoint = create(&f, f.ws, "https://acme.example/hooks").await;
    let neighbour = create(&f, f.ws, "https://acme.example/neighbour").await;
    let theirs = create(&f, other, "https://other.example/hooks").await;
    let events: Vec<EventId> = (0..4).map(|_| EventId::new()).collect();
    let at = |s: i64| T0.plus_seconds(s);
    let mut planned = vec![
        delivery(&endpoint, events[0], 1, at(30)),
        delivery(&endpoint, events[1], 2, at(10)),
        delivery(&endpoint, events[2], 3, at(20)),
        delivery(&endpoint, events[3], 4, at(100)),
        delivery(&neighbour, events[0], 1, at(1)),
    ];
    f.store.schedule_webhook_deliveries(planned.clone()).await.unwrap();
    f.store.schedule_webhook_deliveries(vec![]).await.unwrap();

    let endpoint_id = endpoint.id;
    let due = |now: Millis, limit: u32| {
        let store = f.store.clone();
        async move { store.due_webhook_deliveries(endpoint_id, now, limit).await.unwrap() }
    };
    assert!(due(at(9), 10).await.is_empty());
    assert_eq!(due(at(25), 10).await, vec![planned[1].clone(), planned[2].clone()], "soonest first, due only");
    assert_eq!(due(at(25), 1).await, vec![planned[1].clone()]);
    assert_eq!(
        due(at(100), 10).await,
        vec![planned[1].clone(), planned[2].clone(), planned[0].clone(), planned[3].clone()]
    );

    // Scheduling again replaces the delivery of the same endpoint and event (a redelivery);
    // within one call the last one wins.
    let redeliver = WebhookDelivery { attempts: 0, next_attempt_at: at(5), manual: true, ..planned[0].clone() };
    let twice = WebhookDelivery { next_attempt_at: at(50), ..planned[2].clone() };
    f.store.schedule_webhook_deliveries(vec![planned[2].clone(), redeliver.clone(), twice.clone()]).await.unwrap();
    planned[0] = redeliver.clone();
    planned[2] = twice.clone();
    assert_eq!(due(at(9), 10).await, vec![redeliver]);
    assert_eq!(due(at(100), 10).await, vec![planned[0].clone(), planned[1].clone(), twice, planned[3].clone()]);
    assert_eq!(f.db.count("webhook_deliveries").await, 5);

    // Deliveries for an endpoint that is not in their workspace (deleted, unknown, another
    // workspace's) are dropped.
    let unknown = new_endpoint(f.ws, "https://nowhere.example");
    let misfiled = WebhookDelivery { workspace_id: f.ws, ..delivery(&theirs, events[0], 1, at(1)) };
    f.store.schedule_webhook_deliveries(vec![delivery(&unknown, events[0], 1, at(1)), misfiled]).await.unwrap();
    assert_eq!(f.db.count("webhook_deliveries").await, 5);
    assert!(f.store.due_webhook_deliveries(theirs.id, at(100), 10).await.unwrap().is_empty());
    assert_eq!(f.store.due_webhook_deliveries(neighbour.id, at(100), 10).await.unwrap(), vec![planned[4].clone()]);
}

pub async fn attempts_are_listed_newest_first_with_a_cursor(f: Fixture) {
    let other = workspace(f.store.as_ref(), "Other").await;
    let endpoint = create(&f, f.ws, "https://acme.example/hooks").await;
    let neighbour = create(&f, f.ws, "https://acme.example/neighbour").await;
    let owner = "deliverer";
    assert_eq!(f.store.lease_webhook_endpoints(owner, T0, LEASE_MS).await.unwrap().len(), 2);
    let event = EventId::new();
    let made: Vec<WebhookAttempt> =
        (0..5).map(|i| attempt(&endpoint, event, i + 1, T0.plus_seconds(i64::from(i)), i == 4)).collect();
    for chunk in made.chunks(3) {
        let progress = WebhookProgress { attempts: chunk.to_vec(), ..WebhookProgress::default() };
        assert!(f.store.record_webhook_progress(endpoint.id, owner, progress).await.unwrap());
    }
    let elsewhere = WebhookProgress { attempts: vec![attempt(&neighbour, event, 1, T0, true)], ..Default::default() };
    assert!(f.store.record_webhook_progress(neighbour.id, owner, elsewhere).await.unwrap());

    let (ws, endpoint_id) = (f.ws, endpoint.id);
    let page = |before: Option<WebhookAttemptId>, limit: u32| {
        let store = f.store.clone();
        async move { store.list_webhook_attempts(ws, endpoint_id, before, limit).await.unwrap() }
    };
    let all = page(None, 100).await;
    assert_eq!(all, made.iter().rev().cloned().collect::<Vec<_>>());
    assert_eq!(page(None, 2).await, vec![made[4].clone(), made[3].clone()]);
    assert_eq!(page(Some(made[3].id), 2).await, vec![made[2].clone(), made[1].clone()]);
    assert_eq!(page(Some(made[1].id), 2).await, vec![made[0].clone()]);
    assert!(page(Some(made[0].id), 2).await.is_empty());
    assert!(f.store.list_webhook_attempts(other, endpoint.id, None, 10).await.unwrap().is_empty(), "not theirs");
    assert_eq!(f.store.list_webhook_attempts(f.ws, neighbour.id, None, 10).await.unwrap().len(), 1);
}

pub async fn old_attempts_are_purged_by_id_a_slice_at_a_time(f: Fixture) {
    let endpoint = create(&f, f.ws, "https://acme.example/hooks").await;
    let owner = "deliverer";
    f.store.lease_webhook_endpoints(owner, T0, LEASE_MS).await.unwrap();
    let event = EventId::new();
    let old: Vec<WebhookAttempt> = (0..5).map(|i| attempt(&endpoint, event, i + 1, T0, false)).collect();
    let progress = WebhookProgress { attempts: old, ..Default::default() };
    assert!(f.store.record_webhook_progress(endpoint.id, owner, progress).await.unwrap());
    std::thread::sleep(std::time::Duration::from_millis(5));
    let cutoff = WebhookAttemptId::floor_at(parley_domain::Millis::now().0);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let recent = attempt(&endpoint, event, 6, T0, true);
    let progress = WebhookProgress { attempts: vec![recent.clone()], ..Default::default() };
    assert!(f.store.record_webhook_progress(endpoint.id, owner, progress).await.unwrap());

    assert_eq!(f.store.purge_webhook_attempts(cutoff, 3).await.unwrap(), 3);
    assert_eq!(f.store.purge_webhook_attempts(cutoff, 3).await.unwrap(), 2);
    assert_eq!(f.store.purge_webhook_attempts(cutoff, 3).await.unwrap(), 0);
    let left = f.store.list_webhook_attempts(f.ws, endpoint.id, None, 10).await.unwrap();
    assert_eq!(left, vec![recent], "only the attempt made after the cutoff is kept");
}

pub async fn backlog_counts_unhandled_events_and_retries(f: Fixture) {
    assert!(f.store.webhook_backlog().await.unwrap().is_empty());
    let other = workspace(f.store.as_ref(), "Other").await;
    let other_sms = account(f.store.as_ref(), other, Channel::Sms).await;
    for i in 0..3 {
        f.send("+4915111111111", T0.plus_millis(i)).await;
    }
    let theirs = outbound(other, other_sms, Channel::Sms, "+4915122222222", T0);
    f.store.create_messages(request(other, vec![theirs], T0)).await.unwrap();
    let feed = f.store.events_after(f.ws, 0, 100).await.unwrap();
    assert_eq!(feed.len(), 6);

    let from_start = create(&f, f.ws, "https://acme.example/all").await;
    let mut halfway = new_endpoint(f.ws, "https://acme.example/half");
    halfway.cursor = feed[1].position;
    f.store.create_webhook_endpoint(&halfway).await.unwrap();
    let mut caught_up = new_endpoint(other, "https://other.example/hooks");
    caught_up.cursor = f.store.latest_event_position(other).await.unwrap();
    f.store.create_webhook_endpoint(&caught_up).await.unwrap();
    let mut off = new_endpoint(f.ws, "https://acme.example/off");
    off.enabled = false;
    off.cursor = feed[5].position;
    f.store.create_webhook_endpoint(&off).await.unwrap();
    f.store
        .schedule_webhook_deliveries(vec![
            delivery(&from_start, feed[0].id(), feed[0].position, T0),
            delivery(&from_start, feed[1].id(), feed[1].position, T0),
            delivery(&off, feed[2].id(), feed[2].position, T0),
        ])
        .await
        .unwrap();

    let backlog = |endpoint: &WebhookEndpoint, enabled: bool, unhandled: i64, retries: i64| WebhookBacklog {
        endpoint_id: endpoint.id,
        enabled,
        unhandled_events: unhandled,
        pending_retries: retries,
    };
    assert_eq!(
        f.store.webhook_backlog().await.unwrap(),
        vec![
            backlog(&from_start, true, 6, 2),
            backlog(&halfway, true, 4, 0),
            backlog(&caught_up, true, 0, 0),
            backlog(&off, false, 0, 1),
        ]
    );
    // New events count for their workspace's endpoints only; progress takes them off.
    f.send("+4915133333333", T0.plus_seconds(1)).await;
    assert_eq!(f.store.lease_webhook_endpoints("d", T0, LEASE_MS).await.unwrap().len(), 3);
    let progress =
        WebhookProgress { cursor: Some(feed[5].position), finished: vec![feed[0].id()], ..WebhookProgress::default() };
    assert!(f.store.record_webhook_progress(from_start.id, "d", progress).await.unwrap());
    let now = f.store.webhook_backlog().await.unwrap();
    assert_eq!(
        now,
        vec![
            backlog(&from_start, true, 2, 1),
            backlog(&halfway, true, 6, 0),
            backlog(&caught_up, true, 0, 0),
            backlog(&off, false, 2, 1),
        ]
    );
}

pub async fn feed_events_by_id_gives_the_workspaces_events_in_feed_order(f: Fixture) {
    let other = workspace(f.store.as_ref(), "Other").await;
    let other_sms = account(f.store.as_ref(), other, Channel::Sms).await;
    f.send("+4915111111111", T0).await;
    let whatsapp = outbound(f.ws, f.whatsapp, Channel::Whatsapp, "+4915122222222", T0.plus_millis(1));
    f.store.create_messages(request(f.ws, vec![whatsapp], T0.plus_millis(1))).await.unwrap();
    let theirs = outbound(other, other_sms, Channel::Sms, "+4915133333333", T0);
    f.store.create_messages(request(other, vec![theirs], T0)).await.unwrap();
    let id = f.send("+4915144444444", T0.plus_millis(2)).await;
    assert_eq!(f.claim("w", T0.plus_millis(3)).await.jobs.len(), 4);
    f.outcome(
        id,
        "w",
        1,
        T0.plus_millis(4),
        OutcomeKind::Sent { provider_message_id: "p-1".into(), part_ids: Vec::new() },
    )
    .await;

    let feed = f.store.events_after(f.ws, 0, 100).await.unwrap();
    assert_eq!(feed.len(), 10);
    let their_feed = f.store.events_after(other, 0, 100).await.unwrap();
    let as_tuples = |events: &[parley_store::FeedEvent]| {
        events.iter().map(|e| (e.position, e.channel(), e.message_event().cloned())).collect::<Vec<_>>()
    };

    assert!(f.store.feed_events_by_id(f.ws, &[]).await.unwrap().is_empty());
    // Asked for out of order, with another workspace's event, an unknown one and a repeat.
    let wanted = [feed[7].id(), feed[2].id(), their_feed[0].id(), EventId::new(), feed[9].id(), feed[2].id()];
    let got = f.store.feed_events_by_id(f.ws, &wanted).await.unwrap();
    assert_eq!(
        as_tuples(&got),
        as_tuples(&[feed[2].clone(), feed[7].clone(), feed[9].clone()]),
        "as events_after gives them"
    );
    assert_eq!(
        (got[0].channel(), got[2].channel()),
        (Some(Channel::Whatsapp), Some(Channel::Sms)),
        "each with its channel"
    );
    let all: Vec<EventId> = feed.iter().rev().map(|e| e.id()).collect();
    assert_eq!(as_tuples(&f.store.feed_events_by_id(f.ws, &all).await.unwrap()), as_tuples(&feed));
    assert!(f.store.feed_events_by_id(other, &all).await.unwrap().is_empty(), "not another workspace's");

    // Many ids at once.
    let many: Vec<EventId> = (0..40_000).map(|_| EventId::new()).chain([feed[3].id()]).collect();
    assert_eq!(as_tuples(&f.store.feed_events_by_id(f.ws, &many).await.unwrap()), as_tuples(&feed[3..4]));
}
