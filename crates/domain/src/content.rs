//! What a message says: text, a template reference, media, an interactive message, a reaction, a
//! location, an RCS rich card or carousel; and, inbound only, a tapped reply or a kind Parley
//! does not model.

use crate::Channel;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MAX_TEXT_CHARS: usize = 4096;
pub const MAX_CAPTION_CHARS: usize = 1024;
pub const MAX_URL_BYTES: usize = 2048;
pub const MAX_TEMPLATE_VARIABLES: usize = 100;
pub const MAX_TEMPLATE_COMPONENTS: usize = 20;
pub const MAX_SUGGESTIONS: usize = 11;
pub const MAX_CARD_SUGGESTIONS: usize = 4;
pub const MAX_FILENAME_CHARS: usize = 240;

/// The content of a message. The JSON form carries a `type` tag:
/// `{"type": "text", "text": "Your code is 1234"}`. On input the tag may be left out when the
/// fields make the kind clear (`{"text": "…"}`, `{"url": "…"}`, `{"name": "…", "language": "…"}`);
/// the other kinds need it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// Plain text.
    Text {
        /// 1 to 4096 characters.
        text: String,
        /// Suggested replies and actions shown under the text (RCS only; at most 11).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        suggestions: Vec<Suggestion>,
    },
    /// A reference to a template approved for the channel, with its variables.
    Template {
        /// The template's name: lower-case letters, digits and underscores.
        name: String,
        /// The template's language, such as `en` or `en_US`.
        language: String,
        /// Values for the template's body variables, by name or position (`"1"`): the simple
        /// form of a body component with text parameters.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        variables: BTreeMap<String, String>,
        /// Typed header, body and button parameters (WhatsApp), for what `variables` cannot say:
        /// media headers, currencies, dates, locations, button payloads, coupon codes, flow and
        /// catalog actions. A `body` component here replaces `variables`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        components: Vec<TemplateComponent>,
    },
    /// A picture, video, audio clip, document or sticker: fetched by the provider from an HTTPS
    /// URL, or already uploaded to the provider (`media_id`). Exactly one of the two.
    Media {
        /// An `https://` URL the provider can fetch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// The id of media already uploaded to the provider (WhatsApp media id).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_id: Option<String>,
        /// What the media is; guessed from `mime_type` or the URL's extension when left out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<MediaKind>,
        /// A caption shown with the media (at most 1024 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
        /// The media type, such as `image/jpeg`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mime_type: Option<String>,
        /// The file name shown for a document.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
    },
    /// An interactive message (WhatsApp): reply buttons, a list, or a call-to-action URL button.
    Interactive {
        /// An optional header: text, or an image, video or document.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<InteractiveHeader>,
        /// The body text, 1 to 1024 characters.
        body: String,
        /// An optional footer, at most 60 characters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        footer: Option<String>,
        /// What the recipient can tap.
        action: InteractiveAction,
    },
    /// A reaction to a message (WhatsApp).
    Reaction {
        /// The provider's id of the message reacted to.
        message_id: String,
        /// The emoji; an empty string removes an earlier reaction.
        emoji: String,
    },
    /// A place on the map.
    Location {
        /// Degrees, -90 to 90.
        latitude: f64,
        /// Degrees, -180 to 180.
        longitude: f64,
        /// The place's name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The place's address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
    },
    /// A standalone rich card (RCS).
    Card {
        /// The card.
        card: RichCard,
        /// Suggestions shown under the card (at most 11).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        suggestions: Vec<Suggestion>,
    },
    /// A carousel of 2 to 10 rich cards (RCS).
    Carousel {
        /// The width of the cards.
        width: CardWidth,
        /// 2 to 10 cards, without `orientation`.
        cards: Vec<RichCard>,
        /// Suggestions shown under the carousel (at most 11).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        suggestions: Vec<Suggestion>,
    },
    /// Inbound only: a tapped quick reply, button, list row or RCS suggestion.
    Reply {
        /// The text shown on what was tapped.
        text: String,
        /// The id or postback data of what was tapped.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<String>,
    },
    /// Inbound only: a kind of message Parley does not model, kept as the provider sent it.
    Other {
        /// The provider's name for the kind, such as `contacts` or `order`.
        kind: String,
        /// The provider's object, as received.
        raw: serde_json::Value,
    },
}

/// What a piece of media is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// A picture.
    Image,
    /// A video.
    Video,
    /// An audio clip or voice note.
    Audio,
    /// A document (PDF and others).
    Document,
    /// A sticker (WebP).
    Sticker,
}

impl MediaKind {
    pub const ALL: [MediaKind; 5] =
        [MediaKind::Image, MediaKind::Video, MediaKind::Audio, MediaKind::Document, MediaKind::Sticker];

    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
            MediaKind::Document => "document",
            MediaKind::Sticker => "sticker",
        }
    }

    pub fn parse(s: &str) -> Option<MediaKind> {
        MediaKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The kind a media type or a URL's file extension suggests (`image/webp` is a sticker only
    /// when said so). Anything unrecognised is a document.
    pub fn guess(mime_type: Option<&str>, url: Option<&str>) -> MediaKind {
        if let Some(m) = mime_type {
            let m = m.to_ascii_lowercase();
            return match m.split('/').next().unwrap_or("") {
                "image" => MediaKind::Image,
                "video" => MediaKind::Video,
                "audio" => MediaKind::Audio,
                _ => MediaKind::Document,
            };
        }
        let ext = url
            .map(|u| u.split(['?', '#']).next().unwrap_or(""))
            .and_then(|path| path.rsplit('/').next())
            .and_then(|file| file.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()))
            .unwrap_or_default();
        match ext.as_str() {
            "jpg" | "jpeg" | "png" | "gif" | "webp" | "heic" => MediaKind::Image,
            "mp4" | "3gp" | "3gpp" | "mov" | "m4v" => MediaKind::Video,
            "aac" | "amr" | "mp3" | "m4a" | "ogg" | "opus" | "wav" => MediaKind::Audio,
            _ => MediaKind::Document,
        }
    }
}

