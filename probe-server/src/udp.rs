//! The shared UDP port: one socket, demultiplexed by first byte. STUN and echo are answered
//! inline from the sans-IO core; QUIC datagrams are queued to quinn through [`QuicSocket`], an
//! `AsyncUdpSocket` over the same socket, so the control channel crosses the port under test.

use crate::shared::{canonical, Shared};
use probe_proto::demux::{classify, Kind};
use probe_proto::msg::Transport;
use probe_proto::quic;
use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const QUIC_QUEUE: usize = 1024;

/// A datagram for quinn: bytes, sender, and the local address it was sent to.
pub type QuicDatagram = (Vec<u8>, SocketAddr, Option<IpAddr>);

/// The shared socket with quinn-udp's state: it reports the local address each datagram was
/// sent to (IP_PKTINFO) and sends from a chosen one, so a reply always leaves from the address
/// the client addressed — on a multi-homed host the kernel's own choice could differ, and an
/// ICE check answered from another address does not count (RFC 8445 §7.2.5.2.1).
pub struct Udp {
    pub io: UdpSocket,
    /// Only a wildcard bind needs the per-datagram addresses; a socket bound to one address
    /// always answers from it, on the plain (cheaper) send and receive calls.
    state: Option<UdpSocketState>,
}

impl Udp {
    pub fn new(io: UdpSocket) -> io::Result<Self> {
        let state = if io.local_addr()?.ip().is_unspecified() {
            Some(UdpSocketState::new((&io).into())?)
        } else {
            None
        };
        Ok(Self { io, state })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// Sends without waiting: a full socket buffer drops the reply, as the network would.
    fn send_from(&self, to: SocketAddr, from: Option<IpAddr>, contents: &[u8]) -> io::Result<()> {
        let Some(state) = &self.state else {
            return self.io.try_send_to(contents, to).map(|_| ());
        };
        let t = Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: None,
            src_ip: from,
        };
        self.io
            .try_io(Interest::WRITABLE, || state.send((&self.io).into(), &t))
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let Some(state) = &self.state else {
            let (len, addr) = self.io.recv_from(buf).await?;
            return Ok(RecvMeta {
                addr,
                len,
                stride: len,
                ecn: None,
                dst_ip: None,
            });
        };
        loop {
            self.io.readable().await?;
            let mut meta = [RecvMeta::default()];
            let r = self.io.try_io(Interest::READABLE, || {
                state.recv((&self.io).into(), &mut [IoSliceMut::new(buf)], &mut meta)
            });
            match r {
                Ok(_) => return Ok(meta[0]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reads every datagram and routes it. Runs until the socket fails or the task is aborted.
pub async fn serve(sock: Arc<Udp>, shared: Arc<Shared>, quic_tx: mpsc::Sender<QuicDatagram>) {
    let mut buf = vec![0u8; 65_536];
    let mut out = vec![0u8; 2048];
    loop {
        let meta = match sock.recv(&mut buf).await {
            Ok(m) => m,
            // ICMP errors from earlier sends surface here on some platforms; keep serving.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => continue,
            Err(e) => {
                tracing::error!("UDP receive failed: {e}");
                return;
            }
        };
        let (src, dst) = (meta.addr, meta.dst_ip);
        // With GRO the kernel may hand over several datagrams of one sender in one buffer.
        for pkt in buf[..meta.len].chunks(meta.stride.max(1)) {
            let reply = match classify(pkt) {
                Kind::Stun => {
                    let now = shared.now_us();
                    shared.core().on_stun(now, canonical(src), pkt, &mut out)
                }
                Kind::Echo => {
                    let now = shared.now_us();
                    shared
                        .core()
                        .on_echo(now, canonical(src).ip(), Transport::Udp, pkt, &mut out)
                }
                Kind::Quic => {
                    let now = shared.now_us();
                    if shared.quic_gate().check(pkt, now) != quic::Verdict::Pass {
                        shared.core().stats.drop_quic_invalid += 1;
                    } else if quic_tx.try_send((pkt.to_vec(), src, dst)).is_err() {
                        shared.core().stats.drop_quic_queue += 1;
                    }
                    None
                }
                Kind::Other => {
                    shared.core().stats.drop_not_ours += 1;
                    None
                }
            };
            if let Some(len) = reply {
                if let Err(e) = sock.send_from(src, dst, &out[..len]) {
                    tracing::debug!("UDP send to {src} failed: {e}");
                }
            }
        }
    }
}

/// quinn's view of the shared socket: receives only what the demultiplexer queued for it.
pub struct QuicSocket {
    io: Arc<Udp>,
    rx: Mutex<mpsc::Receiver<QuicDatagram>>,
    /// Told which connection IDs the server issues, so the demultiplexer can let the client's
    /// later Initials through.
    shared: Arc<Shared>,
}

impl std::fmt::Debug for QuicSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuicSocket")
    }
}

impl QuicSocket {
    pub fn new(io: Arc<Udp>, shared: Arc<Shared>) -> (Self, mpsc::Sender<QuicDatagram>) {
        let (tx, rx) = mpsc::channel(QUIC_QUEUE);
        (
            Self {
                io,
                rx: Mutex::new(rx),
                shared,
            },
            tx,
        )
    }
}

impl AsyncUdpSocket for QuicSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Writable {
            io: self.io.clone(),
            fut: None,
        })
    }

    fn try_send(&self, t: &Transmit) -> io::Result<()> {
        // quinn names the local address of the connection; replies leave from it.
        self.io.send_from(t.destination, t.src_ip, t.contents)?;
        if t.contents.first().is_some_and(|b| b & 0x80 != 0) {
            let now = self.shared.now_us();
            self.shared.quic_gate().note_sent(t.contents, now);
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        match rx.poll_recv(cx) {
            Poll::Ready(Some((data, addr, dst_ip))) => {
                let len = data.len().min(bufs[0].len());
                bufs[0][..len].copy_from_slice(&data[..len]);
                meta[0] = RecvMeta {
                    addr,
                    len,
                    stride: len,
                    ecn: None,
                    dst_ip,
                };
                Poll::Ready(Ok(1))
            }
            Poll::Ready(None) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "demultiplexer stopped",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }
}

type WritableFut = Pin<Box<dyn Future<Output = io::Result<()>> + Send + Sync>>;

/// Write-readiness for one quinn task; each keeps its own future so every waiter is woken.
struct Writable {
    io: Arc<Udp>,
    fut: Option<WritableFut>,
}

impl std::fmt::Debug for Writable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writable")
    }
}

impl UdpPoller for Writable {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        if self.fut.is_none() {
            let io = self.io.clone();
            self.fut = Some(Box::pin(async move { io.io.writable().await }));
        }
        let res = self.fut.as_mut().expect("set above").as_mut().poll(cx);
        if res.is_ready() {
            self.fut = None;
        }
        res
    }
}
