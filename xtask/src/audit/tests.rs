//! The fixture tree lab/fixtures/audit/ holds known sites of every kind; the counts below are
//! those of its files (each line is commented there when it is *not* a site).

use super::*;

fn fixture_root() -> PathBuf {
    project_root().join("lab/fixtures/audit")
}

/// The fixture's compile commands, as if its sources had been staged under /stack-src.
fn compiled() -> Compiled {
    Compiled::read(&fixture_root().join("compile_commands.json"), Path::new("/stack-src")).unwrap()
}

fn scan_tree(root: &Path, policy: &Policy) -> Result<Vec<Site>> {
    super::scan_tree(root, policy, &compiled())
}

fn policy(name: &str) -> Policy {
    Policy::load(&Policy::path_for(name)).unwrap()
}

fn sites_of<'a>(sites: &'a [Site], component: &str) -> Vec<&'a Site> {
    sites.iter().filter(|s| s.component == component).collect()
}

/// (file:line, kind, call, covered) of a component's sites, in scan order.
fn table(sites: &[Site], component: &str) -> Vec<(String, &'static str, String, bool)> {
    sites_of(sites, component)
        .iter()
        .map(|s| (format!("{}:{}", s.file, s.line), s.kind.as_str(), s.call.clone(), s.covered))
        .collect()
}

fn row(at: &str, kind: &'static str, call: &str, covered: bool) -> (String, &'static str, String, bool) {
    (at.to_string(), kind, call.to_string(), covered)
}

#[test]
fn c_sites_wrappers_and_dead_branches_under_lean() {
    let sites = scan_tree(&fixture_root(), &policy("lean")).unwrap();
    assert_eq!(
        table(&sites, "libjuice"),
        vec![
            row("upstream/include/juice/juice.h:2", "c-alloc", "calloc", true),
            row("upstream/src/agent.c:5", "c-alloc", "malloc", true),
            row("upstream/src/agent.c:6", "c-alloc", "calloc", true),
            row("upstream/src/agent.c:7", "c-alloc", "realloc", true),
            row("upstream/src/agent.c:8", "libc-alloc", "strdup", false),
            row("upstream/src/agent.c:9", "caps-alloc", "heap_caps_malloc", true),
            row("upstream/src/agent.c:10", "thread", "thread_init → pthread_create", true),
            row("upstream/src/agent.c:11", "task", "xTaskCreate", false),
            row("upstream/src/agent.c:18", "c-alloc", "malloc", true),
            row("upstream/src/agent.c:21", "thread", "pthread_create", true),
            row("upstream/src/agent.c:22", "thread", "pthread_create", true),
        ]
    );
    let stack = |line: u32| {
        sites
            .iter()
            .find(|s| s.component == "libjuice" && s.line == line && s.file.ends_with("agent.c"))
            .unwrap()
            .stack
            .clone()
    };
    assert_eq!(stack(11).as_deref(), Some("4096"), "xTaskCreate's third argument");
    assert_eq!(stack(21).as_deref(), Some("8192"), "pthread_attr_setstacksize before the create");
    assert_eq!(stack(22).as_deref(), Some("inherited 15360"), "NULL attributes: lean's esp_pthread_cfg_t");
    assert_eq!(
        table(&sites, "usrsctp"),
        vec![
            row("upstream/usrsctplib/user_mbuf.c:3", "c-alloc", "SCTP_MALLOC → malloc", true),
            row("upstream/usrsctplib/user_mbuf.c:4", "c-alloc", "SCTP_ZONE_GET → malloc", true),
        ]
    );
    assert_eq!(
        table(&sites, "libsrtp"),
        vec![
            row("upstream/crypto/kernel/alloc.c:3", "c-alloc", "calloc", true),
            row("upstream/crypto/kernel/alloc.c:8", "c-alloc", "srtp_crypto_alloc → calloc", true),
            row("upstream/crypto/kernel/alloc.c:9", "mbedtls-alloc", "mbedtls_calloc", true),
        ]
    );
    assert_eq!(
        table(&sites, "esp_dc_port"),
        vec![
            row("src/alloc.c:3", "c-alloc", "malloc", true),
            row("src/alloc.c:5", "caps-alloc", "heap_caps_malloc", true)
        ]
    );
    assert_eq!(table(&sites, "plog"), vec![row("upstream/include/plog/Record.h:4", "libc-alloc", "vasprintf", false)]);
    assert!(!sites.iter().any(|s| s.file.contains("unlisted") || s.file.contains("test/")), "only compiled sources");
}

