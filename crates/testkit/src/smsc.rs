//! A fake SMSC: a real SMPP 3.4 server on `127.0.0.1:0`, built on Parley's own codec
//! (`parley_channels::smpp::pdu`), for tests and benchmarks of the SMPP connector.
//!
//! It accepts `bind_transceiver` (checking system_id and password), answers `submit_sm` with
//! message ids (hex or decimal, with leading zeros so that normalisation is exercised), sends
//! delivery receipts (text and/or TLVs) after a delay, answers `enquire_link`, and records every
//! `submit_sm` it took, so that tests can assert exactly-once hand-off. On demand it throttles
//! (answers `ESME_RTHROTTLED` for the next N), drops the link (at once, or on receiving the next
//! N submits, before answering them), injects mobile-originated messages and raw bytes.

use parley_channels::smpp::message::{SubmitTemplate, build, decode_text, user_data};
use parley_channels::smpp::pdu::{Body, Pdu, Sm, Tlv, esm, frame_len, status, tag};
use parley_channels::smpp::receipt;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How the SMSC writes message ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdFormat {
    /// `000003E8`: 8 upper-case hex digits.
    Hex,
    /// `0000001000`: 10 decimal digits.
    Decimal,
}

impl IdFormat {
    fn write(self, n: u64) -> String {
        match self {
            IdFormat::Hex => format!("{n:08X}"),
            IdFormat::Decimal => format!("{n:010}"),
        }
    }
}

/// The fake SMSC's behaviour.
#[derive(Clone, Debug)]
pub struct SmscConfig {
    pub system_id: String,
    pub password: String,
    pub id_format: IdFormat,
    /// The id format in receipts (`None`: the same as `id_format`).
    pub receipt_id_format: Option<IdFormat>,
    /// Send receipts at all (only for submits with `registered_delivery` set).
    pub receipts: bool,
    /// Delay between acceptance and the receipt.
    pub receipt_delay: Duration,
    /// Carry the receipt in the Appendix B text.
    pub receipt_text: bool,
    /// Carry the receipt in the `receipted_message_id` / `message_state` TLVs.
    pub receipt_tlvs: bool,
    /// `stat` of receipts.
    pub receipt_stat: String,
    /// Delay before each `submit_sm_resp`.
    pub ack_delay: Duration,
}

impl Default for SmscConfig {
    fn default() -> Self {
        SmscConfig {
            system_id: "parley".into(),
            password: "secret".into(),
            id_format: IdFormat::Hex,
            receipt_id_format: None,
            receipts: true,
            receipt_delay: Duration::from_millis(20),
            receipt_text: true,
            receipt_tlvs: true,
            receipt_stat: "DELIVRD".into(),
            ack_delay: Duration::ZERO,
        }
    }
}

/// A `submit_sm` the SMSC took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The id it answered with.
    pub message_id: String,
    pub sm: Sm,
    /// The part's text (UDH removed, decoded per `data_coding`).
    pub text: String,
}

#[derive(Default)]
struct State {
    submitted: Vec<Submitted>,
    /// Submits received and not answered because the link was dropped on purpose.
    dropped: Vec<Sm>,
    sessions: HashMap<u64, mpsc::UnboundedSender<Vec<u8>>>,
}

struct Inner {
    config: Mutex<SmscConfig>,
    state: Mutex<State>,
    next_id: AtomicU64,
    next_session: AtomicU64,
    seq: AtomicU32,
    throttle: AtomicUsize,
    drop_on_submit: AtomicUsize,
    binds: AtomicUsize,
    refused_binds: AtomicUsize,
    throttled: AtomicUsize,
    enquire_links: AtomicUsize,
    deliver_sm_resps: AtomicUsize,
    generic_nacks: AtomicUsize,
    outstanding: AtomicUsize,
    max_outstanding: AtomicUsize,
    kill: Mutex<CancellationToken>,
}

/// A running fake SMSC; stops when dropped.
pub struct FakeSmsc {
    addr: SocketAddr,
    inner: Arc<Inner>,
    cancel: CancellationToken,
}

