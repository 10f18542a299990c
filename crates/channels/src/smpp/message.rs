//! Text to `submit_sm` bodies and mobile-originated `deliver_sm` back to text.
//!
//! Outbound: a text that fits the GSM 03.38 alphabet is sent as unpacked septets (one per octet)
//! with the configured `data_coding` (0, "SMSC default alphabet", unless configured otherwise);
//! any other text as UCS-2 (UTF-16BE) with `data_coding` 8. A text longer than one SMS is cut by
//! [`parley_domain::segments`] (153 septets or 67 UTF-16 units per part, never splitting an
//! escape or surrogate pair) and each part carries the 6-octet UDH `05 00 03 <ref> <total>
//! <seq>` with `esm_class` 0x40.
//!
//! Inbound: text is decoded per `data_coding` (0 GSM-7 unpacked, 1 ASCII, 3 Latin-1, 8 UCS-2,
//! others as UTF-8 where valid, else Latin-1); a UDH (8- or 16-bit concatenation reference) or
//! the SAR TLVs mark a part, and [`Reassembly`] puts the parts of one message back together.

use super::pdu::{Sm, esm, tag};
use parley_domain::segments::{self, Encoding};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What every `submit_sm` of an account shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitTemplate {
    pub service_type: String,
    pub source_addr: String,
    pub source_addr_ton: u8,
    pub source_addr_npi: u8,
    pub dest_addr_ton: u8,
    pub dest_addr_npi: u8,
    /// `data_coding` for GSM-7 texts.
    pub gsm7_data_coding: u8,
    pub registered_delivery: u8,
}

/// Why a text cannot be sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("the text needs {0} parts; at most 255 are possible")]
    TooManyParts(usize),
    #[error("the text is empty")]
    Empty,
}

/// An address as SMPP carries it: an E.164 number loses its `+` and becomes international
/// (TON 1, NPI 1); anything else keeps the configured TON/NPI.
pub fn address(addr: &str, ton: u8, npi: u8) -> (String, u8, u8) {
    match addr.strip_prefix('+') {
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => (digits.to_string(), 1, 1),
        _ => (addr.to_string(), ton, npi),
    }
}

/// The `submit_sm` bodies for `text` to `to` (one per part). `reference` is the concatenation
/// reference shared by the parts.
pub fn build(
    template: &SubmitTemplate,
    from: Option<&str>,
    to: &str,
    text: &str,
    reference: u8,
) -> Result<Vec<Sm>, BuildError> {
    if text.is_empty() {
        return Err(BuildError::Empty);
    }
    let split = segments::split(text);
    let total = split.count();
    let total_u8 = u8::try_from(total).map_err(|_| BuildError::TooManyParts(total))?;
    let (source_addr, source_addr_ton, source_addr_npi) = match from {
        Some(f) if !f.is_empty() => address(f, template.source_addr_ton, template.source_addr_npi),
        _ => (template.source_addr.clone(), template.source_addr_ton, template.source_addr_npi),
    };
    let (destination_addr, dest_addr_ton, dest_addr_npi) = address(to, template.dest_addr_ton, template.dest_addr_npi);
    let data_coding = match split.encoding {
        Encoding::Gsm7 => template.gsm7_data_coding,
        Encoding::Ucs2 => 8,
    };
    let mut out = Vec::with_capacity(total);
    for (i, part) in split.parts.iter().enumerate() {
        let body = match split.encoding {
            Encoding::Gsm7 => segments::gsm7_encode(part.text).unwrap_or_default(),
            Encoding::Ucs2 => part.text.encode_utf16().flat_map(u16::to_be_bytes).collect(),
        };
        let (esm_class, short_message) = if total > 1 {
            let seq = u8::try_from(i + 1).unwrap_or(u8::MAX);
            let mut sm = vec![0x05, 0x00, 0x03, reference, total_u8, seq];
            sm.extend_from_slice(&body);
            (esm::UDHI, sm)
        } else {
            (0, body)
        };
        out.push(Sm {
            service_type: template.service_type.clone(),
            source_addr_ton,
            source_addr_npi,
            source_addr: source_addr.clone(),
            dest_addr_ton,
            dest_addr_npi,
            destination_addr: destination_addr.clone(),
            esm_class,
            registered_delivery: template.registered_delivery,
            data_coding,
            short_message,
            ..Sm::default()
        });
    }
    Ok(out)
}

