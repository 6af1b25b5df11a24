//! Scenario files (`tests/scenarios/NAME.toml`) and their runner.
//!
//! See `tests/README.md` for the schema.  The runner:
//! 1. builds the topology (`routed` or `nat`, `[nat]` settings),
//! 2. applies nft rules of `[router]`, `[client]`, `[server]`
//!    (`input`/`output`/`forward` → `table inet probe_test`),
//! 3. writes `/etc/netns/NS/hosts` from each section's `hosts`,
//! 4. starts every `[[spawn]]` helper and waits for it to be ready,
//! 5. starts `probe-server --listen 0.0.0.0:8443 --state-dir TMP ARGS…` in
//!    the server ns and waits for its ready line,
//! 6. runs `probe-client SERVER --json ARGS… --site NAME` in the client ns
//!    (bound `timeout_secs`, default 40 s),
//! 7. checks `[expect]` (plus: no timeout, the report's `schema` is 1 and
//!    `site` is the scenario name, and the server is still running),
//!    panicking with the client's stdout/stderr, the server's stderr, helper
//!    output and the nft rulesets on failure.
//!
//! Strings in args, rules, hosts, `server` and `[[spawn]]` argv may use
//! `{var}` substitutions: see [`Topology::vars`]; client args may also use
//! `{pin}`, `{server_udp_port}`, `{server_tcp_port}` and `{state_dir}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::expect::Expect;
use crate::nft::Chain;
use crate::probe::{start_server_with_state, try_run_client_env, ClientRun};
use crate::proc::Proc;
use crate::topology::{NatConfig, PortMap, Role, Topology, TopologyKind, NAT_PUBLIC_IP};

/// Default client wall-clock bound.
pub const CLIENT_TIMEOUT_SECS: u64 = 40;
/// Default server listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";

/// `topology = "…"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopologyName {
    /// [`Topology::routed`].
    Routed,
    /// [`Topology::nat`].
    Nat,
}

/// `[nat]` (only with `topology = "nat"`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatSection {
    /// Public IP (default 203.0.113.10).
    #[serde(default)]
    pub public_ip: Option<std::net::Ipv4Addr>,
    /// Forward all other ports unchanged; default: true iff no `[[nat.map]]`.
    #[serde(default)]
    pub forward_all: Option<bool>,
    /// Port forwards (`proto`, `public`, `private`).
    #[serde(default)]
    pub map: Vec<PortMap>,
}

impl NatSection {
    /// The [`NatConfig`] this section describes.
    pub fn config(&self) -> NatConfig {
        NatConfig {
            public_ip: self.public_ip.unwrap_or(NAT_PUBLIC_IP),
            forward_all: self.forward_all.unwrap_or(self.map.is_empty()),
            maps: self.map.clone(),
        }
    }
}

/// `[client]`, `[server]`, `[router]`.  nft/hosts keys apply to all three;
/// the rest only where noted.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NsSection {
    /// nft rules for the input chain.
    #[serde(default)]
    pub input: Vec<String>,
    /// nft rules for the output chain.
    #[serde(default)]
    pub output: Vec<String>,
    /// nft rules for the forward chain.
    #[serde(default)]
    pub forward: Vec<String>,
    /// `/etc/netns/NS/hosts` lines (`"IP NAME…"`), besides localhost.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `/etc/netns/NS/resolv.conf` lines (e.g. `"nameserver {router_server_ip}"`); when empty the
    /// namespace keeps the isolated one (nameserver 127.0.0.1).
    #[serde(default)]
    pub resolv_conf: Vec<String>,
    /// client/server: extra arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// client/server: extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// client: the SERVER argument (default `{server_public_ip}`).
    #[serde(default)]
    pub server: Option<String>,
    /// client: wall-clock bound in seconds (default 40).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// server: `--listen` value (default `0.0.0.0:8443`).
    #[serde(default)]
    pub listen: Option<String>,
}

