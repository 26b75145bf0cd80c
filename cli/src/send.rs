//! `kore-usage send`: one request to a webhook, signed the way KORE or Twilio sign it, with
//! the signing code the webhook verifies against (`kore_ingest_core::signature`). The one
//! signer of the project: `scripts/send-test-webhook` and the demo's traffic use it.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use kore_ingest_core::callback::parse_form;
use kore_ingest_core::signature::{
    kore_signature, twilio_signature, twilio_url_with_body_hash, url_with_query,
};
use serde::Serialize;

use crate::args::Format;
use crate::failure::{Failure, Result};
use crate::output::{json, print};

const EXAMPLES: &str = "\
Examples:
  kore-usage send --secret \"$KORE_SECRET\" --body batch.json https://xyz.lambda-url.eu-west-1.on.aws/events
  kore-usage send --provider twilio --secret \"$TWILIO_AUTH_TOKEN\" https://hooks.example.com/events < batch.json
  kore-usage send --callback -H 'Kore-Idempotency-Token: RQa48ec9b6ef475034c35566c02b654243' \\
      --secret \"$KORE_SECRET\" --body sim-status.form https://hooks.example.com/callbacks/sims
  kore-usage send --callback --get --provider twilio --secret \"$TWILIO_AUTH_TOKEN\" \\
      --body command.form https://hooks.example.com/callbacks/sms-commands
  kore-usage send --sign-url http://127.0.0.1:9000/lambda-url/webhook/events --dry-run ... URL

KORE: Kore-Signature, the hex SHA-256 of secret + METHOD + URL (without query and fragment)
+ body. Twilio: X-Twilio-Signature, the base64 HMAC-SHA1 of the URL with its query and, for
a form POST, the sorted parameters; a JSON body goes with bodySHA256=<hex SHA-256 of the
body> in the query of both the requested and the signed URL. A GET callback sends the form
as the query string (KORE's signature does not cover it: the webhook refuses such requests
unless ALLOW_KORE_GET_CALLBACKS).

The answer is printed (`HTTP <status>` and the body, or a JSON object with `status` and
`body`). Exit 0 when the webhook answered 2xx, 1 when it answered otherwise or could not be
reached, 2 on wrong usage.";

/// Who signs the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Signer {
    Kore,
    Twilio,
}

/// Send one signed request to a webhook, as KORE or Twilio would.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Where to send it: an events endpoint (…/events) or a callback route (…/callbacks/sims).
    #[arg(value_name = "URL")]
    url: String,
    /// Who signs: kore (Kore-Signature) or twilio (X-Twilio-Signature).
    #[arg(long, value_enum, default_value_t = Signer::Kore)]
    provider: Signer,
    /// The KORE secret or the Twilio Auth Token to sign with.
    #[arg(
        long,
        env = "KORE_USAGE_SIGNING_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    secret: Option<String>,
    /// Send no signature header at all (accepted only with ALLOW_UNSIGNED).
    #[arg(long)]
    unsigned: bool,
    /// The body is a callback form (application/x-www-form-urlencoded), not CloudEvents.
    #[arg(long)]
    callback: bool,
    /// Send the callback as GET, its form as the query string.
    #[arg(long, requires = "callback")]
    get: bool,
    /// Sign this URL instead of URL: what the webhook verifies against (WEBHOOK_PUBLIC_URL
    /// plus the route) when the request goes through another address.
    #[arg(long, value_name = "URL")]
    sign_url: Option<String>,
    /// A header to send as well, `Name: value` (repeatable): an idempotency token, a
    /// User-Agent (default KoreProxy/1.1 or TwilioProxy/1.1).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The body: a file, or - for standard input.
    #[arg(long, value_name = "FILE", default_value = "-")]
    body: String,
    /// Seconds to wait for the answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 15.0)]
    timeout: f64,
    /// Print the request that would be sent, and send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// A request as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Request {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    #[serde(serialize_with = "lossy_text")]
    pub body: Vec<u8>,
}

