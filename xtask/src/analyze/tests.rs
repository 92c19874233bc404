//! Logs in the exact text ESP-IDF v5.5.5 prints (heap_trace_dump_base() in
//! components/heap/heap_trace_standalone.c, printed through esp_rom_printf whose %p is
//! `0x%08lx`), symbolized against an ELF built here from lab/fixtures/analyze/ with gcc -g.

use super::*;
use crate::exit::Failure;
use crate::fsutil::project_root;
use std::path::{Path, PathBuf};

fn fixture_dir() -> PathBuf {
    project_root().join("lab/fixtures/analyze")
}

/// Builds the fixture app the way docs/analyze.md says: each function pinned at a flash-like
/// address, debug paths relative to the fixture directory as ESP-IDF's prefix map does.
fn build_elf(dir: &Path, extra: &[&str]) -> PathBuf {
    let out = dir.join("app.elf");
    let sh = xshell::Shell::new().unwrap();
    let src = fixture_dir();
    sh.change_dir(&src);
    let prefix_map = format!("-fdebug-prefix-map={}=.", src.display());
    xshell::cmd!(
        sh,
        "gcc -O0 -no-pie {prefix_map} {extra...}
         -Wl,--section-start=.flash.heap=0x42010000 -Wl,--section-start=.flash.juice=0x42011000
         -Wl,--section-start=.flash.sctp_pcb=0x42012000 -Wl,--section-start=.flash.sctp_readq=0x42012100
         -Wl,--section-start=.flash.app=0x42013000
         -Wl,--section-start=.flash.dcsync_mutex=0x42014000 -Wl,--section-start=.flash.dcsync_cond=0x42014100
         -Wl,--section-start=.flash.pthread_mutex=0x42015000 -Wl,--section-start=.flash.pthread_cond=0x42015100
         -Wl,--section-start=.flash.queue=0x42016000
         components/heap/heap_caps.c components/libjuice/agent.c components/usrsctp/sctp_pcb.c
         components/esp_dc_port/src/esp_dc_port_sync.c components/pthread/pthread.c
         components/pthread/pthread_cond_var.c components/freertos/queue.c main/app_main.c -o {out}"
    )
    .quiet()
    .run()
    .unwrap();
    out
}

fn fixture_log() -> String {
    std::fs::read_to_string(fixture_dir().join("device-log.txt")).unwrap()
}

fn analyze_text(text: &str, elf: Option<&Path>) -> anyhow::Result<Report> {
    let log = log::parse(text);
    let mut elf = match elf {
        Some(path) => {
            let addresses: Vec<u64> =
                log.dumps.iter().flat_map(|d| d.records.iter().flat_map(|r| r.callers.clone())).collect();
            Some(elf::open(path, log.chip.as_deref(), log.elf_sha256_prefix.as_ref(), &addresses)?)
        }
        None => None,
    };
    Ok(build_report(&log, elf.as_mut(), "lean", 10))
}

fn exit_code(err: &anyhow::Error) -> u8 {
    err.downcast_ref::<Failure>().map(|f| f.code).unwrap_or(0)
}

fn site(component: &str, file: &str, line: u32, function: &str, bytes: u64, count: u64) -> Site {
    Site { component: component.into(), file: file.into(), line, function: function.into(), bytes, count }
}

#[test]
fn dump_records_parse_in_both_esp_idf_shapes() {
    let text = "\
====== Heap Trace: 3 records (64 capacity) ======
    12 bytes (@ 0x3fcb5010, Internal) allocated CPU 0 ccount 0x1e7b0778 freed
  4000 bytes (@ 0x3c0a1234,    PSRAM) allocated CPU 1 ccount 0x1e7b0779 caller 0x42001234:0x42005678:
    16 bytes (@ 0x3fc90000) allocated CPU 0 ccount 0x1e7b0780 caller 
====== Heap Trace Summary ======
Mode: Heap Trace All
4016 bytes alive in trace (2/3 allocations)
================================
";
    let log = log::parse(text);
    assert!(log.skipped.is_empty(), "{:?}", log.skipped);
    let dump = &log.dumps[0];
    assert_eq!(dump.mode, Some(TraceMode::All));
    assert!(dump.complete);
    assert_eq!((dump.summary_bytes, dump.summary_allocations), (Some(4016), Some(2)));
    let r = &dump.records;
    assert_eq!((r[0].size, r[0].address, r[0].heap, r[0].freed), (12, 0x3fcb5010, Some(Heap::Internal), true));
    assert_eq!(
        (r[1].size, r[1].heap, r[1].callers.clone(), r[1].freed),
        (4000, Some(Heap::Psram), vec![0x42001234, 0x42005678], false)
    );
    // ESP-IDF 5.0-5.2 print " caller " with no frames and no heap label: heap by address.
    assert_eq!((r[2].callers.len(), r[2].heap, heap_of(&r[2])), (0, None, Heap::Internal));
    assert_eq!(heap_of_address(0x3c0a_0000), Heap::Psram);
    assert_eq!(heap_of_address(0x4800_1000), Heap::Psram);
    assert_eq!(heap_of_address(0x4ff1_0000), Heap::Internal);
    assert_eq!(heap_of_address(0x1000), Heap::Unknown);
}

