//! Issue 17, the browser test page: Debian's headless chromium loads the page that
//! probe-server serves on its probe port and tests WebRTC to RTCD's advertised candidates.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use probe_tests::chromium::{is_png, run_page, Options, PageRun};
use probe_tests::probe::{start_server_with_state, try_run_client_env};
use probe_tests::topology::{CLIENT_IP, NAT_PUBLIC_IP};
use probe_tests::{NatConfig, Netns, ServerHandle, TempDir, Topology};
use serde_json::Value;

/// The driver itself, on a page that needs no server: it reports progress, then its result
/// after a delay; the result comes back whole and the screenshot is a real PNG.
#[test]
fn driver_reads_a_late_result_and_takes_a_screenshot() {
    let ns = Netns::new("chromium");
    let page = "data:text/html,<title>t</title><h1 id=h>waiting</h1><script>\
        window.__progress='waiting';\
        setTimeout(()=>{document.getElementById('h').textContent='done';\
        window.__result={ok:true,n:[1,2,3],ua:navigator.userAgent}},700)</script>";
    let dir = probe_tests::TempDir::new("web-driver");
    let shot = dir.path().join("driver.png");
    let run = run_page(
        Some(&ns),
        page,
        &shot,
        &Options::default(),
        Duration::from_secs(10),
    );
    let v = run
        .result
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}\n{}", run.describe()));
    assert_eq!(v["ok"], true, "{}", run.describe());
    assert_eq!(v["n"], serde_json::json!([1, 2, 3]));
    assert!(
        v["ua"].as_str().is_some_and(|u| u.contains("Chrome")),
        "{v}"
    );
    assert!(
        run.elapsed >= Duration::from_millis(700),
        "{:?}",
        run.elapsed
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{e}\n{}", run.describe()));
    assert!(is_png(&png), "not a PNG: {} bytes", png.len());
}

