//! The report's plots, drawn as SVG text with `plotters` (SVG backend only: no fonts, no
//! bitmaps, nothing loaded at run time). Each plot is a set of lines over the drill's time axis
//! with the fault windows shaded behind them; legends are left to the HTML around the plot,
//! where the browser lays text out properly and long outcome labels cannot cover the data.

use plotters::prelude::*;

use super::series::{self, Segments};
use super::{DrillReport, FaultWindow};

/// Size of every plot in SVG user units; the page scales it to its width.
const SIZE: (u32, u32) = (1200, 300);
/// Trailing window of the per-second rates.
const RATE_WINDOW_S: f64 = 1.0;
/// Breaker states by gauge value (`resilience_breaker_state`).
const BREAKER_STATES: [&str; 4] = ["closed", "open", "half-open", "forced open"];
/// Room for the y labels (the breaker's state names are the longest).
const Y_LABEL_AREA: u32 = 118;
/// Font size handed to plotters (its SVG backend draws text at 1/1.24 of it).
const FONT: f64 = 17.0;
const FAULT_FILL: RGBAColor = RGBAColor(214, 39, 40, 0.13);
const FAULT_LINE: RGBColor = RGBColor(178, 24, 43);

/// One line of a plot, with its legend entry.
pub(super) struct Line {
    /// Legend text.
    pub label: String,
    /// Stroke colour.
    pub color: RGBColor,
    /// The points, broken where the value was unknown.
    pub segments: Segments,
}

/// How the y axis maps values.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Axis {
    /// Linear from zero (or below, for negative values).
    Linear,
    /// Milliseconds on a log scale: a fault's timeouts are 100× the usual latency, and a linear
    /// axis would flatten the normal case into the frame.
    LogMs,
    /// The breaker's four states.
    Breaker,
}

/// One plot: title, what the y axis measures, and its lines.
pub(super) struct Plot {
    /// Heading shown above the plot.
    pub title: &'static str,
    /// One sentence saying how to read it.
    pub caption: &'static str,
    /// The y axis description.
    pub y_desc: &'static str,
    /// Scale of the y axis.
    pub axis: Axis,
    /// The lines, legend order.
    pub lines: Vec<Line>,
}

/// Every plot of the report, in page order.
pub(super) fn all(report: &DrillReport) -> Vec<Plot> {
    let samples = &report.samples;
    let outcome_lines = series::labels(samples, |s| &s.outcomes)
        .into_iter()
        .enumerate()
        .map(|(i, label)| Line {
            color: outcome_color(&label, i),
            segments: series::rate(samples, RATE_WINDOW_S, |s| {
                s.outcomes.get(&label).copied().unwrap_or(0)
            }),
            label,
        })
        .collect();
    let state_lines = series::labels(samples, |s| &s.challenges_by_state)
        .into_iter()
        .enumerate()
        .map(|(i, state)| Line {
            color: outcome_color(&state, i),
            segments: series::gauge(samples, |s| {
                Some(s.challenges_by_state.get(&state).copied().unwrap_or(0) as f64)
            }),
            label: state,
        })
        .collect();
    vec![
        Plot {
            title: "Throughput by outcome",
            caption: "Answers per second to ApproveChallenge, by outcome (trailing 1 s window).",
            y_desc: "answers / s",
            axis: Axis::Linear,
            lines: outcome_lines,
        },
        Plot {
            title: "Latency",
            caption: "ApproveChallenge latency over each 250 ms window, log scale; gaps where \
                      nothing was answered.",
            y_desc: "latency",
            axis: Axis::LogMs,
            lines: vec![
                line(
                    "p50",
                    BLUE_DARK,
                    series::gauge(samples, |s| s.latency_p50_ms),
                ),
                line("p99", ORANGE, series::gauge(samples, |s| s.latency_p99_ms)),
            ],
        },
        Plot {
            title: "Circuit breaker towards order-svc",
            caption: "The worst state over the approval-svc instances.",
            y_desc: "state",
            axis: Axis::Breaker,
            lines: vec![line(
                "breaker state",
                PURPLE,
                series::steps(series::gauge(samples, |s| Some(f64::from(s.breaker_state)))),
            )],
        },
        Plot {
            title: "Calls, attempts and retries towards order-svc",
            caption: "Per second, summed over the approval-svc instances: a retry storm shows as \
                      attempts far above calls.",
            y_desc: "per second",
            axis: Axis::Linear,
            lines: vec![
                line(
                    "order calls",
                    BLUE_DARK,
                    series::rate(samples, RATE_WINDOW_S, |s| s.order_calls),
                ),
                line(
                    "attempts",
                    TEAL,
                    series::rate(samples, RATE_WINDOW_S, |s| s.attempts),
                ),
                line(
                    "retries",
                    ORANGE,
                    series::rate(samples, RATE_WINDOW_S, |s| s.retries),
                ),
            ],
        },
        Plot {
            title: "Stock",
            caption: "Units left of the drill's products, summed; it only falls as orders are \
                      created.",
            y_desc: "units",
            axis: Axis::Linear,
            lines: vec![line(
                "stock",
                GREEN,
                series::gauge(samples, |s| s.stock.map(|v| v as f64)),
            )],
        },
        Plot {
            title: "Challenges by state",
            caption: "How many challenges are in each state.",
            y_desc: "challenges",
            axis: Axis::Linear,
            lines: state_lines,
        },
        Plot {
            title: "Dead letters",
            caption: "Approvals that used up their automatic retries and wait for an operator.",
            y_desc: "challenges",
            axis: Axis::Linear,
            lines: vec![line(
                "dead letters",
                RED,
                series::gauge(samples, |s| Some(s.dead_letters as f64)),
            )],
        },
    ]
}

