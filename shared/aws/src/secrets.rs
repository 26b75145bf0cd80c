//! Reading a secret's text from Secrets Manager: the webhook's signing secrets and the
//! forwarder's Segment write key come this one way. What the text must hold is read by
//! `kore_ingest_core::secrets`.

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::DisplayErrorContext;

/// The secret named by `variable` (its ARN in `arn`) could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {variable}: {reason}")]
pub struct SecretReadError {
    pub variable: &'static str,
    pub reason: String,
}

/// The current text of the secret `arn`, which the variable `variable` names.
pub async fn read_secret(
    client: &Client,
    variable: &'static str,
    arn: &str,
) -> Result<String, SecretReadError> {
    let output = client
        .get_secret_value()
        .secret_id(arn.trim())
        .send()
        .await
        .map_err(|e| SecretReadError {
            variable,
            reason: DisplayErrorContext(e).to_string(),
        })?;
    Ok(output.secret_string().unwrap_or_default().to_owned())
}
