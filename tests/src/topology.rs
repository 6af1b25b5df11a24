//! Three-namespace topologies: client — router — server.
//!
//! "routed":
//! ```text
//! client eth0 198.51.100.2/24 ── rt-client 198.51.100.1/24 [router] rt-server 203.0.113.1/24 ── eth0 203.0.113.2/24 server
//!   default via 198.51.100.1                         ip_forward=1               default via 203.0.113.1
//! ```
//! The client dials 203.0.113.2.
//!
//! "nat":
//! ```text
//! client eth0 198.51.100.2/24 ── rt-client 198.51.100.1/24 [router] rt-server 172.31.1.1/24 ── eth0 172.31.1.2/24 server
//!   default via 198.51.100.1        + 203.0.113.1/32 (router services, e.g. STUN)      default via 172.31.1.1
//!                                   + 203.0.113.10/32 (public IP, DNAT → 172.31.1.2)
//! ```
//! The client dials 203.0.113.10; packets it sends to 172.31.0.0/16 are
//! dropped by the router unless they were DNATed (no route on the
//! "internet").  The server's outbound traffic is SNATed to 203.0.113.10,
//! also toward services in the router ns on 203.0.113.1 — which must bind
//! 203.0.113.1 explicitly (e.g. coturn `--listening-ip 203.0.113.1`), not
//! 0.0.0.0, or their replies to the server are lost (see
//! [`crate::nft::nat_script`]).
//!
//! In both, IPv6 is disabled and each namespace's resolv.conf points at
//! 127.0.0.1 (see [`Netns::isolate_dns`]): names for tests go in hosts files.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::netns::{veth, Netns};
use crate::nft::{self, Chain};

/// Client interface (client ns).
pub const CLIENT_IF: &str = "eth0";
/// Router interface toward the client.
pub const ROUTER_CLIENT_IF: &str = "rt-client";
/// Router interface toward the server.
pub const ROUTER_SERVER_IF: &str = "rt-server";
/// Server interface (server ns).
pub const SERVER_IF: &str = "eth0";

/// Client address (both topologies).
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// Router address on the client side (client's gateway).
pub const ROUTER_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Router-owned public address for services run in the router ns (STUN…).
pub const ROUTER_PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// Server address in the routed topology.
pub const ROUTED_SERVER_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// Default public address of the NAT.
pub const NAT_PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// Router address on the private side (server's gateway in "nat").
pub const NAT_ROUTER_PRIVATE_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 1, 1);
/// Server address in the nat topology.
pub const NAT_SERVER_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 1, 2);
/// The private range behind the NAT.
pub const PRIVATE_NET: &str = "172.31.0.0/16";

/// Which namespace of a topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Where probe-client runs.
    Client,
    /// Between client and server; NAT and scenario drop rules live here.
    Router,
    /// Where probe-server runs.
    Server,
}

impl Role {
    /// All roles.
    pub const ALL: [Role; 3] = [Role::Client, Role::Router, Role::Server];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Router => "router",
            Role::Server => "server",
        }
    }
}

/// Transport protocol(s) of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// UDP only.
    Udp,
    /// TCP only.
    Tcp,
    /// UDP and TCP.
    #[default]
    Both,
}

/// A NAT port forward: public port on the NAT's public IP → server port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMap {
    /// udp, tcp or both (default both).
    #[serde(default)]
    pub proto: Proto,
    /// Port on the public IP.
    pub public: u16,
    /// Port on the server.
    pub private: u16,
}

/// NAT settings of the "nat" topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    /// Public address owned by the router (default 203.0.113.10; must be in
    /// 203.0.113.0/24 and not .1).
    pub public_ip: Ipv4Addr,
    /// Explicit forwards, matched first.
    pub maps: Vec<PortMap>,
    /// Forward every other port (and protocol) unchanged to the server.
    pub forward_all: bool,
}

impl Default for NatConfig {
    /// Port-preserving: everything to 203.0.113.10 goes to 172.31.1.2.
    fn default() -> Self {
        NatConfig {
            public_ip: NAT_PUBLIC_IP,
            maps: Vec::new(),
            forward_all: true,
        }
    }
}

