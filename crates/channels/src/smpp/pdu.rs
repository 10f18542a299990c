//! SMPP 3.4 PDUs as bytes: the header, the bodies a transceiver ESME (and a fake SMSC) needs, and
//! TLVs. Pure functions over byte slices, so the codec is tested without sockets.
//!
//! Framing: [`frame_len`] says whether a buffer starts with a whole PDU. A `command_length` below
//! 16 or above [`MAX_PDU_LEN`] cannot be framed (the stream is lost: answer `generic_nack` with
//! `ESME_RINVCMDLEN` and close). A framed PDU that [`Pdu::decode`] cannot read is answered with
//! `generic_nack` (`ESME_RINVCMDID` for an unknown command, `ESME_RINVCMDLEN` otherwise) and the
//! session goes on.
//!
//! Decoding is lenient where real SMSCs are sloppy (the Jasmin captures): an error response may
//! leave its body out, unknown TLV tags are kept, C-octet strings are read up to their NUL
//! whatever their declared maximum, non-UTF-8 octets are read as Latin-1.

/// Octets of the header.
pub const HEADER_LEN: usize = 16;
/// The largest PDU accepted (a 64 KiB `message_payload` and the rest).
pub const MAX_PDU_LEN: u32 = 70_000;

/// `command_id` values.
pub mod cmd {
    pub const GENERIC_NACK: u32 = 0x8000_0000;
    pub const BIND_RECEIVER: u32 = 0x0000_0001;
    pub const BIND_TRANSMITTER: u32 = 0x0000_0002;
    pub const SUBMIT_SM: u32 = 0x0000_0004;
    pub const SUBMIT_SM_RESP: u32 = 0x8000_0004;
    pub const DELIVER_SM: u32 = 0x0000_0005;
    pub const DELIVER_SM_RESP: u32 = 0x8000_0005;
    pub const UNBIND: u32 = 0x0000_0006;
    pub const UNBIND_RESP: u32 = 0x8000_0006;
    pub const BIND_TRANSCEIVER: u32 = 0x0000_0009;
    pub const BIND_TRANSCEIVER_RESP: u32 = 0x8000_0009;
    pub const ENQUIRE_LINK: u32 = 0x0000_0015;
    pub const ENQUIRE_LINK_RESP: u32 = 0x8000_0015;
}

/// `command_status` values used here.
pub mod status {
    pub const ESME_ROK: u32 = 0x00;
    pub const ESME_RINVMSGLEN: u32 = 0x01;
    pub const ESME_RINVCMDLEN: u32 = 0x02;
    pub const ESME_RINVCMDID: u32 = 0x03;
    pub const ESME_RINVBNDSTS: u32 = 0x04;
    pub const ESME_RALYBND: u32 = 0x05;
    pub const ESME_RSYSERR: u32 = 0x08;
    pub const ESME_RINVSRCADR: u32 = 0x0A;
    pub const ESME_RINVDSTADR: u32 = 0x0B;
    pub const ESME_RBINDFAIL: u32 = 0x0D;
    pub const ESME_RINVPASWD: u32 = 0x0E;
    pub const ESME_RINVSYSID: u32 = 0x0F;
    pub const ESME_RMSGQFUL: u32 = 0x14;
    pub const ESME_RINVESMCLASS: u32 = 0x43;
    pub const ESME_RSUBMITFAIL: u32 = 0x45;
    pub const ESME_RTHROTTLED: u32 = 0x58;
}

/// TLV tags used here.
pub mod tag {
    pub const RECEIPTED_MESSAGE_ID: u16 = 0x001E;
    pub const USER_MESSAGE_REFERENCE: u16 = 0x0204;
    pub const SAR_MSG_REF_NUM: u16 = 0x020C;
    pub const SAR_TOTAL_SEGMENTS: u16 = 0x020E;
    pub const SAR_SEGMENT_SEQNUM: u16 = 0x020F;
    pub const SC_INTERFACE_VERSION: u16 = 0x0210;
    pub const NETWORK_ERROR_CODE: u16 = 0x0423;
    pub const MESSAGE_PAYLOAD: u16 = 0x0424;
    pub const MESSAGE_STATE: u16 = 0x0427;
}

