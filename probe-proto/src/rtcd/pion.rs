//! Which pion/ice generation RTCD runs, because the NAT 1:1 rewrite of host
//! candidates differs between them (rtcd-behaviour.md, Corrections 4):
//! rtcd v1.2.0–v1.2.4 pin pion/ice v4.0.x; rtcd v1.2.5+ use ice v4.2 with
//! pion/webrtc v4.2.6, where `SetNAT1To1IPs` became address-rewrite rules.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The rule set used to compute the advertised candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PionRules {
    /// pion/ice v4.0.x (rtcd v1.2.0–v1.2.4).
    #[serde(rename = "pion_ice_4_0")]
    V4_0,
    /// pion/ice v4.2 + pion/webrtc v4.2.6 (rtcd v1.2.5 and newer): the default,
    /// as the Calls plugin requires a current RTCD.
    #[default]
    #[serde(rename = "pion_ice_4_2")]
    V4_2,
}

impl PionRules {
    /// The rules an RTCD of version `v` (`1.2.6`, `v1.2.4`, `1.2.5-rc1`, as
    /// `/version`'s `buildVersion` or `--rtcd-version` give it) runs with.
    /// Versions before 1.2.0 ran pion/ice v2/v4.0-like mappers: the 4.0 rules.
    pub fn for_rtcd_version(v: &str) -> Result<Self, String> {
        let t = v.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        let core = t.split(['-', '+']).next().unwrap_or("");
        let mut parts = core.split('.');
        let mut num = || -> Result<u64, String> {
            parts
                .next()
                .ok_or_else(|| format!("{v:?} is not a version like 1.2.6"))?
                .parse::<u64>()
                .map_err(|_| format!("{v:?} is not a version like 1.2.6"))
        };
        let (major, minor, patch) = (num()?, num()?, num()?);
        if parts.next().is_some() {
            return Err(format!("{v:?} is not a version like 1.2.6"));
        }
        // A prerelease of 1.2.5 (1.2.5-rc1) already carries the 4.2 dependency
        // update only if it was cut after it; we cannot know, so the release's rules.
        Ok(if (major, minor, patch) >= (1, 2, 5) {
            PionRules::V4_2
        } else {
            PionRules::V4_0
        })
    }

    /// Words for reports: which rules were applied.
    pub fn label(self) -> &'static str {
        match self {
            PionRules::V4_0 => "pion/ice v4.0 rules (rtcd v1.2.0–v1.2.4)",
            PionRules::V4_2 => "pion/ice v4.2 rules (rtcd v1.2.5 and newer)",
        }
    }
}

impl fmt::Display for PionRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_choose_rules() {
        for (v, want) in [
            ("1.2.6", PionRules::V4_2),
            ("v1.2.5", PionRules::V4_2),
            ("1.3.0", PionRules::V4_2),
            ("1.2.4", PionRules::V4_0),
            ("v1.2.0", PionRules::V4_0),
            ("1.1.3", PionRules::V4_0),
            ("1.2.5-rc1", PionRules::V4_2),
        ] {
            assert_eq!(PionRules::for_rtcd_version(v), Ok(want), "{v}");
        }
        for bad in ["", "dev", "1.2", "1.2.x", "1.2.3.4"] {
            assert!(PionRules::for_rtcd_version(bad).is_err(), "{bad}");
        }
    }
}
