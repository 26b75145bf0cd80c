//! Alerts before the invoice: rules (a usage sum reaching a threshold, a SIM gone silent,
//! an event whose total is not its upload plus download), what a batch of stored events
//! means for them, and the alert record.
//!
//! - [`rules`]: the rules file, read whole or refused with the field and the reason;
//! - [`evaluate`]: a batch of stored events sorted into the sums it adds to, and the
//!   thresholds a sum reaches;
//! - [`record`]: the alert as stored, listed and put on the event bus, and its key.

pub mod evaluate;
pub mod record;
pub mod rules;

pub use evaluate::{
    Added, BatchPlan, LastArrival, Observed, SumKey, plan, silence_alert, usage_alerts,
};
pub use record::{Alert, AlertKind};
pub use rules::{Per, Period, Rule, RuleKind, Rules, RulesError, Scope, Thresholds};
