//! The TURN check (`--turn URL… (--turn-user U --turn-pass P | --turn-secret S)` or
//! `--mattermost URL --mm-token TOKEN`): for each TURN URL and transport, allocate with the
//! long-term credentials, install a permission for every address RTCD advertises, bind a channel
//! to the probe server and send media-shaped echo through the relay, refreshing allocation,
//! permissions and channel midway. The protocol is `probe_proto::turn` (sans IO); this module
//! owns the sockets, the clock and the control-channel exchanges.
//!
//! Every network step runs on a blocking thread under its own deadline (3 s per transaction,
//! 6 s per attempt before the echo), and all attempts' set-up runs in parallel, so a fully
//! blocked TURN server is judged within about 6 s.

mod mattermost;
mod mtu;
mod net;

// The proxy rules of `probe-client rtcd-api` (Go's `http.ProxyFromEnvironment`): a browser's
// choice for TURN over TCP/TLS and for the Mattermost API follows HTTPS_PROXY/NO_PROXY the same way.
use crate::rtcd_api::goproxy;

use net::Link;
use probe_proto::echo::{self, SessionKey};
use probe_proto::msg::{Control, Counters};
use probe_proto::path::mtu::TurnMtu;
use probe_proto::report::Finding;
use probe_proto::session::{RELAY_COOKIE_AT, RELAY_COOKIE_LEN};
use probe_proto::stats::EchoStats;
use probe_proto::turn::client::{self, Client, Config, Event, Output, TurnError};
use probe_proto::turn::{
    rest, uri, verdict, Cause, CredentialInfo, PermissionResult, Reached, StepResult, TurnAttempt,
    TurnReport, TurnTransport,
};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct TurnArgs {
    /// Test this TURN server (turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT]); repeat for several.
    #[arg(long = "turn", value_name = "URL", conflicts_with = "mattermost")]
    pub turn: Vec<String>,
    /// TURN username (static credentials; with --turn-pass).
    #[arg(
        long,
        value_name = "USER",
        requires = "turn_pass",
        conflicts_with = "turn_secret"
    )]
    pub turn_user: Option<String>,
    /// TURN password (or set PROBE_TURN_PASS, which stays out of `ps`).
    #[arg(
        long,
        value_name = "PASS",
        env = "PROBE_TURN_PASS",
        hide_env_values = true
    )]
    pub turn_pass: Option<String>,
    /// TURN REST shared secret (coturn static-auth-secret, the plugin's TURNStaticAuthSecret); credentials are made as the plugin makes them.
    #[arg(
        long,
        value_name = "SECRET",
        env = "PROBE_TURN_SECRET",
        hide_env_values = true
    )]
    pub turn_secret: Option<String>,
    /// Extra CA certificate(s), PEM, trusted for turns: besides the system's roots.
    #[arg(long, value_name = "PEM")]
    pub turn_ca: Option<PathBuf>,
    /// Mattermost's URL: fetch the ICE servers and TURN credentials as the Calls web app does.
    #[arg(long, value_name = "URL", requires = "mm_token")]
    pub mattermost: Option<String>,
    /// A Mattermost personal access token (or set PROBE_MM_TOKEN).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "PROBE_MM_TOKEN",
        hide_env_values = true
    )]
    pub mm_token: Option<String>,
}

impl TurnArgs {
    /// Whether a TURN check was asked for.
    pub fn enabled(&self) -> bool {
        !self.turn.is_empty() || self.mattermost.is_some()
    }

    /// Refuses incomplete or contradictory flags before anything runs (one sentence, exit 2).
    pub fn validate(&self) -> Result<(), String> {
        if self.turn.is_empty() {
            return Ok(());
        }
        for u in &self.turn {
            uri::parse(u)?;
        }
        match (&self.turn_user, &self.turn_pass, &self.turn_secret) {
            (Some(_), Some(_), None) | (None, _, Some(_)) => Ok(()),
            _ => Err("--turn needs --turn-user with --turn-pass, or --turn-secret".into()),
        }
    }
}

/// The probe session the TURN echo belongs to.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: u64,
    pub key: [u8; 32],
    /// The negotiated control protocol; the relay messages need 3.
    pub proto: u16,
}

/// What the run knows when the TURN check starts.
#[derive(Debug, Clone)]
pub struct Context {
    /// The probe server's UDP address as this client dialled it: the echo's peer.
    pub server_udp: SocketAddr,
    pub session: Option<Session>,
    /// The IPs RTCD advertises for UDP (from the welcome's ICE offer).
    pub advertised: Vec<IpAddr>,
    /// This computer's clock minus the probe server's (from the welcome), ms.
    pub server_offset_ms: Option<i64>,
    pub duration: Duration,
    pub interval: Duration,
    pub size: usize,
    /// When the probe server will drop the session (it allows twice the hello's duration plus
    /// 30 s): the echo through each relay is shortened to fit, or skipped.
    pub session_deadline: Option<Instant>,
    /// The path-MTU phase is on (`--no-mtu` turns it off here too).
    pub mtu: bool,
}