#[test]
fn monitor_decorations_are_tolerated() {
    // idf.py monitor --timestamps prefixes every line; idf_monitor adds its own address decoding.
    let text = "\
2026-11-24 19:00:01.001 MEMTRACK trace label=connected event=dump heaps=internal+psram
2026-11-24 19:00:01.002 ====== Heap Trace: 1 records (64 capacity) ======
2026-11-24 19:00:01.003    300 bytes (@ 0x3fc9a000, Internal) allocated CPU 0 ccount 0x1e7af728 caller 0x42010000:0x42011000:
--- 0x42011000: juice_agent_create at /p/components/libjuice/agent.c:5
2026-11-24 19:00:01.004    200 bytes (@ 0x3fc9a200, Internal) allocated CPU 0 ccount 0x1e7af800 caller 0x42010000:0x42011000:
2026-11-24 19:00:01.005 freed by 0x42010000:0x42011000:0x00000000:0x00000000
2026-11-24 19:00:01.006 ====== Heap Trace Summary ======
2026-11-24 19:00:01.007 Mode: Heap Trace All
2026-11-24 19:00:01.008 300 bytes alive in trace (1/2 allocations)
2026-11-24 19:00:01.009 ================================
";
    let log = log::parse(text);
    assert!(log.skipped.is_empty(), "{:?}", log.skipped);
    let dump = &log.dumps[0];
    assert_eq!((dump.label.as_str(), dump.complete, dump.mode), ("connected", true, Some(TraceMode::All)));
    assert_eq!(dump.records.iter().map(|r| (r.size, r.freed)).collect::<Vec<_>>(), vec![(300, false), (200, true)]);
    assert_eq!(dump.summary_bytes, Some(300));
}

#[test]
fn fixture_log_is_attributed_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let elf = build_elf(dir.path(), &["-g"]);
    let report = analyze_text(&fixture_log(), Some(&elf)).unwrap();

    let figures: Vec<_> = report
        .components
        .iter()
        .map(|c| (c.name.as_str(), c.connected_bytes, c.peak_bytes, c.internal_bytes, c.psram_bytes))
        .collect();
    assert_eq!(
        figures,
        vec![("usrsctp", 4608, 4608, 512, 4096), ("libjuice", 2048, 2048, 2048, 0), ("other", 356, 356, 100, 256)]
    );
    assert_eq!(
        report.components[0].phases,
        vec![PhaseFigure { phase: "connected".into(), live_bytes: 4608, peak_bytes: 4608, blocks: 2 }]
    );
    assert_eq!(report.total_connected_bytes, 7012);
    assert_eq!(report.scenario, "device-log");
    assert_eq!(
        report.sites,
        vec![
            site("usrsctp", "./components/usrsctp/sctp_pcb.c", 5, "sctp_inpcb_alloc", 4096, 1),
            site("libjuice", "./components/libjuice/agent.c", 5, "juice_agent_create", 2048, 1),
            site("usrsctp", "./components/usrsctp/sctp_pcb.c", 10, "sctp_add_to_readq", 512, 1),
            site("other", "0x40375a10", 0, "", 256, 1),
            site("other", "./main/app_main.c", 8, "app_buffer", 100, 1),
        ]
    );
    assert_eq!(
        report.leaks,
        vec![
            site("usrsctp", "./components/usrsctp/sctp_pcb.c", 10, "sctp_add_to_readq", 512, 1),
            site("other", "./main/app_main.c", 8, "app_buffer", 100, 1),
        ]
    );
    assert_eq!(report.leak_bytes_per_cycle, Some(612));
    let tasks: Vec<_> = report.thread_list.iter().map(|t| (t.name.as_str(), t.stack_free_min_bytes)).collect();
    assert_eq!(tasks, vec![("main", 1804), ("juice_thread", 2236), ("sctp_timer", 948)]);
    assert_eq!(report.threads, 3);
    // Measured: the tracker's free-heap drop at `connected`.
    assert_eq!((report.projection.internal_bytes, report.projection.psram_bytes), (45678, 123456));

    let device = report.device.unwrap();
    assert_eq!(device.connected_dump, "connected");
    assert_eq!(device.skipped_lines, 2);
    assert_eq!(
        device.skipped_examples,
        vec![
            "line 18: MEMTRACK snapshot label=connected heap=internal free=12x3 min_free=1 largest=1",
            "line 33: 1024 bytes (@ 0x3fc9d000, Internal) allocated CPU 0 ccoI (5124) wifi:bcn_timeout,ap_probe_send_start",
        ]
    );
    // The dump's own summary counts the record the interleaved wifi line destroyed.
    assert_eq!(
        device.warnings,
        vec!["heap trace dump `connected` (line 23) says 8036 bytes in 6 allocations, 7012 bytes in 5 were read"]
    );
    // 301200 - 240100 and 8123000 - 7990000: the lowest min_free after `start`.
    assert_eq!((device.peak_internal_bytes, device.peak_psram_bytes), (Some(61100), Some(133000)));
    assert_eq!((device.not_returned_internal_bytes, device.not_returned_psram_bytes), (Some(612), Some(0)));
    assert_eq!(device.heaps.len(), 9);
    assert_eq!(device.heaps[3].free_delta, Some(-45678));
}

