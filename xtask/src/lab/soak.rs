//! `lab --soak`: a device that reconnects all day must not creep. One long `cycle` run per
//! policy; at each quiet `cycle-N-closed` mark the live bytes of every component, fitted by the
//! median of pairwise slopes over the second half (the first half lets pools and caches reach their size), plus
//! threads created against threads ended and open file descriptors at every mark.

use crate::ledger::account;
use crate::replica;
use crate::replica::run::{self as scenario_run, Settings};

use crate::exit::{self, Outcome};
use crate::fsutil::write_atomic;
use crate::policy::Policy;
use crate::report::Report;
use anyhow::Context;
use serde::Serialize;
use std::path::Path;
use std::process::ExitCode;

/// A component may move this much per cycle (rounding of aligned blocks) and still be flat.
pub const FLAT_BYTES_PER_CYCLE: f64 = 1.0;

#[derive(Debug, Serialize, PartialEq)]
pub struct ComponentSlope {
    pub component: String,
    /// Live bytes at the second cycle's and the last cycle's `closed` mark.
    pub first_bytes: u64,
    pub last_bytes: u64,
    /// Median (Theil-Sen) slope over the second half of the cycles, bytes per cycle.
    pub slope_bytes_per_cycle: f64,
    pub flat: bool,
}

#[derive(Debug, Serialize)]
pub struct Soak {
    pub policy: String,
    pub cycles: u32,
    pub components: Vec<ComponentSlope>,
    pub threads_created: u64,
    pub threads_ended: u64,
    /// Open descriptors at the first and the last `closed` mark, and the most at any.
    pub fds_first: u64,
    pub fds_last: u64,
    pub fds_max: u64,
    /// usrsctp's verification tags in time-wait (bounded, expiring; inside usrsctp's line above):
    /// blocks at the last mark, the most at any, and their bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_wait: Option<crate::report::TimeWait>,
    /// Closed DTLS transports held by a pending retransmission timer (inside libdatachannel's line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtls_timers: Option<crate::report::DtlsTimers>,
}

impl Soak {
    /// What is wrong, one line each; empty when the soak is clean.
    pub fn findings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in self.components.iter().filter(|c| !c.flat) {
            out.push(format!(
                "{} / {}: {:+.2} B per cycle over cycles {}..{} ({} B at cycle 2, {} B at the end)",
                self.policy,
                c.component,
                c.slope_bytes_per_cycle,
                self.cycles / 2 + 1,
                self.cycles,
                c.first_bytes,
                c.last_bytes
            ));
        }
        if self.threads_created != self.threads_ended {
            out.push(format!(
                "{}: {} threads created, {} ended",
                self.policy, self.threads_created, self.threads_ended
            ));
        }
        if let Some(at) = self.time_wait.as_ref().and_then(|t| t.over_bound_at.as_ref()) {
            out.push(format!("{}: usrsctp's verification-tag time-wait exceeds its bound at {at}", self.policy));
        }
        if let Some(at) = self.dtls_timers.as_ref().and_then(|d| d.over_bound_at.as_ref()) {
            out.push(format!("{}: DTLS retransmission timer tasks exceed their bound at {at}", self.policy));
        }
        if self.fds_last > self.fds_first {
            out.push(format!(
                "{}: {} open descriptors at the first closed mark, {} at the last",
                self.policy, self.fds_first, self.fds_last
            ));
        }
        out
    }
}

pub fn soak(policies: &[Policy], settings: &Settings, out: &Path, json: Option<&Path>) -> Outcome {
    // A cycle writes about 1.7 MB of trace (lean): give the recorder's log room for all of them (it is
    // reserved address space, filled as written; a 32-bit process has about 3 GB of it).
    if std::env::var_os("LAB_LOG_BYTES").is_none() {
        let bytes = (u64::from(settings.cycles) * 1_900_000 + (64 << 20)).clamp(1 << 30, 2_400_000_000);
        std::env::set_var("LAB_LOG_BYTES", bytes.to_string());
    }
    let mut soaks = Vec::new();
    for policy in policies {
        let build = replica::build(policy)?;
        eprintln!("lab: {} / soak of {} cycles", policy.policy.name, settings.cycles);
        let trace = scenario_run::run_scenario(&build, policy, "cycle", settings, out)?;
        let report = account::build_report(&trace, "cycle", policy, &build)?;
        let log = out.join(format!("{}-cycle.device.log", policy.policy.name));
        let log = std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
        soaks.push(of(&report, &log, settings.cycles));
    }
    for s in &soaks {
        print(s);
    }
    if let Some(path) = json {
        write_atomic(path, serde_json::to_string_pretty(&soaks)?.as_bytes())?;
    }
    let findings: Vec<String> = soaks.iter().flat_map(Soak::findings).collect();
    if findings.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for f in &findings {
        eprintln!("soak: {f}");
    }
    Err(exit::verdict(format!("{} soak finding(s)", findings.len())))
}