/// `[[spawn]]`: a helper process (e.g. a STUN server) started before
/// probe-server and killed at the end.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnSection {
    /// Namespace: client, router or server.
    pub ns: Role,
    /// Program and arguments (`{var}` substitutions apply).
    pub argv: Vec<String>,
    /// Ready when all of these listen (`"udp:3478"`, `"tcp:203.0.113.1:443"`).
    #[serde(default)]
    pub wait_listen: Vec<String>,
    /// Ready when a stdout line contains this.
    #[serde(default)]
    pub wait_stdout: Option<String>,
    /// Ready when a stderr line contains this.
    #[serde(default)]
    pub wait_stderr: Option<String>,
    /// Bound on readiness (default 10 s).
    #[serde(default)]
    pub ready_timeout_secs: Option<u64>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// `[calls]`: probe-server stands in for the Calls plugin's integrated RTC server (no RTCD):
/// the runner writes a Mattermost `config.json` holding `settings` as the plugin's block and
/// passes it with `--calls-config`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallsSection {
    /// `PluginSettings.Plugins["com.mattermost.calls"]`, keys as config.json stores them.
    #[serde(default)]
    pub settings: toml::Table,
    /// `MM_CALLS_*` variables of a process named `mattermost` started for the run (a copy of
    /// `sleep`): probe-server must find them in its `/proc/PID/environ`, not in its own.
    #[serde(default)]
    pub mattermost_env: BTreeMap<String, String>,
}

/// A scenario file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// One line: what the scenario simulates.
    pub description: String,
    /// `routed` or `nat`.
    pub topology: TopologyName,
    /// NAT settings.
    #[serde(default)]
    pub nat: Option<NatSection>,
    /// Router namespace settings.
    #[serde(default)]
    pub router: NsSection,
    /// Client namespace settings.
    #[serde(default)]
    pub client: NsSection,
    /// Server namespace settings.
    #[serde(default)]
    pub server: NsSection,
    /// Helper processes.
    #[serde(default)]
    pub spawn: Vec<SpawnSection>,
    /// The Calls plugin's settings instead of RTCD's.
    #[serde(default)]
    pub calls: Option<CallsSection>,
    /// Assertions (see [`crate::expect`]).
    #[serde(default)]
    pub expect: toml::Table,
}

/// A loaded and validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// File stem; passed as `--site`.
    pub name: String,
    /// Source file.
    pub path: PathBuf,
    /// The file's contents.
    pub file: ScenarioFile,
    /// Parsed `[expect]`.
    pub expect: Expect,
}

