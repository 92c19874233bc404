//! Fixtures in lab/fixtures/size/: `size-components.json` is written in the shape esp-idf-size
//! prints for `--archives --format json2` (esp_idf_size/memorymap.py get_archives_summary;
//! example in esp_idf_size/docs/readme.md), with the seed's static figures for libdatachannel,
//! usrsctp and libjuice; `app.map` follows GNU ld's map layout as ESP-IDF builds write it.

use super::*;
use crate::policy::StaticBudget;
use crate::size_check::*;

fn fixture(name: &str) -> PathBuf {
    project_root().join("lab/fixtures/size").join(name)
}

fn budget(dram: u64) -> StaticBudget {
    StaticBudget { dram_bytes: Some(dram), ..Default::default() }
}

#[test]
fn json2_sums_data_bss_iram_and_flash_per_component() {
    let sizes = read_report(&fixture("size-components.json")).unwrap();
    assert_eq!(
        sizes["libdatachannel"],
        Sizes { dram_bytes: 1756 + 1240, iram_bytes: 0, flash_bytes: 301234 + 108720, psram_bytes: 0 }
    );
    assert_eq!(sizes["usrsctp"], Sizes { dram_bytes: 3108, iram_bytes: 0, flash_bytes: 247000, psram_bytes: 0 });
    assert_eq!(sizes["libjuice"].dram_bytes, 2274);
    // libmbedcrypto and libmbedtls are one component.
    assert_eq!(sizes["mbedtls"], Sizes { dram_bytes: 500, iram_bytes: 10000, flash_bytes: 120000, psram_bytes: 0 });
    assert!(!sizes.contains_key("esp_system"), "archives outside the stack are not reported");
}

