//! The report page: one HTML document with its CSS inline and its plots as inline SVG, so it
//! needs nothing but itself to display. Every string from the report is escaped on its way in.

use std::fmt::Write as _;

use super::plots::{self, Plot};
use super::{DrillReport, FaultWindow, InvariantVerdict};
use crate::check::Invariant;

/// Renders `report` as one self-contained HTML page: header with the verdict, the invariant
/// verdicts, the configuration, the summary lines, the fault timeline, and a plot per measured
/// quantity over the drill's time axis with the fault windows shaded. Never panics, whatever the
/// report holds (an empty or one-sample series draws an empty plot).
pub fn render_html(report: &DrillReport) -> String {
    let mut page = String::with_capacity(256 * 1024);
    let title = format!("Drill report: {}", report.scenario);
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    page.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(page, "<title>{}</title>", escape(&title));
    let _ = writeln!(page, "<style>{STYLE}</style>\n</head>\n<body>\n<main>");
    header(&mut page, report);
    page.push_str("<div class=\"grid\">\n");
    verdicts(&mut page, report);
    config(&mut page, report);
    page.push_str("</div>\n");
    summary(&mut page, report);
    faults(&mut page, &report.faults);
    let x_max = plots::x_max(report);
    for (n, plot) in plots::all(report).iter().enumerate() {
        plot_section(&mut page, n + 1, plot, &report.faults, x_max);
    }
    page.push_str(
        "<footer>Written by <code>lab drill</code>. This page is self-contained: it loads \
         nothing from anywhere. The data is in <code>report.json</code> beside it.</footer>\n",
    );
    page.push_str("</main>\n</body>\n</html>\n");
    page
}

fn header(page: &mut String, report: &DrillReport) {
    let broken = report.invariants.values().filter(|v| !v.ok).count();
    let (class, verdict) = match report.exit_code {
        0 => ("pass", "PASS — every invariant holds".to_owned()),
        1 => (
            "fail",
            format!(
                "FAIL — {broken} invariant{} broken",
                if broken == 1 { "" } else { "s" }
            ),
        ),
        code => ("error", format!("COULD NOT RUN (exit code {code})")),
    };
    let _ = writeln!(
        page,
        "<header>\n<h1>Fault drill <code>{}</code></h1>\n<div class=\"verdict {class}\">{}</div>",
        escape(&report.scenario),
        escape(&verdict)
    );
    let samples = report.samples.len();
    let _ = writeln!(
        page,
        "<p class=\"meta\">Started {} · ran {} · {samples} sample{} · exit code {}</p>\n</header>",
        escape(&report.started_at),
        seconds(report.duration_s),
        if samples == 1 { "" } else { "s" },
        report.exit_code
    );
}

fn verdicts(page: &mut String, report: &DrillReport) {
    verdict_table(page, "Invariants", &report.invariants);
}

/// Appends a card with the I1–I6 verdict table (the report's own look), titled `title`: I1–I6
/// always, in order (a missing one reads "not checked"), then any other key. For pages that
/// show several runs, such as `lab demo`'s.
pub fn verdict_table(
    page: &mut String,
    title: &str,
    invariants: &std::collections::BTreeMap<String, InvariantVerdict>,
) {
    let _ = write!(
        page,
        "<section class=\"card\">\n<h2>{}</h2>\n",
        escape(title)
    );
    page.push_str(
        "<table class=\"verdicts\">\n\
         <thead><tr><th></th><th>Invariant</th><th>Violations</th><th>Detail</th></tr></thead>\n\
         <tbody>\n",
    );
    let named = Invariant::ALL.map(|i| i.to_string());
    let others = invariants.keys().filter(|k| !named.contains(k)).cloned();
    for key in named.iter().cloned().chain(others) {
        let title = Invariant::ALL
            .iter()
            .find(|i| i.to_string() == key)
            .map(|i| i.title())
            .unwrap_or_default();
        match invariants.get(&key) {
            Some(InvariantVerdict {
                ok,
                violations,
                detail,
            }) => {
                let (class, mark) = if *ok {
                    ("ok", "✔")
                } else {
                    ("broken", "✘")
                };
                let _ = writeln!(
                    page,
                    "<tr class=\"{class}\"><td class=\"mark\">{mark}</td><td><b>{}</b> {}</td>\
                     <td class=\"num\">{violations}</td><td class=\"detail\">{}</td></tr>",
                    escape(&key),
                    escape(title),
                    escape(detail)
                );
            }
            None => {
                let _ = writeln!(
                    page,
                    "<tr class=\"unknown\"><td class=\"mark\">?</td><td><b>{}</b> {}</td>\
                     <td class=\"num\">–</td><td class=\"detail\">not checked</td></tr>",
                    escape(&key),
                    escape(title)
                );
            }
        }
    }
    page.push_str("</tbody>\n</table>\n</section>\n");
}