impl Scenario {
    /// Loads and validates `path`.
    pub fn load(path: &Path) -> Result<Scenario, String> {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("bad scenario path {}", path.display()))?
            .to_string();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let file: ScenarioFile =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let expect =
            Expect::from_table(&file.expect).map_err(|e| format!("{}: {e}", path.display()))?;
        let s = Scenario {
            name,
            path: path.to_path_buf(),
            file,
            expect,
        };
        s.validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(s)
    }

    /// Loads `tests/scenarios/NAME.toml`.
    pub fn named(name: &str) -> Result<Scenario, String> {
        Self::load(&crate::scenarios_dir().join(format!("{name}.toml")))
    }

    fn validate(&self) -> Result<(), String> {
        let f = &self.file;
        if f.description.trim().is_empty() {
            return Err("description is empty".into());
        }
        if f.nat.is_some() && f.topology != TopologyName::Nat {
            return Err("[nat] needs topology = \"nat\"".into());
        }
        let r = &f.router;
        if !r.args.is_empty()
            || !r.env.is_empty()
            || r.server.is_some()
            || r.timeout_secs.is_some()
            || r.listen.is_some()
        {
            return Err("[router] takes only input/output/forward/hosts/resolv_conf".into());
        }
        if f.server.server.is_some() || f.server.timeout_secs.is_some() {
            return Err("[server] does not take server/timeout_secs".into());
        }
        if f.client.listen.is_some() {
            return Err("[client] does not take listen".into());
        }
        if f.client.timeout_secs == Some(0) {
            return Err("client.timeout_secs must be > 0".into());
        }
        for (role, sec) in [("router", r), ("client", &f.client), ("server", &f.server)] {
            for rule in sec
                .input
                .iter()
                .chain(&sec.output)
                .chain(&sec.forward)
                .chain(&sec.hosts)
                .chain(&sec.resolv_conf)
            {
                if rule.contains('\n') || rule.trim().is_empty() {
                    return Err(format!(
                        "[{role}]: rules/hosts must be non-empty single lines: {rule:?}"
                    ));
                }
            }
        }
        for s in &f.spawn {
            if s.argv.is_empty() {
                return Err("[[spawn]] argv is empty".into());
            }
        }
        Ok(())
    }

    /// The topology kind to build.
    pub fn topology_kind(&self) -> TopologyKind {
        match self.file.topology {
            TopologyName::Routed => TopologyKind::Routed,
            TopologyName::Nat => {
                TopologyKind::Nat(self.file.nat.clone().unwrap_or_default().config())
            }
        }
    }

    fn section(&self, role: Role) -> &NsSection {
        match role {
            Role::Client => &self.file.client,
            Role::Router => &self.file.router,
            Role::Server => &self.file.server,
        }
    }

    /// Runs the scenario; panics with diagnostics on any failure.  Returns
    /// the client run (with its parsed report) for extra checks in Rust.
    pub fn run(&self) -> ClientRun {
        // Build (or find) the binaries before any namespace exists.
        crate::binaries();
        let topo = Topology::build(self.topology_kind());
        let mut vars = topo.vars();
        vars.insert("scenario".into(), self.name.clone());

        for role in Role::ALL {
            let sec = self.section(role);
            for (chain, rules) in [
                (Chain::Input, &sec.input),
                (Chain::Output, &sec.output),
                (Chain::Forward, &sec.forward),
            ] {
                let rules: Vec<String> = rules.iter().map(|r| subst(r, &vars)).collect();
                topo.add_rules(role, chain, &rules);
            }
            if !sec.hosts.is_empty() {
                let hosts: Vec<String> = sec.hosts.iter().map(|h| subst(h, &vars)).collect();
                topo.ns(role).write_hosts(&hosts);
            }
            if !sec.resolv_conf.is_empty() {
                let mut text = String::new();
                for l in &sec.resolv_conf {
                    text.push_str(&subst(l, &vars));
                    text.push('\n');
                }
                topo.ns(role).write_etc_file("resolv.conf", &text);
            }
        }

        let client_timeout =
            Duration::from_secs(self.file.client.timeout_secs.unwrap_or(CLIENT_TIMEOUT_SECS));
        // Helpers and the server outlive the client by a margin, then the
        // watchdog kills them: nothing can hang.
        let lifetime = client_timeout + Duration::from_secs(60);

        let mut helpers: Vec<Proc> = Vec::new();
        for (i, s) in self.file.spawn.iter().enumerate() {
            let argv: Vec<String> = s.argv.iter().map(|a| subst(a, &vars)).collect();
            let ns = topo.ns(s.ns);
            let mut cmd = ns.argv_command(&argv);
            cmd.envs(&s.env);
            let label = format!("spawn[{i}] [{}] {}", s.ns.name(), argv.join(" "));
            let p = Proc::spawn(cmd, label.clone(), lifetime)
                .unwrap_or_else(|e| panic!("cannot spawn {label}: {e}"));
            helpers.push(p);
            let p = helpers.last().expect("just pushed");
            let timeout = Duration::from_secs(s.ready_timeout_secs.unwrap_or(10));
            let mut why = Vec::new();
            if let Some(want) = &s.wait_stdout {
                if let Err(e) = p
                    .stdout_capture()
                    .wait_for_line(timeout, |l| l.contains(want.as_str()))
                {
                    why.push(format!("no stdout line containing {want:?} ({e:?})"));
                }
            }
            if let Some(want) = &s.wait_stderr {
                if let Err(e) = p
                    .stderr_capture()
                    .wait_for_line(timeout, |l| l.contains(want.as_str()))
                {
                    why.push(format!("no stderr line containing {want:?} ({e:?})"));
                }
            }
            for spec in &s.wait_listen {
                if let Err(e) = ns.wait_listening(&subst(spec, &vars), timeout) {
                    why.push(e);
                }
            }
            if !why.is_empty() {
                panic!(
                    "scenario {}: helper {label} not ready:\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.name,
                    why.join("\n"),
                    p.stdout(),
                    p.stderr()
                );
            }
        }

        let srv = &self.file.server;
        let mut server_args: Vec<String> = srv.args.iter().map(|a| subst(a, &vars)).collect();
        // `[calls]` scenarios run in parallel: each `mattermost` runs in its scenario's server
        // namespace, and probe-server outside the host's namespace considers only the
        // processes of its own (probe-server rtcd_env::netns_filter).
        // Lives until the run ends: config.json and the `mattermost` executable.
        let calls_dir = self
            .file
            .calls
            .as_ref()
            .map(|_| crate::tempdir::TempDir::new(&format!("calls-{}", self.name)));
        if let (Some(c), Some(dir)) = (&self.file.calls, &calls_dir) {
            server_args.extend(self.calls_setup(
                c,
                dir.path(),
                &topo.server,
                lifetime,
                &mut helpers,
            ));
        }
        let listen = subst(srv.listen.as_deref().unwrap_or(DEFAULT_LISTEN), &vars);
        let mut server =
            start_server_with_state(&topo.server, &listen, &server_args, &srv.env, lifetime)
                .unwrap_or_else(|e| panic!("scenario {}: {e}", self.name));
        vars.insert("pin".into(), server.pin().to_string());
        vars.insert(
            "server_udp_port".into(),
            server.ready.udp.port().to_string(),
        );
        vars.insert(
            "server_tcp_port".into(),
            server.ready.tcp.port().to_string(),
        );
        if let Some(d) = server.state_dir() {
            vars.insert("state_dir".into(), d.display().to_string());
        }

        let cl = &self.file.client;
        let target = subst(cl.server.as_deref().unwrap_or("{server_public_ip}"), &vars);
        let mut args = vec![target, "--json".to_string()];
        args.extend(cl.args.iter().map(|a| subst(a, &vars)));
        args.extend(["--site".to_string(), self.name.clone()]);
        let run = try_run_client_env(&topo.client, &args, &cl.env, client_timeout);

        let mut failures = Vec::new();
        if run.timed_out {
            failures.push(format!(
                "probe-client ran past its {client_timeout:?} bound and was killed"
            ));
        }
        if let Some(st) = server.exited() {
            failures.push(format!("probe-server exited during the run: {st}"));
        }
        if let Some(j) = &run.json {
            if j.get("schema") != Some(&serde_json::json!(1)) {
                failures.push(format!(
                    "report schema: expected 1, got {}",
                    j.get("schema").unwrap_or(&serde_json::Value::Null)
                ));
            }
            if j.get("site").and_then(|s| s.as_str()) != Some(self.name.as_str()) {
                failures.push(format!(
                    "report site: expected {:?}, got {}",
                    self.name,
                    j.get("site").unwrap_or(&serde_json::Value::Null)
                ));
            }
        }
        failures.extend(self.expect.check(run.code, run.json.as_ref()));
        failures.extend(self.expect.check_server_stderr(&server.stderr()));

        if !failures.is_empty() {
            let helper_out: String = helpers
                .iter()
                .map(|h| {
                    format!(
                        "--- {} stdout ---\n{}\n--- {} stderr ---\n{}\n",
                        h.label(),
                        crate::tail(&h.stdout(), 8 * 1024),
                        h.label(),
                        crate::tail(&h.stderr(), 8 * 1024)
                    )
                })
                .collect();
            let msg = format!(
                "scenario {name} FAILED ({desc})\nfile: {path}\n\n{n} failed expectation(s):\n  - {fails}\n\n{client}\n--- server stderr ---\n{serr}\n{helper_out}{rules}",
                name = self.name,
                desc = self.file.description,
                path = self.path.display(),
                n = failures.len(),
                fails = failures.join("\n  - "),
                client = run.describe(),
                serr = crate::tail(&server.stderr(), 32 * 1024),
                rules = topo.dump_rulesets(),
            );
            // Kill processes before the namespaces go (drop order makes sure
            // too, but be explicit).
            drop(server);
            drop(helpers);
            panic!("{msg}");
        }
        run
    }
}