#[test]
fn linker_map_gives_the_same_shape() {
    let sizes = read_report(&fixture("app.map")).unwrap();
    assert_eq!(
        sizes["libdatachannel"],
        Sizes { dram_bytes: 0x40 + 0x6dc + 0x4d8, iram_bytes: 0, flash_bytes: 0x1000, psram_bytes: 0 }
    );
    assert_eq!(sizes["usrsctp"].dram_bytes, 0x184);
    assert_eq!(sizes["libjuice"], Sizes { dram_bytes: 0x20, iram_bytes: 0, flash_bytes: 0x100, psram_bytes: 0 });
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
    let policy = Policy::load(&Policy::path_for("lean")).unwrap();
    let libraries = crate::replica::component_libraries(&policy).unwrap();
    let sizes = host_sizes(&libraries, &policy).unwrap();
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

/// `static_placement = "psram"` links a library's .bss into `.ext_ram.bss`: that is PSRAM, not
/// DRAM, and has budgets of its own; the host build counts the same split from the policy.
#[test]
fn external_ram_bss_is_psram_on_the_device_and_on_the_host() {
    let map = "Linker script and memory map\n\n.dram0.bss      0x3fc888a0       0x20\n .bss.x         0x3fc888a0       0x20 esp-idf/libsrtp/liblibsrtp.a(srtp.c.obj)\n.ext_ram.bss    0x3c000000      0x400\n .bss.bit_string\n                0x3c000000      0x401 esp-idf/libsrtp/liblibsrtp.a(datatypes.c.obj)\n";
    let sizes = parse_map(map).unwrap();
    assert_eq!(sizes["libsrtp"], Sizes { dram_bytes: 0x20, psram_bytes: 0x401, ..Default::default() });
    let budgets: BTreeMap<String, StaticBudget> = [(
        "libsrtp".to_string(),
        StaticBudget { dram_bytes: Some(0x20), psram_bytes: Some(0x400), ..Default::default() },
    )]
    .into();
    let lines = check(&budgets, &sizes, false);
    let psram = lines.iter().find(|l| l.measure == "psram").unwrap();
    assert_eq!((psram.verdict.as_str(), psram.margin), ("breach", Some(-1)));

    let lean = Policy::load(&Policy::path_for("lean")).unwrap();
    let libraries = crate::replica::component_libraries(&lean).unwrap();
    let mut internal = lean.clone();
    for c in internal.components.values_mut() {
        c.static_placement = crate::policy::StaticPlacement::Internal;
    }
    let moved = host_sizes(&libraries, &lean).unwrap();
    let kept = host_sizes(&libraries, &internal).unwrap();
    for c in crate::policy::STATIC_PLACEABLE {
        assert_eq!(kept[*c].psram_bytes, 0);
        assert!(moved[*c].psram_bytes > 0, "{c} has .bss on the host");
        assert_eq!(moved[*c].dram_bytes + moved[*c].psram_bytes, kept[*c].dram_bytes, "{c}: the split adds up");
    }
}

/// A linux-target build is a host program: its map has no ESP32 memory regions, which must be
/// said plainly rather than reported as every budget "missing".
#[test]
fn a_linux_target_map_is_refused_as_having_no_device_memory() {
    let linux_map = "Memory Configuration\n\nLinker script and memory map\n\n.text           0x0000000000401000    0x9a2f1\n .text          0x0000000000401000     0x1234 esp-idf/libdatachannel/liblibdatachannel.a(peerconnection.cpp.o)\n.data           0x00000000004a0000      0x400\n .data          0x00000000004a0000       0x40 esp-idf/libjuice/liblibjuice.a(agent.c.o)\n.bss            0x00000000004a0400      0x900\n";
    let err = parse_map(linux_map).unwrap_err();
    assert!(err.contains("no device memory map") && err.contains("--host"), "{err}");
    // The chip map beside it still reads.
    assert!(read_report(&fixture("app.map")).is_ok());
}

#[test]
fn size_check_for_the_linux_target_exits_2_and_says_why() {
    let args = Args {
        from: None,
        host: false,
        policy: "lean".into(),
        target: "linux".into(),
        example: "datachannel_echo".into(),
        idf: None,
        json: None,
    };
    let err = run(args).unwrap_err();
    let failure = err.downcast_ref::<crate::exit::Failure>().expect("an exit code");
    assert_eq!(failure.code, 2);
    assert!(failure.message.contains("the linux target has no device memory map"), "{}", failure.message);
}

/// Issue 18: a section size at or past 2^63 panicked in the margin's subtraction, and two
/// `0xffffffffffffffff` map lines in the sum. Both are damaged reports: exit 2 naming where.
#[test]
fn sizes_past_a_chips_address_space_are_refused_naming_where() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("big.json");
    std::fs::write(&json, r#"{ "liblibjuice.a": { "memory_types": { "DRAM": { "sections": { ".dram0.bss": { "size": 9223372036854775808 } } } } } }"#).unwrap();
    let map = dir.path().join("big.map");
    let text = std::fs::read_to_string(fixture("app.map")).unwrap();
    let text = text
        .replace("0x3fc888a0      0x4d8 esp-idf", "0x3fc888a0      0xffffffffffffffff esp-idf")
        .replace("0x3fc88d78       0x20", "0x3fc88d78       0xffffffffffffffff");
    let line = 1 + text.lines().position(|l| l.contains("0xffffffffffffffff")).unwrap();
    std::fs::write(&map, text).unwrap();
    for (path, says) in [
        (&json, "liblibjuice.a: DRAM: .dram0.bss: size 9223372036854775808".to_string()),
        (&map, format!("line {line}: ")),
    ] {
        let err = read_report(path).unwrap_err();
        let f = err.downcast_ref::<exit::Failure>().unwrap();
        assert_eq!(f.code, 2);
        assert!(f.message.contains(&says) && f.message.contains("damaged"), "{}", f.message);
    }
    // The sum itself is checked too, should 32-bit sizes ever add past u64.
    let mut total = u64::MAX - 1;
    assert!(add_size(&mut total, 2, || "here".into()).unwrap_err().contains("here"));
}

/// The margin of any u64 budget against any u64 size is a clamped i64, never a panic or a wrap.
#[test]
fn margins_of_extreme_figures_clamp() {
    assert_eq!(margin_of(3000, 1 << 63), 3000 + i64::MIN);
    assert_eq!(margin_of(u64::MAX, 0), i64::MAX);
    assert_eq!(margin_of(0, u64::MAX), i64::MIN);
    assert_eq!(margin_of(10, 11), -1);
    let mut sizes = BTreeMap::new();
    sizes.insert("libjuice".to_string(), Sizes { dram_bytes: u64::MAX, ..Default::default() });
    let mut budgets = BTreeMap::new();
    budgets.insert("libjuice".to_string(), budget(2500));
    let lines = check(&budgets, &sizes, false);
    assert_eq!((lines[0].verdict.as_str(), lines[0].margin), ("breach", Some(i64::MIN)));
}

/// Issue 18: a map cut after a wrapped section name exited 0 with smaller figures. The lost
/// line is named; garbled section lines too; CR-only maps read like LF ones.
#[test]
fn a_truncated_or_garbled_map_names_the_lines_it_skips() {
    let text = std::fs::read_to_string(fixture("app.map")).unwrap();
    let (whole, none) = parse_map_lines(&text).unwrap();
    assert!(none.is_empty(), "{none:?}");
    let cut = &text[..text.find(" .data.sctp_defaults").unwrap() + " .data.sctp_defaults\n".len()];
    let (sizes, skipped) = parse_map_lines(cut).unwrap();
    let line = cut.lines().count();
    assert_eq!(skipped, vec![(line, ".data.sctp_defaults".to_string())]);
    assert!(!sizes.contains_key("usrsctp"));
    let garbled = text.replace("0x3fc88040      0x6dc esp-idf", "I (123) wifi: 0x6dc esp-idf");
    let (_, skipped) = parse_map_lines(&garbled).unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].1.starts_with(".data          I (123)"), "{skipped:?}");
    // A wrapped name followed by something else than its address line.
    let broken = text.replacen("                0x3fc8871c      0x184", "I (99) other task", 1);
    assert_eq!(parse_map_lines(&broken).unwrap().1.len(), 1);
    for endings in [text.replace('\n', "\r"), text.replace('\n', "\r\n")] {
        let (sizes, skipped) = parse_map_lines(&endings).unwrap();
        assert_eq!((sizes, skipped.len()), (whole.clone(), 0));
    }
}

