//! One persistent transceiver bind: a connection task fed by an mpsc channel (the mini-redis
//! pattern). The task owns the socket; callers send it a [`Command`] with a oneshot for the
//! answer.
//!
//! - **Window.** At most `window` `submit_sm` are in flight, keyed by sequence number; the task
//!   stops taking commands while the window is full, so callers wait for a slot in the channel.
//! - **Timeouts.** A `submit_sm` unanswered after `response_timeout_ms` is answered `Timeout`
//!   (transient); an `enquire_link` unanswered that long means the link is dead.
//! - **enquire_link** every `enquire_link_seconds`; the SMSC's are answered.
//! - **Throttling.** `ESME_RTHROTTLED` and `ESME_RMSGQFUL` pause the bind for `throttle_pause_ms`
//!   (no new `submit_sm` goes out until then).
//! - **Link loss.** Every submit in flight is answered `LinkDown`; while the link is down (during
//!   the reconnect backoff) commands are answered `NotBound` at once. Both are transient, so the
//!   engine's dispatcher retries: nothing is lost. (A submit whose response was lost with the
//!   link may have been taken: SMPP has no idempotency key, so that one can arrive twice.)
//! - **deliver_sm** is answered with `deliver_sm_resp` before anything else is done with it.
//! - A PDU that cannot be read is answered with `generic_nack` and the session goes on; a
//!   `command_length` that cannot be framed ends the connection (reconnect).

use super::SmppConfig;
use super::message::{Reassembly, decode_text, user_data};
use super::pdu::{Bind, Body, DecodeError, Pdu, Sm, frame_len, status};
use super::receipt;
use crate::ProviderEvents;
use bytes::BytesMut;
use parley_domain::{ChannelAccountId, Content, InboundMessage, Millis};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the connection task is asked to do.
pub enum Command {
    Submit { sm: Sm, reply: oneshot::Sender<SubmitOutcome> },
}

/// The answer to one `submit_sm`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// `submit_sm_resp` with status 0: the SMSC's message id, normalised.
    Accepted(String),
    /// `submit_sm_resp` (or `generic_nack`) with this status.
    Refused(u32),
    /// No answer within the response timeout.
    Timeout,
    /// The link dropped with this submit in flight.
    LinkDown,
    /// No bind at the moment (reconnecting).
    NotBound(String),
    /// The PDU could not be written (a field too long).
    Invalid(String),
}

/// The bind's state, for `check()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Bound,
    Down(String),
}

/// The credentials, kept out of every `Debug`.
#[derive(Clone)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Everything the connection task needs.
pub struct Session {
    pub account: ChannelAccountId,
    pub config: SmppConfig,
    pub password: Password,
    pub events: ProviderEvents,
    pub commands: mpsc::Receiver<Command>,
    pub state: watch::Sender<LinkState>,
    pub cancel: CancellationToken,
}

enum End {
    Cancelled,
    Dropped(String),
}

struct Inflight {
    reply: oneshot::Sender<SubmitOutcome>,
    deadline: Instant,
}

