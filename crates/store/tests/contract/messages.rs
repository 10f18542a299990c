//! Storing, reading and listing messages; idempotency; group commit; the feed.

use crate::support::*;

pub async fn create_get_and_list_with_filters_and_cursor(f: Fixture) {
    let mut ids = Vec::new();
    for (i, to) in ["+4915111111111", "+4915122222222", "+4915111111111", "+4915133333333"].iter().enumerate() {
        let now = T0.plus_millis(i as i64 * 1000);
        ids.push(f.send(to, now).await);
    }
    let wa = outbound_at(
        f.ws,
        f.whatsapp,
        Channel::Whatsapp,
        "+4915144444444",
        T0.plus_millis(4000),
        Some(T0.plus_seconds(600)),
    );
    let mut wa = wa;
    // Who it is for and why round-trip too.
    wa.message.contact_id = Some(parley_domain::ContactId::new());
    wa.message.purpose = Some(parley_domain::Purpose::marketing());
    let wa_id = wa.message.id;
    let expected = wa.message.clone();
    f.store.create_messages(request(f.ws, vec![wa], T0.plus_millis(4000))).await.unwrap();
    ids.push(wa_id);

    // The message comes back as it was given, with its events in order.
    let got = f.get(wa_id).await;
    assert_eq!(got.events.as_ref().map(Vec::len), Some(2));
    assert_eq!(kinds(&got), vec![(EventKind::Accepted, true), (EventKind::Scheduled, true)]);
    assert_eq!(Message { events: None, ..got.clone() }, expected);
    assert!(f.store.get_message(f.ws, wa_id, false).await.unwrap().unwrap().events.is_none());
    // Another workspace sees nothing.
    let other = workspace(&*f.store, "Other").await;
    assert!(f.store.get_message(other, wa_id, true).await.unwrap().is_none());
    assert!(f.store.list_messages(other, &MessageFilter::default(), 50).await.unwrap().is_empty());

    let list = |filter: MessageFilter, limit: u32| {
        let store = f.store.clone();
        let ws = f.ws;
        async move { store.list_messages(ws, &filter, limit).await.unwrap().iter().map(|m| m.id).collect::<Vec<_>>() }
    };
    let newest_first: Vec<MessageId> = ids.iter().rev().copied().collect();
    assert_eq!(list(MessageFilter::default(), 50).await, newest_first);
    assert_eq!(
        list(MessageFilter { status: Some(MessageState::Scheduled), ..Default::default() }, 50).await,
        vec![wa_id]
    );
    assert_eq!(list(MessageFilter { channel: Some(Channel::Sms), ..Default::default() }, 50).await, newest_first[1..]);
    assert_eq!(
        list(MessageFilter { to: Some("+4915111111111".into()), ..Default::default() }, 50).await,
        vec![ids[2], ids[0]]
    );
    assert_eq!(
        list(
            MessageFilter {
                created_from: Some(T0.plus_millis(1000)),
                created_to: Some(T0.plus_millis(3000)),
                ..Default::default()
            },
            50
        )
        .await,
        vec![ids[2], ids[1]]
    );
    // Pages of two, following the cursor, give everything once.
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = list(MessageFilter { before, ..Default::default() }, 2).await;
        if page.is_empty() {
            break;
        }
        before = page.last().copied();
        pages.extend(page);
    }
    assert_eq!(pages, newest_first);

    let stats = f.store.message_stats(f.ws).await.unwrap();
    assert_eq!((stats.count(MessageState::Queued), stats.count(MessageState::Scheduled), stats.total()), (4, 1, 5));
    assert_eq!(stats.jobs_waiting, 5);

    // The feed has every event once, in order, and the channel of its message.
    let feed = f.store.events_after(f.ws, 0, 100).await.unwrap();
    assert_eq!(feed.len(), 10);
    assert!(feed.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(
        feed.last().and_then(|e| Some((e.message_event()?.message_id, e.channel()?))),
        Some((wa_id, Channel::Whatsapp))
    );
    let rest = f.store.events_after(f.ws, feed[6].position, 100).await.unwrap();
    assert_eq!(rest.len(), 3);
    assert!(f.store.events_after(other, 0, 100).await.unwrap().is_empty());
}

