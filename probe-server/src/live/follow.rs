//! Live mode follows RTCD while it runs beside it. RTCD reads its configuration once, at start
//! (rtcd cmd/rtcd/main.go:21 `loadConfig`; :40 handles only SIGINT and SIGTERM, no reload), and
//! takes its local addresses and STUN-discovered ones once too (service/rtc/server.go:87-160
//! `Start`). So what the live hello announces must change when RTCD restarts, and not when its
//! file is edited: an edited file is what RTCD does at its next start. A hostname override is
//! re-resolved every [`RESOLVE_EVERY`], as `probe-server` does (RTCD resolves it on every join),
//! from the configuration read at RTCD's last restart, or at live mode's start (a file already
//! edited then is warned about: [`stale_config_note`]).
//!
//! Not followed: `--rtcd-pid` (a restarted container is another pid, in another namespace) and
//! the Calls plugin's own media server (its settings change with the plugin, not a process).

use super::LiveArgs;
use probe_proto::calls::Deployment;
use probe_proto::live::HelloInfo;
use probe_proto::msg::IceOffer;
use probe_proto::rtcd::{PionRules, RtcdConfig};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

/// How often the port's holder is looked at: a restarted RTCD is followed within this.
const LOOK_EVERY: Duration = Duration::from_secs(3);
/// How often a hostname override is resolved again (`probe-server`'s --resolve-interval default).
const RESOLVE_EVERY: Duration = Duration::from_secs(30);

/// One RTCD process: its pid and start time, so a restart that reuses the pid is still seen.
pub type Ident = (u32, Option<u64>);

/// What the loop is told.
#[derive(Debug)]
pub enum Change {
    /// New hellos and page sessions get this: RTCD (re)started (`pid`), or the override
    /// resolves differently (`pid` None).
    Advertise {
        hello: Box<HelloInfo>,
        offer: Box<IceOffer>,
        pid: Option<u32>,
    },
    /// Whether anything holds RTCD's UDP port now: read from the port tables, which anyone
    /// may read, so it holds even when RTCD's process is not visible to this user.
    Held(bool),
    /// RTCD came back on other ports than the ones tapped.
    PortsMoved { udp: u16, tcp: u16 },
    /// RTCD restarted, but its configuration no longer loads here: the old hello stays.
    Unreadable(String),
}

/// What one look at RTCD's process calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Nothing,
    Reload(u32),
    Resolve,
}

/// From the RTCD process seen last and now (None: not running, or not visible). Pure, so the
/// transitions are unit-tested.
pub fn step(last: Option<Ident>, now: Option<Ident>, resolve_due: bool) -> Step {
    match (last, now) {
        (l, Some(n)) if l != Some(n) => Step::Reload(n.0),
        _ if resolve_due => Step::Resolve,
        _ => Step::Nothing,
    }
}

/// Whether any socket is bound to UDP `port` here; None when the tables cannot be read.
pub fn port_held(port: u16) -> Option<bool> {
    use crate::doctor::procnet::{on_port, read_tables, Proto};
    let table = read_tables(Proto::Udp).ok()?;
    Some(!on_port(&table, port, &[], false).is_empty())
}

/// The RTCD process now: the holder of the tapped ports, else the only process named rtcd.
pub fn holder((udp, tcp): (u16, u16)) -> Option<Ident> {
    let pid = crate::rtcd_env::rtcd_pid(udp, tcp, Instant::now() + Duration::from_secs(2))?;
    let start = crate::doctor::logs::process_start(pid, crate::doctor::cpu::ticks_per_sec());
    Some((pid, start))
}

/// The process `id` names is still the one that started then.
fn still_running((pid, start): Ident) -> bool {
    start.is_some()
        && crate::doctor::logs::process_start(pid, crate::doctor::cpu::ticks_per_sec()) == start
}

