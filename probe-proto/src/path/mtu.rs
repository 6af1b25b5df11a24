//! Path MTU both ways on the media 5-tuple (issue 13): the probe plan, what it found and the
//! rule, as pure code with time passed in.
//!
//! Acknowledged probes in the manner of RFC 8899 (DPLPMTUD): every probe is an echo variant
//! (`echo::PT_MTU_PROBE`) that the server acknowledges, so a size passes only when its own
//! acknowledgement came back, and a lost probe is retried ([`MAX_PROBES`] in all, RFC 8899
//! §5.1.2) before the size counts as failed. Upstream, the probe itself has the size under test
//! and the acknowledgement is small; downstream, a small probe asks for an answer of that size
//! (the server sends it only inside the session whose key the probe's MAC proves, within a
//! per-session budget). Each size goes once with DF set and once without, each way.
//!
//! Random loss cannot invent a finding: the largest size that passed is what counts (a path
//! that carried 1472 bytes once has an MTU of at least that), and a direction whose small
//! baseline probe never came back (an older server, or a path that lost everything) is
//! unknown, not judged.

use super::PathFacts;
use crate::catalog::FindingId;
use crate::report::{Finding, Severity};
use serde::{Deserialize, Serialize};

/// UDP payload sizes under test over IPv4: 1200 is what pion and libwebrtc put in one packet,
/// 1472 fills a 1500-byte Ethernet packet.
pub const SIZES_V4: [u16; 7] = [1200, 1252, 1280, 1300, 1350, 1400, 1472];
/// Over IPv6 the headers take 20 bytes more: 1452 fills a 1500-byte packet, and 1232 is what
/// IPv6's minimum link MTU of 1280 carries (RFC 8200 §5), which every IPv6 path must.
pub const SIZES_V6: [u16; 8] = [1200, 1232, 1252, 1280, 1300, 1350, 1400, 1452];
/// A small probe each way first: it tells "the server answers MTU probes" from "large packets
/// are lost".
pub const BASELINE: u16 = 200;
/// Tries per probe (RFC 8899 §5.1.2, MAX_PROBES).
pub const MAX_PROBES: u8 = 3;
/// Between rounds of retries.
pub const RETRY_US: u64 = 400_000;
/// Between two probes of one round, so a round is not one burst on a slow uplink.
pub const GAP_US: u64 = 2_000;
/// The UDP part ends this long after it started, whatever is still unanswered.
pub const UDP_DEADLINE_US: u64 = 1_500_000;
/// ICE-TCP / TCP fallback: one RFC 4571 frame of this many bytes each way (an MSS black hole
/// stalls a full-size segment).
pub const TCP_FRAME: u16 = 1400;
/// Below this largest payload (either way) video and screen share stall (IPv4).
pub const ERROR_BELOW: u16 = 1252;
/// The same over IPv6: a path at IPv6's minimum MTU (1280, so 1232 bytes of UDP payload)
/// still carries media — up to 1,200 bytes of RTP plus a 16-byte SRTP tag, as pion sends
/// (webrtc settingengine.go, outboundMTU 1200).
pub const ERROR_BELOW_V6: u16 = 1232;
/// Below this, media still fits but with little margin.
pub const WARNING_BELOW: u16 = 1400;

/// The error threshold for a path of this IP version.
pub fn error_below(ip_version: u8) -> u16 {
    if ip_version == 6 {
        ERROR_BELOW_V6
    } else {
        ERROR_BELOW
    }
}

/// Past the small frame's round trip (`rtt_us`), the large TCP frame needs this long before a
/// silence means "lost": one retransmission (an RTO is about three round trips) and its answer.
pub fn tcp_large_wait_us(rtt_us: u64) -> u64 {
    rtt_us.saturating_mul(4).saturating_add(200_000)
}

/// The large TCP frame's outcome: `answered` is its verdict when it came back (or its
/// connection failed), `None` when the wait ran out after `waited_us`. A wait shorter than
/// [`tcp_large_wait_us`] proves nothing — one slow retransmission is no black hole — so that
/// case is unknown (`None`), not lost.
pub fn tcp_large_outcome(answered: Option<bool>, rtt_us: u64, waited_us: u64) -> Option<bool> {
    match answered {
        Some(ok) => Some(ok),
        None if waited_us >= tcp_large_wait_us(rtt_us) => Some(false),
        None => None,
    }
}

/// Which way a probe measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Way {
    /// Client → server: the probe has the size.
    Up,
    /// Server → client: the answer has the size.
    Down,
}

/// One probe of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub way: Way,
    /// UDP payload bytes of the packet under test.
    pub size: u16,
    pub df: bool,
}

impl Probe {
    /// Bytes of the request the client sends.
    pub fn request_len(&self) -> usize {
        match self.way {
            Way::Up => usize::from(self.size),
            Way::Down => crate::echo::MIN_LEN,
        }
    }

