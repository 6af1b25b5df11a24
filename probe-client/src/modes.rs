//! The ways to run the probe: once (the default), repeatedly (`--every`), or many sessions at
//! once (`--sessions`, load mode).

use crate::cli::ProbeArgs;
use crate::fail;
use crate::run::{self, RunOpts};
use probe_proto::catalog::FindingId;
use probe_proto::report::{self, Report};
use probe_proto::stats::percentile;
use std::time::Duration;

use crate::live;

/// How long the normal probe waits for the live hello's answer before starting.
const LIVE_HEAD_START: Duration = Duration::from_millis(400);

pub async fn main(args: ProbeArgs) -> i32 {
    if let Some(n) = args.sessions {
        return load(&args, n).await;
    }
    if let Some(every) = args.every {
        return continuous(&args, every).await;
    }
    let print = |r: &Report| {
        if args.json {
            probe_shell::outln!("{}", json(r));
        } else {
            probe_shell::out!("{}", report::render_text(r));
        }
    };
    match once(&args, true, print).await {
        Ok(report) => report.exit_code(),
        Err(msg) => fail(msg),
    }
}

fn json(r: &Report) -> String {
    serde_json::to_string(r).expect("reports serialise")
}

/// One run: the report is printed as soon as it is known, then uploaded unless `--no-upload`.
/// The live hello (issue 12: `probe-server live` beside a running RTCD) goes out at once; the
/// normal probe starts a moment later, so that RTCD sees none of its STUN when live answers.
async fn once(args: &ProbeArgs, progress: bool, print: impl Fn(&Report)) -> Result<Report, String> {
    let normal = async {
        tokio::time::sleep(LIVE_HEAD_START).await;
        run::run(
            args,
            RunOpts {
                ice: true,
                progress,
                mtu: !args.no_mtu,
            },
        )
        .await
    };
    tokio::pin!(normal);
    let hello = live::hello(args);
    let done = tokio::select! {
        r = &mut normal => r,
        h = hello => match h {
            Some(h) => {
                let (report, banner) = live::run(args, h).await?;
                if !args.json {
                    probe_shell::outln!("{}", banner.join("\n"));
                }
                print(&report);
                return Ok(report);
            }
            None => normal.await,
        },
    };
    let mut done = done?;
    if let Some(port) = live_tcp_only_case(args, &done.report) {
        if let Some(banner) = live::tcp_only(args, port).await {
            // On stderr with --json, so that stdout stays one JSON document.
            if args.json {
                eprintln!("{}", banner.join("\n"));
            } else {
                probe_shell::outln!("{}", banner.join("\n"));
            }
        }
    }
    print(&done.report);
    if !args.no_upload && done.has_session() {
        if let Err(e) = done.upload(args.site_token.as_deref()).await {
            // The server's words reach the terminal: no control character gets through.
            let e = probe_proto::sites::clean_text(&e, 512);
            // A server without a result store chose not to keep reports; any other refusal
            // (a site it does not take, a site token, a full queue) loses a report someone
            // is waiting for: said by default.
            if e == probe_proto::sites::NO_STORE {
                tracing::info!("the server did not keep this report: {e}");
            } else {
                tracing::warn!("the server did not keep this report: {e}");
            }
        }
    }
    let report = done.report.clone();
    done.close().await;
    Ok(report)
}

/// The port to send the live TCP probe to when no probe server answered at all while TCP
/// connected (STUN over it unanswered): what a running RTCD without `probe-server live`, or
/// with UDP blocked in front of it, looks like.
fn live_tcp_only_case(args: &ProbeArgs, r: &Report) -> Option<u16> {
    let silent = !r.udp.reachable && !r.tcp.reachable && r.server_version.is_none();
    // A pin names a probe-server (normal mode): its silence is a token or firewall matter.
    if args.no_udp || args.no_tcp || args.pin.is_some() || !silent || r.tcp.connect_ms.is_none() {
        return None;
    }
    crate::target::Target::parse(args.server.as_deref()?)
        .ok()
        .map(|t| t.port)
}

/// One line per run for `--every` without `--json`.
fn summary_line(r: &Report) -> String {
    let echo = r.udp.echo.as_ref().or(r.tcp.echo.as_ref());
    let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |p| format!("{p:.1}%"));
    let rtt = echo
        .and_then(|e| e.rtt_ms)
        .map_or("n/a".to_string(), |r| format!("{:.1}ms", r.p50));
    let findings: Vec<&str> = r.findings.iter().map(|f| f.id.as_str()).collect();
    // As the text report says: a transport left out is not one that failed.
    let state = |reachable: bool, skipped: bool, refused: bool| match (reachable, skipped, refused)
    {
        (true, _, _) => "ok",
        (_, true, _) => "untested",
        (_, _, true) => "refused",
        _ => "no",
    };
    format!(
        "{} {} {} udp={} tcp={} loss_up={} loss_down={} rtt_p50={} findings={}",
        r.started_at,
        r.site,
        if r.ok { "PASS" } else { "FAIL" },
        state(r.udp.reachable, r.udp.skipped, r.udp.refused),
        state(r.tcp.reachable, r.tcp.skipped, r.tcp.refused),
        pct(echo.and_then(|e| e.loss_up_pct)),
        pct(echo.and_then(|e| e.loss_down_pct)),
        rtt,
        if findings.is_empty() {
            "none".into()
        } else {
            findings.join(",")
        }
    )
}