/// Starts the follower; its changes arrive on the receiver. Whether the port is held is
/// always watched; restarts only where they can be followed (see the module's text).
pub fn start(
    args: &LiveArgs,
    (cfg, rules, deployment): (&RtcdConfig, PionRules, &Deployment),
    hello: &HelloInfo,
    (first, held): (Option<Ident>, Option<bool>),
) -> Option<Receiver<Change>> {
    let reload = args.rtcd_pid.is_none() && matches!(deployment, Deployment::Rtcd);
    if !reload {
        tracing::info!(
            "what the media server advertises is read once: restart probe-server live after it restarts"
        );
    }
    let (tx, rx) = mpsc::channel();
    let f = Follower {
        args: args.clone(),
        started_with: (cfg.clone(), deployment.clone()),
        rules,
        ports: (hello.rtcd_port_udp, hello.rtcd_port_tcp),
        reload,
        hostname: reload && is_hostname(hello),
        current: hello.candidates.clone(),
        last: first,
        held,
        unseen_said: false,
        unreadable_said: None,
        tx,
    };
    let spawned = std::thread::Builder::new()
        .name("live-follow".into())
        .spawn(move || f.run());
    if let Err(e) = spawned {
        tracing::warn!("cannot follow RTCD's restarts: {e}");
        return None;
    }
    Some(rx)
}

/// RTCD resolves a hostname override on every join (sfu.go `initSettingEngine`).
fn is_hostname(hello: &HelloInfo) -> bool {
    hello.override_form == "hostname"
}

struct Follower {
    args: LiveArgs,
    /// The configuration RTCD's running process started with: a hostname override is
    /// re-resolved from it, never from a file edited since.
    started_with: (RtcdConfig, Deployment),
    rules: PionRules,
    ports: (u16, u16),
    /// RTCD's restarts are followed (not with --rtcd-pid, not for the Calls plugin).
    reload: bool,
    hostname: bool,
    current: Vec<probe_proto::msg::WireCandidate>,
    last: Option<Ident>,
    held: Option<bool>,
    /// Said once: the port is held, but by no process this user can tell is RTCD.
    unseen_said: bool,
    /// The RTCD process whose configuration did not load, said once.
    unreadable_said: Option<u32>,
    tx: Sender<Change>,
}

impl Follower {
    fn run(mut self) {
        let mut resolved_at = Instant::now();
        loop {
            std::thread::sleep(LOOK_EVERY);
            let mut changes = Vec::new();
            if self.reload {
                // RTCD cannot restart without its process ending: while it runs, the cheap
                // look at its own /proc entry stands in for the scan of every process's sockets.
                let now = match self.last {
                    Some(id) if still_running(id) => Some(id),
                    _ => holder(self.ports),
                };
                let due = self.hostname && resolved_at.elapsed() >= RESOLVE_EVERY;
                let change = match step(self.last, now, due) {
                    Step::Nothing => None,
                    Step::Reload(pid) => self.reload(Some(pid)),
                    Step::Resolve => {
                        resolved_at = Instant::now();
                        self.reload(None)
                    }
                };
                // A configuration that did not load is read again at the next look (an editor
                // may have been half-way through saving it), said once per process.
                match change {
                    Some(Change::Unreadable(e)) => {
                        if self.unreadable_said != now.map(|n| n.0) {
                            self.unreadable_said = now.map(|n| n.0);
                            changes.push(Change::Unreadable(e));
                        }
                    }
                    other => {
                        self.last = now;
                        changes.extend(other);
                    }
                }
            }
            // After the process look: a restarted RTCD found by its port holds it by now, so
            // its new hello is not announced as "not running".
            let held = port_held(self.ports.0);
            if held.is_some() && held != self.held {
                changes.extend(held.map(Change::Held));
                self.held = held;
            }
            self.say_unseen();
            for c in changes {
                if self.tx.send(c).is_err() {
                    return; // the loop has ended
                }
            }
        }
    }

    /// The port is held, but RTCD's process cannot be told (an unprivileged user sees no other
    /// user's sockets, and only a process named exactly `rtcd` by name): say once that restarts
    /// are not followed, rather than follow nothing in silence.
    fn say_unseen(&mut self) {
        if self.reload && self.last.is_none() && self.held == Some(true) && !self.unseen_said {
            self.unseen_said = true;
            // SAFETY: geteuid has no preconditions and cannot fail.
            let root = unsafe { libc::geteuid() } == 0;
            let how = if root {
                "it is not named rtcd, or the search ran out of time; restart probe-server live after \
                 restarting RTCD"
            } else {
                "this user cannot see other users' sockets; run probe-server live as root to follow \
                 them, or restart it after restarting RTCD"
            };
            tracing::warn!(
                "UDP {} is held, but not by a process found to be RTCD: RTCD's restarts are not \
                 followed ({how})",
                self.ports.0
            );
        }
    }

