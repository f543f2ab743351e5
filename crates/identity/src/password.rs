//! Password policy and bcrypt, off the async threads.

use crate::error::IdentityError;

/// bcrypt only looks at the first 72 bytes; longer passwords would silently collide.
const BCRYPT_MAX_BYTES: usize = 72;
pub const MIN_LENGTH: usize = 10;

pub fn check_policy(field: &str, password: &str, email: Option<&str>) -> Result<(), IdentityError> {
    if password.chars().count() < MIN_LENGTH {
        return Err(IdentityError::invalid(field, format!("must be at least {MIN_LENGTH} characters")));
    }
    if password.len() > BCRYPT_MAX_BYTES {
        return Err(IdentityError::invalid(field, format!("must be at most {BCRYPT_MAX_BYTES} bytes")));
    }
    if email.is_some_and(|e| e.eq_ignore_ascii_case(password.trim())) {
        return Err(IdentityError::invalid(field, "must not be the e-mail address"));
    }
    Ok(())
}

pub async fn hash(password: &str, cost: u32) -> Result<String, IdentityError> {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
        .await
        .map_err(|e| IdentityError::Internal(e.to_string()))?
        .map_err(|e| IdentityError::Internal(e.to_string()))
}

/// `false` for a wrong password and for a malformed stored hash alike.
pub async fn verify(password: &str, hash: &str) -> bool {
    let password = password.to_string();
    let hash = hash.to_string();
    tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false)).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(check_policy("password", "short", None).is_err());
        assert!(check_policy("password", "long enough pw", None).is_ok());
        assert!(check_policy("password", "ops@example.com", Some("OPS@example.com")).is_err());
        assert!(check_policy("password", &"x".repeat(73), None).is_err());
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let h = hash("correct horse battery", 4).await.unwrap();
        assert!(verify("correct horse battery", &h).await);
        assert!(!verify("wrong horse battery", &h).await);
        assert!(!verify("anything", "not-a-hash").await);
    }
}
