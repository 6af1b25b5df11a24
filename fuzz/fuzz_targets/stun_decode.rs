//! `stun::decode` and `stun::check_integrity` on arbitrary bytes.
//!
//! Input: `[key_len % 33][key bytes][message]`. Never a panic; a decoded message is well framed
//! (`is_stun`) and as long as the input; and whatever decodes as a Binding request gets a
//! response, signed with the key, that decodes with the same transaction id and verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use probe_proto::stun;
use std::net::SocketAddr;

fuzz_target!(|data: &[u8]| {
    let (key, msg) = match data.split_first() {
        Some((&n, rest)) => rest.split_at(usize::from(n % 33).min(rest.len())),
        None => (&[][..], data),
    };
    let _ = stun::check_integrity(msg, key);
    let _ = stun::check_integrity(data, b"");
    let _ = stun::decode(data);
    if let Ok(m) = stun::decode(msg) {
        assert!(stun::is_stun(msg), "decoded but not framed as STUN");
        assert_eq!(m.len, msg.len());
        if m.class == stun::Class::Request && m.method == stun::METHOD_BINDING {
            let src: SocketAddr = "198.51.100.2:40000".parse().expect("literal");
            let resp = stun::binding_response(m.tid, src, Some(key));
            assert_eq!(resp.len(), stun::binding_response_len(&src, true));
            let back = stun::decode(&resp).expect("our own response decodes");
            assert_eq!(back.tid, m.tid);
            assert_eq!(back.xor_mapped, Some(src));
            assert!(stun::check_integrity(&resp, key));
        }
    }
});
