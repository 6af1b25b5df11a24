//! Verdict rules: from measured facts to findings, in the words of the Calls troubleshooting
//! guide. Pure functions, so every rule is unit-tested on constructed facts.

use crate::catalog::FindingId;
use crate::msg::Refused;
use crate::report::{Finding, Severity, TcpResult, UdpResult};

pub const LOSS_WARN_PCT: f64 = 1.0;
pub const LOSS_ERROR_PCT: f64 = 5.0;
pub const LATENCY_WARN_MS: f64 = 150.0;
pub const JITTER_WARN_MS: f64 = 30.0;

/// `Facts::server_lost` when the server stopped answering only at the final exchange of
/// counters: after the echo phases and the ICE checks.
pub const LOST_AT_COUNTERS: &str = "the final exchange of counters";

/// Everything the rules look at.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// `HOST:PORT` as the user named it.
    pub server: &'a str,
    pub port: u16,
    pub udp_tested: bool,
    pub tcp_tested: bool,
    pub udp: &'a UdpResult,
    pub tcp: &'a TcpResult,
    /// The phase in which the server stopped answering mid-run, if it did.
    pub server_lost: Option<&'a str>,
    pub refused: Option<&'a Refused>,
    /// probe-client was given `--token` (or PROBE_TOKEN), so every probe was signed with it
    /// (false for the test page and live mode, whose probes carry none).
    pub token_given: bool,
}

pub fn evaluate(f: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    out.extend(f.refused.map(refused));
    reachability(&mut out, f);
    out.extend(f.server_lost.map(server_lost));
    quality(&mut out, f);
    out
}

/// The fix for a port nothing (or only one transport) reaches: every hop that may drop it.
fn firewall_fix(port: u16) -> String {
    format!(
        "Open inbound UDP {port} (and TCP {port} for TCP fallback) from client networks at every hop: the RTCD host's \
         firewall (`sudo iptables -L -n` / `nft list ruleset`), cloud security groups or network ACLs, load balancers \
         (they must forward UDP) and corporate firewalls."
    )
}

fn refused(r: &Refused) -> Finding {
    let limit = r
        .limit
        .as_deref()
        .map(|l| format!(" (limit {l})"))
        .unwrap_or_default();
    Finding::new(
        FindingId::ServerRefused,
        Severity::Error,
        format!("The probe server refused the test: {}{limit}.", r.reason),
        "Run with fewer packets or a shorter --duration, or ask the admin to raise that probe-server limit.",
    )
}

/// Whether the server answered at all, and if so whether one transport is blocked while the
/// other works (only judged when both were tested).
fn reachability(out: &mut Vec<Finding>, f: &Facts) {
    let port = f.port;
    let any_reachable = (f.udp_tested && f.udp.reachable) || (f.tcp_tested && f.tcp.reachable);
    if !any_reachable && (f.udp_tested || f.tcp_tested) {
        out.push(unreachable(f));
        return;
    }
    if f.udp_tested && f.tcp_tested && !f.udp.reachable && f.tcp.reachable {
        // TCP answered on the same port, so the server runs: a refusal is a firewall's reject.
        let what = if f.udp.refused {
            "was refused (\"port unreachable\": a firewall's reject rule, a container port published for TCP \
             only, or a server bound to other addresses than the one dialled)"
        } else {
            "got no answer"
        };
        out.push(Finding::new(
            FindingId::UdpBlocked,
            Severity::Error,
            format!(
                "UDP to port {port} {what} while TCP did answer: media will be forced onto TCP fallback \
                 (RTCD v0.11+ and Calls v0.17+) or fail with \"timed out waiting for rtc connection\"."
            ),
            format!(
                "{} A Cloudflare tunnel or an HTTP-only proxy carries no UDP: RTCD's ICE address must be \
                 reachable directly over UDP.",
                firewall_fix(port)
            ),
        ));
    }
    if f.udp_tested && f.tcp_tested && f.udp.reachable && !f.tcp.reachable {
        let what = if f.tcp.refused {
            "was refused (nothing listens on TCP there, or a firewall rejects it)"
        } else {
            "got no answer"
        };
        out.push(Finding::new(
            FindingId::TcpBlocked,
            Severity::Warning,
            format!(
                "TCP to port {port} {what} while UDP works: users on networks that block UDP cannot use \
                 TCP fallback."
            ),
            format!(
                "Open inbound TCP {port} from client networks (security groups, host firewall, load balancer), \
                 and keep RTCD's `rtc.ice_port_tcp` on that port."
            ),
        ));
    }
}

