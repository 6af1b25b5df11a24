//! Where RTCD's `RTCD_*` environment really is. RTCD applies `RTCD_*` variables over its TOML
//! (rtcd cmd/rtcd/config.go:31 (v1.2.6), `envconfig.Process("rtcd", &cfg)`), and admins set
//! them in the systemd unit or with `docker -e` (rtcd docs/getting_started.md), so a tool run
//! under `sudo` in a shell does not have them. In order:
//!
//! 1. the running RTCD's `/proc/PID/environ` (the process holding RTCD's ICE/API ports whose
//!    name says rtcd, else the one process whose comm or executable is `rtcd`);
//! 2. `systemctl show -p Environment -p EnvironmentFiles UNIT` when the unit exists (what RTCD
//!    gets when systemd starts it next);
//! 3. this tool's own environment.
//!
//! Used by the doctor (and bundle) and by `probe-server --rtcd-config`. The parsers are pure and
//! unit-tested; the discovery is Linux `/proc` and is bounded by a deadline.

use std::collections::{BTreeMap, HashSet};
use std::iter::Peekable;
use std::path::PathBuf;
use std::process::Command;
use std::str::Chars;
use std::time::Instant;

use crate::doctor::cmd;
use crate::doctor::procnet::{self, Proto};

/// The unit RTCD's packages and docs install (rtcd docs/getting_started.md).
pub const DEFAULT_UNIT: &str = "rtcd.service";

/// Whose environment is looked for. The Calls plugin reads `MM_CALLS_*` with `os.Getenv` in its
/// own process (mattermost-plugin-calls server/environment.go:109, configuration.go:471-481),
/// which Mattermost starts with its own environment; so the plugin process holding the RTC port,
/// else the `mattermost` process, else `mattermost.service`, are where those variables are.
#[derive(Debug)]
pub struct Target {
    /// The variables kept: `RTCD_` or `MM_CALLS_`.
    pub prefix: &'static str,
    /// The process in sentences: "RTCD", "Mattermost".
    pub label: &'static str,
    /// Exact process names (comm or executable) to scan for when no port holder is found.
    pub names: &'static [&'static str],
    /// A port holder's name that says it is this process.
    pub says: fn(&str) -> bool,
}

/// Targets are statics, told apart by their prefix (function pointers do not compare).
impl PartialEq for Target {
    fn eq(&self, other: &Self) -> bool {
        self.prefix == other.prefix
    }
}

impl Eq for Target {}

/// RTCD and its `RTCD_*` variables.
pub static RTCD: Target = Target {
    prefix: "RTCD_",
    label: "RTCD",
    names: &["rtcd"],
    says: looks_like_rtcd,
};

/// Mattermost (and the Calls plugin's process, `plugin-linux-amd64`, whose comm the kernel
/// truncates to `plugin-linux-am`) and its `MM_CALLS_*` variables.
pub static MATTERMOST: Target = Target {
    prefix: "MM_CALLS_",
    label: "Mattermost",
    names: &["mattermost"],
    says: looks_like_mattermost,
};

/// The unit Mattermost's install guide creates.
pub const MATTERMOST_UNIT: &str = "mattermost.service";

fn looks_like_mattermost(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("mattermost") || n.starts_with("plugin-linux")
}

/// Which environment was used.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Source {
    /// The running RTCD's `/proc/PID/environ`.
    Process { pid: u32, process: String },
    /// The systemd unit's `Environment=` / `EnvironmentFile=` settings.
    Systemd { unit: String },
    /// The environment this tool runs in.
    Own,
}

/// RTCD's `RTCD_*` variables and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtcdEnv {
    /// Whose variables these are.
    pub target: &'static Target,
    pub source: Source,
    /// Only `RTCD_*` variables (nothing else is read by RTCD's config, and nothing else is kept).
    pub vars: BTreeMap<String, String>,
    /// Why the earlier sources were not used, one sentence each.
    pub notes: Vec<String>,
    /// RTCD's process when one was found (also when its environment could not be read).
    pub pid: Option<u32>,
    /// The systemd unit RTCD runs under (from its cgroup) or that was found; for the journal.
    pub unit: Option<String>,
    /// `RTCD_*` variables of this tool's own environment that RTCD does not run with
    /// (ignored, since another source was used).
    pub ignored_own: Vec<String>,
}