/// One component of a template message: the parameters of its header, its body or one of its
/// buttons.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateComponent {
    /// Which part of the template the parameters fill.
    #[serde(rename = "type")]
    pub kind: TemplateComponentKind,
    /// For a button: its kind as the provider names it (`quick_reply`, `url`, `copy_code`,
    /// `flow`, `catalog`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_type: Option<String>,
    /// For a button: its position in the template, from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// The values, in order.
    #[serde(default)]
    pub parameters: Vec<TemplateParameter>,
}

/// The part of a template a component fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemplateComponentKind {
    /// The header.
    Header,
    /// The body.
    Body,
    /// One button (give its `index` and `sub_type`).
    Button,
}

/// One value of a template component, typed as WhatsApp types them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TemplateParameter {
    /// Text (header, body, or the variable part of a URL button).
    Text {
        /// The value.
        text: String,
        /// The variable's name, for templates with named parameters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parameter_name: Option<String>,
    },
    /// An amount of money, localised by the provider.
    Currency {
        /// What is shown where localisation fails.
        fallback_value: String,
        /// ISO 4217 code.
        code: String,
        /// The amount times 1000.
        amount_1000: i64,
        /// The variable's name, for templates with named parameters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parameter_name: Option<String>,
    },
    /// A date and time; the provider shows `fallback_value`.
    DateTime {
        /// What is shown.
        fallback_value: String,
        /// Deprecated: the calendar (`GREGORIAN`); passed on when present, like the fields below.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        calendar: Option<String>,
        /// Deprecated: the year.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        year: Option<i32>,
        /// Deprecated: the month (1-12).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        month: Option<u32>,
        /// Deprecated: the day of the month.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        day_of_month: Option<u32>,
        /// Deprecated: the day of the week (1 = Monday).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        day_of_week: Option<u32>,
        /// Deprecated: the hour (0-23).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hour: Option<u32>,
        /// Deprecated: the minute.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        minute: Option<u32>,
        /// The variable's name, for templates with named parameters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parameter_name: Option<String>,
    },
    /// An image header: by URL or uploaded media id.
    Image {
        /// An `https://` URL the provider fetches the media from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// The id of media already uploaded to the provider.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_id: Option<String>,
    },
    /// A video header: by URL or uploaded media id.
    Video {
        /// An `https://` URL the provider fetches the media from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// The id of media already uploaded to the provider.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_id: Option<String>,
    },
    /// A document header: by URL or uploaded media id, with an optional file name.
    Document {
        /// An `https://` URL the provider fetches the media from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// The id of media already uploaded to the provider.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_id: Option<String>,
        /// The file name shown for the document.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
    },
    /// A location header.
    Location {
        /// Degrees, -90 to 90.
        latitude: f64,
        /// Degrees, -180 to 180.
        longitude: f64,
        /// The place's name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The place's address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
    },
    /// The payload a quick-reply button sends back when tapped.
    Payload {
        /// Sent back by the provider when the button is tapped.
        payload: String,
    },
    /// The code a copy-code button copies.
    CouponCode {
        /// At most 15 characters.
        coupon_code: String,
    },
    /// The action of a flow or catalog button.
    Action {
        /// Flow buttons: the flow token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flow_token: Option<String>,
        /// Flow buttons: data for the flow's first screen.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flow_action_data: Option<serde_json::Value>,
        /// Catalog buttons: the product whose image is the thumbnail.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thumbnail_product_retailer_id: Option<String>,
    },
}

/// The header of an interactive message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum InteractiveHeader {
    /// A text header.
    Text {
        /// At most 60 characters.
        text: String,
    },
    /// An image header: by URL or uploaded media id.
    Image {
        /// An `https://` URL the provider fetches the media from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// The id of media already uploaded to the provider.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_id: Option<String>,
    },
    /// A video header: by URL or uploaded media id.
    Video {
        /// An `https://` URL the provider fetches the media from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// The id of media already uploaded to the provider.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_id: Option<String>,
    },
    /// A document header: by URL or uploaded media id.
    Document {
        /// An `https://` URL the provider fetches the media from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// The id of media already uploaded to the provider.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_id: Option<String>,
        /// The file name shown for the document.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
    },
}

/// What the recipient of an interactive message can tap.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum InteractiveAction {
    /// 1 to 3 reply buttons.
    Buttons {
        /// The buttons, in order.
        buttons: Vec<ReplyButton>,
    },
    /// A list of rows in sections, opened by a button.
    List {
        /// The text of the button that opens the list (at most 20 characters).
        button: String,
        /// 1 to 10 sections, with at most 10 rows in all.
        sections: Vec<ListSection>,
    },
    /// A button that opens a URL.
    CtaUrl {
        /// The button's text (at most 20 characters).
        display_text: String,
        /// The `https://` URL opened.
        url: String,
    },
}

/// A reply button of an interactive message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyButton {
    /// Sent back when tapped (at most 256 characters).
    pub id: String,
    /// Shown on the button (at most 20 characters).
    pub title: String,
}

/// A section of a list message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListSection {
    /// The section's title (at most 24 characters; needed when there are several sections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The rows.
    pub rows: Vec<ListRow>,
}

