//! Version parsing and ordering exactly as the Calls plugin applies them to RTCD's
//! `buildVersion`: github.com/Masterminds/semver **v1.5.0** (plugin go.mod:12), called from
//! `checkMinVersion` (plugin server/utils.go:132-148) by the version check in
//! server/rtcd.go:339-370 (eb708b4). Hand-written rather than a crate because the quirks of
//! that Go release decide what the plugin accepts:
//! - `NewVersion` accepts `v?MAJOR(.MINOR)?(.PATCH)?(-PRE)?(+META)?` on the whole string, only a
//!   lower-case `v`, leading zeros allowed, missing minor/patch read as 0; numbers must fit an
//!   int64 (Masterminds version.go:31-33, 54-94 at v1.5.0).
//! - `Compare` orders major, minor, patch, then a release above its prereleases; metadata is
//!   ignored (version.go:265-293).
//! - Prerelease parts compare numerically when both parse as uint64, a number sorts below a
//!   word, words compare bytewise, a missing part sorts below a present one — and two numeric
//!   parts of equal value but different spelling (`01` vs `1`) compare as "less" both ways
//!   (version.go:331-425); reproduced, not fixed.

use std::cmp::Ordering;
use std::fmt;

/// A version as Masterminds/semver v1.5.0 parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: i64,
    pub minor: i64,
    pub patch: i64,
    /// Prerelease without the `-` (empty when none).
    pub pre: String,
    /// Build metadata without the `+` (empty when none).
    pub metadata: String,
}

/// Why a string is not a version (Masterminds' `ErrInvalidSemVer` or a segment overflow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// `[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*`: the prerelease and metadata grammar of SemVerRegex.
fn dotted_idents(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Go's strconv.ParseInt(s, 10, 64) for a string of ASCII digits.
fn segment(s: &str) -> Result<i64, ParseError> {
    s.parse::<i64>().map_err(|_| {
        ParseError(format!(
            "Error parsing version segment: {s} is out of range"
        ))
    })
}

impl Version {
    /// Masterminds v1.5.0 `NewVersion`.
    pub fn parse(v: &str) -> Result<Version, ParseError> {
        let invalid = || ParseError("Invalid Semantic Version".into());
        let rest = v.strip_prefix('v').unwrap_or(v);
        // The core ends at the first '-' or '+'; the regex cannot place either inside it.
        let core_end = rest.find(['-', '+']).unwrap_or(rest.len());
        let (core, tail) = rest.split_at(core_end);
        let mut nums = core.split('.');
        let mut next = |required: bool| -> Result<Option<&str>, ParseError> {
            match nums.next() {
                None if !required => Ok(None),
                Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
                _ => Err(invalid()),
            }
        };
        let major = next(true)?.ok_or_else(invalid)?;
        let minor = next(false)?;
        let patch = if minor.is_some() { next(false)? } else { None };
        if nums.next().is_some() {
            return Err(invalid());
        }
        // `-PRE` (may itself contain '-') then `+META`.
        let (pre, metadata) = match tail.strip_prefix('-') {
            Some(p) => match p.split_once('+') {
                Some((pre, meta)) => (pre, Some(meta)),
                None => (p, None),
            },
            None => match tail.strip_prefix('+') {
                Some(meta) => ("", Some(meta)),
                None if tail.is_empty() => ("", None),
                None => return Err(invalid()),
            },
        };
        if tail.starts_with('-') && !dotted_idents(pre) {
            return Err(invalid());
        }
        if let Some(m) = metadata {
            if !dotted_idents(m) {
                return Err(invalid());
            }
        }
        Ok(Version {
            major: segment(major)?,
            minor: minor.map(segment).transpose()?.unwrap_or(0),
            patch: patch.map(segment).transpose()?.unwrap_or(0),
            pre: pre.to_string(),
            metadata: metadata.unwrap_or_default().to_string(),
        })
    }

    /// Masterminds v1.5.0 `Compare` (`self` against `other`).
    pub fn compare(&self, other: &Version) -> Ordering {
        let core =
            (self.major, self.minor, self.patch).cmp(&(other.major, other.minor, other.patch));
        if core != Ordering::Equal {
            return core;
        }
        match (self.pre.is_empty(), other.pre.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => compare_prerelease(&self.pre, &other.pre),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre)?;
        }
        if !self.metadata.is_empty() {
            write!(f, "+{}", self.metadata)?;
        }
        Ok(())
    }
}

fn compare_prerelease(a: &str, b: &str) -> Ordering {
    let ap: Vec<&str> = a.split('.').collect();
    let bp: Vec<&str> = b.split('.').collect();
    for i in 0..ap.len().max(bp.len()) {
        let d = compare_part(
            ap.get(i).copied().unwrap_or(""),
            bp.get(i).copied().unwrap_or(""),
        );
        if d != Ordering::Equal {
            return d;
        }
    }
    Ordering::Equal
}

