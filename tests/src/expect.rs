//! Assertions on the client's exit code and JSON report.
//!
//! Built from a scenario's `[expect]` table.  Reserved keys:
//!
//! | key | meaning |
//! | --- | --- |
//! | `exit_code = N` | the client's exit code |
//! | `findings = ["id", …]` | finding ids that must be present |
//! | `absent_findings = ["id", …]` | finding ids that must not be present |
//! | `[expect.severity]` `id = "error"` | finding `id` present with that severity |
//! | `null = ["path", …]` / `not_null = [...]` | JSON value at path is (not) null |
//! | `[expect.starts_with]` `"path" = "prefix"` | string at path starts with prefix |
//! | `[[expect.bounds]]` `path`, `min`, `max` | number at path within [min, max] (inclusive; either optional) |
//! | `[[expect.loss]]` | binomial-tolerance loss assertion, see [`LossExpect`] |
//!
//! Every other key is a dotted JSON path compared for equality
//! (`"udp.reachable" = false`; an inline/sub-table `udp = { reachable = false }`
//! is flattened to the same path; numbers compare numerically; array indices
//! are path segments: `"findings.0.id"`).  A path that does not exist fails.

use serde_json::Value;

/// Default number of standard deviations for loss assertions.
pub const DEFAULT_SIGMAS: f64 = 4.5;

/// Tolerance in percentage points for a loss percentage measured over `n`
/// Bernoulli trials with true rate `rate_pct`:
/// `sigmas * sqrt(n p (1-p)) / n * 100`.
pub fn binomial_tolerance_pct(n: u64, rate_pct: f64, sigmas: f64) -> f64 {
    if n == 0 {
        return f64::INFINITY;
    }
    let p = (rate_pct / 100.0).clamp(0.0, 1.0);
    let n = n as f64;
    sigmas * (n * p * (1.0 - p)).sqrt() / n * 100.0
}

/// A loss assertion (`[[expect.loss]]`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossExpect {
    /// Path of the measured loss percentage, e.g. `udp.echo.loss_up_pct`.
    pub path: String,
    /// Expected true rate (%): two-sided, |measured − rate| ≤ tolerance(rate).
    #[serde(default)]
    pub rate_pct: Option<f64>,
    /// Upper bound on the true rate (%): one-sided,
    /// measured ≤ max + tolerance(max).
    #[serde(default)]
    pub max_rate_pct: Option<f64>,
    /// Standard deviations (default 4.5).
    #[serde(default)]
    pub sigmas: Option<f64>,
    /// Path of the trial count.  Default: sibling `sent`; for a path ending
    /// in `loss_down_pct`, the packets that reached the server,
    /// `sent × (1 − loss_up_pct/100)`.
    #[serde(default)]
    pub n_path: Option<String>,
}

/// A numeric range assertion (`[[expect.bounds]]`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bound {
    /// JSON path.
    pub path: String,
    /// Inclusive minimum.
    #[serde(default)]
    pub min: Option<f64>,
    /// Inclusive maximum.
    #[serde(default)]
    pub max: Option<f64>,
}

/// Parsed `[expect]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expect {
    /// Client exit code.
    pub exit_code: Option<i32>,
    /// Path equalities.
    pub equals: Vec<(String, Value)>,
    /// Paths whose value must be null.
    pub null: Vec<String>,
    /// Paths whose value must exist and not be null.
    pub not_null: Vec<String>,
    /// (path, prefix) string assertions.
    pub starts_with: Vec<(String, String)>,
    /// Finding ids that must be present.
    pub findings: Vec<String>,
    /// Finding ids that must be absent.
    pub absent_findings: Vec<String>,
    /// (id, severity): present with that severity.
    pub severity: Vec<(String, String)>,
    /// Loss assertions.
    pub loss: Vec<LossExpect>,
    /// Range assertions.
    pub bounds: Vec<Bound>,
    /// Substrings the server's stderr (its log) must contain (`server_stderr = ["…"]`).
    pub server_stderr: Vec<String>,
}

const SEVERITIES: [&str; 3] = ["error", "warning", "info"];

fn strings(key: &str, v: &toml::Value) -> Result<Vec<String>, String> {
    v.as_array()
        .ok_or_else(|| format!("expect.{key} must be an array of strings"))?
        .iter()
        .map(|x| {
            x.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("expect.{key} must be an array of strings"))
        })
        .collect()
}

