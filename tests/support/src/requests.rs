//! Requests as the webhook receives them: a Function URL event, and Twilio's signature of a
//! JSON body.

use serde_json::{Value, json};

/// A Lambda Function URL request as Lambda delivers it (payload format 2.0).
pub fn function_url_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest {
    use base64::Engine;
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect();
    let (body, is_base64) = match body.map(std::str::from_utf8) {
        None => (Value::Null, false),
        Some(Ok(text)) => (Value::String(text.to_owned()), false),
        Some(Err(_)) => (
            Value::String(
                base64::engine::general_purpose::STANDARD.encode(body.unwrap_or_default()),
            ),
            true,
        ),
    };
    serde_json::from_value(json!({
        "version": "2.0",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abc123",
            "domainName": "abc123.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abc123",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9", "userAgent": "KoreProxy/1.1"},
            "requestId": format!("req-{}", fastrand::u64(..)),
            "routeKey": "$default",
            "stage": "$default",
            "time": "03/Nov/2024:10:15:00 +0000",
            "timeEpoch": 1_730_628_900_000i64,
        },
        "body": body,
        "isBase64Encoded": is_base64,
    }))
    .expect("a valid Function URL request")
}

/// How Twilio signs a JSON body sent to `url`: the query it appends (`bodySHA256=...`) and
/// the `X-Twilio-Signature` over the URL with that query.
pub fn twilio_json_signature(token: &str, url: &str, body: &[u8]) -> (String, String) {
    use kore_ingest_core::signature::{twilio_signature, twilio_url_with_body_hash};
    let signed_url = twilio_url_with_body_hash(url, body);
    let query = signed_url
        .split_once('?')
        .map(|(_, q)| q.to_owned())
        .unwrap_or_default();
    (query, twilio_signature(token.as_bytes(), &signed_url, &[]))
}

/// A KORE webhook batch POSTed to `path` of the webhook published at `public_url`, signed
/// with `secret` as KORE signs it (`Kore-Signature`), as Lambda delivers it.
pub fn kore_signed_post(
    secret: &str,
    public_url: &str,
    path: &str,
    body: &[u8],
) -> aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest {
    let signature = kore_ingest_core::signature::kore_signature(
        secret.as_bytes(),
        "POST",
        &format!("{public_url}{path}"),
        body,
    );
    function_url_request(
        "POST",
        path,
        "",
        &[
            ("content-type", "application/json"),
            ("kore-signature", &signature),
        ],
        Some(body),
    )
}