#[test]
fn without_tracker_delta_the_dump_is_the_measurement() {
    let text: String =
        fixture_log().lines().filter(|l| !l.starts_with("MEMTRACK delta")).map(|l| format!("{l}\n")).collect();
    let report = analyze_text(&text, None).unwrap();
    assert_eq!((report.projection.internal_bytes, report.projection.psram_bytes), (2660, 4352));
    // No ELF: every allocation keeps its first return address, unattributed.
    assert_eq!(report.components.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), vec!["unsymbolized"]);
    // The leak check still comes from the LEAKS dump; dropping it leaves the tracker's figure.
    assert_eq!(report.leak_bytes_per_cycle, Some(612));
    let no_leak_dump: String = text.split("MEMTRACK trace label=cycle-2").next().unwrap().to_string();
    let without_deltas = analyze_text(&no_leak_dump, None).unwrap();
    assert_eq!((without_deltas.leak_bytes_per_cycle, without_deltas.leaks.len()), (None, 0));
    let with_deltas: String = fixture_log().split("MEMTRACK trace label=cycle-2").next().unwrap().to_string();
    let tracker_only = analyze_text(&with_deltas, None).unwrap();
    assert_eq!((tracker_only.leak_bytes_per_cycle, tracker_only.leaks.len()), (Some(612), 0));
}

#[test]
fn elf_sha256_from_the_boot_log_must_match() {
    let dir = tempfile::tempdir().unwrap();
    let elf = build_elf(dir.path(), &["-g"]);
    let sh = xshell::Shell::new().unwrap();
    let sum = xshell::cmd!(sh, "sha256sum {elf}").read().unwrap();
    let right = format!("I (316) app_init: ELF file SHA256:  {}...\n{}", &sum[..9], fixture_log());
    assert!(analyze_text(&right, Some(&elf)).is_ok());
    let wrong_digit = if sum.starts_with('0') { "1" } else { "0" };
    let wrong = format!("I (316) app_init: ELF file SHA256:  {wrong_digit}{}...\n{}", &sum[1..9], fixture_log());
    let err = analyze_text(&wrong, Some(&elf)).expect_err("a mismatching ELF is refused");
    assert_eq!(exit_code(&err), 2);
    assert!(err.to_string().contains("line 1 says ELF file SHA256"), "{err}");
}

#[test]
fn unusable_elves_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let no_dwarf = build_elf(dir.path(), &[]);
    let err = analyze_text(&fixture_log(), Some(&no_dwarf)).err().unwrap();
    assert_eq!(exit_code(&err), 2);
    assert!(err.to_string().contains("no DWARF"), "{err}");

    let elf = build_elf(dir.path(), &["-g"]);
    let s3 = format!("ESP-ROM:esp32s3-20210327\n{}", fixture_log());
    let err = analyze_text(&s3, Some(&elf)).err().unwrap();
    assert_eq!(exit_code(&err), 2);
    assert!(err.to_string().contains("esp32s3 (Xtensa)"), "{err}");

    let elsewhere = fixture_log().replace("0x42010000:", "0x40010000:").replace("0x4201", "0x4001");
    let err = analyze_text(&elsewhere, Some(&elf)).err().unwrap();
    assert_eq!(exit_code(&err), 2);
    assert!(err.to_string().contains("wrong ELF"), "{err}");

    let err = analyze_text(&fixture_log(), Some(&dir.path().join("missing.elf"))).err().unwrap();
    assert_eq!(exit_code(&err), 2);
}