/// Nothing answered. A TCP connect that succeeded means something holds the port but did not
/// speak the probe: most likely a missing `--token`, or a wrong one when one was given.
fn unreachable(f: &Facts) -> Finding {
    // Only what was tried: `--no-tcp`, or the test page in live mode (RTCD holds TCP).
    let over = match (f.udp_tested, f.tcp_tested) {
        (true, false) => "UDP",
        (false, true) => "TCP",
        _ => "UDP or TCP",
    };
    let what = if any_refused(f) {
        refusal(f)
    } else {
        format!("Nothing answered on {} over {over}", f.server)
    };
    // With one transport not tested, the other's failure says less than "calls fail".
    let consequence = match (f.udp_tested, f.tcp_tested) {
        (false, true) => {
            "UDP was not tested (--no-udp), so this says only that calls from this network have \
             no TCP fallback"
        }
        (true, false) => {
            "TCP was not tested, so this says only that media cannot reach the server over UDP \
             from this network: calls would depend on TCP fallback"
        }
        // Something accepted TCP: the port is not closed on the way, the listener is not a
        // probe-server this client can use (RTCD itself, or one wanting another token).
        _ if f.tcp.connect_ms.is_some() => {
            "TCP connected, so something listens there, but no probe-server this client can use: \
             the path itself was not judged"
        }
        _ => {
            "calls from this network cannot connect (browsers log \"timed out waiting for rtc \
             connection\")"
        }
    };
    Finding::new(
        FindingId::ServerUnreachable,
        Severity::Error,
        format!("{what}: {consequence}."),
        unreachable_fix(f),
    )
}

/// "H refused UDP and TCP", "H refused TCP, and UDP got no answer".
fn refusal(f: &Facts) -> String {
    let refused: Vec<&str> = [
        (f.udp_tested && f.udp.refused, "UDP"),
        (f.tcp_tested && f.tcp.refused, "TCP"),
    ]
    .into_iter()
    .filter_map(|(r, name)| r.then_some(name))
    .collect();
    let silent: Vec<&str> = [
        (f.udp_tested && !f.udp.refused, "UDP"),
        (f.tcp_tested && !f.tcp.refused, "TCP"),
    ]
    .into_iter()
    .filter_map(|(s, name)| s.then_some(name))
    .collect();
    let mut out = format!("{} refused {}", f.server, refused.join(" and "));
    if !silent.is_empty() {
        out.push_str(&format!(", and {} got no answer", silent.join(" and ")));
    }
    out
}

/// A tested transport drew a refusal (a TCP reset, an ICMP unreachable): the host, or a
/// firewall rejecting the port, answered instead of staying silent.
fn any_refused(f: &Facts) -> bool {
    (f.udp_tested && f.udp.refused) || (f.tcp_tested && f.tcp.refused)
}

fn unreachable_fix(f: &Facts) -> String {
    let firewall = firewall_fix(f.port);
    match (f.tcp.connect_ms.is_some(), f.token_given) {
        // A probe-server with --token stays silent to a probe signed with another token, and one
        // without --token answers signed probes too (session.rs `Core::stun`): so the token is
        // wrong, or the port is not probe-server's. TCP got through: no firewall advice.
        (true, true) => "TCP connected, but the server ignored the probe signed with the token given: the token \
             is wrong, or something other than probe-server holds the port (RTCD itself answers only calls: \
             test it with probe-server live, or stop it and run probe-server there); ask the admin for the \
             current token."
            .into(),
        (true, false) => "TCP connected, but nothing answered the probe: something other than probe-server holds \
             the port (RTCD itself answers only calls: test it with probe-server live, or stop it and run \
             probe-server there), or probe-server runs with --token: then run again with --token (or PROBE_TOKEN)."
            .into(),
        // A refusal comes from the host itself (or a firewall's reject rule): the address is
        // right and routed, so first suspect that nothing listens on the port.
        (false, _) if any_refused(f) => format!(
            "The host (or a firewall on the way) refused port {port}. Either nothing listens there: start \
             probe-server, or check that RTCD runs and listens on {port} (`ss -lunpt 'sport = :{port}'` on its \
             host) and that you dialled the right port. Or a firewall rejects it: {firewall}",
            port = f.port
        ),
        (false, _) => {
            format!("Check that probe-server (or RTCD) is running on that host and port. {firewall}")
        }
    }
}

