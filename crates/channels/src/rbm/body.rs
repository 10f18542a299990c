//! Parley content as an RBM `AgentMessage` (the JSON body of `phones.agentMessages.create`).
//!
//! | Parley content | `contentMessage` |
//! |---|---|
//! | `text` (+ `suggestions`) | `text` (+ `suggestions`) |
//! | `media` by `url`, no caption | `contentInfo{fileUrl}` |
//! | `media` by `media_id` (an RBM file name from `files.create`) | `fileName` |
//! | `media` with a caption (image or video) | a vertical `standaloneCard` with the media and the caption as `description` |
//! | `card` | `richCard.standaloneCard{cardOrientation, cardContent}` (HORIZONTAL cards get `thumbnailImageAlignment: LEFT`) |
//! | `carousel` | `richCard.carouselCard{cardWidth, cardContents}` |
//!
//! Suggestions: `reply` → `{"reply":{text, postbackData}}`; the actions → `{"action":{text,
//! postbackData, openUrlAction|dialAction|viewLocationAction|shareLocationAction|
//! createCalendarEventAction}}`. Anything else (templates, interactive messages, reactions,
//! locations, inbound-only kinds) cannot be sent over RBM and is refused before any request.

use parley_domain::{CardMedia, CardOrientation, CardWidth, Content, MediaHeight, MediaKind, RichCard, Suggestion};
use serde_json::{Map, Value, json};

/// The longest text RBM takes in one message.
pub const MAX_RBM_TEXT_CHARS: usize = 3072;
/// RBM's limit on suggestions under a message.
pub const MAX_SUGGESTIONS: usize = 11;
/// Google keeps an undelivered message for 30 days; a longer `ttl` says nothing more.
pub const MAX_TTL_SECONDS: i64 = 30 * 24 * 3600;

/// Why content cannot be sent over RBM (a permanent refusal, code `rbm:unsupported_content` or
/// `rbm:text_too_long`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsendable {
    pub code: &'static str,
    pub detail: String,
}

fn unsupported(detail: impl Into<String>) -> Unsendable {
    Unsendable { code: "rbm:unsupported_content", detail: detail.into() }
}

/// The `AgentMessage` for `content`, with `ttl` when `ttl_seconds` is given.
pub fn agent_message(content: &Content, ttl_seconds: Option<i64>) -> Result<Value, Unsendable> {
    let mut message = json!({ "contentMessage": content_message(content)? });
    if let Some(ttl) = ttl_seconds {
        message["ttl"] = Value::String(format!("{ttl}s"));
    }
    Ok(message)
}

/// The `ttl` for a message worthless after `expires_at_ms`, sent at `now_ms`: whole seconds,
/// rounded up, at least 1; `None` when it is more than Google keeps a message anyway.
pub fn ttl_seconds(expires_at_ms: i64, now_ms: i64) -> Option<i64> {
    let left_ms = expires_at_ms.saturating_sub(now_ms);
    let seconds = left_ms.saturating_add(999) / 1000;
    if seconds > MAX_TTL_SECONDS { None } else { Some(seconds.max(1)) }
}

fn content_message(content: &Content) -> Result<Value, Unsendable> {
    let mut m = Map::new();
    let suggestions = match content {
        Content::Text { text, suggestions } => {
            let n = text.chars().count();
            if n > MAX_RBM_TEXT_CHARS {
                return Err(Unsendable {
                    code: "rbm:text_too_long",
                    detail: format!("RBM takes at most {MAX_RBM_TEXT_CHARS} characters of text; this is {n}"),
                });
            }
            m.insert("text".into(), Value::String(text.clone()));
            suggestions.as_slice()
        }
        Content::Media { url, media_id, kind, caption, mime_type, .. } => {
            match (caption.as_deref().filter(|c| !c.is_empty()), url, media_id) {
                (None, Some(url), _) => {
                    m.insert("contentInfo".into(), json!({ "fileUrl": url }));
                }
                (None, None, Some(file)) => {
                    m.insert("fileName".into(), Value::String(file.clone()));
                }
                (Some(caption), Some(url), _) => {
                    let kind = kind.unwrap_or_else(|| MediaKind::guess(mime_type.as_deref(), Some(url)));
                    if !matches!(kind, MediaKind::Image | MediaKind::Video) {
                        return Err(unsupported(format!(
                            "RBM shows a caption only with an image or a video (in a rich card), not with {}",
                            kind.as_str()
                        )));
                    }
                    let card = RichCard {
                        title: None,
                        description: Some(caption.to_string()),
                        media: Some(CardMedia { url: url.clone(), height: MediaHeight::Medium, thumbnail_url: None }),
                        suggestions: Vec::new(),
                        orientation: Some(CardOrientation::Vertical),
                    };
                    m.insert("richCard".into(), json!({ "standaloneCard": standalone_card(&card) }));
                }
                (Some(_), None, _) => {
                    return Err(unsupported("RBM cannot show a caption with an uploaded file; send it by url"));
                }
                (None, None, None) => return Err(unsupported("media needs a url or a media_id")),
            }
            &[]
        }
        Content::Card { card, suggestions } => {
            m.insert("richCard".into(), json!({ "standaloneCard": standalone_card(card) }));
            suggestions.as_slice()
        }
        Content::Carousel { width, cards, suggestions } => {
            let width = match width {
                CardWidth::Small => "SMALL",
                CardWidth::Medium => "MEDIUM",
            };
            let contents: Vec<Value> = cards.iter().map(card_content).collect();
            m.insert("richCard".into(), json!({ "carouselCard": { "cardWidth": width, "cardContents": contents } }));
            suggestions.as_slice()
        }
        other => {
            return Err(unsupported(format!(
                "RBM cannot send {} content (only text, media, card, carousel)",
                other.kind()
            )));
        }
    };
    if suggestions.len() > MAX_SUGGESTIONS {
        return Err(unsupported(format!(
            "RBM shows at most {MAX_SUGGESTIONS} suggestions; there are {}",
            suggestions.len()
        )));
    }
    if !suggestions.is_empty() {
        m.insert("suggestions".into(), Value::Array(suggestions.iter().map(suggestion).collect()));
    }
    Ok(Value::Object(m))
}

