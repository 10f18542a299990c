//! Conversations in the store: one open conversation per contact even under concurrency, inbound
//! messages joining it (or opening one after the idle time), outbound ones counted in the one they
//! name, closing, assigning, and the idle closer.

use crate::support::*;
use parley_domain::{ActivityKind, Assignee, AssigneeKind, CloseReason, ContactId, ConversationStatus, InboundMessage};
use parley_store::{AssigneeFilter, ConversationChange, ConversationFilter};

fn inbound(f: &Fixture, pid: &str, contact: ContactId, at: parley_domain::Millis) -> InboundMessage {
    InboundMessage {
        channel_account_id: f.sms,
        provider_message_id: pid.into(),
        from: "+4915199999999".into(),
        to: None,
        content: Content::text("hi"),
        received_at: at,
        contact_id: Some(contact),
    }
}

pub async fn concurrent_openers_share_one_conversation(f: Fixture) {
    let contact = ContactId::new();
    let mut opens = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (store, ws) = (f.store.clone(), f.ws);
        opens.spawn(async move { store.ensure_open_conversation(ws, contact, Channel::Sms, T0).await });
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(opened) = opens.join_next().await {
        ids.insert(opened.unwrap().unwrap().id);
    }
    assert_eq!(ids.len(), 1, "one open conversation per contact");
    let id = *ids.iter().next().unwrap();
    let activities = f.store.conversation_activities(f.ws, id).await.unwrap();
    assert_eq!(activities.iter().map(|a| a.kind).collect::<Vec<_>>(), [ActivityKind::Opened], "opened once");
    // Another workspace sees nothing of it.
    let other = workspace(f.store.as_ref(), "Other").await;
    assert_eq!(f.store.get_conversation(other, id).await.unwrap(), None);
}

pub async fn inbound_joins_the_open_conversation_until_it_is_idle(f: Fixture) {
    f.store.set_conversation_idle_ms(60_000);
    let contact = ContactId::new();
    let first = f.store.record_inbound(vec![inbound(&f, "a", contact, T0)]).await.unwrap();
    let conversation = first[0].conversation_id.expect("joined a conversation");
    let second = f.store.record_inbound(vec![inbound(&f, "b", contact, T0.plus_seconds(59))]).await.unwrap();
    assert_eq!(second[0].conversation_id, Some(conversation));
    let c = f.store.get_conversation(f.ws, conversation).await.unwrap().unwrap();
    assert_eq!(
        (c.message_count, c.last_message_at, c.last_inbound_at),
        (2, T0.plus_seconds(59), Some(T0.plus_seconds(59)))
    );
    assert_eq!((c.last_inbound_channel, c.last_inbound_channel_account_id), (Some(Channel::Sms), Some(f.sms)));

    // 60 s after the last message it is idle: closed as of then, and a new one opens.
    let later = T0.plus_seconds(59 + 60);
    let third = f.store.record_inbound(vec![inbound(&f, "c", contact, later)]).await.unwrap();
    let next = third[0].conversation_id.unwrap();
    assert_ne!(next, conversation);
    let old = f.store.get_conversation(f.ws, conversation).await.unwrap().unwrap();
    assert_eq!(
        (old.status, old.close_reason, old.closed_at),
        (ConversationStatus::Closed, Some(CloseReason::Idle), Some(later))
    );
    let messages = f.store.conversation_messages(f.ws, conversation, 10).await.unwrap();
    assert_eq!(messages.iter().map(|m| m.id).collect::<Vec<_>>(), [first[0].id, second[0].id], "oldest first");
    let open = ConversationFilter { status: Some(ConversationStatus::Open), ..Default::default() };
    let listed = f.store.list_conversations(f.ws, &open, 10).await.unwrap();
    assert_eq!(listed.iter().map(|c| c.id).collect::<Vec<_>>(), [next]);

    // The idle closer closes the new one when its time comes, and only then.
    assert_eq!(f.store.close_idle_conversations(later.plus_seconds(59), 10).await.unwrap(), 0);
    assert_eq!(f.store.close_idle_conversations(later.plus_seconds(61), 10).await.unwrap(), 1);
    let closed = f.store.get_conversation(f.ws, next).await.unwrap().unwrap();
    assert_eq!((closed.status, closed.closed_at), (ConversationStatus::Closed, Some(later.plus_seconds(60))));
}

