//! An RTCD-like media service for the live-mode tests (issue 12): it holds UDP and TCP on a
//! port with SO_REUSEPORT, as RTCD does (rtcd service/rtc/net.go createUDPConnsForAddr), and
//! serves its own traffic, so a test can show that `probe-server live` takes nothing from it.
//!
//! ```text
//! media-standin serve [--port 8443]
//!     UDP: datagrams starting with b"MS" (its own media) are echoed and counted; anything else
//!     (live probes included) is counted as foreign and dropped, as pion's UDP mux drops what is
//!     not STUN from an unknown address. TCP: accepts, reads the first RFC 4571 frame and closes
//!     (pion's TCP mux on a non-STUN frame), counting accepts and frames.
//!     Prints "media-standin ready" then, every 500 ms, one JSON line of its counters.
//! media-standin peer DEST --pps N --secs S
//!     Its own media: N datagrams/s of 200 bytes to DEST for S seconds, then 1 s of drain.
//!     Prints one JSON line: sent, received, loss_pct, rtt_p50_ms, rtt_p99_ms.
//! media-standin flood DEST --pps N --secs S
//!     RTCD-like load (benchmark): N RTP-shaped 200-byte datagrams/s to DEST, not echoed.
//!     Prints "sent N in S s".
//! media-standin tproxy --listen ADDR [--to ADDR]
//!     A transparent TCP proxy's user-space half (nftables `redirect` sends it the connections):
//!     accepts, connects to --to from its own address and pipes both ways; without --to it
//!     answers itself (reads what comes, then closes), relaying nothing. Prints
//!     "media-standin tproxy ready".
//! ```

use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn usage(why: &str) -> ! {
    eprintln!("media-standin: {why} (see the source header for usage)");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    match args.first().map(String::as_str) {
        Some("serve") => {
            let port =
                flag("--port").map_or(8443, |p| p.parse().unwrap_or_else(|_| usage("bad --port")));
            serve(port)
        }
        Some("peer") => {
            let dest: SocketAddr = args
                .get(1)
                .and_then(|d| d.parse().ok())
                .unwrap_or_else(|| usage("peer needs DEST"));
            let pps: u64 = flag("--pps").and_then(|v| v.parse().ok()).unwrap_or(2000);
            let secs: f64 = flag("--secs").and_then(|v| v.parse().ok()).unwrap_or(5.0);
            peer(dest, pps, secs)
        }
        Some("flood") => {
            let dest: SocketAddr = args
                .get(1)
                .and_then(|d| d.parse().ok())
                .unwrap_or_else(|| usage("flood needs DEST"));
            let pps: u64 = flag("--pps").and_then(|v| v.parse().ok()).unwrap_or(50_000);
            let secs: f64 = flag("--secs").and_then(|v| v.parse().ok()).unwrap_or(10.0);
            flood(dest, pps, secs)
        }
        Some("tproxy") => {
            let addr = |n: &str| -> SocketAddr {
                flag(n)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage("tproxy needs --listen and --to"))
            };
            let to = flag("--to").map(|_| addr("--to"));
            tproxy(addr("--listen"), to)
        }
        _ => usage("serve, peer or tproxy"),
    }
}

/// A socket bound with SO_REUSEADDR + SO_REUSEPORT, as RTCD binds its ICE port: dual-stack
/// `[::]:port` where IPv6 is enabled, else `0.0.0.0:port`.
fn reuseport_fd(ty: libc::c_int, port: u16) -> libc::c_int {
    // SAFETY: plain socket/setsockopt/bind calls on fresh fds with valid arguments.
    unsafe {
        let one: libc::c_int = 1;
        let zero: libc::c_int = 0;
        let opt = |fd: libc::c_int, level: libc::c_int, name: libc::c_int, v: &libc::c_int| {
            libc::setsockopt(fd, level, name, v as *const _ as *const libc::c_void, 4);
        };
        let fd = libc::socket(libc::AF_INET6, ty, 0);
        if fd >= 0 {
            opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one);
            opt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, &one);
            opt(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &zero);
            let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_port = port.to_be();
            let len = std::mem::size_of_val(&sa) as u32;
            if libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len) == 0 {
                return fd;
            }
            libc::close(fd);
        }
        let fd = libc::socket(libc::AF_INET, ty, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one);
        opt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, &one);
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = port.to_be();
        let len = std::mem::size_of_val(&sa) as u32;
        let r = libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len);
        assert!(r == 0, "bind {port}: {}", std::io::Error::last_os_error());
        fd
    }
}

#[derive(Default)]
struct Counters {
    udp_echoed: AtomicU64,
    udp_foreign: AtomicU64,
    tcp_accepted: AtomicU64,
    tcp_frames: AtomicU64,
}

