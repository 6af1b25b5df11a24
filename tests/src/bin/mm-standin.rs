//! A stand-in for Mattermost with the Calls plugin, serving only what the Calls web app reads
//! before a call to get its ICE servers (plain HTTP, one request per connection):
//!
//! - `GET /plugins/com.mattermost.calls/config`: the client config's `ICEServersConfigs` and
//!   `NeedsTURNCredentials` (plugin `server/configuration.go:519-530`, `getICEServers(true)` at
//!   764-781 drops TURN entries without credentials);
//! - `GET /plugins/com.mattermost.calls/turn-credentials`: `[{urls, username, credential}]` made
//!   with the shared secret exactly as the plugin does (`server/api.go:459-495` →
//!   rtcd `service/rtc/turn.go:37-84`, via `probe_proto::turn::rest`), or, with
//!   `--fail-credentials`, the plugin's 403 for a missing `TURNStaticAuthSecret`
//!   (`api.go:464-467`, body shaped by `server/audit.go:14-38`).
//!
//! - `GET /api/v4/config` (with `--admin-token` and `--calls-block`): Mattermost's
//!   configuration with the Calls plugin's block. Mattermost's API reference, "Get
//!   configuration" (api/v4/source/system.yaml, `GET /api/v4/config`): "Must have
//!   `manage_system` permission"; 401 without a valid session or token, 403 with a token whose
//!   user lacks the permission (here: `--token`, a plain user). Secret plugin settings come back
//!   as `model.FakeSetting` (`PluginSettings.Sanitize`, for plugin.json's `"secret": true`:
//!   `ICEServersConfigs`, `TURNStaticAuthSecret`).
//!
//! - `GET /api/v4/plugins/statuses` (admin): the Calls plugin's `model.PluginStatus`
//!   (server/public/model/plugin_status.go: plugin_id, cluster_id, plugin_path, state, error,
//!   name, description, version; `state` from `--plugin-state`, default 2 = running). The API
//!   reference ("Get plugins status") says no permission is needed, but Mattermost's
//!   api4/plugin.go `getPluginStatuses` checks `sysconsole_read_plugins`: 403 for a plain user.
//! - `GET /api/v4/license/client?format=old`: the client licence as Mattermost's
//!   `GetClientLicense` (utils/license.go) makes it, string values: `{"IsLicensed":"false"}`
//!   without `--license-sku`, else `IsLicensed`, `SkuShortName`, `Cloud` and a few more.
//!   `--dev-mode` turns on `ServiceSettings.EnableDeveloper` and `EnableTesting` in the config.
//!
//! Requests without `Authorization: Bearer TOKEN` (or the admin token) get Mattermost's 401.
//!
//! ```text
//! mm-standin --listen IP:PORT --token T --secret S [--user NAME] [--minutes N | --expired]
//!            [--fail-credentials] --turn URL [--turn URL…]
//!            [--admin-token A --calls-block JSON] [--plugin-state N [--plugin-error TEXT]]
//!            [--license-sku SKU] [--dev-mode]
//! ```
//! Prints `mm-standin ready IP:PORT` on stdout once listening.
//!
//! `mm-standin --connect-proxy --listen IP:PORT` is instead a minimal HTTP proxy that only
//! does `CONNECT host:port` (what a browser sends for TURN over TCP/TLS behind HTTPS_PROXY),
//! logging each tunnel on stderr.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