#[test]
fn cxx_sites_follow_operator_new_placement() {
    let lean = scan_tree(&fixture_root(), &policy("lean")).unwrap();
    let expected = |new_covered: bool| {
        vec![
            row("upstream/src/peer.cpp:3", "c++-new", "std::make_shared", new_covered),
            row("upstream/src/peer.cpp:4", "c++-new", "std::make_unique", new_covered),
            row("upstream/src/peer.cpp:5", "c++-new", "new[]", new_covered),
            row("upstream/src/peer.cpp:6", "c++-new", "new", new_covered),
            row("upstream/src/peer.cpp:7", "c++-new", "new", new_covered),
            row("upstream/src/peer.cpp:9", "container", "std::vector", new_covered),
            row("upstream/src/peer.cpp:10", "container", "std::map", new_covered),
            row("upstream/src/peer.cpp:11", "container", "std::function", new_covered),
            row("upstream/src/peer.cpp:12", "thread", "std::thread", true),
            row("upstream/src/peer.cpp:13", "thread", "std::thread", true),
            // malloc in C++ escapes the redirect under every policy.
            row("upstream/src/peer.cpp:15", "c-alloc", "malloc", false),
            row("upstream/src/peer.cpp:23", "c++-new", "std::make_shared", new_covered),
        ]
    };
    assert_eq!(table(&lean, "libdatachannel"), expected(true));
    let stock = scan_tree(&fixture_root(), &policy("stock")).unwrap();
    assert_eq!(table(&stock, "libdatachannel"), expected(false));
    let malloc_in_cxx = lean.iter().find(|s| s.line == 15 && s.component == "libdatachannel").unwrap();
    assert!(malloc_in_cxx.placement.contains("C++"), "{}", malloc_in_cxx.placement);
}

#[test]
fn stock_leaves_libsrtp_unredirected_and_summary_counts_it() {
    let sites = scan_tree(&fixture_root(), &policy("stock")).unwrap();
    let libsrtp: Vec<(bool, &str)> =
        sites_of(&sites, "libsrtp").iter().map(|s| (s.covered, s.placement.as_str())).collect();
    assert_eq!(
        libsrtp,
        vec![
            (false, "no redirect force-included: default heap"),
            (false, "no redirect force-included: default heap"),
            (true, "mbedTLS allocator → internal"),
        ]
    );
    let summary = summarize(&sites, &[]);
    let of = |c: &str| summary.iter().find(|s| s.component == c).cloned().unwrap();
    assert_eq!((of("libsrtp").sites, of("libsrtp").covered, of("libsrtp").uncovered), (3, 1, 2));
    assert_eq!((of("libdatachannel").sites, of("libdatachannel").covered, of("libdatachannel").uncovered), (12, 2, 10));
    assert_eq!((of("libjuice").sites, of("libjuice").covered, of("libjuice").uncovered), (11, 9, 2));
}

