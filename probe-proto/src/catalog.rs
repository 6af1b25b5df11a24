//! The catalog of findings: every id the probe can report, with its severity, its meaning, the
//! setting that fixes it and the upstream behaviour it relies on, in one place.
//!
//! Code names findings by [`FindingId`]; the report carries the id as its `snake_case` string
//! (`Finding::id`), so the JSON is what it always was, and reports written by other versions
//! (the results store, `compare`) still load when they name an id this build does not know.
//! The README's findings table is generated from [`FindingId::ALL`] (`catalog::markdown_table`),
//! and a test keeps it current.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which part of the product raises the finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// `probe-client`: the path from the user's network to the probe server.
    Path,
    /// `probe-client`: ICE checks against the candidates RTCD advertises.
    Ice,
    /// `probe-server doctor`: RTCD's host.
    Host,
    /// `probe-client rtcd-api`: the Mattermost → RTCD API path.
    RtcdApi,
    /// `probe-client --turn/--mattermost`: the TURN relay chain toward RTCD.
    Turn,
    /// The browser test page (issue 17): the browser's own WebRTC stack against the candidates.
    Browser,
}

impl Area {
    pub fn label(self) -> &'static str {
        match self {
            Area::Path => "client: path",
            Area::Ice => "client: ICE",
            Area::Host => "doctor",
            Area::RtcdApi => "rtcd-api",
            Area::Turn => "client: TURN",
            Area::Browser => "browser page",
        }
    }
}

/// One catalog entry.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub id: FindingId,
    pub area: Area,
    /// The severity rule, in words (some ids are a warning or an error by degree).
    pub severity: &'static str,
    /// What it means, in the troubleshooting guide's words.
    pub meaning: &'static str,
    /// The setting or action that fixes it (the report's `fix` adds the specifics).
    pub fix: &'static str,
    /// The upstream behaviour the rule relies on (repository file:line), or the guide's section.
    pub basis: &'static str,
}

macro_rules! catalog {
    ($( $variant:ident = $id:literal, $area:ident, $sev:literal,
        $meaning:literal, $fix:literal, $basis:literal; )*) => {
        /// Every finding id. Serialized in `snake_case`, exactly the report's `id` string.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum FindingId { $($variant),* }

        impl FindingId {
            /// All ids, in catalog order (the README table's order).
            pub const ALL: &'static [FindingId] = &[$(FindingId::$variant),*];

            /// The id as reports carry it.
            pub fn as_str(self) -> &'static str {
                match self { $(FindingId::$variant => $id),* }
            }

            /// The catalog entry.
            pub fn entry(self) -> Entry {
                match self {
                    $(FindingId::$variant => Entry {
                        id: FindingId::$variant,
                        area: Area::$area,
                        severity: $sev,
                        meaning: $meaning,
                        fix: $fix,
                        basis: $basis,
                    }),*
                }
            }
        }
    };
}

