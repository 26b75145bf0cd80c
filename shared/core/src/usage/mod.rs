//! Usage: the booking rule, checked sums, queries the way UsageRecords answers them, and
//! data sessions.
//!
//! - `booking`: where a usage window is booked, and the fold of events into a day's booking;
//! - `counts`: usage counts and their checked sums;
//! - `query`: usage records per account, bucket and grouping dimension;
//! - `sessions`: a SIM's data sessions and their gaps.

mod booking;
mod counts;
mod query;
mod sessions;

pub use booking::{Booking, BookingNames, DayBooking, fold};
pub use counts::{HourUsage, Overflow, checked_sum};
pub use query::{
    Attribution, Granularity, GroupBy, GroupValue, Period, QueryError, UsageCell, UsageFilters,
    UsageQuery, UsageRecord, aggregate, aggregate_attributed, aggregate_billed, per_sim,
};
pub use sessions::{SessionSummary, sessions_of};
