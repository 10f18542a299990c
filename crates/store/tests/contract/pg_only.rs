//! What only PostgreSQL has: several processes migrating one database at once, and a schema of
//! its own that must match the SQLite one.

use crate::support::*;

pub async fn migrations_run_once_when_processes_start_together(db: TestDb) {
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { PgStore::open(&url).await.map(|_| ()) })
        })
        .collect();
    for open in opens {
        open.await.unwrap().unwrap();
    }
    PgStore::migrate(&db.url).await.unwrap();
    let store = PgStore::open(&db.url).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM parley_migrations").fetch_all(store.pool()).await.unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres")).unwrap().count();
    assert_eq!(versions, (1..=files as i64).collect::<Vec<_>>(), "each migration once, in order");
}

pub async fn the_schema_matches_the_sqlite_one(db: TestDb) {
    let store = PgStore::open(&db.url).await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name <> 'parley_migrations' ORDER BY table_name COLLATE \"C\", ordinal_position",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let postgres: Vec<String> = rows.into_iter().map(|(t, c)| format!("{t}.{c}")).collect();

    let sqlite = rusqlite::Connection::open_in_memory().unwrap();
    // Every SQLite migration, in order (as the SQLite store applies them).
    let mut files: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        sqlite.execute_batch(&std::fs::read_to_string(&file).unwrap()).unwrap();
    }
    let mut tables: Vec<String> = sqlite
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables.sort();
    let mut expected = Vec::new();
    for table in tables {
        let columns: Vec<String> = sqlite
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        expected.extend(columns.into_iter().map(|c| format!("{table}.{c}")));
    }
    assert_eq!(postgres, expected);
}
