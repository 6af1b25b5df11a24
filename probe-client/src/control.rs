//! Control channel to the server: QUIC on the UDP port, or, when UDP is blocked or QUIC fails,
//! RFC 4571 frames inside TLS 1.3 on the TCP port. Both carry the same [`Control`] messages,
//! and both check the same certificate pin. Plain TCP connections ([`TcpLink`]) carry only
//! STUN and echo, as Calls' ICE-TCP does.

use crate::pin::PinVerifier;
use probe_proto::frame::{self, Decoder};
use probe_proto::msg::{Control, DecodeError};
use probe_proto::stun;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const ALPN: &[u8] = b"calls-probe/1";
/// probe-server's TLS on its TCP port (probe-server/src/tcp.rs): another protocol inside, so
/// another ALPN.
const TCP_ALPN: &[u8] = b"calls-probe-tcp/1";

/// Why a TLS control channel (QUIC or TCP) did not come up.
#[derive(Debug)]
pub enum ChannelError {
    PinMismatch { seen: String },
    Failed(String),
}

/// Why a control exchange brought no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The answer carried no valid MAC of the token given: told apart from the rest because it
    /// points at the token (the server has none, or another), not at the path.
    TokenMac,
    Other(String),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::TokenMac => DecodeError::BadMac.fmt(f),
            RequestError::Other(e) => f.write_str(e),
        }
    }
}

impl From<String> for RequestError {
    fn from(e: String) -> Self {
        RequestError::Other(e)
    }
}

impl From<DecodeError> for RequestError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::BadMac => RequestError::TokenMac,
            e => RequestError::Other(e.to_string()),
        }
    }
}

/// TLS 1.3 with ring (QUIC's provider) that trusts the certificate by its pin, offering `alpn`.
fn pinned_tls(
    pin: Option<String>,
    alpn: &[u8],
) -> Result<(rustls::ClientConfig, Arc<PinVerifier>), ChannelError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinVerifier::new(pin, provider.clone()));
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ChannelError::Failed(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    // No resumption: each connection proves the pinned key afresh.
    tls.resumption = rustls::client::Resumption::disabled();
    Ok((tls, verifier))
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
    ) -> Result<Self, ChannelError> {
        let fail = |e: String| ChannelError::Failed(e);
        let (tls, verifier) = pinned_tls(pin, ALPN)?;
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
            return Err(ChannelError::PinMismatch {
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

    /// A control exchange; the error is typed, for callers that act on a bad token MAC.
    pub async fn call(
        &mut self,
        msg: &Control,
        timeout: Duration,
    ) -> Result<Control, RequestError> {
        let exchange = async {
            self.send
                .write_all(&msg.to_frame(self.token.as_ref()))
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4096];
            loop {
                if let Some(p) = self.dec.next_frame().map_err(|e| e.to_string())? {
                    return Ok(Control::from_payload(p, self.token.as_ref())?);
                }
                match self.recv.read(&mut buf).await.map_err(|e| e.to_string())? {
                    Some(n) => self.dec.push(&buf[..n]),
                    None => {
                        return Err(RequestError::Other(
                            "the server closed the control stream".into(),
                        ))
                    }
                }
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(RequestError::Other(
                    "no answer on the control channel".into(),
                ))
            })
    }

    /// Closes the connection and gives the close a moment to reach the server, so it frees
    /// the session now rather than after its idle timeout.
    pub async fn close(&self) {
        self.conn.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_millis(200), self._endpoint.wait_idle()).await;
    }
}

/// The control channel of the TCP fallback: RFC 4571 frames inside TLS on the TCP port.
pub struct TlsControl {
    /// Boxed: a TLS connection's state is large, and [`crate::run::Ctl`] holds one or QUIC's.
    stream: Box<tokio_rustls::client::TlsStream<TcpStream>>,
    dec: Decoder,
    token: Option<[u8; 32]>,
    pub pin_seen: Option<String>,
}