pub async fn outbound_messages_count_in_the_conversation_they_name(f: Fixture) {
    let contact = ContactId::new();
    let conversation = f.store.ensure_open_conversation(f.ws, contact, Channel::Whatsapp, T0).await.unwrap();
    let mut named = outbound(f.ws, f.whatsapp, Channel::Whatsapp, "+4915199999999", T0.plus_seconds(1));
    named.message.contact_id = Some(contact);
    named.message.conversation_id = Some(conversation.id);
    let mut unnamed = outbound(f.ws, f.whatsapp, Channel::Whatsapp, "+4915199999999", T0.plus_seconds(2));
    unnamed.message.contact_id = Some(contact);
    f.store.create_messages(request(f.ws, vec![named.clone(), unnamed.clone()], T0)).await.unwrap();
    assert_eq!(f.get(named.message.id).await.conversation_id, Some(conversation.id));
    assert_eq!(f.get(unnamed.message.id).await.conversation_id, None, "the store opens none for outbound");
    let c = f.store.get_conversation(f.ws, conversation.id).await.unwrap().unwrap();
    assert_eq!((c.message_count, c.last_message_at, c.last_channel), (1, T0.plus_seconds(1), Channel::Whatsapp));
    assert_eq!(c.last_inbound_channel, None);
}

pub async fn assigning_and_closing_record_activities(f: Fixture) {
    let contact = ContactId::new();
    let c = f.store.ensure_open_conversation(f.ws, contact, Channel::Sms, T0).await.unwrap();
    let bot = Assignee::new(AssigneeKind::Bot, "triage").unwrap();
    let agent = Assignee::new(AssigneeKind::Agent, "alice").unwrap();
    let assigned = f.store.assign_conversation(f.ws, c.id, Some(bot.clone()), None, T0.plus_seconds(1)).await.unwrap();
    assert!(matches!(assigned, ConversationChange::Changed(ref c) if c.assignee == Some(bot.clone())), "{assigned:?}");
    let again = f.store.assign_conversation(f.ws, c.id, Some(bot.clone()), None, T0.plus_seconds(2)).await.unwrap();
    assert!(matches!(again, ConversationChange::Unchanged(_)), "{again:?}");
    let note = Some("wants a refund".to_string());
    f.store.assign_conversation(f.ws, c.id, Some(agent.clone()), note, T0.plus_seconds(3)).await.unwrap();
    let by_agent = ConversationFilter { assignee: Some(AssigneeFilter::Exactly(agent.clone())), ..Default::default() };
    assert_eq!(f.store.list_conversations(f.ws, &by_agent, 10).await.unwrap().len(), 1);
    let unassigned = ConversationFilter { assignee: Some(AssigneeFilter::Unassigned), ..Default::default() };
    assert_eq!(f.store.list_conversations(f.ws, &unassigned, 10).await.unwrap().len(), 0);

    let closed = f.store.close_conversation(f.ws, c.id, CloseReason::Closed, T0.plus_seconds(4)).await.unwrap();
    assert!(matches!(closed, ConversationChange::Changed(ref c) if c.status == ConversationStatus::Closed));
    let refused = f.store.assign_conversation(f.ws, c.id, None, None, T0.plus_seconds(5)).await.unwrap();
    assert!(matches!(refused, ConversationChange::Closed(_)), "{refused:?}");
    let kinds: Vec<ActivityKind> =
        f.store.conversation_activities(f.ws, c.id).await.unwrap().into_iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [ActivityKind::Opened, ActivityKind::Assigned, ActivityKind::HandedOff, ActivityKind::Closed]);
    let other = workspace(f.store.as_ref(), "Other").await;
    assert_eq!(
        f.store.close_conversation(other, c.id, CloseReason::Closed, T0).await.unwrap(),
        ConversationChange::NotFound
    );
}
