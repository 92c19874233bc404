//! `lab --compare BEFORE.json AFTER.json`: does a change leave the lab's figures where they were?
//! Byte-for-byte equality cannot hold: the quiet marks still move by up to a few hundred bytes
//! between runs of the same build (`--runs`, docs/lab.md "spread"). So the two reports must have the
//! same shape (policies, scenarios, components, JSON keys) and each measure a budget or docs/lab.md
//! table rests on (`spread::MEASURES`, each component's connected bytes, static internal RAM)
//! must be where repeated runs of one build put it: each file's range for it (its `--runs N`
//! spread, else its one value) may lie apart from the other's by at most the wider range's
//! width plus `--tolerance`. Two samples of the same build overlap or nearly; a few runs see
//! only part of the spread, hence the width's leeway. With no spread a measure must be equal.

use super::spread::MEASURES;
use crate::exit::{self, Outcome};
use crate::report::Report;
use anyhow::Result;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

/// One judged measure of one policy and scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub policy: String,
    pub scenario: String,
    pub measure: String,
    pub before: Option<u64>,
    pub after: Option<u64>,
    /// Lowest..highest over each file's runs (its spread and its reported value).
    pub before_range: Option<(u64, u64)>,
    pub after_range: Option<(u64, u64)>,
    /// How far apart the two ranges may lie (the wider range's width + tolerance).
    pub allowed: u64,
}

impl Row {
    /// How far apart the two ranges lie (0 when they overlap).
    fn gap(&self) -> Option<u64> {
        let ((b_lo, b_hi), (a_lo, a_hi)) = (self.before_range?, self.after_range?);
        Some(b_lo.saturating_sub(a_hi).max(a_lo.saturating_sub(b_hi)))
    }

    pub fn holds(&self) -> bool {
        match (self.before, self.after) {
            (Some(_), Some(_)) => self.gap().unwrap() <= self.allowed,
            (None, None) => true,
            _ => false,
        }
    }
}

#[derive(Debug, Default)]
pub struct Comparison {
    /// Shape differences: a policy/scenario, component or JSON key in one file only.
    pub shape: Vec<String>,
    pub rows: Vec<Row>,
}

impl Comparison {
    pub fn holds(&self) -> bool {
        self.shape.is_empty() && self.rows.iter().all(Row::holds)
    }
}

pub fn run(before: &Path, after: &Path, tolerance: u64) -> Outcome {
    let read = |path: &Path| -> Result<(Vec<Report>, Vec<serde_json::Value>)> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| exit::bad_input(format!("{}: cannot read: {e}", path.display())))?;
        let bad = |e: serde_json::Error| exit::bad_input(format!("{}: not a `lab --json` report: {e}", path.display()));
        Ok((serde_json::from_str(&text).map_err(bad)?, serde_json::from_str(&text).map_err(bad)?))
    };
    let (b, b_json) = read(before)?;
    let (a, a_json) = read(after)?;
    let c = compare(&b, &a, &b_json, &a_json, tolerance);
    print(&c, before, after);
    if c.holds() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(exit::verdict(format!(
            "{} shape difference(s), {} measure(s) beyond their spread",
            c.shape.len(),
            c.rows.iter().filter(|r| !r.holds()).count()
        )))
    }
}

/// Compares two `lab --json` reports (parsed, and as JSON for their keys).
pub fn compare(
    before: &[Report],
    after: &[Report],
    before_json: &[serde_json::Value],
    after_json: &[serde_json::Value],
    tolerance: u64,
) -> Comparison {
    let mut c = Comparison::default();
    let id = |r: &Report| (r.policy.clone(), r.scenario.clone());
    let ids = |rs: &[Report]| rs.iter().map(id).collect::<BTreeSet<_>>();
    for (p, s) in ids(before).symmetric_difference(&ids(after)) {
        let only = if ids(before).contains(&(p.clone(), s.clone())) { "BEFORE" } else { "AFTER" };
        c.shape.push(format!("{p} / {s}: only in {only}"));
    }
    for (i, b) in before.iter().enumerate() {
        let Some(j) = after.iter().position(|a| id(a) == id(b)) else { continue };
        let a = &after[j];
        let names = |r: &Report| r.components.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        if names(b) != names(a) {
            c.shape.push(format!("{} / {}: components {:?} vs {:?}", b.policy, b.scenario, names(b), names(a)));
        }
        let (kb, ka) = (keys(&before_json[i]), keys(&after_json[j]));
        for k in kb.symmetric_difference(&ka) {
            let only = if kb.contains(k) { "BEFORE" } else { "AFTER" };
            c.shape.push(format!("{} / {}: key `{k}` only in {only}", b.policy, b.scenario));
        }
        c.rows.extend(rows(b, a, tolerance));
    }
    c
}