struct Opts {
    listen: String,
    token: String,
    secret: String,
    user: String,
    minutes: i64,
    fail_credentials: bool,
    turn: Vec<String>,
    connect_proxy: bool,
    admin_token: String,
    /// The Calls plugin's block of config.json, as JSON text.
    calls_block: Option<String>,
    /// The plugin's `model.PluginStatus.State`; negative: not installed (no entry).
    plugin_state: i64,
    plugin_error: String,
    /// The licence's SkuShortName; `None`: unlicensed.
    license_sku: Option<String>,
    dev_mode: bool,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        listen: "0.0.0.0:8065".into(),
        token: String::new(),
        secret: String::new(),
        user: "alice".into(),
        minutes: 240,
        fail_credentials: false,
        turn: vec![],
        connect_proxy: false,
        admin_token: String::new(),
        calls_block: None,
        plugin_state: 2,
        plugin_error: String::new(),
        license_sku: None,
        dev_mode: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => o.listen = val()?,
            "--token" => o.token = val()?,
            "--secret" => o.secret = val()?,
            "--user" => o.user = val()?,
            "--minutes" => o.minutes = val()?.parse().map_err(|_| "--minutes N")?,
            // Credentials that expired an hour ago: a Mattermost host whose clock is behind.
            "--expired" => o.minutes = -60,
            "--fail-credentials" => o.fail_credentials = true,
            "--turn" => o.turn.push(val()?),
            "--connect-proxy" => o.connect_proxy = true,
            "--admin-token" => o.admin_token = val()?,
            "--plugin-state" => {
                o.plugin_state = val()?.parse().map_err(|_| "--plugin-state N")?;
            }
            "--plugin-error" => o.plugin_error = val()?,
            "--license-sku" => o.license_sku = Some(val()?),
            "--dev-mode" => o.dev_mode = true,
            "--calls-block" => {
                let b = val()?;
                serde_json::from_str::<serde_json::Value>(&b)
                    .map_err(|e| format!("--calls-block is not JSON: {e}"))?;
                o.calls_block = Some(b);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn respond(s: &mut TcpStream, status: &str, body: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nDate: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        http_date(now),
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body.as_bytes());
}

fn handle(mut s: TcpStream, o: &Opts) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65_536 {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let path = request_line
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let bearer = lines
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let admin = !o.admin_token.is_empty() && bearer == format!("Bearer {}", o.admin_token);
    let authorized = admin || (!o.token.is_empty() && bearer == format!("Bearer {}", o.token));
    eprintln!("mm-standin: {request_line} authorized={authorized} admin={admin}");
    if !authorized {
        // What Mattermost answers a request without a valid session or token.
        respond(
            &mut s,
            "401 Unauthorized",
            r#"{"id":"api.context.session_expired.app_error","message":"Invalid or expired session, please login again.","detailed_error":"","request_id":"standin","status_code":401}"#,
        );
        return;
    }
    match path.as_str() {
        "/api/v4/config" if !admin => respond(
            &mut s,
            "403 Forbidden",
            r#"{"id":"api.context.permissions.app_error","message":"You do not have the appropriate permissions.","detailed_error":"","request_id":"standin","status_code":403}"#,
        ),
        "/api/v4/config" => respond(&mut s, "200 OK", &config_body(o)),
        "/api/v4/plugins/statuses" if !admin => respond(
            &mut s,
            "403 Forbidden",
            r#"{"id":"api.context.permissions.app_error","message":"You do not have the appropriate permissions.","detailed_error":"","request_id":"standin","status_code":403}"#,
        ),
        "/api/v4/plugins/statuses" => respond(&mut s, "200 OK", &statuses_body(o)),
        "/api/v4/license/client?format=old" => respond(&mut s, "200 OK", &license_body(o)),
        "/plugins/com.mattermost.calls/config" => {
            let body = serde_json::json!({
                "AllowEnableCalls": true,
                "DefaultEnabled": true,
                // getICEServers(true) leaves out TURN entries without credentials.
                "ICEServersConfigs": [],
                "NeedsTURNCredentials": !o.turn.is_empty(),
            });
            respond(&mut s, "200 OK", &body.to_string());
        }
        "/plugins/com.mattermost.calls/turn-credentials" if o.fail_credentials => respond(
            &mut s,
            "403 Forbidden",
            r#"{"message":"TURNStaticAuthSecret should be set","status_code":403}"#,
        ),
        "/plugins/com.mattermost.calls/turn-credentials" => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let expiry = (now + o.minutes * 60).max(1) as u64;
            let c = probe_proto::turn::rest::credentials(&o.secret, &o.user, expiry);
            let body = serde_json::json!([{
                "urls": o.turn,
                "username": c.username,
                "credential": c.password,
            }]);
            respond(&mut s, "200 OK", &body.to_string());
        }
        _ => respond(
            &mut s,
            "404 Not Found",
            r#"{"message":"not found","status_code":404}"#,
        ),
    }
}

