//! `cargo xtask lab`: a host replica of the ESP32 stack that accounts for every byte by
//! component and phase, projects it onto the ESP32's heaps and holds the dynamic budgets.
//!
//! host (build the replica) -> run (device + remote processes) -> trace (recorder output)
//! -> account (component x phase) -> projection (ESP32 heaps) -> render (tables, SVG, JSON, budgets)

pub mod compare;
pub mod lossy;
pub mod render;
pub mod savings;
pub mod soak;
pub mod spread;
pub mod viewers;

#[cfg(test)]
mod tests;

use crate::docs;
use crate::exit::{self, Outcome};
use crate::fsutil::{project_root, write_atomic};
use crate::ledger::account;
use crate::policy::Policy;
use crate::replica::{self, run};
use crate::report::Report;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The scenarios a plain `cargo xtask lab` runs.
pub const SCENARIOS: &[&str] = &["datachannel", "video", "cycle", "scale", "camera"];
/// Every scenario `--scenario` takes: the default set and `viewers` (one camera, many viewers),
/// which runs only when asked for: its windows of stream per viewer add a minute or more per
/// policy, and CI's smoke run stays as short as it was.
pub const ALL_SCENARIOS: &[&str] = &["datachannel", "video", "cycle", "scale", "camera", "viewers"];

