//! `cargo xtask size-check`: static RAM and flash per component against the policy's
//! `[budgets.static.<component>]`, from ESP-IDF's size report, a linker map, or the lab's
//! 32-bit host build of the same component tree. Reading those inputs is `static_sizes`'s job;
//! this module runs idf.py, holds the budgets and prints the verdicts.

use crate::exit::{self, Outcome};
use crate::fsutil::{project_root, write_atomic};
use crate::idf;
use crate::policy::{Policy, StaticBudget};
use crate::static_sizes::*;
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
/// Hold static RAM and flash budgets per component.
///
/// Reads per-component sizes from one of:
///   (default)    `idf.py size-components --format json2` of the build that `cargo xtask build`
///                made for --target, --example and --policy (build/<example>-<target>-<policy>/);
///                not for --target linux, a host program with no device memory map (exit 2);
///   --from FILE  that JSON saved earlier, or the build's GNU linker map (<app>.map);
///   --host       the lab's 32-bit host build of the same sources and knobs (no ESP-IDF needed).
/// and compares each component's internal RAM (DIRAM/DRAM .data + .bss), IRAM and flash
/// (.text + .rodata) with `[budgets.static.<component>]` of the policy (device) or its `host_*`
/// figures (--host). mbedTLS counts libmbedtls, libmbedcrypto and libmbedx509 together.
///
/// Examples:
///   cargo xtask build --target esp32s3 && cargo xtask size-check --target esp32s3
///   cargo xtask size-check --from build/datachannel_echo-esp32s3-lean/datachannel_echo.map
///   cargo xtask size-check --host --json size.json
///
/// Exit codes: 0 every budget holds, 1 a budget is exceeded, a budgeted component is missing
/// from the input, or lines of a map could not be read (a truncated or garbled map: each is
/// listed), 2 the input cannot be read or is damaged (file, line and reason named).
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// A saved `size-components --format json2` report or a linker map.
    #[arg(long, conflicts_with = "host")]
    pub(crate) from: Option<PathBuf>,
    /// Measure the lab's 32-bit host build instead of an ESP-IDF build.
    #[arg(long)]
    pub(crate) host: bool,
    /// Policy whose budgets hold (and, with --host, whose build is measured).
    #[arg(long, default_value = "lean")]
    pub(crate) policy: String,
    /// Chip of the ESP-IDF build to read (without --from/--host).
    #[arg(long, default_value = "esp32s3", value_parser = clap::builder::PossibleValuesParser::new(idf::TARGETS))]
    pub(crate) target: String,
    /// Example whose build to read (without --from/--host).
    #[arg(long, default_value = "datachannel_echo", value_parser = clap::builder::PossibleValuesParser::new(idf::EXAMPLES))]
    pub(crate) example: String,
    /// ESP-IDF directory (default: $IDF_PATH, else the one whose idf.py is on PATH).
    #[arg(long)]
    pub(crate) idf: Option<PathBuf>,
    /// Also write the table as JSON.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
}

/// Static sizes of one component, in bytes.

#[derive(Debug, Serialize, PartialEq)]
pub struct Line {
    pub component: String,
    pub measure: String,
    pub used: Option<u64>,
    pub budget: u64,
    /// budget - used (negative: over budget).
    pub margin: Option<i64>,
    pub verdict: String,
}