/// A page that never finishes: the wait ends at its deadline, names the last progress, and the
/// browser is gone afterwards.
#[test]
fn driver_gives_up_at_the_deadline_with_the_last_progress() {
    let ns = Netns::new("chromium");
    let page = "data:text/html,<script>window.__progress='stuck in phase 2'</script>";
    let dir = probe_tests::TempDir::new("web-driver");
    let started = Instant::now();
    let run = run_page(
        Some(&ns),
        page,
        &dir.path().join("stuck.png"),
        &Options::default(),
        Duration::from_secs(2),
    );
    let err = run
        .result
        .as_ref()
        .expect_err("a result from a page that sets none");
    assert!(err.contains("stuck in phase 2"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(ns.pids().is_empty(), "chromium still runs: {:?}", ns.pids());
}

/// A page that gathers ICE candidates (no servers) and reports how many are UDP.
const GATHER_PAGE: &str = "data:text/html,<script>window.__progress='gathering';\
    const pc=new RTCPeerConnection();pc.createDataChannel('x');const c=[];\
    pc.onicecandidate=e=>{if(e.candidate)c.push(e.candidate.protocol)};\
    const done=()=>{window.__result={udp:c.filter(p=>p==='udp').length,all:c.length}};\
    pc.onicegatheringstatechange=()=>{if(pc.iceGatheringState==='complete')done()};\
    setTimeout(done,3000);pc.createOffer().then(o=>pc.setLocalDescription(o))</script>";

/// The private managed policy reaches this browser and no other: with
/// `WebRtcIPHandling = disable_non_proxied_udp` chromium gathers no UDP candidate, without it
/// it gathers some (the namespace has a default route), and chromium's /etc is unchanged.
#[test]
fn driver_policy_applies_to_its_own_browser_only() {
    let ns = Netns::new("chromium");
    ns.ip_batch(&[
        // A veth pair inside the namespace: an interface with an address (no dummy module here).
        "link add v0 type veth peer name v1".into(),
        "addr add 192.0.2.2/24 dev v0".into(),
        "link set v0 up".into(),
        "link set v1 up".into(),
        "route add default via 192.0.2.1".into(),
    ]);
    let before = policy_dir_listing();
    let dir = probe_tests::TempDir::new("web-driver");
    let gather = |policy: Option<&str>| {
        let opts = Options {
            policy: policy.map(str::to_string),
            ..Options::default()
        };
        let run = run_page(
            Some(&ns),
            GATHER_PAGE,
            &dir.path().join("g.png"),
            &opts,
            Duration::from_secs(10),
        );
        match &run.result {
            Ok(v) => v.clone(),
            Err(e) => panic!("{e}\n{}", run.describe()),
        }
    };
    let open = gather(None);
    assert!(
        open["udp"].as_u64().is_some_and(|n| n > 0),
        "no UDP candidate without a policy: {open}"
    );
    let closed = gather(Some(r#"{"WebRtcIPHandling":"disable_non_proxied_udp"}"#));
    assert_eq!(
        closed["udp"], 0,
        "UDP candidates despite the policy: {closed}"
    );
    assert_eq!(policy_dir_listing(), before, "chromium's /etc changed");
}

// ---------------------------------------------------------------------------------------------
// The page against the real probe-server, through the NAT topology:
//
//   chromium ── client 198.51.100.2 ── router (NAT 203.0.113.10 → 172.31.1.2) ── probe-server
//
// The server listens on 8443 (UDP and TCP) with RTCD's config saying
// `ice_host_override = "203.0.113.10"` (right) or an unrelated address (wrong); chromium loads
// `http://203.0.113.10:8443/?t=TOKEN&deadline_ms=4000&site=…`. The client namespace has a
// default route: without one chromium gathers no candidate at all.

const PORT: u16 = 8443;
const TOKEN: &str = "web-page-token-7f3a";
/// The page's per-phase connect deadline (the page clamps it to 1000..30000 ms).
const PHASE_MS: u32 = 4000;
/// The whole page run: gathering, up to three legs (a failing one waits its 4 s), 5 s of
/// audio and 1 s of bursts on each leg that opened, the report.
const PAGE_BOUND: Duration = Duration::from_secs(50);
const SERVER_LIFETIME: Duration = Duration::from_secs(180);
/// An address nothing in the topology owns (TEST-NET-1): the wrong override.
const WRONG_OVERRIDE: &str = "192.0.2.99";
/// DTLS records (first byte 20–63, RFC 9443 / the server's demux) to the probe port, after
/// STUN: the deep packet inspection that lets ICE through and stops the handshake.
const DTLS_RULE: &str = "udp dport 8443 @th,64,8 >= 20 @th,64,8 <= 63 counter drop";
const UDP_RULE: &str = "udp dport 8443 counter drop";
/// Counts the TCP connections opened to the probe port (a SYN without ACK each).
const CONNECT_RULE: &str = "tcp dport 8443 tcp flags & (syn | ack) == syn counter";
/// TCP connections one page run opens: GET /, style.css, app.js, a POST /session per leg
/// (three at most), POST /report (the page asks with no keep-alive), and the TCP leg's
/// ICE-TCP connection.
const PAGE_CONNECTS: u64 = 8;

/// One chromium at a time: the page's deadlines are real time on two shared cores.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `target/web-shots`: the screenshots stay after the run (the README shows one).
fn shots_dir() -> std::path::PathBuf {
    let profile = probe_tests::probe::profile_dir();
    profile.parent().unwrap_or(&profile).join("web-shots")
}

struct Web {
    topo: Topology,
    server: ServerHandle,
    store: std::path::PathBuf,
    /// Seconds of audio cadence per connected leg (the page's `audio_s`): the full 5 only where
    /// the figures are checked, 1 elsewhere to keep the suite short.
    audio_s: u32,
    /// The page's per-phase connect deadline (its `deadline_ms`).
    phase_ms: u32,
    _config: TempDir,
}

/// The NAT topology and probe-server with RTCD's config advertising `ice_host_override`.
fn web(ice_host_override: &str) -> Web {
    web_with(ice_host_override, &[])
}

/// [`web`] with more probe-server arguments.
fn web_with(ice_host_override: &str, extra: &[&str]) -> Web {
    probe_tests::chromium::require_chromium();
    let topo = Topology::nat(NatConfig::default());
    let config = TempDir::new("web-rtcd");
    let rtcd = config.path().join("rtcd.toml");
    let rtc = format!("[rtc]\nice_host_override = \"{ice_host_override}\"\n");
    std::fs::write(&rtcd, rtc).expect("write rtcd.toml");
    let rtcd = rtcd.display().to_string();
    let server = start_server_with_state(
        &topo.server,
        &format!("0.0.0.0:{PORT}"),
        &[&["--rtcd-config", &rtcd, "--token", TOKEN][..], extra].concat(),
        &BTreeMap::new(),
        SERVER_LIFETIME,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let store = server
        .state_dir()
        .expect("a state dir")
        .join("results.sqlite");
    Web {
        topo,
        server,
        store,
        audio_s: 1,
        phase_ms: PHASE_MS,
        _config: config,
    }
}

impl Web {
    fn url(&self, query: &str) -> String {
        format!("http://{}:{PORT}/?{query}", self.topo.server_public_ip)
    }

    /// Loads the page in chromium in the client namespace and returns `window.__result` (the
    /// server's ReportReply); the screenshot goes to `target/web-shots/SCENARIO.png`.
    fn run(&self, scenario: &str, opts: &Options) -> (Value, PageRun) {
        let url = self.url(&format!(
            "t={TOKEN}&deadline_ms={}&audio_s={}&site=web-{scenario}",
            self.phase_ms, self.audio_s
        ));
        let shot = shots_dir().join(format!("{scenario}.png"));
        let _ = std::fs::remove_file(&shot);
        let run = run_page(Some(&self.topo.client), &url, &shot, opts, PAGE_BOUND);
        let reply = match &run.result {
            Ok(v) => v.clone(),
            Err(e) => panic!("{scenario}: {e}\n{}", self.describe(&run)),
        };
        let r = &reply["report"];
        eprintln!(
            "{scenario}: page run {:.1} s; findings {:?}; legs udp {}, tcp {}, dialed {}",
            run.elapsed.as_secs_f64(),
            ids(r),
            outcome(r, "udp"),
            outcome(r, "tcp"),
            outcome(r, "dialed")
        );
        assert!(
            reply.get("error").is_none() && reply["report"].is_object(),
            "{scenario}: the page could not complete\n{}",
            self.describe(&run)
        );
        // One source of truth, the same words everywhere: each finding's summary is in the
        // server's text rendering (probe-client's) and on the page the user sees.
        let text = reply["text"].as_str().unwrap_or_default();
        eprintln!("{scenario}: the report as text:\n{text}");
        for f in r["findings"].as_array().into_iter().flatten() {
            let summary = f["summary"].as_str().unwrap_or_default();
            assert!(
                !summary.is_empty() && text.contains(summary),
                "{scenario}: {summary:?} not in the text:\n{text}"
            );
            assert!(
                run.page_text.contains(summary),
                "{scenario}: {summary:?} not on the page:\n{}",
                run.page_text
            );
        }
        let png = std::fs::read(&shot).unwrap_or_else(|e| {
            panic!(
                "{scenario}: no screenshot {} ({e})\n{}",
                shot.display(),
                run.describe()
            )
        });
        assert!(is_png(&png), "{scenario}: {} is not a PNG", shot.display());
        (reply, run)
    }

    fn describe(&self, run: &PageRun) -> String {
        format!(
            "{}\n--- server stderr ---\n{}\n{}",
            run.describe(),
            probe_tests::tail(&self.server.stderr(), 16 * 1024),
            self.topo.dump_rulesets()
        )
    }

    /// The runs the results store kept for `site` (`probe-server results --runs --json`).
    fn stored(&self, site: &str) -> Vec<Value> {
        stored_runs(&self.store, site)
    }

    /// The store holds exactly this run for `site`, with the report the page was given.
    fn check_stored(&self, site: &str, reply: &Value) {
        assert!(
            reply["not_stored"].is_null(),
            "not stored: {}",
            reply["not_stored"]
        );
        let runs = self.stored(site);
        assert_eq!(runs.len(), 1, "runs stored for {site}: {runs:#?}");
        let row = &runs[0];
        let report = &reply["report"];
        assert_eq!(row["site"], site, "{row:#}");
        assert_eq!(row["report"]["site"], site, "{row:#}");
        assert_eq!(row["ok"], report["ok"], "{row:#}");
        assert_eq!(row["report"]["findings"], report["findings"], "{row:#}");
        // The store keeps exactly the report the page was given, browser section included.
        let (kept, given) = (numbers_as_f64(&row["report"]), numbers_as_f64(report));
        assert_eq!(kept, given, "stored and returned reports differ");
        assert_eq!(
            row["findings"],
            serde_json::json!(ids(report)),
            "the store's finding column and the report disagree: {row:#}"
        );
        // Seen from the server, the browser comes through the NAT's public side unchanged
        // (IP:PORT of the connection that posted the report, as for probe-client's uploads).
        let from = row["client_addr"].as_str().unwrap_or_default();
        assert!(from.starts_with(&format!("{CLIENT_IP}:")), "{row:#}");
    }
}

impl Web {
    /// Posts the page's report again (with the token), naming the sessions `reply`'s run
    /// opened, from the same client address: the server's answer.
    fn replay_report(&self, site: &str, reply: &Value) -> Value {
        let legs: Vec<Value> = reply["report"]["browser"]["legs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                serde_json::json!({
                    "leg": l["leg"], "session": l["session"], "deadline_ms": PHASE_MS,
                    "ice_connected_ms": null, "dtls_connected_ms": null, "dc_open_ms": null,
                    "ice_state": "", "dtls_state": "", "pc_state": "", "pairs": [],
                    "selected": null, "audio": null, "burst": null, "error": null,
                })
            })
            .collect();
        assert!(!legs.is_empty(), "no sessions in {reply:#}");
        let body = serde_json::json!({
            "site": site,
            "gathering": {"complete": true, "ms": null, "candidates": []},
            "legs": legs,
        })
        .to_string();
        let (status, head, answer) = http(&self.topo.client, post_report(TOKEN, &body));
        assert_eq!(status, 200, "{head}\n{answer}");
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"))
    }
}

/// `v` with every number as an f64: the page's JSON.stringify writes 0.0 as 0, the store
/// keeps serde's 0.0, and the two are the same figure.
fn numbers_as_f64(v: &Value) -> Value {
    match v {
        Value::Number(n) => n.as_f64().map_or(Value::Null, |f| serde_json::json!(f)),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_f64).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn ids(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["id"].as_str().map(str::to_string))
        .collect()
}

fn finding<'a>(report: &'a Value, id: &str) -> Option<&'a Value> {
    report["findings"]
        .as_array()?
        .iter()
        .find(|f| f["id"] == id)
}

