//! A real ICE agent (webrtc-ice), controlling, with the advertised UDP candidates as remote
//! candidates: what a browser joining a call would do. Its outcome is recorded, not trusted:
//! the verdict rests on the per-candidate checks of `udp.rs`.

use probe_proto::report::AgentPair;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use webrtc_ice::agent::agent_config::AgentConfig;
use webrtc_ice::agent::Agent;
use webrtc_ice::candidate::candidate_base::CandidateBaseConfig;
use webrtc_ice::candidate::candidate_host::CandidateHostConfig;
use webrtc_ice::candidate::{Candidate, CandidateType};
use webrtc_ice::mdns::MulticastDnsMode;
use webrtc_ice::network_type::NetworkType;
use webrtc_ice::state::ConnectionState;
use webrtc_ice::udp_network::UDPNetwork;

/// Closing the agent should be instant; never let it hold the run.
const CLOSE_BOUND: Duration = Duration::from_millis(500);

pub struct AgentOutcome {
    pub state: String,
    pub pairs: Vec<AgentPair>,
    pub selected: Option<AgentPair>,
}

impl AgentOutcome {
    pub(super) fn only(state: String) -> Self {
        Self {
            state,
            pairs: Vec::new(),
            selected: None,
        }
    }
}

/// Runs the agent until it connects or `bound` elapses.
pub async fn run(remotes: &[SocketAddr], ufrag: &str, pwd: &str, bound: Duration) -> AgentOutcome {
    if remotes.is_empty() {
        return AgentOutcome::only("not run: no UDP candidate advertised".into());
    }
    let agent = match Agent::new(config(remotes)).await {
        Ok(a) => Arc::new(a),
        Err(e) => {
            tracing::debug!("ICE agent: {e}");
            return AgentOutcome::only("error (details in the client's debug log)".into());
        }
    };
    let state = Arc::new(Mutex::new(ConnectionState::New));
    let seen = state.clone();
    agent.on_connection_state_change(Box::new(move |s: ConnectionState| {
        *seen.lock().unwrap_or_else(|p| p.into_inner()) = s;
        Box::pin(async {})
    }));
    // Gathering refuses to start without a handler; local candidates need not be sent anywhere.
    agent.on_candidate(Box::new(|_| Box::pin(async {})));
    add_remotes(&agent, remotes);
    let outcome = match agent.gather_candidates() {
        Err(e) => {
            tracing::debug!("ICE agent: {e}");
            AgentOutcome::only("error (details in the client's debug log)".into())
        }
        Ok(()) => {
            let (_cancel_tx, cancel_rx) = mpsc::channel(1);
            let dial = agent.dial(cancel_rx, ufrag.to_owned(), pwd.to_owned());
            let dialled = match tokio::time::timeout(bound, dial).await {
                Ok(Err(e)) => {
                    tracing::info!("ICE agent: {e}");
                    false
                }
                Ok(Ok(_conn)) => true,
                Err(_) => {
                    tracing::info!("ICE agent did not connect within {bound:?}");
                    false
                }
            };
            let mut st = *state.lock().unwrap_or_else(|p| p.into_inner());
            // dial returns once the agent is connected, but the state callback runs on the
            // agent's own task and may not have run yet: a later state (disconnected, failed)
            // is kept, an earlier one is not.
            if dialled && matches!(st, ConnectionState::New | ConnectionState::Checking) {
                st = ConnectionState::Connected;
            }
            collect(&agent, st.to_string().to_lowercase()).await
        }
    };
    if tokio::time::timeout(CLOSE_BOUND, agent.close())
        .await
        .is_err()
    {
        tracing::debug!("ICE agent close timed out");
    }
    outcome
}

/// A controlling agent with host candidates only, on the address families of `remotes`.
fn config(remotes: &[SocketAddr]) -> AgentConfig {
    let mut network_types = Vec::new();
    if remotes.iter().any(SocketAddr::is_ipv4) {
        network_types.push(NetworkType::Udp4);
    }
    if remotes.iter().any(SocketAddr::is_ipv6) {
        network_types.push(NetworkType::Udp6);
    }
    AgentConfig {
        network_types,
        // Host candidates only: no STUN/TURN server is configured, as in a browser whose
        // Calls config has none; mDNS would only add noise on the user's LAN.
        candidate_types: vec![CandidateType::Host],
        udp_network: UDPNetwork::Ephemeral(Default::default()),
        multicast_dns_mode: MulticastDnsMode::Disabled,
        is_controlling: true,
        check_interval: Duration::from_millis(100),
        // Conclude "failed" inside the bound (2.5 s of checking) instead of pion's 30 s, so the
        // recorded state says what a browser would end with.
        disconnected_timeout: Some(Duration::from_millis(1000)),
        failed_timeout: Some(Duration::from_millis(1500)),
        ..Default::default()
    }
}

/// The advertised UDP candidates as the agent's remote host candidates.
fn add_remotes(agent: &Agent, remotes: &[SocketAddr]) {
    for r in remotes {
        let c = CandidateHostConfig {
            base_config: CandidateBaseConfig {
                network: "udp".into(),
                address: r.ip().to_string(),
                port: r.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host();
        match c {
            Ok(c) => {
                let c: Arc<dyn Candidate + Send + Sync> = Arc::new(c);
                if let Err(e) = agent.add_remote_candidate(&c) {
                    tracing::warn!("ICE agent refused remote candidate {r}: {e}");
                }
            }
            Err(e) => tracing::warn!("cannot make a remote candidate of {r}: {e}"),
        }
    }
}

async fn collect(agent: &Agent, state: String) -> AgentOutcome {
    let mut cands: HashMap<String, (String, String)> = HashMap::new();
    for c in agent
        .get_local_candidates_stats()
        .await
        .into_iter()
        .chain(agent.get_remote_candidates_stats().await)
    {
        cands.insert(c.id, (addr(&c.ip, c.port), c.candidate_type.to_string()));
    }
    let pairs: Vec<AgentPair> = agent
        .get_candidate_pairs_stats()
        .await
        .into_iter()
        .map(|p| {
            let (local, _) = cands
                .get(&p.local_candidate_id)
                .cloned()
                .unwrap_or_default();
            let (remote, remote_type) = cands
                .get(&p.remote_candidate_id)
                .cloned()
                .unwrap_or_default();
            AgentPair {
                local,
                remote,
                remote_type,
                state: p.state.to_string(),
                nominated: p.nominated,
                rtt_ms: (p.current_round_trip_time > 0.0)
                    .then(|| (p.current_round_trip_time * 1e6).round() / 1e3),
            }
        })
        .collect();
    let selected = agent.get_selected_candidate_pair().map(|sp| {
        let remote = addr(&sp.remote.address(), sp.remote.port());
        let local = addr(&sp.local.address(), sp.local.port());
        pairs
            .iter()
            .find(|p| p.remote == remote && p.local == local)
            .cloned()
            .unwrap_or(AgentPair {
                local,
                remote,
                remote_type: sp.remote.candidate_type().to_string(),
                state: "selected".into(),
                nominated: true,
                rtt_ms: None,
            })
    });
    AgentOutcome {
        state,
        pairs,
        selected,
    }
}

/// `IP:PORT` with IPv6 bracketed; a non-IP address (mDNS name) is kept as it is.
fn addr(ip: &str, port: u16) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{ip}:{port}"),
    }
}
