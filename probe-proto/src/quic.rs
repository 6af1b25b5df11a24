//! A pre-filter for QUIC datagrams on the shared port, before quinn sees them.
//!
//! quinn answers some packets statelessly: a Version Negotiation to any long header of an
//! unknown version, and (with our address validation) a Retry to any Initial whose header
//! parses — before it decrypts the payload. Both are replies to unauthenticated bytes. Here an
//! Initial must prove it was sealed with the keys every QUIC v1 client derives from its
//! Destination Connection ID (RFC 9001 §5.2): junk and mutated packets fail the AEAD check and
//! get no answer at all. Nothing secret is involved; this only proves the sender speaks QUIC.

use ring::aead::{self, quic as hp, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;

/// QUIC version 1 (RFC 9000); the only one our client speaks.
pub const VERSION_1: u32 = 1;
const INITIAL_SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];

/// What to do with a datagram in the QUIC range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to quinn.
    Pass,
    /// A long header of another version: quinn would answer Version Negotiation.
    OtherVersion,
    /// An Initial whose protection does not verify (or cannot be parsed).
    BadInitial,
}

/// Short headers and v1 long headers other than Initial pass; Initials must decrypt.
pub fn check(datagram: &[u8]) -> Verdict {
    let Some(&first) = datagram.first() else {
        return Verdict::BadInitial;
    };
    if first & 0x80 == 0 {
        return Verdict::Pass;
    }
    let Some(version) = datagram.get(1..5) else {
        return Verdict::OtherVersion;
    };
    if u32::from_be_bytes(version.try_into().expect("4 bytes")) != VERSION_1 {
        return Verdict::OtherVersion;
    }
    if (first >> 4) & 0x03 != 0 {
        return Verdict::Pass;
    }
    if initial_is_authentic(datagram) {
        Verdict::Pass
    } else {
        Verdict::BadInitial
    }
}

/// Remembers the connection IDs the server itself chose. A client's later Initials (ACKs of
/// the server's Initial) are addressed to such an ID but keep the keys of its first Initial,
/// so they cannot be checked on their own; they pass when their ID is one the server issued.
/// Junk addressed to any other ID still gets nothing.
///
/// Only the server's own Initials are noted, never its Retries. A Retry answers an Initial from
/// an address nobody has validated yet, so noting its ID let spoofed Initials fill this table
/// (~140 Retries/s kept 4,096 IDs of 30 s busy; a client's ACK-only Initials were then dropped
/// as junk, though its handshake still completed on its Handshake packets). Nothing is needed for a Retry here: the client's next Initial is sealed
/// with keys derived from the Retry's ID and verifies by itself (RFC 9001 §5.2), and quinn's
/// Retry token is stateless (AEAD-sealed with the client's address and the time, quinn-proto
/// 0.11.19 src/token.rs:147-155). The server sends an Initial only after Retry proved the
/// address (probe-server admits nothing else), so only sources that receive our packets add
/// IDs, at the validated-QUIC rate per source. When the table is still full, the entry closest
/// to expiry goes: a freshly noted ID (the one a handshake in progress needs) survives the
/// next `cap - 1` notes, so even address-proven sources cannot pin the table.
#[derive(Debug)]
pub struct InitialGate {
    issued: std::collections::HashMap<Vec<u8>, u64>,
    cap: usize,
}

/// How long an issued connection ID lets unverifiable Initials through: the server closes a
/// connection that has not said hello within 10 s, so its Initials are over by then.
const ISSUED_FOR_US: u64 = 10_000_000;

