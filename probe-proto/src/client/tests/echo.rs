use crate::client::echo::{grace_us, EchoCore, EchoOutcome};
use crate::client::schedule::Schedule;
use crate::echo::{self as wire, SessionKey};
use crate::frame;
use crate::msg::Profile;
use std::collections::BTreeMap;

const SESSION: u64 = 0x5e55_1011;
const MS: u64 = 1_000;

fn key() -> SessionKey {
    SessionKey::new(&[7; 32])
}

/// Audio: one 160-byte packet every 20 ms for 100 ms, so five packets at 0, 20, … 80 ms.
fn audio() -> Schedule {
    Schedule::new(Profile::Audio, None, None, 0.1)
}

fn core(schedule: Schedule) -> EchoCore {
    EchoCore::new(SESSION, key(), schedule, 0)
}

/// The server's answer to a request, as `session::Core` writes it.
fn answer(key: &SessionKey, req: &[u8], at_us: u64) -> Vec<u8> {
    wire::verify_request(key, req).expect("the core signs its requests");
    let mut out = vec![0u8; req.len()];
    // No hold time at the server, so RTTs are exactly the delays below.
    let n = wire::encode_reply(key, req, at_us, at_us, &mut out);
    out.truncate(n);
    out
}

/// The network: for a request (seq, bytes) sent at `t`, the (arrival time, bytes) it causes.
type Net<'a> = dyn FnMut(u32, u64, &[u8]) -> Vec<(u64, Vec<u8>)> + 'a;

/// What a shell does, with time jumping to the next event. Returns when the core finished.
fn drive(core: &mut EchoCore, net: &mut Net) -> u64 {
    let mut inbox: BTreeMap<(u64, usize), Vec<u8>> = BTreeMap::new();
    let mut now = 0;
    loop {
        while let Some(t) = core.poll_transmit(now) {
            let (seq, bytes) = (t.seq, t.bytes.to_vec());
            for (at, reply) in net(seq, now, &bytes) {
                let n = inbox.len();
                inbox.insert((at, n), reply);
            }
        }
        let Some(timer) = core.poll_timeout() else {
            return now;
        };
        match inbox.first_key_value().map(|(k, _)| *k) {
            Some(k) if k.0 <= timer => {
                let reply = inbox.remove(&k).expect("just seen");
                now = now.max(k.0);
                core.on_reply(now, &reply);
            }
            _ => {
                now = now.max(timer);
                core.handle_timeout(now);
            }
        }
    }
}

/// Every request answered after `rtt_ms`.
fn echo_after(rtt_ms: u64) -> impl FnMut(u32, u64, &[u8]) -> Vec<(u64, Vec<u8>)> {
    move |_, t, req| vec![(t + rtt_ms * MS, answer(&key(), req, t))]
}

#[test]
fn replies_in_order_wait_out_the_grace_period() {
    let mut c = core(audio());
    let sends = std::cell::RefCell::new(Vec::new());
    let end = drive(&mut c, &mut |seq, t, req| {
        sends.borrow_mut().push((seq, t, req.len()));
        echo_after(10)(seq, t, req)
    });
    let sends = sends.into_inner();
    assert_eq!(
        sends,
        (0..5)
            .map(|i| (i, u64::from(i) * 20 * MS, 160))
            .collect::<Vec<_>>()
    );
    // The last tick at 100 ms ends sending; every reply was in before, so the core waits the
    // minimum grace (300 ms) for stragglers, as the shells did.
    assert_eq!(end, 400 * MS);
    let o = c.finish();
    assert_eq!((o.stats.sent(), o.stats.received()), (5, 5));
    assert_eq!((o.stats.duplicates(), o.stats.reordered()), (0, 0));
    assert_eq!(o.sending_ended_us, 100 * MS);
    assert_eq!(o.last_reply_us, Some(90 * MS));
    assert!(!o.stopped_midway());
    let s = o.stats.summary(Some(5), Some(5));
    assert_eq!(s.loss_up_pct, Some(0.0));
    assert_eq!(s.rtt_ms.expect("replies").p50, 10.0);
}

