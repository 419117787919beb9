//! The targets a full run is judged against, in one table ([`TARGETS`]),
//! and how a target is judged: the median of its runs (labels matching a
//! pattern, one figure each), set beside the same figure measured against
//! `parley-relay` (the machine's ceiling), and compared with the threshold.

use std::fmt::Write as _;

use serde_json::Value;

/// The backend a report covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Which backends a target is set for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applies {
    Both,
    Only(Backend),
}

impl Applies {
    fn includes(self, backend: Backend) -> bool {
        match self {
            Applies::Both => true,
            Applies::Only(only) => only == backend,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Applies::Both => "both",
            Applies::Only(Backend::Sqlite) => "SQLite",
            Applies::Only(Backend::Postgres) => "Postgres",
        }
    }
}

/// What number a run contributes.
#[derive(Clone, Copy, Debug)]
pub enum Figure {
    /// A figure of the run's JSON line, by dotted path (`latency_ms.p99`).
    Path(&'static str),
    /// Per ladder (labels `…-rN-RATE`, grouped without the rate): the
    /// highest `params.rate` whose step was `sustained`; 0 if none was.
    LadderBest,
    /// The median of `path` over these runs divided by its median over the
    /// `baseline` runs (lower is better when the comparison is `Below`).
    RatioTo {
        path: &'static str,
        baseline: &'static str,
    },
}

/// How the median is compared with the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    AtLeast,
    AtMost,
    Below,
    /// Shown, not judged.
    Report,
}

impl Cmp {
    fn higher_is_better(self) -> bool {
        self == Cmp::AtLeast
    }

    fn symbol(self) -> &'static str {
        match self {
            Cmp::AtLeast => "≥",
            Cmp::AtMost => "≤",
            Cmp::Below => "<",
            Cmp::Report => "",
        }
    }

    fn holds(self, measured: f64, threshold: f64) -> bool {
        match self {
            Cmp::AtLeast => measured >= threshold,
            Cmp::AtMost => measured <= threshold,
            Cmp::Below => measured < threshold,
            Cmp::Report => true,
        }
    }
}

/// One criterion of a target. A target with two conditions (a rate and a
/// latency) is two rows with the same name.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub name: &'static str,
    pub applies: Applies,
    /// What is measured, for people.
    pub measured: &'static str,
    /// Labels of the runs (`*` matches anything).
    pub runs: &'static str,
    /// Labels of the same measurement against the relay, if there is one.
    pub ceiling: Option<&'static str>,
    pub figure: Figure,
    pub cmp: Cmp,
    pub threshold: f64,
    pub unit: &'static str,
}

