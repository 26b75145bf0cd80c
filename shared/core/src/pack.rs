//! Packing consecutive items into requests under a service's limits (Segment's batch
//! requests, EventBridge's `PutEvents` calls): one greedy rule, in order.

use std::ops::Range;

/// What one request may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of a request, its overhead and separators included.
    pub max_bytes: usize,
    /// Items of a request.
    pub max_items: usize,
    /// Bytes every request has whatever it holds.
    pub overhead: usize,
    /// Bytes between two items.
    pub separator: usize,
}

/// Consecutive items, by their sizes, grouped into requests within `limits`. An item too
/// large for a request on its own still gets one (the service refuses it, not this).
pub fn pack(sizes: &[usize], limits: Limits) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut bytes = limits.overhead;
    for (i, size) in sizes.iter().enumerate() {
        let added = size + if i > start { limits.separator } else { 0 };
        let full = i - start == limits.max_items || bytes + added > limits.max_bytes;
        if i > start && full {
            ranges.push(start..i);
            start = i;
            bytes = limits.overhead + size;
        } else {
            bytes += added;
        }
    }
    if start < sizes.len() {
        ranges.push(start..sizes.len());
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_stay_within_bytes_and_items_and_an_oversized_item_goes_alone() {
        let limits = Limits {
            max_bytes: 100,
            max_items: 3,
            overhead: 10,
            separator: 1,
        };
        // 10 + 40 + 1 + 40 = 91; a third of 40 would make 132.
        assert_eq!(pack(&[40, 40, 40], limits), vec![0..2, 2..3]);
        assert_eq!(pack(&[1; 7], limits), vec![0..3, 3..6, 6..7]);
        assert_eq!(pack(&[5, 500, 5], limits), vec![0..1, 1..2, 2..3]);
        assert!(pack(&[], limits).is_empty());
    }
}