pub async fn tenancy_records_round_trip(f: Fixture) {
    let other = workspace(&*f.store, "Other").await;
    let names: Vec<String> = f.store.list_workspaces().await.unwrap().into_iter().map(|w| w.name).collect();
    assert_eq!(names, ["Acme", "Other"]);
    assert_eq!(f.store.get_workspace(f.ws).await.unwrap().map(|w| w.name), Some("Acme".into()));

    let key = |n: i64, hash: &str| ApiKey {
        id: ApiKeyId::new(),
        workspace_id: f.ws,
        name: format!("key {n}"),
        prefix: "pk_3f9a1c".into(),
        hash: hash.into(),
        scopes: Scopes::new(vec![Scope::MessagesRead, Scope::MessagesWrite]),
        created_at: T0.plus_millis(n),
        revoked_at: None,
    };
    let (a, b) = (key(1, "aa"), key(2, "bb"));
    f.store.create_api_key(&a).await.unwrap();
    f.store.create_api_key(&b).await.unwrap();
    assert!(matches!(f.store.create_api_key(&key(3, "aa")).await, Err(StoreError::Conflict(_))));
    assert_eq!(f.store.find_api_key_by_hash("bb").await.unwrap(), Some(b.clone()));
    let listed: Vec<ApiKeyId> = f.store.list_api_keys(f.ws).await.unwrap().iter().map(|k| k.id).collect();
    assert_eq!(listed, [b.id, a.id]);
    assert_eq!(f.store.revoke_api_key(other, a.id, T0).await.unwrap(), None);
    let revoked = f.store.revoke_api_key(f.ws, a.id, T0.plus_millis(10)).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(T0.plus_millis(10)));
    // Revoking again keeps the first time.
    let again = f.store.revoke_api_key(f.ws, a.id, T0.plus_millis(20)).await.unwrap().unwrap();
    assert_eq!(again.revoked_at, Some(T0.plus_millis(10)));
    assert_eq!(f.store.find_api_key_by_hash("aa").await.unwrap().and_then(|k| k.revoked_at), Some(T0.plus_millis(10)));

    let sms = f.store.get_channel_account(f.ws, f.sms).await.unwrap().unwrap();
    assert_eq!(
        (sms.channel, sms.config.clone(), sms.rate_limit_per_second),
        (Channel::Sms, serde_json::json!({"mode": "deliver"}), 50)
    );
    assert!(f.store.get_channel_account(other, f.sms).await.unwrap().is_none());
    let listed: Vec<ChannelAccountId> =
        f.store.list_channel_accounts(f.ws).await.unwrap().iter().map(|a| a.id).collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&f.sms) && listed.contains(&f.whatsapp));
    assert_eq!(f.store.all_channel_accounts().await.unwrap().len(), 2);
    f.store.ping().await.unwrap();

    // A record stored twice is a conflict, not a database failure.
    let acme = f.store.get_workspace(f.ws).await.unwrap().unwrap();
    assert!(matches!(f.store.create_workspace(&acme).await, Err(StoreError::Conflict(_))));
    let sms = f.store.get_channel_account(f.ws, f.sms).await.unwrap().unwrap();
    assert!(matches!(f.store.create_channel_account(&sms).await, Err(StoreError::Conflict(_))));
    assert_eq!(f.store.all_channel_accounts().await.unwrap().len(), 2);
}