/// The targets, as the next speed round sets them. Labels are the ones
/// `load-tests/run.sh` gives its runs; the relay's are `relay-…`.
pub const TARGETS: &[Target] = &[
    Target {
        name: "newest history pages",
        applies: Applies::Both,
        measured: "`history --newest`: newest 50-message pages read per second",
        runs: "history-newest-r*",
        ceiling: Some("relay-history-newest-r*"),
        figure: Figure::Path("requests_per_sec"),
        cmp: Cmp::AtLeast,
        threshold: 20_000.0,
        unit: "req/s",
    },
    Target {
        name: "newest history pages",
        applies: Applies::Both,
        measured: "`history --newest`: request latency p99",
        runs: "history-newest-r*",
        ceiling: Some("relay-history-newest-r*"),
        figure: Figure::Path("latency_ms.p99"),
        cmp: Cmp::Below,
        threshold: 10.0,
        unit: "ms",
    },
    Target {
        name: "random history pages over 1M rows",
        applies: Applies::Both,
        measured: "`history`: 50-message pages below random cursors, per second",
        runs: "history-r*",
        ceiling: Some("relay-history-r*"),
        figure: Figure::Path("requests_per_sec"),
        cmp: Cmp::AtLeast,
        threshold: 12_000.0,
        unit: "req/s",
    },
    Target {
        name: "private messages sustained",
        applies: Applies::Only(Backend::Sqlite),
        measured: "`pairs` ladder: highest rate sustained (≥95% delivered, p99 ≤ 250 ms)",
        runs: "pairs-ladder-r*",
        ceiling: Some("relay-pairs-ladder-r*"),
        figure: Figure::LadderBest,
        cmp: Cmp::AtLeast,
        threshold: 25_000.0,
        unit: "msg/s",
    },
    Target {
        name: "private messages sustained",
        applies: Applies::Only(Backend::Postgres),
        measured: "`pairs` ladder: highest rate sustained (≥95% delivered, p99 ≤ 250 ms)",
        runs: "pairs-ladder-r*",
        ceiling: Some("relay-pairs-ladder-r*"),
        figure: Figure::LadderBest,
        cmp: Cmp::AtLeast,
        threshold: 15_000.0,
        unit: "msg/s",
    },
    Target {
        name: "private p99 at 15,000 msg/s",
        applies: Applies::Both,
        measured: "`pairs` at 15,000 msg/s: delivery latency p99",
        runs: "pairs-15k-r*",
        ceiling: Some("relay-pairs-15k-r*"),
        figure: Figure::Path("delivery_latency_ms.p99"),
        cmp: Cmp::Below,
        threshold: 20.0,
        unit: "ms",
    },
    Target {
        name: "30 logins/s during pairs at 15,000 msg/s",
        applies: Applies::Both,
        measured: "`pairs` delivery p99 with logins ÷ p99 without (`pairs-15k-r*`), medians",
        runs: "pairs-15k-with-logins-r*",
        ceiling: None,
        figure: Figure::RatioTo {
            path: "delivery_latency_ms.p99",
            baseline: "pairs-15k-r*",
        },
        cmp: Cmp::Below,
        threshold: 1.5,
        unit: "×",
    },
    Target {
        name: "30 logins/s during pairs at 15,000 msg/s",
        applies: Applies::Both,
        measured: "logins answered per second (30 offered)",
        runs: "login-during-pairs-15k-with-logins-r*",
        ceiling: None,
        figure: Figure::Path("logins_per_sec"),
        cmp: Cmp::Report,
        threshold: 30.0,
        unit: "logins/s",
    },
    Target {
        name: "30 logins/s during pairs at 15,000 msg/s",
        applies: Applies::Both,
        measured: "login latency p99",
        runs: "login-during-pairs-15k-with-logins-r*",
        ceiling: None,
        figure: Figure::Path("latency_ms.p99"),
        cmp: Cmp::Report,
        threshold: 0.0,
        unit: "ms",
    },
    Target {
        name: "30 logins/s during pairs at 15,000 msg/s",
        applies: Applies::Both,
        measured: "logins refused (503)",
        runs: "login-during-pairs-15k-with-logins-r*",
        ceiling: None,
        figure: Figure::Path("refused"),
        cmp: Cmp::Report,
        threshold: 0.0,
        unit: "",
    },
    Target {
        name: "group fan-out",
        applies: Applies::Both,
        measured: "`fanout` 50 groups × 20 at 7,000 posts/s: deliveries per second",
        runs: "fanout-50x20-7000-r*",
        ceiling: Some("relay-fanout-50x20-7000-r*"),
        figure: Figure::Path("delivered_per_sec"),
        cmp: Cmp::AtLeast,
        threshold: 100_000.0,
        unit: "deliveries/s",
    },
    Target {
        name: "group fan-out",
        applies: Applies::Both,
        measured: "`fanout` 50 groups × 20 at 7,000 posts/s: delivery latency p99",
        runs: "fanout-50x20-7000-r*",
        ceiling: Some("relay-fanout-50x20-7000-r*"),
        figure: Figure::Path("delivery_latency_ms.p99"),
        cmp: Cmp::Below,
        threshold: 50.0,
        unit: "ms",
    },
    Target {
        name: "10,000-member broadcast",
        applies: Applies::Both,
        measured: "`broadcast --members 10000`: post → last member, median of 5 rounds",
        runs: "broadcast-10000-r*",
        ceiling: Some("relay-broadcast-10000-r*"),
        figure: Figure::Path("time_to_last_median_ms"),
        cmp: Cmp::AtMost,
        threshold: 100.0,
        unit: "ms",
    },
    Target {
        name: "idle sockets",
        applies: Applies::Both,
        measured: "`idle --conns 19000`: sockets held",
        runs: "idle-19000-r*",
        ceiling: None,
        figure: Figure::Path("connected"),
        cmp: Cmp::AtLeast,
        threshold: 19_000.0,
        unit: "sockets",
    },
    Target {
        name: "idle sockets",
        applies: Applies::Both,
        measured: "`idle --conns 19000`: server memory per socket (14 KiB = 14,336 B)",
        runs: "idle-19000-r*",
        ceiling: None,
        figure: Figure::Path("server_rss_per_conn_bytes"),
        cmp: Cmp::AtMost,
        threshold: 14_336.0,
        unit: "B",
    },
];