/// `esm_class` bits.
pub mod esm {
    /// Message type bits (2-5).
    pub const TYPE_MASK: u8 = 0x3C;
    /// SMSC delivery receipt.
    pub const DELIVERY_RECEIPT: u8 = 0x04;
    /// User data header indicator.
    pub const UDHI: u8 = 0x40;
}

/// A tagged optional parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tlv {
    pub tag: u16,
    pub value: Vec<u8>,
}

impl Tlv {
    pub fn new(tag: u16, value: impl Into<Vec<u8>>) -> Tlv {
        Tlv { tag, value: value.into() }
    }

    /// A TLV holding a C-octet string (NUL-terminated).
    pub fn cstring(tag: u16, value: &str) -> Tlv {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        Tlv { tag, value: v }
    }
}

/// The body of a bind request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bind {
    pub system_id: String,
    pub password: String,
    pub system_type: String,
    pub interface_version: u8,
    pub addr_ton: u8,
    pub addr_npi: u8,
    pub address_range: String,
}

/// The body shared by `submit_sm` and `deliver_sm`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sm {
    pub service_type: String,
    pub source_addr_ton: u8,
    pub source_addr_npi: u8,
    pub source_addr: String,
    pub dest_addr_ton: u8,
    pub dest_addr_npi: u8,
    pub destination_addr: String,
    pub esm_class: u8,
    pub protocol_id: u8,
    pub priority_flag: u8,
    pub schedule_delivery_time: String,
    pub validity_period: String,
    pub registered_delivery: u8,
    pub replace_if_present_flag: u8,
    pub data_coding: u8,
    pub sm_default_msg_id: u8,
    /// At most 254 octets; longer content goes in a `message_payload` TLV.
    pub short_message: Vec<u8>,
    pub tlvs: Vec<Tlv>,
}

impl Sm {
    /// The first TLV with this tag.
    pub fn tlv(&self, tag: u16) -> Option<&[u8]> {
        self.tlvs.iter().find(|t| t.tag == tag).map(|t| t.value.as_slice())
    }

    /// The message octets: `short_message`, or the `message_payload` TLV when that is empty.
    pub fn payload(&self) -> &[u8] {
        match self.tlv(tag::MESSAGE_PAYLOAD) {
            Some(p) if self.short_message.is_empty() => p,
            _ => &self.short_message,
        }
    }

    /// An SMSC delivery receipt (`esm_class` message type 0x04).
    pub fn is_delivery_receipt(&self) -> bool {
        self.esm_class & esm::TYPE_MASK == esm::DELIVERY_RECEIPT
    }
}

/// What a PDU carries, by command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    BindTransceiver(Bind),
    BindTransceiverResp { system_id: String, tlvs: Vec<Tlv> },
    SubmitSm(Sm),
    SubmitSmResp { message_id: String },
    DeliverSm(Sm),
    DeliverSmResp { message_id: String },
    EnquireLink,
    EnquireLinkResp,
    Unbind,
    UnbindResp,
    GenericNack,
}

impl Body {
    pub fn command_id(&self) -> u32 {
        match self {
            Body::BindTransceiver(_) => cmd::BIND_TRANSCEIVER,
            Body::BindTransceiverResp { .. } => cmd::BIND_TRANSCEIVER_RESP,
            Body::SubmitSm(_) => cmd::SUBMIT_SM,
            Body::SubmitSmResp { .. } => cmd::SUBMIT_SM_RESP,
            Body::DeliverSm(_) => cmd::DELIVER_SM,
            Body::DeliverSmResp { .. } => cmd::DELIVER_SM_RESP,
            Body::EnquireLink => cmd::ENQUIRE_LINK,
            Body::EnquireLinkResp => cmd::ENQUIRE_LINK_RESP,
            Body::Unbind => cmd::UNBIND,
            Body::UnbindResp => cmd::UNBIND_RESP,
            Body::GenericNack => cmd::GENERIC_NACK,
        }
    }
}

/// One PDU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pdu {
    pub command_status: u32,
    pub sequence_number: u32,
    pub body: Body,
}

/// Why a buffer cannot be framed: the stream cannot be resynchronised.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid command_length {0}")]
pub struct FrameError(pub u32);