fn lossy_text<S: serde::Serializer>(
    body: &[u8],
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.serialize_str(&String::from_utf8_lossy(body))
}

/// What a request is and who signs it, from the arguments.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    pub url: &'a str,
    pub sign_url: Option<&'a str>,
    /// The provider and secret that sign; `None`: unsigned.
    pub signer: Option<(Signer, &'a str)>,
    pub callback: bool,
    pub get: bool,
    pub headers: &'a [String],
}

/// The request `plan` makes of `body`, signed.
pub fn build(plan: &Plan<'_>, body: Vec<u8>) -> std::result::Result<Request, String> {
    let Some((scheme, rest)) = plan.url.split_once("://") else {
        return Err(format!("`{}` is not an http(s) URL", plan.url));
    };
    if !matches!(scheme, "http" | "https") || rest.is_empty() {
        return Err(format!("`{}` is not an http(s) URL", plan.url));
    }
    let sign_url = plan.sign_url.unwrap_or(plan.url);
    let form = if plan.callback {
        Some(parse_form(&body).map_err(|e| format!("the body is not a callback form: {e}"))?)
    } else {
        None
    };
    let (method, content_type) = match (plan.callback, plan.get) {
        (false, _) => ("POST", Some("application/json")),
        (true, false) => ("POST", Some("application/x-www-form-urlencoded")),
        (true, true) => ("GET", None),
    };
    let mut request = Request {
        method,
        url: plan.url.to_owned(),
        headers: Vec::new(),
        body,
    };
    let mut signed_url = sign_url.to_owned();
    if plan.get {
        // A GET callback's payload is its query.
        let query = String::from_utf8_lossy(&std::mem::take(&mut request.body)).into_owned();
        request.url = url_with_query(&request.url, &query);
        signed_url = url_with_query(&signed_url, &query);
    }
    if let Some(content_type) = content_type {
        request
            .headers
            .push(("Content-Type".into(), content_type.into()));
    }
    let user_agent = match plan.signer {
        Some((Signer::Twilio, _)) => "TwilioProxy/1.1",
        _ => "KoreProxy/1.1",
    };
    match plan.signer {
        None => {}
        Some((Signer::Kore, secret)) => {
            let signature = kore_signature(secret.as_bytes(), method, &signed_url, &request.body);
            request.headers.push(("Kore-Signature".into(), signature));
        }
        Some((Signer::Twilio, token)) => {
            let params = match (&form, plan.get) {
                (Some(form), false) => form.clone(),
                _ => Vec::new(),
            };
            if !plan.callback {
                // JSON: the body is covered through its hash in the query.
                request.url = twilio_url_with_body_hash(&request.url, &request.body);
                signed_url = twilio_url_with_body_hash(&signed_url, &request.body);
            }
            let signature = twilio_signature(token.as_bytes(), &signed_url, &params);
            request
                .headers
                .push(("X-Twilio-Signature".into(), signature));
        }
    }
    let mut agent_given = false;
    for header in plan.headers {
        let Some((name, value)) = header.split_once(':') else {
            return Err(format!("header `{header}` is not `Name: value`"));
        };
        let (name, value) = (name.trim(), value.trim());
        http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a header name"))?;
        http::HeaderValue::from_str(value)
            .map_err(|_| format!("the value of header `{name}` is not a header value"))?;
        agent_given |= name.eq_ignore_ascii_case("user-agent");
        request.headers.push((name.to_owned(), value.to_owned()));
    }
    if !agent_given {
        request
            .headers
            .push(("User-Agent".into(), user_agent.into()));
    }
    Ok(request)
}