/// The x range: the whole drill, at least one second.
pub(super) fn x_max(report: &DrillReport) -> f64 {
    let last_sample = report.samples.iter().map(|s| s.t_s);
    let fault_ends = report.faults.iter().map(|f| f.end_s.max(f.start_s));
    last_sample
        .chain(fault_ends)
        .chain([report.duration_s, 1.0])
        .filter(|t| t.is_finite())
        .fold(1.0, f64::max)
}

/// Draws `plot` as an SVG document, the fault windows shaded.
pub(super) fn svg(plot: &Plot, faults: &[FaultWindow], x_max: f64) -> Result<String, String> {
    let mut out = String::new();
    draw(&mut out, plot, faults, x_max).map_err(|e| e.to_string())?;
    Ok(out)
}

fn draw(
    out: &mut String,
    plot: &Plot,
    faults: &[FaultWindow],
    x_max: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let lines: Vec<(&Line, Segments)> = plot
        .lines
        .iter()
        .map(|line| (line, scaled(plot.axis, &line.segments)))
        .collect();
    let (y_lo, y_hi) = match plot.axis {
        Axis::Linear => series::y_range(lines.iter().map(|(_, s)| s)),
        Axis::LogMs => log_range(lines.iter().map(|(_, s)| s)),
        Axis::Breaker => (-0.2, 3.3),
    };
    let root = SVGBackend::with_string(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(12)
        .margin_right(24)
        .x_label_area_size(48)
        // One width for every plot, so a fault band sits at the same place on each.
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(0f64..x_max, y_lo..y_hi)?;

    let y_format = |v: &f64| match plot.axis {
        Axis::Linear => number(*v),
        Axis::LogMs => milliseconds(10f64.powf(*v)),
        Axis::Breaker => breaker_label(*v),
    };
    let x_format = |v: &f64| format!("{}s", number(*v));
    chart
        .configure_mesh()
        .x_desc("seconds since the drill started")
        .y_desc(plot.y_desc)
        .x_labels(16)
        .y_labels(if plot.axis == Axis::Breaker { 4 } else { 6 })
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .label_style(("sans-serif", FONT).into_font().color(&GREY_TEXT))
        .axis_desc_style(("sans-serif", FONT).into_font().color(&GREY_TEXT))
        .bold_line_style(RGBColor(222, 226, 230))
        .light_line_style(RGBColor(241, 243, 245))
        .axis_style(RGBColor(134, 142, 150))
        .draw()?;

    for (n, fault) in faults.iter().enumerate() {
        let (start, end) = (fault.start_s, fault.end_s);
        if !(start.is_finite() && end.is_finite()) {
            continue;
        }
        let (start, end) = (start.clamp(0.0, x_max), end.clamp(0.0, x_max));
        if fault.is_instant() {
            chart.draw_series([PathElement::new(
                vec![(start, y_lo), (start, y_hi)],
                FAULT_LINE.stroke_width(2),
            )])?;
        } else {
            chart.draw_series([Rectangle::new(
                [(start, y_lo), (end, y_hi)],
                FAULT_FILL.filled(),
            )])?;
        }
        chart.draw_series([Text::new(
            format!("F{}", n + 1),
            (start + x_max * 0.004, y_hi - (y_hi - y_lo) * 0.02),
            ("sans-serif", FONT)
                .into_font()
                .style(FontStyle::Bold)
                .color(&FAULT_LINE),
        )])?;
    }

    let mut drew_any = false;
    for (line, segments) in &lines {
        for points in segments {
            drew_any = true;
            if let [only] = points.as_slice() {
                chart.draw_series([Circle::new(*only, 3, line.color.filled())])?;
            } else {
                chart.draw_series(LineSeries::new(
                    points.iter().copied(),
                    line.color.stroke_width(2),
                ))?;
            }
        }
    }
    if !drew_any {
        chart.draw_series([Text::new(
            "no data",
            (x_max / 2.0, (y_lo + y_hi) / 2.0),
            ("sans-serif", FONT * 1.3).into_font().color(&GREY_TEXT),
        )])?;
    }
    root.present()?;
    Ok(())
}

/// The segments in the axis's coordinates (log10 of milliseconds for the latency plot, values
/// under 0.01 ms clamped so the logarithm stays finite).
fn scaled(axis: Axis, segments: &Segments) -> Segments {
    match axis {
        Axis::LogMs => segments
            .iter()
            .map(|points| {
                points
                    .iter()
                    .map(|&(t, v)| (t, v.max(0.01).log10()))
                    .collect()
            })
            .collect(),
        Axis::Linear | Axis::Breaker => segments.clone(),
    }
}

/// Whole decades around the data (1 ms to 1 s without data).
fn log_range<'a>(series: impl IntoIterator<Item = &'a Segments>) -> (f64, f64) {
    let Some((lo, hi)) = series::extent(series) else {
        return (0.0, 3.0);
    };
    let (lo, hi) = (lo.floor(), hi.ceil());
    (lo, if hi > lo { hi } else { lo + 1.0 })
}