impl Drop for FakeSmsc {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeSmsc {
    /// Listen on `127.0.0.1:0`.
    pub async fn start(config: SmscConfig) -> std::io::Result<FakeSmsc> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            config: Mutex::new(config),
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1000),
            next_session: AtomicU64::new(1),
            seq: AtomicU32::new(1),
            throttle: AtomicUsize::new(0),
            drop_on_submit: AtomicUsize::new(0),
            binds: AtomicUsize::new(0),
            refused_binds: AtomicUsize::new(0),
            throttled: AtomicUsize::new(0),
            enquire_links: AtomicUsize::new(0),
            deliver_sm_resps: AtomicUsize::new(0),
            generic_nacks: AtomicUsize::new(0),
            outstanding: AtomicUsize::new(0),
            max_outstanding: AtomicUsize::new(0),
            kill: Mutex::new(CancellationToken::new()),
        });
        let cancel = CancellationToken::new();
        let (i, c) = (inner.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = c.cancelled() => break,
                    accepted = listener.accept() => {
                        if let Ok((socket, _)) = accepted {
                            let _ = socket.set_nodelay(true);
                            tokio::spawn(serve(i.clone(), socket, c.clone()));
                        }
                    }
                }
            }
        });
        Ok(FakeSmsc { addr, inner, cancel })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The connector config for this SMSC (`{"host", "port", "system_id"}`), to extend.
    pub fn account_config(&self) -> serde_json::Value {
        let c = lock(&self.inner.config);
        serde_json::json!({"host": "127.0.0.1", "port": self.port(), "system_id": c.system_id})
    }

    /// The credentials that bind (`{"password": …}`).
    pub fn credentials(&self) -> serde_json::Value {
        serde_json::json!({"password": lock(&self.inner.config).password})
    }

    /// Change the behaviour from now on.
    pub fn configure(&self, f: impl FnOnce(&mut SmscConfig)) {
        f(&mut lock(&self.inner.config));
    }

    /// Answer the next `n` submits with `ESME_RTHROTTLED` (0x58).
    pub fn throttle_next(&self, n: usize) {
        self.inner.throttle.store(n, Ordering::SeqCst);
    }

    /// Close every connection now.
    pub fn drop_links(&self) {
        let mut k = lock(&self.inner.kill);
        k.cancel();
        *k = CancellationToken::new();
    }

    /// On each of the next `n` submits, close the connection without answering (the submit is
    /// not taken: it is recorded in [`FakeSmsc::dropped`], not in [`FakeSmsc::submitted`]).
    pub fn drop_on_next_submits(&self, n: usize) {
        self.inner.drop_on_submit.store(n, Ordering::SeqCst);
    }

    /// Every submit taken, in order.
    pub fn submitted(&self) -> Vec<Submitted> {
        lock(&self.inner.state).submitted.clone()
    }

    pub fn submitted_count(&self) -> usize {
        lock(&self.inner.state).submitted.len()
    }

    /// Submits received and dropped with the link.
    pub fn dropped(&self) -> Vec<Sm> {
        lock(&self.inner.state).dropped.clone()
    }

    /// Successful binds so far.
    pub fn binds(&self) -> usize {
        self.inner.binds.load(Ordering::SeqCst)
    }

    pub fn refused_binds(&self) -> usize {
        self.inner.refused_binds.load(Ordering::SeqCst)
    }

    /// Submits answered with ESME_RTHROTTLED.
    pub fn throttled(&self) -> usize {
        self.inner.throttled.load(Ordering::SeqCst)
    }

    pub fn enquire_links(&self) -> usize {
        self.inner.enquire_links.load(Ordering::SeqCst)
    }

    pub fn deliver_sm_resps(&self) -> usize {
        self.inner.deliver_sm_resps.load(Ordering::SeqCst)
    }

    /// `generic_nack`s received from the ESME.
    pub fn generic_nacks(&self) -> usize {
        self.inner.generic_nacks.load(Ordering::SeqCst)
    }

    /// The most submits that were waiting for an answer at once (with `ack_delay`).
    pub fn max_outstanding(&self) -> usize {
        self.inner.max_outstanding.load(Ordering::SeqCst)
    }

    /// Bound sessions now.
    pub fn sessions(&self) -> usize {
        lock(&self.inner.state).sessions.len()
    }

    /// Send a mobile-originated text from `from` to `to` (E.164 or short code) on a bound
    /// session; a long text goes in parts with a UDH. `false` if no session is bound.
    pub fn inject_mo(&self, from: &str, to: &str, text: &str) -> bool {
        let template = SubmitTemplate {
            service_type: String::new(),
            source_addr: String::new(),
            source_addr_ton: 1,
            source_addr_npi: 1,
            dest_addr_ton: 0,
            dest_addr_npi: 0,
            gsm7_data_coding: 0,
            registered_delivery: 0,
        };
        let reference = (self.inner.next_id.load(Ordering::Relaxed) & 0xFF) as u8;
        let Ok(parts) = build(&template, Some(from), to, text, reference) else { return false };
        let mut bytes = Vec::new();
        for sm in parts {
            let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
            if let Ok(b) = Pdu::new(seq, Body::DeliverSm(sm)).encode() {
                bytes.extend_from_slice(&b);
            }
        }
        self.inject_raw(bytes)
    }

    /// Write raw bytes on a bound session. `false` if none is bound.
    pub fn inject_raw(&self, bytes: Vec<u8>) -> bool {
        let state = lock(&self.inner.state);
        match state.sessions.values().next() {
            Some(tx) => tx.send(bytes).is_ok(),
            None => false,
        }
    }
}

