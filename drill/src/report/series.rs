//! Turns samples into plottable series: per-second rates from cumulative counters, gaps where a
//! value was unknown, and axis ranges that stay finite whatever the data.

use super::Sample;

/// A polyline broken at unknown values: each inner vector is drawn as one line.
pub(super) type Segments = Vec<Vec<(f64, f64)>>;

/// Per-second rate of a cumulative counter, over a trailing window of `window_s` seconds (one
/// 250 ms window alone is too noisy to read). A counter that went down (a process restarted
/// before the sampler could account for it) counts as zero for that stretch, not negative.
pub(super) fn rate(
    samples: &[Sample],
    window_s: f64,
    counter: impl Fn(&Sample) -> u64,
) -> Segments {
    let mut points = Vec::with_capacity(samples.len());
    let mut from = 0;
    for (i, sample) in samples.iter().enumerate().skip(1) {
        while from + 1 < i && sample.t_s - samples[from + 1].t_s >= window_s {
            from += 1;
        }
        let start = &samples[from];
        let dt = sample.t_s - start.t_s;
        if !(dt > 0.0 && dt.is_finite()) {
            continue;
        }
        let delta = counter(sample).saturating_sub(counter(start));
        push_finite(&mut points, sample.t_s, delta as f64 / dt);
    }
    vec![points]
}

/// A value per sample, with a gap wherever `value` is `None` or not finite.
pub(super) fn gauge(samples: &[Sample], value: impl Fn(&Sample) -> Option<f64>) -> Segments {
    let mut segments: Segments = vec![Vec::new()];
    for sample in samples {
        match value(sample).filter(|v| v.is_finite() && sample.t_s.is_finite()) {
            Some(v) => segments
                .last_mut()
                .expect("never empty")
                .push((sample.t_s, v)),
            None if segments.last().is_some_and(|s| !s.is_empty()) => segments.push(Vec::new()),
            None => {}
        }
    }
    segments.retain(|s| !s.is_empty());
    segments
}

/// Holds each value until the next sample, for states that jump (the breaker).
pub(super) fn steps(segments: Segments) -> Segments {
    segments
        .into_iter()
        .map(|points| {
            let mut stepped = Vec::with_capacity(points.len() * 2);
            for (i, &(t, v)) in points.iter().enumerate() {
                if i > 0 {
                    stepped.push((t, points[i - 1].1));
                }
                stepped.push((t, v));
            }
            stepped
        })
        .collect()
}

/// The keys of a per-label map across all samples, the largest final value first (so the
/// dominant outcome gets the first colour and tops the legend).
pub(super) fn labels<'a>(
    samples: &'a [Sample],
    map: impl Fn(&'a Sample) -> &'a std::collections::BTreeMap<String, u64>,
) -> Vec<String> {
    let mut peak: std::collections::BTreeMap<&str, u64> = Default::default();
    for sample in samples {
        for (label, &count) in map(sample) {
            let entry = peak.entry(label).or_default();
            *entry = (*entry).max(count);
        }
    }
    let mut labels: Vec<(&str, u64)> = peak.into_iter().collect();
    labels.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    labels.into_iter().map(|(l, _)| l.to_owned()).collect()
}

/// The y range covering every point, never empty and never NaN: `[0, 1]` without data, and a
/// little headroom above the largest value so a line does not run along the frame.
pub(super) fn y_range<'a>(series: impl IntoIterator<Item = &'a Segments>) -> (f64, f64) {
    let Some((lo, hi)) = extent(series) else {
        return (0.0, 1.0);
    };
    let lo = lo.min(0.0);
    let span = hi - lo;
    if span <= f64::EPSILON {
        return (lo, lo + 1.0);
    }
    (lo, hi + span * 0.08)
}

/// The smallest and the largest value over every point; `None` without a finite point.
pub(super) fn extent<'a>(series: impl IntoIterator<Item = &'a Segments>) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(_, v) in series.into_iter().flatten().flatten() {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (lo.is_finite() && hi.is_finite()).then_some((lo, hi))
}

fn push_finite(points: &mut Vec<(f64, f64)>, t: f64, v: f64) {
    if t.is_finite() && v.is_finite() {
        points.push((t, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t_s: f64, n: u64) -> Sample {
        Sample {
            t_s,
            attempts: n,
            ..Sample::default()
        }
    }

    #[test]
    fn rate_is_per_second_over_the_trailing_window() {
        let samples: Vec<Sample> = (0..9).map(|i| at(i as f64 * 0.25, i * 50)).collect();
        let points = &rate(&samples, 1.0, |s| s.attempts)[0];
        assert_eq!(points.len(), 8);
        assert!(
            points.iter().all(|&(_, r)| (r - 200.0).abs() < 1e-9),
            "{points:?}"
        );
    }

    #[test]
    fn a_counter_that_went_down_reads_as_zero() {
        let samples = [at(0.0, 100), at(1.0, 10)];
        assert_eq!(rate(&samples, 1.0, |s| s.attempts), vec![vec![(1.0, 0.0)]]);
    }

    #[test]
    fn short_and_degenerate_series_stay_finite() {
        assert_eq!(rate(&[], 1.0, |s| s.attempts), vec![Vec::new()]);
        assert_eq!(rate(&[at(0.0, 1)], 1.0, |s| s.attempts), vec![Vec::new()]);
        // Two samples at the same instant: no division by zero.
        assert_eq!(
            rate(&[at(1.0, 1), at(1.0, 5)], 1.0, |s| s.attempts),
            vec![Vec::new()]
        );
        assert_eq!(y_range([&vec![Vec::new()]]), (0.0, 1.0));
        assert_eq!(y_range([&vec![vec![(0.0, 3.0)]]]), (0.0, 3.0 + 3.0 * 0.08));
        assert_eq!(y_range([&vec![vec![(0.0, 0.0)]]]), (0.0, 1.0));
    }

    #[test]
    fn gauge_breaks_at_unknown_values() {
        let samples: Vec<Sample> = [Some(1), None, None, Some(2), Some(3)]
            .into_iter()
            .enumerate()
            .map(|(i, stock)| Sample {
                t_s: i as f64,
                stock,
                ..Sample::default()
            })
            .collect();
        let segments = gauge(&samples, |s| s.stock.map(|v| v as f64));
        assert_eq!(
            segments,
            vec![vec![(0.0, 1.0)], vec![(3.0, 2.0), (4.0, 3.0)]]
        );
        assert_eq!(
            steps(segments),
            vec![vec![(0.0, 1.0)], vec![(3.0, 2.0), (4.0, 2.0), (4.0, 3.0)]]
        );
    }
}
