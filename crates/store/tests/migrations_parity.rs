//! The SQLite and PostgreSQL migrations must define the same tables with the same columns, so
//! that the two backends cannot drift apart.

use std::collections::BTreeMap;
use std::path::Path;

/// table name -> column names, in order, from every `CREATE TABLE` of the migration files.
fn tables(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut files: Vec<_> =
        std::fs::read_dir(dir).expect("migration folder").map(|e| e.expect("entry").path()).collect();
    files.sort();
    let mut out = BTreeMap::new();
    for file in files {
        let sql = std::fs::read_to_string(&file).expect("migration file");
        // Strip comments first: they may contain parentheses and commas.
        let sql: String = sql.lines().map(|l| l.split("--").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
        let mut rest = sql.as_str();
        while let Some(i) = rest.find("CREATE TABLE ") {
            rest = &rest[i + "CREATE TABLE ".len()..];
            let name = rest.split_whitespace().next().expect("table name").trim_start_matches("IF").to_string();
            let open = rest.find('(').expect("column list");
            // Find the matching close parenthesis.
            let mut depth = 0;
            let mut end = open;
            for (k, c) in rest[open..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = open + k;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let body = &rest[open + 1..end];
            let mut columns = Vec::new();
            let mut depth = 0;
            let mut current = String::new();
            for c in body.chars() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    ',' if depth == 0 => {
                        columns.push(std::mem::take(&mut current));
                        continue;
                    }
                    _ => {}
                }
                current.push(c);
            }
            columns.push(current);
            let columns = columns
                .iter()
                .filter_map(|c| c.split_whitespace().next().map(str::to_string))
                .filter(|first| !matches!(first.as_str(), "PRIMARY" | "UNIQUE" | "CONSTRAINT" | "FOREIGN" | "CHECK"))
                .collect();
            out.insert(name, columns);
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn sqlite_and_postgres_define_the_same_tables_and_columns() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let sqlite = tables(&root.join("sqlite"));
    let postgres = tables(&root.join("postgres"));
    assert!(sqlite.len() >= 8, "found only {:?}", sqlite.keys());
    assert_eq!(sqlite.keys().collect::<Vec<_>>(), postgres.keys().collect::<Vec<_>>(), "tables differ");
    for (table, columns) in &sqlite {
        assert_eq!(Some(columns), postgres.get(table), "columns of {table} differ");
    }
}
