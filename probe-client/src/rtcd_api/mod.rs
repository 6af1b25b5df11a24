//! `probe-client rtcd-api URL`: from the Mattermost host, what the Calls plugin needs from
//! RTCD's API, checked the way the plugin connects (plugin server/rtcd.go, rtcd
//! service/client.go at eb708b4 / v1.2.6): the URL must name its port; its host is resolved
//! to IPv4 only and every address gets its own connection; `GET /version` is compared with the
//! plugin's `min_rtcd_version` by Masterminds semver rules; the `/ws` WebSocket at the root
//! with Basic `clientID:authKey`. The plugin always dials RTCD's own address, so a proxy
//! variable that applies to the URL does not route it through a proxy — it makes the plugin
//! talk proxy to RTCD, which breaks it (plugin issue #379): that is an error here.

mod checks;
mod conn;
pub(crate) mod goproxy;
mod procenv;
mod report;

use probe_proto::catalog::FindingId;
use probe_proto::http::Url;
use probe_proto::report::{Finding, Severity, SCHEMA};
use probe_proto::semver::{PluginVerdict, Version};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use checks::{AddrRun, Creds, Failure, Plan};
use report::{AddressResult, ApiReport, Check, ProxyInfo, Status};

/// The Calls plugin's `min_rtcd_version` (plugin plugin.json:733, eb708b4).
pub const DEFAULT_MIN_VERSION: &str = "v0.17.0";
/// The plugin's name resolution bound (plugin server/rtcd.go:35, used at 328-331).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Whole-run bound: a filtered port or a silent RTCD is judged within 10 s of starting.
const DEADLINE: Duration = Duration::from_millis(8500);
/// More A records than this are not all checked (the report says so).
const MAX_ADDRESSES: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyEnvArg {
    /// A running `mattermost` process's environment (Linux), else this tool's own.
    Auto,
    /// This tool's own environment.
    #[value(name = "self")]
    Own,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RtcdApiArgs {
    /// RTCD's API as the Calls plugin's "RTCD service URL" names it, with its port, e.g.
    /// http://rtcd:8045 (credentials in it, http://CLIENT_ID:AUTH_KEY@rtcd:8045, are used).
    pub url: String,
    /// The client ID the plugin authenticates with.
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// The plugin's auth key for RTCD (or set PROBE_RTCD_AUTH_KEY, which stays out of `ps`).
    #[arg(
        long,
        value_name = "KEY",
        env = "PROBE_RTCD_AUTH_KEY",
        hide_env_values = true
    )]
    pub auth_key: Option<String>,
    /// The oldest RTCD the Calls plugin accepts (its min_rtcd_version), compared as the plugin
    /// compares it (Masterminds semver: a prerelease sorts below its release).
    #[arg(long, value_name = "VERSION", default_value = DEFAULT_MIN_VERSION, value_parser = parse_min_version)]
    pub min_rtcd_version: String,
    /// Whose HTTP_PROXY/HTTPS_PROXY/NO_PROXY count: the running Mattermost server's (auto, on
    /// Linux) or this tool's own (self).
    #[arg(long, value_enum, default_value = "auto")]
    pub proxy_env: ProxyEnvArg,
    /// Print one JSON object (schema 1) instead of the human report.
    #[arg(long)]
    pub json: bool,
}

fn parse_min_version(s: &str) -> Result<String, String> {
    Version::parse(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("`{s}` is not a version like v0.17.0 ({e})"))
}

/// What the command line gave.
struct Inputs {
    url: Url,
    creds: Option<Creds>,
    /// The URL names its port (Go's net.SplitHostPort succeeds on it).
    explicit_port: bool,
}

pub async fn run(args: RtcdApiArgs) -> i32 {
    let inp = match inputs(&args) {
        Ok(x) => x,
        Err(msg) => return crate::fail(msg),
    };
    let Ok(min) = Version::parse(&args.min_rtcd_version) else {
        return crate::fail("--min-rtcd-version is not a version");
    };
    let force_self = args.proxy_env == ProxyEnvArg::Own;
    let json = args.json;
    let min_text = args.min_rtcd_version.clone();
    let report =
        match tokio::task::spawn_blocking(move || check_all(&inp, &min, &min_text, force_self))
            .await
        {
            Ok(r) => r,
            Err(e) => return crate::fail(format!("the check crashed: {e}")),
        };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => probe_shell::outln!("{s}"),
            Err(e) => return crate::fail(format!("cannot encode the report: {e}")),
        }
    } else {
        probe_shell::out!("{}", report::render_text(&report));
    }
    if report.ok {
        0
    } else {
        1
    }
}