/// One run's number.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub label: String,
    pub value: f64,
    /// The run passed (exit 0 and `ok`).
    pub ok: bool,
}

/// The numbers of a target's runs, and their median.
#[derive(Debug, Default)]
pub struct Measured {
    pub samples: Vec<Sample>,
    /// For [`Figure::RatioTo`]: the baseline runs.
    pub baseline: Vec<Sample>,
    pub median: Option<f64>,
}

impl Measured {
    fn failed_runs(&self) -> usize {
        self.samples
            .iter()
            .chain(&self.baseline)
            .filter(|s| !s.ok)
            .count()
    }
}

/// The median: the middle value, or the mean of the two middle ones.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// Whether `label` matches `pattern`, where `*` matches any run of characters.
pub fn matches(pattern: &str, label: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = label.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// A value inside a run's JSON by dotted path.
pub fn lookup<'a>(result: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(result, |value, key| value.get(key))
}

fn passed(run: &Value) -> bool {
    run["exit"] == 0 && run["result"]["ok"] == true
}

fn label(run: &Value) -> &str {
    run["label"].as_str().unwrap_or("")
}

/// Each matching run's `path` figure (runs without it are left out).
fn samples(runs: &[Value], pattern: &str, path: &str) -> Vec<Sample> {
    runs.iter()
        .filter(|run| matches(pattern, label(run)))
        .filter_map(|run| {
            let value = lookup(&run["result"], path)?.as_f64()?;
            Some(Sample {
                label: label(run).to_owned(),
                value,
                ok: passed(run),
            })
        })
        .collect()
}

/// Per ladder, the highest rate sustained. A step that was not sustained
/// is what ends a ladder, not a failure.
fn ladder_bests(runs: &[Value], pattern: &str) -> Vec<Sample> {
    let mut ladders: Vec<Sample> = Vec::new();
    for run in runs.iter().filter(|run| matches(pattern, label(run))) {
        let name = label(run);
        let ladder = name.rsplit_once('-').map_or(name, |(ladder, _)| ladder);
        let result = &run["result"];
        let rate = result["params"]["rate"].as_f64().unwrap_or(0.0);
        let sustained = result["sustained"] == true;
        let at = match ladders.iter().position(|l| l.label == ladder) {
            Some(at) => at,
            None => {
                ladders.push(Sample {
                    label: ladder.to_owned(),
                    value: 0.0,
                    ok: true,
                });
                ladders.len() - 1
            }
        };
        if sustained && rate > ladders[at].value {
            ladders[at].value = rate;
        }
    }
    ladders
}