/// Issue 18: duplicate JSON keys let a breaching entry vanish (serde_json keeps the last).
#[test]
fn duplicate_json_keys_are_refused() {
    let text = r#"{ "liblibjuice.a": { "memory_types": { "DRAM": { "sections": { ".dram0.bss": { "size": 999999 } } } } },
  "liblibjuice.a": { "memory_types": { "DRAM": { "sections": { ".dram0.bss": { "size": 1 } } } } } }"#;
    let err = parse_json2(text).unwrap_err();
    assert!(err.contains("key `liblibjuice.a` appears twice") && err.contains("line 2"), "{err}");
    let inner = r#"{ "liblibjuice.a": { "memory_types": { "DRAM": { "sections": { ".dram0.bss": { "size": 9 }, ".dram0.bss": { "size": 1 } } } } } }"#;
    assert!(parse_json2(inner).unwrap_err().contains("key `.dram0.bss` appears twice"));
    assert!(read_report(&fixture("size-components.json")).is_ok());
}

/// ESP-IDF 5.5's `idf.py size-components --format json2` runs esp-idf-size with `--unify`: the
/// sections are `.bss`/`.data`/`.text`, and only the memory type says where they are. The
/// fixture is the real report of lean's datachannel_echo for esp32p4 (trimmed to the stack and
/// one ESP-IDF archive), whose map gives the same RAM figures.
#[test]
fn esp_idf_5_5_unified_json2_reads_by_memory_type() {
    let sizes = read_report(&fixture("esp32p4-lean-size-components.json")).unwrap();
    assert_eq!(
        sizes["libdatachannel"],
        Sizes { dram_bytes: 536, psram_bytes: 1065, iram_bytes: 0, flash_bytes: 335854 + 142286 + 137216 + 116 + 32 }
    );
    assert_eq!(
        sizes["usrsctp"],
        Sizes { dram_bytes: 100, psram_bytes: 1408, iram_bytes: 0, flash_bytes: 240964 + 20121 }
    );
    assert_eq!(sizes["libjuice"].psram_bytes, 1045);
    assert_eq!(sizes["libsrtp"].psram_bytes, 1093);
    // mbedTLS's three archives are one component; its 86 B of DIRAM .text is IRAM code.
    assert_eq!(sizes["mbedtls"].iram_bytes, 86);
    assert_eq!(sizes["mbedtls"].dram_bytes, 240 + 252 + 44);
    assert!(!sizes.contains_key("esp_system"));
    let mut budgets = BTreeMap::new();
    budgets.insert("usrsctp".to_string(), StaticBudget { psram_bytes: Some(1408), ..budget(100) });
    let lines = check(&budgets, &sizes, false);
    assert!(lines.iter().all(|l| l.verdict == "within"), "{lines:?}");
    assert!(refuse_empty(&budgets, &sizes, "fixture").is_ok());
}

