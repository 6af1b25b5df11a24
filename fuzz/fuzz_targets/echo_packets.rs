//! Echo packets: `peek_request`, `verify_request` and `decode_reply` on arbitrary bytes with a
//! fixed key; and, from the same bytes read as fields, a request/reply round trip that must
//! verify with its key, keep its length and fail with another key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use probe_proto::echo::{self, SessionKey};

fuzz_target!(|data: &[u8]| {
    let key = SessionKey::new(&[7; 32]);
    let other = SessionKey::new(&[8; 32]);
    let peeked = echo::peek_request(data);
    if let Ok(h) = echo::verify_request(&key, data) {
        assert_eq!(Ok(h), peeked, "verified but peek disagrees");
    }
    let _ = echo::decode_reply(&key, data);

    if data.len() >= 22 {
        let u64_at = |i: usize| u64::from_be_bytes(data[i..i + 8].try_into().expect("8 bytes"));
        let session = u64_at(0);
        let send_us = u64_at(8);
        let seq = u32::from_be_bytes(data[16..20].try_into().expect("4 bytes"));
        let len = usize::from(u16::from_be_bytes([data[20], data[21]]));
        let mut req = [0u8; echo::MAX_LEN];
        let n = echo::encode_request(&key, session, seq, send_us, len, &mut req);
        assert!((echo::MIN_LEN..=echo::MAX_LEN).contains(&n));
        let h = echo::verify_request(&key, &req[..n]).expect("own request verifies");
        assert_eq!(
            (h.session, h.seq, h.client_send_us),
            (session, seq, send_us)
        );
        assert!(echo::verify_request(&other, &req[..n]).is_err());
        let mut rep = [0u8; echo::MAX_LEN];
        let m = echo::encode_reply(&key, &req[..n], send_us ^ 1, send_us ^ 2, &mut rep);
        assert_eq!(m, n, "a reply is never larger than its request");
        let r = echo::decode_reply(&key, &rep[..m]).expect("own reply decodes");
        assert_eq!((r.session, r.seq), (session, seq));
        assert!(echo::decode_reply(&other, &rep[..m]).is_err());
        assert!(
            echo::verify_request(&key, &rep[..m]).is_err(),
            "a reply is not a request"
        );
    }
});
