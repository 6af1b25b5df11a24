//! One page session: a str0m `Rtc` answering the page's offer as ICE-lite with exactly the
//! candidates it was given, echoing the data channel and counting what it saw.

use super::book::{session_id, Book};
use super::conn::Conn;
use super::{OpenError, UdpOut};
use probe_proto::msg::Transport;
use probe_proto::web::{stream_of, ServerCounts, STREAM_AUDIO};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::change::SdpOffer;
use str0m::channel::ChannelData;
use str0m::crypto::dtls::DtlsCert;
use str0m::crypto::CryptoProvider;
use str0m::net::{Protocol, Receive, TcpType, Transmit};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig};

/// The crypto every session shares: one provider, one DTLS certificate made at start (a
/// fingerprint per process, not a key generation per session).
pub struct Crypto {
    pub provider: Arc<CryptoProvider>,
    pub cert: DtlsCert,
}

impl Crypto {
    pub fn new() -> anyhow::Result<Self> {
        let provider = str0m::crypto::from_feature_flags();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| anyhow::anyhow!("could not generate the DTLS certificate"))?;
        Ok(Self {
            provider: Arc::new(provider),
            cert,
        })
    }
}

/// Where a UDP source was heard: its address as the socket gave it (an IPv4-mapped form on a
/// dual-stack socket, which is how replies must be addressed) and the local address it was
/// sent to (replies leave from it: through a DNAT the kernel then maps them back).
#[derive(Debug, Clone, Copy)]
struct Path {
    canonical: SocketAddr,
    raw: SocketAddr,
    local: Option<IpAddr>,
}

pub struct Session {
    pub key: u64,
    rtc: Rtc,
    candidates: Vec<(SocketAddr, Transport)>,
    /// The session is closed at this time whatever state it is in.
    pub deadline: Instant,
    /// It is closed at this time unless DTLS connected by then (None once it has).
    connect_by: Option<Instant>,
    /// When str0m next wants a timeout.
    pub next: Instant,
    paths: Vec<Path>,
    /// ICE reached connected once (a later Disconnected then means the browser went away).
    ice_up: bool,
}

/// What a session's output goes through.
pub struct Io<'a> {
    pub udp: &'a dyn UdpOut,
    pub conns: &'a HashMap<SocketAddr, Conn>,
    pub book: &'a mut Book,
}

