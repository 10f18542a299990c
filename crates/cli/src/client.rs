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
    /// Start with the oldest event instead of new ones only.
    #[arg(long)]
    from_start: bool,
    /// Print each event as a JSON line.
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

pub async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let http = client()?;
    let base = format!("{}/v1/message-events", args.conn.url.trim_end_matches('/'));
    let mut cursor: Option<String> = None;
    let mut first = true;
    loop {
        let mut request = http.get(&base).bearer_auth(&args.conn.key).query(&[("limit", "1000")]);
        if let Some(c) = &cursor {
            request = request.query(&[("cursor", c)]);
        } else if first && !args.from_start {
            request = request.query(&[("from", "now")]);
        }
        first = false;
        let page = match http.execute(request.build()?).await {
            Ok(response) => answer(response).await?,
            Err(e) => {
                eprintln!("cannot reach the server ({e}); retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let events = page.get("data").and_then(Value::as_array).cloned().unwrap_or_default();
        for e in &events {
            if args.json {
                println!("{e}");
            } else {
                let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                let error = e
                    .get("error")
                    .and_then(|x| x.get("code"))
                    .and_then(Value::as_str)
                    .map(|c| format!("  {c}"))
                    .unwrap_or_default();
                println!(
                    "{}  {}  {:<8}  #{:<3} {}{}",
                    field("occurred_at"),
                    field("message_id"),
                    field("channel"),
                    e.get("sequence").and_then(Value::as_i64).unwrap_or(0),
                    field("type"),
                    error
                );
            }
        }
        cursor = page.get("next_cursor").and_then(Value::as_str).map(str::to_string).or(cursor);
        if events.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
