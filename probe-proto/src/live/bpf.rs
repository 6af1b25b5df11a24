//! Classic BPF programs for the tap (SO_ATTACH_FILTER): only packets to RTCD's ICE port(s)
//! whose payload starts with the live magic reach user space, so RTCD's media costs the tap
//! one in-kernel filter run per packet and no copy, however much of it there is.
//!
//! An IPv4 raw socket's filter sees the packet from the IP header on; an IPv6 raw socket's
//! from the transport header on (`v6 = true`).

use super::packet::MAGIC_U32;

/// One `struct sock_filter` instruction: code, jt, jf, k.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;
const W: u16 = 0x00;
const H: u16 = 0x08;
const B: u16 = 0x10;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MSH: u16 = 0xa0;
const JEQ: u16 = 0x10;
const JSET: u16 = 0x40;
const JGE: u16 = 0x30;
const K: u16 = 0x00;
const AND: u16 = 0x50;
const RSH: u16 = 0x70;
const ADD: u16 = 0x00;
const X: u16 = 0x08;
const TAX: u16 = 0x00;
const IMM: u16 = 0x00;

fn s(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn j(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// Which transport the program filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp,
    /// The magic follows the RFC 4571 2-byte length, after the TCP header.
    Tcp,
}

/// Jumps that go to "drop", patched once its position is known: (instruction, on true).
type DropJumps = Vec<(usize, bool)>;

/// The common head: skip non-first IPv4 fragments, leave X at the transport header, fall
/// through when the destination port is one of `ports` (else drop).
fn port_head(p: &mut Vec<Insn>, ports: &[u16], v6: bool) -> DropJumps {
    let mut drops = Vec::new();
    if v6 {
        // X = 0: the transport header is at offset 0.
        p.push(s(LDX | W | IMM, 0));
    } else {
        // A non-first fragment has no transport header.
        p.push(s(LD | H | ABS, 6));
        drops.push((p.len(), true));
        p.push(j(JMP | JSET | K, 0x1fff, 0, 0));
        p.push(s(LDX | B | MSH, 0));
    }
    p.push(s(LD | H | IND, 2));
    let ports: Vec<u16> = if ports.is_empty() {
        vec![0]
    } else {
        ports.to_vec()
    };
    let n = ports.len();
    for (i, port) in ports.iter().enumerate() {
        // Match: jump past the remaining port tests; else next test (the last falls to drop).
        let remaining = (n - 1 - i) as u8;
        if i + 1 == n {
            drops.push((p.len(), false));
        }
        p.push(j(JMP | JEQ | K, u32::from(*port), remaining, 0));
    }
    drops
}

/// Appends accept and drop, and points every drop jump at drop.
fn finish(mut p: Vec<Insn>, drops: DropJumps) -> Vec<Insn> {
    p.push(s(RET | K, 0x0004_0000));
    let drop_at = p.len();
    p.push(s(RET | K, 0));
    for (at, on_true) in drops {
        let off = (drop_at - at - 1) as u8;
        if on_true {
            p[at].jt = off;
        } else {
            p[at].jf = off;
        }
    }
    p
}

/// The filter: accept (whole packet) when the destination port is one of `ports` and the
/// payload starts with the live magic; drop everything else.
pub fn program(proto: Proto, ports: &[u16], v6: bool) -> Vec<Insn> {
    let mut p = Vec::new();
    let mut drops = port_head(&mut p, ports, v6);
    match proto {
        Proto::Udp => p.push(s(LD | W | IND, 8)),
        Proto::Tcp => {
            p.push(s(LD | B | IND, 12));
            p.push(s(ALU | AND | K, 0xf0));
            p.push(s(ALU | RSH | K, 2));
            p.push(s(ALU | ADD | X, 0));
            p.push(s(MISC | TAX, 0));
            p.push(s(LD | W | IND, 2));
        }
    }
    // Magic: fall through to accept; else drop.
    drops.push((p.len(), false));
    p.push(j(JMP | JEQ | K, MAGIC_U32, 0, 0));
    finish(p, drops)
}

/// The test page's UDP filter (live mode with `--web`): datagrams to `ports` that are STUN
/// (first byte 0–3 and the RFC 8489 magic cookie) or DTLS (first byte 20–63, RFC 9443's
/// ranges), which the page's WebRTC sessions send; RTCD's SRTP (128–191), the bulk of its
/// traffic, stays in the kernel. RTCD's own STUN and DTLS are copied too, and dropped by the
/// session lookup.
pub fn page_program(ports: &[u16], v6: bool) -> Vec<Insn> {
    let mut p = Vec::new();
    let mut drops = port_head(&mut p, ports, v6);
    p.push(s(LD | B | IND, 8));
    drops.push((p.len(), true));
    p.push(j(JMP | JGE | K, 64, 0, 0)); // 64 and up: neither
    p.push(j(JMP | JGE | K, 20, 3, 0)); // 20–63: DTLS, accept
    drops.push((p.len(), true));
    p.push(j(JMP | JGE | K, 4, 0, 0)); // 4–19: neither
    p.push(s(LD | W | IND, 12));
    drops.push((p.len(), false));
    p.push(j(JMP | JEQ | K, crate::stun::MAGIC_COOKIE, 0, 0));
    finish(p, drops)
}

/// Runs a program on a packet, as the kernel would (enough of the interpreter for these
/// programs: tests check the filter without a socket). Returns the accept length.
pub fn run(prog: &[Insn], pkt: &[u8]) -> u32 {
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    let ld = |at: u32, size: usize| -> Option<u32> {
        let at = at as usize;
        let b = pkt.get(at..at.checked_add(size)?)?;
        Some(b.iter().fold(0u32, |acc, v| (acc << 8) | u32::from(*v)))
    };
    while let Some(i) = prog.get(pc) {
        pc += 1;
        let size = match i.code & 0x18 {
            W => 4,
            H => 2,
            _ => 1,
        };
        match i.code {
            c if c & 0x07 == LD && c & 0xe0 == ABS => match ld(i.k, size) {
                Some(v) => a = v,
                None => return 0,
            },
            c if c & 0x07 == LD && c & 0xe0 == IND => match ld(x.wrapping_add(i.k), size) {
                Some(v) => a = v,
                None => return 0,
            },
            c if c == LDX | B | MSH => match ld(i.k, 1) {
                Some(v) => x = (v & 0x0f) * 4,
                None => return 0,
            },
            c if c == LDX | W | IMM => x = i.k,
            c if c == ALU | AND | K => a &= i.k,
            c if c == ALU | RSH | K => a >>= i.k,
            c if c == ALU | ADD | X => a = a.wrapping_add(x),
            c if c == MISC | TAX => x = a,
            c if c == JMP | JEQ | K || c == JMP | JSET | K || c == JMP | JGE | K => {
                let hit = match c & 0xf0 {
                    JEQ => a == i.k,
                    JGE => a >= i.k,
                    _ => a & i.k != 0,
                };
                pc += usize::from(if hit { i.jt } else { i.jf });
            }
            c if c == RET | K => return i.k,
            _ => return 0,
        }
    }
    0
}