fn standalone_card(card: &RichCard) -> Value {
    let mut standalone = Map::new();
    match card.orientation.unwrap_or(CardOrientation::Vertical) {
        CardOrientation::Vertical => {
            standalone.insert("cardOrientation".into(), Value::String("VERTICAL".into()));
        }
        CardOrientation::Horizontal => {
            standalone.insert("cardOrientation".into(), Value::String("HORIZONTAL".into()));
            standalone.insert("thumbnailImageAlignment".into(), Value::String("LEFT".into()));
        }
    }
    standalone.insert("cardContent".into(), card_content(card));
    Value::Object(standalone)
}

fn card_content(card: &RichCard) -> Value {
    let mut c = Map::new();
    if let Some(title) = &card.title {
        c.insert("title".into(), Value::String(title.clone()));
    }
    if let Some(description) = &card.description {
        c.insert("description".into(), Value::String(description.clone()));
    }
    if let Some(media) = &card.media {
        let height = match media.height {
            MediaHeight::Short => "SHORT",
            MediaHeight::Medium => "MEDIUM",
            MediaHeight::Tall => "TALL",
        };
        let mut info = json!({ "fileUrl": media.url });
        if let Some(thumbnail) = &media.thumbnail_url {
            info["thumbnailUrl"] = Value::String(thumbnail.clone());
        }
        c.insert("media".into(), json!({ "height": height, "contentInfo": info }));
    }
    if !card.suggestions.is_empty() {
        c.insert("suggestions".into(), Value::Array(card.suggestions.iter().map(suggestion).collect()));
    }
    Value::Object(c)
}

/// One suggestion chip as RBM's `Suggestion`.
pub fn suggestion(s: &Suggestion) -> Value {
    let action = |text: &str, postback: &str, key: &str, value: Value| json!({ "action": { "text": text, "postbackData": postback, key: value } });
    match s {
        Suggestion::Reply { text, postback_data } => {
            json!({ "reply": { "text": text, "postbackData": postback_data } })
        }
        Suggestion::OpenUrl { text, postback_data, url } => {
            action(text, postback_data, "openUrlAction", json!({ "url": url }))
        }
        Suggestion::Dial { text, postback_data, phone_number } => {
            action(text, postback_data, "dialAction", json!({ "phoneNumber": phone_number }))
        }
        Suggestion::ViewLocation { text, postback_data, latitude, longitude, label } => {
            let mut v = json!({ "latLong": { "latitude": latitude, "longitude": longitude } });
            if let Some(label) = label {
                v["label"] = Value::String(label.clone());
            }
            action(text, postback_data, "viewLocationAction", v)
        }
        Suggestion::ShareLocation { text, postback_data } => {
            action(text, postback_data, "shareLocationAction", json!({}))
        }
        Suggestion::CreateCalendarEvent { text, postback_data, start_time, end_time, title, description } => {
            let mut v = json!({ "startTime": start_time, "endTime": end_time, "title": title });
            if let Some(d) = description {
                v["description"] = Value::String(d.clone());
            }
            action(text, postback_data, "createCalendarEventAction", v)
        }
    }
}
