//! The two charts, as inline SVG on whole pixels (`crispEdges`): stacked columns over time
//! and one stacked bar of shares. Every length is integer arithmetic on the exact bytes, so
//! a segment is its share of the bar to within a pixel, and the same figures draw the same
//! bytes.

use std::fmt::Write;

use super::render::escape;
use crate::output::human_bytes;

/// Width of the share bar, in pixels. Wider than the columns' plot, so no row of the
/// columns holds as many coloured pixels as the share bar (the rendering test finds the bar
/// that way).
pub const SHARE_WIDTH: u64 = 760;
const SHARE_HEIGHT: u64 = 28;
const CHART_WIDTH: u64 = 760;
const PLOT_LEFT: u64 = 76;
const PLOT_WIDTH: u64 = 672;
const PLOT_TOP: u64 = 8;
const PLOT_HEIGHT: u64 = 200;
const CHART_HEIGHT: u64 = 244;

/// One column: its axis label and a value per series (in series order).
pub struct Column {
    pub label: String,
    pub values: Vec<u64>,
}

/// `numerator * scale / denominator`, rounded to the nearest pixel.
fn pixels(numerator: u64, scale: u64, denominator: u64) -> u64 {
    if denominator == 0 {
        return 0;
    }
    let exact = u128::from(numerator) * u128::from(scale);
    let d = u128::from(denominator);
    u64::try_from((exact + d / 2) / d).unwrap_or(scale)
}

/// The running sums of `values`, from 0: segment `i` spans `cumulative[i]..cumulative[i+1]`.
fn cumulative(values: &[u64]) -> Vec<u64> {
    let mut sums = vec![0u64];
    for value in values {
        sums.push(sums.last().copied().unwrap_or(0).saturating_add(*value));
    }
    sums
}

fn open(out: &mut String, id: &str, width: u64, height: u64, title: &str, description: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\" aria-labelledby=\"{id}-title {id}-desc\" \
         shape-rendering=\"crispEdges\"><title id=\"{id}-title\">{}</title>\
         <desc id=\"{id}-desc\">{}</desc>",
        escape(title),
        escape(description)
    );
}

/// Stacked columns: one per bucket, the series (one colour each) stacked from the bottom in order, all on one
/// scale (the largest column's total), with the scale's top and middle labelled.
pub fn columns(
    id: &str,
    title: &str,
    description: &str,
    colours: &[&str],
    columns: &[Column],
) -> String {
    let mut out = String::new();
    open(&mut out, id, CHART_WIDTH, CHART_HEIGHT, title, description);
    let max = columns
        .iter()
        .map(|c| c.values.iter().fold(0u64, |a, v| a.saturating_add(*v)))
        .max()
        .unwrap_or(0);
    let bottom = PLOT_TOP + PLOT_HEIGHT;
    for (fraction, label) in [
        (0, "0 B".to_owned()),
        (1, human_bytes(max / 2)),
        (2, human_bytes(max)),
    ] {
        let y = bottom - pixels(fraction, PLOT_HEIGHT, 2);
        let _ = write!(
            out,
            "<line x1=\"{PLOT_LEFT}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#d9d9d9\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"11\" fill=\"#444\">{}</text>",
            PLOT_LEFT + PLOT_WIDTH,
            PLOT_LEFT - 6,
            y + 4,
            escape(&label)
        );
    }
    let n = columns.len() as u64;
    // Label about twelve columns at most, evenly.
    let every = n.div_ceil(12).max(1);
    for (i, column) in columns.iter().enumerate() {
        let i = i as u64;
        let left = PLOT_LEFT + i * PLOT_WIDTH / n.max(1);
        let right = PLOT_LEFT + (i + 1) * PLOT_WIDTH / n.max(1);
        let gap = if right - left > 4 {
            (right - left) / 6
        } else {
            0
        };
        let (x, width) = (left + gap, (right - left).saturating_sub(2 * gap).max(1));
        let sums = cumulative(&column.values);
        for (colour, span) in colours.iter().zip(sums.windows(2)) {
            let top = bottom - pixels(span[1], PLOT_HEIGHT, max);
            let base = bottom - pixels(span[0], PLOT_HEIGHT, max);
            if base > top {
                let _ = write!(
                    out,
                    "<rect x=\"{x}\" y=\"{top}\" width=\"{width}\" height=\"{}\" fill=\"{}\"/>",
                    base - top,
                    colour
                );
            }
        }
        if i.is_multiple_of(every) {
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\" fill=\"#444\">{}</text>",
                x + width / 2,
                bottom + 16,
                escape(&column.label)
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// One bar, the whole width, split into the series' shares of their sum.
pub fn share_bar(
    id: &str,
    title: &str,
    description: &str,
    colours: &[&str],
    values: &[u64],
) -> String {
    let mut out = String::new();
    open(&mut out, id, SHARE_WIDTH, SHARE_HEIGHT, title, description);
    let sums = cumulative(values);
    let total = sums.last().copied().unwrap_or(0);
    for (colour, span) in colours.iter().zip(sums.windows(2)) {
        let left = pixels(span[0], SHARE_WIDTH, total);
        let right = pixels(span[1], SHARE_WIDTH, total);
        if right > left {
            let _ = write!(
                out,
                "<rect x=\"{left}\" y=\"0\" width=\"{}\" height=\"{SHARE_HEIGHT}\" fill=\"{}\"/>",
                right - left,
                colour
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_their_share_of_the_bar_to_a_pixel_and_fill_it() {
        let colours = ["#111111", "#222222", "#333333"];
        let svg = share_bar("s", "t", "d", &colours, &[1, 1, 1]);
        // 760 / 3 = 253.3: 253, 254, 253 pixels, together the whole bar.
        assert!(svg.contains("x=\"0\" y=\"0\" width=\"253\""), "{svg}");
        assert!(svg.contains("x=\"253\" y=\"0\" width=\"254\""), "{svg}");
        assert!(svg.contains("x=\"507\" y=\"0\" width=\"253\""), "{svg}");
    }

    #[test]
    fn no_usage_draws_no_segment() {
        let colours = ["#111111"];
        assert!(!share_bar("s", "t", "d", &colours, &[0]).contains("<rect"));
        let column = Column {
            label: "1".into(),
            values: vec![0],
        };
        assert!(!columns("c", "t", "d", &colours, &[column]).contains("<rect"));
    }
}