#[derive(Debug, Serialize)]
struct Answer<'a> {
    status: u16,
    body: &'a str,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let signer = match (&args.secret, args.unsigned) {
        (_, true) => None,
        (Some(secret), false) if !secret.is_empty() => Some((args.provider, secret.as_str())),
        _ => {
            return Err(Failure::Usage(
                "no signing secret: pass --secret (or set KORE_USAGE_SIGNING_SECRET), or --unsigned"
                    .into(),
            ));
        }
    };
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        return Err(Failure::Usage(
            "--timeout must be a positive number of seconds".into(),
        ));
    }
    let body = read_body(&args.body)?;
    let plan = Plan {
        url: &args.url,
        sign_url: args.sign_url.as_deref(),
        signer,
        callback: args.callback,
        get: args.get,
        headers: &args.headers,
    };
    let request = build(&plan, body).map_err(Failure::Usage)?;

    if args.dry_run {
        let text = match args.format {
            Format::Json => json(&request)?,
            Format::Table => {
                let mut text = format!("{} {}\n", request.method, request.url);
                for (name, value) in &request.headers {
                    text.push_str(&format!("{name}: {value}\n"));
                }
                text.push('\n');
                text.push_str(&String::from_utf8_lossy(&request.body));
                text.push('\n');
                text
            }
        };
        print(&text)?;
        return Ok(ExitCode::SUCCESS);
    }

    let (status, text) = send(&request, Duration::from_secs_f64(args.timeout))
        .await
        .map_err(|reason| {
            Failure::Failed(format!("{} {}: {reason}", request.method, request.url))
        })?;
    let printed = match args.format {
        Format::Json => json(&Answer {
            status,
            body: &text,
        })?,
        Format::Table if text.is_empty() => format!("HTTP {status}\n"),
        Format::Table => format!("HTTP {status}\n{}\n", text.trim_end_matches('\n')),
    };
    print(&printed)?;
    if (200..300).contains(&status) {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: the webhook answered {status}.");
        Ok(ExitCode::from(1))
    }
}

fn read_body(source: &str) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    let read = if source == "-" {
        std::io::stdin().read_to_end(&mut body).map(|_| ())
    } else {
        std::fs::read(source).map(|bytes| body = bytes)
    };
    read.map_err(|e| Failure::Failed(format!("cannot read the body from {source}: {e}")))?;
    Ok(body)
}

