//! The benchmarks' output: one JSON object per metric on stdout (DESIGN.md,
//! "Tests and measurements"), plus the small statistics and knobs every
//! benchmark uses to produce those numbers.

use anyhow::{Context, Result};
use serde_json::json;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Whether a bigger number is better, which decides the ratio's direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One measured figure, as printed by [`emit`].
#[derive(Clone, Debug)]
pub struct Metric<'a> {
    pub name: &'a str,
    pub value: f64,
    pub unit: &'a str,
    pub better: Better,
    /// The baseline's name and its value for the same measurement.
    pub baseline: Option<(&'a str, f64)>,
    pub target: Option<f64>,
    /// The ratio (as emitted: above 1 means ahead) the goal asks for.
    pub target_ratio: Option<f64>,
    pub note: Option<String>,
}

impl<'a> Metric<'a> {
    /// A metric without baseline, target or note.
    pub fn new(name: &'a str, value: f64, unit: &'a str, better: Better) -> Self {
        Metric {
            name,
            value,
            unit,
            better,
            baseline: None,
            target: None,
            target_ratio: None,
            note: None,
        }
    }

    /// Sets the baseline this figure is compared with.
    pub fn against(mut self, baseline: &'a str, value: f64) -> Self {
        self.baseline = Some((baseline, value));
        self
    }

    /// Sets the absolute goal for the value.
    pub fn with_target(mut self, target: f64) -> Self {
        self.target = Some(target);
        self
    }

    /// Sets the ratio the goal asks for, if any.
    pub fn with_target_ratio(mut self, target_ratio: Option<f64>) -> Self {
        self.target_ratio = target_ratio;
        self
    }

    /// Sets the note: how the figure was measured.
    pub fn with_note(mut self, note: String) -> Self {
        self.note = Some(note);
        self
    }
}

/// `v` rounded to `digits` decimals.
pub fn round(v: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (v * p).round() / p
}

/// DESIGN.md's ratio: above 1 always means we are ahead.
pub fn ratio(ours: f64, better: Better, theirs: f64) -> f64 {
    match better {
        Better::Higher => ours / theirs,
        Better::Lower => theirs / ours,
    }
}

/// The JSON object [`emit`] prints for `m`: values rounded to 4 decimals,
/// the ratio to 2 (and left out when it is not finite, e.g. against zero).
pub fn to_json(bench: &str, m: Metric) -> serde_json::Value {
    let mut o = json!({
        "bench": bench,
        "metric": m.name,
        "value": round(m.value, 4),
        "unit": m.unit,
    });
    if let Some((name, v)) = m.baseline {
        o["baseline"] = json!(name);
        o["baseline_value"] = json!(round(v, 4));
        let r = ratio(m.value, m.better, v);
        if r.is_finite() {
            o["ratio"] = json!(round(r, 2));
        }
    }
    if let Some(t) = m.target {
        o["target"] = json!(t);
    }
    if let Some(t) = m.target_ratio {
        o["target_ratio"] = json!(t);
    }
    if let Some(n) = m.note {
        o["note"] = json!(n);
    }
    o
}

/// Prints `m` as one JSON line on stdout.
pub fn emit(bench: &str, m: Metric) {
    println!("{}", to_json(bench, m));
    // Progress readers see results as they come, not only at the end.
    let _ = std::io::stdout().flush();
}

/// The whole number in environment variable `name`, or `default` if unset.
pub fn env_num(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

/// The upper median (NaN for no samples): with the usual odd run counts,
/// one of the measured values rather than an average of two.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// Nearest-rank percentile `p` (0..=100) of `sorted` (ascending).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The 1, 5 and 15 minute load averages, for the notes: other work on the
/// machine moves every figure here.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Tells stderr how busy the machine is as a run starts: other work skews
/// every figure.
pub fn print_load_at_start(bench: &str) {
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        eprintln!("bench {bench}: load average at start {}", load.trim());
    }
}

/// Wall-clock time in Unix milliseconds (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_point_up_when_we_are_ahead() {
        assert_eq!(ratio(2.0, Better::Higher, 1.0), 2.0);
        assert_eq!(ratio(0.5, Better::Higher, 1.0), 0.5);
        // 4 CPU s/GB against their 12: three times better.
        assert_eq!(ratio(4.0, Better::Lower, 12.0), 3.0);
        assert!(ratio(0.5, Better::Lower, 1.0) > 1.0);
        assert!(ratio(0.0, Better::Lower, 12.0).is_infinite());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 99.0).is_nan());
        // One slow query in a hundred is the p99, not beyond it.
        let mut w = vec![0.1; 99];
        w.push(5.0);
        assert_eq!(percentile(&w, 99.0), 0.1);
        w.push(5.0);
        assert_eq!(percentile(&w, 99.0), 5.0);
    }

    #[test]
    fn json_line_rounds_and_leaves_out_what_is_absent() {
        let mut m = Metric::new("cpu_s_per_gb", 4.123456, "s/GB", Better::Lower);
        let plain = to_json("tunnel", m.clone());
        assert_eq!(
            plain,
            json!({"bench": "tunnel", "metric": "cpu_s_per_gb", "value": 4.1235, "unit": "s/GB"})
        );
        m = m
            .against("wireguard-go", 12.0)
            .with_target_ratio(Some(1.0))
            .with_note("median of 3".into());
        let full = to_json("tunnel", m.clone());
        assert_eq!(full["baseline"], "wireguard-go");
        assert_eq!(full["baseline_value"], 12.0);
        assert_eq!(full["ratio"], 2.91);
        assert_eq!(full["target_ratio"], 1.0);
        assert_eq!(full["note"], "median of 3");
        assert!(full.get("target").is_none());
        // Against a zero baseline there is no meaningful ratio.
        m.better = Better::Higher;
        m.baseline = Some(("wireguard-go", 0.0));
        assert!(to_json("tunnel", m).get("ratio").is_none());
    }
}