fn check_all(inp: &Inputs, min: &Version, min_text: &str, force_self: bool) -> ApiReport {
    let started = Instant::now();
    let url = &inp.url;
    let vars = procenv::proxy_vars(force_self);
    let env = goproxy::ProxyEnv::from_env(&|k| vars.get(k));
    let proxy = goproxy::proxy_for(&env, url);
    let mut checks = Vec::new();
    let mut findings = Vec::new();
    let runs = if !inp.explicit_port {
        let (c, f) = no_port(url);
        checks.push(c);
        findings.push(f);
        Vec::new()
    } else {
        match resolve_ipv4(&url.host, url.port) {
            Err(why) => {
                let (c, f) = no_ipv4(url, why);
                checks.push(c);
                findings.push(f);
                Vec::new()
            }
            Ok(addrs) => {
                let (c, addrs) = resolved(url, addrs);
                checks.push(c);
                let plan = plan(inp, proxy.as_ref(), min, started + DEADLINE);
                run_addresses(&plan, &addrs)
            }
        }
    };
    let count = runs.len();
    for (ip, run) in &runs {
        let at = at_address(url, *ip, count);
        findings.extend(address_findings(url, &at, run, min_text));
    }
    let proxy_info = proxy.as_ref().map(|p| {
        let no_proxy = goproxy::no_proxy_with(&env, &url.host);
        let shown = runs.iter().find_map(|(_, r)| r.proxy_connect.clone());
        findings.push(proxy_finding(url, p, &env, &no_proxy, &vars.source, shown));
        ProxyInfo {
            variable: p.var.clone(),
            proxy: p.raw.clone(),
            via_proxy_ok: runs.iter().any(|(_, r)| r.proxy_connect_ok),
            direct_ok: !runs.is_empty() && runs.iter().all(|(_, r)| r.failure.is_none()),
            no_proxy,
        }
    });
    probe_shell::report::sort_findings(&mut findings);
    let version = runs.iter().find_map(|(_, r)| r.version.clone());
    let addresses = runs.iter().map(|(ip, r)| address_result(*ip, r)).collect();
    for (_, r) in runs {
        checks.extend(r.checks);
    }
    ApiReport {
        schema: SCHEMA,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        url: if inp.explicit_port {
            url.base()
        } else {
            without_port(url)
        },
        ok: probe_shell::report::ok(&findings),
        version,
        addresses,
        checks,
        findings,
        proxy: proxy_info,
        proxy_env: vars.source,
        min_rtcd_version: min_text.to_string(),
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// The URL names no port: the plugin refuses it.
fn no_port(url: &Url) -> (Check, Finding) {
    let default = if url.https { 443 } else { 80 };
    let check = Check::new(
        "url",
        Status::Fail,
        format!("{} names no port: the Calls plugin refuses it (\"missing port in address\"); it does not default to {default}", without_port(url)),
        "direct",
        None,
    );
    let finding = Finding::new(
        FindingId::RtcdUrlNoPort,
        Severity::Error,
        format!(
            "the RTCD service URL {} has no port: the Calls plugin splits host and port and fails (\"failed to resolve URL: failed to split host/port: … missing port in address\"), so it never connects to RTCD",
            without_port(url)
        ),
        format!(
            "write the port in the Calls plugin's RTCD service URL (System Console > Plugins > Calls, or MM_CALLS_RTCD_SERVICE_URL): {}://{}:{} — RTCD's API listens on 8045 unless [api] http.listen_address says otherwise",
            scheme(url),
            host_part(url),
            8045
        ),
    );
    (check, finding)
}

/// The host has no IPv4 address: the plugin cannot connect.
fn no_ipv4(url: &Url, why: String) -> (Check, Finding) {
    let check = Check::new("resolve", Status::Fail, why.clone(), "direct", None);
    let finding = Finding::new(
        FindingId::RtcdUrlNoIpv4,
        Severity::Error,
        format!("{why}: the Calls plugin resolves RTCD's host to IPv4 addresses only (\"failed to lookup ips\") and cannot connect"),
        format!(
            "give {} an A record the Mattermost host resolves (or use RTCD's IPv4 address in the RTCD service URL)",
            url.host
        ),
    );
    (check, finding)
}

/// The `resolve` check, and the addresses that will be checked (at most MAX_ADDRESSES).
fn resolved(url: &Url, mut addrs: Vec<Ipv4Addr>) -> (Check, Vec<Ipv4Addr>) {
    let all = addrs.len();
    addrs.truncate(MAX_ADDRESSES);
    let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let detail = if url.host.parse::<IpAddr>().is_ok() {
        format!("{} is an IPv4 address", url.host)
    } else {
        format!(
            "{} → {} (IPv4 only, as the plugin resolves it; one connection each){}",
            url.host,
            list.join(", "),
            if all > addrs.len() {
                format!("; only the first {MAX_ADDRESSES} of {all} are checked")
            } else {
                String::new()
            }
        )
    };
    let check = Check::new("resolve", Status::Pass, detail, "direct", None);
    (check, addrs)
}

/// What every address's run shares (its address is filled in per run).
fn plan<'a>(
    inp: &'a Inputs,
    proxy: Option<&'a goproxy::Proxy>,
    min: &'a Version,
    deadline: Instant,
) -> Plan<'a> {
    let url = &inp.url;
    Plan {
        url,
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), url.port),
        creds: inp.creds.as_ref(),
        proxy,
        tls: if url.https {
            conn::tls_config().ok()
        } else {
            None
        },
        deadline,
        min,
    }
}