/// The judged measures of one policy and scenario.
fn rows(b: &Report, a: &Report, tolerance: u64) -> Vec<Row> {
    let mut measures: Vec<(String, Option<u64>, Option<u64>)> =
        MEASURES.iter().map(|(label, f)| (label.to_string(), f(b), f(a))).collect();
    let connected = |r: &Report, name: &str| r.components.iter().find(|c| c.name == name).map(|c| c.connected_bytes);
    for comp in &b.components {
        measures.push((format!("  {} connected B", comp.name), Some(comp.connected_bytes), connected(a, &comp.name)));
    }
    measures.push(("static internal RAM B".into(), b.static_internal_bytes, a.static_internal_bytes));
    let range = |r: &Report, measure: &str, value: Option<u64>| {
        let v = value?;
        Some(match r.spread.iter().find(|s| s.measure == measure) {
            Some(s) => (s.min.min(v), s.max.max(v)),
            None => (v, v),
        })
    };
    measures
        .into_iter()
        .map(|(measure, before, after)| {
            let (before_range, after_range) = (range(b, &measure, before), range(a, &measure, after));
            let width = [before_range, after_range].iter().flatten().map(|(lo, hi)| hi - lo).max().unwrap_or(0);
            Row {
                policy: b.policy.clone(),
                scenario: b.scenario.clone(),
                allowed: width + tolerance,
                measure,
                before,
                after,
                before_range,
                after_range,
            }
        })
        .collect()
}

/// Every object key path in `v` (`projection.lines[].what`), array elements merged.
fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    fn walk(v: &serde_json::Value, at: &str, out: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let path = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                    out.insert(path.clone());
                    walk(v, &path, out);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, &format!("{at}[]"), out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(v, "", &mut out);
    // The spread is there when a report was made with --runs; it is the yardstick, not a figure.
    out.retain(|k| !k.starts_with("spread"));
    out
}

fn print(c: &Comparison, before: &Path, after: &Path) {
    println!("lab --compare: BEFORE {} / AFTER {}", before.display(), after.display());
    for s in &c.shape {
        println!("shape: {s}");
    }
    println!(
        "{:<7} {:<12} {:<38} {:>15} {:>15} {:>5} {:>7}  verdict",
        "policy", "scenario", "measure", "before", "after", "gap", "allowed"
    );
    let range = |r: Option<(u64, u64)>| match r {
        Some((lo, hi)) if lo == hi => lo.to_string(),
        Some((lo, hi)) => format!("{lo}..{hi}"),
        None => "–".into(),
    };
    for r in c.rows.iter().filter(|r| r.before != r.after || r.before_range != r.after_range) {
        println!(
            "{:<7} {:<12} {:<38} {:>15} {:>15} {:>5} {:>7}  {}",
            r.policy,
            r.scenario,
            r.measure.trim_start(),
            range(r.before_range),
            range(r.after_range),
            r.gap().map(|d| d.to_string()).unwrap_or_else(|| "–".into()),
            r.allowed,
            if r.holds() { "within spread" } else { "BEYOND" }
        );
    }
    let equal = c.rows.iter().filter(|r| r.before == r.after).count();
    let within = c.rows.iter().filter(|r| r.before != r.after && r.holds()).count();
    println!(
        "{} measures: {equal} equal, {within} within their spread, {} beyond; {} shape difference(s)",
        c.rows.len(),
        c.rows.iter().filter(|r| !r.holds()).count(),
        c.shape.len()
    );
    if !c.rows.iter().any(|r| r.allowed > 0) {
        println!("(neither report has a spread: make AFTER with `--runs N` to measure how far figures move)");
    }
}

