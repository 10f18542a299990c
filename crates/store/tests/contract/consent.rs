//! The consent ledger, the messaging policy and the policy's queries about messages.

use crate::support::*;
use parley_domain::policy::{ChannelScope, Consent, ConsentSource, ConsentStatus, PurposeScope};
use parley_domain::{ConsentId, ContactId, Purpose};

fn record(
    ws: WorkspaceId,
    contact: ContactId,
    channel: ChannelScope,
    purpose: PurposeScope,
    status: ConsentStatus,
    at: Millis,
) -> Consent {
    Consent {
        id: ConsentId::new(),
        workspace_id: ws,
        contact_id: contact,
        channel,
        purpose,
        status,
        source: ConsentSource::Keyword,
        evidence: serde_json::json!({"message_id": "msg_x", "text": "STOP"}),
        address: Some("+4915112345678".into()),
        recorded_at: at,
    }
}

pub async fn the_ledger_is_appended_and_listed_newest_first(f: Fixture) {
    let (ann, bob) = (ContactId::new(), ContactId::new());
    let sms = ChannelScope::One(Channel::Sms);
    let marketing = PurposeScope::One(Purpose::marketing());
    let first = record(f.ws, ann, sms, marketing.clone(), ConsentStatus::OptedIn, T0);
    let second = Consent {
        source: ConsentSource::Api,
        evidence: serde_json::json!({"api_key_id": "key_1"}),
        address: None,
        ..record(f.ws, ann, ChannelScope::All, PurposeScope::All, ConsentStatus::OptedOut, T0.plus_millis(1))
    };
    let other = record(f.ws, bob, sms, PurposeScope::All, ConsentStatus::OptedOut, T0);
    f.store.append_consents(vec![first.clone(), second.clone()]).await.unwrap();
    f.store.append_consents(vec![other.clone()]).await.unwrap();
    // A record stored twice is a conflict, and nothing of that call is stored.
    let third = record(f.ws, ann, sms, PurposeScope::All, ConsentStatus::OptedIn, T0.plus_millis(2));
    let again = f.store.append_consents(vec![third.clone(), first.clone()]).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");

    let all = f.store.list_consents(f.ws, ann, None, None).await.unwrap();
    assert_eq!(all, vec![second.clone(), first.clone()], "exactly as stored, newest first");
    let page = f.store.list_consents(f.ws, ann, None, Some(1)).await.unwrap();
    assert_eq!(page, vec![second.clone()]);
    let next = f.store.list_consents(f.ws, ann, Some(second.id), Some(1)).await.unwrap();
    assert_eq!(next, vec![first.clone()]);
    // Another workspace sees nothing.
    let elsewhere = workspace(f.store.as_ref(), "elsewhere").await;
    assert!(f.store.list_consents(elsewhere, ann, None, None).await.unwrap().is_empty());
    assert!(f.store.list_opt_outs(elsewhere, None, None, 10).await.unwrap().is_empty());
}

pub async fn opt_outs_in_force_are_those_no_newer_record_covers(f: Fixture) {
    let (ann, bob, cy) = (ContactId::new(), ContactId::new(), ContactId::new());
    let sms = ChannelScope::One(Channel::Sms);
    let wa = ChannelScope::One(Channel::Whatsapp);
    let marketing = PurposeScope::One(Purpose::marketing());
    let r = |c, ch, p, s, ms| record(f.ws, c, ch, p, s, T0.plus_millis(ms));
    // Ann: STOP on sms, then START on sms: nothing in force.
    let ann_stop = r(ann, sms, PurposeScope::All, ConsentStatus::OptedOut, 0);
    let ann_start = r(ann, sms, PurposeScope::All, ConsentStatus::OptedIn, 1);
    // Bob: STOPALL, then an opt-in for marketing on sms only: the STOPALL stays in force.
    let bob_all = r(bob, ChannelScope::All, PurposeScope::All, ConsentStatus::OptedOut, 2);
    let bob_in = r(bob, sms, marketing.clone(), ConsentStatus::OptedIn, 3);
    // Cy: out of marketing on WhatsApp, twice: the newer one is listed.
    let cy_1 = r(cy, wa, marketing.clone(), ConsentStatus::OptedOut, 4);
    let cy_2 = r(cy, wa, marketing.clone(), ConsentStatus::OptedOut, 5);
    f.store
        .append_consents(vec![
            ann_stop.clone(),
            ann_start.clone(),
            bob_all.clone(),
            bob_in.clone(),
            cy_1.clone(),
            cy_2.clone(),
        ])
        .await
        .unwrap();
    let ids = |v: Vec<Consent>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(f.store.list_opt_outs(f.ws, None, None, 10).await.unwrap()), vec![cy_2.id, bob_all.id]);
    assert_eq!(
        ids(f.store.list_opt_outs(f.ws, Some(Channel::Whatsapp), None, 10).await.unwrap()),
        vec![cy_2.id, bob_all.id]
    );
    assert_eq!(ids(f.store.list_opt_outs(f.ws, Some(Channel::Rcs), None, 10).await.unwrap()), vec![bob_all.id]);
    // Paging.
    assert_eq!(ids(f.store.list_opt_outs(f.ws, None, None, 1).await.unwrap()), vec![cy_2.id]);
    assert_eq!(ids(f.store.list_opt_outs(f.ws, None, Some(cy_2.id), 1).await.unwrap()), vec![bob_all.id]);
    // Bob opts in to everything on sms: for the sms list, that covers the STOPALL.
    let bob_sms = r(bob, sms, PurposeScope::All, ConsentStatus::OptedIn, 6);
    f.store.append_consents(vec![bob_sms]).await.unwrap();
    assert!(f.store.list_opt_outs(f.ws, Some(Channel::Sms), None, 10).await.unwrap().is_empty());
    assert_eq!(ids(f.store.list_opt_outs(f.ws, Some(Channel::Rcs), None, 10).await.unwrap()), vec![bob_all.id]);
}

