//! Reports from [`MatrixResults`]: a Markdown table (rows = drivers, columns = scenarios,
//! cells = median with spread), the framework-overhead ratios (each `stoq-<engine>` row
//! versus its `<engine>-direct` reference: stoq-quinn / quinn-direct, stoq-s2n /
//! s2n-direct, stoq-quiche / quiche-direct), the pooled/cold connect ratios, CPU costs,
//! and an SVG bar chart.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::results::{CellResult, CellStatus, MatrixResults};
use crate::scenario::{Scenario, Workload};
use crate::stats::Summary;
use crate::BenchError;

/// The metric a scenario is judged by (its table cell and chart bar).
pub fn headline_key(scenario: &Scenario) -> String {
    match &scenario.workload {
        Workload::Transfer(_) => "goodput_gbps".into(),
        Workload::Rpc(_) => "requests_per_s".into(),
        Workload::Handshakes(h) => format!("handshakes_per_s_c{}", h.concurrency[0]),
        Workload::ConnectColdVsPooled(_) => "cold_ms".into(),
        Workload::Datagrams(_) => "delivered_share_pct".into(),
    }
}

/// A number with three significant digits, `k`/`M` for large ones.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    let (v, suffix) = if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let a = v.abs();
    let s = if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a == 0.0 {
        "0".into()
    } else if a >= 1e-4 {
        // Three significant digits: 0.256, 0.0630, 0.00120.
        let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.2e}")
    };
    format!("{s}{suffix}")
}

/// `median unit (min–max, n=runs)`.
pub fn fmt_summary(s: &Summary, unit: &str) -> String {
    let unit = if unit.is_empty() || unit == "x" {
        String::new()
    } else if unit == "%" || unit.starts_with('/') {
        unit.to_string()
    } else {
        format!(" {unit}")
    };
    if s.runs == 1 {
        format!("{}{unit} (n=1)", fmt_num(s.median))
    } else {
        format!(
            "{}{unit} ({}–{}, n={})",
            fmt_num(s.median),
            fmt_num(s.min),
            fmt_num(s.max),
            s.runs
        )
    }
}

fn metric_text(cell: &CellResult, key: &str) -> Option<String> {
    let m = cell.metric(key)?;
    Some(fmt_summary(m.summary.as_ref()?, &m.unit))
}

fn median(cell: Option<&CellResult>, key: &str) -> Option<f64> {
    cell.filter(|c| c.status == CellStatus::Measured)
        .and_then(|c| c.median(key))
}

