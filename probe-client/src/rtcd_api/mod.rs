//! `probe-client rtcd-api URL`: from the Mattermost host, what the Calls plugin needs from
//! RTCD's API (port 8045): TCP and TLS, `/version`, `/login` with its credentials, and the
//! `/ws` WebSocket upgrade — through the proxy Go's default transport would pick (Calls plugin
//! issue #379) and, when there is one, directly as well, to say which route works.

mod checks;
mod conn;
mod goproxy;
mod report;

use probe_proto::http::Url;
use probe_proto::report::{Finding, Severity, SCHEMA};
use std::time::{Duration, Instant};

use checks::{Creds, Failure, RouteRun};
use conn::Route;
use report::{ApiReport, ProxyInfo};

#[derive(clap::Args, Debug, Clone)]
pub struct RtcdApiArgs {
    /// RTCD's API as the Calls plugin's "RTCD service URL" names it, e.g. http://rtcd:8045
    /// (credentials in it, http://CLIENT_ID:AUTH_KEY@rtcd:8045, are used for the login).
    pub url: String,
    /// The client ID the plugin logs in with.
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
    /// Print one JSON object (schema 1) instead of the human report.
    #[arg(long)]
    pub json: bool,
}

/// Whole-run bound: a filtered port or a silent proxy is judged within 10 s of starting.
const DEADLINE: Duration = Duration::from_millis(8500);

pub async fn run(args: RtcdApiArgs) -> i32 {
    let (url, creds) = match inputs(&args) {
        Ok(x) => x,
        Err(msg) => return crate::fail(msg),
    };
    let started = Instant::now();
    let deadline = started + DEADLINE;
    let env = goproxy::ProxyEnv::from_env(&|k| std::env::var(k).ok());
    let proxy = goproxy::proxy_for(&env, &url);

    let spawn = |route_proxy: Option<goproxy::Proxy>, via: &'static str| {
        let url = url.clone();
        let creds = creds.as_ref().map(|c| Creds {
            client_id: c.client_id.clone(),
            auth_key: c.auth_key.clone(),
        });
        tokio::task::spawn_blocking(move || {
            let route = route_proxy.as_ref().map_or(Route::Direct, Route::Proxy);
            checks::run(&url, route, creds.as_ref(), deadline, via)
        })
    };
    // The plugin's own route first; with a proxy, the direct route alongside.
    let main = spawn(
        proxy.clone(),
        if proxy.is_some() { "proxy" } else { "direct" },
    );
    let direct = proxy.as_ref().map(|_| spawn(None, "direct"));
    let main = match main.await {
        Ok(r) => r,
        Err(e) => return crate::fail(format!("the check crashed: {e}")),
    };
    let direct = match direct {
        Some(h) => match h.await {
            Ok(r) => Some(r),
            Err(e) => return crate::fail(format!("the direct check crashed: {e}")),
        },
        None => None,
    };

    let mut findings = route_findings(&url, &main, proxy.as_ref());
    let mut proxy_info = None;
    if let (Some(p), Some(d)) = (&proxy, &direct) {
        let no_proxy = goproxy::no_proxy_with(&env, &url.host);
        findings.push(proxy_finding(&url, p, &main, d, &no_proxy, &env));
        proxy_info = Some(ProxyInfo {
            variable: p.var.clone(),
            proxy: p.raw.clone(),
            via_proxy_ok: main.failure.is_none(),
            direct_ok: d.failure.is_none(),
            no_proxy,
        });
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let mut checks = main.checks;
    let version = main
        .version
        .or_else(|| direct.as_ref().and_then(|d| d.version.clone()));
    if let Some(d) = direct {
        checks.extend(d.checks);
    }
    let report = ApiReport {
        schema: SCHEMA,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        url: url.base(),
        ok: !findings.iter().any(|f| f.severity == Severity::Error),
        version,
        checks,
        findings,
        proxy: proxy_info,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => return crate::fail(format!("cannot encode the report: {e}")),
        }
    } else {
        print!("{}", report::render_text(&report));
    }
    if report.ok {
        0
    } else {
        1
    }
}

/// The URL without credentials, and the credentials from the flags or the URL.
fn inputs(args: &RtcdApiArgs) -> Result<(Url, Option<Creds>), String> {
    let raw = args.url.trim();
    let (scheme, rest) = raw.split_once("://").unwrap_or(("http", raw));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (mut from_url, clean) = match rest[..authority_end].rsplit_once('@') {
        Some((info, host)) => {
            let (id, key) = info.split_once(':').unwrap_or((info, ""));
            (
                Some((id.to_string(), key.to_string())),
                format!("{scheme}://{host}{}", &rest[authority_end..]),
            )
        }
        None => (None, format!("{scheme}://{rest}")),
    };
    let url = Url::parse(&clean)
        .map_err(|e| format!("{e}; give RTCD's API URL, e.g. http://rtcd.example.com:8045"))?;
    let creds = match (&args.client_id, &args.auth_key) {
        (Some(id), Some(key)) => Some(Creds { client_id: id.clone(), auth_key: key.clone() }),
        (None, None) => from_url.take().map(|(client_id, auth_key)| Creds { client_id, auth_key }),
        _ => return Err("give both --client-id and --auth-key (or neither, to skip the login and WebSocket checks)".into()),
    };
    Ok((url, creds))
}