/// One run per address, in parallel, each with `plan` at its own address.
fn run_addresses(plan: &Plan, addrs: &[Ipv4Addr]) -> Vec<(Ipv4Addr, AddrRun)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = addrs
            .iter()
            .map(|ip| {
                let plan = Plan {
                    addr: SocketAddr::new(IpAddr::V4(*ip), plan.url.port),
                    tls: plan.tls.clone(),
                    ..*plan
                };
                (*ip, s.spawn(move || checks::run(&plan)))
            })
            .collect();
        handles
            .into_iter()
            .map(|(ip, h)| {
                let run = h.join().unwrap_or_else(|_| AddrRun::crashed());
                (ip, run)
            })
            .collect()
    })
}

fn address_result(ip: Ipv4Addr, r: &AddrRun) -> AddressResult {
    AddressResult {
        address: ip.to_string(),
        ok: r.failure.is_none()
            && !matches!(
                r.verdict,
                Some(PluginVerdict::TooOld) | Some(PluginVerdict::Unparsable(_))
            ),
        version: r.version.clone(),
    }
}

/// The URL without credentials, the credentials from the flags or the URL, and whether the
/// URL names its port.
fn inputs(args: &RtcdApiArgs) -> Result<Inputs, String> {
    let raw = args.url.trim();
    let (scheme, rest) = raw.split_once("://").unwrap_or(("http", raw));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (mut from_url, hostport, clean) = match rest[..authority_end].rsplit_once('@') {
        Some((info, host)) => {
            let (id, key) = info.split_once(':').unwrap_or((info, ""));
            (
                Some((id.to_string(), key.to_string())),
                host,
                format!("{scheme}://{host}{}", &rest[authority_end..]),
            )
        }
        None => (None, &rest[..authority_end], format!("{scheme}://{rest}")),
    };
    let url = Url::parse(&clean)
        .map_err(|e| format!("{e}; give RTCD's API URL, e.g. http://rtcd.example.com:8045"))?;
    let creds =
        match (&args.client_id, &args.auth_key) {
            (Some(id), Some(key)) => Some(Creds {
                client_id: id.clone(),
                auth_key: key.clone(),
            }),
            (None, None) => from_url.take().map(|(client_id, auth_key)| Creds {
                client_id,
                auth_key,
            }),
            _ => return Err(
                "give both --client-id and --auth-key (or neither, to skip the WebSocket check)"
                    .into(),
            ),
        };
    Ok(Inputs {
        url,
        creds,
        explicit_port: has_port(hostport),
    })
}