pub fn measure(runs: &[Value], pattern: &str, figure: Figure) -> Measured {
    match figure {
        Figure::Path(path) => {
            let samples = samples(runs, pattern, path);
            let median = median(&values(&samples));
            Measured {
                samples,
                baseline: Vec::new(),
                median,
            }
        }
        Figure::LadderBest => {
            let samples = ladder_bests(runs, pattern);
            let median = median(&values(&samples));
            Measured {
                samples,
                baseline: Vec::new(),
                median,
            }
        }
        Figure::RatioTo { path, baseline } => {
            let samples = samples(runs, pattern, path);
            let baseline = self::samples(runs, baseline, path);
            let median = match (median(&values(&samples)), median(&values(&baseline))) {
                (Some(with), Some(without)) if without > 0.0 => Some(with / without),
                _ => None,
            };
            Measured {
                samples,
                baseline,
                median,
            }
        }
    }
}

fn values(samples: &[Sample]) -> Vec<f64> {
    samples.iter().map(|s| s.value).collect()
}

/// How a target came out.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// The median meets the threshold and every run passed; the ratio.
    Met(f64),
    /// The median misses it, or a run failed; the ratio and how many failed.
    Missed {
        ratio: f64,
        failed: usize,
    },
    NotMeasured,
    Reported,
}

/// measured ÷ target, or target ÷ measured where lower is better: ≥ 1 meets.
pub fn ratio(cmp: Cmp, measured: f64, threshold: f64) -> f64 {
    if cmp.higher_is_better() {
        measured / threshold
    } else if measured > 0.0 {
        threshold / measured
    } else {
        f64::INFINITY
    }
}

pub fn verdict(target: &Target, measured: &Measured) -> Verdict {
    if target.cmp == Cmp::Report {
        return Verdict::Reported;
    }
    let Some(value) = measured.median else {
        return Verdict::NotMeasured;
    };
    let ratio = ratio(target.cmp, value, target.threshold);
    let failed = measured.failed_runs();
    if target.cmp.holds(value, target.threshold) && failed == 0 {
        Verdict::Met(ratio)
    } else {
        Verdict::Missed { ratio, failed }
    }
}

/// A number for the table: thousands separated, fewer decimals the larger it is.
pub fn number(value: f64) -> String {
    if !value.is_finite() {
        return "–".into();
    }
    let abs = value.abs();
    if abs >= 100.0 {
        let rounded = value.round() as i64;
        let digits = rounded.unsigned_abs().to_string();
        let mut grouped = String::new();
        for (i, digit) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        return if rounded < 0 {
            format!("-{grouped}")
        } else {
            grouped
        };
    }
    let text = if abs >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    };
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_owned()
}

fn with_unit(value: f64, unit: &str) -> String {
    match unit {
        "" => number(value),
        "×" => format!("{}×", number(value)),
        unit => format!("{} {unit}", number(value)),
    }
}