/// The text of one table cell.
pub fn cell_text(cell: &CellResult, scenario: &Scenario) -> String {
    match cell.status {
        CellStatus::NotApplicable => return "n/a".into(),
        CellStatus::Skipped => return "skipped (budget)".into(),
        CellStatus::Failed => return "FAILED".into(),
        CellStatus::Measured => {}
    }
    let head = metric_text(cell, &headline_key(scenario)).unwrap_or_else(|| "-".into());
    let med = |k: &str| cell.median(k).map(fmt_num).unwrap_or_else(|| "-".into());
    match &scenario.workload {
        Workload::Transfer(_) => head,
        Workload::Rpc(_) => format!(
            "{head}; p50 {} us, p99 {} us",
            med("latency_p50_us"),
            med("latency_p99_us")
        ),
        Workload::Handshakes(h) => {
            let mut s = head;
            for level in &h.concurrency[1..] {
                let _ = write!(
                    s,
                    "; {level} at once: {}/s",
                    med(&format!("handshakes_per_s_c{level}"))
                );
            }
            s
        }
        Workload::ConnectColdVsPooled(_) => {
            let mut s = format!(
                "cold {head}; pooled {} ms; cold/pooled {}",
                med("pooled_ms"),
                med("cold_over_pooled")
            );
            if cell.median("pooled_connect_us").is_some() {
                let _ = write!(
                    s,
                    "; connect alone: cold {} ms, pooled {} us, cold/pooled {}",
                    med("cold_connect_ms"),
                    med("pooled_connect_us"),
                    med("connect_cold_over_pooled")
                );
            }
            s
        }
        Workload::Datagrams(_) => format!("{head} delivered of {}/s offered", med("offered_per_s")),
    }
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The Markdown report.
pub fn markdown(results: &MatrixResults) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## STOQ benchmark matrix\n");
    let _ = writeln!(out, "Machine: {}.  ", results.machine.summary_line());
    let _ = writeln!(
        out,
        "Scale: {}; the matrix took {:.0} s (budget {:.0} s). Client and server in separate \
         processes over loopback; QUIC drivers pin the UDP payload at 1452 B (MTU discovery \
         off) with the same windows; every driver negotiates TLS_AES_128_GCM_SHA256 (except \
         `tcp`: no TLS). Cells: median (min–max, n = runs); goodput is counted and verified \
         at the receiver.\n",
        results.scale, results.elapsed_seconds, results.budget_seconds
    );

    // The main table.
    let _ = write!(out, "| driver |");
    for s in &results.scenarios {
        let _ = write!(out, " {} |", s.name);
    }
    let _ = write!(out, "\n|---|");
    for _ in &results.scenarios {
        let _ = write!(out, "---|");
    }
    out.push('\n');
    for d in &results.drivers {
        let _ = write!(out, "| {} |", d.name);
        for s in &results.scenarios {
            let text = results
                .cell(&d.name, &s.name)
                .map(|c| cell_text(c, s))
                .unwrap_or_else(|| "-".into());
            let _ = write!(out, " {} |", escape(&text));
        }
        out.push('\n');
    }
    out.push('\n');
    let _ = writeln!(out, "Headline metrics:");
    for s in &results.scenarios {
        let (label, unit, higher) = crate::results::metric_meta(&headline_key(s));
        let _ = writeln!(
            out,
            "- `{}`: {label} ({unit}, {} is better). {}",
            s.name,
            if higher { "higher" } else { "lower" },
            s.description
        );
    }
    out.push('\n');

    out.push_str(&crate::paired::markdown(&results.paired));
    overhead_section(results, &mut out);
    connect_section(results, &mut out);
    cpu_section(results, &mut out);
    notes_section(results, &mut out);
    out
}

/// Pairs each row on a backend (`stoq-<engine>`, and SDK rows on it) with the
/// `<engine>-direct` reference row when the results hold one: stoq-quinn / quinn-direct,
/// stoq-s2n / s2n-direct, stoq-quiche / quiche-direct.
fn overhead_pairs(results: &MatrixResults) -> Vec<(String, String)> {
    results
        .drivers
        .iter()
        .filter_map(|d| {
            let backend = d.backend.as_ref()?;
            let reference = format!("{backend}-direct");
            results
                .drivers
                .iter()
                .any(|r| r.name == reference)
                .then(|| (d.name.clone(), reference))
        })
        .collect()
}