impl InitialGate {
    pub fn new(cap: usize) -> Self {
        Self {
            issued: std::collections::HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// Notes the Source Connection ID of a server Initial (QUIC v1 long header, type 0).
    pub fn note_sent(&mut self, datagram: &[u8], now_us: u64) {
        let initial_v1 = datagram.first().is_some_and(|b| b & 0xb0 == 0x80)
            && datagram.get(1..5) == Some(&VERSION_1.to_be_bytes()[..]);
        let Some(scid) = long_header_scid(datagram).filter(|_| initial_v1) else {
            return;
        };
        if self.issued.len() >= self.cap && !self.issued.contains_key(scid) {
            self.issued.retain(|_, until| *until > now_us);
            if self.issued.len() >= self.cap {
                let oldest = self
                    .issued
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(id, _)| id.clone());
                if let Some(id) = oldest {
                    self.issued.remove(&id);
                }
            }
        }
        self.issued.insert(scid.to_vec(), now_us + ISSUED_FOR_US);
    }

    pub fn len(&self) -> usize {
        self.issued.len()
    }

    pub fn is_empty(&self) -> bool {
        self.issued.is_empty()
    }

    /// [`check`], plus Initials addressed to a connection ID the server issued.
    pub fn check(&self, datagram: &[u8], now_us: u64) -> Verdict {
        match check(datagram) {
            Verdict::BadInitial
                if long_header_dcid(datagram)
                    .and_then(|d| self.issued.get(d))
                    .is_some_and(|until| *until > now_us) =>
            {
                Verdict::Pass
            }
            v => v,
        }
    }
}

fn long_header_dcid(d: &[u8]) -> Option<&[u8]> {
    if d.first()? & 0x80 == 0 {
        return None;
    }
    let len = usize::from(*d.get(5)?);
    d.get(6..6 + len)
}

fn long_header_scid(d: &[u8]) -> Option<&[u8]> {
    let dcid = long_header_dcid(d)?;
    let at = 6 + dcid.len();
    let len = usize::from(*d.get(at)?);
    d.get(at + 1..at + 1 + len).filter(|s| !s.is_empty())
}

/// QUIC variable-length integer at `*at`, advancing it.
fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let first = *b.get(*at)?;
    let len = 1usize << (first >> 6);
    let bytes = b.get(*at..*at + len)?;
    let mut v = u64::from(first & 0x3f);
    for x in &bytes[1..] {
        v = (v << 8) | u64::from(*x);
    }
    *at += len;
    Some(v)
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// TLS 1.3 HKDF-Expand-Label with an empty context (RFC 8446 §7.1).
fn expand_label(prk: &hkdf::Prk, label: &[u8], out: &mut [u8]) -> Option<()> {
    let full_len = 6 + label.len();
    let info_len = [(out.len() >> 8) as u8, out.len() as u8];
    let info_label_len = [full_len as u8];
    let info: [&[u8]; 5] = [&info_len, &info_label_len, b"tls13 ", label, &[0u8]];
    prk.expand(&info, Len(out.len())).ok()?.fill(out).ok()
}

/// The client's Initial keys for a Destination Connection ID: (key, iv, hp).
pub fn client_initial_keys(dcid: &[u8]) -> Option<([u8; 16], [u8; 12], [u8; 16])> {
    let initial = hkdf::Salt::new(hkdf::HKDF_SHA256, &INITIAL_SALT_V1).extract(dcid);
    let mut secret = [0u8; 32];
    expand_label(&initial, b"client in", &mut secret)?;
    let client = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, &secret);
    let (mut key, mut iv, mut hpk) = ([0u8; 16], [0u8; 12], [0u8; 16]);
    expand_label(&client, b"quic key", &mut key)?;
    expand_label(&client, b"quic iv", &mut iv)?;
    expand_label(&client, b"quic hp", &mut hpk)?;
    Some((key, iv, hpk))
}

/// Removes header protection and opens the first packet of the datagram (RFC 9001 §5.3–5.4).
pub fn initial_is_authentic(datagram: &[u8]) -> bool {
    open_initial(datagram).is_some()
}