/// Whether Go's net.SplitHostPort finds a port in the URL's host part (plugin
/// server/rtcd.go:323-326).
fn has_port(hostport: &str) -> bool {
    match hostport.strip_prefix('[') {
        Some(r) => r
            .split_once(']')
            .is_some_and(|(_, after)| after.starts_with(':')),
        None => hostport.contains(':'),
    }
}

/// `net.DefaultResolver.LookupIP(ctx, "ip4", host)` with the plugin's 2 s bound (plugin
/// server/rtcd.go:317-337): every IPv4 address, in the resolver's order, duplicates dropped.
fn resolve_ipv4(host: &str, port: u16) -> Result<Vec<Ipv4Addr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return match ip {
            IpAddr::V4(v4) => Ok(vec![v4]),
            IpAddr::V6(_) => Err(format!("{host} is an IPv6 address")),
        };
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = host.to_string();
    std::thread::spawn(move || {
        let _ = tx.send(
            (name.as_str(), port)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>()),
        );
    });
    let found = match rx.recv_timeout(RESOLVE_TIMEOUT) {
        Err(_) => return Err(format!("{host} does not resolve within 2 s")),
        Ok(Err(e)) => return Err(format!("{host} does not resolve ({e})")),
        Ok(Ok(a)) => a,
    };
    let mut v4 = Vec::new();
    for a in &found {
        if let IpAddr::V4(ip) = a.ip() {
            if !v4.contains(&ip) {
                v4.push(ip);
            }
        }
    }
    if v4.is_empty() {
        let v6: Vec<String> = found.iter().map(|a| a.ip().to_string()).collect();
        return Err(format!(
            "{host} has no IPv4 address (only {})",
            v6.join(", ")
        ));
    }
    Ok(v4)
}

fn scheme(url: &Url) -> &'static str {
    if url.https {
        "https"
    } else {
        "http"
    }
}

/// The host as written in a URL (IPv6 in brackets).
fn host_part(url: &Url) -> String {
    if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    }
}

/// The URL as given, without a port.
fn without_port(url: &Url) -> String {
    format!("{}://{}{}", scheme(url), host_part(url), url.path)
}

/// The URL's root, where the plugin opens /ws whatever the path.
fn root(url: &Url) -> String {
    format!("{}://{}", scheme(url), url.authority())
}

/// How a finding names the address it is about.
fn at_address(url: &Url, ip: Ipv4Addr, count: usize) -> String {
    if count > 1 {
        format!(
            "at {ip} (one of the {count} addresses of {}; the plugin opens one connection per address and fails to start if any one fails): ",
            url.host
        )
    } else if url.host.parse::<IpAddr>().is_err() {
        format!("at {ip} ({}): ", url.host)
    } else {
        String::new()
    }
}

/// The plugin's credentials and where it takes them (plugin server/rtcd.go:465-533).
const CREDS_FIX: &str = "the Calls plugin authenticates to /ws with Basic CLIENT_ID:AUTH_KEY: MM_CALLS_RTCD_CLIENT_ID (or MM_CLOUD_INSTALLATION_ID) and MM_CALLS_RTCD_AUTH_KEY in Mattermost's environment, else the CLIENT_ID:AUTH_KEY@ of its RTCD service URL, else its diagnostic ID and a key it generated and stored. Make that pair one RTCD has registered (POST /register with RTCD's admin key, or [api] security.allow_self_registration = true so the plugin registers itself when its login is refused), then restart the plugin";

