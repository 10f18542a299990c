//! Delivery receipts: a `deliver_sm` whose `esm_class` says "SMSC delivery receipt", read into a
//! [`Receipt`].
//!
//! **Where the facts come from.** The `receipted_message_id` (0x001E) and `message_state`
//! (0x0427) TLVs when present (as Jasmin does, its issue #427), else the Appendix B text
//! (`id:… sub:… dlvrd:… submit date:… done date:… stat:… err:… text:…`), read from
//! `short_message` or, when that is empty, from `message_payload`. Field names are matched
//! without regard to case (`Text:`), any field may be missing except `id` and `stat`, and dates
//! may have 10 or 12 digits; they are kept as given in `details`.
//!
//! **States.** `DELIVRD` → `delivered`; `UNDELIV`, `EXPIRED`, `DELETED` and `UNKNOWN` →
//! `undelivered` (the carrier took the message and it did not reach the handset, or the carrier
//! cannot say it did); `REJECTD` → `failed` (refused by the network after the SMSC took it);
//! `ENROUTE` and `ACCEPTD` (and anything unrecognised) change nothing and produce no receipt.
//! The error code is `smpp:<stat in lower case>` (`smpp:undeliv`); its detail carries `err` and
//! the `network_error_code` TLV. `occurred_at` is the time the receipt arrived: `done date` has
//! no time zone, so it is kept raw in `details` rather than guessed.
//!
//! **Ids.** See [`normalize_id`] and [`IdConversion`].

use super::pdu::{Sm, tag};
use parley_domain::{ChannelAccountId, ErrorInfo, MessageState, Millis, Receipt};
use serde::{Deserialize, Serialize};

/// How the id in a receipt relates to the `message_id` of `submit_sm_resp` (Kannel calls this
/// `msg-id-type`). Some SMSCs answer a submit with a hex id and report on it in decimal, or the
/// other way round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdConversion {
    /// Both ids are in the same form (the default).
    #[default]
    Same,
    /// `submit_sm_resp` gives hex, receipts give decimal: receipt ids are converted to hex.
    SubmitHexReceiptDecimal,
    /// `submit_sm_resp` gives decimal, receipts give hex: receipt ids are converted to decimal.
    SubmitDecimalReceiptHex,
}

/// The canonical form of an SMSC message id, the same for the id of `submit_sm_resp` and the id
/// of its receipt: surrounding white space and NULs removed, lower case, and — for an id made
/// only of hex digits (which includes decimal ids) — leading zeros removed (`"0"` stays). UUIDs
/// and other ids keep their zeros. So `00A1B2`, `a1b2` and ` A1B2\0` are the same id.
pub fn normalize_id(id: &str) -> String {
    let id = id.trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_ascii_lowercase();
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        let stripped = id.trim_start_matches('0');
        return if stripped.is_empty() { "0".into() } else { stripped.into() };
    }
    id
}

/// The canonical form of a receipt's id, converted per `conversion` first. An id that cannot be
/// converted (not a number of that base, or more than 128 bits) is only normalised.
pub fn receipt_id(id: &str, conversion: IdConversion) -> String {
    let n = normalize_id(id);
    let converted = match conversion {
        IdConversion::Same => None,
        IdConversion::SubmitHexReceiptDecimal => n.parse::<u128>().ok().map(|v| format!("{v:x}")),
        IdConversion::SubmitDecimalReceiptHex => u128::from_str_radix(&n, 16).ok().map(|v| v.to_string()),
    };
    converted.unwrap_or(n)
}

/// The fields of a receipt's text, as found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiptText {
    pub id: Option<String>,
    pub sub: Option<String>,
    pub dlvrd: Option<String>,
    pub submit_date: Option<String>,
    pub done_date: Option<String>,
    pub stat: Option<String>,
    pub err: Option<String>,
    pub text: Option<String>,
}

const KEYS: [&str; 8] = ["id:", "sub:", "dlvrd:", "submit date:", "done date:", "stat:", "err:", "text:"];

