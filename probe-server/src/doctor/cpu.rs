//! RTCD's CPU use over the sample (what `top -p $(pgrep rtcd)` shows) and the host's load
//! against its cores.

/// Clock ticks (utime + stime) a process has used, from `/proc/PID/stat`.
pub fn process_ticks(pid: u32) -> Option<u64> {
    parse_stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Fields 14 and 15 of `/proc/PID/stat`, counted after the command name, which sits in
/// parentheses and may itself contain spaces and parentheses.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Ticks per second (USER_HZ).
pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// Online CPUs, from `/proc/stat` (`cpuN` lines), else what std reports.
pub fn cores() -> usize {
    let from_stat = std::fs::read_to_string("/proc/stat")
        .map(|s| {
            s.lines()
                .filter(|l| {
                    l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
                })
                .count()
        })
        .unwrap_or(0);
    if from_stat > 0 {
        from_stat
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// The 1-minute load average.
pub fn load1() -> Option<f64> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

pub fn parse_loadavg(s: &str) -> Option<f64> {
    s.split_whitespace().next()?.parse().ok()
}

/// RTCD's use as a share of the whole machine (100 % = every core busy) above which calls
/// degrade: media forwarding is latency-sensitive, so little headroom is already a problem.
pub const HIGH_SHARE_PCT: f64 = 80.0;
/// Load per core above which the host itself is overloaded.
pub const HIGH_LOAD_PER_CORE: f64 = 2.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_command_name() {
        // Recorded shape of /proc/PID/stat; the name contains ") (" and spaces.
        let stat = "4242 (rtcd) (x y) S 1 4242 4242 0 -1 4194560 1234 0 0 0 1500 250 0 0 20 0 12 0 100 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(1750));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn this_process_and_host() {
        assert!(process_ticks(std::process::id()).is_some());
        assert!(cores() >= 1);
        assert!(load1().is_some());
        assert_eq!(parse_loadavg("0.52 0.58 0.59 1/467 12345\n"), Some(0.52));
    }
}