/// Sends `request` over HTTP or HTTPS; the status and the body as text.
async fn send(request: &Request, timeout: Duration) -> std::result::Result<(u16, String), String> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        // A redirect would send the signed request somewhere it was not signed for.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| chain(&e))?;
    let method =
        reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|e| e.to_string())?;
    let mut outgoing = client
        .request(method, &request.url)
        .body(request.body.clone());
    for (name, value) in &request.headers {
        outgoing = outgoing.header(name, value);
    }
    let response = outgoing.send().await.map_err(|e| match e.is_timeout() {
        true => format!("no answer within {} s", timeout.as_secs_f64()),
        false => chain(&e),
    })?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| chain(&e))?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// An error with its causes, which is where the HTTP client says what went wrong.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use kore_ingest_core::signature::{
        KORE_SIGNATURE_HEADER, TWILIO_SIGNATURE_HEADER, verify_kore_signature,
        verify_twilio_signature,
    };

    use super::*;

    const LOCAL: &str = "http://127.0.0.1:9000/lambda-url/webhook";
    const PUBLIC: &str = "https://hooks.example.com";

    fn plan<'a>(url: &'a str, signer: Option<(Signer, &'a str)>) -> Plan<'a> {
        Plan {
            url,
            sign_url: None,
            signer,
            callback: false,
            get: false,
            headers: &[],
        }
    }

    fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
        request
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn kore_events_verify_against_the_signed_url() {
        let url = format!("{LOCAL}/events");
        let sign_url = format!("{PUBLIC}/events");
        let mut plan = plan(&url, Some((Signer::Kore, "s3cr3t")));
        plan.sign_url = Some(&sign_url);
        let request = build(&plan, b"[]".to_vec()).unwrap();
        assert_eq!(
            (request.method, request.url.as_str()),
            ("POST", url.as_str())
        );
        assert_eq!(header(&request, "content-type"), Some("application/json"));
        assert_eq!(header(&request, "user-agent"), Some("KoreProxy/1.1"));
        let signature = header(&request, KORE_SIGNATURE_HEADER);
        assert!(verify_kore_signature(&["s3cr3t"], "POST", &sign_url, b"[]", signature).is_ok());
        assert!(verify_kore_signature(&["s3cr3t"], "POST", &url, b"[]", signature).is_err());
    }

    #[test]
    fn twilio_events_carry_the_body_hash_in_both_urls() {
        let url = format!("{PUBLIC}/events");
        let request = build(
            &plan(&url, Some((Signer::Twilio, "token"))),
            b"[1]".to_vec(),
        )
        .unwrap();
        assert_eq!(request.url, twilio_url_with_body_hash(&url, b"[1]"));
        let signature = header(&request, TWILIO_SIGNATURE_HEADER);
        assert!(verify_twilio_signature(&["token"], &request.url, &[], b"[1]", signature).is_ok());
        assert!(verify_twilio_signature(&["token"], &request.url, &[], b"[2]", signature).is_err());
    }

    #[test]
    fn callback_forms_are_signed_as_each_provider_signs_them() {
        let url = format!("{PUBLIC}/callbacks/sims");
        let form = b"SimSid=HS1&SimStatus=active".to_vec();
        let params = parse_form(&form).unwrap();

        let mut post = plan(&url, Some((Signer::Twilio, "token")));
        post.callback = true;
        let request = build(&post, form.clone()).unwrap();
        assert_eq!(request.url, url);
        assert_eq!(
            header(&request, "content-type"),
            Some("application/x-www-form-urlencoded")
        );
        let signature = header(&request, TWILIO_SIGNATURE_HEADER);
        assert!(verify_twilio_signature(&["token"], &url, &params, &form, signature).is_ok());

        let mut get = post.clone();
        get.get = true;
        let request = build(&get, form.clone()).unwrap();
        assert_eq!(request.method, "GET");
        assert_eq!(request.url, format!("{url}?SimSid=HS1&SimStatus=active"));
        assert!(request.body.is_empty());
        assert_eq!(header(&request, "content-type"), None);
        let signature = header(&request, TWILIO_SIGNATURE_HEADER);
        assert!(verify_twilio_signature(&["token"], &request.url, &[], b"", signature).is_ok());

        let mut kore = get;
        kore.signer = Some((Signer::Kore, "s3cr3t"));
        let request = build(&kore, form).unwrap();
        let signature = header(&request, KORE_SIGNATURE_HEADER);
        assert!(verify_kore_signature(&["s3cr3t"], "GET", &request.url, b"", signature).is_ok());
    }

    #[test]
    fn headers_unsigned_requests_and_bad_input() {
        let url = format!("{PUBLIC}/events");
        let headers = vec![
            "Kore-Idempotency-Token: RQ1".to_owned(),
            "user-agent: tester/1".to_owned(),
        ];
        let mut unsigned = plan(&url, None);
        unsigned.headers = &headers;
        let request = build(&unsigned, b"[]".to_vec()).unwrap();
        assert_eq!(header(&request, KORE_SIGNATURE_HEADER), None);
        assert_eq!(header(&request, TWILIO_SIGNATURE_HEADER), None);
        assert_eq!(header(&request, "kore-idempotency-token"), Some("RQ1"));
        assert_eq!(header(&request, "user-agent"), Some("tester/1"));
        assert_eq!(
            request
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("user-agent"))
                .count(),
            1
        );

        let bad = ["no colon".to_owned()];
        unsigned.headers = &bad;
        assert!(
            build(&unsigned, Vec::new())
                .unwrap_err()
                .contains("Name: value")
        );
        assert!(build(&plan("ftp://x/events", None), Vec::new()).is_err());
        assert!(build(&plan("hooks.example.com/events", None), Vec::new()).is_err());
        let mut not_a_form = plan(&url, None);
        not_a_form.callback = true;
        assert!(build(&not_a_form, vec![0xff]).is_err());
    }
}