static MO_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Session {
    /// Run until cancelled: connect, bind, serve, and reconnect with backoff.
    pub async fn run(mut self) {
        let mut backoff = Duration::from_millis(self.config.reconnect_min_ms);
        let max_backoff = Duration::from_millis(self.config.reconnect_max_ms.max(self.config.reconnect_min_ms));
        let mut reassembly = Reassembly::new(Duration::from_secs(600));
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            self.state.send_replace(LinkState::Connecting);
            let why = match self.connect_and_bind().await {
                Ok(io) => {
                    backoff = Duration::from_millis(self.config.reconnect_min_ms);
                    self.state.send_replace(LinkState::Bound);
                    tracing::info!(account = %self.account, host = %self.config.host, port = self.config.port,
                        system_id = %self.config.system_id, "smpp: bound");
                    match self.serve(io, &mut reassembly).await {
                        End::Cancelled => break,
                        End::Dropped(why) => why,
                    }
                }
                Err(why) => why,
            };
            tracing::warn!(account = %self.account, reason = %why, retry_in_ms = backoff.as_millis() as u64,
                "smpp: link down");
            self.state.send_replace(LinkState::Down(why.clone()));
            // Wait out the backoff, answering every command at once.
            let until = Instant::now() + backoff;
            loop {
                tokio::select! {
                    _ = self.cancel.cancelled() => {
                        self.state.send_replace(LinkState::Down("shut down".into()));
                        return;
                    }
                    _ = tokio::time::sleep_until(until) => break,
                    cmd = self.commands.recv() => match cmd {
                        Some(Command::Submit { reply, .. }) => {
                            let _ = reply.send(SubmitOutcome::NotBound(why.clone()));
                        }
                        None => return,
                    },
                }
            }
            backoff = (backoff * 2).min(max_backoff);
        }
        self.state.send_replace(LinkState::Down("shut down".into()));
    }

    async fn connect(&self) -> Result<Box<dyn Io>, String> {
        let addr = (self.config.host.as_str(), self.config.port);
        let timeout = Duration::from_millis(self.config.response_timeout_ms);
        let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {}:{} timed out", self.config.host, self.config.port))?
            .map_err(|e| format!("cannot connect to {}:{}: {e}", self.config.host, self.config.port))?;
        let _ = tcp.set_nodelay(true);
        if !self.config.tls {
            return Ok(Box::new(tcp));
        }
        use tokio_rustls::rustls;
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(self.config.host.clone())
            .map_err(|e| format!("TLS: bad server name '{}': {e}", self.config.host))?;
        let stream = tokio::time::timeout(timeout, tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        Ok(Box::new(stream))
    }

    async fn connect_and_bind(&self) -> Result<(Box<dyn Io>, BytesMut), String> {
        let mut io = self.connect().await?;
        let bind = Pdu::new(
            1,
            Body::BindTransceiver(Bind {
                system_id: self.config.system_id.clone(),
                password: self.password.0.clone(),
                system_type: self.config.system_type.clone(),
                interface_version: 0x34,
                addr_ton: 0,
                addr_npi: 0,
                address_range: String::new(),
            }),
        );
        let bytes = bind.encode().map_err(|e| format!("bind_transceiver: {e}"))?;
        io.write_all(&bytes).await.map_err(|e| format!("writing bind_transceiver: {e}"))?;
        let timeout = Duration::from_millis(self.config.response_timeout_ms);
        let mut buf = BytesMut::with_capacity(4096);
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(len) = frame_len(&buf).map_err(|e| format!("bind: {e}"))? {
                let frame = buf.split_to(len);
                match Pdu::decode(&frame) {
                    Ok(Pdu { command_status, body: Body::BindTransceiverResp { .. }, .. }) => {
                        if command_status != status::ESME_ROK {
                            return Err(format!("bind refused: smpp:0x{command_status:08x}"));
                        }
                        return Ok((io, buf));
                    }
                    Ok(Pdu { body: Body::GenericNack, command_status, .. }) => {
                        return Err(format!("bind refused: generic_nack smpp:0x{command_status:08x}"));
                    }
                    // Anything else before the bind answer is dropped.
                    Ok(_) | Err(_) => {}
                }
            }
            let n = tokio::time::timeout_at(deadline, io.read_buf(&mut buf))
                .await
                .map_err(|_| "no bind_transceiver_resp in time".to_string())?
                .map_err(|e| format!("reading bind_transceiver_resp: {e}"))?;
            if n == 0 {
                return Err("the SMSC closed the connection during bind".into());
            }
        }
    }

    async fn serve(&mut self, (io, mut inbuf): (Box<dyn Io>, BytesMut), reassembly: &mut Reassembly) -> End {
        let (mut reader, mut writer) = tokio::io::split(io);
        let window = self.config.window.max(1);
        let timeout = Duration::from_millis(self.config.response_timeout_ms);
        let mut inflight: HashMap<u32, Inflight> = HashMap::with_capacity(window);
        let mut next_seq: u32 = 2;
        let mut seq = move || {
            let s = next_seq;
            next_seq = if next_seq >= 0x7FFF_FFFF { 1 } else { next_seq + 1 };
            s
        };
        let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut enquire = tokio::time::interval(Duration::from_secs(self.config.enquire_link_seconds.max(1)));
        enquire.tick().await;
        let mut enquire_deadline: Option<Instant> = None;
        let sweep_every = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(500));
        let mut sweep = tokio::time::interval(sweep_every);
        let mut paused_until: Option<Instant> = None;
        let end = loop {
            // Process whatever has been read.
            loop {
                let len = match frame_len(&inbuf) {
                    Ok(Some(len)) => len,
                    Ok(None) => break,
                    Err(e) => {
                        let nack = Pdu {
                            command_status: status::ESME_RINVCMDLEN,
                            sequence_number: 0,
                            body: Body::GenericNack,
                        };
                        let _ = writer.write_all(&encode(&nack)).await;
                        break_with(&mut inflight);
                        return End::Dropped(format!("unreadable stream: {e}"));
                    }
                };
                let frame = inbuf.split_to(len);
                match Pdu::decode(&frame) {
                    Ok(pdu) => {
                        if let Some(end) = self.handle(
                            pdu,
                            &mut inflight,
                            &mut out,
                            &mut enquire_deadline,
                            &mut paused_until,
                            reassembly,
                        ) {
                            let _ = writer.write_all(&out).await;
                            let _ = writer.flush().await;
                            break_with(&mut inflight);
                            return end;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(account = %self.account, error = %e, "smpp: unreadable PDU, answered generic_nack");
                        if !matches!(e, DecodeError::UnknownCommand { command_id, .. } if command_id & 0x8000_0000 != 0)
                        {
                            out.extend_from_slice(&encode(&e.nack()));
                        }
                    }
                }
            }
            let paused = paused_until.is_some_and(|t| t > Instant::now());
            if !paused {
                paused_until = None;
            }
            // Take every command that fits the window and is ready now.
            if !paused {
                while inflight.len() < window {
                    match self.commands.try_recv() {
                        Ok(c) => self.submit(c, &mut inflight, &mut out, &mut seq, timeout),
                        Err(_) => break,
                    }
                }
            }
            if !out.is_empty() {
                if let Err(e) = writer.write_all(&out).await {
                    break_with(&mut inflight);
                    return End::Dropped(format!("write failed: {e}"));
                }
                out.clear();
            }
            let can_take = !paused && inflight.len() < window;
            tokio::select! {
                _ = self.cancel.cancelled() => break End::Cancelled,
                r = reader.read_buf(&mut inbuf) => match r {
                    Ok(0) => break End::Dropped("the SMSC closed the connection".into()),
                    Ok(_) => {}
                    Err(e) => break End::Dropped(format!("read failed: {e}")),
                },
                c = self.commands.recv(), if can_take => match c {
                    Some(c) => self.submit(c, &mut inflight, &mut out, &mut seq, timeout),
                    None => break End::Cancelled,
                },
                _ = enquire.tick() => {
                    if enquire_deadline.is_none() {
                        enquire_deadline = Some(Instant::now() + timeout);
                        out.extend_from_slice(&encode(&Pdu::new(seq(), Body::EnquireLink)));
                    }
                },
                _ = sweep.tick() => {
                    let now = Instant::now();
                    if enquire_deadline.is_some_and(|d| d <= now) {
                        break End::Dropped("no enquire_link_resp in time".into());
                    }
                    let expired: Vec<u32> = inflight.iter().filter(|(_, f)| f.deadline <= now).map(|(s, _)| *s).collect();
                    for s in expired {
                        if let Some(f) = inflight.remove(&s) {
                            let _ = f.reply.send(SubmitOutcome::Timeout);
                        }
                    }
                },
                _ = sleep_until_opt(paused_until), if paused => {},
            }
        };
        if let End::Cancelled = end {
            // Unbind politely; do not wait long for the answer.
            let _ = writer.write_all(&encode(&Pdu::new(seq(), Body::Unbind))).await;
            let _ = writer.flush().await;
            let mut scratch = BytesMut::with_capacity(256);
            let _ = tokio::time::timeout(Duration::from_millis(200), reader.read_buf(&mut scratch)).await;
        }
        break_with(&mut inflight);
        end
    }

    fn submit(
        &self,
        c: Command,
        inflight: &mut HashMap<u32, Inflight>,
        out: &mut Vec<u8>,
        seq: &mut impl FnMut() -> u32,
        timeout: Duration,
    ) {
        let Command::Submit { sm, reply } = c;
        if reply.is_closed() {
            return;
        }
        let s = seq();
        match Pdu::new(s, Body::SubmitSm(sm)).encode() {
            Ok(bytes) => {
                out.extend_from_slice(&bytes);
                inflight.insert(s, Inflight { reply, deadline: Instant::now() + timeout });
            }
            Err(e) => {
                let _ = reply.send(SubmitOutcome::Invalid(e.to_string()));
            }
        }
    }

    /// Handle one PDU from the SMSC; `Some` ends the connection.
    #[allow(clippy::too_many_arguments)]
    fn handle(
        &self,
        pdu: Pdu,
        inflight: &mut HashMap<u32, Inflight>,
        out: &mut Vec<u8>,
        enquire_deadline: &mut Option<Instant>,
        paused_until: &mut Option<Instant>,
        reassembly: &mut Reassembly,
    ) -> Option<End> {
        let seq = pdu.sequence_number;
        match pdu.body {
            Body::SubmitSmResp { message_id } => {
                if let Some(f) = inflight.remove(&seq) {
                    let outcome = if pdu.command_status == status::ESME_ROK {
                        SubmitOutcome::Accepted(receipt::normalize_id(&message_id))
                    } else {
                        if is_throttle(pdu.command_status) {
                            *paused_until = Some(Instant::now() + Duration::from_millis(self.config.throttle_pause_ms));
                        }
                        SubmitOutcome::Refused(pdu.command_status)
                    };
                    let _ = f.reply.send(outcome);
                }
            }
            Body::GenericNack => {
                if let Some(f) = inflight.remove(&seq) {
                    let _ = f.reply.send(SubmitOutcome::Refused(pdu.command_status));
                }
            }
            Body::DeliverSm(sm) => {
                out.extend_from_slice(&encode(&Pdu::new(seq, Body::DeliverSmResp { message_id: String::new() })));
                self.deliver(sm, reassembly);
            }
            Body::EnquireLink => out.extend_from_slice(&encode(&Pdu::new(seq, Body::EnquireLinkResp))),
            Body::EnquireLinkResp => *enquire_deadline = None,
            Body::Unbind => {
                out.extend_from_slice(&encode(&Pdu::new(seq, Body::UnbindResp)));
                return Some(End::Dropped("the SMSC unbound".into()));
            }
            Body::UnbindResp | Body::DeliverSmResp { .. } | Body::BindTransceiverResp { .. } => {}
            Body::BindTransceiver(_) | Body::SubmitSm(_) => {
                let nack =
                    Pdu { command_status: status::ESME_RINVBNDSTS, sequence_number: seq, body: Body::GenericNack };
                out.extend_from_slice(&encode(&nack));
            }
        }
        None
    }

    fn deliver(&self, sm: Sm, reassembly: &mut Reassembly) {
        let now = Millis::now();
        if sm.is_delivery_receipt() {
            match receipt::parse(&sm, self.config.receipt_id_conversion) {
                Some(parsed) => {
                    if let Some(r) = parsed.to_receipt(self.account, now) {
                        let _ = self.events.receipts.send(r);
                    }
                }
                None => tracing::warn!(account = %self.account, "smpp: a delivery receipt without id or state"),
            }
            return;
        }
        let (data, part) = user_data(&sm);
        let text = decode_text(sm.data_coding, data);
        let text = match part {
            Some(p) => match reassembly.add(&sm.source_addr, &sm.destination_addr, p, text) {
                Some(whole) => whole,
                None => return,
            },
            None => text,
        };
        if text.is_empty() {
            return;
        }
        let from = phone(&sm.source_addr, sm.source_addr_ton);
        let to = Some(phone(&sm.destination_addr, sm.dest_addr_ton)).filter(|s| !s.is_empty());
        let inbound = InboundMessage {
            channel_account_id: self.account,
            provider_message_id: mo_id(self.account, &from, &text),
            from,
            to,
            content: Content::text(text),
            received_at: now,
            contact_id: None,
        };
        let _ = self.events.inbound.send(inbound);
    }
}

