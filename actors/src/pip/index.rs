//! The check of an approval's `index_url` (contract §9 "pip"): https only, no credentials, and
//! never an internal host. The host is judged by the egress classifier
//! ([`rumi_domain::net::blocked_reason`]): an address literal in any spelling (decimal `2130706433`,
//! octal `0177.0.0.1`, hex `0x7f.1`, IPv4-mapped `[::ffff:127.0.0.1]`, …; the WHATWG parser turns
//! them all into addresses) is judged directly; a name (`localhost` and `*.localhost` refused
//! outright) is resolved, and one internal address among its answers refuses it.
//!
//! What stays: pip resolves the name again when it downloads (a resolver that answers public now
//! and internal a moment later could still steer that one download); the operator chooses the
//! index, so this is a guard against a slip, not against the operator.

use rumi_domain::egress::{parse_url, target, Host};
use std::net::IpAddr;
use std::time::Duration;

/// How long resolving the index's name may take.
const RESOLVE_DEADLINE: Duration = Duration::from_secs(5);

/// The URL as pip receives it, or why it is refused (answered 400).
pub async fn check_index_url(raw: &str) -> Result<String, String> {
    let url = parse_url(raw.trim()).map_err(|e| format!("index_url: {e}"))?;
    if url.scheme() != "https" {
        return Err(format!(
            "index_url must be https (found {:?}); pip would fetch packages in clear text",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("index_url must not carry credentials; configure them in the machine's pip configuration".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("index_url must not have a query or a fragment".into());
    }
    let t = target(&url).map_err(|e| format!("index_url: {e}"))?;
    let ips: Vec<IpAddr> = match &t.host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => {
            if name == "localhost" || name.ends_with(".localhost") {
                return Err(format!(
                    "index_url host {name:?} is the machine itself; an index must be a public host"
                ));
            }
            let lookup = tokio::net::lookup_host((name.as_str(), t.port));
            match tokio::time::timeout(RESOLVE_DEADLINE, lookup).await {
                Ok(Ok(addrs)) => addrs.map(|a| a.ip()).take(64).collect(),
                Ok(Err(_)) => {
                    return Err(format!(
                        "index_url host {name:?} cannot be resolved; check the name"
                    ))
                }
                Err(_) => {
                    return Err(format!(
                        "index_url host {name:?} did not resolve within {}s",
                        RESOLVE_DEADLINE.as_secs()
                    ))
                }
            }
        }
    };
    if ips.is_empty() {
        return Err("index_url host resolves to no address".into());
    }
    for ip in &ips {
        if let Some(why) = rumi_domain::net::blocked_reason(*ip) {
            return Err(format!(
                "index_url host {} is (or resolves to) {ip}, a {why} address; an index must be a public host",
                t.host.grant_name()
            ));
        }
    }
    Ok(url.to_string())
}