#[test]
fn run_writes_json_and_refuses_logs_without_tracker_output() {
    let dir = tempfile::tempdir().unwrap();
    let elf = build_elf(dir.path(), &["-g"]);
    let json = dir.path().join("report.json");
    let args = Args {
        log: fixture_dir().join("device-log.txt"),
        elf: Some(elf),
        map: None,
        json: Some(json.clone()),
        policy: "lean".into(),
        top: 10,
    };
    // The fixture has a damaged record and tracker line: the report is written, and exit 1 says
    // it misses data.
    let err = run(args).unwrap_err();
    assert_eq!(exit_code(&err), 1);
    assert!(
        err.to_string().contains("2 line(s) skipped, 1 heap trace dump(s) disagree with their own summary"),
        "{err}"
    );
    let back: Report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(back.total_connected_bytes, 7012);
    assert_eq!(back.components[1].name, "libjuice");

    let plain = dir.path().join("plain.txt");
    std::fs::write(&plain, "I (1) boot: nothing to see\n").unwrap();
    let json2 = dir.path().join("none.json");
    let args = Args { log: plain, elf: None, map: None, json: Some(json2.clone()), policy: "lean".into(), top: 10 };
    assert_eq!(exit_code(&run(args).err().unwrap()), 2);
    assert!(!json2.exists());
}

/// esp_memtrack compiled on the host against the stand-ins in components/esp_memtrack/test/host,
/// 32-bit like the chips (size_t, long and pointers of 4 bytes): its output must match
/// expected.txt byte for byte, and the analyzer must read every MEMTRACK line.
#[test]
fn esp_memtrack_prints_what_the_analyzer_reads() {
    let component = project_root().join("components/esp_memtrack");
    let host = component.join("test/host");
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("memtrack_host");
    let sh = xshell::Shell::new().unwrap();
    let (inc, api, src) = (host.join("include"), component.join("include"), component.join("src/esp_memtrack.c"));
    let (fake, main) = (host.join("fake_idf.c"), host.join("test_main.c"));
    xshell::cmd!(sh, "gcc -m32 -std=c11 -Wall -Wextra -Werror -I{inc} -I{api} {fake} {main} {src} -o {exe}")
        .quiet()
        .run()
        .unwrap();
    let out = xshell::cmd!(sh, "{exe}").read().unwrap() + "\n";
    assert_eq!(out, std::fs::read_to_string(host.join("expected.txt")).unwrap());

    let log = log::parse(&out);
    assert!(log.skipped.is_empty(), "{:?}", log.skipped);
    assert_eq!(log.tracker_lines, out.lines().filter(|l| l.starts_with("MEMTRACK ")).count());
    assert_eq!(log.snapshots.len(), 12);
    let connected: Vec<_> = log.deltas.iter().filter(|d| d.label == "connected").map(|d| (d.heap, d.free)).collect();
    assert_eq!(connected, vec![(Heap::Internal, -37035), (Heap::Psram, -37035), (Heap::Dma, -37035)]);
    assert_eq!(log.tasks.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), vec!["main", "juice_thread", "IDLE0"]);
}

/// Every esp_memtrack option is ESP_MEMTRACK_-prefixed and explains itself in menuconfig.
#[test]
fn esp_memtrack_kconfig_options_have_prefix_and_help() {
    let kconfig = std::fs::read_to_string(project_root().join("components/esp_memtrack/Kconfig")).unwrap();
    let blocks: Vec<&str> = kconfig.split("config ").skip(1).collect();
    assert!(blocks.len() >= 4);
    for block in blocks {
        let name = block.split_whitespace().next().unwrap();
        assert!(name.starts_with("ESP_MEMTRACK_"), "{name} lacks the ESP_MEMTRACK_ prefix");
        let help = block.split("help").nth(1).unwrap_or_else(|| panic!("{name} has no help"));
        assert!(help.trim().len() > 40, "{name}: help too short");
    }
}