fn string_table(key: &str, v: &toml::Value) -> Result<Vec<(String, String)>, String> {
    v.as_table()
        .ok_or_else(|| format!("expect.{key} must be a table of strings"))?
        .iter()
        .map(|(k, x)| {
            x.as_str()
                .map(|s| (k.clone(), s.to_string()))
                .ok_or_else(|| format!("expect.{key}.{k} must be a string"))
        })
        .collect()
}

fn flatten_into(
    prefix: &str,
    v: &toml::Value,
    out: &mut Vec<(String, Value)>,
) -> Result<(), String> {
    match v {
        toml::Value::Table(t) => {
            for (k, x) in t {
                flatten_into(&format!("{prefix}.{k}"), x, out)?;
            }
            Ok(())
        }
        other => {
            let j = serde_json::to_value(other).map_err(|e| format!("expect.{prefix}: {e}"))?;
            out.push((prefix.to_string(), j));
            Ok(())
        }
    }
}

/// Scenario files may name only ids of the findings catalog (a typo would pass `absent_findings`).
fn check_finding_id(id: &str) -> Result<(), String> {
    match probe_proto::catalog::FindingId::parse(id) {
        Some(_) => Ok(()),
        None => Err(format!(
            "unknown finding id {id:?} (known: {:?})",
            probe_proto::catalog::FindingId::ALL
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
        )),
    }
}