/// The spread measures this comparison judges, for tests.
#[cfg(test)]
pub(crate) fn measure_names() -> Vec<&'static str> {
    MEASURES.iter().map(|(l, _)| *l).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::spread::{self, tests::report};

    fn json(rs: &[Report]) -> Vec<serde_json::Value> {
        rs.iter().map(|r| serde_json::to_value(r).unwrap()).collect()
    }

    fn with_spread(mut r: Report, measure: &str, min: u64, max: u64) -> Report {
        r.spread = spread::of(&[&r]);
        let s = r.spread.iter_mut().find(|s| s.measure == measure).unwrap();
        (s.min, s.max, s.runs) = (min, max, 5);
        r
    }

    fn run(before: &[Report], after: &[Report], tolerance: u64) -> Comparison {
        compare(before, after, &json(before), &json(after), tolerance)
    }

    #[test]
    fn a_move_within_the_spread_holds_and_one_beyond_it_fails() {
        // After: 5 runs put `connected` anywhere in 46,850..47,150; before's one run is 250 B below.
        let after = [with_spread(report("lean", 47_150, 6_193), "connected B", 46_850, 47_150)];
        let c = run(&[report("lean", 46_600, 6_193)], &after, 0);
        assert!(c.holds(), "{c:?}");
        let row = c.rows.iter().find(|r| r.measure == "connected B").unwrap();
        assert_eq!(
            (row.before_range, row.after_range, row.gap(), row.allowed),
            (Some((46_600, 46_600)), Some((46_850, 47_150)), Some(250), 300)
        );
        // 450 B below: beyond.
        let before = [report("lean", 46_400, 6_193)];
        let c = run(&before, &after, 0);
        assert!(!c.holds());
        assert_eq!(
            c.rows.iter().filter(|r| !r.holds()).map(|r| r.measure.as_str()).collect::<Vec<_>>(),
            ["connected B"]
        );
        // --tolerance widens every band.
        assert!(run(&before, &after, 150).holds());
        // Both with a spread: overlapping ranges hold whatever their reported runs.
        let before = [with_spread(report("lean", 46_400, 6_193), "connected B", 46_400, 46_900)];
        assert!(run(&before, &after, 0).holds());
    }

    #[test]
    fn a_measure_without_spread_must_be_equal() {
        let before = [report("lean", 46_900, 6_193)];
        let c = run(&before, &[report("lean", 46_900, 6_194)], 0);
        assert_eq!(
            c.rows.iter().filter(|r| !r.holds()).map(|r| r.measure.as_str()).collect::<Vec<_>>(),
            ["  usrsctp connected B"]
        );
        assert!(run(&before, &before, 0).holds());
    }

    #[test]
    fn shape_differences_fail_whatever_the_figures() {
        let before = [report("lean", 1, 1), report("stock", 1, 1)];
        let c = run(&before, &before[..1], 0);
        assert_eq!(c.shape, ["stock / datachannel: only in BEFORE"]);
        assert!(!c.holds());
        // A component gone, and with it a key.
        let mut after = report("lean", 1, 1);
        after.components.clear();
        after.leak_bytes_per_cycle = Some(3);
        let c = run(&before[..1], &[after], 0);
        assert!(c.shape.iter().any(|s| s.contains("components [\"usrsctp\"] vs []")), "{:?}", c.shape);
        assert!(c.shape.iter().any(|s| s.contains("key `leak_bytes_per_cycle` only in AFTER")), "{:?}", c.shape);
        assert!(c.rows.iter().any(|r| r.measure == "held per connect/disconnect cycle B" && !r.holds()));
    }

    /// The fixture pair under lab/fixtures/compare: a lean run and five later runs whose spread
    /// covers it (holds), and the same with the connected total moved by 2 KiB (fails).
    #[test]
    fn the_fixture_pairs_hold_and_fail() {
        let dir = crate::fsutil::project_root().join("lab/fixtures/compare");
        let read = |f: &str| -> (Vec<Report>, Vec<serde_json::Value>) {
            let text = std::fs::read_to_string(dir.join(f)).unwrap();
            (serde_json::from_str(&text).unwrap(), serde_json::from_str(&text).unwrap())
        };
        let (b, bj) = read("before.json");
        for (after, holds) in [("after-within.json", true), ("after-beyond.json", false)] {
            let (a, aj) = read(after);
            let c = compare(&b, &a, &bj, &aj, 0);
            assert_eq!(c.holds(), holds, "{after}: {c:?}");
        }
        assert!(measure_names().contains(&"connected B"));
    }
}