fn line(label: &str, color: RGBColor, segments: Segments) -> Line {
    Line {
        label: label.to_owned(),
        color,
        segments,
    }
}

/// An axis number without float noise: `0.25`, `12`, `1.5k`.
fn number(v: f64) -> String {
    let abs = v.abs();
    if abs >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if abs >= 1000.0 {
        format!("{}k", number(v / 1000.0))
    } else if abs >= 10.0 || (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    }
}

fn milliseconds(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{} s", number(ms / 1000.0))
    } else {
        format!("{} ms", number(ms))
    }
}

/// A state's name at its gauge value, nothing between states.
fn breaker_label(v: f64) -> String {
    let rounded = v.round();
    if (v - rounded).abs() > 1e-6 || !(0.0..=3.0).contains(&rounded) {
        return String::new();
    }
    BREAKER_STATES[rounded as usize].to_owned()
}

const GREY_TEXT: RGBColor = RGBColor(73, 80, 87);
const BLUE_DARK: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const RED: RGBColor = RGBColor(214, 39, 40);
const PURPLE: RGBColor = RGBColor(148, 103, 189);
const TEAL: RGBColor = RGBColor(23, 190, 207);

/// A colour that says what an outcome or state means: success green, failures warm, errors
/// red-purple, in-flight and other states cool; `i` tells apart labels of one family.
pub(super) fn outcome_color(label: &str, i: usize) -> RGBColor {
    const WARM: [RGBColor; 4] = [
        RGBColor(255, 127, 14),
        RGBColor(188, 128, 34),
        RGBColor(230, 85, 13),
        RGBColor(253, 174, 107),
    ];
    const ERRORS: [RGBColor; 5] = [
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(123, 65, 115),
    ];
    const COOL: [RGBColor; 5] = [
        RGBColor(31, 119, 180),
        RGBColor(23, 190, 207),
        RGBColor(127, 127, 127),
        RGBColor(57, 59, 121),
        RGBColor(107, 174, 214),
    ];
    match label {
        "APPROVED" => RGBColor(44, 160, 44),
        "REJECTED" | "REVOKED" => RGBColor(127, 127, 127),
        _ if label.starts_with("APPROVE_FAILED") => WARM[i % WARM.len()],
        _ if label.starts_with("error") => ERRORS[i % ERRORS.len()],
        _ => COOL[i % COOL.len()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels_read_well() {
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(12.0), "12");
        assert_eq!(number(1500.0), "1.5k");
        assert_eq!(number(5000.0), "5k");
        assert_eq!(number(25_000.0), "25k");
        assert_eq!(milliseconds(10f64.powf(2.0)), "100 ms");
        assert_eq!(milliseconds(2500.0), "2.5 s");
        assert_eq!(breaker_label(1.0), "open");
        assert_eq!(breaker_label(1.5), "");
        assert_eq!(breaker_label(-1.0), "");
    }

    #[test]
    fn the_latency_axis_spans_whole_decades() {
        let segments = scaled(
            Axis::LogMs,
            &vec![vec![(0.0, 3.0), (1.0, 450.0), (2.0, 0.0)]],
        );
        assert_eq!(log_range([&segments]), (-2.0, 3.0));
        assert_eq!(log_range([&Vec::new()]), (0.0, 3.0));
    }
}