fn server_lost(phase: &str) -> Finding {
    Finding::new(
        FindingId::ServerLost,
        Severity::Error,
        format!("The server stopped answering during {phase}; the figures above are partial."),
        "Check whether probe-server (or the host) restarted or a firewall cut the flow mid-call, then run again.",
    )
}

/// Call quality from the echo figures: UDP's when UDP answered (loss, latency, jitter), else
/// TCP's latency alone (TCP retransmits, so it shows no loss and its jitter is not media's).
fn quality(out: &mut Vec<Finding>, f: &Facts) {
    if let Some(e) = f.udp.echo.as_ref().filter(|_| f.udp.reachable) {
        loss(out, e.loss_up_pct, e.loss_down_pct);
        if let Some(r) = &e.rtt_ms {
            if r.p95 >= LATENCY_WARN_MS {
                out.push(Finding::new(
                    FindingId::HighLatency,
                    Severity::Warning,
                    format!("Round-trip time is high: p95 {:.0} ms (calls feel laggy from {LATENCY_WARN_MS:.0} ms).", r.p95),
                    "Check the path between this network and RTCD (VPN hairpins, distant region); consider an RTCD \
                     closer to users.",
                ));
            }
        }
        if e.jitter_ms >= JITTER_WARN_MS {
            out.push(Finding::new(
                FindingId::HighJitter,
                Severity::Warning,
                format!("Jitter is {:.1} ms (audio turns choppy from {JITTER_WARN_MS:.0} ms).", e.jitter_ms),
                "Look for congestion on this network (Wi-Fi, uplink saturation) and prioritise real-time traffic with QoS.",
            ));
        }
    } else if let Some(r) = f.tcp.echo.as_ref().and_then(|e| e.rtt_ms) {
        if r.p95 >= LATENCY_WARN_MS {
            out.push(Finding::new(
                FindingId::HighLatency,
                Severity::Warning,
                format!("Round-trip time over TCP is high: p95 {:.0} ms.", r.p95),
                "Check the path between this network and RTCD; TCP fallback adds delay under loss.",
            ));
        }
    }
}