fn config(page: &mut String, report: &DrillReport) {
    page.push_str("<section class=\"card\">\n<h2>Configuration</h2>\n<table class=\"config\">\n");
    if report.config.is_empty() {
        page.push_str("<tr><td>(none recorded)</td></tr>\n");
    }
    for (key, value) in &report.config {
        let _ = writeln!(
            page,
            "<tr><th>{}</th><td><code>{}</code></td></tr>",
            escape(key),
            escape(value)
        );
    }
    page.push_str("</table>\n</section>\n");
}

fn summary(page: &mut String, report: &DrillReport) {
    if report.summary.is_empty() {
        return;
    }
    page.push_str("<section class=\"card\">\n<h2>Summary</h2>\n<ul class=\"summary\">\n");
    for line in &report.summary {
        let _ = writeln!(page, "<li>{}</li>", escape(line));
    }
    page.push_str("</ul>\n</section>\n");
}

fn faults(page: &mut String, faults: &[FaultWindow]) {
    page.push_str("<section class=\"card\">\n<h2>Faults</h2>\n");
    if faults.is_empty() {
        page.push_str("<p>No fault was applied: this drill is a baseline.</p>\n</section>\n");
        return;
    }
    page.push_str(
        "<p>Shaded on every plot below (an instant fault such as <code>kill -9</code> is a \
         vertical line), marked F1, F2, … at the top.</p>\n<table class=\"faults\">\n\
         <thead><tr><th></th><th>Fault</th><th>From</th><th>To</th><th>Lasted</th></tr></thead>\n\
         <tbody>\n",
    );
    for (n, fault) in faults.iter().enumerate() {
        let (to, lasted) = if fault.is_instant() {
            ("–".to_owned(), "instant".to_owned())
        } else {
            (seconds(fault.end_s), seconds(fault.end_s - fault.start_s))
        };
        let _ = writeln!(
            page,
            "<tr><td class=\"fault-id\">F{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{to}</td><td class=\"num\">{lasted}</td></tr>",
            n + 1,
            escape(&fault.label),
            seconds(fault.start_s)
        );
    }
    page.push_str("</tbody>\n</table>\n</section>\n");
}

fn plot_section(page: &mut String, n: usize, plot: &Plot, faults: &[FaultWindow], x_max: f64) {
    let _ = writeln!(
        page,
        "<section class=\"card plot\" id=\"plot-{n}\">\n<h2>{}</h2>\n<p class=\"caption\">{}</p>",
        escape(plot.title),
        escape(plot.caption)
    );
    match plots::svg(plot, faults, x_max) {
        Ok(svg) => page.push_str(&inline_svg(&svg, plot.title)),
        Err(error) => {
            let _ = writeln!(
                page,
                "<p class=\"error\">This plot could not be drawn: {}</p>",
                escape(&error)
            );
        }
    }
    page.push_str("<ul class=\"legend\">\n");
    for line in &plot.lines {
        let c = line.color;
        let _ = writeln!(
            page,
            "<li><span class=\"swatch\" style=\"background:#{:02x}{:02x}{:02x}\"></span>{}</li>",
            c.0,
            c.1,
            c.2,
            escape(&line.label)
        );
    }
    if !faults.is_empty() {
        page.push_str("<li><span class=\"swatch fault\"></span>fault window</li>\n");
    }
    page.push_str("</ul>\n</section>\n");
}

