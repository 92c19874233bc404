//! `lab --scenario viewers`: one camera, N viewers. The memory side comes from the quiet
//! `viewers-*` marks (account.rs); the CPU side from the device log's `[cpu]` lines, one per
//! stream window, read here. Tables, README block and the budget checks of the scenario.

use crate::ledger::account::least_squares;
use crate::policy::Policy;
use crate::report::{Report, ViewerPhase, Viewers};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Puts each window's CPU time from the device log (`[cpu] <mark> viewers=K cpu_ns=.. wall_ns=..`)
/// on its mark, then fits the CPU slope and the most CPU per viewer against one viewer's.
pub fn attach_cpu(report: &mut Report, device_log: &Path) -> Result<()> {
    let Some(v) = report.viewers.as_mut() else { return Ok(()) };
    let log = std::fs::read_to_string(device_log).with_context(|| format!("reading {}", device_log.display()))?;
    for line in log.lines().filter_map(|l| l.strip_prefix("[cpu] ")) {
        let mut words = line.split_whitespace();
        let mark = words.next().unwrap_or_default();
        let field = |key: &str| {
            line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse::<u64>().ok())
        };
        let (Some(cpu), Some(wall)) = (field("cpu_ns"), field("wall_ns")) else {
            bail!("{}: unreadable CPU line `[cpu] {line}`", device_log.display());
        };
        if let Some(p) = v.phases.iter_mut().find(|p| p.mark == mark) {
            p.cpu_ns = cpu;
            p.wall_ns = wall;
        }
    }
    settle_cpu(v);
    Ok(())
}

/// CPU ns per second of stream in a window.
pub fn cpu_per_second(p: &ViewerPhase) -> f64 {
    if p.wall_ns == 0 {
        0.0
    } else {
        p.cpu_ns as f64 * 1e9 / p.wall_ns as f64
    }
}

fn joins(v: &Viewers) -> Vec<&ViewerPhase> {
    v.phases.iter().filter(|p| p.viewers > 0 && p.mark == format!("viewers-{}", p.viewers) && p.wall_ns > 0).collect()
}

/// The CPU slope over the join windows and max over K of cpu(K) / (K x cpu(1)), in percent.
pub fn settle_cpu(v: &mut Viewers) {
    let points: Vec<(f64, f64)> = joins(v).iter().map(|p| (p.viewers as f64, cpu_per_second(p))).collect();
    v.cpu_ns_per_viewer_second = least_squares(&points);
    let one = points.iter().find(|(k, _)| *k == 1.0).map(|p| p.1).unwrap_or(0.0);
    v.cpu_per_viewer_of_linear_percent = if one > 0.0 {
        points.iter().map(|(k, c)| (c / (k * one) * 100.0).round() as u64).max().unwrap_or(0)
    } else {
        0
    };
}

fn slope(s: &crate::report::Slope) -> String {
    format!("{:.0} ± {:.0}", s.per_viewer, s.std_error)
}

/// The scenario's table: every mark, then the slopes.
pub fn text(r: &Report) -> String {
    let Some(v) = &r.viewers else { return String::new() };
    let mut out = format!(
        "== {} / viewers: one camera (H.264 1 Mbit/s + Opus 20 ms + telemetry), {} viewers\n",
        r.policy, v.viewers
    );
    out += &format!(
        "{:<18} {:>7} {:>10} {:>10} {:>10} {:>7} {:>9} {:>11} {:>9}\n",
        "mark", "viewers", "stack B", "internal B", "PSRAM B", "threads", "stacks B", "CPU ms/s", "per viewer"
    );
    let one = v.phases.iter().find(|p| p.mark == "viewers-1").map(cpu_per_second).unwrap_or(0.0);
    for p in &v.phases {
        let cpu = cpu_per_second(p);
        let ratio = if one > 0.0 && p.viewers > 0 && p.wall_ns > 0 {
            format!("{:.2}x", cpu / p.viewers as f64 / one)
        } else {
            "-".into()
        };
        out += &format!(
            "{:<18} {:>7} {:>10} {:>10} {:>10} {:>7} {:>9} {:>11} {:>9}\n",
            p.mark,
            p.viewers,
            p.total_bytes,
            p.internal_bytes,
            p.psram_bytes,
            p.threads,
            p.stack_bytes,
            if p.wall_ns > 0 { format!("{:.1}", cpu / 1e6) } else { "-".into() },
            ratio
        );
    }
    out += "(quiet marks between stream windows; CPU ms per second of stream over the window before the mark, the device process's threads on this host; per viewer: against one viewer's)\n";
    out += &format!(
        "per extra viewer (least squares over viewers-1..{}, ± standard error): stack {} B, internal RAM {} B, PSRAM {} B, CPU {:.2} ± {:.2} ms/s; CPU per viewer at most {}% of one viewer's\n",
        v.viewers,
        slope(&v.bytes_per_viewer),
        slope(&v.internal_bytes_per_viewer),
        slope(&v.psram_bytes_per_viewer),
        v.cpu_ns_per_viewer_second.per_viewer / 1e6,
        v.cpu_ns_per_viewer_second.std_error / 1e6,
        v.cpu_per_viewer_of_linear_percent
    );
    let components: Vec<String> = v
        .component_bytes_per_viewer
        .iter()
        .filter(|(_, s)| s.per_viewer.abs() >= 1.0)
        .map(|(n, s)| format!("{n} {}", slope(s)))
        .collect();
    out += &format!("  by component B: {}\n", components.join(", "));
    out += &format!(
        "after the last viewer left: {} B held of what was allocated since viewers-left (set aside: time-wait, DTLS timer hold, SCTP timer tick, glibc's resolver cache: {} B)\n",
        v.held_after_last_bytes, v.set_aside_after_last_bytes
    );
    for s in &v.held_after_last_sites {
        out +=
            &format!("  {:>9} B {:>6}x  {:<14} {}:{} {}\n", s.bytes, s.count, s.component, s.file, s.line, s.function);
    }
    out
}

