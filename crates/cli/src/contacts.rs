//! `parley contacts import <file>`: send a CSV or NDJSON file of contacts to a running server
//! (`POST /v1/contacts/import`) in parts of a few thousand rows, with a progress bar on stderr
//! and the whole file's report at the end.
//!
//! Each CSV part repeats the header and says where it starts (`first_row`), so the server's row
//! numbers are those of the whole file, and names the file (`file`), which the consent records a
//! `consent` column writes keep as evidence. A part is upserted row by row and a re-run changes
//! nothing, so an interrupted import can simply be run again.

use crate::client::Connection;
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::time::Duration;

/// Row errors printed, at most (the counts cover them all).
const MAX_PRINTED_ERRORS: usize = 1000;

#[derive(Subcommand)]
pub enum ContactsCommand {
    /// Import contacts from a CSV or NDJSON file. Each row upserts the contact of its first
    /// identity; bad rows are reported and skipped; running the same file again changes nothing.
    Import(ImportArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Csv,
    Ndjson,
}

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    conn: Connection,
    /// The file: CSV with a header row (sms, whatsapp, rcs, webchat, phone, name, locale,
    /// time_zone, tags, preferred_channels, consent, attributes.<key>), or NDJSON (one contact per
    /// line).
    file: PathBuf,
    /// The file's format (default: from its extension, `.ndjson`/`.jsonl` or CSV).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Rows per request.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=50_000))]
    chunk_rows: u64,
}

pub async fn run(command: ContactsCommand) -> anyhow::Result<()> {
    match command {
        ContactsCommand::Import(args) => import(args).await,
    }
}

/// The whole file's report, summed over its parts.
#[derive(Default)]
struct Totals {
    rows: u64,
    created: u64,
    updated: u64,
    unchanged: u64,
    failed: u64,
    consents: u64,
    errors: Vec<String>,
}

impl Totals {
    fn add(&mut self, report: &Value) {
        let n = |k: &str| report.get(k).and_then(Value::as_u64).unwrap_or(0);
        self.rows += n("rows");
        self.created += n("created");
        self.updated += n("updated");
        self.unchanged += n("unchanged");
        self.failed += n("failed");
        self.consents += n("consents");
        for e in report.get("errors").and_then(Value::as_array).into_iter().flatten() {
            if self.errors.len() < MAX_PRINTED_ERRORS {
                self.errors.push(format!(
                    "row {}: {}: {}",
                    e.get("row").and_then(Value::as_u64).unwrap_or(0),
                    e.get("code").and_then(Value::as_str).unwrap_or("error"),
                    e.get("detail").and_then(Value::as_str).unwrap_or("")
                ));
            }
        }
    }
}

/// One part of the file, ready to send.
struct Part {
    body: Vec<u8>,
    first_row: u64,
    /// Where the file has been read to, for the progress bar.
    read_to: u64,
}

async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let format = args.format.unwrap_or_else(|| {
        let ext = args.file.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if ext == "ndjson" || ext == "jsonl" { Format::Ndjson } else { Format::Csv }
    });
    let file = std::fs::File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let progress = indicatif::ProgressBar::new(size);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let client = reqwest::Client::builder().timeout(Duration::from_secs(300)).build()?;
    let url = format!("{}/v1/contacts/import", args.conn.url.trim_end_matches('/'));
    let content_type = match format {
        Format::Csv => "text/csv",
        Format::Ndjson => "application/x-ndjson",
    };
    // Named in the evidence of the consent records (the server takes up to 255 characters).
    let file_name: String = args
        .file
        .file_name()
        .map(|n| n.to_string_lossy().chars().filter(|c| !c.is_control()).take(255).collect())
        .unwrap_or_default();
    let mut totals = Totals::default();
    let mut parts: Box<dyn Iterator<Item = anyhow::Result<Part>>> = match format {
        Format::Csv => Box::new(CsvParts::new(file, args.chunk_rows)?),
        Format::Ndjson => {
            Box::new(NdjsonParts { reader: BufReader::new(file), rows: args.chunk_rows, line: 0, read: 0 })
        }
    };
    for part in &mut parts {
        let part = part?;
        let mut request = client.post(&url).bearer_auth(&args.conn.key).query(&[("first_row", part.first_row)]);
        if !file_name.is_empty() {
            request = request.query(&[("file", &file_name)]);
        }
        let response = request
            .header("content-type", content_type)
            .body(part.body)
            .send()
            .await
            .context("cannot reach the server")?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            progress.abandon();
            let code = body.get("code").and_then(Value::as_str).unwrap_or("error");
            let detail = body.get("detail").and_then(Value::as_str).unwrap_or("");
            anyhow::bail!("{status} {code}: {detail} (rows before {} were imported)", part.first_row + 1);
        }
        totals.add(&body);
        progress.set_position(part.read_to);
        progress.set_message(format!("{} rows, {} failed", totals.rows, totals.failed));
    }
    progress.finish();
    for e in &totals.errors {
        eprintln!("{e}");
    }
    if totals.failed as usize > totals.errors.len() {
        eprintln!("… and {} more refused rows", totals.failed as usize - totals.errors.len());
    }
    println!(
        "{} rows: {} created, {} updated, {} unchanged, {} failed; {} consent records",
        totals.rows, totals.created, totals.updated, totals.unchanged, totals.failed, totals.consents
    );
    if totals.failed > 0 {
        anyhow::bail!(
            "{} rows were refused (the others were imported; fix them and run the file again)",
            totals.failed
        );
    }
    Ok(())
}

