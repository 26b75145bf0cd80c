//! Failures as one plain sentence: no debug dumps of SDK errors, no backtraces.

use kore_ingest_aws::archive::ArchiverError;
use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_core::closes::CloseError;
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::usage::Overflow;

/// Why a command did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Wrong usage found after parsing the arguments: exit code 2.
    Usage(String),
    /// The command failed: exit code 1.
    Failed(String),
}

pub type Result<T> = std::result::Result<T, Failure>;

/// Turns a ledger result into a failure that reads as one sentence.
pub trait OrFail<T> {
    fn or_fail(self, ledger: &UsageLedger) -> Result<T>;
}

impl<T> OrFail<T> for std::result::Result<T, LedgerError> {
    fn or_fail(self, ledger: &UsageLedger) -> Result<T> {
        self.map_err(|error| Failure::Failed(describe(&error, ledger.table_name())))
    }
}

/// A close refused or failed: the ledger's errors described like any other, the rest as
/// they say themselves.
impl<T> OrFail<T> for std::result::Result<T, CloseError> {
    fn or_fail(self, ledger: &UsageLedger) -> Result<T> {
        self.map_err(|error| match error {
            CloseError::Ledger(error) => Failure::Failed(describe(&error, ledger.table_name())),
            refused => Failure::Failed(refused.to_string()),
        })
    }
}

/// The archive's failures: the ledger's described like any other, the rest as they say.
impl<T> OrFail<T> for std::result::Result<T, ArchiverError> {
    fn or_fail(self, ledger: &UsageLedger) -> Result<T> {
        self.map_err(|error| match error {
            ArchiverError::Ledger(error) => Failure::Failed(describe(&error, ledger.table_name())),
            other => Failure::Failed(other.to_string()),
        })
    }
}

/// A sum that does not fit: it names whose usage and which period.
impl From<Overflow> for Failure {
    fn from(overflow: Overflow) -> Self {
        Failure::Failed(overflow.to_string())
    }
}

/// One line, ending with a full stop.
pub fn sentence(message: &str) -> String {
    let mut text = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if !text.ends_with(['.', '!', '?']) {
        text.push('.');
    }
    text
}

/// A ledger error as an operator can act on it: which table is missing, which endpoint
/// cannot be reached, which credentials are refused.
pub fn describe(error: &LedgerError, table: &str) -> String {
    match error {
        LedgerError::Retryable {
            operation,
            code,
            message,
        }
        | LedgerError::Rejected {
            operation,
            code,
            message,
        } => describe_sdk(operation, code.as_deref(), message, table),
        other => other.to_string(),
    }
}

/// Error codes that mean the caller's credentials or permissions are refused.
const REFUSED_CODES: [&str; 5] = [
    "UnrecognizedClientException",
    "AccessDeniedException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "MissingAuthenticationTokenException",
];

/// `message` is an SDK error's `DisplayErrorContext`; `code` the service's error code when it
/// answered with one (an outcome's reason has only the text, so the text is read too).
fn describe_sdk(operation: &str, code: Option<&str>, message: &str, table: &str) -> String {
    let chain = error_chain(message);
    let lower = chain.to_ascii_lowercase();
    let (parsed_code, last) = innermost(chain);
    let code = code.map(str::to_owned).or(parsed_code);
    let endpoint = std::env::var("AWS_ENDPOINT_URL_DYNAMODB")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .map(|url| format!(" at {url}"))
        .unwrap_or_default();
    if code.as_deref() == Some("ResourceNotFoundException")
        || lower.contains("non-existent table")
        || lower.contains("requested resource not found")
    {
        format!(
            "the table `{table}` does not exist in this account and region{endpoint} (check --table or TABLE_NAME)"
        )
    } else if lower.contains("region")
        && (lower.contains("missing")
            || lower.contains("no region")
            || lower.contains("must be set"))
    {
        "no AWS region is configured: set AWS_REGION or a profile's region".to_owned()
    } else if lower.contains("credential") || lower.contains("imds") {
        format!("no usable AWS credentials were found ({last})")
    } else if lower.contains("connection refused") {
        format!("cannot reach DynamoDB{endpoint}: the connection was refused")
    } else if lower.contains("dispatch failure")
        || lower.contains("timeout")
        || lower.contains("timed out")
        || lower.contains("io error")
    {
        format!("cannot reach DynamoDB{endpoint}: {last}")
    } else if code.as_deref().is_some_and(|c| REFUSED_CODES.contains(&c))
        || lower.contains("security token")
    {
        format!("DynamoDB refused the request: {last}")
    } else {
        match code {
            Some(code) => format!("DynamoDB {operation} failed ({code}): {last}"),
            None => format!("DynamoDB {operation} failed: {last}"),
        }
    }
}

