//! The browser test page (issue 17): HTTP on the probe port (and `--web ADDR`), and the WebRTC
//! peer whose sessions the page opens on the probe's own UDP and TCP port.
//!
//! `http` serves one connection (the page, its assets, `POST /session`, `POST /report`);
//! `api` does what those two POSTs ask; `peer` owns the WebRTC sessions.

mod api;
pub mod http;
pub mod peer;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Session start times kept for reports (a run opens up to three sessions).
const MAX_STARTS: usize = 1024;
/// Host name lookups for the dialed leg at once: each holds a blocking thread until it ends.
const MAX_LOOKUPS: usize = 4;

/// The page's own counters and what reports need from earlier requests.
#[derive(Debug)]
pub struct WebState {
    /// `POST /report`: reports built, and what became of them in the results store.
    pub reports_built: AtomicU64,
    pub reports_stored: AtomicU64,
    pub reports_not_stored: AtomicU64,
    /// Reports that could not be built (bad measurements are a 400, not counted here).
    pub reports_failed: AtomicU64,
    /// Requests refused for a missing or wrong `?t=`.
    pub token_refused: AtomicU64,
    /// When a refusal was last logged (at most one line a minute).
    refusal_logged: Mutex<Option<std::time::Instant>>,
    /// When each recent session was opened (wall clock, ms), oldest first.
    starts: Mutex<VecDeque<(String, u64)>>,
    /// Shared with the blocking lookups, which hold a permit until they end.
    lookups: std::sync::Arc<tokio::sync::Semaphore>,
    /// Served by `probe-server live --web`: RTCD holds the TCP port (no ICE-TCP leg).
    live: std::sync::atomic::AtomicBool,
    /// Live mode: nothing holds RTCD's UDP port (RTCD is not running), so no session starts.
    media_down: std::sync::atomic::AtomicBool,
}