/// A CSV file in parts of `rows` records, each with the header. Records are cut where the CSV
/// reader ends them (quoted fields may hold line breaks) and written back unchanged in meaning.
struct CsvParts<R: Read> {
    reader: csv::Reader<R>,
    header: csv::ByteRecord,
    rows: u64,
    row: u64,
    done: bool,
}

impl<R: Read> CsvParts<R> {
    fn new(input: R, rows: u64) -> anyhow::Result<Self> {
        let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(input);
        let mut header = csv::ByteRecord::new();
        if !reader.read_byte_record(&mut header).context("cannot read the CSV header")? {
            anyhow::bail!("the file is empty: a CSV file starts with a header row");
        }
        Ok(CsvParts { reader, header, rows, row: 0, done: false })
    }

    fn next_part(&mut self) -> anyhow::Result<Option<Part>> {
        if self.done {
            return Ok(None);
        }
        let mut writer = csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
        writer.write_byte_record(&self.header)?;
        let first_row = self.row;
        let mut record = csv::ByteRecord::new();
        while self.row - first_row < self.rows {
            if !self.reader.read_byte_record(&mut record).context("cannot read the CSV file")? {
                self.done = true;
                break;
            }
            writer.write_byte_record(&record)?;
            self.row += 1;
        }
        if self.row == first_row {
            return Ok(None);
        }
        let body = writer.into_inner().map_err(|e| anyhow::anyhow!("cannot build a part: {e}"))?;
        Ok(Some(Part { body, first_row, read_to: self.reader.position().byte() }))
    }
}

impl<R: Read> Iterator for CsvParts<R> {
    type Item = anyhow::Result<Part>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_part().transpose()
    }
}

/// An NDJSON file in parts of `rows` lines; row numbers are line numbers.
struct NdjsonParts<R: BufRead> {
    reader: R,
    rows: u64,
    line: u64,
    read: u64,
}

impl<R: BufRead> Iterator for NdjsonParts<R> {
    type Item = anyhow::Result<Part>;
    fn next(&mut self) -> Option<Self::Item> {
        let first_row = self.line;
        let mut body = Vec::new();
        while self.line - first_row < self.rows {
            match self.reader.read_until(b'\n', &mut body) {
                Ok(0) => break,
                Ok(n) => {
                    self.read += n as u64;
                    self.line += 1;
                }
                Err(e) => return Some(Err(e.into())),
            }
        }
        if body.is_empty() { None } else { Some(Ok(Part { body, first_row, read_to: self.read })) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_parts_repeat_the_header_and_keep_quoted_line_breaks() {
        let file = "phone,name\n+4915100000001,\"Ada\nLovelace\"\n+4915100000002,Bob\n+4915100000003,\"C, D\"\n";
        let parts: Vec<Part> = CsvParts::new(file.as_bytes(), 2).unwrap().map(Result::unwrap).collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].first_row, 0);
        assert_eq!(
            String::from_utf8(parts[0].body.clone()).unwrap(),
            "phone,name\n+4915100000001,\"Ada\nLovelace\"\n+4915100000002,Bob\n"
        );
        assert_eq!(parts[1].first_row, 2);
        assert_eq!(String::from_utf8(parts[1].body.clone()).unwrap(), "phone,name\n+4915100000003,\"C, D\"\n");
        assert_eq!(parts[1].read_to, file.len() as u64);
    }

    #[test]
    fn ndjson_parts_count_lines() {
        let file = "{\"a\":1}\n\n{\"b\":2}\n{\"c\":3}";
        let parts: Vec<Part> =
            NdjsonParts { reader: file.as_bytes(), rows: 2, line: 0, read: 0 }.map(Result::unwrap).collect();
        assert_eq!(parts.iter().map(|p| p.first_row).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(String::from_utf8(parts[1].body.clone()).unwrap(), "{\"b\":2}\n{\"c\":3}");
    }
}
