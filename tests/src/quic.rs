//! Raw QUIC packets for attack and hardening tests: genuine client Initials made by quinn-proto
//! (the client's own QUIC stack), whose bytes the tests send from spoofed or flooding sources.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// `n` genuine QUIC v1 client Initials (quinn-proto, the client's own stack), each with a fresh
/// Destination Connection ID; never sent by a connection, only their bytes are used.
pub fn quic_initials(dst: SocketAddr, n: usize) -> Vec<Vec<u8>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"calls-probe/1".to_vec()];
    let crypto = Arc::new(
        quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS config"),
    );
    let mut ep_cfg = quinn_proto::EndpointConfig::default();
    ep_cfg.grease_quic_bit(false);
    let mut ep = quinn_proto::Endpoint::new(Arc::new(ep_cfg), None, false, None);
    (0..n)
        .map(|_| {
            let now = Instant::now();
            let (_, mut conn) = ep
                .connect(
                    now,
                    quinn_proto::ClientConfig::new(crypto.clone()),
                    dst,
                    "probe-server",
                )
                .expect("connect");
            let mut buf = Vec::new();
            let tx = conn.poll_transmit(now, 1, &mut buf).expect("an Initial");
            buf.truncate(tx.size);
            assert!(buf[0] & 0xf0 == 0xc0, "not an Initial: {:#04x}", buf[0]);
            buf
        })
        .collect()
}