/// budget - used, clamped to i64: both are u64, and a budget or size past 2^63 (the policy allows
/// any u64) must not wrap a breach into a margin.
pub(crate) fn margin_of(budget: u64, used: u64) -> i64 {
    (i128::from(budget) - i128::from(used)).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Every budgeted (component, measure) with its verdict: `within`, `breach` or `missing`.
pub fn check(budgets: &BTreeMap<String, StaticBudget>, sizes: &BTreeMap<String, Sizes>, host: bool) -> Vec<Line> {
    let mut lines = Vec::new();
    for (component, b) in budgets {
        type Measure = fn(&Sizes) -> u64;
        let measures: [(&str, Option<u64>, Measure); 4] = if host {
            [
                ("host dram", b.host_dram_bytes, |s| s.dram_bytes),
                ("host psram", b.host_psram_bytes, |s| s.psram_bytes),
                ("host flash", b.host_flash_bytes, |s| s.flash_bytes),
                ("", None, |_| 0),
            ]
        } else {
            [
                ("dram", b.dram_bytes, |s| s.dram_bytes),
                ("psram", b.psram_bytes, |s| s.psram_bytes),
                ("iram", b.iram_bytes, |s| s.iram_bytes),
                ("flash", b.flash_bytes, |s| s.flash_bytes),
            ]
        };
        for (measure, budget, get) in measures {
            let Some(budget) = budget else { continue };
            let used = sizes.get(component).map(get);
            let verdict = match used {
                None => "missing",
                Some(u) if u > budget => "breach",
                Some(_) => "within",
            };
            lines.push(Line {
                component: component.clone(),
                measure: measure.to_string(),
                used,
                budget,
                margin: used.map(|u| margin_of(budget, u)),
                verdict: verdict.to_string(),
            });
        }
    }
    lines
}

/// Runs `idf.py size-components --format json2` on an ESP-IDF build and returns the report's
/// path (`<build>/size-components.json`). --output-file: on stdout idf.py mixes its progress
/// lines (and esp-idf-size's terminal codes, ESP_IDF_SIZE_FORCE_TERMINAL) into the JSON. Written
/// beside and renamed, so a failed run never leaves half a report where the last good one was.
pub fn size_components(idf: &idf::Idf, example_dir: &Path, build_dir: &Path) -> Result<PathBuf> {
    let sh = xshell::Shell::new()?;
    sh.set_var("IDF_PATH", &idf.path);
    // The Python the build was configured with (idf.py refuses another one).
    let idf_py = idf.idf_py.display().to_string();
    let (program, script) = match idf::idf_python() {
        Some(python) => (python.display().to_string(), vec![idf_py]),
        None => (idf_py, vec![]),
    };
    let report = build_dir.join("size-components.json");
    let partial = build_dir.join("size-components.json.partial");
    let out = xshell::cmd!(
        sh,
        "{program} {script...} -C {example_dir} -B {build_dir} size-components --format json2 --output-file {partial}"
    )
    .ignore_status()
    .output()
    .map_err(|e| exit::verdict(format!("idf.py size-components did not start: {e}")))?;
    if !out.status.success() {
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let tail: Vec<&str> = text.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(exit::verdict(format!(
            "idf.py size-components failed ({}); it said:\n{}",
            out.status,
            tail.join("\n")
        )));
    }
    std::fs::rename(&partial, &report)?;
    Ok(report)
}

/// A report in which no budgeted component is found, or in which a budgeted component reads 0
/// bytes everywhere (every linked library has code in flash), was not read as it was written:
/// a format this reader does not know, or the wrong file. Budgets "held" on such zeros would be
/// a false pass, so it is an error.
pub fn refuse_empty(
    budgets: &BTreeMap<String, StaticBudget>,
    sizes: &BTreeMap<String, Sizes>,
    source: &str,
) -> Result<()> {
    if budgets.is_empty() {
        return Ok(());
    }
    let total = |s: &Sizes| {
        s.dram_bytes.saturating_add(s.psram_bytes).saturating_add(s.iram_bytes).saturating_add(s.flash_bytes)
    };
    if !budgets.keys().any(|c| sizes.contains_key(c)) {
        return Err(exit::bad_input(format!(
            "{source}: none of the budgeted components ({}) is in it: not a size report of this stack, or one this reader cannot read",
            budgets.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    let empty: Vec<&String> = budgets.keys().filter(|c| sizes.get(*c).is_some_and(|s| total(s) == 0)).collect();
    if !empty.is_empty() {
        return Err(exit::bad_input(format!(
            "{source}: {} read as 0 bytes in every region; a linked library has at least its code in flash, so the report was not read as written (an unknown section or memory-type naming?). No verdict on zeros",
            empty.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

fn print_table(sizes: &BTreeMap<String, Sizes>, lines: &[Line], source: &str) {
    println!("static sizes ({source})");
    // dram: internal data RAM (.data + .bss left in DRAM); psram: .bss linked into external RAM.
    println!("{:<16} {:>10} {:>10} {:>10} {:>10}", "component", "dram B", "psram B", "iram B", "flash B");
    for (component, s) in sizes {
        println!(
            "{:<16} {:>10} {:>10} {:>10} {:>10}",
            component, s.dram_bytes, s.psram_bytes, s.iram_bytes, s.flash_bytes
        );
    }
    if lines.is_empty() {
        return;
    }
    println!();
    println!("static budgets");
    println!("{:<16} {:<11} {:>10} {:>10} {:>10}  verdict", "component", "measure", "used B", "budget B", "margin B");
    for l in lines {
        let used = l.used.map(|u| u.to_string()).unwrap_or_else(|| "-".into());
        let margin = l.margin.map(|m| m.to_string()).unwrap_or_else(|| "-".into());
        println!("{:<16} {:<11} {:>10} {:>10} {:>10}  {}", l.component, l.measure, used, l.budget, margin, l.verdict);
    }
}

pub fn run(args: Args) -> Outcome {
    let policy = Policy::load(&Policy::path_for(&args.policy))?;
    let mut skipped = Skipped::new();
    // The chip's linker map, when there is one: placement is checked against it too.
    let mut map = None;
    let (sizes, source) = if args.host {
        let libraries = crate::replica::component_libraries(&policy)?;
        (host_sizes(&libraries, &policy)?, format!("host build of `{}`", policy.policy.name))
    } else if let Some(from) = &args.from {
        let (sizes, lost) = read_report_lines(from)?;
        skipped = lost;
        if !std::fs::read(from).is_ok_and(|b| b.trim_ascii_start().starts_with(b"{")) {
            map = Some(from.clone());
        }
        (sizes, from.display().to_string())
    } else {
        let (sizes, report, build_map) = idf_build_sizes(&args, &policy)?;
        map = build_map;
        (sizes, report)
    };
    let lines = check(&policy.budgets.static_, &sizes, args.host);
    print_table(&sizes, &lines, &source);
    refuse_empty(&policy.budgets.static_, &sizes, &source)?;
    let placement = match &map {
        Some(path) => check_placement(&policy, path)?,
        None => Vec::new(),
    };
    if let Some(path) = &args.json {
        write_atomic(path, serde_json::to_string_pretty(&serde_json::json!({ "source": source, "policy": policy.policy.name, "sizes": sizes, "budgets": lines }))?.as_bytes())?;
    }
    final_verdict(&policy, &lines, &placement, &skipped, &source, args.host)
}

/// Sizes of the ESP-IDF build `cargo xtask build` made for --target, --example and --policy,
/// from `idf.py size-components`: the sizes, the report's path (the source named in the
/// verdicts) and the build's linker map if it has one.
fn idf_build_sizes(args: &Args, policy: &Policy) -> Result<(BTreeMap<String, Sizes>, String, Option<PathBuf>)> {
    if args.target == "linux" {
        return Err(exit::bad_input(format!(
            "size-check: the linux target has no device memory map: its build is a host program (no DRAM, IRAM or flash regions), so there are no static sizes to hold against the budgets. Build and size a chip instead (`cargo xtask build --target esp32s3`, then `cargo xtask size-check --target esp32s3`), or measure the lab's 32-bit build of the same sources with `cargo xtask size-check --host --policy {}`",
            policy.policy.name
        )));
    }
    let idf = idf::locate(
        args.idf.as_deref(),
        std::env::var("IDF_PATH").ok().as_deref(),
        std::env::var("PATH").ok().as_deref(),
    )?;
    let root = project_root();
    let build_dir = idf::build_dir(&root, &args.example, &args.target, &policy.policy.name);
    if !build_dir.join("project_description.json").is_file() {
        return Err(exit::bad_input(format!(
            "{}: no ESP-IDF build here; run `cargo xtask build --target {} --example {}` first",
            build_dir.display(),
            args.target,
            args.example
        )));
    }
    // Not while a build or configure writes the tree: idf.py would size a half-built app.
    let _lock = crate::fsutil::lock_project(&root, "size-check")?;
    let report = size_components(&idf, &root.join("examples").join(&args.example), &build_dir)?;
    let map = Some(build_dir.join(format!("{}.map", args.example))).filter(|m| m.is_file());
    Ok((read_report(&report)?, report.display().to_string(), map))
}

/// Reads the linker map at `path` and prints where it places the stack against what the
/// policy asks; returns the problems found (none: placement as asked).
fn check_placement(policy: &Policy, path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| exit::bad_input(format!("{}: cannot read: {e}", path.display())))?;
    let problems = placement_problems(policy, &text);
    println!("\nplacement ({})", path.display());
    if problems.is_empty() {
        println!("  as the policy asks: .bss, sync-object wrappers, operator new");
    }
    for p in &problems {
        println!("  {p}");
    }
    Ok(problems)
}

/// The exit: placement problems first, then budgets not held; skipped input lines deny a pass,
/// since the sizes read are then too small by what those lines held.
fn final_verdict(
    policy: &Policy,
    lines: &[Line],
    placement: &[String],
    skipped: &Skipped,
    source: &str,
    host: bool,
) -> Outcome {
    let failed: Vec<&Line> = lines.iter().filter(|l| l.verdict != "within").collect();
    if !placement.is_empty() {
        return Err(exit::verdict(format!(
            "the linker map does not place the stack as the policy `{}` asks ({} problem(s), listed above){}",
            policy.policy.name,
            placement.len(),
            if failed.is_empty() { String::new() } else { format!("; {} static budget(s) not held", failed.len()) }
        )));
    }
    if lines.is_empty() {
        eprintln!(
            "size-check: the policy `{}` sets no {}static budget",
            policy.policy.name,
            if host { "host " } else { "" }
        );
    }
    for (number, text) in skipped {
        eprintln!("size-check: {source}:{number}: skipped, its size could not be read: {text}");
    }
    if failed.is_empty() && !skipped.is_empty() {
        // The figures above are too small by what those lines held: no budget verdict on them.
        return Err(exit::verdict(format!(
            "{} line(s) of {source} skipped (listed above): the sizes are incomplete; regenerate the map with a complete build",
            skipped.len()
        )));
    }
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for l in &failed {
        match l.verdict.as_str() {
            "missing" => eprintln!("size-check: {} is budgeted ({}) but not in {source}", l.component, l.measure),
            _ => eprintln!(
                "size-check: {} {} is {} B, budget {} B",
                l.component,
                l.measure,
                l.used.unwrap_or(0),
                l.budget
            ),
        }
    }
    let also = if skipped.is_empty() {
        String::new()
    } else {
        format!("; {} line(s) of the input skipped (listed above)", skipped.len())
    };
    Err(exit::verdict(format!("{} static budget(s) not held{also}", failed.len())))
}
