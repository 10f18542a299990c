//! Bulk import of contacts from CSV or NDJSON.
//!
//! The file is read whole first: a header with an unknown column, or a file that is not UTF-8 at
//! all (UTF-16), is refused before anything is stored. Then every row is checked on its own: a
//! bad row (broken quoting, invalid UTF-8, a bad identity or zone, an identity of another contact)
//! is reported with its number and skipped, and the good ones are upserted by their first
//! identity in chunks of [`CHUNK_ROWS`], one transaction each. An upsert that changes nothing
//! writes nothing, so running the same file again reports every row `unchanged`.

use super::{BodyKind, ContactError, field_code, parse_change, string_attributes};
use crate::{Engine, Result};
use parley_domain::contact::{self as rules};
use parley_domain::{Channel, Identity, Millis, WorkspaceId};
use parley_store::{ContactChange, ContactTarget, ContactWrite, ContactWriteOutcome};

/// Rows written per transaction.
pub const CHUNK_ROWS: usize = 1000;
/// Row errors reported, at most (the counts cover them all).
pub const MAX_IMPORT_ERRORS: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportFormat {
    Csv,
    Ndjson,
}

/// One refused row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportRowError {
    /// The row's number: data rows count from 1 (the CSV header is row 0), plus the offset the
    /// caller gave.
    pub row: u64,
    pub code: &'static str,
    pub detail: String,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
    /// The first [`MAX_IMPORT_ERRORS`] refused rows, in row order.
    pub errors: Vec<ImportRowError>,
}

impl ImportReport {
    fn fail(&mut self, row: u64, code: &'static str, detail: impl Into<String>) {
        self.failed += 1;
        if self.errors.len() < MAX_IMPORT_ERRORS {
            self.errors.push(ImportRowError { row, code, detail: detail.into() });
        }
    }
}

/// A CSV column.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Column {
    Identity(Channel),
    Name,
    Locale,
    TimeZone,
    Tags,
    PreferredChannels,
    Attribute(String),
}

fn column(name: &str) -> Option<Column> {
    Some(match name {
        "sms" | "phone" => Column::Identity(Channel::Sms),
        "whatsapp" => Column::Identity(Channel::Whatsapp),
        "rcs" => Column::Identity(Channel::Rcs),
        "webchat" => Column::Identity(Channel::Webchat),
        "name" => Column::Name,
        "locale" => Column::Locale,
        "time_zone" => Column::TimeZone,
        "tags" => Column::Tags,
        "preferred_channels" => Column::PreferredChannels,
        other => match other.strip_prefix("attributes.") {
            Some(key) if !key.is_empty() => Column::Attribute(key.to_string()),
            _ => return None,
        },
    })
}

/// A row that passed its checks: its number and its write.
type Parsed = Vec<(u64, ContactWrite)>;

/// Read a CSV file into writes; refused rows go to `report`.
fn parse_csv(body: &[u8], first_row: u64, report: &mut ImportReport) -> Result<Parsed, ContactError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(body);
    let mut records = reader.byte_records();
    let header = match records.next() {
        Some(Ok(h)) => h,
        Some(Err(e)) => return Err(ContactError::Import(format!("the CSV header cannot be read: {e}"))),
        None => return Err(ContactError::Import("the file is empty: a CSV file starts with a header row".into())),
    };
    let mut columns = Vec::with_capacity(header.len());
    for raw in header.iter() {
        let name = std::str::from_utf8(raw)
            .map_err(|_| ContactError::Import("the CSV header is not UTF-8 text".into()))?
            .trim()
            .trim_start_matches('\u{feff}');
        let col = column(name).ok_or_else(|| {
            ContactError::Import(format!(
                "unknown column '{}': the columns are sms, whatsapp, rcs, webchat, phone, name, locale, time_zone, \
                 tags, preferred_channels and attributes.<key>",
                name.chars().take(64).collect::<String>()
            ))
        })?;
        if columns.contains(&col) {
            return Err(ContactError::Import(format!("column '{name}' appears twice")));
        }
        columns.push(col);
    }
    if !columns.iter().any(|c| matches!(c, Column::Identity(_))) {
        return Err(ContactError::Import(
            "the header names no identity column: add one of sms, phone, whatsapp, rcs or webchat".into(),
        ));
    }
    let mut parsed = Vec::new();
    let mut row = first_row;
    for record in records {
        row += 1;
        report.rows += 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                report.fail(row, "malformed_row", format!("the row cannot be read as CSV: {e}"));
                continue;
            }
        };
        if record.len() != columns.len() {
            report.fail(
                row,
                "malformed_row",
                format!(
                    "the row has {} fields where the header has {} (check its quoting: a quote must open and close \
                     a whole field, and a quote inside one is written twice)",
                    record.len(),
                    columns.len()
                ),
            );
            continue;
        }
        let mut cells = Vec::with_capacity(columns.len());
        for raw in record.iter() {
            match std::str::from_utf8(raw) {
                Ok(s) => cells.push(s.trim()),
                Err(_) => break,
            }
        }
        if cells.len() != columns.len() {
            report.fail(row, "invalid_encoding", "the row is not valid UTF-8 (save the file as UTF-8)");
            continue;
        }
        match csv_write(&columns, &cells) {
            Ok(write) => parsed.push((row, write)),
            Err((code, detail)) => report.fail(row, code, detail),
        }
    }
    Ok(parsed)
}