/// "Oldest first" and "newest first" go by the records' creation times, whatever the order they
/// were stored in.
pub async fn lists_follow_creation_times(f: Fixture) {
    for (name, at) in [("Later", T0.plus_millis(20)), ("Earlier", T0.plus_millis(10))] {
        let ws = Workspace { id: WorkspaceId::new(), name: name.into(), created_at: at };
        f.store.create_workspace(&ws).await.unwrap();
    }
    let names: Vec<String> = f.store.list_workspaces().await.unwrap().into_iter().map(|w| w.name).collect();
    assert_eq!(names, ["Acme", "Earlier", "Later"]);

    let key = |name: &str, at: Millis| ApiKey {
        id: ApiKeyId::new(),
        workspace_id: f.ws,
        name: name.into(),
        prefix: "pk_3f9a1c".into(),
        hash: format!("hash of {name}"),
        scopes: Scopes::new(vec![Scope::MessagesRead]),
        created_at: at,
        revoked_at: None,
    };
    for (name, at) in [("middle", T0.plus_millis(2)), ("newest", T0.plus_millis(3)), ("oldest", T0.plus_millis(1))] {
        f.store.create_api_key(&key(name, at)).await.unwrap();
    }
    let names: Vec<String> = f.store.list_api_keys(f.ws).await.unwrap().into_iter().map(|k| k.name).collect();
    assert_eq!(names, ["newest", "middle", "oldest"]);

    let mut older = f.store.get_channel_account(f.ws, f.sms).await.unwrap().unwrap();
    older.id = ChannelAccountId::new();
    older.name = "older".into();
    older.created_at = Millis(T0.0 - 1000);
    f.store.create_channel_account(&older).await.unwrap();
    let names: Vec<String> = f.store.list_channel_accounts(f.ws).await.unwrap().into_iter().map(|a| a.name).collect();
    assert_eq!(names, ["older", "sms account", "whatsapp account"]);
    let names: Vec<String> = f.store.all_channel_accounts().await.unwrap().into_iter().map(|a| a.name).collect();
    assert_eq!(names, ["older", "sms account", "whatsapp account"]);
}

pub async fn idempotency_replays_refuses_reuse_and_expires(f: Fixture) {
    let new = || vec![outbound(f.ws, f.sms, Channel::Sms, "+4915111111111", T0)];
    let first = f.store.create_messages(keyed(f.ws, new(), T0, "k1", "h1")).await.unwrap();
    assert_eq!(first, CreateOutcome::Created);
    let replay = f.store.create_messages(keyed(f.ws, new(), T0.plus_millis(5), "k1", "h1")).await.unwrap();
    assert_eq!(replay, CreateOutcome::Replayed { status: 202, body: b"{\"hash\":\"h1\"}".to_vec() });
    let reused = f.store.create_messages(keyed(f.ws, new(), T0.plus_millis(6), "k1", "h2")).await.unwrap();
    assert_eq!(reused, CreateOutcome::KeyReused);
    assert_eq!(f.store.list_messages(f.ws, &MessageFilter::default(), 50).await.unwrap().len(), 1);

    // Keys belong to a workspace.
    let other = workspace(&*f.store, "Other").await;
    let elsewhere = vec![outbound(other, f.sms, Channel::Sms, "+4915111111111", T0)];
    assert_eq!(f.store.create_messages(keyed(other, elsewhere, T0, "k1", "h2")).await.unwrap(), CreateOutcome::Created);

    // Replayed for less than 24 h; after that the key is forgotten and may be used anew.
    let almost = T0.plus_millis(IDEMPOTENCY_TTL_MS - 1);
    assert!(matches!(
        f.store.create_messages(keyed(f.ws, new(), almost, "k1", "h1")).await.unwrap(),
        CreateOutcome::Replayed { .. }
    ));
    let later = T0.plus_millis(IDEMPOTENCY_TTL_MS);
    assert_eq!(f.store.create_messages(keyed(f.ws, new(), later, "k1", "h3")).await.unwrap(), CreateOutcome::Created);
    assert_eq!(
        f.store.create_messages(keyed(f.ws, new(), later, "k1", "h3")).await.unwrap(),
        CreateOutcome::Replayed { status: 202, body: b"{\"hash\":\"h3\"}".to_vec() }
    );
    assert_eq!(f.store.list_messages(f.ws, &MessageFilter::default(), 50).await.unwrap().len(), 2);

    // Purging forgets the old records only.
    assert_eq!(f.store.purge_idempotency(T0.plus_millis(1)).await.unwrap(), 1);
    assert_eq!(f.store.purge_idempotency(T0.plus_millis(1)).await.unwrap(), 0);
}