impl Expect {
    /// Parses an `[expect]` table.
    pub fn from_table(t: &toml::Table) -> Result<Expect, String> {
        let mut e = Expect::default();
        for (key, v) in t {
            match key.as_str() {
                "exit_code" => {
                    let c = v
                        .as_integer()
                        .ok_or("expect.exit_code must be an integer")?;
                    e.exit_code =
                        Some(i32::try_from(c).map_err(|_| "expect.exit_code out of range")?);
                }
                "findings" => e.findings = strings(key, v)?,
                "absent_findings" => e.absent_findings = strings(key, v)?,
                "server_stderr" => e.server_stderr = strings(key, v)?,
                "null" => e.null = strings(key, v)?,
                "not_null" => e.not_null = strings(key, v)?,
                "severity" => e.severity = string_table(key, v)?,
                "starts_with" => e.starts_with = string_table(key, v)?,
                "loss" => {
                    e.loss = v
                        .clone()
                        .try_into()
                        .map_err(|err| format!("expect.loss: {err}"))?;
                }
                "bounds" => {
                    e.bounds = v
                        .clone()
                        .try_into()
                        .map_err(|err| format!("expect.bounds: {err}"))?;
                }
                _ => flatten_into(key, v, &mut e.equals)?,
            }
        }
        for id in e.findings.iter().chain(&e.absent_findings) {
            check_finding_id(id)?;
        }
        for (id, sev) in &e.severity {
            check_finding_id(id)?;
            if !SEVERITIES.contains(&sev.as_str()) {
                return Err(format!(
                    "expect.severity.{id}: {sev:?} is not one of {SEVERITIES:?}"
                ));
            }
        }
        if let Some(id) = e.findings.iter().find(|id| e.absent_findings.contains(id)) {
            return Err(format!("finding {id:?} is both expected and absent"));
        }
        for l in &e.loss {
            match (l.rate_pct, l.max_rate_pct) {
                (Some(r), None) | (None, Some(r)) if (0.0..=100.0).contains(&r) => {}
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "expect.loss {}: give rate_pct or max_rate_pct, not both",
                        l.path
                    ))
                }
                _ => {
                    return Err(format!(
                        "expect.loss {}: need rate_pct or max_rate_pct in [0, 100]",
                        l.path
                    ))
                }
            }
            if l.sigmas.is_some_and(|s| s.is_nan() || s <= 0.0) {
                return Err(format!("expect.loss {}: sigmas must be > 0", l.path));
            }
        }
        for b in &e.bounds {
            if b.min.is_none() && b.max.is_none() {
                return Err(format!("expect.bounds {}: need min and/or max", b.path));
            }
        }
        Ok(e)
    }

    /// Checks the run; returns one message per failed assertion.
    /// The `server_stderr` expectations against the server's stderr.
    pub fn check_server_stderr(&self, stderr: &str) -> Vec<String> {
        self.server_stderr
            .iter()
            .filter(|want| !stderr.contains(want.as_str()))
            .map(|want| format!("server stderr: no {want:?}"))
            .collect()
    }

    pub fn check(&self, code: Option<i32>, json: Option<&Value>) -> Vec<String> {
        let mut f = Vec::new();
        if let Some(want) = self.exit_code {
            if code != Some(want) {
                f.push(format!("exit code: expected {want}, got {code:?}"));
            }
        }
        let needs_json = !(self.equals.is_empty()
            && self.null.is_empty()
            && self.not_null.is_empty()
            && self.starts_with.is_empty()
            && self.findings.is_empty()
            && self.absent_findings.is_empty()
            && self.severity.is_empty()
            && self.loss.is_empty()
            && self.bounds.is_empty());
        let Some(json) = json else {
            if needs_json {
                f.push("no JSON report on stdout (cannot check the JSON expectations)".into());
            }
            return f;
        };
        for (path, want) in &self.equals {
            match lookup(json, path) {
                None => f.push(format!("{path}: missing (expected {want})")),
                Some(got) if !json_eq(got, want) => {
                    f.push(format!("{path}: expected {want}, got {got}"))
                }
                Some(_) => {}
            }
        }
        for path in &self.null {
            match lookup(json, path) {
                None => f.push(format!("{path}: missing (expected null)")),
                Some(Value::Null) => {}
                Some(got) => f.push(format!("{path}: expected null, got {got}")),
            }
        }
        for path in &self.not_null {
            match lookup(json, path) {
                None => f.push(format!("{path}: missing (expected non-null)")),
                Some(Value::Null) => f.push(format!("{path}: expected non-null, got null")),
                Some(_) => {}
            }
        }
        for (path, prefix) in &self.starts_with {
            match lookup(json, path).and_then(Value::as_str) {
                Some(s) if s.starts_with(prefix.as_str()) => {}
                Some(s) => f.push(format!(
                    "{path}: expected to start with {prefix:?}, got {s:?}"
                )),
                None => f.push(format!(
                    "{path}: expected a string starting with {prefix:?}, got {}",
                    show(lookup(json, path))
                )),
            }
        }
        let findings = findings(json);
        match &findings {
            Err(e) => {
                if !(self.findings.is_empty()
                    && self.absent_findings.is_empty()
                    && self.severity.is_empty())
                {
                    f.push(e.clone());
                }
            }
            Ok(list) => {
                let ids: Vec<&str> = list.iter().map(|(id, _)| id.as_str()).collect();
                for id in &self.findings {
                    if !ids.contains(&id.as_str()) {
                        f.push(format!("finding {id:?} missing (findings: {ids:?})"));
                    }
                }
                for id in &self.absent_findings {
                    if ids.contains(&id.as_str()) {
                        f.push(format!(
                            "finding {id:?} present but must be absent (findings: {ids:?})"
                        ));
                    }
                }
                for (id, sev) in &self.severity {
                    let sevs: Vec<&str> = list
                        .iter()
                        .filter(|(i, _)| i == id)
                        .map(|(_, s)| s.as_str())
                        .collect();
                    if sevs.is_empty() {
                        f.push(format!(
                            "finding {id:?} (severity {sev}) missing (findings: {ids:?})"
                        ));
                    } else if !sevs.contains(&sev.as_str()) {
                        f.push(format!(
                            "finding {id:?}: expected severity {sev:?}, got {sevs:?}"
                        ));
                    }
                }
            }
        }
        for b in &self.bounds {
            match lookup(json, &b.path).and_then(Value::as_f64) {
                None => f.push(format!(
                    "{}: expected a number, got {}",
                    b.path,
                    show(lookup(json, &b.path))
                )),
                Some(x) => {
                    if b.min.is_some_and(|m| x < m) || b.max.is_some_and(|m| x > m) {
                        f.push(format!(
                            "{}: {x} outside [{}, {}]",
                            b.path,
                            b.min.map_or("-inf".into(), |m| m.to_string()),
                            b.max.map_or("inf".into(), |m| m.to_string())
                        ));
                    }
                }
            }
        }
        for l in &self.loss {
            if let Err(e) = check_loss(json, l) {
                f.push(e);
            }
        }
        f
    }
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "nothing (missing)".into(), Value::to_string)
}

