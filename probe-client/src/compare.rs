//! `probe-client compare REPORT.json…`: the per-site table of `probe-server results`, from
//! reports a team collected itself (`--json` output, one object or NDJSON from `--every`).

use crate::fail;
use probe_proto::report::{Report, SCHEMA};
use probe_proto::sites::{self, Run};
use std::io::Read;

#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// Reports saved with `probe-client --json` (a file may hold many, one per line); `-` reads
    /// NDJSON from standard input.
    #[arg(required = true, value_name = "REPORT.json")]
    pub reports: Vec<String>,
    /// JSON instead of the table (the same as `probe-server results --json`).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// CSV instead of the table.
    #[arg(long)]
    pub csv: bool,
}

pub fn run(args: CompareArgs) -> i32 {
    let mut runs = Vec::new();
    let mut stdin_read = false;
    for name in &args.reports {
        let (label, text) = if name == "-" {
            if stdin_read {
                return fail("`-` (standard input) can be given only once.");
            }
            stdin_read = true;
            let mut s = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut s) {
                return fail(format!("cannot read standard input: {e}."));
            }
            ("standard input".to_string(), s)
        } else {
            match std::fs::read_to_string(name) {
                Ok(s) => (name.clone(), s),
                Err(e) => return fail(format!("cannot read {name}: {e}.")),
            }
        };
        match parse(&text) {
            Ok(mut r) => runs.append(&mut r),
            Err(why) => {
            return fail(format!(
                "{label}: {why}; compare reads the reports probe-client writes with --json (one object, or one a line from --every --json)"
            ))
        }
        }
    }
    let table = sites::table(&runs);
    if args.json {
        probe_shell::outln!("{}", sites::render_json(&table));
    } else if args.csv {
        probe_shell::out!("{}", sites::render_csv(&table));
    } else {
        probe_shell::out!("{}", sites::render_text(&table));
    }
    0
}

/// Every report in `text`: one JSON object, pretty or not, or many one after another (NDJSON).
pub fn parse(text: &str) -> Result<Vec<Run>, String> {
    let mut runs = Vec::new();
    let stream = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
    for value in stream {
        let value = value.map_err(|e| format!("not JSON at line {} ({e})", e.line()))?;
        let n = runs.len() + 1;
        let schema = value.get("schema").and_then(|s| s.as_u64());
        match schema {
            Some(s) if s == u64::from(SCHEMA) => {}
            Some(s) => {
                return Err(format!(
                    "report {n} has schema {s}; this probe-client reads schema {SCHEMA}"
                ))
            }
            None => return Err(format!("item {n} is not a probe-client report (no schema)")),
        }
        let report: Report = serde_json::from_value(value)
            .map_err(|e| format!("report {n} is not a complete probe-client report ({e})"))?;
        let run = Run::dated(&report).ok_or_else(|| {
            format!(
                "report {n} has a start time `{}` that is not RFC 3339 UTC",
                report.started_at
            )
        })?;
        runs.push(run);
    }
    if runs.is_empty() {
        return Err("holds no report".into());
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_proto::report::{rfc3339, TcpResult, UdpResult};

    fn report(site: &str, at_ms: u64) -> Report {
        Report {
            schema: SCHEMA,
            tool_version: "0.1.0".into(),
            site: site.into(),
            server: "203.0.113.2:8443".into(),
            started_at: rfc3339(at_ms),
            duration_ms: 1,
            ok: true,
            udp: UdpResult::default(),
            tcp: TcpResult::default(),
            findings: vec![],
            server_version: None,
            server_pin: None,
            ice: None,
            turn: None,
            mtu: None,
            live: false,
            browser: None,
        }
    }

    #[test]
    fn one_pretty_object_or_ndjson() {
        let pretty = serde_json::to_string_pretty(&report("a", 5)).unwrap();
        assert_eq!(parse(&pretty).unwrap().len(), 1);
        let nd = format!(
            "{}\n{}\n",
            serde_json::to_string(&report("a", 5)).unwrap(),
            serde_json::to_string(&report("b", 6)).unwrap()
        );
        let runs = parse(&nd).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[1].site.as_str(), runs[1].at_ms), ("b", 6));
    }

    #[test]
    fn what_is_not_a_report_is_named() {
        assert!(parse("").unwrap_err().contains("no report"));
        assert!(parse("{\"schema\":1,")
            .unwrap_err()
            .contains("not JSON at line 1"));
        assert!(parse("[1,2]").unwrap_err().contains("no schema"));
        assert!(parse("{\"schema\":7}").unwrap_err().contains("schema 7"));
        assert!(parse("{\"schema\":1}")
            .unwrap_err()
            .contains("not a complete"));
        let mut r = report("a", 0);
        r.started_at = "now".into();
        let e = parse(&serde_json::to_string(&r).unwrap()).unwrap_err();
        assert!(e.contains("`now`"), "{e}");
    }
}