impl NatConfig {
    /// Only the given forwards (e.g. `[PortMap { proto: Both, public: 443, private: 8443 }]`).
    pub fn ports(maps: Vec<PortMap>) -> Self {
        NatConfig {
            public_ip: NAT_PUBLIC_IP,
            maps,
            forward_all: false,
        }
    }
}

/// Kind of topology to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopologyKind {
    /// Plain routing, server on a public address.
    Routed,
    /// Server on a private address behind the router's NAT.
    Nat(NatConfig),
}

/// Three namespaces wired together.  Dropping it deletes them (processes
/// still inside are killed first).
#[derive(Debug)]
pub struct Topology {
    /// What was built.
    pub kind: TopologyKind,
    /// Client namespace.
    pub client: Netns,
    /// Router namespace.
    pub router: Netns,
    /// Server namespace.
    pub server: Netns,
    /// Client's address.
    pub client_ip: Ipv4Addr,
    /// Router's address on the client side (client's gateway).
    pub router_client_ip: Ipv4Addr,
    /// Router-owned public address for services in the router ns.
    pub router_public_ip: Ipv4Addr,
    /// Router's address on the server side (server's gateway).
    pub router_server_ip: Ipv4Addr,
    /// Address configured on the server's interface.
    pub server_ip: Ipv4Addr,
    /// Address the client dials to reach the server.
    pub server_public_ip: Ipv4Addr,
}

impl Topology {
    /// Builds `kind`.
    pub fn build(kind: TopologyKind) -> Topology {
        match kind {
            TopologyKind::Routed => Self::routed(),
            TopologyKind::Nat(cfg) => Self::nat(cfg),
        }
    }

    fn namespaces() -> (Netns, Netns, Netns) {
        let n = (
            Netns::new("client"),
            Netns::new("router"),
            Netns::new("server"),
        );
        for ns in [&n.0, &n.1, &n.2] {
            ns.isolate_dns();
        }
        n
    }

    /// The "routed" topology.
    pub fn routed() -> Topology {
        let (client, router, server) = Self::namespaces();
        veth(&client, CLIENT_IF, &router, ROUTER_CLIENT_IF);
        veth(&router, ROUTER_SERVER_IF, &server, SERVER_IF);
        client.ip_batch(&[
            format!("addr add {CLIENT_IP}/24 dev {CLIENT_IF}"),
            format!("route add default via {ROUTER_CLIENT_IP}"),
        ]);
        router.ip_batch(&[
            format!("addr add {ROUTER_CLIENT_IP}/24 dev {ROUTER_CLIENT_IF}"),
            format!("addr add {ROUTER_PUBLIC_IP}/24 dev {ROUTER_SERVER_IF}"),
        ]);
        router.sysctl("net.ipv4.ip_forward", "1");
        server.ip_batch(&[
            format!("addr add {ROUTED_SERVER_IP}/24 dev {SERVER_IF}"),
            format!("route add default via {ROUTER_PUBLIC_IP}"),
        ]);
        Topology {
            kind: TopologyKind::Routed,
            client,
            router,
            server,
            client_ip: CLIENT_IP,
            router_client_ip: ROUTER_CLIENT_IP,
            router_public_ip: ROUTER_PUBLIC_IP,
            router_server_ip: ROUTER_PUBLIC_IP,
            server_ip: ROUTED_SERVER_IP,
            server_public_ip: ROUTED_SERVER_IP,
        }
    }