/// Read the Appendix B text. Keys are found wherever they start a word, in any case; a value
/// runs to the next key (`text:` to the end).
pub fn parse_text(raw: &str) -> ReceiptText {
    let lower = raw.to_ascii_lowercase();
    // (position of the key, key index)
    let mut found: Vec<(usize, usize)> = Vec::new();
    for (k, key) in KEYS.iter().enumerate() {
        let mut from = 0;
        while let Some(p) = lower[from..].find(key) {
            let at = from + p;
            let starts_word = at == 0 || lower.as_bytes()[at - 1].is_ascii_whitespace();
            if starts_word && !found.iter().any(|&(_, kk)| kk == k) {
                // "submit date:" contains no other key's start; "text:" must not be found inside
                // the text itself before the real key, so the first occurrence wins.
                found.push((at, k));
                break;
            }
            from = at + key.len();
        }
    }
    found.sort_unstable();
    let mut out = ReceiptText::default();
    for (i, &(at, k)) in found.iter().enumerate() {
        let start = at + KEYS[k].len();
        let end = if KEYS[k] == "text:" { raw.len() } else { found.get(i + 1).map_or(raw.len(), |&(next, _)| next) };
        if start > end {
            continue;
        }
        let value = raw.get(start..end).unwrap_or("");
        let value = if KEYS[k] == "text:" { value.to_string() } else { value.trim().to_string() };
        let slot = match k {
            0 => &mut out.id,
            1 => &mut out.sub,
            2 => &mut out.dlvrd,
            3 => &mut out.submit_date,
            4 => &mut out.done_date,
            5 => &mut out.stat,
            6 => &mut out.err,
            _ => &mut out.text,
        };
        *slot = Some(value);
    }
    out
}

/// `stat` for a `message_state` TLV value.
pub fn stat_of_message_state(state: u8) -> Option<&'static str> {
    Some(match state {
        1 => "ENROUTE",
        2 => "DELIVRD",
        3 => "EXPIRED",
        4 => "DELETED",
        5 => "UNDELIV",
        6 => "ACCEPTD",
        7 => "UNKNOWN",
        8 => "REJECTD",
        _ => return None,
    })
}

/// The Parley state for a `stat`; `None` for states that change nothing.
pub fn state_of_stat(stat: &str) -> Option<MessageState> {
    match stat.trim().to_ascii_uppercase().as_str() {
        "DELIVRD" | "DELIVERED" => Some(MessageState::Delivered),
        "UNDELIV" | "UNDELIVERABLE" | "EXPIRED" | "DELETED" | "UNKNOWN" => Some(MessageState::Undelivered),
        "REJECTD" | "REJECTED" => Some(MessageState::Failed),
        _ => None,
    }
}

/// What a receipt `deliver_sm` says, before it becomes a [`Receipt`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedReceipt {
    /// The SMSC's id of the message, canonical (see [`receipt_id`]).
    pub id: String,
    /// `DELIVRD`, `UNDELIV`, … (from the TLV when there is one).
    pub stat: String,
    pub fields: ReceiptText,
    /// The `network_error_code` TLV, hex.
    pub network_error_code: Option<String>,
    pub message_state: Option<u8>,
    /// The text as received (lossy UTF-8).
    pub raw: String,
}

/// Read a receipt `deliver_sm`; `None` when it is not a receipt or has no id or state.
pub fn parse(sm: &Sm, conversion: IdConversion) -> Option<ParsedReceipt> {
    if !sm.is_delivery_receipt() {
        return None;
    }
    let raw: String = String::from_utf8_lossy(sm.payload()).into_owned();
    let fields = parse_text(&raw);
    let tlv_id = sm
        .tlv(tag::RECEIPTED_MESSAGE_ID)
        .map(|v| String::from_utf8_lossy(v).trim_end_matches('\0').to_string())
        .filter(|s| !s.trim().is_empty());
    let message_state = sm.tlv(tag::MESSAGE_STATE).and_then(|v| v.first().copied());
    let id = tlv_id.or_else(|| fields.id.clone()).filter(|s| !s.trim().is_empty())?;
    let stat = message_state
        .and_then(stat_of_message_state)
        .map(str::to_string)
        .or_else(|| fields.stat.clone())
        .filter(|s| !s.is_empty())?;
    let network_error_code = sm.tlv(tag::NETWORK_ERROR_CODE).map(hex::encode);
    Some(ParsedReceipt { id: receipt_id(&id, conversion), stat, fields, network_error_code, message_state, raw })
}

