//! Human tables, the side-by-side comparison, the SVG timeline and the dynamic budget check.

use crate::fsutil::write_atomic;
use crate::policy::Policy;
use crate::report::Report;
use anyhow::Result;
use std::path::Path;

fn kb(bytes: u64) -> String {
    format!("{:.1} KB", bytes as f64 / 1024.0)
}

pub fn print_report(r: &Report) {
    println!("== {} / {}", r.policy, r.scenario);
    let phases: Vec<String> =
        r.components.first().map(|c| c.phases.iter().map(|p| p.phase.clone()).collect()).unwrap_or_default();
    print!("{:<16}", "component");
    for p in &phases {
        print!(" {:>14}", p);
    }
    println!(" {:>12}", "peak");
    for c in &r.components {
        print!("{:<16}", c.name);
        for p in &c.phases {
            print!(" {:>14}", format!("{}/{}", p.live_bytes, p.blocks));
        }
        println!(" {:>12}", c.peak_bytes);
    }
    println!("(live bytes/blocks at each phase mark)");
    println!(
        "load {}  init {}  connected {}  handshake peak {}  peak {}  threads {}  stack high-water {}  leaked {}",
        kb(r.load_bytes),
        kb(r.init_bytes),
        kb(r.total_connected_bytes),
        kb(r.handshake_peak_bytes),
        kb(r.total_peak_bytes),
        r.threads,
        kb(r.total_stack_high_water_bytes),
        kb(r.leak_bytes)
    );
    println!("top call sites at the peak:");
    for s in r.sites.iter().take(20) {
        println!("  {:>9} B {:>6}x  {:<14} {}:{} {}", s.bytes, s.count, s.component, s.file, s.line, s.function);
    }
    if !r.connected_sites.is_empty() {
        println!("top call sites when connected:");
        for s in r.connected_sites.iter().take(15) {
            println!("  {:>9} B {:>6}x  {:<14} {}:{} {}", s.bytes, s.count, s.component, s.file, s.line, s.function);
        }
    }
    println!("threads:");
    for t in &r.thread_list {
        println!(
            "  {:<14} requested {:>7} B  high-water {:>7} B  {:>6} ms  {}",
            t.component, t.requested_bytes, t.high_water_bytes, t.lifetime_ms, t.created_at
        );
    }
    println!("ESP32 projection: internal {}  PSRAM {}", kb(r.projection.internal_bytes), kb(r.projection.psram_bytes));
    for l in &r.projection.lines {
        println!("  {:>9} int {:>9} psram  {}  [{}]", l.internal_bytes, l.psram_bytes, l.what, l.source);
    }
    if !r.sync_owners.is_empty() {
        println!(
            "locks at that mark by owner (mutexes, condition variables; component using them, owner's allocation):"
        );
        for o in &r.sync_owners {
            println!("  {:>3} {:>3}  {:<14} {}", o.mutexes, o.condvars, o.component, o.owner);
        }
    }
    print_cycle(r);
    if !r.leaks.is_empty() {
        println!("still held at the end:");
        for s in r.leaks.iter().take(10) {
            println!("  {:>9} B {:>6}x  {:<14} {}:{} {}", s.bytes, s.count, s.component, s.file, s.line, s.function);
        }
    }
    println!();
}

/// `cycle`: the time-wait line with its bound, the per-cycle figure without it, and every site
/// whose bytes at the quiet `closed` marks moved.
fn print_cycle(r: &Report) {
    if let Some(tw) = &r.time_wait {
        println!(
            "usrsctp verification tags in time-wait (sctp_add_vtag_to_timewait, bounded, expire after 60 s): {}",
            tw.summary()
        );
    }
    if let Some(d) = &r.dtls_timers {
        println!(
            "closed DTLS transports held by a pending retransmission timer (bounded, expire when it fires): {} \
             transports + {} timer tasks, {} B at the last closed mark; at most {} transports, {} tasks, {} B; \
             bound {} tasks{}{}",
            d.transports,
            d.tasks,
            d.bytes,
            d.most_transports,
            d.most_tasks,
            d.most_bytes,
            d.bound_tasks,
            if d.most_unexplained_transports > 0 {
                format!(", {} transports at a mark held by no timer (counted)", d.most_unexplained_transports)
            } else {
                String::new()
            },
            d.over_bound_at.as_ref().map(|at| format!(", OVER THE BOUND at {at}")).unwrap_or_default()
        );
    }
    if let Some(per_cycle) = r.leak_bytes_per_cycle {
        println!(
            "held per cycle (median slope of the closed marks from the second, without the two lines above): \
             {per_cycle} B"
        );
    }
    if !r.cycle_sites.is_empty() {
        println!("sites that moved at the closed marks (second mark -> last, median slope):");
        for c in r.cycle_sites.iter().take(15) {
            println!(
                "  {:>7} -> {:>7} B {:>5}x {:>+9.2} B/cycle  {:<14} {}:{} {}{}",
                c.first_bytes,
                c.last_bytes,
                c.last_blocks,
                c.slope_bytes_per_cycle,
                c.component,
                c.file,
                c.line,
                c.function,
                if c.expiring.is_empty() { String::new() } else { format!("  [{}]", c.expiring) }
            );
        }
    }
}