/// A row of a list message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRow {
    /// Sent back when chosen (at most 200 characters).
    pub id: String,
    /// Shown (at most 24 characters).
    pub title: String,
    /// Shown under the title (at most 72 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// An RCS rich card.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RichCard {
    /// At most 200 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// At most 2000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A picture or video at the top of the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<CardMedia>,
    /// At most 4 suggestions on the card.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<Suggestion>,
    /// Standalone cards only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orientation: Option<CardOrientation>,
}

/// The media of a rich card.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardMedia {
    /// An `https://` URL of the picture or video.
    pub url: String,
    /// How tall the media is shown.
    pub height: MediaHeight,
    /// An `https://` URL of a thumbnail (for video).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
}

/// How tall a card's media is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MediaHeight {
    /// Short.
    Short,
    /// Medium.
    Medium,
    /// Tall.
    Tall,
}

/// The layout of a standalone card.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CardOrientation {
    /// Media above the text.
    Vertical,
    /// Media beside the text.
    Horizontal,
}

/// The width of the cards of a carousel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CardWidth {
    /// Small cards.
    Small,
    /// Medium.
    Medium,
}

/// A suggested reply or action (RCS chip).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Suggestion {
    /// A reply: tapping it sends `text` back with `postback_data`.
    Reply {
        /// Shown on the chip (at most 25 characters).
        text: String,
        /// Sent back when tapped (at most 2048 bytes).
        postback_data: String,
    },
    /// Opens a URL.
    OpenUrl {
        /// Shown on the chip (at most 25 characters).
        text: String,
        /// Sent back when tapped (at most 2048 bytes).
        postback_data: String,
        /// The `https://` URL opened.
        url: String,
    },
    /// Dials a phone number.
    Dial {
        /// Shown on the chip (at most 25 characters).
        text: String,
        /// Sent back when tapped (at most 2048 bytes).
        postback_data: String,
        /// The number dialled, E.164.
        phone_number: String,
    },
    /// Shows a place on the map.
    ViewLocation {
        /// Shown on the chip (at most 25 characters).
        text: String,
        /// Sent back when tapped (at most 2048 bytes).
        postback_data: String,
        /// Degrees, -90 to 90.
        latitude: f64,
        /// Degrees, -180 to 180.
        longitude: f64,
        /// The pin's label (at most 100 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// Asks the user to share their location.
    ShareLocation {
        /// Shown on the chip (at most 25 characters).
        text: String,
        /// Sent back when tapped (at most 2048 bytes).
        postback_data: String,
    },
    /// Offers to add an event to the calendar.
    CreateCalendarEvent {
        /// Shown on the chip (at most 25 characters).
        text: String,
        /// Sent back when tapped (at most 2048 bytes).
        postback_data: String,
        /// When the event starts, RFC 3339.
        start_time: String,
        /// When the event ends, RFC 3339, after `start_time`.
        end_time: String,
        /// The event's title (at most 100 characters).
        title: String,
        /// The event's description (at most 500 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
}

impl Suggestion {
    /// The text shown on the chip.
    pub fn text(&self) -> &str {
        match self {
            Suggestion::Reply { text, .. }
            | Suggestion::OpenUrl { text, .. }
            | Suggestion::Dial { text, .. }
            | Suggestion::ViewLocation { text, .. }
            | Suggestion::ShareLocation { text, .. }
            | Suggestion::CreateCalendarEvent { text, .. } => text,
        }
    }

    fn postback_data(&self) -> &str {
        match self {
            Suggestion::Reply { postback_data, .. }
            | Suggestion::OpenUrl { postback_data, .. }
            | Suggestion::Dial { postback_data, .. }
            | Suggestion::ViewLocation { postback_data, .. }
            | Suggestion::ShareLocation { postback_data, .. }
            | Suggestion::CreateCalendarEvent { postback_data, .. } => postback_data,
        }
    }
}

/// Every field any kind of content has, for reading content with or without its `type`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnyContent {
    #[serde(rename = "type")]
    tag: Option<ContentKind>,
    text: Option<String>,
    suggestions: Option<Vec<Suggestion>>,
    name: Option<String>,
    language: Option<String>,
    variables: Option<BTreeMap<String, String>>,
    components: Option<Vec<TemplateComponent>>,
    url: Option<String>,
    media_id: Option<String>,
    /// A `MediaKind` for media, any string for `other`.
    kind: Option<String>,
    caption: Option<String>,
    mime_type: Option<String>,
    filename: Option<String>,
    header: Option<InteractiveHeader>,
    body: Option<String>,
    footer: Option<String>,
    action: Option<InteractiveAction>,
    message_id: Option<String>,
    emoji: Option<String>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    address: Option<String>,
    card: Option<RichCard>,
    width: Option<CardWidth>,
    cards: Option<Vec<RichCard>>,
    payload: Option<String>,
    raw: Option<serde_json::Value>,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
enum ContentKind {
    Text,
    Template,
    Media,
    Interactive,
    Reaction,
    Location,
    Card,
    Carousel,
    Reply,
    Other,
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw = AnyContent::deserialize(d)?;
        let kind = match raw.tag {
            Some(kind) => kind,
            None if raw.url.is_some() => ContentKind::Media,
            None if raw.name.is_some() => ContentKind::Template,
            None if raw.text.is_some() => ContentKind::Text,
            None => return Err(D::Error::missing_field("type")),
        };
        // Fields of another kind of content are as unknown as any other field.
        let present = [
            ("text", raw.text.is_some()),
            ("suggestions", raw.suggestions.is_some()),
            ("name", raw.name.is_some()),
            ("language", raw.language.is_some()),
            ("variables", raw.variables.is_some()),
            ("components", raw.components.is_some()),
            ("url", raw.url.is_some()),
            ("media_id", raw.media_id.is_some()),
            ("kind", raw.kind.is_some()),
            ("caption", raw.caption.is_some()),
            ("mime_type", raw.mime_type.is_some()),
            ("filename", raw.filename.is_some()),
            ("header", raw.header.is_some()),
            ("body", raw.body.is_some()),
            ("footer", raw.footer.is_some()),
            ("action", raw.action.is_some()),
            ("message_id", raw.message_id.is_some()),
            ("emoji", raw.emoji.is_some()),
            ("latitude", raw.latitude.is_some()),
            ("longitude", raw.longitude.is_some()),
            ("address", raw.address.is_some()),
            ("card", raw.card.is_some()),
            ("width", raw.width.is_some()),
            ("cards", raw.cards.is_some()),
            ("payload", raw.payload.is_some()),
            ("raw", raw.raw.is_some()),
        ];
        let allowed: &'static [&'static str] = match kind {
            ContentKind::Text => &["type", "text", "suggestions"],
            ContentKind::Template => &["type", "name", "language", "variables", "components"],
            ContentKind::Media => &["type", "url", "media_id", "kind", "caption", "mime_type", "filename"],
            ContentKind::Interactive => &["type", "header", "body", "footer", "action"],
            ContentKind::Reaction => &["type", "message_id", "emoji"],
            ContentKind::Location => &["type", "latitude", "longitude", "name", "address"],
            ContentKind::Card => &["type", "card", "suggestions"],
            ContentKind::Carousel => &["type", "width", "cards", "suggestions"],
            ContentKind::Reply => &["type", "text", "payload"],
            ContentKind::Other => &["type", "kind", "raw"],
        };
        if let Some((field, _)) = present.iter().find(|(f, there)| *there && !allowed.contains(f)) {
            return Err(D::Error::unknown_field(field, allowed));
        }
        fn need<T, E: Error>(v: Option<T>, field: &'static str) -> Result<T, E> {
            v.ok_or_else(|| E::missing_field(field))
        }
        Ok(match kind {
            ContentKind::Text => {
                Content::Text { text: need(raw.text, "text")?, suggestions: raw.suggestions.unwrap_or_default() }
            }
            ContentKind::Template => Content::Template {
                name: need(raw.name, "name")?,
                language: need(raw.language, "language")?,
                variables: raw.variables.unwrap_or_default(),
                components: raw.components.unwrap_or_default(),
            },
            ContentKind::Media => {
                if raw.url.is_none() && raw.media_id.is_none() {
                    return Err(D::Error::missing_field("url"));
                }
                let kind = match raw.kind {
                    None => None,
                    Some(k) => Some(MediaKind::parse(&k).ok_or_else(|| {
                        D::Error::unknown_variant(&k, &["image", "video", "audio", "document", "sticker"])
                    })?),
                };
                Content::Media {
                    url: raw.url,
                    media_id: raw.media_id,
                    kind,
                    caption: raw.caption,
                    mime_type: raw.mime_type,
                    filename: raw.filename,
                }
            }
            ContentKind::Interactive => Content::Interactive {
                header: raw.header,
                body: need(raw.body, "body")?,
                footer: raw.footer,
                action: need(raw.action, "action")?,
            },
            ContentKind::Reaction => {
                Content::Reaction { message_id: need(raw.message_id, "message_id")?, emoji: need(raw.emoji, "emoji")? }
            }
            ContentKind::Location => Content::Location {
                latitude: need(raw.latitude, "latitude")?,
                longitude: need(raw.longitude, "longitude")?,
                name: raw.name,
                address: raw.address,
            },
            ContentKind::Card => {
                Content::Card { card: need(raw.card, "card")?, suggestions: raw.suggestions.unwrap_or_default() }
            }
            ContentKind::Carousel => Content::Carousel {
                width: need(raw.width, "width")?,
                cards: need(raw.cards, "cards")?,
                suggestions: raw.suggestions.unwrap_or_default(),
            },
            ContentKind::Reply => Content::Reply { text: need(raw.text, "text")?, payload: raw.payload },
            ContentKind::Other => Content::Other { kind: need(raw.kind, "kind")?, raw: need(raw.raw, "raw")? },
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

fn https_url_ok(url: &str) -> bool {
    url.len() <= MAX_URL_BYTES
        && url.strip_prefix("https://").is_some_and(|rest| {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !url.chars().any(|c| c.is_whitespace() || c.is_control())
        })
}

fn check_url(field: &'static str, url: &str) -> Result<(), ContentError> {
    if https_url_ok(url) { Ok(()) } else { Err(err(field, "must be an https:// URL with a host, at most 2048 bytes")) }
}

/// A required text of 1 to `max` characters (not only spaces).
fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), ContentError> {
    if text.trim().is_empty() {
        return Err(err(field, "must not be empty"));
    }
    check_len(field, text, max)
}

fn check_len(field: &'static str, text: &str, max: usize) -> Result<(), ContentError> {
    let n = text.chars().count();
    if n > max {
        return Err(err(field, format!("is {n} characters long; at most {max} are allowed")));
    }
    Ok(())
}

/// Exactly one of a URL (https) and a provider media id.
fn check_media_ref(
    url_field: &'static str,
    url: &Option<String>,
    id_field: &'static str,
    media_id: &Option<String>,
) -> Result<(), ContentError> {
    match (url, media_id) {
        (Some(u), None) => check_url(url_field, u),
        (None, Some(id)) => {
            if id.is_empty() || id.len() > 256 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err(err(id_field, "must be 1 to 256 characters without spaces"))
            } else {
                Ok(())
            }
        }
        _ => Err(err(url_field, format!("exactly one of {url_field} and {id_field} is needed"))),
    }
}

fn check_coordinates(lat_field: &'static str, lat: f64, lon_field: &'static str, lon: f64) -> Result<(), ContentError> {
    if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
        return Err(err(lat_field, "must be between -90 and 90"));
    }
    if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
        return Err(err(lon_field, "must be between -180 and 180"));
    }
    Ok(())
}