/// The SVG document as an element of the page: HTML parsers put `<svg>` in the SVG namespace
/// themselves, so the namespace attribute goes (it is an identifier, but a URL to the eye and to
/// anyone auditing the page for network references), and the plot gets an accessible name.
fn inline_svg(svg: &str, title: &str) -> String {
    let svg = svg.replacen(r#" xmlns="http://www.w3.org/2000/svg""#, "", 1);
    let svg = svg.trim_start_matches(|c: char| c != '<');
    svg.replacen(
        "<svg ",
        &format!("<svg role=\"img\" aria-label=\"{}\" ", escape(title)),
        1,
    )
}

/// `12.3 s`, or `–` for a value that is not a number.
fn seconds(s: f64) -> String {
    if s.is_finite() {
        format!("{s:.1} s")
    } else {
        "–".to_owned()
    }
}

/// Escapes text for HTML element content and quoted attribute values.
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

/// The report page's stylesheet, for other pages in the same look (`lab demo`'s).
pub const STYLE: &str = r#"
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f1f3f5; color: #212529;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1280px; margin: 0 auto; padding: 24px; }
header { margin-bottom: 16px; }
h1 { font-size: 26px; margin: 0 0 10px; }
h2 { font-size: 18px; margin: 0 0 8px; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace;
  font-size: 0.92em; background: #f1f3f5; padding: 1px 4px; border-radius: 3px; }
h1 code { font-size: 0.95em; }
.verdict { display: inline-block; font-weight: 700; font-size: 17px; padding: 6px 14px;
  border-radius: 6px; color: #fff; }
.verdict.pass { background: #2b8a3e; }
.verdict.fail { background: #c92a2a; }
.verdict.error { background: #e67700; }
.meta { color: #495057; margin: 10px 0 0; }
.grid { display: grid; grid-template-columns: 8fr 5fr; gap: 16px; }
.card { background: #fff; border: 1px solid #dee2e6; border-radius: 8px; padding: 16px 18px;
  margin-bottom: 16px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #e9ecef; vertical-align: top; }
thead th { color: #495057; font-weight: 600; border-bottom: 2px solid #dee2e6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.detail { color: #343a40; word-break: break-word; }
.verdicts td.mark { font-weight: 700; width: 28px; text-align: center; }
.verdicts tr.ok { background: #ebfbee; }
.verdicts tr.ok td.mark { color: #2b8a3e; }
.verdicts tr.broken { background: #fff5f5; }
.verdicts tr.broken td.mark, .verdicts tr.broken b { color: #c92a2a; }
.verdicts tr.unknown { background: #f8f9fa; color: #868e96; }
.config th { width: 40%; color: #495057; font-weight: 600; }
.faults td.fault-id { color: #b2182b; font-weight: 700; width: 40px; }
ul.summary { margin: 0; padding-left: 20px; }
ul.summary li { margin: 2px 0; }
.plot svg { display: block; width: 100%; height: auto; }
.caption { color: #495057; margin: 0 0 6px; }
ul.legend { list-style: none; margin: 6px 0 0; padding: 0; display: flex; flex-wrap: wrap;
  gap: 6px 18px; font-size: 14px; }
ul.legend li { display: flex; align-items: center; gap: 6px; }
.swatch { display: inline-block; width: 22px; height: 4px; border-radius: 2px; }
.swatch.fault { height: 12px; background: rgba(214, 39, 40, 0.18); border-left: 2px solid #b2182b; }
.error { color: #c92a2a; }
footer { color: #868e96; font-size: 13px; text-align: center; margin: 8px 0 24px; }
@media (max-width: 900px) { .grid { grid-template-columns: 1fr; } }
"#;