/// Zeros are no verdict: a report whose budgeted component reads 0 bytes everywhere, or in which
/// no budgeted component is found at all, is refused (exit 2), never "within".
#[test]
fn a_report_read_as_zeros_or_without_the_stack_is_refused() {
    let mut budgets = BTreeMap::new();
    budgets.insert("libdatachannel".to_string(), budget(3650));
    budgets.insert("usrsctp".to_string(), budget(3420));
    // The same archive with section names this reader would not know: all zeros.
    let unknown = r#"{"liblibdatachannel.a": {"memory_types": {"Mystery": {"sections": {".weird": {"size": 900}}}}},
                      "libusrsctp.a": {"memory_types": {"DIRAM": {"sections": {".data": {"size": 100}}}}}}"#;
    let sizes = parse_json2(unknown).unwrap();
    assert!(check(&budgets, &sizes, false).iter().all(|l| l.verdict == "within"), "zeros would pass the budgets");
    let err = refuse_empty(&budgets, &sizes, "r.json").unwrap_err();
    let failure = err.downcast_ref::<exit::Failure>().unwrap();
    assert_eq!(failure.code, 2);
    assert!(failure.message.contains("libdatachannel read as 0 bytes in every region"), "{}", failure.message);
    // No component of the stack at all: the wrong file.
    let other =
        parse_json2(r#"{"libesp_system.a": {"memory_types": {"DIRAM": {"sections": {".data": {"size": 622}}}}}}"#)
            .unwrap();
    let failure = refuse_empty(&budgets, &other, "r.json").unwrap_err();
    assert!(failure.to_string().contains("none of the budgeted components"), "{failure}");
}

/// The chip map's cross reference table says which file defines a symbol and who refers to it;
/// `bss_placement` says which output section a library's zero-initialised data went to.
#[test]
fn cross_reference_and_bss_placement_read_an_esp_idf_map() {
    let map = "\
Linker script and memory map

.ext_ram.bss    0x48000000      0x370
 .bss.sctp_buf  0x48000000      0x364 esp-idf/usrsctp/libusrsctp.a(sctp_pcb.c.obj)
 .sbss._ZN3rtc6lastIdE
                0x48000364        0x4 esp-idf/libdatachannel/liblibdatachannel.a(capi.cpp.obj)
 .bss.empty     0x48000368        0x0 esp-idf/libsrtp/liblibsrtp.a(srtp.c.obj)

.dram0.bss      0x4ff17400       0x20
 .bss.counter   0x4ff17400        0x8 esp-idf/libsrtp/liblibsrtp.a(srtp.c.obj)
 COMMON         0x4ff17408        0x4 esp-idf/libsrtp/liblibsrtp.a(srtp.c.obj)

Cross Reference Table

Symbol                                            File
__wrap_pthread_mutex_init                         esp-idf/esp_dc_port/libesp_dc_port.a(esp_dc_port_sync.c.obj)
                                                  esp-idf/usrsctp/libusrsctp.a(sctp_pcb.c.obj)
operator new(unsigned int)                        esp-idf/esp_dc_port/libesp_dc_port.a(esp_dc_port_new.cpp.obj)
                                                  esp-idf/libdatachannel/liblibdatachannel.a(capi.cpp.obj)
pthread_mutex_init                                esp-idf/pthread/libpthread.a(pthread.c.obj)
                                                  esp-idf/esp_dc_port/libesp_dc_port.a(esp_dc_port_sync.c.obj)
pthread_mutex_lock                                esp-idf/pthread/libpthread.a(pthread.c.obj)
";
    let (definer, referrers) = cross_reference(map, "pthread_mutex_init").unwrap();
    assert_eq!(definer, "esp-idf/pthread/libpthread.a(pthread.c.obj)");
    assert_eq!(referrers, ["esp-idf/esp_dc_port/libesp_dc_port.a(esp_dc_port_sync.c.obj)"]);
    let (definer, _) = cross_reference(map, "operator new(unsigned int)").unwrap();
    assert!(definer.ends_with("(esp_dc_port_new.cpp.obj)"));
    assert!(cross_reference(map, "pthread_mutex").is_none(), "a prefix is not the symbol");
    assert!(cross_reference(map, "pthread_cond_init").is_none());

    assert_eq!(bss_placement(map, "usrsctp"), BTreeMap::from([(".ext_ram.bss".to_string(), 0x364)]));
    assert_eq!(bss_placement(map, "libdatachannel"), BTreeMap::from([(".ext_ram.bss".to_string(), 4)]));
    assert_eq!(bss_placement(map, "libsrtp"), BTreeMap::from([(".dram0.bss".to_string(), 0x8 + 0x4)]));
    assert!(bss_placement(map, "libjuice").is_empty());
}

