//! `report.html` for a demo: the drill report's look (its stylesheet and verdict table from
//! `lab_drill::report`), with the unsafe and the safe run side by side.

use std::fmt::Write as _;

use lab_drill::report::{STYLE, escape, verdict_table, verdicts};

use super::outcome::Demo;
use super::setup::Side;

/// The whole page, self-contained.
pub(super) fn render(demo: &Demo) -> String {
    let mut page = String::with_capacity(32 * 1024);
    let name = demo.problem.name();
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(page, "<title>Problem demo: {}</title>", escape(name));
    let _ = writeln!(page, "<style>{STYLE}</style>\n</head>\n<body>\n<main>");
    let class = if demo.exit_code() == 0 {
        "pass"
    } else {
        "fail"
    };
    let _ = writeln!(
        page,
        "<header>\n<h1>Problem demo <code>{}</code></h1>\n<div class=\"verdict {class}\">{}</div>\n\
         <p class=\"meta\">{}</p>\n</header>",
        escape(name),
        escape(&demo.conclusion()),
        escape(demo.problem.sentence())
    );
    page.push_str("<div class=\"grid\">\n");
    for (title, side) in [
        ("Unsafe run: naive code", &demo.unsafe_run),
        ("Safe run: the real services", &demo.safe_run),
    ] {
        verdict_table(&mut page, title, &verdicts(&side.report));
    }
    page.push_str("</div>\n<div class=\"grid\">\n");
    for (title, side) in [
        ("What happened (unsafe)", &demo.unsafe_run),
        ("What happened (safe)", &demo.safe_run),
    ] {
        happened(&mut page, title, side);
    }
    page.push_str("</div>\n");
    page.push_str(
        "<footer>Written by <code>lab demo</code>. This page is self-contained; the data is in \
         <code>report.json</code> beside it.</footer>\n</main>\n</body>\n</html>\n",
    );
    page
}

fn happened(page: &mut String, title: &str, side: &Side) {
    let _ = writeln!(
        page,
        "<section class=\"card\">\n<h2>{}</h2>\n<ul>",
        escape(title)
    );
    for line in &side.happened {
        let _ = writeln!(page, "<li>{}</li>", escape(line));
    }
    if let Some(p99) = side.p99_ms {
        let _ = writeln!(page, "<li>p99 latency: <b>{p99:.0} ms</b></li>");
    }
    if let Some(max) = side.max_in_flight {
        let _ = writeln!(page, "<li>most calls in flight: <b>{max}</b></li>");
    }
    page.push_str("</ul>\n</section>\n");
}
