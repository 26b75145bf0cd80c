//! The figures as one HTML page: no script runs, nothing is fetched (the page's
//! Content-Security-Policy allows inline style only), every name from the ledger escaped,
//! every chart drawn in inline SVG with a text alternative and a table of the exact bytes
//! beside it, and the figures themselves embedded as JSON for tools to read back. Pure: the
//! same figures give the same bytes.

use std::fmt::Write;

use super::model::{Buckets, Dimension, Figures, Line, Source};
use super::svg::{self, Column};
use crate::output::human_bytes;

/// The id of the embedded JSON block: a contract.
pub const JSON_ID: &str = "kore-usage-report";

/// Colour-blind safe (Okabe and Ito), then grey for the rest.
const PALETTE: [&str; 7] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442",
];
pub const OTHER_COLOUR: &str = "#999999";
/// Groups charted one by one; the rest are "other".
pub const CHARTED: usize = PALETTE.len();

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;\
color:#1a1a1a;background:#fff;margin:24px auto;max-width:980px;padding:0 16px;line-height:1.4}\
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.2em;margin:28px 0 8px;border-bottom:1px solid #ccc}\
.notice{font-weight:600;color:#8a4b00}.closed{font-weight:600;color:#1d5e20}\
dl.meta{display:grid;grid-template-columns:max-content auto;gap:2px 16px;margin:8px 0}\
dl.meta dt{color:#555}dl.meta dd{margin:0}\
table{border-collapse:collapse;margin:8px 0;font-size:.9em}\
th[scope=row]{white-space:nowrap}th,td{padding:3px 8px;border-bottom:1px solid #e3e3e3;text-align:left;vertical-align:top}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
th.series{white-space:normal;word-break:break-all;font-weight:normal;font-size:.8em;max-width:10em}\
caption{text-align:left;color:#555;padding:4px 0}\
code,.sid{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:.9em;word-break:break-all}\
ul.legend{list-style:none;padding:0;margin:4px 0;display:flex;flex-wrap:wrap;gap:4px 16px;font-size:.9em}\
.sw{display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:-1px}\
svg{display:block;margin:8px 0;max-width:100%;height:auto}\
p.empty{color:#555}\
@media print{body{margin:0;max-width:none}section{break-inside:avoid}}";

const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'";

/// Text for HTML and SVG alike: the five characters that could end or open markup.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The figures as JSON that cannot end the script element it sits in.
pub fn embedded_json(figures: &Figures) -> Result<String, serde_json::Error> {
    Ok(serde_json::to_string(figures)?
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026"))
}

/// A share in per cent with one decimal, rounded, from integers.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "0.0 %".into();
    }
    let tenths = (u128::from(part) * 1000 + u128::from(whole) / 2) / u128::from(whole);
    format!("{}.{} %", tenths / 10, tenths % 10)
}

/// What a value of a dimension is called on the page.
fn label(dimension: Dimension, value: Option<&str>, name: Option<&str>) -> String {
    match (value, name) {
        (None, _) => dimension.unknown().to_owned(),
        (Some(value), Some(name)) => format!("{name} ({value})"),
        (Some(value), None) => value.to_owned(),
    }
}

fn swatch(colour: &str) -> String {
    format!("<span class=\"sw\" style=\"background:{colour}\"></span>")
}

/// `<td class="n">` cells: the exact bytes, then readable.
fn bytes_cells(bytes: u64) -> String {
    format!(
        "<td class=\"n\">{bytes}</td><td class=\"n\">{}</td>",
        escape(&human_bytes(bytes))
    )
}

/// One charted series: the group values it adds up, its label and colour.
struct Charted<'a> {
    values: Vec<Option<&'a str>>,
    label: String,
    colour: &'static str,
}

impl Charted<'_> {
    /// Its swatch and label, as the legend and the table headers show it.
    fn key(&self) -> String {
        format!("{}{}", swatch(self.colour), escape(&self.label))
    }

    /// The bytes of the lines whose value this series charts.
    fn bytes<'l>(&self, lines: impl IntoIterator<Item = (Option<&'l str>, u64)>) -> u64 {
        lines
            .into_iter()
            .filter(|(value, _)| self.values.contains(value))
            .fold(0u64, |sum, (_, bytes)| sum.saturating_add(bytes))
    }
}