    /// Answer length to ask for (0: a small acknowledgement).
    pub fn reply_len(&self) -> usize {
        match self.way {
            Way::Up => 0,
            Way::Down => usize::from(self.size),
        }
    }
}

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send probe `id` (its echo sequence number) now.
    Send { id: u32, probe: Probe },
    /// Nothing due before this time (µs); acknowledgements may arrive meanwhile.
    Wait(u64),
    /// Every probe answered, or the deadline passed.
    Done,
}

#[derive(Debug, Clone)]
struct Slot {
    probe: Probe,
    tries: u8,
    acked: bool,
}

/// The UDP plan: baselines, then every size with and without DF each way, in rounds.
#[derive(Debug, Clone)]
pub struct Plan {
    slots: Vec<Slot>,
    start_us: u64,
    round: u8,
    /// Index of the next slot to consider in this round, and sends made in it.
    cursor: usize,
    sent_in_round: u64,
    ipv6: bool,
    /// DF could be set on the client's socket: upstream DF probes are planned.
    up_df: bool,
    /// Smallest upstream DF size the client's own stack refused to send (EMSGSIZE): its own
    /// interface or route has a smaller MTU, which the OS knows — no black hole on that side.
    local_refused: Option<u16>,
    /// The sizes under test (probe-server payload bytes).
    sizes: Vec<u16>,
}

impl Plan {
    /// `up_df`: the client can set DF on its socket; without it only fragmentable probes go
    /// upstream (the DF figure stays unknown rather than measured with the OS default).
    pub fn new(ipv6: bool, up_df: bool, now_us: u64) -> Self {
        Self::framed(ipv6, up_df, now_us, 0)
    }

    /// The plan through a TURN relay, whose framing adds `overhead` bytes on the client↔TURN
    /// leg: sizes stay probe-server payload sizes, the largest cut so that the framed datagram
    /// still fills (not exceeds) a 1500-byte packet.
    pub fn framed(ipv6: bool, up_df: bool, now_us: u64, overhead: u16) -> Self {
        let mut sizes = if ipv6 {
            SIZES_V6.to_vec()
        } else {
            SIZES_V4.to_vec()
        };
        let full = sizes[sizes.len() - 1].saturating_sub(overhead);
        for s in sizes.iter_mut() {
            *s = (*s).min(full);
        }
        sizes.dedup();
        let mut probes = vec![
            Probe {
                way: Way::Up,
                size: BASELINE,
                df: up_df,
            },
            Probe {
                way: Way::Down,
                size: BASELINE,
                df: true,
            },
        ];
        for &size in &sizes {
            for way in [Way::Up, Way::Down] {
                for df in [true, false] {
                    if way == Way::Up && df && !up_df {
                        continue;
                    }
                    probes.push(Probe { way, size, df });
                }
            }
        }
        Self {
            slots: probes
                .into_iter()
                .map(|probe| Slot {
                    probe,
                    tries: 0,
                    acked: false,
                })
                .collect(),
            start_us: now_us,
            round: 0,
            cursor: 0,
            sent_in_round: 0,
            ipv6,
            up_df,
            local_refused: None,
            sizes,
        }
    }

    /// The client's stack refused to send probe `id` as too big (EMSGSIZE): the probe is lost,
    /// and the reason is local, not the path.
    pub fn on_send_too_big(&mut self, id: u32) {
        if let Some(p) = self.probe(id).filter(|p| p.way == Way::Up && p.df) {
            self.local_refused = Some(self.local_refused.map_or(p.size, |l| l.min(p.size)));
        }
    }

