//! Results: named figures, printed as an aligned table or as one JSON object.

use std::time::Duration;

use serde_json::{Map, Value};

#[derive(Default)]
pub(crate) struct Report {
    pub scenario: &'static str,
    rows: Vec<(String, Value, String)>,
}

impl Report {
    pub(crate) fn new(scenario: &'static str) -> Self {
        Self { scenario, rows: Vec::new() }
    }

    pub(crate) fn add(&mut self, name: &str, value: impl Into<Value>, unit: &str) {
        self.rows.push((name.to_owned(), value.into(), unit.to_owned()));
    }

    /// p50, p90, p99 and max of `samples`, in milliseconds.
    pub(crate) fn latencies(&mut self, name: &str, mut samples: Vec<Duration>) {
        samples.sort_unstable();
        for (label, q) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("max", 1.0)] {
            let value = percentile(&samples, q).map_or(0.0, |d| (d.as_secs_f64() * 1e5).round() / 100.0);
            self.add(&format!("{name} {label}"), value, "ms");
        }
    }

    pub(crate) fn print(&self, json: bool) {
        if json {
            let mut object = Map::new();
            object.insert("scenario".into(), self.scenario.into());
            for (name, value, _) in &self.rows {
                object.insert(name.replace(' ', "_"), value.clone());
            }
            println!("{}", Value::Object(object));
            return;
        }
        println!("scenario: {}", self.scenario);
        let width = self.rows.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
        for (name, value, unit) in &self.rows {
            println!("  {name:<width$}  {value} {unit}");
        }
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    let last = sorted.len().checked_sub(1)?;
    sorted.get(((last as f64) * q).round() as usize).copied()
}
