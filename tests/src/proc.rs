//! Child processes with a wall-clock bound, captured output and kill-on-drop.
//!
//! Every process the harness starts goes through [`Proc`]: stdout and stderr
//! are piped and drained by threads into buffers (so a chatty child never
//! blocks), a watchdog thread kills the child when its lifetime bound passes,
//! and dropping the handle kills and reaps the child.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Default bound for short helper commands (`ip`, `nft`, `sysctl`, …).
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(20);

/// Output captured from one stream of a child, shared with its drain thread.
#[derive(Debug, Default)]
pub struct Captured {
    state: Mutex<CapState>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct CapState {
    data: Vec<u8>,
    eof: bool,
}

/// Why [`Captured::wait_for_line`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineWait {
    /// The deadline passed.
    Timeout,
    /// The stream closed (the child exited) without a matching line.
    Closed,
}

impl Captured {
    fn push(&self, bytes: &[u8]) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.data.extend_from_slice(bytes);
        self.cv.notify_all();
    }

    fn close(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.eof = true;
        self.cv.notify_all();
    }

    /// Everything captured so far (lossy UTF-8).
    pub fn text(&self) -> String {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&st.data).into_owned()
    }

    /// Whether the stream has reached EOF.
    pub fn is_closed(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).eof
    }

    /// Waits until the stream is closed or `timeout` passes; returns whether closed.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !st.eof {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Waits for the first complete line (without its newline) for which
    /// `pred` is true.
    pub fn wait_for_line(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Result<String, LineWait> {
        let deadline = Instant::now() + timeout;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let text = String::from_utf8_lossy(&st.data);
            let complete = match text.rfind('\n') {
                Some(i) => &text[..i],
                None => "",
            };
            let partial = match text.rfind('\n') {
                Some(i) => &text[i + 1..],
                None => &text[..],
            };
            if let Some(line) = complete.lines().find(|l| pred(l)) {
                return Ok(line.to_string());
            }
            if st.eof {
                // A last line without a trailing newline still counts.
                if !partial.is_empty() && pred(partial) {
                    return Ok(partial.to_string());
                }
                return Err(LineWait::Closed);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(LineWait::Timeout);
            }
            st = self
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

fn drain<R: Read + Send + 'static>(src: R, cap: Arc<Captured>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(src);
        let mut buf = Vec::with_capacity(4096);
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => cap.push(&buf),
            }
        }
        cap.close();
    })
}

/// A running child process with a wall-clock bound.
///
/// Dropping it kills (SIGKILL) and reaps the child.
pub struct Proc {
    label: String,
    pid: u32,
    child: Arc<Mutex<Child>>,
    status: Option<ExitStatus>,
    stdout: Arc<Captured>,
    stderr: Arc<Captured>,
    watchdog_fired: Arc<AtomicBool>,
    watchdog_stop: Option<mpsc::Sender<()>>,
    started: Instant,
    lifetime: Duration,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc")
            .field("label", &self.label)
            .field("pid", &self.pid)
            .field("status", &self.status)
            .finish()
    }
}

impl Proc {
    /// Spawns `cmd` with stdin from /dev/null, stdout/stderr captured, and a
    /// watchdog that kills it after `lifetime`.
    pub fn spawn(
        cmd: Command,
        label: impl Into<String>,
        lifetime: Duration,
    ) -> std::io::Result<Proc> {
        Self::spawn_with_stdin(cmd, label, lifetime, None)
    }

    /// Like [`Proc::spawn`], feeding `stdin` (then closing it) when given.
    pub fn spawn_with_stdin(
        mut cmd: Command,
        label: impl Into<String>,
        lifetime: Duration,
        stdin: Option<Vec<u8>>,
    ) -> std::io::Result<Proc> {
        let label = label.into();
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let stdout = Arc::new(Captured::default());
        let stderr = Arc::new(Captured::default());
        if let Some(out) = child.stdout.take() {
            drain(out, stdout.clone());
        }
        if let Some(err) = child.stderr.take() {
            drain(err, stderr.clone());
        }
        if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), stdin) {
            std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            });
        }
        let child = Arc::new(Mutex::new(child));
        let watchdog_fired = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<()>();
        {
            let child = child.clone();
            let fired = watchdog_fired.clone();
            std::thread::spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(lifetime) {
                    let mut c = child.lock().unwrap_or_else(|e| e.into_inner());
                    if let Ok(None) = c.try_wait() {
                        fired.store(true, Ordering::SeqCst);
                        let _ = c.kill();
                    }
                }
            });
        }
        Ok(Proc {
            label,
            pid,
            child,
            status: None,
            stdout,
            stderr,
            watchdog_fired,
            watchdog_stop: Some(tx),
            started: Instant::now(),
            lifetime,
        })
    }

    /// Human-readable label given at spawn.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// OS process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Time since spawn.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// stdout captured so far.
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// stderr captured so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// The stdout capture (for waiting on lines).
    pub fn stdout_capture(&self) -> &Captured {
        &self.stdout
    }

    /// The stderr capture (for waiting on lines).
    pub fn stderr_capture(&self) -> &Captured {
        &self.stderr
    }

    /// Whether the lifetime watchdog killed the child.
    pub fn watchdog_fired(&self) -> bool {
        self.watchdog_fired.load(Ordering::SeqCst)
    }

    /// Non-blocking exit check.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(Some(st)) = c.try_wait() {
                self.status = Some(st);
            }
        }
        self.status
    }

    /// Waits up to `timeout` for the child to exit (polling); `None` if it
    /// is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILLs the child (if still running) and reaps it.
    pub fn kill(&mut self) {
        if self.status.is_some() {
            return;
        }
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = c.kill();
        if let Ok(st) = c.wait() {
            self.status = Some(st);
        }
    }

    /// Waits up to `timeout` for exit (killing the child if it is still
    /// running then) and returns everything it printed.
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let status = self.wait_timeout(timeout);
        let timed_out = status.is_none();
        if timed_out {
            self.kill();
        }
        // Grandchildren could hold the pipes open: bound the wait for EOF.
        self.stdout.wait_closed(Duration::from_secs(2));
        self.stderr.wait_closed(Duration::from_secs(2));
        let watchdog = self.watchdog_fired();
        Finished {
            label: self.label.clone(),
            status: self.status,
            stdout: self.stdout(),
            stderr: self.stderr(),
            timed_out: timed_out || watchdog,
            elapsed: self.started.elapsed(),
            bound: if watchdog { self.lifetime } else { timeout },
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(tx) = self.watchdog_stop.take() {
            let _ = tx.send(());
        }
        self.kill();
    }
}