fn overhead_section(results: &MatrixResults, out: &mut String) {
    for (stoq, direct) in overhead_pairs(results) {
        let _ = writeln!(out, "### Framework overhead: {stoq} / {direct}\n");
        let _ = writeln!(
            out,
            "Ratio of medians. For rates 1.00 means no overhead and below 1 means STOQ is \
             slower; for costs and latencies above 1 means STOQ costs more.\n"
        );
        let _ = writeln!(out, "| scenario | metric | {stoq} | {direct} | ratio |");
        let _ = writeln!(out, "|---|---|---|---|---|");
        for s in &results.scenarios {
            let a = results.cell(&stoq, &s.name);
            let b = results.cell(&direct, &s.name);
            let mut keys = vec![headline_key(s)];
            match &s.workload {
                Workload::Transfer(_) | Workload::Datagrams(_) => {
                    keys.extend(["client_cpu_s_per_gib".into(), "server_cpu_s_per_gib".into()])
                }
                Workload::Rpc(_) => keys.extend([
                    "latency_p50_us".into(),
                    "client_cpu_us_per_request".into(),
                    "server_cpu_us_per_request".into(),
                ]),
                Workload::Handshakes(h) => {
                    for l in &h.concurrency[1..] {
                        keys.push(format!("handshakes_per_s_c{l}"));
                    }
                    keys.push(format!("server_cpu_ms_per_handshake_c{}", h.concurrency[0]));
                }
                Workload::ConnectColdVsPooled(_) => keys.push("pooled_ms".into()),
            }
            for key in keys {
                let (label, unit, _) = crate::results::metric_meta(&key);
                let (ma, mb) = (median(a, &key), median(b, &key));
                let ratio = match (ma, mb) {
                    (Some(x), Some(y)) if y != 0.0 => format!("{x:.2}", x = x / y),
                    _ => "-".into(),
                };
                let show = |m: Option<f64>| {
                    m.map(|v| match unit {
                        "%" | "x" => format!("{}{unit}", fmt_num(v)),
                        u if u.starts_with('/') => format!("{}{unit}", fmt_num(v)),
                        _ => format!("{} {unit}", fmt_num(v)),
                    })
                    .unwrap_or_else(|| "-".into())
                };
                let _ = writeln!(
                    out,
                    "| {} | {label} | {} | {} | {ratio} |",
                    s.name,
                    show(ma),
                    show(mb)
                );
            }
        }
        out.push('\n');
    }
}

fn connect_section(results: &MatrixResults, out: &mut String) {
    let Some(s) = results
        .scenarios
        .iter()
        .find(|s| matches!(s.workload, Workload::ConnectColdVsPooled(_)))
    else {
        return;
    };
    let _ = writeln!(out, "### Connect: cold versus pooled ({})\n", s.name);
    let _ = writeln!(
        out,
        "Round trips: a 1-byte request/response on a new stream of a live connection (TCP: on \
         the live connection) versus a new connection's full handshake plus the same round \
         trip. Connect alone: a new connection's handshake versus, for SDK rows, a `connect` \
         that returns a live connection from the SDK's pool (the pooled-connect target). \
         Medians per run, then median of runs (min–max).\n"
    );
    let _ = writeln!(
        out,
        "| driver | cold round trip | pooled round trip | cold / pooled | cold connect | pooled connect | connect cold / pooled |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for d in &results.drivers {
        let Some(c) = results.cell(&d.name, &s.name) else {
            continue;
        };
        if c.status != CellStatus::Measured {
            let _ = writeln!(out, "| {} | {} | | | | | |", d.name, cell_text(c, s));
            continue;
        }
        let t = |k: &str| metric_text(c, k).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            d.name,
            t("cold_ms"),
            t("pooled_ms"),
            t("cold_over_pooled"),
            t("cold_connect_ms"),
            t("pooled_connect_us"),
            t("connect_cold_over_pooled")
        );
    }
    out.push('\n');
}

fn cpu_section(results: &MatrixResults, out: &mut String) {
    let cols: Vec<&Scenario> = results
        .scenarios
        .iter()
        .filter(|s| matches!(s.workload, Workload::Transfer(_) | Workload::Datagrams(_)))
        .collect();
    if cols.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "### CPU-seconds per GiB (getrusage), sender / receiver\n\nThe client sends, the \
         server receives; each process measures itself. Medians of runs.\n"
    );
    let _ = write!(out, "| driver |");
    for s in &cols {
        let _ = write!(out, " {} |", s.name);
    }
    let _ = write!(out, "\n|---|");
    for _ in &cols {
        let _ = write!(out, "---|");
    }
    out.push('\n');
    for d in &results.drivers {
        let _ = write!(out, "| {} |", d.name);
        for s in &cols {
            let c = results.cell(&d.name, &s.name);
            let text = match (
                median(c, "client_cpu_s_per_gib"),
                median(c, "server_cpu_s_per_gib"),
            ) {
                (Some(a), Some(b)) => format!("{} / {}", fmt_num(a), fmt_num(b)),
                _ => c.map(|c| cell_text(c, s)).unwrap_or_else(|| "-".into()),
            };
            let _ = write!(out, " {} |", escape(&text));
        }
        out.push('\n');
    }
    out.push('\n');
}