/// Espressif's own Kconfig parser (installed by scripts/setup.sh) accepts the component's
/// Kconfig and yields the documented defaults.
#[test]
fn esp_memtrack_kconfig_is_read_by_kconfgen() {
    let venv = std::env::var("ESP_DC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/esp-dc/venv"));
    let python = venv.join("bin/python");
    assert!(python.exists(), "kconfgen missing: run `source scripts/setup.sh`");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Kconfig");
    let component = project_root().join("components/esp_memtrack/Kconfig");
    // The symbols ESP-IDF defines elsewhere that the component depends on.
    let idf = "config SPIRAM\n    bool \"spiram\"\n    default y\nconfig HEAP_TRACING_STANDALONE\n    bool \"trace\"\n    default y\n";
    std::fs::write(&root, format!("{idf}source \"{}\"\n", component.display())).unwrap();
    let out = dir.path().join("sdkconfig");
    let sh = xshell::Shell::new().unwrap();
    xshell::cmd!(sh, "{python} -m kconfgen --kconfig {root} --output config {out}").quiet().run().unwrap();
    let config = std::fs::read_to_string(&out).unwrap();
    for line in [
        "CONFIG_ESP_MEMTRACK_ENABLE=y",
        "CONFIG_ESP_MEMTRACK_REPORT_DMA=y",
        "CONFIG_ESP_MEMTRACK_MAX_TASKS=32",
        "CONFIG_ESP_MEMTRACK_TRACE_RECORDS=2048",
        "CONFIG_ESP_MEMTRACK_TRACE_RECORDS_IN_PSRAM=y",
    ] {
        assert!(config.lines().any(|l| l == line), "{line} missing from\n{config}");
    }
}

/// A log traced only in HEAP_TRACE_LEAKS mode: the `connected` dump lists what is live then,
/// the later leak check what never came back.
#[test]
fn leaks_mode_dumps_serve_as_moments_and_leak_checks() {
    let record = |size: u32, address: u32| {
        format!("{size:6} bytes (@ 0x{address:08x}, Internal) allocated CPU 0 ccount 0x1e7af728 caller 0x42010000:0x42011000:\n")
    };
    let dump = |label: &str, records: &[String]| {
        let bytes: u32 = records.iter().map(|r| r.split_whitespace().next().unwrap().parse::<u32>().unwrap()).sum();
        format!(
            "MEMTRACK trace label={label} event=dump heaps=internal+psram\n====== Heap Trace: {n} records (64 capacity) ======\n{body}\
             ====== Heap Trace Summary ======\nMode: Heap Trace Leaks\n{bytes} bytes 'leaked' in trace ({n} allocations)\n\
             records: {n} (64 capacity, {n} high water mark)\ntotal allocations: 9\ntotal frees: 1\n================================\n",
            n = records.len(),
            body = records.concat()
        )
    };
    let text = dump("connected", &[record(700, 0x3fc9a000), record(300, 0x3fc9b000)])
        + &dump("leaks", &[record(300, 0x3fc9b000)]);
    let dir = tempfile::tempdir().unwrap();
    let elf = build_elf(dir.path(), &["-g"]);
    let report = analyze_text(&text, Some(&elf)).unwrap();
    assert!(report.device.as_ref().unwrap().warnings.is_empty(), "{:?}", report.device);
    let figures: Vec<_> =
        report.components.iter().map(|c| (c.name.as_str(), c.connected_bytes, c.internal_bytes)).collect();
    assert_eq!(figures, vec![("libjuice", 1000, 1000)]);
    assert_eq!(report.leaks, vec![site("libjuice", "./components/libjuice/agent.c", 5, "juice_agent_create", 300, 1)]);
    assert_eq!(report.leak_bytes_per_cycle, Some(300));
}

/// docs/analyze.md shows the report of the committed fixture; it must be what the command prints.
#[test]
fn docs_example_is_the_real_output() {
    let dir = tempfile::tempdir().unwrap();
    let elf = build_elf(dir.path(), &["-g"]);
    let args = Args {
        log: "lab/fixtures/analyze/device-log.txt".into(),
        elf: Some(elf.clone()),
        map: None,
        json: None,
        policy: "lean".into(),
        top: 10,
    };
    let report = analyze_text(&fixture_log(), Some(&elf)).unwrap();
    let printed = render(&report, &args);
    let docs = std::fs::read_to_string(project_root().join("docs/analyze.md")).unwrap();
    let start = docs.find("device log lab/fixtures/analyze/device-log.txt").expect("example in docs");
    let shown = &docs[start..start + docs[start..].find("```").unwrap()];
    assert_eq!(shown, printed);
}

/// A real return address sits after the call and can map to the next line; the site must be
/// the line of the call itself.
#[test]
fn return_addresses_resolve_to_the_calling_line() {
    let dir = tempfile::tempdir().unwrap();
    let elf_path = build_elf(dir.path(), &["-g"]);
    let bytes = std::fs::read(&elf_path).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    use object::{Object, ObjectSection};
    let section = file.section_by_name(".flash.juice").unwrap();
    let code = section.data().unwrap();
    // x86-64 `call rel32` is E8 + 4 bytes; the return address is the byte after it.
    let call_at = code.iter().position(|&b| b == 0xE8).expect("juice_agent_create calls heap_caps_malloc");
    let return_address = section.address() + call_at as u64 + 5;
    let mut elf = elf::open(&elf_path, None, None, &[return_address]).unwrap();
    let frame = &elf.caller_frames(return_address)[0];
    assert_eq!(
        (frame.file.as_str(), frame.line, frame.component),
        ("./components/libjuice/agent.c", 6, Some("libjuice"))
    );
}