#[test]
fn lost_replies_are_loss() {
    let mut c = core(audio());
    drive(&mut c, &mut |seq, t, req| {
        if seq == 1 || seq == 3 {
            vec![]
        } else {
            echo_after(10)(seq, t, req)
        }
    });
    let o = c.finish();
    assert_eq!((o.stats.sent(), o.stats.received()), (5, 3));
    // The server saw all five and answered all five: two lost on the way down.
    let s = o.stats.summary(Some(5), Some(5));
    assert_eq!((s.loss_up_pct, s.loss_down_pct), (Some(0.0), Some(40.0)));
}

#[test]
fn duplicated_replies_count_once() {
    let mut c = core(audio());
    drive(&mut c, &mut |_, t, req| {
        let r = answer(&key(), req, t);
        vec![(t + 10 * MS, r.clone()), (t + 11 * MS, r)]
    });
    let o = c.finish();
    assert_eq!((o.stats.received(), o.stats.duplicates()), (5, 5));
}

#[test]
fn reordered_replies_are_counted() {
    let mut c = core(audio());
    drive(&mut c, &mut |seq, t, req| {
        // seq 1 overtaken by seq 2 and 3.
        let delay = if seq == 1 { 55 } else { 10 };
        vec![(t + delay * MS, answer(&key(), req, t))]
    });
    let o = c.finish();
    assert_eq!((o.stats.received(), o.stats.reordered()), (5, 1));
}

#[test]
fn the_last_reply_during_the_grace_period_ends_it() {
    let mut c = core(audio());
    // 70 ms RTT: replies to 40 and 80 ms arrive after sending ended at 100 ms.
    let end = drive(&mut c, &mut echo_after(70));
    assert_eq!(end, 150 * MS, "ends with the reply to the last request");
    assert!(c.is_done());
    assert_eq!(c.finish().stats.received(), 5);
}

#[test]
fn replies_after_the_grace_period_are_dropped() {
    let mut c = core(audio());
    let end = drive(&mut c, &mut |seq, t, req| {
        // 10 ms RTT sets the grace to its 300 ms floor; seq 4 (sent at 80 ms) comes back at
        // 480 ms, after the deadline at 400 ms.
        let rtt = if seq == 4 { 400 } else { 10 };
        vec![(t + rtt * MS, answer(&key(), req, t))]
    });
    assert_eq!(end, 400 * MS);
    c.on_reply(480 * MS, &answer(&key(), &request(4, 80 * MS), 80 * MS));
    assert_eq!(c.late(), 1);
    assert_eq!(c.finish().stats.received(), 4);
}

fn request(seq: u32, t: u64) -> Vec<u8> {
    let mut b = vec![0u8; 160];
    let n = wire::encode_request(&key(), SESSION, seq, t, 160, &mut b);
    b.truncate(n);
    b
}

