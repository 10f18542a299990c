//! Bulk import of contacts from CSV or NDJSON.
//!
//! The file is read whole first: a header with an unknown column, or a file that is not UTF-8 at
//! all (UTF-16), is refused before anything is stored. Then every row is checked on its own: a
//! bad row (broken quoting, invalid UTF-8, a bad identity or zone, an identity of another contact)
//! is reported with its number and skipped, and the good ones are upserted by their first
//! identity in chunks of [`CHUNK_ROWS`], one transaction each. An upsert that changes nothing
//! writes nothing, so running the same file again reports every row `unchanged`.
//!
//! A row may record consents too (CSV column `consent`, NDJSON field `consent`): entries
//! `<channel or *>:<purpose or *>:<opted_in or opted_out>`, checked with the row's other fields.
//! They become records of the ledger (source `import`, evidence naming the caller, the file and the
//! row) in the transaction of the row's write, each only when it changes the consent in force, so
//! a re-run appends none (`parley_store::ContactStore::write_contact_rows`).

use super::{BodyKind, ContactError, field_code, parse_change, string_attributes};
use crate::{Engine, Result};
use parley_domain::contact::{self as rules};
use parley_domain::policy::{ChannelScope, ConsentSource, ConsentStatus, PurposeScope};
use parley_domain::{Channel, Identity, Millis, WorkspaceId};
use parley_store::{ConsentChange, ContactChange, ContactRow, ContactTarget, ContactWrite, ContactWriteOutcome};
use serde_json::{Map, Value};

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
    /// Consent records written (entries already in force write none).
    pub consents: u64,
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

/// Where an import comes from: kept in the evidence of the consent records it writes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportOrigin {
    /// Who sent it, as the evidence of an API call names it (`{"api_key_id": "key_…"}`).
    pub caller: Map<String, Value>,
    /// The file's name, when the client gave it.
    pub file: Option<String>,
}

impl ImportOrigin {
    /// The evidence of a consent entry of row `row`: the caller's, and `import: {row, file}`.
    fn evidence(&self, row: u64) -> Value {
        let mut import = Map::new();
        import.insert("row".into(), row.into());
        if let Some(file) = &self.file {
            import.insert("file".into(), file.clone().into());
        }
        let mut evidence = self.caller.clone();
        evidence.insert("import".into(), Value::Object(import));
        Value::Object(evidence)
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
    Consent,
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
        "consent" => Column::Consent,
        other => match other.strip_prefix("attributes.") {
            Some(key) if !key.is_empty() => Column::Attribute(key.to_string()),
            _ => return None,
        },
    })
}

/// A row that passed its checks: its number, its write and its consent records.
type Parsed = Vec<(u64, ContactRow)>;

/// Why a consent entry is refused.
fn consent_error(detail: impl Into<String>) -> (&'static str, String) {
    ("invalid_consent", detail.into())
}

/// One consent entry, `<channel or *>:<purpose or *>:<opted_in or opted_out>` (given whole, or in
/// the parts of an NDJSON object), as the consent API checks its fields.
fn consent_entry(
    channel: &str,
    purpose: &str,
    status: &str,
    origin: &ImportOrigin,
    row: u64,
) -> std::result::Result<ConsentChange, (&'static str, String)> {
    // Echoed in the error, at most this long.
    let short = |s: &str| s.chars().take(80).collect::<String>();
    let channel = ChannelScope::parse(channel).ok_or_else(|| {
        consent_error(format!(
            "consent channel '{}': one of sms, whatsapp, rcs, webchat, or * for every channel",
            short(channel)
        ))
    })?;
    let purpose = PurposeScope::parse(purpose).ok_or_else(|| {
        consent_error(format!(
            "consent purpose '{}': a purpose (1 to 32 of a-z, 0-9 and _, starting with a letter) or * for \
             every purpose",
            short(purpose)
        ))
    })?;
    let status = ConsentStatus::parse(status)
        .ok_or_else(|| consent_error(format!("consent status '{}': opted_in or opted_out", short(status))))?;
    Ok(ConsentChange { channel, purpose, status, source: ConsentSource::Import, evidence: origin.evidence(row) })
}

/// An entry written whole: `sms:marketing:opted_in`.
fn consent_text(
    entry: &str,
    origin: &ImportOrigin,
    row: u64,
) -> std::result::Result<ConsentChange, (&'static str, String)> {
    match entry.split(':').map(str::trim).collect::<Vec<_>>()[..] {
        [channel, purpose, status] => consent_entry(channel, purpose, status, origin, row),
        _ => Err(consent_error(format!(
            "'{}' is not a consent entry: write <channel or *>:<purpose or *>:<opted_in or opted_out>, e.g. \
             sms:marketing:opted_in",
            entry.chars().take(80).collect::<String>()
        ))),
    }
}

