use super::*;
use std::net::TcpListener;

fn serve_once(reply: &'static [u8]) -> Url {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut req = [0u8; 1024];
        let _ = s.read(&mut req);
        let _ = s.write_all(reply);
    });
    Url::parse(&format!("http://127.0.0.1:{port}")).unwrap()
}

fn plain() -> GetConfig<'static> {
    GetConfig {
        user_agent: "probe-shell-test",
        tls: None,
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

#[test]
fn gets_a_close_delimited_body() {
    let url = serve_once(
        b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"buildVersion\":\"v1\"}",
    );
    let r = get(&url, "/version", &plain(), soon()).unwrap();
    assert_eq!(r.head.status, 200);
    assert_eq!(r.text(), "{\"buildVersion\":\"v1\"}");
}

#[test]
fn refused_is_a_connect_error_and_silence_hits_the_deadline() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let e = get(&url, "/", &plain(), soon()).unwrap_err();
    assert!(matches!(e, FetchError::Connect(_)), "{e}");
    assert!(
        e.to_string().starts_with("TCP connect to 127.0.0.1:"),
        "{e}"
    );
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = Url::parse(&format!("http://{}", silent.local_addr().unwrap())).unwrap();
    let t = Instant::now();
    let e = get(
        &url,
        "/version",
        &plain(),
        Instant::now() + Duration::from_millis(300),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "no answer to GET /version in time");
    assert!(matches!(e, FetchError::Exchange(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_short_answer_and_garbage_are_exchange_errors() {
    let url = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    let e = get(&url, "/metrics", &plain(), soon()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("the connection closed before a complete answer to GET /metrics"),
        "{e}"
    );
    let url = serve_once(b"SSH-2.0-OpenSSH_9.6\r\n");
    let e = get(&url, "/version", &plain(), soon()).unwrap_err();
    assert!(e.to_string().starts_with("GET /version: "), "{e}");
}

#[test]
fn https_without_a_configuration_fails_before_sending() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = Url::parse(&format!("https://{}", l.local_addr().unwrap())).unwrap();
    let e = get(&url, "/version", &plain(), soon()).unwrap_err();
    assert!(matches!(e, FetchError::Exchange(_)), "{e}");
}

#[test]
fn open_bounds_the_connect_and_exchange_keeps_what_follows() {
    let url = serve_once(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00");
    let addr: SocketAddr = format!("127.0.0.1:{}", url.port).parse().unwrap();
    let dial = Dial {
        connect_timeout: Some(Duration::from_secs(4)),
        tls_handshake_timeout: Some(Duration::from_secs(1)),
    };
    let mut o = open(&url, addr, None, dial, soon()).unwrap();
    assert!(o.tls.is_none() && o.connect_ms >= 0.0);
    let (r, rest) = exchange(o.stream.as_mut(), b"GET / HTTP/1.1\r\n\r\n", true).unwrap();
    assert_eq!(r.head.status, 101);
    assert_eq!(rest, b"\x81\x00");
    let past = Instant::now() - Duration::from_millis(1);
    assert!(matches!(
        open(&url, addr, None, dial, past),
        Err(OpenError::NoTime)
    ));
}

#[test]
fn exchange_errors_are_typed() {
    let url = serve_once(b"");
    let addr: SocketAddr = format!("127.0.0.1:{}", url.port).parse().unwrap();
    let mut o = open(&url, addr, None, Dial::default(), soon()).unwrap();
    assert!(matches!(
        exchange(o.stream.as_mut(), b"GET / HTTP/1.1\r\n\r\n", true),
        Err(ExchangeError::Closed { bytes: 0 })
    ));
    let url = serve_once(b"\x16\x03\x01\x00\x05hello-not-http\r\n\r\n");
    let addr: SocketAddr = format!("127.0.0.1:{}", url.port).parse().unwrap();
    let mut o = open(&url, addr, None, Dial::default(), soon()).unwrap();
    match exchange(o.stream.as_mut(), b"GET / HTTP/1.1\r\n\r\n", true) {
        Err(ExchangeError::Parse { first, .. }) => assert_eq!(first, b"\x16\x03\x01\x00\x05hel"),
        other => panic!("{:?}", other.map(|(r, _)| r.head.status)),
    }
}

#[test]
fn https_needs_a_configuration_and_a_name() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let url = Url::parse(&format!("https://{addr}")).unwrap();
    assert!(matches!(
        open(&url, addr, None, Dial::default(), soon()),
        Err(OpenError::NoTlsConfig)
    ));
    let cfg = unverified_config().unwrap();
    // A silent server: the bounded handshake ends at its bound, long before the deadline.
    let dial = Dial {
        connect_timeout: None,
        tls_handshake_timeout: Some(Duration::from_millis(200)),
    };
    let t = Instant::now();
    match open(&url, addr, Some(&cfg), dial, soon()) {
        Err(OpenError::Handshake(e)) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ),
            "{e}"
        ),
        _ => panic!("the handshake did not time out"),
    }
    assert!(t.elapsed() < Duration::from_secs(2));
}
