//! Fixtures in lab/fixtures/size/: `size-components.json` is written in the shape esp-idf-size
//! prints for `--archives --format json2` (esp_idf_size/memorymap.py get_archives_summary;
//! example in esp_idf_size/docs/readme.md), with the seed's static figures for libdatachannel,
//! usrsctp and libjuice; `app.map` follows GNU ld's map layout as ESP-IDF builds write it.

use super::*;
use crate::policy::StaticBudget;

fn fixture(name: &str) -> PathBuf {
    project_root().join("lab/fixtures/size").join(name)
}

fn budget(dram: u64) -> StaticBudget {
    StaticBudget { dram_bytes: Some(dram), ..Default::default() }
}

#[test]
fn json2_sums_data_bss_iram_and_flash_per_component() {
    let sizes = read_report(&fixture("size-components.json")).unwrap();
    assert_eq!(sizes["libdatachannel"], Sizes { dram_bytes: 1756 + 1240, iram_bytes: 0, flash_bytes: 301234 + 108720 });
    assert_eq!(sizes["usrsctp"], Sizes { dram_bytes: 3108, iram_bytes: 0, flash_bytes: 247000 });
    assert_eq!(sizes["libjuice"].dram_bytes, 2274);
    // libmbedcrypto and libmbedtls are one component.
    assert_eq!(sizes["mbedtls"], Sizes { dram_bytes: 500, iram_bytes: 10000, flash_bytes: 120000 });
    assert!(!sizes.contains_key("esp_system"), "archives outside the stack are not reported");
}

#[test]
fn linker_map_gives_the_same_shape() {
    let sizes = read_report(&fixture("app.map")).unwrap();
    assert_eq!(sizes["libdatachannel"], Sizes { dram_bytes: 0x40 + 0x6dc + 0x4d8, iram_bytes: 0, flash_bytes: 0x1000 });
    assert_eq!(sizes["usrsctp"].dram_bytes, 0x184);
    assert_eq!(sizes["libjuice"], Sizes { dram_bytes: 0x20, iram_bytes: 0, flash_bytes: 0x100 });
    assert_eq!(sizes["mbedtls"].iram_bytes, 0x40);
}

#[test]
fn each_verdict_within_breach_and_missing() {
    let sizes = read_report(&fixture("size-components.json")).unwrap();
    let mut budgets = BTreeMap::new();
    budgets.insert("libdatachannel".to_string(), budget(3300));
    budgets.insert("usrsctp".to_string(), budget(3000));
    budgets.insert("libsrtp".to_string(), budget(2500));
    let lines = check(&budgets, &sizes, false);
    let verdict = |c: &str| lines.iter().find(|l| l.component == c).map(|l| (l.verdict.as_str(), l.margin)).unwrap();
    assert_eq!(verdict("libdatachannel"), ("within", Some(3300 - 2996)));
    assert_eq!(verdict("usrsctp"), ("breach", Some(3000 - 3108)));
    assert_eq!(verdict("libsrtp"), ("missing", None));
}

#[test]
fn unreadable_input_exits_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, says) in [
        ("bad.json", "{ \"liblibjuice.a\": ", "not JSON"),
        ("shape.json", "{ \"liblibjuice.a\": { \"size\": 3 } }", "liblibjuice.a: no `memory_types` object"),
        ("notes.txt", "hello\n", "not a GNU linker map"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let err = read_report(&path).unwrap_err();
        let f = err.downcast_ref::<exit::Failure>().unwrap();
        assert_eq!(f.code, 2);
        assert!(f.message.starts_with(&path.display().to_string()) && f.message.contains(says), "{}", f.message);
    }
}

/// CI holds the shipped lean policy's host budgets, and a lowered budget fails.
#[test]
fn host_budgets_hold_for_lean_and_a_lowered_budget_breaks() {
    std::env::set_var("ESP_DC_LAB_BUILDING", "1"); // build in this process: the test binary is not xtask
    let policy = Policy::load(&Policy::path_for("lean")).unwrap();
    let libraries = crate::lab::host::component_libraries(&policy).unwrap();
    let sizes = host_sizes(&libraries).unwrap();
    assert!(sizes["libdatachannel"].flash_bytes > 100_000, "{sizes:?}");
    let lines = check(&policy.budgets.static_, &sizes, true);
    assert!(!lines.is_empty(), "lean sets host budgets");
    assert!(lines.iter().all(|l| l.verdict == "within"), "{lines:#?}");
    let mut lowered = policy.budgets.static_.clone();
    let usrsctp = lowered.get_mut("usrsctp").unwrap();
    usrsctp.host_dram_bytes = Some(sizes["usrsctp"].dram_bytes - 1);
    let lines = check(&lowered, &sizes, true);
    let line = lines.iter().find(|l| l.component == "usrsctp" && l.measure == "host dram").unwrap();
    assert_eq!((line.verdict.as_str(), line.margin), ("breach", Some(-1)));
}