/// NDJSON's `consent`: an array of entries, each a string (`"sms:marketing:opted_in"`) or an
/// object `{"channel", "purpose", "status"}` (as identities are strings or objects).
fn consent_values(
    value: &Value,
    origin: &ImportOrigin,
    row: u64,
) -> std::result::Result<Vec<ConsentChange>, (&'static str, String)> {
    let items: &[Value] = match value {
        Value::Null => &[],
        Value::Array(items) => items,
        _ => return Err(consent_error("'consent' must be an array")),
    };
    let shape = "each consent entry is a string like \"sms:marketing:opted_in\" or an object {\"channel\", \
                 \"purpose\", \"status\"}";
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => consent_text(s, origin, row),
            Value::Object(o) if o.keys().all(|k| ["channel", "purpose", "status"].contains(&k.as_str())) => {
                let field = |k: &str| o.get(k).and_then(Value::as_str).ok_or_else(|| consent_error(shape));
                consent_entry(field("channel")?, field("purpose")?, field("status")?, origin, row)
            }
            _ => Err(consent_error(shape)),
        })
        .collect()
}

/// Read a CSV file into writes; refused rows go to `report`.
fn parse_csv(
    body: &[u8],
    first_row: u64,
    origin: &ImportOrigin,
    report: &mut ImportReport,
) -> Result<Parsed, ContactError> {
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
                 tags, preferred_channels, consent and attributes.<key>",
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
        match csv_row(&columns, &cells, origin, row) {
            Ok(contact_row) => parsed.push((row, contact_row)),
            Err((code, detail)) => report.fail(row, code, detail),
        }
    }
    Ok(parsed)
}

