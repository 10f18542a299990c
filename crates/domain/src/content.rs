//! What a message says: text, a template reference with variables, or media with a caption.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MAX_TEXT_CHARS: usize = 4096;
pub const MAX_CAPTION_CHARS: usize = 1024;
pub const MAX_URL_BYTES: usize = 2048;
pub const MAX_TEMPLATE_VARIABLES: usize = 100;

/// The content of a message. The JSON form carries a `type` tag:
/// `{"type": "text", "text": "Your code is 1234"}`. On input the tag may be left out when the
/// fields make the kind clear (`{"text": "…"}`, `{"url": "…"}`, `{"name": "…", "language": "…"}`).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// Plain text.
    Text {
        /// 1 to 4096 characters.
        text: String,
    },
    /// A reference to a template approved for the channel, with its variables.
    Template {
        /// The template's name: lower-case letters, digits and underscores.
        name: String,
        /// The template's language, such as `en` or `en_US`.
        language: String,
        /// Values for the template's variables, by name or position (`"1"`).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        variables: BTreeMap<String, String>,
    },
    /// A picture, video, audio clip or document fetched by the provider from an HTTPS URL.
    Media {
        /// An `https://` URL the provider can fetch.
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mime_type: Option<String>,
    },
}

/// Every field any kind of content has, for reading content with or without its `type`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnyContent {
    #[serde(rename = "type")]
    kind: Option<ContentKind>,
    text: Option<String>,
    name: Option<String>,
    language: Option<String>,
    variables: Option<BTreeMap<String, String>>,
    url: Option<String>,
    caption: Option<String>,
    mime_type: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
enum ContentKind {
    Text,
    Template,
    Media,
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw = AnyContent::deserialize(d)?;
        let kind = match raw.kind {
            Some(kind) => kind,
            None if raw.url.is_some() => ContentKind::Media,
            None if raw.name.is_some() => ContentKind::Template,
            None if raw.text.is_some() => ContentKind::Text,
            None => return Err(D::Error::missing_field("type")),
        };
        // Fields of another kind of content are as unknown as any other field.
        let present = [
            ("text", raw.text.is_some()),
            ("name", raw.name.is_some()),
            ("language", raw.language.is_some()),
            ("variables", raw.variables.is_some()),
            ("url", raw.url.is_some()),
            ("caption", raw.caption.is_some()),
            ("mime_type", raw.mime_type.is_some()),
        ];
        let allowed: &'static [&'static str] = match kind {
            ContentKind::Text => &["type", "text"],
            ContentKind::Template => &["type", "name", "language", "variables"],
            ContentKind::Media => &["type", "url", "caption", "mime_type"],
        };
        if let Some((field, _)) = present.iter().find(|(f, there)| *there && !allowed.contains(f)) {
            return Err(D::Error::unknown_field(field, allowed));
        }
        Ok(match kind {
            ContentKind::Text => Content::Text { text: raw.text.ok_or_else(|| D::Error::missing_field("text"))? },
            ContentKind::Template => Content::Template {
                name: raw.name.ok_or_else(|| D::Error::missing_field("name"))?,
                language: raw.language.ok_or_else(|| D::Error::missing_field("language"))?,
                variables: raw.variables.unwrap_or_default(),
            },
            ContentKind::Media => Content::Media {
                url: raw.url.ok_or_else(|| D::Error::missing_field("url"))?,
                caption: raw.caption,
                mime_type: raw.mime_type,
            },
        })
    }
}

/// A reason why content is not acceptable, naming the field (relative to `content`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ContentError {
    pub field: &'static str,
    pub reason: String,
}

fn err(field: &'static str, reason: impl Into<String>) -> ContentError {
    ContentError { field, reason: reason.into() }
}