    /// The "nat" topology with `cfg`.
    pub fn nat(cfg: NatConfig) -> Topology {
        let o = cfg.public_ip.octets();
        assert!(
            o[..3] == [203, 0, 113] && cfg.public_ip != ROUTER_PUBLIC_IP,
            "NAT public IP must be in 203.0.113.0/24 and not {ROUTER_PUBLIC_IP}"
        );
        let (client, router, server) = Self::namespaces();
        veth(&client, CLIENT_IF, &router, ROUTER_CLIENT_IF);
        veth(&router, ROUTER_SERVER_IF, &server, SERVER_IF);
        client.ip_batch(&[
            format!("addr add {CLIENT_IP}/24 dev {CLIENT_IF}"),
            format!("route add default via {ROUTER_CLIENT_IP}"),
        ]);
        router.ip_batch(&[
            format!("addr add {ROUTER_CLIENT_IP}/24 dev {ROUTER_CLIENT_IF}"),
            format!("addr add {ROUTER_PUBLIC_IP}/32 dev {ROUTER_CLIENT_IF}"),
            format!("addr add {}/32 dev {ROUTER_CLIENT_IF}", cfg.public_ip),
            format!("addr add {NAT_ROUTER_PRIVATE_IP}/24 dev {ROUTER_SERVER_IF}"),
        ]);
        router.sysctl("net.ipv4.ip_forward", "1");
        router.nft(&nft::nat_script(
            &cfg,
            ROUTER_CLIENT_IF,
            ROUTER_SERVER_IF,
            PRIVATE_NET,
            NAT_SERVER_IP,
        ));
        server.ip_batch(&[
            format!("addr add {NAT_SERVER_IP}/24 dev {SERVER_IF}"),
            format!("route add default via {NAT_ROUTER_PRIVATE_IP}"),
        ]);
        let public = cfg.public_ip;
        Topology {
            kind: TopologyKind::Nat(cfg),
            client,
            router,
            server,
            client_ip: CLIENT_IP,
            router_client_ip: ROUTER_CLIENT_IP,
            router_public_ip: ROUTER_PUBLIC_IP,
            router_server_ip: NAT_ROUTER_PRIVATE_IP,
            server_ip: NAT_SERVER_IP,
            server_public_ip: public,
        }
    }

    /// The namespace playing `role`.
    pub fn ns(&self, role: Role) -> &Netns {
        match role {
            Role::Client => &self.client,
            Role::Router => &self.router,
            Role::Server => &self.server,
        }
    }

    /// Appends nft rules to `chain` of `table inet probe_test` in `role`'s ns.
    pub fn add_rules<S: AsRef<str>>(&self, role: Role, chain: Chain, rules: &[S]) {
        nft::add_rules(self.ns(role), chain, rules);
    }

    /// Router forward-chain rules (the usual way to break the path).
    pub fn router_forward<S: AsRef<str>>(&self, rules: &[S]) {
        self.add_rules(Role::Router, Chain::Forward, rules);
    }

    /// Client input-chain rules.
    pub fn client_input<S: AsRef<str>>(&self, rules: &[S]) {
        self.add_rules(Role::Client, Chain::Input, rules);
    }

    /// Server input-chain rules.
    pub fn server_input<S: AsRef<str>>(&self, rules: &[S]) {
        self.add_rules(Role::Server, Chain::Input, rules);
    }

    /// Variables for `{name}` substitution in scenario argv/rules:
    /// client_ip, router_client_ip, router_public_ip, router_server_ip,
    /// server_ip, server_public_ip, client_ns, router_ns, server_ns.
    pub fn vars(&self) -> BTreeMap<String, String> {
        let mut v = BTreeMap::new();
        v.insert("client_ip".into(), self.client_ip.to_string());
        v.insert("router_client_ip".into(), self.router_client_ip.to_string());
        v.insert("router_public_ip".into(), self.router_public_ip.to_string());
        v.insert("router_server_ip".into(), self.router_server_ip.to_string());
        v.insert("server_ip".into(), self.server_ip.to_string());
        v.insert("server_public_ip".into(), self.server_public_ip.to_string());
        for r in Role::ALL {
            v.insert(format!("{}_ns", r.name()), self.ns(r).name().to_string());
        }
        v
    }

    /// Rulesets of all three namespaces (for failure messages).
    pub fn dump_rulesets(&self) -> String {
        Role::ALL
            .iter()
            .map(|&r| {
                format!(
                    "--- nft ruleset in {} ---\n{}",
                    r.name(),
                    self.ns(r).ruleset()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