fn csv_write(columns: &[Column], cells: &[&str]) -> std::result::Result<ContactWrite, (&'static str, String)> {
    let field = |e: rules::ContactFieldError| (field_code(&e), e.to_string());
    let mut change = ContactChange::default();
    let mut identities: Vec<Identity> = Vec::new();
    let mut attributes = Vec::new();
    for (col, cell) in columns.iter().zip(cells) {
        if cell.is_empty() {
            continue;
        }
        match col {
            Column::Identity(channel) => {
                let identity = Identity::new(*channel, cell).map_err(field)?;
                if !identities.contains(&identity) {
                    identities.push(identity);
                }
            }
            Column::Name => change.name = Some(Some(rules::normalize_name(cell).map_err(field)?)),
            Column::Locale => change.locale = Some(Some(rules::normalize_locale(cell).map_err(field)?)),
            Column::TimeZone => change.time_zone = Some(Some(rules::normalize_time_zone(cell).map_err(field)?)),
            Column::Tags => {
                let tags: Vec<&str> = cell.split(';').map(str::trim).filter(|t| !t.is_empty()).collect();
                change.tags = Some(rules::normalize_tags(&tags).map_err(field)?);
            }
            Column::PreferredChannels => {
                let mut channels = Vec::new();
                for name in cell.split(';').map(str::trim).filter(|t| !t.is_empty()) {
                    let channel = Channel::parse(name).ok_or_else(|| {
                        ("invalid_contact", format!("'{name}' is not a channel: use sms, whatsapp, rcs or webchat"))
                    })?;
                    if !channels.contains(&channel) {
                        channels.push(channel);
                    }
                }
                change.preferred_channels = Some(channels);
            }
            Column::Attribute(key) => attributes.push((key.clone(), cell.to_string())),
        }
    }
    if identities.is_empty() {
        return Err(("missing_identity", "the row has no identity: fill one of its identity columns".into()));
    }
    if !attributes.is_empty() {
        let map = string_attributes(attributes);
        rules::validate_attributes(&serde_json::Value::Object(map.clone())).map_err(field)?;
        change.attributes = Some(map);
    }
    change.identities = Some(identities);
    Ok(ContactWrite { target: ContactTarget::Upsert, change })
}

/// Read an NDJSON file (one create body per line) into writes; refused lines go to `report`.
/// Blank lines are skipped but counted, so row numbers are line numbers.
fn parse_ndjson(body: &[u8], first_row: u64, report: &mut ImportReport) -> Parsed {
    let mut parsed = Vec::new();
    let mut row = first_row;
    for line in body.split(|b| *b == b'\n') {
        row += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        report.rows += 1;
        let Ok(text) = std::str::from_utf8(line) else {
            report.fail(row, "invalid_encoding", "the line is not valid UTF-8");
            continue;
        };
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                report.fail(row, "malformed_json", format!("the line is not JSON: {e}"));
                continue;
            }
        };
        match parse_change(&value, BodyKind::Create) {
            Ok(mut change) if change.identities.as_ref().is_some_and(|i| !i.is_empty()) => {
                // An upsert patches the attributes of a contact that exists, as `PUT` does.
                change.clear_attributes = value.get("attributes").is_some_and(serde_json::Value::is_null);
                parsed.push((row, ContactWrite { target: ContactTarget::Upsert, change }));
            }
            Ok(_) => report.fail(row, "missing_identity", "the line has no identity: give 'identities'"),
            Err(ContactError::Invalid { code, detail, .. }) => report.fail(row, code, detail),
            Err(e) => report.fail(row, "invalid_contact", e.to_string()),
        }
    }
    // A final newline ends the last line rather than starting an empty one.
    parsed
}