impl Scenario {
    /// Writes `config.json` for `[calls]`, starts the `mattermost` process with its
    /// `MM_CALLS_*` environment, and returns the server arguments that point at them.
    fn calls_setup(
        &self,
        c: &CallsSection,
        dir: &Path,
        ns: &crate::netns::Netns,
        lifetime: Duration,
        helpers: &mut Vec<Proc>,
    ) -> Vec<String> {
        let block = serde_json::to_value(&c.settings).expect("TOML values are JSON values");
        let config = serde_json::json!({
            "ServiceSettings": {"SiteURL": "http://mattermost.example.com"},
            "PluginSettings": {"Enable": true, "Plugins": {"com.mattermost.calls": block}},
        });
        let path = dir.join("config.json");
        std::fs::write(&path, config.to_string()).unwrap_or_else(|e| {
            panic!(
                "scenario {}: cannot write {}: {e}",
                self.name,
                path.display()
            )
        });
        if !c.mattermost_env.is_empty() {
            // A process whose name (comm and executable) is `mattermost`, as the real one's is.
            let exe = dir.join("mattermost");
            std::fs::copy("/usr/bin/sleep", &exe)
                .or_else(|_| std::fs::copy("/bin/sleep", &exe))
                .unwrap_or_else(|e| panic!("scenario {}: cannot copy sleep: {e}", self.name));
            // In the server's namespace, as Mattermost and its plugin share one host.
            let mut cmd = ns.command(&exe);
            cmd.arg(lifetime.as_secs().to_string())
                .envs(&c.mattermost_env);
            let p = Proc::spawn(cmd, "mattermost (MM_CALLS_* holder)", lifetime)
                .unwrap_or_else(|e| panic!("scenario {}: cannot start mattermost: {e}", self.name));
            helpers.push(p);
        }
        vec!["--calls-config".into(), path.display().to_string()]
    }
}

