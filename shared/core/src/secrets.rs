//! The documents kept in Secrets Manager, and how they are read. An error names the JSON
//! problem's kind and place, never the text: serde's messages quote the value they choke on,
//! which here is a secret.

use serde::Deserialize;

use crate::config::comma_list;

/// A secret that does not hold what it should.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the secret {what}")]
pub struct SecretError {
    what: String,
}

fn bad(what: impl Into<String>) -> SecretError {
    SecretError { what: what.into() }
}

fn not_json(error: &serde_json::Error, expected: &str) -> SecretError {
    bad(format!(
        "is not the expected JSON document ({:?} error at line {}, column {}; expected {expected})",
        error.classify(),
        error.line(),
        error.column()
    ))
}

/// The accepted signing secrets of the webhook at one moment.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SigningSecrets {
    /// `Kore-Signature` secrets: the active one and, during a rotation, the pending one.
    pub kore: Vec<String>,
    /// Twilio Auth Tokens.
    pub twilio: Vec<String>,
}

impl std::fmt::Debug for SigningSecrets {
    // Secrets never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningSecrets")
            .field("kore", &self.kore.len())
            .field("twilio", &self.twilio.len())
            .finish()
    }
}

#[derive(Deserialize)]
struct SigningDocument {
    #[serde(default, rename = "KORE_WEBHOOK_SECRETS")]
    kore: String,
    #[serde(default, rename = "TWILIO_AUTH_TOKENS")]
    twilio: String,
}

/// The webhook's secret (`WEBHOOK_SECRETS_ARN`): a JSON object with the string fields
/// `KORE_WEBHOOK_SECRETS` and `TWILIO_AUTH_TOKENS`, each comma-separated.
pub fn parse_signing_secrets(text: &str) -> Result<SigningSecrets, SecretError> {
    let document: SigningDocument = serde_json::from_str(text).map_err(|e| {
        not_json(
            &e,
            "an object with the string fields KORE_WEBHOOK_SECRETS and TWILIO_AUTH_TOKENS",
        )
    })?;
    Ok(SigningSecrets {
        kore: comma_list(&document.kore),
        twilio: comma_list(&document.twilio),
    })
}

/// The Segment write key from its secret's text (`SEGMENT_WRITE_KEY_SECRET_ARN`): the key
/// itself, or a JSON object with the string field `SEGMENT_WRITE_KEY`.
pub fn parse_write_key(secret: &str) -> Result<String, SecretError> {
    let text = secret.trim();
    let key = if text.starts_with('{') {
        let document: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| not_json(&e, r#"a plain write key or {"SEGMENT_WRITE_KEY": "..."}"#))?;
        document["SEGMENT_WRITE_KEY"]
            .as_str()
            .ok_or_else(|| bad("has no string field SEGMENT_WRITE_KEY"))?
            .trim()
            .to_owned()
    } else {
        text.to_owned()
    };
    if key.is_empty() {
        return Err(bad("holds an empty write key"));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            "holds a write key with whitespace or control characters",
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_signing_document_is_not_echoed() {
        for document in [
            r#""s3cr3t-plain-value""#,
            r#"{"KORE_WEBHOOK_SECRETS": ["s3cr3t-plain-value"]}"#,
            r#"{"KORE_WEBHOOK_SECRETS": "s3cr3t-plain-value", "#,
            "s3cr3t-plain-value",
        ] {
            let error = parse_signing_secrets(document).unwrap_err().to_string();
            assert!(!error.contains("s3cr3t"), "{error}");
        }
        let secrets = parse_signing_secrets(r#"{"KORE_WEBHOOK_SECRETS": " a, b ,"}"#).unwrap();
        assert_eq!(secrets.kore, ["a", "b"]);
        assert!(secrets.twilio.is_empty());
        assert!(!format!("{secrets:?}").contains('a'));
    }

    #[test]
    fn the_write_key_is_a_key_or_a_json_document_and_never_echoed() {
        assert_eq!(parse_write_key(" abc123\n").unwrap(), "abc123");
        assert_eq!(
            parse_write_key(r#"{"SEGMENT_WRITE_KEY": "abc123"}"#).unwrap(),
            "abc123"
        );
        for bad in [
            r#"{"SEGMENT_WRITE_KEY": ["s3cr3t"]}"#,
            r#"{"writeKey": "s3cr3t"}"#,
            r#"{"SEGMENT_WRITE_KEY": "s3cr3t"#,
            "s3cr3t s3cr3t",
            "",
        ] {
            let error = parse_write_key(bad).unwrap_err().to_string();
            assert!(!error.contains("s3cr3t"), "{error}");
        }
    }
}