/// The soak's figures from a `cycle` report and the device's log (`[quiet] <mark> ..., N fds`).
pub fn of(report: &Report, device_log: &str, cycles: u32) -> Soak {
    let is_closed = |phase: &str| phase.starts_with("cycle-") && phase.ends_with("-closed");
    let mut components = Vec::new();
    for c in &report.components {
        let series: Vec<u64> = c.phases.iter().filter(|p| is_closed(&p.phase)).map(|p| p.live_bytes).collect();
        if series.len() < 4 {
            continue;
        }
        let second_half = &series[series.len() / 2..];
        let slope = account::median_slope(second_half);
        components.push(ComponentSlope {
            component: c.name.clone(),
            first_bytes: series[1],
            last_bytes: *series.last().unwrap(),
            slope_bytes_per_cycle: (slope * 100.0).round() / 100.0,
            flat: slope.abs() <= FLAT_BYTES_PER_CYCLE,
        });
    }
    let fds: Vec<u64> = device_log
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("[quiet] ")?;
            let (mark, tail) = rest.split_once(' ')?;
            if !is_closed(mark) {
                return None;
            }
            tail.strip_suffix(" fds")?.rsplit(' ').next()?.parse().ok()
        })
        .collect();
    Soak {
        policy: report.policy.clone(),
        cycles,
        components,
        threads_created: report.thread_list.len() as u64,
        threads_ended: report.thread_list.iter().filter(|t| t.ended).count() as u64,
        fds_first: fds.first().copied().unwrap_or(0),
        fds_last: fds.last().copied().unwrap_or(0),
        fds_max: fds.iter().copied().max().unwrap_or(0),
        time_wait: report.time_wait.clone(),
        dtls_timers: report.dtls_timers.clone(),
    }
}

