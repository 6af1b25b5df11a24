//! Headless Debian `chromium` driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`): chromium reads commands on fd 3 and writes replies and events
//! on fd 4, each one JSON message ended by a NUL byte. No websocket, no node, no extra crate.
//! Ported from the spike's `docs/spikes/17-browser-page/cdp.py`.
//!
//! Every read has a deadline (a reader thread feeds a channel read with `recv_timeout`), the
//! browser runs under a [`Proc`] lifetime bound, and its profile lives in a private temporary
//! directory removed afterwards.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::netns::Netns;
use crate::proc::Proc;
use crate::tempdir::TempDir;

/// The browser binary (Debian's package; `.ci/run` installs it).
pub const CHROMIUM: &str = "chromium";
/// Bound of one DevTools command (a screenshot of a long page takes the longest).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Debian chromium's configuration directory (the package owns it); managed policies are read
/// from `policies/managed/*.json` under it. [`Options::policy`] hides it behind a private copy.
pub const ETC_DIR: &str = "/etc/chromium";
/// Bound of the whole browser process, whatever the caller asks.
const LIFETIME: Duration = Duration::from_secs(120);

/// How to start the browser.
#[derive(Debug, Clone)]
pub struct Options {
    /// Window (and screenshot) width and height in CSS pixels.
    pub window: (u32, u32),
    /// More chromium flags.
    pub extra_args: Vec<String>,
    /// A managed policy (JSON) for this browser only: chromium runs in its own mount namespace
    /// (`unshare -m`) where a private directory holding `policies/managed/test.json` is
    /// bind-mounted over [`ETC_DIR`], so nothing of the machine's is written.
    /// (`policies/managed` itself need not exist on the machine, and must not be created.)
    pub policy: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            window: (1000, 1200),
            extra_args: Vec::new(),
            policy: None,
        }
    }
}

/// Panics with one sentence when the browser is not installed (the tests never skip).
pub fn require_chromium() {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(CHROMIUM).is_file()));
    assert!(
        found,
        "`{CHROMIUM}` is not installed: the browser-page tests drive Debian's headless chromium; install it with `apt-get install chromium` (.ci/run does)"
    );
}

/// A running headless chromium with one DevTools pipe.
pub struct Chromium {
    proc: Proc,
    commands: File,
    replies: Receiver<Value>,
    next_id: u64,
    /// Console messages and uncaught exceptions of the page (for failure messages).
    console: Vec<String>,
    _profile: TempDir,
}

/// The pipe `(read end, write end)`, both close-on-exec and numbered ≥ 10 so that `dup2` onto
/// 3 and 4 in the child never overwrites one of them.
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the two-element array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((high(r)?, high(w)?))
}