impl RtcdEnv {
    pub fn get(&self, k: &str) -> Option<String> {
        self.vars.get(k).cloned()
    }

    /// `process`, `systemd` or `environment`: for logs and JSON.
    pub fn kind(&self) -> &'static str {
        match self.source {
            Source::Process { .. } => "process",
            Source::Systemd { .. } => "systemd",
            Source::Own => "environment",
        }
    }

    /// Where the variables came from, in words.
    pub fn describe(&self) -> String {
        match &self.source {
            Source::Process { pid, process } => format!(
                "the running {}'s environment ({process}, pid {pid}: /proc/{pid}/environ)",
                self.target.label
            ),
            Source::Systemd { unit } => format!(
                "the systemd unit {unit} (`systemctl show -p Environment -p EnvironmentFiles {unit}`)"
            ),
            Source::Own => "this tool's own environment".to_string(),
        }
    }

    /// One line: source, variables, and what was skipped on the way.
    pub fn summary(&self) -> String {
        let names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        let mut s = format!(
            "{}* from {}: {}",
            self.target.prefix,
            self.describe(),
            if names.is_empty() {
                "none set".to_string()
            } else {
                names.join(", ")
            }
        );
        if !self.notes.is_empty() {
            s.push_str(&format!(" ({})", self.notes.join("; ")));
        }
        if !self.ignored_own.is_empty() {
            s.push_str(&format!(
                "; ignored from this shell ({} does not run with them): {}",
                self.target.label,
                self.ignored_own.join(", ")
            ));
        }
        s
    }
}

/// What to look for: RTCD's ports (from its config file) and its unit name.
pub struct Hints<'a> {
    pub udp_ports: Vec<u16>,
    pub tcp_ports: Vec<u16>,
    pub unit: &'a str,
}

/// Finds RTCD's environment: the process, else the systemd unit, else this tool's own.
pub fn discover(h: &Hints, deadline: Instant) -> RtcdEnv {
    discover_for(&RTCD, h, deadline)
}

