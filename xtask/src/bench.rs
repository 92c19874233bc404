//! `cargo xtask bench`: does a policy keep the stack's speed? Data-channel throughput both ways
//! and the rate at which the device can push H.264 through packetizer, NACK responder and SRTP,
//! each policy against the first (stock), on the same host replicas the lab measures.

use crate::exit::{self, Outcome};
use crate::fsutil::{project_root, write_atomic};
use crate::policy::Policy;
use crate::replica::{self, run as peers};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Benchmark data-channel throughput and video send rate, each policy against the first.
///
/// Runs the lab's device and remote peers over loopback, without the recorder, in rounds that
/// interleave the policies so that a busy machine slows them alike. Measures, per run:
///   up      device -> remote bulk transfer on one reliable ordered channel (MB/s, until the
///           receiver confirms every byte)
///   down    remote -> device, the same
///   video   H.264 access units per second the device pushes through packetizer, SR reporter,
///           NACK responder and SRTP, as fast as it can (the remote counts what arrives)
/// Prints the median of each policy, its spread, and its ratio to the first policy; a measure
/// below (100 - tolerance)% of the reference is a failed verdict (exit 1). Timing figures:
/// run it on a quiet machine; tests only check that the machinery measures.
///
/// Examples:
///   cargo xtask bench                               # stock vs lean, 5 rounds
///   cargo xtask bench --rounds 9 --json bench.json  # more rounds, raw samples as JSON
///   cargo xtask bench --megabytes 64 --frames 30000 # longer runs
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Policies to compare (name under policies/ or a path); the first is the reference.
    #[arg(long = "policy", default_values = ["stock", "lean"])]
    policies: Vec<String>,
    /// Rounds; each runs every policy once, in turn.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Megabytes sent each way per throughput run.
    #[arg(long, default_value_t = 16)]
    megabytes: u32,
    /// Access units pushed per video run (the lab's synthetic 1 Mbit/s stream: 30 make a second).
    #[arg(long, default_value_t = 9000)]
    frames: u32,
    /// How far below the reference a policy may fall, in percent.
    #[arg(long, default_value_t = 10.0)]
    tolerance_percent: f64,
    /// Write the samples and the verdicts as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Directory for the peers' logs.
    #[arg(long, default_value = "lab-out/bench")]
    out: PathBuf,
}

/// One measure and its unit, higher is better for all of them.
pub const MEASURES: &[(&str, &str)] = &[("up", "MB/s"), ("down", "MB/s"), ("video", "frames/s")];

/// What one run of each scenario gave.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    pub policy: String,
    pub round: u32,
    pub measure: String,
    pub value: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub measure: String,
    pub unit: String,
    pub policy: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Median over the reference policy's median.
    pub ratio: f64,
    pub within: bool,
}

pub fn run(args: Args) -> Outcome {
    if args.rounds == 0 || args.megabytes == 0 || args.frames == 0 {
        return Err(exit::bad_input("--rounds, --megabytes and --frames must be at least 1"));
    }
    let mut policies = Vec::new();
    for name in &args.policies {
        policies.push(Policy::load(&Policy::path_for(name))?);
    }
    let out = if args.out.is_absolute() { args.out.clone() } else { project_root().join(&args.out) };
    std::fs::create_dir_all(&out)?;
    let builds = policies.iter().map(replica::build).collect::<Result<Vec<_>>>()?;
    let load = Load { bytes: u64::from(args.megabytes) << 20, frames: args.frames };
    let mut samples = Vec::new();
    for round in 1..=args.rounds {
        for (policy, build) in policies.iter().zip(&builds) {
            eprintln!("bench: round {round}/{} {}", args.rounds, policy.policy.name);
            samples.extend(measure(build, policy, &load, round, &out)?);
        }
    }
    let rows = summarize(&samples, &policies[0].policy.name, args.tolerance_percent);
    print_rows(&rows, &policies[0].policy.name, args.tolerance_percent);
    if let Some(path) = &args.json {
        let doc = serde_json::json!({ "reference": policies[0].policy.name, "tolerance_percent": args.tolerance_percent, "rows": rows, "samples": samples });
        write_atomic(path, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    }
    let outside: Vec<String> = rows
        .iter()
        .filter(|r| !r.within)
        .map(|r| format!("{} {} at {:.0}%", r.policy, r.measure, r.ratio * 100.0))
        .collect();
    if outside.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(exit::verdict(format!(
            "below {:.0}% of {}: {}",
            100.0 - args.tolerance_percent,
            policies[0].policy.name,
            outside.join(", ")
        )))
    }
}

