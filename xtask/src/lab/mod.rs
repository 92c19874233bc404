//! `cargo xtask lab`: a host replica of the ESP32 stack that accounts for every byte by
//! component and phase, projects it onto the ESP32's heaps and holds the dynamic budgets.
//!
//! host (build the replica) -> run (device + remote processes) -> trace (recorder output)
//! -> account (component x phase) -> projection (ESP32 heaps) -> render (tables, SVG, JSON, budgets)

pub mod account;
pub mod host;
pub mod projection;
pub mod render;
pub mod run;
pub mod savings;
pub mod soak;
pub mod spread;
pub mod trace;

#[cfg(test)]
mod recorder_tests;
#[cfg(test)]
mod tests;

use crate::exit::{self, Outcome};
use crate::fsutil::{project_root, write_atomic};
use crate::policy::Policy;
use crate::report::Report;
use std::path::PathBuf;
use std::process::ExitCode;

pub const SCENARIOS: &[&str] = &["datachannel", "video", "cycle", "scale", "camera"];

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
///   cargo xtask lab --policy lean --runs 20          # budgets in every run, spread min..max
///   cargo xtask lab --policy lean --soak             # 1,000 cycles: slope per component
///   cargo xtask lab --policy lean --knob-savings     # what each lever saves (one build per lever)
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Policies to measure (name under policies/ or a path); repeat for side by side.
    #[arg(long = "policy", default_values = ["stock", "lean"])]
    policies: Vec<String>,
    /// Scenarios to run; repeat for several.
    #[arg(long = "scenario", value_parser = clap::builder::PossibleValuesParser::new(SCENARIOS), default_values = SCENARIOS)]
    scenarios: Vec<String>,
    /// Write every report as JSON to this file (an array, one entry per policy and scenario).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write the stock-vs-lean tables as Markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Replace the generated blocks of README.md (`<!-- lab:begin -->` ... `<!-- lab:end -->`,
    /// `targets`, and with --knob-savings `savings`) with this run's Markdown tables.
    #[arg(long)]
    update_readme: bool,
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
    /// and the least-squares slope of live bytes at the quiet `closed` marks over its second
    /// half, per component, with threads created and ended and open file descriptors. Exit 1
    /// when a component grows or shrinks by more than 1 B per cycle, a thread outlives its
    /// cycle or descriptors pile up.
    #[arg(long)]
    soak: bool,
    /// Do not check the dynamic budgets.
    #[arg(long)]
    no_budgets: bool,
    /// Instead of the scenarios: measure each policy once as it is and once per lever (knob,
    /// mbedTLS record length, fix patch) put back to upstream's value, and print what each saves.
    /// Uses the short runs of --quick; one host build per compile-time lever (about a minute each).
    #[arg(long)]
    knob_savings: bool,
    /// Only build the host replica of each policy (what `lab` runs in a child process).
    #[arg(long, hide = true)]
    build_only: bool,
    /// Show the host build's whole output (cmake, ninja, compilers) instead of one progress line
    /// per step; without it that output goes to $ESP_DC_CACHE/host/logs/<policy>.log.
    #[arg(long, short)]
    verbose: bool,
}

