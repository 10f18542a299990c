//! `--channel sms-smpp`: a minimal SMSC inside the bench process, and an SMPP channel account on
//! the benchmarked server that binds to it (one transceiver bind, window 50), so that every SMS
//! of the run goes through a real SMPP session: `submit_sm` out, `submit_sm_resp` and a
//! `DELIVRD` receipt (TLVs and text) back. A message counts as delivered only when its receipt
//! matched its id. (The full fake SMSC of the tests is `parley_testkit::smsc`; the bench keeps
//! its own few lines so that the binary does not depend on the test kit.)

use super::load::Endpoint;
use anyhow::Context;
use parley_channels::smpp::pdu::{Body, Pdu, Sm, Tlv, esm, frame_len, status, tag};
use parley_channels::smpp::receipt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SYSTEM_ID: &str = "bench";
const PASSWORD: &str = "bench";

/// The bench's SMSC: counts what it took and the receipts it sent.
pub struct BenchSmsc {
    port: u16,
    pub submits: Arc<AtomicU64>,
    pub binds: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BenchSmsc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The channel a bench run drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchChannel {
    /// SMS through the workspace's sandbox account.
    Sms,
    /// SMS through an SMPP account bound to the bench's SMSC.
    SmsSmpp,
}

/// With `sms-smpp`: start the SMSC and point the server's default SMS account at it.
pub async fn attach(channel: BenchChannel, endpoint: &Endpoint) -> anyhow::Result<Option<BenchSmsc>> {
    if channel == BenchChannel::Sms {
        return Ok(None);
    }
    let smsc = BenchSmsc::start().await?;
    smsc.connect_server(endpoint, 50).await?;
    Ok(Some(smsc))
}

impl BenchSmsc {
    /// One line for the report.
    pub fn summary(&self) -> String {
        let n = self.submits.load(Ordering::SeqCst);
        format!(
            "bench SMSC: {n} submit_sm taken and as many DELIVRD receipts sent, {} bind(s)",
            self.binds.load(Ordering::SeqCst)
        )
    }

    pub async fn start() -> anyhow::Result<BenchSmsc> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot listen for the SMSC")?;
        let port = listener.local_addr()?.port();
        let submits = Arc::new(AtomicU64::new(0));
        let binds = Arc::new(AtomicUsize::new(0));
        let (s, b) = (submits.clone(), binds.clone());
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let _ = socket.set_nodelay(true);
                tokio::spawn(serve(socket, s.clone(), b.clone()));
            }
        });
        Ok(BenchSmsc { port, submits, binds, task })
    }

    /// Create the SMPP account (the workspace's default for SMS) on the server and wait for its
    /// bind.
    pub async fn connect_server(&self, endpoint: &Endpoint, window: usize) -> anyhow::Result<()> {
        let body = serde_json::json!({
            "channel": "sms", "provider": "smpp", "name": "bench SMSC", "is_default": true,
            "config": {"host": "127.0.0.1", "port": self.port, "system_id": SYSTEM_ID, "window": window,
                "reconnect_min_ms": 100},
            "credentials": {"password": PASSWORD},
            "rate_limit_per_second": 100_000, "max_in_flight": 10_000,
        });
        let url = format!("http://{}/v1/channel-accounts", endpoint.addr);
        let answer = reqwest::Client::new()
            .post(&url)
            .header(reqwest::header::AUTHORIZATION, endpoint.authorization.as_str())
            .json(&body)
            .send()
            .await
            .context("cannot create the SMPP channel account")?;
        let code = answer.status();
        anyhow::ensure!(code.as_u16() == 201, "creating the SMPP account: {code}: {}", answer.text().await?);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.binds.load(Ordering::SeqCst) == 0 {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "the server never bound to the bench SMSC");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

async fn serve(mut socket: tokio::net::TcpStream, submits: Arc<AtomicU64>, binds: Arc<AtomicUsize>) {
    let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
    let mut out = Vec::with_capacity(64 * 1024);
    let mut seq: u32 = 1;
    loop {
        while let Ok(Some(len)) = frame_len(&buf) {
            let frame = buf.split_to(len);
            let pdu = match Pdu::decode(&frame) {
                Ok(p) => p,
                Err(e) => {
                    out.extend(e.nack().encode().unwrap_or_default());
                    continue;
                }
            };
            let n = pdu.sequence_number;
            let reply = match pdu.body {
                Body::BindTransceiver(b) => {
                    let ok = b.system_id == SYSTEM_ID && b.password == PASSWORD;
                    if ok {
                        binds.fetch_add(1, Ordering::SeqCst);
                    }
                    let body = Body::BindTransceiverResp { system_id: "benchsmsc".into(), tlvs: Vec::new() };
                    let command_status = if ok { status::ESME_ROK } else { status::ESME_RINVPASWD };
                    Some(Pdu { command_status, sequence_number: n, body })
                }
                Body::SubmitSm(sm) => {
                    let id = format!("{:08X}", submits.fetch_add(1, Ordering::Relaxed) + 1);
                    out.extend(Pdu::new(n, Body::SubmitSmResp { message_id: id.clone() }).encode().unwrap_or_default());
                    seq = seq.wrapping_add(1);
                    let dlr = Sm {
                        source_addr: sm.destination_addr,
                        destination_addr: sm.source_addr,
                        esm_class: esm::DELIVERY_RECEIPT,
                        short_message: receipt::format_text(&id, "DELIVRD", "000", "2611280000").into_bytes(),
                        tlvs: vec![Tlv::cstring(tag::RECEIPTED_MESSAGE_ID, &id), Tlv::new(tag::MESSAGE_STATE, [2])],
                        ..Sm::default()
                    };
                    Some(Pdu::new(seq, Body::DeliverSm(dlr)))
                }
                Body::EnquireLink => Some(Pdu::new(n, Body::EnquireLinkResp)),
                Body::Unbind => Some(Pdu::new(n, Body::UnbindResp)),
                _ => None,
            };
            if let Some(r) = reply {
                out.extend(r.encode().unwrap_or_default());
            }
        }
        if !out.is_empty() {
            if socket.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        match socket.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
