//! `lab --runs N`: how far each measure moves between runs of the same scenario. The marks are
//! quiet points, so what is left is what load and timing still move; budgets keep a stated
//! margin over the highest value.

use crate::report::{Report, Spread};

pub type Measure = fn(&Report) -> Option<u64>;

/// The measures a budget or a docs/lab.md table rests on.
pub const MEASURES: &[(&str, Measure)] = &[
    ("first PeerConnection (init) B", |r| Some(r.init_bytes)),
    ("connected B", |r| Some(r.total_connected_bytes)),
    ("handshake peak B", |r| Some(r.handshake_peak_bytes)),
    ("streaming, live after the stream B", |r| r.streaming_bytes),
    ("held per connect/disconnect cycle B", |r| r.leak_bytes_per_cycle),
    ("held per cycle after cleanup B", |r| r.leak_bytes_per_cycle_after_cleanup),
    ("usrsctp vtag time-wait at the last closed mark B", |r| r.time_wait.as_ref().map(|t| t.bytes)),
    ("closed DTLS transports held by a timer, most B", |r| r.dtls_timers.as_ref().map(|d| d.most_bytes)),
    ("bytes per extra connection", |r| r.bytes_per_extra_connection),
    ("still held after cleanup B", |r| Some(r.leak_bytes)),
    ("threads alive at once", |r| Some(r.threads)),
    ("ESP32 internal RAM (projected) B", |r| Some(r.projection.internal_bytes)),
    ("ESP32 PSRAM (projected) B", |r| Some(r.projection.psram_bytes)),
];

/// Lowest and highest value of each measure over `runs` (one policy and scenario).
pub fn of(runs: &[&Report]) -> Vec<Spread> {
    let mut out = Vec::new();
    let mut push = |measure: String, values: Vec<u64>| {
        if let (Some(min), Some(max)) = (values.iter().min(), values.iter().max()) {
            out.push(Spread { measure, min: *min, max: *max, runs: values.len() as u32 });
        }
    };
    for (label, f) in MEASURES {
        push(label.to_string(), runs.iter().filter_map(|r| f(r)).collect());
    }
    let mut names: Vec<&str> = runs.iter().flat_map(|r| r.components.iter().map(|c| c.name.as_str())).collect();
    names.sort();
    names.dedup();
    for name in names {
        let values = runs
            .iter()
            .filter_map(|r| r.components.iter().find(|c| c.name == name).map(|c| c.connected_bytes))
            .collect();
        push(format!("  {name} connected B"), values);
    }
    out
}

/// The spread table: per scenario, each measure's min..max and width for every policy.
pub fn markdown(reports: &[Report]) -> String {
    let mut md = String::new();
    let mut scenarios: Vec<&str> = reports.iter().map(|r| r.scenario.as_str()).collect();
    scenarios.dedup();
    for scenario in scenarios {
        let cols: Vec<&Report> = reports.iter().filter(|r| r.scenario == scenario && !r.spread.is_empty()).collect();
        let Some(first) = cols.first() else { continue };
        md += &format!("**{scenario}**, {} runs: lowest..highest (width)\n\n| measure |", first.spread[0].runs);
        for r in &cols {
            md += &format!(" {} |", r.policy);
        }
        md += "\n|---|";
        md += &"---:|".repeat(cols.len());
        md += "\n";
        for s in &first.spread {
            md += &format!("| {} |", s.measure.trim_start().replace("  ", "&nbsp;&nbsp;"));
            for r in &cols {
                match r.spread.iter().find(|o| o.measure == s.measure) {
                    Some(o) => md += &format!(" {}..{} ({}) |", o.min, o.max, o.max - o.min),
                    None => md += " – |",
                }
            }
            md += "\n";
        }
        md += "\n";
    }
    md
}

pub fn print(reports: &[Report]) {
    println!("\nSpread over the runs (lowest..highest, width in parentheses):\n");
    print!("{}", markdown(reports));
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::ComponentReport;

    /// A datachannel report with the measures spread and compare look at (also compare's fixture).
    pub(crate) fn report(policy: &str, connected: u64, usrsctp: u64) -> Report {
        Report {
            scenario: "datachannel".into(),
            policy: policy.into(),
            total_connected_bytes: connected,
            components: vec![ComponentReport {
                name: "usrsctp".into(),
                connected_bytes: usrsctp,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn spread_is_lowest_and_highest_of_each_measure() {
        let runs = [report("lean", 47_000, 6_400), report("lean", 47_300, 6_100), report("lean", 46_900, 6_500)];
        let refs: Vec<&Report> = runs.iter().collect();
        let spread = of(&refs);
        let connected = spread.iter().find(|s| s.measure == "connected B").unwrap();
        assert_eq!((connected.min, connected.max, connected.runs), (46_900, 47_300, 3));
        let usrsctp = spread.iter().find(|s| s.measure == "  usrsctp connected B").unwrap();
        assert_eq!((usrsctp.min, usrsctp.max), (6_100, 6_500));
        // A measure no run has (streaming, in a data-channel scenario) is left out, not zero.
        assert!(!spread.iter().any(|s| s.measure.starts_with("streaming")));
        let mut reported = runs[0].clone();
        reported.spread = spread;
        let md = markdown(&[reported]);
        assert!(md.contains("| connected B | 46900..47300 (400) |"), "{md}");
    }
}