/// [`discover`] for `target`'s variables and process.
pub fn discover_for(target: &'static Target, h: &Hints, deadline: Instant) -> RtcdEnv {
    let own = own_vars_for(target);
    let mut notes = Vec::new();
    let found = find_process(target, h, deadline, &mut notes);
    let unit_of_process = found.as_ref().and_then(|(pid, _)| unit_of(*pid));
    let pid = found.as_ref().map(|(p, _)| *p);
    let mut env = match found {
        Some((pid, process)) => match std::fs::read(format!("/proc/{pid}/environ")) {
            Ok(bytes) => Some(RtcdEnv {
                target,
                source: Source::Process { pid, process },
                vars: prefixed(target, parse_environ(&bytes)),
                notes: Vec::new(),
                pid: Some(pid),
                unit: unit_of_process.clone(),
                ignored_own: Vec::new(),
            }),
            Err(e) => {
                notes.push(format!(
                    "cannot read /proc/{pid}/environ of {process} (pid {pid}): {e} — run as root"
                ));
                None
            }
        },
        None => None,
    };
    if env.is_none() {
        let unit = unit_of_process
            .clone()
            .unwrap_or_else(|| h.unit.to_string());
        match systemd_env(&unit, deadline) {
            Ok(vars) => {
                env = Some(RtcdEnv {
                    target,
                    source: Source::Systemd { unit: unit.clone() },
                    vars: prefixed(target, vars),
                    notes: Vec::new(),
                    pid,
                    unit: Some(unit),
                    ignored_own: Vec::new(),
                })
            }
            Err(why) => notes.push(why),
        }
    }
    let mut env = env.unwrap_or_else(|| RtcdEnv {
        target,
        source: Source::Own,
        vars: own.clone(),
        notes: Vec::new(),
        pid,
        unit: unit_of_process,
        ignored_own: Vec::new(),
    });
    env.notes = notes;
    if env.source != Source::Own {
        env.ignored_own = own
            .iter()
            .filter(|(k, v)| env.vars.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
    }
    env
}

/// This tool's own `RTCD_*` variables.
pub fn own_vars() -> BTreeMap<String, String> {
    own_vars_for(&RTCD)
}

/// This tool's own variables of `target`.
pub fn own_vars_for(target: &Target) -> BTreeMap<String, String> {
    prefixed(target, std::env::vars().collect())
}

fn prefixed(target: &Target, vars: Vec<(String, String)>) -> BTreeMap<String, String> {
    vars.into_iter()
        .filter(|(k, _)| k.starts_with(target.prefix))
        .collect()
}

/// A process name that says RTCD (`rtcd`, `rtcd-linux-amd64`, a test's `rtcd-standin`).
fn looks_like_rtcd(name: &str) -> bool {
    name.to_ascii_lowercase().contains("rtcd")
}

/// RTCD's process: the holder of its ports (in this network namespace) whose name says rtcd,
/// else the only process whose comm or executable is `rtcd` (e.g. in a container whose ports
/// live in another namespace). Never this process, nor a port holder that is not RTCD
/// (docker-proxy, a probe-server on RTCD's port).
fn find_process(
    target: &Target,
    h: &Hints,
    deadline: Instant,
    notes: &mut Vec<String>,
) -> Option<(u32, String)> {
    let me = std::process::id();
    let others = match port_holder(target, h, deadline, me) {
        Ok(found) => return Some(found),
        Err(others) => others,
    };
    let mut named = named_process(target, deadline, me, notes);
    netns_filter(&mut named, notes);
    match named.len() {
        1 => return named.pop(),
        0 => {}
        n => notes.push(format!(
            "{n} processes named {} (pids {}) and none holds the configured ports here: not guessing which",
            target.names.join("/"),
            named
                .iter()
                .map(|(p, _)| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
    let l = target.label;
    if others.is_empty() {
        notes.push(format!("no running {l} found"));
    } else {
        notes.push(format!(
            "no running {l} found ({}, not {l})",
            others.join(", ")
        ));
    }
    None
}

/// The first holder of RTCD's ports (UDP ports first, in the config's order) whose name says
/// rtcd; else the holders that are not RTCD (`UDP 8443 is held by docker-proxy (pid 9)`), so
/// the note can name them.
fn port_holder(
    target: &Target,
    h: &Hints,
    deadline: Instant,
    me: u32,
) -> Result<(u32, String), Vec<String>> {
    let mut wanted: Vec<(Proto, u16)> = Vec::new();
    wanted.extend(h.udp_ports.iter().map(|p| (Proto::Udp, *p)));
    wanted.extend(h.tcp_ports.iter().map(|p| (Proto::Tcp, *p)));
    let udp = procnet::read_tables(Proto::Udp).unwrap_or_default();
    let tcp = procnet::read_tables(Proto::Tcp).unwrap_or_default();
    let mut inodes_in_order: Vec<(Proto, u16, u64)> = Vec::new();
    for (proto, port) in &wanted {
        let (table, listen_only) = match proto {
            Proto::Udp => (&udp, false),
            Proto::Tcp => (&tcp, true),
        };
        for s in procnet::on_port(table, *port, &[], listen_only) {
            inodes_in_order.push((*proto, *port, s.inode));
        }
    }
    let inodes: HashSet<u64> = inodes_in_order.iter().map(|(_, _, i)| *i).collect();
    let (owners, _) = procnet::owners(&inodes, deadline);
    let mut others = Vec::new();
    for (proto, port, inode) in &inodes_in_order {
        for o in owners.get(inode).into_iter().flatten() {
            if o.pid == me {
                continue;
            }
            if o.is(target) {
                return Ok((o.pid, o.process.clone()));
            }
            let label = format!(
                "{} {port} is held by {} (pid {})",
                match proto {
                    Proto::Udp => "UDP",
                    Proto::Tcp => "TCP",
                },
                o.process,
                o.pid
            );
            if !others.contains(&label) {
                others.push(label);
            }
        }
    }
    Err(others)
}

/// RTCD's pid, found as [`discover`] finds it: the holder of UDP `udp` or TCP `tcp`, else the
/// only process named rtcd (an unprivileged user sees names, not other users' sockets).
pub fn rtcd_pid(udp: u16, tcp: u16, deadline: Instant) -> Option<u32> {
    let hints = Hints {
        udp_ports: vec![udp],
        tcp_ports: vec![tcp],
        unit: DEFAULT_UNIT,
    };
    find_process(&RTCD, &hints, deadline, &mut Vec::new()).map(|(pid, _)| pid)
}

/// Every other process whose comm or executable is one of the target's names (`rtcd`), by a
/// scan of `/proc` bounded by
/// the deadline. By name: comm is readable by anyone, exe only by the owner or root.
fn named_process(
    target: &Target,
    deadline: Instant,
    me: u32,
    notes: &mut Vec<String>,
) -> Vec<(u32, String)> {
    let mut named = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return named;
    };
    for e in rd.flatten() {
        if Instant::now() >= deadline {
            notes.push("the process scan did not finish in time".into());
            break;
        }
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let comm = procnet::process_name(pid);
        let exe = procnet::exe_name(pid);
        if target
            .names
            .iter()
            .any(|n| comm == *n || exe.as_deref() == Some(*n))
        {
            named.push((pid, comm));
        }
    }
    named
}

/// Whether `pid` shares this process's network namespace; `None` when either cannot be read.
pub fn same_net_ns(pid: u32) -> Option<bool> {
    Some(net_ns(&pid.to_string())? == net_ns("self")?)
}

/// The network namespace of `pid` (`net:[4026531840]`), or `self`.
fn net_ns(pid: &str) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
}

/// Keeps the named processes of this network namespace when there are any: a probe-server in
/// a container (or a test's namespace) must not read a neighbour's variables. From the host's
/// namespace (pid 1's) a process in another one (Mattermost in a container) still counts; from
/// any other namespace only its own do.
fn netns_filter(named: &mut Vec<(u32, String)>, notes: &mut Vec<String>) {
    let Some(own) = net_ns("self") else { return };
    let ns: Vec<Option<std::path::PathBuf>> = named
        .iter()
        .map(|(pid, _)| net_ns(&pid.to_string()))
        .collect();
    let ours = ns.iter().filter(|n| n.as_ref() == Some(&own)).count();
    let on_host = net_ns("1").is_some_and(|init| init == own);
    if ours == 0 && on_host {
        return;
    }
    let before = named.len();
    let mut i = 0;
    named.retain(|_| {
        i += 1;
        // Unreadable namespace (not root): keep, as before this filter.
        ns[i - 1].as_ref().is_none_or(|n| *n == own)
    });
    if named.len() < before {
        notes.push(format!(
            "{} process(es) in other network namespaces not considered",
            before - named.len()
        ));
    }
}

/// The systemd unit of a process, from `/proc/PID/cgroup` (`0::/system.slice/rtcd.service`).
fn unit_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    unit_from_cgroup(&text)
}

/// The last `*.service` path segment of a cgroup file (pure).
pub fn unit_from_cgroup(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .flat_map(|path| path.split('/'))
        .rfind(|seg| seg.ends_with(".service"))
        .map(str::to_string)
}

/// The unit's environment via `systemctl show`; `Err` says why it was not used.
fn systemd_env(unit: &str, deadline: Instant) -> Result<Vec<(String, String)>, String> {
    let Some(systemctl) = cmd::find_program("systemctl") else {
        return Err("systemctl not found: no systemd unit read".into());
    };
    let mut c = Command::new(systemctl);
    c.args([
        "show",
        "--no-pager",
        "-p",
        "LoadState",
        "-p",
        "Environment",
        "-p",
        "EnvironmentFiles",
        "--",
        unit,
    ]);
    // Never localised, never paged.
    c.env("LC_ALL", "C").env("SYSTEMD_PAGER", "");
    let out = cmd::run(c, deadline).map_err(|e| format!("`systemctl show {unit}`: {e}"))?;
    if !out.success {
        let why = out
            .stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("failed")
            .trim()
            .to_string();
        return Err(format!("`systemctl show {unit}`: {why}"));
    }
    let show = parse_systemctl_show(&out.stdout);
    match show.load_state.as_deref() {
        Some("loaded") => {}
        Some(state) => return Err(format!("no systemd unit {unit} (LoadState={state})")),
        None => return Err(format!("`systemctl show {unit}` gave no LoadState")),
    }
    // systemd.exec(5): EnvironmentFile= settings override Environment=, files in order.
    let mut vars = show.environment;
    for (path, ignore_errors) in show.env_files {
        match std::fs::read_to_string(&path) {
            Ok(text) => vars.extend(parse_env_file(&text)),
            Err(_) if ignore_errors => {}
            Err(e) => {
                return Err(format!(
                    "cannot read {} (EnvironmentFile= of {unit}): {e} — run as root",
                    path.display()
                ))
            }
        }
    }
    // Later assignments win, as in systemd.
    let mut merged: Vec<(String, String)> = Vec::new();
    for (k, v) in vars {
        merged.retain(|(mk, _)| *mk != k);
        merged.push((k, v));
    }
    Ok(merged)
}

/// `/proc/PID/environ`: `KEY=VALUE` entries separated by NUL; an entry without `=` is skipped;
/// of duplicates the first is kept, as Go's runtime (RTCD's `os.LookupEnv`) keeps it.
pub fn parse_environ(bytes: &[u8]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for entry in bytes.split(|b| *b == 0) {
        if entry.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(entry);
        let Some((k, v)) = text.split_once('=') else {
            continue;
        };
        if k.is_empty() || out.iter().any(|(ok, _)| ok == k) {
            continue;
        }
        out.push((k.to_string(), v.to_string()));
    }
    out
}

/// What `systemctl show -p LoadState -p Environment -p EnvironmentFiles` printed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Show {
    pub load_state: Option<String>,
    /// `Environment=` assignments, in order.
    pub environment: Vec<(String, String)>,
    /// `EnvironmentFiles=PATH (ignore_errors=yes|no)`, one line each.
    pub env_files: Vec<(PathBuf, bool)>,
}

pub fn parse_systemctl_show(text: &str) -> Show {
    let mut s = Show::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("LoadState=") {
            s.load_state = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("Environment=") {
            for word in split_words(v) {
                if let Some((k, val)) = word.split_once('=') {
                    if !k.is_empty() {
                        s.environment.push((k.to_string(), val.to_string()));
                    }
                }
            }
        } else if let Some(v) = line.strip_prefix("EnvironmentFiles=") {
            let (path, ignore) = match v.rsplit_once(" (ignore_errors=") {
                Some((p, rest)) => (p, rest.starts_with("yes")),
                None => (v, false),
            };
            if !path.is_empty() {
                s.env_files.push((PathBuf::from(path), ignore));
            }
        }
    }
    s
}

/// Splits `systemctl show`'s list of strings: words separated by spaces, each printed with
/// systemd's `shell_maybe_quote` (a word with a space or shell character is wrapped in `"…"`
/// with `\`, `"`, `` ` ``, `$` backslash-escaped and control characters C-escaped). Older
/// systemd printed words raw; an unquoted word is taken literally.
pub fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' => quoted = false,
                '\\' => {
                    if let Some(e) = chars.next() {
                        unescape_c(e, &mut chars, &mut cur);
                    }
                }
                _ => cur.push(c),
            }
            continue;
        }
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '"' => {
                in_word = true;
                quoted = true;
            }
            _ => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// The character after a backslash inside systemd's double quotes (`cescape` + the shell set).
