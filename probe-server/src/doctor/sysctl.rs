//! Socket buffer limits against the guide's values. RTCD asks for 16 MB buffers on its UDP
//! sockets; the kernel silently caps the request at `net.core.rmem_max` / `wmem_max`.

/// The guide's recommended value for all three keys.
pub const RECOMMENDED: u64 = 16_777_216;
pub const KEYS: [&str; 3] = [
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.core.optmem_max",
];

/// `(key, value)` for each key, or why it could not be read.
pub fn read() -> Vec<(&'static str, Result<u64, String>)> {
    KEYS.iter()
        .map(|k| {
            let path = format!("/proc/sys/{}", k.replace('.', "/"));
            let v = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {path}: {e}"))
                .and_then(|s| {
                    s.trim()
                        .parse()
                        .map_err(|_| format!("{path} is not a number: {s:?}"))
                });
            (*k, v)
        })
        .collect()
}

/// Keys below the recommendation.
pub fn small(values: &[(&'static str, Result<u64, String>)]) -> Vec<(&'static str, u64)> {
    values
        .iter()
        .filter_map(|(k, v)| match v {
            Ok(n) if *n < RECOMMENDED => Some((*k, *n)),
            _ => None,
        })
        .collect()
}

/// The exact commands that fix it now and after a reboot.
/// `restart`: how the media server picks the new limits up (its sockets ask at start).
pub fn fix_text(small: &[(&'static str, u64)], restart: &str) -> String {
    let now: Vec<String> = small
        .iter()
        .map(|(k, _)| format!("{k}={RECOMMENDED}"))
        .collect();
    let file: Vec<String> = small
        .iter()
        .map(|(k, _)| format!("{k} = {RECOMMENDED}\\n"))
        .collect();
    format!(
        "as root: `sysctl -w {}`; to keep it after a reboot: `printf '{}' > /etc/sysctl.d/90-rtcd.conf && sysctl --system`; then {restart} so its sockets get the larger buffers",
        now.join(" "),
        file.concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_only_small_values_and_fix_names_them() {
        let v = vec![
            ("net.core.rmem_max", Ok(212_992)),
            ("net.core.wmem_max", Ok(RECOMMENDED)),
            ("net.core.optmem_max", Err("cannot read".to_string())),
        ];
        let s = small(&v);
        assert_eq!(s, vec![("net.core.rmem_max", 212_992)]);
        let fix = fix_text(&s, "restart RTCD");
        assert!(
            fix.contains("sysctl -w net.core.rmem_max=16777216"),
            "{fix}"
        );
        assert!(fix.contains("/etc/sysctl.d/"), "{fix}");
        assert!(!fix.contains("wmem_max"), "{fix}");
    }

    #[test]
    fn reads_this_host() {
        let v = read();
        assert_eq!(v.len(), 3);
        assert!(v[0].1.is_ok(), "{v:?}");
    }
}