fn loss(out: &mut Vec<Finding>, up: Option<f64>, down: Option<f64>) {
    let dirs = [
        ("client → server (upstream)", up),
        ("server → client (downstream)", down),
    ];
    let worst = dirs.iter().filter_map(|(_, v)| *v).fold(0.0, f64::max);
    if worst < LOSS_WARN_PCT {
        return;
    }
    let severity = if worst >= LOSS_ERROR_PCT {
        Severity::Error
    } else {
        Severity::Warning
    };
    let parts: Vec<String> = dirs
        .iter()
        .filter_map(|(name, v)| {
            v.filter(|p| *p >= LOSS_WARN_PCT)
                .map(|p| format!("{p:.1} % {name}"))
        })
        .collect();
    out.push(Finding::new(
        FindingId::PacketLoss,
        severity,
        format!("UDP packet loss: {} (audio degrades from 1 %, breaks up from 5 %).", parts.join(", ")),
        "Check for congestion or a lossy link on that direction of the path (Wi-Fi, VPN, saturated uplink); on the RTCD \
         host check `netstat -su` for receive errors and the socket buffers (net.core.rmem_max = 16777216).",
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{EchoSummary, RttSummary};

    fn echo(up: f64, down: f64, p95: f64, jitter: f64) -> EchoSummary {
        EchoSummary {
            sent: 100,
            received: 100,
            loss_up_pct: Some(up),
            loss_down_pct: Some(down),
            rtt_ms: Some(RttSummary {
                min: 1.0,
                p50: 2.0,
                p95,
                p99: p95,
                max: p95,
            }),
            jitter_ms: jitter,
            reordered: 0,
            duplicates: 0,
        }
    }

    fn ids(udp: &UdpResult, tcp: &TcpResult) -> Vec<(String, Severity)> {
        judged(udp, tcp)
            .into_iter()
            .map(|f| (f.id, f.severity))
            .collect()
    }

    fn up(e: Option<EchoSummary>) -> UdpResult {
        UdpResult {
            reachable: true,
            echo: e,
            ..Default::default()
        }
    }

    fn tcp_up() -> TcpResult {
        TcpResult {
            reachable: true,
            ..Default::default()
        }
    }

    #[test]
    fn clean_path_has_no_findings() {
        assert!(ids(&up(Some(echo(0.0, 0.0, 20.0, 1.0))), &tcp_up()).is_empty());
    }

    #[test]
    fn reachability_rules() {
        let down = UdpResult::default();
        assert_eq!(
            ids(&down, &TcpResult::default()),
            vec![("server_unreachable".into(), Severity::Error)]
        );
        assert_eq!(
            ids(&down, &tcp_up()),
            vec![("udp_blocked".into(), Severity::Error)]
        );
        assert_eq!(
            ids(&up(None), &TcpResult::default()),
            vec![("tcp_blocked".into(), Severity::Warning)]
        );
    }

    fn judged(udp: &UdpResult, tcp: &TcpResult) -> Vec<Finding> {
        evaluate(&Facts {
            server: "rtcd.example:8443",
            port: 8443,
            udp_tested: true,
            tcp_tested: true,
            udp,
            tcp,
            server_lost: None,
            refused: None,
            token_given: false,
        })
    }

    #[test]
    fn a_refusal_says_nothing_listens_and_silence_does_not() {
        let refused_udp = UdpResult {
            refused: true,
            ..Default::default()
        };
        let refused_tcp = TcpResult {
            refused: true,
            ..Default::default()
        };
        // Either transport refused: the host answered, so first suspect nothing listens.
        for (udp, tcp) in [
            (&refused_udp, &refused_tcp),
            (&UdpResult::default(), &refused_tcp),
            (&refused_udp, &TcpResult::default()),
        ] {
            let f = judged(udp, tcp);
            assert_eq!(f.len(), 1);
            assert!(f[0].is(FindingId::ServerUnreachable));
            assert!(
                f[0].summary.starts_with("rtcd.example:8443 refused "),
                "{}",
                f[0].summary
            );
            assert!(
                f[0].fix.starts_with(
                    "The host (or a firewall on the way) refused port 8443. Either nothing listens"
                ),
                "{}",
                f[0].fix
            );
            assert!(f[0].fix.contains("sport = :8443"), "{}", f[0].fix);
        }
        let says = |udp, tcp| {
            judged(udp, tcp)[0]
                .summary
                .split(": calls")
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            says(&refused_udp, &refused_tcp),
            "rtcd.example:8443 refused UDP and TCP"
        );
        assert_eq!(
            says(&UdpResult::default(), &refused_tcp),
            "rtcd.example:8443 refused TCP, and UDP got no answer"
        );
        let silent = judged(&UdpResult::default(), &TcpResult::default());
        assert!(
            silent[0].summary.starts_with("Nothing answered on"),
            "{}",
            silent[0].summary
        );
        assert!(
            !silent[0].fix.contains("nothing listens"),
            "{}",
            silent[0].fix
        );
        // One transport answered: the server runs, the refusal is the other's firewall.
        let f = judged(&refused_udp, &tcp_up());
        assert!(f[0].is(FindingId::UdpBlocked));
        assert!(f[0].summary.contains("was refused"), "{}", f[0].summary);
        let f = judged(&UdpResult::default(), &tcp_up());
        assert!(f[0].summary.contains("got no answer"), "{}", f[0].summary);
        let f = judged(&up(None), &refused_tcp);
        assert!(f[0].is(FindingId::TcpBlocked));
        assert!(f[0].summary.contains("was refused"), "{}", f[0].summary);
    }

    #[test]
    fn a_refusal_on_an_untested_transport_is_not_judged() {
        let refused_udp = UdpResult {
            refused: true,
            ..Default::default()
        };
        let f = evaluate(&Facts {
            server: "h:1",
            port: 1,
            udp_tested: false,
            tcp_tested: true,
            udp: &refused_udp,
            tcp: &TcpResult::default(),
            server_lost: None,
            refused: None,
            token_given: false,
        });
        assert!(
            f[0].summary.starts_with("Nothing answered on h:1 over TCP"),
            "{}",
            f[0].summary
        );
        assert!(
            f[0].summary.contains("UDP was not tested (--no-udp)"),
            "{}",
            f[0].summary
        );
        assert!(!f[0].summary.contains("cannot connect"), "{}", f[0].summary);
    }

    #[test]
    fn a_silent_but_connecting_port_suggests_the_token() {
        let udp = UdpResult::default();
        let tcp = TcpResult {
            connect_ms: Some(1.0),
            ..Default::default()
        };
        let f = Facts {
            server: "h:1",
            port: 1,
            udp_tested: true,
            tcp_tested: true,
            udp: &udp,
            tcp: &tcp,
            server_lost: None,
            refused: None,
            token_given: false,
        };
        let found = evaluate(&f);
        assert_eq!(found[0].id, "server_unreachable");
        assert!(found[0].fix.contains("--token"), "{}", found[0].fix);
        let closed = TcpResult::default();
        let f = Facts { tcp: &closed, ..f };
        assert!(!evaluate(&f)[0].fix.contains("--token"));
    }

    /// The advice for a silent port, by whether TCP connected and whether a token was given.
    #[test]
    fn a_silent_port_gets_advice_for_the_token_that_was_given() {
        let udp = UdpResult::default();
        let connected = TcpResult {
            connect_ms: Some(1.0),
            ..Default::default()
        };
        let closed = TcpResult::default();
        // (TCP, token given, the fix has: token is wrong, "run again with --token", firewall)
        let table = [
            (&connected, true, (true, false, false)),
            // TCP connected: no firewall advice; RTCD (or another service) holds the port.
            (&connected, false, (false, true, false)),
            (&closed, true, (false, false, true)),
            (&closed, false, (false, false, true)),
        ];
        for (tcp, token, want) in table {
            let f = Facts {
                server: "h:1",
                port: 1,
                udp_tested: true,
                tcp_tested: true,
                udp: &udp,
                tcp,
                server_lost: None,
                refused: None,
                token_given: token,
            };
            let found = evaluate(&f);
            assert_eq!(found.len(), 1);
            assert!(found[0].is(FindingId::ServerUnreachable));
            let fix = &found[0].fix;
            let got = (
                fix.contains("the token is wrong")
                    && fix.contains("ask the admin for the current token"),
                fix.contains("run again with --token"),
                fix.contains("Open inbound UDP"),
            );
            assert_eq!(got, want, "tcp {:?} token {token}: {fix}", tcp.connect_ms);
        }
    }

    #[test]
    fn loss_thresholds_and_direction() {
        assert!(ids(&up(Some(echo(0.9, 0.0, 1.0, 0.0))), &tcp_up()).is_empty());
        assert_eq!(
            ids(&up(Some(echo(1.0, 0.0, 1.0, 0.0))), &tcp_up()),
            vec![("packet_loss".into(), Severity::Warning)]
        );
        assert_eq!(
            ids(&up(Some(echo(0.0, 5.0, 1.0, 0.0))), &tcp_up()),
            vec![("packet_loss".into(), Severity::Error)]
        );
        let udp = up(Some(echo(0.0, 10.0, 1.0, 0.0)));
        let tcp = tcp_up();
        let f = Facts {
            server: "h:1",
            port: 1,
            udp_tested: true,
            tcp_tested: true,
            udp: &udp,
            tcp: &tcp,
            server_lost: None,
            refused: None,
            token_given: false,
        };
        let s = &evaluate(&f)[0].summary;
        assert!(s.contains("downstream") && !s.contains("upstream"), "{s}");
    }

    #[test]
    fn latency_and_jitter() {
        assert_eq!(
            ids(&up(Some(echo(0.0, 0.0, 150.0, 30.0))), &tcp_up()),
            vec![
                ("high_latency".into(), Severity::Warning),
                ("high_jitter".into(), Severity::Warning)
            ]
        );
    }

    #[test]
    fn only_tested_transports_count() {
        let udp = UdpResult::default();
        let tcp = tcp_up();
        let f = Facts {
            server: "h:1",
            port: 1,
            udp_tested: false,
            tcp_tested: true,
            udp: &udp,
            tcp: &tcp,
            server_lost: Some("the UDP echo phase"),
            refused: None,
            token_given: false,
        };
        let got: Vec<String> = evaluate(&f).into_iter().map(|f| f.id).collect();
        assert_eq!(got, vec!["server_lost".to_string()]);
    }
}