/// Mattermost's configuration as `GET /api/v4/config` returns it to a system admin: the Calls
/// plugin's block with its secret settings replaced by `model.FakeSetting`.
fn config_body(o: &Opts) -> String {
    const FAKE_SETTING: &str = "********************************";
    let mut block: serde_json::Value = o
        .calls_block
        .as_deref()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(m) = block.as_object_mut() {
        for (k, v) in m.iter_mut() {
            if ["iceserversconfigs", "turnstaticauthsecret"].contains(&k.to_lowercase().as_str()) {
                *v = serde_json::Value::from(FAKE_SETTING);
            }
        }
    }
    serde_json::json!({
        "ServiceSettings": {
            "SiteURL": "http://mattermost.example.com",
            "EnableDeveloper": o.dev_mode,
            "EnableTesting": o.dev_mode,
        },
        "PluginSettings": {"Enable": true, "Plugins": {"com.mattermost.calls": block}},
    })
    .to_string()
}

/// `[PluginStatus]`: another plugin always, the Calls plugin unless `--plugin-state` < 0.
fn statuses_body(o: &Opts) -> String {
    let mut all = vec![serde_json::json!({
        "plugin_id": "playbooks", "cluster_id": "", "plugin_path": "/mattermost/plugins/playbooks",
        "state": 2, "error": "", "name": "Playbooks", "description": "", "version": "2.1.0",
    })];
    if o.plugin_state >= 0 {
        all.push(serde_json::json!({
            "plugin_id": "com.mattermost.calls", "cluster_id": "",
            "plugin_path": "/mattermost/plugins/com.mattermost.calls", "state": o.plugin_state,
            "error": o.plugin_error, "name": "Calls", "description": "", "version": "1.11.0",
        }));
    }
    serde_json::Value::from(all).to_string()
}

/// `GetClientLicense`: `IsLicensed` alone without a licence; with one, a few of its keys.
fn license_body(o: &Opts) -> String {
    match &o.license_sku {
        None => serde_json::json!({"IsLicensed": "false"}),
        Some(sku) => serde_json::json!({
            "IsLicensed": "true", "SkuShortName": sku, "SkuName": sku, "Cloud": "false",
            "Users": "100", "LDAP": "true", "Cluster": "true", "IsTrial": "false",
        }),
    }
    .to_string()
}

/// One CONNECT tunnel: read the request head, dial, answer 200, splice both ways.
fn tunnel(mut s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next().unwrap_or_default().to_string();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    eprintln!("mm-standin proxy: {line}");
    if method != "CONNECT" {
        let _ = s.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let Ok(up) = TcpStream::connect(target) else {
        let _ = s.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let _ = s.set_read_timeout(None);
    let _ = s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    let (mut a, mut b) = (s.try_clone().unwrap(), up.try_clone().unwrap());
    let (mut c, mut d) = (s, up);
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b);
        let _ = b.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut d, &mut c);
    let _ = c.shutdown(std::net::Shutdown::Write);
    let _ = t.join();
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mm-standin: {e}");
            std::process::exit(2);
        }
    };
    let l = match TcpListener::bind(&o.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mm-standin: cannot listen on {}: {e}", o.listen);
            std::process::exit(2);
        }
    };
    println!(
        "mm-standin ready {}",
        l.local_addr().map_or(o.listen.clone(), |a| a.to_string())
    );
    let _ = std::io::stdout().flush();
    for s in l.incoming().flatten() {
        if o.connect_proxy {
            std::thread::spawn(move || tunnel(s));
        } else {
            handle(s, &o);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_date_known_instant() {
        assert_eq!(
            super::http_date(1_795_983_026),
            "Sun, 29 Nov 2026 20:10:26 GMT"
        );
        assert_eq!(super::http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
