//! The shared UDP port: one socket, demultiplexed by first byte. STUN and echo are answered
//! inline from the sans-IO core; QUIC datagrams are queued to quinn through [`QuicSocket`], an
//! `AsyncUdpSocket` over the same socket, so the control channel crosses the port under test.

use crate::shared::{canonical, Shared};
use probe_proto::demux::{classify, Kind};
use probe_proto::msg::Transport;
use probe_proto::quic;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const QUIC_QUEUE: usize = 1024;

/// Reads every datagram and routes it. Runs until the socket fails or the task is aborted.
pub async fn serve(
    sock: Arc<UdpSocket>,
    shared: Arc<Shared>,
    quic_tx: mpsc::Sender<(Vec<u8>, SocketAddr)>,
) {
    let mut buf = vec![0u8; 65_536];
    let mut out = vec![0u8; 2048];
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            // ICMP errors from earlier sends surface here on some platforms; keep serving.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => continue,
            Err(e) => {
                tracing::error!("UDP receive failed: {e}");
                return;
            }
        };
        let pkt = &buf[..n];
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
                } else if quic_tx.try_send((pkt.to_vec(), src)).is_err() {
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
            if let Err(e) = sock.send_to(&out[..len], src).await {
                tracing::debug!("UDP send to {src} failed: {e}");
            }
        }
    }
}

/// quinn's view of the shared socket: receives only what the demultiplexer queued for it.
pub struct QuicSocket {
    io: Arc<UdpSocket>,
    rx: Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
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
    pub fn new(
        io: Arc<UdpSocket>,
        shared: Arc<Shared>,
    ) -> (Self, mpsc::Sender<(Vec<u8>, SocketAddr)>) {
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
        self.io.try_send_to(t.contents, t.destination)?;
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
            Poll::Ready(Some((data, addr))) => {
                let len = data.len().min(bufs[0].len());
                bufs[0][..len].copy_from_slice(&data[..len]);
                meta[0] = RecvMeta {
                    addr,
                    len,
                    stride: len,
                    ecn: None,
                    dst_ip: None,
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
    io: Arc<UdpSocket>,
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
            self.fut = Some(Box::pin(async move { io.writable().await }));
        }
        let res = self.fut.as_mut().expect("set above").as_mut().poll(cx);
        if res.is_ready() {
            self.fut = None;
        }
        res
    }
}
