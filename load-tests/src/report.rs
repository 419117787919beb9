//! The outcome of one run: its parameters, its figures (in the order they
//! were added), and the failures that make the run exit non-zero. Printed as
//! a human summary, and with `--json` as one JSON line on stdout.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

pub struct Report {
    scenario: &'static str,
    params: Vec<(String, Value)>,
    figures: Vec<(String, Value)>,
    failures: Vec<String>,
    notes: Vec<String>,
}

/// Serialises key/value pairs as a JSON object in their own order.
struct Ordered<'a>(&'a [(String, Value)]);

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl Report {
    pub fn new(scenario: &'static str) -> Self {
        Report {
            scenario,
            params: Vec::new(),
            figures: Vec::new(),
            failures: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn param(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.params.push((key.to_owned(), value.into()));
        self
    }

    pub fn figure(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.figures.push((key.to_owned(), value.into()));
        self
    }

    pub fn figures(&mut self, figures: Vec<(&'static str, Value)>) -> &mut Self {
        for (key, value) in figures {
            self.figure(key, value);
        }
        self
    }

    /// Something that makes the run fail (exit non-zero).
    pub fn fail(&mut self, why: impl Into<String>) -> &mut Self {
        self.failures.push(why.into());
        self
    }

    /// Fails with `why` when `count` is not zero.
    pub fn fail_if(&mut self, count: u64, why: &str) -> &mut Self {
        if count > 0 {
            self.fail(format!("{count} {why}"));
        }
        self
    }

    /// Something worth knowing that is not a failure.
    pub fn note(&mut self, note: impl Into<String>) -> &mut Self {
        self.notes.push(note.into());
        self
    }

    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// The one JSON line: scenario, ok, failures, notes, params, then every figure.
    pub fn json_line(&self) -> String {
        let mut top: Vec<(String, Value)> = vec![
            ("scenario".into(), self.scenario.into()),
            ("ok".into(), self.ok().into()),
            ("failures".into(), self.failures.clone().into()),
        ];
        if !self.notes.is_empty() {
            top.push(("notes".into(), self.notes.clone().into()));
        }
        let params = serde_json::to_value(Ordered(&self.params)).unwrap_or(Value::Null);
        top.push(("params".into(), params));
        top.extend(self.figures.iter().cloned());
        serde_json::to_string(&Ordered(&top)).expect("a report serialises")
    }

    /// The summary for people, one figure a line.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(key, value)| format!("{key}={}", plain(value)))
            .collect();
        out.push_str(&format!("== {} ({})\n", self.scenario, params.join(" ")));
        for (key, value) in &self.figures {
            out.push_str(&format!("  {key:<24} {}\n", describe(value)));
        }
        for note in &self.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
        if self.ok() {
            out.push_str("  result: OK\n");
        } else {
            for failure in &self.failures {
                out.push_str(&format!("  FAILED: {failure}\n"));
            }
        }
        out
    }
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A figure for people: latency objects as `p50 … ms`, spreads as
/// `min … median … ms`, numbers as they are.
fn describe(value: &Value) -> String {
    let Value::Object(map) = value else {
        return plain(value);
    };
    if map.contains_key("p50") {
        let get = |k: &str| map.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        return format!(
            "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms  (n={})",
            get("p50"),
            get("p90"),
            get("p99"),
            get("p999"),
            get("max"),
            map.get("count").map(plain).unwrap_or_default()
        );
    }
    if map.contains_key("median") {
        let get = |k: &str| map.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        return format!(
            "min {:.2}  median {:.2}  p90 {:.2}  max {:.2} ms  (n={})",
            get("min"),
            get("median"),
            get("p90"),
            get("max"),
            map.get("count").map(plain).unwrap_or_default()
        );
    }
    if map.get("count") == Some(&Value::from(0)) && map.len() == 1 {
        return "no samples".into();
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_line_keeps_the_order_figures_were_added_in() {
        let mut report = Report::new("pairs");
        report
            .param("pairs", 5)
            .figure("zeta", 1)
            .figure("alpha", 2);
        let line = report.json_line();
        assert!(line.starts_with(
            r#"{"scenario":"pairs","ok":true,"failures":[],"params":{"pairs":5},"zeta":1,"alpha":2"#
        ));
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_failure_makes_the_report_not_ok() {
        let mut report = Report::new("pairs");
        report
            .fail_if(0, "lost")
            .figure("lat", json!({"p50": 1.0, "count": 3}));
        assert!(report.ok());
        report.fail_if(3, "lost");
        assert!(!report.ok());
        assert!(report.human().contains("FAILED: 3 lost"));
    }
}
