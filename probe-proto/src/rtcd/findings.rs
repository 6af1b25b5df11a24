//! Findings about RTCD's candidate computation that the doctor (on RTCD's host) and the client
//! (from the server's welcome) both raise, worded once.

use std::net::IpAddr;

use super::candidates::FilterIgnores;
use super::pion::PionRules;
use crate::catalog::FindingId;
use crate::report::{Finding, Severity};

/// `ice_address_udp = "…"` and/or `ice_address_tcp = "…"`, as set.
fn filter_text(udp: &str, tcp: &str) -> String {
    let mut parts = Vec::new();
    if !udp.is_empty() {
        parts.push(format!("ice_address_udp = \"{udp}\""));
    }
    if !tcp.is_empty() {
        parts.push(format!("ice_address_tcp = \"{tcp}\""));
    }
    if parts.is_empty() {
        "ice_address_udp/ice_address_tcp".into()
    } else {
        parts.join(" and ")
    }
}

pub(crate) fn addr_list(a: &[IpAddr]) -> String {
    if a.is_empty() {
        "no address".into()
    } else {
        a.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `ice_address_ignores_override`: the `ice_address_*` filter keeps none of the host's IPs, so
/// RTCD drops the override or STUN (rtcd server.go:109-122, utils.go:84-87). Raised by the
/// caller only when it matters: the address the override or STUN would give is not advertised.
/// `where_` names RTCD's config for the fix.
pub fn address_ignores_override(
    ignores: FilterIgnores,
    override_value: &str,
    ice_address_udp: &str,
    ice_address_tcp: &str,
    advertised_udp: &[IpAddr],
    where_: &str,
    severity: Severity,
) -> Finding {
    let filter = filter_text(ice_address_udp, ice_address_tcp);
    let what = match ignores {
        FilterIgnores::Override => format!("ice_host_override `{override_value}`"),
        FilterIgnores::Stun => {
            "the public address its STUN server (ice_servers) would report".into()
        }
    };
    Finding::new(
        FindingId::IceAddressIgnoresOverride,
        severity,
        format!(
            "RTCD's {filter} matches none of the host's own IP addresses (RTCD keeps only local IPs written \
             exactly as listed; \"0.0.0.0\" is none of them), so RTCD silently ignores {what}: it advertises \
             {} over UDP instead, and no TCP candidate at all",
            addr_list(advertised_udp)
        ),
        format!(
            "in {where_} under [rtc], leave ice_address_udp and ice_address_tcp empty to listen on every address \
             (or unset RTCD_RTC_ICEADDRESSUDP / RTCD_RTC_ICEADDRESSTCP), or list this host's own IP there; keep \
             {}; then restart RTCD",
            match ignores {
                FilterIgnores::Override => "ice_host_override as it is",
                FilterIgnores::Stun => "ice_servers as they are",
            }
        ),
    )
}

/// `ice_no_udp_candidate`: RTCD would advertise no UDP candidate at all, so browsers get no
/// media path over UDP (and none at all where TCP is not offered either).
pub fn no_udp_candidate(
    ice_address_udp: &str,
    ice_address_tcp: &str,
    pairs_form: bool,
    rules: Option<PionRules>,
    where_: &str,
) -> Finding {
    let (why, fix) = if ice_address_udp.is_empty() && !ice_address_tcp.is_empty() {
        (
            format!(
                "ice_address_tcp = \"{ice_address_tcp}\" keeps none of the host's IP addresses, and with \
                 ice_address_udp empty RTCD opens its UDP listeners only on the addresses that filter keeps \
                 (rtcd server.go initUDP); the same filter leaves no TCP candidate either"
            ),
            format!(
                "in {where_} under [rtc], leave ice_address_tcp empty (or unset RTCD_RTC_ICEADDRESSTCP), or list this \
                 host's own IP there; then restart RTCD"
            ),
        )
    } else if pairs_form && rules != Some(PionRules::V4_2) {
        (
            format!(
                "the EXTERNAL/LOCAL pairs of ice_host_override name none of the addresses RTCD listens on, and {} \
                 drop the UDP candidate of an address without a pair",
                PionRules::V4_0.label()
            ),
            format!(
                "in {where_}, add a pair for the address RTCD listens on (EXTERNAL/LOCAL_IP, LOCAL_IP as this host \
                 has it), or give the public IP alone; then restart RTCD"
            ),
        )
    } else {
        (
            "the configuration leaves RTCD no address to listen on over UDP".into(),
            format!("check ice_address_udp and ice_host_override in {where_}, then restart RTCD"),
        )
    };
    Finding::new(
        FindingId::IceNoUdpCandidate,
        Severity::Error,
        format!(
            "RTCD would advertise no UDP ICE candidate at all: {why}. Calls then have no UDP media path \
             (\"timed out waiting for rtc connection\" for every user who cannot use ICE-TCP)"
        ),
        fix,
    )
}
