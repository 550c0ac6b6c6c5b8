//! The webhook HTTP client: per-request timeout, no redirects, and the operator's optional
//! allow and deny lists of hosts. Loopback and private addresses are allowed by default,
//! because only the operator registers endpoints, usually on its own network.

use std::time::Duration;

use url::Url;

/// Which hosts webhooks may be sent to.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// When non-empty, only these hosts. An entry starting with `.` matches any subdomain.
    pub allowed: Vec<String>,
    /// Never these hosts (same matching).
    pub denied: Vec<String>,
}

impl HostPolicy {
    /// Checks an endpoint URL: http or https, with a host the policy allows.
    pub fn check(&self, url: &str) -> Result<Url, String> {
        let parsed =
            Url::parse(url).map_err(|error| format!("'url' is not a valid URL: {error}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("'url' must use http or https".to_owned());
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            // Listings show the URL; deliveries are authenticated by their signature.
            return Err("'url' must not contain a user name or password".to_owned());
        }
        let host = canonical_host(parsed.host().ok_or("'url' must have a host")?);
        if self.denied.iter().any(|entry| matches(entry, &host)) {
            return Err(format!(
                "webhooks to host '{host}' are denied by the server's policy"
            ));
        }
        if !self.allowed.is_empty() && !self.allowed.iter().any(|entry| matches(entry, &host)) {
            return Err(format!(
                "host '{host}' is not in the server's webhook allow list"
            ));
        }
        Ok(parsed)
    }
}

/// The host as the lists compare it: lowercase, without a trailing dot, and an IPv4-mapped
/// IPv6 address as its IPv4 form, so that spellings of one host cannot slip past a list.
fn canonical_host(host: url::Host<&str>) -> String {
    match host {
        url::Host::Domain(name) => name.trim_end_matches('.').to_ascii_lowercase(),
        url::Host::Ipv4(address) => address.to_string(),
        url::Host::Ipv6(address) => match address.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => address.to_string(),
        },
    }
}

fn matches(entry: &str, host: &str) -> bool {
    let entry = entry.trim().trim_end_matches('.').to_ascii_lowercase();
    match entry.strip_prefix('.') {
        Some(suffix) => host == suffix || host.ends_with(&format!(".{suffix}")),
        None => host == entry,
    }
}

/// Installs ring as the process's TLS provider. reqwest is built without a bundled provider
/// (the default one is a heavy C build); a second install is refused harmlessly.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds the client used for every delivery.
pub fn build_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    install_crypto_provider();
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("spektr-server/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_private_hosts_are_allowed_by_default() {
        let policy = HostPolicy::default();

        assert!(policy.check("http://127.0.0.1:9000/hook").is_ok());
        assert!(policy.check("https://10.0.0.5/hook").is_ok());
        assert!(policy.check("ftp://example.com/hook").is_err());
        assert!(policy.check("not a url").is_err());
    }

    #[test]
    fn allow_and_deny_lists_match_hosts_and_subdomains() {
        let policy = HostPolicy {
            allowed: vec![".example.com".to_owned(), "127.0.0.1".to_owned()],
            denied: vec!["bad.example.com".to_owned()],
        };

        assert!(policy.check("https://hooks.example.com/x").is_ok());
        assert!(policy.check("http://127.0.0.1:8080/x").is_ok());
        assert!(policy.check("https://bad.example.com/x").is_err());
        assert!(policy.check("https://example.org/x").is_err());
    }

    #[test]
    fn other_spellings_of_a_denied_host_are_denied_too() {
        let policy = HostPolicy {
            allowed: Vec::new(),
            denied: vec![
                "127.0.0.1".into(),
                "localhost".into(),
                ".internal.test".into(),
            ],
        };

        for url in [
            "http://localhost.:1/x",
            "http://LOCALHOST/x",
            "http://A.INTERNAL.TEST./x",
            "http://[::ffff:127.0.0.1]:1/x",
            "http://127.1/x",
            "http://2130706433/x",
        ] {
            assert!(
                policy.check(url).is_err(),
                "{url} slipped past the deny list"
            );
        }
    }
}
