//! The host firewall, read from `nft -j list ruleset` (iptables-nft rules show up there too):
//! which input-path rule drops or rejects RTCD's ports. The guide's `iptables -L -n` step,
//! with the reading done for the admin.
//!
//! Evaluation is deliberately conservative: a rule counts as blocking a port only when one of
//! its conditions names that port or protocol (or it has no condition at all), so generic
//! rules such as `ct state invalid drop` are never reported. Conditions the reader does not
//! model (addresses, interfaces, conntrack state, iptables `xt` matches) make a block
//! "conditional" rather than hiding it.

use serde_json::Value;
use std::collections::HashMap;
use std::time::Instant;

use super::procnet::Proto;

/// A port RTCD needs open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub proto: Proto,
    pub port: u16,
    /// What the port is for, in the report's words.
    pub what: &'static str,
}

impl Target {
    pub fn label(&self) -> String {
        let p = match self.proto {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        };
        format!("{}/{p}", self.port)
    }

    fn proto_name(&self) -> &'static str {
        match self.proto {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }
}

/// A place in the ruleset that drops a target's packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub target: Target,
    pub family: String,
    pub table: String,
    pub chain: String,
    /// The rule as nft would print it, and its handle; `None` when the chain's policy drops.
    pub rule: Option<(String, u64)>,
    /// Only for some packets (the rule also tests things not modelled here, e.g. addresses).
    pub conditional: bool,
}

/// Hooks on the path of packets addressed to this host.
const INPUT_HOOKS: [&str; 3] = ["ingress", "prerouting", "input"];
/// Chains followed through jump/goto, at most this deep (nft itself allows 16).
const MAX_DEPTH: usize = 16;

type Key = (String, String, String);

struct Ruleset<'a> {
    chains: Vec<(Key, &'a Value)>,
    rules: HashMap<Key, Vec<&'a Value>>,
    sets: HashMap<Key, &'a Value>,
}

/// Why the ruleset could not be read; the check is then skipped with this reason.
pub fn list_ruleset(deadline: Instant) -> Result<Value, String> {
    let Some(nft) = super::cmd::find_program("nft") else {
        return Err("nft is not installed, so the nftables ruleset cannot be read (iptables-legacy rules are not read either); check the firewall by hand with `iptables -L -n`".into());
    };
    let mut cmd = std::process::Command::new(nft);
    cmd.args(["-j", "list", "ruleset"]);
    let out =
        super::cmd::run(cmd, deadline).map_err(|e| format!("`nft -j list ruleset` failed: {e}"))?;
    if !out.success {
        let why = out
            .stderr
            .lines()
            .next()
            .unwrap_or("no error text")
            .trim()
            .to_string();
        let hint = if why.contains("Operation not permitted") || why.contains("ermission") {
            " — run the doctor as root to read the firewall"
        } else {
            ""
        };
        return Err(format!("`nft -j list ruleset` failed: {why}{hint}"));
    }
    serde_json::from_str(&out.stdout)
        .map_err(|e| format!("`nft -j list ruleset` printed something that is not JSON: {e}"))
}

/// Every block of every target, in ruleset order.
pub fn find_blocks(ruleset: &Value, targets: &[Target]) -> Result<Vec<Block>, String> {
    let items = ruleset
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("the nft JSON has no \"nftables\" array")?;
    let mut rs = Ruleset {
        chains: Vec::new(),
        rules: HashMap::new(),
        sets: HashMap::new(),
    };
    let key = |o: &Value, table_field: &str, name_field: &str| -> Option<Key> {
        Some((
            o.get("family")?.as_str()?.to_string(),
            o.get(table_field)?.as_str()?.to_string(),
            o.get(name_field)?.as_str()?.to_string(),
        ))
    };
    for item in items {
        if let Some(c) = item.get("chain") {
            if let Some(k) = key(c, "table", "name") {
                rs.chains.push((k, c));
            }
        } else if let Some(r) = item.get("rule") {
            if let Some(k) = key(r, "table", "chain") {
                rs.rules.entry(k).or_default().push(r);
            }
        } else if let Some(s) = item.get("set").or_else(|| item.get("map")) {
            if let Some(k) = key(s, "table", "name") {
                rs.sets.insert(k, s);
            }
        }
    }
    let mut blocks = Vec::new();
    for t in targets {
        for (k, c) in &rs.chains {
            let hook = c.get("hook").and_then(Value::as_str).unwrap_or_default();
            let family_ok = matches!(k.0.as_str(), "ip" | "ip6" | "inet" | "netdev");
            if !family_ok || !INPUT_HOOKS.contains(&hook) {
                continue;
            }
            let mut side = Vec::new();
            match rs.eval(k, t, 0, false, &mut side) {
                Flow::Accept => {}
                Flow::Block(b) => side.push(b),
                Flow::Continue => {
                    if c.get("policy").and_then(Value::as_str) == Some("drop") {
                        side.push(Block {
                            target: *t,
                            family: k.0.clone(),
                            table: k.1.clone(),
                            chain: k.2.clone(),
                            rule: None,
                            conditional: false,
                        });
                    }
                }
            }
            blocks.extend(side);
        }
    }
    Ok(blocks)
}

