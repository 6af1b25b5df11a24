//! RFC 4571 `frame::Decoder` on a stream cut into arbitrary chunks: never a frame over
//! `MAX_FRAME`, never a byte lost or invented, and the same frames whatever the chunking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use probe_proto::frame::{Decoder, MAX_FRAME};

/// Frames from `stream` pushed in chunks of the given sizes, and false after a framing error.
fn frames(stream: &[u8], sizes: &[u8]) -> (Vec<Vec<u8>>, bool) {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let n = usize::from(sizes.get(i % sizes.len().max(1)).copied().unwrap_or(0x40)).max(1);
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        i += 1;
        d.push(chunk);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.len() <= MAX_FRAME);
                    out.push(f.to_vec());
                }
                Ok(None) => break,
                Err(_) => return (out, false),
            }
        }
    }
    let used: usize = out.iter().map(|f| f.len() + 2).sum();
    assert_eq!(used + d.pending(), stream.len(), "bytes lost or invented");
    (out, true)
}

fuzz_target!(|data: &[u8]| {
    let (sizes, stream) = data.split_at(data.len().min(8));
    let (a, ok_a) = frames(stream, sizes);
    let (b, ok_b) = frames(stream, &[]);
    assert_eq!(
        ok_a, ok_b,
        "a framing error depends on how the stream was cut"
    );
    assert_eq!(a, b, "frames depend on how the stream was cut");
});
