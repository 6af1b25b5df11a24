//! Path MTU through the TURN relay (issue 13 item 1): the UDP plan of
//! [`probe_proto::path::mtu`], run after the echo on the same allocation and channel. Upstream
//! probes go client → TURN server (ChannelData, or a Send indication) → relay → probe-server;
//! the server answers toward the relay address (only one the session announced and proved,
//! `session::Core::on_mtu`). Sizes are probe-server payload sizes; the client → TURN datagram
//! is the framing's overhead larger, and the plan's largest size is cut by it so that
//! datagram still fills a 1500-byte packet. DF is set on the client → TURN socket, as for the
//! direct probes; the relay's own legs use the TURN server's setting.

use super::{send_relayed, Live, CHANNEL};
use crate::mtu::{clear_pending, df, icmp, on_send_error};
use probe_proto::echo::{self, SessionKey};
use probe_proto::path::mtu::{Action, Plan, TurnMtu, Way};
use probe_proto::turn::client::Output;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The plan ends by itself at 1.5 s; this bounds the phase whatever the link does.
const DEADLINE: Duration = Duration::from_secs(3);

/// What the probes need: the session, its key, and the probe server as the relay's peer.
pub struct Probe {
    pub url: String,
    pub key: [u8; 32],
    pub session: u64,
    pub peer: SocketAddr,
}

/// Runs the plan on a UDP link (blocking; call it off the runtime). `None` when the link is
/// not UDP (TCP and TLS transports are not measured).
pub fn run(live: &mut Live, p: &Probe) -> Option<TurnMtu> {
    let sock = live.link.udp_socket()?.try_clone().ok()?;
    let v6 = sock.peer_addr().is_ok_and(|a| a.is_ipv6());
    let (framing, overhead) = framing(live, p.peer);
    let saved = df::save(&sock, v6);
    let settable = df::set(&sock, v6, true);
    let mut watch = icmp::Watch::enable(&sock, v6);
    let t0 = Instant::now();
    let us = || t0.elapsed().as_micros() as u64;
    let mut plan = Plan::framed(v6, settable, us(), overhead);
    let sk = SessionKey::new(&p.key);
    let mut out = [0u8; echo::MTU_MAX_LEN];
    let mut df_now = settable.then_some(true);
    loop {
        if t0.elapsed() >= DEADLINE {
            break;
        }
        match plan.poll(us()) {
            Action::Send { id, probe } => {
                if probe.way == Way::Up && settable && df_now != Some(probe.df) {
                    df::set(&sock, v6, probe.df);
                    df_now = Some(probe.df);
                }
                let n = echo::encode_mtu_probe(
                    &sk,
                    p.session,
                    id,
                    us(),
                    probe.request_len(),
                    probe.reply_len(),
                    probe.df,
                    &mut out,
                );
                // The link's socket and `sock` are one socket: its pending error is taken here.
                clear_pending(&mut watch, &sock, || {
                    let _ = sock.take_error();
                });
                if let Err(e) = send_relayed(live, p.peer, &out[..n]) {
                    on_send_error(&mut plan, id, &e, &mut watch, &sock);
                }
            }
            Action::Wait(at) => {
                let until = (t0 + Duration::from_micros(at)).min(t0 + DEADLINE);
                wait(live, &mut plan, &sk, p.session, until, &mut watch, &sock);
            }
            Action::Done => break,
        }
    }
    let (seen, mtu) = watch.finish(&sock);
    df::restore(&sock, v6, saved);
    Some(TurnMtu {
        url: p.url.clone(),
        transport: "udp".into(),
        framing: framing.into(),
        overhead,
        ms: t0.elapsed().as_millis() as u64,
        udp: plan.result(seen, mtu),
    })
}

/// The framing the probes take and the bytes it adds (a Send indication's depend on the
/// peer's address family).
fn framing(live: &mut Live, peer: SocketAddr) -> (&'static str, u16) {
    let body = [0u8; 1200];
    if live.channel {
        let n = live.client.channel_data(CHANNEL, &body).len();
        ("channel_data", (n - body.len()) as u16)
    } else {
        let n = live.client.send_indication(peer, &body).len();
        ("send_indication", (n - body.len()) as u16)
    }
}

/// Takes what arrives until `until`: acknowledgements are verified and matched to their probe;
/// TURN housekeeping the client asks for is sent.
fn wait(
    live: &mut Live,
    plan: &mut Plan,
    sk: &SessionKey,
    session: u64,
    until: Instant,
    watch: &mut icmp::Watch,
    sock: &std::net::UdpSocket,
) {
    loop {
        let msg = match live.link.recv(until) {
            Ok(Some(m)) => m,
            Ok(None) => return,
            // An ICMP error surfaces as a socket error: read it, keep listening.
            Err(_) => {
                watch.drain(sock);
                std::thread::sleep(Duration::from_millis(1));
                if Instant::now() >= until {
                    return;
                }
                continue;
            }
        };
        match live.client.handle(Instant::now(), &msg) {
            Output::Data { data, .. } => {
                if let Ok(a) = echo::decode_mtu_ack(sk, &data) {
                    if a.session == session && plan.ack_fits(a.seq, a.request_len, a.len) {
                        plan.on_ack(a.seq);
                    }
                }
            }
            Output::Transmit(b) => {
                let _ = live.link.send(&b);
            }
            Output::Event(_) | Output::Nothing => {}
        }
    }
}
