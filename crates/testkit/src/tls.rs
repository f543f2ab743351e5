//! Throw-away certificates for tests: a private CA and server certificates it signs, made
//! with OpenSSL in the test process, so TLS paths run against real handshakes without
//! files checked into the repository.

use std::net::IpAddr;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509Name, X509NameBuilder, X509NameRef};

/// A certificate authority that exists only in this test.
pub struct TestCa {
    key: PKey<Private>,
    cert: X509,
}

/// A server certificate (leaf) and its private key.
#[derive(Clone)]
pub struct ServerCert {
    pub(crate) cert: X509,
    pub(crate) key: PKey<Private>,
}

fn fail<T>(what: &str, e: impl std::fmt::Display) -> T {
    panic!("test certificate: {what}: {e}")
}

fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap_or_else(|e| fail("curve", e));
    let ec = EcKey::generate(&group).unwrap_or_else(|e| fail("key", e));
    PKey::from_ec_key(ec).unwrap_or_else(|e| fail("key", e))
}

fn name(common_name: &str) -> X509Name {
    let mut b = X509NameBuilder::new().unwrap_or_else(|e| fail("name", e));
    b.append_entry_by_nid(Nid::COMMONNAME, common_name).unwrap_or_else(|e| fail("name", e));
    b.build()
}

fn serial() -> Asn1Integer {
    let mut n = BigNum::new().unwrap_or_else(|e| fail("serial", e));
    n.rand(63, MsbOption::MAYBE_ZERO, false).unwrap_or_else(|e| fail("serial", e));
    n.to_asn1_integer().unwrap_or_else(|e| fail("serial", e))
}

/// A builder valid from an hour ago (clock differences) for 30 days.
fn builder(subject: &X509NameRef, issuer: &X509NameRef, key: &PKey<Private>) -> X509Builder {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_else(|e| fail("clock", e));
    let mut b = X509Builder::new().unwrap_or_else(|e| fail("builder", e));
    let steps: [Result<(), openssl::error::ErrorStack>; 6] = [
        b.set_version(2),
        b.set_serial_number(&serial()),
        b.set_subject_name(subject),
        b.set_issuer_name(issuer),
        b.set_pubkey(key),
        Asn1Time::from_unix(now - 3600).and_then(|t| b.set_not_before(&t)),
    ];
    for step in steps {
        step.unwrap_or_else(|e| fail("builder", e));
    }
    Asn1Time::from_unix(now + 30 * 86_400).and_then(|t| b.set_not_after(&t)).unwrap_or_else(|e| fail("builder", e));
    b
}

impl ServerCert {
    /// The certificate as PEM.
    pub fn cert_pem(&self) -> Vec<u8> {
        self.cert.to_pem().unwrap_or_else(|e| fail("pem", e))
    }

    /// The private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> Vec<u8> {
        self.key.private_key_to_pem_pkcs8().unwrap_or_else(|e| fail("pem", e))
    }
}

impl TestCa {
    pub fn new(common_name: &str) -> Self {
        let key = key();
        let subject = name(common_name);
        let mut b = builder(&subject, &subject, &key);
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None)).unwrap_or_else(|e| fail("ski", e));
        let extensions = [
            BasicConstraints::new().critical().ca().build(),
            KeyUsage::new().critical().key_cert_sign().crl_sign().build(),
            Ok(ski),
        ];
        for ext in extensions {
            b.append_extension(ext.unwrap_or_else(|e| fail("extension", e))).unwrap_or_else(|e| fail("extension", e));
        }
        b.sign(&key, MessageDigest::sha256()).unwrap_or_else(|e| fail("sign", e));
        Self { key, cert: b.build() }
    }

    /// The CA certificate as PEM: what a client adds to its trusted roots.
    pub fn cert_pem(&self) -> Vec<u8> {
        self.cert.to_pem().unwrap_or_else(|e| fail("pem", e))
    }

    /// A server certificate for `localhost` and 127.0.0.1 (and `hosts`), signed by this CA.
    pub fn issue(&self, hosts: &[&str]) -> ServerCert {
        let key = key();
        let mut b = builder(&name("localhost"), self.cert.subject_name(), &key);
        let mut san = SubjectAlternativeName::new();
        san.dns("localhost").ip("127.0.0.1");
        for host in hosts {
            if host.parse::<IpAddr>().is_ok() {
                san.ip(host);
            } else {
                san.dns(host);
            }
        }
        let san = san.build(&b.x509v3_context(Some(&self.cert), None)).unwrap_or_else(|e| fail("san", e));
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&self.cert), None))
            .unwrap_or_else(|e| fail("aki", e));
        let extensions = [
            BasicConstraints::new().build(),
            KeyUsage::new().critical().digital_signature().build(),
            ExtendedKeyUsage::new().server_auth().build(),
            Ok(san),
            Ok(aki),
        ];
        for ext in extensions {
            b.append_extension(ext.unwrap_or_else(|e| fail("extension", e))).unwrap_or_else(|e| fail("extension", e));
        }
        b.sign(&self.key, MessageDigest::sha256()).unwrap_or_else(|e| fail("sign", e));
        ServerCert { cert: b.build(), key }
    }
}