impl Context {
    /// What the run knows after its control phase: the welcome (session, RTCD's candidates,
    /// the server's clock), the address dialled, and the run's cadence. `run_start` bounds the
    /// session's end from below (the server opened it after that).
    pub fn from_run(
        welcome: Option<&probe_proto::msg::Welcome>,
        server_udp: SocketAddr,
        args: &crate::cli::ProbeArgs,
        run_start: Instant,
        run_start_wall_ms: u64,
    ) -> Context {
        let duration = Duration::from_secs_f64(args.duration);
        let mut advertised: Vec<IpAddr> = vec![];
        for c in welcome
            .and_then(|w| w.ice.as_ref())
            .map(|o| o.candidates.as_slice())
            .unwrap_or_default()
        {
            if c.protocol == probe_proto::msg::Transport::Udp && !advertised.contains(&c.address) {
                advertised.push(c.address);
            }
        }
        Context {
            server_udp,
            session: welcome.map(|w| Session {
                id: w.session_id,
                key: w.key,
                proto: w.proto,
            }),
            advertised,
            // The welcome came within the control phase's first seconds: good to a few seconds,
            // which is what matters against credential lifetimes of hours.
            server_offset_ms: welcome.map(|w| run_start_wall_ms as i64 - w.server_time_ms as i64),
            duration,
            interval: Duration::from_secs_f64(args.interval.unwrap_or(20.0) / 1000.0),
            size: usize::from(args.size.unwrap_or(160)),
            // probe-server keeps a session for twice the hello's duration plus 30 s.
            session_deadline: welcome.map(|_| run_start + duration * 2 + Duration::from_secs(30)),
            mtu: !args.no_mtu,
        }
    }
}

/// The TURN check's findings, and the path MTU through the relay when it was measured.
#[derive(Debug, Default)]
pub struct Outcome {
    pub findings: Vec<Finding>,
    pub mtu: Option<TurnMtu>,
}

/// Adds the TURN check to a finished report: the `turn` object and its findings (`ok` follows),
/// and the relay's path MTU as `mtu.turn`, judged (`crate::mtu::attach`, if it runs later,
/// judges the whole `mtu` object again).
pub fn attach(report: &mut probe_proto::report::Report, turn: TurnReport, out: Outcome) {
    let mut all = report.findings.clone();
    all.extend(out.findings);
    report.set_findings(all);
    report.turn = Some(turn);
    if let Some(t) = out.mtu {
        let mut m = report.mtu.take().unwrap_or_default();
        m.turn = Some(t);
        crate::mtu::attach(report, m);
    }
}

/// The run's control channel, for the relay messages (one request, one answer).
pub trait ControlChannel: Send {
    fn request(
        &mut self,
        msg: Control,
    ) -> impl std::future::Future<Output = Result<Control, String>> + Send;
}

/// How long a control answer may take.
const CONTROL_ANSWER: Duration = Duration::from_secs(3);