impl TlsControl {
    /// TCP connect and TLS handshake, both within `timeout`; the pin is checked as for QUIC.
    pub async fn connect(
        server: SocketAddr,
        pin: Option<String>,
        token: Option<[u8; 32]>,
        timeout: Duration,
    ) -> Result<Self, ChannelError> {
        let (tls, verifier) = pinned_tls(pin, TCP_ALPN)?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let name = rustls::pki_types::ServerName::try_from("probe-server").expect("a DNS name");
        let attempt = async {
            let tcp = TcpStream::connect(server).await?;
            let _ = tcp.set_nodelay(true);
            connector.connect(name, tcp).await
        };
        let res = tokio::time::timeout(timeout, attempt).await;
        if verifier.mismatch() {
            return Err(ChannelError::PinMismatch {
                seen: verifier.seen().unwrap_or_default(),
            });
        }
        let stream = match res {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ChannelError::Failed(e.to_string())),
            Err(_) => return Err(ChannelError::Failed("TLS handshake timed out".into())),
        };
        if stream.get_ref().1.alpn_protocol() != Some(TCP_ALPN) {
            return Err(ChannelError::Failed(
                "the server did not agree on the probe's TLS protocol".into(),
            ));
        }
        Ok(Self {
            stream: Box::new(stream),
            dec: Decoder::new(),
            token,
            pin_seen: verifier.seen(),
        })
    }

    /// A control exchange; frames of other kinds are skipped. The error is typed, for
    /// callers that act on a bad token MAC.
    pub async fn call(
        &mut self,
        msg: &Control,
        timeout: Duration,
    ) -> Result<Control, RequestError> {
        let exchange = async {
            let out = frame::encode(&msg.to_payload(self.token.as_ref()));
            self.stream
                .write_all(&out)
                .await
                .map_err(|e| e.to_string())?;
            // TLS holds records until flushed.
            self.stream.flush().await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 8192];
            loop {
                if let Some(p) = self.dec.next_frame().map_err(|e| e.to_string())? {
                    if p.first() == Some(&probe_proto::msg::CONTROL_TAG) {
                        return Ok(Control::from_payload(p, self.token.as_ref())?);
                    }
                    continue;
                }
                match self.stream.read(&mut buf).await {
                    Ok(0) => {
                        return Err(RequestError::Other(
                            "the server closed the TLS connection".into(),
                        ))
                    }
                    Ok(n) => self.dec.push(&buf[..n]),
                    Err(e) => return Err(RequestError::Other(e.to_string())),
                }
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(RequestError::Other(
                    "no answer on the control channel".into(),
                ))
            })
    }
}

/// A TCP connection to the probe port speaking RFC 4571 frames in clear: STUN and echo.
pub struct TcpLink {
    pub rd: OwnedReadHalf,
    pub wr: OwnedWriteHalf,
    pub dec: Decoder,
    pub token: Option<[u8; 32]>,
}