fn unescape_c(e: char, chars: &mut std::iter::Peekable<std::str::Chars>, out: &mut String) {
    let simple = match e {
        'n' => Some('\n'),
        't' => Some('\t'),
        'r' => Some('\r'),
        'a' => Some('\x07'),
        'b' => Some('\x08'),
        'f' => Some('\x0c'),
        'v' => Some('\x0b'),
        '\\' | '"' | '`' | '$' | '\'' => Some(e),
        _ => None,
    };
    if let Some(c) = simple {
        out.push(c);
        return;
    }
    let mut take = |n: usize, radix: u32| -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            let d = chars.peek()?.to_digit(radix)?;
            chars.next();
            v = v * radix + d;
        }
        Some(v)
    };
    let code = match e {
        'x' => take(2, 16),
        '0'..='7' => e
            .to_digit(8)
            .and_then(|d| take(2, 8).map(|rest| d * 64 + rest)),
        _ => None,
    };
    match code.and_then(char::from_u32) {
        Some(c) => out.push(c),
        None => {
            out.push('\\');
            out.push(e);
        }
    }
}

/// A systemd `EnvironmentFile=` (systemd.exec(5)): `KEY=VALUE` lines; `#`/`;` comment lines;
/// whitespace around the key and an unquoted value's trailing whitespace dropped; `'…'`
/// literal; `"…"` with `\"`, `\\`, `` \` ``, `\$` escapes; a backslash-newline continues the
/// line; outside quotes a backslash keeps the next character.
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        // Start of a line: skip blank space, comments.
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        if first == '#' || first == ';' {
            for c in chars.by_ref() {
                if c == '\n' {
                    break;
                }
            }
            continue;
        }
        let Some(key) = env_key(&mut chars) else {
            continue;
        };
        let value = env_value(&mut chars);
        if !key.is_empty() {
            out.push((key, value));
        }
    }
    out
}

