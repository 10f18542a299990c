//! Commands that talk to a running server over its API: `send` and `tail`.

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Args, Clone)]
pub struct Connection {
    /// The server's base URL.
    #[arg(long, env = "PARLEY_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An API key (pk_…).
    #[arg(long, env = "PARLEY_KEY", hide_env_values = true)]
    pub key: String,
}

#[derive(Args)]
pub struct SendArgs {
    #[command(flatten)]
    conn: Connection,
    /// The recipient: a phone number, or a web chat visitor id.
    #[arg(long)]
    to: String,
    /// The text to send.
    #[arg(long)]
    text: String,
    /// sms, whatsapp, rcs or webchat.
    #[arg(long, default_value = "sms")]
    channel: String,
    /// Region for numbers without a country code (DE, IN, US, …).
    #[arg(long)]
    default_region: Option<String>,
    /// Makes retries of this command safe.
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Args)]
pub struct TailArgs {
    #[command(flatten)]
    conn: Connection,
    /// Start with the oldest event instead of new ones only (the events recorded so far are
    /// read from the polling list, whose JSON lines are feed items rather than envelopes).
    #[arg(long)]
    from_start: bool,
    /// Print each event as a JSON line (the event envelope).
    #[arg(long)]
    json: bool,
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?)
}

async fn answer(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        Ok(body)
    } else {
        let code = body.get("code").and_then(Value::as_str).unwrap_or("error");
        let detail = body.get("detail").and_then(Value::as_str).unwrap_or("");
        anyhow::bail!("{status} {code}: {detail}")
    }
}

pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let mut body = json!({"to": args.to, "channel": args.channel, "content": {"type": "text", "text": args.text}});
    if let Some(region) = args.default_region {
        body["default_region"] = json!(region);
    }
    let mut request = client()?
        .post(format!("{}/v1/messages", args.conn.url.trim_end_matches('/')))
        .bearer_auth(&args.conn.key)
        .json(&body);
    if let Some(key) = args.idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let message = answer(request.send().await.context("cannot reach the server")?).await?;
    println!("{}", serde_json::to_string_pretty(&message)?);
    Ok(())
}