catalog! {
    // --- The path (probe-client) ---
    ServerUnreachable = "server_unreachable", Path, "error",
        "Neither UDP nor TCP reaches the probe server's port from this network.",
        "Open the media port (UDP and TCP 8443 by default) from this network to RTCD, in every firewall and security group on the way.",
        "Guide: \"Verify that UDP port 8443 (or your configured port) is open\"";
    UdpBlocked = "udp_blocked", Path, "error",
        "UDP to the media port does not get through: calls fall back to TCP or fail.",
        "Allow UDP to RTCD's ice_port_udp (8443) from this network.",
        "Guide: network requirements (UDP 8443); plugin issue #257";
    TcpBlocked = "tcp_blocked", Path, "warning",
        "TCP to the media port does not get through: no ICE-TCP fallback when UDP is blocked.",
        "Allow TCP to RTCD's ice_port_tcp (8443) from this network.",
        "rtcd service/rtc/server.go:370-410 initTCP: passive ICE-TCP candidates on ice_port_tcp (v1.2.6)";
    TcpIntercepted = "tcp_intercepted", Path, "error (never arrived), warning (arrived from another address)",
        "Live mode: the TCP connection to RTCD's port succeeded, but the probe's segment never reached RTCD's host, or reached it from another address than the client's: a transparent proxy or middlebox answers for RTCD.",
        "Exempt RTCD's TCP port from the transparent proxy / TCP inspection on this network (or the host's), so that ICE-TCP reaches RTCD itself.",
        "pion/ice tcp_mux.go:196-236 (v4.2.0): RTCD accepts and reads the first RFC 4571 frame itself; a copy seen on RTCD's host proves the segment got there";
    PacketLoss = "packet_loss", Path, "warning from 1 %, error from 5 %",
        "Media-shaped traffic is lost on the way, per direction.",
        "Find the lossy hop (Wi-Fi, VPN, saturated uplink) in the direction named.",
        "Guide: \"Check for packet drops\"";
    PathCutAfter = "path_cut_after", Path, "error",
        "Traffic flowed and then stopped for good mid-run, in the direction named (told apart from random loss: a tail of unanswered packets that the loss before it cannot explain): the call connects and drops after that many seconds.",
        "Find the stateful firewall, IDS or NAT on the path that cuts long UDP flows (a flow time limit, a UDP flood or \"P2P\" rule, a session limit) and exempt RTCD's media port.",
        "Calls plugin issues #220, #257, #379 (calls drop after ~15 s); the echo keeps a media-shaped flow on one 5-tuple as a call does";
    UdpMappingShort = "udp_mapping_short", Path, "warning",
        "After the quiet-period test (--quiet-test N: nothing sent for N s on the media 5-tuple), the NAT or firewall had forgotten the flow: the client came back on another public port, or no replies came back at all.",
        "Raise the UDP mapping / session timeout of the NAT or firewall on this network to at least 2 minutes (RFC 4787 REQ-5; Linux: net.netfilter.nf_conntrack_udp_timeout and nf_conntrack_udp_timeout_stream).",
        "RFC 4787 REQ-5 (UDP mapping timer ≥ 2 min); RFC 7675 §5.1 consent checks every ~5 s; pion/ice agent_config.go:21 keepalive 2 s, candidate_base.go:358 media from an unknown address discarded (v4.4.1)";
    PathHeld = "path_held", Path, "info",
        "The long-run checks found nothing wrong: the path passed media-shaped traffic both ways for the whole run, and (with --quiet-test) again after the quiet period from the same public address.",
        "Nothing to fix.",
        "—";
    LargePacketsLost = "large_packets_lost", Path, "error when the largest UDP payload that passes either way (DF set) is below 1,252 B; warning below 1,400 B, or when 1,400-byte TCP frames are lost (error without UDP)",
        "Large packets do not cross the path on the media 5-tuple (a lower path MTU from a VPN, PPPoE or tunnel, with ICMP \"fragmentation needed\" or fragments dropped): video and screen share will stall; audio works.",
        "MTU / MSS clamping on the VPN or tunnel, let ICMP \"fragmentation needed\" / \"packet too big\" through, allow fragments.",
        "pion/webrtc constants.go:41 outboundMTU = 1200, track_local_static.go:321 (v4.2.18: RTP packets up to 1,200 B, plus SRTP and TURN overhead); RFC 8899 acknowledged probes";
    HighLatency = "high_latency", Path, "warning (p95 ≥ 150 ms)",
        "Round-trip time high enough to be heard in a call.",
        "Use a closer RTCD or a path without the detour (VPN hairpin, proxy).",
        "ITU-T G.114 mouth-to-ear budget";
    HighJitter = "high_jitter", Path, "warning (≥ 30 ms)",
        "Packet timing varies enough to strain the receivers' jitter buffers.",
        "Look for congested or Wi-Fi hops on the path.",
        "RFC 3550 interarrival jitter";
    ServerLost = "server_lost", Path, "error",
        "The probe server stopped answering during the run.",
        "Re-run; if it repeats, look for a middlebox that cuts flows after a few seconds.",
        "—";
    ServerRefused = "server_refused", Path, "error",
        "The probe server refused the session and named the limit.",
        "Wait and re-run, or raise the named limit on the server.",
        "—";
    ServerRateLimited = "server_rate_limited", Path, "warning",
        "The probe server rate-limited some of this run's packets, so loss figures are a floor.",
        "Re-run with a lower rate, or raise --max-reply-pps on the server.",
        "—";
    ControlFailed = "control_failed", Path, "error",
        "No control channel (QUIC on UDP, nor TCP) came up although the port answers.",
        "Check that nothing on the path rewrites or inspects the media port's traffic.",
        "—";
    PinUnverified = "pin_unverified", Path, "warning",
        "The run went without the server's certificate pin, so the server was not authenticated. Only older clients report it (their TCP fallback carried control in clear); current ones check the pin over TLS too. Kept so stored reports still read.",
        "Pass --pin from the server's ready line.",
        "—";
    // --- ICE checks (probe-client) ---
    IceHostOverrideMissing = "ice_host_override_missing", Ice, "error",
        "RTCD advertises only private addresses, which users outside cannot reach.",
        "Set rtc.ice_host_override (RTCD_RTC_ICEHOSTOVERRIDE) to the public address.",
        "rtcd service/rtc/utils.go:60-133 generateAddrsPairs (no override, no STUN: no pairs, local IPs advertised); sfu.go:117-123 SetNAT1To1IPs (v1.2.6)";
    IceHostOverrideWrong = "ice_host_override_wrong", Ice, "error",
        "The address RTCD advertises does not answer from here while the probed address does.",
        "Set rtc.ice_host_override to the address users reach (the one this client dialled).",
        "rtcd service/rtc/utils.go:60-133 generateAddrsPairs; sfu.go:117-123 SetNAT1To1IPs replaces host candidate IPs (v1.2.6)";
    IcePortOverrideWrong = "ice_port_override_wrong", Ice, "error",
        "RTCD advertises a port that does not answer (ice_host_port_override or a port-changing NAT).",
        "Set rtc.ice_host_port_override to the public port that forwards to RTCD's port.",
        "rtcd service/rtc/sfu.go:312 port override for candidates whose address is the override; utils.go:135 getExternalAddrMapFromHostOverride; server.go:124-135 map form (v1.2.6)";
    IceSplitHorizonDns = "ice_split_horizon_dns", Ice, "error",
        "The override hostname resolves on RTCD's host to another address than users get.",
        "Use an IP literal in rtc.ice_host_override, or make RTCD's resolver return the public address.",
        "rtcd service/rtc/utils.go:78 resolveHost per join (sfu.go:117, from InitSession), net.go:157 (v1.2.6); docs PR #6128";
    IceAddressIgnoresOverride = "ice_address_ignores_override", Ice, "error",
        "rtc.ice_address_udp/tcp matches no local address (e.g. \"0.0.0.0\"), so RTCD silently ignores a single-IP or hostname override and STUN (the EXTERNAL/LOCAL form still applies) and makes no TCP candidate.",
        "Leave ice_address_udp/tcp empty, or list the host's own IPs.",
        "rtcd service/rtc/server.go:109-122 local IPs narrowed by the union of ice_address_udp/tcp, 137-158 STUN over them; utils.go:67-69 pairs form kept, 77-87 override resolved then dropped for no IPs; sfu.go:103-115 SetIPFilter limits TCP candidates (v1.2.6)";
    IceNoUdpCandidate = "ice_no_udp_candidate", Ice, "error",
        "RTCD would advertise no UDP candidate at all.",
        "Fix rtc.ice_address_udp (or leave it empty) so RTCD listens on an address users reach.",
        "rtcd service/rtc/server.go:346-363 initUDP: ice_address_udp entries, else the narrowed local IPs (v1.2.6); pion/ice v4.0.10 gather.go:345-353 unpaired UDP dropped";
    IceFailed = "ice_failed", Ice, "error",
        "No advertised UDP candidate answered ICE checks from here.",
        "See the finding naming the cause; the guide's \"timed out waiting for rtc connection\".",
        "calls-common rtc_peer.ts 15 s connection timeout";
    IceTcpFailed = "ice_tcp_failed", Ice, "warning",
        "No advertised TCP candidate answered ICE-TCP checks from here.",
        "Allow TCP to RTCD's ice_port_tcp, or advertise an address that forwards it.",
        "pion/ice tcp_mux.go: RFC 4571 framed STUN on the passive TCP candidate";
    IceProbePort = "ice_probe_port", Ice, "info",
        "The probe ran on another port than RTCD's, so the ICE checks tested that port.",
        "Run probe-server on RTCD's own port (RTCD stopped) for a check of RTCD's port.",
        "—";
    HairpinFails = "hairpin_fails", Ice, "error",
        "This client's public address is RTCD's advertised address (or in its /24): the client is behind the same NAT as RTCD, and ICE checks to that address do not come back because the NAT does not loop packets back to itself (no hairpinning).",
        "Enable NAT loopback (hairpin NAT) for RTCD's port on the router; or, on a host with a second, inside-facing address, an EXTERNAL/LOCAL pairs override that maps only the outward-facing one (the other stays advertised as is); or a TURN server outside the NAT. Split-horizon DNS does not help: RTCD resolves a hostname override on its own host and advertises that one address to everyone.",
        "RFC 4787 REQ-9 (hairpinning); rtcd service/rtc/utils.go:60-133 generateAddrsPairs, sfu.go:117-123 SetNAT1To1IPs (v1.2.6); pion/ice gather.go:204-205 unmapped host addresses kept (v4.4.1); plugin issue #119";
    SameNatAsRtcd = "same_nat_as_rtcd", Ice, "info",
        "This client's public address is RTCD's advertised address (or in its /24), and ICE checks to that address come back: a NAT the two share loops packets back (hairpinning works).",
        "Nothing to fix; if a NAT is shared, keep its NAT loopback enabled.",
        "RFC 4787 REQ-9 (hairpinning)";
    CallsViaRtcd = "calls_via_rtcd", Ice, "info",
        "The Calls plugin has an RTCD service URL: with a licence that allows RTCD, calls go to RTCD, not to the integrated RTC server tested here.",
        "Test RTCD instead (probe-server --rtcd-config on the RTCD host).",
        "mattermost-plugin-calls server/activate.go:155, server/configuration.go:471-481, server/enterprise/license.go:40-42 (eb708b4)";
    // --- RTCD's host (probe-server doctor) ---
    RtcdNotListening = "rtcd_not_listening", Host, "error",
        "Nothing listens on RTCD's ICE port on this host.",
        "Start RTCD, or fix ice_port_udp/ice_port_tcp.",
        "rtcd service/rtc/server.go:160-165, 324-410: a UDP mux per local IP and a TCP listener on ice_port_udp/tcp (v1.2.6); guide: \"Verify that UDP port 8443 … is open\"";
    RtcdPortOtherProcess = "rtcd_port_other_process", Host, "warning",
        "Another process than RTCD holds RTCD's ICE port.",
        "Stop the other process or move RTCD's port.",
        "—";
    CallsPluginHoldsPort = "calls_plugin_holds_port", Host, "info",
        "The Calls plugin's integrated RTC server (in the Mattermost/plugin process) holds the ICE port: calls run without RTCD on this host.",
        "Read its settings with probe-server --calls-config (Mattermost's config.json) instead of RTCD's; RTCD's API and config checks do not apply.",
        "mattermost-plugin-calls server/activate.go:170-199 (eb708b4): rtc.NewServer + Start inside the plugin process";
    CallsPluginNotRunning = "calls_plugin_not_running", Host, "error",
        "Mattermost's API says the Calls plugin is not running (disabled, failed to start, or not installed): no call can start.",
        "Enable it in System Console › Plugins › Plugin Management, and read Mattermost's log for why it failed.",
        "Mattermost API GET /api/v4/plugins/statuses; server/public/model/plugin_status.go (PluginStateRunning = 2); plugin server/activate.go:98-200 returns an error (activation fails) when its RTC server cannot start";
    TcpFallbackOff = "tcp_fallback_off", Host, "warning",
        "RTCD does not listen on TCP: no ICE-TCP fallback.",
        "Set ice_port_tcp (RTCD ≥ v0.11) and open it.",
        "rtcd service/rtc/server.go:370-410 initTCP (v1.2.6)";
    RtcdApiUnreachable = "rtcd_api_unreachable", Host, "error",
        "RTCD's HTTP API does not answer as RTCD.",
        "Start RTCD or fix [api] http.listen_address / the RTCD service URL.",
        "rtcd service/service.go:117 /version; plugin server/rtcd.go:87-97 one client per A record, any failure fails; :36, 680-687 dial IP:port in 4 s; rtcd service/client.go:123 TLS handshake 1 s, 404-430 GET /version";
    RtcdUrlNoPort = "rtcd_url_no_port", RtcdApi, "error",
        "The RTCD service URL names no port: the plugin refuses it (it does not default to 80/443).",
        "Write the port in the Calls plugin's RTCD service URL, e.g. http://rtcd:8045.",
        "plugin server/rtcd.go:70-73, 317-326 net.SplitHostPort fails, activation fails";
    RtcdUrlNoIpv4 = "rtcd_url_no_ipv4", RtcdApi, "error",
        "The RTCD host name has no IPv4 address: the plugin resolves IPv4 only.",
        "Give RTCD's name an A record (or use an IPv4 address in the URL).",
        "plugin server/rtcd.go:35, 328-335 LookupIP(ctx, \"ip4\", host), 2 s";
    RtcdVersionInvalid = "rtcd_version_invalid", Host, "error",
        "RTCD reports a version the plugin cannot parse, so the plugin refuses it.",
        "Run a released RTCD build.",
        "plugin utils.go:138-141 a parse failure refuses RTCD, rtcd.go:355-359 dev builds skipped; Masterminds semver v1.5.0 version.go:31-33, 54-94";
    RtcdVersionOld = "rtcd_version_old", Host, "error below the plugin's minimum, warning below v0.11",
        "RTCD is older than the Calls plugin accepts.",
        "Upgrade RTCD.",
        "plugin server/rtcd.go:339-370 checkMinVersion, utils.go:132-148, plugin.json:733 min_rtcd_version; Masterminds semver v1.5.0 version.go:265-293, 331-425";
    RtcdConnectionsFailing = "rtcd_connections_failing", Host, "warning",
        "RTCD's own metrics count failed ICE connections.",
        "Run probe-client from an affected network to find out why.",
        "rtcd service/perf/metrics.go:95-97 rtcd_rtc_conn_states_total{type=failed} (v1.2.6)";
    SocketBuffersSmall = "socket_buffers_small", Host, "warning",
        "The kernel caps socket buffers below the 16 MB RTCD asks for.",
        "sysctl -w net.core.rmem_max=16777216 net.core.wmem_max=16777216, and persist it.",
        "rtcd service/rtc/net.go:21, 113-117 SetReadBuffer/SetWriteBuffer 16 MB (v1.2.6)";
    UdpReceiveDrops = "udp_receive_drops", Host, "error when RTCD's sockets drop, warning for the host's counters",
        "UDP datagrams are dropped on receive.",
        "Raise the socket buffers; check RTCD's CPU.",
        "rtcd service/rtc/net.go:85-117 SO_REUSEPORT sockets with 16 MB buffers (v1.2.6); guide: \"Check for packet drops\"";
    HostFirewallBlocks = "host_firewall_blocks", Host, "error; warning when the rule also tests other things",
        "A host firewall rule drops RTCD's ports.",
        "Remove or narrow the named nftables/iptables rule.",
        "Guide: \"Check iptables rules\"";
    RtcdAdvertisesPrivate = "rtcd_advertises_private", Host, "error",
        "RTCD advertises only private addresses.",
        "Set rtc.ice_host_override to the public address.",
        "rtcd service/rtc/utils.go:60-133 generateAddrsPairs; sfu.go:117-123 (v1.2.6)";
    IceHostOverrideHostname = "ice_host_override_hostname", Host, "warning (split horizon); error when it does not resolve",
        "The override is a hostname, resolved by RTCD on its own host on every join.",
        "Prefer an IP literal; make sure RTCD's host resolves it to the public address.",
        "rtcd service/rtc/utils.go:78, net.go:157-170 resolveHost, 1 s, first answer (v1.2.6); Go's pure resolver (CGO_ENABLED=0)";
    RtcdConfigInvalid = "rtcd_config_invalid", Host, "error",
        "RTCD would refuse this configuration at start-up (RTCD's own error text).",
        "Fix the setting named.",
        "rtcd cmd/rtcd/main.go:21-28 load + IsValid fatal; service/config.go:62-106; service/rtc/config.go:52-102 (nack_buffer_size checked only when ≠ 0, :85), :183-224, :335-398; logger/config.go:25-49 (v1.2.6)";
    RtcdConfigChangedSinceStart = "rtcd_config_changed_since_start", Host, "warning",
        "RTCD's configuration file was changed after RTCD started: RTCD still runs with what the file said then, while this run judged the file as it is now.",
        "Restart RTCD so that it reads the file (e.g. systemctl restart rtcd), then run the check again.",
        "rtcd cmd/rtcd/main.go:21 loadConfig once at start, :40 handles only SIGINT/SIGTERM (no reload) (b3dee59)";
    RtcdConfigUnknownKey = "rtcd_config_unknown_key", Host, "warning",
        "RTCD's configuration file has a key, or its environment an RTCD_* variable, that RTCD does not know (misspelled, or in the wrong section): RTCD ignores it without a word, so the setting it was meant to be keeps its default.",
        "Give each key or variable the name RTCD knows (the closest is named when there is one), or remove it; then restart RTCD.",
        "rtcd cmd/rtcd/config.go:28 toml.DecodeFile, MetaData.Undecoded never checked; :31 envconfig.Process reads only its fields' names; BurntSushi/toml v1.4.0 matches field names case-insensitively (b3dee59)";
    RtcdTurnRelayFailed = "rtcd_turn_relay_failed", Host, "warning (with private host candidates rtcd_advertises_private carries it as an error)",
        "RTCD's server-side TURN (a turn: entry and turn.static_auth_secret) did not allocate a relay when tried from RTCD's host with RTCD's credentials: RTCD gathers no relay candidate there.",
        "Fix the cause named (the shared secret, DNS, the firewall between RTCD and the TURN server), then restart RTCD.",
        "rtcd service/rtc/sfu.go:231-252 TURN entries with credentials made from static_auth_secret (turn.go:37-62); pion/ice gathers relay candidates over udp4 (b3dee59)";
    RtcdStunFailedAtStart = "rtcd_stun_failed_at_start", Host, "error; warning when RTCD's start line is not in the log",
        "RTCD's STUN lookup failed when it started, so it advertises its private address until restarted, although STUN answers now.",
        "Restart RTCD; set rtc.ice_host_override so RTCD does not depend on STUN at start.",
        "rtcd service/service.go:67 start line; service/rtc/server.go:137-158 STUN once per local IP at start (Warn :151, Info :153); stun.go:32 5 s; utils.go:124-130 no answer → local IP (v1.2.6)";
    RtcdNatChangesPort = "rtcd_nat_changes_port", Host, "warning (a forward of the ICE port, invisible from inside, makes it work)",
        "With no ice_host_override, RTCD advertises the STUN-found IP with its local port, but the NAT in front of it maps that port to another public port when RTCD sends: RTCD's STUN-derived candidate reaches it only if the router forwards public UDP ice_port_udp to this host; if it does, nothing to fix.",
        "If the router does not forward the ICE port: set rtc.ice_host_override (RTCD_RTC_ICEHOSTOVERRIDE) to the public address and forward the ICE port to RTCD; for a forward from another public port also set rtc.ice_host_port_override (RTCD_RTC_ICEHOSTPORTOVERRIDE).",
        "rtcd service/rtc/server.go:137-158 STUN from localIP:ice_port_udp; stun.go:37 only the IP kept; utils.go:122-130 pairs; sfu.go:117-123 host candidates keep the local port, 311-319 only the port override changes it (v1.2.6); RFC 4787 REQ-1";
    RtcdNatMappingVaries = "rtcd_nat_mapping_varies", Host, "warning (a forward of the ICE port, invisible from inside, makes it work)",
        "STUN servers at different addresses see RTCD's ICE port mapped to different public IPs (address-dependent mapping; a port-only difference is rtcd_nat_changes_port): the IP RTCD learnt from its STUN server is not the one clients' packets from it meet, so RTCD's STUN-derived candidate reaches it only if the router forwards public UDP ice_port_udp on that IP to this host; if it does, nothing to fix.",
        "If the router does not forward the ICE port: set rtc.ice_host_override (RTCD_RTC_ICEHOSTOVERRIDE) to the public address and forward the ICE port to RTCD; for a forward from another public port also set rtc.ice_host_port_override (RTCD_RTC_ICEHOSTPORTOVERRIDE).",
        "rtcd service/rtc/server.go:137-158 one STUN server asked once at start; utils.go:122-130 pairs; sfu.go:117-123 (v1.2.6); RFC 4787 REQ-1 (endpoint-independent mapping), RFC 5780 4.3";
    RtcdHighCpu = "rtcd_high_cpu", Host, "warning",
        "RTCD uses most of the host's CPU.",
        "Add cores or RTCD nodes.",
        "Guide: \"Check CPU usage on RTCD servers\"";
    LogPrivateCandidates = "log_private_candidates", Host, "warning",
        "RTCD's log shows it advertising private addresses.",
        "Set rtc.ice_host_override.",
        "Guide: \"Common log patterns\"";
    LogErrorPatterns = "log_error_patterns", Host, "info",
        "RTCD's log has the guide's error patterns (counts).",
        "Read the lines named.",
        "Guide: \"Common log patterns\"";
    // --- Mattermost → RTCD (probe-client rtcd-api) ---
    RtcdApiAuthFailed = "rtcd_api_auth_failed", RtcdApi, "error",
        "RTCD refuses the plugin's credentials.",
        "Set the Calls plugin's RTCD client ID and API key to a pair RTCD accepts.",
        "rtcd service/ws/server.go:120-126 and service/auth.go:18-60: a refused /ws login writes nothing, so HTTP 200, empty body; service/client.go:227-231 Basic clientID:authKey (v1.2.6)";
    RtcdWsFailed = "rtcd_ws_failed", RtcdApi, "error",
        "The WebSocket upgrade to RTCD's /ws does not complete.",
        "Let the plugin reach RTCD directly; allow WebSocket upgrades.",
        "rtcd service/client.go:67-77 /ws at the root (v1.2.6); gorilla/websocket v1.5.3 client.go:394-405 bad handshake";
    ProxyInPath = "proxy_in_path", RtcdApi, "error",
        "A proxy variable applies to the RTCD URL: the plugin sends CONNECT to RTCD itself and fails.",
        "Add RTCD's host to NO_PROXY in Mattermost's environment.",
        "rtcd service/client.go:115-116 ProxyFromEnvironment; gorilla/websocket v1.5.3 client.go:300-313, proxy.go:34-76 CONNECT over the plugin's own dial; plugin server/rtcd.go:680-687 always RTCD's IP; rtcd service/service.go:117-142 no CONNECT route → 404; plugin issue #379";
    // --- TURN ---
    TurnUnreachable = "turn_unreachable", Turn, "error when no TURN URL/transport answers, warning when others do",
        "The TURN server does not answer from this network on a URL/transport the clients are given.",
        "Allow the TURN server's ports (UDP/TCP 3478, TLS 5349 or 443) from this network; check coturn's listening-ip/external-ip.",
        "RFC 8656 7.2 (Allocate); plugin webapp/src/index.tsx:708-724 hands the ICE servers to the peer connection";
    TurnAuthFailed = "turn_auth_failed", Turn, "error",
        "The TURN server refuses the credentials (401 after the challenge, 441).",
        "Make the Calls plugin's TURNStaticAuthSecret equal coturn's static-auth-secret (use-auth-secret), or fix the static username/credential.",
        "rtcd service/rtc/turn.go:37-62 genTURNCredentials; plugin server/api.go:459-495";
    TurnCredentialsExpired = "turn_credentials_expired", Turn, "error",
        "The TURN REST credentials are past the expiry in their username, so allocations fail (a skewed clock does the same).",
        "Fix the clocks (NTP) of Mattermost, the TURN server and clients; raise TURNCredentialsExpirationMinutes if calls outlast it.",
        "rtcd service/rtc/turn.go:64-84 GenTURNConfigs (expiry = now + minutes); plugin server/configuration.go:209-210 (240 min)";
    TurnForbidsRtcd = "turn_forbids_rtcd", Turn, "error; warning when another advertised address is relayed to",
        "The TURN server refuses to relay to an address RTCD advertises (403 on CreatePermission, coturn denied-peer-ip).",
        "Take RTCD's address out of coturn's denied-peer-ip or add it with allowed-peer-ip; advertise an address the relay may reach.",
        "RFC 8656 9.1 (403 Forbidden); Calls plugin issue #1143 (Docker 172.x candidates, coturn 403 Forbidden IP)";
    TurnRelayPrivate = "turn_relay_private", Turn, "error",
        "A public TURN server hands out a private relayed address, which RTCD and peers outside cannot reach.",
        "Set coturn's external-ip (public/private) or relay-ip.",
        "RFC 8656 7.3 XOR-RELAYED-ADDRESS";
    TurnOnlyTls = "turn_only_tls", Turn, "info",
        "Only TURN over TLS gets through from this network: calls work through the relay, but slower.",
        "Fine as a fallback; allow UDP to the TURN server for better media.",
        "RFC 7065 turns: URIs; common corporate egress (TCP 443 only)";
    TurnCredentialsEndpointFailed = "turn_credentials_endpoint_failed", Turn, "error",
        "Mattermost's /plugins/com.mattermost.calls/turn-credentials fails: the web app logs it and joins without TURN.",
        "Set TURNStaticAuthSecret and list the TURN servers without credentials in the plugin's ICE servers configuration.",
        "plugin webapp/src/index.tsx:709-715 (fetch, logErr, continue); server/api.go:459-495; server/api_router.go:155";
    TurnAllocationFailed = "turn_allocation_failed", Turn, "error; warning when only a refresh failed",
        "The TURN server refuses the allocation for another reason than credentials (486 quota, 508 capacity, 437, 442).",
        "Raise coturn's user-quota/total-quota or its relay port range, or read its log for the refused request.",
        "RFC 8656 7.2 and 18 (error codes)";
    // --- The browser test page (probe-server's page, issue 17) ---
    BrowserNoUdp = "browser_no_udp", Browser, "error",
        "The browser gathered no UDP candidate and its UDP-only test formed no candidate pair at all: the browser itself is not allowed to use UDP (a WebRtcIPHandling policy of disable_non_proxied_udp, a VPN or a privacy extension), so UDP to the server was never tried and calls can only use TCP.",
        "Lift the policy or extension for the Mattermost site (Chrome/Edge: WebRtcIPHandling or WebRtcIPHandlingUrl; Firefox: media.peerconnection.ice.proxy_only), or keep RTCD's ice_port_tcp (8443) open so calls fall back to TCP.",
        "RFC 8828 §5.2 (mode 4: no non-proxied UDP); Chromium content/public/common/webrtc_ip_handling_policy.h kWebRTCIPHandlingDisableNonProxiedUdp; spike docs/spikes/17-browser-page/REPORT.md §3 (0 candidates and no pairs under the policy)";
    DtlsBlocked = "dtls_blocked", Browser, "error",
        "ICE connected (a connectivity check to the server got its answer) but the DTLS handshake never completed before the deadline: something on the path passes STUN and drops DTLS (deep packet inspection, a firewall or VPN filtering by payload), so calls connect ICE and then fail.",
        "Exempt RTCD's media port (UDP and TCP 8443) from deep packet inspection / application filtering on this network's firewall or VPN: WebRTC media is DTLS-SRTP after ICE (first byte 20-63, RFC 7983).",
        "RFC 8842 (DTLS after ICE in offer/answer), RFC 7983 §7 (demux by first byte); pion/webrtc peerconnection.go:2796-2834 (v4.2.18: DTLS starts once ICE connected); spike REPORT.md §4 (nft payload drop: ICE connected, DTLS stays connecting)";
    DataChannelFailed = "data_channel_failed", Browser, "error",
        "DTLS connected, but the data channel never opened or no message echoed back: SCTP over DTLS (or what follows it) does not get through, so the call's signalling inside the media path would fail too.",
        "Look for a middlebox that lets the DTLS handshake through and then drops or rewrites the encrypted records (size or rate limits, a UDP session limit); run the page again and compare with the TCP leg.",
        "RFC 8261 (SCTP over DTLS), RFC 8831/8832 (data channels, DCEP); spike REPORT.md §4 (data layer: DTLS connected, no dc_open)";
    BrowserTestIncomplete = "browser_test_incomplete", Browser, "error when no UDP test ran (media's transport untested), else warning",
        "The page could not run one of its tests (signalling failed: the server was busy, refused the offer, or the page itself failed), so that part of the path was not judged.",
        "Run the page again; if it repeats, the page's message names the cause (the admin can raise probe-server's web session limits).",
        "—";
}