fn route_findings(url: &Url, run: &RouteRun, proxy: Option<&goproxy::Proxy>) -> Vec<Finding> {
    let base = url.base();
    let via = proxy.map_or(String::new(), |p| {
        format!("through the proxy {} ({}): ", p.authority(), p.var)
    });
    let Some(f) = &run.failure else {
        return Vec::new();
    };
    vec![match f {
        Failure::Unreachable(why) => Finding::new(
            "rtcd_api_unreachable",
            Severity::Error,
            format!("{via}RTCD's API at {base} cannot be used: {why}"),
            format!(
                "open TCP {} from this Mattermost host to RTCD (firewalls, security groups), check that RTCD runs and listens there ([api] http.listen_address), and that the plugin's RTCD service URL names it",
                url.port
            ),
        ),
        Failure::Tls(why) => Finding::new(
            "rtcd_api_unreachable",
            Severity::Error,
            format!("{via}TLS to RTCD's API at {base} fails: {why}"),
            format!(
                "the Mattermost host must trust RTCD's certificate for {}: use one from a public CA for that name, or add its CA to this host's trust store (Go also reads SSL_CERT_FILE)",
                url.host
            ),
        ),
        Failure::AuthFailed(why) => Finding::new(
            "rtcd_api_auth_failed",
            Severity::Error,
            format!("{via}RTCD refused the plugin's credentials: {why}"),
            "use the client ID and auth key RTCD knows: in the Calls plugin's RTCD service URL (http://CLIENT_ID:AUTH_KEY@host:8045) or re-register the client with RTCD's admin API; with security.allow_self_registration the plugin registers itself",
        ),
        Failure::WsFailed(why) => Finding::new(
            "rtcd_ws_failed",
            Severity::Error,
            format!("{via}the WebSocket upgrade to {base}/ws does not complete: {why}"),
            if proxy.is_some() {
                "let the plugin reach RTCD without the proxy (see proxy_in_path), or allow WebSocket upgrades on the proxy".to_string()
            } else {
                "make sure nothing between Mattermost and RTCD (reverse proxy, load balancer) drops the Upgrade and Connection headers of /ws".to_string()
            },
        ),
    }]
}

fn outcome(run: &RouteRun) -> String {
    match &run.failure {
        None => "everything works".into(),
        Some(Failure::Unreachable(w))
        | Some(Failure::Tls(w))
        | Some(Failure::AuthFailed(w))
        | Some(Failure::WsFailed(w)) => format!("fails ({w})"),
    }
}

fn proxy_finding(
    url: &Url,
    p: &goproxy::Proxy,
    via: &RouteRun,
    direct: &RouteRun,
    no_proxy: &str,
    env: &goproxy::ProxyEnv,
) -> Finding {
    let np = env
        .no_proxy
        .as_ref()
        .map_or("NO_PROXY is not set".to_string(), |(k, v)| {
            format!("{k}={v} does not name {}", url.host)
        });
    let verdict = match (via.failure.is_none(), direct.failure.is_none()) {
        (false, true) => "the direct route works, the proxy route does not",
        (true, true) => "both routes work, but the proxy sits in the plugin's path",
        (true, false) => "only the proxy route works",
        (false, false) => "neither route works",
    };
    Finding::new(
        "proxy_in_path",
        Severity::Warning,
        format!(
            "the Calls plugin would reach RTCD through the proxy {} ({}={}; {np}): {verdict} — through the proxy: {}; direct: {}",
            p.authority(),
            p.var,
            p.raw,
            outcome(via),
            outcome(direct)
        ),
        format!(
            "set NO_PROXY={no_proxy} in the Mattermost server's environment (systemd unit `Environment=NO_PROXY={no_proxy}`, or the container's environment) and restart Mattermost, so the plugin connects to RTCD directly (Calls plugin issue #379)"
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
            json: false,
        }
    }

    #[test]
    fn credentials_from_the_url_or_the_flags() {
        let (u, c) = inputs(&args("http://mm:k3y@203.0.113.2:8045/", None, None)).unwrap();
        assert_eq!(u.base(), "http://203.0.113.2:8045");
        let c = c.unwrap();
        assert_eq!((c.client_id.as_str(), c.auth_key.as_str()), ("mm", "k3y"));
        let (_, c) = inputs(&args(
            "http://mm:k3y@203.0.113.2:8045",
            Some("a"),
            Some("b"),
        ))
        .unwrap();
        assert_eq!(c.unwrap().client_id, "a");
        assert!(inputs(&args("http://203.0.113.2:8045", Some("a"), None)).is_err());
        assert!(inputs(&args("ftp://x", None, None)).is_err());
        assert!(inputs(&args("203.0.113.2:8045", None, None))
            .unwrap()
            .1
            .is_none());
    }
}
