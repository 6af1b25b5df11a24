//! The client's own resolution of a hostname `ice_host_override`, to compare with the server's:
//! RTCD resolves the name on its host, users' browsers never see the name at all, so a name that
//! resolves differently inside (split-horizon DNS) silently advertises an address users cannot
//! reach.

use std::net::IpAddr;
use std::time::Duration;

/// All addresses of `name` as this machine's resolver returns them, in order, without repeats.
pub async fn resolve(name: &str, bound: Duration) -> Result<Vec<IpAddr>, String> {
    let name = name.trim();
    // Port 0: only the addresses matter; lookup_host needs a port to build socket addresses.
    let lookup = tokio::net::lookup_host((name, 0));
    match tokio::time::timeout(bound, lookup).await {
        Ok(Ok(addrs)) => {
            let mut out: Vec<IpAddr> = Vec::new();
            for a in addrs {
                let ip = a.ip().to_canonical();
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
            Ok(out)
        }
        Ok(Err(e)) => Err(format!("cannot resolve `{name}` here: {e}")),
        Err(_) => Err(format!(
            "resolving `{name}` took more than {} s",
            bound.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_resolve_to_themselves() {
        let got = resolve("203.0.113.10", Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(got, vec!["203.0.113.10".parse::<IpAddr>().unwrap()]);
    }
}