/// One table per scenario: one row per measure, one column per policy (stock first).
pub struct Table {
    pub scenario: String,
    pub policies: Vec<String>,
    pub rows: Vec<(String, Vec<Option<u64>>)>,
}

pub fn side_by_side(reports: &[Report]) -> Vec<Table> {
    let mut scenarios: Vec<&str> = Vec::new();
    for r in reports {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    let mut policies: Vec<&str> = reports.iter().map(|r| r.policy.as_str()).collect();
    policies.sort();
    policies.dedup();
    policies.sort_by_key(|p| stock_first(p));
    let mut tables = Vec::new();
    for scenario in scenarios {
        let cols: Vec<&Report> =
            policies.iter().filter_map(|p| reports.iter().find(|r| r.scenario == scenario && r.policy == *p)).collect();
        let mut rows: Vec<(String, Vec<Option<u64>>)> = Vec::new();
        let mut row = |label: &str, f: &dyn Fn(&Report) -> Option<u64>| {
            rows.push((label.to_string(), cols.iter().map(|r| f(r)).collect()))
        };
        row("held at load (static constructors) B", &|r| Some(r.load_bytes));
        row("first PeerConnection (init) B", &|r| Some(r.init_bytes));
        row("connected B", &|r| Some(r.total_connected_bytes));
        if scenario != "video" {
            row("handshake peak B", &|r| Some(r.handshake_peak_bytes));
        }
        row("peak B", &|r| Some(r.total_peak_bytes));
        if matches!(scenario, "video" | "camera") {
            row("streaming, live after the stream B", &|r| r.streaming_bytes);
            row("streaming, peak (frame in flight) B", &|r| r.streaming_peak_bytes);
        }
        let mut seen = std::collections::BTreeSet::new();
        for name in cols.iter().flat_map(|r| r.components.iter().map(|c| c.name.clone())) {
            if seen.insert(name.clone()) {
                row(&format!("  {name} connected B"), &|r| {
                    r.components.iter().find(|c| c.name == name).map(|c| c.connected_bytes)
                });
            }
        }
        row("threads alive at once", &|r| Some(r.threads));
        row("threads created", &|r| Some(r.threads_created));
        row("stack high-water, threads alive at once B", &|r| Some(r.total_stack_high_water_bytes));
        row("threads whose stack is too small", &|r| {
            Some(r.thread_list.iter().filter(|t| t.high_water_bytes > t.requested_bytes).count() as u64)
        });
        row("still held after cleanup B", &|r| Some(r.leak_bytes));
        if scenario == "cycle" {
            row("held per connect/disconnect cycle B", &|r| r.leak_bytes_per_cycle);
            row("  of it still held after cleanup B", &|r| r.leak_bytes_per_cycle_after_cleanup);
            row("usrsctp vtag time-wait at the last closed mark B", &|r| r.time_wait.as_ref().map(|t| t.bytes));
            row("usrsctp vtag time-wait blocks (bound)", &|r| r.time_wait.as_ref().map(|t| t.bound_blocks));
            row("closed DTLS transports held by a timer, most B", &|r| r.dtls_timers.as_ref().map(|d| d.most_bytes));
        }
        if scenario == "scale" {
            row("bytes per extra connection", &|r| r.bytes_per_extra_connection);
        }
        row("ESP32 internal RAM (projected) B", &|r| Some(r.projection.internal_bytes));
        row("ESP32 PSRAM (projected) B", &|r| Some(r.projection.psram_bytes));
        row("ESP32 internal RAM, static data (host libraries) B", &|r| r.static_internal_bytes);
        if cols.iter().any(|r| r.static_internal_chip_bytes.is_some()) {
            row("ESP32 internal RAM, static data (esp32p4 map) B", &|r| r.static_internal_chip_bytes);
        }
        tables.push(Table {
            scenario: scenario.to_string(),
            policies: cols.iter().map(|r| r.policy.clone()).collect(),
            rows,
        });
    }
    tables
}

fn cell(v: &Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

pub fn print_side_by_side(reports: &[Report]) {
    for t in side_by_side(reports) {
        println!("== {}", t.scenario);
        print!("{:<44}", "measure");
        for p in &t.policies {
            print!(" {p:>12}");
        }
        println!();
        for (label, values) in &t.rows {
            print!("{label:<44}");
            for v in values {
                print!(" {:>12}", cell(v));
            }
            println!();
        }
        println!();
    }
}

/// The same tables in Markdown, for docs/lab.md (`--markdown`, `--update-docs`).
pub fn markdown_side_by_side(reports: &[Report]) -> String {
    let mut md = String::new();
    for t in side_by_side(reports) {
        md.push_str(&format!(
            "\n**{}**\n\n| measure | {} |\n|---|{}\n",
            t.scenario,
            t.policies.join(" | "),
            "---:|".repeat(t.policies.len())
        ));
        for (label, values) in &t.rows {
            let label =
                if label.starts_with("  ") { format!("&nbsp;&nbsp;{}", label.trim_start()) } else { label.clone() };
            md.push_str(&format!("| {} | {} |\n", label, values.iter().map(cell).collect::<Vec<_>>().join(" | ")));
        }
    }
    md
}

type Measure = fn(&Report) -> Option<u64>;

/// The lean-policy targets (issues 5 and 9; init, connected, handshake peak and internal RAM per
/// connection from issue 30): label, scenario, measure, target.
const TARGETS: &[(&str, &str, Measure, u64)] = &[
    ("first PeerConnection (global init) B", "datachannel", |r| Some(r.init_bytes), 4 * 1024),
    ("one data-channel connection, connected B", "datachannel", |r| Some(r.total_connected_bytes), 32 * 1024),
    ("peak during the handshake B", "datachannel", |r| Some(r.handshake_peak_bytes), 40 * 1024),
    ("video 1 Mbit/s, live after 10 s B", "video", |r| r.streaming_bytes, 96 * 1024),
    ("camera (H.264 + Opus + channel), live while streaming B", "camera", |r| r.streaming_bytes, 64 * 1024),
    ("threads (data channel)", "datachannel", |r| Some(r.threads), 1),
    ("threads (video)", "video", |r| Some(r.threads), 1),
    ("bytes held per connect/disconnect cycle", "cycle", |r| r.leak_bytes_per_cycle, 0),
    ("projected internal RAM per connection B", "datachannel", |r| Some(r.projection.internal_bytes), 1024),
    (
        "projected internal RAM, static + init + one connection B",
        "datachannel",
        // The chip's linker map when an esp32p4 build is at hand, else the host proxy.
        |r| r.static_internal_chip_bytes.or(r.static_internal_bytes).map(|s| s + r.projection.internal_bytes),
        8 * 1024,
    ),
    ("stack high-water sum (data channel) B", "datachannel", |r| Some(r.total_stack_high_water_bytes), 16 * 1024),
    ("stack high-water sum (video) B", "video", |r| Some(r.total_stack_high_water_bytes), 16 * 1024),
];

/// Stock, the policy under test and the target, per target measure, as Markdown.
pub fn targets_markdown(reports: &[Report], policy: &str) -> String {
    let mut md = format!("| measure | stock | {policy} | target | met |\n|---|---:|---:|---:|:-:|\n");
    for (label, scenario, measure, target) in TARGETS {
        let value = |p: &str| reports.iter().find(|r| r.policy == p && r.scenario == *scenario).and_then(measure);
        let lean = value(policy);
        let met = match lean {
            Some(v) if v <= *target => "yes",
            Some(_) => "**no**",
            None => "-",
        };
        md.push_str(&format!("| {label} | {} | {} | {target} | {met} |\n", cell(&value("stock")), cell(&lean)));
    }
    md
}

/// README's headline: what one data-channel connection costs under each policy (the datachannel
/// scenario), so the entry page's figures are the lab's, rewritten with the other tables.
pub fn headline_markdown(reports: &[Report]) -> String {
    let mut md = String::from(
        "| | internal RAM per data-channel connection | all the stack holds, connected (PSRAM too) | internal RAM, static + init + one connection |\n| --- | ---: | ---: | ---: |\n| the brief's hand port, on its console (403 KB free before, 156 KB after) | ~247 KB | | |\n",
    );
    for r in side_by_side_order(reports).into_iter().filter(|r| r.scenario == "datachannel") {
        let name = if r.policy == "stock" {
            "`stock` policy (upstream's settings)".to_string()
        } else {
            format!("`{}` policy", r.policy)
        };
        let per_connection = r.projection.internal_bytes;
        let per_connection =
            if r.policy == "stock" { format!("{per_connection} B") } else { format!("**{per_connection} B**") };
        let whole = match (r.static_internal_bytes, r.static_internal_chip_bytes) {
            (Some(host), Some(chip)) if r.policy != "stock" => format!(
                "{} B ({} B on the esp32p4's map)",
                host + r.projection.internal_bytes,
                chip + r.projection.internal_bytes
            ),
            (Some(host), _) => format!("{} B", host + r.projection.internal_bytes),
            (None, _) => "-".into(),
        };
        md.push_str(&format!("| {name} | {per_connection} | {} B | {whole} |\n", r.total_connected_bytes));
    }
    md
}

/// Every thread of each policy's `scenario` run: who created it, what it gets, what it uses.
pub fn threads_markdown(reports: &[Report], scenario: &str) -> String {
    let mut md = String::from("| policy | component | created at | stack it gets B | high-water B | lifetime ms |\n|---|---|---|---:|---:|---:|\n");
    for r in side_by_side_order(reports).into_iter().filter(|r| r.scenario == scenario) {
        for t in &r.thread_list {
            let short = if t.high_water_bytes > t.requested_bytes { " **(too small)**" } else { "" };
            md.push_str(&format!(
                "| {} | {} | `{}` | {}{short} | {} | {} |\n",
                r.policy, t.component, t.created_at, t.requested_bytes, t.high_water_bytes, t.lifetime_ms
            ));
        }
        md.push_str(&format!(
            "| {} | **sum, threads alive at once** | | | **{}** | |\n",
            r.policy, r.total_stack_high_water_bytes
        ));
    }
    md
}

fn side_by_side_order(reports: &[Report]) -> Vec<&Report> {
    let mut v: Vec<&Report> = reports.iter().collect();
    v.sort_by_key(|r| stock_first(&r.policy));
    v
}

/// Sort key: stock, the reference, before the policies measured against it.
fn stock_first(policy: &str) -> u8 {
    u8::from(policy != "stock")
}

/// A stacked area chart of live bytes by component over time, with the phase marks.
pub fn write_svg(r: &Report, path: &Path) -> Result<()> {
    const W: f64 = 900.0;
    const H: f64 = 360.0;
    const COLORS: &[&str] =
        &["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
    let t_max = r.timeline.last().map(|(t, _)| *t).unwrap_or(1).max(1) as f64;
    let counted: Vec<usize> = r
        .timeline_components
        .iter()
        .enumerate()
        .filter(|(_, n)| !matches!(n.as_str(), "app" | "runtime" | "libstdc++"))
        .map(|(i, _)| i)
        .collect();
    let y_max =
        r.timeline.iter().map(|(_, v)| counted.iter().map(|i| v[*i]).sum::<u64>()).max().unwrap_or(1).max(1) as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n<text x=\"10\" y=\"16\">{} / {}: live bytes by component (peak {:.1} KB)</text>\n",
        W + 160.0,
        H + 40.0,
        r.policy,
        r.scenario,
        y_max / 1024.0
    );
    let x = |t: u64| 40.0 + (t as f64 / t_max) * W;
    let y = |b: u64| 20.0 + H - (b as f64 / y_max) * H;
    let mut lower = vec![0u64; r.timeline.len()];
    for (k, ci) in counted.iter().enumerate() {
        let upper: Vec<u64> = r.timeline.iter().zip(&lower).map(|((_, v), lo)| lo + v[*ci]).collect();
        if upper.iter().zip(&lower).all(|(u, l)| u == l) {
            continue;
        }
        let mut points: Vec<String> =
            r.timeline.iter().zip(&upper).map(|((t, _), u)| format!("{:.1},{:.1}", x(*t), y(*u))).collect();
        points.extend(r.timeline.iter().zip(&lower).rev().map(|((t, _), l)| format!("{:.1},{:.1}", x(*t), y(*l))));
        let color = COLORS[k % COLORS.len()];
        svg.push_str(&format!("<polygon fill=\"{color}\" opacity=\"0.85\" points=\"{}\"/>\n", points.join(" ")));
        svg.push_str(&format!(
            "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            W + 50.0,
            30.0 + 16.0 * k as f64,
            W + 64.0,
            39.0 + 16.0 * k as f64,
            r.timeline_components[*ci]
        ));
        lower = upper;
    }
    for c in r.components.iter().take(1) {
        let _ = c;
    }
    svg.push_str(&format!(
        "<line x1=\"40\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n</svg>\n",
        20.0 + H,
        40.0 + W,
        20.0 + H
    ));
    write_atomic(path, svg.as_bytes())?;
    Ok(())
}

/// Every dynamic budget of each report's policy that the report exceeds, naming component and phase.
pub fn check_budgets(policies: &[Policy], reports: &[Report]) -> Vec<String> {
    let mut breaches = Vec::new();
    for r in reports {
        let Some(policy) = policies.iter().find(|p| p.policy.name == r.policy) else { continue };
        breaches.extend(dynamic_budget_breaches(policy, r));
        breaches.extend(super::viewers::check(policy, r));
        breaches.extend(bound_breaches(r));
        breaches.extend(thread_stack_breaches(policy, r));
    }
    breaches
}

/// The report's figures over the policy's `[budgets.dynamic]`, each for the scenario that
/// measures it.
fn dynamic_budget_breaches(policy: &Policy, r: &Report) -> Vec<String> {
    let mut breaches = Vec::new();
    let b = &policy.budgets.dynamic;
    let mut check = |what: &str, phase: &str, value: Option<u64>, budget: Option<u64>| {
        if let (Some(v), Some(limit)) = (value, budget) {
            if v > limit {
                breaches.push(format!(
                    "{} / {}: {what} at phase `{phase}` is {v} B, budget {limit} B",
                    r.policy, r.scenario
                ));
            }
        }
    };
    let dc = r.scenario == "datachannel";
    check("first PeerConnection (stack total, over start)", "pc-created", dc.then_some(r.init_bytes), b.init_bytes);
    check("connected (stack total)", "connected", dc.then_some(r.total_connected_bytes), b.connected_bytes);
    check("handshake peak (stack total)", "pc-created..connected", dc.then_some(r.handshake_peak_bytes), b.peak_bytes);
    let (video, camera) = (r.scenario == "video", r.scenario == "camera");
    check(
        "live after streaming (stack total)",
        "streaming",
        video.then_some(r.streaming_bytes).flatten(),
        b.video_steady_bytes,
    );
    check("connected (stack total)", "connected", camera.then_some(r.total_connected_bytes), b.camera_connected_bytes);
    check(
        "live after streaming (stack total)",
        "streaming",
        camera.then_some(r.streaming_bytes).flatten(),
        b.camera_steady_bytes,
    );
    check("threads", "whole scenario", Some(r.threads), b.threads);
    check("held per cycle", "cycle-N-closed", r.leak_bytes_per_cycle, b.leak_bytes_per_cycle);
    check("held per cycle after cleanup", "cleaned-up", r.leak_bytes_per_cycle_after_cleanup, b.leak_bytes_per_cycle);
    check(
        "projected internal RAM",
        "connected",
        dc.then_some(r.projection.internal_bytes),
        b.internal_bytes_per_connection,
    );
    check("stack high-water sum", "whole scenario", Some(r.total_stack_high_water_bytes), b.stack_high_water_bytes);
    for (name, cb) in &b.components {
        if let Some(c) = r.components.iter().find(|c| &c.name == name) {
            check(&format!("{name} connected"), "connected", dc.then_some(c.connected_bytes), cb.connected_bytes);
            check(&format!("{name} peak"), "whole scenario", dc.then_some(c.peak_bytes), cb.peak_bytes);
        }
    }
    breaches
}

/// What the per-cycle figure leaves out (usrsctp's time-wait, DTLS timer tasks) over its bound.
fn bound_breaches(r: &Report) -> Vec<String> {
    let mut breaches = Vec::new();
    if let Some(at) = r.time_wait.as_ref().and_then(|t| t.over_bound_at.as_ref()) {
        breaches.push(format!(
            "{} / {}: usrsctp's verification-tag time-wait exceeds its bound at {at}",
            r.policy, r.scenario
        ));
    }
    if let Some(at) = r.dtls_timers.as_ref().and_then(|d| d.over_bound_at.as_ref()) {
        breaches
            .push(format!("{} / {}: DTLS retransmission timer tasks exceed their bound at {at}", r.policy, r.scenario));
    }
    breaches
}

fn thread_stack_breaches(policy: &Policy, r: &Report) -> Vec<String> {
    let mut breaches = Vec::new();
    let b = &policy.budgets.dynamic;
    // Each thread's stack must hold its measured high-water mark plus the policy's margin;
    // held where the policy budgets stacks (stock does not: the table shows its shortfall).
    let margin = u64::from(policy.pthread.stack_margin_percent);
    for t in r.thread_list.iter().filter(|_| b.stack_high_water_bytes.is_some()) {
        let needed = t.high_water_bytes + t.high_water_bytes * margin / 100;
        if needed > t.requested_bytes {
            breaches.push(format!(
                "{} / {}: {} thread from {} has a {} B stack but uses {} B ({} B with the policy's {}% margin)",
                r.policy, r.scenario, t.component, t.created_at, t.requested_bytes, t.high_water_bytes, needed, margin
            ));
        }
    }
    breaches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(policy: &str, scenario: &str, init: u64, connected: u64) -> Report {
        Report {
            policy: policy.into(),
            scenario: scenario.into(),
            init_bytes: init,
            total_connected_bytes: connected,
            ..Default::default()
        }
    }

    #[test]
    fn targets_table_says_which_target_is_met() {
        let reports = [report("stock", "datachannel", 80_000, 250_000), report("lean", "datachannel", 4096, 32_769)];
        let md = targets_markdown(&reports, "lean");
        // Issue 30's targets: init 4 KiB, connected 32 KiB.
        assert!(md.contains("| first PeerConnection (global init) B | 80000 | 4096 | 4096 | yes |"), "{md}");
        assert!(md.contains("| one data-channel connection, connected B | 250000 | 32769 | 32768 | **no** |"), "{md}");
        for (label, target) in
            [("peak during the handshake B", 40960), ("projected internal RAM per connection B", 1024)]
        {
            let row = md.lines().find(|l| l.starts_with(&format!("| {label} |"))).unwrap_or_else(|| panic!("{md}"));
            assert!(row.contains(&format!("| {target} |")), "{row}");
        }
        assert!(md.contains("| video 1 Mbit/s, live after 10 s B | - | - | 98304 | - |"), "{md}");
        // Issue 30's one thread, 16 KiB of stacks and the camera in 64 KiB.
        assert!(md.contains("| threads (data channel) | 0 | 0 | 1 | yes |"), "{md}");
        assert!(md.contains("| stack high-water sum (data channel) B | 0 | 0 | 16384 | yes |"), "{md}");
        assert!(md.contains("| camera (H.264 + Opus + channel), live while streaming B | - | - | 65536 | - |"), "{md}");
    }

    #[test]
    fn headline_shows_each_policys_connection_and_the_chip_figure_when_there_is_one() {
        let mut lean = report("lean", "datachannel", 4096, 34_000);
        lean.projection.internal_bytes = 700;
        lean.static_internal_bytes = Some(3000);
        lean.static_internal_chip_bytes = Some(1400);
        let mut stock = report("stock", "datachannel", 80_000, 240_000);
        stock.projection.internal_bytes = 70_000;
        stock.static_internal_bytes = Some(12_000);
        let md = headline_markdown(&[lean, stock, report("lean", "video", 1, 2)]);
        let rows: Vec<&str> = md.lines().skip(3).collect();
        assert_eq!(
            rows,
            [
                "| `stock` policy (upstream's settings) | 70000 B | 240000 B | 82000 B |",
                "| `lean` policy | **700 B** | 34000 B | 3700 B (2100 B on the esp32p4's map) |",
            ],
            "{md}"
        );
    }

    #[test]
    fn side_by_side_puts_stock_first_and_one_row_per_component() {
        let mut lean = report("lean", "datachannel", 1, 2);
        lean.components.push(crate::report::ComponentReport {
            name: "usrsctp".into(),
            connected_bytes: 7,
            ..Default::default()
        });
        let stock = report("stock", "datachannel", 3, 4);
        let tables = side_by_side(&[lean, stock]);
        assert_eq!(tables[0].policies, ["stock", "lean"]);
        let row = tables[0].rows.iter().find(|(l, _)| l.trim() == "usrsctp connected B").unwrap();
        assert_eq!(row.1, [None, Some(7)]);
        let md = markdown_side_by_side(&[report("stock", "video", 3, 4)]);
        assert!(md.contains("| connected B | 4 |"), "{md}");
    }
}
