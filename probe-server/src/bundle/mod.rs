//! `probe-server bundle`: what the guide says to send to Mattermost support, in one `.tar.gz`:
//! the doctor's report, RTCD's version, its configuration and `RTCD_*` environment with secrets
//! redacted, OS/kernel and probe versions, and the log lines that matched.

mod redact;
mod results;
mod tar;

use flate2::write::GzEncoder;
use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::doctor;
use redact::Redactor;

#[derive(clap::Args, Debug, Clone)]
pub struct BundleArgs {
    /// Where to write the archive (default: rtcd-bundle-HOST-TIME.tar.gz here).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The probe result store to take the latest runs from (default: results.sqlite in the
    /// state directory).
    #[arg(long, env = "PROBE_SERVER_STORE", value_name = "FILE")]
    pub store: Option<PathBuf>,
    /// The server's state directory, when it is not the default.
    #[arg(long, env = "PROBE_SERVER_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub inputs: doctor::Inputs,
}

pub fn run(args: BundleArgs) -> i32 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let loaded = match doctor::config::load(&args.inputs) {
        Ok(l) => l,
        // RTCD refuses such a file at start too: exactly when support needs it, so it is
        // packed as it is, with why, instead of no bundle at all.
        Err(msg) => match unparsable_config(&args.inputs) {
            Some(text) => return partial(&args, &text, &msg, now),
            None => return crate::fail(msg),
        },
    };
    let dir = archive_dir(now);
    let output = output_path(&args, &dir);
    // Fail on an unwritable destination before spending the sample on the doctor.
    let (file, tmp_path) = match open_private(&output) {
        Ok(f) => f,
        Err(e) => return cannot_write(&output, &e),
    };
    let done = doctor::collect(&args.inputs, &loaded);
    let files = contents(&args.inputs, &loaded, &done, stored(&args, now));
    // The archive was written: the run succeeded whatever the doctor found.
    match finish(file, (&tmp_path, &output), &dir, &files, now) {
        Ok(()) => 0,
        Err(code) => code,
    }
}

fn output_path(args: &BundleArgs, dir: &str) -> PathBuf {
    args.output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{dir}.tar.gz")))
}

fn cannot_write(output: &std::path::Path, e: &std::io::Error) -> i32 {
    crate::fail(format!(
        "cannot write {}: {e}; give a writable path with -o",
        output.display()
    ))
}

/// The latest stored probe-client reports, as a bundle file.
fn stored(args: &BundleArgs, now: u64) -> (String, String) {
    let store = args
        .store
        .clone()
        .unwrap_or_else(|| results::default_path(args.state_dir.clone()));
    results::file(&store, now * 1000)
}

/// Writes the archive and says what it holds; Err(exit code) when it could not be written.
fn finish(
    file: std::fs::File,
    (tmp_path, output): (&std::path::Path, &std::path::Path),
    dir: &str,
    files: &[(String, String)],
    now: u64,
) -> Result<(), i32> {
    if let Err(e) = write_archive(file, tmp_path, output, dir, files, now) {
        let _ = std::fs::remove_file(tmp_path);
        return Err(crate::fail(format!(
            "cannot write {}: {e}",
            output.display()
        )));
    }
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    probe_shell::outln!(
        "wrote {} ({} files: {}); secrets are redacted — read it before you send it",
        output.display(),
        files.len(),
        names.join(", ")
    );
    Ok(())
}

/// `--rtcd-config`'s text when it reads but does not parse as RTCD's configuration.
fn unparsable_config(inputs: &doctor::Inputs) -> Option<String> {
    let text = std::fs::read_to_string(inputs.rtcd_config.as_ref()?).ok()?;
    probe_proto::rtcd::RtcdConfig::from_toml_str(&text)
        .is_err()
        .then_some(text)
}