impl Default for WebState {
    fn default() -> Self {
        Self {
            reports_built: AtomicU64::new(0),
            reports_stored: AtomicU64::new(0),
            reports_not_stored: AtomicU64::new(0),
            reports_failed: AtomicU64::new(0),
            token_refused: AtomicU64::new(0),
            refusal_logged: Mutex::new(None),
            starts: Mutex::new(VecDeque::new()),
            lookups: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_LOOKUPS)),
            live: std::sync::atomic::AtomicBool::new(false),
            media_down: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// How often a refused token may be logged.
const REFUSAL_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl WebState {
    /// Whether a token refusal at `now` gets a log line: the first one, then one a minute.
    pub fn may_log_refusal(&self, now: std::time::Instant) -> bool {
        let mut last = self
            .refusal_logged
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match *last {
            Some(t) if now.saturating_duration_since(t) < REFUSAL_LOG_EVERY => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn load(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Live mode (set once, at start).
    pub fn set_live(&self) {
        self.live.store(true, Ordering::Relaxed);
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Relaxed)
    }

    /// Live mode: whether RTCD's UDP port is held (see `media_down`).
    pub fn set_media_down(&self, down: bool) {
        self.media_down.store(down, Ordering::Relaxed);
    }

    pub fn media_down(&self) -> bool {
        self.media_down.load(Ordering::Relaxed)
    }

    fn note_start(&self, session: &str, wall_ms: u64) {
        let mut s = self.starts.lock().unwrap_or_else(|p| p.into_inner());
        if s.len() == MAX_STARTS {
            s.pop_front();
        }
        s.push_back((session.to_string(), wall_ms));
    }

    /// When the earliest of `sessions` was opened, if any is still remembered.
    fn started(&self, sessions: &[&str]) -> Option<u64> {
        let s = self.starts.lock().unwrap_or_else(|p| p.into_inner());
        s.iter()
            .filter(|(id, _)| sessions.contains(&id.as_str()))
            .map(|(_, t)| *t)
            .min()
    }
}

/// The `?t=` part of the page link for the log, and what stands for the token when it is not
/// shown. As [`crate::cert::token_hint`] does for the client command: a token given on the
/// command line (already in the process list and the shell history) is shown, URL-encoded,
/// when it is plain printable ASCII; one from the environment or a file never is.
pub fn link_query(
    token: Option<&str>,
    file: Option<&std::path::Path>,
    env: Option<&str>,
) -> (String, Option<String>) {
    use probe_proto::web::request::percent_encode;
    const HIDDEN: &str = "?t=TOKEN";
    match (token, file) {
        (Some(t), _) if env == Some(t) => (
            HIDDEN.into(),
            Some(format!(
                "TOKEN: the access token in PROBE_SERVER_TOKEN{}",
                encoding_note(t.trim())
            )),
        ),
        (Some(t), _) if !t.trim().is_empty() && t.trim().bytes().all(|b| b.is_ascii_graphic()) => {
            (format!("?t={}", percent_encode(t.trim())), None)
        }
        (Some(t), _) => (
            HIDDEN.into(),
            Some(format!(
                "TOKEN: the access token{}",
                encoding_note(t.trim())
            )),
        ),
        (None, Some(f)) => {
            let shown = crate::cert::printable_path(f);
            // Read again only to say how to write it (the start read it already).
            let first = std::fs::read_to_string(f)
                .ok()
                .and_then(|text| text.lines().next().map(|l| l.trim().to_string()));
            let how = first
                .as_deref()
                .map_or(", URL-encoded".into(), encoding_note);
            (
                HIDDEN.into(),
                Some(format!("TOKEN: the first line of {shown}{how}")),
            )
        }
        (None, None) => (String::new(), None),
    }
}

/// How a hidden token goes into the link, without showing it: a token of URL-safe characters
/// (a hex one, as the README suggests) goes as it is; another one must be URL-encoded, which
/// people forget for base64's `+`, `/` and `=` (the page then answers 403).
fn encoding_note(token: &str) -> String {
    let safe = token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if safe {
        " as it is (it needs no URL encoding)".into()
    } else {
        ", URL-encoded: it holds characters a link cannot carry as they are (base64's + / = \
         become %2B %2F %3D)"
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_refused_token_is_logged_once_a_minute() {
        let w = WebState::default();
        let t0 = std::time::Instant::now();
        assert!(w.may_log_refusal(t0), "the first refusal is logged");
        assert!(!w.may_log_refusal(t0 + std::time::Duration::from_secs(59)));
        assert!(w.may_log_refusal(t0 + std::time::Duration::from_secs(60)));
        assert!(!w.may_log_refusal(t0 + std::time::Duration::from_secs(61)));
        // A clock read out of order never panics and never logs twice.
        assert!(!w.may_log_refusal(t0));
    }

    #[test]
    fn the_link_shows_a_token_only_where_the_client_command_does() {
        let q = |t, f, e| {
            let (q, note) = link_query(t, f, e);
            format!("{q} {}", note.unwrap_or_default())
        };
        assert_eq!(q(None, None, None), " ");
        assert_eq!(q(Some(" s3cret "), None, None), "?t=s3cret ");
        assert_eq!(q(Some("a&b=c"), None, None), "?t=a%26b%3Dc ");
        let env = q(Some("from-env"), None, Some("from-env"));
        assert!(
            !env.contains("from-env") && env.contains("PROBE_SERVER_TOKEN"),
            "{env}"
        );
        let odd = q(Some("two words"), None, None);
        assert!(!odd.contains("two"), "{odd}");
        let file = q(None, Some(Path::new("/etc/probe.token")), None);
        assert!(file.contains("/etc/probe.token"), "{file}");
        // Hidden tokens: the note says whether to encode, never the token.
        let dir = std::env::temp_dir().join(format!("link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (hex, b64) = (dir.join("hex"), dir.join("b64"));
        std::fs::write(&hex, "0f1e2d3c4b5a69788796a5b4c3d2e1f0\n").unwrap();
        std::fs::write(&b64, "q+/w9Z==\n").unwrap();
        let note = q(None, Some(&hex), None);
        assert!(
            note.contains("needs no URL encoding") && !note.contains("0f1e"),
            "{note}"
        );
        let note = q(None, Some(&b64), None);
        assert!(
            note.contains("%2B %2F %3D") && !note.contains("q+/w"),
            "{note}"
        );
        let note = q(Some("q+/w9Z=="), None, Some("q+/w9Z=="));
        assert!(note.contains("PROBE_SERVER_TOKEN, URL-encoded"), "{note}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn starts_are_bounded_and_the_earliest_wins() {
        let w = WebState::default();
        w.note_start("a", 20);
        w.note_start("b", 10);
        assert_eq!(w.started(&["a", "b", "zz"]), Some(10));
        assert_eq!(w.started(&["zz"]), None);
        for i in 0..MAX_STARTS {
            w.note_start(&format!("x{i}"), 30);
        }
        assert_eq!(w.started(&["a", "b"]), None, "the oldest are forgotten");
        assert_eq!(w.started(&["x5"]), Some(30));
    }
}