/// The error code, if the chain names one, and the innermost message. An error the SDK
/// does not model ends in a dump such as `Error { code: "X", message: "...", ... }`: its
/// message is taken from there.
fn innermost(chain: &str) -> (Option<String>, String) {
    if let Some(start) = chain.find("Error { ") {
        let dump = &chain[start..];
        let code = quoted_field(dump, "code");
        let message = quoted_field(dump, "message")
            .unwrap_or_else(|| last_cause(chain[..start].trim_end_matches([' ', ':'])));
        return (code, strip_full_stop(&message));
    }
    let last = last_cause(chain);
    let code = chain
        .rsplit(": ")
        .nth(1)
        .filter(|segment| segment.ends_with("Exception") && !segment.contains(' '))
        .map(str::to_owned);
    (code, strip_full_stop(&last))
}

/// The value of `name: "..."` in a debug dump, unescaped.
fn quoted_field(dump: &str, name: &str) -> Option<String> {
    let start = dump.find(&format!("{name}: \""))? + name.len() + 3;
    let mut value = String::new();
    let mut chars = dump[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => value.extend(chars.next()),
            c => value.push(c),
        }
    }
    None
}

fn strip_full_stop(text: &str) -> String {
    text.trim().trim_end_matches('.').to_owned()
}

/// `DisplayErrorContext` ends with a debug dump of the whole error in parentheses: drop it.
fn error_chain(message: &str) -> &str {
    const DEBUG_MARKERS: [&str; 5] = [
        " (ServiceError(",
        " (DispatchFailure(",
        " (TimeoutError(",
        " (ResponseError(",
        " (ConstructionFailure(",
    ];
    DEBUG_MARKERS
        .iter()
        .filter_map(|marker| message.find(marker))
        .min()
        .map_or(message, |end| &message[..end])
        .trim()
}

/// An outcome's reason without the SDK's debug dump. A retryable ledger error's text
/// (`DynamoDB Op failed for a passing reason (...); retry`) is described as errors are,
/// also where it ends a longer reason (`could not quarantine (...): DynamoDB ...`).
pub fn clean_reason(reason: &str, table: &str) -> String {
    let (head, error) = reason
        .find("DynamoDB ")
        .map_or(("", reason), |at| reason.split_at(at));
    let sdk = error
        .strip_prefix("DynamoDB ")
        .and_then(|rest| rest.split_once(" failed for a passing reason ("))
        .and_then(|(operation, rest)| Some((operation, rest.strip_suffix("); retry")?)));
    if let Some((operation, message)) = sdk {
        return format!("{head}{}", describe_sdk(operation, None, message, table));
    }
    let chain = error_chain(reason);
    let mut text = chain.to_owned();
    let opened = chain.matches('(').count();
    let closed = chain.matches(')').count();
    for _ in closed..opened {
        text.push(')');
    }
    text
}

