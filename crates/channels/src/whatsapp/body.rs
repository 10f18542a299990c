//! The JSON bodies Parley sends to `POST /{version}/{phone_number_id}/messages`, shaped exactly as
//! the request examples of Meta's OpenAPI (`business-messaging-api_v23.0.yaml`).
//!
//! Every body carries `messaging_product: "whatsapp"`, `recipient_type: "individual"`, `to` (the
//! recipient's digits, without `+`) and `type`, then one object named after the type:
//!
//! | Parley content | WhatsApp `type` | object |
//! |---|---|---|
//! | `text` | `text` | `{"body", "preview_url"}`; `preview_url` is true when the text holds an `http(s)://` link |
//! | `template` | `template` | `{"name", "language": {"code"}, "components"}`; `variables` become a body component of text parameters (named ones with `parameter_name`) unless `components` has a body |
//! | `media` | `image`/`video`/`audio`/`document`/`sticker` | `{"link"}` or `{"id"}`; `caption` on image, video and document; `filename` on document |
//! | `interactive` | `interactive` | `button` (reply buttons), `list`, or `cta_url` |
//! | `reaction` | `reaction` | `{"message_id", "emoji"}` |
//! | `location` | `location` | `{"latitude", "longitude", "name", "address"}` |

use parley_domain::{
    Content, InteractiveAction, InteractiveHeader, MediaKind, TemplateComponent, TemplateComponentKind,
    TemplateParameter,
};
use serde_json::{Map, Value, json};

/// Why content cannot be sent on WhatsApp (a permanent refusal, before calling Meta).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsendable(pub String);

/// The recipient as the Cloud API takes it: digits, without `+`.
pub fn recipient(to: &str) -> String {
    to.strip_prefix('+').unwrap_or(to).to_string()
}

/// Whether a text holds a link WhatsApp could preview.
pub fn has_link(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("https://") || lower.contains("http://")
}