    /// The probes of the plan, by id.
    pub fn probes(&self) -> impl Iterator<Item = (u32, Probe)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u32, s.probe))
    }

    /// Probe `id` of the plan.
    pub fn probe(&self, id: u32) -> Option<Probe> {
        self.slots.get(id as usize).map(|s| s.probe)
    }

    /// Whether `ack` is the right answer to probe `id`: an upstream probe's acknowledgement
    /// names the probe's full size as it arrived; a downstream answer has the size asked for.
    pub fn ack_fits(&self, id: u32, request_len: usize, len: usize) -> bool {
        self.probe(id).is_some_and(|p| match p.way {
            Way::Up => request_len == usize::from(p.size) && len == crate::echo::MIN_LEN,
            Way::Down => len == usize::from(p.size),
        })
    }

    /// The next thing to do at `now_us`.
    pub fn poll(&mut self, now_us: u64) -> Action {
        let deadline = self.start_us + UDP_DEADLINE_US;
        if self.slots.iter().all(|s| s.acked) || now_us >= deadline {
            return Action::Done;
        }
        while self.round < MAX_PROBES {
            let round_start = self.start_us + u64::from(self.round) * RETRY_US;
            let due = round_start + self.sent_in_round * GAP_US;
            if now_us < due {
                return Action::Wait(due);
            }
            let next = (self.cursor..self.slots.len()).find(|&i| !self.slots[i].acked);
            match next {
                Some(i) => {
                    self.cursor = i + 1;
                    self.sent_in_round += 1;
                    let s = &mut self.slots[i];
                    s.tries += 1;
                    return Action::Send {
                        id: i as u32,
                        probe: s.probe,
                    };
                }
                None => {
                    self.round += 1;
                    self.cursor = 0;
                    self.sent_in_round = 0;
                }
            }
        }
        Action::Wait(deadline)
    }

    /// An acknowledgement for probe `id` came back (the driver checked its MAC and length);
    /// false for an id the plan does not have.
    pub fn on_ack(&mut self, id: u32) -> bool {
        match self.slots.get_mut(id as usize) {
            Some(s) if s.tries > 0 => {
                s.acked = true;
                true
            }
            _ => false,
        }
    }

    /// What the plan found so far. `icmp_up`: whether an ICMP "fragmentation needed" / "packet
    /// too big" reached the client's socket (`None`: this system cannot tell).
    pub fn result(&self, icmp_up: Option<bool>, icmp_up_mtu: Option<u16>) -> UdpMtu {
        let dir = |way: Way| {
            let passed = |df: bool| -> Vec<u16> {
                self.slots
                    .iter()
                    .filter(|s| s.probe.way == way && s.probe.df == df && s.acked)
                    .filter(|s| s.probe.size != BASELINE)
                    .map(|s| s.probe.size)
                    .collect()
            };
            let baseline = self
                .slots
                .iter()
                .any(|s| s.probe.way == way && s.probe.size == BASELINE && s.acked);
            let df_planned = way == Way::Down || self.up_df;
            let (pdf, pno) = (passed(true), passed(false));
            DirMtu {
                answered: baseline,
                largest_df: if df_planned {
                    pdf.iter().copied().max()
                } else {
                    None
                },
                largest_no_df: pno.iter().copied().max(),
                passed_df: if df_planned { Some(pdf) } else { None },
                passed_no_df: pno,
                icmp: if way == Way::Up { icmp_up } else { None },
                icmp_mtu: if way == Way::Up { icmp_up_mtu } else { None },
                local_refused: if way == Way::Up {
                    self.local_refused
                } else {
                    None
                },
            }
        };
        UdpMtu {
            ip_version: if self.ipv6 { 6 } else { 4 },
            sizes: self.sizes.clone(),
            up_df_settable: self.up_df,
            up: dir(Way::Up),
            down: dir(Way::Down),
        }
    }
}

/// One direction's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DirMtu {
    /// The small baseline probe came back: the figures below mean something.
    pub answered: bool,
    /// Largest UDP payload that passed with DF set; null when none did (or none was sent).
    pub largest_df: Option<u16>,
    /// Largest that passed fragmentable (DF unset; IPv6: the sender may fragment).
    pub largest_no_df: Option<u16>,
    /// Sizes that passed with DF set; null when the client could not set DF.
    pub passed_df: Option<Vec<u16>>,
    pub passed_no_df: Vec<u16>,
    /// An ICMP "fragmentation needed" / ICMPv6 "packet too big" reached the client (upstream
    /// only); null: not known (another system, or the server's side).
    pub icmp: Option<bool>,
    /// The next-hop MTU that ICMP named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_mtu: Option<u16>,
    /// Upstream: the smallest DF size the client's own stack refused to send (its interface or
    /// route MTU is below it, e.g. a VPN on the client's machine); absent when none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_refused: Option<u16>,
}

impl DirMtu {
    /// The figure the rule judges: DF set, as RTCD's Linux host sends (pion does not touch DF;
    /// Linux sets it and fragments only after an ICMP taught it the path MTU), or without DF
    /// when DF could not be set. `None`: unknown; `Some(0)`: not even the smallest size passed.
    pub fn judged(&self) -> Option<u16> {
        if !self.answered {
            return None;
        }
        let l = match &self.passed_df {
            Some(_) => self.largest_df,
            None => self.largest_no_df,
        };
        Some(l.unwrap_or(0))
    }
}

/// The UDP part of the report's `mtu` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UdpMtu {
    pub ip_version: u8,
    /// The sizes tried (UDP payload bytes).
    pub sizes: Vec<u16>,
    /// DF could be set on the client's socket (Linux, macOS, Windows).
    pub up_df_settable: bool,
    pub up: DirMtu,
    pub down: DirMtu,
}

/// The TCP part: one [`TCP_FRAME`]-byte RFC 4571 frame each way on its own connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TcpMtu {
    pub frame: u16,
    /// A small frame came back on the same kind of connection: the figures below mean something.
    pub answered: bool,
    /// The large frame arrived (acknowledged); null when not tried, or when the phase's time
    /// left was too short to tell a lost frame from a slow one ([`tcp_large_outcome`]).
    pub up_ok: Option<bool>,
    pub down_ok: Option<bool>,
}