/// The series charted: the first [`CHARTED`] groups (most data first), then "other".
fn series(figures: &Figures) -> Vec<Charted<'_>> {
    let dimension = figures.group;
    let mut series: Vec<Charted> = figures
        .groups
        .iter()
        .take(CHARTED)
        .zip(PALETTE)
        .map(|(line, colour)| Charted {
            values: vec![line.value.as_deref()],
            label: label(dimension, line.value.as_deref(), line.name.as_deref()),
            colour,
        })
        .collect();
    if figures.groups.len() > CHARTED {
        series.push(Charted {
            values: figures.groups[CHARTED..]
                .iter()
                .map(|l| l.value.as_deref())
                .collect(),
            label: format!("other ({} more)", figures.groups.len() - CHARTED),
            colour: OTHER_COLOUR,
        });
    }
    series
}

/// The page.
pub fn page(figures: &Figures) -> Result<String, serde_json::Error> {
    let mut out = String::with_capacity(64 * 1024);
    let title = escape(&figures.title);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"kore-usage report-html\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
    );
    header(&mut out, figures);
    out.push_str("<main>\n");
    totals(&mut out, figures);
    let series = series(figures);
    over_time(&mut out, figures, &series);
    shares(&mut out, figures, &series);
    top_sims(&mut out, figures);
    places(&mut out, figures);
    sessions(&mut out, figures);
    alerts(&mut out, figures);
    let _ = write!(
        out,
        "</main>\n<script type=\"application/json\" id=\"{JSON_ID}\">{}</script>\n</body>\n</html>\n",
        embedded_json(figures)?
    );
    Ok(out)
}