/// Issue 18: two records of 18446744073709551615 bytes panicked adding up. A size past a 32-bit
/// chip's size_t is a damaged line: skipped and named; the dump's other records still count.
#[test]
fn records_past_a_32_bit_size_are_skipped_not_summed() {
    let text = "\
MEMTRACK trace label=connected event=dump heaps=internal
====== Heap Trace: 3 records (64 capacity) ======
18446744073709551615 bytes (@ 0x3fcb5010, Internal) allocated CPU 0 ccount 0x1e7b0778
18446744073709551615 bytes (@ 0x3fcb6010, Internal) allocated CPU 0 ccount 0x1e7b0779
    40 bytes (@ 0x3fcb7010, Internal) allocated CPU 0 ccount 0x1e7b0780
====== Heap Trace Summary ======
Mode: Heap Trace All
";
    let report = analyze_text(text, None).unwrap();
    assert_eq!(report.total_connected_bytes, 40);
    let device = report.device.unwrap();
    assert_eq!(device.skipped_lines, 2);
    assert!(
        device.skipped_examples[0].starts_with("line 3: 18446744073709551615 bytes"),
        "{:?}",
        device.skipped_examples
    );
    // The tracker's figures are i64 as printed: two not-returned drops of 2^63 saturate.
    let text = "\
MEMTRACK snapshot label=baseline heap=internal free=1 min_free=1 largest=1
MEMTRACK delta label=closed base=baseline heap=internal free=-9223372036854775808 min_free=0 largest=0
MEMTRACK delta label=closed base=baseline heap=psram free=-9223372036854775808 min_free=0 largest=0
";
    let report = analyze_text(text, None).unwrap();
    assert_eq!(report.leak_bytes_per_cycle, Some(u64::MAX));
    assert_eq!(saturating_sum([u64::MAX, 1, 2].into_iter()), u64::MAX);
}

fn run_on(text: &str) -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.txt");
    std::fs::write(&path, text).unwrap();
    run(Args { log: path, elf: None, map: None, json: None, policy: "lean".into(), top: 10 })
}

const CLEAN_DUMP: &str = "\
MEMTRACK trace label=connected event=dump heaps=internal
====== Heap Trace: 2 records (64 capacity) ======
    40 bytes (@ 0x3fcb7010, Internal) allocated CPU 0 ccount 0x1e7b0780
    60 bytes (@ 0x3fcb8010, Internal) allocated CPU 0 ccount 0x1e7b0781
====== Heap Trace Summary ======
Mode: Heap Trace All
100 bytes alive in trace (2/2 allocations)
================================
";

/// Issue 18: a CR-only log read as one line and reported 0 bytes; mixed endings read too.
#[test]
fn cr_only_and_mixed_line_endings_are_read() {
    let lf = analyze_text(CLEAN_DUMP, None).unwrap();
    assert_eq!(lf.total_connected_bytes, 100);
    for text in [CLEAN_DUMP.replace('\n', "\r"), CLEAN_DUMP.replace('\n', "\r\n"), CLEAN_DUMP.replacen('\n', "\r", 3)] {
        let log = log::parse(&text);
        assert!(log.skipped.is_empty(), "{:?}", log.skipped);
        assert_eq!(analyze_text(&text, None).unwrap().total_connected_bytes, 100, "{text:?}");
        assert_eq!(run_on(&text).unwrap(), ExitCode::SUCCESS);
    }
    assert_eq!(crate::fsutil::split_lines("a\r\nb\rc\n\nd").collect::<Vec<_>>(), vec!["a", "b", "c", "", "d"]);
}