/// The bundle of a host whose RTCD config does not parse: the file as it is (redacted), why,
/// the system and the stored reports; the doctor needs a config, so it did not run. Exit 1:
/// the bundle is written, and something is wrong.
fn partial(args: &BundleArgs, text: &str, why: &str, now: u64) -> i32 {
    let dir = archive_dir(now);
    let output = output_path(args, &dir);
    let (file, tmp_path) = match open_private(&output) {
        Ok(f) => f,
        Err(e) => return cannot_write(&output, &e),
    };
    let mut r = Redactor::default();
    // The secrets first, by key, so that the error text and every other file lose them too.
    // Only where the text is TOML at all (a type RTCD refuses still parses): in a file that is
    // not, the values cannot be told apart reliably (multi-line strings, odd quoting), so the
    // file stays out rather than risk a secret.
    let (config, how) = match text.parse::<toml::Table>() {
        Ok(t) => {
            r.toml("", &toml::Value::Table(t));
            (
                r.scrub(text),
                "RTCD's config file as it is, secrets replaced by REDACTED",
            )
        }
        Err(_) => (
            "# RTCD's config file is not TOML at all (see config-error.txt), so it is left out: its secrets\n\
             # could not be found reliably. Send it yourself after removing them.\n"
                .to_string(),
            "left out: the file is not TOML, so its secrets could not be found reliably",
        ),
    };
    let readme = format!(
        "Support bundle made by probe-server {}: RTCD's config does not parse, so the host checks \
         (probe-server doctor) did not run.\n\n\
         config-error.txt              why the config was refused (RTCD refuses it at start too)\n\
         rtcd-config.toml              {how}\n\
         system.txt                    OS, kernel, CPU count, probe version\n\
         probe-results.json            the latest stored probe-client reports (or .txt: why there are none)\n",
        env!("CARGO_PKG_VERSION")
    );
    let files: Vec<(String, String)> = vec![
        ("README.txt".into(), readme),
        ("config-error.txt".into(), format!("{why}\n")),
        ("rtcd-config.toml".into(), config),
        ("system.txt".into(), system()),
        stored(args, now),
    ]
    .into_iter()
    .map(|(n, t)| (n, r.scrub(&t)))
    .collect();
    if let Err(code) = finish(file, (&tmp_path, &output), &dir, &files, now) {
        return code;
    }
    eprintln!(
        "probe-server: {why}; the doctor did not run, and the bundle's rtcd-config.toml is {how}"
    );
    1
}

/// `rtcd-bundle-HOST-TIME`: the archive's top directory and default name, the host name made
/// safe for a file name.
fn archive_dir(now: u64) -> String {
    let stamp = probe_proto::report::rfc3339(now * 1000)
        .replace([':', '-'], "")
        .chars()
        .take(15)
        .collect::<String>();
    let safe_host: String = doctor::hostname()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!("rtcd-bundle-{safe_host}-{stamp}")
}

/// Writes `files` under `dir/` as a gzipped tar into `file` (at `tmp_path`), synced, then
/// renamed over `output`.
fn write_archive(
    file: std::fs::File,
    tmp_path: &std::path::Path,
    output: &std::path::Path,
    dir: &str,
    files: &[(String, String)],
    now: u64,
) -> std::io::Result<()> {
    let mut archive = ::tar::Builder::new(Vec::new());
    for (name, data) in files {
        tar::append(
            &mut archive,
            &format!("{dir}/{name}"),
            data.as_bytes(),
            now,
            0o600,
        );
    }
    let archive = tar::finish(archive);
    let mut gz = GzEncoder::new(file, flate2::Compression::default());
    gz.write_all(&archive)
        .and_then(|_| gz.finish())
        .and_then(|f| f.sync_all())
        .and_then(|_| std::fs::rename(tmp_path, output))
}