/// `--every`: a failed run never stops the loop; Ctrl-C ends it after the current run.
async fn continuous(args: &ProbeArgs, every: Duration) -> i32 {
    let stop = tokio::sync::watch::channel(false);
    let tx = stop.0;
    let mut rx = stop.1;
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = tx.send(true);
            // Said at once: a run can last minutes, and silence reads as a hang.
            eprintln!(
                "probe-client: stopping after the run under way, if any (its report is kept); Ctrl-C again stops now"
            );
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("probe-client: stopped; the current run was not finished");
                std::process::exit(130);
            }
        }
    });
    let (mut worst, mut carried_out, mut said_overrun) = (0, false, false);
    let mut n = 0u64;
    loop {
        let next = tokio::time::Instant::now() + every;
        n += 1;
        let print = |r: &Report| {
            if args.json {
                probe_shell::outln!("{}", json(r));
            } else {
                probe_shell::outln!("{}", summary_line(r));
            }
        };
        let started = tokio::time::Instant::now();
        match once(args, false, print).await {
            Ok(r) => {
                worst = worst.max(r.exit_code());
                carried_out = true;
            }
            Err(e) => {
                // Keep going: DNS or the server may be back by the next run.
                eprintln!("probe-client: run {n} could not be carried out: {e}");
                worst = worst.max(1);
            }
        }
        // A run stopped by Ctrl-C ends the loop: its length is no news.
        if !said_overrun && !*rx.borrow() && tokio::time::Instant::now() > next {
            said_overrun = true;
            tracing::warn!(
                "a run took {:.0} s, longer than --every {:.0} s: runs follow one another without a pause",
                started.elapsed().as_secs_f64(),
                every.as_secs_f64()
            );
        }
        if args.count.is_some_and(|c| n >= c) || *rx.borrow() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = rx.changed() => break,
        }
    }
    // Not one run could be carried out (a name that never resolved, say): a usage matter, 2.
    if carried_out {
        worst
    } else {
        2
    }
}