/// The chip's map against the policy: excerpts of the real esp32p4 maps of datachannel_echo
/// (lab/fixtures/size/README.md says how they were cut) hold for their own policy and fail for
/// the other one, naming each library; a map without the sync wrappers fails lean.
#[test]
fn the_esp32p4_map_places_each_policy_as_it_asks() {
    let lean = Policy::load(&Policy::path_for("lean")).unwrap();
    let stock = Policy::load(&Policy::path_for("stock")).unwrap();
    let lean_map = std::fs::read_to_string(fixture("esp32p4-lean-excerpt.map")).unwrap();
    let stock_map = std::fs::read_to_string(fixture("esp32p4-stock-excerpt.map")).unwrap();
    assert_eq!(placement_problems(&lean, &lean_map), Vec::<String>::new());
    assert_eq!(placement_problems(&stock, &stock_map), Vec::<String>::new());
    for (policy, map, expected) in [(&stock, &lean_map, ".dram0.bss"), (&lean, &stock_map, ".ext_ram.bss")] {
        let problems = placement_problems(policy, map);
        for c in crate::policy::STATIC_PLACEABLE {
            assert!(
                problems.iter().any(|p| p.starts_with(&format!("{c}: .bss should be in {expected}"))),
                "{c}: {problems:?}"
            );
        }
    }
    // The ESP-IDF map of the first P4 link: ESP-IDF's extram_bss scheme (esp_wifi's) was never
    // read, so lean's .bss stayed in DRAM. That is the failure this check exists for.
    let dropped = lean_map.replace(".ext_ram.bss", ".dram0.bss");
    assert_eq!(placement_problems(&lean, &dropped).len(), 4, "{:?}", placement_problems(&lean, &dropped));
    let unwrapped = lean_map.replace("__wrap_pthread_mutex_init", "__other_symbol");
    assert!(placement_problems(&lean, &unwrapped)
        .iter()
        .any(|p| p.starts_with("__wrap_pthread_mutex_init is not linked")));
    let sizes = parse_map(&lean_map).unwrap();
    assert_eq!((sizes["libdatachannel"].dram_bytes, sizes["libdatachannel"].psram_bytes), (536, 1065));
}

/// Each shipped policy's static budgets hold on its own real esp32p4 report (json2, unified) and
/// the report reads with every budgeted component present and non-zero. The esp32p4 test builds
/// lean and checks the same on a fresh build; stock's report is kept here.
#[test]
fn each_policys_static_budgets_hold_on_its_esp32p4_report() {
    for name in ["lean", "stock"] {
        let policy = Policy::load(&Policy::path_for(name)).unwrap();
        let report = fixture(&format!("esp32p4-{name}-size-components.json"));
        let sizes = read_report(&report).unwrap();
        refuse_empty(&policy.budgets.static_, &sizes, name).unwrap();
        let lines = check(&policy.budgets.static_, &sizes, false);
        for measure in ["dram", "psram", "flash"] {
            assert!(lines.iter().any(|l| l.measure == measure), "{name}: no {measure} budget");
        }
        let failed: Vec<_> = lines.iter().filter(|l| l.verdict != "within").collect();
        assert!(failed.is_empty(), "{name}: {failed:?}");
    }
}

/// Issue 27, class 7: an input-section line cut after its size field (the map's last line, or
/// one in the middle) was dropped without a word, so a budget breach could hide behind it (exit
/// 0). It is now named like any line that could not be read, which makes size-check exit 1.
#[test]
fn an_input_section_line_cut_after_its_size_is_named() {
    let text = std::fs::read_to_string(fixture("app.map")).unwrap();
    let last = " esp-idf/libjuice/liblibjuice.a(agent.c.obj)";
    let cut = &text[..text.rfind(last).unwrap()];
    let (sizes, skipped) = parse_map_lines(cut).unwrap();
    assert_eq!(skipped, vec![(cut.lines().count(), "0x3c020020      0x100".to_string())]);
    let (whole, _) = parse_map_lines(&text).unwrap();
    assert_eq!(sizes["libjuice"].flash_bytes + 0x100, whole["libjuice"].flash_bytes);
    let file = " esp-idf/main/libmain.a(datachannel_echo_main.c.obj)";
    let at = text.rfind(file).unwrap(); // the input section's, not the archive list's at the top
    let middle = format!("{}{}", &text[..at], &text[at + file.len()..]);
    let (_, skipped) = parse_map_lines(&middle).unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].1.starts_with(".text          0x42001020      0x234"), "{skipped:?}");
    let address_only = format!("{}\n", &cut[..cut.rfind("      0x100").unwrap()]);
    assert_eq!(parse_map_lines(&address_only).unwrap().1.len(), 1);
}
