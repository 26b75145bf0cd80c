//! What both pollers are told: their options, and the settings made of them.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

pub const REGION: &str = "us-east-1";
/// The options both pollers take.
#[derive(Debug, Args)]
pub struct PollArgs {
    /// cargo lambda watch address [default: http://127.0.0.1:$LAMBDA_PORT, port 9000].
    #[arg(long, value_name = "URL")]
    pub lambda_url: Option<String>,
    /// Records per invocation, 1 to 10000 (1000 on a DynamoDB stream).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub batch_size: i32,
    /// Seconds between polls of an idle shard; retries back off from it, doubling up to
    /// 10 s.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.5, value_parser = positive_seconds)]
    pub interval: f64,
    /// Retries from the same starting position after a failed invocation, before the
    /// records go to the dead-letter file.
    #[arg(long, default_value_t = 5)]
    pub max_retries: u32,
    /// Start at LATEST (only new records) instead of TRIM_HORIZON.
    #[arg(long)]
    pub from_latest: bool,
    /// Exit 0 once every shard has no more records (for tests).
    #[arg(long)]
    pub once: bool,
    /// Seconds to wait for one invocation; the first one compiles the function.
    #[arg(long, value_name = "SECONDS", default_value_t = 900.0, value_parser = positive_seconds)]
    pub invoke_timeout: f64,
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds.is_finite() => Ok(seconds),
        _ => Err("must be a number of seconds > 0".into()),
    }
}

/// An environment variable, or `default` when it is unset or empty.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// `.local/<file>` in the repository: where the local stack keeps its state.
pub fn local_file(file: &str) -> PathBuf {
    // This crate is scripts/pollers: the repository is two levels up.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(".local")
        .join(file)
}

/// The settings of a poller, with the defaults from the environment filled in.
pub struct Settings {
    pub function: String,
    pub lambda_url: String,
    pub batch_size: i32,
    pub interval: Duration,
    pub max_retries: u32,
    pub from_latest: bool,
    pub once: bool,
    pub dlq: PathBuf,
    pub invoke_timeout: Duration,
}

impl Settings {
    pub fn new(args: PollArgs, function: String, dlq: PathBuf) -> Self {
        Settings {
            function,
            lambda_url: args
                .lambda_url
                .unwrap_or_else(|| format!("http://127.0.0.1:{}", env_or("LAMBDA_PORT", "9000"))),
            batch_size: args.batch_size,
            interval: Duration::from_secs_f64(args.interval),
            max_retries: args.max_retries,
            from_latest: args.from_latest,
            once: args.once,
            dlq,
            invoke_timeout: Duration::from_secs_f64(args.invoke_timeout),
        }
    }
}