/// The body of a send of `content` to `to`.
pub fn message(to: &str, content: &Content) -> Result<Value, Unsendable> {
    let (kind, object) = match content {
        Content::Text { text, suggestions } => {
            if !suggestions.is_empty() {
                return Err(Unsendable("WhatsApp cannot show suggestions: use interactive content".into()));
            }
            ("text", json!({"body": text, "preview_url": has_link(text)}))
        }
        Content::Template { name, language, variables, components } => {
            let mut parts: Vec<Value> = components.iter().map(component).collect();
            let has_body = components.iter().any(|c| c.kind == TemplateComponentKind::Body);
            if !has_body && !variables.is_empty() {
                let at = components.iter().take_while(|c| c.kind == TemplateComponentKind::Header).count();
                parts.insert(at, body_from_variables(variables));
            }
            let mut template = json!({"name": name, "language": {"code": language}});
            if !parts.is_empty() {
                template["components"] = Value::Array(parts);
            }
            ("template", template)
        }
        Content::Media { url, media_id, kind, caption, mime_type, filename } => {
            let kind = kind.unwrap_or_else(|| MediaKind::guess(mime_type.as_deref(), url.as_deref()));
            let mut object = media_ref(url, media_id)?;
            if let Some(caption) = caption {
                if matches!(kind, MediaKind::Audio | MediaKind::Sticker) {
                    return Err(Unsendable(format!("WhatsApp shows no caption on {}", kind.as_str())));
                }
                object.insert("caption".into(), json!(caption));
            }
            if let Some(filename) = filename {
                if kind != MediaKind::Document {
                    return Err(Unsendable(format!(
                        "WhatsApp takes a filename on documents, not on {}",
                        kind.as_str()
                    )));
                }
                object.insert("filename".into(), json!(filename));
            }
            (kind.as_str(), Value::Object(object))
        }
        Content::Interactive { header, body, footer, action } => {
            let mut object = Map::new();
            let (kind, action) = match action {
                InteractiveAction::Buttons { buttons } => (
                    "button",
                    json!({"buttons": buttons.iter().map(|b| json!({"type": "reply", "reply": {"id": b.id, "title": b.title}})).collect::<Vec<_>>()}),
                ),
                InteractiveAction::List { button, sections } => {
                    let sections: Vec<Value> = sections
                        .iter()
                        .map(|s| {
                            let rows: Vec<Value> = s
                                .rows
                                .iter()
                                .map(|r| {
                                    let mut row = json!({"id": r.id, "title": r.title});
                                    if let Some(d) = &r.description {
                                        row["description"] = json!(d);
                                    }
                                    row
                                })
                                .collect();
                            let mut section = json!({"rows": rows});
                            if let Some(t) = &s.title {
                                section["title"] = json!(t);
                            }
                            section
                        })
                        .collect();
                    ("list", json!({"button": button, "sections": sections}))
                }
                InteractiveAction::CtaUrl { display_text, url } => {
                    ("cta_url", json!({"name": "cta_url", "parameters": {"display_text": display_text, "url": url}}))
                }
            };
            object.insert("type".into(), json!(kind));
            if let Some(header) = header {
                object.insert("header".into(), interactive_header(header)?);
            }
            object.insert("body".into(), json!({"text": body}));
            if let Some(footer) = footer {
                object.insert("footer".into(), json!({"text": footer}));
            }
            object.insert("action".into(), action);
            ("interactive", Value::Object(object))
        }
        Content::Reaction { message_id, emoji } => ("reaction", json!({"message_id": message_id, "emoji": emoji})),
        Content::Location { latitude, longitude, name, address } => {
            let mut object = json!({"latitude": latitude, "longitude": longitude});
            if let Some(n) = name {
                object["name"] = json!(n);
            }
            if let Some(a) = address {
                object["address"] = json!(a);
            }
            ("location", object)
        }
        other => {
            return Err(Unsendable(format!("the whatsapp connector cannot send {} content", other.kind())));
        }
    };
    let mut body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": recipient(to),
        "type": kind,
    });
    body[kind] = object;
    Ok(body)
}

/// The body that marks an inbound message as read (blue ticks).
pub fn mark_read(provider_message_id: &str) -> Value {
    json!({"messaging_product": "whatsapp", "status": "read", "message_id": provider_message_id})
}

/// `{"link": url}` or `{"id": media_id}`: exactly one.
fn media_ref(url: &Option<String>, media_id: &Option<String>) -> Result<Map<String, Value>, Unsendable> {
    let mut object = Map::new();
    match (url, media_id) {
        (Some(u), None) => object.insert("link".into(), json!(u)),
        (None, Some(id)) => object.insert("id".into(), json!(id)),
        _ => return Err(Unsendable("media needs exactly one of url and media_id".into())),
    };
    Ok(object)
}

fn interactive_header(header: &InteractiveHeader) -> Result<Value, Unsendable> {
    Ok(match header {
        InteractiveHeader::Text { text } => json!({"type": "text", "text": text}),
        InteractiveHeader::Image { url, media_id } => json!({"type": "image", "image": media_ref(url, media_id)?}),
        InteractiveHeader::Video { url, media_id } => json!({"type": "video", "video": media_ref(url, media_id)?}),
        InteractiveHeader::Document { url, media_id, filename } => {
            let mut document = media_ref(url, media_id)?;
            if let Some(f) = filename {
                document.insert("filename".into(), json!(f));
            }
            json!({"type": "document", "document": document})
        }
    })
}

/// The simple form: body variables by position (`"1"`, `"2"`, … in numeric order) or by name.
fn body_from_variables(variables: &std::collections::BTreeMap<String, String>) -> Value {
    let positional = variables.keys().all(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()));
    let parameters: Vec<Value> = if positional {
        let mut entries: Vec<(u64, &String)> =
            variables.iter().map(|(k, v)| (k.parse::<u64>().unwrap_or(u64::MAX), v)).collect();
        entries.sort_by_key(|(n, _)| *n);
        entries.into_iter().map(|(_, v)| json!({"type": "text", "text": v})).collect()
    } else {
        variables.iter().map(|(k, v)| json!({"type": "text", "parameter_name": k, "text": v})).collect()
    };
    json!({"type": "body", "parameters": parameters})
}