fn check_suggestions(field: &'static str, suggestions: &[Suggestion], max: usize) -> Result<(), ContentError> {
    if suggestions.len() > max {
        return Err(err(field, format!("at most {max} suggestions are allowed")));
    }
    for s in suggestions {
        check_text(field, s.text(), 25)?;
        if s.postback_data().len() > 2048 {
            return Err(err(field, "postback_data is at most 2048 bytes"));
        }
        match s {
            Suggestion::OpenUrl { url, .. } => check_url(field, url)?,
            Suggestion::Dial { phone_number, .. } => {
                let digits = phone_number.strip_prefix('+').unwrap_or("");
                if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err(field, "phone_number must be in E.164 form, such as +14155550100"));
                }
            }
            Suggestion::ViewLocation { latitude, longitude, label, .. } => {
                check_coordinates(field, *latitude, field, *longitude)?;
                if let Some(l) = label {
                    check_len(field, l, 100)?;
                }
            }
            Suggestion::CreateCalendarEvent { start_time, end_time, title, description, .. } => {
                let start = start_time.parse::<jiff::Timestamp>();
                let end = end_time.parse::<jiff::Timestamp>();
                match (start, end) {
                    (Ok(s), Ok(e)) if s < e => {}
                    _ => return Err(err(field, "start_time and end_time must be RFC 3339 times, start before end")),
                }
                check_text(field, title, 100)?;
                if let Some(d) = description {
                    check_len(field, d, 500)?;
                }
            }
            Suggestion::Reply { .. } | Suggestion::ShareLocation { .. } => {}
        }
    }
    Ok(())
}