/// The README's `viewers` block: N = 1, 2, 4, 8 (those the run reached) for each policy, and
/// the slopes.
pub fn markdown(reports: &[Report]) -> String {
    let mut md = String::from(
        "| policy | viewers | stack heap B | internal RAM B (projected) | PSRAM B (projected) | threads | stacks B | device CPU ms per s (host) | CPU per viewer vs one |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let with: Vec<&Report> = reports.iter().filter(|r| r.viewers.is_some()).collect();
    for r in &with {
        let v = r.viewers.as_ref().unwrap();
        let one = v.phases.iter().find(|p| p.mark == "viewers-1").map(cpu_per_second).unwrap_or(0.0);
        for k in [1, 2, 4, 8] {
            let Some(p) = v.phases.iter().find(|p| p.mark == format!("viewers-{k}")) else { continue };
            let cpu = cpu_per_second(p);
            md += &format!(
                "| {} | {k} | {} | {} | {} | {} | {} | {:.1} | {} |\n",
                r.policy,
                p.total_bytes,
                p.internal_bytes,
                p.psram_bytes,
                p.threads,
                p.stack_bytes,
                cpu / 1e6,
                if one > 0.0 { format!("{:.2}x", cpu / k as f64 / one) } else { "-".into() }
            );
        }
    }
    md += "\n| policy | per extra viewer (least squares ± standard error) | stack heap B | internal RAM B | PSRAM B | device CPU ms per s | held after the last left B |\n|---|---|---:|---:|---:|---:|---:|\n";
    for r in &with {
        let v = r.viewers.as_ref().unwrap();
        md += &format!(
            "| {} | over viewers-1..{} | {} | {} | {} | {:.2} ± {:.2} | {} |\n",
            r.policy,
            v.viewers,
            slope(&v.bytes_per_viewer),
            slope(&v.internal_bytes_per_viewer),
            slope(&v.psram_bytes_per_viewer),
            v.cpu_ns_per_viewer_second.per_viewer / 1e6,
            v.cpu_ns_per_viewer_second.std_error / 1e6,
            v.held_after_last_bytes
        );
    }
    md
}

/// The scenario's budgets (`[budgets.dynamic]` `viewer_*`), each breach named.
pub fn check(policy: &Policy, r: &Report) -> Vec<String> {
    let Some(v) = &r.viewers else { return Vec::new() };
    let b = &policy.budgets.dynamic;
    let mut breaches = Vec::new();
    let mut check = |what: &str, value: u64, budget: Option<u64>, unit: &str| {
        if let Some(limit) = budget.filter(|l| value > *l) {
            breaches.push(format!(
                "{} / viewers: {what} is {value}{unit}, budget {limit}{unit} (viewers-1..{})",
                r.policy, v.viewers
            ));
        }
    };
    let up = |s: &crate::report::Slope| s.per_viewer.max(0.0).ceil() as u64;
    check("projected internal RAM per extra viewer", up(&v.internal_bytes_per_viewer), b.viewer_internal_bytes, " B");
    check("projected PSRAM per extra viewer", up(&v.psram_bytes_per_viewer), b.viewer_psram_bytes, " B");
    check(
        "device CPU per viewer against one viewer's",
        v.cpu_per_viewer_of_linear_percent,
        b.viewer_cpu_of_linear_percent,
        " %",
    );
    check(
        "held after the last viewer left (allocated since viewers-left, bounded holds and init's own tick aside)",
        v.held_after_last_bytes,
        b.viewer_held_after_last_bytes,
        " B",
    );
    breaches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Slope;

    fn phase(mark: &str, viewers: u64, total: u64, internal: u64, cpu_ms: u64) -> ViewerPhase {
        ViewerPhase {
            mark: mark.into(),
            viewers,
            total_bytes: total,
            internal_bytes: internal,
            psram_bytes: total,
            cpu_ns: cpu_ms * 3_000_000,
            wall_ns: 3_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn least_squares_gives_the_slope_and_its_error() {
        let exact = least_squares(&[(1.0, 10.0), (2.0, 20.0), (3.0, 30.0), (4.0, 40.0)]);
        assert_eq!((exact.per_viewer, exact.std_error, exact.max_residual), (10.0, 0.0, 0.0));
        let noisy = least_squares(&[(1.0, 10.0), (2.0, 22.0), (3.0, 28.0), (4.0, 40.0)]);
        assert!((noisy.per_viewer - 9.6).abs() < 1e-9 && noisy.std_error > 0.5, "{noisy:?}");
        assert_eq!(least_squares(&[(1.0, 5.0)]), Slope::default());
    }

    #[test]
    fn cpu_beyond_linear_and_bytes_beyond_budget_are_named() {
        let policy = Policy::load(&Policy::path_for("lean")).unwrap();
        let b = &policy.budgets.dynamic;
        let (internal, cpu, held) = (
            b.viewer_internal_bytes.expect("lean budgets internal RAM per viewer"),
            b.viewer_cpu_of_linear_percent.expect("lean budgets CPU per viewer"),
            b.viewer_held_after_last_bytes.expect("lean budgets what viewers leave"),
        );
        // Within budget: internal RAM grows by the budget per viewer, CPU exactly linear.
        let mut v = Viewers {
            viewers: 4,
            phases: (1..=4)
                .map(|k| phase(&format!("viewers-{k}"), k, 40_000 * k, 2000 + internal * k, 20 * k))
                .collect(),
            ..Default::default()
        };
        v.internal_bytes_per_viewer = least_squares(&[1, 2, 3, 4].map(|k| (k as f64, (2000 + internal * k) as f64)));
        settle_cpu(&mut v);
        assert_eq!(v.cpu_per_viewer_of_linear_percent, 100);
        assert!((v.cpu_ns_per_viewer_second.per_viewer - 20e6).abs() < 1.0, "{:?}", v.cpu_ns_per_viewer_second);
        let mut r =
            Report { policy: "lean".into(), scenario: "viewers".into(), viewers: Some(v), ..Default::default() };
        assert!(check(&policy, &r).is_empty(), "{:?}", check(&policy, &r));
        // One byte more internal RAM per viewer, CPU growing faster than linear, a leak.
        let v = r.viewers.as_mut().unwrap();
        v.internal_bytes_per_viewer.per_viewer += 1.0;
        v.phases[3].cpu_ns = v.phases[3].cpu_ns * (cpu + 5) / 100;
        settle_cpu(v);
        v.held_after_last_bytes = held + 64;
        let breaches = check(&policy, &r);
        assert_eq!(breaches.len(), 3, "{breaches:#?}");
        assert!(breaches[0].contains("internal RAM per extra viewer"), "{breaches:#?}");
        assert!(
            breaches[1].contains("CPU per viewer") && breaches[1].contains(&format!("{} %", cpu + 5)),
            "{breaches:#?}"
        );
        assert!(
            breaches[2].contains("held after the last viewer left")
                && breaches[2].contains(&format!("{} B", held + 64))
        );
    }

    #[test]
    fn cpu_lines_of_the_device_log_land_on_their_marks() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("d.log");
        std::fs::write(
            &log,
            "[phase] viewers-1\n[cpu] viewers-1 viewers=1 cpu_ns=100000000 wall_ns=2000000000\n[cpu] viewers-2 viewers=2 cpu_ns=180000000 wall_ns=2000000000\n",
        )
        .unwrap();
        let v = Viewers {
            viewers: 2,
            phases: vec![phase("viewers-1", 1, 0, 0, 0), phase("viewers-2", 2, 0, 0, 0)],
            ..Default::default()
        };
        let mut r = Report { viewers: Some(v), ..Default::default() };
        attach_cpu(&mut r, &log).unwrap();
        let v = r.viewers.unwrap();
        assert_eq!((v.phases[1].cpu_ns, v.phases[1].wall_ns), (180_000_000, 2_000_000_000));
        assert_eq!(v.cpu_per_viewer_of_linear_percent, 100);
        assert!((v.cpu_ns_per_viewer_second.per_viewer - 40e6).abs() < 1.0);
        std::fs::write(&log, "[cpu] viewers-1 viewers=1 cpu_ns=x\n").unwrap();
        let mut r = Report { viewers: Some(Viewers::default()), ..Default::default() };
        assert!(attach_cpu(&mut r, &log).unwrap_err().to_string().contains("unreadable CPU line"));
    }
}
