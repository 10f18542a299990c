//! Contacts: identities owned by one contact, upserts and their outcomes, erasure that keeps
//! identities reserved, and merges that re-point messages and consents; each change announced by
//! its `contact.*` event in the feed.

use crate::support::*;
use parley_domain::policy::{ChannelScope, Consent, ConsentSource, ConsentStatus, PurposeScope};
use parley_domain::{ConsentId, Identity, TimeZoneSource};
use parley_store::{ContactChange, ContactTarget, ContactWrite, ContactWriteOutcome, FeedItem, MergeOutcome};
use serde_json::{Value, json};

fn ident(s: &str) -> Identity {
    Identity::parse(s).unwrap()
}

fn upsert(identities: &[&str], name: Option<&str>) -> ContactWrite {
    ContactWrite {
        target: ContactTarget::Upsert,
        change: ContactChange {
            name: name.map(|n| Some(n.to_string())),
            identities: Some(identities.iter().map(|i| ident(i)).collect()),
            ..Default::default()
        },
    }
}

/// The workspace's `contact.*` events after feed position `after`, in feed order: (position,
/// type, data).
async fn contact_events(f: &Fixture, workspace: WorkspaceId, after: i64) -> Vec<(i64, String, Value)> {
    let feed = f.store.events_after(workspace, after, 1000).await.unwrap();
    feed.into_iter()
        .filter_map(|e| match e.item {
            FeedItem::Workspace(w) if w.event_type.starts_with("contact.") => {
                assert_eq!(w.workspace_id, workspace);
                Some((e.position, w.event_type, w.data))
            }
            _ => None,
        })
        .collect()
}

fn types(events: &[(i64, String, Value)]) -> Vec<&str> {
    events.iter().map(|(_, t, _)| t.as_str()).collect()
}