fn header(out: &mut String, f: &Figures) {
    let _ = write!(out, "<header>\n<h1>{}</h1>\n", escape(&f.title));
    let source = match &f.source {
        Source::Ledger => {
            out.push_str(
                "<p class=\"notice\">Live figures, not an invoice: usage that arrives late still \
                 changes them. Close the period and report with --closed for invoice figures.</p>\n",
            );
            "the live ledger".to_owned()
        }
        Source::Closed {
            snapshot_sha256,
            closed_at,
        } => {
            let _ = writeln!(
                out,
                "<p class=\"closed\">From the snapshot of the closed period, as it was invoiced; its \
                 hash was checked when it was read.</p>"
            );
            format!(
                "closed period snapshot, closed {}, SHA-256 <code>{}</code>",
                escape(closed_at),
                escape(snapshot_sha256)
            )
        }
    };
    let filters = if f.filters.is_empty() {
        "none".to_owned()
    } else {
        f.filters
            .iter()
            .map(|(name, value)| format!("{name} = <code>{}</code>", escape(value)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = write!(
        out,
        "<dl class=\"meta\"><dt>Period</dt><dd>{} to {} (UTC; the end excluded)</dd>\
         <dt>Filters</dt><dd>{filters}</dd><dt>Source</dt><dd>{source}</dd>\
         <dt>Made</dt><dd>{}</dd></dl>\n</header>\n",
        escape(&f.start_time),
        escape(&f.end_time),
        escape(&f.generated_at)
    );
}

fn totals(out: &mut String, f: &Figures) {
    let t = &f.total;
    let _ = write!(
        out,
        "<section id=\"totals\">\n<h2>Totals</h2>\n<table id=\"total\"><thead><tr><th></th>\
         <th class=\"n\">bytes</th><th class=\"n\">readable</th></tr></thead><tbody>\
         <tr><th scope=\"row\">data</th>{}</tr><tr><th scope=\"row\">upload</th>{}</tr>\
         <tr><th scope=\"row\">download</th>{}</tr></tbody></table>\n\
         <table id=\"counts\"><tbody><tr><th scope=\"row\">usage events</th><td class=\"n\">{}</td></tr>\
         <tr><th scope=\"row\">SIMs with usage</th><td class=\"n\">{}</td></tr></tbody></table>\n</section>\n",
        bytes_cells(t.data_total),
        bytes_cells(t.data_upload),
        bytes_cells(t.data_download),
        t.usage_events,
        f.sims_with_usage
    );
}

fn legend(out: &mut String, series: &[Charted]) {
    out.push_str("<ul class=\"legend\">");
    for charted in series {
        let _ = write!(out, "<li>{}</li>", charted.key());
    }
    out.push_str("</ul>\n");
}

fn over_time(out: &mut String, f: &Figures, series: &[Charted]) {
    let dimension = f.group.noun();
    let Some(buckets) = f.granularity else {
        let _ = write!(
            out,
            "<section id=\"over-time\">\n<h2>Usage over time</h2>\n<p class=\"empty\">A closed \
             period's snapshot holds the period as a whole, one line per booking: the report \
             without --closed shows it per day.</p>\n</section>\n"
        );
        return;
    };
    let granularity = buckets.noun();
    let _ = write!(
        out,
        "<section id=\"over-time\">\n<h2>Usage per {granularity} by {dimension}</h2>\n"
    );
    if f.total.usage_events == 0 {
        out.push_str("<p class=\"empty\">No usage in the period.</p>\n</section>\n");
        return;
    }
    let columns: Vec<Column> = f
        .buckets
        .iter()
        .map(|bucket| Column {
            label: if buckets == Buckets::Hour {
                bucket.start_time.get(11..13).unwrap_or("").to_owned()
            } else {
                bucket.start_time.get(8..10).unwrap_or("").to_owned()
            },
            values: series
                .iter()
                .map(|charted| {
                    charted.bytes(
                        bucket
                            .groups
                            .iter()
                            .map(|g| (g.value.as_deref(), g.data_total)),
                    )
                })
                .collect(),
        })
        .collect();
    let busiest = f
        .buckets
        .iter()
        .max_by_key(|b| b.sum.data_total)
        .map(|b| {
            format!(
                " The largest is {} with {}.",
                b.start_time,
                human_bytes(b.sum.data_total)
            )
        })
        .unwrap_or_default();
    let colours: Vec<&str> = series.iter().map(|charted| charted.colour).collect();
    legend(out, series);
    out.push_str(&svg::columns(
        "over-time-chart",
        &format!("Data per {granularity}, stacked by {dimension}"),
        &format!(
            "{} columns, one per {granularity}, each split by {dimension}.{busiest} \
             The table below gives every figure.",
            f.buckets.len()
        ),
        &colours,
        &columns,
    ));
    let _ = write!(
        out,
        "<table id=\"buckets\"><caption>Data per {granularity} (UTC){}</caption><thead><tr><th>{granularity}</th>\
         <th class=\"n\">bytes</th><th class=\"n\">readable</th><th class=\"n\">usage events</th>",
        if series.len() > 1 {
            ", and bytes per charted value"
        } else {
            ""
        }
    );
    if series.len() > 1 {
        for charted in series {
            let _ = write!(out, "<th class=\"n series\">{}</th>", charted.key());
        }
    }
    out.push_str("</tr></thead><tbody>");
    for (bucket, column) in f.buckets.iter().zip(&columns) {
        let _ = write!(
            out,
            "<tr data-start=\"{}\"><th scope=\"row\">{}</th>{}<td class=\"n\">{}</td>",
            escape(&bucket.start_time),
            escape(&bucket_name(buckets, &bucket.start_time)),
            bytes_cells(bucket.sum.data_total),
            bucket.sum.usage_events
        );
        if series.len() > 1 {
            for value in &column.values {
                let _ = write!(out, "<td class=\"n\">{value}</td>");
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>\n</section>\n");
}

/// A bucket as its table row names it: the day, or the day and hour.
fn bucket_name(buckets: Buckets, start_time: &str) -> String {
    match (buckets, start_time.get(..10), start_time.get(11..16)) {
        (Buckets::Hour, Some(day), Some(hour)) => format!("{day} {hour}"),
        (_, Some(day), _) => day.to_owned(),
        _ => start_time.to_owned(),
    }
}

/// A table of lines: label, exact and readable bytes, share of the total, events.
fn lines_table(
    out: &mut String,
    id: &str,
    caption: &str,
    dimension: Dimension,
    lines: &[Line],
    whole: u64,
) {
    let _ = write!(
        out,
        "<table id=\"{id}\"><caption>{}</caption><thead><tr><th>{}</th><th class=\"n\">bytes</th>\
         <th class=\"n\">readable</th><th class=\"n\">share</th><th class=\"n\">usage events</th>\
         </tr></thead><tbody>",
        escape(caption),
        dimension.noun()
    );
    for line in lines {
        let _ = write!(
            out,
            "<tr data-value=\"{}\"><th scope=\"row\">{}</th>{}<td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(line.value.as_deref().unwrap_or("")),
            escape(&label(
                dimension,
                line.value.as_deref(),
                line.name.as_deref()
            )),
            bytes_cells(line.sum.data_total),
            percent(line.sum.data_total, whole),
            line.sum.usage_events
        );
    }
    out.push_str("</tbody></table>\n");
}

fn shares(out: &mut String, f: &Figures, series: &[Charted]) {
    let dimension = f.group.noun();
    let _ = write!(
        out,
        "<section id=\"shares\">\n<h2>Each {dimension}'s share</h2>\n"
    );
    if f.groups.is_empty() {
        out.push_str("<p class=\"empty\">No usage in the period.</p>\n</section>\n");
        return;
    }
    let values: Vec<u64> = series
        .iter()
        .map(|charted| {
            charted.bytes(
                f.groups
                    .iter()
                    .map(|g| (g.value.as_deref(), g.sum.data_total)),
            )
        })
        .collect();
    let description = series
        .iter()
        .zip(&values)
        .map(|(charted, value)| {
            format!("{}: {}", charted.label, percent(*value, f.total.data_total))
        })
        .collect::<Vec<_>>()
        .join("; ");
    let colours: Vec<&str> = series.iter().map(|charted| charted.colour).collect();
    legend(out, series);
    out.push_str(&svg::share_bar(
        "share-chart",
        &format!("Share of the data by {dimension}"),
        &format!("One bar split by {dimension}: {description}."),
        &colours,
        &values,
    ));
    lines_table(
        out,
        "groups",
        &format!("Every {dimension} with usage, most data first"),
        f.group,
        &f.groups,
        f.total.data_total,
    );
    out.push_str("</section>\n");
}

fn top_sims(out: &mut String, f: &Figures) {
    let _ = write!(
        out,
        "<section id=\"top-sims\">\n<h2>Top {} SIMs by data</h2>\n",
        f.top_sims.len()
    );
    if f.top_sims.is_empty() {
        out.push_str("<p class=\"empty\">No SIM used data in the period.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<table id=\"top-sims-table\"><thead><tr><th class=\"n\">#</th><th>SIM</th><th>ICCID</th>\
         <th>name</th><th>fleet</th><th class=\"n\">bytes</th><th class=\"n\">readable</th>\
         <th class=\"n\">share</th><th class=\"n\">usage events</th></tr></thead><tbody>",
    );
    for (rank, sim) in f.top_sims.iter().enumerate() {
        let fleets = sim
            .fleets
            .iter()
            .map(|fleet| escape(fleet.as_deref().unwrap_or("(no fleet)")))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            out,
            "<tr data-value=\"{}\"><td class=\"n\">{}</td><td class=\"sid\">{}</td><td class=\"sid\">{}</td>\
             <td>{}</td><td class=\"sid\">{fleets}</td>{}<td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&sim.sim_sid),
            rank + 1,
            escape(&sim.sim_sid),
            escape(sim.sim_iccid.as_deref().unwrap_or("-")),
            escape(sim.sim_unique_name.as_deref().unwrap_or("-")),
            bytes_cells(sim.sum.data_total),
            percent(sim.sum.data_total, f.total.data_total),
            sim.sum.usage_events
        );
    }
    out.push_str("</tbody></table>\n</section>\n");
}

fn places(out: &mut String, f: &Figures) {
    out.push_str("<section id=\"countries\">\n<h2>Countries</h2>\n");
    if let Some(roaming) = &f.roaming {
        let _ = writeln!(
            out,
            "<p id=\"roaming\">Roaming (outside {}): <strong>{}</strong> of the data, {} bytes ({}); \
             country unknown: {} bytes.</p>",
            escape(&roaming.home_countries.join(", ")),
            percent(roaming.roaming_data_total, f.total.data_total),
            roaming.roaming_data_total,
            escape(&human_bytes(roaming.roaming_data_total)),
            roaming.unknown_data_total
        );
    }
    lines_table(
        out,
        "countries-table",
        "Data per country of the network used",
        Dimension::IsoCountry,
        &f.countries,
        f.total.data_total,
    );
    out.push_str("</section>\n<section id=\"networks\">\n<h2>Networks</h2>\n");
    lines_table(
        out,
        "networks-table",
        "Data per network",
        Dimension::Network,
        &f.networks,
        f.total.data_total,
    );
    out.push_str("</section>\n");
}

fn sessions(out: &mut String, f: &Figures) {
    out.push_str(
        "<section id=\"sessions\">\n<h2>Sessions with gaps among the top SIMs</h2>\n<p>From the \
         live ledger: a session whose usage windows do not add up to the provider's cumulative \
         total is missing an event (lost, or not arrived yet); <code>kore-usage sessions --sim \
         SIM --gaps</code> shows more.</p>\n",
    );
    if f.sessions_with_gaps.is_empty() {
        out.push_str(
            "<p class=\"empty\">None: every session of the top SIMs adds up.</p>\n</section>\n",
        );
        return;
    }
    out.push_str(
        "<table id=\"sessions-table\"><thead><tr><th>SIM</th><th>session</th><th>started</th>\
         <th>ended</th><th class=\"n\">windows</th><th class=\"n\">received bytes</th>\
         <th class=\"n\">cumulative bytes</th></tr></thead><tbody>",
    );
    for s in &f.sessions_with_gaps {
        let _ = write!(
            out,
            "<tr><td class=\"sid\">{}</td><td class=\"sid\">{}</td><td>{}</td><td>{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&s.sim_sid),
            escape(&s.session_sid),
            escape(s.start_time.as_deref().unwrap_or("-")),
            escape(s.end_time.as_deref().unwrap_or("-")),
            s.windows_received,
            s.received_total,
            s.cumulative_total
                .map_or_else(|| "-".to_owned(), |c| c.to_string())
        );
    }
    out.push_str("</tbody></table>\n</section>\n");
}

fn alerts(out: &mut String, f: &Figures) {
    out.push_str(
        "<section id=\"alerts\">\n<h2>Alerts per day</h2>\n<p>Every rule's alerts (<code>kore-usage \
         alerts list</code>), by the day their period starts; the report's filters do not \
         narrow them.</p>\n",
    );
    if f.alerts_per_day.is_empty() {
        out.push_str("<p class=\"empty\">No alert in the period.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<table id=\"alerts-table\"><thead><tr><th>day</th><th class=\"n\">usage thresholds</th>\
         <th class=\"n\">silent SIMs</th><th class=\"n\">inconsistent events</th></tr></thead><tbody>",
    );
    for day in &f.alerts_per_day {
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&day.day),
            day.usage,
            day.silence,
            day.quality
        );
    }
    out.push_str("</tbody></table>\n</section>\n");
}