/// An environment file's key, trimmed, up to its `=`; `None` (the line consumed) without one.
fn env_key(chars: &mut Peekable<Chars>) -> Option<String> {
    let mut key = String::new();
    for c in chars.by_ref() {
        match c {
            '=' => return Some(key.trim().to_string()),
            '\n' => return None,
            _ => key.push(c),
        }
    }
    None
}

/// An environment file's value, from after the `=` to the end of its (continued) line.
fn env_value(chars: &mut Peekable<Chars>) -> String {
    while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
        chars.next();
    }
    let mut value = String::new();
    // Length of `value` that is quoted or escaped (never trimmed).
    let mut kept = 0;
    while let Some(c) = chars.next() {
        match c {
            '\n' => break,
            '\'' => {
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    value.push(c);
                }
                kept = value.len();
            }
            '"' => {
                double_quoted(chars, &mut value);
                kept = value.len();
            }
            '\\' => match chars.next() {
                Some('\n') | None => {}
                Some(e) => {
                    value.push(e);
                    kept = value.len();
                }
            },
            _ => value.push(c),
        }
    }
    let trimmed_len = kept.max(value.trim_end().len());
    value.truncate(trimmed_len);
    value
}

/// The rest of a `"…"` value after its opening quote: `\"`, `\\`, `` \` ``, `\$` unescaped,
/// a backslash-newline dropped, any other backslash kept.
fn double_quoted(chars: &mut Peekable<Chars>, value: &mut String) {
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(e @ ('"' | '\\' | '`' | '$')) => value.push(e),
                Some(e) => {
                    value.push('\\');
                    value.push(e);
                }
                None => value.push('\\'),
            },
            _ => value.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environ_is_nul_separated() {
        let raw = b"PATH=/usr/bin\0RTCD_RTC_ICEHOSTOVERRIDE=203.0.113.10\0EMPTY=\0NOEQ\0RTCD_X=a=b c\0RTCD_RTC_ICEHOSTOVERRIDE=dup\0\0";
        assert_eq!(
            parse_environ(raw),
            pairs(&[
                ("PATH", "/usr/bin"),
                ("RTCD_RTC_ICEHOSTOVERRIDE", "203.0.113.10"),
                ("EMPTY", ""),
                ("RTCD_X", "a=b c"),
            ])
        );
        assert!(parse_environ(b"").is_empty());
        // A value that is not UTF-8 does not stop the rest.
        let raw = b"A=\xff\0RTCD_B=1\0";
        assert_eq!(parse_environ(raw)[1], ("RTCD_B".into(), "1".into()));
    }

    #[test]
    fn systemctl_show_with_systemd_quoting() {
        // What systemd's shell_maybe_quote prints for
        //   Environment="RTCD_RTC_ICEHOSTOVERRIDE=203.0.113.10" "RTCD_STORE_DATASOURCE=a b"
        //   Environment=RTCD_RTC_ICESERVERS=["stun:s:3478"] 'X=$HOME'
        let text = "LoadState=loaded\n\
            Environment=RTCD_RTC_ICEHOSTOVERRIDE=203.0.113.10 \"RTCD_STORE_DATASOURCE=a b\" \"RTCD_RTC_ICESERVERS=[\\\"stun:s:3478\\\"]\" \"X=\\$HOME\" \"TAB=a\\tb\" \"OCT=\\101\\x42\"\n\
            EnvironmentFiles=/etc/default/rtcd (ignore_errors=yes)\n\
            EnvironmentFiles=/etc/rtcd/env (ignore_errors=no)\n";
        let s = parse_systemctl_show(text);
        assert_eq!(s.load_state.as_deref(), Some("loaded"));
        assert_eq!(
            s.environment,
            pairs(&[
                ("RTCD_RTC_ICEHOSTOVERRIDE", "203.0.113.10"),
                ("RTCD_STORE_DATASOURCE", "a b"),
                ("RTCD_RTC_ICESERVERS", "[\"stun:s:3478\"]"),
                ("X", "$HOME"),
                ("TAB", "a\tb"),
                ("OCT", "AB"),
            ])
        );
        assert_eq!(
            s.env_files,
            vec![
                (PathBuf::from("/etc/default/rtcd"), true),
                (PathBuf::from("/etc/rtcd/env"), false)
            ]
        );
        let s = parse_systemctl_show("LoadState=not-found\nEnvironment=\n");
        assert_eq!(s.load_state.as_deref(), Some("not-found"));
        assert!(s.environment.is_empty());
        // Old systemd printed words raw.
        assert_eq!(
            split_words("A=1  B=two"),
            vec!["A=1".to_string(), "B=two".to_string()]
        );
        assert_eq!(split_words("\"\""), vec![String::new()]);
        assert!(split_words("   ").is_empty());
    }

    #[test]
    fn environment_files() {
        let text = "# comment\n; also a comment\n\n  RTCD_RTC_ICEHOSTOVERRIDE = 203.0.113.10  \n\
            RTCD_A=\"quoted # not a comment \\\"x\\\" \\$y\"\n\
            RTCD_B='single $z \\n'\n\
            RTCD_C=one\\\n  two\n\
            RTCD_D=\n\
            RTCD_E=a\\ \n\
            NOEQUALS\n\
            RTCD_F=x\"y z\"w\n";
        assert_eq!(
            parse_env_file(text),
            pairs(&[
                ("RTCD_RTC_ICEHOSTOVERRIDE", "203.0.113.10"),
                ("RTCD_A", "quoted # not a comment \"x\" $y"),
                ("RTCD_B", "single $z \\n"),
                ("RTCD_C", "one  two"),
                ("RTCD_D", ""),
                ("RTCD_E", "a "),
                ("RTCD_F", "xy zw"),
            ])
        );
    }

    #[test]
    fn unit_from_the_cgroup_file() {
        assert_eq!(
            unit_from_cgroup("0::/system.slice/rtcd.service\n").as_deref(),
            Some("rtcd.service")
        );
        assert_eq!(
            unit_from_cgroup("12:pids:/system.slice/mattermost-rtcd.service\n1:name=systemd:/system.slice/mattermost-rtcd.service\n")
                .as_deref(),
            Some("mattermost-rtcd.service")
        );
        assert_eq!(
            unit_from_cgroup("0::/system.slice/docker-0123abcd.scope\n"),
            None
        );
        assert_eq!(
            unit_from_cgroup("0::/user.slice/user-0.slice/session-3.scope\n"),
            None
        );
    }

    #[test]
    fn summary_names_the_source_and_ignored_shell_variables() {
        let env = RtcdEnv {
            target: &RTCD,
            source: Source::Process {
                pid: 812,
                process: "rtcd".into(),
            },
            vars: [("RTCD_RTC_ICEHOSTOVERRIDE".to_string(), "x".to_string())]
                .into_iter()
                .collect(),
            notes: vec![],
            pid: Some(812),
            unit: Some("rtcd.service".into()),
            ignored_own: vec!["RTCD_RTC_ICEPORTUDP".into()],
        };
        let s = env.summary();
        assert!(
            s.contains("/proc/812/environ") && s.contains("RTCD_RTC_ICEHOSTOVERRIDE"),
            "{s}"
        );
        assert!(
            s.contains("ignored from this shell") && s.contains("RTCD_RTC_ICEPORTUDP"),
            "{s}"
        );
        assert_eq!(env.kind(), "process");
        assert_eq!(env.get("RTCD_RTC_ICEHOSTOVERRIDE").as_deref(), Some("x"));
        let v = serde_json::to_value(&env.source).unwrap();
        assert_eq!(v["source"], "process");
        assert_eq!(v["pid"], 812);
    }

    /// The Calls plugin's variables: only MM_CALLS_*, from the plugin process (comm truncated
    /// by the kernel) or Mattermost, never RTCD's.
    #[test]
    fn mattermost_target_keeps_mm_calls_variables() {
        let vars = vec![
            (
                "MM_CALLS_ICE_HOST_OVERRIDE".to_string(),
                "203.0.113.10".to_string(),
            ),
            (
                "MM_SQLSETTINGS_DATASOURCE".to_string(),
                "postgres://secret".to_string(),
            ),
            (
                "RTCD_RTC_ICEHOSTOVERRIDE".to_string(),
                "198.51.100.1".to_string(),
            ),
        ];
        let kept = prefixed(&MATTERMOST, vars.clone());
        assert_eq!(
            kept.keys().collect::<Vec<_>>(),
            vec!["MM_CALLS_ICE_HOST_OVERRIDE"]
        );
        assert_eq!(
            prefixed(&RTCD, vars).keys().collect::<Vec<_>>(),
            vec!["RTCD_RTC_ICEHOSTOVERRIDE"]
        );
        for name in ["mattermost", "plugin-linux-am", "plugin-linux-amd64"] {
            assert!((MATTERMOST.says)(name), "{name}");
        }
        assert!(!(MATTERMOST.says)("rtcd") && !(RTCD.says)("mattermost"));
        let env = RtcdEnv {
            target: &MATTERMOST,
            source: Source::Process {
                pid: 7,
                process: "mattermost".into(),
            },
            vars: BTreeMap::new(),
            notes: vec![],
            pid: Some(7),
            unit: None,
            ignored_own: vec![],
        };
        assert!(
            env.summary().starts_with(
                "MM_CALLS_* from the running Mattermost's environment (mattermost, pid 7"
            ),
            "{}",
            env.summary()
        );
    }
}