impl Inner {
    fn receipt_pdu(&self, id: &str, config: &SmscConfig, sm: &Sm) -> Option<Vec<u8>> {
        let rid = match config.receipt_id_format {
            Some(f) if f != config.id_format => {
                let n = match config.id_format {
                    IdFormat::Hex => u64::from_str_radix(id, 16).ok()?,
                    IdFormat::Decimal => id.parse().ok()?,
                };
                f.write(n)
            }
            _ => id.to_string(),
        };
        let mut dlr = Sm {
            source_addr_ton: sm.dest_addr_ton,
            source_addr_npi: sm.dest_addr_npi,
            source_addr: sm.destination_addr.clone(),
            dest_addr_ton: sm.source_addr_ton,
            dest_addr_npi: sm.source_addr_npi,
            destination_addr: sm.source_addr.clone(),
            esm_class: esm::DELIVERY_RECEIPT,
            ..Sm::default()
        };
        if config.receipt_text {
            let err = if config.receipt_stat == "DELIVRD" { "000" } else { "001" };
            dlr.short_message = receipt::format_text(&rid, &config.receipt_stat, err, "2611280101").into_bytes();
        }
        if config.receipt_tlvs {
            let state = match config.receipt_stat.as_str() {
                "ENROUTE" => 1,
                "DELIVRD" => 2,
                "EXPIRED" => 3,
                "DELETED" => 4,
                "UNDELIV" => 5,
                "ACCEPTD" => 6,
                "REJECTD" => 8,
                _ => 7,
            };
            dlr.tlvs.push(Tlv::cstring(tag::RECEIPTED_MESSAGE_ID, &rid));
            dlr.tlvs.push(Tlv::new(tag::MESSAGE_STATE, [state]));
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        Pdu::new(seq, Body::DeliverSm(dlr)).encode().ok()
    }
}

async fn serve(inner: Arc<Inner>, mut socket: tokio::net::TcpStream, cancel: CancellationToken) {
    let kill = lock(&inner.kill).clone();
    let session = inner.next_session.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
    let mut bound = false;
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    'conn: loop {
        loop {
            let len = match frame_len(&buf) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(_) => break 'conn,
            };
            let frame = buf.split_to(len);
            let pdu = match Pdu::decode(&frame) {
                Ok(p) => p,
                Err(e) => {
                    if let Ok(b) = e.nack().encode() {
                        out.extend_from_slice(&b);
                    }
                    continue;
                }
            };
            let seq = pdu.sequence_number;
            match pdu.body {
                Body::BindTransceiver(b) => {
                    let config = lock(&inner.config).clone();
                    let status = if b.system_id != config.system_id {
                        status::ESME_RINVSYSID
                    } else if b.password != config.password {
                        status::ESME_RINVPASWD
                    } else if bound {
                        status::ESME_RALYBND
                    } else {
                        status::ESME_ROK
                    };
                    let resp = Pdu {
                        command_status: status,
                        sequence_number: seq,
                        body: Body::BindTransceiverResp {
                            system_id: "fakesmsc".into(),
                            tlvs: vec![Tlv::new(tag::SC_INTERFACE_VERSION, [0x34])],
                        },
                    };
                    if let Ok(b) = resp.encode() {
                        out.extend_from_slice(&b);
                    }
                    if status == status::ESME_ROK {
                        bound = true;
                        inner.binds.fetch_add(1, Ordering::SeqCst);
                        lock(&inner.state).sessions.insert(session, tx.clone());
                    } else {
                        inner.refused_binds.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Body::SubmitSm(sm) if bound => {
                    if inner
                        .drop_on_submit
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        lock(&inner.state).dropped.push(sm);
                        break 'conn;
                    }
                    if inner.throttle.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                        inner.throttled.fetch_add(1, Ordering::SeqCst);
                        let resp = Pdu {
                            command_status: status::ESME_RTHROTTLED,
                            sequence_number: seq,
                            body: Body::SubmitSmResp { message_id: String::new() },
                        };
                        if let Ok(b) = resp.encode() {
                            out.extend_from_slice(&b);
                        }
                        continue;
                    }
                    let config = lock(&inner.config).clone();
                    let id = config.id_format.write(inner.next_id.fetch_add(1, Ordering::SeqCst));
                    let (data, _) = user_data(&sm);
                    let text = decode_text(sm.data_coding, data);
                    let resp =
                        Pdu::new(seq, Body::SubmitSmResp { message_id: id.clone() }).encode().unwrap_or_default();
                    let dlr = (config.receipts && sm.registered_delivery & 0x03 != 0)
                        .then(|| inner.receipt_pdu(&id, &config, &sm))
                        .flatten();
                    lock(&inner.state).submitted.push(Submitted { message_id: id, sm, text });
                    if config.ack_delay.is_zero() {
                        out.extend_from_slice(&resp);
                    } else {
                        let now = inner.outstanding.fetch_add(1, Ordering::SeqCst) + 1;
                        inner.max_outstanding.fetch_max(now, Ordering::SeqCst);
                        let (tx, inner2) = (tx.clone(), inner.clone());
                        tokio::spawn(async move {
                            tokio::time::sleep(config.ack_delay).await;
                            inner2.outstanding.fetch_sub(1, Ordering::SeqCst);
                            let _ = tx.send(resp);
                        });
                    }
                    if let Some(dlr) = dlr {
                        let tx = tx.clone();
                        let delay = config.receipt_delay + config.ack_delay;
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = tx.send(dlr);
                        });
                    }
                }
                Body::SubmitSm(_) => {
                    let resp = Pdu {
                        command_status: status::ESME_RINVBNDSTS,
                        sequence_number: seq,
                        body: Body::SubmitSmResp { message_id: String::new() },
                    };
                    out.extend_from_slice(&resp.encode().unwrap_or_default());
                }
                Body::EnquireLink => {
                    inner.enquire_links.fetch_add(1, Ordering::SeqCst);
                    out.extend_from_slice(&Pdu::new(seq, Body::EnquireLinkResp).encode().unwrap_or_default());
                }
                Body::Unbind => {
                    out.extend_from_slice(&Pdu::new(seq, Body::UnbindResp).encode().unwrap_or_default());
                    let _ = socket.write_all(&out).await;
                    break 'conn;
                }
                Body::DeliverSmResp { .. } => {
                    inner.deliver_sm_resps.fetch_add(1, Ordering::SeqCst);
                }
                Body::GenericNack => {
                    inner.generic_nacks.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
        }
        if !out.is_empty() {
            if socket.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = kill.cancelled() => break,
            r = socket.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            Some(bytes) = rx.recv() => {
                out.extend_from_slice(&bytes);
                while let Ok(more) = rx.try_recv() {
                    out.extend_from_slice(&more);
                }
            }
        }
    }
    lock(&inner.state).sessions.remove(&session);
}