impl ParsedReceipt {
    /// The receipt for the engine; `None` for states that change nothing (`ENROUTE`, `ACCEPTD`).
    pub fn to_receipt(&self, account: ChannelAccountId, received_at: Millis) -> Option<Receipt> {
        let state = state_of_stat(&self.stat)?;
        let stat = self.stat.trim().to_ascii_uppercase();
        let error = (state != MessageState::Delivered).then(|| {
            let mut detail = format!("the SMSC reports {stat}");
            if let Some(err) = &self.fields.err {
                detail.push_str(&format!(", err {err}"));
            }
            if let Some(code) = &self.network_error_code {
                detail.push_str(&format!(", network_error_code {code}"));
            }
            ErrorInfo { code: format!("smpp:{}", stat.to_ascii_lowercase()), detail, permanent: true }
        });
        let mut details = serde_json::Map::new();
        details.insert("stat".into(), stat.clone().into());
        let f = &self.fields;
        for (k, v) in [
            ("err", &f.err),
            ("sub", &f.sub),
            ("dlvrd", &f.dlvrd),
            ("submit_date", &f.submit_date),
            ("done_date", &f.done_date),
            ("text", &f.text),
        ] {
            if let Some(v) = v {
                details.insert(k.into(), v.clone().into());
            }
        }
        if let Some(code) = &self.network_error_code {
            details.insert("network_error_code".into(), code.clone().into());
        }
        if let Some(s) = self.message_state {
            details.insert("message_state".into(), s.into());
        }
        details.insert("raw".into(), self.raw.clone().into());
        Some(Receipt {
            channel_account_id: account,
            provider_message_id: self.id.clone(),
            state,
            occurred_at: received_at,
            error,
            details: Some(serde_json::Value::Object(details)),
        })
    }
}