#[test]
fn a_reply_arriving_at_the_deadline_is_late() {
    let mut c = core(audio());
    let mut now = 0;
    while c.stats().sent() < 5 {
        while c.poll_transmit(now).is_some() {}
        now += 20 * MS;
    }
    c.handle_timeout(now);
    assert_eq!(
        c.poll_timeout(),
        Some(400 * MS),
        "100 ms + the 300 ms floor"
    );
    // Delivered before the shell noticed the deadline: still too late.
    c.on_reply(400 * MS, &answer(&key(), &request(4, 80 * MS), 80 * MS));
    assert_eq!((c.late(), c.stats().received()), (1, 0));
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn the_grace_period_follows_the_worst_rtt() {
    assert_eq!(grace_us(0), 300_000);
    assert_eq!(grace_us(100_000), 400_000);
    assert_eq!(grace_us(10_000_000), 1_000_000);
    // 300 ms of sending; only seq 0 comes back, after 150 ms: the wait after the end of
    // sending (300 ms) is 2 × 150 + 200 = 500 ms.
    let mut c = core(Schedule::new(Profile::Audio, None, None, 0.3));
    let end = drive(&mut c, &mut |seq, t, req| {
        if seq == 0 {
            echo_after(150)(seq, t, req)
        } else {
            vec![]
        }
    });
    assert_eq!(end, 800 * MS);
    // Replies still in flight when sending ends: the last one ends the wait early.
    let mut c = core(audio());
    let end = drive(&mut c, &mut echo_after(150));
    assert_eq!(end, 230 * MS);
    assert_eq!(c.stats().received(), 5);
}

#[test]
fn malformed_and_foreign_datagrams_are_counted_and_dropped() {
    let mut c = core(audio());
    let req = c
        .poll_transmit(0)
        .expect("first burst is due at once")
        .bytes
        .to_vec();
    c.on_reply(MS, b"not an echo packet");
    c.on_reply(MS, &req); // our own request reflected: not a reply
    c.on_reply(
        MS,
        &answer(
            &SessionKey::new(&[8; 32]),
            &req_with(&SessionKey::new(&[8; 32]), SESSION),
            0,
        ),
    );
    c.on_reply(MS, &answer(&key(), &req_with(&key(), SESSION + 1), 0));
    let mut tampered = answer(&key(), &req, 0);
    tampered[30] ^= 1;
    c.on_reply(MS, &tampered);
    assert_eq!((c.malformed(), c.foreign()), (4, 1));
    assert_eq!(c.stats().received(), 0);
    assert_eq!(c.stats().bogus(), 0, "dropped before the statistics");
    c.on_reply(2 * MS, &answer(&key(), &req, 0));
    assert_eq!(c.stats().received(), 1);
}

fn req_with(key: &SessionKey, session: u64) -> Vec<u8> {
    let mut b = vec![0u8; 100];
    let n = wire::encode_request(key, session, 0, 0, 100, &mut b);
    b.truncate(n);
    b
}

#[test]
fn video_bursts_leave_together_and_late_ticks_push_the_schedule_back() {
    let s = Schedule::new(Profile::Video, Some(30.0), None, 1.0);
    let mut c = core(s);
    let sizes: Vec<(u32, usize)> =
        std::iter::from_fn(|| c.poll_transmit(0).map(|t| (t.seq, t.bytes.len()))).collect();
    assert_eq!(
        sizes,
        vec![
            (0, 1200),
            (1, 1200),
            (2, 1200),
            (3, 1200),
            (4, 1200),
            (5, 250)
        ]
    );
    assert_eq!(c.poll_timeout(), Some(30 * MS));
    assert!(c.poll_transmit(29 * MS).is_none());
    // Served 4 ms late: still on the grid.
    assert_eq!(
        std::iter::from_fn(|| c.poll_transmit(34 * MS).map(|_| ())).count(),
        6
    );
    assert_eq!(c.poll_timeout(), Some(60 * MS));
    // Served 25 ms late: no catch-up burst, the next tick is a full interval later.
    assert_eq!(
        std::iter::from_fn(|| c.poll_transmit(85 * MS).map(|_| ())).count(),
        6
    );
    assert_eq!(c.poll_timeout(), Some(115 * MS));
    assert!(c.poll_transmit(100 * MS).is_none());
    assert_eq!(c.stats().sent(), 18);
}

#[test]
fn sizes_and_interval_follow_the_overrides() {
    let s = Schedule::new(Profile::Audio, Some(5.0), Some(1000), 0.2);
    assert_eq!((s.mean_interval_us(), s.max_size()), (5_000, 1000));
    let v = Schedule::new(Profile::Video, None, None, 5.0);
    assert_eq!((v.mean_interval_us(), v.max_size()), (5_555, 1200));
    let mut c = core(s);
    assert_eq!(c.poll_transmit(0).map(|t| t.bytes.len()), Some(1000));
    let mut c = core(audio());
    drive(&mut c, &mut echo_after(1));
    assert_eq!(c.stats().sent(), 5);
}

#[test]
fn a_broken_connection_ends_the_phase() {
    let mut c = core(audio());
    assert!(c.poll_transmit(0).is_some());
    c.on_broken(5 * MS, "reset".into());
    assert!(c.is_done() && c.poll_timeout().is_none());
    assert!(c.poll_transmit(20 * MS).is_none());
    let o = c.finish();
    assert_eq!(
        (o.broken.as_deref(), o.sending_ended_us),
        (Some("reset"), 5 * MS)
    );
    assert!(o.stopped_midway());
    assert!(EchoOutcome::failed("refused".into()).stopped_midway());
}

#[test]
fn replies_that_stop_early_mean_the_server_went_away() {
    let long = Schedule::new(Profile::Audio, None, None, 3.0);
    let mut c = core(long.clone());
    drive(&mut c, &mut |seq, t, req| {
        if t < 500 * MS {
            echo_after(10)(seq, t, req)
        } else {
            vec![]
        }
    });
    assert!(c.finish().stopped_midway());
    let mut c = core(long);
    drive(&mut c, &mut |seq, t, req| {
        if t < 2_500 * MS {
            echo_after(10)(seq, t, req)
        } else {
            vec![]
        }
    });
    assert!(
        !c.finish().stopped_midway(),
        "a gap under a second is loss, not a dead server"
    );
}

#[test]
fn a_blocked_write_never_waits_past_the_phase() {
    let c = EchoCore::new(SESSION, key(), audio(), 1_000 * MS);
    assert_eq!(c.write_deadline_us(1_000 * MS), 2_100 * MS);
    assert_eq!(c.write_deadline_us(2_050 * MS), 2_150 * MS);
    assert_eq!(
        c.progress("UDP", 1_050 * MS),
        "UDP echo 0.1/0 s  sent 0  received 0"
    );
}

/// UDP hands the core datagrams; TCP hands it the payloads of RFC 4571 frames from a byte
/// stream cut anywhere. Same traffic, same core, same result.
#[test]
fn tcp_and_udp_drive_the_same_core_alike() {
    let net = |seq: u32, t: u64, req: &[u8]| {
        if seq == 2 {
            return vec![];
        }
        let r = answer(&key(), req, t);
        let mut out = vec![(t + (10 + u64::from(seq % 3)) * MS, r.clone())];
        if seq == 3 {
            out.push((t + 12 * MS, r));
        }
        out
    };
    let mut udp = core(audio());
    let udp_end = drive(&mut udp, &mut net.clone());
    let mut tcp = core(audio());
    let mut dec = frame::Decoder::new();
    let tcp_end = drive(&mut tcp, &mut |seq, t, req| {
        // Frame the request as the TCP driver does and check it survives a stream.
        let mut d = frame::Decoder::new();
        let framed = frame::encode(req);
        for chunk in framed.chunks(7) {
            d.push(chunk);
        }
        let req = d.next_frame().expect("one frame").expect("whole").to_vec();
        net(seq, t, &req)
            .into_iter()
            .map(|(at, r)| {
                let stream = frame::encode(&r);
                let (a, b) = stream.split_at(3);
                dec.push(a);
                assert_eq!(dec.next_frame(), Ok(None), "a cut frame waits for the rest");
                dec.push(b);
                (at, dec.next_frame().expect("ok").expect("whole").to_vec())
            })
            .collect()
    });
    assert_eq!(udp_end, tcp_end);
    let (u, t) = (udp.finish(), tcp.finish());
    assert_eq!(
        u.stats.summary(Some(5), Some(5)),
        t.stats.summary(Some(5), Some(5))
    );
    assert_eq!((u.stats.received(), u.stats.duplicates()), (4, 1));
}

#[test]
fn the_quiet_period_sends_nothing_and_the_phase_lasts_that_much_longer() {
    let mut c = core(audio()).with_quiet(40 * MS, 200 * MS);
    let sends = std::cell::RefCell::new(Vec::new());
    drive(&mut c, &mut |seq, t, req| {
        sends.borrow_mut().push(t);
        echo_after(10)(seq, t, req)
    });
    // The schedule's five packets, two before the pause and three after it.
    assert_eq!(sends.into_inner(), [0, 20, 240, 260, 280].map(|ms| ms * MS));
    let o = c.finish();
    assert_eq!(o.planned_us, 300 * MS);
    assert_eq!(o.sending_ended_us, 300 * MS);
    let w = o.quiet.expect("the window is reported");
    assert_eq!((w.from_us, w.until_us), (40 * MS, 240 * MS));
    let tl = o.stats.timeline();
    assert_eq!(tl.len(), 5);
    assert!(tl.iter().all(|s| s.answered));
}
