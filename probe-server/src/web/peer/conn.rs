//! One ICE-TCP connection (RFC 6544 passive side): RFC 4571 frames (a 2-byte big-endian
//! length, then the payload) read from the stream go to the owning task; frames the task
//! writes go back. The connection ends when its session does, when the task drops it, when
//! the peer closes, or at its deadline.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Frames queued toward one browser: a burst of echoes is 30 messages; more waiting means the
/// browser is not reading, and the rest is dropped as a lossy network would.
const OUT_QUEUE: usize = 256;
/// Largest payload an RFC 4571 frame can carry.
const MAX_FRAME: usize = u16::MAX as usize;
/// ICE-TCP connections handed to the peer at once (each lives at most a session's lifetime).
pub const MAX_CONNS: usize = 64;
/// ICE-TCP connections from one source (IPv4 address, IPv6 /64) at once: a page run's TCP leg
/// opens one per pair of its own and the server's TCP candidates, a handful; without a cap
/// per source one address could hold every slot and lock everyone else out of ICE-TCP.
pub const MAX_CONNS_PER_SOURCE: usize = 8;

/// The owning task's handle on a connection.
pub struct Conn {
    pub id: u64,
    tx: mpsc::Sender<Vec<u8>>,
    /// The local address the browser connected to.
    pub local: SocketAddr,
    /// The session whose STUN request it carried first.
    pub session: Option<u64>,
}

impl Conn {
    /// Queues one frame; dropped when the queue is full or the payload cannot be framed.
    pub fn send_frame(&self, payload: &[u8]) {
        let Ok(len) = u16::try_from(payload.len()) else {
            return;
        };
        let mut f = Vec::with_capacity(payload.len() + 2);
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(payload);
        let _ = self.tx.try_send(f);
    }
}

pub enum TcpEvent {
    Open {
        peer: SocketAddr,
        conn: Conn,
    },
    Frame {
        peer: SocketAddr,
        data: Vec<u8>,
        at: Instant,
    },
    Closed {
        peer: SocketAddr,
        id: u64,
    },
}

/// Connections open now, in total and per source.
#[derive(Debug, Default)]
pub struct Slots {
    total: usize,
    /// Only sources holding a slot (so at most [`MAX_CONNS`] entries).
    per_source: HashMap<IpAddr, usize>,
}

fn lock(slots: &Mutex<Slots>) -> MutexGuard<'_, Slots> {
    // Two counters: a panic elsewhere cannot leave them inconsistent.
    slots.lock().unwrap_or_else(|p| p.into_inner())
}

/// Gives a connection slot back when the connection's task ends.
pub struct Slot {
    slots: Arc<Mutex<Slots>>,
    source: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = lock(&self.slots);
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                s.per_source.remove(&self.source);
            }
        }
    }
}

/// Takes a slot for a connection from `peer` if fewer than [`MAX_CONNS`] connections are open
/// and fewer than [`MAX_CONNS_PER_SOURCE`] from its source.
pub fn take_slot(slots: &Arc<Mutex<Slots>>, peer: IpAddr) -> Option<Slot> {
    let source = super::book::source_key(peer);
    let mut s = lock(slots);
    let mine = s.per_source.get(&source).copied().unwrap_or(0);
    if s.total >= MAX_CONNS || mine >= MAX_CONNS_PER_SOURCE {
        return None;
    }
    s.total += 1;
    s.per_source.insert(source, mine + 1);
    Some(Slot {
        slots: slots.clone(),
        source,
    })
}

#[cfg(test)]
pub fn open_slots(slots: &Mutex<Slots>) -> usize {
    lock(slots).total
}

/// Runs one connection until it ends; `peer` is its canonical address.
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    events: mpsc::Sender<TcpEvent>,
    lifetime: Duration,
    _slot: Slot,
) {
    // Without TCP_NODELAY small frames wait for the peer's delayed ACK: RTTs alternate
    // between 0.5 and 43 ms (measured, docs/spikes/17-browser-page/REPORT.md §1).
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let (tx, rx) = mpsc::channel(OUT_QUEUE);
    let conn = Conn {
        id,
        tx,
        local,
        session: None,
    };
    if events.send(TcpEvent::Open { peer, conn }).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(lifetime, pump(stream, peer, &events, rx)).await;
    let _ = events.send(TcpEvent::Closed { peer, id }).await;
}