enum Flow {
    Accept,
    Block(Block),
    /// Fell off the end of the chain (or `return`).
    Continue,
}

/// What a `match` tells about a target's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cond {
    /// True, and it tests the target's port or protocol.
    Targeted,
    /// Never true for the target's packets.
    False,
    /// Depends on things not modelled (addresses, interfaces, state).
    Unknown,
}

enum Verdict {
    Accept,
    Drop,
    Jump(String),
    Goto(String),
    Return,
    None,
}

impl Ruleset<'_> {
    /// Walks `chain` for a new packet to the target. Blocks behind unmodelled conditions go to
    /// `side`; the returned flow is what happens to a packet that meets no such condition.
    fn eval(
        &self,
        chain: &Key,
        t: &Target,
        depth: usize,
        conditional: bool,
        side: &mut Vec<Block>,
    ) -> Flow {
        if depth > MAX_DEPTH {
            return Flow::Continue;
        }
        for rule in self.rules.get(chain).into_iter().flatten() {
            let exprs: &[Value] = rule
                .get("expr")
                .and_then(Value::as_array)
                .map_or(&[], Vec::as_slice);
            let mut conds = Vec::new();
            let mut verdict = Verdict::None;
            for e in exprs {
                if let Some(m) = e.get("match") {
                    conds.push(self.cond(chain, m, t));
                } else if e.get("xt").is_some() || e.get("limit").is_some() {
                    conds.push(Cond::Unknown);
                } else if e.get("accept").is_some() {
                    verdict = Verdict::Accept;
                } else if e.get("drop").is_some() || e.get("reject").is_some() {
                    verdict = Verdict::Drop;
                } else if let Some(j) = e.get("jump") {
                    verdict = Verdict::Jump(target_name(j));
                } else if let Some(g) = e.get("goto") {
                    verdict = Verdict::Goto(target_name(g));
                } else if e.get("return").is_some() {
                    verdict = Verdict::Return;
                }
            }
            if conds.contains(&Cond::False) {
                continue;
            }
            let unknown = conditional || conds.contains(&Cond::Unknown);
            let targeted = conds.contains(&Cond::Targeted);
            match verdict {
                Verdict::Accept if !unknown => return Flow::Accept,
                Verdict::Drop if conds.is_empty() || targeted => {
                    let b = Block {
                        target: *t,
                        family: chain.0.clone(),
                        table: chain.1.clone(),
                        chain: chain.2.clone(),
                        rule: Some((
                            render(exprs),
                            rule.get("handle").and_then(Value::as_u64).unwrap_or(0),
                        )),
                        conditional: unknown,
                    };
                    if !unknown {
                        return Flow::Block(b);
                    }
                    side.push(b);
                }
                Verdict::Jump(ref to) | Verdict::Goto(ref to) => {
                    let callee = (chain.0.clone(), chain.1.clone(), to.clone());
                    match self.eval(&callee, t, depth + 1, unknown, side) {
                        Flow::Accept if !unknown => return Flow::Accept,
                        Flow::Block(b) if !unknown => return Flow::Block(b),
                        Flow::Block(b) => side.push(b),
                        Flow::Continue if !unknown && matches!(verdict, Verdict::Goto(_)) => {
                            return Flow::Continue
                        }
                        _ => {}
                    }
                }
                Verdict::Return if !unknown => return Flow::Continue,
                _ => {}
            }
        }
        Flow::Continue
    }

    fn cond(&self, chain: &Key, m: &Value, t: &Target) -> Cond {
        let op = m.get("op").and_then(Value::as_str).unwrap_or("==");
        let (Some(left), Some(right)) = (m.get("left"), m.get("right")) else {
            return Cond::Unknown;
        };
        let negate = match op {
            "==" | "in" => false,
            "!=" => true,
            _ => return Cond::Unknown,
        };
        let verdict = |hit: Option<bool>| match hit.map(|h| h != negate) {
            Some(true) => Cond::Targeted,
            Some(false) => Cond::False,
            None => Cond::Unknown,
        };
        if let Some(p) = left.get("payload") {
            let proto = p
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let field = p.get("field").and_then(Value::as_str).unwrap_or_default();
            // `udp dport …` only ever matches UDP packets, whatever the operator.
            if matches!(proto, "udp" | "tcp" | "sctp" | "dccp" | "udplite")
                && proto != t.proto_name()
            {
                return Cond::False;
            }
            return match (proto, field) {
                ("udp" | "tcp" | "th", "dport") => {
                    verdict(self.contains(chain, right, &|v| port_hit(v, t.port)))
                }
                ("ip", "protocol") | ("ip6", "nexthdr") => {
                    verdict(self.contains(chain, right, &|v| proto_hit(v, t)))
                }
                _ => Cond::Unknown,
            };
        }
        if let Some(meta) = left.get("meta") {
            if meta.get("key").and_then(Value::as_str) == Some("l4proto") {
                return verdict(self.contains(chain, right, &|v| proto_hit(v, t)));
            }
        }
        Cond::Unknown
    }

    /// Whether the right-hand side (value, anonymous set, range, `@named` set) holds a value
    /// `hit` accepts; `None` when that cannot be told.
    fn contains(
        &self,
        chain: &Key,
        right: &Value,
        hit: &dyn Fn(&Value) -> Option<bool>,
    ) -> Option<bool> {
        if let Some(name) = right.as_str().and_then(|s| s.strip_prefix('@')) {
            let set = self
                .sets
                .get(&(chain.0.clone(), chain.1.clone(), name.to_string()))?;
            let elems = set
                .get("elem")
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice);
            return any_hit(elems, hit);
        }
        if let Some(elems) = right.get("set").and_then(Value::as_array) {
            return any_hit(elems, hit);
        }
        if let Some(elems) = right.as_array() {
            return any_hit(elems, hit);
        }
        hit(right)
    }
}