fn high(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on an open descriptor returns a new one (or -1).
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The argv that starts chromium, wrapped in a private mount namespace when a policy is set.
fn argv(opts: &Options, profile: &Path) -> Vec<String> {
    let mut argv: Vec<String> = Vec::new();
    if opts.policy.is_some() {
        // unshare -m makes every mount private to this process tree (util-linux's default
        // propagation is private), so the bind mount never reaches the machine.
        argv.extend(
            [
                "unshare",
                "-m",
                "sh",
                "-c",
                "mount --bind \"$1\" \"$2\" && shift 2 && exec \"$@\"",
                "sh",
            ]
            .map(String::from),
        );
        argv.push(profile.join("etc-chromium").display().to_string());
        argv.push(ETC_DIR.to_string());
    }
    let (w, h) = opts.window;
    argv.push(CHROMIUM.to_string());
    argv.extend([
        "--headless".to_string(),
        // chromium refuses to run as root inside its sandbox.
        "--no-sandbox".to_string(),
        "--remote-debugging-pipe".to_string(),
        format!("--user-data-dir={}", profile.join("profile").display()),
        "--no-first-run".to_string(),
        "--no-default-browser-check".to_string(),
        "--disable-gpu".to_string(),
        "--disable-background-networking".to_string(),
        "--disable-component-update".to_string(),
        "--disable-sync".to_string(),
        "--disable-extensions".to_string(),
        "--password-store=basic".to_string(),
        format!("--window-size={w},{h}"),
    ]);
    argv.extend(opts.extra_args.iter().cloned());
    argv.push("about:blank".to_string());
    argv
}

/// `PROFILE/etc-chromium`: the machine's files of [`ETC_DIR`] (copied, not moved) plus the
/// managed policy, to be mounted over [`ETC_DIR`] in chromium's mount namespace.
fn private_etc(profile: &Path, policy: &str) -> Result<(), String> {
    let etc = Path::new(ETC_DIR);
    if !etc.is_dir() {
        return Err(format!(
            "{ETC_DIR} does not exist, so a test policy cannot be mounted over it (is Debian's chromium package installed?)"
        ));
    }
    let root = profile.join("etc-chromium");
    let managed = root.join("policies/managed");
    std::fs::create_dir_all(&managed).map_err(|e| format!("mkdir {}: {e}", managed.display()))?;
    let entries = std::fs::read_dir(etc).map_err(|e| format!("read {ETC_DIR}: {e}"))?;
    for e in entries.filter_map(Result::ok) {
        if e.path().is_file() {
            let _ = std::fs::copy(e.path(), root.join(e.file_name()));
        }
    }
    std::fs::write(managed.join("test.json"), policy).map_err(|e| format!("policy: {e}"))
}

impl Chromium {
    /// Starts chromium inside `ns` (or in this namespace when `None`).
    pub fn launch(ns: Option<&Netns>, opts: &Options) -> Result<Chromium, String> {
        require_chromium();
        let profile = TempDir::new("chromium");
        if let Some(policy) = &opts.policy {
            private_etc(profile.path(), policy)?;
        }
        let argv = argv(opts, profile.path());
        let mut cmd = match ns {
            Some(ns) => ns.argv_command(&argv),
            None => crate::proc::command(&argv),
        };
        // The Debian wrapper and chromium write under $HOME and XDG dirs: keep them private.
        for var in ["HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"] {
            cmd.env(var, profile.path());
        }
        let (cmd_r, cmd_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
        let (out_r, out_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
        let (child_in, child_out) = (cmd_r.as_raw_fd(), out_w.as_raw_fd());
        // SAFETY: only async-signal-safe dup2 between fork and exec; dup2 clears close-on-exec
        // on the new descriptors 3 and 4, and the sources (≥ 10) are closed by exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(child_in, 3) < 0 || libc::dup2(child_out, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let label = format!("[{}] chromium", ns.map_or("host", |n| n.name()));
        let proc =
            Proc::spawn(cmd, label, LIFETIME).map_err(|e| format!("cannot start chromium: {e}"))?;
        // Our copies of the child's ends: closed, so a dead browser reads as EOF.
        drop((cmd_r, out_w));
        let replies = reader(File::from(out_r));
        Ok(Chromium {
            proc,
            commands: File::from(cmd_w),
            replies,
            next_id: 0,
            console: Vec::new(),
            _profile: profile,
        })
    }

    /// Sends one command and waits up to `timeout` for its reply; events on the way are kept
    /// as console lines when they are console output or exceptions, else dropped.
    pub fn call(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
        timeout: Duration,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).map_err(|e| e.to_string())?;
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .map_err(|e| format!("{method}: chromium's command pipe is closed ({e})"))?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = match self.replies.recv_timeout(left) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "{method}: no reply from chromium within {timeout:?}"
                    ))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("{method}: chromium closed its pipe (it exited)"))
                }
            };
            if m["id"] == id {
                if let Some(e) = m.get("error") {
                    return Err(format!("{method}: {e}"));
                }
                return Ok(m["result"].clone());
            }
            self.keep_event(&m);
        }
    }

    fn keep_event(&mut self, m: &Value) {
        let p = &m["params"];
        let line = match m["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = p["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| match a.get("value") {
                        Some(Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                        None => a["description"].as_str().unwrap_or("?").to_string(),
                    })
                    .collect();
                format!(
                    "console.{}: {}",
                    p["type"].as_str().unwrap_or("log"),
                    args.join(" ")
                )
            }
            Some("Runtime.exceptionThrown") => {
                let d = &p["exceptionDetails"];
                let text = d["exception"]["description"]
                    .as_str()
                    .or(d["text"].as_str())
                    .unwrap_or("?");
                format!("exception: {text}")
            }
            _ => return,
        };
        if self.console.len() < 200 {
            self.console.push(line);
        }
    }

    /// Opens a tab, attaches to it (flattened session), enables console capture and
    /// navigates to `url`. Returns the session id.
    pub fn open(&mut self, url: &str) -> Result<String, String> {
        let target = self.call(
            "Target.createTarget",
            json!({"url": "about:blank"}),
            None,
            CALL_TIMEOUT,
        )?;
        let target_id = target["targetId"]
            .as_str()
            .ok_or("no targetId")?
            .to_string();
        let attached = self.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
            None,
            CALL_TIMEOUT,
        )?;
        let session = attached["sessionId"]
            .as_str()
            .ok_or("no sessionId")?
            .to_string();
        for m in ["Page.enable", "Runtime.enable"] {
            self.call(m, json!({}), Some(&session), CALL_TIMEOUT)?;
        }
        let nav = self.call(
            "Page.navigate",
            json!({"url": url}),
            Some(&session),
            CALL_TIMEOUT,
        )?;
        if let Some(e) = nav.get("errorText") {
            return Err(format!("navigating to {url} failed: {e}"));
        }
        Ok(session)
    }

    /// The value of a JavaScript expression (returned by value).
    pub fn evaluate(&mut self, session: &str, expr: &str) -> Result<Value, String> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
            Some(session),
            CALL_TIMEOUT,
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(format!("evaluating {expr}: {e}"));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Polls `window.__result` every 100 ms until it is set or `deadline` passes; on timeout
    /// the error names the page's last `window.__progress`.
    pub fn wait_result(&mut self, session: &str, deadline: Duration) -> Result<Value, String> {
        let until = Instant::now() + deadline;
        loop {
            let v = self.evaluate(session, "JSON.stringify(window.__result ?? null)")?;
            if let Some(text) = v.as_str() {
                if text != "null" {
                    return serde_json::from_str(text)
                        .map_err(|e| format!("window.__result is not JSON ({e}): {text}"));
                }
            }
            if Instant::now() >= until {
                let progress = self
                    .evaluate(session, "String(window.__progress ?? '(unset)')")
                    .map(|p| p.as_str().unwrap_or("?").to_string())
                    .unwrap_or_else(|e| format!("(unreadable: {e})"));
                return Err(format!(
                    "the page set no window.__result within {deadline:?}; its last window.__progress: {progress:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the whole page (beyond the viewport), written to `path`.
    pub fn screenshot(&mut self, session: &str, path: &Path) -> Result<(), String> {
        let metrics = self.call(
            "Page.getLayoutMetrics",
            json!({}),
            Some(session),
            CALL_TIMEOUT,
        )?;
        let size = &metrics["cssContentSize"];
        let (w, h) = (
            size["width"].as_f64().unwrap_or(1000.0).clamp(1.0, 4000.0),
            size["height"].as_f64().unwrap_or(1200.0).clamp(1.0, 8000.0),
        );
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true,
                   "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}}),
            Some(session),
            CALL_TIMEOUT,
        )?;
        let b64 = shot["data"]
            .as_str()
            .ok_or("captureScreenshot returned no data")?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("screenshot is not base64: {e}"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        }
        std::fs::write(path, png).map_err(|e| format!("write {}: {e}", path.display()))
    }

    /// What the page printed on its console (and uncaught exceptions), in order.
    pub fn console(&self) -> &[String] {
        &self.console
    }

    /// chromium's stderr so far.
    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }

    /// `Browser.close`, then waits up to 5 s for the process to exit (killed otherwise);
    /// returns its stderr.
    pub fn close(mut self) -> String {
        let _ = self.call("Browser.close", json!({}), None, Duration::from_secs(5));
        if self.proc.wait_timeout(Duration::from_secs(5)).is_none() {
            self.proc.kill();
        }
        self.proc.stderr()
    }
}

/// Reads NUL-terminated JSON messages from chromium's fd 4 on a thread; the channel closes
/// when chromium closes the pipe. Unparsable messages are dropped (they answer nothing).
fn reader(mut pipe: File) -> Receiver<Value> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while let Some(end) = buf.iter().position(|&b| b == 0) {
                let msg: Vec<u8> = buf.drain(..=end).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&msg[..end]) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// What [`run_page`] saw.
#[derive(Debug)]
pub struct PageRun {
    /// `window.__result`, or why it never came.
    pub result: Result<Value, String>,
    /// The screenshot written (None if it failed; the reason is in `notes`).
    pub screenshot: Option<PathBuf>,
    /// From navigation to result (or giving up).
    pub elapsed: Duration,
    /// The page's console output and exceptions.
    pub console: Vec<String>,
    /// What the page showed when the result came (`document.body.innerText`; empty if unread).
    pub page_text: String,
    /// Driver problems after the result (screenshot, close).
    pub notes: Vec<String>,
    /// chromium's stderr (tail).
    pub stderr: String,
}

impl PageRun {
    /// Multi-line description for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "page result: {}\nafter {:?}; screenshot {:?}\nnotes: {:?}\n--- page console ---\n{}\n--- chromium stderr (tail) ---\n{}",
            match &self.result {
                Ok(v) => format!("{v:#}"),
                Err(e) => format!("NONE: {e}"),
            },
            self.elapsed,
            self.screenshot,
            self.notes,
            self.console.join("\n"),
            crate::tail(&self.stderr, 4 * 1024)
        )
    }
}