/// The finding for why an address's checks stopped.
fn failure_finding(url: &Url, at: &str, failure: &Failure) -> Finding {
    let base = url.base();
    match failure {
        Failure::Unreachable(why) => Finding::new(
            FindingId::RtcdApiUnreachable,
            Severity::Error,
            format!("{at}RTCD's API at {base} cannot be used: {why}"),
            format!(
                "open TCP {} from this Mattermost host to RTCD (firewalls, security groups), check that RTCD runs and listens there ([api] http.listen_address), and that the plugin's RTCD service URL names it",
                url.port
            ),
        ),
        // RTCD's ICE TCP port closes a connection whose first bytes are not a STUN frame it
        // can take: rtcd v1.2.6 service/rtc/server.go:370-382 builds pion's TCP mux, whose
        // handleConn (pion/ice tcp_mux.go:203-225 at 8a048a6; RTCD pins a fork of v4.2.0,
        // go.mod:91) reads the first RFC 4571 frame into a 512-byte buffer
        // (readStreamingPacket :443-458): "GE" is an 18,245-byte length, ErrShortBuffer, closed.
        Failure::NoAnswer(why) => Finding::new(
            FindingId::RtcdApiUnreachable,
            Severity::Error,
            format!("{at}TCP {} connects, but RTCD's API does not answer at {base}: {why}", url.port),
            format!(
                "check that {} is RTCD's API port ([api] http.listen_address, 8045 by default): RTCD's ICE port (8443) closes HTTP connections; if it is, something between this host and RTCD holds the connection (a proxy or inspecting firewall)",
                url.port
            ),
        ),
        Failure::NotRtcd(why) => Finding::new(
            FindingId::RtcdApiUnreachable,
            Severity::Error,
            format!("{at}another service answers at {base}, not RTCD's API: {why}"),
            format!(
                "point the plugin's RTCD service URL at RTCD's API ([api] http.listen_address, 8045 by default): what answers on port {} is not it (Mattermost itself or a proxy, say)",
                url.port
            ),
        ),
        Failure::WantsTls(why) => Finding::new(
            FindingId::RtcdApiUnreachable,
            Severity::Error,
            format!("{at}RTCD's API at {base} serves TLS, and this URL asks in plain HTTP: {why}"),
            format!(
                "use https://{}:{} in the plugin's RTCD service URL (RTCD's [api.http.tls] is on)",
                url.host, url.port
            ),
        ),
        Failure::Tls(why) => Finding::new(
            FindingId::RtcdApiUnreachable,
            Severity::Error,
            format!("{at}TLS to RTCD's API at {base} fails: {why}"),
            format!(
                "the Mattermost host must trust RTCD's certificate for {}: use one from a public CA for that name, or add its CA to this host's trust store (Go also reads SSL_CERT_FILE)",
                url.host
            ),
        ),
        Failure::AuthFailed { why, login } => Finding::new(
            FindingId::RtcdApiAuthFailed,
            Severity::Error,
            format!(
                "{at}RTCD refused the plugin's credentials on /ws: {why}{} — the plugin's WebSocket dial fails with \"websocket: bad handshake\"",
                login.as_ref().map(|l| format!("; {l}")).unwrap_or_default()
            ),
            CREDS_FIX,
        ),
        Failure::WsFailed(why) => Finding::new(
            FindingId::RtcdWsFailed,
            Severity::Error,
            format!("{at}the WebSocket upgrade to {}/ws does not complete: {why}", root(url)),
            "make sure nothing between Mattermost and RTCD (reverse proxy, load balancer) answers /ws itself or drops its Upgrade and Connection headers",
        ),
    }
}

fn address_findings(url: &Url, at: &str, run: &AddrRun, min_text: &str) -> Vec<Finding> {
    let mut out: Vec<Finding> = run
        .failure
        .as_ref()
        .map(|f| failure_finding(url, at, f))
        .into_iter()
        .collect();
    let ver = run.version.as_deref().unwrap_or_default();
    match &run.verdict {
        Some(PluginVerdict::TooOld) => out.push(Finding::new(
            FindingId::RtcdVersionOld,
            Severity::Error,
            format!("{at}RTCD {ver} is older than {min_text}: the Calls plugin refuses it (\"minimum version check failed\"; a prerelease counts below its release)"),
            "upgrade RTCD to the version the Calls plugin asks for (its release notes name it), e.g. the latest release from github.com/mattermost/rtcd/releases",
        )),
        Some(PluginVerdict::Unparsable(e)) => out.push(Finding::new(
            FindingId::RtcdVersionInvalid,
            Severity::Error,
            format!("{at}RTCD reports the version {ver:?}, which the Calls plugin cannot parse as a semantic version ({e}): the plugin refuses this RTCD (\"failed to parse currVersion\")"),
            "run an RTCD release build (its /version says vMAJOR.MINOR.PATCH), e.g. the latest release from github.com/mattermost/rtcd/releases",
        )),
        _ => {}
    }
    out
}

