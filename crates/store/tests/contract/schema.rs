//! Migrations and restarts.

use crate::support::*;

pub async fn reopening_keeps_everything_and_migrates_once(mut f: Fixture) {
    let id = f.send("+4915111111111", T0).await;
    assert_eq!(f.claim("a", T0).await.jobs.len(), 1);
    let position = f.store.latest_event_position(f.ws).await.unwrap();
    assert!(position > 0);

    // A restart: the store is closed and opened again on the same database.
    f.store = f.db.open().await;
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite")).unwrap().count();
    assert_eq!(f.db.count("parley_migrations").await, migrations as i64, "each migration is applied once");
    let m = f.get(id).await;
    assert_eq!((m.status, m.attempts, m.sequence), (MessageState::Sending, 1, 3));
    assert_eq!(f.store.latest_event_position(f.ws).await.unwrap(), position);
    assert_eq!(f.store.list_workspaces().await.unwrap().len(), 1);
    assert_eq!(f.store.list_channel_accounts(f.ws).await.unwrap().len(), 2);
    // The lease is still held; new events come after the old ones in the feed.
    assert!(f.claim("b", T0.plus_millis(1)).await.jobs.is_empty());
    let again = f.send("+4915122222222", T0.plus_millis(2)).await;
    let feed = f.store.events_after(f.ws, position, 10).await.unwrap();
    assert_eq!(feed.iter().filter_map(|e| Some(e.message_event()?.message_id)).collect::<Vec<_>>(), [again, again]);
}