impl Session {
    /// Builds the `Rtc`, adds the candidates and accepts the offer. Returns the session, its
    /// SDP answer and its local ufrag.
    pub fn new(
        key: u64,
        crypto: &Crypto,
        offer_sdp: &str,
        candidates: &[(SocketAddr, Transport)],
        (now, lifetime, connect_within): (Instant, Duration, Duration),
    ) -> Result<(Session, String, String), OpenError> {
        let bad = |what: String| OpenError::BadOffer(what);
        // str0m's parse error is its parser's Debug text (pointers, several lines): logged at
        // debug level only, the browser gets one sentence.
        let offer = SdpOffer::from_sdp_string(offer_sdp).map_err(|e| {
            tracing::debug!("unreadable SDP offer: {e}");
            bad("The offer is not valid SDP; send the browser's own offer.".into())
        })?;
        let creds = IceCreds::new();
        let ufrag = creds.ufrag.clone();
        let mut rtc = RtcConfig::new()
            .set_crypto_provider(crypto.provider.clone())
            .set_dtls_cert(crypto.cert.clone())
            .set_local_ice_credentials(creds)
            .set_ice_lite(true)
            .build(now);
        let mut added = 0;
        for &(addr, proto) in candidates {
            // A candidate str0m rejects (link-local, multicast, a duplicate) is left out of the
            // answer.
            let c = candidate(addr, proto);
            if c.and_then(|c| rtc.add_local_candidate(c).map(|_| ()))
                .is_some()
            {
                added += 1;
            }
        }
        if added == 0 {
            return Err(bad(
                "The server has no usable candidate for this test; check RTCD's advertised addresses.".into(),
            ));
        }
        let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| {
            bad(format!(
                "The offer was refused ({e}); send an offer with one data channel."
            ))
        })?;
        let session = Session {
            key,
            rtc,
            candidates: candidates.to_vec(),
            deadline: now + lifetime,
            connect_by: Some(now + connect_within),
            next: now,
            paths: Vec::new(),
            ice_up: false,
        };
        Ok((session, answer.to_sdp_string(), ufrag))
    }

    /// The advertised candidate a packet from `src` that arrived on local address `dst` was
    /// sent to. str0m must see the advertised address as the destination or it matches no
    /// local candidate.
    pub fn local_for(
        &self,
        proto: Transport,
        src: SocketAddr,
        dst: Option<IpAddr>,
    ) -> Option<SocketAddr> {
        pick_local(&self.candidates, proto, src.ip(), dst)
    }

    /// Whether str0m takes this STUN request (ufrag and MESSAGE-INTEGRITY); a panic in its
    /// check is a no.
    pub fn accepts(&self, input: &Input) -> bool {
        let rtc = AssertUnwindSafe(&self.rtc);
        catch_unwind(|| rtc.accepts(input)).unwrap_or(false)
    }

    pub fn handle(&mut self, input: Input) -> Result<(), str0m::RtcError> {
        self.rtc.handle_input(input)
    }

    /// Remembers how to answer a UDP source (bounded like the routes).
    pub fn note_path(&mut self, canonical: SocketAddr, raw: SocketAddr, local: Option<IpAddr>) {
        let path = Path {
            canonical,
            raw,
            local,
        };
        let room = self.paths.len() < super::route::MAX_ADDRS_PER_SESSION;
        match self.paths.iter_mut().find(|p| p.canonical == canonical) {
            Some(p) => *p = path,
            None if room => self.paths.push(path),
            None => {}
        }
    }

    /// When the session ends: its lifetime, or sooner while it has not connected.
    pub fn end_by(&self) -> Instant {
        self.connect_by
            .map_or(self.deadline, |t| t.min(self.deadline))
    }

    pub fn is_alive(&self) -> bool {
        self.rtc.is_alive()
    }

    /// Starts a graceful close (DTLS close_notify goes out on the next drive).
    pub fn close(&mut self) {
        if self.rtc.close().is_err() {
            self.rtc.disconnect();
        }
    }

    /// Takes every output str0m has: sends transmits, handles events, notes the next timeout.
    pub fn drive(&mut self, io: &mut Io) -> Result<(), str0m::RtcError> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => {
                    self.next = t;
                    return Ok(());
                }
                Output::Transmit(t) => self.transmit(t, io),
                Output::Event(e) => self.event(e, io),
            }
        }
    }

    fn transmit(&mut self, t: Transmit, io: &mut Io) {
        if t.contents.first().is_some_and(|b| *b < 4) {
            if let Some(c) = io.book.counts_mut(self.key) {
                c.stun_answered += 1;
            }
        }
        match t.proto {
            Protocol::Udp => {
                let path = self.paths.iter().find(|p| p.canonical == t.destination);
                let (to, from) = path.map_or((t.destination, None), |p| (p.raw, p.local));
                io.udp.send(to, from, &t.contents);
            }
            Protocol::Tcp => {
                if let Some(conn) = io.conns.get(&t.destination) {
                    conn.send_frame(&t.contents);
                }
            }
            Protocol::SslTcp | Protocol::Tls => {}
        }
    }

    fn event(&mut self, e: Event, io: &mut Io) {
        let key = self.key;
        match e {
            Event::IceConnectionStateChange(s) => {
                tracing::debug!(session = %session_id(key), "web session ICE {s:?}");
                match s {
                    IceConnectionState::Connected | IceConnectionState::Completed => {
                        self.ice_up = true;
                    }
                    // ICE-lite after a nomination: the browser stopped its consent checks (it
                    // closed the page or its peer connection); nothing more will come.
                    IceConnectionState::Disconnected if self.ice_up => self.close(),
                    _ => {}
                }
            }
            Event::Connected => {
                self.connect_by = None;
                if let Some(c) = io.book.counts_mut(key) {
                    c.dtls_connected = true;
                }
                io.book.stats_mut().connected += 1;
            }
            Event::ChannelOpen(_, _) => {
                if let Some(c) = io.book.counts_mut(key) {
                    c.channel_open = true;
                }
            }
            Event::ChannelData(d) => self.echo(d, io.book),
            // The page's one channel closed, or the browser said goodbye: the session is over.
            Event::ChannelClose(_) => self.close(),
            Event::Closed => self.rtc.disconnect(),
            _ => {}
        }
    }

    /// A message of a known stream goes back unchanged on its channel; anything else is
    /// counted and dropped.
    fn echo(&mut self, d: ChannelData, book: &mut Book) {
        let Some(stream) = stream_of(&d.data) else {
            book.drops_mut().messages_dropped += 1;
            return;
        };
        let sent = self
            .rtc
            .channel(d.id)
            .is_some_and(|mut ch| matches!(ch.write(d.binary, &d.data), Ok(true)));
        let Some(c) = book.counts_mut(self.key) else {
            return;
        };
        count_stream(c, stream, sent);
    }
}