pub async fn the_messaging_policy_is_stored_per_workspace(f: Fixture) {
    assert_eq!(f.store.get_messaging_policy(f.ws).await.unwrap(), None);
    let policy = serde_json::json!({"quiet_hours": {"start": "22:00"}, "cap_action": "defer"});
    f.store.put_messaging_policy(f.ws, &policy, T0).await.unwrap();
    assert_eq!(f.store.get_messaging_policy(f.ws).await.unwrap(), Some(policy));
    let changed = serde_json::json!({"help_text": "Call us"});
    f.store.put_messaging_policy(f.ws, &changed, T0.plus_millis(1)).await.unwrap();
    assert_eq!(f.store.get_messaging_policy(f.ws).await.unwrap(), Some(changed));
    let elsewhere = workspace(f.store.as_ref(), "elsewhere").await;
    assert_eq!(f.store.get_messaging_policy(elsewhere).await.unwrap(), None);
}

pub async fn last_inbound_and_recent_sends(f: Fixture) {
    let contact = ContactId::new();
    let inbound = |pid: &str, from: &str, at: Millis| InboundMessage {
        channel_account_id: f.whatsapp,
        provider_message_id: pid.into(),
        from: from.into(),
        to: None,
        content: Content::text("hi"),
        received_at: at,
        contact_id: Some(contact),
    };
    assert_eq!(f.store.last_inbound_at(f.whatsapp, "+4915111111111").await.unwrap(), None);
    f.store
        .record_inbound(vec![
            inbound("a", "+4915111111111", T0),
            inbound("b", "+4915111111111", T0.plus_millis(5_000)),
            inbound("c", "+4915122222222", T0.plus_millis(9_000)),
        ])
        .await
        .unwrap();
    assert_eq!(f.store.last_inbound_at(f.whatsapp, "+4915111111111").await.unwrap(), Some(T0.plus_millis(5_000)));
    assert_eq!(f.store.last_inbound_at(f.sms, "+4915111111111").await.unwrap(), None, "another account");

    // Outbound messages of the contact, by purpose; rejected ones do not count.
    let send = |ms: i64, purpose: Purpose, status: MessageState| {
        let mut new = outbound(f.ws, f.sms, Channel::Sms, "+4915111111111", T0.plus_millis(ms));
        new.message.contact_id = Some(contact);
        new.message.purpose = Some(purpose);
        if status == MessageState::Rejected {
            new.message.status = status;
            new.events[1].kind = EventKind::Rejected;
        }
        new
    };
    let marketing = Purpose::marketing();
    let batch = vec![
        send(1_000, marketing.clone(), MessageState::Queued),
        send(2_000, Purpose::transactional(), MessageState::Queued),
        send(3_000, marketing.clone(), MessageState::Rejected),
        send(4_000, marketing.clone(), MessageState::Queued),
        send(5_000, marketing.clone(), MessageState::Queued),
    ];
    f.store.create_messages(request(f.ws, batch, T0.plus_millis(5_000))).await.unwrap();
    let times = |since: i64, limit: u32| {
        let store = f.store.clone();
        let marketing = marketing.clone();
        async move { store.recent_sends(f.ws, contact, &marketing, T0.plus_millis(since), limit).await.unwrap() }
    };
    assert_eq!(times(0, 10).await, vec![T0.plus_millis(5_000), T0.plus_millis(4_000), T0.plus_millis(1_000)]);
    assert_eq!(times(0, 2).await, vec![T0.plus_millis(5_000), T0.plus_millis(4_000)]);
    assert_eq!(times(4_001, 10).await, vec![T0.plus_millis(5_000)]);
    let other = f.store.recent_sends(f.ws, ContactId::new(), &marketing, T0, 10).await.unwrap();
    assert!(other.is_empty());
    // A rejected message is stored final, without a dispatch job.
    assert_eq!(f.store.message_stats(f.ws).await.unwrap().jobs_waiting, 4);
}