fn serve(port: u16) {
    // SAFETY: the fds come from reuseport_fd and are owned by the std wrappers from here on.
    let udp = unsafe { UdpSocket::from_raw_fd(reuseport_fd(libc::SOCK_DGRAM, port)) };
    let tfd = reuseport_fd(libc::SOCK_STREAM, port);
    // SAFETY: tfd is a bound stream socket; listen(2) then ownership by TcpListener.
    let tcp = unsafe {
        assert_eq!(libc::listen(tfd, 128), 0);
        TcpListener::from_raw_fd(tfd)
    };
    let _ = udp.as_raw_fd();
    let c = Arc::new(Counters::default());
    let cu = c.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            if buf[..n].starts_with(b"MS") {
                let _ = udp.send_to(&buf[..n], from);
                cu.udp_echoed.fetch_add(1, Ordering::Relaxed);
            } else {
                cu.udp_foreign.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let ct = c.clone();
    std::thread::spawn(move || {
        for s in tcp.incoming().flatten() {
            ct.tcp_accepted.fetch_add(1, Ordering::Relaxed);
            let ct = ct.clone();
            std::thread::spawn(move || {
                let mut s = s;
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut len = [0u8; 2];
                if s.read_exact(&mut len).is_ok() {
                    let mut frame = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if s.read_exact(&mut frame).is_ok() {
                        ct.tcp_frames.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    println!("media-standin ready port={port}");
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        println!(
            "{{\"udp_echoed\":{},\"udp_foreign\":{},\"tcp_accepted\":{},\"tcp_frames\":{}}}",
            g(&c.udp_echoed),
            g(&c.udp_foreign),
            g(&c.tcp_accepted),
            g(&c.tcp_frames)
        );
    }
}

fn peer(dest: SocketAddr, pps: u64, secs: f64) {
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    let rx = sock.try_clone().expect("clone");
    let t0 = Instant::now();
    let total = (pps as f64 * secs) as u64;
    let end = Duration::from_secs_f64(secs + 1.0);
    let receiver = std::thread::spawn(move || {
        let _ = rx.set_read_timeout(Some(Duration::from_millis(100)));
        let mut rtts = Vec::new();
        let mut buf = [0u8; 2048];
        while t0.elapsed() < end {
            if let Ok(n) = rx.recv(&mut buf) {
                if n >= 18 && buf.starts_with(b"MS") {
                    let sent = u64::from_be_bytes(buf[10..18].try_into().expect("8 bytes"));
                    rtts.push(
                        (t0.elapsed().as_micros() as u64).saturating_sub(sent) as f64 / 1000.0,
                    );
                }
            }
        }
        rtts
    });
    let mut pkt = [0u8; 200];
    pkt[..2].copy_from_slice(b"MS");
    for seq in 0..total {
        // Paced against the clock, so a late wake-up sends a short burst, not fewer packets.
        let due = Duration::from_secs_f64(seq as f64 / pps as f64);
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
        pkt[2..10].copy_from_slice(&seq.to_be_bytes());
        pkt[10..18].copy_from_slice(&(t0.elapsed().as_micros() as u64).to_be_bytes());
        let _ = sock.send_to(&pkt, dest);
    }
    let mut rtts = receiver.join().expect("receiver");
    rtts.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        rtts.get(((rtts.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let received = rtts.len() as u64;
    println!(
        "{{\"sent\":{total},\"received\":{received},\"loss_pct\":{},\"rtt_p50_ms\":{},\"rtt_p99_ms\":{}}}",
        (total.saturating_sub(received)) as f64 * 100.0 / total.max(1) as f64,
        pct(0.5),
        pct(0.99)
    );
}

fn tproxy(listen: SocketAddr, to: Option<SocketAddr>) {
    let l = TcpListener::bind(listen).expect("bind the proxy");
    println!("media-standin tproxy ready");
    for c in l.incoming().flatten() {
        std::thread::spawn(move || {
            let Some(to) = to else {
                let mut c = c;
                let _ = c.set_read_timeout(Some(Duration::from_millis(300)));
                let _ = c.read(&mut [0u8; 512]);
                return;
            };
            let Ok(up) = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(3)) else {
                return;
            };
            let (Ok(mut c2), Ok(mut up2)) = (c.try_clone(), up.try_clone()) else {
                return;
            };
            let t = std::thread::spawn(move || {
                let mut up = up;
                let mut c = c;
                let _ = std::io::copy(&mut c, &mut up);
                let _ = up.shutdown(std::net::Shutdown::Write);
            });
            let _ = std::io::copy(&mut up2, &mut c2);
            let _ = c2.shutdown(std::net::Shutdown::Write);
            let _ = t.join();
        });
    }
}

fn flood(dest: SocketAddr, pps: u64, secs: f64) {
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    let mut pkt = [0u8; 200];
    pkt[0] = 0x80;
    let t0 = Instant::now();
    let total = (pps as f64 * secs) as u64;
    for seq in 0..total {
        let due = Duration::from_secs_f64(seq as f64 / pps as f64);
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
        pkt[2..10].copy_from_slice(&seq.to_be_bytes());
        let _ = sock.send_to(&pkt, dest);
    }
    println!("sent {total} in {:.2} s", t0.elapsed().as_secs_f64());
}