pub struct Load {
    pub bytes: u64,
    pub frames: u32,
}

/// One round of one policy: the throughput and videorate scenarios, parsed from the peers' logs.
pub fn measure(
    build: &replica::HostBuild,
    policy: &Policy,
    load: &Load,
    round: u32,
    out: &Path,
) -> Result<Vec<Sample>> {
    let mut env = peers::knob_env(policy);
    env.push(("LAB_BENCH_BYTES".into(), load.bytes.to_string()));
    env.push(("LAB_BENCH_FRAMES".into(), load.frames.to_string()));
    let timeout = Duration::from_secs(180);
    let name = &policy.policy.name;
    let sample = |measure: &str, value: f64| Sample { policy: name.clone(), round, measure: measure.into(), value };

    let run = |scenario: &str| {
        let stem = out.join(format!("{name}-{scenario}"));
        let peer_run = peers::PeerRun { policy, scenario, env: &env, stem: &stem, trace: None, timeout, link: None };
        peers::run_peers(build, peer_run)
    };
    let (device_log, remote_log) = run("throughput")?;
    let up = result_line(&device_log, "throughput")?;
    let down = result_line(&remote_log, "throughput")?;
    let rate = |fields: &BTreeMap<String, String>, log: &Path| -> Result<f64> {
        let bytes: f64 = field(fields, "bytes", log)?;
        let seconds: f64 = field(fields, "seconds", log)?;
        if bytes as u64 != load.bytes {
            bail!("{}: {bytes} bytes transferred, {} expected", log.display(), load.bytes);
        }
        Ok(bytes / (1 << 20) as f64 / seconds.max(1e-9))
    };
    let mut samples = vec![sample("up", rate(&up, &device_log)?), sample("down", rate(&down, &remote_log)?)];

    let (device_log, remote_log) = run("videorate")?;
    let sent = result_line(&device_log, "videorate")?;
    let received = result_line(&remote_log, "videorate")?;
    let frames: f64 = field(&sent, "frames", &device_log)?;
    let seconds: f64 = field(&sent, "seconds", &device_log)?;
    let received_bytes: f64 = field(&received, "received_bytes", &remote_log)?;
    if received_bytes <= 0.0 {
        bail!("{}: the remote received no media", remote_log.display());
    }
    samples.push(sample("video", frames / seconds.max(1e-9)));
    Ok(samples)
}

/// The `key=value` fields of the log's `RESULT <kind> ...` line.
pub fn result_line(log: &Path, kind: &str) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    parse_result(&text, kind)
        .with_context(|| format!("{}: no `RESULT {kind}` line (the peer's log says why)", log.display()))
}

pub fn parse_result(text: &str, kind: &str) -> Option<BTreeMap<String, String>> {
    let prefix = format!("RESULT {kind} ");
    let lines = || text.lines().filter(|l| l.starts_with(&prefix));
    lines().next().is_some().then(|| peers::result_fields(lines()))
}

fn field<T: std::str::FromStr>(fields: &BTreeMap<String, String>, key: &str, log: &Path) -> Result<T> {
    fields
        .get(key)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{}: its RESULT line has no readable `{key}`", log.display()))
}