/// Finding (id, severity) pairs of a report.
pub fn findings(json: &Value) -> Result<Vec<(String, String)>, String> {
    let arr = json
        .get("findings")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            format!(
                "report has no \"findings\" array (got {})",
                show(json.get("findings"))
            )
        })?;
    arr.iter()
        .map(|x| {
            let id = x.get("id").and_then(Value::as_str);
            let sev = x.get("severity").and_then(Value::as_str);
            match (id, sev) {
                (Some(i), Some(s)) => Ok((i.to_string(), s.to_string())),
                _ => Err(format!("finding without string id/severity: {x}")),
            }
        })
        .collect()
}

/// The value at a dotted path (`a.b.0.c`).
pub fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, seg| match cur {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// Equality where numbers compare by value (1 == 1.0).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, p)| y.get(k).is_some_and(|q| json_eq(p, q)))
        }
        _ => a == b,
    }
}

fn number(json: &Value, path: &str) -> Result<f64, String> {
    lookup(json, path).and_then(Value::as_f64).ok_or_else(|| {
        format!(
            "{path}: expected a number, got {}",
            show(lookup(json, path))
        )
    })
}

fn parent(path: &str) -> &str {
    path.rsplit_once('.').map_or("", |(p, _)| p)
}

fn sibling(path: &str, name: &str) -> String {
    match parent(path) {
        "" => name.to_string(),
        p => format!("{p}.{name}"),
    }
}

/// The trial count for a loss assertion, with a description of its origin.
fn trials(json: &Value, l: &LossExpect) -> Result<(u64, String), String> {
    if let Some(p) = &l.n_path {
        let n = number(json, p)?;
        return Ok((n.max(0.0).round() as u64, p.clone()));
    }
    let sent_path = sibling(&l.path, "sent");
    let sent = number(json, &sent_path)?;
    if l.path.ends_with("loss_down_pct") {
        let up_path = sibling(&l.path, "loss_up_pct");
        let up = number(json, &up_path)?;
        let n = (sent * (1.0 - up / 100.0)).max(0.0).round();
        return Ok((n as u64, format!("{sent_path}×(1−{up_path}/100)")));
    }
    Ok((sent.max(0.0).round() as u64, sent_path))
}

