//! RFC 4571 framing: a 2-byte big-endian length, then the packet. ICE-TCP uses it, so the probe's
//! TCP traffic looks to middleboxes like what RTCD's TCP fallback carries.

/// Largest frame payload the probe accepts. Media packets stay under 1500 bytes; the largest
/// control message is a report upload. Anything longer is malformed input, not a reason to
/// allocate.
pub const MAX_FRAME: usize = 32 * 1024;

/// Errors of the framing layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The peer announced a frame longer than [`MAX_FRAME`].
    TooLong(usize),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLong(n) => {
                write!(f, "frame of {n} bytes exceeds the {MAX_FRAME}-byte limit")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Prefixes `payload` with its RFC 4571 length.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    debug_assert!(payload.len() <= MAX_FRAME);
    let mut out = Vec::with_capacity(payload.len() + 2);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Incremental decoder for a byte stream: feed what the socket gave, take whole frames out.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        // Compact lazily so a long-lived connection does not grow its buffer without bound.
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > MAX_FRAME {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let avail = &self.buf[self.start..];
        if avail.len() < 2 {
            return Ok(None);
        }
        let len = u16::from_be_bytes([avail[0], avail[1]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLong(len));
        }
        if avail.len() < 2 + len {
            return Ok(None);
        }
        let begin = self.start + 2;
        self.start = begin + len;
        Ok(Some(&self.buf[begin..begin + len]))
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_split_across_reads() {
        let mut stream = encode(b"hello");
        stream.extend(encode(b""));
        stream.extend(encode(&[7u8; 300]));
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for chunk in stream.chunks(3) {
            d.push(chunk);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f.to_vec());
            }
        }
        assert_eq!(got, vec![b"hello".to_vec(), vec![], vec![7u8; 300]]);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn oversized_length_is_an_error_not_an_allocation() {
        let mut d = Decoder::new();
        d.push(&[0xff, 0xff, 1, 2, 3]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLong(0xffff)));
    }

    proptest! {
        #[test]
        fn random_streams_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..20)) {
            let mut d = Decoder::new();
            for c in &chunks {
                d.push(c);
                while let Ok(Some(f)) = d.next_frame() {
                    prop_assert!(f.len() <= MAX_FRAME);
                }
            }
        }
    }
}