fn errors(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["severity"] == "error")
        .filter_map(|f| f["id"].as_str().map(str::to_string))
        .collect()
}

/// Packets counted by every `counter` of the router's forward chain.
fn forward_counter(topo: &Topology) -> u64 {
    let done = topo
        .router
        .exec(&["nft", "list", "chain", "inet", "probe_test", "forward"]);
    let words: Vec<&str> = done.stdout.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "packets")
        .filter_map(|w| w[1].parse::<u64>().ok())
        .sum()
}

/// The report's browser section for leg `name` ("udp", "tcp", "dialed"); each leg ran once.
fn leg<'a>(report: &'a Value, name: &str) -> Option<&'a Value> {
    let legs: Vec<&Value> = report["browser"]["legs"]
        .as_array()?
        .iter()
        .filter(|l| l["leg"] == name)
        .collect();
    assert!(
        legs.len() <= 1,
        "leg {name} ran {} times: {report:#}",
        legs.len()
    );
    legs.first().copied()
}

/// The layer at which leg `name` failed ("ice", "dtls", …): "passed" when it passed end to
/// end, "not run" when the page did not run it.
fn outcome(report: &Value, name: &str) -> String {
    match leg(report, name) {
        None => "not run".into(),
        Some(l) => l["failed"].as_str().unwrap_or("passed").to_string(),
    }
}

/// (a) Nothing in the way: both legs connect, the streams lose nothing, the verdict is clean,
/// and the store keeps it.
#[test]
fn clean_path_gives_a_clean_verdict() {
    let _one = serial();
    let mut w = web(&NAT_PUBLIC_IP.to_string());
    w.audio_s = 5;
    w.topo.router_forward(&[CONNECT_RULE]);
    let (reply, run) = w.run("clean", &Options::default());
    let report = &reply["report"];
    let why = || format!("{report:#}\n{}", w.describe(&run));
    // The office test below budgets PAGE_CONNECTS per run: a page that opens more would
    // make an office behind one address hit the server's per-source limit sooner.
    let connects = forward_counter(&w.topo);
    eprintln!("the page run opened {connects} TCP connections to the probe port");
    assert!(
        (PAGE_CONNECTS / 2..=PAGE_CONNECTS).contains(&connects),
        "the page opened {connects} TCP connections, budgeted {PAGE_CONNECTS}\n{}",
        why()
    );
    assert!(
        errors(report).is_empty(),
        "error findings: {:?}\n{}",
        errors(report),
        why()
    );
    assert_eq!(report["ok"], true, "{}", why());
    assert_eq!(report["udp"]["reachable"], true, "{}", why());
    assert_eq!(report["tcp"]["reachable"], true, "{}", why());
    // The client namespace has a default route, so the browser gathers its UDP host candidate.
    let gathered = report["browser"]["gathering"]["udp"].as_u64().unwrap_or(0);
    assert!(gathered >= 1, "{}", why());
    for t in ["udp", "tcp"] {
        assert_eq!(outcome(report, t), "passed", "{t}: {}", why());
        let l = leg(report, t).expect("ran");
        for phase in ["ice_connected_ms", "dtls_connected_ms", "dc_open_ms"] {
            let ms = l[phase].as_f64();
            let within = ms.is_some_and(|m| (0.0..f64::from(PHASE_MS)).contains(&m));
            assert!(within, "{t} {phase}: {}", why());
        }
        // 5 s of audio at 50 messages a second; nothing lost either way on a clean path.
        let audio = &l["audio"];
        let sent = audio["sent"].as_u64().unwrap_or(0);
        assert!(sent >= 200, "{t} audio: {}", why());
        assert_eq!(audio["received"], sent, "{t} audio: {}", why());
        assert_eq!(audio["loss_up_pct"], 0.0, "{t} audio: {}", why());
        assert_eq!(audio["loss_down_pct"], 0.0, "{t} audio: {}", why());
        let p50 = audio["rtt_ms"]["p50"].as_f64();
        assert!(
            p50.is_some_and(|r| r.is_finite() && r > 0.0),
            "{t} audio: {}",
            why()
        );
        let burst = l["burst"]["received"].as_u64().unwrap_or(0);
        assert!(burst > 0, "{t} burst: {}", why());
        assert_eq!(
            l["server"]["audio_rx"],
            sent,
            "{t}: server count: {}",
            why()
        );
    }
    // Both advertised legs connected: no reason to try the address the page came from.
    assert_eq!(outcome(report, "dialed"), "not run", "{}", why());
    let text = reply["text"].as_str().unwrap_or_default();
    assert!(text.contains("No problems found."), "{text}\n{}", why());
    w.check_stored("web-clean", &reply);
    // The same run posted again is answered but not stored: its sessions were reported.
    let again = w.replay_report("web-clean", &reply);
    assert!(
        again["not_stored"].as_str().is_some_and(|s| !s.is_empty()),
        "a second report of the same sessions was stored: {again:#}"
    );
    assert!(again["report"].is_object(), "{again:#}");
    assert_eq!(
        w.stored("web-clean").len(),
        1,
        "one page run, one stored report"
    );
}