/// Why a framed PDU cannot be read. The header fields are given (where the PDU was long
/// enough) so that the answer (`generic_nack`) can carry the sequence number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown command_id 0x{command_id:08x}")]
    UnknownCommand { command_id: u32, sequence_number: u32 },
    #[error("malformed PDU (command_id 0x{command_id:08x}): {reason}")]
    Malformed { command_id: u32, sequence_number: u32, reason: String },
}

impl DecodeError {
    pub fn sequence_number(&self) -> u32 {
        match self {
            DecodeError::UnknownCommand { sequence_number, .. } | DecodeError::Malformed { sequence_number, .. } => {
                *sequence_number
            }
        }
    }

    pub fn command_id(&self) -> u32 {
        match self {
            DecodeError::UnknownCommand { command_id, .. } | DecodeError::Malformed { command_id, .. } => *command_id,
        }
    }

    /// The `command_status` of the `generic_nack` that answers it.
    pub fn nack_status(&self) -> u32 {
        match self {
            DecodeError::UnknownCommand { .. } => status::ESME_RINVCMDID,
            DecodeError::Malformed { .. } => status::ESME_RINVCMDLEN,
        }
    }

    /// The `generic_nack` answering this error.
    pub fn nack(&self) -> Pdu {
        Pdu { command_status: self.nack_status(), sequence_number: self.sequence_number(), body: Body::GenericNack }
    }
}

/// Why a PDU cannot be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("field '{field}' is too long ({len} octets, at most {max})")]
    TooLong { field: &'static str, len: usize, max: usize },
}

