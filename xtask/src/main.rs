//! `cargo xtask`: the project's one tool. The data path reads top to bottom:
//! policy -> configure -> component tree -> build -> measure -> budgets.

mod analyze;
mod audit;
mod bench;
mod components;
mod configure;
mod docs;
mod exit;
mod fsutil;
#[cfg(test)]
mod fuzz_tests;
mod idf;
mod interop;
mod kconfig_keys;
mod lab;
mod layout;
mod ledger;
mod policy;
mod relay;
mod render;
mod replica;
mod report;
mod size_check;
mod static_sizes;
mod upstream;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Memory-lean libdatachannel for ESP32: one declarative policy drives the ESP-IDF
/// component tree, its static budgets and a host replica that accounts for every byte.
///
/// Exit codes: 0 success, 1 a verdict failed (budget breach, drift, uncovered site),
/// 2 bad input or missing tools (the message says what to do next).
#[derive(Parser)]
#[command(name = "cargo xtask", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Lay out the ESP-IDF component tree and sdkconfig.defaults from a policy.
    Configure(configure::Args),
    // About and examples come from `idf::BuildArgs`'s doc comment.
    Build(idf::BuildArgs),
    /// Hold static RAM and flash budgets per component (idf.py size-components or host build).
    SizeCheck(size_check::Args),
    // About and examples come from `lab::Args`'s doc comment.
    Lab(lab::Args),
    // About and examples come from `analyze::Args`'s doc comment.
    Analyze(analyze::Args),
    // About and examples come from `interop::Args`'s doc comment.
    Interop(interop::Args),
    // About and examples come from `bench::Args`'s doc comment.
    Bench(bench::Args),
    /// List every allocation and thread site in the stack and whether the policy covers it.
    Audit(audit::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Configure(args) => configure::run(args),
        Command::Build(args) => idf::build(args),
        Command::SizeCheck(args) => size_check::run(args),
        Command::Lab(args) => lab::run(args),
        Command::Analyze(args) => analyze::run(args),
        Command::Interop(args) => interop::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Audit(args) => audit::run(args),
    };
    exit::report(result)
}