/// The Appendix B text of a receipt (what the fake SMSC sends).
pub fn format_text(id: &str, stat: &str, err: &str, date: &str) -> String {
    format!("id:{id} sub:001 dlvrd:001 submit date:{date} done date:{date} stat:{stat} err:{err} text:")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smpp::pdu::{Body, Pdu};

    fn jasmin() -> serde_json::Value {
        serde_json::from_str(include_str!("../../tests/fixtures/smpp/jasmin_wire_pdus_and_dlrs.json")).unwrap()
    }

    #[test]
    fn every_text_variant_parses() {
        let json = jasmin();
        let variants: Vec<&str> =
            json["dlr_short_message_variants"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(variants.len(), 7);
        let expected_ids = [
            "1891273321",
            "1891273321",
            "4a38dc46-5125-4969-90be-72104c340d5c",
            "5000",
            "68673723",
            "a29f6845555647139e5c8f3b817f2c9a",
            "c87c2273-7edb-4bc7-8d3a-7f57f21b625e",
        ];
        for (raw, id) in variants.iter().zip(expected_ids) {
            let f = parse_text(raw);
            assert_eq!(f.id.as_deref(), Some(id), "{raw}");
            assert_eq!(f.stat.as_deref(), Some("DELIVRD"), "{raw}");
            assert!(f.done_date.is_some(), "{raw}");
            let sm = Sm { esm_class: 0x04, short_message: raw.as_bytes().to_vec(), ..Sm::default() };
            let p = parse(&sm, IdConversion::Same).unwrap();
            let r = p.to_receipt(ChannelAccountId::new(), Millis(0)).unwrap();
            assert_eq!(r.state, MessageState::Delivered);
            assert_eq!(r.provider_message_id, normalize_id(id));
            assert_eq!(r.details.as_ref().unwrap()["raw"], *raw);
        }
        let f = parse_text(variants[4]);
        assert_eq!(f.err.as_deref(), Some("0"));
        assert_eq!(f.text.as_deref(), Some("\\x04\\x1a"));
        assert_eq!(f.sub.as_deref(), Some("1"));
        let f = parse_text(variants[3]);
        assert_eq!((f.sub, f.dlvrd, f.text), (None, None, None));
        assert_eq!(f.submit_date.as_deref(), Some("201506201641"));
        assert_eq!(parse_text(variants[1]).text.as_deref(), Some("DLVRD TO MOBILE"));
    }

    #[test]
    fn every_jasmin_receipt_pdu() {
        let json = jasmin();
        // (test, id, state) for each deliver_sm receipt in the captures.
        let expected = [
            ("test_deliver_sm_unknown_param_network_error_code", "6a3ed98a66444e8abac3acd9bba8656f", "UNDELIV"),
            ("test_any_network_error_code", "bc59b8aa-2fd2-4035-8113-19301e050079", "DELIVRD"),
            ("test_deliver_sm_with_message_payload", "6aad5", "DELIVRD"),
            ("test_unknown_tag_value_0x1454", "145100315320224957", "DELIVRD"),
            ("test_unknown_tag_value_0x60D", "4d19c83c", "DELIVRD"),
            ("test_deliver_sm_resp_unknown_error", "18d0e03a", "DELIVRD"),
            ("test_deliver_sm_resp_opt_param_not_allow_more_messages_to_send", "18d0e03a", "DELIVRD"),
        ];
        let mut receipts = 0;
        for case in json["pdus"].as_array().unwrap() {
            let name = case["test"].as_str().unwrap();
            let pdu = Pdu::decode(&hex::decode(case["hex"].as_str().unwrap()).unwrap()).unwrap();
            let Body::DeliverSm(sm) = pdu.body else { continue };
            let Some(p) = parse(&sm, IdConversion::Same) else {
                assert!(!sm.is_delivery_receipt(), "{name}");
                continue;
            };
            receipts += 1;
            let &(_, id, stat) = expected.iter().find(|e| e.0 == name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!((p.id.as_str(), p.stat.as_str()), (id, stat), "{name}");
            let r = p.to_receipt(ChannelAccountId::new(), Millis(0)).unwrap();
            if stat == "UNDELIV" {
                assert_eq!(r.state, MessageState::Undelivered);
                let e = r.error.unwrap();
                assert_eq!(e.code, "smpp:undeliv");
                assert!(e.detail.contains("network_error_code 303030"), "{}", e.detail);
            }
        }
        assert_eq!(receipts, expected.len());
    }

    #[test]
    fn tlvs_win_over_the_text() {
        let text = format_text("123", "DELIVRD", "000", "2611280101");
        let mut sm = Sm { esm_class: 0x04, short_message: text.into_bytes(), ..Sm::default() };
        sm.tlvs.push(crate::smpp::pdu::Tlv::cstring(tag::RECEIPTED_MESSAGE_ID, "00ABC"));
        sm.tlvs.push(crate::smpp::pdu::Tlv::new(tag::MESSAGE_STATE, [5]));
        let p = parse(&sm, IdConversion::Same).unwrap();
        assert_eq!((p.id.as_str(), p.stat.as_str()), ("abc", "UNDELIV"));
    }

    #[test]
    fn states() {
        let st = |s: &str| state_of_stat(s);
        assert_eq!(st("DELIVRD"), Some(MessageState::Delivered));
        for s in ["UNDELIV", "EXPIRED", "DELETED", "UNKNOWN"] {
            assert_eq!(st(s), Some(MessageState::Undelivered), "{s}");
        }
        assert_eq!(st("REJECTD"), Some(MessageState::Failed));
        assert_eq!(st("ENROUTE"), None);
        assert_eq!(st("ACCEPTD"), None);
        let sm = Sm { esm_class: 0x04, short_message: b"id:1 stat:ACCEPTD err:0".to_vec(), ..Sm::default() };
        assert_eq!(parse(&sm, IdConversion::Same).unwrap().to_receipt(ChannelAccountId::new(), Millis(0)), None);
        let not_receipt = Sm { esm_class: 0x00, short_message: b"id:1 stat:DELIVRD".to_vec(), ..Sm::default() };
        assert_eq!(parse(&not_receipt, IdConversion::Same), None);
    }

    #[test]
    fn ids_normalise() {
        assert_eq!(normalize_id(" 00A1B2\0"), "a1b2");
        assert_eq!(normalize_id("0000"), "0");
        assert_eq!(normalize_id("0123456789"), "123456789");
        assert_eq!(normalize_id("4A38DC46-5125-4969-90BE-72104C340D5C"), "4a38dc46-5125-4969-90be-72104c340d5c");
        assert_eq!(normalize_id("0a-1"), "0a-1");
        assert_eq!(receipt_id("6699", IdConversion::SubmitHexReceiptDecimal), normalize_id("00001A2B"));
        assert_eq!(receipt_id("1a2b", IdConversion::SubmitDecimalReceiptHex), normalize_id("006699"));
        assert_eq!(receipt_id("not-a-number", IdConversion::SubmitHexReceiptDecimal), "not-a-number");
        assert_eq!(receipt_id("00FF", IdConversion::Same), "ff");
    }

    proptest::proptest! {
        #[test]
        fn parse_text_never_panics(raw in "\\PC{0,200}") {
            let _ = parse_text(&raw);
            let _ = normalize_id(&raw);
        }

        #[test]
        fn converted_ids_match(n in proptest::prelude::any::<u64>(), zeros in 0usize..4) {
            let pad = "0".repeat(zeros);
            let hex = format!("{pad}{n:X}");
            let dec = format!("{pad}{n}");
            proptest::prop_assert_eq!(receipt_id(&dec, IdConversion::SubmitHexReceiptDecimal), normalize_id(&hex));
            proptest::prop_assert_eq!(receipt_id(&hex, IdConversion::SubmitDecimalReceiptHex), normalize_id(&dec));
        }
    }
}
