//! Provider callbacks: what arrives at `/hooks/{provider}/{channel_account_id}`, and what a
//! connector makes of it. Kept free of the HTTP server's types so that each connector's ingress
//! is a pure function of bytes, testable against the fixtures.

use parley_domain::{InboundMessage, Millis, Receipt};

/// One callback as it reached Parley.
#[derive(Clone, Debug)]
pub struct IngressRequest<'a> {
    /// `GET` or `POST` (upper case).
    pub method: &'a str,
    /// The URL the provider called, as the provider knows it (the configured public base URL,
    /// then path and query): Twilio signs it.
    pub url: &'a str,
    /// The raw query string, without `?` (empty if none).
    pub query: &'a str,
    /// Header names in lower case, in the order received.
    pub headers: &'a [(String, String)],
    /// The raw body, exactly as received: signatures are over these bytes.
    pub body: &'a [u8],
    /// When it arrived.
    pub received_at: Millis,
}

impl IngressRequest<'_> {
    /// The first header named `name` (give it in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The query string's pairs, percent-decoded.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.query.as_bytes()).into_owned().collect()
    }

    /// The first query parameter named `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs().into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// The HTTP answer to a callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl IngressReply {
    /// `200 OK` with an empty body: what every provider expects for a callback it sent.
    pub fn ok() -> IngressReply {
        IngressReply { status: 200, content_type: "text/plain; charset=utf-8", body: Vec::new() }
    }

    /// `200 OK` with a plain-text body (a verification challenge echoed back).
    pub fn text(body: impl Into<String>) -> IngressReply {
        IngressReply { status: 200, content_type: "text/plain; charset=utf-8", body: body.into().into_bytes() }
    }

    /// `200 OK` with a JSON body.
    pub fn json(body: &serde_json::Value) -> IngressReply {
        IngressReply { status: 200, content_type: "application/json", body: body.to_string().into_bytes() }
    }

    /// `200 OK` with an XML body (Twilio's empty TwiML answer).
    pub fn xml(body: impl Into<String>) -> IngressReply {
        IngressReply { status: 200, content_type: "application/xml", body: body.into().into_bytes() }
    }
}

/// What a verified callback said.
#[derive(Clone, Debug, PartialEq)]
pub struct IngressOutcome {
    /// Sent once what follows is stored.
    pub reply: IngressReply,
    pub receipts: Vec<Receipt>,
    pub inbound: Vec<InboundMessage>,
}

impl IngressOutcome {
    /// Nothing to store, just `reply` (a verification handshake, a typing indicator).
    pub fn reply_only(reply: IngressReply) -> IngressOutcome {
        IngressOutcome { reply, receipts: Vec::new(), inbound: Vec::new() }
    }
}

/// Why a callback was refused. Nothing of a refused callback is stored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IngressError {
    /// The signature is missing or wrong (401).
    #[error("signature missing or invalid: {0}")]
    BadSignature(String),
    /// A verification handshake with the wrong token (403).
    #[error("verification refused: {0}")]
    Forbidden(String),
    /// Signed correctly but not a payload this connector understands (400). Payloads of a known
    /// shape with unknown parts are not errors: those parts are stored raw.
    #[error("malformed callback: {0}")]
    Malformed(String),
    /// This provider sends no callbacks, or none of this method (404).
    #[error("this channel account takes no callbacks of this kind")]
    NotSupported,
}

impl IngressError {
    /// A short stable name for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            IngressError::BadSignature(_) => "bad_signature",
            IngressError::Forbidden(_) => "forbidden",
            IngressError::Malformed(_) => "malformed",
            IngressError::NotSupported => "not_supported",
        }
    }
}