pub async fn fifty_concurrent_requests_with_one_key_create_one_message(f: Fixture) {
    // Two stores on one database, as two processes would be.
    let second = f.peer().await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store: Arc<dyn Store> = if i % 2 == 0 { f.store.clone() } else { second.clone() };
        let req =
            keyed(f.ws, vec![outbound(f.ws, f.sms, Channel::Sms, "+4915111111111", T0)], T0, "same-key", "same-hash");
        tasks.push(tokio::spawn(async move { store.create_messages(req).await }));
    }
    let mut created = 0;
    let mut replayed = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            CreateOutcome::Created => created += 1,
            CreateOutcome::Replayed { status, body } => {
                assert_eq!((status, body), (202, b"{\"hash\":\"same-hash\"}".to_vec()));
                replayed += 1;
            }
            CreateOutcome::KeyReused => panic!("the same request was refused"),
        }
    }
    assert_eq!((created, replayed), (1, 49));
    assert_eq!(f.store.list_messages(f.ws, &MessageFilter::default(), 100).await.unwrap().len(), 1);
    assert_eq!(f.store.message_stats(f.ws).await.unwrap().jobs_waiting, 1);
}

pub async fn a_bad_request_in_a_batch_fails_alone(f: Fixture) {
    let existing = outbound(f.ws, f.sms, Channel::Sms, "+4915111111111", T0);
    f.store.create_messages(request(f.ws, vec![existing.clone()], T0)).await.unwrap();
    // Many requests at once, so that they share batches; one repeats a stored message id, and
    // two bring the same key, one after the other.
    let mut tasks = Vec::new();
    for i in 0..120 {
        let store = f.store.clone();
        let req = match i {
            60 => request(f.ws, vec![existing.clone()], T0),
            70 | 71 => {
                keyed(f.ws, vec![outbound(f.ws, f.sms, Channel::Sms, "+4915122222222", T0)], T0, "batch-key", "h")
            }
            _ => request(f.ws, vec![outbound(f.ws, f.sms, Channel::Sms, "+4915133333333", T0)], T0),
        };
        tasks.push(tokio::spawn(async move { store.create_messages(req).await }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    assert!(matches!(outcomes[60], Err(StoreError::Conflict(_))), "{:?}", outcomes[60]);
    let created = outcomes.iter().filter(|o| matches!(o, Ok(CreateOutcome::Created))).count();
    let replayed = outcomes.iter().filter(|o| matches!(o, Ok(CreateOutcome::Replayed { .. }))).count();
    assert_eq!((created, replayed), (118, 1));
    let stats = f.store.message_stats(f.ws).await.unwrap();
    assert_eq!((stats.total(), stats.jobs_waiting), (119, 119));
    assert_eq!(f.store.events_after(f.ws, 0, 1000).await.unwrap().len(), 238);
}

pub async fn the_feed_never_skips_an_event_committed_late(f: Fixture) {
    let second = f.peer().await;
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let store: Arc<dyn Store> = if w % 2 == 0 { f.store.clone() } else { second.clone() };
            let (ws, sms) = (f.ws, f.sms);
            tokio::spawn(async move {
                for i in 0..40 {
                    let now = T0.plus_millis(i);
                    let req = request(ws, vec![outbound(ws, sms, Channel::Sms, "+4915111111111", now)], now);
                    store.create_messages(req).await.unwrap();
                }
            })
        })
        .collect();
    // Tail the feed while the writers run, as a live stream would.
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let done = writers.iter().all(|w| w.is_finished());
        let events = f.store.events_after(f.ws, after, 50).await.unwrap();
        if let Some(last) = events.last() {
            after = last.position;
        }
        seen.extend(events.iter().map(|e| e.id()));
        if events.is_empty() {
            if done {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
    let unique: HashSet<EventId> = seen.iter().copied().collect();
    assert_eq!((seen.len(), unique.len()), (480, 480));
}