fn csv_row(
    columns: &[Column],
    cells: &[&str],
    origin: &ImportOrigin,
    row: u64,
) -> std::result::Result<ContactRow, (&'static str, String)> {
    let field = |e: rules::ContactFieldError| (field_code(&e), e.to_string());
    let mut change = ContactChange::default();
    let mut consents = Vec::new();
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
            Column::Consent => {
                for entry in cell.split(';').map(str::trim).filter(|t| !t.is_empty()) {
                    consents.push(consent_text(entry, origin, row)?);
                }
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
    Ok(ContactRow { write: ContactWrite { target: ContactTarget::Upsert, change }, consents })
}

/// Read an NDJSON file (one create body per line, and `consent`) into writes; refused lines go to
/// `report`. Blank lines are skipped but counted, so row numbers are line numbers.
fn parse_ndjson(body: &[u8], first_row: u64, origin: &ImportOrigin, report: &mut ImportReport) -> Parsed {
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
        let mut value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                report.fail(row, "malformed_json", format!("the line is not JSON: {e}"));
                continue;
            }
        };
        // `consent` is the import's own field; the rest is a create body.
        let consents = match value.as_object_mut().and_then(|o| o.remove("consent")) {
            Some(entries) => match consent_values(&entries, origin, row) {
                Ok(c) => c,
                Err((code, detail)) => {
                    report.fail(row, code, detail);
                    continue;
                }
            },
            None => Vec::new(),
        };
        match parse_change(&value, BodyKind::Create) {
            Ok(mut change) if change.identities.as_ref().is_some_and(|i| !i.is_empty()) => {
                // An upsert patches the attributes of a contact that exists, as `PUT` does.
                change.clear_attributes = value.get("attributes").is_some_and(Value::is_null);
                let write = ContactWrite { target: ContactTarget::Upsert, change };
                parsed.push((row, ContactRow { write, consents }));
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
    /// number, so that a client sending a large file in parts reports the whole file's numbers;
    /// `origin` goes into the evidence of the consent records written.
    pub async fn import_contacts(
        &self,
        workspace: WorkspaceId,
        format: ImportFormat,
        body: &[u8],
        first_row: u64,
        origin: &ImportOrigin,
    ) -> Result<ImportReport> {
        if body.starts_with(&[0xff, 0xfe]) || body.starts_with(&[0xfe, 0xff]) {
            return Err(ContactError::Import("the file is UTF-16; save it as UTF-8".into()).into());
        }
        let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
        let mut report = ImportReport::default();
        let parsed = match format {
            ImportFormat::Csv => parse_csv(body, first_row, origin, &mut report)?,
            ImportFormat::Ndjson => parse_ndjson(body, first_row, origin, &mut report),
        };
        let mut failures: Vec<ImportRowError> = Vec::new();
        let mut rows = parsed.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Parsed = rows.by_ref().take(CHUNK_ROWS).collect();
            let (numbers, writes): (Vec<u64>, Vec<ContactRow>) = chunk.into_iter().unzip();
            let outcomes = self.store().write_contact_rows(workspace, writes, Millis::now()).await?;
            for (row, outcome) in numbers.into_iter().zip(outcomes) {
                report.consents += outcome.consents.len() as u64;
                match outcome.contact {
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
        let parsed = parse_csv(file.as_bytes(), 0, &ImportOrigin::default(), &mut report).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, 1);
        let change = &parsed[0].1.write.change;
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
        let err =
            parse_csv(b"phone,email\n+4915112345678,a@b.c\n", 0, &ImportOrigin::default(), &mut report).unwrap_err();
        assert!(err.to_string().contains("unknown column 'email'"), "{err}");
    }

    #[test]
    fn invalid_utf8_fails_its_row_only() {
        let mut report = ImportReport::default();
        let file = b"phone,name\n+4915112345678,Jos\xe9\n+4915112345679,Ok\n";
        let parsed = parse_csv(file, 10, &ImportOrigin::default(), &mut report).unwrap();
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

    #[test]
    fn consent_entries_are_checked_with_their_row() {
        let origin = ImportOrigin {
            caller: serde_json::json!({"api_key_id": "key_1"}).as_object().cloned().unwrap(),
            file: Some("customers.csv".into()),
        };
        let file = "phone,consent\n\
                    +4915112345678,sms:marketing:opted_in; *:*:opted_out\n\
                    +4915112345679,sms:marketing\n\
                    +4915112345680,fax:marketing:opted_in\n\
                    +4915112345681,sms:Marketing:opted_in\n\
                    +4915112345682,sms:marketing:yes\n\
                    +4915112345683,\n";
        let mut report = ImportReport::default();
        let parsed = parse_csv(file.as_bytes(), 0, &origin, &mut report).unwrap();
        assert_eq!(parsed.iter().map(|(row, r)| (*row, r.consents.len())).collect::<Vec<_>>(), [(1, 2), (6, 0)]);
        let first = &parsed[0].1.consents;
        assert_eq!(
            (first[0].channel.as_str(), first[0].purpose.as_str(), first[0].status, first[0].source),
            ("sms", "marketing", ConsentStatus::OptedIn, ConsentSource::Import)
        );
        assert_eq!((first[1].channel, &first[1].purpose), (ChannelScope::All, &PurposeScope::All));
        assert_eq!(
            first[0].evidence,
            serde_json::json!({"api_key_id": "key_1", "import": {"row": 1, "file": "customers.csv"}})
        );
        assert_eq!(
            report.errors.iter().map(|e| (e.row, e.code)).collect::<Vec<_>>(),
            [(2, "invalid_consent"), (3, "invalid_consent"), (4, "invalid_consent"), (5, "invalid_consent")]
        );

        let lines = "{\"identities\": [\"sms:+4915112345678\"], \"consent\": [\"sms:*:opted_out\", \
                     {\"channel\": \"*\", \"purpose\": \"marketing\", \"status\": \"opted_in\"}]}\n\
                     {\"identities\": [\"sms:+4915112345679\"], \"consent\": \"sms:*:opted_out\"}\n\
                     {\"identities\": [\"sms:+4915112345680\"], \"consent\": [{\"channel\": \"sms\"}]}\n\
                     {\"identities\": [\"sms:+4915112345681\"], \"consent\": null}\n";
        let mut report = ImportReport::default();
        let parsed = parse_ndjson(lines.as_bytes(), 0, &ImportOrigin::default(), &mut report);
        assert_eq!(parsed.iter().map(|(row, r)| (*row, r.consents.len())).collect::<Vec<_>>(), [(1, 2), (4, 0)]);
        assert_eq!(parsed[0].1.consents[1].purpose.as_str(), "marketing");
        assert_eq!(parsed[0].1.consents[0].evidence, serde_json::json!({"import": {"row": 1}}));
        assert_eq!(
            report.errors.iter().map(|e| (e.row, e.code)).collect::<Vec<_>>(),
            [(2, "invalid_consent"), (3, "invalid_consent")]
        );
    }
}