impl ControlChannel for crate::control::QuicControl {
    async fn request(&mut self, msg: Control) -> Result<Control, String> {
        self.call(&msg, CONTROL_ANSWER)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The run's channel, whichever came up (QUIC, or the TCP fallback).
impl ControlChannel for crate::run::Ctl {
    async fn request(&mut self, msg: Control) -> Result<Control, String> {
        crate::run::Ctl::request(self, &msg).await
    }
}

/// One TURN server's URL with the credentials to use on it.
#[derive(Debug, Clone)]
struct Plan {
    uri: uri::TurnUri,
    transport: TurnTransport,
    username: String,
    password: String,
}

const TRANSACTION: Duration = Duration::from_secs(3);
const SETUP_BOUND: Duration = Duration::from_secs(6);
const CHANNEL: u16 = 0x4000;
const LIFETIME_S: u32 = 600;

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn seed() -> [u8; 32] {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the OS random source works");
    b
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the whole check. `control` sends one control message on the run's control channel and
/// returns the answer.
pub async fn check<C: ControlChannel>(
    args: &TurnArgs,
    ctx: &Context,
    control: &mut C,
    fetched: Option<mattermost::Fetched>,
) -> (TurnReport, Outcome) {
    let mut report = TurnReport::default();
    let (servers, skew) = servers(args, ctx, &mut report, fetched);
    if let Some(s) = servers.first() {
        report.credentials = Some(credential_info(&s.username, skew));
    }
    let mut plans = plans(&servers, &mut report);
    let tls = tls_for(&mut plans, args, &mut report);

    // Set-up of every attempt at once: a blocked server costs its bound once, not per URL.
    let handles: Vec<_> = plans
        .into_iter()
        .map(|plan| {
            let ctx = ctx.clone();
            let tls = tls.clone();
            tokio::task::spawn_blocking(move || setup(&plan, &ctx, tls))
        })
        .collect();
    let mut lives = vec![];
    for h in handles {
        let (attempt, live) = h.await.expect("set-up does not panic");
        report.attempts.push(attempt);
        lives.push(live);
    }
    let first_new = report.attempts.len() - lives.len();
    let mut mtu = None;
    for (i, live) in lives.into_iter().enumerate() {
        let Some(live) = live else { continue };
        let attempt = &mut report.attempts[first_new + i];
        // Path MTU once, on the first UDP allocation that echoed.
        let m = relay_echo(attempt, live, ctx, control, ctx.mtu && mtu.is_none()).await;
        mtu = mtu.or(m);
    }
    report.ok = report.attempts.iter().any(|a| a.reached == Reached::Echoed);
    let findings = verdict::findings(&report);
    (report, Outcome { findings, mtu })
}

/// TURN URLs with the credentials to use on them.
struct Servers {
    urls: Vec<String>,
    username: String,
    password: String,
}

/// The clock offset to judge credential expiry by, and whose clock it is measured against.
type Skew = Option<(i64, &'static str)>;

/// With `--mattermost`, the web app's two requests, made before the run: a token Mattermost
/// refuses (401) is the user's input, not the plugin's settings, so it ends the run at once (exit
/// 2) instead of a finding about TURNStaticAuthSecret after the whole test.
pub async fn prefetch(args: &TurnArgs) -> Result<Option<mattermost::Fetched>, String> {
    let Some(mm) = args.mattermost.clone() else {
        return Ok(None);
    };
    let token = args.mm_token.clone().unwrap_or_default();
    let fetched =
        tokio::task::spawn_blocking(move || mattermost::fetch(&mm, &token, Duration::from_secs(5)))
            .await
            .map_err(|e| format!("the Mattermost request failed: {e}"))?;
    if fetched.endpoint.status == Some(401) {
        return Err(format!(
            "Mattermost refused the token given with --mm-token (HTTP 401 on {}): give a valid personal \
             access token or session token (--mm-token or PROBE_MM_TOKEN); users' calls are not affected",
            fetched.endpoint.url
        ));
    }
    Ok(Some(fetched))
}

/// The TURN servers to test: from Mattermost, as the Calls web app gets them ([`prefetch`]), or
/// from the flags.
fn servers(
    args: &TurnArgs,
    ctx: &Context,
    report: &mut TurnReport,
    fetched: Option<mattermost::Fetched>,
) -> (Vec<Servers>, Skew) {
    let mut skew = ctx.server_offset_ms.map(|ms| (ms, "probe-server"));
    let Some(fetched) = fetched.filter(|_| args.mattermost.is_some()) else {
        report.source = "flags".into();
        let (username, password) = flag_credentials(args);
        let s = Servers {
            urls: args.turn.clone(),
            username,
            password,
        };
        return (vec![s], skew);
    };
    report.source = "mattermost".into();
    if let Some(ms) = fetched.skew_ms {
        skew = Some((ms, "mattermost"));
    }
    report.endpoint = Some(fetched.endpoint);
    let servers = fetched
        .servers
        .into_iter()
        .map(|s| Servers {
            urls: s.urls,
            username: s.username,
            password: s.credential,
        })
        .collect();
    (servers, skew)
}

/// The username and password the flags give, REST ones made from a shared secret.
fn flag_credentials(args: &TurnArgs) -> (String, String) {
    match (&args.turn_secret, &args.turn_user, &args.turn_pass) {
        (Some(secret), user, _) => {
            // As the plugin: expiry = now + TURNCredentialsExpirationMinutes (240).
            let c = rest::credentials(
                secret,
                user.as_deref().unwrap_or("probe"),
                now_unix() + rest::PLUGIN_DEFAULT_MINUTES * 60,
            );
            (c.username, c.password)
        }
        (None, Some(u), Some(p)) => (u.clone(), p.clone()),
        _ => (String::new(), String::new()),
    }
}

fn credential_info(user: &str, skew: Skew) -> CredentialInfo {
    let expiry = rest::expiry_of(user);
    CredentialInfo {
        kind: if expiry.is_some() { "rest" } else { "static" }.into(),
        username: user.to_string(),
        expires_at: expiry.map(|t| probe_proto::report::rfc3339(t * 1000)),
        valid_for_s: expiry.map(|t| t as i64 - now_unix() as i64),
        clock_skew_ms: skew.map(|(ms, _)| ms),
        skew_reference: skew.map(|(_, r)| r.to_string()),
    }
}

/// One plan per URL and transport; a URL that does not parse is an attempt that failed.
fn plans(servers: &[Servers], report: &mut TurnReport) -> Vec<Plan> {
    let mut plans = vec![];
    for s in servers {
        for u in &s.urls {
            match uri::parse(u) {
                Ok(parsed) => {
                    for t in parsed.transports.clone() {
                        plans.push(Plan {
                            uri: parsed.clone(),
                            transport: t,
                            username: s.username.clone(),
                            password: s.password.clone(),
                        });
                    }
                }
                // STUN entries from Mattermost are not this check's business.
                Err(_) if u.starts_with("stun") => {}
                Err(e) => {
                    let mut a = TurnAttempt::new(u, TurnTransport::Udp);
                    a.error = Some(e);
                    a.cause = Some(Cause::Protocol);
                    report.attempts.push(a);
                }
            }
        }
    }
    plans
}

/// The TLS configuration for `turns:` plans; when it cannot be made, those plans become
/// failed attempts.
fn tls_for(
    plans: &mut Vec<Plan>,
    args: &TurnArgs,
    report: &mut TurnReport,
) -> Option<Arc<rustls::ClientConfig>> {
    if !plans.iter().any(|p| p.transport == TurnTransport::Tls) {
        return None;
    }
    match net::tls_config(args.turn_ca.as_deref()) {
        Ok(c) => Some(c),
        Err(e) => {
            for p in plans.iter().filter(|p| p.transport == TurnTransport::Tls) {
                let mut a = TurnAttempt::new(&p.uri.raw, p.transport);
                a.error = Some(e.clone());
                a.cause = Some(Cause::Tls);
                report.attempts.push(a);
            }
            plans.retain(|p| p.transport != TurnTransport::Tls);
            None
        }
    }
}

/// An allocation with a channel to the probe server, ready for echo.
struct Live {
    link: Box<dyn Link>,
    client: Client,
    relayed: SocketAddr,
    /// The peers whose permissions were installed (refreshed midway).
    permitted: Vec<IpAddr>,
    /// Whether the channel to the probe server is bound.
    channel: bool,
}

fn step(name: &str, ok: bool, ms: Option<f64>) -> StepResult {
    StepResult {
        step: name.into(),
        ok,
        ms,
        peer: None,
        code: None,
        detail: None,
    }
}

/// One transaction to its end.
fn transact(link: &mut dyn Link, c: &mut Client, first: Vec<u8>) -> Result<Event, String> {
    link.send(&first).map_err(|e| io_text(&e))?;
    loop {
        let until = c.poll_timeout().expect("a transaction is pending");
        let out = match link.recv(until).map_err(|e| io_text(&e))? {
            Some(msg) => c.handle(Instant::now(), &msg),
            None => c.handle_timeout(Instant::now()),
        };
        match out {
            Output::Transmit(b) => link.send(&b).map_err(|e| io_text(&e))?,
            Output::Event(e) => return Ok(e),
            Output::Data { .. } | Output::Nothing => {}
        }
    }
}

fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            "port unreachable (ICMP): nothing listens there".into()
        }
        _ => e.to_string(),
    }
}

fn explain(op: client::Op, e: &TurnError) -> String {
    format!("{}: {e}", op.label())
}

/// Why a link to one of the server's addresses did not open.
enum LinkFailed {
    /// Try the server's next address.
    NextAddress,
    /// Give up on this plan.
    Stop,
}

fn setup(
    plan: &Plan,
    ctx: &Context,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> (TurnAttempt, Option<Live>) {
    let mut a = TurnAttempt::new(&plan.uri.raw, plan.transport);
    let deadline = Instant::now() + SETUP_BOUND;
    let Some(addrs) = resolve(&mut a, plan) else {
        return (a, None);
    };
    let proxy = if plan.transport == TurnTransport::Udp {
        None
    } else {
        let env = goproxy::ProxyEnv::from_env(&|k| std::env::var(k).ok());
        let url = probe_proto::http::Url {
            https: true,
            host: plan.uri.host.clone(),
            port: plan.uri.port,
            path: String::new(),
        };
        goproxy::proxy_for(&env, &url).filter(|p| p.scheme == "http")
    };
    for addr in addrs {
        if Instant::now() >= deadline {
            break;
        }
        a.server = Some(addr.to_string());
        a.steps.clear();
        let opened = match plan.transport {
            TurnTransport::Udp => open_udp(&mut a, addr),
            TurnTransport::Tcp | TurnTransport::Tls => {
                open_stream(&mut a, plan, addr, proxy.as_ref(), tls.clone(), deadline)
            }
        };
        let link = match opened {
            Ok(link) => link,
            Err(LinkFailed::NextAddress) => continue,
            Err(LinkFailed::Stop) => return (a, None),
        };
        match allocate_and_bind(&mut a, plan, ctx, link) {
            Some(live) => return (a, Some(live)),
            None if a.cause == Some(Cause::Unreachable) => continue,
            None => return (a, None),
        }
    }
    (a, None)
}

/// The TURN server's addresses, IPv4 first; `None` (with the attempt's error) when there are
/// none.
fn resolve(a: &mut TurnAttempt, plan: &Plan) -> Option<Vec<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = match (plan.uri.host.as_str(), plan.uri.port).to_socket_addrs()
    {
        Ok(it) => it.collect(),
        Err(e) => {
            a.error = Some(format!("cannot resolve {}: {e}", plan.uri.host));
            a.cause = Some(Cause::Unreachable);
            return None;
        }
    };
    // IPv4 first, as the relay is allocated for IPv4 and most TURN deployments are.
    addrs.sort_by_key(|s| s.is_ipv6());
    a.resolved = addrs.iter().map(|s| s.ip().to_string()).collect();
    if addrs.is_empty() {
        a.error = Some(format!("{} has no address", plan.uri.host));
        a.cause = Some(Cause::Unreachable);
        return None;
    }
    Some(addrs)
}

fn open_udp(a: &mut TurnAttempt, addr: SocketAddr) -> Result<Box<dyn Link>, LinkFailed> {
    match net::UdpLink::open(addr) {
        Ok(l) => Ok(Box::new(l)),
        Err(e) => {
            a.error = Some(format!("UDP socket: {e}"));
            a.cause = Some(Cause::Unreachable);
            Err(LinkFailed::NextAddress)
        }
    }
}

/// A TCP or TLS link to `addr`, through the HTTP proxy a browser would use; each step it
/// takes is recorded in the attempt.
fn open_stream(
    a: &mut TurnAttempt,
    plan: &Plan,
    addr: SocketAddr,
    proxy: Option<&goproxy::Proxy>,
    tls: Option<Arc<rustls::ClientConfig>>,
    deadline: Instant,
) -> Result<Box<dyn Link>, LinkFailed> {
    let proxy_addr = match proxy {
        Some(p) => match (p.host.as_str(), p.port).to_socket_addrs() {
            Ok(mut it) => it.next().map(|s| (p, s)),
            Err(e) => {
                a.error = Some(format!("cannot resolve the proxy {}: {e}", p.host));
                a.cause = Some(Cause::Unreachable);
                return Err(LinkFailed::Stop);
            }
        },
        None => None,
    };
    a.proxy = proxy_addr.map(|(p, _)| format!("{} ({})", net::proxy_authority(p), p.var));
    let tls_arg = match plan.transport {
        TurnTransport::Tls => tls.map(|c| (c, plan.uri.host.as_str())),
        _ => None,
    };
    match net::open_stream(addr, &plan.uri.authority(), proxy_addr, tls_arg, deadline) {
        Ok(o) => {
            a.steps.push(step("connect", true, Some(o.connect_ms)));
            if let Some(t) = o.tls_ms {
                let mut s = step("tls", true, Some(t));
                s.detail = o.tls_version;
                a.steps.push(s);
            }
            a.reached = Reached::Connected;
            Ok(Box::new(net::StreamLink::new(o.stream)))
        }
        Err(net::OpenError::Tls(e)) => {
            a.steps.push(step("connect", true, None));
            let mut s = step("tls", false, None);
            s.detail = Some(e.clone());
            a.steps.push(s);
            a.error = Some(e);
            a.cause = Some(Cause::Tls);
            a.reached = Reached::Connected;
            Err(LinkFailed::NextAddress)
        }
        Err(net::OpenError::Connect(e) | net::OpenError::Proxy(e)) => {
            let mut s = step("connect", false, None);
            s.detail = Some(e.clone());
            a.steps.push(s);
            a.error = Some(e);
            a.cause = Some(Cause::Unreachable);
            Err(LinkFailed::NextAddress)
        }
    }
}

/// Whether a relay could ever send to `ip`.
fn relayable(ip: &IpAddr) -> bool {
    let ip = ip.to_canonical();
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || link_local)
}

