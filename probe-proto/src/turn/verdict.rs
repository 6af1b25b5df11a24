//! Findings from the TURN check, in the troubleshooting guide's terms. Every id is in
//! `crate::catalog` (the `// --- TURN ---` group).

use super::{Cause, Reached, TurnAttempt, TurnReport, TurnTransport};
use crate::catalog::FindingId;
use crate::report::{Finding, Severity};

fn names(attempts: &[&TurnAttempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("{} ({})", a.url, a.transport.label()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn first_error(attempts: &[&TurnAttempt]) -> String {
    attempts
        .iter()
        .find_map(|a| a.error.clone())
        .unwrap_or_default()
}

/// The attempts of one report, with the views every rule below asks for.
struct Attempts<'a> {
    all: Vec<&'a TurnAttempt>,
    allocated: Vec<&'a TurnAttempt>,
}

impl<'a> Attempts<'a> {
    fn new(r: &'a TurnReport) -> Self {
        let all: Vec<&TurnAttempt> = r.attempts.iter().collect();
        let allocated = all
            .iter()
            .copied()
            .filter(|a| a.reached >= Reached::Allocated)
            .collect();
        Attempts { all, allocated }
    }

    fn by_cause(&self, c: Cause) -> Vec<&'a TurnAttempt> {
        self.all
            .iter()
            .copied()
            .filter(|a| a.cause == Some(c))
            .collect()
    }
}

/// Findings for a finished TURN check.
pub fn findings(r: &TurnReport) -> Vec<Finding> {
    let mut out: Vec<Finding> = endpoint_finding(r).into_iter().collect();
    let at = Attempts::new(r);
    if at.all.is_empty() {
        return out;
    }
    out.extend(auth_finding(r, &at));
    out.extend(allocation_findings(&at));
    out.extend(reachability_finding(&at));
    out.extend(forbids_rtcd_finding(&at));
    out.extend(refresh_finding(&at));
    out.extend(relay_private_finding(&at));
    out
}

fn endpoint_finding(r: &TurnReport) -> Option<Finding> {
    let ep = r.endpoint.as_ref().filter(|e| !e.ok)?;
    Some(Finding::new(
        FindingId::TurnCredentialsEndpointFailed,
        Severity::Error,
        format!(
            "Mattermost's TURN credentials endpoint {} failed ({}): the web app logs the error and joins calls without TURN, so users who need the relay cannot connect.",
            ep.url,
            ep.error.clone().unwrap_or_else(|| "no answer".into())
        ),
        "In the Calls plugin settings set TURNStaticAuthSecret to coturn's static-auth-secret and list the TURN servers (ICEServersConfigs) without username/credential; check that the user's token can call the plugin's API.",
    ))
}

/// Authentication: REST credentials past their expiry are their own finding.
fn auth_finding(r: &TurnReport, at: &Attempts) -> Option<Finding> {
    let auth = at.by_cause(Cause::Auth);
    if auth.is_empty() {
        return None;
    }
    let expired = r
        .credentials
        .as_ref()
        .filter(|c| c.valid_for_s.is_some_and(|s| s <= 0));
    let Some(c) = expired else {
        return Some(Finding::new(
            FindingId::TurnAuthFailed,
            Severity::Error,
            format!(
                "The TURN server refuses the credentials on {}: {}.",
                names(&auth),
                first_error(&auth)
            ),
            "Make the Calls plugin's TURNStaticAuthSecret (or RTCD's turn static_auth_secret) equal to coturn's static-auth-secret with use-auth-secret on, or fix the static username/credential; check the realm.",
        ));
    };
    let skew = c
        .clock_skew_ms
        .map(|ms| {
            format!(
                "; this computer's clock is {:+.0} s off {}",
                ms as f64 / 1000.0,
                c.skew_reference.as_deref().unwrap_or("the reference")
            )
        })
        .unwrap_or_default();
    Some(Finding::new(
        FindingId::TurnCredentialsExpired,
        Severity::Error,
        format!(
            "The TURN REST credentials expired {} s ago (username {}, expiry {}){skew}; the TURN server refuses them: {}.",
            -c.valid_for_s.unwrap_or(0),
            c.username,
            c.expires_at.as_deref().unwrap_or("?"),
            first_error(&auth)
        ),
        "Credentials are valid for TURNCredentialsExpirationMinutes (plugin default 240) from when Mattermost issued them: fix the clocks (NTP) of Mattermost, the TURN server and the client, and raise the expiration if calls outlast it.",
    ))
}

/// Allocations refused for a cause other than authentication or reachability, one finding per
/// cause, with that cause's fix.
const ALLOCATION_CAUSES: [(Cause, &str); 5] = [
    (
        Cause::Quota,
        "Raise coturn's user-quota/total-quota, or look for clients leaking allocations.",
    ),
    (
        Cause::Capacity,
        "Widen coturn's min-port..max-port relay range or add TURN capacity.",
    ),
    (Cause::Mismatch, READ_LOG_FIX),
    (Cause::Transport, READ_LOG_FIX),
    (Cause::Protocol, READ_LOG_FIX),
];
const READ_LOG_FIX: &str = "Read the TURN server's log for the refused request.";

fn allocation_findings(at: &Attempts) -> Vec<Finding> {
    let mut out = vec![];
    for (c, fix) in ALLOCATION_CAUSES {
        let hit: Vec<&TurnAttempt> = at
            .by_cause(c)
            .into_iter()
            .filter(|a| a.reached < Reached::Allocated)
            .collect();
        if hit.is_empty() {
            continue;
        }
        out.push(Finding::new(
            FindingId::TurnAllocationFailed,
            Severity::Error,
            format!(
                "The TURN server refused the allocation on {}: {}.",
                names(&hit),
                first_error(&hit)
            ),
            fix,
        ));
    }
    out
}

/// Reachability: nothing at all, only TLS, or some transports.
fn reachability_finding(at: &Attempts) -> Option<Finding> {
    let mut unreachable = at.by_cause(Cause::Unreachable);
    let tls_failed = at.by_cause(Cause::Tls);
    unreachable.extend(tls_failed.iter().copied());
    let plain: Vec<&TurnAttempt> = at
        .all
        .iter()
        .copied()
        .filter(|a| a.transport != TurnTransport::Tls)
        .collect();
    let tls_ok = at
        .allocated
        .iter()
        .any(|a| a.transport == TurnTransport::Tls);
    let plain_all_unreachable =
        !plain.is_empty() && plain.iter().all(|a| a.cause == Some(Cause::Unreachable));
    if tls_ok && plain_all_unreachable {
        return Some(Finding::new(
            FindingId::TurnOnlyTls,
            Severity::Info,
            format!(
                "Only TURN over TLS answers from here; {} did not. Relayed media then goes over TCP/TLS, with more latency and head-of-line blocking than over UDP.",
                names(&plain)
            ),
            "Fine as a fallback. For better media, allow UDP to the TURN server's port from this network.",
        ));
    }
    if unreachable.is_empty() {
        return None;
    }
    let severity = if at.allocated.is_empty() {
        Severity::Error
    } else {
        Severity::Warning
    };
    Some(Finding::new(
        FindingId::TurnUnreachable,
        severity,
        format!(
            "No answer from the TURN server on {}: {}.",
            names(&unreachable),
            first_error(&unreachable)
        ),
        if tls_failed.is_empty() {
            "Allow this network to reach the TURN server's port (UDP and TCP 3478, TLS 5349 or 443), and check the server's listening-ip/external-ip."
        } else {
            "For turns: give coturn (cert=, pkey=) a certificate chain, intermediates included, issued for the host name in the turns: URL (clients send it as SNI); and allow this network to reach the TURN server's ports."
        },
    ))
}

/// RTCD's addresses the relay refuses (coturn denied-peer-ip; plugin issue #1143): an error
/// when the relay reaches none of them, a warning when another advertised address works.
fn forbids_rtcd_finding(at: &Attempts) -> Option<Finding> {
    let mut forbidden: Vec<String> = vec![];
    let mut rtcd_permitted = false;
    for a in &at.all {
        for p in a.permissions.iter().filter(|p| p.rtcd) {
            rtcd_permitted |= p.ok;
            if p.code == Some(403) && !forbidden.contains(&p.peer) {
                forbidden.push(p.peer.clone());
            }
        }
    }
    let refresh_403 = at
        .all
        .iter()
        .any(|a| a.refresh_failures.iter().any(|f| f.contains("403")));
    if forbidden.is_empty() && !refresh_403 {
        return None;
    }
    let (severity, consequence) = if rtcd_permitted && !refresh_403 {
        (
            Severity::Warning,
            "relayed media can still use RTCD's other advertised addresses",
        )
    } else {
        (
            Severity::Error,
            "media relayed by TURN can never reach RTCD, and calls that need the relay fail or drop at refresh time",
        )
    };
    Some(Finding::new(
        FindingId::TurnForbidsRtcd,
        severity,
        format!(
            "The TURN server refuses to relay to {} (403 on CreatePermission{}): {consequence}.",
            if forbidden.is_empty() { "RTCD".to_string() } else { forbidden.join(", ") },
            if refresh_403 { ", also at refresh" } else { "" }
        ),
        "In coturn, take RTCD's address out of denied-peer-ip or add it with allowed-peer-ip (e.g. allowed-peer-ip=172.17.0.2), and make RTCD advertise an address the relay may reach (rtc.ice_host_override).",
    ))
}

/// Refreshes refused for another reason than 403: the call through this relay would drop
/// when its allocation, permission or channel runs out.
fn refresh_finding(at: &Attempts) -> Option<Finding> {
    let refresh_other: Vec<&TurnAttempt> = at
        .all
        .iter()
        .copied()
        .filter(|a| a.refresh_failures.iter().any(|f| !f.contains("403")))
        .collect();
    if refresh_other.is_empty() {
        return None;
    }
    let what = refresh_other
        .iter()
        .flat_map(|a| a.refresh_failures.iter().filter(|f| !f.contains("403")))
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    Some(Finding::new(
        FindingId::TurnAllocationFailed,
        Severity::Warning,
        format!(
            "A refresh failed during the run on {} ({what}): calls through this relay would drop when the allocation, permission or channel runs out.",
            names(&refresh_other)
        ),
        "Read the TURN server's log for the refused refresh (expired credentials, quota, a restart).",
    ))
}

/// The first public TURN server that hands out a private relay address.
fn relay_private_finding(at: &Attempts) -> Option<Finding> {
    let a = at.allocated.iter().find(|a| {
        a.relayed_private
            && a.server
                .as_deref()
                .and_then(|s| s.parse::<std::net::SocketAddr>().ok())
                .is_some_and(|s| !crate::rtcd::is_private(s.ip()))
    })?;
    Some(Finding::new(
        FindingId::TurnRelayPrivate,
        Severity::Error,
        format!(
            "The public TURN server {} hands out the private relay address {}: peers outside its network cannot send to it.",
            a.server.as_deref().unwrap_or("?"),
            a.relayed.as_deref().unwrap_or("?")
        ),
        "Set coturn's external-ip (public/private) or relay-ip so relayed addresses are public.",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn::{CredentialInfo, EndpointResult, PermissionResult};

    fn attempt(t: TurnTransport, reached: Reached, cause: Option<Cause>) -> TurnAttempt {
        let mut a = TurnAttempt::new("turn:turn.example.test:3478", t);
        a.reached = reached;
        a.cause = cause;
        a.server = Some("203.0.113.1:3478".into());
        if cause.is_some() {
            a.error = Some("no response (4 request(s) sent)".into());
        }
        a
    }

    fn ids(f: &[Finding]) -> Vec<&str> {
        f.iter().map(|f| f.id.as_str()).collect()
    }

    #[test]
    fn only_tls_is_info_and_all_blocked_is_an_error() {
        let mut r = TurnReport {
            attempts: vec![
                attempt(
                    TurnTransport::Udp,
                    Reached::Nothing,
                    Some(Cause::Unreachable),
                ),
                attempt(
                    TurnTransport::Tcp,
                    Reached::Nothing,
                    Some(Cause::Unreachable),
                ),
                attempt(TurnTransport::Tls, Reached::Echoed, None),
            ],
            ..TurnReport::default()
        };
        let f = findings(&r);
        assert_eq!(ids(&f), vec!["turn_only_tls"]);
        assert_eq!(f[0].severity, Severity::Info);
        r.attempts[2] = attempt(
            TurnTransport::Tls,
            Reached::Nothing,
            Some(Cause::Unreachable),
        );
        let f = findings(&r);
        assert_eq!(ids(&f), vec!["turn_unreachable"]);
        assert_eq!(f[0].severity, Severity::Error);
        // UDP blocked while TCP works: a warning, not "only TLS".
        r.attempts[1] = attempt(TurnTransport::Tcp, Reached::Echoed, None);
        let f = findings(&r);
        assert_eq!(ids(&f), vec!["turn_unreachable"]);
        assert_eq!(f[0].severity, Severity::Warning);
    }

    #[test]
    fn auth_failure_or_expiry() {
        let mut r = TurnReport {
            attempts: vec![attempt(
                TurnTransport::Udp,
                Reached::Nothing,
                Some(Cause::Auth),
            )],
            credentials: Some(CredentialInfo {
                kind: "rest".into(),
                username: "1000:alice".into(),
                expires_at: Some("1970-01-01T00:16:40Z".into()),
                valid_for_s: Some(3600),
                clock_skew_ms: None,
                skew_reference: None,
            }),
            ..TurnReport::default()
        };
        assert_eq!(ids(&findings(&r)), vec!["turn_auth_failed"]);
        r.credentials.as_mut().unwrap().valid_for_s = Some(-60);
        r.credentials.as_mut().unwrap().clock_skew_ms = Some(-7_200_000);
        let f = findings(&r);
        assert_eq!(ids(&f), vec!["turn_credentials_expired"]);
        assert!(
            f[0].summary.contains("expired 60 s ago"),
            "{}",
            f[0].summary
        );
        assert!(f[0].summary.contains("-7200 s"), "{}", f[0].summary);
    }

    #[test]
    fn forbidden_peer_private_relay_and_endpoint() {
        let mut a = attempt(TurnTransport::Udp, Reached::Allocated, None);
        a.permissions.push(PermissionResult {
            peer: "172.17.0.2".into(),
            rtcd: true,
            ok: false,
            code: Some(403),
            detail: Some("403 Forbidden IP".into()),
        });
        a.relayed = Some("10.0.0.5:50000".into());
        a.relayed_private = true;
        let r = TurnReport {
            attempts: vec![a],
            endpoint: Some(EndpointResult {
                url: "https://mm.example.test/plugins/com.mattermost.calls/turn-credentials".into(),
                ok: false,
                status: Some(403),
                error: Some("HTTP 403".into()),
                turn_urls: vec![],
            }),
            ..TurnReport::default()
        };
        let mut r = r;
        let f = findings(&r);
        assert_eq!(
            ids(&f),
            vec![
                "turn_credentials_endpoint_failed",
                "turn_forbids_rtcd",
                "turn_relay_private"
            ]
        );
        assert!(f[1].summary.contains("172.17.0.2"));
        assert!(f[1].fix.contains("denied-peer-ip"));
        assert_eq!(f[1].severity, Severity::Error);
        // Another advertised address is relayed to: a warning only.
        r.attempts[0].permissions.push(PermissionResult {
            peer: "203.0.113.10".into(),
            rtcd: true,
            ok: true,
            code: None,
            detail: None,
        });
        let f = findings(&r);
        assert_eq!(f[1].id, "turn_forbids_rtcd");
        assert_eq!(f[1].severity, Severity::Warning);
    }

    #[test]
    fn failed_refreshes_are_reported() {
        let mut a = attempt(TurnTransport::Tcp, Reached::Echoed, None);
        a.refresh_failures = vec!["Refresh: 401 Unauthorized".into()];
        let mut r = TurnReport {
            attempts: vec![a],
            ..TurnReport::default()
        };
        let f = findings(&r);
        assert_eq!(ids(&f), vec!["turn_allocation_failed"]);
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(f[0].summary.contains("401"), "{}", f[0].summary);
        r.attempts[0].refresh_failures = vec!["CreatePermission: 403 Forbidden IP".into()];
        let f = findings(&r);
        assert_eq!(ids(&f), vec!["turn_forbids_rtcd"]);
        assert_eq!(
            f[0].severity,
            Severity::Error,
            "forbidden at refresh: the call dies"
        );
    }

    #[test]
    fn quota_and_capacity_name_the_setting() {
        let mut a = attempt(TurnTransport::Udp, Reached::Nothing, Some(Cause::Quota));
        a.error = Some("486 Allocation Quota Reached".into());
        let r = TurnReport {
            attempts: vec![a],
            ..TurnReport::default()
        };
        let f = findings(&r);
        assert_eq!(ids(&f), vec!["turn_allocation_failed"]);
        assert!(f[0].fix.contains("user-quota"));
    }
}