/// An international number (TON 1) as E.164.
fn phone(addr: &str, ton: u8) -> String {
    if ton == 1 && !addr.starts_with('+') && !addr.is_empty() { format!("+{addr}") } else { addr.to_string() }
}

/// SMPP gives a mobile-originated message no id: Parley makes a unique one (`smpp_mo_` and 24
/// hex digits), so an SMSC's redelivery of the same `deliver_sm` is not recognised as a repeat.
fn mo_id(account: ChannelAccountId, from: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(account.to_string().as_bytes());
    h.update(from.as_bytes());
    h.update(text.as_bytes());
    h.update(MO_COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    h.update(nanos.to_le_bytes());
    format!("smpp_mo_{}", hex::encode(&h.finalize()[..12]))
}

pub fn is_throttle(status: u32) -> bool {
    status == status::ESME_RTHROTTLED || status == status::ESME_RMSGQFUL
}

fn encode(pdu: &Pdu) -> Vec<u8> {
    // Only header-only PDUs and responses with short fields are encoded here: they always fit.
    pdu.encode().unwrap_or_default()
}

fn break_with(inflight: &mut HashMap<u32, Inflight>) {
    for (_, f) in inflight.drain() {
        let _ = f.reply.send(SubmitOutcome::LinkDown);
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