/// Run the host replica and account for every byte, stock and lean side by side.
///
/// Each scenario runs the measured "device" peer in its own 32-bit process, with the recorder
/// preloaded, against an unmeasured "remote" peer process over loopback. The report gives live
/// bytes per component and phase, peaks, the top call sites, threads and their stack high-water
/// marks, and a projection onto the ESP32's internal RAM and PSRAM. Exit 1 when a policy's
/// dynamic budget is exceeded (the message names component and phase).
///
/// Examples:
///   cargo xtask lab                                  # stock and lean, every scenario
///   cargo xtask lab --policy lean --scenario datachannel --json out.json
///   cargo xtask lab --quick                          # short runs (CI smoke)
///   cargo xtask lab --policy lean --scenario viewers --viewers 8 --runs 3  # one camera, 8 viewers
///   cargo xtask lab --policy lean --runs 20          # budgets in every run, spread min..max
///   cargo xtask lab --policy lean --soak             # 1,000 cycles: slope per component
///   cargo xtask lab --policy lean --knob-savings     # what each lever saves (one build per lever)
///   cargo xtask lab --loss 2 --loss 10 --jitter-ms 30 # datachannel, video, camera on a lossy link
///   cargo xtask lab --runs 5 --json after.json && cargo xtask lab --compare before.json after.json
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Policies to measure (name under policies/ or a path); repeat for side by side.
    #[arg(long = "policy", default_values = ["stock", "lean"])]
    policies: Vec<String>,
    /// Scenarios to run; repeat for several.
    /// `viewers` (one camera, several viewers joining one by one; see --viewers) is not in the
    /// default set.
    #[arg(long = "scenario", value_parser = clap::builder::PossibleValuesParser::new(ALL_SCENARIOS), default_values = SCENARIOS)]
    scenarios: Vec<String>,
    /// `viewers`: how many viewers join one by one (at least 2). The cost per extra viewer is the
    /// least-squares slope over their join marks.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=32))]
    viewers: u32,
    /// `viewers`: seconds of stream after each join, leave and rejoin (the CPU window; --quick 2).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=60))]
    viewer_seconds: u32,
    /// Write every report as JSON to this file (an array, one entry per policy and scenario).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write the stock-vs-lean tables as Markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Replace the generated blocks of docs/lab.md (`<!-- lab:begin -->` ... `<!-- lab:end -->`,
    /// `threads`, `targets`, with --knob-savings `savings`, with --loss `lossy`) with this run's
    /// Markdown tables (docs::BLOCKS says which file holds which). `--update-readme` is the old
    /// name, from before issue 31 moved the tables out of README.md.
    #[arg(long = "update-docs", alias = "update-readme")]
    update_docs: bool,
    /// Directory for the SVG timelines and raw traces.
    #[arg(long, default_value = "lab-out")]
    out: PathBuf,
    /// Messages echoed in `datachannel`.
    #[arg(long, default_value_t = 1000)]
    messages: u32,
    /// Seconds of streaming in `video` and `camera`.
    #[arg(long, alias = "duration", default_value_t = 10)]
    video_seconds: u32,
    /// Connect/disconnect cycles in `cycle` (default 10, --quick 4, --soak 1000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    cycles: Option<u32>,
    /// Run every scenario N times: the budgets must hold in each run, and the report shows each
    /// measure's spread (lowest..highest) over the runs. Marks are quiet points, so the spread
    /// is what load and timing still move.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    runs: u32,
    /// Short runs: 50 messages, 4 s of video, 4 cycles (for CI).
    #[arg(long)]
    quick: bool,
    /// Instead of the scenarios: one long `cycle` run per policy (1,000 cycles unless --cycles)
    /// and the median (Theil-Sen) slope of live bytes at the quiet `closed` marks over its second
    /// half, per component, with threads created and ended and open file descriptors. Exit 1
    /// when a component grows or shrinks by more than 1 B per cycle, a thread outlives its
    /// cycle, descriptors pile up, or usrsctp's time-wait or the DTLS timer hold exceeds its bound.
    #[arg(long)]
    soak: bool,
    /// Lossy link: device and remote talk through an in-process UDP relay that drops this
    /// percentage of the packets both ways (ICE, DTLS, SCTP and RTP alike); repeat for several
    /// rates. Runs datachannel, video and camera (the one-connection scenarios); exit 1 also
    /// when a message arrives damaged or out of order, frames stop arriving for over a second,
    /// or the device's NACK responder never resends a lost video packet. --json then writes
    /// {"reports": [...], "lossy": [...]}, and --update-docs the `lossy` block of docs/lab.md.
    #[arg(long, value_name = "PERCENT", value_parser = loss_percent)]
    loss: Vec<f64>,
    /// With --loss (or alone): each packet is held back a uniform 0..=MS, so packets reorder.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(0..=2000))]
    jitter_ms: Option<u32>,
    /// Do not check the dynamic budgets.
    #[arg(long)]
    no_budgets: bool,
    /// Instead of the scenarios: measure each policy once as it is and once per lever (knob,
    /// mbedTLS record length, fix patch) put back to upstream's value, and print what each saves.
    /// Uses the short runs of --quick; one host build per compile-time lever (about a minute each).
    #[arg(long)]
    knob_savings: bool,
    /// With --knob-savings: only the levers whose name contains this text (repeatable), e.g.
    /// `--lever sync.placement --lever fewer-locks`. --update-docs then leaves the savings
    /// block alone: it holds every lever.
    #[arg(long, value_name = "TEXT", requires = "knob_savings")]
    lever: Vec<String>,
    /// Instead of measuring: compare two `--json` reports (BEFORE AFTER). Same policies,
    /// scenarios, components and keys, and every budget/README measure where repeated runs put
    /// it (each file's --runs spread, apart by at most the wider one's width, plus --tolerance);
    /// a table of what moved. Exit 1 on a difference beyond it.
    #[arg(long, num_args = 2, value_names = ["BEFORE", "AFTER"])]
    compare: Option<Vec<PathBuf>>,
    /// With --compare: bytes every measure may lie beyond its spread.
    #[arg(long, default_value_t = 0)]
    tolerance: u64,
    /// Only build the host replica of each policy.
    #[arg(long)]
    build_only: bool,
    /// Show the host build's whole output (cmake, ninja, compilers) instead of one progress line
    /// per step; without it that output goes to $ESP_DC_CACHE/host/logs/<policy>.log.
    #[arg(long, short)]
    verbose: bool,
}