impl Engine {
    /// Import a CSV or NDJSON file (see the module comment). `first_row` is added to every row
    /// number, so that a client sending a large file in parts reports the whole file's numbers.
    pub async fn import_contacts(
        &self,
        workspace: WorkspaceId,
        format: ImportFormat,
        body: &[u8],
        first_row: u64,
    ) -> Result<ImportReport> {
        if body.starts_with(&[0xff, 0xfe]) || body.starts_with(&[0xfe, 0xff]) {
            return Err(ContactError::Import("the file is UTF-16; save it as UTF-8".into()).into());
        }
        let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
        let mut report = ImportReport::default();
        let parsed = match format {
            ImportFormat::Csv => parse_csv(body, first_row, &mut report)?,
            ImportFormat::Ndjson => parse_ndjson(body, first_row, &mut report),
        };
        let mut failures: Vec<ImportRowError> = Vec::new();
        let mut rows = parsed.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<(u64, ContactWrite)> = rows.by_ref().take(CHUNK_ROWS).collect();
            let (numbers, writes): (Vec<u64>, Vec<ContactWrite>) = chunk.into_iter().unzip();
            let outcomes = self.store().write_contacts(workspace, writes, Millis::now()).await?;
            for (row, outcome) in numbers.into_iter().zip(outcomes) {
                match outcome {
                    ContactWriteOutcome::Created(_) => report.created += 1,
                    ContactWriteOutcome::Updated(_) => report.updated += 1,
                    ContactWriteOutcome::Unchanged(_) => report.unchanged += 1,
                    ContactWriteOutcome::IdentityConflict { identity, owner } => failures.push(ImportRowError {
                        row,
                        code: "identity_conflict",
                        detail: format!("identity {identity} belongs to contact {owner}, not to this row's contact"),
                    }),
                    ContactWriteOutcome::Invalid(e) => {
                        failures.push(ImportRowError { row, code: field_code(&e), detail: e.to_string() })
                    }
                    ContactWriteOutcome::NotFound => failures.push(ImportRowError {
                        row,
                        code: "invalid_contact",
                        detail: "the row's contact could not be found".into(),
                    }),
                }
            }
        }
        // Errors found while writing join those found while reading, in row order.
        for failure in failures {
            report.fail(failure.row, failure.code, failure.detail);
        }
        report.errors.sort_by_key(|e| e.row);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_are_checked_one_by_one() {
        let file = "phone,name,tags,attributes.plan\n\
                    +4915112345678,Ada,vip;beta,gold\n\
                    +1 555,Bad,,\n\
                    \"+4915112345679,Broken\n";
        let mut report = ImportReport::default();
        let parsed = parse_csv(file.as_bytes(), 0, &mut report).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, 1);
        let change = &parsed[0].1.change;
        assert_eq!(change.tags.as_deref(), Some(&["vip".to_string(), "beta".to_string()][..]));
        assert_eq!(change.identities.as_ref().map(|i| i[0].to_string()).as_deref(), Some("sms:+4915112345678"));
        assert_eq!(report.rows, 3);
        assert_eq!(
            report.errors.iter().map(|e| (e.row, e.code)).collect::<Vec<_>>(),
            [(2, "invalid_identity"), (3, "malformed_row")]
        );
    }

    #[test]
    fn unknown_columns_refuse_the_file() {
        let mut report = ImportReport::default();
        let err = parse_csv(b"phone,email\n+4915112345678,a@b.c\n", 0, &mut report).unwrap_err();
        assert!(err.to_string().contains("unknown column 'email'"), "{err}");
    }

    #[test]
    fn invalid_utf8_fails_its_row_only() {
        let mut report = ImportReport::default();
        let parsed = parse_csv(b"phone,name\n+4915112345678,Jos\xe9\n+4915112345679,Ok\n", 10, &mut report).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, 12);
        assert_eq!(
            report.errors,
            [ImportRowError {
                row: 11,
                code: "invalid_encoding",
                detail: "the row is not valid UTF-8 (save the file as UTF-8)".into()
            }]
        );
    }
}