fn allocate_and_bind(
    a: &mut TurnAttempt,
    plan: &Plan,
    ctx: &Context,
    mut link: Box<dyn Link>,
) -> Option<Live> {
    let mut c = Client::new(
        Config {
            username: plan.username.clone(),
            password: plan.password.clone(),
            stream: plan.transport != TurnTransport::Udp,
            timeout: TRANSACTION,
            software: Some(format!("calls-probe/{}", env!("CARGO_PKG_VERSION"))),
            ipv6_relay: ctx.server_udp.is_ipv6(),
        },
        seed(),
    );
    let relayed = allocate(a, link.as_mut(), &mut c)?;
    // A permission for every address RTCD advertises, then the probe server's own address.
    // Loopback and link-local candidates are left out: no relay can reach them (coturn refuses
    // loopback peers by default), and a browser's other candidates cover for them. Private
    // ones stay: a 403 there is exactly plugin issue #1143.
    let mut peers: Vec<(IpAddr, bool)> = ctx
        .advertised
        .iter()
        .filter(|ip| relayable(ip))
        .map(|ip| (*ip, true))
        .collect();
    if !ctx.advertised.contains(&ctx.server_udp.ip()) {
        peers.push((ctx.server_udp.ip(), false));
    }
    let mut permitted = vec![];
    for (ip, rtcd) in peers {
        if permit(a, link.as_mut(), &mut c, ip, rtcd) {
            permitted.push(ip);
        }
    }
    if !permitted.is_empty() {
        a.reached = Reached::Permitted;
    }
    if !permitted.contains(&ctx.server_udp.ip()) {
        a.error = Some(format!(
            "no permission for the probe server {}: no echo through the relay",
            ctx.server_udp.ip()
        ));
        return None;
    }
    let channel = bind_channel(a, link.as_mut(), &mut c, ctx.server_udp);
    Some(Live {
        link,
        client: c,
        relayed,
        permitted,
        channel,
    })
}