fn check_card(field: &'static str, card: &RichCard) -> Result<(), ContentError> {
    if card.title.is_none() && card.description.is_none() && card.media.is_none() {
        return Err(err(field, "needs a title, a description or media"));
    }
    if let Some(t) = &card.title {
        check_text(field, t, 200)?;
    }
    if let Some(d) = &card.description {
        check_text(field, d, 2000)?;
    }
    if let Some(m) = &card.media {
        check_url(field, &m.url)?;
        if let Some(t) = &m.thumbnail_url {
            check_url(field, t)?;
        }
    }
    check_suggestions(field, &card.suggestions, MAX_CARD_SUGGESTIONS)
}

fn check_template_parameter(field: &'static str, p: &TemplateParameter) -> Result<(), ContentError> {
    match p {
        TemplateParameter::Text { text, .. } => check_len(field, text, 1024),
        TemplateParameter::Currency { fallback_value, code, .. } => {
            check_len(field, fallback_value, 1024)?;
            if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(err(field, "currency code must be an ISO 4217 code such as USD"));
            }
            Ok(())
        }
        TemplateParameter::DateTime { fallback_value, .. } => check_len(field, fallback_value, 1024),
        TemplateParameter::Image { url, media_id } | TemplateParameter::Video { url, media_id } => {
            check_media_ref(field, url, field, media_id)
        }
        TemplateParameter::Document { url, media_id, filename } => {
            check_media_ref(field, url, field, media_id)?;
            filename.as_ref().map_or(Ok(()), |f| check_len(field, f, MAX_FILENAME_CHARS))
        }
        TemplateParameter::Location { latitude, longitude, .. } => {
            check_coordinates(field, *latitude, field, *longitude)
        }
        TemplateParameter::Payload { payload } => check_len(field, payload, 1024),
        TemplateParameter::CouponCode { coupon_code } => check_text(field, coupon_code, 15),
        TemplateParameter::Action { .. } => Ok(()),
    }
}

impl Content {
    /// Plain text without suggestions.
    pub fn text(text: impl Into<String>) -> Content {
        Content::Text { text: text.into(), suggestions: Vec::new() }
    }