#[test]
fn measured_bytes_mark_sites_and_rank_the_uncovered() {
    let policy = policy("lean");
    let mut sites = scan_tree(&fixture_root(), &policy).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("lab.json");
    // The lab's paths are relative to libdatachannel's source root, its lines a little off.
    std::fs::write(
        &lab,
        r#"[
          {"policy": "lean", "scenario": "datachannel",
           "sites": [
             {"component": "libjuice", "file": "deps/libjuice/src/agent.c", "line": 9, "function": "agent_create", "bytes": 100, "count": 1},
             {"component": "libjuice", "file": "deps/libjuice/src/agent.c", "line": 8, "function": "agent_create", "bytes": 40, "count": 1},
             {"component": "libdatachannel", "file": "src/peer.cpp", "line": 40, "function": "f", "bytes": 7000, "count": 2},
             {"component": "plog", "file": "deps/plog/include/plog/Record.h", "line": 4, "function": "format", "bytes": 10, "count": 1}
           ],
           "thread_list": [{"component": "libdatachannel", "created_at": "src/peer.cpp:12 f", "requested_bytes": 15360}]},
          {"policy": "lean", "scenario": "video",
           "sites": [{"component": "libjuice", "file": "deps/libjuice/src/agent.c", "line": 8, "function": "agent_create", "bytes": 90, "count": 1}],
           "thread_list": []},
          {"policy": "stock", "scenario": "datachannel",
           "sites": [{"component": "libjuice", "file": "deps/libjuice/src/agent.c", "line": 5, "function": "agent_create", "bytes": 99999, "count": 1}],
           "thread_list": []}
        ]"#,
    )
    .unwrap();
    let measured = read_lab(&lab, "lean").unwrap();
    assert_eq!(measured.scenarios, 2);
    attach(&mut sites, &measured, &policy);
    rank(&mut sites);
    let at = |file: &str, line: u32| sites.iter().find(|s| s.file.ends_with(file) && s.line == line).unwrap();
    // Line 9 is the caps site itself; line 8 (strdup) takes the larger of its two scenarios.
    assert_eq!(at("agent.c", 9).measured_bytes, Some(100));
    assert_eq!(at("agent.c", 8).measured_bytes, Some(90));
    assert_eq!(at("agent.c", 5).measured_bytes, None, "stock's run is not lean's");
    assert_eq!(at("peer.cpp", 12).measured_bytes, Some(15360), "the thread site");
    let runtime = at("peer.cpp", 40);
    assert_eq!((runtime.kind, runtime.covered, runtime.measured_bytes), (Kind::Runtime, true, Some(7000)));
    // Uncovered and measured first, largest first; then uncovered unmeasured.
    let first: Vec<(String, Option<u64>)> =
        sites.iter().take(3).map(|s| (format!("{}:{}", s.file, s.line), s.measured_bytes)).collect();
    assert_eq!(
        first,
        vec![
            ("upstream/src/agent.c:8".to_string(), Some(90)),
            ("upstream/include/plog/Record.h:4".to_string(), Some(10)),
            ("upstream/src/peer.cpp:15".to_string(), None),
        ]
    );
    let summary = summarize(&sites, &[]);
    let juice = summary.iter().find(|s| s.component == "libjuice").unwrap();
    assert_eq!((juice.measured_bytes, juice.measured_uncovered_bytes), (190, 90));
}

#[test]
fn statics_over_the_threshold_from_an_object_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("statics.c");
    std::fs::write(&src, "char big_table[4096];\nint init_table[512] = {1};\nchar small[16];\nstatic char file_local[2048];\nchar *use(void) { return file_local; }\n").unwrap();
    let obj = dir.path().join("statics.o");
    let sh = xshell::Shell::new().unwrap();
    xshell::cmd!(sh, "cc -m32 -c -o {obj} {src}").quiet().run().unwrap();
    let libraries = BTreeMap::from([("usrsctp".to_string(), obj)]);
    let found: Vec<(String, u64, String)> =
        statics(&libraries, 1024).unwrap().into_iter().map(|o| (o.symbol, o.bytes, o.section)).collect();
    assert_eq!(
        found,
        vec![
            ("big_table".into(), 4096, ".bss".into()),
            ("file_local".into(), 2048, ".bss".into()),
            ("init_table".into(), 2048, ".data".into())
        ]
    );
}