    /// What RTCD advertises now: after a restart (`pid`) from its configuration read again,
    /// else (a hostname override re-resolved) from the one it started with. A change only when
    /// it differs; a restart always says so, since the admin is waiting for it.
    fn reload(&mut self, pid: Option<u32>) -> Option<Change> {
        let config = match pid {
            Some(_) => super::config::load(&self.args),
            None => Ok(self.started_with.clone()),
        };
        let loaded = config.and_then(|(cfg, deployment)| {
            let (hello, adv) = super::config::hello(&cfg, self.rules, &deployment)?;
            let offer = crate::ice::offer_for(&cfg, &adv, hello.rtcd_port_udp, &deployment);
            if pid.is_some() {
                crate::ice::log_advertised_for(&cfg, &adv, hello.rtcd_port_udp, &deployment);
            }
            Ok((hello, offer, (cfg, deployment)))
        });
        let (hello, offer, started_with) = match loaded {
            Ok(h) => h,
            Err(e) if pid.is_some() => return Some(Change::Unreadable(e)),
            Err(e) => {
                tracing::warn!("re-resolving RTCD's override failed: {e}");
                return None;
            }
        };
        if (hello.rtcd_port_udp, hello.rtcd_port_tcp) != self.ports {
            return Some(Change::PortsMoved {
                udp: hello.rtcd_port_udp,
                tcp: hello.rtcd_port_tcp,
            });
        }
        if pid.is_none() && hello.candidates == self.current {
            return None;
        }
        self.started_with = started_with;
        self.current = hello.candidates.clone();
        self.hostname = is_hostname(&hello);
        Some(Change::Advertise {
            hello: Box::new(hello),
            offer: Box::new(offer),
            pid,
        })
    }
}

/// RTCD's file changed after RTCD started: RTCD advertises what it said then, the probe what it
/// says now; said once at start, so the admin restarts RTCD before trusting either.
pub fn stale_config_note(path: Option<&std::path::Path>, first: Option<Ident>) -> Option<String> {
    let (path, (pid, started)) = (path?, first?);
    let age = crate::doctor::facts::ConfigAge::read(path, pid, started?)?;
    age.changed_since_start().then(|| {
        format!(
            "{} changed after RTCD (pid {pid}) started at {}: RTCD advertises what the file said then, \
             this probe what it says now; restart RTCD so that both agree",
            path.display(),
            probe_proto::report::rfc3339(age.rtcd_started_s * 1000)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_reloads_and_dns_waits_its_turn() {
        let a = Some((100, Some(1_000)));
        // The same process: nothing, or a due re-resolution.
        assert_eq!(step(a, a, false), Step::Nothing);
        assert_eq!(step(a, a, true), Step::Resolve);
        // Another pid, or the same pid started again: a restart.
        assert_eq!(step(a, Some((101, Some(1_000))), false), Step::Reload(101));
        assert_eq!(step(a, Some((100, Some(2_000))), true), Step::Reload(100));
        // Gone (or not visible): nothing to reload; whether the port is held says the rest.
        assert_eq!(step(a, None, false), Step::Nothing);
        assert_eq!(step(None, None, false), Step::Nothing);
        // Live started while RTCD was down, and RTCD starts: what it advertises is read then.
        assert_eq!(step(None, a, false), Step::Reload(100));
    }

    #[test]
    fn a_file_newer_than_rtcd_is_said_once_at_start() {
        let dir = std::env::temp_dir().join(format!("follow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rtcd.toml");
        std::fs::write(&path, "[rtc]\n").unwrap();
        let note = stale_config_note(Some(&path), Some((42, Some(1_000))));
        let note = note.expect("the file is newer than a process started in 1970");
        assert!(
            note.contains("pid 42") && note.contains("restart RTCD"),
            "{note}"
        );
        assert_eq!(
            stale_config_note(Some(&path), Some((42, Some(u64::MAX / 4096)))),
            None
        );
        assert_eq!(stale_config_note(Some(&path), None), None, "no RTCD found");
        assert_eq!(stale_config_note(None, Some((42, Some(1_000)))), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
