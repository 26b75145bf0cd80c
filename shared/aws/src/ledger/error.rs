//! How the SDK's errors become the port's [`LedgerError`]: retryable when the same request
//! can succeed later, rejected otherwise, with the service's code when it gave one.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use kore_ingest_core::port::LedgerError;

/// DynamoDB error codes after which the same request can succeed.
const RETRYABLE_CODES: [&str; 8] = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
    "ReplicatedWriteConflictException",
];

/// The ledger error of a failed `operation`.
pub fn from_sdk<E, R>(operation: &'static str, error: SdkError<E, R>) -> LedgerError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let message = DisplayErrorContext(&error).to_string();
    let (code, retryable) = match &error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().map(str::to_owned);
            let retryable = code
                .as_deref()
                .is_none_or(|c| c.is_empty() || RETRYABLE_CODES.contains(&c));
            (code, retryable)
        }
        SdkError::ConstructionFailure(_) => (None, false),
        // Timeouts, connection failures and unreadable responses: the request may or may
        // not have been applied, which the conditional writes make safe to repeat.
        _ => (None, true),
    };
    if retryable {
        LedgerError::Retryable {
            operation,
            code,
            message,
        }
    } else {
        LedgerError::Rejected {
            operation,
            code,
            message,
        }
    }
}

/// Whether a write failed its condition: the error code, whatever the operation.
pub(crate) fn condition_failed<E, R>(error: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    matches!(error, SdkError::ServiceError(service)
        if service.err().code() == Some("ConditionalCheckFailedException"))
}

/// A request the SDK could not even build (a bug of ours, never of the input's).
pub(crate) fn build_error(error: aws_sdk_dynamodb::error::BuildError) -> LedgerError {
    LedgerError::Invalid(error.to_string())
}