/// Go's strconv.ParseUint(s, 10, 64): digits only, no sign, within u64.
fn as_uint(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Masterminds v1.5.0 `comparePrePart`, quirks included.
fn compare_part(s: &str, o: &str) -> Ordering {
    if s == o {
        return Ordering::Equal;
    }
    if s.is_empty() {
        return Ordering::Less;
    }
    if o.is_empty() {
        return Ordering::Greater;
    }
    match (as_uint(s), as_uint(o)) {
        (None, None) => {
            if s.as_bytes() > o.as_bytes() {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        // o is a word, s a number: numbers sort first.
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        // Equal values spelt differently fall through to "less" in Go.
        (Some(si), Some(oi)) => {
            if si > oi {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
    }
}

/// What the Calls plugin's version check (server/rtcd.go:339-370) does with RTCD's
/// `buildVersion` against its `min_rtcd_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginVerdict {
    /// `""`, `master` or `dev…`: the plugin skips the check (rtcd.go:355-359).
    DevBuild,
    Accepted,
    /// Below the minimum: the plugin refuses RTCD (utils.go:143-145).
    TooOld,
    /// Not a version to Masterminds: the plugin refuses RTCD (utils.go:138-141).
    Unparsable(ParseError),
}

/// The plugin's decision for RTCD `current` against `minimum` (which must parse; a caller
/// validates it first — an unparsable minimum also fails the plugin, utils.go:133-136).
pub fn plugin_verdict(minimum: &Version, current: &str) -> PluginVerdict {
    if current.is_empty() || current == "master" || current.starts_with("dev") {
        return PluginVerdict::DevBuild;
    }
    match Version::parse(current) {
        Err(e) => PluginVerdict::Unparsable(e),
        Ok(v) if v.compare(minimum) == Ordering::Less => PluginVerdict::TooOld,
        Ok(_) => PluginVerdict::Accepted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_as_new_version_does() {
        let x = v("v1.2.3-rc.1+build.5");
        assert_eq!(
            (
                x.major,
                x.minor,
                x.patch,
                x.pre.as_str(),
                x.metadata.as_str()
            ),
            (1, 2, 3, "rc.1", "build.5")
        );
        assert_eq!(v("1").to_string(), "1.0.0");
        assert_eq!(v("1.2").to_string(), "1.2.0");
        assert_eq!(v("v0.17.0").to_string(), "0.17.0");
        assert_eq!(v("01.002.0003").to_string(), "1.2.3");
        assert_eq!(v("1.2.3-0.3.7").pre, "0.3.7");
        assert_eq!(v("1.2.3-x-y-z.--").pre, "x-y-z.--");
        assert_eq!(v("1.2.3+meta-1").metadata, "meta-1");
        assert_eq!(v("1-rc1").to_string(), "1.0.0-rc1");
        for bad in [
            "",
            "v",
            "V1.2.3",
            "vv1.2.3",
            " 1.2.3",
            "1.2.3 ",
            "1.2.3.4",
            "1.",
            "1..2",
            ".1",
            "1.2.3-",
            "1.2.3+",
            "1.2.3-a..b",
            "1.2.3-a_b",
            "1.2.3+a+b",
            "1.2.3-rc+",
            "dev-7bc1f7a",
            "custom-build",
            "master",
            "99999999999999999999.0.0",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?} must not parse");
        }
        // int64 is the limit, as strconv.ParseInt(…, 64).
        assert_eq!(v("9223372036854775807").major, i64::MAX);
        assert!(Version::parse("9223372036854775808").is_err());
    }

    #[test]
    fn orders_as_compare_does() {
        let cases = [
            ("1.2.3", "1.2.3", Equal),
            ("v1.2.3", "1.2.3", Equal),
            ("1.2.3+a", "1.2.3+b", Equal),
            ("1.2.4", "1.2.3", Greater),
            ("1.10.0", "1.9.0", Greater),
            ("0.17.0", "v0.17.0", Equal),
            ("v1.2.6", "v0.17.0", Greater),
            ("v0.16.2", "v0.17.0", Less),
            // A prerelease sorts below its release.
            ("0.17.0-rc1", "0.17.0", Less),
            ("1.0.0", "1.0.0-alpha", Greater),
            // The semver.org precedence example.
            ("1.0.0-alpha", "1.0.0-alpha.1", Less),
            ("1.0.0-alpha.1", "1.0.0-alpha.beta", Less),
            ("1.0.0-alpha.beta", "1.0.0-beta", Less),
            ("1.0.0-beta", "1.0.0-beta.2", Less),
            ("1.0.0-beta.2", "1.0.0-beta.11", Less),
            ("1.0.0-beta.11", "1.0.0-rc.1", Less),
            ("1.0.0-rc.1", "1.0.0", Less),
            // Bytewise words: upper case first.
            ("1.0.0-RC", "1.0.0-rc", Less),
            ("1.0.0-rc10", "1.0.0-rc9", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(v(a).compare(&v(b)), want, "{a} vs {b}");
            assert_eq!(v(b).compare(&v(a)), want.reverse(), "{b} vs {a}");
        }
        // The Go quirk: equal numbers spelt differently are "less" both ways.
        assert_eq!(v("1.0.0-01").compare(&v("1.0.0-1")), Less);
        assert_eq!(v("1.0.0-1").compare(&v("1.0.0-01")), Less);
    }

    #[test]
    fn the_plugins_decision() {
        let min = v("v0.17.0");
        assert_eq!(plugin_verdict(&min, "v1.2.6"), PluginVerdict::Accepted);
        assert_eq!(plugin_verdict(&min, "v0.17.0"), PluginVerdict::Accepted);
        assert_eq!(plugin_verdict(&min, "v0.17.0-rc1"), PluginVerdict::TooOld);
        assert_eq!(plugin_verdict(&min, "v0.16.9"), PluginVerdict::TooOld);
        for dev in ["", "master", "dev", "dev-7bc1f7a"] {
            assert_eq!(
                plugin_verdict(&min, dev),
                PluginVerdict::DevBuild,
                "{dev:?}"
            );
        }
        assert!(matches!(
            plugin_verdict(&min, "custom-build"),
            PluginVerdict::Unparsable(_)
        ));
        assert!(matches!(
            plugin_verdict(&min, "V1.2.6"),
            PluginVerdict::Unparsable(_)
        ));
    }
}
