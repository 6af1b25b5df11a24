//! `session::Core::on_stun` / `on_echo`, the server's per-datagram path, fed arbitrary
//! datagrams from arbitrary sources and times, with and without a token, with a session open:
//! never a panic, never a reply larger than the request, and without the keys never any reply
//! but a plain Binding's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use probe_proto::auth;
use probe_proto::demux::{classify, Kind};
use probe_proto::msg::{Hello, Profile, Transport};
use probe_proto::session::{Core, IceCredentials, Limits};
use probe_proto::stun;
use std::net::{IpAddr, SocketAddr};

fn hello() -> Hello {
    Hello {
        proto_min: 1,
        proto_max: 1,
        client_version: "fuzz".into(),
        site: "fuzz".into(),
        profile: Profile::Audio,
        interval_us: 20_000,
        size: 160,
        duration_ms: 5_000,
        pad: Vec::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, pkt)) = data.split_first() else {
        return;
    };
    let ip: IpAddr = if sel & 1 == 0 {
        [198, 51, 100, sel].into()
    } else {
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(sel)].into()
    };
    let src = SocketAddr::new(ip, 40_000 + u16::from(sel));
    let now = u64::from(sel) * 7_919;
    for token in [None, Some(auth::token_key("fuzz"))] {
        let mut core = Core::with_token(Limits::default(), token);
        let creds = IceCredentials {
            ufrag: "fuzU".into(),
            pwd: "fuzzpasswordfuzzpasswd".into(),
        };
        core.open(0, ip, &hello(), 1, [3; 32], Some(creds))
            .expect("first session");
        let mut out = [0u8; 2048];
        let stun = core.on_stun(now, src, pkt, &mut out);
        if let Some(n) = stun {
            assert!(n <= pkt.len(), "STUN reply {n} > request {}", pkt.len());
            assert!(token.is_none(), "answered without the token");
            let m = stun::decode(&out[..n]).expect("our reply decodes");
            assert_eq!(m.xor_mapped, Some(src));
        }
        let echo = core.on_echo(now, Transport::Udp, pkt, &mut out);
        assert_eq!(echo, None, "an echo answered without the session key");
        // The shell routes by first byte; whatever it routes must hold the same bound.
        let routed = match classify(pkt) {
            Kind::Stun => core.on_stun(now + 1, src, pkt, &mut out),
            Kind::Echo => core.on_echo(now + 1, Transport::Tcp, pkt, &mut out),
            _ => None,
        };
        if let Some(n) = routed {
            assert!(n <= pkt.len());
        }
    }
});