fn notes_section(results: &MatrixResults, out: &mut String) {
    let mut lines = Vec::new();
    for c in &results.cells {
        match c.status {
            CellStatus::NotApplicable | CellStatus::Failed | CellStatus::Skipped => {
                let what = match c.status {
                    CellStatus::NotApplicable => "n/a",
                    CellStatus::Failed => "FAILED",
                    _ => "skipped",
                };
                lines.push(format!(
                    "- {} x {}: {what}: {}",
                    c.driver,
                    c.scenario,
                    c.reason.as_deref().unwrap_or("")
                ));
            }
            CellStatus::Measured => {
                if c.runs() < c.runs_planned {
                    lines.push(format!(
                        "- {} x {}: {} of {} runs (time budget)",
                        c.driver,
                        c.scenario,
                        c.runs(),
                        c.runs_planned
                    ));
                }
            }
        }
        if let Some(note) = &c.note {
            lines.push(format!("- {} x {}: {note}", c.driver, c.scenario));
        }
    }
    if !lines.is_empty() {
        let _ = writeln!(out, "### Notes\n");
        for l in lines {
            let _ = writeln!(out, "{l}");
        }
        out.push('\n');
    }
}

/// An SVG bar chart: one panel per scenario, one bar per driver (median, with a min–max
/// error bar). Text is left to the SVG viewer's fonts (no font files needed to render).
pub fn svg(results: &MatrixResults) -> Result<String, BenchError> {
    let err = |e: &dyn std::fmt::Display| BenchError::Usage(format!("drawing the chart: {e}"));
    let n_s = results.scenarios.len().max(1);
    let cols = n_s.min(4);
    let rows = n_s.div_ceil(cols);
    let (w, h) = (300 * cols as u32, 60 + 280 * rows as u32);
    let names: Vec<String> = results.drivers.iter().map(|d| d.name.clone()).collect();
    let n_d = names.len().max(1);
    let names = &names;
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let (top, body) = root.split_vertically(50);
        top.draw(&Text::new(
            format!(
                "STOQ benchmark matrix — {} — scale {}",
                results.machine.date, results.scale
            ),
            (10, 15),
            ("sans-serif", 18).into_font(),
        ))
        .map_err(|e| err(&e))?;
        top.draw(&Text::new(
            "bars: median of runs; whiskers: min–max; n/a: driver cannot run it".to_string(),
            (10, 35),
            ("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90)),
        ))
        .map_err(|e| err(&e))?;
        let panels = body.split_evenly((rows, cols));
        for (panel, s) in panels.iter().zip(&results.scenarios) {
            let key = headline_key(s);
            let (label, unit, higher) = crate::results::metric_meta(&key);
            let data: Vec<(usize, Option<Summary>)> = names
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let summary = results
                        .cell(d, &s.name)
                        .filter(|c| c.status == CellStatus::Measured)
                        .and_then(|c| c.metric(&key))
                        .and_then(|m| m.summary);
                    (i, summary)
                })
                .collect();
            let ymax = data
                .iter()
                .filter_map(|(_, s)| s.map(|s| s.max))
                .fold(0.0f64, f64::max)
                .max(1e-9)
                * 1.15;
            let y_desc = format!(
                "{label}, {unit} ({} is better)",
                if higher { "higher" } else { "lower" }
            );
            let mut chart = ChartBuilder::on(panel)
                .caption(&s.name, ("sans-serif", 14))
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(62)
                // A segmented 0..n range has n + 1 segments: one per driver.
                .build_cartesian_2d((0..n_d - 1).into_segmented(), 0f64..ymax)
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .y_desc(y_desc)
                .axis_desc_style(("sans-serif", 11))
                .x_labels(n_d)
                .x_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                    _ => String::new(),
                })
                .y_label_formatter(&|v| fmt_num(*v))
                .x_label_style(("sans-serif", 10))
                .y_label_style(("sans-serif", 10))
                .draw()
                .map_err(|e| err(&e))?;
            chart
                .draw_series(data.iter().filter_map(|(i, s)| {
                    let s = (*s)?;
                    let mut bar = Rectangle::new(
                        [
                            (SegmentValue::Exact(*i), 0.0),
                            (SegmentValue::Exact(*i + 1), s.median),
                        ],
                        Palette99::pick(*i).filled(),
                    );
                    bar.set_margin(0, 0, 8, 8);
                    Some(bar)
                }))
                .map_err(|e| err(&e))?;
            chart
                .draw_series(data.iter().filter_map(|(i, s)| {
                    let s = (*s)?;
                    Some(ErrorBar::new_vertical(
                        SegmentValue::CenterOf(*i),
                        s.min,
                        s.median,
                        s.max,
                        BLACK.stroke_width(1),
                        8,
                    ))
                }))
                .map_err(|e| err(&e))?;
            chart
                .draw_series(data.iter().map(|(i, s)| {
                    let text = match s {
                        Some(s) => fmt_num(s.median),
                        None => "n/a".into(),
                    };
                    let y = s.map_or(ymax * 0.02, |s| s.max + ymax * 0.02);
                    Text::new(
                        text,
                        (SegmentValue::CenterOf(*i), y),
                        TextStyle::from(("sans-serif", 10).into_font())
                            .pos(Pos::new(HPos::Center, VPos::Bottom)),
                    )
                }))
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(buf)
}

