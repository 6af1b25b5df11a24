//! One test per scenario file in `tests/scenarios/`.  Each builds its own
//! namespaces, runs the real probe-server and probe-client and checks the
//! client's JSON report (see `tests/README.md`).

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let _report = probe_tests::run_named(stringify!($name));
            }
        )*

        /// Names listed above, for the completeness check.
        const LISTED: &[&str] = &[$(stringify!($name)),*];
    };
}

scenarios!(
    clean,
    clean_default_run,
    udp_blocked,
    tcp_blocked,
    both_blocked,
    loss_up_10,
    loss_down_10,
    ice_no_override,
    ice_override_ip,
    ice_override_wrong,
    ice_override_pairs,
    ice_split_horizon,
    ice_port_map_ok,
    ice_port_map_missing,
    ice_udp_blocked_tcp,
    ice_stun_discovery,
);

/// Every `tests/scenarios/*.toml` has a test above (and vice versa).
#[test]
fn every_scenario_file_has_a_test() {
    let mut listed: Vec<String> = LISTED.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        probe_tests::scenario::scenario_names(),
        listed,
        "add the scenario to the scenarios! list in tests/tests/scenarios.rs"
    );
}