pub fn run(args: Args) -> Outcome {
    host::VERBOSE.store(args.verbose, std::sync::atomic::Ordering::Relaxed);
    let mut policies = Vec::new();
    for name in &args.policies {
        policies.push(Policy::load(&Policy::path_for(name))?);
    }
    if args.build_only {
        for policy in &policies {
            host::build(policy)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let default_cycles = if args.soak {
        1000
    } else if args.quick {
        4
    } else {
        10
    };
    let settings = run::Settings {
        messages: if args.quick { 50 } else { args.messages },
        video_seconds: if args.quick { 4 } else { args.video_seconds },
        cycles: args.cycles.unwrap_or(default_cycles),
    };
    let out = if args.out.is_absolute() { args.out.clone() } else { project_root().join(&args.out) };
    std::fs::create_dir_all(&out)?;
    if args.soak {
        return soak::soak(&policies, &settings, &out, args.json.as_deref());
    }
    if args.knob_savings {
        let quick = run::Settings { messages: 50, video_seconds: 4, cycles: 4 };
        let mut all = Vec::new();
        for policy in policies.iter().filter(|p| p.policy.name != "stock") {
            let savings = savings::knob_savings(policy, &quick, &out.join(format!("savings-{}", policy.policy.name)))?;
            savings::print_savings(&policy.policy.name, &savings);
            if args.update_readme && policy.policy.name == "lean" {
                update_readme("savings", &savings::savings_markdown(&savings))?;
            }
            all.push(serde_json::json!({ "policy": policy.policy.name, "levers": savings }));
        }
        if let Some(path) = &args.json {
            write_atomic(path, serde_json::to_string_pretty(&all)?.as_bytes())?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    // runs[i]: every policy and scenario of the i-th run. The first run is the one reported;
    // the budgets hold in each.
    let mut runs: Vec<Vec<Report>> = vec![Vec::new(); args.runs as usize];
    for policy in &policies {
        let build = host::build(policy)?;
        for scenario in &args.scenarios {
            for (i, run_reports) in runs.iter_mut().enumerate() {
                let mut progress = host::Progress::start(if args.runs > 1 {
                    format!("running {scenario} ({}), run {} of {}", policy.policy.name, i + 1, args.runs)
                } else {
                    format!("running {scenario} ({})", policy.policy.name)
                });
                let trace = run::run_scenario(&build, policy, scenario, &settings, &out)?;
                let report = account::build_report(&trace, scenario, policy, &build)?;
                progress.done();
                if i == 0 {
                    render::write_svg(&report, &out.join(format!("{}-{scenario}.svg", policy.policy.name)))?;
                }
                run_reports.push(report);
            }
        }
    }
    for run_reports in &mut runs {
        settle_cycle_leaks(run_reports, settings.cycles);
    }
    let mut reports = runs[0].clone();
    if args.runs > 1 {
        for r in &mut reports {
            let same: Vec<&Report> =
                runs.iter().flatten().filter(|o| o.policy == r.policy && o.scenario == r.scenario).collect();
            r.spread = spread::of(&same);
        }
    }
    if policies.len() > 1 {
        render::print_side_by_side(&reports);
    } else {
        for r in &reports {
            render::print_report(r);
        }
    }
    if let Some(path) = &args.json {
        write_atomic(path, serde_json::to_string_pretty(&reports)?.as_bytes())?;
    }
    let markdown = render::markdown_side_by_side(&reports);
    if let Some(path) = &args.markdown {
        write_atomic(path, markdown.as_bytes())?;
    }
    if args.update_readme {
        update_readme("lab", &markdown)?;
        if args.scenarios.iter().any(|s| s == "datachannel") {
            update_readme("threads", &render::threads_markdown(&reports, "datachannel"))?;
        }
        if policies.iter().any(|p| p.policy.name == "lean") {
            update_readme("targets", &render::targets_markdown(&reports, "lean"))?;
        }
    }
    if args.runs > 1 {
        spread::print(&reports);
    }
    if args.no_budgets {
        return Ok(ExitCode::SUCCESS);
    }
    let all: Vec<Report> = runs.into_iter().flatten().collect();
    let breaches = render::check_budgets(&policies, &all);
    if breaches.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for b in &breaches {
            eprintln!("budget: {b}");
        }
        Err(exit::verdict(format!("{} dynamic budget(s) exceeded", breaches.len())))
    }
}

/// With `datachannel` (one connection) beside `cycle` (N connections) for a policy, what each
/// extra cycle leaves is exact: both end after rtcCleanup has joined every thread, so the
/// difference in bytes still held, over N - 1, is free of teardown timing. Without it the
/// cycle report keeps its estimate from the `closed` marks.
fn settle_cycle_leaks(reports: &mut [Report], cycles: u32) {
    let single: Vec<(String, u64)> =
        reports.iter().filter(|r| r.scenario == "datachannel").map(|r| (r.policy.clone(), r.leak_bytes)).collect();
    for r in reports.iter_mut().filter(|r| r.scenario == "cycle") {
        if let Some((_, one)) = single.iter().find(|(p, _)| *p == r.policy) {
            r.leak_bytes_per_cycle = Some(r.leak_bytes.saturating_sub(*one) / u64::from(cycles.max(2) - 1));
        }
    }
}

/// Replaces the README block between `<!-- NAME:begin -->` and `<!-- NAME:end -->`.
fn update_readme(name: &str, markdown: &str) -> anyhow::Result<()> {
    let (begin, end) = (format!("<!-- {name}:begin -->"), format!("<!-- {name}:end -->"));
    let path = project_root().join("README.md");
    let text = std::fs::read_to_string(&path)?;
    let (Some(b), Some(e)) = (text.find(&begin), text.find(&end)) else {
        return Err(exit::bad_input(format!("{}: no `{begin}` ... `{end}` block to replace", path.display())));
    };
    let updated = format!("{}{begin}\n{}\n{}", &text[..b], markdown.trim(), &text[e..]);
    write_atomic(&path, updated.as_bytes())?;
    Ok(())
}