fn list(samples: &[Sample]) -> String {
    samples
        .iter()
        .map(|s| {
            if s.ok {
                number(s.value)
            } else {
                format!("{} ✗", number(s.value))
            }
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

fn runs_cell(target: &Target, measured: &Measured) -> String {
    let Some(value) = measured.median else {
        return "not measured".into();
    };
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let each = match target.figure {
        Figure::RatioTo { path, baseline } => {
            let part = |samples: &[Sample]| {
                let m = median(&values(samples)).map_or("–".into(), number);
                format!(
                    "{}, median {m} of {}",
                    list(samples),
                    plural(samples.len(), "run")
                )
            };
            format!(
                "`{path}` with: {}; without (`{baseline}`): {}",
                part(&measured.samples),
                part(&measured.baseline)
            )
        }
        Figure::LadderBest => format!(
            "{}: {}",
            plural(measured.samples.len(), "ladder"),
            list(&measured.samples)
        ),
        Figure::Path(_) => format!(
            "{}: {}",
            plural(measured.samples.len(), "run"),
            list(&measured.samples)
        ),
    };
    format!("**{}** ({each})", with_unit(value, target.unit))
}

fn ceiling_cell(target: &Target, runs: &[Value]) -> String {
    let Some(pattern) = target.ceiling else {
        return "–".into();
    };
    let ceiling = measure(runs, pattern, target.figure);
    match ceiling.median {
        Some(median) if ceiling.samples.len() > 1 => format!(
            "{} ({})",
            with_unit(median, target.unit),
            list(&ceiling.samples)
        ),
        Some(median) => with_unit(median, target.unit),
        None => "not measured".into(),
    }
}

fn verdict_cell(verdict: &Verdict) -> String {
    let ratio = |r: f64| {
        if r.is_finite() {
            format!("{:.2}×", r)
        } else {
            "–".into()
        }
    };
    match verdict {
        Verdict::Met(r) => format!("met ({})", ratio(*r)),
        Verdict::Missed {
            ratio: r,
            failed: 0,
        } => format!("**missed** ({})", ratio(*r)),
        Verdict::Missed { ratio: r, failed } => format!(
            "**missed** ({}; {failed} run{} failed)",
            ratio(*r),
            if *failed == 1 { "" } else { "s" }
        ),
        Verdict::NotMeasured => "not measured".into(),
        Verdict::Reported => "(reported)".into(),
    }
}

/// The "Targets" section for `backend`.
pub fn render(runs: &[Value], backend: Backend, smoke: bool) -> String {
    let mut md = String::from("## Targets\n\n");
    if smoke {
        md.push_str(
            "**Smoke run:** tiny parameters under the full run's labels, so the figures below \
             say nothing about the targets; they only show the report works.\n\n",
        );
    }
    md.push_str(
        "Each figure is the median of the runs listed (✗: that run failed, which fails the \
         target); the ceiling is the same measurement against `parley-relay` (Parley's \
         protocol on Parley's stack, storing nothing, no password hashing) on this machine, \
         pinned the same way. Ratio: measured ÷ target, or target ÷ measured where lower \
         is better; met at 1 or above.\n\n",
    );
    md.push_str("| target | applies to | what is measured (runs) | target | median of runs (each run) | ceiling (relay) | verdict |\n");
    md.push_str("|---|---|---|---|---|---|---|\n");
    for target in TARGETS.iter().filter(|t| t.applies.includes(backend)) {
        let measured = measure(runs, target.runs, target.figure);
        let goal = match target.cmp {
            Cmp::Report => "–".to_owned(),
            cmp => format!(
                "{} {}",
                cmp.symbol(),
                with_unit(target.threshold, target.unit)
            ),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} (`{}`) | {goal} | {} | {} | {} |",
            target.name,
            target.applies.describe(),
            target.measured,
            target.runs,
            runs_cell(target, &measured),
            ceiling_cell(target, runs),
            verdict_cell(&verdict(target, &measured)),
        );
    }
    md.push('\n');
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(label: &str, ok: bool, result: Value) -> Value {
        let mut result = result;
        result["ok"] = json!(ok);
        json!({"label": label, "command": "", "exit": if ok { 0 } else { 1 }, "result": result})
    }

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_two_middle_ones() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[30.0, 10.0, 20.0]), Some(20.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn patterns_match_whole_labels() {
        assert!(matches("pairs-15k-r*", "pairs-15k-r1"));
        assert!(!matches("pairs-15k-r*", "pairs-15k-with-logins-r1"));
        assert!(!matches("pairs-15k-r*", "relay-pairs-15k-r1"));
        assert!(matches("relay-pairs-15k-r*", "relay-pairs-15k-r3"));
        assert!(!matches("history-r*", "history-newest-r1"));
        assert!(matches("pairs-ladder-r*", "pairs-ladder-r2-22500"));
        assert!(matches("a*b*c", "a-x-b-y-c"));
        assert!(!matches("a*b*c", "a-x-c"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
    }

    #[test]
    fn a_target_is_judged_on_the_median_of_its_runs() {
        let runs = vec![
            run(
                "history-newest-r1",
                true,
                json!({"requests_per_sec": 21_000.0}),
            ),
            run(
                "history-newest-r2",
                true,
                json!({"requests_per_sec": 19_000.0}),
            ),
            run(
                "history-newest-r3",
                true,
                json!({"requests_per_sec": 25_000.0}),
            ),
            run("history-r1", true, json!({"requests_per_sec": 1.0})),
        ];
        let target = &TARGETS[0];
        let measured = measure(&runs, target.runs, target.figure);
        assert_eq!(measured.samples.len(), 3);
        assert_eq!(measured.median, Some(21_000.0));
        assert_eq!(verdict(target, &measured), Verdict::Met(1.05));
    }

    #[test]
    fn lower_is_better_inverts_the_ratio_and_a_failed_run_misses() {
        let target = Target {
            name: "p99",
            applies: Applies::Both,
            measured: "",
            runs: "pairs-15k-r*",
            ceiling: None,
            figure: Figure::Path("delivery_latency_ms.p99"),
            cmp: Cmp::Below,
            threshold: 20.0,
            unit: "ms",
        };
        let p99 = |v: f64| json!({"delivery_latency_ms": {"p99": v}});
        let runs = vec![
            run("pairs-15k-r1", true, p99(10.0)),
            run("pairs-15k-r2", true, p99(40.0)),
            run("pairs-15k-r3", true, p99(16.0)),
        ];
        let measured = measure(&runs, target.runs, target.figure);
        assert_eq!(verdict(&target, &measured), Verdict::Met(1.25));
        let runs = vec![
            run("pairs-15k-r1", true, p99(10.0)),
            run("pairs-15k-r2", false, p99(40.0)),
            run("pairs-15k-r3", true, p99(16.0)),
        ];
        let measured = measure(&runs, target.runs, target.figure);
        assert_eq!(
            verdict(&target, &measured),
            Verdict::Missed {
                ratio: 1.25,
                failed: 1
            }
        );
        let runs = vec![run("pairs-15k-r1", true, p99(80.0))];
        let measured = measure(&runs, target.runs, target.figure);
        assert_eq!(
            verdict(&target, &measured),
            Verdict::Missed {
                ratio: 0.25,
                failed: 0
            }
        );
        assert_eq!(ratio(Cmp::AtMost, 0.0, 100.0), f64::INFINITY);
    }

    #[test]
    fn a_ladder_counts_its_highest_sustained_step() {
        let step = |label: &str, rate: f64, sustained: bool| {
            run(
                label,
                true,
                json!({"params": {"rate": rate}, "sustained": sustained}),
            )
        };
        let runs = vec![
            step("pairs-ladder-r1-15000", 15_000.0, true),
            step("pairs-ladder-r1-22500", 22_500.0, false),
            step("pairs-ladder-r2-15000", 15_000.0, true),
            step("pairs-ladder-r2-22500", 22_500.0, true),
            step("pairs-ladder-r2-33750", 33_750.0, false),
            step("pairs-ladder-r3-15000", 15_000.0, false),
            step("pairs-ladder-r3-9000", 9_000.0, true),
            step("relay-pairs-ladder-r1-50625", 50_625.0, true),
        ];
        let measured = measure(&runs, "pairs-ladder-r*", Figure::LadderBest);
        let bests: Vec<(String, f64)> = measured
            .samples
            .iter()
            .map(|s| (s.label.clone(), s.value))
            .collect();
        assert_eq!(
            bests,
            vec![
                ("pairs-ladder-r1".to_owned(), 15_000.0),
                ("pairs-ladder-r2".to_owned(), 22_500.0),
                ("pairs-ladder-r3".to_owned(), 9_000.0),
            ]
        );
        assert_eq!(measured.median, Some(15_000.0));
        let sqlite = TARGETS
            .iter()
            .find(|t| t.applies == Applies::Only(Backend::Sqlite))
            .unwrap();
        assert_eq!(
            verdict(sqlite, &measured),
            Verdict::Missed {
                ratio: 0.6,
                failed: 0
            }
        );
    }

    #[test]
    fn the_login_target_compares_medians_with_and_without_logins() {
        let p99 = |v: f64| json!({"delivery_latency_ms": {"p99": v}});
        let runs = vec![
            run("pairs-15k-r1", true, p99(10.0)),
            run("pairs-15k-r2", true, p99(20.0)),
            run("pairs-15k-r3", true, p99(30.0)),
            run("pairs-15k-with-logins-r1", true, p99(25.0)),
            run("pairs-15k-with-logins-r2", true, p99(35.0)),
            run("pairs-15k-with-logins-r3", true, p99(15.0)),
            run(
                "login-during-pairs-15k-with-logins-r1",
                false,
                json!({"logins_per_sec": 12.0}),
            ),
        ];
        let target = TARGETS
            .iter()
            .find(|t| matches!(t.figure, Figure::RatioTo { .. }))
            .unwrap();
        let measured = measure(&runs, target.runs, target.figure);
        assert_eq!(measured.median, Some(1.25));
        assert_eq!(measured.baseline.len(), 3);
        assert_eq!(
            runs_cell(target, &measured),
            "**1.25×** (`delivery_latency_ms.p99` with: 25 · 35 · 15, median 25 of 3 runs; \
             without (`pairs-15k-r*`): 10 · 20 · 30, median 20 of 3 runs)"
        );
        assert!(matches!(verdict(target, &measured), Verdict::Met(r) if (r - 1.2).abs() < 1e-9));
        // A figure the login runs don't have yet is "not measured", not an error.
        let refused = TARGETS
            .iter()
            .find(|t| t.measured.contains("refused"))
            .unwrap();
        assert_eq!(measure(&runs, refused.runs, refused.figure).median, None);
        assert_eq!(verdict(refused, &measured), Verdict::Reported);
    }

    #[test]
    fn the_table_lists_the_backends_targets_with_the_ceiling_beside_them() {
        let runs = vec![
            run(
                "broadcast-10000-r1",
                true,
                json!({"time_to_last_median_ms": 168.0}),
            ),
            run(
                "broadcast-10000-r2",
                true,
                json!({"time_to_last_median_ms": 150.0}),
            ),
            run(
                "broadcast-10000-r3",
                true,
                json!({"time_to_last_median_ms": 145.0}),
            ),
            run(
                "relay-broadcast-10000-r1",
                true,
                json!({"time_to_last_median_ms": 60.0}),
            ),
        ];
        let sqlite = render(&runs, Backend::Sqlite, false);
        assert!(sqlite.contains("| ≥ 25,000 msg/s |"), "{sqlite}");
        assert!(!sqlite.contains("≥ 15,000 msg/s"), "{sqlite}");
        let row = sqlite
            .lines()
            .find(|l| l.starts_with("| 10,000-member broadcast"))
            .unwrap();
        assert!(
            row.contains(
                "| ≤ 100 ms | **150 ms** (3 runs: 168 · 150 · 145) | 60 ms | **missed** (0.67×) |"
            ),
            "{row}"
        );
        let postgres = render(&runs, Backend::Postgres, true);
        assert!(postgres.contains("| ≥ 15,000 msg/s |"));
        assert!(postgres.contains("Smoke run"));
        assert!(postgres.contains("| not measured |"));
    }

    #[test]
    fn numbers_are_grouped_and_rounded_by_size() {
        assert_eq!(number(133_994.8), "133,995");
        assert_eq!(number(168.0), "168");
        assert_eq!(number(13.09), "13.1");
        assert_eq!(number(2.9), "2.9");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(f64::NAN), "–");
    }
}
