//! Input quoted in a message, never whole. A field of a few hundred kilobytes copied into an
//! error would make its quarantine entry larger than a DynamoDB item (400 KB), and a payload
//! that cannot be quarantined is retried for ever. Errors quote [`quoted`]; whatever a
//! reason says, it is stored and reported through [`bounded_reason`].

use std::borrow::Cow;

/// The most a stored or reported reason holds, in bytes, before its length is noted.
pub const MAX_REASON_BYTES: usize = 1024;

/// The most of an input value an error message quotes, in bytes.
pub const MAX_QUOTE_BYTES: usize = 64;

/// `text` when it holds at most `max` bytes; otherwise its start, cut at a character
/// boundary, followed by the original length.
pub fn excerpt(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… ({} bytes in all)", &text[..end], text.len()))
}

/// An input value as an error message shows it: in backticks, at most [`MAX_QUOTE_BYTES`].
pub fn quoted(value: &str) -> String {
    format!("`{}`", excerpt(value, MAX_QUOTE_BYTES))
}

/// A reason as it is stored and reported: at most [`MAX_REASON_BYTES`] and the length.
pub fn bounded_reason(reason: &str) -> Cow<'_, str> {
    excerpt(reason, MAX_REASON_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_and_long_text_is_cut_at_a_character_with_its_length() {
        assert_eq!(excerpt("abc", 3), "abc");
        assert_eq!(excerpt("abcd", 3), "abc… (4 bytes in all)");
        // `é` is two bytes: the cut never splits it.
        assert_eq!(excerpt("aé", 2), "a… (3 bytes in all)");
        assert_eq!(
            quoted(&"x".repeat(100)).len(),
            64 + 2 + "… (100 bytes in all)".len()
        );
        let reason = "r".repeat(500_000);
        assert!(bounded_reason(&reason).len() < MAX_REASON_BYTES + 32);
    }
}