/// Issue 18: a dump header split by another task's output lost the whole dump silently, and
/// records outside any dump were not counted. Each such line is now skipped by number, and the
/// run exits 1 after printing what it could read.
#[test]
fn records_that_cannot_be_placed_are_named_and_exit_1() {
    let split =
        CLEAN_DUMP.replace("====== Heap Trace: 2 records", "====== Heap TrI (5124) wifi:bcn_timeout\nace: 2 records");
    let log = log::parse(&split);
    let numbers: Vec<usize> = log.skipped.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, vec![2, 3, 4, 5, 6, 8], "{:?}", log.skipped);
    let err = run_on(&split).unwrap_err();
    assert_eq!(exit_code(&err), 1);
    assert!(err.to_string().contains("6 line(s) skipped"), "{err}");
    // A second header inside a dump cuts the first short: a warning and exit 1.
    let cut = CLEAN_DUMP.replacen("    60 bytes", "====== Heap Trace: 1 records (64 capacity) ======\n    60 bytes", 1);
    let report = analyze_text(&cut, None).unwrap();
    assert!(report.device.unwrap().warnings.iter().any(|w| w.contains("ends before its summary")));
    let err = run_on(&cut).unwrap_err();
    assert_eq!(exit_code(&err), 1);
    assert!(err.to_string().contains("1 heap trace dump(s) end before their summary"), "{err}");
    // Every skipped line is named, not the first five.
    let many = "MEMTRACK snapshot label=x heap=internal free=1x\n".repeat(7) + CLEAN_DUMP;
    let report = analyze_text(&many, None).unwrap();
    assert_eq!(report.device.unwrap().skipped_examples.len(), 7);
    assert_eq!(run_on(CLEAN_DUMP).unwrap(), ExitCode::SUCCESS);
}

/// Issue 16: the sync objects esp_dc_port_sync.c places in PSRAM and ESP-IDF's own internal ones
/// are counted from the heap trace with the lab projection's words, and the linker map beside the
/// ELF gives the stack's static data split as `static_placement` linked it.
#[test]
fn sync_objects_and_static_placement_from_a_device_log() {
    let dir = tempfile::tempdir().unwrap();
    let elf = build_elf(dir.path(), &["-g"]);
    std::fs::copy(fixture_dir().join("app.map"), elf.with_extension("map")).unwrap();
    let json = dir.path().join("report.json");
    let args = Args {
        log: fixture_dir().join("device-log-sync.txt"),
        elf: Some(elf),
        map: None,
        json: Some(json.clone()),
        policy: "lean".into(),
        top: 10,
    };
    assert_eq!(run(args).unwrap(), ExitCode::SUCCESS);
    let report: Report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let lines: Vec<(&str, u64, u64)> = report
        .projection
        .lines
        .iter()
        .filter(|l| l.what.starts_with("of which"))
        .map(|l| (l.what.as_str(), l.internal_bytes, l.psram_bytes))
        .collect();
    assert_eq!(
        lines,
        [
            ("of which 2 pthread mutex(es) with their owner in PSRAM: one block each", 0, 176),
            ("of which 1 condition variable(s) with their owner in PSRAM: one block each", 0, 92),
            ("of which 1 pthread mutex(es): esp_pthread_mutex_t + FreeRTOS mutex", 92, 0),
            ("of which 1 condition variable(s): esp_pthread_cond_t + its newlib lock's FreeRTOS mutex", 96, 0),
        ]
    );
    // The PSRAM objects are esp_dc_port's allocations, in PSRAM.
    let port = report.components.iter().find(|c| c.name == "esp_dc_port").unwrap();
    assert_eq!((port.internal_bytes, port.psram_bytes), (0, 268));
    let device = report.device.unwrap();
    let statics: Vec<(&str, u64, u64)> =
        device.static_data.iter().map(|s| (s.component.as_str(), s.internal_bytes, s.psram_bytes)).collect();
    assert_eq!(statics, [("libdatachannel", 16, 1212), ("libjuice", 32, 0), ("usrsctp", 2148, 1800)]);
    assert_eq!(report.static_internal_bytes, Some(2196));
    assert!(device.static_source.ends_with("app.map"), "{}", device.static_source);
}

/// Issue 27, class 7: a tracker line that another task's output ran into, or that carries a key
/// twice, changed `projection.internal_bytes` (45678 -> 3684 in one case) with exit 0. Such a
/// line is now skipped, named, and the run exits 1; the figure is never the stranger's.
#[test]
fn tracker_lines_not_read_whole_are_named_and_exit_1() {
    let delta = "MEMTRACK delta label=connected base=start heap=internal free=-45678 min_free=-50000 largest=0";
    let clean = format!("{delta}\n{CLEAN_DUMP}");
    assert_eq!(analyze_text(&clean, None).unwrap().projection.internal_bytes, 45678);
    assert_eq!(run_on(&clean).unwrap(), ExitCode::SUCCESS);
    for damaged in [
        format!("{delta} free=-3684"),
        delta.replace(" min_free", " rssi=-40 min_free"),
        delta.replace("largest=0", "largest=0 I (5512) wifi: free=-3684"),
        format!("{delta}MEMTRACK delta label=connected base=start heap=internal free=-3684 min_free=-1 largest=0"),
        delta.replace("free=-45678", "free=-45678 free=-3684"),
        "MEMTRACK snapshot label=connected heap=internal free=1 min_free=1 largest=1 heap=psram".to_string(),
    ] {
        let text = clean.replace(delta, &damaged);
        let log = log::parse(&text);
        assert_eq!(log.skipped.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1], "{damaged}");
        assert_ne!(analyze_text(&text, None).unwrap().projection.internal_bytes, 3684, "{damaged}");
        let err = run_on(&text).unwrap_err();
        assert_eq!(exit_code(&err), 1, "{damaged}");
        assert!(err.to_string().contains("1 line(s) skipped"), "{err}");
    }
}