    /// The `type` of the content, as written in JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Content::Text { .. } => "text",
            Content::Template { .. } => "template",
            Content::Media { .. } => "media",
            Content::Interactive { .. } => "interactive",
            Content::Reaction { .. } => "reaction",
            Content::Location { .. } => "location",
            Content::Card { .. } => "card",
            Content::Carousel { .. } => "carousel",
            Content::Reply { .. } => "reply",
            Content::Other { .. } => "other",
        }
    }

    /// Whether the channel can carry this content outbound.
    pub fn supported_on(&self, channel: Channel) -> bool {
        match (self, channel) {
            (Content::Reply { .. } | Content::Other { .. }, _) => false,
            (_, Channel::Webchat) => true,
            (Content::Text { suggestions, .. }, Channel::Sms | Channel::Whatsapp) => suggestions.is_empty(),
            (Content::Media { .. }, Channel::Sms) => true,
            (_, Channel::Sms) => false,
            (
                Content::Template { .. }
                | Content::Media { .. }
                | Content::Interactive { .. }
                | Content::Reaction { .. }
                | Content::Location { .. },
                Channel::Whatsapp,
            ) => true,
            (_, Channel::Whatsapp) => false,
            (
                Content::Text { .. } | Content::Media { .. } | Content::Card { .. } | Content::Carousel { .. },
                Channel::Rcs,
            ) => true,
            (_, Channel::Rcs) => false,
        }
    }

    /// Check the limits that the type alone cannot express (for content sent out).
    pub fn validate(&self) -> Result<(), ContentError> {
        match self {
            Content::Text { text, suggestions } => {
                check_text("text", text, MAX_TEXT_CHARS)?;
                check_suggestions("suggestions", suggestions, MAX_SUGGESTIONS)?;
            }
            Content::Template { name, language, variables, components } => {
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
                if components.len() > MAX_TEMPLATE_COMPONENTS {
                    return Err(err("components", format!("at most {MAX_TEMPLATE_COMPONENTS} components are allowed")));
                }
                for c in components {
                    if c.parameters.len() > MAX_TEMPLATE_VARIABLES {
                        return Err(err(
                            "components",
                            format!("at most {MAX_TEMPLATE_VARIABLES} parameters are allowed per component"),
                        ));
                    }
                    match c.kind {
                        TemplateComponentKind::Button => {
                            if c.index.is_none() || c.sub_type.is_none() {
                                return Err(err("components", "a button component needs its index and sub_type"));
                            }
                        }
                        TemplateComponentKind::Header | TemplateComponentKind::Body => {
                            if c.index.is_some() || c.sub_type.is_some() {
                                return Err(err("components", "index and sub_type are for button components"));
                            }
                        }
                    }
                    if let Some(s) = &c.sub_type
                        && (s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                    {
                        return Err(err("components", "sub_type must be a name such as quick_reply or url"));
                    }
                    for p in &c.parameters {
                        check_template_parameter("components", p)?;
                    }
                }
            }
            Content::Media { url, media_id, kind: _, caption, mime_type, filename } => {
                check_media_ref("url", url, "media_id", media_id)?;
                if let Some(c) = caption {
                    check_len("caption", c, MAX_CAPTION_CHARS)?;
                }
                if mime_type.as_ref().is_some_and(|m| m.len() > 127 || !m.contains('/')) {
                    return Err(err("mime_type", "must be a media type such as image/jpeg"));
                }
                if let Some(f) = filename {
                    check_text("filename", f, MAX_FILENAME_CHARS)?;
                }
            }
            Content::Interactive { header, body, footer, action } => {
                match header {
                    None => {}
                    Some(InteractiveHeader::Text { text }) => check_text("header.text", text, 60)?,
                    Some(InteractiveHeader::Image { url, media_id } | InteractiveHeader::Video { url, media_id }) => {
                        check_media_ref("header.url", url, "header.media_id", media_id)?
                    }
                    Some(InteractiveHeader::Document { url, media_id, filename }) => {
                        check_media_ref("header.url", url, "header.media_id", media_id)?;
                        if let Some(f) = filename {
                            check_text("header.filename", f, MAX_FILENAME_CHARS)?;
                        }
                    }
                }
                check_text("body", body, 1024)?;
                if let Some(f) = footer {
                    check_text("footer", f, 60)?;
                }
                match action {
                    InteractiveAction::Buttons { buttons } => {
                        if !(1..=3).contains(&buttons.len()) {
                            return Err(err("action.buttons", "1 to 3 buttons are needed"));
                        }
                        for b in buttons {
                            check_text("action.buttons", &b.id, 256)?;
                            check_text("action.buttons", &b.title, 20)?;
                        }
                        let mut ids: Vec<&str> = buttons.iter().map(|b| b.id.as_str()).collect();
                        ids.sort_unstable();
                        ids.dedup();
                        if ids.len() != buttons.len() {
                            return Err(err("action.buttons", "button ids must differ"));
                        }
                    }
                    InteractiveAction::List { button, sections } => {
                        check_text("action.button", button, 20)?;
                        if !(1..=10).contains(&sections.len()) {
                            return Err(err("action.sections", "1 to 10 sections are needed"));
                        }
                        let rows: usize = sections.iter().map(|s| s.rows.len()).sum();
                        if !(1..=10).contains(&rows) || sections.iter().any(|s| s.rows.is_empty()) {
                            return Err(err("action.sections", "every section needs rows, 10 rows at most in all"));
                        }
                        if sections.len() > 1 && sections.iter().any(|s| s.title.is_none()) {
                            return Err(err("action.sections", "every section needs a title when there are several"));
                        }
                        for s in sections {
                            if let Some(t) = &s.title {
                                check_text("action.sections", t, 24)?;
                            }
                            for r in &s.rows {
                                check_text("action.sections", &r.id, 200)?;
                                check_text("action.sections", &r.title, 24)?;
                                if let Some(d) = &r.description {
                                    check_len("action.sections", d, 72)?;
                                }
                            }
                        }
                    }
                    InteractiveAction::CtaUrl { display_text, url } => {
                        check_text("action.display_text", display_text, 20)?;
                        check_url("action.url", url)?;
                    }
                }
            }
            Content::Reaction { message_id, emoji } => {
                check_text("message_id", message_id, 256)?;
                if emoji.chars().count() > 16 || emoji.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(err("emoji", "must be one emoji, or empty to remove a reaction"));
                }
            }
            Content::Location { latitude, longitude, name, address } => {
                check_coordinates("latitude", *latitude, "longitude", *longitude)?;
                if let Some(n) = name {
                    check_len("name", n, 1000)?;
                }
                if let Some(a) = address {
                    check_len("address", a, 1000)?;
                }
            }
            Content::Card { card, suggestions } => {
                check_card("card", card)?;
                check_suggestions("suggestions", suggestions, MAX_SUGGESTIONS)?;
            }
            Content::Carousel { width: _, cards, suggestions } => {
                if !(2..=10).contains(&cards.len()) {
                    return Err(err("cards", "2 to 10 cards are needed"));
                }
                for c in cards {
                    check_card("cards", c)?;
                    if c.orientation.is_some() {
                        return Err(err("cards", "orientation is for standalone cards only"));
                    }
                }
                check_suggestions("suggestions", suggestions, MAX_SUGGESTIONS)?;
            }
            Content::Reply { .. } | Content::Other { .. } => {
                return Err(err("type", format!("{} content is only received, never sent", self.kind())));
            }
        }
        Ok(())
    }

    /// The text a plain-text channel shows (SMS), or a one-line summary of richer content.
    pub fn preview_text(&self) -> String {
        match self {
            Content::Text { text, .. } => text.clone(),
            Content::Template { name, .. } => format!("[template {name}]"),
            Content::Media { url, media_id, kind, caption, mime_type, .. } => {
                let what = match url {
                    Some(u) => u.clone(),
                    None => {
                        let kind = kind.unwrap_or_else(|| MediaKind::guess(mime_type.as_deref(), None));
                        format!("[{} {}]", kind.as_str(), media_id.as_deref().unwrap_or(""))
                    }
                };
                match caption {
                    Some(c) => format!("{c} {what}"),
                    None => what,
                }
            }
            Content::Interactive { body, .. } => body.clone(),
            Content::Reaction { emoji, .. } => {
                if emoji.is_empty() {
                    "[reaction removed]".to_string()
                } else {
                    emoji.clone()
                }
            }
            Content::Location { latitude, longitude, name, address } => {
                let place = [name.as_deref(), address.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(", ");
                if place.is_empty() {
                    format!("[location {latitude},{longitude}]")
                } else {
                    format!("{place} [location {latitude},{longitude}]")
                }
            }
            Content::Card { card, .. } => card_preview(card),
            Content::Carousel { cards, .. } => cards.iter().map(card_preview).collect::<Vec<_>>().join(" | "),
            Content::Reply { text, .. } => text.clone(),
            Content::Other { kind, .. } => format!("[{kind}]"),
        }
    }
}

