//! The contacts API through the real server, on both backends: identities normalised and owned
//! by one contact, merge patches, upsert by identity, merge with its tombstone, erasure that
//! keeps identities reserved, search with cursors, tenancy, and bulk import (CSV and NDJSON) with
//! per-row errors and idempotent re-runs, consents included; every change announced as a
//! `contact.*` event.

mod common;

use common::*;
use parley_domain::{Channel, ContactId};
use parley_testkit::receiver::{Received, Receiver};
use parley_testkit::{Backend, TestApp, on_both_backends, webhook_test_config};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    contacts_are_created_with_normalised_identities_and_a_guessed_zone,
    bad_input_is_refused_naming_the_field_and_nothing_is_written,
    an_identity_belongs_to_one_contact,
    patches_follow_json_merge_patch,
    upsert_by_identity_creates_then_updates,
    merge_moves_identities_and_leaves_a_tombstone,
    deletion_erases_data_but_keeps_identities_reserved,
    search_filters_combine_and_pages_follow_the_cursor,
    other_workspaces_see_nothing,
    csv_import_reports_bad_rows_and_reruns_change_nothing,
    ndjson_import_and_refused_files,
    csv_import_records_consents_once_and_sends_follow_them,
    ndjson_import_records_consents_given_as_strings_or_objects,
    ensure_contact_is_safe_under_concurrency,
    contact_changes_reach_webhooks_as_contact_events,
);

async fn create(app: &TestApp, body: Value) -> Value {
    let a = post(app, "/v1/contacts", &body).await;
    assert_eq!(a.status, 201, "create contact: {a}");
    a.json
}

async fn patch(app: &TestApp, path: &str, body: &Value) -> Answer {
    call(app, Method::PATCH, path, Some(body)).await
}

async fn put(app: &TestApp, path: &str, body: Option<&Value>) -> Answer {
    call(app, Method::PUT, path, body).await
}

async fn import(app: &TestApp, content_type: &str, body: impl Into<reqwest::Body>) -> Answer {
    let response = app
        .request(Method::POST, "/v1/contacts/import")
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST import");
    Answer::read(response).await
}

fn identities(c: &Value) -> Vec<String> {
    c["identities"].as_array().unwrap().iter().map(|i| i["identity"].as_str().unwrap().to_string()).collect()
}

