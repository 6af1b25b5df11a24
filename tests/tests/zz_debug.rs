use std::time::Duration;
use probe_tests::*;
const NC: &str = env!("CARGO_BIN_EXE_probe-netcheck");
#[test]
fn dbg() {
    let t = Topology::nat(NatConfig::default());
    t.router.nft("add rule inet probe_nat input counter\nadd rule inet probe_nat output counter\n");
    t.router.nft("add table inet dbg\nadd chain inet dbg out { type filter hook output priority 0; }\nadd rule inet dbg out udp sport 3478 counter\nadd chain inet dbg in { type filter hook input priority 0; }\nadd rule inet dbg in udp dport 3478 counter\n");
    let echo = t.router.spawn(&[NC, "udp-echo", "203.0.113.1:3478", "1500"], Duration::from_secs(20));
    echo.stdout_capture().wait_for_line(Duration::from_secs(5), |l| l.starts_with("ready")).unwrap();
    let s = t.server.try_exec(&[NC, "udp-send", "203.0.113.1:3478", "2", "1000", "500"], Duration::from_secs(10));
    println!("{}", s.describe());
    println!("{}", echo.finish(Duration::from_secs(5)).describe());
    println!("{}", t.router.ruleset());
    println!("{}", t.router.try_exec(&["ip", "route", "show", "table", "all"], Duration::from_secs(5)).stdout);
}