impl Content {
    /// Check the limits that the type alone cannot express.
    pub fn validate(&self) -> Result<(), ContentError> {
        match self {
            Content::Text { text } => {
                let n = text.chars().count();
                if text.trim().is_empty() {
                    return Err(err("text", "must not be empty"));
                }
                if n > MAX_TEXT_CHARS {
                    return Err(err("text", format!("is {n} characters long; at most {MAX_TEXT_CHARS} are allowed")));
                }
            }
            Content::Template { name, language, variables } => {
                let name_ok = !name.is_empty()
                    && name.len() <= 512
                    && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !name_ok {
                    return Err(err("name", "must be 1 to 512 lower-case letters, digits or underscores"));
                }
                let lang_ok = (2..=16).contains(&language.len())
                    && language.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'-');
                if !lang_ok {
                    return Err(err("language", "must be a language code such as en or en_US"));
                }
                if variables.len() > MAX_TEMPLATE_VARIABLES {
                    return Err(err("variables", format!("at most {MAX_TEMPLATE_VARIABLES} variables are allowed")));
                }
                if let Some((k, _)) =
                    variables.iter().find(|(k, v)| k.is_empty() || k.len() > 64 || v.chars().count() > 1024)
                {
                    return Err(err(
                        "variables",
                        format!(
                            "variable '{}' needs a name of 1 to 64 bytes and a value of at most 1024 characters",
                            k.chars().take(64).collect::<String>()
                        ),
                    ));
                }
            }
            Content::Media { url, caption, mime_type } => {
                let url_ok = url.len() <= MAX_URL_BYTES
                    && url.strip_prefix("https://").is_some_and(|rest| {
                        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
                        !host.is_empty() && !url.chars().any(|c| c.is_whitespace() || c.is_control())
                    });
                if !url_ok {
                    return Err(err("url", "must be an https:// URL with a host, at most 2048 bytes"));
                }
                if caption.as_ref().is_some_and(|c| c.chars().count() > MAX_CAPTION_CHARS) {
                    return Err(err("caption", format!("at most {MAX_CAPTION_CHARS} characters are allowed")));
                }
                if mime_type.as_ref().is_some_and(|m| m.len() > 127 || !m.contains('/')) {
                    return Err(err("mime_type", "must be a media type such as image/jpeg"));
                }
            }
        }
        Ok(())
    }

    /// The text a plain-text channel shows (SMS): the text, or the caption and link of media.
    pub fn preview_text(&self) -> String {
        match self {
            Content::Text { text } => text.clone(),
            Content::Template { name, .. } => format!("[template {name}]"),
            Content::Media { url, caption, .. } => match caption {
                Some(c) => format!("{c} {url}"),
                None => url.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_forms_parse() {
        let c: Content = serde_json::from_str(r#"{"type":"text","text":"hi"}"#).unwrap();
        assert_eq!(c, Content::Text { text: "hi".into() });
        let c: Content = serde_json::from_str(
            r#"{"type":"template","name":"order_shipped","language":"en_US","variables":{"1":"A-17"}}"#,
        )
        .unwrap();
        assert!(c.validate().is_ok());
        let c: Content =
            serde_json::from_str(r#"{"type":"media","url":"https://x.example/a.jpg","caption":"c"}"#).unwrap();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn the_type_may_be_left_out_when_the_fields_tell() {
        let c: Content = serde_json::from_str(r#"{"text":"hi"}"#).unwrap();
        assert_eq!(c, Content::Text { text: "hi".into() });
        let c: Content = serde_json::from_str(r#"{"url":"https://x.example/a.jpg","caption":"c"}"#).unwrap();
        assert!(matches!(c, Content::Media { .. }));
        let c: Content = serde_json::from_str(r#"{"name":"order_shipped","language":"en"}"#).unwrap();
        assert!(matches!(c, Content::Template { .. }));
        let e = serde_json::from_str::<Content>(r#"{"caption":"what am I"}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `type`"), "{e}");
        let e =
            serde_json::from_str::<Content>(r#"{"type":"text","text":"hi","url":"https://x.example"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `url`"), "{e}");
        let e = serde_json::from_str::<Content>(r#"{"type":"media"}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `url`"), "{e}");
        // What is written always carries its type.
        assert_eq!(
            serde_json::to_string(&Content::Text { text: "hi".into() }).unwrap(),
            r#"{"type":"text","text":"hi"}"#
        );
    }

    #[test]
    fn unknown_fields_and_types_are_refused() {
        let e = serde_json::from_str::<Content>(r#"{"type":"text","text":"hi","bogus":1}"#).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        assert!(serde_json::from_str::<Content>(r#"{"type":"fax","text":"hi"}"#).is_err());
    }

    #[test]
    fn limits_are_enforced() {
        assert_eq!(Content::Text { text: " ".into() }.validate().unwrap_err().field, "text");
        assert!(Content::Text { text: "x".repeat(4097) }.validate().is_err());
        assert!(Content::Text { text: "é".repeat(4096) }.validate().is_ok());
        let media = |url: &str| Content::Media { url: url.into(), caption: None, mime_type: None };
        assert!(media("http://x.example/a.jpg").validate().is_err());
        assert!(media("https:///a.jpg").validate().is_err());
        assert!(media("https://x.example/a b.jpg").validate().is_err());
        let t = Content::Template { name: "Bad Name".into(), language: "en".into(), variables: BTreeMap::new() };
        assert_eq!(t.validate().unwrap_err().field, "name");
    }
}