/// The Allocate transaction: the relayed address, or `None` with the attempt's error.
fn allocate(a: &mut TurnAttempt, link: &mut dyn Link, c: &mut Client) -> Option<SocketAddr> {
    let first = c.allocate(Instant::now());
    let ev = transact(link, c, first);
    a.stale_nonces = c.stale_nonces;
    a.software = c.server_software.clone();
    match ev {
        Ok(Event::Allocated {
            relayed,
            mapped,
            elapsed,
            ..
        }) => {
            a.steps.push(step("allocate", true, Some(ms(elapsed))));
            a.relayed = Some(relayed.to_string());
            a.relayed_private = probe_proto::rtcd::is_private(relayed.ip());
            a.mapped = mapped.map(|m| m.to_string());
            a.reached = Reached::Allocated;
            a.error = None;
            a.cause = None;
            Some(relayed)
        }
        Ok(Event::Failed { op, error, elapsed }) => {
            let mut s = step("allocate", false, Some(ms(elapsed)));
            if let TurnError::Response(e) = &error {
                s.code = Some(e.code);
            }
            s.detail = Some(error.to_string());
            a.steps.push(s);
            a.cause = Some(client::cause(&error));
            a.error = Some(explain(op, &error));
            None
        }
        Ok(other) => {
            a.error = Some(format!("unexpected answer to Allocate: {other:?}"));
            a.cause = Some(Cause::Protocol);
            None
        }
        Err(e) => {
            a.steps.push(StepResult {
                detail: Some(e.clone()),
                ..step("allocate", false, None)
            });
            a.error = Some(format!("Allocate: {e}"));
            a.cause = Some(Cause::Unreachable);
            None
        }
    }
}

/// A CreatePermission for `ip` (`rtcd`: one of RTCD's advertised addresses), recorded as a
/// step and a permission result; whether it was granted.
fn permit(
    a: &mut TurnAttempt,
    link: &mut dyn Link,
    c: &mut Client,
    ip: IpAddr,
    rtcd: bool,
) -> bool {
    let req = c.create_permission(Instant::now(), ip);
    let (ok, code, detail, elapsed) = match transact(link, c, req) {
        Ok(Event::PermissionCreated { elapsed, .. }) => (true, None, None, Some(elapsed)),
        Ok(Event::Failed { error, elapsed, .. }) => {
            let code = match &error {
                TurnError::Response(e) => Some(e.code),
                _ => None,
            };
            (false, code, Some(error.to_string()), Some(elapsed))
        }
        Ok(other) => (false, None, Some(format!("{other:?}")), None),
        Err(e) => (false, None, Some(e), None),
    };
    a.steps.push(StepResult {
        peer: Some(ip.to_string()),
        code,
        detail: detail.clone(),
        ..step("permission", ok, elapsed.map(ms))
    });
    a.permissions.push(PermissionResult {
        peer: ip.to_string(),
        rtcd,
        ok,
        code,
        detail,
    });
    ok
}

