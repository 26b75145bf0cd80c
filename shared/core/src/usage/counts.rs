//! Usage counts and the one way they are summed: checked, so that a sum that does not fit a
//! 64-bit count is an error naming whose usage and which period, never a wrapped or
//! saturated number on an invoice.

use crate::event::DataVolume;

/// What one booking used in one UTC hour (or any span): bytes and usage events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HourUsage {
    pub usage: DataVolume,
    pub events: u64,
}

/// A sum of usage too large for a 64-bit count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the usage of {subject} for {period} does not fit a 64-bit count")]
pub struct Overflow {
    /// Whose usage: `SIM HS..`, `the table's total`...
    pub subject: String,
    /// Which period: a range, a day or a month.
    pub period: String,
}

impl Overflow {
    pub fn new(subject: impl Into<String>, period: impl ToString) -> Self {
        Overflow {
            subject: subject.into(),
            period: period.to_string(),
        }
    }
}

impl DataVolume {
    /// The sum, or `None` if a count would not fit.
    pub fn checked_add(self, other: DataVolume) -> Option<DataVolume> {
        Some(DataVolume {
            upload: self.upload.checked_add(other.upload)?,
            download: self.download.checked_add(other.download)?,
            total: self.total.checked_add(other.total)?,
        })
    }

    /// The difference, or `None` if `other` is larger in any count.
    pub fn checked_sub(self, other: DataVolume) -> Option<DataVolume> {
        Some(DataVolume {
            upload: self.upload.checked_sub(other.upload)?,
            download: self.download.checked_sub(other.download)?,
            total: self.total.checked_sub(other.total)?,
        })
    }
}

impl HourUsage {
    /// One usage window.
    pub fn window(usage: DataVolume) -> Self {
        HourUsage { usage, events: 1 }
    }

    /// The sum, or `None` if a count would not fit.
    pub fn checked_add(self, other: HourUsage) -> Option<HourUsage> {
        Some(HourUsage {
            usage: self.usage.checked_add(other.usage)?,
            events: self.events.checked_add(other.events)?,
        })
    }

    /// The difference, or `None` if `other` is larger in any count.
    pub fn checked_sub(self, other: HourUsage) -> Option<HourUsage> {
        Some(HourUsage {
            usage: self.usage.checked_sub(other.usage)?,
            events: self.events.checked_sub(other.events)?,
        })
    }

    /// `self + other`, or the overflow of `subject`'s usage in `period`.
    pub fn plus(
        self,
        other: HourUsage,
        subject: impl FnOnce() -> (String, String),
    ) -> Result<HourUsage, Overflow> {
        self.checked_add(other).ok_or_else(|| {
            let (subject, period) = subject();
            Overflow { subject, period }
        })
    }
}

/// The checked sum of `parts`; `None` if it does not fit.
pub fn checked_sum<'a>(parts: impl IntoIterator<Item = &'a HourUsage>) -> Option<HourUsage> {
    parts
        .into_iter()
        .try_fold(HourUsage::default(), |sum, part| sum.checked_add(*part))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(total: u64) -> HourUsage {
        HourUsage::window(DataVolume {
            upload: 0,
            download: total,
            total,
        })
    }

    #[test]
    fn sums_are_exact_or_an_error_naming_the_subject_and_period() {
        let sum = bytes(1).plus(bytes(2), || unreachable!()).unwrap();
        assert_eq!((sum.usage.total, sum.events), (3, 2));
        let error = bytes(u64::MAX)
            .plus(bytes(1), || ("SIM HS1".into(), "2024-11".into()))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "the usage of SIM HS1 for 2024-11 does not fit a 64-bit count"
        );
        assert_eq!(checked_sum(&[bytes(u64::MAX), bytes(1)]), None);
        assert_eq!(
            checked_sum(&[bytes(4), bytes(5)]).map(|s| s.events),
            Some(2)
        );
        assert_eq!(bytes(1).checked_sub(bytes(2)), None);
    }
}