/// Octets as text, per `data_coding`.
pub fn decode_text(data_coding: u8, octets: &[u8]) -> String {
    match data_coding {
        0 => segments::gsm7_decode(octets),
        1 => octets.iter().map(|&b| char::from(b & 0x7F)).collect(),
        3 => octets.iter().map(|&b| char::from(b)).collect(),
        8 => {
            let units: Vec<u16> = octets.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16_lossy(&units)
        }
        // Data coding group 1111: bit 2 says 8-bit data, else GSM-7.
        dc if dc & 0xF0 == 0xF0 && dc & 0x04 == 0 => segments::gsm7_decode(octets),
        _ => match std::str::from_utf8(octets) {
            Ok(s) => s.to_string(),
            Err(_) => octets.iter().map(|&b| char::from(b)).collect(),
        },
    }
}

/// Where a part sits in a concatenated message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PartInfo {
    pub reference: u16,
    pub total: u8,
    pub seq: u8,
}

/// The user data of a `deliver_sm` without its UDH, and the concatenation info of the UDH or the
/// SAR TLVs.
pub fn user_data(sm: &Sm) -> (&[u8], Option<PartInfo>) {
    let payload = sm.payload();
    let mut part = None;
    let mut data = payload;
    if sm.esm_class & esm::UDHI != 0
        && let Some(&udhl) = payload.first()
    {
        let end = 1 + usize::from(udhl);
        if let Some(udh) = payload.get(1..end) {
            data = &payload[end..];
            let mut i = 0;
            while i + 2 <= udh.len() {
                let (iei, len) = (udh[i], usize::from(udh[i + 1]));
                let Some(v) = udh.get(i + 2..i + 2 + len) else { break };
                match (iei, len) {
                    (0x00, 3) => part = Some(PartInfo { reference: u16::from(v[0]), total: v[1], seq: v[2] }),
                    (0x08, 4) => {
                        part = Some(PartInfo { reference: u16::from_be_bytes([v[0], v[1]]), total: v[2], seq: v[3] })
                    }
                    _ => {}
                }
                i += 2 + len;
            }
        }
    }
    if part.is_none() {
        let sar = (sm.tlv(tag::SAR_MSG_REF_NUM), sm.tlv(tag::SAR_TOTAL_SEGMENTS), sm.tlv(tag::SAR_SEGMENT_SEQNUM));
        if let (Some(r), Some(&[total]), Some(&[seq])) = sar {
            let reference = match r {
                [a, b] => u16::from_be_bytes([*a, *b]),
                [a] => u16::from(*a),
                _ => 0,
            };
            part = Some(PartInfo { reference, total, seq });
        }
    }
    (data, part.filter(|p| p.total > 1 && p.seq >= 1 && p.seq <= p.total))
}

/// (from, to, reference, total): the parts of one concatenated message.
type PartsKey = (String, String, u16, u8);

/// Parts of concatenated inbound messages waiting for their siblings.
pub struct Reassembly {
    pending: HashMap<PartsKey, (Instant, Vec<Option<String>>)>,
    max_age: Duration,
}

impl Reassembly {
    pub fn new(max_age: Duration) -> Reassembly {
        Reassembly { pending: HashMap::new(), max_age }
    }