/// Reads frames to the task and writes the task's frames until either side stops.
async fn pump(
    mut stream: TcpStream,
    peer: SocketAddr,
    events: &mpsc::Sender<TcpEvent>,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    let (mut r, mut w) = stream.split();
    // Holds at most one partial frame: complete ones are taken out at once.
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        tokio::select! {
            n = r.read(&mut chunk) => {
                let Ok(n @ 1..) = n else { return };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(data) = take_frame(&mut buf) {
                    let at = Instant::now();
                    if events.send(TcpEvent::Frame { peer, data, at }).await.is_err() {
                        return;
                    }
                }
            }
            f = rx.recv() => {
                let Some(f) = f else { return };
                if w.write_all(&f).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The next complete frame's payload, taken out of `buf`.
fn take_frame(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let len = usize::from(u16::from_be_bytes([*buf.first()?, *buf.get(1)?]));
    debug_assert!(len <= MAX_FRAME);
    if buf.len() < 2 + len {
        return None;
    }
    let data = buf[2..2 + len].to_vec();
    buf.drain(..2 + len);
    Some(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_taken_whole_and_in_order() {
        let mut buf = vec![0, 3, b'a', b'b', b'c', 0, 0, 0, 2, b'x'];
        assert_eq!(take_frame(&mut buf).as_deref(), Some(&b"abc"[..]));
        assert_eq!(take_frame(&mut buf).as_deref(), Some(&b""[..]));
        assert_eq!(take_frame(&mut buf), None);
        assert_eq!(buf, [0, 2, b'x']);
        buf.push(b'y');
        assert_eq!(take_frame(&mut buf).as_deref(), Some(&b"xy"[..]));
        assert!(buf.is_empty());
        assert_eq!(take_frame(&mut vec![7]), None);
    }

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(0xC000_0200u32.wrapping_add(i).to_be_bytes())
    }

    #[test]
    fn slots_are_capped_in_total_and_given_back() {
        let open = Arc::default();
        let slots: Vec<_> = (0..MAX_CONNS as u32)
            .map(|i| take_slot(&open, ip(i % 100)).expect("room"))
            .collect();
        assert!(take_slot(&open, ip(200)).is_none());
        drop(slots);
        assert_eq!(open_slots(&open), 0);
        assert!(lock(&open).per_source.is_empty());
        assert!(take_slot(&open, ip(200)).is_some());
    }

    #[test]
    fn one_source_holds_a_bounded_share_of_the_slots() {
        let open = Arc::default();
        let v6 = |s: &str| s.parse::<IpAddr>().expect("literal");
        let mut mine: Vec<_> = (0..MAX_CONNS_PER_SOURCE)
            .map(|_| take_slot(&open, ip(1)).expect("room"))
            .collect();
        assert!(take_slot(&open, ip(1)).is_none(), "one address is capped");
        // The IPv4-mapped form is the same address; another address has its own share.
        assert!(take_slot(&open, v6("::ffff:192.0.2.1")).is_none());
        assert!(take_slot(&open, ip(2)).is_some());
        // An IPv6 /64 is one source.
        let in_64: Vec<_> = (0..MAX_CONNS_PER_SOURCE)
            .map(|i| take_slot(&open, v6(&format!("2001:db8::{:x}", i + 1))).expect("room"))
            .collect();
        assert!(take_slot(&open, v6("2001:db8::ffff")).is_none());
        assert!(take_slot(&open, v6("2001:db8:0:1::1")).is_some());
        mine.pop();
        assert!(
            take_slot(&open, ip(1)).is_some(),
            "a slot given back is free again"
        );
        drop(in_64);
    }

    #[tokio::test]
    async fn a_connection_carries_frames_both_ways() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (server, peer) = listener.accept().await.expect("accept");
        let (etx, mut erx) = mpsc::channel(8);
        let open = Arc::default();
        let slot = take_slot(&open, peer.ip()).expect("room");
        let task = tokio::spawn(run(server, peer, 1, etx, Duration::from_secs(5), slot));
        let Some(TcpEvent::Open { conn, .. }) = erx.recv().await else {
            panic!("open first");
        };
        // Two frames in one write, split across reads on the other side.
        client.write_all(&[0, 2, 9, 8, 0, 1]).await.expect("write");
        client.write_all(&[7]).await.expect("write");
        for want in [&[9u8, 8][..], &[7]] {
            let Some(TcpEvent::Frame { data, .. }) = erx.recv().await else {
                panic!("a frame");
            };
            assert_eq!(data, want);
        }
        conn.send_frame(b"hi");
        let mut got = [0u8; 4];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(got, [0, 2, b'h', b'i']);
        // Dropping the handle ends the connection: the client sees EOF, the slot comes back.
        drop(conn);
        assert_eq!(client.read(&mut got).await.expect("eof"), 0);
        assert!(matches!(
            erx.recv().await,
            Some(TcpEvent::Closed { id: 1, .. })
        ));
        task.await.expect("ends");
        assert_eq!(open_slots(&open), 0);
    }
}