pub fn print(s: &Soak) {
    println!("\nsoak: {} over {} cycles (slope over cycles {}..{})\n", s.policy, s.cycles, s.cycles / 2 + 1, s.cycles);
    println!("| component | at cycle 2 B | at the end B | slope B/cycle | flat (±{FLAT_BYTES_PER_CYCLE}) |");
    println!("|---|---:|---:|---:|---|");
    for c in &s.components {
        println!(
            "| {} | {} | {} | {:+.2} | {} |",
            c.component,
            c.first_bytes,
            c.last_bytes,
            c.slope_bytes_per_cycle,
            if c.flat { "yes" } else { "NO" }
        );
    }
    println!(
        "\nthreads created {}, ended {}; open descriptors at the closed marks {} first, {} last, {} most",
        s.threads_created, s.threads_ended, s.fds_first, s.fds_last, s.fds_max
    );
    if let Some(tw) = &s.time_wait {
        println!("usrsctp verification tags in time-wait (inside usrsctp above): {}", tw.summary());
    }
    if let Some(d) = &s.dtls_timers {
        println!(
            "closed DTLS transports held by a pending retransmission timer (inside libdatachannel above): {} B at \
             the last mark, at most {} transports and {} timer tasks ({} B); bound {} tasks{}",
            d.bytes,
            d.most_transports,
            d.most_tasks,
            d.most_bytes,
            d.bound_tasks,
            d.over_bound_at.as_ref().map(|at| format!(", OVER THE BOUND at {at}")).unwrap_or_default()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ComponentReport, PhaseFigure, ThreadReport};

    fn closed_series(name: &str, values: impl Iterator<Item = u64>) -> ComponentReport {
        ComponentReport {
            name: name.into(),
            phases: values
                .enumerate()
                .map(|(i, v)| PhaseFigure {
                    phase: format!("cycle-{}-closed", i + 1),
                    live_bytes: v,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// The fit the soak and `cycle` used before the median slope, to show what it got wrong.
    fn least_squares_slope(values: &[u64]) -> f64 {
        let n = values.len() as f64;
        let (mean_x, mean_y) = ((n - 1.0) / 2.0, values.iter().map(|v| *v as f64).sum::<f64>() / n);
        let dx = |i: usize| i as f64 - mean_x;
        let num: f64 = values.iter().enumerate().map(|(i, v)| dx(i) * (*v as f64 - mean_y)).sum();
        num / (0..values.len()).map(|i| dx(i) * dx(i)).sum::<f64>()
    }

    #[test]
    fn a_slow_leak_is_found_and_a_settling_pool_is_not() {
        // usrsctp grows for the first half then stays; libjuice keeps 3 B per cycle;
        // libdatachannel's queue holds 168 B more at one mark in four, late in the run (a
        // least-squares fit calls that +1.1 B per cycle).
        let report = Report {
            policy: "lean".into(),
            components: vec![
                closed_series("usrsctp", (0..100u64).map(|i| 7000 + 50 * i.min(40))),
                closed_series("libjuice", (0..100u64).map(|i| 15_000 + 3 * i)),
                closed_series("libdatachannel", (0..100u64).map(|i| 7934 + if i > 75 && i % 4 == 0 { 168 } else { 0 })),
            ],
            thread_list: vec![
                ThreadReport { ended: true, ..Default::default() },
                ThreadReport { ended: false, ..Default::default() },
            ],
            ..Default::default()
        };
        let log = "[quiet] cycle-1-closed after 300 ms, 9 fds\n[quiet] cycle-1-connected after 280 ms, 12 fds\n\
                   [quiet] cycle-2-closed after 251 ms, 9 fds\n[quiet] cycle-3-closed after 260 ms, 10 fds\n";
        let soak = of(&report, log, 100);
        let usrsctp = &soak.components[0];
        assert!(usrsctp.flat && usrsctp.slope_bytes_per_cycle == 0.0, "{usrsctp:?}");
        let libjuice = &soak.components[1];
        assert!(!libjuice.flat && (libjuice.slope_bytes_per_cycle - 3.0).abs() < 1e-9, "{libjuice:?}");
        let libdatachannel = &soak.components[2];
        assert!(libdatachannel.flat && libdatachannel.slope_bytes_per_cycle == 0.0, "{libdatachannel:?}");
        let late: Vec<u64> = report.components[2].phases[50..].iter().map(|p| p.live_bytes).collect();
        assert!(least_squares_slope(&late) > 1.0, "the least-squares fit would have called it a leak");
        assert_eq!((soak.fds_first, soak.fds_last, soak.fds_max), (9, 10, 10));
        let findings = soak.findings();
        assert_eq!(findings.len(), 3, "{findings:?}");
        assert!(findings[0].contains("libjuice: +3.00 B per cycle"), "{findings:?}");
        assert!(findings[1].contains("2 threads created, 1 ended"), "{findings:?}");
        assert!(findings[2].contains("9 open descriptors at the first closed mark, 10 at the last"), "{findings:?}");
    }

    #[test]
    fn a_time_wait_or_dtls_timer_beyond_its_bound_is_a_finding() {
        use crate::report::{DtlsTimers, TimeWait};
        let within = |tw: Option<String>, dtls: Option<String>| Report {
            policy: "lean".into(),
            time_wait: Some(TimeWait { blocks: 40, bound_blocks: 32, over_bound_at: tw, ..Default::default() }),
            dtls_timers: Some(DtlsTimers { over_bound_at: dtls, ..Default::default() }),
            ..Default::default()
        };
        assert!(of(&within(None, None), "", 1000).findings().is_empty());
        let findings = of(
            &within(
                Some("cycle-900-closed: 40 blocks, bound 32".into()),
                Some("cycle-7-closed: 90 timer tasks".into()),
            ),
            "",
            1000,
        )
        .findings();
        assert_eq!(findings.len(), 2, "{findings:?}");
        assert!(findings[0].contains("time-wait exceeds its bound at cycle-900-closed"), "{findings:?}");
        assert!(
            findings[1].contains("DTLS retransmission timer tasks exceed their bound at cycle-7-closed"),
            "{findings:?}"
        );
    }
}
