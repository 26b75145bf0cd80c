//! Twilio and KORE SIDs as the files operators write name them: two capitals for the kind
//! (`HS` a SIM, `HF` a fleet, `AC` an account, `HW` a network), then 32 lowercase
//! hexadecimal digits, exactly as the providers send them, so a SID written another way is
//! refused rather than silently matching nothing.

pub fn is_sid(value: &str, prefix: &str) -> bool {
    value.len() == 34
        && value.starts_with(prefix)
        && value[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sid_is_its_prefix_and_32_lowercase_hex_digits() {
        assert!(is_sid("HS0123456789abcdef0123456789abcdef", "HS"));
        assert!(!is_sid("HS0123456789ABCDEF0123456789abcdef", "HS"));
        assert!(!is_sid("HF0123456789abcdef0123456789abcdef", "HS"));
        assert!(!is_sid("HS0123456789abcdef0123456789abcde", "HS"));
        assert!(!is_sid("HS0123456789abcdef0123456789abcdeg", "HS"));
    }
}
