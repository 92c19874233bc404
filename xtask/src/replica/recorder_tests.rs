//! Recorder defects of issue 17, each shown by a program that trips it: `lab/fixtures/recorder/
//! defects/preloaded.c` runs with the recorder preloaded (one case per run), `table_unit.cpp`
//! includes recorder.cpp and calls its internals. Needs g++-multilib (scripts/setup.sh).

use super::build_recorder;
use super::tools::compiler;
use super::trace::{self, Event, Trace};
use crate::fsutil::project_root;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn defects_dir() -> PathBuf {
    project_root().join("lab/fixtures/recorder/defects")
}

fn compile(cpp: bool, args: &[String], out: &Path) {
    let sh = xshell::Shell::new().unwrap();
    let output = compiler(&sh, cpp)
        .args(args)
        .arg("-o")
        .arg(out)
        .quiet()
        .ignore_status()
        .output()
        .expect("a C compiler (run scripts/setup.sh)");
    assert!(output.status.success(), "compiling {}:\n{}", out.display(), String::from_utf8_lossy(&output.stderr));
}

/// Runs `command` (a command line after `timeout`) for at most `limit`; None when it had to be
/// killed. Returns (status, stdout). `timeout` ends the program with SIGTERM and exits 124; a
/// program that needs `LD_PRELOAD` gets it through `env` on its command line, so that `timeout`
/// itself is not recorded.
fn run_for(sh: &xshell::Shell, command: &[String], limit: Duration) -> (Option<std::process::ExitStatus>, String) {
    let seconds = limit.as_secs().to_string();
    let output = xshell::cmd!(sh, "timeout {seconds} {command...}").quiet().ignore_status().output().unwrap();
    // The program's diagnostics go where they went before: to the test's stderr.
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    let status = (output.status.code() != Some(124)).then_some(output.status);
    (status, String::from_utf8_lossy(&output.stdout).into_owned())
}

struct Preloaded {
    dir: tempfile::TempDir,
    exe: PathBuf,
    recorder: PathBuf,
}

fn preloaded() -> Preloaded {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("preloaded");
    let src = defects_dir().join("preloaded.c").to_string_lossy().into_owned();
    compile(false, &["-g".into(), "-O1".into(), "-rdynamic".into(), src, "-ldl".into(), "-lpthread".into()], &exe);
    let recorder = build_recorder(dir.path(), &project_root().join("lab/recorder")).unwrap();
    Preloaded { dir, exe, recorder }
}

/// Runs one case of preloaded.c with the recorder; returns (status, stdout, trace path).
fn run_case(p: &Preloaded, case: &str, env: &[(&str, &str)]) -> (Option<std::process::ExitStatus>, String, PathBuf) {
    let trace_path = p.dir.path().join(format!("{case}.trace"));
    let mut command = vec![
        "env".to_string(),
        format!("LD_PRELOAD={}", p.recorder.display()),
        format!("LAB_TRACE={}", trace_path.display()),
        "LAB_DEFAULT_STACK_BYTES=4096".to_string(),
    ];
    command.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    command.extend([p.exe.display().to_string(), case.to_string()]);
    let sh = xshell::Shell::new().unwrap();
    let (status, stdout) = run_for(&sh, &command, Duration::from_secs(120));
    (status, stdout, trace_path)
}

