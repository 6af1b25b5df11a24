//! Tiny socket tool for the harness self-tests (std only).  Run inside a
//! namespace with `ip netns exec NS probe-netcheck …`.
//!
//! ```text
//! udp-echo BIND IDLE_MS            print "ready ADDR"; for each datagram print
//!                                  "recv FROM PAYLOAD" and reply "seen FROM";
//!                                  exit after IDLE_MS without traffic, printing
//!                                  "done N" (N datagrams received)
//! udp-send DEST COUNT GAP_US WAIT_MS
//!                                  send COUNT datagrams "ping I" GAP_US apart,
//!                                  print each reply "reply FROM PAYLOAD", then
//!                                  "sent COUNT replies M"; exit 0 iff M > 0
//! tcp-echo BIND IDLE_MS            print "ready ADDR"; for each connection print
//!                                  "accept FROM", write "seen FROM\n"; exit after
//!                                  IDLE_MS without connections
//! tcp-connect DEST TIMEOUT_MS      connect, print "connected LOCAL LINE" with the
//!                                  line the peer wrote; exit 0, else "failed
//!                                  ERROR" and exit 1
//! resolve NAME                     print the IPv4/IPv6 addresses getaddrinfo gives
//!                                  (honours /etc/hosts); exit 1 if none
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| usage(&format!("bad or missing {what}")))
}

fn usage(why: &str) -> ! {
    eprintln!("probe-netcheck: {why}\nsee the source for usage");
    std::process::exit(2);
}

fn flush() {
    let _ = std::io::stdout().flush();
}

fn udp_echo(bind: SocketAddr, idle: Duration) -> ExitCode {
    let sock = UdpSocket::bind(bind).unwrap_or_else(|e| usage(&format!("bind {bind}: {e}")));
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    println!("ready {}", sock.local_addr().expect("local addr"));
    flush();
    let mut n = 0u64;
    let mut last = Instant::now();
    let mut buf = [0u8; 2048];
    while last.elapsed() < idle {
        match sock.recv_from(&mut buf) {
            Ok((len, from)) => {
                n += 1;
                last = Instant::now();
                println!("recv {from} {}", String::from_utf8_lossy(&buf[..len]));
                let _ = sock.send_to(format!("seen {from}").as_bytes(), from);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => eprintln!("recv error: {e}"),
        }
    }
    println!("done {n}");
    ExitCode::SUCCESS
}

fn udp_send(dest: SocketAddr, count: u64, gap: Duration, wait: Duration) -> ExitCode {
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .expect("timeout");
    let mut replies = 0u64;
    let mut buf = [0u8; 2048];
    let mut drain = |sock: &UdpSocket, replies: &mut u64| {
        while let Ok((len, from)) = sock.recv_from(&mut buf) {
            *replies += 1;
            println!("reply {from} {}", String::from_utf8_lossy(&buf[..len]));
        }
    };
    let mut send_errors = 0u64;
    for i in 0..count {
        if let Err(e) = sock.send_to(format!("ping {i}").as_bytes(), dest) {
            send_errors += 1;
            if send_errors <= 3 {
                eprintln!("send error: {e}");
            }
        }
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
        if i % 64 == 0 {
            drain(&sock, &mut replies);
        }
    }
    let end = Instant::now() + wait;
    while Instant::now() < end {
        drain(&sock, &mut replies);
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("sent {count} replies {replies}");
    if replies > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn tcp_echo(bind: SocketAddr, idle: Duration) -> ExitCode {
    let l = TcpListener::bind(bind).unwrap_or_else(|e| usage(&format!("bind {bind}: {e}")));
    l.set_nonblocking(true).expect("nonblocking");
    println!("ready {}", l.local_addr().expect("local addr"));
    flush();
    let mut last = Instant::now();
    while last.elapsed() < idle {
        match l.accept() {
            Ok((mut s, from)) => {
                last = Instant::now();
                println!("accept {from}");
                flush();
                let _ = s.set_nonblocking(false);
                let _ = s.write_all(format!("seen {from}\n").as_bytes());
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    println!("done");
    ExitCode::SUCCESS
}

fn tcp_connect(dest: SocketAddr, timeout: Duration) -> ExitCode {
    match TcpStream::connect_timeout(&dest, timeout) {
        Ok(s) => {
            let _ = s.set_read_timeout(Some(timeout));
            let local = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
            let mut line = String::new();
            let _ = BufReader::new(s).read_line(&mut line);
            println!("connected {local} {}", line.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("failed {e}");
            ExitCode::from(1)
        }
    }
}

fn resolve(name: &str) -> ExitCode {
    match (name, 0u16).to_socket_addrs() {
        Ok(addrs) => {
            let mut any = false;
            for a in addrs {
                any = true;
                println!("{}", a.ip());
            }
            if any {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            println!("failed {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let ms = |i: usize, what: &str| Duration::from_millis(arg(&args, i, what));
    match args.get(1).map(String::as_str) {
        Some("udp-echo") => udp_echo(arg(&args, 2, "BIND"), ms(3, "IDLE_MS")),
        Some("udp-send") => udp_send(
            arg(&args, 2, "DEST"),
            arg(&args, 3, "COUNT"),
            Duration::from_micros(arg(&args, 4, "GAP_US")),
            ms(5, "WAIT_MS"),
        ),
        Some("tcp-echo") => tcp_echo(arg(&args, 2, "BIND"), ms(3, "IDLE_MS")),
        Some("tcp-connect") => tcp_connect(arg(&args, 2, "DEST"), ms(3, "TIMEOUT_MS")),
        Some("resolve") => resolve(
            args.get(2)
                .map(String::as_str)
                .unwrap_or_else(|| usage("missing NAME")),
        ),
        _ => usage("unknown command"),
    }
}
