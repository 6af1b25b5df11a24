//! Control messages, the same over a QUIC stream and inside TLS on the TCP port: hello opens a
//! session, finish asks for its counters, closing the channel ends it.

use crate::shared::Shared;
use probe_proto::msg::{negotiate, Control, DecodeError, Hello, Refused, Welcome};
use probe_proto::session::IceCredentials;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// One control channel's view: the peer and the session it opened, if any.
pub struct Channel {
    pub peer: SocketAddr,
    pub via: &'static str,
    pub session: Option<u64>,
    /// One report per session: uploads are written to the admin's disk.
    uploaded: bool,
    /// The negotiated protocol version (0 before the hello).
    proto: u16,
    /// The session's key, which a site token's upload MAC covers.
    key: [u8; 32],
}

impl Channel {
    pub fn new(peer: SocketAddr, via: &'static str) -> Self {
        Self {
            peer,
            via,
            session: None,
            uploaded: false,
            proto: 0,
            key: [0; 32],
        }
    }

    /// Decodes one control frame payload and returns the encoded answer, if any. `Err` means
    /// the channel should be closed (undecodable input, or a missing token MAC).
    pub fn handle_payload(
        &mut self,
        shared: &Shared,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, ()> {
        let token = shared.core().token().copied();
        let msg = match Control::from_payload(payload, token.as_ref()) {
            Ok(m) => m,
            Err(e) => {
                count_dropped(shared, &e);
                tracing::debug!(peer = %self.peer, "control frame dropped: {e}");
                return Err(());
            }
        };
        let Some(answer) = self.handle(shared, msg) else {
            return Ok(None);
        };
        let out = answer.to_payload(token.as_ref());
        // Without a token nothing proves who sent this: never answer with more bytes than came in.
        if token.is_none() && out.len() > payload.len() {
            shared.core().stats.control_too_small += 1;
            tracing::debug!(peer = %self.peer, "control answer larger than the request; not sent");
            // A session whose welcome was never sent must not hold a slot.
            if matches!(answer, Control::Welcome(_)) {
                self.close(shared);
            }
            return Ok(None);
        }
        Ok(Some(out))
    }

    /// A control frame on a plain TCP connection. Current clients send control only inside
    /// TLS; a hello in clear comes from a client older than that, whose welcome (session key,
    /// ICE password) would cross in clear, so it gets a refusal saying what to do instead.
    /// Anything else, or a frame without the token's MAC, ends the connection (`Err`).
    pub fn refuse_plain(&self, shared: &Shared, payload: &[u8]) -> Result<Option<Vec<u8>>, ()> {
        let token = shared.core().token().copied();
        match Control::from_payload(payload, token.as_ref()) {
            Ok(Control::Hello(hello)) => {
                tracing::info!(
                    peer = %self.peer,
                    client = %probe_proto::sites::clean_text(&hello.client_version, 32),
                    "hello in clear on the TCP port refused: this probe-client predates TLS on TCP"
                );
                let out = Control::Refused(Refused {
                    reason: PLAIN_REFUSAL.into(),
                    limit: None,
                })
                .to_payload(token.as_ref());
                // Never more bytes than came in from an unproven sender (hellos are padded).
                Ok((token.is_some() || out.len() <= payload.len()).then_some(out))
            }
            Ok(_) => {
                shared.core().stats.drop_unknown_session += 1;
                Err(())
            }
            Err(e) => {
                count_dropped(shared, &e);
                Err(())
            }
        }
    }

    /// Handles one message; returns the answer to send, if any.
    fn handle(&mut self, shared: &Shared, msg: Control) -> Option<Control> {
        match msg {
            Control::Hello(hello) if self.session.is_none() => self.hello(shared, &hello),
            Control::Finish { session_id, .. } if Some(session_id) == self.session => {
                let now = shared.now_us();
                let mut core = shared.core();
                core.touch(session_id, now);
                core.counters(session_id).map(Control::Counters)
            }
            Control::Upload { session_id, report } if Some(session_id) == self.session => {
                Some(self.upload(shared, report, None))
            }
            // Proto 5: the same with a site token's MAC (checked by the store's site policy).
            Control::SignedUpload {
                session_id,
                report,
                site_mac,
            } if Some(session_id) == self.session && self.proto >= 5 => {
                Some(self.upload(shared, report, Some(site_mac)))
            }
            // Proto 3: the TURN check's relayed address becomes a permitted echo peer of
            // this session only (see `Core::add_relay_peer` for the return-routability check).
            Control::RelayPeer {
                session_id,
                relayed,
                ..
            } if Some(session_id) == self.session && self.proto >= 3 => {
                let cookie = shared.random();
                let added = shared.core().add_relay_peer(session_id, relayed, cookie);
                tracing::info!(
                    session = format_args!("{session_id:016x}"),
                    peer = %self.peer,
                    %relayed,
                    accepted = added.is_ok(),
                    "TURN relay announced"
                );
                Some(Control::RelayAdded {
                    accepted: added.is_ok(),
                    reason: added.err(),
                })
            }
            Control::RelayFinish { session_id, .. }
                if Some(session_id) == self.session && self.proto >= 3 =>
            {
                let now = shared.now_us();
                let mut core = shared.core();
                core.touch(session_id, now);
                core.relay_counters(session_id).map(Control::RelayCounters)
            }
            _ => None,
        }
    }

    /// A hello: a protocol both speak, a fresh (not replayed) hello, then a session with its
    /// key and ICE credentials, or the refusal. `None`: a replay, dropped without an answer.
    fn hello(&mut self, shared: &Shared, hello: &Hello) -> Option<Control> {
        let Some(proto) = negotiate(hello.proto_min, hello.proto_max) else {
            return Some(Control::Refused(Refused {
                reason: format!(
                    "protocol versions {}..={} are not spoken by this server ({})",
                    hello.proto_min,
                    hello.proto_max,
                    env!("CARGO_PKG_VERSION")
                ),
                limit: None,
            }));
        };
        match shared.core().fresh_hello(wall_ms(), hello) {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(peer = %self.peer, "replayed hello dropped");
                return None;
            }
            Err(refused) => return Some(Control::Refused(refused)),
        }
        let id = u64::from_be_bytes(shared.random());
        let key: [u8; 32] = shared.random();
        let offer = shared.ice();
        let ice = offer.as_ref().map(|_| IceCredentials {
            ufrag: alnum(&shared.random::<8>()),
            pwd: alnum(&shared.random::<24>()),
        });
        let now = shared.now_us();
        let opened = shared
            .core()
            .open(now, self.peer.ip(), hello, id, key, ice.clone());
        if let Err(refused) = opened {
            tracing::warn!(peer = %self.peer, reason = %refused.reason, "session refused");
            return Some(Control::Refused(refused));
        }
        self.session = Some(id);
        self.proto = proto;
        self.key = key;
        tracing::info!(
            session = format_args!("{id:016x}"),
            peer = %self.peer,
            via = self.via,
            // Client text: no control character may forge a log line.
            site = %probe_proto::sites::clean_text(&hello.site, 64),
            client = %probe_proto::sites::clean_text(&hello.client_version, 32),
            "session opened"
        );
        let ice = offer.zip(ice).map(|(mut offer, creds)| {
            offer.ufrag = creds.ufrag;
            offer.pwd = creds.pwd;
            offer
        });
        Some(Control::Welcome(Welcome {
            proto,
            session_id: id,
            key,
            server_version: env!("CARGO_PKG_VERSION").into(),
            server_time_ms: wall_ms(),
            observed: self.peer.to_string(),
            ice,
        }))
    }