/// (b) The router drops UDP to the probe port: the UDP leg (and the dialed UDP reference)
/// fail, the TCP leg passes, and the verdict is `udp_blocked`.
#[test]
fn udp_blocked_fails_udp_and_passes_tcp() {
    let _one = serial();
    let w = web(&NAT_PUBLIC_IP.to_string());
    w.topo.router_forward(&[UDP_RULE]);
    let (reply, run) = w.run("udp-blocked", &Options::default());
    let report = &reply["report"];
    let why = || format!("{report:#}\n{}", w.describe(&run));
    let dropped = forward_counter(&w.topo);
    assert!(dropped > 0, "the UDP rule dropped nothing\n{}", why());
    assert_eq!(errors(report), ["udp_blocked"], "{}", why());
    assert_eq!(report["ok"], false, "{}", why());
    assert_eq!(report["udp"]["reachable"], false, "{}", why());
    // Dropped on the way in: the server never saw a connectivity check of the UDP leg.
    let udp = leg(report, "udp").expect("ran");
    assert_eq!(udp["server"]["stun_requests"], 0, "{}", why());
    assert_eq!(report["tcp"]["reachable"], true, "{}", why());
    assert_eq!(outcome(report, "udp"), "ice", "{}", why());
    assert_eq!(outcome(report, "tcp"), "passed", "{}", why());
    // The address the page came from does not answer over UDP either: not the advertisement.
    assert_eq!(outcome(report, "dialed"), "ice", "{}", why());
    w.check_stored("web-udp-blocked", &reply);
}

/// (c) RTCD advertises an address that is not its own: neither advertised leg connects, the
/// address the page was loaded from does, so the advertised address is what is wrong.
#[test]
fn wrong_ice_host_override_is_an_ice_finding() {
    let _one = serial();
    let w = web(WRONG_OVERRIDE);
    let (reply, run) = w.run("wrong-override", &Options::default());
    let report = &reply["report"];
    let why = || format!("{report:#}\n{}", w.describe(&run));
    // Neither advertised leg answered and the address in the link did: the same rule as
    // probe-client's (advertised checks fail, the dialed reference passes), so the advertised
    // address is wrong and UDP itself is not blocked (no `udp_blocked`).
    assert_eq!(errors(report), ["ice_host_override_wrong"], "{}", why());
    let f = finding(report, "ice_host_override_wrong").expect("an error finding");
    let summary = f["summary"].as_str().unwrap_or_default();
    assert!(summary.contains(WRONG_OVERRIDE), "{}", why());
    let fix = f["fix"].as_str().unwrap_or_default();
    assert!(
        fix.contains(&format!("ice_host_override = \"{NAT_PUBLIC_IP}\"")),
        "{}",
        why()
    );
    assert_eq!(report["ok"], false, "{}", why());
    assert_eq!(outcome(report, "udp"), "ice", "{}", why());
    assert_eq!(outcome(report, "tcp"), "ice", "{}", why());
    assert_eq!(outcome(report, "dialed"), "passed", "{}", why());
    w.check_stored("web-wrong-override", &reply);
}

/// (d) STUN passes, DTLS records are dropped (deep packet inspection): ICE connects on UDP,
/// DTLS never does, the verdict is `dtls_blocked`; TCP passes.
#[test]
fn dtls_dropped_after_stun_is_dtls_blocked() {
    let _one = serial();
    let w = web(&NAT_PUBLIC_IP.to_string());
    w.topo.router_forward(&[DTLS_RULE]);
    let (reply, run) = w.run("dtls-blocked", &Options::default());
    let report = &reply["report"];
    let why = || format!("{report:#}\n{}", w.describe(&run));
    let dropped = forward_counter(&w.topo);
    assert!(dropped > 0, "the DTLS rule dropped nothing\n{}", why());
    assert_eq!(errors(report), ["dtls_blocked"], "{}", why());
    assert_eq!(report["ok"], false, "{}", why());
    assert_eq!(report["tcp"]["reachable"], true, "{}", why());
    assert_eq!(outcome(report, "udp"), "dtls", "{}", why());
    assert_eq!(outcome(report, "tcp"), "passed", "{}", why());
    let udp = leg(report, "udp").expect("ran");
    assert!(
        udp["ice_connected_ms"].is_number(),
        "STUN did not pass: {}",
        why()
    );
    // The server answered the checks and never saw a DTLS record: dropped on the way in.
    let server = &udp["server"];
    let answered = server["stun_answered"].as_u64().unwrap_or(0);
    assert!(answered > 0, "{}", why());
    assert_eq!(server["dtls_records"], 0, "{}", why());
    w.check_stored("web-dtls-blocked", &reply);
}

/// (e) A managed browser policy forbids UDP outside a proxy (as companies and some VPN
/// extensions do): the browser gathers no UDP candidate, the verdict is `browser_no_udp`, not
/// a firewall. The policy lives in chromium's private mount namespace only.
#[test]
fn browser_policy_without_udp_is_browser_no_udp() {
    let _one = serial();
    let before = policy_dir_listing();
    let w = web(&NAT_PUBLIC_IP.to_string());
    let opts = Options {
        policy: Some(r#"{"WebRtcIPHandling":"disable_non_proxied_udp"}"#.into()),
        ..Options::default()
    };
    let (reply, run) = w.run("browser-no-udp", &opts);
    assert_eq!(policy_dir_listing(), before, "chromium's /etc changed");
    let report = &reply["report"];
    let why = || format!("{report:#}\n{}", w.describe(&run));
    assert_eq!(errors(report), ["browser_no_udp"], "{}", why());
    assert_eq!(report["tcp"]["reachable"], true, "{}", why());
    assert_eq!(report["browser"]["gathering"]["udp"], 0, "{}", why());
    assert_ne!(outcome(report, "udp"), "passed", "{}", why());
    assert_eq!(outcome(report, "tcp"), "passed", "{}", why());
    w.check_stored("web-browser-no-udp", &reply);
}

/// (g) probe-client beside a live page session: while a page session lives, every plain-framed
/// TCP connection's first frame is looked at for the page's ICE-TCP; probe-client's own
/// (its echo, and its TCP reachability) must still be served as before, and the page too.
#[test]
fn probe_client_runs_beside_a_live_page_session() {
    let _one = serial();
    let mut w = web(&NAT_PUBLIC_IP.to_string());
    w.audio_s = 5;
    let (reply, client) = std::thread::scope(|sc| {
        let page = sc.spawn(|| w.run("beside-client", &Options::default()));
        // The page opens its UDP leg's session after gathering (well under 3 s here) and keeps
        // a session open through both legs' streams (over 10 s on a clean path): 4 s in, one
        // is live while probe-client connects.
        std::thread::sleep(Duration::from_secs(4));
        let args = [
            format!("{NAT_PUBLIC_IP}:{PORT}"),
            "--json".into(),
            "--no-udp".into(),
            "--no-upload".into(),
            "--duration".into(),
            "3".into(),
        ];
        let env = [("PROBE_TOKEN".to_string(), TOKEN.to_string())].into();
        let client = try_run_client_env(&w.topo.client, &args, &env, Duration::from_secs(60));
        (page.join().expect("the page thread"), client)
    });
    let (reply, run) = reply;
    let report = &reply["report"];
    let why = || format!("{report:#}\n{}\n{}", client.describe(), w.describe(&run));
    let c = client
        .json
        .clone()
        .unwrap_or_else(|| panic!("probe-client gave no report\n{}", why()));
    assert_eq!(c["tcp"]["reachable"], true, "{}", why());
    let echoed = c["tcp"]["echo"]["received"].as_u64().unwrap_or(0);
    assert!(
        echoed > 0,
        "probe-client's TCP echo got nothing back\n{}",
        why()
    );
    assert_eq!(outcome(report, "udp"), "passed", "{}", why());
    assert_eq!(outcome(report, "tcp"), "passed", "{}", why());
}

/// (h) Failing runs one after another from one address (UDP blocked): each leaves two
/// sessions that never connected (UDP and dialed), which must not hold the per-address slots
/// — the report closes them. With 3 slots per address, a second run would lose its TCP leg if
/// the first run's sessions lived on.
#[test]
fn repeated_failing_runs_still_open_their_sessions() {
    let _one = serial();
    let w = web_with(
        &NAT_PUBLIC_IP.to_string(),
        &["--web-max-sessions-per-ip", "3"],
    );
    w.topo.router_forward(&[UDP_RULE]);
    for i in 1..=2 {
        let scenario = format!("repeat-{i}");
        let (reply, run) = w.run(&scenario, &Options::default());
        let report = &reply["report"];
        let why = || format!("run {i}: {report:#}\n{}", w.describe(&run));
        let udp = leg(report, "udp").unwrap_or_else(|| panic!("no UDP leg\n{}", why()));
        assert!(
            udp["session"].as_str().is_some_and(|s| !s.is_empty()),
            "the UDP leg got no session\n{}",
            why()
        );
        assert!(
            !ids(report).iter().any(|f| f == "browser_test_incomplete"),
            "{}",
            why()
        );
        assert_eq!(errors(report), ["udp_blocked"], "{}", why());
        w.check_stored(&format!("web-{scenario}"), &reply);
    }
}

/// Every path under chromium's /etc directory with its size and modification time.
fn policy_dir_listing() -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            let meta = e.metadata().ok();
            out.push(format!(
                "{} {:?} {:?}",
                e.path().display(),
                meta.as_ref().map(|m| m.len()),
                meta.and_then(|m| m.modified().ok())
            ));
            if e.path().is_dir() {
                walk(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        std::path::Path::new(probe_tests::chromium::ETC_DIR),
        &mut out,
    );
    out.sort();
    out
}

/// One HTTP/1.1 exchange from the client namespace: (status, head, body).
fn http(ns: &Netns, request: String) -> (u16, String, String) {
    let addr = std::net::SocketAddr::from((probe_tests::topology::NAT_PUBLIC_IP, PORT));
    probe_tests::netns::spawn_in_ns(ns, move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = out
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP head in {out:?}"));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        (status, head.to_string(), body.to_string())
    })
    .join()
    .expect("HTTP thread")
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {NAT_PUBLIC_IP}:{PORT}\r\nConnection: close\r\n\r\n")
}