    /// Add a part of the message from `from` to `to`; the whole text once every part is in.
    pub fn add(&mut self, from: &str, to: &str, part: PartInfo, text: String) -> Option<String> {
        let now = Instant::now();
        let max_age = self.max_age;
        self.pending.retain(|_, (at, _)| now.duration_since(*at) < max_age);
        let key = (from.to_string(), to.to_string(), part.reference, part.total);
        let entry = self.pending.entry(key.clone()).or_insert_with(|| (now, vec![None; usize::from(part.total)]));
        if let Some(slot) = entry.1.get_mut(usize::from(part.seq) - 1) {
            *slot = Some(text);
        }
        if entry.1.iter().all(Option::is_some) {
            let (_, parts) = self.pending.remove(&key)?;
            return Some(parts.into_iter().flatten().collect());
        }
        None
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smpp::pdu::{Body, Pdu};

    fn template() -> SubmitTemplate {
        SubmitTemplate {
            service_type: String::new(),
            source_addr: "ACME".into(),
            source_addr_ton: 5,
            source_addr_npi: 0,
            dest_addr_ton: 1,
            dest_addr_npi: 1,
            gsm7_data_coding: 0,
            registered_delivery: 1,
        }
    }

    fn smpplib(name: &str) -> Vec<u8> {
        let json: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/smpp/smpplib_generated_pdus.json")).unwrap();
        hex::decode(json["pdus_hex"][name].as_str().unwrap()).unwrap()
    }

    fn encode(seq: u32, sm: Sm) -> Vec<u8> {
        Pdu::new(seq, Body::SubmitSm(sm)).encode().unwrap()
    }

    #[test]
    fn matches_smpplib_byte_for_byte() {
        let t = template();
        let parts = build(&t, None, "+447700900123", "Hello world", 0).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(encode(3, parts[0].clone()), smpplib("submit_sm_gsm7_single"));

        let parts = build(&t, Some("+15551230000"), "+79001234567", "Привет", 0).unwrap();
        assert_eq!(encode(4, parts[0].clone()), smpplib("submit_sm_ucs2_single"));

        let text = "x".repeat(153 + 47);
        let parts = build(&t, Some("+15551230000"), "+447700900123", &text, 0xA5).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(encode(5, parts[0].clone()), smpplib("submit_sm_gsm7_concat_part1of2"));
        assert_eq!(encode(6, parts[1].clone()), smpplib("submit_sm_gsm7_concat_part2of2"));
    }

    #[test]
    fn concatenated_parts_come_back_together() {
        let t = template();
        let text = format!("{}€ and 😜 {}", "a".repeat(150), "z".repeat(80));
        let parts = build(&t, None, "+447700900123", &text, 9).unwrap();
        assert!(parts.len() > 1);
        let mut r = Reassembly::new(Duration::from_secs(60));
        let mut whole = None;
        for sm in parts.iter().rev() {
            assert_eq!(sm.data_coding, 8);
            let (data, part) = user_data(sm);
            assert!(whole.is_none());
            whole = r.add("a", "b", part.unwrap(), decode_text(sm.data_coding, data));
        }
        assert_eq!(whole.as_deref(), Some(text.as_str()));
        assert!(r.is_empty());
    }

    #[test]
    fn decodes_each_coding() {
        assert_eq!(decode_text(0, &segments::gsm7_encode("Hé €").unwrap()), "Hé €");
        assert_eq!(decode_text(8, &[0x00, 0xA7]), "§");
        assert_eq!(decode_text(3, &[0xE9]), "é");
        assert_eq!(decode_text(1, b"abc"), "abc");
        assert_eq!(decode_text(4, b"abc"), "abc");
    }

    #[test]
    fn sar_tlvs_mark_parts() {
        let mut sm = Sm { short_message: b"hi".to_vec(), ..Sm::default() };
        sm.tlvs.push(crate::smpp::pdu::Tlv::new(tag::SAR_MSG_REF_NUM, [0x01, 0x02]));
        sm.tlvs.push(crate::smpp::pdu::Tlv::new(tag::SAR_TOTAL_SEGMENTS, [2]));
        sm.tlvs.push(crate::smpp::pdu::Tlv::new(tag::SAR_SEGMENT_SEQNUM, [1]));
        let (data, part) = user_data(&sm);
        assert_eq!(data, b"hi");
        assert_eq!(part, Some(PartInfo { reference: 0x0102, total: 2, seq: 1 }));
    }

    proptest::proptest! {
        #[test]
        fn user_data_never_panics(
            esm_class in proptest::prelude::any::<u8>(),
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            dc in proptest::prelude::any::<u8>(),
        ) {
            let sm = Sm { esm_class, data_coding: dc, short_message: bytes, ..Sm::default() };
            let (data, _) = user_data(&sm);
            let _ = decode_text(dc, data);
        }
    }
}