fn check_loss(json: &Value, l: &LossExpect) -> Result<(), String> {
    let measured = number(json, &l.path)?;
    let (n, origin) = trials(json, l)?;
    if n == 0 {
        return Err(format!(
            "{}: no packets to judge loss on ({origin} = 0)",
            l.path
        ));
    }
    let sigmas = l.sigmas.unwrap_or(DEFAULT_SIGMAS);
    if let Some(rate) = l.rate_pct {
        let tol = binomial_tolerance_pct(n, rate, sigmas);
        if (measured - rate).abs() > tol {
            return Err(format!(
                "{}: {measured:.3} % is not {rate} % ± {tol:.3} pp ({sigmas}σ binomial, n={n} from {origin})",
                l.path
            ));
        }
    } else if let Some(max) = l.max_rate_pct {
        let tol = binomial_tolerance_pct(n, max, sigmas);
        if measured > max + tol {
            return Err(format!(
                "{}: {measured:.3} % exceeds {max} % + {tol:.3} pp ({sigmas}σ binomial, n={n} from {origin})",
                l.path
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expect(src: &str) -> Expect {
        let t: toml::Table = toml::from_str(src).unwrap();
        Expect::from_table(&t).unwrap()
    }

    fn report(up: f64, down: f64, sent: u64) -> Value {
        json!({
            "schema": 1, "ok": false, "duration_ms": 3100,
            "udp": { "reachable": true, "stun": { "mapped": "198.51.100.2:40000", "rtt_ms": 0.2 },
                     "echo": { "sent": sent, "received": 0, "loss_up_pct": up, "loss_down_pct": down } },
            "tcp": { "reachable": true, "connect_ms": 0.3, "echo": null },
            "findings": [ { "id": "packet_loss", "severity": "error", "summary": "", "fix": "" } ]
        })
    }

    #[test]
    fn tolerance_formula() {
        // 4.5 * sqrt(600 * 0.1 * 0.9) / 600 * 100 = 5.511…
        let t = binomial_tolerance_pct(600, 10.0, 4.5);
        assert!((t - 5.5114).abs() < 1e-3, "{t}");
        assert_eq!(binomial_tolerance_pct(600, 0.0, 4.5), 0.0);
        assert!(binomial_tolerance_pct(0, 10.0, 4.5).is_infinite());
    }

    #[test]
    fn paths_and_equality() {
        let e = expect(
            r#"
            exit_code = 1
            ok = false
            "udp.reachable" = true
            tcp = { reachable = true }
            "udp.echo.sent" = 600
            null = ["tcp.echo"]
            not_null = ["udp.stun.mapped"]
            findings = ["packet_loss"]
            absent_findings = ["udp_blocked"]
            [severity]
            packet_loss = "error"
            [starts_with]
            "udp.stun.mapped" = "198.51.100.2:"
            [[bounds]]
            path = "duration_ms"
            max = 5999
            "#,
        );
        assert_eq!(e.equals.len(), 4);
        let r = report(10.0, 0.0, 600);
        assert_eq!(e.check(Some(1), Some(&r)), Vec::<String>::new());
        let f = e.check(Some(0), Some(&json!({"ok": true, "findings": []})));
        assert!(f.iter().any(|m| m.starts_with("exit code")), "{f:?}");
        assert!(
            f.iter().any(|m| m.starts_with("ok: expected false")),
            "{f:?}"
        );
        assert!(
            f.iter().any(|m| m.contains("udp.reachable: missing")),
            "{f:?}"
        );
        assert!(
            f.iter().any(|m| m.contains("\"packet_loss\" missing")),
            "{f:?}"
        );
        assert!(f.iter().any(|m| m.contains("duration_ms")), "{f:?}");
        assert!(e.check(Some(1), None).iter().any(|m| m.contains("no JSON")));
    }

    #[test]
    fn loss_two_sided_and_down_trials() {
        let e = expect(
            r#"
            [[loss]]
            path = "udp.echo.loss_up_pct"
            rate_pct = 10.0
            [[loss]]
            path = "udp.echo.loss_down_pct"
            max_rate_pct = 1.0
            "#,
        );
        assert!(e.check(None, Some(&report(10.0, 0.0, 600))).is_empty());
        assert!(e.check(None, Some(&report(15.4, 0.0, 600))).is_empty());
        let f = e.check(None, Some(&report(15.6, 0.0, 600)));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("n=600"), "{f:?}");
        assert!(e.check(None, Some(&report(4.6, 0.0, 600))).is_empty());
        assert_eq!(e.check(None, Some(&report(4.4, 0.0, 600))).len(), 1);
        // Down: n = 600 * 0.9 = 540; bound 1 + 4.5*sqrt(.01*.99/540)*100 = 2.927
        assert!(e.check(None, Some(&report(10.0, 2.9, 600))).is_empty());
        let f = e.check(None, Some(&report(10.0, 2.95, 600)));
        assert!(f.len() == 1 && f[0].contains("n=540"), "{f:?}");
        // No packets at all cannot pass.
        assert_eq!(e.check(None, Some(&report(0.0, 0.0, 0))).len(), 2);
    }

    #[test]
    fn exact_zero_rate() {
        let e = expect("[[loss]]\npath = \"udp.echo.loss_down_pct\"\nrate_pct = 0.0\n");
        assert!(e.check(None, Some(&report(0.0, 0.0, 600))).is_empty());
        assert_eq!(e.check(None, Some(&report(0.0, 0.2, 600))).len(), 1);
    }

    #[test]
    fn schema_errors() {
        for bad in [
            "findings = [\"nope\"]",
            "findings = [\"udp_blocked\"]\nabsent_findings = [\"udp_blocked\"]",
            "[severity]\nudp_blocked = \"fatal\"",
            "[[loss]]\npath = \"x\"",
            "[[loss]]\npath = \"x\"\nrate_pct = 1.0\nmax_rate_pct = 2.0",
            "[[loss]]\npath = \"x\"\nrate = 1.0",
            "[[bounds]]\npath = \"x\"",
            "exit_code = \"1\"",
        ] {
            let t: toml::Table = toml::from_str(bad).unwrap();
            assert!(Expect::from_table(&t).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn lookup_arrays_and_numbers() {
        let v = json!({"a": [{"b": 1.0}]});
        assert_eq!(lookup(&v, "a.0.b"), Some(&json!(1.0)));
        assert!(json_eq(&json!(1), &json!(1.0)));
        assert!(lookup(&v, "a.1.b").is_none());
    }
}