fn card_preview(card: &RichCard) -> String {
    let parts: Vec<&str> =
        [card.title.as_deref(), card.description.as_deref(), card.media.as_ref().map(|m| m.url.as_str())]
            .into_iter()
            .flatten()
            .collect();
    if parts.is_empty() { "[card]".to_string() } else { parts.join(" ") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn media(url: &str) -> Content {
        Content::Media {
            url: Some(url.into()),
            media_id: None,
            kind: None,
            caption: None,
            mime_type: None,
            filename: None,
        }
    }

    #[test]
    fn json_forms_parse() {
        let c: Content = serde_json::from_str(r#"{"type":"text","text":"hi"}"#).unwrap();
        assert_eq!(c, Content::text("hi"));
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
        assert_eq!(c, Content::text("hi"));
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
        assert_eq!(serde_json::to_string(&Content::text("hi")).unwrap(), r#"{"type":"text","text":"hi"}"#);
    }

    #[test]
    fn unknown_fields_and_types_are_refused() {
        let e = serde_json::from_str::<Content>(r#"{"type":"text","text":"hi","bogus":1}"#).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        assert!(serde_json::from_str::<Content>(r#"{"type":"fax","text":"hi"}"#).is_err());
        let e = serde_json::from_str::<Content>(r#"{"type":"media","media_id":"1","kind":"hologram"}"#).unwrap_err();
        assert!(e.to_string().contains("hologram"), "{e}");
    }

    #[test]
    fn limits_are_enforced() {
        assert_eq!(Content::text(" ").validate().unwrap_err().field, "text");
        assert!(Content::text("x".repeat(4097)).validate().is_err());
        assert!(Content::text("é".repeat(4096)).validate().is_ok());
        assert!(media("http://x.example/a.jpg").validate().is_err());
        assert!(media("https:///a.jpg").validate().is_err());
        assert!(media("https://x.example/a b.jpg").validate().is_err());
        let t = Content::Template {
            name: "Bad Name".into(),
            language: "en".into(),
            variables: BTreeMap::new(),
            components: vec![],
        };
        assert_eq!(t.validate().unwrap_err().field, "name");
    }

    /// Every new kind round-trips through its JSON form and validates.
    #[test]
    fn every_kind_round_trips() {
        let samples = [
            json!({"type": "text", "text": "Pick one", "suggestions": [
                {"type": "reply", "text": "Yes", "postback_data": "yes"},
                {"type": "open_url", "text": "Site", "postback_data": "site", "url": "https://x.example"},
                {"type": "dial", "text": "Call", "postback_data": "call", "phone_number": "+14155550100"},
                {"type": "view_location", "text": "Map", "postback_data": "map", "latitude": 1.5, "longitude": 2.5, "label": "HQ"},
                {"type": "share_location", "text": "Where?", "postback_data": "where"},
                {"type": "create_calendar_event", "text": "Save", "postback_data": "cal",
                 "start_time": "2026-01-01T10:00:00Z", "end_time": "2026-01-01T11:00:00Z", "title": "Visit"}
            ]}),
            json!({"type": "template", "name": "order", "language": "en_US", "components": [
                {"type": "header", "parameters": [{"type": "image", "url": "https://x.example/a.png"}]},
                {"type": "body", "parameters": [
                    {"type": "text", "text": "Ann", "parameter_name": "first_name"},
                    {"type": "currency", "fallback_value": "$1", "code": "USD", "amount_1000": 1000},
                    {"type": "date_time", "fallback_value": "May 1"}
                ]},
                {"type": "button", "sub_type": "quick_reply", "index": 0, "parameters": [{"type": "payload", "payload": "p"}]},
                {"type": "button", "sub_type": "copy_code", "index": 1, "parameters": [{"type": "coupon_code", "coupon_code": "SAVE10"}]},
                {"type": "button", "sub_type": "flow", "index": 2, "parameters": [{"type": "action", "flow_token": "t"}]}
            ]}),
            json!({"type": "media", "media_id": "1234", "kind": "sticker"}),
            json!({"type": "media", "url": "https://x.example/a.pdf", "kind": "document", "caption": "c", "filename": "a.pdf"}),
            json!({"type": "interactive", "header": {"type": "text", "text": "Hi"}, "body": "Choose", "footer": "f",
                   "action": {"type": "buttons", "buttons": [{"id": "a", "title": "A"}, {"id": "b", "title": "B"}]}}),
            json!({"type": "interactive", "body": "Choose", "action": {"type": "list", "button": "Open", "sections": [
                {"title": "S", "rows": [{"id": "r1", "title": "Row", "description": "d"}]}]}}),
            json!({"type": "interactive", "body": "Visit", "action": {"type": "cta_url", "display_text": "Go", "url": "https://x.example"}}),
            json!({"type": "reaction", "message_id": "wamid.X", "emoji": "👍"}),
            json!({"type": "reaction", "message_id": "wamid.X", "emoji": ""}),
            json!({"type": "location", "latitude": 37.75, "longitude": -122.42, "name": "HQ"}),
            json!({"type": "card", "card": {"title": "T", "media": {"url": "https://x.example/a.png", "height": "tall"},
                   "orientation": "vertical", "suggestions": [{"type": "reply", "text": "Yes", "postback_data": "y"}]}}),
            json!({"type": "carousel", "width": "medium", "cards": [{"title": "A"}, {"description": "B"}]}),
        ];
        for s in samples {
            let c: Content = serde_json::from_value(s.clone()).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(serde_json::to_value(&c).unwrap(), s);
            c.validate().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert!(!c.preview_text().is_empty());
        }
    }

    #[test]
    fn inbound_only_kinds_parse_but_are_not_sent() {
        let r: Content = serde_json::from_value(json!({"type": "reply", "text": "Yes", "payload": "y"})).unwrap();
        assert_eq!(r.validate().unwrap_err().field, "type");
        let o: Content = serde_json::from_value(json!({"type": "other", "kind": "contacts", "raw": {"a": 1}})).unwrap();
        assert_eq!(o.preview_text(), "[contacts]");
        assert!(o.validate().is_err());
        for ch in Channel::ALL {
            assert!(!r.supported_on(ch) && !o.supported_on(ch));
        }
    }

    #[test]
    fn new_limits_are_enforced() {
        let both = Content::Media {
            url: Some("https://x.example/a.png".into()),
            media_id: Some("1".into()),
            kind: None,
            caption: None,
            mime_type: None,
            filename: None,
        };
        assert_eq!(both.validate().unwrap_err().field, "url");
        let buttons = |n: usize| Content::Interactive {
            header: None,
            body: "b".into(),
            footer: None,
            action: InteractiveAction::Buttons {
                buttons: (0..n).map(|i| ReplyButton { id: format!("{i}"), title: "t".into() }).collect(),
            },
        };
        assert!(buttons(3).validate().is_ok());
        assert_eq!(buttons(4).validate().unwrap_err().field, "action.buttons");
        assert_eq!(buttons(0).validate().unwrap_err().field, "action.buttons");
        let loc = Content::Location { latitude: 91.0, longitude: 0.0, name: None, address: None };
        assert_eq!(loc.validate().unwrap_err().field, "latitude");
        let card = RichCard {
            title: Some("t".into()),
            description: None,
            media: None,
            suggestions: vec![],
            orientation: None,
        };
        let carousel =
            |n: usize| Content::Carousel { width: CardWidth::Small, cards: vec![card.clone(); n], suggestions: vec![] };
        assert!(carousel(2).validate().is_ok());
        assert!(carousel(1).validate().is_err());
        assert!(carousel(11).validate().is_err());
        let chips = (0..12).map(|i| Suggestion::Reply { text: format!("{i}"), postback_data: "p".into() }).collect();
        assert!(Content::Text { text: "t".into(), suggestions: chips }.validate().is_err());
    }

    #[test]
    fn channels_support_what_they_can_carry() {
        let chip = Suggestion::Reply { text: "Yes".into(), postback_data: "y".into() };
        let with_chips = Content::Text { text: "t".into(), suggestions: vec![chip] };
        let template = Content::Template {
            name: "a".into(),
            language: "en".into(),
            variables: BTreeMap::new(),
            components: vec![],
        };
        let reaction = Content::Reaction { message_id: "m".into(), emoji: "👍".into() };
        assert!(Content::text("t").supported_on(Channel::Sms));
        assert!(media("https://x.example/a.png").supported_on(Channel::Sms));
        assert!(!template.supported_on(Channel::Sms));
        assert!(template.supported_on(Channel::Whatsapp));
        assert!(reaction.supported_on(Channel::Whatsapp));
        assert!(!with_chips.supported_on(Channel::Whatsapp));
        assert!(with_chips.supported_on(Channel::Rcs));
        assert!(!reaction.supported_on(Channel::Rcs));
        assert!(reaction.supported_on(Channel::Webchat));
    }

    #[test]
    fn media_kind_is_guessed() {
        assert_eq!(MediaKind::guess(Some("image/png"), None), MediaKind::Image);
        assert_eq!(MediaKind::guess(Some("application/pdf"), Some("https://x/a.png")), MediaKind::Document);
        assert_eq!(MediaKind::guess(None, Some("https://x.example/v.MP4?sig=1")), MediaKind::Video);
        assert_eq!(MediaKind::guess(None, Some("https://x.example/a.ogg")), MediaKind::Audio);
        assert_eq!(MediaKind::guess(None, Some("https://x.example/file")), MediaKind::Document);
    }
}