/// Binds the echo channel to the probe server; whether it is bound.
fn bind_channel(
    a: &mut TurnAttempt,
    link: &mut dyn Link,
    c: &mut Client,
    server: SocketAddr,
) -> bool {
    let req = c.channel_bind(Instant::now(), CHANNEL, server);
    match transact(link, c, req) {
        Ok(Event::ChannelBound { elapsed, .. }) => {
            a.steps.push(StepResult {
                peer: Some(server.to_string()),
                ..step("channel_bind", true, Some(ms(elapsed)))
            });
            a.reached = Reached::ChannelBound;
            true
        }
        Ok(Event::Failed { error, elapsed, .. }) => {
            a.steps.push(StepResult {
                peer: Some(server.to_string()),
                detail: Some(error.to_string()),
                ..step("channel_bind", false, Some(ms(elapsed)))
            });
            a.error = Some(explain(client::Op::ChannelBind, &error));
            false
        }
        Ok(_) | Err(_) => false,
    }
}

/// Sends `data` to the probe server through the relay: on the channel when bound, else in a
/// Send indication.
fn send_relayed(live: &mut Live, peer: SocketAddr, data: &[u8]) -> std::io::Result<()> {
    let bytes = if live.channel {
        live.client.channel_data(CHANNEL, data)
    } else {
        live.client.send_indication(peer, data)
    };
    live.link.send(&bytes)
}

/// Echo through the relay to the probe server, then (`mtu`, UDP, echo came back) the path MTU
/// through it on the same allocation, then the allocation's release.
async fn relay_echo<C: ControlChannel>(
    a: &mut TurnAttempt,
    live: Live,
    ctx: &Context,
    control: &mut C,
    mtu: bool,
) -> Option<TurnMtu> {
    let mut live = relay_echo_steps(a, live, ctx, control).await;
    let session = ctx.session.as_ref().filter(|_| mtu);
    let session =
        session.filter(|_| a.reached == Reached::Echoed && a.transport == TurnTransport::Udp);
    let mut found = None;
    if let Some(s) = session {
        let probe = mtu::Probe {
            url: a.url.clone(),
            key: s.key,
            session: s.id,
            peer: ctx.server_udp,
        };
        let (back, m) = tokio::task::spawn_blocking(move || {
            let m = mtu::run(&mut live, &probe);
            (live, m)
        })
        .await
        .expect("the MTU probes do not panic");
        live = back;
        found = m;
    }
    release(live).await;
    found
}

/// The server's consent, priming, the echo with its counters before and after, and the
/// verdict; each step that fails records why and ends the echo. Hands the allocation back.
async fn relay_echo_steps<C: ControlChannel>(
    a: &mut TurnAttempt,
    mut live: Live,
    ctx: &Context,
    control: &mut C,
) -> Live {
    let session = match relay_session(ctx) {
        Ok(s) => s,
        Err(e) => {
            a.error = Some(e);
            return live;
        }
    };
    // Padded so the answer is never larger (the server's anti-amplification rule).
    let pad = vec![0u8; 128];
    if let Err(e) = add_relay(control, &session, live.relayed, &pad).await {
        a.error = Some(e);
        return live;
    }
    let Some(duration) = echo_duration(ctx) else {
        a.error = Some("the probe session ends before echo through this relay could run (fewer TURN URLs, or a longer --duration, give it time)".into());
        return live;
    };
    let key = session.key;
    let peer = ctx.server_udp;
    let size = ctx
        .size
        .clamp(RELAY_COOKIE_AT + RELAY_COOKIE_LEN, echo::MAX_LEN);
    let (live_back, cookie) = tokio::task::spawn_blocking(move || {
        let cookie = prime(&mut live, &key, session.id, peer, size);
        (live, cookie)
    })
    .await
    .expect("priming does not panic");
    live = live_back;
    let cookie = match cookie {
        Ok(c) => c,
        Err(e) => {
            a.steps.push(StepResult {
                detail: Some(e.clone()),
                ..step("echo", false, None)
            });
            a.error = Some(e);
            return live;
        }
    };
    let finish = Control::RelayFinish {
        session_id: session.id,
        pad,
    };
    let before = relay_counters(control, finish.clone()).await;
    let opts = EchoOpts {
        key,
        session: session.id,
        peer,
        cookie,
        size,
        interval: ctx.interval,
        duration,
    };
    let (live_back, run) = tokio::task::spawn_blocking(move || {
        let run = echo_run(&mut live, &opts);
        (live, run)
    })
    .await
    .expect("echo does not panic");
    let after = relay_counters(control, finish).await;
    record_echo(a, run, before, after);
    live_back
}

/// The probe session the echo belongs to, when there is one that can take it.
fn relay_session(ctx: &Context) -> Result<Session, String> {
    let Some(session) = ctx.session.clone() else {
        return Err("no probe session (control channel down): no echo through the relay".into());
    };
    if session.proto < 3 {
        return Err(format!(
            "the probe server speaks control protocol {} and cannot take echo through a relay (needs 3; upgrade probe-server)",
            session.proto
        ));
    }
    Ok(session)
}

