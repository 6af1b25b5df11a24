//! What Mattermost's API says about the Calls plugin besides its settings: the plugin's status
//! (`GET /api/v4/plugins/statuses`) and whether the licence lets it hand calls to RTCD
//! (`GET /api/v4/license/client?format=old`). Pure: the server does the requests.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::PLUGIN_ID;

/// One entry of `GET /api/v4/plugins/statuses` (Mattermost server/public/model/plugin_status.go:
/// `PluginStatus{plugin_id, cluster_id, plugin_path, state, error, name, description, version}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PluginStatus {
    pub plugin_id: String,
    #[serde(default)]
    pub cluster_id: String,
    pub state: i64,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub version: String,
}

/// model/plugin_status.go: `PluginStateRunning = 2`.
pub const PLUGIN_STATE_RUNNING: i64 = 2;

/// The state's meaning (model/plugin_status.go: NotRunning 0, Starting 1, Running 2,
/// FailedToStart 3, FailedToStayRunning 4, Stopping 5).
pub fn state_text(state: i64) -> &'static str {
    match state {
        0 => "not running (disabled)",
        1 => "starting",
        2 => "running",
        3 => "failed to start",
        4 => "failed to stay running (crashed repeatedly)",
        5 => "stopping",
        _ => "in an unknown state",
    }
}

/// The Calls plugin's entries (one per cluster node); empty when it is not installed.
pub fn calls_statuses(json: &str) -> Result<Vec<PluginStatus>, String> {
    let all: Vec<PluginStatus> = serde_json::from_str(json)
        .map_err(|e| format!("not Mattermost's list of plugin statuses: {e}"))?;
    Ok(all
        .into_iter()
        .filter(|s| s.plugin_id == PLUGIN_ID)
        .collect())
}

/// Whether the plugin would use `RTCDServiceURL`, as its `LicenseChecker.RTCDAllowed` decides
/// (mattermost-plugin-calls eb708b4 server/enterprise/license.go:40-42: at least Enterprise,
/// or development mode, or Cloud; server/license/license.go:67-84 and :88-107), from the
/// client licence (`GET /api/v4/license/client?format=old`: string values, Mattermost
/// utils/license.go `GetClientLicense`) and config.json's `ServiceSettings`. `None` when the
/// API cannot tell: a licence with an unknown SKU short name, where the plugin falls back to
/// the licence's `FutureFeatures`, which the client licence does not carry. The string says why.
pub fn rtcd_allowed(
    license: &BTreeMap<String, String>,
    config_json: &str,
) -> (Option<bool>, String) {
    let flag = |k: &str| license.get(k).map(String::as_str) == Some("true");
    let sku = license
        .get("SkuShortName")
        .map(String::as_str)
        .unwrap_or("");
    if matches!(sku, "enterprise" | "advanced") {
        return (Some(true), format!("the licence is {sku}"));
    }
    if flag("Cloud") {
        return (Some(true), "the licence is Mattermost Cloud".into());
    }
    if development_mode(config_json) {
        return (
            Some(true),
            "ServiceSettings EnableDeveloper and EnableTesting are both on (development mode)"
                .into(),
        );
    }
    if !flag("IsLicensed") {
        return (Some(false), "Mattermost has no licence".into());
    }
    if matches!(sku, "professional") {
        return (Some(false), format!("the licence is {sku}, not Enterprise"));
    }
    (
        None,
        format!(
            "the licence's SKU {sku:?} is not one the plugin knows; it then decides by the licence's \
             FutureFeatures, which the API does not show"
        ),
    )
}

/// `IsConfiguredForDevelopment` (server/license/license.go:88-98).
fn development_mode(config_json: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(config_json) else {
        return false;
    };
    let on = |k: &str| v["ServiceSettings"][k].as_bool() == Some(true);
    on("EnableTesting") && on("EnableDeveloper")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lic(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn licence_decides_like_the_plugin() {
        let none = lic(&[("IsLicensed", "false")]);
        assert_eq!(rtcd_allowed(&none, "{}").0, Some(false));
        let dev = r#"{"ServiceSettings":{"EnableTesting":true,"EnableDeveloper":true}}"#;
        assert_eq!(rtcd_allowed(&none, dev).0, Some(true));
        let half = r#"{"ServiceSettings":{"EnableTesting":true,"EnableDeveloper":false}}"#;
        assert_eq!(rtcd_allowed(&none, half).0, Some(false));
        for sku in ["enterprise", "advanced"] {
            let l = lic(&[("IsLicensed", "true"), ("SkuShortName", sku)]);
            assert_eq!(rtcd_allowed(&l, "{}").0, Some(true), "{sku}");
        }
        let pro = lic(&[("IsLicensed", "true"), ("SkuShortName", "professional")]);
        let (a, why) = rtcd_allowed(&pro, "{}");
        assert_eq!(a, Some(false));
        assert!(why.contains("professional"), "{why}");
        let cloud = lic(&[
            ("IsLicensed", "true"),
            ("SkuShortName", "starter"),
            ("Cloud", "true"),
        ]);
        assert_eq!(rtcd_allowed(&cloud, "{}").0, Some(true));
        let odd = lic(&[("IsLicensed", "true"), ("SkuShortName", "E20")]);
        assert_eq!(rtcd_allowed(&odd, "{}").0, None);
    }

    #[test]
    fn statuses_keep_the_calls_plugin() {
        let j = r#"[{"plugin_id":"playbooks","cluster_id":"","plugin_path":"/p","state":2,"error":"","name":"P","description":"","version":"2.0.0"},
                    {"plugin_id":"com.mattermost.calls","cluster_id":"c1","plugin_path":"/c","state":3,"error":"failed to start the RTC server","name":"Calls","description":"","version":"1.11.0"}]"#;
        let s = calls_statuses(j).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].state, s[0].version.as_str()), (3, "1.11.0"));
        assert_eq!(state_text(s[0].state), "failed to start");
        assert!(calls_statuses("[]").unwrap().is_empty());
        assert!(calls_statuses("{}").is_err());
    }
}