fn parse_file(path: &Path) -> Trace {
    trace::parse(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_full_log_is_an_error_not_a_complete_trace() {
    let p = preloaded();
    let (status, _, path) = run_case(&p, "overflow", &[("LAB_LOG_BYTES", "65536")]);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let t = parse_file(&path);
    assert!(t.lost_events > 0, "the log held 64 KiB, the program made 20,000 events");
    let err = trace::read(&path).unwrap_err().to_string();
    assert!(err.contains("log was full") && err.contains("LAB_LOG_BYTES"), "{err}");
}

#[test]
fn a_trace_whose_header_says_full_is_refused() {
    let header = trace::ffi::lab_trace_header {
        magic: trace::ffi::LAB_TRACE_MAGIC,
        pointer_bytes: 4,
        flags: trace::ffi::LAB_TRACE_FULL,
        lost_events: 7,
        ..Default::default()
    };
    let mut bytes = vec![0u8; std::mem::size_of_val(&header)];
    // SAFETY: a plain-old-data struct copied into a buffer of its size.
    unsafe { std::ptr::copy_nonoverlapping(&header as *const _ as *const u8, bytes.as_mut_ptr(), bytes.len()) };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.trace"), &bytes).unwrap();
    let err = trace::read(&dir.path().join("t.trace")).unwrap_err().to_string();
    assert!(err.contains("7 event(s)"), "{err}");
}

#[test]
fn lab_finish_skips_and_counts_an_event_still_being_written() {
    let p = preloaded();
    let (status, _, path) = run_case(&p, "stall", &[]);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let t = parse_file(&path);
    // The stalled malloc's event had its slot but not its address and size yet.
    let bogus: Vec<_> = t
        .records
        .iter()
        .filter(|r| matches!(r.event, Event::Alloc { addr: 0, .. } | Event::Alloc { size: 0, .. }))
        .collect();
    assert!(bogus.is_empty(), "half-written events in the trace: {bogus:?}");
    assert_eq!(t.unpublished_events, 1);
    let err = trace::read(&path).unwrap_err().to_string();
    assert!(err.contains("still being written"), "{err}");
}

#[test]
fn a_thread_whose_recorder_mapping_fails_is_refused_cleanly() {
    let p = preloaded();
    let (status, stdout, path) = run_case(&p, "thread-mmap-fails", &[]);
    assert!(status.is_some_and(|s| s.success()), "{status:?} {stdout}");
    // No small mapping per thread any more; a stack that cannot be mapped is EAGAIN, as in glibc.
    assert_eq!(stdout.trim(), "small=0 large=11");
    let t = trace::read(&path).unwrap();
    let created = t.records.iter().filter(|r| matches!(r.event, Event::ThreadCreate { .. })).count();
    let ended = t.records.iter().filter(|r| matches!(r.event, Event::ThreadEnd { .. })).count();
    assert_eq!((created, ended), (1, 1));
}

#[test]
fn a_thread_gets_the_stack_it_asked_for_beyond_one_mib() {
    let p = preloaded();
    let (status, _, path) = run_case(&p, "big-stack", &[]);
    assert!(status.is_some_and(|s| s.success()), "a thread asking for 4 MiB and using 2 MiB: {status:?}");
    let t = trace::read(&path).unwrap();
    let requested = t.records.iter().find_map(|r| match r.event {
        Event::ThreadCreate { requested, .. } => Some(requested),
        _ => None,
    });
    let high_water = t.records.iter().find_map(|r| match r.event {
        Event::ThreadEnd { high_water, .. } => Some(high_water),
        _ => None,
    });
    assert_eq!(requested, Some(4 << 20));
    let hw = high_water.unwrap();
    assert!((2 << 20..(2 << 20) + (128 << 10)).contains(&hw), "high-water {hw}");
}

#[test]
fn sockets_are_recorded_by_their_type_without_flags() {
    let p = preloaded();
    let (status, _, path) = run_case(&p, "sockets", &[]);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let t = trace::read(&path).unwrap();
    let kinds: Vec<u32> = t
        .records
        .iter()
        .filter_map(|r| match r.event {
            Event::Socket { kind, domain: 2 /* AF_INET */, .. } => Some(kind),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, [2 /* SOCK_DGRAM */, 1 /* SOCK_STREAM */]);
}

fn table_unit(case: &str, limit: Duration) -> (Option<std::process::ExitStatus>, String) {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("table_unit");
    let recorder = project_root().join("lab/recorder");
    compile(
        true,
        &[
            "-std=c++17".into(),
            "-O2".into(),
            format!("-I{}", recorder.display()),
            defects_dir().join("table_unit.cpp").to_string_lossy().into_owned(),
            "-ldl".into(),
            "-lpthread".into(),
        ],
        &exe,
    );
    let sh = xshell::Shell::new().unwrap();
    run_for(&sh, &[exe.display().to_string(), case.to_string()], limit)
}

fn assert_ok(case: &str, (status, stdout): (Option<std::process::ExitStatus>, String)) {
    let Some(status) = status else { panic!("`{case}` did not finish in time: {stdout}") };
    assert!(status.success() && stdout.contains("ok"), "`{case}`: {status} {stdout}");
}

#[test]
fn sync_table_reuses_the_slot_of_a_destroyed_object() {
    // 1.2 million lock/destroy cycles of one address take well under a second with reuse; without
    // it every cycle took a new slot, probes grew with each, and the table never ended a probe.
    assert_ok("reuse", table_unit("reuse", Duration::from_secs(90)));
}

#[test]
fn sync_table_that_is_full_ends_its_probe_and_counts_what_it_missed() {
    assert_ok("full", table_unit("full", Duration::from_secs(90)));
}

#[test]
fn sync_table_is_mapped_once_when_threads_meet_it_together() {
    assert_ok("race", table_unit("race", Duration::from_secs(90)));
}

#[test]
fn realloc_of_a_bootstrap_block_copies_the_block_not_past_the_arena() {
    assert_ok("bootstrap-realloc", table_unit("bootstrap-realloc", Duration::from_secs(90)));
}
