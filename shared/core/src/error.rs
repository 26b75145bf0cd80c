//! The one error of the ledger, whatever implements it: what failed, whether a retry can
//! help, and the service's code when there is one.

use crate::usage::Overflow;

/// Why the ledger could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("DynamoDB {operation} failed for a passing reason ({message}); retry")]
    Retryable {
        operation: &'static str,
        /// The service's error code (`ThrottlingException`...), when it answered with one.
        code: Option<String>,
        message: String,
    },
    #[error("DynamoDB {operation} rejected the request: {message}")]
    Rejected {
        operation: &'static str,
        code: Option<String>,
        message: String,
    },
    #[error("table definition: {0}")]
    Definition(String),
    #[error("stored item {pk} is malformed: {reason}")]
    CorruptItem { pk: String, reason: String },
    #[error("cannot store event: {0}")]
    Invalid(String),
    /// A sum of stored usage that does not fit a 64-bit count, naming whose and when.
    #[error(transparent)]
    Overflow(#[from] Overflow),
}

impl LedgerError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, LedgerError::Retryable { .. })
    }

    /// The service's error code, if DynamoDB answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            LedgerError::Retryable { code, .. } | LedgerError::Rejected { code, .. } => {
                code.as_deref()
            }
            _ => None,
        }
    }
}
