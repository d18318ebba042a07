//! The results of a matrix run, as serialised to JSON.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::stats::Summary;
use crate::BenchError;

/// Everything a matrix run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixResults {
    /// Format version of this document.
    pub format: u32,
    /// The machine the matrix ran on.
    pub machine: Machine,
    /// `"full"`, `"quick"` or `"x0.25"`: how scenarios were scaled.
    pub scale: String,
    /// Wall-clock seconds the whole matrix took.
    pub elapsed_seconds: f64,
    /// The time budget it was given, in seconds.
    pub budget_seconds: f64,
    /// The drivers, in row order.
    pub drivers: Vec<DriverInfo>,
    /// The scenarios as run (after scaling), in column order.
    pub scenarios: Vec<crate::Scenario>,
    /// One cell per driver and scenario.
    pub cells: Vec<CellResult>,
    /// STOQ rows against their engines' direct rows in alternating runs
    /// ([`crate::paired`]); empty in results written before it existed.
    #[serde(default)]
    pub paired: Vec<crate::paired::PairedOverhead>,
}

/// A driver as recorded in the results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverInfo {
    /// Row name (`stoq-quinn`, `stoq-s2n`, `quinn-direct`, `s2n-direct`, `quiche-direct`,
    /// `tcp`, `tls-tcp`).
    pub name: String,
    /// The driver's kind.
    pub kind: crate::DriverKind,
    /// The backend, for STOQ drivers.
    pub backend: Option<String>,
    /// One line.
    pub description: String,
}

/// What happened in one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    /// Measured; `metrics` hold the runs.
    Measured,
    /// The driver cannot run this scenario; `reason` says why.
    NotApplicable,
    /// A run failed (an error, a timeout or a verification failure); `reason` says which.
    /// Runs that completed before it are kept in `metrics`.
    Failed,
    /// Not run: the time budget was spent.
    Skipped,
}

/// One driver x scenario cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    /// Driver (row) name.
    pub driver: String,
    /// Scenario (column) name.
    pub scenario: String,
    /// Outcome.
    pub status: CellStatus,
    /// Why not measured, or what failed.
    pub reason: Option<String>,
    /// How the scenario maps onto the driver, where it is not one to one.
    pub note: Option<String>,
    /// Runs planned; fewer ran when the budget ran short.
    pub runs_planned: usize,
    /// Wall-clock seconds the cell took.
    pub wall_seconds: f64,
    /// One entry per metric, with a value per completed run.
    pub metrics: Vec<Metric>,
    /// The server's own reports, per run (several per run for the handshake levels).
    pub server_reports: Vec<Vec<crate::ServerRunReport>>,
}

/// One metric of a cell: its values (one per run) and their summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Stable key, e.g. `goodput_gbps`.
    pub key: String,
    /// Human label, e.g. `goodput`.
    pub label: String,
    /// Unit, e.g. `Gbit/s`.
    pub unit: String,
    /// Whether larger values are better.
    pub higher_is_better: bool,
    /// One value per completed run.
    pub values: Vec<f64>,
    /// Count, median, min, max of `values`.
    pub summary: Option<Summary>,
}

impl CellResult {
    /// The metric called `key`, if recorded.
    pub fn metric(&self, key: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.key == key)
    }

    /// The median of metric `key`, if recorded.
    pub fn median(&self, key: &str) -> Option<f64> {
        self.metric(key).and_then(|m| m.summary).map(|s| s.median)
    }

    /// Completed runs (the largest value count of any metric).
    pub fn runs(&self) -> usize {
        self.metrics
            .iter()
            .map(|m| m.values.len())
            .max()
            .unwrap_or(0)
    }
}

impl MatrixResults {
    /// The cell for `driver` and `scenario`.
    pub fn cell(&self, driver: &str, scenario: &str) -> Option<&CellResult> {
        self.cells
            .iter()
            .find(|c| c.driver == driver && c.scenario == scenario)
    }

    /// Writes the results as pretty JSON to `path`.
    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<(), BenchError> {
        let path = path.as_ref();
        let json = serde_json::to_vec_pretty(self).expect("results serialise");
        std::fs::write(path, json)
            .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))
    }

    /// Reads results written by [`write_json`](Self::write_json).
    pub fn read_json(path: impl AsRef<Path>) -> Result<MatrixResults, BenchError> {
        let path = path.as_ref();
        let text = std::fs::read(path)
            .map_err(|e| BenchError::io(format!("reading {}", path.display()), e))?;
        serde_json::from_slice(&text)
            .map_err(|e| BenchError::Usage(format!("{}: {e}", path.display())))
    }
}