/// Files written by [`write_all`].
#[derive(Debug, Clone)]
pub struct ReportFiles {
    /// `results.json`.
    pub json: PathBuf,
    /// `report.md`.
    pub markdown: PathBuf,
    /// `chart.svg`.
    pub svg: PathBuf,
}

/// Writes `results.json`, `report.md` and `chart.svg` into `dir` (created if missing).
pub fn write_all(
    results: &MatrixResults,
    dir: impl AsRef<Path>,
) -> Result<ReportFiles, BenchError> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir)
        .map_err(|e| BenchError::io(format!("creating {}", dir.display()), e))?;
    let files = ReportFiles {
        json: dir.join("results.json"),
        markdown: dir.join("report.md"),
        svg: dir.join("chart.svg"),
    };
    results.write_json(&files.json)?;
    let write = |p: &Path, s: String| {
        std::fs::write(p, s).map_err(|e| BenchError::io(format!("writing {}", p.display()), e))
    };
    write(&files.markdown, markdown(results))?;
    write(&files.svg, svg(results)?)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{metric_meta, DriverInfo, Machine, Metric};
    use crate::DriverKind;

    fn metric(key: &str, values: &[f64]) -> Metric {
        let (label, unit, higher_is_better) = metric_meta(key);
        Metric {
            key: key.into(),
            label,
            unit: unit.into(),
            higher_is_better,
            values: values.to_vec(),
            summary: Summary::of(values),
        }
    }

    fn cell(driver: &str, scenario: &str, status: CellStatus, metrics: Vec<Metric>) -> CellResult {
        CellResult {
            driver: driver.into(),
            scenario: scenario.into(),
            status,
            reason: match status {
                CellStatus::NotApplicable => Some("TCP carries no unreliable datagrams".into()),
                CellStatus::Failed => Some("run 2: receiver verified 10 of 20 bytes".into()),
                _ => None,
            },
            note: None,
            runs_planned: 3,
            wall_seconds: 1.0,
            metrics,
            server_reports: Vec::new(),
        }
    }

    /// A fixed result set: three drivers, three scenarios, every kind of cell.
    fn fixture() -> MatrixResults {
        let scenarios =
            crate::scenario::builtin_named(&["bulk", "connect_cold_vs_pooled", "datagrams"])
                .unwrap();
        let info = |name: &str, kind, backend: Option<&str>| DriverInfo {
            name: name.into(),
            kind,
            backend: backend.map(Into::into),
            description: String::new(),
        };
        MatrixResults {
            format: 1,
            machine: Machine {
                cores: 2,
                cpu_model: Some("AMD EPYC".into()),
                kernel: Some("6.18".into()),
                rustc: Some("rustc 1.95.0".into()),
                date: "2026-11-22T10:00:00Z".into(),
                build: "release".into(),
                rmem_max: Some(4 << 20),
            },
            scale: "full".into(),
            elapsed_seconds: 300.0,
            budget_seconds: 540.0,
            drivers: vec![
                info("stoq-quinn", DriverKind::Stoq, Some("quinn")),
                info("quinn-direct", DriverKind::QuinnDirect, None),
                info("tcp", DriverKind::KernelTcp, None),
            ],
            scenarios,
            cells: vec![
                cell(
                    "stoq-quinn",
                    "bulk",
                    CellStatus::Measured,
                    vec![
                        metric("goodput_gbps", &[2.28, 2.22, 2.47]),
                        metric("client_cpu_s_per_gib", &[2.64, 2.7, 2.6]),
                        metric("server_cpu_s_per_gib", &[1.78, 1.8, 1.7]),
                    ],
                ),
                cell(
                    "stoq-quinn",
                    "connect_cold_vs_pooled",
                    CellStatus::Measured,
                    vec![
                        metric("cold_ms", &[2.0, 2.2, 1.9]),
                        metric("pooled_ms", &[0.2, 0.25, 0.2]),
                        metric("cold_over_pooled", &[10.0, 8.8, 9.5]),
                        metric("cold_connect_ms", &[1.0, 1.1, 0.9]),
                        metric("pooled_connect_us", &[3.0, 2.5, 3.5]),
                        metric("connect_cold_over_pooled", &[333.0, 440.0, 257.0]),
                    ],
                ),
                cell(
                    "stoq-quinn",
                    "datagrams",
                    CellStatus::Measured,
                    vec![
                        metric("delivered_share_pct", &[99.5, 100.0, 99.0]),
                        metric("offered_per_s", &[50_000.0, 49_900.0, 49_950.0]),
                    ],
                ),
                cell(
                    "quinn-direct",
                    "bulk",
                    CellStatus::Measured,
                    vec![
                        metric("goodput_gbps", &[2.40, 2.38, 2.45]),
                        metric("client_cpu_s_per_gib", &[2.4, 2.5, 2.45]),
                        metric("server_cpu_s_per_gib", &[1.6, 1.7, 1.65]),
                    ],
                ),
                cell(
                    "quinn-direct",
                    "connect_cold_vs_pooled",
                    CellStatus::Measured,
                    vec![
                        metric("cold_ms", &[1.8]),
                        metric("pooled_ms", &[0.18]),
                        metric("cold_over_pooled", &[10.0]),
                    ],
                ),
                cell("quinn-direct", "datagrams", CellStatus::Failed, vec![]),
                cell(
                    "tcp",
                    "bulk",
                    CellStatus::Measured,
                    vec![metric("goodput_gbps", &[19.0, 18.5, 19.4])],
                ),
                cell("tcp", "connect_cold_vs_pooled", CellStatus::Skipped, vec![]),
                cell("tcp", "datagrams", CellStatus::NotApplicable, vec![]),
            ],
            paired: Vec::new(),
        }
    }

    #[test]
    fn numbers_are_formatted_to_three_significant_digits() {
        assert_eq!(fmt_num(2.2834), "2.28");
        assert_eq!(fmt_num(19.04), "19.0");
        assert_eq!(fmt_num(812.4), "812");
        assert_eq!(fmt_num(41_234.0), "41.2k");
        assert_eq!(fmt_num(2_500_000.0), "2.50M");
        assert_eq!(fmt_num(0.256), "0.256");
        assert_eq!(fmt_num(0.063), "0.0630");
        assert_eq!(fmt_num(0.0012), "0.00120");
        assert_eq!(fmt_num(0.00001), "1.00e-5");
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(f64::NAN), "-");
        let s = Summary::of(&[2.28, 2.22, 2.47]).unwrap();
        assert_eq!(fmt_summary(&s, "Gbit/s"), "2.28 Gbit/s (2.22–2.47, n=3)");
        assert_eq!(
            fmt_summary(&Summary::of(&[99.0]).unwrap(), "%"),
            "99.0% (n=1)"
        );
    }

    #[test]
    fn markdown_table_from_fixed_results() {
        let md = markdown(&fixture());
        assert!(md.contains("Machine: 2 cores, AMD EPYC, Linux 6.18, rustc 1.95.0, release build, 2026-11-22T10:00:00Z."), "{md}");
        assert!(
            md.contains(
                "| driver | bulk | connect_cold_vs_pooled | datagrams |\n|---|---|---|---|\n"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| stoq-quinn | 2.28 Gbit/s (2.22–2.47, n=3) | cold 2.00 ms (1.90–2.20, n=3); \
                 pooled 0.200 ms; cold/pooled 9.50; connect alone: cold 1.00 ms, pooled 3.00 us, \
                 cold/pooled 333 | 99.5% (99.0–100, n=3) delivered of 50.0k/s offered |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| quinn-direct | 2.40 Gbit/s (2.38–2.45, n=3) | cold 1.80 ms (n=1); pooled 0.180 ms; cold/pooled 10.0 | FAILED |"),
            "{md}"
        );
        assert!(
            md.contains("| tcp | 19.0 Gbit/s (18.5–19.4, n=3) | skipped (budget) | n/a |"),
            "{md}"
        );
        // Framework overhead: ratios of medians.
        assert!(
            md.contains("### Framework overhead: stoq-quinn / quinn-direct"),
            "{md}"
        );
        assert!(
            md.contains("| bulk | goodput | 2.28 Gbit/s | 2.40 Gbit/s | 0.95 |"),
            "{md}"
        );
        assert!(
            md.contains("| bulk | client CPU | 2.64 s/GiB | 2.45 s/GiB | 1.08 |"),
            "{md}"
        );
        assert!(md.contains("| connect_cold_vs_pooled | pooled round trip, median | 0.200 ms | 0.180 ms | 1.11 |"), "{md}");
        assert!(
            md.contains("| datagrams | delivered | 99.5% | - | - |"),
            "{md}"
        );
        // Cold versus pooled.
        assert!(md.contains("| stoq-quinn | 2.00 ms (1.90–2.20, n=3) | 0.200 ms (0.200–0.250, n=3) | 9.50 (8.80–10.0, n=3) | 1.00 ms (0.900–1.10, n=3) | 3.00 us (2.50–3.50, n=3) | 333 (257–440, n=3) |"), "{md}");
        assert!(
            md.contains("connect alone: cold 1.00 ms, pooled 3.00 us, cold/pooled 333"),
            "{md}"
        );
        assert!(md.contains("| tcp | skipped (budget) | | | | | |"), "{md}");
        // CPU.
        assert!(
            md.contains(
                "| stoq-quinn | 2.64 / 1.78 | 99.5% (99.0–100, n=3) delivered of 50.0k/s offered |"
            ),
            "{md}"
        );
        // Notes say why cells are empty.
        assert!(
            md.contains("- tcp x datagrams: n/a: TCP carries no unreliable datagrams"),
            "{md}"
        );
        assert!(
            md.contains(
                "- quinn-direct x datagrams: FAILED: run 2: receiver verified 10 of 20 bytes"
            ),
            "{md}"
        );
        assert!(
            md.contains("- tcp x connect_cold_vs_pooled: skipped"),
            "{md}"
        );
    }

    #[test]
    fn svg_chart_has_a_panel_per_scenario() {
        let svg = svg(&fixture()).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        for name in [
            "bulk",
            "connect_cold_vs_pooled",
            "datagrams",
            "stoq-quinn",
            "quinn-direct",
            "n/a",
        ] {
            assert!(svg.contains(name), "{name} missing");
        }
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    /// The fixture plus an s2n pair measured on `bulk`.
    fn fixture_with_s2n() -> MatrixResults {
        let mut r = fixture();
        let info = |name: &str, kind, backend: Option<&str>| DriverInfo {
            name: name.into(),
            kind,
            backend: backend.map(Into::into),
            description: String::new(),
        };
        r.drivers
            .insert(1, info("stoq-s2n", DriverKind::Stoq, Some("s2n")));
        r.drivers
            .insert(3, info("s2n-direct", DriverKind::S2nDirect, None));
        for (d, goodput, cpu) in [("stoq-s2n", 3.0, 2.2), ("s2n-direct", 3.2, 2.0)] {
            r.cells.push(cell(
                d,
                "bulk",
                CellStatus::Measured,
                vec![
                    metric("goodput_gbps", &[goodput]),
                    metric("client_cpu_s_per_gib", &[cpu]),
                ],
            ));
        }
        r
    }

    #[test]
    fn each_stoq_row_is_paired_with_its_engines_direct_row() {
        let r = fixture_with_s2n();
        assert_eq!(
            overhead_pairs(&r),
            [
                ("stoq-quinn".to_string(), "quinn-direct".to_string()),
                ("stoq-s2n".to_string(), "s2n-direct".to_string()),
            ]
        );
        let md = markdown(&r);
        let quinn = md
            .find("### Framework overhead: stoq-quinn / quinn-direct")
            .expect("quinn section");
        let s2n = md
            .find("### Framework overhead: stoq-s2n / s2n-direct")
            .expect("s2n section");
        assert!(quinn < s2n, "{md}");
        let s2n_section = &md[s2n..];
        assert!(
            s2n_section.contains("| scenario | metric | stoq-s2n | s2n-direct | ratio |"),
            "{md}"
        );
        assert!(
            s2n_section.contains("| bulk | goodput | 3.00 Gbit/s | 3.20 Gbit/s | 0.94 |"),
            "{md}"
        );
        assert!(
            s2n_section.contains("| bulk | client CPU | 2.20 s/GiB | 2.00 s/GiB | 1.10 |"),
            "{md}"
        );
        // Not measured on either side: no ratio.
        assert!(
            s2n_section.contains("| datagrams | delivered | - | - | - |"),
            "{md}"
        );
        // The quinn section keeps comparing quinn rows only.
        assert!(!md[quinn..s2n].contains("stoq-s2n"), "{md}");

        // A direct row without its STOQ row (or the reverse) pairs nothing.
        let mut only_direct = fixture_with_s2n();
        only_direct.drivers.retain(|d| d.name != "stoq-s2n");
        assert_eq!(overhead_pairs(&only_direct).len(), 1);
        let mut only_stoq = fixture_with_s2n();
        only_stoq.drivers.retain(|d| d.name != "s2n-direct");
        assert!(!markdown(&only_stoq).contains("stoq-s2n / s2n-direct"));
    }

    #[test]
    fn no_overhead_table_without_a_reference_driver() {
        let mut r = fixture();
        r.drivers.retain(|d| d.name != "quinn-direct");
        assert!(!markdown(&r).contains("Framework overhead"));
    }

    #[test]
    fn the_quiche_row_is_paired_with_quiche_direct() {
        let mut r = fixture_with_s2n();
        let info = |name: &str, kind, backend: Option<&str>| DriverInfo {
            name: name.into(),
            kind,
            backend: backend.map(Into::into),
            description: String::new(),
        };
        r.drivers
            .push(info("stoq-quiche", DriverKind::Stoq, Some("quiche")));
        r.drivers
            .push(info("quiche-direct", DriverKind::QuicheDirect, None));
        assert_eq!(
            overhead_pairs(&r).last(),
            Some(&("stoq-quiche".to_string(), "quiche-direct".to_string()))
        );
        assert!(markdown(&r).contains("### Framework overhead: stoq-quiche / quiche-direct"));
    }
}