/// Result of a process that ran to completion (or was killed at its bound).
#[derive(Debug, Clone)]
pub struct Finished {
    /// Label given at spawn.
    pub label: String,
    /// Exit status; `None` only if it could not be reaped.
    pub status: Option<ExitStatus>,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
    /// Killed because it ran past its bound.
    pub timed_out: bool,
    /// Wall-clock time from spawn to exit.
    pub elapsed: Duration,
    /// The bound that applied.
    pub bound: Duration,
}

impl Finished {
    /// Exit code, `None` if killed by a signal (or timed out).
    pub fn code(&self) -> Option<i32> {
        if self.timed_out {
            return None;
        }
        self.status.and_then(|s| s.code())
    }

    /// Exited with code 0 within the bound.
    pub fn success(&self) -> bool {
        self.code() == Some(0)
    }

    /// Multi-line description for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{label}: {st} after {el:?}{to}\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
            label = self.label,
            st = match self.status {
                Some(s) => s.to_string(),
                None => "not reaped".into(),
            },
            el = self.elapsed,
            to = if self.timed_out {
                format!(" (KILLED: exceeded bound {:?})", self.bound)
            } else {
                String::new()
            },
            out = crate::tail(&self.stdout, 16 * 1024),
            err = crate::tail(&self.stderr, 16 * 1024),
        )
    }
}

/// Builds a [`Command`] from an argv slice.
pub fn command<S: AsRef<OsStr>>(argv: &[S]) -> Command {
    assert!(!argv.is_empty(), "empty argv");
    let mut cmd = Command::new(argv[0].as_ref());
    cmd.args(&argv[1..]);
    cmd
}

/// Runs `cmd` to completion, killing it after `timeout`.  Panics only if it
/// cannot be spawned.
pub fn run_bounded(cmd: Command, label: impl Into<String>, timeout: Duration) -> Finished {
    run_bounded_stdin(cmd, label, timeout, None)
}

/// Like [`run_bounded`], feeding `stdin`.
pub fn run_bounded_stdin(
    cmd: Command,
    label: impl Into<String>,
    timeout: Duration,
    stdin: Option<Vec<u8>>,
) -> Finished {
    let label = label.into();
    let desc = format!("{cmd:?}");
    // The watchdog is a second line of defence; `finish` enforces `timeout`.
    let proc = Proc::spawn_with_stdin(cmd, label.clone(), timeout + Duration::from_secs(5), stdin)
        .unwrap_or_else(|e| panic!("cannot spawn {label} ({desc}): {e}"));
    proc.finish(timeout)
}

/// Runs `cmd` with [`HELPER_TIMEOUT`]-style bound and panics with its output
/// unless it exits 0.
pub fn run_checked(cmd: Command, label: impl Into<String>, timeout: Duration) -> Finished {
    let label = label.into();
    let done = run_bounded(cmd, label, timeout);
    assert!(done.success(), "command failed: {}", done.describe());
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_code() {
        let done = run_bounded(
            command(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
            "sh",
            Duration::from_secs(10),
        );
        assert_eq!(done.code(), Some(3));
        assert_eq!(done.stdout, "out\n");
        assert_eq!(done.stderr, "err\n");
        assert!(!done.timed_out);
    }

    #[test]
    fn kills_at_bound() {
        let t = Instant::now();
        let done = run_bounded(
            command(&["sleep", "30"]),
            "sleep",
            Duration::from_millis(200),
        );
        assert!(done.timed_out);
        assert_eq!(done.code(), None);
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn watchdog_kills_background_process() {
        let mut p = Proc::spawn(
            command(&["sleep", "30"]),
            "sleep",
            Duration::from_millis(200),
        )
        .unwrap();
        let st = p.wait_timeout(Duration::from_secs(5));
        assert!(st.is_some(), "watchdog did not kill the child");
        assert!(p.watchdog_fired());
    }

    #[test]
    fn waits_for_line_and_stdin() {
        let p = Proc::spawn_with_stdin(
            command(&["sh", "-c", "read x; echo first; echo \"got $x\"; sleep 30"]),
            "sh",
            Duration::from_secs(20),
            Some(b"hello\n".to_vec()),
        )
        .unwrap();
        let line = p
            .stdout_capture()
            .wait_for_line(Duration::from_secs(5), |l| l.starts_with("got "))
            .unwrap();
        assert_eq!(line, "got hello");
        drop(p);
    }

    #[test]
    fn line_wait_reports_closed() {
        let mut p = Proc::spawn(
            command(&["sh", "-c", "echo nope"]),
            "sh",
            Duration::from_secs(10),
        )
        .unwrap();
        let r = p
            .stdout_capture()
            .wait_for_line(Duration::from_secs(5), |l| l == "ready");
        assert_eq!(r, Err(LineWait::Closed));
        assert!(p.wait_timeout(Duration::from_secs(5)).is_some());
    }
}