/// The UDP plan run through a TURN relay (issue 13 with issue 18): client → TURN server
/// (ChannelData or a Send indication) → relay → probe-server and back. Sizes are the
/// probe-server's UDP payload; the datagram between client and TURN server is `overhead` bytes
/// larger (ChannelData 4, a Send indication 36 over IPv4). DF is the client's on the
/// client→TURN leg; the relay's legs use the TURN server's own setting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnMtu {
    /// The TURN URL whose allocation carried the probes.
    pub url: String,
    /// Transport to the TURN server ("udp"; TCP and TLS are not measured).
    pub transport: String,
    /// "channel_data" or "send_indication".
    pub framing: String,
    /// Bytes the framing adds to each probe between client and TURN server.
    pub overhead: u16,
    /// How long the probes through the relay took.
    pub ms: u64,
    #[serde(flatten)]
    pub udp: UdpMtu,
}

/// The report's `mtu` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MtuReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpMtu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpMtu>,
    /// The same UDP plan through the TURN relay, when the TURN check allocated over UDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<TurnMtu>,
    /// How long the phase took.
    pub ms: u64,
}

impl TcpMtu {
    fn black_holed(&self) -> Vec<&'static str> {
        if !self.answered {
            return Vec::new();
        }
        let mut dirs = Vec::new();
        if self.up_ok == Some(false) {
            dirs.push("upstream");
        }
        if self.down_ok == Some(false) {
            dirs.push("downstream");
        }
        dirs
    }
}

/// The rule: `large_packets_lost` when the largest payload that passes either way is below
/// [`WARNING_BELOW`] (an error below [`ERROR_BELOW`], [`ERROR_BELOW_V6`] over IPv6), directly
/// or through the TURN relay, or when full-size TCP frames are lost (a warning; an error when UDP does not reach the server,
/// so TCP carries the media).
pub fn judge(m: &MtuReport, udp_reachable: bool) -> Option<Finding> {
    let udp = m.udp.as_ref();
    let up = udp.and_then(|u| u.up.judged());
    let down = udp.and_then(|u| u.down.judged());
    let worst = [up, down].into_iter().flatten().min();
    let turn = m.turn.as_ref();
    let turn_worst = turn.and_then(|t| {
        [t.udp.up.judged(), t.udp.down.judged()]
            .into_iter()
            .flatten()
            .min()
    });
    let tcp_lost = m.tcp.as_ref().map(TcpMtu::black_holed).unwrap_or_default();
    let level = |w: Option<u16>, v: u8| match w {
        Some(w) if w < error_below(v) => Some(Severity::Error),
        Some(w) if w < WARNING_BELOW => Some(Severity::Warning),
        _ => None,
    };
    let tcp_sev = (!tcp_lost.is_empty()).then_some(if udp_reachable {
        Severity::Warning
    } else {
        Severity::Error
    });
    let sev = [
        level(worst, udp.map_or(4, |u| u.ip_version)),
        level(turn_worst, turn.map_or(4, |t| t.udp.ip_version)),
        tcp_sev,
    ]
    .into_iter()
    .flatten()
    .max()?;
    let mut parts = Vec::new();
    if let (Some(u), Some(w)) = (udp, worst.filter(|w| *w < WARNING_BELOW)) {
        parts.push(udp_words(u, w));
    }
    if let (Some(t), Some(w)) = (turn, turn_worst.filter(|w| *w < WARNING_BELOW)) {
        parts.push(turn_words(t, w));
    }
    if !tcp_lost.is_empty() {
        parts.push(format!(
            "{}-byte TCP frames (ICE-TCP, the fallback when UDP is blocked) do not get through {} \
             while small ones do: a TCP MSS black hole, so media over TCP stalls as soon as packets \
             fill a segment.",
            TCP_FRAME,
            tcp_lost.join(" and ")
        ));
    }
    let direct = worst.is_some_and(|w| w < WARNING_BELOW);
    let facts = PathFacts {
        transport: if direct {
            "udp".into()
        } else if tcp_lost.is_empty() {
            "turn".into()
        } else {
            "tcp".into()
        },
        mtu_largest_up: up,
        mtu_largest_down: down,
        mtu_icmp: udp.and_then(|u| u.up.icmp),
        mtu_tcp_ok: m
            .tcp
            .as_ref()
            .filter(|t| t.answered)
            .map(|_| tcp_lost.is_empty()),
        ..PathFacts::default()
    };
    let fix = fix_text(turn_worst.is_some_and(|w| w < WARNING_BELOW));
    Some(Finding::new(FindingId::LargePacketsLost, sev, parts.join(" "), fix).with_path(facts))
}

/// The fix; `turn_narrow` adds what to do about the path to the TURN server.
fn fix_text(turn_narrow: bool) -> String {
    let mut fix = String::from(
        "Lower the MTU of the VPN or tunnel interface on this path (or raise the underlying \
         link's), clamp the TCP MSS to the path MTU on the VPN or tunnel router (e.g. nftables \
         `tcp flags syn tcp option maxseg size set rt mtu`), let ICMP \"fragmentation needed\" \
         (type 3 code 4) and ICMPv6 \"packet too big\" through every firewall, and allow IP \
         fragments.",
    );
    if turn_narrow {
        fix.push_str(
            " For the TURN relay, apply the same to the path between this client and the TURN \
             server, or give clients TURN over TCP or TLS (`?transport=tcp`, `turns:`), whose \
             segments the MSS clamp sizes.",
        );
    }
    fix
}