fn any_hit(elems: &[Value], hit: &dyn Fn(&Value) -> Option<bool>) -> Option<bool> {
    let mut unknown = false;
    for e in elems {
        // Set elements with timeouts or counters are wrapped: {"elem": {"val": 8443, …}}.
        let e = e.get("elem").and_then(|x| x.get("val")).unwrap_or(e);
        match hit(e) {
            Some(true) => return Some(true),
            None => unknown = true,
            Some(false) => {}
        }
    }
    if unknown {
        None
    } else {
        Some(false)
    }
}

fn port_hit(v: &Value, port: u16) -> Option<bool> {
    let num = |v: &Value| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    };
    if let Some(r) = v.get("range").and_then(Value::as_array) {
        let (lo, hi) = (num(r.first()?)?, num(r.get(1)?)?);
        return Some((lo..=hi).contains(&u64::from(port)));
    }
    // A service name ("https") would need /etc/services: unknown.
    num(v).map(|n| n == u64::from(port))
}

fn proto_hit(v: &Value, t: &Target) -> Option<bool> {
    let number = match t.proto {
        Proto::Udp => 17,
        Proto::Tcp => 6,
    };
    match v {
        Value::String(s) => Some(s == t.proto_name() || s.parse::<u64>().ok() == Some(number)),
        Value::Number(n) => Some(n.as_u64() == Some(number)),
        _ => None,
    }
}