/// The innermost cause of a `a: b: c` chain, without the OS error number.
fn last_cause(chain: &str) -> String {
    let last = chain.rsplit(": ").next().unwrap_or(chain).trim();
    let last = match last.find(" (os error") {
        Some(end) => &last[..end],
        None => last,
    };
    if last.is_empty() {
        chain.to_owned()
    } else {
        last.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_table_reads_as_one_sentence() {
        let error = LedgerError::Rejected {
            operation: "Query",
            code: Some("ResourceNotFoundException".into()),
            message: "service error: ResourceNotFoundException: Cannot do operations on a non-existent table (ServiceError(ServiceError { source: ResourceNotFoundException(...) }))".into(),
        };
        let text = sentence(&describe(&error, "ledger"));
        assert!(
            text.starts_with("the table `ledger` does not exist"),
            "{text}"
        );
        assert!(!text.contains("ServiceError"), "{text}");
        assert!(text.ends_with('.'));
    }

    #[test]
    fn refused_credentials_are_told_by_their_code() {
        let error = LedgerError::Rejected {
            operation: "Query",
            code: Some("UnrecognizedClientException".into()),
            message: "service error: The security token included in the request is invalid".into(),
        };
        assert!(describe(&error, "t").starts_with("DynamoDB refused the request"));
        // The code decides, not a word in the message.
        let error = LedgerError::Rejected {
            operation: "Query",
            code: Some("ValidationException".into()),
            message: "service error: attribute accessdenied is reserved".into(),
        };
        assert!(describe(&error, "t").starts_with("DynamoDB Query failed (ValidationException)"));
    }

    #[test]
    fn refused_connection_names_no_debug_dump() {
        let error = LedgerError::Retryable {
            operation: "GetItem",
            code: None,
            message: "dispatch failure: io error: client error (Connect): tcp connect error: Connection refused (os error 111) (DispatchFailure(DispatchFailure { source: ConnectorError { kind: Io, source: hyper_util::client::legacy::Error(Connect, ...) } }))".into(),
        };
        let text = describe(&error, "ledger");
        assert!(text.contains("the connection was refused"), "{text}");
        assert!(!text.contains("DispatchFailure"), "{text}");
    }

    #[test]
    fn other_errors_keep_the_innermost_cause() {
        let error = LedgerError::Rejected {
            operation: "Query",
            code: Some("ValidationException".into()),
            message: "service error: ValidationException: One or more parameter values were invalid (ServiceError(...))".into(),
        };
        assert_eq!(
            describe(&error, "t"),
            "DynamoDB Query failed (ValidationException): One or more parameter values were invalid"
        );
        assert_eq!(sentence("a\n  b"), "a b.");
    }

    #[test]
    fn unmodelled_errors_give_their_code_and_message() {
        let error = LedgerError::Rejected {
            operation: "Query",
            code: None,
            message: r#"service error: unhandled error (ValidationException): Error { code: "ValidationException", message: "Invalid table/index name.  Names may contain \"-\".", aws_request_id: "b79d" } (ServiceError(ServiceError { source: Unhandled(...) }))"#.into(),
        };
        assert_eq!(
            sentence(&describe(&error, "x")),
            r#"DynamoDB Query failed (ValidationException): Invalid table/index name. Names may contain "-"."#
        );
        let error = LedgerError::Retryable {
            operation: "Query",
            code: None,
            message: "dispatch failure: other: missing signing region (DispatchFailure(...))"
                .into(),
        };
        assert!(describe(&error, "x").starts_with("no AWS region is configured"));
    }

    #[test]
    fn retry_reasons_read_like_errors() {
        let error = LedgerError::Retryable {
            operation: "TransactWriteItems",
            code: Some("ThrottlingException".into()),
            message: "service error: ThrottlingException: Rate of requests exceeds the allowed throughput. (ServiceError(ServiceError { source: ThrottlingException(...) }))".into(),
        };
        assert_eq!(
            clean_reason(&error.to_string(), "t"),
            "DynamoDB TransactWriteItems failed (ThrottlingException): Rate of requests exceeds the allowed throughput"
        );
        assert_eq!(
            clean_reason("invocation deadline reached before this write started", "t"),
            "invocation deadline reached before this write started"
        );
    }

    #[test]
    fn a_failed_quarantine_reads_like_the_error_behind_it() {
        let error = LedgerError::Retryable {
            operation: "PutItem",
            code: None,
            message: "dispatch failure: io error: client error (Connect): tcp connect error: Connection refused (os error 111) (DispatchFailure(...))".into(),
        };
        let reason = format!("could not quarantine (payload is not UTF-8): {error}");
        let text = clean_reason(&reason, "t");
        assert!(
            text.starts_with("could not quarantine (payload is not UTF-8): "),
            "{text}"
        );
        assert!(text.contains("the connection was refused"), "{text}");
        assert!(!text.contains("DispatchFailure"), "{text}");
    }
}
