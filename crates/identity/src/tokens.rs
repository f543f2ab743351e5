//! Access tokens (JWT, HS256) and opaque secrets (refresh tokens, API keys).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The access token's claims (API.md): `sub`, `factory_id`, `role`, `perms`, `exp`, `iat`, `jti`,
/// plus `sid`, the refresh-token family, so logout ends the session at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: String,
    pub factory_id: Option<String>,
    pub role: String,
    pub perms: Vec<String>,
    /// Seconds since the epoch.
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub sid: String,
}

pub(crate) struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked against the injected clock by the caller, so tests can move time.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        Self { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation }
    }

    pub fn sign(&self, claims: &AccessClaims) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    /// Checks the signature and decodes; expiry is the caller's to check.
    pub fn verify(&self, token: &str) -> Option<AccessClaims> {
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation).ok().map(|d| d.claims)
    }
}

/// A random secret: `prefix` + 64 hex characters (256 bits).
pub fn generate_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let mut out = String::with_capacity(prefix.len() + 64);
    out.push_str(prefix);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// SHA-256 as lower-case hex. Right for high-entropy secrets (refresh tokens, API keys):
/// they cannot be guessed, so a slow hash would only slow every request down.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> AccessClaims {
        AccessClaims {
            sub: "u1".into(),
            factory_id: Some("f1".into()),
            role: "admin".into(),
            perms: vec!["rules:write".into()],
            exp: 2_000_000_000,
            iat: 1_000,
            jti: "j".into(),
            sid: "s".into(),
        }
    }

    #[test]
    fn sign_verify_and_reject_tampering() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef");
        let token = keys.sign(&claims()).unwrap();
        assert_eq!(keys.verify(&token), Some(claims()));
        let other = JwtKeys::new(b"another-key-another-key-another-k");
        assert_eq!(other.verify(&token), None);
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = "eyJzdWIiOiJ1MiJ9";
        parts[1] = forged;
        assert_eq!(keys.verify(&parts.join(".")), None);
        assert_eq!(keys.verify("garbage"), None);
    }

    #[test]
    fn secrets_are_random_and_hash_stably() {
        let a = generate_secret("fo_");
        assert!(a.starts_with("fo_") && a.len() == 67);
        assert_ne!(a, generate_secret("fo_"));
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
