//! The drill report page: its structure on a realistic report and on degenerate ones, the files
//! `report::write` leaves, and what headless Chromium actually draws of it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lab_drill::report::{self, DrillReport, FaultWindow, InvariantVerdict, Sample};

/// 80 s of a drill at 4 samples a second: a black hole in front of order-svc from 20 s to 35 s
/// (breaker opens, failures and retries, p99 at the timeout, dead letters pile up), then a
/// `kill -9` at 55 s, and I5 broken.
fn synthetic_report() -> DrillReport {
    let mut samples = Vec::new();
    let (mut approved, mut failed, mut open, mut deadline) = (0u64, 0u64, 0u64, 0u64);
    let (mut calls, mut attempts, mut retries, mut dead) = (0u64, 0u64, 0u64, 0u64);
    for i in 0..320 {
        let t = i as f64 * 0.25;
        let blackhole = (20.0..35.0).contains(&t);
        let killed = (55.0..58.0).contains(&t);
        let breaker = match t {
            t if (21.0..30.0).contains(&t) => 1,
            t if (30.0..31.0).contains(&t) => 2,
            _ => 0,
        };
        let wobble = (i % 7) as u64;
        if blackhole || killed {
            if breaker == 1 {
                open += 30 + wobble;
            } else {
                deadline += 8;
                failed += 4;
            }
            calls += 10;
            attempts += 28;
            retries += 18;
            if i % 6 == 0 {
                dead += 1;
            }
        } else {
            approved += 36 + wobble;
            calls += 36 + wobble;
            attempts += 37 + wobble;
            retries += 1;
        }
        let mut outcomes = BTreeMap::from([("APPROVED".to_owned(), approved)]);
        if failed > 0 {
            outcomes.insert("APPROVE_FAILED/ORDER_SERVICE_UNAVAILABLE".into(), failed);
        }
        if open > 0 {
            outcomes.insert("error/UNAVAILABLE/CIRCUIT_OPEN".into(), open);
        }
        if deadline > 0 {
            outcomes.insert("error/DEADLINE_EXCEEDED".into(), deadline);
        }
        let (p50, p99) = if blackhole && breaker != 1 {
            (Some(800.0 + wobble as f64 * 20.0), Some(2000.0))
        } else if breaker == 1 {
            (Some(0.4), Some(1.5))
        } else {
            (
                Some(3.5 + wobble as f64 * 0.3),
                Some(18.0 + wobble as f64 * 4.0),
            )
        };
        let answered = approved + failed + open + deadline;
        samples.push(Sample {
            t_s: t,
            outcomes,
            latency_p50_ms: if killed { None } else { p50 },
            latency_p99_ms: if killed { None } else { p99 },
            order_calls: calls,
            attempts,
            retries,
            breaker_state: breaker,
            stock: if i < 2 {
                None
            } else {
                Some(20_000 - approved as i64)
            },
            challenges_by_state: BTreeMap::from([
                ("PENDING".to_owned(), 12_000u64.saturating_sub(answered)),
                ("APPROVING".to_owned(), if blackhole { 40 } else { 3 }),
                ("APPROVED".to_owned(), approved),
                ("APPROVE_FAILED".to_owned(), failed),
            ]),
            dead_letters: dead,
        });
    }
    let mut invariants: BTreeMap<String, InvariantVerdict> = (1..=6)
        .map(|n| {
            let verdict = InvariantVerdict {
                ok: true,
                violations: 0,
                detail: format!("{} checked", 1000 * n),
            };
            (format!("I{n}"), verdict)
        })
        .collect();
    invariants.insert(
        "I5".into(),
        InvariantVerdict {
            ok: false,
            violations: 2,
            detail: "2 challenges APPROVING past their lease: 0193a1b2-…, 0193a1c4-…".into(),
        },
    );
    DrillReport {
        scenario: "slow-order-svc".into(),
        config: BTreeMap::from([
            ("rate".to_owned(), "150/s".to_owned()),
            ("duration".to_owned(), "80s".to_owned()),
            ("order instances".to_owned(), "2".to_owned()),
            ("approval instances".to_owned(), "1".to_owned()),
            (
                "note".to_owned(),
                "<script>alert('x')</script> & \"quotes\"".to_owned(),
            ),
        ]),
        started_at: "2026-12-01T18:00:00Z".into(),
        duration_s: 80.0,
        samples,
        faults: vec![
            FaultWindow {
                label: "proxy: black hole in front of order-svc".into(),
                start_s: 20.0,
                end_s: 35.0,
            },
            FaultWindow {
                label: "kill -9 order-svc#0 <restart at 58 s>".into(),
                start_s: 55.0,
                end_s: 55.0,
            },
        ],
        invariants,
        exit_code: 1,
        summary: vec![
            "11 800 approvals answered: 10 400 APPROVED, 1 400 failed fast or timed out".into(),
            "retries 2 900 (budget refused 120), breaker opened 1× and closed 1×".into(),
        ],
    }
}