fn component(c: &TemplateComponent) -> Value {
    let kind = match c.kind {
        TemplateComponentKind::Header => "header",
        TemplateComponentKind::Body => "body",
        TemplateComponentKind::Button => "button",
    };
    let mut out = json!({"type": kind, "parameters": c.parameters.iter().map(parameter).collect::<Vec<_>>()});
    if let Some(s) = &c.sub_type {
        out["sub_type"] = json!(s);
    }
    if let Some(i) = c.index {
        // Meta's examples write the index as a string ("0"); the schema takes both.
        out["index"] = json!(i.to_string());
    }
    out
}

fn put(object: &mut Value, key: &str, value: &Option<impl serde::Serialize>) {
    if let Some(v) = value {
        object[key] = json!(v);
    }
}

fn media_param(kind: &str, url: &Option<String>, media_id: &Option<String>, filename: Option<&String>) -> Value {
    let mut object = json!({});
    put(&mut object, "link", url);
    put(&mut object, "id", media_id);
    put(&mut object, "filename", &filename);
    json!({"type": kind, kind: object})
}

fn parameter(p: &TemplateParameter) -> Value {
    match p {
        TemplateParameter::Text { text, parameter_name } => {
            let mut v = json!({"type": "text", "text": text});
            put(&mut v, "parameter_name", parameter_name);
            v
        }
        TemplateParameter::Currency { fallback_value, code, amount_1000, parameter_name } => {
            let mut v = json!({"type": "currency", "currency": {"fallback_value": fallback_value, "code": code, "amount_1000": amount_1000}});
            put(&mut v, "parameter_name", parameter_name);
            v
        }
        TemplateParameter::DateTime {
            fallback_value,
            calendar,
            year,
            month,
            day_of_month,
            day_of_week,
            hour,
            minute,
            parameter_name,
        } => {
            let mut dt = json!({"fallback_value": fallback_value});
            put(&mut dt, "calendar", calendar);
            put(&mut dt, "year", year);
            put(&mut dt, "month", month);
            put(&mut dt, "day_of_month", day_of_month);
            put(&mut dt, "day_of_week", day_of_week);
            put(&mut dt, "hour", hour);
            put(&mut dt, "minute", minute);
            let mut v = json!({"type": "date_time", "date_time": dt});
            put(&mut v, "parameter_name", parameter_name);
            v
        }
        TemplateParameter::Image { url, media_id } => media_param("image", url, media_id, None),
        TemplateParameter::Video { url, media_id } => media_param("video", url, media_id, None),
        TemplateParameter::Document { url, media_id, filename } => {
            media_param("document", url, media_id, filename.as_ref())
        }
        TemplateParameter::Location { latitude, longitude, name, address } => {
            let mut loc = json!({"latitude": latitude, "longitude": longitude});
            put(&mut loc, "name", name);
            put(&mut loc, "address", address);
            json!({"type": "location", "location": loc})
        }
        TemplateParameter::Payload { payload } => json!({"type": "payload", "payload": payload}),
        TemplateParameter::CouponCode { coupon_code } => json!({"type": "coupon_code", "coupon_code": coupon_code}),
        TemplateParameter::Action { flow_token, flow_action_data, thumbnail_product_retailer_id } => {
            let mut action = json!({});
            put(&mut action, "flow_token", flow_token);
            put(&mut action, "flow_action_data", flow_action_data);
            put(&mut action, "thumbnail_product_retailer_id", thumbnail_product_retailer_id);
            json!({"type": "action", "action": action})
        }
    }
}
