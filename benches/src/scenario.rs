//! Scenarios as data: one TOML file per scenario in `benches/scenarios/`, embedded here so
//! a binary built from this crate works anywhere.
//!
//! ```toml
//! name = "bulk"
//! description = "One connection, one stream, 512 MiB upload"
//! runs = 5            # runs per cell (a MatrixOptions value overrides it)
//! quick_scale = 0.02  # sizes, counts and durations are multiplied by this in quick mode
//!
//! [workload]
//! kind = "transfer"
//! connections = 1
//! streams_per_connection = 1
//! bytes_per_stream = 536_870_912
//! concurrency = 1
//! ```
//!
//! Unknown fields are rejected, so a typo never passes silently.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::BenchError;

/// One benchmark scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A short stable name, used as the report's column heading (e.g. `bulk_8conn`).
    pub name: String,
    /// One line saying what is measured.
    pub description: String,
    /// Runs per cell (driver x scenario); the median of these is reported.
    #[serde(default = "default_runs")]
    pub runs: usize,
    /// The factor applied to sizes, counts and durations in quick mode (CI smoke tests).
    #[serde(default = "default_quick_scale")]
    pub quick_scale: f64,
    /// What the client does.
    pub workload: Workload,
}

fn default_runs() -> usize {
    5
}

fn default_quick_scale() -> f64 {
    0.05
}

/// What the client does in one run of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Workload {
    /// Uploads of pattern bytes; goodput counted and verified at the receiver (the server).
    Transfer(Transfer),
    /// Request/response on concurrent streams for a fixed time: requests per second and
    /// latency percentiles.
    Rpc(Rpc),
    /// Full handshakes (connect, then close) per second at each concurrency level.
    Handshakes(Handshakes),
    /// A 1-byte round trip on a new stream of a live connection ("pooled") versus a new
    /// connection's handshake plus the same round trip ("cold").
    ConnectColdVsPooled(ColdVsPooled),
    /// Unreliable datagrams at a fixed offered load: rate and share delivered.
    Datagrams(Datagrams),
}

/// Parameters of [`Workload::Transfer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// Connections opened in parallel.
    pub connections: usize,
    /// Streams per connection (for TCP drivers each stream is a TCP connection).
    pub streams_per_connection: usize,
    /// Payload bytes per stream.
    pub bytes_per_stream: u64,
    /// Streams in flight at once, across all connections.
    pub concurrency: usize,
}

/// Parameters of [`Workload::Rpc`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rpc {
    /// Requests in flight at once (QUIC: a new stream per request, this many at once on
    /// one connection; TCP: this many persistent connections).
    pub concurrency: usize,
    /// Request payload bytes.
    pub request_bytes: usize,
    /// Response payload bytes.
    pub response_bytes: usize,
    /// How long requests are issued.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

/// Parameters of [`Workload::Handshakes`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handshakes {
    /// Concurrency levels measured one after the other; 1 is sequential.
    pub concurrency: Vec<usize>,
    /// How long each level runs.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// At most this many handshakes per level (keeps TCP's TIME_WAIT ports in check).
    pub max_per_level: u64,
}

/// Parameters of [`Workload::ConnectColdVsPooled`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColdVsPooled {
    /// New connections, each with one 1-byte round trip.
    pub cold_iterations: usize,
    /// 1-byte round trips on new streams of one live connection.
    pub pooled_iterations: usize,
}

/// Parameters of [`Workload::Datagrams`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Datagrams {
    /// Payload bytes per datagram (at least 16).
    pub size: usize,
    /// Offered load, datagrams per second.
    pub rate_per_second: u64,
    /// How long datagrams are offered.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// How long the receiver waits for stragglers after the sender stopped.
    #[serde(with = "humantime_serde")]
    pub drain: Duration,
}

/// The scenario files shipped in `benches/scenarios/`, as `(file name, contents)`.
pub const BUILTIN_FILES: &[(&str, &str)] = &[
    ("bulk.toml", include_str!("../scenarios/bulk.toml")),
    (
        "bulk_8conn.toml",
        include_str!("../scenarios/bulk_8conn.toml"),
    ),
    (
        "streams_1000x64k.toml",
        include_str!("../scenarios/streams_1000x64k.toml"),
    ),
    (
        "rpc_1k_100.toml",
        include_str!("../scenarios/rpc_1k_100.toml"),
    ),
    (
        "handshakes.toml",
        include_str!("../scenarios/handshakes.toml"),
    ),
    (
        "connect_cold_vs_pooled.toml",
        include_str!("../scenarios/connect_cold_vs_pooled.toml"),
    ),
    (
        "datagrams.toml",
        include_str!("../scenarios/datagrams.toml"),
    ),
];

/// The built-in scenarios (the default matrix), in report order.
pub fn builtin() -> Vec<Scenario> {
    BUILTIN_FILES
        .iter()
        .map(|(file, text)| {
            Scenario::from_toml_str(text, file).expect("built-in scenarios parse (unit-tested)")
        })
        .collect()
}

