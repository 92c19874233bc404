//! The esp32p4 chip build (issue 26): `datachannel_echo` compiled and linked by
//! real ESP-IDF for the ESP32-P4, then `size-check`'s budgets and the placement the policy asks
//! for, read from the chip's linker map. What it proves is compiling, linking and placement;
//! nothing here runs on a chip.
//!
//! ESP-IDF as for the linux end-to-end test; the compiler is whatever `riscv32-esp-elf-gcc` is
//! on PATH: Espressif's, or the substitute beside the clone that `scripts/setup.sh` puts there
//! (`../shared/riscv32-esp-elf`, never for flashing). Without an ESP-IDF tree with esp32p4
//! support, or without that compiler, the test says `skipped: …` by name. Builds live in
//! `$ESP_DC_CACHE/idf-esp32p4/<policy>/` (shared with `build --matrix`), idf.py's output in
//! `lab-out/idf-p4/`.

use super::e2e::{idf_for, say, stage_project};
use super::*;
use crate::{size_check, static_sizes as size};

const TEST: &str = "idf::p4::idf_p4_datachannel_echo_links_places_and_holds_its_static_budgets";

/// The policies built here. Lean only: a cold esp32p4 build takes 4-6 minutes on CI's two cores,
/// and stock's placement and budgets are held against excerpts of its real map and json2
/// (`size::tests::the_esp32p4_map_places_each_policy_as_it_asks`, `…_budgets_hold_on_…`).
/// `ESP_DC_P4_POLICIES=lean,stock` builds both; `cargo xtask build --target esp32p4 --matrix`
/// builds every example under both.
fn policies() -> Vec<String> {
    std::env::var("ESP_DC_P4_POLICIES")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.split(',').map(|p| p.trim().to_string()).collect())
        .unwrap_or_else(|| vec!["lean".to_string()])
}

/// The four generated libraries whose `.bss` a policy may place (`policy::STATIC_PLACEABLE`).
fn placeable() -> &'static [&'static str] {
    crate::policy::STATIC_PLACEABLE
}

/// Builds `datachannel_echo` for esp32p4 under `policy_name` and returns its build directory.
fn build_p4(idf: &Idf, policy_name: &str) -> (PathBuf, PathBuf) {
    let root = staged_root("esp32p4", policy_name);
    stage_project(&root).unwrap();
    let code = layout::configure_into(&root, &Policy::path_for(policy_name), false, false).unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    let logs = project_root().join("lab-out/idf-p4");
    std::fs::create_dir_all(&logs).unwrap();
    let dir = build_dir(&root, "datachannel_echo", "esp32p4", policy_name);
    let started = std::time::Instant::now();
    let log = logs.join(format!("{policy_name}-datachannel_echo-build.log"));
    if let Err(e) = build_in(idf, &root, "datachannel_echo", "esp32p4", &dir, &[], Some(&log)) {
        panic!("esp32p4 build of datachannel_echo ({policy_name}) failed: {e:#}\n(build directory {})", dir.display());
    }
    say(&format!("idf-p4: {policy_name:<5} datachannel_echo built in {:.0} s", started.elapsed().as_secs_f64()));
    (root.join("examples/datachannel_echo"), dir)
}

#[test]
fn idf_p4_datachannel_echo_links_places_and_holds_its_static_budgets() {
    let Some((idf, _heavy)) = idf_for(TEST) else { return };
    let toolchain = match toolchain_for(&idf, "esp32p4", std::env::var("PATH").ok().as_deref()) {
        Ok(t) => t,
        Err(e) => {
            say(&format!("skipped: {TEST}: no esp32p4 build possible here: {e:#}"));
            return;
        }
    };
    say(&toolchain_line(&toolchain).unwrap());
    for policy_name in &policies() {
        let policy_name = policy_name.as_str();
        let policy = Policy::load(&Policy::path_for(policy_name)).unwrap();
        let (example_dir, dir) = build_p4(&idf, policy_name);
        let map_path = dir.join("datachannel_echo.map");
        let map = std::fs::read_to_string(&map_path).unwrap();

        // size-check as the command runs it: idf.py size-components' json2 (unified keys), every
        // budget held, no component read as zeros; the map gives the same RAM figures.
        let report =
            size_check::size_components(&idf, &example_dir, &dir).unwrap_or_else(|e| panic!("{policy_name}: {e:#}"));
        let json2 = size::read_report(&report).unwrap();
        size_check::refuse_empty(&policy.budgets.static_, &json2, &report.display().to_string()).unwrap();
        let (from_map, skipped) = size::parse_map_lines(&map).unwrap();
        assert!(skipped.is_empty(), "{policy_name}: map lines not read: {skipped:?}");
        for c in placeable() {
            let (a, b) = (&json2[*c], &from_map[*c]);
            assert_eq!(
                (a.dram_bytes, a.psram_bytes, a.iram_bytes),
                (b.dram_bytes, b.psram_bytes, b.iram_bytes),
                "{policy_name} {c}: json2 and map disagree on RAM"
            );
            say(&format!(
                "idf-p4: {policy_name:<5} {c:<15} dram {:>5} B  psram {:>5} B  flash {:>7} B",
                a.dram_bytes, a.psram_bytes, a.flash_bytes
            ));
        }

        let lines = size_check::check(&policy.budgets.static_, &json2, false);
        assert!(!lines.is_empty(), "{policy_name}: no static budget for the chip");
        let failed: Vec<_> = lines.iter().filter(|l| l.verdict != "within").collect();
        assert!(failed.is_empty(), "{policy_name}: static budgets not held on esp32p4: {failed:?}");

        // Placement: lean's .bss of the four libraries in PSRAM, stock's in internal DRAM; the
        // sync-object wrappers with the real functions left to ESP-IDF's pthread; operator
        // new/delete from esp_dc_port (every policy replaces them).
        let problems = size::placement_problems(&policy, &map);
        assert!(
            problems.is_empty(),
            "{policy_name}: the esp32p4 map does not place the stack as the policy asks:\n{}",
            problems.join("\n")
        );
        for c in placeable() {
            say(&format!("idf-p4: {policy_name:<5} {c:<15} .bss in {:?}", size::bss_placement(&map, c)));
        }
    }
}
