//! Contact addresses, checked the same way wherever they are accepted (user profiles,
//! rule targets) and used (the notification channels).

/// An E.164 number: `+`, then 7 to 15 digits, the country code not starting with 0
/// (`+4915112345678`).
pub fn is_e164(text: &str) -> bool {
    let Some(digits) = text.strip_prefix('+') else { return false };
    (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

/// A deliberately plain address check: one `@`, a dot inside the domain, no spaces,
/// control characters, angle brackets or commas, at most 254 bytes. The mail server has
/// the last word.
pub fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else { return false };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && text.len() <= 254
        && !text.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>' || c == ',')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_e164() {
        assert!(is_e164("+4915112345678"));
        assert!(is_e164("+6834002"), "7 digits (Niue)");
        assert!(!is_e164("4915112345678"));
        assert!(!is_e164("+0123456789"));
        assert!(!is_e164("+49 151 12345678"));
        assert!(!is_e164("+1234567890123456"));
    }

    #[test]
    fn email_addresses_are_plain() {
        assert!(is_email("ops@example.com"));
        assert!(!is_email("ops@localhost"));
        assert!(!is_email("a b@example.com"));
        assert!(!is_email("a@b@example.com"));
        assert!(!is_email("Ops <ops@example.com>"));
    }
}