fn post_report(token: &str, body: &str) -> String {
    format!(
        "POST /report?t={token} HTTP/1.1\r\nHost: {NAT_PUBLIC_IP}:{PORT}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// (f) Without the token nothing works: the page is one 403 sentence, a report cannot be
/// posted (and nothing is stored); with it the page is served, and the server logged the link.
#[test]
fn the_page_needs_the_token() {
    let w = web(&NAT_PUBLIC_IP.to_string());
    let ns = &w.topo.client;
    let mut sentences = Vec::new();
    for path in ["/", "/?t=wrong-token", "/index.html", "/?site=x"] {
        let (status, head, body) = http(ns, get(path));
        assert_eq!(status, 403, "GET {path}: {head}\n{body}");
        assert!(
            header(&head, "content-type").is_some_and(|c| c.starts_with("text/plain")),
            "GET {path}: {head}"
        );
        let sentence = body.trim();
        assert!(
            !sentence.is_empty() && sentence.lines().count() == 1 && sentence.ends_with('.'),
            "GET {path}: want one sentence, got {body:?}"
        );
        assert!(!body.contains(TOKEN), "the 403 leaks the token: {body}");
        sentences.push(sentence.to_string());
    }
    // A link that lost its token and one whose token was changed need different help.
    assert_ne!(
        sentences[0], sentences[1],
        "missing and wrong tokens are told apart"
    );
    assert_eq!(sentences[0], sentences[2], "{sentences:?}");
    let (status, head, body) = http(ns, get(&format!("/?t={TOKEN}")));
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(
        header(&head, "content-type").is_some_and(|c| c.starts_with("text/html")),
        "{head}"
    );
    // A forged report without the token is refused and never reaches the store.
    let body =
        r#"{"site":"forged","gathering":{"complete":true,"ms":1,"candidates":[]},"legs":[]}"#;
    let (status, head, answer) = http(ns, post_report("nope", body));
    assert_eq!(status, 403, "{head}\n{answer}");
    let err: Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert!(
        err["error"].as_str().is_some_and(|s| !s.is_empty()),
        "{answer}"
    );
    assert!(
        w.stored("forged").is_empty(),
        "a report without the token was stored"
    );
    // A large body on a route that takes none is answered on its head, not read (nor waited
    // for: it never comes).
    let start = Instant::now();
    let big = format!(
        "POST /nope HTTP/1.1\r\nHost: {NAT_PUBLIC_IP}:{PORT}\r\nContent-Length: 262144\r\n\r\n"
    );
    let (status, head, _) = http(ns, big);
    assert!(
        status != 408 && start.elapsed() < Duration::from_secs(3),
        "answered {status} after {:?}: {head}",
        start.elapsed()
    );
    let log = format!("{}{}", w.server.stdout(), w.server.stderr());
    for line in log.lines().filter(|l| l.contains("?t=")) {
        eprintln!("the server logged: {line}");
    }
    assert!(
        log.contains(&format!("?t={TOKEN}")),
        "the server did not log the link to share:\n{log}"
    );
    // The admin sees why a user got a 403, once a minute however many there were.
    let refusals: Vec<_> = log
        .lines()
        .filter(|l| l.contains("refused a request without this server's access token"))
        .collect();
    assert!(
        refusals.len() == 1 && refusals[0].contains("missing"),
        "want one log line for the five refusals, the first a missing token:\n{log}"
    );
}

/// The round trip the office test's users see to the server.
const WAN_RTT: Duration = Duration::from_millis(50);
/// Users open the page this many at once behind one NAT address (an office told "open this
/// link now" in a channel).
const OFFICE: usize = 10;

/// (j) An office behind one address opens the link at once: every request of every page is
/// answered. The per-source connection limit must hold an office's page runs, or the page's
/// script or its session requests are refused and users see a broken page or a false
/// `tcp_blocked`.
#[test]
fn an_office_behind_one_address_opens_the_page_at_once() {
    let w = web(&NAT_PUBLIC_IP.to_string());
    let addr = std::net::SocketAddr::from((NAT_PUBLIC_IP, PORT));
    let start = std::sync::Arc::new(std::sync::Barrier::new(OFFICE));
    let users: Vec<_> = (0..OFFICE)
        .map(|_| {
            let start = start.clone();
            probe_tests::netns::spawn_in_ns(&w.topo.client, move || {
                start.wait();
                // As many connections as a page run opens, each a request of the page's own;
                // the page's two files at once, as a browser fetches them.
                let page = format!("/?t={TOKEN}");
                let mut got = vec![fetch_status(addr, &page)];
                let files = ["/style.css", "/app.js"].map(|f| {
                    let f = f.to_string();
                    std::thread::spawn(move || fetch_status(addr, &f))
                });
                got.extend(files.map(|f| f.join().expect("fetch thread")));
                while got.len() < PAGE_CONNECTS as usize {
                    got.push(fetch_status(addr, &page));
                }
                got
            })
        })
        .collect();
    let answers: Vec<Result<u16, String>> = users
        .into_iter()
        .flat_map(|u| u.join().expect("user thread"))
        .collect();
    let refused: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    let ok = answers.iter().filter(|a| a == &&Ok(200)).count();
    assert_eq!(
        ok,
        answers.len(),
        "{} of {} requests refused or failed ({} not answered), first: {:?}\n{}",
        answers.len() - ok,
        answers.len(),
        refused.len(),
        refused.first(),
        probe_tests::tail(&w.server.stderr(), 4096)
    );
}

/// (k) Two people behind one address run the page at once, with one session per address:
/// each leg that finds the place taken says the server is busy and waits for it (the other
/// page's leg ends), so the pages take turns leg by leg; neither fails, both reach a clean
/// verdict.
#[test]
fn two_pages_from_one_address_take_turns() {
    let _one = serial();
    let mut w = web_with(
        &NAT_PUBLIC_IP.to_string(),
        &["--web-max-sessions-per-ip", "1"],
    );
    // Two browsers at once on two shared cores: more room for each phase than one alone gets.
    w.phase_ms = 3 * PHASE_MS;
    let runs: Vec<(Value, PageRun)> = std::thread::scope(|s| {
        let pages: Vec<_> = ["turns-1", "turns-2"]
            .map(|name| s.spawn(|| w.run(name, &Options::default())))
            .into();
        pages
            .into_iter()
            .map(|p| p.join().expect("page thread"))
            .collect()
    });
    let mut busy = 0;
    for (i, (reply, run)) in runs.iter().enumerate() {
        let report = &reply["report"];
        let why = || format!("page {}: {report:#}\n{}", i + 1, w.describe(run));
        assert_eq!(report["ok"], true, "{}", why());
        assert_eq!(outcome(report, "udp"), "passed", "{}", why());
        assert_eq!(outcome(report, "tcp"), "passed", "{}", why());
        let waits: Vec<&String> = run.console.iter().filter(|l| l.contains("busy:")).collect();
        eprintln!(
            "page {}: done after {:.1} s; waited: {waits:?}",
            i + 1,
            run.elapsed.as_secs_f64()
        );
        assert!(waits.iter().all(|l| l.contains("per address")), "{}", why());
        busy += waits.len();
    }
    assert!(busy > 0, "the pages never met a taken place");
}

/// One `GET path` on a new connection: the status, or why there was none.
fn fetch_status(addr: std::net::SocketAddr, path: &str) -> Result<u16, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    // A browser across a WAN sends its request a round trip after the connect: the
    // connections of users starting together overlap, as they do over the internet.
    std::thread::sleep(WAN_RTT);
    s.write_all(get(path).as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| format!("read: {e}"))?;
    let head = String::from_utf8_lossy(&out[..out.len().min(64)]).into_owned();
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {path}: no HTTP answer ({} bytes)", out.len()))
}

/// (i) A second browser engine: Debian's Firefox ESR (Gecko, its own WebRTC and ICE-TCP) runs
/// the page headless from the client namespace. It has no DevTools pipe, so the test waits for
/// the report the page posts and the store keeps, then stops the browser.
#[test]
fn firefox_reaches_a_clean_verdict() {
    let _one = serial();
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| d.join("firefox-esr").is_file())
    });
    assert!(
        found,
        "`firefox-esr` is not installed: this test runs the page in Firefox; install it with `apt-get install firefox-esr` (.ci/run does)"
    );
    let w = web(&NAT_PUBLIC_IP.to_string());
    let home = TempDir::new("web-firefox");
    let profile = home.path().join("profile");
    std::fs::create_dir_all(&profile).expect("profile dir");
    let url = w.url(&format!(
        "t={TOKEN}&deadline_ms={PHASE_MS}&audio_s=1&site=web-firefox"
    ));
    let argv = [
        "env".to_string(),
        format!("HOME={}", home.path().display()),
        "firefox-esr".into(),
        "--headless".into(),
        "--no-remote".into(),
        "--profile".into(),
        profile.display().to_string(),
        url,
    ];
    let firefox = w.topo.client.spawn(&argv, PAGE_BOUND);
    let deadline = Instant::now() + PAGE_BOUND;
    let runs = loop {
        let runs = w.stored("web-firefox");
        if !runs.is_empty() || Instant::now() > deadline {
            break runs;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let why = || {
        format!(
            "{runs:#?}\n--- firefox ---\n{}\n--- server stderr ---\n{}",
            probe_tests::tail(&firefox.stderr(), 8 * 1024),
            probe_tests::tail(&w.server.stderr(), 16 * 1024)
        )
    };
    assert_eq!(
        runs.len(),
        1,
        "the page stored no report in time\n{}",
        why()
    );
    let report = &runs[0]["report"];
    let ua = report["browser"]["user_agent"].as_str().unwrap_or_default();
    assert!(ua.contains("Firefox"), "{}", why());
    assert!(errors(report).is_empty(), "{}", why());
    assert_eq!(report["ok"], true, "{}", why());
    for t in ["udp", "tcp"] {
        assert_eq!(outcome(report, t), "passed", "{t}: {}", why());
        let audio = &leg(report, t).expect("ran")["audio"];
        assert_eq!(audio["sent"], 50, "{t}: {}", why());
        assert_eq!(audio["received"], 50, "{t}: {}", why());
    }
    drop(firefox);
}

// ---------------------------------------------------------------------------------------------
// Live mode: RTCD (the `media-standin` binary, SO_REUSEPORT on UDP and TCP 8443, dropping what
// is not its own media as pion's UDP mux does) runs on the server; `probe-server live --web
// 0.0.0.0:8080` serves the page on 8080 and answers the page's sessions through the tap, from
// 8443, without binding it.

const LIVE_WEB_PORT: u16 = 8080;

struct LivePage {
    topo: Topology,
    standin: probe_tests::Proc,
    /// The stand-in's copy named `rtcd` (found as RTCD by its name), and RTCD's config file.
    rtcd_bin: String,
    rtcd_config: std::path::PathBuf,
    server: probe_tests::Proc,
    url: String,
    store: std::path::PathBuf,
    _dir: TempDir,
}

/// The NAT topology, the RTCD stand-in, and `probe-server live --web` with RTCD's config
/// advertising `ice_host_override`; the page is loaded from the NAT's public address.
fn live_page(ice_host_override: &str) -> LivePage {
    probe_tests::chromium::require_chromium();
    let bins = probe_tests::binaries();
    let topo = Topology::nat(NatConfig::default());
    let dir = TempDir::new("web-live");
    let rtcd = dir.path().join("rtcd.toml");
    let rtc = format!(
        "[rtc]\nice_port_udp = {PORT}\nice_port_tcp = {PORT}\nice_host_override = \"{ice_host_override}\"\n"
    );
    std::fs::write(&rtcd, rtc).expect("write rtcd.toml");
    let rtcd_bin = dir.path().join("rtcd");
    std::fs::copy(env!("CARGO_BIN_EXE_media-standin"), &rtcd_bin).expect("copy the stand-in");
    let rtcd_bin = rtcd_bin.display().to_string();
    let standin = live_standin(&topo, &rtcd_bin);
    let store = dir.path().join("results.sqlite");
    let web = format!("0.0.0.0:{LIVE_WEB_PORT}");
    let argv = [
        bins.server.to_str().expect("utf-8 path"),
        "live",
        "--json",
        "--rtcd-config",
        rtcd.to_str().expect("utf-8 path"),
        "--token",
        TOKEN,
        "--web",
        &web,
        "--store",
        store.to_str().expect("utf-8 path"),
    ];
    let mut cmd = topo.server.argv_command(&argv);
    probe_tests::probe::probe_env(&mut cmd, &BTreeMap::new());
    let server = probe_tests::Proc::spawn(cmd, "probe-server live --web", SERVER_LIFETIME)
        .expect("spawn probe-server live");
    let line = server
        .stdout_capture()
        .wait_for_line(Duration::from_secs(20), |l| {
            l.contains("\"event\":\"page\"")
        })
        .unwrap_or_else(|e| panic!("no page line ({e:?}): {}", server.stderr()));
    let page: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    // The link users get: the address RTCD advertises, the page's own port, the token.
    assert_eq!(
        page["url"],
        format!("http://{ice_host_override}:{LIVE_WEB_PORT}/?t={TOKEN}"),
        "{line}"
    );
    let url = format!("http://{NAT_PUBLIC_IP}:{LIVE_WEB_PORT}/?t={TOKEN}");
    assert_eq!(page["tcp_tested"], false, "{line}");
    LivePage {
        topo,
        standin,
        rtcd_bin,
        rtcd_config: rtcd,
        server,
        url,
        store,
        _dir: dir,
    }
}

/// The RTCD stand-in from `bin`, once it is ready.
fn live_standin(topo: &Topology, bin: &str) -> probe_tests::Proc {
    let standin = topo.server.spawn(&[bin, "serve"], SERVER_LIFETIME);
    if let Err(e) = standin
        .stdout_capture()
        .wait_for_line(Duration::from_secs(10), |l| {
            l.starts_with("media-standin ready")
        })
    {
        panic!("media-standin not ready ({e:?}): {}", standin.stderr());
    }
    standin
}

impl LivePage {
    /// The page run as the browser ends it: its result object, and the run.
    fn run_raw(&self, scenario: &str, audio_s: u32) -> (Value, PageRun, std::path::PathBuf) {
        let url = format!(
            "{}&deadline_ms={PHASE_MS}&audio_s={audio_s}&site=web-{scenario}",
            self.url
        );
        let shot = shots_dir().join(format!("{scenario}.png"));
        let _ = std::fs::remove_file(&shot);
        let run = run_page(
            Some(&self.topo.client),
            &url,
            &shot,
            &Options::default(),
            PAGE_BOUND,
        );
        let reply = match &run.result {
            Ok(v) => v.clone(),
            Err(e) => panic!("{scenario}: {e}\n{}", self.describe(&run)),
        };
        (reply, run, shot)
    }

    fn run(&self, scenario: &str, audio_s: u32) -> (Value, PageRun) {
        let (reply, run, shot) = self.run_raw(scenario, audio_s);
        let r = &reply["report"];
        eprintln!(
            "{scenario}: findings {:?}; legs udp {}, tcp {}, dialed {}\n{}",
            ids(r),
            outcome(r, "udp"),
            outcome(r, "tcp"),
            outcome(r, "dialed"),
            reply["text"].as_str().unwrap_or_default()
        );
        assert!(r.is_object(), "{scenario}: {}", self.describe(&run));
        for f in r["findings"].as_array().into_iter().flatten() {
            let summary = f["summary"].as_str().unwrap_or_default();
            assert!(
                run.page_text.contains(summary),
                "{summary:?} not on the page"
            );
        }
        assert!(
            is_png(&std::fs::read(&shot).unwrap_or_default()),
            "{scenario}: no screenshot"
        );
        (reply, run)
    }

    fn describe(&self, run: &PageRun) -> String {
        format!(
            "{}\n--- probe-server live ---\n{}\n{}\n--- media-standin ---\n{}\n{}",
            run.describe(),
            probe_tests::tail(&self.server.stdout(), 8 * 1024),
            probe_tests::tail(&self.server.stderr(), 8 * 1024),
            probe_tests::tail(&self.standin.stdout(), 2 * 1024),
            self.topo.dump_rulesets()
        )
    }

    /// The stand-in's last counters line.
    fn rtcd_counters(&self) -> Value {
        self.standin
            .stdout()
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Value>(l).ok())
            .unwrap_or(Value::Null)
    }
}

