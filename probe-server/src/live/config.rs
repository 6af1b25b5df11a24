//! What RTCD advertises right now, for the live hello: RTCD's configuration and environment
//! read as `probe-server` (serve) reads them, with `--rtcd-pid` naming the process whose
//! environment counts (a container's RTCD is not found by the port search from the host).

use super::LiveArgs;
use crate::cli::ServeArgs;
use probe_proto::calls::Deployment;
use probe_proto::live::HelloInfo;
use probe_proto::rtcd::{self, Advertised, RtcdConfig};
use std::time::{Duration, Instant};

/// The media server's configuration and whose it is: the Calls plugin's settings
/// (`--calls-config`, `--mattermost`, read as `probe-server` reads them) or RTCD's.
pub fn load(args: &LiveArgs) -> Result<(RtcdConfig, Deployment), String> {
    let (mut cfg, deployment) = if args.calls.wanted() {
        let mut serve = serve_defaults();
        serve.calls = args.calls.clone();
        serve.ice_host_override = args.ice_host_override.clone();
        let l = crate::calls::load(&serve)?;
        crate::ice::log_lines(&l.lines);
        (l.cfg, l.deployment)
    } else {
        (load_rtcd(args)?, Deployment::Rtcd)
    };
    // Server-side TURN counts only where it allocates from this host (relay.rs).
    crate::relay::check_into(&mut cfg);
    Ok((cfg, deployment))
}

/// RTCD's configuration: the file (if any), then RTCD's `RTCD_*` environment.
fn load_rtcd(args: &LiveArgs) -> Result<RtcdConfig, String> {
    let mut serve = serve_defaults();
    serve.rtcd_config = args.rtcd_config.clone();
    serve.ice_host_override = args.ice_host_override.clone();
    let Some(pid) = args.rtcd_pid else {
        let (cfg, line) = crate::ice::load_config(&serve)?;
        line.log();
        return Ok(cfg);
    };
    // With --rtcd-pid the environment is that process's, whatever the port search finds.
    let mut no_file = serve.clone();
    no_file.rtcd_config = None;
    let (mut cfg, _) = match &args.rtcd_config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "cannot read RTCD's configuration {}: {e}; check the path",
                    path.display()
                )
            })?;
            let cfg =
                RtcdConfig::from_toml_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            (cfg, ())
        }
        None => (RtcdConfig::default(), ()),
    };
    let environ = std::fs::read(format!("/proc/{pid}/environ")).map_err(|e| {
        format!("cannot read /proc/{pid}/environ: {e}; give RTCD's pid (docker inspect -f '{{{{.State.Pid}}}}' CONTAINER) and run as root")
    })?;
    let vars: Vec<(String, String)> = crate::rtcd_env::parse_environ(&environ)
        .into_iter()
        .filter(|(k, _)| k.starts_with("RTCD_"))
        .collect();
    cfg.apply_env(&|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        .map_err(|e| format!("{e} (the variable is in the environment of pid {pid})"))?;
    tracing::info!(
        pid,
        vars = vars.len(),
        "RTCD's environment read from /proc/{pid}/environ"
    );
    if let Some(v) = &args.ice_host_override {
        cfg.ice_host_override = v.clone();
    }
    drop(no_file);
    Ok(cfg)
}

/// The serve defaults (and their PROBE_SERVER_* variables), for the shared config readers and
/// the test page's limits.
pub fn serve_defaults() -> ServeArgs {
    use clap::Parser;
    crate::cli::Cli::try_parse_from(["probe-server"])
        .map(|c| c.serve)
        .expect("the serve defaults parse")
}

/// RTCD's ICE ports from its configuration.
pub fn ports(cfg: &RtcdConfig) -> Result<(u16, u16), String> {
    let p = |v: i64, name: &str| {
        u16::try_from(v)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("RTCD's {name} is {v}, not a port; fix RTCD's configuration"))
    };
    Ok((
        p(cfg.ice_port_udp, "ice_port_udp")?,
        p(cfg.ice_port_tcp, "ice_port_tcp")?,
    ))
}

/// What RTCD advertises with this configuration on this host (after setns: RTCD's namespace).
pub fn hello(
    cfg: &RtcdConfig,
    rules: rtcd::PionRules,
    deployment: &Deployment,
) -> Result<(HelloInfo, Advertised), String> {
    let (udp, tcp) = ports(cfg)?;
    let locals = crate::interfaces::local_addrs()
        .map_err(|e| format!("cannot list this host's interfaces: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let (adv, _) = crate::rtcd_io::advertise(cfg, &locals, udp, tcp, rules, deadline);
    let adv = adv.map_err(|e| e.to_string())?;
    let offer = crate::ice::offer(cfg, &adv, udp);
    let info = HelloInfo {
        rtcd_port_udp: udp,
        rtcd_port_tcp: tcp,
        override_value: offer.override_value.unwrap_or_default(),
        override_form: offer.override_form,
        candidates: offer.candidates,
        deployment: deployment.clone(),
        ..HelloInfo::default()
    };
    Ok((info, adv))
}