/// Starts chromium in `ns`, loads `url`, waits up to `deadline` for `window.__result`, takes a
/// screenshot to `shot` (even when the result never came: it shows where the page stopped) and
/// closes the browser.
pub fn run_page(
    ns: Option<&Netns>,
    url: &str,
    shot: &Path,
    opts: &Options,
    deadline: Duration,
) -> PageRun {
    let started = Instant::now();
    let mut notes = Vec::new();
    let mut browser = match Chromium::launch(ns, opts) {
        Ok(b) => b,
        Err(e) => {
            return PageRun {
                result: Err(e),
                screenshot: None,
                elapsed: started.elapsed(),
                console: Vec::new(),
                page_text: String::new(),
                notes,
                stderr: String::new(),
            }
        }
    };
    let result = browser
        .open(url)
        .map(|session| (browser.wait_result(&session, deadline), session));
    let elapsed = started.elapsed();
    let mut page_text = String::new();
    let (result, screenshot) = match result {
        Ok((result, session)) => {
            match browser.evaluate(&session, "document.body ? document.body.innerText : ''") {
                Ok(v) => page_text = v.as_str().unwrap_or_default().to_string(),
                Err(e) => notes.push(format!("page text: {e}")),
            }
            match browser.screenshot(&session, shot) {
                Ok(()) => (result, Some(shot.to_path_buf())),
                Err(e) => {
                    notes.push(format!("screenshot: {e}"));
                    (result, None)
                }
            }
        }
        Err(e) => (Err(e), None),
    };
    let console = browser.console().to_vec();
    let stderr = browser.close();
    PageRun {
        result,
        screenshot,
        elapsed,
        console,
        page_text,
        notes,
        stderr: crate::tail(&stderr, 16 * 1024),
    }
}

