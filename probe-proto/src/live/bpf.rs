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

/// The filter: accept (whole packet) when the destination port is one of `ports` and the
/// payload starts with the live magic; drop everything else.
pub fn program(proto: Proto, ports: &[u16], v6: bool) -> Vec<Insn> {
    let mut p = Vec::new();
    if v6 {
        // X = 0: the transport header is at offset 0.
        p.push(s(LDX | W | IMM, 0));
    } else {
        // A non-first fragment has no transport header.
        p.push(s(LD | H | ABS, 6));
        p.push(Insn {
            code: JMP | JSET | K,
            jt: 0,
            jf: 0,
            k: 0x1fff,
        }); // patched below
        p.push(s(LDX | B | MSH, 0));
    }
    let frag_jump = if v6 { None } else { Some(1) };
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
        p.push(j(
            JMP | JEQ | K,
            u32::from(*port),
            remaining,
            if i + 1 == n { 0xfe } else { 0 },
        ));
    }
    let port_tests_end = p.len();
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
    p.push(j(JMP | JEQ | K, MAGIC_U32, 0, 1));
    p.push(s(RET | K, 0x0004_0000));
    let drop_at = p.len();
    p.push(s(RET | K, 0));
    // Patch the jumps to "drop" now that its position is known.
    if let Some(at) = frag_jump {
        p[at].jt = (drop_at - at - 1) as u8;
    }
    let last_port = port_tests_end - 1;
    p[last_port].jf = (drop_at - last_port - 1) as u8;
    p
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
            c if c == JMP | JEQ | K || c == JMP | JSET | K => {
                let hit = if c & 0xf0 == JEQ {
                    a == i.k
                } else {
                    a & i.k != 0
                };
                pc += usize::from(if hit { i.jt } else { i.jf });
            }
            c if c == RET | K => return i.k,
            _ => return 0,
        }
    }
    0
}
