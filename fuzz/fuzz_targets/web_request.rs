//! `web::request::parse_request` on arbitrary bytes (the browser page's HTTP on the probe port).
//!
//! Never a panic; a request that parses used no more than the input, within the bounds, and
//! parses the same from exactly the bytes it used (nothing after them matters); its route and
//! Host are judged without a panic; no input gets past the head bound undecided; and
//! `parse_head` (the server's early token check) agrees with `parse_request`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use probe_proto::http::Parse;
use probe_proto::web::request::{self, parse_request, MAX_BODY, MAX_HEAD};

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(Parse::Done(r, used)) => {
            assert!(used <= data.len());
            assert!(r.body.len() <= MAX_BODY);
            assert!(
                used - r.body.len() <= MAX_HEAD,
                "head over the bound accepted"
            );
            assert_eq!(
                parse_request(&data[..used]),
                Ok(Parse::Done(r.clone(), used))
            );
            let _ = r.route();
            if let Some(h) = &r.host {
                let _ = request::host_ip(h);
            }
            for (_, v) in &r.query {
                let back = request::percent_encode(v);
                assert_eq!(request::percent_decode(&back).as_deref(), Ok(v.as_str()));
            }
        }
        Ok(Parse::Incomplete) => assert!(data.len() <= MAX_HEAD + MAX_BODY + 16),
        Err(_) => {}
    }
    if let Ok(Parse::Done(h, n)) = request::parse_head(data) {
        assert!(n <= data.len() && n <= MAX_HEAD && h.body_len <= MAX_BODY);
        match parse_request(data) {
            Ok(Parse::Done(r, used)) => {
                assert_eq!(used, n + h.body_len);
                assert_eq!(
                    (r.method, &r.path, &r.query),
                    (h.request.method, &h.request.path, &h.request.query)
                );
            }
            Ok(Parse::Incomplete) => assert!(data.len() < n + h.body_len),
            Err(e) => panic!("the head was taken but the request refused: {e}"),
        }
    }
});