/// "Through the TURN relay … the largest payload … is 1200 bytes upstream …".
fn turn_words(t: &TurnMtu, worst: u16) -> String {
    let fig = |d: &DirMtu| match d.judged() {
        None => "unknown".to_string(),
        Some(0) => format!(
            "not even {} bytes",
            t.udp.sizes.first().copied().unwrap_or(1200)
        ),
        Some(v) => format!("{v} bytes"),
    };
    let mut s = format!(
        "Through the TURN relay ({}, {} over {}), the largest media payload that reaches the \
         probe server and comes back unfragmented is {} upstream and {} downstream (each packet \
         is {} bytes larger between this client and the TURN server), where a 1500-byte path \
         carries {}.",
        t.url,
        t.framing.replace('_', " "),
        t.transport.to_uppercase(),
        fig(&t.udp.up),
        fig(&t.udp.down),
        t.overhead,
        t.udp.sizes.last().copied().unwrap_or(1468)
    );
    s.push_str(if worst < error_below(t.udp.ip_version) {
        " Video and screen share through the TURN relay will stall; audio works."
    } else {
        " Media packets still fit through the TURN relay, with little margin: one more tunnel \
         on the way and video and screen share through the relay stall."
    });
    if t.udp.up.icmp == Some(false) && t.udp.up.local_refused.is_none() {
        s.push_str(
            " No ICMP \"fragmentation needed\" reached this client from the path to the TURN \
             server (an ICMP black hole).",
        );
    }
    s
}

/// "The largest UDP payload that crosses … is 1252 bytes upstream …".
fn udp_words(u: &UdpMtu, worst: u16) -> String {
    let fig = |d: &DirMtu| match d.judged() {
        None => "unknown".to_string(),
        Some(0) => format!(
            "not even {} bytes",
            u.sizes.first().copied().unwrap_or(1200)
        ),
        Some(v) => format!("{v} bytes"),
    };
    let mut s = format!(
        "The largest UDP packet that crosses this path unfragmented (DF set, as RTCD's host sends) \
         is {} upstream and {} downstream (payload), where a 1500-byte path carries {}.",
        fig(&u.up),
        fig(&u.down),
        u.sizes.last().copied().unwrap_or(1472)
    );
    s.push_str(if worst < error_below(u.ip_version) {
        " Video and screen share will stall; audio works: media packets of up to 1,200 bytes of \
         RTP plus SRTP and TURN overhead are lost, small audio packets pass."
    } else {
        " Media packets (up to 1,200 bytes of RTP plus SRTP) still fit, with little margin: TURN \
         or one more tunnel on the way and video and screen share stall."
    });
    let frag = [&u.up, &u.down]
        .iter()
        .filter_map(|d| d.largest_no_df)
        .min();
    if let Some(f) = frag.filter(|f| *f > worst) {
        s.push_str(&format!(
            " Fragmentable packets pass up to {f} bytes, so fragments get through; but a sender \
             fragments only after an ICMP \"fragmentation needed\" reaches it"
        ));
        s.push_str(match (u.up.local_refused, u.up.icmp) {
            (Some(_), _) => ".",
            (None, Some(true)) => ", and one did reach this client.",
            (None, Some(false)) => ", and none reached this client: an ICMP black hole.",
            (None, None) => ".",
        });
    } else if u.up.icmp == Some(false) && u.up.local_refused.is_none() {
        s.push_str(" No ICMP \"fragmentation needed\" reached this client (an ICMP black hole).");
    }
    if let Some(n) = u.up.local_refused {
        s.push_str(&format!(
            " This client's own network interface or route refused {n}-byte packets before \
             they left (a VPN or tunnel on this machine has a smaller MTU): the limit starts \
             here, and the operating system knows it."
        ));
    }
    s
}

/// One direction's figures for the human report: "1252 DF, 1472 no DF".
fn dir_line(d: &DirMtu) -> String {
    let fig = |v: Option<u16>| v.map_or_else(|| "none".to_string(), |v| v.to_string());
    if !d.answered {
        return "no answer".to_string();
    }
    let df = match &d.passed_df {
        Some(_) => fig(d.largest_df),
        None => "n/a".into(),
    };
    format!("{df} DF, {} no DF", fig(d.largest_no_df))
}