fn loss_percent(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=50.0).contains(&p) => Ok(p),
        _ => Err(format!("`{text}`: a loss percentage from 0 to 50")),
    }
}

/// The links to run on: none (plain loopback) or one per --loss rate with the jitter.
fn links(args: &Args) -> Vec<Option<crate::relay::Impairment>> {
    if args.loss.is_empty() && args.jitter_ms.is_none() {
        return vec![None];
    }
    let rates = if args.loss.is_empty() { vec![0.0] } else { args.loss.clone() };
    rates
        .into_iter()
        .map(|loss_percent| {
            Some(crate::relay::Impairment { loss_percent, jitter_ms: args.jitter_ms.unwrap_or(0), delay_ms: 0 })
        })
        .collect()
}

pub fn run(args: Args) -> Outcome {
    if let Some([before, after]) = args.compare.as_deref() {
        return compare::run(before, after, args.tolerance);
    }
    replica::VERBOSE.store(args.verbose, std::sync::atomic::Ordering::Relaxed);
    let links = links(&args);
    let lossy = links[0].is_some();
    let scenarios = scenarios_for(&args, lossy)?;
    let mut policies = Vec::new();
    for name in &args.policies {
        policies.push(Policy::load(&Policy::path_for(name))?);
    }
    if args.build_only {
        for policy in &policies {
            replica::build(policy)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let settings = settings_of(&args);
    let out = if args.out.is_absolute() { args.out.clone() } else { project_root().join(&args.out) };
    std::fs::create_dir_all(&out)?;
    if args.soak {
        return soak::soak(&policies, &settings, &out, args.json.as_deref());
    }
    if args.knob_savings {
        return knob_savings(&args, &policies, &out);
    }
    let (runs, lossy_runs) = run_all(&args, &policies, &links, &scenarios, &settings, &out)?;
    let mut reports = runs[0].clone();
    if args.runs > 1 {
        for r in &mut reports {
            let same: Vec<&Report> =
                runs.iter().flatten().filter(|o| o.policy == r.policy && o.scenario == r.scenario).collect();
            r.spread = spread::of(&same);
        }
    }
    write_outputs(&args, &policies, &reports, &lossy_runs, lossy)?;
    if args.runs > 1 {
        spread::print(&reports);
    }
    if args.no_budgets {
        return Ok(ExitCode::SUCCESS);
    }
    let all: Vec<Report> = runs.into_iter().flatten().collect();
    verdict(&policies, &all, &lossy_runs)
}

/// The scenarios to run: those asked for; on a lossy link only the one-connection ones (the
/// default set is cut to them, another one asked for is an error).
fn scenarios_for(args: &Args, lossy: bool) -> Result<Vec<String>> {
    let mut scenarios = args.scenarios.clone();
    if lossy {
        if scenarios.len() == SCENARIOS.len() {
            // The default set: the scenarios the link applies to.
            scenarios.retain(|s| run::LOSSY_SCENARIOS.contains(&s.as_str()));
        } else if let Some(s) = scenarios.iter().find(|s| !run::LOSSY_SCENARIOS.contains(&s.as_str())) {
            return Err(exit::bad_input(format!(
                "--loss/--jitter-ms: scenario `{s}` runs several connections, the lossy link stands between one ({})",
                run::LOSSY_SCENARIOS.join(", ")
            )));
        }
        if args.soak || args.knob_savings {
            return Err(exit::bad_input("--loss/--jitter-ms go with the scenarios, not --soak or --knob-savings"));
        }
    }
    Ok(scenarios)
}

fn settings_of(args: &Args) -> run::Settings {
    let default_cycles = if args.soak {
        1000
    } else if args.quick {
        4
    } else {
        10
    };
    run::Settings {
        messages: if args.quick { 50 } else { args.messages },
        video_seconds: if args.quick { 4 } else { args.video_seconds },
        cycles: args.cycles.unwrap_or(default_cycles),
        viewers: args.viewers,
        viewer_seconds: if args.quick { 2 } else { args.viewer_seconds },
        ..Default::default()
    }
}

/// `--knob-savings`: each non-stock policy's levers, measured with the short runs.
fn knob_savings(args: &Args, policies: &[Policy], out: &Path) -> Outcome {
    let quick = run::Settings { messages: 50, video_seconds: 4, cycles: 4, ..Default::default() };
    let mut all = Vec::new();
    for policy in policies.iter().filter(|p| p.policy.name != "stock") {
        let dir = out.join(format!("savings-{}", policy.policy.name));
        let savings = savings::knob_savings(policy, &quick, &dir, &args.lever)?;
        savings::print_savings(&policy.policy.name, &savings);
        if args.update_docs && args.lever.is_empty() && policy.policy.name == "lean" {
            docs::update_block("savings", &savings::savings_markdown(&savings))?;
        }
        all.push(serde_json::json!({ "policy": policy.policy.name, "levers": savings }));
    }
    if let Some(path) = &args.json {
        write_atomic(path, serde_json::to_string_pretty(&all)?.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Every policy, link and scenario, `--runs` times. runs[i]: every policy and scenario of the
/// i-th run. The first run is the one reported (and drawn); the budgets hold in each.
fn run_all(
    args: &Args,
    policies: &[Policy],
    links: &[Option<crate::relay::Impairment>],
    scenarios: &[String],
    settings: &run::Settings,
    out: &Path,
) -> Result<(Vec<Vec<Report>>, Vec<lossy::LossyRun>)> {
    let mut runs: Vec<Vec<Report>> = vec![Vec::new(); args.runs as usize];
    let mut lossy_runs = Vec::new();
    for policy in policies {
        let build = replica::build(policy)?;
        // Static internal RAM: the host libraries are a proxy; the chip's map, when a build is at
        // hand, is the figure (and the one the whole-stack line uses).
        print!(
            "{}",
            crate::static_sizes::static_comparison(
                policy,
                &crate::static_sizes::host_sizes(&build.libraries, policy)?
            )?
        );
        for link in links {
            for scenario in scenarios {
                for (i, run_reports) in runs.iter_mut().enumerate() {
                    let on = link.map(|l| format!(", {}% loss, {} ms jitter", l.loss_percent, l.jitter_ms));
                    let mut progress = replica::Progress::start(if args.runs > 1 {
                        format!(
                            "running {scenario} ({}{}), run {} of {}",
                            policy.policy.name,
                            on.unwrap_or_default(),
                            i + 1,
                            args.runs
                        )
                    } else {
                        format!("running {scenario} ({}{})", policy.policy.name, on.unwrap_or_default())
                    });
                    let ran = run::run_scenario_on_link(&build, policy, scenario, settings, out, *link)?;
                    let mut report = account::build_report(&ran.trace, scenario, policy, &build)?;
                    viewers::attach_cpu(&mut report, &ran.device_log)?;
                    progress.done();
                    if i == 0 {
                        let name = format!("{}-{scenario}{}.svg", policy.policy.name, run::link_suffix(*link));
                        render::write_svg(&report, &out.join(name))?;
                    }
                    lossy_runs.extend(lossy::LossyRun::new(&ran, &report));
                    run_reports.push(report);
                }
            }
        }
    }
    for run_reports in &mut runs {
        settle_cycle_leaks(run_reports, settings.cycles);
    }
    Ok((runs, lossy_runs))
}

/// The tables on stdout, `--json`, `--markdown` and `--update-docs`.
fn write_outputs(
    args: &Args,
    policies: &[Policy],
    reports: &[Report],
    lossy_runs: &[lossy::LossyRun],
    lossy: bool,
) -> Result<()> {
    // `viewers` has its own tables; the side-by-side ones and the README's `lab` block are the
    // other scenarios'.
    let others: Vec<Report> = reports.iter().filter(|r| r.viewers.is_none()).cloned().collect();
    if lossy {
        // The link's own table instead of the loopback tables: the same figures the budgets
        // hold, next to what the link did and what got through.
        print!("{}", lossy::side_by_side(lossy_runs));
    } else if policies.len() > 1 {
        render::print_side_by_side(&others);
    } else {
        for r in &others {
            render::print_report(r);
        }
    }
    for r in reports {
        print!("{}", viewers::text(r));
    }
    if let Some(path) = &args.json {
        let json = if lossy {
            serde_json::to_string_pretty(&serde_json::json!({ "reports": reports, "lossy": lossy_runs }))?
        } else {
            serde_json::to_string_pretty(&reports)?
        };
        write_atomic(path, json.as_bytes())?;
    }
    let markdown = render::markdown_side_by_side(&others);
    if let Some(path) = &args.markdown {
        write_atomic(path, markdown.as_bytes())?;
    }
    if args.update_docs && lossy {
        let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
        docs::update_block("lossy", &format!("```\n$ cargo xtask {command}\n{}```", lossy::side_by_side(lossy_runs)))?;
    } else if args.update_docs && reports.iter().any(|r| r.viewers.is_some()) {
        let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
        docs::update_block("viewers", &format!("`cargo xtask {command}`:\n\n{}", viewers::markdown(reports)))?;
    }
    if args.update_docs && !lossy && !others.is_empty() {
        docs::update_block("lab", &markdown)?;
        if args.scenarios.iter().any(|s| s == "datachannel") {
            docs::update_block("threads", &render::threads_markdown(reports, "datachannel"))?;
            if policies.iter().any(|p| p.policy.name == "stock") && policies.iter().any(|p| p.policy.name == "lean") {
                docs::update_block("headline", &render::headline_markdown(reports))?;
            }
        }
        if policies.iter().any(|p| p.policy.name == "lean") {
            docs::update_block("targets", &render::targets_markdown(reports, "lean"))?;
        }
    }
    Ok(())
}

/// Exit 1 when a dynamic budget is exceeded in any run or a lossy-link check failed, each named.
fn verdict(policies: &[Policy], all: &[Report], lossy_runs: &[lossy::LossyRun]) -> Outcome {
    let breaches = render::check_budgets(policies, all);
    let broken: Vec<String> = lossy_runs.iter().flat_map(lossy::verdicts).collect();
    for b in &breaches {
        eprintln!("budget: {b}");
    }
    for b in &broken {
        eprintln!("lossy link: {b}");
    }
    match (breaches.len(), broken.len()) {
        (0, 0) => Ok(ExitCode::SUCCESS),
        (b, 0) => Err(exit::verdict(format!("{b} dynamic budget(s) exceeded"))),
        (b, l) => Err(exit::verdict(format!("{b} dynamic budget(s) exceeded, {l} lossy-link check(s) failed"))),
    }
}

/// With `datachannel` (one connection) beside `cycle` (N connections) for a policy, what each
/// extra cycle still holds after rtcCleanup is exact: both end after rtcCleanup has joined every
/// thread, so the difference in bytes still held, over N - 1, is free of teardown timing. A
/// second figure beside the one from the `closed` marks, which stays the cycle's own (it sees
/// what rtcCleanup would free, and a device never calls it); the budget holds both.
fn settle_cycle_leaks(reports: &mut [Report], cycles: u32) {
    let single: Vec<(String, u64)> =
        reports.iter().filter(|r| r.scenario == "datachannel").map(|r| (r.policy.clone(), r.leak_bytes)).collect();
    for r in reports.iter_mut().filter(|r| r.scenario == "cycle") {
        if let Some((_, one)) = single.iter().find(|(p, _)| *p == r.policy) {
            r.leak_bytes_per_cycle_after_cleanup =
                Some(r.leak_bytes.saturating_sub(*one) / u64::from(cycles.max(2) - 1));
        }
    }
}
