//! Per-key API rate limits through the real server, on both backends: the RateLimit-* headers on
//! every authenticated answer, 429 `rate_limited` with Retry-After past the burst, buckets per
//! key, and the slots coming back at the sustained rate.

mod common;

use common::*;
use parley_domain::Scope;
use parley_server::ServerOptions;
use parley_server::ratelimit::RateLimitSettings;
use parley_testkit::{Backend, TestApp, on_both_backends};
use std::time::Duration;

on_both_backends!(a_key_gets_its_burst_then_429_with_retry_after, the_headers_follow_the_configuration);

async fn start(backend: Backend, per_second: u32, burst: u32) -> Option<TestApp> {
    let options = ServerOptions { rate_limit: Some(RateLimitSettings { per_second, burst }), ..Default::default() };
    TestApp::start_with_server(backend, options).await
}

async fn a_key_gets_its_burst_then_429_with_retry_after(backend: Backend) {
    let Some(app) = start(backend, 4, 3).await else { return };
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let a = get(&app, "/v1/messages?limit=1").await;
        assert_eq!(a.status, 200, "{a}");
        assert_eq!(a.header("ratelimit-limit"), Some("3"));
        remaining.push(a.header("ratelimit-remaining").unwrap().parse::<u32>().unwrap());
        assert!(a.header("ratelimit-reset").unwrap().parse::<u64>().unwrap() >= 1);
    }
    assert_eq!(remaining, [2, 1, 0]);
    let refused = get(&app, "/v1/messages?limit=1").await;
    refused.problem(429, "rate_limited");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.header("ratelimit-remaining"), Some("0"));
    // A send is refused the same way, and nothing is stored for it.
    let before = app.engine.store().message_stats(app.workspace_id).await.unwrap().total();
    post(&app, "/v1/messages", &text_to("sms", "+12025550160", "over the limit")).await.problem(429, "rate_limited");
    assert_eq!(app.engine.store().message_stats(app.workspace_id).await.unwrap().total(), before);

    // Another key has a bucket of its own.
    let other = app.engine.create_api_key(app.workspace_id, "other", vec![Scope::MessagesRead]).await.unwrap().secret;
    let a = get_as(&app, &other, "/v1/messages?limit=1").await;
    assert_eq!((a.status, a.header("ratelimit-remaining")), (200, Some("2")));
    // Without a valid key there is no bucket and no header.
    let anonymous = Answer::read(reqwest::get(app.url("/v1/messages")).await.unwrap()).await;
    anonymous.problem(401, "unauthorized");
    assert!(anonymous.header("ratelimit-limit").is_none());
    // At 4 per second a slot is back after a quarter of a second.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&app, "/v1/messages?limit=1").await.status, 200);
    app.finish().await;
}

async fn the_headers_follow_the_configuration(backend: Backend) {
    let Some(app) = start(backend, 1000, 2000).await else { return };
    let a = get(&app, "/v1/messages?limit=1").await;
    assert_eq!(a.header("ratelimit-limit"), Some("2000"));
    assert_eq!(a.header("ratelimit-remaining"), Some("1999"));
    assert_eq!(a.header("ratelimit-reset"), Some("1"));
    // Routes without a key carry none.
    let health = reqwest::get(app.url("/healthz")).await.unwrap();
    assert!(health.headers().get("ratelimit-limit").is_none());
    app.finish().await;
}