/// The live page's TCP leg: refused by the server with its reason (RTCD holds TCP), no session.
fn assert_tcp_not_tested(report: &Value, why: &dyn Fn() -> String) {
    let tcp = leg(report, "tcp").unwrap_or_else(|| panic!("no TCP leg\n{}", why()));
    assert_eq!(tcp["session"], "", "{}", why());
    let err = tcp["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("live mode: RTCD holds TCP port 8443"),
        "{}",
        why()
    );
    assert_eq!(report["live"], true, "{}", why());
    assert!(
        !ids(report)
            .iter()
            .any(|f| f == "browser_test_incomplete" || f == "tcp_blocked"),
        "{}",
        why()
    );
}

/// (j) Live mode, clean path: RTCD keeps its port; the page's UDP session runs over it
/// through the tap, connects end to end, loses nothing, and the report (live, TCP not tested)
/// is clean and stored. RTCD got its copy of every page datagram, dropped them, and saw no TCP.
#[test]
fn live_mode_page_tests_udp_beside_rtcd() {
    let _one = serial();
    let p = live_page(&NAT_PUBLIC_IP.to_string());
    let before = p.rtcd_counters();
    let (reply, run) = p.run("live-clean", 5);
    let report = &reply["report"];
    let why = || format!("{report:#}\n{}", p.describe(&run));
    assert!(errors(report).is_empty(), "{:?}\n{}", errors(report), why());
    assert_eq!(report["ok"], true, "{}", why());
    assert_eq!(report["udp"]["reachable"], true, "{}", why());
    assert_eq!(outcome(report, "udp"), "passed", "{}", why());
    assert_eq!(outcome(report, "dialed"), "not run", "{}", why());
    assert_tcp_not_tested(report, &why);
    let udp = leg(report, "udp").expect("ran");
    let audio = &udp["audio"];
    let sent = audio["sent"].as_u64().unwrap_or(0);
    assert!(sent >= 200, "{}", why());
    assert_eq!(audio["received"], sent, "{}", why());
    assert_eq!(audio["loss_up_pct"], 0.0, "{}", why());
    assert_eq!(audio["loss_down_pct"], 0.0, "{}", why());
    assert_eq!(udp["server"]["audio_rx"], sent, "{}", why());
    // RTCD (the stand-in) received its copy of each page datagram and dropped it; nothing
    // of the page reached its TCP port.
    std::thread::sleep(Duration::from_millis(700));
    let after = p.rtcd_counters();
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let stun = udp["server"]["stun_requests"].as_u64().unwrap_or(0);
    assert!(stun > 0, "{}", why());
    assert!(
        n(&after, "udp_foreign") >= n(&before, "udp_foreign") + stun + sent,
        "RTCD did not receive the page's datagrams: {before} → {after}\n{}",
        why()
    );
    assert_eq!(
        n(&after, "tcp_accepted"),
        n(&before, "tcp_accepted"),
        "{}",
        why()
    );
    let text = reply["text"].as_str().unwrap_or_default();
    assert!(text.contains("No problems found."), "{text}\n{}", why());
    assert!(reply["not_stored"].is_null(), "{}", why());
    let runs = stored_runs(&p.store, "web-live-clean");
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["report"]["live"], true, "{:#}", runs[0]);
}