/// Replaces `{name}` with `vars[name]`; unknown names panic (typos must not
/// silently reach a command line).  `{{` and `}}` are literal braces.
pub fn subst(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let c = rest.as_bytes()[i];
        let after = &rest[i + 1..];
        if after.as_bytes().first() == Some(&c) {
            out.push(c as char);
            rest = &after[1..];
            continue;
        }
        if c == b'}' {
            out.push('}');
            rest = after;
            continue;
        }
        match after.find('}') {
            Some(j)
                if after[..j]
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                    && j > 0 =>
            {
                let key = &after[..j];
                let v = vars.get(key).unwrap_or_else(|| {
                    panic!(
                        "unknown substitution {{{key}}} in {s:?}; known: {:?}",
                        vars.keys()
                    )
                });
                out.push_str(v);
                rest = &after[j + 1..];
            }
            _ => {
                // Not a variable (e.g. an nft set `{ 3478, 8443 }`): literal.
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Loads and runs `tests/scenarios/NAME.toml`; returns the client run.
pub fn run_named(name: &str) -> ClientRun {
    let s = Scenario::named(name).unwrap_or_else(|e| panic!("{e}"));
    s.run()
}

/// Loads and runs a scenario file; returns the client run.
pub fn run_scenario_file(path: &Path) -> ClientRun {
    let s = Scenario::load(path).unwrap_or_else(|e| panic!("{e}"));
    s.run()
}

/// Stems of all `tests/scenarios/*.toml`, sorted.
pub fn scenario_names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(crate::scenarios_dir())
        .expect("read tests/scenarios")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution() {
        let mut v = BTreeMap::new();
        v.insert("server_ip".to_string(), "203.0.113.2".to_string());
        assert_eq!(
            subst("ip daddr {server_ip} drop", &v),
            "ip daddr 203.0.113.2 drop"
        );
        assert_eq!(
            subst("udp dport { 3478, 8443 } drop", &v),
            "udp dport { 3478, 8443 } drop"
        );
        assert_eq!(subst("{{server_ip}}", &v), "{server_ip}");
        assert_eq!(subst("a}b", &v), "a}b");
    }

    #[test]
    #[should_panic(expected = "unknown substitution")]
    fn unknown_substitution_panics() {
        subst("{nope}", &BTreeMap::new());
    }
}