/// `--sessions N`: N concurrent sessions, each a full run without ICE or upload.
async fn load(args: &ProbeArgs, n: u32) -> i32 {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let args = args.clone();
        set.spawn(async move {
            // Spread the starts over ~1 s so handshakes do not arrive as one burst.
            tokio::time::sleep(Duration::from_micros(
                u64::from(i) * 1_000_000 / u64::from(n),
            ))
            .await;
            let done = run::run(
                &args,
                RunOpts {
                    ice: false,
                    progress: false,
                    mtu: false,
                },
            )
            .await;
            match done {
                Ok(d) => {
                    let r = d.report.clone();
                    d.close().await;
                    Ok(r)
                }
                Err(e) => Err(e),
            }
        });
    }
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    while let Some(res) = set.join_next().await {
        match res {
            Ok(Ok(r)) => reports.push(r),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let s = LoadSummary::of(n, &reports, errors.len());
    if args.json {
        probe_shell::outln!("{}", serde_json::to_string(&s).expect("summary serialises"));
    } else {
        probe_shell::out!("{}", s.render());
        for e in errors.iter().take(3) {
            eprintln!("probe-client: a session could not run: {e}");
        }
    }
    if s.failed == 0 && s.errors == 0 {
        0
    } else {
        1
    }
}

/// One reason the server gave for refusing sessions, and how many it refused so.
#[derive(Debug, serde::Serialize, PartialEq)]
pub struct RefusedBecause {
    pub reason: String,
    pub sessions: usize,
}

/// The server_refused findings' sentences, counted, most frequent first.
fn refusals(reports: &[Report]) -> Vec<RefusedBecause> {
    let mut counts: Vec<RefusedBecause> = Vec::new();
    let refused = reports
        .iter()
        .flat_map(|r| &r.findings)
        .filter(|f| f.is(FindingId::ServerRefused));
    for f in refused {
        match counts.iter_mut().find(|c| c.reason == f.summary) {
            Some(c) => c.sessions += 1,
            None => counts.push(RefusedBecause {
                reason: f.summary.clone(),
                sessions: 1,
            }),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.sessions));
    counts
}

/// Load mode's summary: totals over all sessions.
#[derive(Debug, serde::Serialize)]
pub struct LoadSummary {
    pub sessions: u32,
    pub passed: usize,
    pub failed: usize,
    pub errors: usize,
    pub refused: usize,
    /// Why the server refused sessions (its sentence, naming the limit), most frequent first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused_because: Vec<RefusedBecause>,
    pub sent: u64,
    pub received: u64,
    /// Round-trip loss over all sessions' UDP echo, in percent.
    pub loss_pct: f64,
    pub loss_up_pct: Option<f64>,
    pub loss_down_pct: Option<f64>,
    /// Percentiles of the sessions' median RTTs.
    pub rtt_p50_ms: Option<f64>,
    pub rtt_p95_ms: Option<f64>,
}

impl LoadSummary {
    pub fn of(sessions: u32, reports: &[Report], errors: usize) -> Self {
        let echoes: Vec<_> = reports
            .iter()
            .filter_map(|r| r.udp.echo.as_ref().or(r.tcp.echo.as_ref()))
            .collect();
        let sent: u64 = echoes.iter().map(|e| e.sent).sum();
        let received: u64 = echoes.iter().map(|e| e.received).sum();
        // Weighted by packets sent, so each packet counts once.
        let weighted = |f: fn(&probe_proto::stats::EchoSummary) -> Option<f64>| {
            let parts: Vec<(f64, f64)> = echoes
                .iter()
                .filter_map(|e| f(e).map(|v| (v, e.sent as f64)))
                .collect();
            let total: f64 = parts.iter().map(|p| p.1).sum();
            (total > 0.0).then(|| parts.iter().map(|(v, w)| v * w).sum::<f64>() / total)
        };
        let mut p50s: Vec<f64> = echoes
            .iter()
            .filter_map(|e| e.rtt_ms.map(|r| r.p50))
            .collect();
        p50s.sort_by(f64::total_cmp);
        Self {
            sessions,
            passed: reports.iter().filter(|r| r.ok).count(),
            failed: reports.iter().filter(|r| !r.ok).count(),
            errors,
            refused: reports
                .iter()
                .filter(|r| r.findings.iter().any(|f| f.is(FindingId::ServerRefused)))
                .count(),
            refused_because: refusals(reports),
            sent,
            received,
            loss_pct: if sent == 0 {
                0.0
            } else {
                (sent - received.min(sent)) as f64 * 100.0 / sent as f64
            },
            loss_up_pct: weighted(|e| e.loss_up_pct),
            loss_down_pct: weighted(|e| e.loss_down_pct),
            rtt_p50_ms: percentile(&p50s, 50.0),
            rtt_p95_ms: percentile(&p50s, 95.0),
        }
    }

    pub fn render(&self) -> String {
        let opt = |v: Option<f64>, unit: &str| v.map_or("n/a".into(), |x| format!("{x:.3}{unit}"));
        let mut because = String::new();
        for r in &self.refused_because {
            // The server's words: no control character reaches the terminal.
            let reason = probe_proto::sites::clean_text(&r.reason, 300);
            because.push_str(&format!("refused {}: {reason}\n", r.sessions));
        }
        if !because.is_empty() {
            because.push_str(
                "(run fewer --sessions, or ask the admin to raise that probe-server limit)\n",
            );
        }
        format!(
            "load: {} sessions  passed {}  failed {} (of which refused {})  could not run {}\n\
             packets: sent {}  received {}  round-trip loss {:.3}%  (up {}  down {})\n\
             median RTT across sessions: p50 {}  p95 {}\n{because}",
            self.sessions,
            self.passed,
            self.failed,
            self.refused,
            self.errors,
            self.sent,
            self.received,
            self.loss_pct,
            opt(self.loss_up_pct, "%"),
            opt(self.loss_down_pct, "%"),
            opt(self.rtt_p50_ms, " ms"),
            opt(self.rtt_p95_ms, " ms"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_tells_untested_and_refused_from_silent() {
        let mut r = Report {
            schema: 1,
            tool_version: "t".into(),
            site: "s".into(),
            server: "h:1".into(),
            started_at: "x".into(),
            duration_ms: 1,
            ok: true,
            udp: Default::default(),
            tcp: Default::default(),
            findings: vec![],
            server_version: None,
            server_pin: None,
            ice: None,
            turn: None,
            mtu: None,
            live: false,
            browser: None,
        };
        r.udp.reachable = true;
        r.tcp.skipped = true;
        assert!(
            summary_line(&r).contains(" udp=ok tcp=untested "),
            "{}",
            summary_line(&r)
        );
        r.udp.reachable = false;
        r.udp.refused = true;
        r.tcp.skipped = false;
        assert!(
            summary_line(&r).contains(" udp=refused tcp=no "),
            "{}",
            summary_line(&r)
        );
    }
}