/// The archive holds configuration: it is written to a new file of unpredictable name beside
/// the output, created with O_EXCL|O_NOFOLLOW and mode 0600 (so nobody can plant a symlink or
/// open it first), and renamed over the output when complete.
fn open_private(path: &std::path::Path) -> std::io::Result<(std::fs::File, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "bundle".into(), |n| n.to_string_lossy().into_owned());
    let mut last = None;
    for _ in 0..8 {
        let mut r = [0u8; 8];
        use ring::rand::SecureRandom;
        ring::rand::SystemRandom::new()
            .fill(&mut r)
            .map_err(|_| std::io::Error::other("no randomness for a temporary name"))?;
        let tag: String = r.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = dir.join(format!(".{name}.{tag}.tmp"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free temporary name")))
}

/// Every file of the bundle, secrets removed: first by key name, then by value everywhere.
fn contents(
    inputs: &doctor::Inputs,
    loaded: &doctor::Loaded,
    done: &doctor::Done,
    stored: (String, String),
) -> Vec<(String, String)> {
    let mut r = Redactor::default();
    let mut files: Vec<(String, String)> = Vec::new();

    let config = match &loaded.text {
        Some(_) => {
            let t = r.toml("", &toml::Value::Table(loaded.cfg.table.clone()));
            toml::to_string(&t)
                .unwrap_or_else(|e| format!("# cannot re-encode the configuration: {e}\n"))
        }
        None => "# no --rtcd-config given: the doctor used RTCD's defaults\n".to_string(),
    };
    let effective = serde_json::to_value(&loaded.cfg).map(|v| r.json("", &v));
    // RTCD's own variables: from its process, its systemd unit, or this shell (rtcd_env).
    let mut env_text = format!("# {}\n", loaded.env.summary());
    if loaded.env.vars.is_empty() {
        env_text.push_str("# no RTCD_* variable is set there\n");
    }
    for (k, v) in &loaded.env.vars {
        env_text.push_str(&format!("{k}={}\n", r.env(k, v)));
    }

    files.push(("README.txt".into(), readme(inputs)));
    files.push((
        "doctor.json".into(),
        serde_json::to_string_pretty(&done.report).unwrap_or_default() + "\n",
    ));
    files.push((
        "doctor.txt".into(),
        doctor::report::render_text(&done.report),
    ));
    files.push((
        "rtcd-version.json".into(),
        done.version_json.clone().unwrap_or_else(|| "null".into()) + "\n",
    ));
    files.push(("rtcd-config.toml".into(), config));
    files.push((
        "rtcd-config-effective.json".into(),
        effective
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or_else(|e| format!("\"cannot encode: {e}\"")),
    ));
    files.push(("rtcd-env.txt".into(), env_text));
    files.push(("system.txt".into(), system()));
    if let Some(log) = &done.log {
        let mut text = format!(
            "# {} line(s) of {} matched the guide's patterns or showed a private ICE candidate (at most {} kept, the latest)\n",
            log.matched.len(),
            // What was read: RTCD's log, Mattermost's (--mattermost-log) or a journal.
            log.source,
            doctor::logs::MAX_KEPT
        );
        for l in &log.matched {
            text.push_str(l);
            text.push('\n');
        }
        files.push(("rtcd-log-matches.txt".into(), text));
    }
    files.push(stored);
    files.into_iter().map(|(n, t)| (n, r.scrub(&t))).collect()
}

fn readme(inputs: &doctor::Inputs) -> String {
    format!(
        "Support bundle made by probe-server {} — what the Calls troubleshooting guide asks for.\n\n\
         doctor.json / doctor.txt      the host checks (probe-server doctor, --sample {} s)\n\
         rtcd-version.json             RTCD's GET /version answer\n\
         rtcd-config.toml              RTCD's config file, secrets replaced by REDACTED\n\
         rtcd-config-effective.json    the configuration RTCD would run with (file + RTCD_* environment), redacted\n\
         rtcd-env.txt                  RTCD_* variables RTCD runs with (its process, else its systemd unit, else this shell; the first line says which), redacted\n\
         system.txt                    OS, kernel, CPU count, probe version\n\
         rtcd-log-matches.txt          log lines that matched (with --rtcd-log)\n\
         probe-results.json            the latest stored probe-client reports (or .txt: why there are none)\n\n\
         Redacted: values of keys named *key*, *secret*, *password*, *token*, credential; passwords in\n\
         data_source strings and in URLs; and those values wherever else they appeared.\n",
        env!("CARGO_PKG_VERSION"),
        inputs.sample
    )
}

fn system() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|e| format!("unreadable ({e})"))
    };
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    format!(
        "probe-server {}\nhost {}\nos {os}\nkernel {}\nkernel build {}\ncpus {}\nuptime_seconds {}\n",
        env!("CARGO_PKG_VERSION"),
        doctor::hostname(),
        read("/proc/sys/kernel/osrelease"),
        read("/proc/version"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        read("/proc/uptime").split_whitespace().next().unwrap_or("?"),
    )
}