/// Why a TCP connect failed: the OS's words, and whether it was a refusal (a reset, or an
/// ICMP unreachable the stack turned into ECONNREFUSED) rather than silence.
#[derive(Debug)]
pub struct ConnectError {
    pub refused: bool,
    text: String,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl TcpLink {
    /// Connects; returns the link and the connect time in ms.
    pub async fn connect(
        server: SocketAddr,
        token: Option<[u8; 32]>,
        timeout: Duration,
    ) -> Result<(Self, f64), ConnectError> {
        let t0 = Instant::now();
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(server)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(ConnectError {
                    refused: e.kind() == std::io::ErrorKind::ConnectionRefused,
                    text: e.to_string(),
                })
            }
            Err(_) => {
                return Err(ConnectError {
                    refused: false,
                    text: "TCP connect timed out".into(),
                })
            }
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

    /// A TLS server with a fresh self-signed certificate (as probe-server's) that reads one
    /// request frame, then answers with `frames`. Returns its address and its certificate's pin.
    async fn server(frames: Vec<Vec<u8>>, alpn: &'static [u8]) -> (SocketAddr, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["probe-server".to_string()])
            .expect("a certificate");
        let der = cert.cert.der().to_vec();
        let pin = crate::pin::pin_of(&der);
        let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
            .expect("a key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(vec![der.into()], key)
            .expect("cert and key");
        cfg.alpn_protocols = vec![alpn.to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            let (c, _) = l.accept().await.expect("accept");
            let Ok(mut s) = acceptor.accept(c).await else {
                return;
            };
            let mut dec = Decoder::new();
            let mut buf = [0u8; 4096];
            loop {
                if let Ok(Some(req)) = dec.next_frame() {
                    assert_eq!(req.first(), Some(&probe_proto::msg::CONTROL_TAG));
                    break;
                }
                match s.read(&mut buf).await {
                    Ok(n) if n > 0 => dec.push(&buf[..n]),
                    _ => return,
                }
            }
            for f in frames {
                let _ = s.write_all(&frame::encode(&f)).await;
            }
            let _ = s.flush().await;
            // Hold the connection open until the client is done.
            let _ = s.read(&mut buf).await;
        });
        (addr, pin)
    }

    fn finish() -> Control {
        Control::Finish {
            session_id: 9,
            pad: vec![],
        }
    }

    const T: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn tls_control_checks_the_pin_and_skips_frames_of_other_kinds() {
        let counters = Counters {
            udp_rx: 5,
            ..Counters::default()
        };
        let stun_answer = stun_request([1; 12], None);
        let frames = vec![stun_answer, Control::Counters(counters).to_payload(None)];
        let (addr, pin) = server(frames, TCP_ALPN).await;
        let mut ctl = TlsControl::connect(addr, Some(pin.clone()), None, T)
            .await
            .expect("connect");
        assert_eq!(ctl.pin_seen.as_deref(), Some(&*pin));
        let answer = ctl.call(&finish(), T).await.map_err(|e| e.to_string());
        assert_eq!(answer, Ok(Control::Counters(counters)));
    }

    #[tokio::test]
    async fn tls_control_with_another_certificate_is_a_pin_mismatch() {
        let (addr, pin) = server(vec![], TCP_ALPN).await;
        let wrong = format!("sha256:{}", "ab".repeat(32));
        match TlsControl::connect(addr, Some(wrong), None, T).await {
            Err(ChannelError::PinMismatch { seen }) => assert_eq!(seen, pin),
            other => panic!("{:?}", other.map(|c| c.pin_seen)),
        }
    }

    #[tokio::test]
    async fn tls_control_refuses_another_alpn_and_times_out_without_an_answer() {
        let (addr, _) = server(vec![], b"calls-probe/1").await;
        let other = TlsControl::connect(addr, None, None, T).await;
        assert!(
            matches!(other, Err(ChannelError::Failed(_))),
            "{:?}",
            other.map(|c| c.pin_seen)
        );
        let (addr, _) = server(vec![], TCP_ALPN).await;
        let mut ctl = TlsControl::connect(addr, None, None, T)
            .await
            .expect("connect");
        let answer = ctl
            .call(&finish(), Duration::from_millis(100))
            .await
            .map_err(|e| e.to_string());
        assert_eq!(answer, Err("no answer on the control channel".into()));
    }

    /// A server without the token answers without its MAC: the caller is told so by type, so
    /// the run can blame the token rather than the path.
    #[tokio::test]
    async fn an_answer_without_the_token_mac_is_a_typed_error() {
        let unsigned = Control::Counters(Counters::default()).to_payload(None);
        let (addr, _) = server(vec![unsigned.clone()], TCP_ALPN).await;
        let key = probe_proto::auth::token_key("foo");
        let mut ctl = TlsControl::connect(addr, None, Some(key), T)
            .await
            .expect("connect");
        let answer = ctl.call(&finish(), T).await;
        assert_eq!(answer, Err(RequestError::TokenMac));
        let said = RequestError::TokenMac.to_string();
        assert_eq!(said, "control message without a valid token MAC");
        // Without a token the same answer is taken.
        let (addr, _) = server(vec![unsigned], TCP_ALPN).await;
        let mut ctl = TlsControl::connect(addr, None, None, T)
            .await
            .expect("connect");
        assert!(ctl.call(&finish(), T).await.is_ok());
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
