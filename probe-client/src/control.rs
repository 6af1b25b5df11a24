//! Control channel to the server: QUIC on the UDP port, or framed messages on the TCP port
//! when UDP is blocked. Both carry the same [`Control`] messages.

use crate::pin::PinVerifier;
use probe_proto::frame::{self, Decoder};
use probe_proto::msg::Control;
use probe_proto::stun;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const ALPN: &[u8] = b"calls-probe/1";

#[derive(Debug)]
pub enum QuicError {
    PinMismatch { seen: String },
    Failed(String),
}

pub struct QuicControl {
    _endpoint: quinn::Endpoint,
    token: Option<[u8; 32]>,
    pub conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    dec: Decoder,
    pub pin_seen: Option<String>,
}

impl QuicControl {
    pub async fn connect(
        server: SocketAddr,
        pin: Option<String>,
        token: Option<[u8; 32]>,
        timeout: Duration,
    ) -> Result<Self, QuicError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(PinVerifier::new(pin, provider.clone()));
        let fail = |e: String| QuicError::Failed(e);
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| fail(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| fail(e.to_string()))?;
        let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        // Short idle timeout with keep-alives: a dead server is noticed within seconds.
        transport.max_idle_timeout(Some(Duration::from_secs(4).try_into().expect("small")));
        transport.keep_alive_interval(Some(Duration::from_secs(1)));
        cfg.transport_config(Arc::new(transport));
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        // The server demultiplexes by first byte (RFC 9443): never grease QUIC's fixed bit.
        let mut endpoint_cfg = quinn::EndpointConfig::default();
        endpoint_cfg.grease_quic_bit(false);
        let socket = std::net::UdpSocket::bind(bind)
            .map_err(|e| fail(format!("cannot open a UDP socket: {e}")))?;
        let endpoint =
            quinn::Endpoint::new(endpoint_cfg, None, socket, Arc::new(quinn::TokioRuntime))
                .map_err(|e| fail(format!("cannot open a UDP socket: {e}")))?;
        let attempt = async {
            let conn = endpoint
                .connect_with(cfg, server, "probe-server")
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            let (send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((conn, send, recv))
        };
        let res = tokio::time::timeout(timeout, attempt).await;
        if verifier.mismatch() {
            return Err(QuicError::PinMismatch {
                seen: verifier.seen().unwrap_or_default(),
            });
        }
        let (conn, send, recv) = match res {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(fail(e)),
            Err(_) => return Err(fail("QUIC handshake timed out".into())),
        };
        Ok(Self {
            _endpoint: endpoint,
            token,
            conn,
            send,
            recv,
            dec: Decoder::new(),
            pin_seen: verifier.seen(),
        })
    }

    pub async fn request(&mut self, msg: &Control, timeout: Duration) -> Result<Control, String> {
        let exchange = async {
            self.send
                .write_all(&msg.to_frame(self.token.as_ref()))
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4096];
            loop {
                if let Some(p) = self.dec.next_frame().map_err(|e| e.to_string())? {
                    return Control::from_payload(p, self.token.as_ref())
                        .map_err(|e| e.to_string());
                }
                match self.recv.read(&mut buf).await.map_err(|e| e.to_string())? {
                    Some(n) => self.dec.push(&buf[..n]),
                    None => return Err("the server closed the control stream".into()),
                }
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err("no answer on the control channel".into()))
    }

    /// Closes the connection and gives the close a moment to reach the server, so it frees
    /// the session now rather than after its idle timeout.
    pub async fn close(&self) {
        self.conn.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_millis(200), self._endpoint.wait_idle()).await;
    }
}

/// A TCP connection to the probe port speaking RFC 4571 frames.
pub struct TcpLink {
    pub rd: OwnedReadHalf,
    pub wr: OwnedWriteHalf,
    pub dec: Decoder,
    pub token: Option<[u8; 32]>,
}