/// (k) Live mode, UDP 8443 dropped by the router: the UDP leg and the dialed reference fail at
/// ICE, TCP is not tested, and the verdict says nothing answered over UDP (not "UDP or TCP").
#[test]
fn live_mode_page_with_udp_blocked() {
    let _one = serial();
    let p = live_page(&NAT_PUBLIC_IP.to_string());
    p.topo.router_forward(&[UDP_RULE]);
    let (reply, run) = p.run("live-udp-blocked", 1);
    let report = &reply["report"];
    let why = || format!("{report:#}\n{}", p.describe(&run));
    assert!(forward_counter(&p.topo) > 0, "{}", why());
    assert_eq!(errors(report), ["server_unreachable"], "{}", why());
    let f = finding(report, "server_unreachable").expect("finding");
    let summary = f["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("over UDP:") && !summary.contains("UDP or TCP"),
        "{}",
        why()
    );
    assert_eq!(outcome(report, "udp"), "ice", "{}", why());
    assert_eq!(outcome(report, "dialed"), "ice", "{}", why());
    assert_tcp_not_tested(report, &why);
    assert_eq!(stored_runs(&p.store, "web-live-udp-blocked").len(), 1);
}

/// (l) Live mode, RTCD advertising an address that is not its own: the UDP leg fails at ICE,
/// the address in the link answers through the tap (the dialed leg), so the advertised address
/// is what is wrong, the classic failure, found on RTCD's own port while it runs.
#[test]
fn live_mode_page_with_a_wrong_override() {
    let _one = serial();
    let p = live_page(WRONG_OVERRIDE);
    let (reply, run) = p.run("live-wrong-override", 1);
    let report = &reply["report"];
    let why = || format!("{report:#}\n{}", p.describe(&run));
    assert_eq!(errors(report), ["ice_host_override_wrong"], "{}", why());
    let f = finding(report, "ice_host_override_wrong").expect("finding");
    let fix = f["fix"].as_str().unwrap_or_default();
    assert!(
        fix.contains(&format!("ice_host_override = \"{NAT_PUBLIC_IP}\"")),
        "{}",
        why()
    );
    assert_eq!(outcome(report, "udp"), "ice", "{}", why());
    assert_eq!(outcome(report, "dialed"), "passed", "{}", why());
    assert_tcp_not_tested(report, &why);
    let dialed = leg(report, "dialed").expect("ran");
    assert!(
        dialed["server"]["audio_rx"].as_u64().unwrap_or(0) > 0,
        "{}",
        why()
    );
    assert_eq!(stored_runs(&p.store, "web-live-wrong-override").len(), 1);
    // The admin fixes the override and restarts RTCD: the page follows without a restart of
    // probe-server live, and the same link now passes.
    let mut p = p;
    let fixed = format!(
        "[rtc]\nice_port_udp = {PORT}\nice_port_tcp = {PORT}\nice_host_override = \"{NAT_PUBLIC_IP}\"\n"
    );
    std::fs::write(&p.rtcd_config, fixed).expect("write rtcd.toml");
    p.standin.kill();
    // While RTCD is down the page does not pass a closed port: it stops with the sentence.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !p.server.stdout().contains("\"event\":\"rtcd_stopped\"") {
        assert!(
            std::time::Instant::now() < deadline,
            "RTCD's stop not seen: {}",
            p.server.stdout()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (down, run, _) = p.run_raw("live-rtcd-down", 1);
    let err = down["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("is not running on that host, so calls cannot connect"),
        "{down:#}\n{}",
        p.describe(&run)
    );
    assert!(
        run.page_text.contains("is not running on that host"),
        "{}",
        run.page_text
    );
    assert!(
        !run.page_text.contains("waiting"),
        "no step left waiting: {}",
        run.page_text
    );
    p.standin = live_standin(&p.topo, &p.rtcd_bin);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !(p.server.stdout().contains("\"event\":\"advertise\"")
        && p.server.stdout().contains("\"event\":\"rtcd_started\""))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "RTCD's restart not followed: {}",
            p.server.stdout()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (reply, run) = p.run("live-fixed-override", 1);
    let report = &reply["report"];
    let why = || format!("{report:#}\n{}", p.describe(&run));
    assert!(errors(report).is_empty(), "{}", why());
    assert_eq!(outcome(report, "udp"), "passed", "{}", why());
}

/// The runs a results store kept for `site` (`probe-server results --runs --json`).
fn stored_runs(store: &std::path::Path, site: &str) -> Vec<Value> {
    let mut cmd = std::process::Command::new(&probe_tests::binaries().server);
    cmd.args(["results", "--json", "--runs", "--site", site, "--store"])
        .arg(store);
    probe_tests::probe::probe_env(&mut cmd, &BTreeMap::new());
    let done = probe_tests::run_bounded(cmd, "probe-server results", Duration::from_secs(20));
    assert!(done.success(), "{}", done.describe());
    let v: Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("results --json: {e}\n{}", done.stdout));
    v.as_array().cloned().unwrap_or_default()
}
