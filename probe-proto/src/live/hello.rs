//! The live hello: what RTCD advertises right now, in a reply never larger than the padded
//! request. The body is postcard after the 16-byte head and a 2-byte body length.

use super::packet::{self, Kind, LiveError, HELLO_LEN, MAC_LEN};
use crate::msg::WireCandidate;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

const BODY_AT: usize = 18;
/// Room for the body: the reply stays within the request's [`HELLO_LEN`].
const BODY_MAX: usize = HELLO_LEN - BODY_AT - MAC_LEN;
const TEXT_MAX: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HelloInfo {
    pub rtcd_port_udp: u16,
    pub rtcd_port_tcp: u16,
    /// The hello's source as the tap saw it (the client's address after any NAT).
    pub seen_from: Option<IpAddr>,
    /// The local address of the RTCD host the hello arrived at.
    pub arrived_at: Option<IpAddr>,
    /// RTCD's `ice_host_override` (empty: unset) and its form ("none", "ip", …).
    pub override_value: String,
    pub override_form: String,
    pub candidates: Vec<WireCandidate>,
    /// Candidates left out because the reply would have outgrown the request.
    pub truncated: u16,
    /// Whose settings the client's verdicts name: RTCD's, or the Calls plugin's (issue 16).
    pub deployment: crate::calls::Deployment,
}

/// Encodes the reply; drops candidates from the end until it fits in the request's size.
pub fn hello_reply(nonce: u64, info: &HelloInfo, key: Option<&[u8; 32]>) -> Vec<u8> {
    let mut info = info.clone();
    info.override_value = clip(&info.override_value);
    info.override_form = clip(&info.override_form);
    if let crate::calls::Deployment::CallsPlugin { rtcd_url: Some(u) } = &mut info.deployment {
        *u = clip(u);
    }
    let body = loop {
        let b = postcard::to_stdvec(&info).unwrap_or_default();
        if b.len() <= BODY_MAX || info.candidates.is_empty() {
            break b;
        }
        info.candidates.pop();
        info.truncated = info.truncated.saturating_add(1);
    };
    let body = if body.len() > BODY_MAX {
        Vec::new()
    } else {
        body
    };
    let mut p = vec![0u8; BODY_AT + body.len() + MAC_LEN];
    p[..4].copy_from_slice(&packet::MAGIC);
    p[4] = Kind::HelloReply as u8;
    p[8..16].copy_from_slice(&nonce.to_be_bytes());
    p[16..18].copy_from_slice(&(body.len() as u16).to_be_bytes());
    p[BODY_AT..BODY_AT + body.len()].copy_from_slice(&body);
    packet::seal(&mut p, key);
    p
}

/// Reads a checked hello reply.
pub fn parse_hello_reply(p: &[u8]) -> Result<HelloInfo, LiveError> {
    if p.len() < BODY_AT {
        return Err(LiveError::Length(p.len()));
    }
    let n = usize::from(u16::from_be_bytes([p[16], p[17]]));
    let body = p.get(BODY_AT..BODY_AT + n).ok_or(LiveError::Body)?;
    postcard::from_bytes(body).map_err(|_| LiveError::Body)
}

fn clip(s: &str) -> String {
    let mut end = s.len().min(TEXT_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
