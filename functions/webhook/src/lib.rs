//! The webhook behind a Lambda Function URL.
//!
//! - `POST /events`: Event Streams deliveries from KORE or Twilio (a JSON array of up to 50
//!   CloudEvents, or one object);
//! - `POST` or `GET /callbacks/{sims|sms-commands|ip-commands|esim-profiles}`: callbacks;
//! - `GET /health`.
//!
//! The modules, in the order a request meets them: `webhook` (decode, refuse, answer),
//! `request` (route and content type), `auth` (signatures, secrets rotation), `events` and
//! `callbacks` (storage through the ledger's port), `spill` (the stream when storage fails),
//! `answer` (responses, and the quarantine before a 4xx); `config` reads the environment.

mod answer;
mod auth;
mod callbacks;
pub mod config;
mod events;
mod request;
mod spill;
mod webhook;

pub use config::WebhookConfig;
pub use webhook::{Webhook, handle};
