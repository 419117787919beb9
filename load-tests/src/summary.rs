//! `summarize`: turns the JSON lines `run.sh` collected into
//! `RESULTS.md`: a header (machine, date, commit — written by `run.sh`),
//! with `--targets BACKEND` the targets table ([`targets`]) and the medians
//! of repeated runs, then an overview table and every figure of every run.
//!
//! Input: one line per run, `{"label", "command", "exit", "result"}`,
//! where `result` is the scenario's `--json` line (or `null`). Repeated
//! runs are labelled `NAME-r1`, `NAME-r2`, …; the ceiling's (runs against
//! `parley-relay`) `relay-NAME…`.

pub mod targets;

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

pub use self::targets::Backend;
use self::targets::{median, number};
use crate::Failure;

/// What goes into the report beside the runs.
pub struct Options<'a> {
    /// Markdown to put under the title (machine, date, commit).
    pub header: Option<&'a Path>,
    /// Add the targets table for this backend.
    pub targets: Option<Backend>,
    /// The runs were a smoke run's (the targets table says so).
    pub smoke: bool,
}

pub fn summarize(input: &Path, out: &Path, options: &Options<'_>) -> Result<(), Failure> {
    let text = std::fs::read_to_string(input)
        .map_err(|e| format!("cannot read {}: {e}", input.display()))?;
    let runs: Vec<Value> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not JSON lines: {e}", input.display()))?;
    let header = match options.header {
        Some(path) => std::fs::read_to_string(path)?,
        None => String::new(),
    };
    let mut md = render_top(&header);
    if let Some(backend) = options.targets {
        md.push_str(&targets::render(&runs, backend, options.smoke));
        md.push_str(&render_repeated(&runs));
    }
    md.push_str(&render_runs(&runs));
    std::fs::write(out, md)?;
    Ok(())
}

fn render_top(header: &str) -> String {
    let mut md = String::new();
    md.push_str("# Parley load-test results\n\n");
    md.push_str("Written by `load-tests/run.sh`; `load-tests/README.md` explains each figure.\n\n");
    md.push_str(header.trim_end());
    md.push_str("\n\n");
    md
}

/// `NAME` of a run labelled `NAME-rN`.
fn repeated(label: &str) -> Option<&str> {
    let (name, n) = label.rsplit_once("-r")?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(name)
}

/// The figure a repeated run is summed up by, and its unit.
fn key_figure(scenario: &str) -> Option<(&'static str, &'static str)> {
    Some(match scenario {
        "pairs" => ("delivered_per_sec", "msg/s"),
        "fanout" => ("delivered_per_sec", "deliveries/s"),
        "broadcast" => ("time_to_last_median_ms", "ms to the last member"),
        "history" => ("requests_per_sec", "req/s"),
        "login" => ("logins_per_sec", "logins/s"),
        "idle" => ("server_rss_per_conn_bytes", "B per socket"),
        "seed" => ("stored_per_sec", "msg/s"),
        _ => return None,
    })
}

/// The medians of every group of repeated runs (`NAME-r1`, `NAME-r2`, …).
fn render_repeated(runs: &[Value]) -> String {
    let mut groups: Vec<(&str, Vec<&Value>)> = Vec::new();
    for run in runs {
        let Some(name) = run["label"].as_str().and_then(repeated) else {
            continue;
        };
        match groups.iter_mut().find(|(n, _)| *n == name) {
            Some((_, members)) => members.push(run),
            None => groups.push((name, vec![run])),
        }
    }
    if groups.is_empty() {
        return String::new();
    }
    let mut md = String::from("## Medians of repeated runs\n\n");
    md.push_str("| runs | n | ok | median (each run) | latency p50 / p99 (ms), medians |\n");
    md.push_str("|---|---|---|---|---|\n");
    for (name, members) in groups {
        let ok = members
            .iter()
            .filter(|run| run["exit"] == 0 && run["result"]["ok"] == true)
            .count();
        let scenario = members[0]["result"]["scenario"].as_str().unwrap_or("");
        let figure = key_figure(scenario)
            .map(|(key, unit)| {
                let values: Vec<f64> = members
                    .iter()
                    .filter_map(|run| run["result"][key].as_f64())
                    .collect();
                let each: Vec<String> = values.iter().map(|v| number(*v)).collect();
                match median(&values) {
                    Some(m) => format!("{} {unit} ({})", number(m), each.join(" · ")),
                    None => String::new(),
                }
            })
            .unwrap_or_default();
        let latency_key = headline(&members[0]["result"]).1;
        let quantile = |q: &str| {
            let values: Vec<f64> = members
                .iter()
                .filter_map(|run| run["result"][latency_key][q].as_f64())
                .collect();
            median(&values).map(number).unwrap_or_else(|| "–".into())
        };
        let latency = if latency_key.is_empty() {
            String::new()
        } else {
            format!("{} / {}", quantile("p50"), quantile("p99"))
        };
        let _ = writeln!(
            md,
            "| {name}-r* | {} | {ok} | {figure} | {latency} |",
            members.len()
        );
    }
    md.push('\n');
    md
}