fn ids(page: &Value) -> Vec<String> {
    page["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect()
}

async fn contacts_are_created_with_normalised_identities_and_a_guessed_zone(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let a = post(
        &app,
        "/v1/contacts",
        &json!({"name": " Ada Lovelace ", "locale": "pt_br", "attributes": {"plan": "gold", "seats": 3},
                "tags": ["vip", "beta", "vip"], "preferred_channels": ["whatsapp", "sms"],
                "identities": ["sms:+49 151 1234 5678", {"channel": "whatsapp", "address": "4915112345678"},
                               "webchat:vis_42"]}),
    )
    .await;
    assert_eq!(a.status, 201, "{a}");
    let c = &a.json;
    let id = c["id"].as_str().unwrap();
    assert!(id.starts_with("ctc_"), "{c}");
    assert_eq!(a.header("location"), Some(format!("/v1/contacts/{id}").as_str()));
    assert_eq!(c["name"], "Ada Lovelace");
    assert_eq!(c["locale"], "pt-BR");
    assert_eq!(c["time_zone"], "Europe/Berlin");
    assert_eq!(c["time_zone_source"], "guessed");
    assert_eq!(c["attributes"], json!({"plan": "gold", "seats": 3}));
    assert_eq!(c["tags"], json!(["vip", "beta"]));
    assert_eq!(c["preferred_channels"], json!(["whatsapp", "sms"]));
    assert_eq!(c["merged_into"], Value::Null);
    let mut got = identities(c);
    got.sort();
    assert_eq!(got, ["sms:+4915112345678", "webchat:vis_42", "whatsapp:+4915112345678"]);
    let sms = c["identities"].as_array().unwrap().iter().find(|i| i["channel"] == "sms").unwrap();
    assert_eq!(sms["address"], "+4915112345678");
    assert_eq!(sms["created_at"], c["created_at"]);

    let fetched = get(&app, &format!("/v1/contacts/{id}")).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(&fetched.json, c);

    // A US number's country has several zones: no guess; a given zone is kept as given.
    let us = create(&app, json!({"identities": ["sms:+1 202-555-0143"]})).await;
    assert_eq!(us["time_zone"], Value::Null);
    assert_eq!(us["time_zone_source"], Value::Null);
    let given = create(&app, json!({"identities": ["sms:+4915112345679"], "time_zone": "america/new_york"})).await;
    assert_eq!(given["time_zone"], "America/New_York");
    assert_eq!(given["time_zone_source"], "given");
    // No identity at all is a contact too.
    let bare = create(&app, json!({})).await;
    assert_eq!(bare["identities"], json!([]));
}

async fn bad_input_is_refused_naming_the_field_and_nothing_is_written(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    for (body, code, field) in [
        (json!({"identities": ["sms:12345"]}), "invalid_identity", "identities"),
        (json!({"identities": ["fax:+4915112345678"]}), "invalid_identity", "identities"),
        (json!({"identities": ["webchat:has space"]}), "invalid_identity", "identities"),
        (json!({"time_zone": "Mars/Olympus"}), "unknown_time_zone", "time_zone"),
        (json!({"locale": "english"}), "invalid_locale", "locale"),
        (json!({"tags": ["has space"]}), "invalid_tag", "tags"),
        (json!({"attributes": [1, 2]}), "invalid_attributes", "attributes"),
        (json!({"attributes": {"blob": "x".repeat(17 * 1024)}}), "invalid_attributes", "attributes"),
        (json!({"email": "a@b.c"}), "invalid_contact", "email"),
        (json!({"preferred_channels": ["fax"]}), "invalid_contact", "preferred_channels"),
        (json!({"name": 7}), "invalid_contact", "name"),
    ] {
        let a = post(&app, "/v1/contacts", &body).await;
        a.problem(422, code).names(field);
    }
    let malformed = app
        .request(Method::POST, "/v1/contacts")
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    Answer::read(malformed).await.problem(400, "malformed_json");
    assert_eq!(get(&app, "/v1/contacts").await["data"], json!([]));
}

async fn an_identity_belongs_to_one_contact(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let owner = create(&app, json!({"identities": ["whatsapp:+4915112345678"]})).await;
    let owner_id = owner["id"].as_str().unwrap();
    // The same identity in another spelling, beside a new one: refused whole.
    let a = post(
        &app,
        "/v1/contacts",
        &json!({"name": "Dup", "identities": ["sms:+4915100000001", "whatsapp:4915112345678"]}),
    )
    .await;
    a.problem(409, "identity_conflict");
    assert!(a["detail"].as_str().unwrap().contains(owner_id), "{a}");
    let other = create(&app, json!({"identities": ["sms:+4915100000001"]})).await;
    let p = patch(
        &app,
        &format!("/v1/contacts/{}", other["id"].as_str().unwrap()),
        &json!({"identities": ["whatsapp:4915112345678"]}),
    )
    .await;
    p.problem(409, "identity_conflict");
    // Nothing half-written: the refused patch left the identities as they were.
    let after = get(&app, &format!("/v1/contacts/{}", other["id"].as_str().unwrap())).await;
    assert_eq!(identities(&after.json), ["sms:+4915100000001"]);
    assert_eq!(get(&app, "/v1/contacts").await["data"].as_array().unwrap().len(), 2);
}

async fn patches_follow_json_merge_patch(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let c = create(
        &app,
        json!({"name": "Ada", "attributes": {"plan": "gold", "address": {"city": "Berlin", "zip": "10115"}},
               "tags": ["vip"], "identities": ["sms:+4915112345678", "webchat:v1"]}),
    )
    .await;
    let path = format!("/v1/contacts/{}", c["id"].as_str().unwrap());
    let a = patch(
        &app,
        &path,
        &json!({"name": null, "attributes": {"plan": null, "address": {"zip": null, "street": "Unter den Linden"}},
                "tags": ["beta", "b2b"], "time_zone": "Asia/Tokyo"}),
    )
    .await;
    assert_eq!(a.status, 200, "{a}");
    assert_eq!(a["name"], Value::Null);
    assert_eq!(a["attributes"], json!({"address": {"city": "Berlin", "street": "Unter den Linden"}}));
    assert_eq!(a["tags"], json!(["beta", "b2b"]));
    assert_eq!(a["time_zone"], "Asia/Tokyo");
    assert_eq!(a["time_zone_source"], "given");
    assert_eq!(identities(&a.json).len(), 2, "identities untouched when absent");
    assert!(millis(&a["updated_at"]) >= millis(&c["updated_at"]));
    // Clearing the zone guesses it again; identities are replaced whole.
    let b = patch(&app, &path, &json!({"time_zone": null, "identities": ["webchat:v1"], "attributes": null})).await;
    assert_eq!(b.status, 200, "{b}");
    assert_eq!(b["time_zone"], Value::Null, "no phone identity left to guess from");
    assert_eq!(identities(&b.json), ["webchat:v1"]);
    assert_eq!(b["attributes"], json!({}));
    // The removed identity is free again.
    create(&app, json!({"identities": ["sms:+4915112345678"]})).await;
    // A patch that grows attributes past the cap is refused and writes nothing.
    let big = patch(&app, &path, &json!({"attributes": {"a": "x".repeat(9000), "b": "y".repeat(9000)}})).await;
    big.problem(422, "invalid_attributes");
    patch(&app, "/v1/contacts/ctc_0193a1b2c3d47e8f9a0b1c2d3e4f5a6b", &json!({"name": "x"}))
        .await
        .problem(404, "not_found");
}

async fn upsert_by_identity_creates_then_updates(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let first =
        put(&app, "/v1/contacts/by-identity/sms/%2B4915112345678", Some(&json!({"name": "Ada", "tags": ["vip"]})))
            .await;
    assert_eq!(first.status, 201, "{first}");
    assert_eq!(identities(&first.json), ["sms:+4915112345678"]);
    assert_eq!(first["time_zone"], "Europe/Berlin");
    let id = first["id"].as_str().unwrap().to_string();
    let second =
        put(&app, "/v1/contacts/by-identity/sms/+49%20151%2012345678", Some(&json!({"attributes": {"plan": "gold"}})))
            .await;
    assert_eq!(second.status, 200, "{second}");
    assert_eq!(second["id"], id.as_str());
    assert_eq!(second["name"], "Ada");
    assert_eq!(second["attributes"], json!({"plan": "gold"}));
    // Without a body, it only ensures the contact.
    let third = put(&app, "/v1/contacts/by-identity/sms/%2B4915112345678", None).await;
    assert_eq!((third.status, third["id"].as_str()), (200, Some(id.as_str())));
    // A body without a content type is refused rather than ignored.
    let untyped = app
        .request(Method::PUT, "/v1/contacts/by-identity/sms/%2B4915112345678")
        .body("{\"name\": \"x\"}")
        .send()
        .await
        .unwrap();
    Answer::read(untyped).await.problem(415, "unsupported_media_type");
    let wa = put(&app, "/v1/contacts/by-identity/whatsapp/4915112345679", None).await;
    assert_eq!(wa.status, 201, "{wa}");
    assert_eq!(identities(&wa.json), ["whatsapp:+4915112345679"]);
    put(&app, "/v1/contacts/by-identity/fax/123", None).await.problem(422, "invalid_identity");
    put(&app, "/v1/contacts/by-identity/sms/12", None).await.problem(422, "invalid_identity");
    put(&app, "/v1/contacts/by-identity/sms/%2B4915112345678", Some(&json!({"identities": []})))
        .await
        .problem(422, "invalid_contact");
}

async fn merge_moves_identities_and_leaves_a_tombstone(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let a = create(
        &app,
        json!({"name": "Ada", "attributes": {"plan": "gold"}, "tags": ["vip"], "preferred_channels": ["sms"],
               "identities": ["sms:+4915112345678"]}),
    )
    .await;
    let b = create(
        &app,
        json!({"name": "A. Lovelace", "locale": "en", "attributes": {"plan": "free", "seats": 2}, "tags": ["beta", "vip"],
               "preferred_channels": ["whatsapp", "sms"], "identities": ["whatsapp:+4915112345678", "webchat:v1"]}),
    )
    .await;
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let merged = post(&app, &format!("/v1/contacts/{a_id}/merge"), &json!({"contact_id": b_id})).await;
    assert_eq!(merged.status, 200, "{merged}");
    assert_eq!(merged["id"], a_id);
    assert_eq!(merged["name"], "Ada");
    assert_eq!(merged["locale"], "en");
    assert_eq!(merged["attributes"], json!({"plan": "gold", "seats": 2}));
    assert_eq!(merged["tags"], json!(["vip", "beta"]));
    assert_eq!(merged["preferred_channels"], json!(["sms", "whatsapp"]));
    let mut got = identities(&merged.json);
    got.sort();
    assert_eq!(got, ["sms:+4915112345678", "webchat:v1", "whatsapp:+4915112345678"]);

    let tomb = get(&app, &format!("/v1/contacts/{b_id}")).await;
    assert_eq!(tomb.status, 200, "{tomb}");
    assert_eq!(tomb["merged_into"], a_id);
    assert_eq!(tomb["identities"], json!([]));
    // The engine follows the tombstone; search finds the survivor only.
    let workspace = app.workspace_id;
    let resolved = app.engine.contact(workspace, ContactId::parse(b_id).unwrap()).await.unwrap().unwrap();
    assert_eq!(resolved.id.to_string(), a_id);
    let found = get(&app, "/v1/contacts?identity=webchat:v1").await;
    assert_eq!(ids(&found.json), [a_id]);
    assert_eq!(ids(&get(&app, "/v1/contacts").await.json), [a_id]);

    post(&app, &format!("/v1/contacts/{a_id}/merge"), &json!({"contact_id": a_id})).await.problem(422, "invalid_merge");
    post(&app, &format!("/v1/contacts/{a_id}/merge"), &json!({"contact_id": b_id})).await.problem(404, "not_found");
    post(&app, "/v1/contacts/ctc_0193a1b2c3d47e8f9a0b1c2d3e4f5a6b/merge", &json!({"contact_id": a_id}))
        .await
        .problem(404, "not_found");
    // A merge of a third contact into the survivor re-points older tombstones too.
    let c = create(&app, json!({"identities": ["rcs:+4915112345670"]})).await;
    let c_id = c["id"].as_str().unwrap();
    let again = post(&app, &format!("/v1/contacts/{c_id}/merge"), &json!({"contact_id": a_id})).await;
    assert_eq!(again.status, 200, "{again}");
    assert_eq!(get(&app, &format!("/v1/contacts/{b_id}")).await["merged_into"], c_id);
    assert_eq!(get(&app, &format!("/v1/contacts/{a_id}")).await["merged_into"], c_id);
}

async fn deletion_erases_data_but_keeps_identities_reserved(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let c = create(
        &app,
        json!({"name": "Ada", "attributes": {"plan": "gold"}, "tags": ["vip"], "locale": "de",
               "identities": ["sms:+4915112345678"]}),
    )
    .await;
    let id = c["id"].as_str().unwrap();
    let d = call(&app, Method::DELETE, &format!("/v1/contacts/{id}"), None).await;
    assert_eq!(d.status, 204, "{d}");
    get(&app, &format!("/v1/contacts/{id}")).await.problem(404, "not_found");
    call(&app, Method::DELETE, &format!("/v1/contacts/{id}"), None).await.problem(404, "not_found");
    assert_eq!(get(&app, "/v1/contacts?tag=vip").await["data"], json!([]));
    // The identity stays with the erased contact, whose personal data is gone.
    let held = app.engine.contact_by_identity(app.workspace_id, Channel::Sms, "+4915112345678").await.unwrap().unwrap();
    assert_eq!(held.id.to_string(), id);
    assert!(held.deleted_at.is_some());
    assert_eq!((held.name, held.locale, held.tags.len(), held.attributes.len()), (None, None, 0, 0));
    assert!(app.engine.contact(app.workspace_id, held.id).await.unwrap().is_none());
    // An upsert by that identity revives the same id with the new data only.
    let revived = put(&app, "/v1/contacts/by-identity/sms/%2B4915112345678", Some(&json!({"name": "Ada again"}))).await;
    assert_eq!(revived.status, 201, "{revived}");
    assert_eq!(revived["id"], id);
    assert_eq!(revived["name"], "Ada again");
    assert_eq!(revived["attributes"], json!({}));
    assert_eq!(revived["tags"], json!([]));
    assert_eq!(revived["locale"], Value::Null);
    assert_eq!(get(&app, &format!("/v1/contacts/{id}")).await.status, 200);
}

async fn search_filters_combine_and_pages_follow_the_cursor(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let mut made = Vec::new();
    for i in 0..5 {
        let c = create(
            &app,
            json!({"identities": [format!("webchat:v{i}")], "tags": if i % 2 == 0 { json!(["vip"]) } else { json!(["free"]) },
                   "attributes": {"plan": if i < 3 { "gold" } else { "free" }, "seats": i, "active": i != 1}}),
        )
        .await;
        made.push(c["id"].as_str().unwrap().to_string());
    }
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();
    let p1 = get(&app, "/v1/contacts?limit=2").await;
    assert_eq!(ids(&p1.json), newest_first[..2]);
    let cursor = p1["next_cursor"].as_str().unwrap().to_string();
    let p2 = get(&app, &format!("/v1/contacts?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&p2.json), newest_first[2..4]);
    let p3 = get(&app, &format!("/v1/contacts?limit=2&cursor={}", p2["next_cursor"].as_str().unwrap())).await;
    assert_eq!(ids(&p3.json), newest_first[4..]);
    assert_eq!(p3["next_cursor"], Value::Null);

    assert_eq!(ids(&get(&app, "/v1/contacts?tag=vip").await.json), [made[4].clone(), made[2].clone(), made[0].clone()]);
    assert_eq!(
        ids(&get(&app, "/v1/contacts?tag=vip&attribute.plan=gold").await.json),
        [made[2].clone(), made[0].clone()]
    );
    assert_eq!(ids(&get(&app, "/v1/contacts?attribute.seats=3").await.json), [made[3].clone()]);
    assert_eq!(ids(&get(&app, "/v1/contacts?attribute.active=false").await.json), [made[1].clone()]);
    assert_eq!(ids(&get(&app, "/v1/contacts?attribute.missing=x").await.json), Vec::<String>::new());
    assert_eq!(ids(&get(&app, "/v1/contacts?identity=webchat:v3").await.json), [made[3].clone()]);
    assert_eq!(ids(&get(&app, "/v1/contacts?identity=webchat:v3&tag=vip").await.json), Vec::<String>::new());
    assert_eq!(ids(&get(&app, "/v1/contacts?tag=vip&tag=free").await.json), Vec::<String>::new());
    assert_eq!(ids(&get(&app, "/v1/contacts?tag=vip&tag=vip&attribute.seats=2").await.json), [made[2].clone()]);

    get(&app, "/v1/contacts?identity=sms:123").await.problem(422, "invalid_identity");
    get(&app, "/v1/contacts?cursor=nope").await.problem(400, "invalid_cursor");
    get(&app, "/v1/contacts?limit=0").await.problem(400, "invalid_query");
    get(&app, "/v1/contacts?colour=red").await.problem(400, "invalid_query");
}

async fn other_workspaces_see_nothing(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let c = create(&app, json!({"identities": ["sms:+4915112345678"]})).await;
    let id = c["id"].as_str().unwrap();
    let (other, _) = app.engine.create_workspace("other").await.unwrap();
    let key = app.engine.create_api_key(other.id, "k", vec![parley_domain::Scope::Admin]).await.unwrap().secret;
    get_as(&app, &key, &format!("/v1/contacts/{id}")).await.problem(404, "not_found");
    assert_eq!(get_as(&app, &key, "/v1/contacts?identity=sms:%2B4915112345678").await["data"], json!([]));
    // The same identity is free in another workspace.
    let theirs = post_as(&app, &key, "/v1/contacts", &json!({"identities": ["sms:+4915112345678"]})).await;
    assert_eq!(theirs.status, 201, "{theirs}");
    assert_ne!(theirs["id"], id);
    post_as(&app, &key, &format!("/v1/contacts/{}/merge", theirs["id"].as_str().unwrap()), &json!({"contact_id": id}))
        .await
        .problem(404, "not_found");
    // Reading needs messages:read, writing messages:write.
    let reader =
        app.engine.create_api_key(app.workspace_id, "r", vec![parley_domain::Scope::MessagesRead]).await.unwrap();
    assert_eq!(get_as(&app, &reader.secret, &format!("/v1/contacts/{id}")).await.status, 200);
    post_as(&app, &reader.secret, "/v1/contacts", &json!({})).await.problem(403, "forbidden");
}

async fn csv_import_reports_bad_rows_and_reruns_change_nothing(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let owner = create(&app, json!({"identities": ["whatsapp:+4915100000009"]})).await;
    let mut file: Vec<u8> = b"phone,whatsapp,name,tags,time_zone,attributes.plan\n".to_vec();
    file.extend_from_slice(b"+4915100000001,,Ada,vip;beta,,gold\n"); // 1 ok
    file.extend_from_slice(b"+4915100000002,4915100000002,\"Lovelace, Ada\",,Asia/Tokyo,\n"); // 2 ok, quoted comma
    file.extend_from_slice(b"12345,,Bad number,,,\n"); // 3 invalid_identity
    file.extend_from_slice(b"+4915100000003,,Zone,,Mars/Base,\n"); // 4 unknown_time_zone
    file.extend_from_slice(b"+4915100000004,,Jos\xe9,,,\n"); // 5 invalid_encoding (Latin-1)
    file.extend_from_slice(b"+4915100000005,4915100000009,Taken,,,\n"); // 6 identity_conflict
    file.extend_from_slice(b"+4915100000006,,\"Broken \"quote\", x,,,\n"); // 7 malformed_row (7 fields)
    file.extend_from_slice(b",,No identity,,,\n"); // 8 missing_identity
    file.extend_from_slice(b"+4915100000007,,Last,,,\n"); // 9 ok
    let a = import(&app, "text/csv", file.clone()).await;
    assert_eq!(a.status, 200, "{a}");
    assert_eq!(
        (
            a["rows"].as_u64(),
            a["created"].as_u64(),
            a["updated"].as_u64(),
            a["unchanged"].as_u64(),
            a["failed"].as_u64()
        ),
        (Some(9), Some(3), Some(0), Some(0), Some(6)),
        "{a}"
    );
    let errors: Vec<(u64, String)> = a["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["row"].as_u64().unwrap(), e["code"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        errors,
        [
            (3, "invalid_identity".to_string()),
            (4, "unknown_time_zone".to_string()),
            (5, "invalid_encoding".to_string()),
            (6, "identity_conflict".to_string()),
            (7, "malformed_row".to_string()),
            (8, "missing_identity".to_string()),
        ]
    );
    let conflict = &a["errors"][3]["detail"];
    assert!(conflict.as_str().unwrap().contains(owner["id"].as_str().unwrap()), "{conflict}");
    let ada = get(&app, "/v1/contacts?identity=sms:%2B4915100000001").await;
    assert_eq!(ada["data"][0]["name"], "Ada");
    assert_eq!(ada["data"][0]["tags"], json!(["vip", "beta"]));
    assert_eq!(ada["data"][0]["attributes"], json!({"plan": "gold"}));
    assert_eq!(ids(&get(&app, "/v1/contacts?tag=beta&tag=vip").await.json), ids(&ada.json));
    let two = get(&app, "/v1/contacts?identity=whatsapp:%2B4915100000002").await;
    assert_eq!(two["data"][0]["name"], "Lovelace, Ada");
    assert_eq!(two["data"][0]["time_zone"], "Asia/Tokyo");
    assert_eq!(identities(&two["data"][0]).len(), 2);
    // Nothing of a refused row was written.
    assert_eq!(get(&app, "/v1/contacts?identity=sms:%2B4915100000005").await["data"], json!([]));

    let again = import(&app, "text/csv", file).await;
    assert_eq!(
        (again["created"].as_u64(), again["updated"].as_u64(), again["unchanged"].as_u64(), again["failed"].as_u64()),
        (Some(0), Some(0), Some(3), Some(6)),
        "{again}"
    );
    assert_eq!(get(&app, "/v1/contacts").await["data"].as_array().unwrap().len(), 4);

    // Row numbers may be offset for a file sent in parts; a changed row is an update.
    let part = import_at(&app, 5000, "phone,name\n+4915100000001,Ada L.\n").await;
    assert_eq!((part["updated"].as_u64(), part["rows"].as_u64()), (Some(1), Some(1)), "{part}");
    let bad = import_at(&app, 5000, "phone\n1\n").await;
    assert_eq!(bad["errors"][0]["row"], 5001);
}

async fn import_at(app: &TestApp, first_row: u64, body: &'static str) -> Answer {
    let response = app
        .request(Method::POST, &format!("/v1/contacts/import?first_row={first_row}"))
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await
        .expect("POST import");
    Answer::read(response).await
}

async fn ndjson_import_and_refused_files(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let lines = "{\"identities\": [\"sms:+4915100000001\"], \"name\": \"Ada\", \"attributes\": {\"n\": 1}}\n\
                 {\"identities\": [\"sms:+4915100000001\"], \"tags\": [\"vip\"], \"attributes\": {\"m\": 2}}\n\
                 {not json}\n\
                 \n\
                 {\"name\": \"No identity\"}\n\
                 {\"identities\": [\"webchat:v1\"], \"locale\": \"xx-YYY\"}\n";
    let a = import(&app, "application/x-ndjson", lines).await;
    assert_eq!(a.status, 200, "{a}");
    assert_eq!(
        (a["rows"].as_u64(), a["created"].as_u64(), a["updated"].as_u64(), a["failed"].as_u64()),
        (Some(5), Some(1), Some(1), Some(3))
    );
    let rows: Vec<(u64, &str)> = a["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["row"].as_u64().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(rows, [(3, "malformed_json"), (5, "missing_identity"), (6, "invalid_locale")]);
    let ada = get(&app, "/v1/contacts?identity=sms:%2B4915100000001").await;
    assert_eq!(ada["data"][0]["tags"], json!(["vip"]));
    assert_eq!(ada["data"][0]["attributes"], json!({"n": 1, "m": 2}));

    import(&app, "text/csv", "phone,email\n+4915100000002,a@b.c\n").await.problem(422, "invalid_import");
    import(&app, "text/csv", "name\nAda\n").await.problem(422, "invalid_import");
    import(&app, "text/csv", "").await.problem(422, "invalid_import");
    import(&app, "text/csv", b"\xff\xfep\x00h\x00".to_vec()).await.problem(422, "invalid_import");
    import(&app, "application/json", "[]").await.problem(415, "unsupported_media_type");
    assert_eq!(get(&app, "/v1/contacts").await["data"].as_array().unwrap().len(), 1);
    // Larger than 1 MiB is fine for this route.
    let mut big = String::from("phone,attributes.note\n");
    for i in 0..12_000 {
        big.push_str(&format!("+491521{i:07},{}\n", "n".repeat(80)));
    }
    assert!(big.len() > 1024 * 1024);
    let b = import(&app, "text/csv", big).await;
    assert_eq!(
        (b.status, b["created"].as_u64()),
        (200, Some(12_000)),
        "{}",
        b.text.chars().take(300).collect::<String>()
    );
}

async fn import_named(app: &TestApp, content_type: &str, query: &str, body: &'static str) -> Answer {
    let response = app
        .request(Method::POST, &format!("/v1/contacts/import{query}"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST import");
    Answer::read(response).await
}

/// The contact with this identity (`sms:%2B1…`), and its consent ledger (newest first).
async fn ledger_of(app: &TestApp, identity: &str) -> (String, Vec<Value>) {
    let found = get(app, &format!("/v1/contacts?identity={identity}")).await;
    let id = found["data"][0]["id"].as_str().unwrap_or_else(|| panic!("no contact {identity}: {found}")).to_string();
    let ledger = get(app, &format!("/v1/contacts/{id}/consents")).await;
    assert_eq!(ledger.status, 200, "{ledger}");
    (id, ledger["data"].as_array().unwrap().clone())
}

fn counts(a: &Answer) -> [Option<u64>; 6] {
    ["rows", "created", "updated", "unchanged", "failed", "consents"].map(|k| a[k].as_u64())
}

fn marketing_sms(to: &str) -> Value {
    json!({"to": to, "channel": "sms", "purpose": "marketing", "respect_quiet_hours": false,
           "content": {"type": "text", "text": "Winter sale!"}})
}

async fn csv_import_records_consents_once_and_sends_follow_them(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let taken = create(&app, json!({"identities": ["whatsapp:+12025550109"]})).await;
    let file = "phone,whatsapp,name,consent\n\
                +12025550101,,Ada,sms:marketing:opted_in\n\
                +12025550102,,Bob,sms:marketing:opted_out; whatsapp:*:opted_out\n\
                +12025550103,,Bad,sms:marketing:maybe\n\
                +12025550104,,Carol,\n\
                +12025550105,+12025550109,Taken,*:*:opted_out\n";
    let a = import_named(&app, "text/csv", "?file=customers.csv", file).await;
    assert_eq!(a.status, 200, "{a}");
    assert_eq!(counts(&a), [Some(5), Some(3), Some(0), Some(0), Some(2), Some(3)], "{a}");
    let errors: Vec<(u64, &str)> = a["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["row"].as_u64().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(errors, [(3, "invalid_consent"), (5, "identity_conflict")], "{a}");
    assert!(a["errors"][0]["detail"].as_str().unwrap().contains("maybe"), "{a}");
    // Nothing of a refused row: no contact, no consent (the conflict's owner has an empty ledger).
    assert_eq!(get(&app, "/v1/contacts?identity=sms:%2B12025550103").await["data"], json!([]));
    let owner_ledger = get(&app, &format!("/v1/contacts/{}/consents", taken["id"].as_str().unwrap())).await;
    assert_eq!(owner_ledger["data"], json!([]));

    let (ada, ada_ledger) = ledger_of(&app, "sms:%2B12025550101").await;
    assert_eq!(ada_ledger.len(), 1, "{ada_ledger:?}");
    let r = &ada_ledger[0];
    assert_eq!(
        (&r["channel"], &r["purpose"], &r["status"], &r["source"], &r["contact_id"]),
        (&json!("sms"), &json!("marketing"), &json!("opted_in"), &json!("import"), &json!(ada))
    );
    assert_eq!(r["evidence"]["import"], json!({"row": 1, "file": "customers.csv"}));
    assert!(r["evidence"]["api_key_id"].as_str().is_some_and(|k| k.starts_with("key_")), "{r}");
    let (_, bob_ledger) = ledger_of(&app, "sms:%2B12025550102").await;
    let bob_records: Vec<(&str, &str, &str)> = bob_ledger
        .iter()
        .map(|r| (r["channel"].as_str().unwrap(), r["purpose"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(bob_records, [("whatsapp", "*", "opted_out"), ("sms", "marketing", "opted_out")]);
    assert!(bob_ledger.iter().all(|r| r["source"] == "import" && r["evidence"]["import"]["row"] == 2));
    assert_eq!(ledger_of(&app, "sms:%2B12025550104").await.1, Vec::<Value>::new());

    // The same file again: every row unchanged, no new record.
    let again = import_named(&app, "text/csv", "?file=customers.csv", file).await;
    assert_eq!(counts(&again), [Some(5), Some(0), Some(0), Some(3), Some(2), Some(0)], "{again}");
    assert_eq!(ledger_of(&app, "sms:%2B12025550101").await.1, ada_ledger);
    assert_eq!(ledger_of(&app, "sms:%2B12025550102").await.1, bob_ledger);

    // The sends follow the ledger: Ada opted in, Bob opted out.
    let m = send(&app, &marketing_sms("+12025550101")).await;
    assert_eq!((&m["status"], &m["contact_id"]), (&json!("queued"), &json!(ada)));
    let refused = post(&app, "/v1/messages", &marketing_sms("+12025550102")).await;
    refused.problem(422, "recipient_opted_out");
    assert_eq!(message(&app, refused["message_id"].as_str().expect("message_id")).await["status"], "rejected");

    // A row that changes the consent in force appends (its contact unchanged); the send goes.
    let back = import_named(&app, "text/csv", "", "phone,consent\n+12025550102,sms:marketing:opted_in\n").await;
    assert_eq!(counts(&back), [Some(1), Some(0), Some(0), Some(1), Some(0), Some(1)], "{back}");
    let (_, bob_ledger) = ledger_of(&app, "sms:%2B12025550102").await;
    assert_eq!((bob_ledger.len(), &bob_ledger[0]["status"]), (3, &json!("opted_in")));
    assert_eq!(bob_ledger[0]["evidence"]["import"], json!({"row": 1}));
    assert_eq!(send(&app, &marketing_sms("+12025550102")).await["status"], "queued");
    // A file name the evidence cannot keep is refused.
    let long = format!("?file={}", "n".repeat(256));
    let response = app
        .request(Method::POST, &format!("/v1/contacts/import{long}"))
        .header("content-type", "text/csv")
        .body("phone\n+12025550108\n")
        .send()
        .await
        .expect("POST import");
    Answer::read(response).await.problem(422, "validation_failed").names("file");
    app.finish().await;
}

async fn ndjson_import_records_consents_given_as_strings_or_objects(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let lines = "{\"identities\": [\"sms:+12025550111\"], \"name\": \"Dan\", \"consent\": [\"sms:marketing:opted_in\", \
                 {\"channel\": \"*\", \"purpose\": \"*\", \"status\": \"opted_out\"}]}\n\
                 {\"identities\": [\"sms:+12025550112\"], \"consent\": [{\"channel\": \"sms\", \"purpose\": \"marketing\"}]}\n\
                 {\"identities\": [\"sms:+12025550113\"], \"consent\": [\"whatsapp:marketing:opted_in\", {\"channel\": \"sms\", \"purpose\": \"marketing\", \
                 \"status\": \"opted_in\"}]}\n";
    let a = import_named(&app, "application/x-ndjson", "?file=crm.ndjson", lines).await;
    assert_eq!(a.status, 200, "{a}");
    assert_eq!(counts(&a), [Some(3), Some(2), Some(0), Some(0), Some(1), Some(3)], "{a}");
    assert_eq!((&a["errors"][0]["row"], &a["errors"][0]["code"]), (&json!(2), &json!("invalid_consent")), "{a}");
    assert_eq!(get(&app, "/v1/contacts?identity=sms:%2B12025550112").await["data"], json!([]));
    let (dan, ledger) = ledger_of(&app, "sms:%2B12025550111").await;
    assert_eq!(
        ledger.iter().map(|r| (r["channel"].as_str().unwrap(), r["status"].as_str().unwrap())).collect::<Vec<_>>(),
        // The opt-in the next entry overrides at once is left out (else every re-run would append
        // both again).
        [("*", "opted_out")]
    );
    assert_eq!(ledger[0]["evidence"]["import"], json!({"row": 1, "file": "crm.ndjson"}));
    // The consent in force, as the ledger shows it, is the opt-out of everything.
    let current = get(&app, &format!("/v1/contacts/{dan}/consents")).await;
    assert!(current["current"].as_array().unwrap().iter().all(|c| c["status"] == "opted_out"), "{current}");
    post(&app, "/v1/messages", &marketing_sms("+12025550111")).await.problem(422, "recipient_opted_out");
    assert_eq!(send(&app, &marketing_sms("+12025550113")).await["status"], "queued");

    let again = import_named(&app, "application/x-ndjson", "?file=crm.ndjson", lines).await;
    assert_eq!(counts(&again), [Some(3), Some(0), Some(0), Some(2), Some(1), Some(0)], "{again}");
    assert_eq!(ledger_of(&app, "sms:%2B12025550111").await.1, ledger);
    assert_eq!(ledger_of(&app, "sms:%2B12025550113").await.1.len(), 2);
    app.finish().await;
}

async fn ensure_contact_is_safe_under_concurrency(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let engine = app.engine.clone();
        let workspace = app.workspace_id;
        tasks.push(tokio::spawn(
            async move { engine.ensure_contact(workspace, Channel::Whatsapp, "4915112345678").await },
        ));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap().id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let c = app.engine.contact(app.workspace_id, ids[0]).await.unwrap().unwrap();
    assert_eq!(c.time_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(c.identities.iter().map(|i| i.to_string()).collect::<Vec<_>>(), ["whatsapp:+4915112345678"]);
    // An existing owner is returned as it is.
    let again = app.engine.ensure_contact(app.workspace_id, Channel::Whatsapp, "+4915112345678").await.unwrap();
    assert_eq!(again, c);
    assert!(app.engine.ensure_contact(app.workspace_id, Channel::Sms, "12").await.is_err());
}

async fn contact_changes_reach_webhooks_as_contact_events(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, webhook_test_config).await else { return };
    let receiver = Receiver::start().await;
    let endpoint =
        post(&app, "/v1/webhook-endpoints", &json!({"url": receiver.url("/c"), "event_types": ["contact.*"]})).await;
    assert_eq!(endpoint.status, 201, "{endpoint}");
    let secret = endpoint["secret"].as_str().unwrap().to_string();

    // Create and patch; a patch that changes nothing says nothing.
    let ada = create(
        &app,
        json!({"name": "Ada", "identities": ["sms:+4915112345678"], "tags": ["vip"], "attributes": {"plan": "gold"}}),
    )
    .await;
    let ada_id = ada["id"].as_str().unwrap().to_string();
    let ada_path = format!("/v1/contacts/{ada_id}");
    let patched = patch(&app, &ada_path, &json!({"name": "Ada L.", "locale": "en"})).await;
    assert_eq!(patched.status, 200, "{patched}");
    assert_eq!(patch(&app, &ada_path, &json!({"name": "Ada L."})).await.status, 200);
    // Upsert by identity: created, then updated, then unchanged.
    let bob_path = "/v1/contacts/by-identity/whatsapp/%2B4915100000001";
    let bob = put(&app, bob_path, Some(&json!({"name": "Bob"}))).await;
    assert_eq!(bob.status, 201, "{bob}");
    let bob_id = bob["id"].as_str().unwrap().to_string();
    let bob_tagged = put(&app, bob_path, Some(&json!({"tags": ["lead"]}))).await;
    assert_eq!(bob_tagged.status, 200, "{bob_tagged}");
    assert_eq!(put(&app, bob_path, Some(&json!({"tags": ["lead"]}))).await.status, 200);
    // An import: one row creates (and records a consent), one changes, one changes nothing.
    let file = "sms,whatsapp,webchat,name,consent\n,,visitor_9,Carol,webchat:*:opted_in\n,+4915100000001,,Bobby,\n\
                +4915112345678,,,Ada L.,\n";
    let imported = import(&app, "text/csv", file).await;
    assert_eq!(
        (
            imported["created"].as_u64(),
            imported["updated"].as_u64(),
            imported["unchanged"].as_u64(),
            imported["consents"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(1)),
        "{imported}"
    );
    // The sender of an inbound message becomes a contact.
    let accounts = get(&app, "/v1/channel-accounts").await;
    let sms = accounts["data"]
        .as_array()
        .and_then(|all| all.iter().find(|a| a["channel"] == "sms" && a["is_default"] == true))
        .and_then(|a| a["id"].as_str())
        .expect("the default sms account")
        .to_string();
    let inbound = post(
        &app,
        &format!("/v1/channel-accounts/{sms}/simulate-inbound"),
        &json!({"from": "+4915199999999", "content": {"type": "text", "text": "Hello"}}),
    )
    .await;
    assert_eq!(inbound.status, 201, "{inbound}");
    let sender = inbound["contact_id"].as_str().expect("the sender's contact").to_string();
    // Merge Bob into Ada, then delete Ada.
    let merged = post(&app, &format!("{ada_path}/merge"), &json!({"contact_id": bob_id})).await;
    assert_eq!(merged.status, 200, "{merged}");
    assert_eq!(call(&app, Method::DELETE, &ada_path, None).await.status, 204);

    let expected = [
        "contact.created",
        "contact.updated",
        "contact.created",
        "contact.updated",
        "contact.created",
        "contact.opted_in",
        "contact.updated",
        "contact.created",
        "contact.merged",
        "contact.deleted",
    ];
    let mut received =
        receiver.wait_until(Duration::from_secs(10), "10 contact events", |r| r.len() >= expected.len()).await;
    // Nothing more comes (a write that changed nothing announced nothing).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), expected.len());
    // Deliveries may overlap; event ids grow with time, so they give the order of the changes.
    received.sort_by_key(|r| r.webhook_id.clone());
    let events: Vec<Value> = received.iter().map(Received::json).collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, expected, "{events:#?}");
    for (r, e) in received.iter().zip(&events) {
        assert!(r.signed_with(&secret));
        assert_eq!(e["workspace_id"], app.workspace_id.to_string());
    }
    // Created and updated carry the contact as the API answered it.
    assert_eq!(events[0]["data"], json!({"contact": ada}));
    assert_eq!(events[1]["data"], json!({"contact": patched.json}));
    assert_eq!(events[2]["data"], json!({"contact": bob.json}));
    assert_eq!(events[3]["data"], json!({"contact": bob_tagged.json}));
    let carol = get(&app, "/v1/contacts?identity=webchat:visitor_9").await;
    assert_eq!(events[4]["data"], json!({"contact": carol["data"][0]}));
    // The import row's consent record follows its contact's event, with the record as the ledger
    // shows it.
    let carol_id = carol["data"][0]["id"].as_str().unwrap();
    let carol_ledger = get(&app, &format!("/v1/contacts/{carol_id}/consents")).await;
    assert_eq!(events[5]["data"], json!({"contact_id": carol_id, "consent": carol_ledger["data"][0]}));
    assert_eq!(events[5]["data"]["consent"]["source"], "import");
    assert_eq!(events[6]["data"]["contact"]["id"], bob_id.as_str());
    assert_eq!(events[6]["data"]["contact"]["name"], "Bobby");
    assert_eq!(events[7]["data"]["contact"]["id"], sender.as_str());
    assert_eq!(events[7]["data"]["contact"]["identities"][0]["identity"], "sms:+4915199999999");
    assert_eq!(events[8]["data"], json!({"survivor_id": ada_id, "absorbed_id": bob_id}));
    // The deletion names the contact and nothing else.
    assert_eq!(events[9]["data"], json!({"contact_id": ada_id}));
    let body = String::from_utf8(received[9].body.clone()).unwrap();
    for personal in ["Ada", "+4915112345678", "4915100000001", "vip", "gold", "Europe/Berlin"] {
        assert!(!body.contains(personal), "{personal} in {body}");
    }
    app.finish().await;
}

/// 100,000 contacts from one CSV file on SQLite, through the HTTP API in parts of 5,000 rows as
/// the CLI sends them; at most 60 s. Run with
/// `cargo test -p parley-testkit --test api_contacts -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn import_100k_contacts_on_sqlite() {
    import_100k(Backend::Sqlite).await;
}

/// The same on PostgreSQL (its figure is printed; the 60 s bound is SQLite's).
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn import_100k_contacts_on_postgres() {
    import_100k(Backend::Postgres).await;
}

async fn import_100k(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else { return };
    let started = std::time::Instant::now();
    let mut created = 0;
    for part in 0..20u64 {
        let mut body = String::from("phone,name,tags,attributes.plan\n");
        for i in part * 5000..(part + 1) * 5000 {
            body.push_str(&format!("+491510{i:07},Contact {i},vip;import,gold\n"));
        }
        let a = app
            .request(Method::POST, &format!("/v1/contacts/import?first_row={}", part * 5000))
            .header("content-type", "text/csv")
            .body(body)
            .send()
            .await
            .unwrap();
        let a = Answer::read(a).await;
        assert_eq!(a.status, 200, "{a}");
        created += a["created"].as_u64().unwrap();
    }
    let elapsed = started.elapsed();
    eprintln!("{backend:?}: imported {created} contacts in {elapsed:?}");
    assert_eq!(created, 100_000);
    if backend == Backend::Sqlite {
        assert!(elapsed < std::time::Duration::from_secs(60), "{elapsed:?}");
    }
}