fn target_name(v: &Value) -> String {
    v.get("target")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A rule in nft's own syntax, near enough to recognise it in `nft -a list ruleset`.
pub fn render(exprs: &[Value]) -> String {
    let mut words = Vec::new();
    for e in exprs {
        let Some((k, v)) = e.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        words.push(match k.as_str() {
            "match" => {
                let op = v.get("op").and_then(Value::as_str).unwrap_or("==");
                let left = v.get("left").map(render_value).unwrap_or_default();
                let right = v.get("right").map(render_value).unwrap_or_default();
                if op == "==" || op == "in" {
                    format!("{left} {right}")
                } else {
                    format!("{left} {op} {right}")
                }
            }
            "jump" | "goto" => format!("{k} {}", target_name(v)),
            "reject" => match v.get("type").and_then(Value::as_str) {
                Some(ty) => format!("reject with {ty}"),
                None => "reject".into(),
            },
            other => other.to_string(),
        });
    }
    words.join(" ")
}

fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => a.iter().map(render_value).collect::<Vec<_>>().join(","),
        Value::Object(o) => {
            if let Some(p) = o.get("payload") {
                let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
                format!("{} {}", s("protocol"), s("field"))
            } else if let Some(m) = o.get("meta") {
                let key = m.get("key").and_then(Value::as_str).unwrap_or("?");
                if matches!(key, "iif" | "oif" | "iifname" | "oifname" | "mark") {
                    key.to_string()
                } else {
                    format!("meta {key}")
                }
            } else if let Some(c) = o.get("ct") {
                format!("ct {}", c.get("key").and_then(Value::as_str).unwrap_or("?"))
            } else if let Some(s) = o.get("set").and_then(Value::as_array) {
                format!(
                    "{{ {} }}",
                    s.iter().map(render_value).collect::<Vec<_>>().join(", ")
                )
            } else if let Some(r) = o.get("range").and_then(Value::as_array) {
                r.iter().map(render_value).collect::<Vec<_>>().join("-")
            } else if let Some(p) = o.get("prefix") {
                format!(
                    "{}/{}",
                    p.get("addr").map(render_value).unwrap_or_default(),
                    p.get("len").map(render_value).unwrap_or_default()
                )
            } else {
                o.keys().next().cloned().unwrap_or_default()
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ICE_UDP: Target = Target {
        proto: Proto::Udp,
        port: 8443,
        what: "ICE",
    };
    const ICE_TCP: Target = Target {
        proto: Proto::Tcp,
        port: 8443,
        what: "ICE TCP",
    };
    const API: Target = Target {
        proto: Proto::Tcp,
        port: 8045,
        what: "API",
    };

    /// Recorded with `nft -j list ruleset` (nftables 1.0.6) from a namespace loaded with a
    /// policy-drop input chain, a named port set, an anonymous set, a range, a jump, and an
    /// `ip` table whose prerouting chain drops 8443/udp from one source.
    fn recorded() -> Value {
        serde_json::from_str(include_str!("testdata/nft-ruleset.json")).unwrap()
    }

    fn describe(blocks: &[Block]) -> Vec<String> {
        blocks
            .iter()
            .map(|b| {
                format!(
                    "{} {} {} {} {} {}",
                    b.target.label(),
                    b.family,
                    b.table,
                    b.chain,
                    b.rule
                        .as_ref()
                        .map_or("policy".to_string(), |(r, h)| format!("{r} #{h}")),
                    if b.conditional { "cond" } else { "all" }
                )
            })
            .collect()
    }

    #[test]
    fn recorded_ruleset() {
        let got = describe(&find_blocks(&recorded(), &[ICE_UDP, ICE_TCP, API]).unwrap());
        assert_eq!(
            got,
            vec![
                // The named set @icep holds 8443; the jump to `extra` (which accepts) comes later.
                "8443/udp inet filter input udp dport @icep drop #9 all",
                "8443/udp ip t2 pre udp dport 8443 ip saddr 203.0.113.5 drop #3 cond",
                "8443/tcp inet filter input tcp dport { 8045, 8443 } reject with tcp reset #11 all",
                // 8045 is accepted from 198.51.100.0/24 only, then rejected for everyone else.
                "8045/tcp inet filter input tcp dport { 8045, 8443 } reject with tcp reset #11 all",
            ]
        );
    }

    fn rules(chain_policy: &str, rules: &[Value]) -> Value {
        let mut items = vec![
            serde_json::json!({"chain": {"family": "inet", "table": "t", "name": "input", "hook": "input", "type": "filter", "prio": 0, "policy": chain_policy}}),
            serde_json::json!({"chain": {"family": "inet", "table": "t", "name": "sub"}}),
        ];
        for (i, r) in rules.iter().enumerate() {
            let mut r = r.clone();
            r["family"] = "inet".into();
            r["table"] = "t".into();
            if r.get("chain").is_none() {
                r["chain"] = "input".into();
            }
            r["handle"] = (i as u64 + 10).into();
            items.push(serde_json::json!({ "rule": r }));
        }
        serde_json::json!({ "nftables": items })
    }

    fn dport(proto: &str, right: Value) -> Value {
        serde_json::json!({"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "dport"}}, "right": right}})
    }

    #[test]
    fn policy_drop_without_accept_blocks_and_accept_clears_it() {
        let rs = rules("drop", &[]);
        let b = find_blocks(&rs, &[ICE_UDP]).unwrap();
        assert_eq!(describe(&b), vec!["8443/udp inet t input policy all"]);
        let rs = rules(
            "drop",
            &[serde_json::json!({"expr": [dport("udp", 8443.into()), {"accept": null}]})],
        );
        assert!(find_blocks(&rs, &[ICE_UDP]).unwrap().is_empty());
        // Accepting 8443/tcp does not open 8443/udp.
        let rs = rules(
            "drop",
            &[serde_json::json!({"expr": [dport("tcp", 8443.into()), {"accept": null}]})],
        );
        assert_eq!(find_blocks(&rs, &[ICE_UDP]).unwrap().len(), 1);
    }

    #[test]
    fn generic_drops_are_not_reported() {
        let rs = rules(
            "accept",
            &[
                serde_json::json!({"expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "invalid"}}, {"drop": null}]}),
                serde_json::json!({"expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "192.0.2.9"}}, {"drop": null}]}),
                serde_json::json!({"expr": [dport("udp", serde_json::json!({"range": [9000, 9100]})), {"drop": null}]}),
                serde_json::json!({"expr": [{"match": {"op": "!=", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 8443}}, {"drop": null}]}),
            ],
        );
        assert!(find_blocks(&rs, &[ICE_UDP, API]).unwrap().is_empty());
    }

    #[test]
    fn protocol_drops_jumps_and_iptables_nft_shapes() {
        // iptables-nft `-p udp -j DROP` in a user chain reached by jump.
        let rs = rules(
            "accept",
            &[
                serde_json::json!({"expr": [{"jump": {"target": "sub"}}]}),
                serde_json::json!({"chain": "sub", "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"}}, {"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]}),
            ],
        );
        let b = find_blocks(&rs, &[ICE_UDP, API]).unwrap();
        assert_eq!(
            describe(&b),
            vec!["8443/udp inet t sub meta l4proto udp counter drop #11 all"]
        );
        // An `xt` match (e.g. iptables multiport) makes the block conditional, never hidden.
        let rs = rules(
            "accept",
            &[
                serde_json::json!({"expr": [dport("tcp", 8045.into()), {"xt": {"type": "match", "name": "conntrack"}}, {"reject": null}]}),
            ],
        );
        let b = find_blocks(&rs, &[API]).unwrap();
        assert_eq!(
            describe(&b),
            vec!["8045/tcp inet t input tcp dport 8045 xt reject #10 cond"]
        );
    }

    #[test]
    fn output_and_forward_chains_do_not_count() {
        let rs = serde_json::json!({"nftables": [
            {"chain": {"family": "inet", "table": "t", "name": "out", "hook": "output", "type": "filter", "prio": 0, "policy": "drop"}},
            {"chain": {"family": "inet", "table": "t", "name": "fwd", "hook": "forward", "type": "filter", "prio": 0, "policy": "drop"}},
            {"rule": {"family": "inet", "table": "t", "chain": "fwd", "handle": 3, "expr": [dport("udp", 8443.into()), {"drop": null}]}}
        ]});
        assert!(find_blocks(&rs, &[ICE_UDP]).unwrap().is_empty());
        assert!(find_blocks(&serde_json::json!({}), &[ICE_UDP]).is_err());
    }
}