fn render_runs(runs: &[Value]) -> String {
    let mut md = String::from("## Overview\n\n");
    md.push_str("| run | ok | throughput | latency p50 / p99 / p99.9 / max (ms) | lost / dup | tool CPU (cores) | server CPU (cores) |\n");
    md.push_str("|---|---|---|---|---|---|---|\n");
    for run in runs {
        let label = run["label"].as_str().unwrap_or("?");
        let result = &run["result"];
        let ok = if run["exit"] == 0 && result["ok"] == true {
            "yes"
        } else {
            "**no**"
        };
        if result.is_null() {
            let _ = writeln!(md, "| {label} | {ok} | (no result) | | | | |");
            continue;
        }
        let (throughput, latency_key) = headline(result);
        let latency = result
            .get(latency_key)
            .filter(|l| l.get("p50").is_some())
            .map(|l| {
                format!(
                    "{} / {} / {} / {}",
                    num(&l["p50"]),
                    num(&l["p99"]),
                    num(&l["p999"]),
                    num(&l["max"])
                )
            })
            .unwrap_or_default();
        let loss = match (result.get("lost"), result.get("duplicates")) {
            (Some(lost), Some(dup)) => format!("{} / {}", num(lost), num(dup)),
            _ => String::new(),
        };
        let cpu = |key: &str| {
            result
                .get(key)
                .or_else(|| result.get(format!("connect_{key}").as_str()))
                .map(num)
                .unwrap_or_default()
        };
        let _ = writeln!(
            md,
            "| {label} | {ok} | {throughput} | {latency} | {loss} | {} | {} |",
            cpu("tool_cpu_cores"),
            cpu("server_cpu_cores")
        );
    }
    md.push_str("\n## Runs\n");
    for run in runs {
        let label = run["label"].as_str().unwrap_or("?");
        let _ = write!(
            md,
            "\n### {label}\n\n`{}` — exit {}\n\n",
            run["command"].as_str().unwrap_or(""),
            run["exit"]
        );
        let Value::Object(result) = &run["result"] else {
            md.push_str("No JSON result (see the run's log).\n");
            continue;
        };
        md.push_str("| figure | value |\n|---|---|\n");
        for (key, value) in result {
            if key == "scenario" {
                continue;
            }
            let _ = writeln!(md, "| {key} | {} |", cell(value));
        }
    }
    md
}

/// The throughput phrase of a run, and which latency figure is its headline.
fn headline(r: &Value) -> (String, &'static str) {
    let f = |key: &str| num(&r[key]);
    match r["scenario"].as_str().unwrap_or("") {
        "idle" => (
            format!(
                "{} sockets, {} connects/s, {} B server RSS per socket",
                f("connected"),
                f("connects_per_sec"),
                f("server_rss_per_conn_bytes")
            ),
            "connect_latency_ms",
        ),
        "pairs" => (
            format!(
                "{} msg/s delivered ({} sent)",
                f("delivered_per_sec"),
                f("sent_per_sec")
            ),
            "delivery_latency_ms",
        ),
        "fanout" => (
            format!(
                "{} deliveries/s ({} posts/s)",
                f("delivered_per_sec"),
                f("sent_per_sec")
            ),
            "delivery_latency_ms",
        ),
        "broadcast" => (
            format!(
                "median {} ms until the last of {} members had a post",
                f("time_to_last_median_ms"),
                num(&r["params"]["members"])
            ),
            "delivery_latency_ms",
        ),
        "seed" => (
            format!(
                "{} msg/s stored ({} in all)",
                f("stored_per_sec"),
                f("stored")
            ),
            "ack_latency_ms",
        ),
        "history" => (format!("{} req/s", f("requests_per_sec")), "latency_ms"),
        "login" => (
            format!(
                "{} logins/s ({} refused with 503)",
                f("logins_per_sec"),
                f("refused")
            ),
            "latency_ms",
        ),
        "hash-cost" => (
            format!(
                "{} ms CPU per hash (median of {})",
                num(&r["cpu_ms"]["median"]),
                num(&r["params"]["iterations"])
            ),
            "",
        ),
        "changes" => {
            let op = |name: &str| {
                format!(
                    "{} {}/s (p99 {} ms, {} µs server CPU each)",
                    num(&r[name]["per_sec"]),
                    name,
                    num(&r[name]["latency_ms"]["p99"]),
                    num(&r[name]["server_cpu_us_per_request"])
                )
            };
            ([op("edit"), op("react"), op("search")].join(", "), "")
        }
        "prepare" => (format!("{} s", f("secs")), ""),
        _ => (String::new(), "round_trip_ms"),
    }
}