/// Asks the probe server to take echo from the relayed address.
async fn add_relay<C: ControlChannel>(
    control: &mut C,
    session: &Session,
    relayed: SocketAddr,
    pad: &[u8],
) -> Result<(), String> {
    let msg = Control::RelayPeer {
        session_id: session.id,
        relayed,
        pad: pad.to_vec(),
    };
    match control.request(msg).await {
        Ok(Control::RelayAdded { accepted: true, .. }) => Ok(()),
        Ok(Control::RelayAdded { reason, .. }) => Err(format!(
            "the probe server refused the relay: {}",
            reason.unwrap_or_default()
        )),
        Ok(other) => Err(format!("unexpected control answer {other:?}")),
        Err(e) => Err(format!("control channel: {e}")),
    }
}

/// How long the echo through this relay may run before the probe session ends; `None` when
/// too short to be worth it.
fn echo_duration(ctx: &Context) -> Option<Duration> {
    // Priming, two control round trips and the grace period need about 3 s besides the echo.
    let duration = match ctx.session_deadline {
        Some(end) => {
            let left = end.saturating_duration_since(Instant::now());
            ctx.duration
                .min(left.saturating_sub(Duration::from_secs(4)))
        }
        None => ctx.duration,
    };
    (duration >= Duration::from_millis(500)).then_some(duration)
}

/// The server's relay counters (what it received and sent for the relay), if it answers.
async fn relay_counters<C: ControlChannel>(control: &mut C, finish: Control) -> Option<Counters> {
    match control.request(finish).await {
        Ok(Control::RelayCounters(c)) => Some(c),
        _ => None,
    }
}

/// The echo's summary (one-way losses from the server's counters) and the refreshes' outcome.
fn record_echo(
    a: &mut TurnAttempt,
    run: EchoRun,
    before: Option<Counters>,
    after: Option<Counters>,
) {
    let delta = |f: fn(&Counters) -> u64| match (before, after) {
        (Some(b), Some(a)) => Some(f(&a).saturating_sub(f(&b))),
        _ => None,
    };
    let summary = run.stats.summary(delta(|c| c.udp_rx), delta(|c| c.udp_tx));
    let echoed = summary.received > 0;
    a.steps.push(StepResult {
        detail: Some(format!("{} sent, {} back", summary.sent, summary.received)),
        ..step("echo", echoed, None)
    });
    if echoed {
        a.reached = Reached::Echoed;
    } else {
        a.error = Some("no echo came back through the relay".into());
    }
    a.echo = Some(summary);
    a.refreshes_ok = run.refreshes_ok;
    a.refresh_failures = run.refresh_failures;
    for f in &a.refresh_failures {
        a.steps.push(StepResult {
            detail: Some(f.clone()),
            ..step("refresh", false, None)
        });
    }
    if run.refreshes_ok > 0 {
        a.steps.push(step("refresh", true, None));
    }
}

/// Releases the allocation (Refresh with lifetime 0), without waiting for the answer; a
/// stream's close releases it anyway.
async fn release(mut live: Live) {
    let _ = tokio::task::spawn_blocking(move || {
        let bytes = live.client.refresh(Instant::now(), 0);
        let _ = live.link.send(&bytes);
        let _ = live.link.recv(Instant::now() + Duration::from_millis(200));
    })
    .await;
}

/// Sends single echo requests through the relay until one comes back: its fill carries the
/// server's cookie for this relay (the return-routability check of `session::Core`).
fn prime(
    live: &mut Live,
    key: &[u8; 32],
    session: u64,
    peer: SocketAddr,
    size: usize,
) -> Result<[u8; RELAY_COOKIE_LEN], String> {
    let sk = SessionKey::new(key);
    let epoch = Instant::now();
    let mut buf = vec![0u8; echo::MAX_LEN];
    for i in 0..10u32 {
        let n = echo::encode_request(
            &sk,
            session,
            0xF000_0000 + i,
            epoch.elapsed().as_micros() as u64,
            size,
            &mut buf,
        );
        send_relayed(live, peer, &buf[..n]).map_err(|e| format!("echo through the relay: {e}"))?;
        let until = Instant::now() + Duration::from_millis(300);
        while let Some(msg) = live
            .link
            .recv(until)
            .map_err(|e| format!("echo through the relay: {e}"))?
        {
            if let Output::Data { data, .. } = live.client.handle(Instant::now(), &msg) {
                if echo::decode_reply(&sk, &data).is_ok_and(|r| r.session == session)
                    && data.len() >= RELAY_COOKIE_AT + RELAY_COOKIE_LEN
                {
                    let mut cookie = [0u8; RELAY_COOKIE_LEN];
                    cookie.copy_from_slice(
                        &data[RELAY_COOKIE_AT..RELAY_COOKIE_AT + RELAY_COOKIE_LEN],
                    );
                    return Ok(cookie);
                }
            }
        }
    }
    Err("no echo came back through the relay (10 tries in 3 s)".into())
}

struct EchoOpts {
    key: [u8; 32],
    session: u64,
    peer: SocketAddr,
    cookie: [u8; RELAY_COOKIE_LEN],
    size: usize,
    interval: Duration,
    duration: Duration,
}

struct EchoRun {
    stats: EchoStats,
    refreshes_ok: u32,
    refresh_failures: Vec<String>,
}

#[derive(Clone, Copy)]
enum Refresh {
    Allocation,
    Permission(IpAddr),
    Channel,
}

/// The midway refreshes: when they start, those still to send, and the one in flight.
struct Refresher {
    at: Option<Instant>,
    queue: Vec<Refresh>,
    current: Option<Refresh>,
}