/// Issue 27, class 7: `analyze --map` dropped a damaged map line that `size-check` names. It is
/// now named the same way and the run exits 1 after printing the report.
#[test]
fn a_damaged_map_line_is_named_by_analyze_too() {
    let dir = tempfile::tempdir().unwrap();
    let map = std::fs::read_to_string(fixture_dir().join("app.map")).unwrap();
    let damaged = map.replacen(" esp-idf/libjuice/liblibjuice.a(conn.c.obj)", "", 1);
    assert_ne!(damaged, map);
    let (_, skipped) = crate::static_sizes::parse_map_lines(&damaged).unwrap();
    assert_eq!(skipped.len(), 1, "size-check names it: {skipped:?}");
    let log = dir.path().join("log.txt");
    std::fs::write(&log, CLEAN_DUMP).unwrap();
    let args = |map: &Path| Args {
        log: log.clone(),
        elf: None,
        map: Some(map.to_path_buf()),
        json: None,
        policy: "lean".into(),
        top: 10,
    };
    assert_eq!(run(args(&fixture_dir().join("app.map"))).unwrap(), ExitCode::SUCCESS);
    let path = dir.path().join("app.map");
    std::fs::write(&path, &damaged).unwrap();
    let err = run(args(&path)).unwrap_err();
    assert_eq!(exit_code(&err), 1);
    assert!(err.to_string().contains("1 line(s) of the linker map"), "{err}");
}

/// Issue 27, class 8: a 223 MB device log took 813 MB of RAM (read whole, then copied). The
/// reader now streams: a 224 MB log (other tasks' chatter, tracker lines, a damaged tracker line
/// per block, and a dump) is read by `read_log`, the function `run` uses, in a child process
/// (this test alone, so its peak resident size is the reader's), under 100 MB.
#[test]
fn a_long_log_is_read_streaming_in_bounded_memory() {
    const NAME: &str = "analyze::tests::a_long_log_is_read_streaming_in_bounded_memory";
    if let Some(path) = std::env::var_os("ESP_DC_LONG_LOG") {
        let log = read_log(Path::new(&path)).unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let peak = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap().to_string();
        println!(
            "CHILD {peak} tracker={} skipped={} kept={} dumps={} records={}",
            log.tracker_lines,
            log.skipped_count,
            log.skipped.len(),
            log.dumps.len(),
            log.dumps.iter().map(|d| d.records.len()).sum::<usize>()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.txt");
    let mut block = String::new();
    for i in 0..40 {
        block.push_str(&format!("I ({i}) wifi: sta rssi {i} channel 6, other tasks print lines of this length\n"));
    }
    block.push_str("MEMTRACK snapshot label=connected heap=internal free=300812 min_free=297000 largest=172032\n");
    block.push_str("MEMTRACK snapshot label=connected heap=internal free=1 free=2 min_free=3 largest=4\n");
    let blocks = (224u64 << 20) / block.len() as u64;
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        out.write_all(CLEAN_DUMP.as_bytes()).unwrap();
        for _ in 0..blocks {
            out.write_all(block.as_bytes()).unwrap();
        }
    }
    let sh = xshell::Shell::new().unwrap();
    let test_binary = std::env::current_exe().unwrap();
    let child = xshell::cmd!(sh, "{test_binary} {NAME} --exact --nocapture --test-threads=1")
        .env("ESP_DC_LONG_LOG", &path)
        .quiet()
        .ignore_status()
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(child.status.success(), "{stdout}\n{stderr}");
    let line = stdout.lines().find_map(|l| l.find("CHILD ").map(|at| &l[at..])).unwrap_or_else(|| panic!("{stdout}"));
    let kb: u64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(kb < 100 * 1024, "peak resident {kb} kB reading a 224 MB log: {line}");
    assert!(
        line.ends_with(&format!(
            "tracker={} skipped={blocks} kept={} dumps=1 records=2",
            2 * blocks + 1,
            log::SKIPPED_KEPT
        )),
        "{line}"
    );
    assert!(
        stderr.contains(&format!("analyze: read 16 of {} MiB of ", std::fs::metadata(&path).unwrap().len() >> 20)),
        "no progress line: {stderr}"
    );
}