fn num(value: &Value) -> String {
    match value {
        Value::Null => "–".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn cell(value: &Value) -> String {
    if let Some(p50) = value.get("p50") {
        return format!(
            "p50 {} · p90 {} · p99 {} · p99.9 {} · max {} ms (n={})",
            num(p50),
            num(&value["p90"]),
            num(&value["p99"]),
            num(&value["p999"]),
            num(&value["max"]),
            num(&value["count"])
        );
    }
    if let Some(median) = value.get("median") {
        return format!(
            "min {} · median {} · p90 {} · max {} ms (n={})",
            num(&value["min"]),
            num(median),
            num(&value["p90"]),
            num(&value["max"]),
            num(&value["count"])
        );
    }
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = text.replace('|', "\\|");
    if text.chars().count() > 600 {
        format!("{}…", text.chars().take(600).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_an_overview_row_and_a_figure_table_per_run() {
        let render = |header: &str, runs: &[Value]| render_top(header) + &render_runs(runs);
        let runs: Vec<Value> = vec![serde_json::json!({
            "label": "pairs-15k",
            "command": "parley-load pairs --pairs 5 --rate 100",
            "exit": 0,
            "result": {
                "scenario": "pairs", "ok": true, "failures": [], "params": {"pairs": 5},
                "sent_per_sec": 100.0, "delivered_per_sec": 99.9, "lost": 0, "duplicates": 0,
                "tool_cpu_cores": 0.1, "server_cpu_cores": 0.2,
                "delivery_latency_ms": {"count": 3, "p50": 1.0, "p90": 2.0, "p99": 3.0, "p999": 4.0, "max": 5.0}
            }
        })];
        let md = render("- machine: test", &runs);
        assert!(!md.contains("## Medians"));
        assert!(md.contains("| pairs-15k | yes | 99.9 msg/s delivered (100.0 sent) | 1.0 / 3.0 / 4.0 / 5.0 | 0 / 0 | 0.1 | 0.2 |"), "{md}");
        assert!(md.contains("### pairs-15k"));
        assert!(md.contains("| delivery_latency_ms | p50 1.0 · p90 2.0"));
    }

    #[test]
    fn repeated_runs_are_summed_up_by_their_medians() {
        let pairs = |label: &str, rate: f64, p99: f64| {
            serde_json::json!({
                "label": label, "command": "", "exit": 0,
                "result": {
                    "scenario": "pairs", "ok": true, "delivered_per_sec": rate,
                    "delivery_latency_ms": {"p50": 1.0, "p99": p99}
                }
            })
        };
        let runs = vec![
            pairs("pairs-15k-r1", 14_990.0, 30.0),
            pairs("pairs-15k-r2", 15_000.0, 10.0),
            pairs("pairs-15k-r3", 14_000.0, 20.0),
            pairs("pairs-ladder-15000", 15_000.0, 5.0),
        ];
        let md = render_repeated(&runs);
        assert!(
            md.contains(
                "| pairs-15k-r* | 3 | 3 | 14,990 msg/s (14,990 · 15,000 · 14,000) | 1 / 20 |"
            ),
            "{md}"
        );
        assert!(!md.contains("ladder"));
        assert_eq!(repeated("history-newest-r12"), Some("history-newest"));
        assert_eq!(repeated("pairs-ladder-r1-15000"), None);
        assert_eq!(repeated("broadcast-r"), None);
    }

    #[test]
    fn login_rows_count_refusals_and_hash_cost_rows_show_the_median() {
        let runs: Vec<Value> = vec![
            serde_json::json!({
                "label": "login", "command": "parley-load login --rate 30", "exit": 0,
                "result": {"scenario": "login", "ok": true, "failures": [], "params": {},
                    "logins_per_sec": 12.5, "refused": 310}
            }),
            serde_json::json!({
                "label": "hash-cost", "command": "parley-load hash-cost", "exit": 0,
                "result": {"scenario": "hash-cost", "ok": true, "failures": [],
                    "params": {"iterations": 50},
                    "cpu_ms": {"count": 50, "min": 14.6, "median": 16.0, "p90": 24.6, "max": 30.0}}
            }),
        ];
        let md = render_top("") + &render_runs(&runs);
        assert!(
            md.contains("| login | yes | 12.5 logins/s (310 refused with 503) |"),
            "{md}"
        );
        assert!(
            md.contains("| hash-cost | yes | 16.0 ms CPU per hash (median of 50) |"),
            "{md}"
        );
        assert!(
            md.contains("| cpu_ms | min 14.6 · median 16.0 · p90 24.6 · max 30.0 ms (n=50) |"),
            "{md}"
        );
    }
}