#[test]
fn the_page_is_self_contained_and_shows_plots_and_verdicts() {
    let page = report::render_html(&synthetic_report());
    let plots = page.matches("<svg").count();
    assert!(plots >= 3, "{plots} plots");
    assert_eq!(plots, page.matches("</svg>").count());
    assert_eq!(
        plots,
        page.matches("class=\"card plot\" id=\"plot-").count(),
        "one <svg> per plot"
    );
    for remote in [
        "http://", "https://", "<script", "<link", "src=", "@import", "url(",
    ] {
        assert!(!page.contains(remote), "the page references {remote:?}");
    }
    assert!(finite(&page), "a non-number reached the page");
    // The verdicts: six rows, I5 red, the others green.
    assert_eq!(page.matches("<tr class=\"ok\">").count(), 5);
    assert_eq!(page.matches("<tr class=\"broken\">").count(), 1);
    assert!(page.contains("<b>I5</b> nothing stuck past its lease"));
    assert!(page.contains("FAIL — 1 invariant broken"));
    // Configuration, faults (escaped), summary.
    assert!(
        page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;quotes&quot;")
    );
    assert!(page.contains("kill -9 order-svc#0 &lt;restart at 58 s&gt;"));
    assert!(page.contains("<th>rate</th><td><code>150/s</code></td>"));
    assert!(page.contains("retries 2 900"));
    // Fault windows reach every plot: a band for the black hole, a line for the kill, marked.
    assert_eq!(
        page.matches(">\nF1\n</text>").count(),
        plots,
        "F1 marked on every plot"
    );
    assert_eq!(
        page.matches(">\nF2\n</text>").count(),
        plots,
        "F2 marked on every plot"
    );
    // Every outcome has a legend entry.
    for label in [
        "APPROVED",
        "error/UNAVAILABLE/CIRCUIT_OPEN",
        "error/DEADLINE_EXCEEDED",
    ] {
        assert!(page.contains(&format!("</span>{label}</li>")), "{label}");
    }
}

#[test]
fn empty_and_short_reports_still_render() {
    let mut report = synthetic_report();
    report.samples.clear();
    report.faults.clear();
    report.invariants.clear();
    report.summary.clear();
    report.config.clear();
    report.exit_code = 2;
    report.duration_s = f64::NAN;
    let page = report::render_html(&report);
    assert!(page.matches("<svg").count() >= 3);
    assert!(page.contains("no data"));
    assert!(page.contains("COULD NOT RUN"));
    assert_eq!(page.matches("not checked").count(), 6);
    assert!(finite(&page));

    for n in 1..=2 {
        let mut short = synthetic_report();
        short.samples.truncate(n);
        short.samples[0].latency_p50_ms = Some(f64::INFINITY);
        short.faults.push(FaultWindow {
            label: "backwards".into(),
            start_s: f64::NAN,
            end_s: -3.0,
        });
        let page = report::render_html(&short);
        assert!(page.matches("<svg").count() >= 3);
        assert!(finite(&page), "{n} samples");
    }
}

#[test]
fn write_leaves_the_json_and_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("drill-out");
    let report = synthetic_report();
    report::write(&out, &report).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["scenario"], "slow-order-svc");
    for n in 1..=6 {
        assert_eq!(json["invariants"][format!("I{n}")]["ok"], n != 5, "I{n}");
    }
    assert_eq!(json["samples"].as_array().unwrap().len(), 320);
    assert_eq!(
        json["samples"][100]["outcomes"]["APPROVED"],
        report.samples[100].outcomes["APPROVED"]
    );
    let back: DrillReport = serde_json::from_value(json).unwrap();
    assert_eq!(back.samples, report.samples);
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(page, report::render_html(&report));
}

/// No NaN or infinity printed as a number (an SVG coordinate, a table cell).
fn finite(page: &str) -> bool {
    !["NaN", "=\"inf", "=\"-inf", ">inf", ">-inf", " inf"]
        .iter()
        .any(|bad| page.contains(bad))
}

/// Chromium as Debian installs it, if it is there.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|name| {
        Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn chromium_draws_the_page() {
    let Some(chromium) = chromium() else {
        println!("skipped: chromium not installed (Debian: apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    report::write(dir.path(), &synthetic_report()).unwrap();
    let shot = dir.path().join("report.png");
    screenshot(chromium, &dir.path().join("report.html"), &shot, dir.path());
    // To look at what was drawn: DRILL_REPORT_KEEP=DIR keeps the page and its screenshot.
    if let Ok(keep) = std::env::var("DRILL_REPORT_KEEP") {
        std::fs::create_dir_all(&keep).unwrap();
        for file in ["report.html", "report.json", "report.png"] {
            std::fs::copy(dir.path().join(file), Path::new(&keep).join(file)).unwrap();
        }
    }

    let (width, height, pixels) = decode_rgb(&shot);
    assert_eq!((width, height), (1400, 3000));
    let background = pixels[0];
    let drawn = pixels.iter().filter(|&&p| p != background).count();
    let colours: std::collections::HashSet<_> = pixels.iter().collect();
    assert!(
        drawn * 4 > pixels.len(),
        "only {drawn} of {} pixels differ from the background",
        pixels.len()
    );
    assert!(colours.len() > 200, "only {} colours", colours.len());
    // The red of the broken verdict and the green of the holding ones are both on screen.
    let near = |c: [u8; 3], p: &[u8; 3]| c.iter().zip(p).all(|(a, b)| a.abs_diff(*b) < 12);
    assert!(
        pixels.iter().any(|p| near([0xc9, 0x2a, 0x2a], p)),
        "no red verdict"
    );
    assert!(
        pixels.iter().any(|p| near([0xeb, 0xfb, 0xee], p)),
        "no green rows"
    );
}

fn screenshot(chromium: &str, page: &Path, shot: &Path, scratch: &Path) {
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--window-size=1400,3000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            scratch.join("profile").display()
        ))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium exited with {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium took over 120 s to take a screenshot");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(shot.exists(), "chromium wrote no screenshot");
}

fn decode_rgb(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let step = info.color_type.samples();
    assert!(step >= 3, "unexpected colour type {:?}", info.color_type);
    let pixels = buf[..info.buffer_size()]
        .chunks_exact(step)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, pixels)
}