/// Follow `GET /v1/stream`. On a dropped connection (or a server restart), reconnect after a
/// short pause with `Last-Event-ID`, so that no event is lost or printed twice. With
/// `--from-start`, the events recorded so far are read first from the polling list
/// (`GET /v1/message-events`), and the stream continues after the last of them.
pub async fn tail(args: TailArgs) -> anyhow::Result<()> {
    // No overall timeout: a stream has no end.
    let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
    let base = args.conn.url.trim_end_matches('/').to_string();
    let mut last_event_id = if args.from_start { backlog(&http, &base, &args).await? } else { None };
    loop {
        let mut request = http.get(format!("{base}/v1/stream")).bearer_auth(&args.conn.key);
        if let Some(id) = &last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let mut response = match request.send().await {
            Ok(response) if response.status().is_success() => response,
            // Overloaded or stopping: try again. Anything else (a bad key, an event id the
            // server does not know) will not get better by retrying.
            Ok(response) if response.status().is_server_error() => {
                eprintln!("the server answered {}; retrying", response.status());
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Ok(response) => return answer(response).await.map(|_| ()),
            Err(e) => {
                eprintln!("cannot reach the server ({e}); retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let mut parser = SseParser::default();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    for event in parser.push(&chunk) {
                        print_envelope(&event.data, args.json);
                        if !event.id.is_empty() {
                            last_event_id = Some(event.id);
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("the stream was interrupted ({e})");
                    break;
                }
            }
        }
        eprintln!("reconnecting…");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Print the events recorded so far (from the polling list); the id of the last one.
async fn backlog(http: &reqwest::Client, base: &str, args: &TailArgs) -> anyhow::Result<Option<String>> {
    let mut cursor: Option<String> = None;
    let mut last = None;
    loop {
        let mut request =
            http.get(format!("{base}/v1/message-events")).bearer_auth(&args.conn.key).query(&[("limit", "1000")]);
        if let Some(c) = &cursor {
            request = request.query(&[("cursor", c)]);
        }
        let response = request.timeout(Duration::from_secs(30)).send().await.context("cannot reach the server")?;
        let page = answer(response).await?;
        let events = page.get("data").and_then(Value::as_array).cloned().unwrap_or_default();
        for e in &events {
            if args.json {
                println!("{e}");
            } else {
                let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
                let error = e.get("error").and_then(|x| x.get("code")).and_then(Value::as_str);
                print_line(
                    field("recorded_at"),
                    field("message_id"),
                    field("channel"),
                    e.get("sequence").and_then(Value::as_i64).unwrap_or(0),
                    field("type"),
                    error,
                );
            }
            last = e.get("id").and_then(Value::as_str).map(str::to_string).or(last);
        }
        cursor = page.get("next_cursor").and_then(Value::as_str).map(str::to_string);
        if events.len() < 1000 {
            return Ok(last);
        }
    }
}

/// One event of the stream: its envelope as a JSON line, or one line of text.
fn print_envelope(envelope: &Value, json: bool) {
    if json {
        println!("{envelope}");
        return;
    }
    let event_type = envelope["type"].as_str().unwrap_or("");
    let Some(kind) = event_type.strip_prefix("message.") else {
        // An event about the workspace (`endpoint.disabled`, `conversation.opened`, …): its
        // resource's id in place of the message's.
        let (resource, _) = event_type.split_once('.').unwrap_or((event_type, ""));
        let id = envelope["data"][resource]["id"].as_str().unwrap_or("");
        print_line(envelope["created_at"].as_str().unwrap_or(""), id, "", 0, event_type, None);
        return;
    };
    let message = &envelope["data"]["message"];
    // The message's error, on the events that concern it (a failure, or a transient error).
    let error = match kind {
        "attempt_failed" | "failed" | "undelivered" | "rejected" | "expired" => {
            message.get("error").and_then(|e| e.get("code")).and_then(Value::as_str)
        }
        _ => None,
    };
    print_line(
        envelope["created_at"].as_str().unwrap_or(""),
        message["id"].as_str().unwrap_or(""),
        message["channel"].as_str().unwrap_or(""),
        envelope["data"]["sequence"].as_i64().unwrap_or(0),
        kind,
        error,
    );
}

fn print_line(at: &str, message_id: &str, channel: &str, sequence: i64, kind: &str, error: Option<&str>) {
    let error = error.map(|c| format!("  {c}")).unwrap_or_default();
    println!("{at}  {message_id}  {channel:<8}  #{sequence:<3} {kind}{error}");
}

/// One Server-Sent Event.
#[derive(Debug, PartialEq)]
struct SseEvent {
    id: String,
    event: String,
    data: Value,
}

/// Splits a Server-Sent Events body, fed in chunks as they arrive, into events. Comments
/// (keep-alives) and events without data are skipped; so is data that is not JSON.
#[derive(Default)]
struct SseParser {
    buffer: Vec<u8>,
}

impl SseParser {
    fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let block = String::from_utf8_lossy(&block);
            let (mut id, mut event, mut data) = (String::new(), String::new(), Vec::new());
            for line in block.lines() {
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => id = value.to_string(),
                    "event" => event = value.to_string(),
                    "data" => data.push(value.to_string()),
                    _ => {}
                }
            }
            if data.is_empty() {
                continue;
            }
            if let Ok(data) = serde_json::from_str(&data.join("\n")) {
                events.push(SseEvent { id, event, data });
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_split_across_chunks_and_keep_alives_skipped() {
        let mut parser = SseParser::default();
        assert!(parser.push(b": keep-alive\n\nid: evt_1\nevent: message.sent\nda").is_empty());
        let events = parser.push(b"ta: {\"type\":\"message.sent\"}\n\nid: evt_2\n");
        assert_eq!(
            events,
            vec![SseEvent { id: "evt_1".into(), event: "message.sent".into(), data: json!({"type": "message.sent"}) }]
        );
        let events = parser.push(b"event: message.delivered\ndata: {\"a\":\ndata: 1}\n\n");
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].id.as_str(), &events[0].data), ("evt_2", &json!({"a": 1})));
    }
}