/// Median, min and max per policy and measure, and each policy's ratio to the reference.
pub fn summarize(samples: &[Sample], reference: &str, tolerance_percent: f64) -> Vec<Row> {
    let mut by: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for s in samples {
        by.entry((s.measure.as_str(), s.policy.as_str())).or_default().push(s.value);
    }
    let median_of = |values: &[f64]| {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let mut policies: Vec<&str> = Vec::new();
    for s in samples {
        if !policies.contains(&s.policy.as_str()) {
            policies.push(&s.policy);
        }
    }
    let mut rows = Vec::new();
    for (measure, unit) in MEASURES {
        let Some(reference_values) = by.get(&(*measure, reference)) else { continue };
        let reference_median = median_of(reference_values);
        for policy in &policies {
            let Some(values) = by.get(&(*measure, *policy)) else { continue };
            let median = median_of(values);
            let ratio = if reference_median > 0.0 { median / reference_median } else { 0.0 };
            rows.push(Row {
                measure: measure.to_string(),
                unit: unit.to_string(),
                policy: policy.to_string(),
                median,
                min: values.iter().copied().fold(f64::INFINITY, f64::min),
                max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                ratio,
                within: ratio >= 1.0 - tolerance_percent / 100.0,
            });
        }
    }
    rows
}

fn print_rows(rows: &[Row], reference: &str, tolerance_percent: f64) {
    println!(
        "{:<7} {:<9} {:<8} {:>10} {:>21} {:>9}  verdict (>= {:.0}% of {reference})",
        "measure",
        "unit",
        "policy",
        "median",
        "min..max",
        "ratio",
        100.0 - tolerance_percent
    );
    for r in rows {
        let verdict = if r.policy == reference {
            "reference"
        } else if r.within {
            "within"
        } else {
            "BELOW"
        };
        println!(
            "{:<7} {:<9} {:<8} {:>10.1} {:>10.1}..{:<10.1} {:>8.0}%  {verdict}",
            r.measure,
            r.unit,
            r.policy,
            r.median,
            r.min,
            r.max,
            r.ratio * 100.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(policy: &str, round: u32, measure: &str, value: f64) -> Sample {
        Sample { policy: policy.into(), round, measure: measure.into(), value }
    }

    #[test]
    fn result_lines_are_read_by_kind() {
        let log = "[phase] start\nRESULT videorate received_bytes=12\nRESULT throughput direction=up bytes=8388608 seconds=0.500000\n";
        let fields = parse_result(log, "throughput").unwrap();
        assert_eq!(fields["direction"], "up");
        assert_eq!(fields["bytes"], "8388608");
        assert_eq!(fields["seconds"], "0.500000");
        assert_eq!(parse_result(log, "videorate").unwrap()["received_bytes"], "12");
        assert!(parse_result(log, "datachannel").is_none());
    }

    #[test]
    fn medians_spread_and_the_ten_percent_verdict() {
        let mut samples = Vec::new();
        for (round, (stock, lean)) in [(100.0, 95.0), (90.0, 80.0), (110.0, 91.0)].into_iter().enumerate() {
            samples.push(sample("stock", round as u32, "up", stock));
            samples.push(sample("lean", round as u32, "up", lean));
        }
        // Even count: the median is the mean of the middle two.
        for (round, (stock, lean)) in [(30.0, 29.0), (32.0, 35.0), (31.0, 20.0), (29.0, 21.0)].into_iter().enumerate() {
            samples.push(sample("stock", round as u32, "video", stock));
            samples.push(sample("lean", round as u32, "video", lean));
        }
        let rows = summarize(&samples, "stock", 10.0);
        let row = |m: &str, p: &str| rows.iter().find(|r| r.measure == m && r.policy == p).unwrap().clone();
        assert_eq!((row("up", "stock").median, row("up", "stock").min, row("up", "stock").max), (100.0, 90.0, 110.0));
        assert_eq!(row("up", "lean").median, 91.0);
        assert!((row("up", "lean").ratio - 0.91).abs() < 1e-9 && row("up", "lean").within);
        assert_eq!(row("video", "stock").median, 30.5);
        assert_eq!(row("video", "lean").median, 25.0);
        assert!(!row("video", "lean").within, "25 of 30.5 is 82%: below 90%");
        assert!(row("video", "stock").within && (row("video", "stock").ratio - 1.0).abs() < 1e-9);
        // A measure the reference lacks has no row rather than a made-up ratio.
        assert!(rows.iter().all(|r| r.measure != "down"));
    }

    /// The machinery on the real stack: a short transfer each way and a short video push for
    /// lean, read back from the peers' logs. No assertion on speed (timed figures belong to the
    /// benchmark, not to tests); the driver itself fails the run if a byte is missing or out of order.
    #[test]
    fn bench_measures_a_real_transfer_and_video_push() {
        let policy = Policy::load(&Policy::path_for("lean")).unwrap();
        let build = replica::build(&policy).unwrap();
        let out = tempfile::tempdir().unwrap();
        let samples = measure(&build, &policy, &Load { bytes: 1 << 20, frames: 60 }, 1, out.path()).unwrap();
        let measures: Vec<&str> = samples.iter().map(|s| s.measure.as_str()).collect();
        assert_eq!(measures, ["up", "down", "video"]);
        assert!(samples.iter().all(|s| s.value.is_finite() && s.value > 0.0), "{samples:?}");
        let log = std::fs::read_to_string(out.path().join("lean-videorate.device.log")).unwrap();
        assert_eq!(parse_result(&log, "videorate").unwrap()["frames"], "60");
    }
}