/// The candidate of `proto` with address `dst`, else (through a DNAT or `ice_host_override`
/// the socket's address is not the advertised one) the first of `src`'s address family: an
/// IPv4 packet must not be given an IPv6 destination. The first of `proto` as a last resort.
fn pick_local(
    candidates: &[(SocketAddr, Transport)],
    proto: Transport,
    src: IpAddr,
    dst: Option<IpAddr>,
) -> Option<SocketAddr> {
    let of_proto = || {
        candidates
            .iter()
            .filter(move |(_, p)| *p == proto)
            .map(|(a, _)| *a)
    };
    let dst = dst.map(|ip| ip.to_canonical());
    let v4 = src.to_canonical().is_ipv4();
    of_proto()
        .find(|a| Some(a.ip().to_canonical()) == dst)
        .or_else(|| of_proto().find(|a| a.ip().to_canonical().is_ipv4() == v4))
        .or_else(|| of_proto().next())
}

fn count_stream(c: &mut ServerCounts, stream: u8, sent: bool) {
    let (rx, tx) = if stream == STREAM_AUDIO {
        (&mut c.audio_rx, &mut c.audio_tx)
    } else {
        (&mut c.burst_rx, &mut c.burst_tx)
    };
    *rx += 1;
    *tx += u64::from(sent);
}

/// A host candidate: UDP, or TCP passive (the browser connects to us, RFC 6544).
fn candidate(addr: SocketAddr, proto: Transport) -> Option<Candidate> {
    let c = match proto {
        Transport::Udp => Candidate::host(addr, "udp"),
        Transport::Tcp => Candidate::builder()
            .tcp()
            .host(addr)
            .tcptype(TcpType::Passive)
            .build(),
    };
    c.map_err(|e| tracing::warn!("web session: candidate {addr} not usable: {e}"))
        .ok()
}

/// A received datagram or frame as str0m's input; None when str0m cannot parse it (or its
/// parser panics: input from the network must never take the task down).
pub fn receive_input<'a>(
    at: Instant,
    proto: Transport,
    source: SocketAddr,
    destination: SocketAddr,
    pkt: &'a [u8],
) -> Option<Input<'a>> {
    let proto = match proto {
        Transport::Udp => Protocol::Udp,
        Transport::Tcp => Protocol::Tcp,
    };
    let parse = || Receive::new(proto, source, destination, pkt).ok();
    let r = std::panic::catch_unwind(parse).ok().flatten()?;
    Some(Input::Receive(at, r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_proto::web::STREAM_BURST;

    #[test]
    fn a_packet_gets_a_destination_of_its_own_family() {
        let a = |s: &str| s.parse::<SocketAddr>().expect("literal");
        let ip = |s: &str| s.parse::<IpAddr>().expect("literal");
        let (v6, v4, tcp4) = (
            a("[2001:db8::5]:8443"),
            a("203.0.113.5:8443"),
            a("203.0.113.6:8443"),
        );
        let cands = [
            (tcp4, Transport::Tcp),
            (v6, Transport::Udp),
            (v4, Transport::Udp),
        ];
        let pick =
            |src: &str, dst: Option<&str>| pick_local(&cands, Transport::Udp, ip(src), dst.map(ip));
        // The arrival address is a candidate's: that one.
        assert_eq!(pick("198.51.100.1", Some("203.0.113.5")), Some(v4));
        assert_eq!(pick("2001:db8:1::1", Some("2001:db8::5")), Some(v6));
        // Behind a DNAT it is not: the first candidate of the source's family (an IPv4-mapped
        // source is IPv4), never the first of the list.
        assert_eq!(pick("198.51.100.1", Some("10.0.0.5")), Some(v4));
        assert_eq!(pick("::ffff:198.51.100.1", None), Some(v4));
        assert_eq!(pick("2001:db8:1::1", Some("fd00::5")), Some(v6));
        // No candidate of that family: the first of the transport still.
        let only6 = [(v6, Transport::Udp)];
        assert_eq!(
            pick_local(&only6, Transport::Udp, ip("198.51.100.1"), None),
            Some(v6)
        );
        assert_eq!(
            pick_local(&cands, Transport::Tcp, ip("2001:db8::1"), None),
            Some(tcp4)
        );
    }

    #[test]
    fn counts_per_stream_and_only_what_went_out() {
        let mut c = ServerCounts::default();
        count_stream(&mut c, STREAM_AUDIO, true);
        count_stream(&mut c, STREAM_AUDIO, false);
        count_stream(&mut c, STREAM_BURST, true);
        assert_eq!(
            (c.audio_rx, c.audio_tx, c.burst_rx, c.burst_tx),
            (2, 1, 1, 1)
        );
    }
}