/// Metadata of a metric key: label, unit, direction.
pub(crate) fn metric_meta(key: &str) -> (String, &'static str, bool) {
    let level = |k: &str| {
        k.rsplit_once("_c")
            .map(|(_, l)| l.to_string())
            .unwrap_or_default()
    };
    let at = |k: &str| match level(k).as_str() {
        "1" => "sequential".to_string(),
        l => format!("{l} at once"),
    };
    match key {
        "goodput_gbps" => ("goodput".into(), "Gbit/s", true),
        "client_cpu_s_per_gib" => ("client CPU".into(), "s/GiB", false),
        "server_cpu_s_per_gib" => ("server CPU".into(), "s/GiB", false),
        "receiver_seconds" => ("receiver time".into(), "s", false),
        "requests_per_s" => ("requests".into(), "req/s", true),
        "latency_p50_us" => ("latency p50".into(), "us", false),
        "latency_p99_us" => ("latency p99".into(), "us", false),
        "client_cpu_us_per_request" => ("client CPU per request".into(), "us", false),
        "server_cpu_us_per_request" => ("server CPU per request".into(), "us", false),
        "cold_ms" => ("cold connect + round trip, median".into(), "ms", false),
        "pooled_ms" => ("pooled round trip, median".into(), "ms", false),
        "cold_over_pooled" => ("cold / pooled".into(), "x", false),
        "cold_p99_ms" => ("cold p99".into(), "ms", false),
        "pooled_p99_ms" => ("pooled p99".into(), "ms", false),
        "cold_connect_ms" => ("cold connect (handshake) alone, median".into(), "ms", false),
        "pooled_connect_us" => (
            "pooled connect (pool hit) alone, median".into(),
            "us",
            false,
        ),
        "connect_cold_over_pooled" => ("connect: cold / pooled".into(), "x", true),
        "delivered_share_pct" => ("delivered".into(), "%", true),
        "delivered_per_s" => ("delivered rate".into(), "dgram/s", true),
        "offered_per_s" => ("offered rate".into(), "dgram/s", true),
        "delivered_mbps" => ("delivered goodput".into(), "Mbit/s", true),
        k if k.starts_with("handshakes_per_s_c") => (format!("handshakes, {}", at(k)), "/s", true),
        k if k.starts_with("handshake_p50_ms_c") => {
            (format!("handshake p50, {}", at(k)), "ms", false)
        }
        k if k.starts_with("client_cpu_ms_per_handshake_c") => {
            (format!("client CPU per handshake, {}", at(k)), "ms", false)
        }
        k if k.starts_with("server_cpu_ms_per_handshake_c") => {
            (format!("server CPU per handshake, {}", at(k)), "ms", false)
        }
        k if k.starts_with("server_accepted_share_c") => {
            (format!("server-accepted share, {}", at(k)), "x", true)
        }
        other => (other.to_string(), "", true),
    }
}

/// A description of the machine, for the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs available (`std::thread::available_parallelism`).
    pub cores: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: Option<String>,
    /// /proc/sys/kernel/osrelease.
    pub kernel: Option<String>,
    /// `rustc --version`, if rustc is on the PATH.
    pub rustc: Option<String>,
    /// When the matrix started, UTC, ISO 8601.
    pub date: String,
    /// Whether this build of the runner was optimised (`release`) or not (`debug`).
    pub build: String,
    /// `net.core.rmem_max` (largest socket receive buffer), if readable.
    pub rmem_max: Option<u64>,
}

impl Machine {
    /// Describes this machine now.
    pub fn detect() -> Machine {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
        };
        let cpu_model = read("/proc/cpuinfo").and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        });
        let rustc = std::process::Command::new("rustc")
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease"),
            rustc,
            date: utc_now(),
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .into(),
            rmem_max: read("/proc/sys/net/core/rmem_max").and_then(|s| s.parse().ok()),
        }
    }

    /// One line: `2 cores, AMD EPYC ..., Linux 6.18, rustc 1.95.0, 2026-11-22T09:00:00Z`.
    pub fn summary_line(&self) -> String {
        let mut parts = vec![format!("{} cores", self.cores)];
        parts.extend(self.cpu_model.clone());
        parts.extend(self.kernel.as_ref().map(|k| format!("Linux {k}")));
        parts.extend(self.rustc.clone());
        parts.push(format!("{} build", self.build));
        parts.push(self.date.clone());
        parts.join(", ")
    }
}

/// The current time, UTC, as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_string(secs)
}

fn utc_string(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_string(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_string(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_string(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn machine_is_described() {
        let m = Machine::detect();
        assert!(m.cores >= 1);
        assert!(m.summary_line().contains("cores"));
        assert!(m.date.ends_with('Z'));
    }

    #[test]
    fn metric_labels_name_handshake_levels() {
        assert_eq!(
            metric_meta("handshakes_per_s_c1").0,
            "handshakes, sequential"
        );
        assert_eq!(
            metric_meta("handshakes_per_s_c8").0,
            "handshakes, 8 at once"
        );
        assert_eq!(metric_meta("goodput_gbps").1, "Gbit/s");
        assert!(!metric_meta("latency_p99_us").2);
    }
}
