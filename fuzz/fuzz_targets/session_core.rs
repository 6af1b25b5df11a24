//! `session::Core::on_stun` / `on_echo`, the server's per-datagram path, fed arbitrary
//! datagrams from arbitrary sources and times, with and without a token, with a session open:
//! never a panic, never a reply larger than the request, and no reply without a key (token,
//! ICE password, session key) but a plain Binding's when no token is set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use probe_proto::auth;
use probe_proto::demux::{classify, Kind};
use probe_proto::echo::{self, SessionKey};
use probe_proto::msg::{Hello, Profile, Transport};
use probe_proto::session::{Core, IceCredentials, Limits};
use probe_proto::stun;
use std::net::{IpAddr, SocketAddr};

const PWD: &str = "fuzzpasswordfuzzpasswd";
const KEY: [u8; 32] = [3; 32];

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
        time_ms: 0,
        nonce: [0; 16],
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
            pwd: PWD.into(),
        };
        core.open(0, ip, &hello(), 1, KEY, Some(creds))
            .expect("first session");
        let mut out = [0u8; 2048];
        let stun = core.on_stun(now, src, pkt, &mut out);
        if let Some(n) = stun {
            assert!(n <= pkt.len(), "STUN reply {n} > request {}", pkt.len());
            // With a token only a key holder gets an answer: the token's key (the seeds hold
            // one such Binding) or the session's ICE password.
            assert!(
                token.is_none_or(|k| stun::check_integrity(pkt, &k))
                    || stun::check_integrity(pkt, PWD.as_bytes()),
                "answered without the token or the session's ICE password"
            );
            let m = stun::decode(&out[..n]).expect("our reply decodes");
            assert_eq!(m.xor_mapped, Some(src));
        }
        if let Some(n) = core.on_echo(now, src.ip(), Transport::Udp, pkt, &mut out) {
            assert_eq!(n, pkt.len(), "an echo reply has its request's length");
            assert!(
                echo::verify_request(&SessionKey::new(&KEY), pkt).is_ok(),
                "an echo answered without the session key"
            );
        }
        // The shell routes by first byte; whatever it routes must hold the same bound.
        let routed = match classify(pkt) {
            Kind::Stun => core.on_stun(now + 1, src, pkt, &mut out),
            Kind::Echo => core.on_echo(now + 1, src.ip(), Transport::Tcp, pkt, &mut out),
            _ => None,
        };
        if let Some(n) = routed {
            assert!(n <= pkt.len());
        }
    }
});