/// `Some(n)` when `buf` starts with a whole PDU of `n` octets, `None` when more is needed.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if (len as usize) < HEADER_LEN || len > MAX_PDU_LEN {
        return Err(FrameError(len));
    }
    let len = len as usize;
    Ok((buf.len() >= len).then_some(len))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn u8(&mut self, field: &str) -> Result<u8, String> {
        let b = *self.buf.get(self.pos).ok_or_else(|| format!("ends before {field}"))?;
        self.pos += 1;
        Ok(b)
    }

    fn u16(&mut self, field: &str) -> Result<u16, String> {
        let bytes = self.take(2, field)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], String> {
        let end =
            self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| {
                format!("{field} needs {n} octets, {} are left", self.buf.len().saturating_sub(self.pos))
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn cstring(&mut self, field: &str) -> Result<String, String> {
        let rest = &self.buf[self.pos.min(self.buf.len())..];
        let nul = rest.iter().position(|&b| b == 0).ok_or_else(|| format!("{field} has no terminating NUL"))?;
        self.pos += nul + 1;
        Ok(text(&rest[..nul]))
    }

    fn tlvs(&mut self) -> Result<Vec<Tlv>, String> {
        let mut out = Vec::new();
        while !self.at_end() {
            let tag = self.u16("TLV tag")?;
            let len = self.u16("TLV length")?;
            let value = self.take(usize::from(len), "TLV value")?;
            out.push(Tlv { tag, value: value.to_vec() });
        }
        Ok(out)
    }
}

/// Octets of a C-octet string as text: UTF-8 (ASCII) where valid, Latin-1 otherwise.
fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

fn read_bind(r: &mut Reader<'_>) -> Result<Bind, String> {
    Ok(Bind {
        system_id: r.cstring("system_id")?,
        password: r.cstring("password")?,
        system_type: r.cstring("system_type")?,
        interface_version: r.u8("interface_version")?,
        addr_ton: r.u8("addr_ton")?,
        addr_npi: r.u8("addr_npi")?,
        address_range: r.cstring("address_range")?,
    })
}

fn read_sm(r: &mut Reader<'_>) -> Result<Sm, String> {
    let mut sm = Sm {
        service_type: r.cstring("service_type")?,
        source_addr_ton: r.u8("source_addr_ton")?,
        source_addr_npi: r.u8("source_addr_npi")?,
        source_addr: r.cstring("source_addr")?,
        dest_addr_ton: r.u8("dest_addr_ton")?,
        dest_addr_npi: r.u8("dest_addr_npi")?,
        destination_addr: r.cstring("destination_addr")?,
        esm_class: r.u8("esm_class")?,
        protocol_id: r.u8("protocol_id")?,
        priority_flag: r.u8("priority_flag")?,
        schedule_delivery_time: r.cstring("schedule_delivery_time")?,
        validity_period: r.cstring("validity_period")?,
        registered_delivery: r.u8("registered_delivery")?,
        replace_if_present_flag: r.u8("replace_if_present_flag")?,
        data_coding: r.u8("data_coding")?,
        sm_default_msg_id: r.u8("sm_default_msg_id")?,
        ..Sm::default()
    };
    let len = r.u8("sm_length")?;
    sm.short_message = r.take(usize::from(len), "short_message")?.to_vec();
    sm.tlvs = r.tlvs()?;
    Ok(sm)
}

/// A response's C-octet string, which an error response may leave out.
fn resp_cstring(r: &mut Reader<'_>, field: &str) -> Result<String, String> {
    if r.at_end() { Ok(String::new()) } else { r.cstring(field) }
}

impl Pdu {
    /// A request or response with status 0.
    pub fn new(sequence_number: u32, body: Body) -> Pdu {
        Pdu { command_status: status::ESME_ROK, sequence_number, body }
    }

    pub fn command_id(&self) -> u32 {
        self.body.command_id()
    }

    /// Read one framed PDU (`frame` is exactly `command_length` octets, see [`frame_len`]).
    pub fn decode(frame: &[u8]) -> Result<Pdu, DecodeError> {
        let word = |i: usize| frame.get(i..i + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let command_id = word(4).unwrap_or(0);
        let sequence_number = word(12).unwrap_or(0);
        let malformed = |reason: String| DecodeError::Malformed { command_id, sequence_number, reason };
        let (Some(len), Some(command_status)) = (word(0), word(8)) else {
            return Err(malformed("shorter than the 16-octet header".into()));
        };
        if len as usize != frame.len() {
            return Err(malformed(format!("command_length {len} but {} octets", frame.len())));
        }
        let mut r = Reader { buf: &frame[HEADER_LEN..], pos: 0 };
        let body = match command_id {
            cmd::BIND_TRANSCEIVER => Body::BindTransceiver(read_bind(&mut r).map_err(malformed)?),
            cmd::BIND_TRANSCEIVER_RESP => {
                let system_id = resp_cstring(&mut r, "system_id").map_err(malformed)?;
                let tlvs = r.tlvs().map_err(malformed)?;
                Body::BindTransceiverResp { system_id, tlvs }
            }
            cmd::SUBMIT_SM => Body::SubmitSm(read_sm(&mut r).map_err(malformed)?),
            cmd::DELIVER_SM => Body::DeliverSm(read_sm(&mut r).map_err(malformed)?),
            cmd::SUBMIT_SM_RESP => {
                Body::SubmitSmResp { message_id: resp_cstring(&mut r, "message_id").map_err(malformed)? }
            }
            cmd::DELIVER_SM_RESP => {
                Body::DeliverSmResp { message_id: resp_cstring(&mut r, "message_id").map_err(malformed)? }
            }
            cmd::ENQUIRE_LINK => Body::EnquireLink,
            cmd::ENQUIRE_LINK_RESP => Body::EnquireLinkResp,
            cmd::UNBIND => Body::Unbind,
            cmd::UNBIND_RESP => Body::UnbindResp,
            cmd::GENERIC_NACK => Body::GenericNack,
            _ => return Err(DecodeError::UnknownCommand { command_id, sequence_number }),
        };
        Ok(Pdu { command_status, sequence_number, body })
    }

    /// Write the PDU.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.command_id().to_be_bytes());
        out.extend_from_slice(&self.command_status.to_be_bytes());
        out.extend_from_slice(&self.sequence_number.to_be_bytes());
        match &self.body {
            Body::BindTransceiver(b) => {
                put_cstring(&mut out, "system_id", &b.system_id, 16)?;
                put_cstring(&mut out, "password", &b.password, 9)?;
                put_cstring(&mut out, "system_type", &b.system_type, 13)?;
                out.extend_from_slice(&[b.interface_version, b.addr_ton, b.addr_npi]);
                put_cstring(&mut out, "address_range", &b.address_range, 41)?;
            }
            Body::BindTransceiverResp { system_id, tlvs } => {
                put_cstring(&mut out, "system_id", system_id, 16)?;
                put_tlvs(&mut out, tlvs)?;
            }
            Body::SubmitSm(sm) | Body::DeliverSm(sm) => put_sm(&mut out, sm)?,
            Body::SubmitSmResp { message_id } | Body::DeliverSmResp { message_id } => {
                put_cstring(&mut out, "message_id", message_id, 65)?;
            }
            Body::EnquireLink | Body::EnquireLinkResp | Body::Unbind | Body::UnbindResp | Body::GenericNack => {}
        }
        let len = u32::try_from(out.len()).ok().filter(|&l| l <= MAX_PDU_LEN).ok_or(EncodeError::TooLong {
            field: "PDU",
            len: out.len(),
            max: MAX_PDU_LEN as usize,
        })?;
        out[..4].copy_from_slice(&len.to_be_bytes());
        Ok(out)
    }
}

fn put_cstring(out: &mut Vec<u8>, field: &'static str, value: &str, max_with_nul: usize) -> Result<(), EncodeError> {
    let bytes = value.as_bytes();
    if bytes.len() >= max_with_nul || bytes.contains(&0) {
        return Err(EncodeError::TooLong { field, len: bytes.len(), max: max_with_nul - 1 });
    }
    out.extend_from_slice(bytes);
    out.push(0);
    Ok(())
}

fn put_tlvs(out: &mut Vec<u8>, tlvs: &[Tlv]) -> Result<(), EncodeError> {
    for t in tlvs {
        let len = u16::try_from(t.value.len()).map_err(|_| EncodeError::TooLong {
            field: "TLV value",
            len: t.value.len(),
            max: usize::from(u16::MAX),
        })?;
        out.extend_from_slice(&t.tag.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&t.value);
    }
    Ok(())
}

fn put_sm(out: &mut Vec<u8>, sm: &Sm) -> Result<(), EncodeError> {
    put_cstring(out, "service_type", &sm.service_type, 6)?;
    out.extend_from_slice(&[sm.source_addr_ton, sm.source_addr_npi]);
    put_cstring(out, "source_addr", &sm.source_addr, 21)?;
    out.extend_from_slice(&[sm.dest_addr_ton, sm.dest_addr_npi]);
    put_cstring(out, "destination_addr", &sm.destination_addr, 21)?;
    out.extend_from_slice(&[sm.esm_class, sm.protocol_id, sm.priority_flag]);
    put_cstring(out, "schedule_delivery_time", &sm.schedule_delivery_time, 17)?;
    put_cstring(out, "validity_period", &sm.validity_period, 17)?;
    out.extend_from_slice(&[sm.registered_delivery, sm.replace_if_present_flag, sm.data_coding, sm.sm_default_msg_id]);
    let len = u8::try_from(sm.short_message.len()).ok().filter(|&l| l < 255).ok_or(EncodeError::TooLong {
        field: "short_message",
        len: sm.short_message.len(),
        max: 254,
    })?;
    out.push(len);
    out.extend_from_slice(&sm.short_message);
    put_tlvs(out, &sm.tlvs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn jasmin() -> serde_json::Value {
        serde_json::from_str(include_str!("../../tests/fixtures/smpp/jasmin_wire_pdus_and_dlrs.json")).unwrap()
    }

    fn smpplib(name: &str) -> Vec<u8> {
        let json: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/smpp/smpplib_generated_pdus.json")).unwrap();
        unhex(json["pdus_hex"][name].as_str().unwrap())
    }

    #[test]
    fn every_jasmin_capture_decodes_and_reencodes() {
        let json = jasmin();
        let pdus = json["pdus"].as_array().unwrap();
        assert_eq!(pdus.len(), 15);
        for case in pdus {
            let name = case["test"].as_str().unwrap();
            let bytes = unhex(case["hex"].as_str().unwrap());
            assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())), "{name}");
            let pdu = Pdu::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            let id = u32::from_str_radix(case["command_id"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
            assert_eq!(pdu.command_id(), id, "{name}");
            assert_eq!(u64::from(pdu.sequence_number), case["sequence_number"].as_u64().unwrap(), "{name}");
            // Our encoding of what we read is the same bytes, except where the capture left out
            // a response body (an error response without its message_id).
            let again = pdu.encode().unwrap();
            if name != "test_unknown_command_status_34" {
                assert_eq!(hex::encode(&again), hex::encode(&bytes), "{name}");
            }
            assert_eq!(Pdu::decode(&again).unwrap(), pdu, "{name}");
        }
    }

    #[test]
    fn jasmin_details() {
        let json = jasmin();
        let find = |name: &str| {
            let case = json["pdus"].as_array().unwrap().iter().find(|c| c["test"] == name).unwrap();
            Pdu::decode(&unhex(case["hex"].as_str().unwrap())).unwrap()
        };
        let Body::DeliverSm(sm) = find("test_deliver_sm_unknown_param_network_error_code").body else { panic!() };
        assert!(sm.is_delivery_receipt());
        assert_eq!(sm.tlv(tag::RECEIPTED_MESSAGE_ID), Some(&b"6a3ed98a66444e8abac3acd9bba8656f\0"[..]));
        assert_eq!(sm.tlv(tag::MESSAGE_STATE), Some(&[5u8][..]));
        let p = find("test_unknown_command_status_34");
        assert_eq!((p.command_status, p.body), (0x22, Body::SubmitSmResp { message_id: String::new() }));
        let p = find("test_invalid_command_length");
        assert_eq!(p.command_status, 0x53);
        let Body::BindTransceiverResp { system_id, tlvs } = find("test_invalid_option_vendor_specific_bypass").body
        else {
            panic!()
        };
        assert_eq!(system_id, "Yenta1");
        assert_eq!(tlvs, vec![Tlv::new(0x1002, [0x34])]);
        let Body::SubmitSm(sm) = find("test_smpp_drop_on_unknown_char").body else { panic!() };
        assert_eq!((sm.data_coding, sm.short_message.as_slice()), (8, &[0x00, 0xA7][..]));
        let Body::DeliverSm(sm) = find("test_deliver_sm_with_message_payload").body else { panic!() };
        assert!(sm.short_message.is_empty());
        assert!(sm.payload().starts_with(b"id:0000436949 "));
    }

    #[test]
    fn encodes_like_smpplib() {
        let bind = Pdu::new(
            1,
            Body::BindTransceiver(Bind {
                system_id: "esme1".into(),
                password: "secret".into(),
                interface_version: 0x34,
                ..Bind::default()
            }),
        );
        assert_eq!(hex::encode(bind.encode().unwrap()), hex::encode(smpplib("bind_transceiver")));
        assert_eq!(Pdu::new(2, Body::EnquireLink).encode().unwrap(), smpplib("enquire_link"));
        assert_eq!(Pdu::new(7, Body::Unbind).encode().unwrap(), smpplib("unbind"));
        for name in [
            "submit_sm_gsm7_single",
            "submit_sm_ucs2_single",
            "submit_sm_gsm7_concat_part1of2",
            "submit_sm_gsm7_concat_part2of2",
        ] {
            let bytes = smpplib(name);
            let pdu = Pdu::decode(&bytes).unwrap();
            assert_eq!(pdu.encode().unwrap(), bytes, "{name}");
        }
        // The single GSM-7 submit_sm built field by field.
        let sm = Sm {
            source_addr_ton: 5,
            source_addr: "ACME".into(),
            dest_addr_ton: 1,
            dest_addr_npi: 1,
            destination_addr: "447700900123".into(),
            registered_delivery: 1,
            short_message: b"Hello world".to_vec(),
            ..Sm::default()
        };
        assert_eq!(Pdu::new(3, Body::SubmitSm(sm)).encode().unwrap(), smpplib("submit_sm_gsm7_single"));
    }

    #[test]
    fn framing() {
        assert_eq!(frame_len(&[0, 0, 0]), Ok(None));
        assert_eq!(frame_len(&[0, 0, 0, 16, 0]), Ok(None));
        assert_eq!(frame_len(&[0, 0, 0, 15]), Err(FrameError(15)));
        assert_eq!(frame_len(&[0xFF, 0, 0, 0]), Err(FrameError(0xFF00_0000)));
        let unknown = hex::decode("00000010000000ff0000000000000009").unwrap();
        let err = Pdu::decode(&unknown).unwrap_err();
        assert_eq!(
            err.nack(),
            Pdu { command_status: status::ESME_RINVCMDID, sequence_number: 9, body: Body::GenericNack }
        );
        let short_submit = hex::decode("00000014000000040000000000000003000000").unwrap_err_or_ok();
        let err = Pdu::decode(&short_submit).unwrap_err();
        assert_eq!(err.nack().command_status, status::ESME_RINVCMDLEN);
        assert_eq!(err.sequence_number(), 3);
    }

    trait OkOrErr {
        fn unwrap_err_or_ok(self) -> Vec<u8>;
    }
    impl OkOrErr for Result<Vec<u8>, hex::FromHexError> {
        fn unwrap_err_or_ok(self) -> Vec<u8> {
            self.unwrap()
        }
    }

    #[test]
    fn encoding_refuses_overlong_fields() {
        let bind = Pdu::new(1, Body::BindTransceiver(Bind { password: "123456789".into(), ..Bind::default() }));
        assert!(matches!(bind.encode(), Err(EncodeError::TooLong { field: "password", .. })));
        let sm = Sm { short_message: vec![b'a'; 255], ..Sm::default() };
        assert!(Pdu::new(1, Body::SubmitSm(sm)).encode().is_err());
    }

    fn sm_strategy() -> impl Strategy<Value = Sm> {
        let s = |max: usize| proptest::string::string_regex(&format!("[ -~]{{0,{max}}}")).unwrap();
        (
            (s(5), any::<u8>(), any::<u8>(), s(20), any::<u8>(), any::<u8>(), s(20)),
            (any::<[u8; 7]>(), s(16), s(16)),
            proptest::collection::vec(any::<u8>(), 0..=254),
            proptest::collection::vec((any::<u16>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..4),
        )
            .prop_map(|((st, sat, san, sa, dat, dan, da), (b, sched, valid), short_message, tlvs)| Sm {
                service_type: st,
                source_addr_ton: sat,
                source_addr_npi: san,
                source_addr: sa,
                dest_addr_ton: dat,
                dest_addr_npi: dan,
                destination_addr: da,
                esm_class: b[0],
                protocol_id: b[1],
                priority_flag: b[2],
                schedule_delivery_time: sched,
                validity_period: valid,
                registered_delivery: b[3],
                replace_if_present_flag: b[4],
                data_coding: b[5],
                sm_default_msg_id: b[6],
                short_message,
                tlvs: tlvs.into_iter().map(|(tag, value)| Tlv { tag, value }).collect(),
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = frame_len(&bytes);
            let _ = Pdu::decode(&bytes);
        }

        #[test]
        fn arbitrary_bodies_behind_a_valid_header_never_panic(
            command_id in prop_oneof![
                Just(cmd::SUBMIT_SM), Just(cmd::DELIVER_SM), Just(cmd::BIND_TRANSCEIVER),
                Just(cmd::BIND_TRANSCEIVER_RESP), Just(cmd::SUBMIT_SM_RESP), any::<u32>()
            ],
            seq in any::<u32>(),
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&((body.len() + 16) as u32).to_be_bytes());
            bytes.extend_from_slice(&command_id.to_be_bytes());
            bytes.extend_from_slice(&0u32.to_be_bytes());
            bytes.extend_from_slice(&seq.to_be_bytes());
            bytes.extend_from_slice(&body);
            prop_assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())));
            match Pdu::decode(&bytes) {
                Ok(pdu) => prop_assert_eq!(pdu.sequence_number, seq),
                Err(e) => {
                    prop_assert_eq!(e.sequence_number(), seq);
                    prop_assert_eq!(e.nack().encode().unwrap().len(), 16);
                }
            }
        }

        #[test]
        fn submit_sm_round_trips(sm in sm_strategy(), seq in any::<u32>(), deliver in any::<bool>()) {
            let body = if deliver { Body::DeliverSm(sm) } else { Body::SubmitSm(sm) };
            let pdu = Pdu::new(seq, body);
            let bytes = pdu.encode().unwrap();
            prop_assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())));
            prop_assert_eq!(Pdu::decode(&bytes).unwrap(), pdu);
        }
    }
}