impl Refresher {
    /// When the refreshes are due, every one of them is queued (allocation, permissions,
    /// channel, in that order); with none in flight, the next is sent.
    fn poll(&mut self, now: Instant, live: &mut Live, peer: SocketAddr, run: &mut EchoRun) {
        if self.at.is_some_and(|at| now >= at) {
            self.at = None;
            self.queue.push(Refresh::Allocation);
            self.queue
                .extend(live.permitted.iter().map(|ip| Refresh::Permission(*ip)));
            if live.channel {
                self.queue.push(Refresh::Channel);
            }
            self.queue.reverse();
        }
        if self.current.is_some() {
            return;
        }
        if let Some(r) = self.queue.pop() {
            let bytes = match r {
                Refresh::Allocation => live.client.refresh(now, LIFETIME_S),
                Refresh::Permission(ip) => live.client.create_permission(now, ip),
                Refresh::Channel => live.client.channel_bind(now, CHANNEL, peer),
            };
            if live.link.send(&bytes).is_ok() {
                self.current = Some(r);
            } else {
                run.refresh_failures
                    .push("could not send the refresh".into());
            }
        }
    }
}

/// Media-shaped echo through the relay for the run's duration; midway, the allocation, the
/// permissions and the channel are refreshed (a call keeps doing this; coturn re-checks
/// denied-peer-ip then, Calls plugin issue #1143).
fn echo_run(live: &mut Live, o: &EchoOpts) -> EchoRun {
    let sk = SessionKey::new(&o.key);
    let epoch = Instant::now();
    let end = epoch + o.duration;
    let mut refresher = Refresher {
        at: Some(epoch + o.duration / 2),
        queue: vec![],
        current: None,
    };
    let mut run = EchoRun {
        stats: EchoStats::new(),
        refreshes_ok: 0,
        refresh_failures: vec![],
    };
    let mut buf = vec![0u8; echo::MAX_LEN];
    let mut seq = 0u32;
    let mut next_send = epoch;
    let grace = Duration::from_millis(500);
    loop {
        let now = Instant::now();
        if now >= end + grace && refresher.current.is_none() {
            break;
        }
        if now >= next_send && now < end {
            let t = epoch.elapsed().as_micros() as u64;
            let n = echo::encode_request(&sk, o.session, seq, t, o.size, &mut buf);
            buf[RELAY_COOKIE_AT..RELAY_COOKIE_AT + RELAY_COOKIE_LEN].copy_from_slice(&o.cookie);
            if send_relayed(live, o.peer, &buf[..n]).is_ok() {
                run.stats.on_sent(seq, t);
            }
            seq += 1;
            next_send += o.interval;
            if next_send < now {
                next_send = now + o.interval;
            }
        }
        refresher.poll(now, live, o.peer, &mut run);
        let mut until = if now < end { next_send } else { end + grace };
        if let Some(t) = live.client.poll_timeout() {
            until = until.min(t);
        }
        let out = match live.link.recv(until) {
            Ok(Some(msg)) => live.client.handle(Instant::now(), &msg),
            Ok(None) => live.client.handle_timeout(Instant::now()),
            Err(e) => {
                run.refresh_failures
                    .push(format!("the connection to the TURN server broke: {e}"));
                break;
            }
        };
        match out {
            Output::Data { data, .. } => {
                on_echo_reply(&sk, o.session, epoch, &data, &mut run.stats)
            }
            Output::Transmit(b) => {
                let _ = live.link.send(&b);
            }
            Output::Event(Event::Failed { op, error, .. }) => {
                run.refresh_failures.push(explain(op, &error));
                refresher.current = None;
            }
            Output::Event(_) => {
                run.refreshes_ok += 1;
                refresher.current = None;
            }
            Output::Nothing => {}
        }
    }
    run
}

/// Counts an echo reply of this session's run (priming's sequence numbers are left out).
fn on_echo_reply(
    sk: &SessionKey,
    session: u64,
    epoch: Instant,
    data: &[u8],
    stats: &mut EchoStats,
) {
    if let Ok(r) = echo::decode_reply(sk, data) {
        if r.session == session && r.seq < 0xF000_0000 {
            stats.on_reply(
                r.seq,
                r.client_send_us,
                r.server_recv_us,
                r.server_send_us,
                epoch.elapsed().as_micros() as u64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        turn: TurnArgs,
    }

    fn parse(args: &[&str]) -> Result<TurnArgs, String> {
        let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        t.turn.validate()?;
        Ok(t.turn)
    }

    #[test]
    fn flags_need_credentials_and_valid_urls() {
        assert!(parse(&["--turn", "turn:h:3478", "--turn-secret", "s"]).is_ok());
        assert!(parse(&["--turn", "turn:h", "--turn-user", "u", "--turn-pass", "p"]).is_ok());
        let e = parse(&["--turn", "turn:h"]).unwrap_err();
        assert!(e.contains("--turn-secret"), "{e}");
        assert!(parse(&["--turn", "stun:h", "--turn-secret", "s"]).is_err());
        assert!(
            parse(&["--turn-user", "u", "--turn", "turn:h"]).is_err(),
            "user without pass"
        );
        assert!(
            parse(&["--mattermost", "https://mm"]).is_err(),
            "token needed"
        );
        assert!(parse(&["--mattermost", "https://mm", "--mm-token", "t"])
            .unwrap()
            .enabled());
        assert!(!parse(&[]).unwrap().enabled());
    }
}