#[test]
fn component_definitions_come_from_the_compile_commands() {
    let compiled = compiled();
    let sources: Vec<(&str, &str)> = compiled.sources.keys().map(|(c, f)| (c.as_str(), f.as_str())).collect();
    assert_eq!(
        sources,
        [
            ("libdatachannel", "upstream/src/peer.cpp"),
            ("libjuice", "upstream/src/agent.c"),
            ("libsrtp", "upstream/crypto/kernel/alloc.c"),
            ("usrsctp", "upstream/usrsctplib/user_mbuf.c"),
        ],
        "deps/<dir>/ is the component's upstream/, the top is libdatachannel's; a relative file counts from its directory"
    );
    let defines = compiled.defines("libjuice", "upstream/src/agent.c");
    assert_eq!(defines.get("JUICE_STATIC"), Some(&Some(1)));
    assert_eq!(defines.get("USE_FOO"), Some(&Some(0)));
    assert_eq!(defines.get("ESP_DC_ALLOC_CAPS"), Some(&None), "defined, value unknown");
    assert_eq!(defines.get("JUICE_VERSION"), Some(&None), "a quoted string value");
    assert_eq!(defines.get("JUICE_EXPORTS"), Some(&Some(1)), "`-D NAME`");
    assert_eq!(defines.get("ESP_PLATFORM"), Some(&Some(1)));
    assert!(!defines.contains_key("RTC_ENABLE_WEBSOCKET"), "another component's: {defines:?}");
    // A header gets its component's definitions.
    let header = compiled.defines("libjuice", "upstream/include/juice/juice.h");
    assert_eq!(header.get("USE_FOO"), Some(&Some(0)));
    assert_eq!(command_defines(r#"cc "-DA=1 2" -DB=\"x\" -c f.c"#).keys().collect::<Vec<_>>(), ["A", "B"]);
}

#[test]
fn unconfigured_or_other_policy_tree_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let err = configured_policy(dir.path(), None).unwrap_err();
    let f = err.downcast_ref::<exit::Failure>().unwrap();
    assert_eq!(f.code, 2);
    assert!(f.message.contains("run `cargo xtask configure"), "{}", f.message);
    // A tree configured for stock is not audited as lean.
    layout::configure_into(dir.path(), &Policy::path_for("stock"), false, false).unwrap();
    assert_eq!(configured_policy(dir.path(), None).unwrap().policy.name, "stock");
    let err = configured_policy(dir.path(), Some("lean")).unwrap_err();
    let f = err.downcast_ref::<exit::Failure>().unwrap();
    assert_eq!(f.code, 2);
    assert!(f.message.contains("configured for `stock`") && f.message.contains("--policy lean"), "{}", f.message);
}

/// The shipped lean policy on the configured tree: every uncovered site is one docs/lab.md
/// lists with its reason (plog's two printf helpers); libsrtp is covered.
#[test]
fn lean_on_the_real_tree_leaves_only_the_listed_sites() {
    let dir = tempfile::tempdir().unwrap();
    layout::configure_into(dir.path(), &Policy::path_for("lean"), false, false).unwrap();
    let policy = configured_policy(dir.path(), Some("lean")).unwrap();
    let replica = crate::replica::build(&policy).unwrap();
    let compiled = Compiled::read(&replica.compile_commands, &replica.stack_src).unwrap();
    let sites = super::scan_tree(dir.path(), &policy, &compiled).unwrap();
    let uncovered: Vec<String> = sites
        .iter()
        .filter(|s| !s.covered)
        .map(|s| format!("{} {}:{} {}", s.component, s.file, s.line, s.call))
        .collect();
    assert!(uncovered.iter().all(|u| u.starts_with("plog ")), "{uncovered:#?}");
    assert_eq!(uncovered.len(), 2, "{uncovered:#?}");
    assert!(sites.iter().any(|s| s.component == "libsrtp" && s.covered));
    assert!(sites.iter().filter(|s| s.kind == Kind::Thread).count() >= 4, "pool, usrsctp, libjuice threads");
}