/// The human report's lines for the `mtu` object.
pub fn render_lines(out: &mut String, m: &MtuReport) {
    let dir = dir_line;
    if let Some(u) = &m.udp {
        let icmp = match u.up.icmp {
            Some(true) => match u.up.icmp_mtu {
                Some(mtu) => format!("   ICMP: frag. needed (MTU {mtu})"),
                None => "   ICMP: frag. needed".into(),
            },
            Some(false) => "   ICMP: none".into(),
            None => String::new(),
        };
        out.push_str(&format!(
            "MTU  UDP largest payload  up {}  down {}{icmp}\n",
            dir(&u.up),
            dir(&u.down)
        ));
    }
    if let Some(t) = &m.tcp {
        let ok = |v: Option<bool>| match v {
            Some(true) => "ok",
            Some(false) => "LOST",
            None => "unknown",
        };
        let state = if t.answered {
            format!("up {}  down {}", ok(t.up_ok), ok(t.down_ok))
        } else {
            "no answer".into()
        };
        let lead = if m.udp.is_some() { "    " } else { "MTU " };
        out.push_str(&format!("{lead} TCP {}-byte frames  {state}\n", t.frame));
    }
    if let Some(t) = &m.turn {
        let lead = if m.udp.is_some() || m.tcp.is_some() {
            "    "
        } else {
            "MTU "
        };
        out.push_str(&format!(
            "{lead} TURN largest payload  up {}  down {}   ({}, {} +{} B to the TURN server)\n",
            dir(&t.udp.up),
            dir(&t.udp.down),
            t.transport,
            t.framing.replace('_', " "),
            t.overhead
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a plan against a path that passes probes for which `passes` is true, answering
    /// instantly; returns the result and the time it ended.
    fn run(ipv6: bool, passes: impl Fn(&Probe, u8) -> bool) -> (UdpMtu, u64) {
        let mut p = Plan::new(ipv6, true, 1_000);
        let mut now = 1_000;
        let mut tries = std::collections::HashMap::new();
        loop {
            match p.poll(now) {
                Action::Send { id, probe } => {
                    let t = tries.entry(id).or_insert(0u8);
                    *t += 1;
                    if passes(&probe, *t) {
                        assert!(p.on_ack(id));
                    }
                }
                Action::Wait(t) => {
                    assert!(t > now, "time moves on");
                    now = t;
                }
                Action::Done => return (p.result(Some(false), None), now - 1_000),
            }
        }
    }

    #[test]
    fn a_clean_path_passes_every_size_at_once() {
        let (r, took) = run(false, |_, _| true);
        assert_eq!(r.up.largest_df, Some(1472));
        assert_eq!(r.down.largest_no_df, Some(1472));
        assert!(took < RETRY_US, "no retries needed: {took}");
        let m = MtuReport {
            udp: Some(r),
            tcp: None,
            turn: None,
            ms: 1,
        };
        assert!(judge(&m, true).is_none());
        let (r6, _) = run(true, |_, _| true);
        assert_eq!((r6.ip_version, r6.up.largest_df), (6, Some(1452)));
    }

    #[test]
    fn a_1280_black_hole_is_a_warning_and_fragments_are_told_apart() {
        // DF packets over 1252 B payload die; fragmentable ones pass.
        let (r, took) = run(false, |p, _| !p.df || p.size <= 1252);
        assert_eq!(
            took, UDP_DEADLINE_US,
            "unanswered probes run to the deadline"
        );
        assert_eq!(
            (r.up.largest_df, r.down.largest_df),
            (Some(1252), Some(1252))
        );
        assert_eq!(r.up.largest_no_df, Some(1472));
        assert_eq!(r.up.passed_df.as_deref(), Some(&[1200, 1252][..]));
        let f = judge(
            &MtuReport {
                udp: Some(r.clone()),
                tcp: None,
                turn: None,
                ms: 1,
            },
            true,
        )
        .expect("a finding");
        assert!(f.is(FindingId::LargePacketsLost));
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.summary
                .contains("1252 bytes upstream and 1252 bytes downstream"),
            "{}",
            f.summary
        );
        assert!(f.summary.contains("an ICMP black hole"), "{}", f.summary);
        let p = f.path.expect("facts");
        assert_eq!((p.mtu_largest_up, p.mtu_icmp), (Some(1252), Some(false)));
    }

    /// The client's own interface is the narrow hop (a VPN on its machine): its stack refuses
    /// DF probes above 1252 with EMSGSIZE. That is no black hole: the OS knows its limit.
    #[test]
    fn a_limit_the_clients_own_stack_refuses_is_not_called_a_black_hole() {
        let mut p = Plan::new(false, true, 0);
        let mut now = 0;
        loop {
            match p.poll(now) {
                Action::Send { id, probe } => {
                    if probe.way == Way::Up && probe.df && probe.size > 1252 {
                        p.on_send_too_big(id);
                    } else if probe.size <= 1252 || !probe.df {
                        assert!(p.on_ack(id));
                    }
                }
                Action::Wait(t) => now = t,
                Action::Done => break,
            }
        }
        let r = p.result(Some(false), None);
        assert_eq!(r.up.local_refused, Some(1280));
        assert_eq!(r.down.local_refused, None);
        let f = judge(
            &MtuReport {
                udp: Some(r),
                tcp: None,
                turn: None,
                ms: 1,
            },
            true,
        )
        .expect("a finding");
        assert!(!f.summary.contains("black hole"), "{}", f.summary);
        assert!(
            f.summary
                .contains("own network interface or route refused 1280-byte packets"),
            "{}",
            f.summary
        );
    }

    #[test]
    fn below_1252_either_way_is_an_error() {
        let (r, _) = run(false, |p, _| p.way == Way::Up || p.size <= 1200);
        assert_eq!((r.up.judged(), r.down.judged()), (Some(1472), Some(1200)));
        let f = judge(
            &MtuReport {
                udp: Some(r),
                tcp: None,
                turn: None,
                ms: 1,
            },
            true,
        )
        .unwrap();
        assert_eq!(f.severity, Severity::Error);
        assert!(
            f.summary
                .contains("Video and screen share will stall; audio works"),
            "{}",
            f.summary
        );
        // Not even 1200 passes, while the baseline does: an error too.
        let (r, _) = run(false, |p, _| p.size == BASELINE);
        assert_eq!(r.up.judged(), Some(0));
        let m = MtuReport {
            udp: Some(r),
            tcp: None,
            turn: None,
            ms: 1,
        };
        assert_eq!(judge(&m, true).unwrap().severity, Severity::Error);
    }

    #[test]
    fn random_loss_is_retried_and_an_unanswered_baseline_judges_nothing() {
        // Every probe's first two tries are lost: the third passes.
        let (r, _) = run(false, |_, t| t == MAX_PROBES);
        assert_eq!(r.up.largest_df, Some(1472));
        // Nothing answers (an older server, or everything lost): unknown, no finding.
        let (r, took) = run(false, |_, _| false);
        assert_eq!(took, UDP_DEADLINE_US);
        assert!(!r.up.answered && r.up.judged().is_none());
        let m = MtuReport {
            udp: Some(r),
            tcp: None,
            turn: None,
            ms: 1,
        };
        assert!(judge(&m, true).is_none());
    }

    #[test]
    fn the_plan_paces_rounds_and_stops_at_max_probes() {
        let mut p = Plan::new(false, true, 0);
        let n = p.probes().count();
        assert_eq!(n, 2 + 7 * 4);
        let (mut now, mut sends, mut last_send) = (0, 0, 0);
        loop {
            match p.poll(now) {
                Action::Send { .. } => {
                    sends += 1;
                    last_send = now;
                }
                Action::Wait(t) => now = t,
                Action::Done => break,
            }
        }
        assert_eq!(sends, n * usize::from(MAX_PROBES));
        assert_eq!(last_send, 2 * RETRY_US + (n as u64 - 1) * GAP_US);
        assert_eq!(now, UDP_DEADLINE_US);
        assert!(!p.on_ack(999), "unknown ids are ignored");
    }

    #[test]
    fn without_df_on_the_client_upstream_df_is_unknown_not_measured() {
        let mut p = Plan::new(false, false, 0);
        assert!(p.probes().all(|(_, pr)| pr.way == Way::Down || !pr.df));
        let mut now = 0;
        loop {
            match p.poll(now) {
                Action::Send { id, .. } => {
                    p.on_ack(id);
                }
                Action::Wait(t) => now = t,
                Action::Done => break,
            }
        }
        let r = p.result(None, None);
        assert_eq!((r.up.largest_df, r.up.passed_df.clone()), (None, None));
        assert_eq!(r.up.judged(), Some(1472), "judged on what was measured");
        assert!(!r.up_df_settable);
    }

    #[test]
    fn a_tcp_black_hole_is_a_warning_or_an_error_without_udp() {
        let m = MtuReport {
            udp: None,
            tcp: Some(TcpMtu {
                frame: TCP_FRAME,
                answered: true,
                up_ok: Some(false),
                down_ok: Some(true),
            }),
            turn: None,
            ms: 1,
        };
        let f = judge(&m, true).unwrap();
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.summary.contains("do not get through upstream"),
            "{}",
            f.summary
        );
        assert_eq!(judge(&m, false).unwrap().severity, Severity::Error);
        let silent = MtuReport {
            tcp: Some(TcpMtu {
                answered: false,
                ..m.tcp.clone().unwrap()
            }),
            ..m
        };
        assert!(
            judge(&silent, false).is_none(),
            "no answer at all judges nothing"
        );
    }

    /// The plan through a TURN relay with ChannelData (4 bytes) on a 1280-byte client→TURN hop:
    /// the payload that fits is 1248, so 1200 is the largest size that passes.
    fn narrow_turn() -> TurnMtu {
        let mut p = Plan::framed(false, true, 0, 4);
        let mut now = 0;
        loop {
            match p.poll(now) {
                Action::Send { id, probe } => {
                    if probe.size <= 1248 {
                        p.on_ack(id);
                    }
                }
                Action::Wait(t) => now = t,
                Action::Done => break,
            }
        }
        TurnMtu {
            url: "turn:turn.example.test:3478".into(),
            transport: "udp".into(),
            framing: "channel_data".into(),
            overhead: 4,
            ms: 1500,
            udp: p.result(Some(false), None),
        }
    }

    #[test]
    fn a_narrow_turn_path_is_judged_naming_the_relay() {
        let t = narrow_turn();
        assert_eq!(
            t.udp.sizes.last(),
            Some(&1468),
            "1472 less ChannelData's 4 bytes"
        );
        let (clean, _) = run(false, |_, _| true);
        let m = MtuReport {
            udp: Some(clean.clone()),
            tcp: None,
            turn: Some(t.clone()),
            ms: 10,
        };
        let f = judge(&m, true).expect("a finding");
        assert!(f.is(FindingId::LargePacketsLost));
        assert_eq!(f.severity, Severity::Error);
        for want in [
            "Through the TURN relay (turn:turn.example.test:3478, channel data over UDP)",
            "1200 bytes upstream and 1200 bytes downstream",
            "4 bytes larger between this client and the TURN server",
            "Video and screen share through the TURN relay will stall",
        ] {
            assert!(f.summary.contains(want), "{want:?}: {}", f.summary);
        }
        assert!(
            !f.summary.contains("The largest UDP packet"),
            "direct path clean"
        );
        assert!(f.fix.contains("TURN over TCP or TLS"), "{}", f.fix);
        let mut out = String::new();
        render_lines(&mut out, &m);
        assert!(
            out.contains(
                "TURN largest payload  up 1200 DF, 1200 no DF  down 1200 DF, 1200 no DF   \
                 (udp, channel data +4 B to the TURN server)"
            ),
            "{out}"
        );
        let back: MtuReport = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        // A clean relay and a clean direct path: nothing to say.
        let mut ok = narrow_turn();
        ok.udp = Plan::framed(false, true, 0, 4).result(None, None);
        ok.udp.up = clean.up.clone();
        ok.udp.down = clean.down.clone();
        let m = MtuReport {
            turn: Some(ok),
            ..m
        };
        assert!(judge(&m, true).is_none());
    }

    #[test]
    fn rendering_shows_both_ways_and_old_reports_parse() {
        let (r, _) = run(false, |p, _| !p.df || p.size <= 1252);
        let m = MtuReport {
            udp: Some(r),
            tcp: Some(TcpMtu {
                frame: TCP_FRAME,
                answered: true,
                up_ok: Some(false),
                down_ok: Some(false),
            }),
            turn: None,
            ms: 1500,
        };
        let mut out = String::new();
        render_lines(&mut out, &m);
        assert!(
            out.contains("up 1252 DF, 1472 no DF  down 1252 DF, 1472 no DF   ICMP: none"),
            "{out}"
        );
        assert!(
            out.contains("TCP 1400-byte frames  up LOST  down LOST"),
            "{out}"
        );
        let back: MtuReport = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    /// A path at IPv6's minimum MTU (1280: 1232 bytes of UDP payload) carries media: a
    /// warning. Below it, an error; over IPv4 the same 1200 bytes stay an error below 1252.
    #[test]
    fn the_ipv6_minimum_mtu_is_a_warning_and_ipv4_keeps_its_threshold() {
        let facts = |ipv6: bool, limit: u16| {
            let (r, _) = run(ipv6, |p, _| p.size <= limit);
            let m = MtuReport {
                udp: Some(r.clone()),
                ..MtuReport::default()
            };
            (r, judge(&m, true).expect("a finding").severity)
        };
        let (r, sev) = facts(true, 1232);
        assert!(r.sizes.contains(&1232), "{:?}", r.sizes);
        assert_eq!((r.up.judged(), r.down.judged()), (Some(1232), Some(1232)));
        assert_eq!(sev, Severity::Warning);
        let (r, sev) = facts(true, 1231);
        assert_eq!(r.up.judged(), Some(1200));
        assert_eq!(sev, Severity::Error);
        let (r, sev) = facts(false, 1251);
        assert!(!r.sizes.contains(&1232), "{:?}", r.sizes);
        assert_eq!(r.up.judged(), Some(1200));
        assert_eq!(sev, Severity::Error);
        let (r, sev) = facts(false, 1252);
        assert_eq!(r.up.judged(), Some(1252));
        assert_eq!(sev, Severity::Warning);
        assert_eq!((error_below(4), error_below(6)), (1252, 1232));
    }

    /// A large TCP frame unanswered within its wait is lost only when the wait allowed a
    /// retransmission at the measured round trip; a shorter one is unknown.
    #[test]
    fn a_slow_tcp_segment_is_unknown_not_a_black_hole() {
        // 400 ms round trip: 1.8 s needed.
        assert_eq!(tcp_large_wait_us(400_000), 1_800_000);
        assert_eq!(tcp_large_outcome(None, 400_000, 1_500_000), None);
        assert_eq!(tcp_large_outcome(None, 400_000, 1_800_000), Some(false));
        // A fast path: silence over the wait is a black hole.
        assert_eq!(tcp_large_outcome(None, 2_000, 2_000_000), Some(false));
        // An answer is an answer, however late; a failed connection is a loss.
        assert_eq!(tcp_large_outcome(Some(true), 400_000, 100), Some(true));
        assert_eq!(tcp_large_outcome(Some(false), 400_000, 100), Some(false));
    }
}