fn proxy_finding(
    url: &Url,
    p: &goproxy::Proxy,
    env: &goproxy::ProxyEnv,
    no_proxy: &str,
    source: &procenv::EnvSource,
    shown: Option<String>,
) -> Finding {
    let np = env
        .no_proxy
        .as_ref()
        .map_or("NO_PROXY is not set".to_string(), |(k, v)| {
            format!("{k}={v} does not exclude {}", url.host)
        });
    let whose = match source.pid {
        Some(pid) => format!("in the environment of the running Mattermost server (pid {pid})"),
        None => "in this tool's environment".to_string(),
    };
    let effect = if url.https {
        format!(
            "the plugin still dials RTCD's own address and sends the proxy's `CONNECT {}` to RTCD, in plaintext on its TLS port: every request fails, even GET /version",
            url.authority()
        )
    } else {
        format!(
            "the plugin still dials RTCD's own address, and gorilla/websocket sends the proxy's `CONNECT {}` to RTCD itself: RTCD answers 404, so the plugin's WebSocket dial fails with \"Not Found\" (plain requests such as GET /version still work)",
            url.authority()
        )
    };
    Finding::new(
        FindingId::ProxyInPath,
        Severity::Error,
        format!(
            "{}={} {whose} applies to {} under Go's proxy rules and {np}: {effect} — Calls plugin issue #379{}",
            p.var,
            p.raw,
            url.base(),
            shown.map(|s| format!(". Seen here: {s}")).unwrap_or_default()
        ),
        format!(
            "set NO_PROXY={no_proxy} in the Mattermost server's environment (systemd unit `Environment=NO_PROXY={no_proxy}`, or the container's environment) and restart Mattermost, so the plugin talks to RTCD without the proxy"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str, id: Option<&str>, key: Option<&str>) -> RtcdApiArgs {
        RtcdApiArgs {
            url: url.into(),
            client_id: id.map(Into::into),
            auth_key: key.map(Into::into),
            min_rtcd_version: DEFAULT_MIN_VERSION.into(),
            proxy_env: ProxyEnvArg::Own,
            json: false,
        }
    }

    #[test]
    fn credentials_from_the_url_or_the_flags() {
        let i = inputs(&args("http://mm:k3y@203.0.113.2:8045/", None, None)).unwrap();
        assert_eq!(i.url.base(), "http://203.0.113.2:8045");
        assert!(i.explicit_port);
        let c = i.creds.unwrap();
        assert_eq!((c.client_id.as_str(), c.auth_key.as_str()), ("mm", "k3y"));
        let i = inputs(&args(
            "http://mm:k3y@203.0.113.2:8045",
            Some("a"),
            Some("b"),
        ))
        .unwrap();
        assert_eq!(i.creds.unwrap().client_id, "a");
        assert!(inputs(&args("http://203.0.113.2:8045", Some("a"), None)).is_err());
        assert!(inputs(&args("ftp://x", None, None)).is_err());
        assert!(inputs(&args("203.0.113.2:8045", None, None))
            .unwrap()
            .creds
            .is_none());
    }

    #[test]
    fn a_port_must_be_written() {
        for (u, want) in [
            ("http://rtcd.example.com:8045", true),
            ("https://rtcd.example.com:443/", true),
            ("http://mm:key@rtcd.example.com:8045/x", true),
            ("https://[2001:db8::1]:8045", true),
            ("http://rtcd.example.com", false),
            ("https://rtcd.example.com/rtcd", false),
            ("http://mm:key@rtcd.example.com/", false),
            ("https://[2001:db8::1]", false),
        ] {
            assert_eq!(
                inputs(&args(u, None, None)).unwrap().explicit_port,
                want,
                "{u}"
            );
        }
    }

    #[test]
    fn ipv4_only() {
        assert_eq!(
            resolve_ipv4("203.0.113.2", 8045).unwrap(),
            vec![Ipv4Addr::new(203, 0, 113, 2)]
        );
        assert!(resolve_ipv4("2001:db8::1", 8045)
            .unwrap_err()
            .contains("IPv6"));
    }

    #[test]
    fn min_version_flag_is_a_semver() {
        assert!(parse_min_version("v1.2.5").is_ok());
        assert!(parse_min_version("1.2").is_ok());
        assert!(parse_min_version("V1.2.5").is_err());
        assert!(parse_min_version("latest").is_err());
    }
}
