//! The OpenAPI document cannot drift: a snapshot of the whole document, and checks that every
//! operation documents its errors and its security.

use serde_json::Value;

fn document() -> Value {
    serde_json::to_value(parley_server::openapi::document()).expect("the document serialises")
}

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// Operational routes: no API key, and not under `/v1`.
fn is_ops(path: &str) -> bool {
    !path.starts_with("/v1/")
}

#[test]
fn document_snapshot() {
    let pretty = serde_json::to_string_pretty(&parley_server::openapi::document()).expect("the document serialises");
    insta::assert_snapshot!("openapi_document", pretty);
}

#[test]
fn document_is_openapi_3_1_with_bearer_auth() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].as_str().is_some_and(|t| !t.is_empty()));
    let scheme = &doc["components"]["securitySchemes"]["api_key"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert!(doc["components"]["schemas"]["Problem"].is_object());
}

#[test]
fn every_operation_documents_a_client_error_and_its_security() {
    let doc = document();
    let paths = doc["paths"].as_object().expect("paths");
    assert!(!paths.is_empty());
    let mut problems = Vec::new();
    let mut operations = 0;
    for (path, item) in paths {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            operations += 1;
            let responses = op["responses"].as_object().expect("responses");
            if !responses.keys().any(|status| status.starts_with('2')) {
                problems.push(format!("{method} {path}: no success response"));
            }
            // Health checks take no input, so they cannot answer a client error.
            if !is_ops(path) && !responses.keys().any(|status| status.starts_with('4')) {
                problems.push(format!("{method} {path}: no 4xx response"));
            }
            for (status, response) in responses.iter().filter(|(s, _)| s.starts_with('4') || s.starts_with('5')) {
                if response["content"].get("application/problem+json").is_none() {
                    problems.push(format!("{method} {path}: {status} is not application/problem+json"));
                }
            }
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty())
                || doc["security"].as_array().is_some_and(|s| !s.is_empty());
            if !is_ops(path) && !secured {
                problems.push(format!("{method} {path}: no security requirement"));
            }
            if op["tags"].as_array().is_none_or(|t| t.is_empty()) {
                problems.push(format!("{method} {path}: no tag"));
            }
            if op["summary"].as_str().is_none_or(str::is_empty) && op["description"].as_str().is_none_or(str::is_empty)
            {
                problems.push(format!("{method} {path}: no summary or description"));
            }
            if op["operationId"].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{method} {path}: no operationId"));
            }
        }
    }
    assert!(operations >= 9, "only {operations} operations documented");
    assert!(problems.is_empty(), "OpenAPI gaps:\n{}", problems.join("\n"));
}

#[test]
fn every_path_parameter_is_declared() {
    let doc = document();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let names: Vec<&str> = path.split('{').skip(1).filter_map(|s| s.split('}').next()).collect();
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            for name in &names {
                assert!(
                    params.iter().any(|p| p["name"] == *name && p["in"] == "path" && p["required"] == true),
                    "{method} {path} does not declare its path parameter '{name}'"
                );
            }
        }
    }
}

#[test]
fn every_route_is_documented() {
    let doc = document();
    let paths = doc["paths"].as_object().expect("paths");
    let expected = [
        ("/v1/messages", &["get", "post"][..]),
        ("/v1/messages/batch", &["post"]),
        ("/v1/messages/{id}", &["get"]),
        ("/v1/messages/{id}/cancel", &["post"]),
        ("/v1/message-events", &["get"]),
        ("/v1/api-keys", &["get", "post"]),
        ("/v1/api-keys/{id}", &["delete"]),
        ("/v1/channel-accounts", &["get"]),
        ("/v1/channel-accounts/{id}", &["get"]),
    ];
    for (path, methods) in expected {
        let item = paths.get(path).unwrap_or_else(|| panic!("{path} is not documented"));
        for method in methods {
            assert!(item.get(*method).is_some(), "{method} {path} is not documented");
        }
    }
}

/// The conventions say every route is in the document; the operational ones included.
#[test]
fn ops_routes_are_documented() {
    let doc = document();
    let paths = doc["paths"].as_object().expect("paths");
    let missing: Vec<&str> =
        ["/healthz", "/readyz", "/metrics"].into_iter().filter(|p| !paths.contains_key(*p)).collect();
    assert!(missing.is_empty(), "not in /openapi.json: {missing:?}");
}

/// The conventions say every error code is documented; clients branch on them.
#[test]
fn every_error_code_is_documented() {
    let text = serde_json::to_string(&parley_server::openapi::document()).expect("the document serialises");
    let missing: Vec<&str> =
        parley_server::error::CODES.iter().map(|(code, ..)| *code).filter(|code| !text.contains(code)).collect();
    assert!(missing.is_empty(), "error codes not mentioned anywhere in /openapi.json: {missing:?}");
}