/// Whether `bytes` start with the PNG signature and hold more than the header.
pub fn is_png(bytes: &[u8]) -> bool {
    bytes.len() > 64 && bytes.starts_with(b"\x89PNG\r\n\x1a\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_wraps_the_policy_in_a_private_mount_namespace() {
        let profile = Path::new("/tmp/p");
        let plain = argv(&Options::default(), profile);
        assert_eq!(plain[0], CHROMIUM);
        assert!(plain.contains(&"--remote-debugging-pipe".to_string()));
        assert!(plain.contains(&"--user-data-dir=/tmp/p/profile".to_string()));
        assert_eq!(plain.last().map(String::as_str), Some("about:blank"));
        let opts = Options {
            policy: Some("{}".into()),
            ..Options::default()
        };
        let wrapped = argv(&opts, profile);
        assert_eq!(wrapped[..2], ["unshare", "-m"]);
        let at = wrapped
            .iter()
            .position(|a| a == CHROMIUM)
            .expect("chromium");
        assert_eq!(wrapped[at - 2..at], ["/tmp/p/etc-chromium", ETC_DIR]);
        assert_eq!(wrapped[at..], plain[..]);
    }

    #[test]
    fn png_signature() {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        assert!(!is_png(&png), "a bare signature is not an image");
        png.resize(100, 0);
        assert!(is_png(&png));
        assert!(!is_png(&[0u8; 100]));
    }
}