pub async fn upserts_find_the_owner_and_report_what_they_did(f: Fixture) {
    let s = f.store.as_ref();
    let outcomes = s
        .write_contacts(
            f.ws,
            vec![
                upsert(&["sms:+4915112345678"], Some("Ada")),
                upsert(&["sms:+4915112345678", "whatsapp:+4915112345678"], Some("Ada")),
                upsert(&["sms:+4915100000001", "whatsapp:+4915112345678"], Some("Bob")),
                upsert(&["sms:+4915112345678"], Some("Ada")),
            ],
            T0,
        )
        .await
        .unwrap();
    let ContactWriteOutcome::Created(ada) = &outcomes[0] else { panic!("{outcomes:?}") };
    assert_eq!(ada.time_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(ada.time_zone_source, Some(TimeZoneSource::Guessed));
    let ContactWriteOutcome::Updated(with_wa) = &outcomes[1] else { panic!("{outcomes:?}") };
    assert_eq!(with_wa.id, ada.id);
    assert_eq!(with_wa.identities, [ident("sms:+4915112345678"), ident("whatsapp:+4915112345678")]);
    assert_eq!(
        outcomes[2],
        ContactWriteOutcome::IdentityConflict { identity: ident("whatsapp:+4915112345678"), owner: ada.id }
    );
    assert!(matches!(&outcomes[3], ContactWriteOutcome::Unchanged(c) if c == with_wa), "{outcomes:?}");
    // The refused write left nothing behind.
    assert!(s.contact_by_identity(f.ws, &ident("sms:+4915100000001")).await.unwrap().is_none());
    assert_eq!(f.db.count("contacts").await, 1);
    assert_eq!(f.db.count("contact_identities").await, 2);
    let found = s.contact_by_identity(f.ws, &ident("whatsapp:+4915112345678")).await.unwrap().unwrap();
    assert_eq!(&found, with_wa.as_ref());
    // One chunk, one event per change, in the order of the writes, with the contact afterwards.
    let events = contact_events(&f, f.ws, 0).await;
    assert_eq!(types(&events), ["contact.created", "contact.updated"]);
    assert_eq!(events[0].2, json!({"contact": ada.resource()}));
    assert_eq!(events[1].2, json!({"contact": with_wa.resource()}));
    assert_eq!(events[1].2["contact"]["identities"][1]["identity"], "whatsapp:+4915112345678");
    let last = events[1].0;
    // Another workspace does not see it, and may hold the same identity.
    let other = workspace(s, "other").await;
    assert!(s.contact_by_identity(other, &ident("sms:+4915112345678")).await.unwrap().is_none());
    let theirs = s.ensure_contact(other, &ident("sms:+4915112345678"), T0).await.unwrap();
    assert_ne!(theirs.id, ada.id);
    assert!(s.get_contact(other, ada.id).await.unwrap().is_none());
    // Ensuring the same number on another phone channel finds the person behind it; web chat and
    // explicit upserts never link by number.
    let on_rcs = s.ensure_contact(f.ws, &ident("rcs:+4915112345678"), T0.plus_millis(1)).await.unwrap();
    assert_eq!(on_rcs.id, ada.id);
    assert_eq!(on_rcs.identities.len(), 3);
    let bob = s.ensure_contact(f.ws, &ident("rcs:+4915100000002"), T0).await.unwrap();
    assert_ne!(bob.id, ada.id);
    let ContactWriteOutcome::Created(carol) =
        s.write_contact(f.ws, upsert(&["rcs:+4915100000001"], None), T0).await.unwrap()
    else {
        panic!()
    };
    let sms = s.write_contact(f.ws, upsert(&["sms:+4915100000001"], None), T0).await.unwrap();
    assert!(matches!(sms, ContactWriteOutcome::Created(c) if c.id != carol.id));
    // Ensuring adds a phone identity (an update) or creates; finding the owner writes nothing.
    s.ensure_contact(f.ws, &ident("rcs:+4915112345678"), T0.plus_millis(2)).await.unwrap();
    let events = contact_events(&f, f.ws, last).await;
    assert_eq!(
        types(&events),
        ["contact.updated", "contact.created", "contact.created", "contact.created"],
        "{events:?}"
    );
    assert_eq!(events[0].2, json!({"contact": on_rcs.resource()}));
    assert_eq!(events[1].2["contact"]["id"], json!(bob.id));
    let theirs_events = contact_events(&f, other, 0).await;
    assert_eq!(types(&theirs_events), ["contact.created"], "in their own workspace");
    assert_eq!(theirs_events[0].2["contact"]["id"], json!(theirs.id));
}

pub async fn erased_contacts_keep_their_identities_and_revive(f: Fixture) {
    let s = f.store.as_ref();
    let write = ContactWrite {
        target: ContactTarget::Create,
        change: ContactChange {
            name: Some(Some("Ada".into())),
            tags: Some(vec!["vip".into()]),
            identities: Some(vec![ident("sms:+4915112345678")]),
            ..Default::default()
        },
    };
    let ContactWriteOutcome::Created(ada) = s.write_contact(f.ws, write, T0).await.unwrap() else { panic!() };
    assert_eq!(f.db.count("contact_tags").await, 1);
    assert!(s.delete_contact(f.ws, ada.id, T0.plus_millis(1)).await.unwrap());
    assert!(!s.delete_contact(f.ws, ada.id, T0.plus_millis(2)).await.unwrap());
    assert_eq!(f.db.count("contact_tags").await, 0);
    let held = s.contact_by_identity(f.ws, &ident("sms:+4915112345678")).await.unwrap().unwrap();
    assert_eq!(
        (held.id, held.deleted_at, held.name.clone(), held.tags.len()),
        (ada.id, Some(T0.plus_millis(1)), None, 0)
    );
    assert!(s.list_contacts(f.ws, &Default::default(), 10).await.unwrap().is_empty());
    // A patch by id does not reach it; an inbound message from the address revives it.
    let patch = ContactWrite { target: ContactTarget::Id(ada.id), change: ContactChange::default() };
    assert_eq!(s.write_contact(f.ws, patch, T0).await.unwrap(), ContactWriteOutcome::NotFound);
    let revived = s.ensure_contact(f.ws, &ident("sms:+4915112345678"), T0.plus_millis(3)).await.unwrap();
    assert_eq!((revived.id, revived.deleted_at, revived.name.clone()), (ada.id, None, None));
    assert_eq!(revived.time_zone.as_deref(), Some("Europe/Berlin"));
    // Created, deleted (its id only: nothing of what was erased), created again on revival.
    let events = contact_events(&f, f.ws, 0).await;
    assert_eq!(types(&events), ["contact.created", "contact.deleted", "contact.created"], "{events:?}");
    assert_eq!(events[0].2["contact"]["name"], "Ada");
    assert_eq!(events[1].2, json!({"contact_id": ada.id}));
    assert_eq!(events[2].2, json!({"contact": revived.resource()}));
    let stored = s.list_workspace_events(f.ws, 10).await.unwrap();
    let deleted = stored.iter().find(|e| e.event_type == "contact.deleted").unwrap();
    assert_eq!(deleted.created_at, T0.plus_millis(1));
}

pub async fn merges_repoint_messages_and_consents(f: Fixture) {
    let s = f.store.as_ref();
    let ada = s.ensure_contact(f.ws, &ident("sms:+4915112345678"), T0).await.unwrap();
    let bob = s.ensure_contact(f.ws, &ident("whatsapp:+4915100000001"), T0).await.unwrap();
    let mut message = outbound(f.ws, f.whatsapp, Channel::Whatsapp, "+4915100000001", T0);
    message.message.contact_id = Some(bob.id);
    let message_id = message.message.id;
    s.create_messages(request(f.ws, vec![message], T0)).await.unwrap();
    let consent = Consent {
        id: ConsentId::new(),
        workspace_id: f.ws,
        contact_id: bob.id,
        channel: ChannelScope::All,
        purpose: PurposeScope::All,
        status: ConsentStatus::OptedOut,
        source: ConsentSource::Keyword,
        evidence: serde_json::json!({"text": "STOP"}),
        address: Some("+4915100000001".into()),
        recorded_at: T0,
    };
    s.append_consents(vec![consent.clone()]).await.unwrap();

    let MergeOutcome::Merged(merged) = s.merge_contacts(f.ws, ada.id, bob.id, T0.plus_millis(5)).await.unwrap() else {
        panic!()
    };
    assert_eq!(merged.identities, [ident("sms:+4915112345678"), ident("whatsapp:+4915100000001")]);
    assert_eq!(s.get_message(f.ws, message_id, false).await.unwrap().unwrap().contact_id, Some(ada.id));
    assert_eq!(s.list_consents(f.ws, ada.id, None, None).await.unwrap(), [Consent { contact_id: ada.id, ..consent }]);
    assert!(s.list_consents(f.ws, bob.id, None, None).await.unwrap().is_empty());
    let tomb = s.get_contact(f.ws, bob.id).await.unwrap().unwrap();
    assert_eq!((tomb.merged_into, tomb.identities.len()), (Some(ada.id), 0));
    let owner = s.contact_by_identity(f.ws, &ident("whatsapp:+4915100000001")).await.unwrap().unwrap();
    assert_eq!(owner.id, ada.id);
    // Two creations, the opt-out, the merge (the survivor's and the absorbed contact's ids).
    let events = contact_events(&f, f.ws, 0).await;
    assert_eq!(
        types(&events),
        ["contact.created", "contact.created", "contact.opted_out", "contact.merged"],
        "{events:?}"
    );
    assert_eq!(events[3].2, json!({"survivor_id": ada.id, "absorbed_id": bob.id}));
    // Neither a tombstone nor an unknown contact can take part in another merge.
    assert_eq!(s.merge_contacts(f.ws, ada.id, bob.id, T0).await.unwrap(), MergeOutcome::NotFound(bob.id));
    let elsewhere = workspace(s, "elsewhere").await;
    assert_eq!(s.merge_contacts(elsewhere, ada.id, bob.id, T0).await.unwrap(), MergeOutcome::NotFound(ada.id));
    assert_eq!(contact_events(&f, f.ws, 0).await.len(), 4, "a refused merge announces nothing");
}