impl AsRef<str> for FindingId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for FindingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FindingId {
    /// The id named by a report's string, if this build knows it.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|id| id.as_str() == s)
    }
}

/// The README's findings table (between its `findings-table` markers).
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| id | where | severity | meaning | fix | relies on |\n|---|---|---|---|---|---|\n",
    );
    for id in FindingId::ALL {
        let e = id.entry();
        let cell = |s: &str| s.replace('|', "\\|");
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            id,
            e.area.label(),
            cell(e.severity),
            cell(e.meaning),
            cell(e.fix),
            cell(e.basis)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_snake_case_and_serde_matches() {
        let mut seen = std::collections::HashSet::new();
        for id in FindingId::ALL {
            let s = id.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{s}"
            );
            assert_eq!(serde_json::to_string(id).unwrap(), format!("\"{s}\""));
            assert_eq!(FindingId::parse(s), Some(*id));
            assert_eq!(id.entry().id, *id);
        }
        assert_eq!(FindingId::parse("no_such_finding"), None);
    }

    /// The README's table is this catalog; `PROBE_UPDATE_README=1` rewrites it.
    #[test]
    fn readme_findings_table() {
        const START: &str = "<!-- findings-table:start -->\n";
        const END: &str = "<!-- findings-table:end -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let a = readme.find(START).expect("README has the start marker") + START.len();
        let b = readme.find(END).expect("README has the end marker");
        let want = markdown_table();
        if readme[a..b] != want {
            if std::env::var_os("PROBE_UPDATE_README").is_some() {
                let new = format!("{}{want}{}", &readme[..a], &readme[b..]);
                std::fs::write(path, new).unwrap();
            } else {
                panic!("README's findings table is out of date: run PROBE_UPDATE_README=1 cargo test -p probe-proto readme_findings_table");
            }
        }
    }

    /// Production code names findings by `FindingId` only: no id is written as a string literal
    /// outside this catalog and test code (what follows a file's first `#[cfg(test)]`).
    #[test]
    fn no_finding_id_as_a_string_literal_in_production_code() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        for krate in ["probe-proto", "probe-server", "probe-client", "probe-shell"] {
            rust_files(&root.join(krate).join("src"), &mut files);
        }
        assert!(files.len() > 20, "found only {} source files", files.len());
        let mut hits = Vec::new();
        // Test modules kept in files of their own (`tests.rs`, `tests/…`) are test code too.
        let is_test = |f: &std::path::Path| {
            f.ends_with("tests.rs") || f.components().any(|c| c.as_os_str() == "tests")
        };
        for f in files
            .iter()
            .filter(|f| !f.ends_with("catalog.rs") && !is_test(f))
        {
            let text = std::fs::read_to_string(f).unwrap();
            let prod = text.split("#[cfg(test)]").next().unwrap_or_default();
            for id in FindingId::ALL {
                if prod.contains(&format!("\"{id}\"")) {
                    hits.push(format!("{}: \"{id}\"", f.display()));
                }
            }
        }
        assert!(hits.is_empty(), "use FindingId instead of: {hits:#?}");
    }

    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    #[test]
    fn every_entry_is_filled_in() {
        for id in FindingId::ALL {
            let e = id.entry();
            for (what, text) in [
                ("severity", e.severity),
                ("meaning", e.meaning),
                ("fix", e.fix),
                ("basis", e.basis),
            ] {
                assert!(!text.trim().is_empty(), "{id}: empty {what}");
            }
        }
    }
}