fn open_initial(d: &[u8]) -> Option<()> {
    let mut at = 5;
    let dcid_len = usize::from(*d.get(at)?);
    if dcid_len > 20 {
        return None;
    }
    let dcid = d.get(at + 1..at + 1 + dcid_len)?;
    at += 1 + dcid_len;
    let scid_len = usize::from(*d.get(at)?);
    if scid_len > 20 {
        return None;
    }
    at += 1 + scid_len;
    let token_len = usize::try_from(varint(d, &mut at)?).ok()?;
    at = at.checked_add(token_len)?;
    let length = usize::try_from(varint(d, &mut at)?).ok()?;
    let pn_offset = at;
    let end = pn_offset.checked_add(length)?;
    if end > d.len() || length < 20 {
        return None;
    }
    let (key, iv, hpk) = client_initial_keys(dcid)?;
    let sample = d.get(pn_offset + 4..pn_offset + 20)?;
    let mask = hp::HeaderProtectionKey::new(&hp::AES_128, &hpk)
        .ok()?
        .new_mask(sample)
        .ok()?;
    let mut packet = d[..end].to_vec();
    packet[0] ^= mask[0] & 0x0f;
    let pn_len = usize::from(packet[0] & 0x03) + 1;
    let mut nonce = iv;
    for i in 0..pn_len {
        packet[pn_offset + i] ^= mask[1 + i];
        nonce[12 - pn_len + i] ^= packet[pn_offset + i];
    }
    let (header, payload) = packet.split_at_mut(pn_offset + pn_len);
    let aead_key = LessSafeKey::new(UnboundKey::new(&aead::AES_128_GCM, &key).ok()?);
    aead_key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&*header),
            payload,
        )
        .ok()
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn initial_keys_match_rfc_9001_appendix_a1() {
        let (key, iv, hpk) = client_initial_keys(&hex("8394c8f03e515708")).unwrap();
        assert_eq!(key.to_vec(), hex("1f369613dd76d5467730efcbe3b1a22d"));
        assert_eq!(iv.to_vec(), hex("fa044b2f42a3fd3b46fb255c"));
        assert_eq!(hpk.to_vec(), hex("9f50449e04a0e810283a1e9933adedd2"));
    }

    /// Seals an Initial the way a client does, with a 2-byte packet number.
    fn seal(dcid: &[u8], payload_len: usize) -> Vec<u8> {
        let (key, iv, hpk) = client_initial_keys(dcid).unwrap();
        let pn: [u8; 2] = [0x00, 0x07];
        let mut p = vec![0xc1, 0, 0, 0, 1, dcid.len() as u8];
        p.extend_from_slice(dcid);
        p.push(0); // no source CID
        p.push(0); // no token
        let length = pn.len() + payload_len + 16;
        p.extend_from_slice(&[0x40 | (length >> 8) as u8, length as u8]);
        let pn_offset = p.len();
        p.extend_from_slice(&pn);
        let mut body = vec![0u8; payload_len]; // PADDING frames
        body[0] = 0x06; // a CRYPTO frame type, not that it matters to the AEAD
        let mut nonce = iv;
        nonce[10] ^= pn[0];
        nonce[11] ^= pn[1];
        let k = LessSafeKey::new(UnboundKey::new(&aead::AES_128_GCM, &key).unwrap());
        k.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&p[..]),
            &mut body,
        )
        .unwrap();
        p.extend_from_slice(&body);
        let mask = hp::HeaderProtectionKey::new(&hp::AES_128, &hpk)
            .unwrap()
            .new_mask(&p[pn_offset + 4..pn_offset + 20])
            .unwrap();
        p[0] ^= mask[0] & 0x0f;
        p[pn_offset] ^= mask[1];
        p[pn_offset + 1] ^= mask[2];
        p
    }

    #[test]
    fn sealed_initials_pass_and_any_flipped_bit_fails() {
        let d = seal(&hex("8394c8f03e515708"), 1162);
        assert_eq!(check(&d), Verdict::Pass);
        // Byte 0's low bits are protected (packet number length); flipping its type bits
        // would make it a 0-RTT packet, which this filter leaves to quinn.
        for (i, bit) in [
            (0usize, 0x01),
            (6, 0x10),
            (20, 0x10),
            (25, 0x10),
            (100, 0x10),
            (d.len() - 1, 0x10),
        ] {
            let mut m = d.clone();
            m[i] ^= bit;
            assert_ne!(check(&m), Verdict::Pass, "bit flipped at {i}");
        }
        // Coalesced packets after the first one are quinn's business.
        let mut coalesced = d.clone();
        coalesced.extend_from_slice(&[0xe0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(check(&coalesced), Verdict::Pass);
    }

    #[test]
    fn versions_and_types() {
        let mut other = seal(&[1, 2, 3, 4, 5, 6, 7, 8], 100);
        other[4] = 2;
        assert_eq!(check(&other), Verdict::OtherVersion);
        assert_eq!(check(&[0xc0, 0, 0]), Verdict::OtherVersion);
        // Handshake packets (type 2) and short headers are not judged here.
        assert_eq!(check(&[0xe0, 0, 0, 0, 1]), Verdict::Pass);
        assert_eq!(check(&[0x40, 1, 2, 3]), Verdict::Pass);
    }

    #[test]
    fn later_initials_pass_only_to_an_issued_connection_id() {
        let mut gate = InitialGate::new(2);
        // The server's Initial: DCID = the client's, SCID = the ID the server chose.
        let server_initial = [0xc0, 0, 0, 0, 1, 2, 0xaa, 0xbb, 4, 1, 2, 3, 4, 0, 0];
        gate.note_sent(&server_initial, 0);
        // A client Initial to that ID, sealed with other keys (as an ACK-only Initial is).
        let mut ack = seal(&[1, 2, 3, 4], 100);
        assert_eq!(
            gate.check(&ack, 0),
            Verdict::Pass,
            "its own keys happen to fit"
        );
        let last = ack.len() - 1;
        ack[last] ^= 1;
        assert_eq!(
            gate.check(&ack, 1_000_000),
            Verdict::Pass,
            "addressed to an issued ID"
        );
        assert_eq!(
            gate.check(&ack, 40_000_000),
            Verdict::BadInitial,
            "the allowance expires"
        );
        let mut junk = seal(&[9; 8], 1162);
        junk[200] ^= 1;
        assert_eq!(
            gate.check(&junk, 1_000_000),
            Verdict::BadInitial,
            "an ID the server never issued"
        );
        // Short headers carry no SCID and note nothing.
        gate.note_sent(&[0x40, 1, 2, 3], 0);
        assert_eq!(gate.issued.len(), 1);
    }

    /// A server Initial (type 0) from `scid`, as far as the gate reads it.
    fn server_initial(first: u8, scid: &[u8]) -> Vec<u8> {
        let mut p = vec![first, 0, 0, 0, 1, 2, 0xaa, 0xbb, scid.len() as u8];
        p.extend_from_slice(scid);
        p.extend_from_slice(&[0, 0]);
        p
    }

    /// An ACK-only Initial to `dcid`, sealed with other keys: only the table lets it through.
    fn ack_to(dcid: &[u8]) -> Vec<u8> {
        let ack = seal(&[7; 8], 100);
        let mut d = vec![0xc1, 0, 0, 0, 1, dcid.len() as u8];
        d.extend_from_slice(dcid);
        d.extend_from_slice(&ack[14..]);
        d
    }

    #[test]
    fn retries_note_nothing_so_spoofed_initials_cannot_fill_the_table() {
        let mut gate = InitialGate::new(4);
        // Retry (type 3), Handshake (type 2), another version: none is a server Initial.
        for first in [0xf0u8, 0xe0] {
            for n in 0..100u8 {
                gate.note_sent(&server_initial(first, &[n; 8]), 0);
            }
        }
        let mut other = server_initial(0xc0, &[1; 8]);
        other[4] = 2;
        gate.note_sent(&other, 0);
        assert!(gate.is_empty(), "{} IDs noted", gate.len());
        assert_eq!(gate.check(&ack_to(&[5; 8]), 0), Verdict::BadInitial);
        gate.note_sent(&server_initial(0xc3, &[5; 8]), 0);
        assert_eq!(gate.check(&ack_to(&[5; 8]), 0), Verdict::Pass);
    }

    #[test]
    fn a_full_table_drops_the_id_closest_to_expiry() {
        let mut gate = InitialGate::new(4);
        for n in 0..4u8 {
            gate.note_sent(&server_initial(0xc0, &[n; 8]), u64::from(n));
        }
        // Full, nothing expired: the newcomer is noted and the oldest goes.
        gate.note_sent(&server_initial(0xc0, &[9; 8]), 10);
        assert_eq!(gate.len(), 4);
        assert_eq!(gate.check(&ack_to(&[9; 8]), 10), Verdict::Pass);
        assert_eq!(gate.check(&ack_to(&[0; 8]), 10), Verdict::BadInitial);
        assert_eq!(gate.check(&ack_to(&[1; 8]), 10), Verdict::Pass);
        // A newly noted ID survives the next cap - 1 notes.
        for n in 20..23u8 {
            gate.note_sent(&server_initial(0xc0, &[n; 8]), 11);
        }
        assert_eq!(gate.check(&ack_to(&[9; 8]), 11), Verdict::Pass);
    }

    proptest! {
        #[test]
        fn random_initials_never_pass_or_panic(tail in proptest::collection::vec(any::<u8>(), 0..1400)) {
            let mut d = vec![0xc0, 0, 0, 0, 1];
            d.extend(tail);
            prop_assert_ne!(check(&d), Verdict::Pass);
        }
    }
}
