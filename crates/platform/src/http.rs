//! Outgoing HTTP clients (InfluxDB, Twilio, the simulator, tests).
//!
//! reqwest is built with rustls but without a built-in crypto provider: its default would
//! pull aws-lc (a C/cmake build) and otherwise needs a process-wide provider installed.
//! Every client starts here instead, with rustls on ring and the Mozilla roots handed over
//! preconfigured, so https works and no global state is involved.

use std::sync::Arc;

/// A client builder with TLS (rustls + ring + webpki roots) configured; add timeouts and build.
pub fn client_builder() -> reqwest::ClientBuilder {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions();
    let mut tls = match builder {
        Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
        // ring supports the default protocol versions; this branch exists only for the types.
        Err(_) => return reqwest::Client::builder(),
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder().tls_backend_preconfigured(tls)
}

/// A client with TLS and no timeouts (callers that need timeouts use [`client_builder`]).
pub fn client() -> reqwest::Client {
    client_builder().build().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn builds_without_a_process_wide_provider() {
        assert!(super::client_builder().build().is_ok());
    }
}
