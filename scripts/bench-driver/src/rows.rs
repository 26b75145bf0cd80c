//! The table `scripts/bench` prints: one markdown row per figure.

/// One row: what was measured, the figure, and its target (empty if none).
pub fn row(what: &str, measured: &str, target: &str) {
    println!("| {what} | {measured} | {target} |");
}