/// The built-in scenarios called `names`, in the order given; an unknown name is an error
/// listing the known ones.
pub fn builtin_named(names: &[&str]) -> Result<Vec<Scenario>, BenchError> {
    let all = builtin();
    names
        .iter()
        .map(|n| {
            all.iter().find(|s| s.name == *n).cloned().ok_or_else(|| {
                BenchError::Usage(format!(
                    "no scenario named {n:?}; built in: {}",
                    all.iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
        })
        .collect()
}

impl Scenario {
    /// Parses and validates a scenario; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Scenario, BenchError> {
        let s: Scenario = toml::from_str(text).map_err(|e| BenchError::Scenario {
            name: origin.to_string(),
            reason: e.to_string(),
        })?;
        s.validate().map_err(|reason| BenchError::Scenario {
            name: origin.to_string(),
            reason,
        })?;
        Ok(s)
    }

    /// Reads, parses and validates a scenario file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Scenario, BenchError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| BenchError::io(format!("reading {}", path.display()), e))?;
        Scenario::from_toml_str(&text, &path.display().to_string())
    }

    /// Every `*.toml` scenario in `dir`, sorted by file name.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Vec<Scenario>, BenchError> {
        let dir = dir.as_ref();
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| BenchError::io(format!("listing {}", dir.display()), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        paths.iter().map(Scenario::from_file).collect()
    }

    /// Checks values serde cannot: non-zero sizes and counts, sane factors.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |what: &str, v: u64| {
            if v == 0 {
                Err(format!("{what} must be at least 1"))
            } else {
                Ok(())
            }
        };
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "name {:?} must be non-empty ASCII letters, digits, '_' or '-'",
                self.name
            ));
        }
        positive("runs", self.runs as u64)?;
        if !(self.quick_scale > 0.0 && self.quick_scale <= 1.0) {
            return Err("quick_scale must be in (0, 1]".into());
        }
        match &self.workload {
            Workload::Transfer(t) => {
                positive("workload.connections", t.connections as u64)?;
                positive(
                    "workload.streams_per_connection",
                    t.streams_per_connection as u64,
                )?;
                positive("workload.bytes_per_stream", t.bytes_per_stream)?;
                positive("workload.concurrency", t.concurrency as u64)?;
            }
            Workload::Rpc(r) => {
                positive("workload.concurrency", r.concurrency as u64)?;
                positive("workload.request_bytes", r.request_bytes as u64)?;
                positive("workload.response_bytes", r.response_bytes as u64)?;
                positive("workload.duration", r.duration.as_micros() as u64)?;
            }
            Workload::Handshakes(h) => {
                if h.concurrency.is_empty() || h.concurrency.contains(&0) {
                    return Err("workload.concurrency must list levels of at least 1".into());
                }
                positive("workload.duration", h.duration.as_micros() as u64)?;
                positive("workload.max_per_level", h.max_per_level)?;
            }
            Workload::ConnectColdVsPooled(c) => {
                positive("workload.cold_iterations", c.cold_iterations as u64)?;
                positive("workload.pooled_iterations", c.pooled_iterations as u64)?;
            }
            Workload::Datagrams(d) => {
                if d.size < 16 {
                    return Err("workload.size must be at least 16 bytes".into());
                }
                positive("workload.rate_per_second", d.rate_per_second)?;
                positive("workload.duration", d.duration.as_micros() as u64)?;
            }
        }
        Ok(())
    }

    /// This scenario with sizes, counts and durations multiplied by `factor` (clamped to
    /// sensible minimums). A transfer with many streams per connection keeps the stream
    /// size (what that scenario is about) and shrinks the stream count instead.
    pub fn scaled(&self, factor: f64) -> Scenario {
        if (factor - 1.0).abs() < f64::EPSILON {
            return self.clone();
        }
        let count = |n: usize, min: usize| ((n as f64 * factor).round() as usize).max(min);
        let dur = |d: Duration, min_ms: u64| d.mul_f64(factor).max(Duration::from_millis(min_ms));
        let workload = match &self.workload {
            Workload::Transfer(t) => {
                let mut t = t.clone();
                if t.streams_per_connection > 8 {
                    t.streams_per_connection = count(t.streams_per_connection, 4);
                    t.concurrency = t.concurrency.min(t.streams_per_connection * t.connections);
                } else {
                    t.bytes_per_stream =
                        ((t.bytes_per_stream as f64 * factor) as u64).max(64 * 1024);
                }
                Workload::Transfer(t)
            }
            Workload::Rpc(r) => Workload::Rpc(Rpc {
                duration: dur(r.duration, 100),
                ..r.clone()
            }),
            Workload::Handshakes(h) => Workload::Handshakes(Handshakes {
                duration: dur(h.duration, 100),
                max_per_level: ((h.max_per_level as f64 * factor) as u64).max(4),
                ..h.clone()
            }),
            Workload::ConnectColdVsPooled(c) => Workload::ConnectColdVsPooled(ColdVsPooled {
                cold_iterations: count(c.cold_iterations, 3),
                pooled_iterations: count(c.pooled_iterations, 3),
            }),
            Workload::Datagrams(d) => Workload::Datagrams(Datagrams {
                duration: dur(d.duration, 100),
                ..d.clone()
            }),
        };
        Scenario {
            workload,
            ..self.clone()
        }
    }

    /// The workload's kind as written in TOML (`transfer`, `rpc`, ...).
    pub fn kind(&self) -> &'static str {
        match self.workload {
            Workload::Transfer(_) => "transfer",
            Workload::Rpc(_) => "rpc",
            Workload::Handshakes(_) => "handshakes",
            Workload::ConnectColdVsPooled(_) => "connect_cold_vs_pooled",
            Workload::Datagrams(_) => "datagrams",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_the_scenarios_directory_parses_and_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let on_disk = Scenario::load_dir(&dir).unwrap();
        assert!(on_disk.len() >= 7, "{} scenarios", on_disk.len());
        let embedded = builtin();
        assert_eq!(
            on_disk.len(),
            embedded.len(),
            "every file must be in BUILTIN_FILES"
        );
        for s in &on_disk {
            let e = embedded.iter().find(|e| e.name == s.name).unwrap();
            assert_eq!(e, s);
        }
        for (file, _) in BUILTIN_FILES {
            let s = Scenario::from_file(dir.join(file)).unwrap();
            assert_eq!(
                format!("{}.toml", s.name),
                *file,
                "file named after its scenario"
            );
        }
        for name in [
            "bulk",
            "bulk_8conn",
            "streams_1000x64k",
            "rpc_1k_100",
            "handshakes",
            "connect_cold_vs_pooled",
            "datagrams",
        ] {
            assert!(embedded.iter().any(|s| s.name == name), "{name} missing");
        }
    }

    #[test]
    fn unknown_fields_are_rejected_at_every_level() {
        let good = BUILTIN_FILES[0].1;
        assert!(Scenario::from_toml_str(good, "t").is_ok());
        let top = format!("colour = \"blue\"\n{good}");
        let err = Scenario::from_toml_str(&top, "t").unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
        let inner = good.replace("concurrency = 1", "concurrency = 1\nconcurency = 2");
        let err = Scenario::from_toml_str(&inner, "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("concurency"), "{err}");
        let kind = good.replace("kind = \"transfer\"", "kind = \"teleport\"");
        assert!(Scenario::from_toml_str(&kind, "t").is_err());
    }

    #[test]
    fn invalid_values_are_rejected() {
        let good = BUILTIN_FILES[0].1;
        let zero = good.replace("concurrency = 1", "concurrency = 0");
        let err = Scenario::from_toml_str(&zero, "t").unwrap_err().to_string();
        assert!(err.contains("workload.concurrency"), "{err}");
        let bad_dur = BUILTIN_FILES
            .iter()
            .find(|(f, _)| *f == "rpc_1k_100.toml")
            .unwrap()
            .1
            .replace("duration = \"", "duration = \"soon");
        assert!(Scenario::from_toml_str(&bad_dur, "t").is_err());
    }

    #[test]
    fn quick_scale_shrinks_every_workload() {
        for s in builtin() {
            let q = s.scaled(s.quick_scale);
            q.validate().unwrap();
            match (&s.workload, &q.workload) {
                (Workload::Transfer(a), Workload::Transfer(b)) => assert!(
                    b.bytes_per_stream * (b.streams_per_connection as u64)
                        < a.bytes_per_stream * (a.streams_per_connection as u64)
                ),
                (Workload::Rpc(a), Workload::Rpc(b)) => assert!(b.duration < a.duration),
                (Workload::Handshakes(a), Workload::Handshakes(b)) => {
                    assert!(b.duration < a.duration)
                }
                (Workload::ConnectColdVsPooled(a), Workload::ConnectColdVsPooled(b)) => {
                    assert!(b.cold_iterations < a.cold_iterations)
                }
                (Workload::Datagrams(a), Workload::Datagrams(b)) => {
                    assert!(b.duration < a.duration)
                }
                _ => panic!("scaling changed the workload kind"),
            }
            assert_eq!(s.scaled(1.0), s);
        }
    }

    #[test]
    fn builtin_named_keeps_order_and_rejects_unknown_names() {
        let v = builtin_named(&["datagrams", "bulk"]).unwrap();
        assert_eq!(v[0].name, "datagrams");
        assert_eq!(v[1].name, "bulk");
        let err = builtin_named(&["nope"]).unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("bulk_8conn"), "{err}");
    }
}