impl TcpLink {
    /// Connects; returns the link and the connect time in ms.
    pub async fn connect(
        server: SocketAddr,
        token: Option<[u8; 32]>,
        timeout: Duration,
    ) -> Result<(Self, f64), String> {
        let t0 = Instant::now();
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(server)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("TCP connect timed out".into()),
        };
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        Ok((
            Self {
                rd,
                wr,
                dec: Decoder::new(),
                token,
            },
            ms,
        ))
    }

    pub async fn send(&mut self, payload: &[u8]) -> std::io::Result<()> {
        self.wr.write_all(&frame::encode(payload)).await
    }

    pub async fn next_frame(&mut self) -> Result<Vec<u8>, String> {
        read_frame(&mut self.rd, &mut self.dec).await
    }

    /// STUN Binding over the TCP connection: proves the probe server (not just any listener)
    /// answers. Returns the mapped address.
    pub async fn stun(&mut self, timeout: Duration) -> Result<SocketAddr, String> {
        let tid: [u8; 12] = rand_bytes();
        let req = stun_request(tid, self.token.as_ref());
        let exchange = async {
            self.send(&req).await.map_err(|e| e.to_string())?;
            loop {
                let f = self.next_frame().await?;
                if let Ok(m) = stun::decode(&f) {
                    if m.tid == tid {
                        return m
                            .xor_mapped
                            .ok_or_else(|| "STUN answer without a mapped address".to_string());
                    }
                }
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err("no STUN answer over TCP".into()))
    }

    /// A control exchange on this connection; frames of other kinds are skipped.
    pub async fn request(&mut self, msg: &Control, timeout: Duration) -> Result<Control, String> {
        let exchange = async {
            self.send(&msg.to_payload(self.token.as_ref()))
                .await
                .map_err(|e| e.to_string())?;
            loop {
                let f = self.next_frame().await?;
                if f.first() == Some(&probe_proto::msg::CONTROL_TAG) {
                    return Control::from_payload(&f, self.token.as_ref())
                        .map_err(|e| e.to_string());
                }
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err("no answer on the control channel".into()))
    }
}

/// Next whole frame payload; cancel-safe (partial reads stay in the decoder), so it can sit in
/// a `select!` beside the sending timer.
pub async fn read_frame(rd: &mut OwnedReadHalf, dec: &mut Decoder) -> Result<Vec<u8>, String> {
    let mut buf = [0u8; 8192];
    loop {
        if let Some(p) = dec.next_frame().map_err(|e| e.to_string())? {
            return Ok(p.to_vec());
        }
        match rd.read(&mut buf).await {
            Ok(0) => return Err("the server closed the TCP connection".into()),
            Ok(n) => dec.push(&buf[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A Binding request padded so its answer is never larger; with a token it proves it holds it,
/// and carries this computer's clock so a captured copy goes stale (the server's window is
/// the hello's).
pub fn stun_request(tid: [u8; 12], token: Option<&[u8; 32]>) -> Vec<u8> {
    match token {
        Some(key) => {
            let now_s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let user = probe_proto::auth::stun_username(now_s);
            stun::binding_request(tid, Some(&user), Some(key), 128)
        }
        None => stun::binding_request(tid, None, None, 64),
    }
}

pub fn rand_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the OS random source works");
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_proto::msg::Counters;
    use tokio::net::TcpListener;

    /// A server that reads one request frame, then answers with `frames`.
    async fn server(frames: Vec<Vec<u8>>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            let (c, _) = l.accept().await.expect("accept");
            let (mut rd, mut wr) = c.into_split();
            let mut dec = Decoder::new();
            let req = read_frame(&mut rd, &mut dec).await.expect("a request");
            assert_eq!(req.first(), Some(&probe_proto::msg::CONTROL_TAG));
            for f in frames {
                let _ = wr.write_all(&frame::encode(&f)).await;
            }
            // Hold the connection open until the client is done.
            let _ = read_frame(&mut rd, &mut dec).await;
        });
        addr
    }

    fn finish() -> Control {
        Control::Finish {
            session_id: 9,
            pad: vec![],
        }
    }

    #[tokio::test]
    async fn tcp_control_skips_frames_of_other_kinds() {
        let counters = Counters {
            udp_rx: 5,
            ..Counters::default()
        };
        let stun_answer = stun_request([1; 12], None);
        let addr = server(vec![
            stun_answer,
            Control::Counters(counters).to_payload(None),
        ])
        .await;
        let (mut link, ms) = TcpLink::connect(addr, None, Duration::from_secs(2))
            .await
            .expect("connect");
        assert!(ms >= 0.0);
        let answer = link.request(&finish(), Duration::from_secs(2)).await;
        assert_eq!(answer, Ok(Control::Counters(counters)));
    }

    #[tokio::test]
    async fn tcp_control_without_an_answer_times_out() {
        let addr = server(vec![]).await;
        let (mut link, _) = TcpLink::connect(addr, None, Duration::from_secs(2))
            .await
            .expect("connect");
        let answer = link.request(&finish(), Duration::from_millis(100)).await;
        assert_eq!(answer, Err("no answer on the control channel".into()));
    }

    #[test]
    fn stun_requests_are_padded_and_carry_the_token() {
        let plain = stun_request([2; 12], None);
        let signed = stun_request([2; 12], Some(&[4; 32]));
        assert!(plain.len() >= 64 && signed.len() >= 128);
        let m = stun::decode(&signed).expect("a STUN message");
        assert_eq!(m.tid, [2; 12]);
        let signed_at = m
            .username
            .as_deref()
            .and_then(probe_proto::auth::stun_username_time);
        assert!(
            signed_at.is_some_and(|s| s > 1_600_000_000),
            "{:?}",
            m.username
        );
        assert_ne!(rand_bytes::<16>(), rand_bytes::<16>());
    }
}