    /// An uploaded report: one per session, rate-limited per address, handed to the store.
    fn upload(&mut self, shared: &Shared, report: String, site_mac: Option<[u8; 32]>) -> Control {
        let now = shared.now_us();
        if self.uploaded || !shared.core().admit_upload(self.peer.ip(), now) {
            return Control::Stored {
                accepted: false,
                reason: Some(
                    "one report per session, and at most one every few seconds from one address"
                        .into(),
                ),
            };
        }
        self.uploaded = true;
        let run = crate::results::UploadedRun {
            client_addr: self.peer,
            received_ms: wall_ms(),
            report_json: report,
            proof: self.session.map(|session_id| crate::results::SiteProof {
                session_id,
                session_key: self.key,
                mac: site_mac,
            }),
        };
        let outcome = shared.results.submit(run);
        // The admin waiting for a site's results needs the reason; uploads are rate-limited
        // per source, so this cannot flood the log. Without a store it is the admin's choice.
        match &outcome {
            Err(e) if e != probe_proto::sites::NO_STORE => {
                tracing::info!(peer = %self.peer, "upload not kept: {e}");
            }
            Err(e) => tracing::debug!(peer = %self.peer, "upload not kept: {e}"),
            Ok(()) => {}
        }
        Control::Stored {
            accepted: outcome.is_ok(),
            reason: outcome.err(),
        }
    }

    /// Ends the channel's session and logs what it counted.
    pub fn close(&mut self, shared: &Shared) {
        if let Some(id) = self.session.take() {
            if let Some(c) = shared.core().close(id) {
                tracing::info!(
                    session = format_args!("{id:016x}"),
                    udp_rx = c.udp_rx,
                    tcp_rx = c.tcp_rx,
                    "session closed"
                );
            }
        }
    }
}

/// What a client that sent its hello in clear on the TCP port is told.
pub const PLAIN_REFUSAL: &str = "this probe-server takes control messages on its TCP port only \
     inside TLS, so that the session key and ICE password never cross in clear; upgrade \
     probe-client to the server's version, or let UDP through to this port (QUIC carries them)";

/// The wall clock, since the Unix epoch (zero before it).
pub fn wall() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The wall clock, ms since the Unix epoch.
pub fn wall_ms() -> u64 {
    wall().as_millis() as u64
}

/// ICE ufrag/pwd characters (RFC 8445: ice-char is ALPHA / DIGIT / "+" / "/").
fn alnum(bytes: &[u8]) -> String {
    const SET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    bytes
        .iter()
        .map(|b| SET[*b as usize % SET.len()] as char)
        .collect()
}

/// A control frame that did not decode: a missing or wrong token MAC, or malformed bytes.
fn count_dropped(shared: &Shared, e: &DecodeError) {
    let mut core = shared.core();
    if *e == DecodeError::BadMac {
        core.stats.drop_unauthenticated += 1;
    } else {
        core.stats.drop_malformed += 1;
    }
}
