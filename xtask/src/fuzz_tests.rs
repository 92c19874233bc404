//! Fuzzing the four readers of outside input (issue 18): the policy reader, the device log
//! reader (`analyze`), the GNU linker map reader and the json2 reader (`size-check`). The
//! property is the same for each: whatever the input, the reader returns (Ok or Err) and does
//! not panic.
//!
//! Inputs come from four generators: arbitrary strings, arbitrary bytes (read as lossy UTF-8,
//! as `analyze` reads a log), a soup of the fixture's own words and separators, and the
//! committed fixtures mutated (bit flips, bytes set, line deletions, duplications and moves,
//! numbers replaced by huge ones such as u64::MAX, 2^63, 2^64 or negative, text inserted,
//! truncation at a random point, CR-only / CRLF / mixed line endings).
//!
//! Budget: `ESP_DC_FUZZ_CASES` cases per reader (default [`DEFAULT_CASES`], all four together
//! well under a minute), seed `ESP_DC_FUZZ_SEED` (default: random, printed). Longer run, by
//! cases or by time (rounds of the cases with the next seed until `ESP_DC_FUZZ_SECONDS` passed):
//! `ESP_DC_FUZZ_CASES=2000000 cargo test -p xtask fuzz_ -- --nocapture --test-threads=1`,
//! `ESP_DC_FUZZ_SECONDS=600 cargo test -p xtask fuzz_json2 -- --nocapture`.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Cases per reader when `ESP_DC_FUZZ_CASES` is unset: 2-6 s per reader, about 15 s for all four
/// (2-core machine, the test profile).
const DEFAULT_CASES: u32 = 50_000;

const POLICY_LEAN: &str = include_str!("../../policies/lean.toml");
const POLICY_STOCK: &str = include_str!("../../policies/stock.toml");
const DEVICE_LOG: &str = include_str!("../../lab/fixtures/analyze/device-log.txt");
const APP_MAP: &str = include_str!("../../lab/fixtures/size/app.map");
const JSON2: &str = include_str!("../../lab/fixtures/size/size-components.json");

/// Numbers a damaged or hostile input may hold where a size, address or count belongs.
const HUGE: &[&str] = &[
    "18446744073709551615", // u64::MAX
    "18446744073709551616", // 2^64
    "9223372036854775808",  // 2^63
    "9223372036854775807",  // i64::MAX
    "-9223372036854775808", // i64::MIN
    "-9223372036854775809", // i64::MIN - 1
    "-1",
    "-0",
    "0",
    "4294967295", // u32::MAX
    "4294967296", // 2^32
    "2147483648", // 2^31
    "0xffffffffffffffff",
    "0x8000000000000000",
    "0x10000000000000000",
    "0xFFFFFFFF",
    "0x",
    "-0x1",
    "340282366920938463463374607431768211456", // 2^128
    "99999999999999999999999999999999999999999999",
    "1e308",
    "1e309",
    "-1e309",
    "1.5",
    "nan",
    "inf",
];

#[derive(Debug, Clone, Copy)]
enum Ending {
    /// Every `\n` becomes `\r` (a CR-only log).
    Cr,
    /// Every `\n` becomes `\r\n`.
    CrLf,
    /// Each `\n` becomes `\n`, `\r\n` or `\r`, by the bits of the seed.
    Mixed(u64),
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    SetByte {
        at: usize,
        byte: u8,
    },
    DeleteLine(usize),
    DuplicateLine(usize),
    MoveLine {
        from: usize,
        to: usize,
    },
    /// Replaces the `nth` number in the text (decimal, optionally negative, or 0x hex).
    HugeNumber {
        nth: usize,
        value: &'static str,
    },
    InsertNumber {
        at: usize,
        value: &'static str,
    },
    Insert {
        at: usize,
        text: String,
    },
    DeleteRange {
        at: usize,
        len: usize,
    },
    Truncate(usize),
    Endings(Ending),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let huge = proptest::sample::select(HUGE);
    prop_oneof![
        1 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte { at, byte }),
        1 => any::<usize>().prop_map(Mutation::DeleteLine),
        1 => any::<usize>().prop_map(Mutation::DuplicateLine),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(from, to)| Mutation::MoveLine { from, to }),
        3 => (any::<usize>(), huge.clone()).prop_map(|(nth, value)| Mutation::HugeNumber { nth, value }),
        1 => (any::<usize>(), huge).prop_map(|(at, value)| Mutation::InsertNumber { at, value }),
        1 => (any::<usize>(), ".{0,24}").prop_map(|(at, text)| Mutation::Insert { at, text }),
        1 => (any::<usize>(), 0usize..200).prop_map(|(at, len)| Mutation::DeleteRange { at, len }),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => prop_oneof![Just(Ending::Cr), Just(Ending::CrLf), any::<u64>().prop_map(Ending::Mixed)].prop_map(Mutation::Endings),
    ]
}

/// Byte ranges of each line, its terminator included.
fn line_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            spans.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < bytes.len() {
        spans.push((start, bytes.len()));
    }
    spans
}

/// Byte ranges of the numbers in the text: `-`? digits, or `0x` hex digits, not inside a word.
fn number_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let word_before = i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if bytes[i].is_ascii_digit() && !word_before {
            let start = if i > 0 && bytes[i - 1] == b'-' { i - 1 } else { i };
            let mut end = i + 1;
            if bytes[i] == b'0' && bytes.get(i + 1) == Some(&b'x') {
                end = i + 2;
                while end < bytes.len() && bytes[end].is_ascii_hexdigit() {
                    end += 1;
                }
            } else {
                while end < bytes.len() && bytes[end].is_ascii_digit() {
                    end += 1;
                }
            }
            spans.push((start, end));
            i = end;
        } else {
            i += 1;
        }
    }
    spans
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    let pick = |at: usize, n: usize| if n == 0 { 0 } else { at % n };
    match m {
        Mutation::FlipBit { at, bit } if len > 0 => bytes[at % len] ^= 1 << bit,
        Mutation::SetByte { at, byte } if len > 0 => bytes[at % len] = *byte,
        Mutation::DeleteLine(n) => {
            let lines = line_spans(bytes);
            if !lines.is_empty() {
                let (s, e) = lines[n % lines.len()];
                bytes.drain(s..e);
            }
        }
        Mutation::DuplicateLine(n) => {
            let lines = line_spans(bytes);
            if !lines.is_empty() {
                let (s, e) = lines[n % lines.len()];
                let line = bytes[s..e].to_vec();
                bytes.splice(e..e, line);
            }
        }
        Mutation::MoveLine { from, to } => {
            let lines = line_spans(bytes);
            if !lines.is_empty() {
                let (s, e) = lines[from % lines.len()];
                let line: Vec<u8> = bytes.drain(s..e).collect();
                let lines = line_spans(bytes);
                let at = if lines.is_empty() { 0 } else { lines[to % lines.len()].0 };
                bytes.splice(at..at, line);
            }
        }
        Mutation::HugeNumber { nth, value } => {
            let numbers = number_spans(bytes);
            if !numbers.is_empty() {
                let (s, e) = numbers[nth % numbers.len()];
                bytes.splice(s..e, value.bytes());
            }
        }
        Mutation::InsertNumber { at, value } => {
            let at = pick(*at, len + 1);
            bytes.splice(at..at, value.bytes());
        }
        Mutation::Insert { at, text } => {
            let at = pick(*at, len + 1);
            bytes.splice(at..at, text.bytes());
        }
        Mutation::DeleteRange { at, len: n } => {
            let at = pick(*at, len + 1);
            bytes.drain(at..(at + n).min(len));
        }
        Mutation::Truncate(at) => bytes.truncate(pick(*at, len + 1)),
        Mutation::Endings(ending) => {
            let mut out = Vec::with_capacity(len + len / 16);
            let mut bits = match ending {
                Ending::Mixed(seed) => *seed,
                _ => 0,
            };
            for &b in bytes.iter() {
                if b != b'\n' {
                    out.push(b);
                    continue;
                }
                let choice = match ending {
                    Ending::Cr => 2,
                    Ending::CrLf => 1,
                    Ending::Mixed(_) => {
                        let c = bits % 3;
                        bits = bits.rotate_right(7) ^ 0x9e37_79b9_7f4a_7c15;
                        c
                    }
                };
                match choice {
                    0 => out.push(b'\n'),
                    1 => out.extend_from_slice(b"\r\n"),
                    _ => out.push(b'\r'),
                }
            }
            *bytes = out;
        }
        _ => {}
    }
}

/// The fixture's words and separators, to recombine into text that looks like the format.
fn vocabulary(fixtures: &[&'static str]) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for fixture in fixtures {
        for line in fixture.lines() {
            for word in line.split_whitespace() {
                words.push(word.to_string());
            }
            words.push(line.to_string());
        }
    }
    for s in [
        "\n",
        "\r",
        "\r\n",
        " ",
        "  ",
        "\t",
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "\"",
        "=",
        "(",
        ")",
        "0x",
        "\x1b[0;32m",
        "\x1b[",
    ] {
        words.push(s.to_string());
    }
    words.extend(HUGE.iter().map(|s| s.to_string()));
    words.sort();
    words.dedup();
    words
}

/// Any input for a reader whose fixtures are `fixtures`.
fn input(fixtures: &'static [&'static str]) -> impl Strategy<Value = String> {
    let words = vocabulary(fixtures);
    let mutated = (proptest::sample::select(fixtures), proptest::collection::vec(mutation(), 1..8)).prop_map(
        |(fixture, mutations)| {
            let mut bytes = fixture.as_bytes().to_vec();
            for m in &mutations {
                apply(&mut bytes, m);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        },
    );
    let soup = proptest::collection::vec(proptest::sample::select(words), 0..200).prop_map(|w| w.concat());
    prop_oneof![
        1 => any::<String>(),
        1 => proptest::collection::vec(any::<u8>(), 0..4096).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        2 => soup,
        6 => mutated,
    ]
}

/// Runs `reader` on `ESP_DC_FUZZ_CASES` inputs; fails with the (shrunk) input that panicked.
/// `reader` says whether it read the input (Ok), to show how deep the inputs reach.
fn fuzz(name: &str, fixtures: &'static [&'static str], reader: impl Fn(&str) -> bool) {
    let cases = std::env::var("ESP_DC_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES);
    let seed = std::env::var("ESP_DC_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    // ESP_DC_FUZZ_SECONDS: keep running rounds of `cases` (seed, seed + 1, ...) until that long.
    let seconds = std::env::var("ESP_DC_FUZZ_SECONDS").ok().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let ran = AtomicU64::new(0);
    let read = AtomicU64::new(0);
    let start = Instant::now();
    let mut round = 0u64;
    let result = loop {
        let config = Config {
            cases,
            failure_persistence: None,
            rng_seed: RngSeed::Fixed(seed.wrapping_add(round)),
            ..Config::default()
        };
        let result = TestRunner::new(config).run(&input(fixtures), |text| {
            ran.fetch_add(1, Ordering::Relaxed);
            let ok = catch_unwind(AssertUnwindSafe(|| reader(&text))).map_err(|panic| {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                TestCaseError::fail(format!("{name} panicked (ESP_DC_FUZZ_SEED={}): {what}", seed.wrapping_add(round)))
            })?;
            read.fetch_add(u64::from(ok), Ordering::Relaxed);
            Ok(())
        });
        round += 1;
        if result.is_err() || start.elapsed().as_secs_f64() >= seconds {
            break result;
        }
    };
    let elapsed = start.elapsed();
    eprintln!(
        "{name}: {} inputs ({} read Ok; {round} round(s) of {cases} cases) in {:.1} s, seed {seed} (ESP_DC_FUZZ_SEED={seed} repeats it): {}",
        ran.load(Ordering::Relaxed),
        read.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        if result.is_ok() { "no panic" } else { "PANIC" }
    );
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, text)) => panic!("{reason}\nminimal input ({} bytes): {text:?}", text.len()),
        Err(TestError::Abort(reason)) => panic!("{name}: fuzzing aborted: {reason}"),
    }
}

fn policy_path() -> PathBuf {
    crate::fsutil::project_root().join("policies/fuzz.toml")
}

/// Budgets to check sizes against: lean's, all of them.
fn lean_budgets() -> std::collections::BTreeMap<String, crate::policy::StaticBudget> {
    crate::policy::Policy::parse(POLICY_LEAN, &policy_path()).expect("lean.toml reads").budgets.static_
}

#[test]
fn fuzz_policy() {
    let path = policy_path();
    let sizes = crate::static_sizes::parse_json2(JSON2).expect("the json2 fixture reads");
    fuzz("policy", &[POLICY_LEAN, POLICY_STOCK], |text| {
        let Ok(policy) = crate::policy::Policy::parse(text, &path) else { return false };
        // What configure and size-check then read from it.
        let _ = policy.thread_stack_bytes();
        for spec in crate::policy::KNOBS {
            let _ = policy.knob_value(spec);
        }
        let _ = crate::size_check::check(&policy.budgets.static_, &sizes, false);
        let _ = crate::size_check::check(&policy.budgets.static_, &sizes, true);
        true
    });
}

#[test]
fn fuzz_device_log() {
    use crate::analyze::{build_report, data_lost, log, render, Args};
    let args =
        Args { log: Path::new("fuzz.log").into(), elf: None, map: None, json: None, policy: "lean".into(), top: 10 };
    fuzz("device log", &[DEVICE_LOG], |text| {
        // What `analyze LOG` does without --elf: read, report, print, JSON, verdict.
        let parsed = log::parse(text);
        let report = build_report(&parsed, None, &args.policy, args.top);
        let _ = render(&report, &args);
        let _ = serde_json::to_string_pretty(&report);
        let _ = data_lost(&parsed);
        // Deep enough: a dump with records was read.
        parsed.dumps.iter().any(|d| !d.records.is_empty())
    });
}

#[test]
fn fuzz_linker_map() {
    let budgets = lean_budgets();
    fuzz("linker map", &[APP_MAP], |text| {
        let _ = crate::static_sizes::parse_map_lines(text);
        let Ok(sizes) = crate::static_sizes::parse_map(text) else { return false };
        let _ = crate::size_check::check(&budgets, &sizes, false);
        true
    });
}

#[test]
fn fuzz_json2() {
    let budgets = lean_budgets();
    fuzz("json2", &[JSON2], |text| {
        let Ok(sizes) = crate::static_sizes::parse_json2(text) else { return false };
        let _ = crate::size_check::check(&budgets, &sizes, false);
        true
    });
}

/// The mutators themselves: each one changes what it says, on a small text.
#[test]
fn fuzz_mutations_do_what_they_say() {
    let run = |m: Mutation| {
        let mut bytes = b"a=1\nb=0x10\nc=-7\n".to_vec();
        apply(&mut bytes, &m);
        String::from_utf8(bytes).unwrap()
    };
    assert_eq!(run(Mutation::DeleteLine(1)), "a=1\nc=-7\n");
    assert_eq!(run(Mutation::DuplicateLine(0)), "a=1\na=1\nb=0x10\nc=-7\n");
    assert_eq!(run(Mutation::MoveLine { from: 0, to: 1 }), "b=0x10\na=1\nc=-7\n");
    assert_eq!(
        run(Mutation::HugeNumber { nth: 1, value: "18446744073709551615" }),
        "a=1\nb=18446744073709551615\nc=-7\n"
    );
    assert_eq!(
        run(Mutation::HugeNumber { nth: 2, value: "9223372036854775808" }),
        "a=1\nb=0x10\nc=9223372036854775808\n"
    );
    assert_eq!(run(Mutation::Truncate(6)), "a=1\nb=");
    assert_eq!(run(Mutation::Endings(Ending::Cr)), "a=1\rb=0x10\rc=-7\r");
    assert_eq!(run(Mutation::Endings(Ending::CrLf)), "a=1\r\nb=0x10\r\nc=-7\r\n");
    assert_eq!(run(Mutation::DeleteRange { at: 100, len: 5 }), "a=1\nb=0x10\nc=-7");
}

/// lean with a filled `[sdkconfig_extra]` (issue 27): the mutations reach its keys and values.
fn policy_fixtures() -> &'static [&'static str] {
    static FIXTURES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    FIXTURES.get_or_init(|| {
        let extra = POLICY_LEAN.replacen(
            "[sdkconfig_extra]\n",
            "[sdkconfig_extra]\nCONFIG_LWIP_MAX_SOCKETS = \"16\"\nCONFIG_ESP_DC_PORT_THREAD_PRIORITY = \"5\"\nCONFIG_LWIP_LOCAL_HOSTNAME = '\"cam\"'\nCONFIG_ESP_MEMTRACK_MAX_TASKS = \"16\"\nCONFIG_ESP_DC_PORT_SHIM_RANDOM = \"y\"\n",
            1,
        );
        vec![POLICY_LEAN, POLICY_STOCK, Box::leak(extra.into_boxed_str())]
    })
}

/// What configure checks `[sdkconfig_extra]` against without an ESP-IDF tree: our Kconfig files
/// (esp_dc_port's, the other components', each generated component's as rendered).
fn our_known_keys() -> crate::kconfig_keys::Known {
    use crate::kconfig_keys;
    let root = crate::fsutil::project_root();
    let generated = crate::components::generated();
    let (mut ours, mut facts) = kconfig_keys::project_kconfig(&root, &generated).unwrap();
    let template = std::fs::read_to_string(root.join("templates/Kconfig")).unwrap();
    for component in generated {
        let text = crate::render::kconfig(component, &template).unwrap();
        ours.extend(kconfig_keys::kconfig_symbols(&text));
        kconfig_keys::merge_facts(&mut facts, kconfig_keys::kconfig_facts(&text, component));
    }
    kconfig_keys::Known::new(ours).with_facts(facts)
}

/// An error as printed must not carry a control character (issue 27: a key holding a line break
/// forged a second `error:` line; an escape sequence reached the terminal). `lines` error lines
/// are allowed where several errors are joined.
fn assert_no_control_characters(message: &str, lines: bool) {
    let bad = message.chars().find(|c| c.is_control() && !(lines && *c == '\n'));
    assert!(bad.is_none(), "control character {bad:?} in the message: {message:?}");
}

/// Issue 27: the policy reader and configure's `[sdkconfig_extra]` check on policies that fill
/// it. Beyond not panicking: every error is one line without control characters, and every
/// error of the key check names the policy file.
#[test]
fn fuzz_policy_sdkconfig_extra() {
    let path = policy_path();
    let known = our_known_keys();
    fuzz("policy sdkconfig_extra", policy_fixtures(), |text| {
        let policy = match crate::policy::Policy::parse(text, &path) {
            Ok(policy) => policy,
            Err(e) => {
                assert_no_control_characters(&e.to_string(), false);
                return false;
            }
        };
        let lines = crate::render::policy_lines(&policy);
        match crate::render::check_sdkconfig_keys(&lines, &policy.sdkconfig_extra, &known, text, "p.toml") {
            Ok(_) => true,
            Err(e) => {
                let message = e.to_string();
                assert_no_control_characters(&message, true);
                assert!(message.lines().all(|l| l.starts_with("p.toml:")), "{message}");
                false
            }
        }
    });
}

const SYNC_LOG: &str = include_str!("../../lab/fixtures/analyze/device-log-sync.txt");

/// Issue 27: another task's output run into a tracker line (at a word boundary, as printf
/// interleaves whole writes) must never change a figure silently: either the log reads as the
/// clean one, or the damaged line is skipped (and `analyze` exits 1).
#[test]
fn fuzz_damaged_tracker_lines() {
    use crate::analyze::log;
    let clean = log::parse(SYNC_LOG);
    assert_eq!(clean.skipped_count, 0);
    let tracker: Vec<usize> =
        SYNC_LOG.lines().enumerate().filter(|(_, l)| l.starts_with("MEMTRACK ")).map(|(i, _)| i).collect();
    let strangers = proptest::sample::select(vec![
        "free=-3684",
        "free=3684",
        "heap=psram",
        "label=other",
        "largest=1",
        "event=dump",
        "I (5512) wifi: sta free=-3684",
        "MEMTRACK snapshot label=x heap=internal free=1 min_free=1 largest=1",
        "rssi=-40",
        "x",
        "=",
        "truncated=3",
    ]);
    let strategy = (
        proptest::sample::select(tracker),
        any::<usize>(),
        prop_oneof![strangers.prop_map(String::from), "[a-z_]{1,10}=[-0-9a-z]{0,6}", "[ -~]{1,20}"],
    );
    let cases = std::env::var("ESP_DC_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES) / 10;
    let mut runner = TestRunner::new(Config { cases: cases.max(100), failure_persistence: None, ..Config::default() });
    let result = runner.run(&strategy, |(line, at, stranger)| {
        let mut lines: Vec<String> = SYNC_LOG.lines().map(String::from).collect();
        let target = &lines[line];
        // A word boundary of the line: before one of its spaces, or its end.
        let boundaries: Vec<usize> =
            target.match_indices(' ').map(|(i, _)| i).chain(std::iter::once(target.len())).collect();
        let at = boundaries[at % boundaries.len()];
        let damaged = format!("{} {}{}", &target[..at], stranger.trim(), &target[at..]);
        if stranger.trim().is_empty() || damaged.split_whitespace().eq(target.split_whitespace()) {
            return Ok(());
        }
        lines[line] = damaged.clone();
        let read = log::parse(&(lines.join("\n") + "\n"));
        let same = read.snapshots == clean.snapshots && read.deltas == clean.deltas && read.tasks == clean.tasks;
        prop_assert!(
            read.skipped_count > 0 || same,
            "`{damaged}` changed the figures without a skipped line: {:?} / {:?}",
            read.snapshots,
            read.deltas
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Issue 27: `configure --into` on applications holding their own files where ours go (a hand
/// port, a file in a folder of ours, conflicting or duplicated sdkconfig.defaults lines, with or
/// without --replace or --dry-run). The property: no panic; an error is exit 2 and changes
/// nothing; a run that succeeds loses no file of the user's (it is in place, byte for byte, or
/// in the backup --replace made) and keeps the user's sdkconfig.defaults lines in order.
/// Each case configures a real tree (~1-2 s), so there are few: ESP_DC_FUZZ_INTO_CASES (default 6).
#[test]
fn fuzz_configure_into_applications() {
    use crate::layout::{application_root, configure_with, Options, BACKUP_PREFIX};
    let lean = crate::policy::Policy::path_for("lean");
    let files = proptest::collection::vec(
        (
            proptest::sample::select(vec![
                "components/libdatachannel/src/peerconnection.cpp",
                "components/libdatachannel/CMakeLists.txt",
                "components/libdatachannel/mine.c",
                "components/esp_dc_port/my_shim.c",
                "components/plog/upstream/include/plog/Mine.h",
                "components/sensor/CMakeLists.txt",
                "main/main.c",
            ]),
            "[a-z ]{0,12}",
        ),
        0..4,
    );
    let defaults_lines = proptest::collection::vec(
        proptest::sample::select(vec![
            "CONFIG_FREERTOS_HZ=1000",
            "CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN=16384",
            "CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN=1536",
            "CONFIG_PTHREAD_TASK_STACK_SIZE_DEFAULT=4096",
            "# CONFIG_MBEDTLS_DYNAMIC_BUFFER is not set",
            "# >>> esp-libdatachannel policy (cargo xtask configure) >>>",
            "# <<< esp-libdatachannel policy (cargo xtask configure) <<<",
            "# a comment of the user's",
            "",
        ]),
        0..6,
    );
    let strategy = (any::<bool>(), files, defaults_lines, any::<bool>(), any::<bool>(), any::<bool>());
    let cases = std::env::var("ESP_DC_FUZZ_INTO_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let result = runner.run(&strategy, |(configured_before, files, defaults, replace, dry_run, keep)| {
        let app = tempfile::tempdir().unwrap();
        let root = app.path();
        std::fs::write(
            root.join("CMakeLists.txt"),
            "include($ENV{IDF_PATH}/tools/cmake/project.cmake)\nproject(app)\n",
        )
        .unwrap();
        let root = application_root(root).unwrap();
        if configured_before {
            configure_with(&root, &lean, &Options::default()).unwrap();
        }
        // A file of ours the user edited is ours to replace (the README says so); not checked.
        let ours = crate::layout::tests::tree_of(&root);
        let mut theirs = BTreeMap::new();
        for (rel, text) in &files {
            let path = root.join(rel);
            if ours.contains_key(Path::new(rel)) {
                std::fs::write(&path, text).unwrap();
                continue;
            }
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            theirs.insert(PathBuf::from(rel), text.clone().into_bytes());
        }
        let user_defaults = defaults.join("\n") + "\n";
        let defaults_path = root.join("sdkconfig.defaults");
        let before_defaults = std::fs::read_to_string(&defaults_path).unwrap_or_default();
        let merged_user = if configured_before {
            // Keep the configured block where it is; the user's lines go before it.
            format!("{user_defaults}{before_defaults}")
        } else {
            user_defaults.clone()
        };
        std::fs::write(&defaults_path, &merged_user).unwrap();
        let options = Options {
            replace,
            dry_run,
            keep_sdkconfig: if keep { vec!["CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN".into()] } else { Vec::new() },
            ..Options::default()
        };
        let snapshot = crate::layout::tests::tree_of(&root);
        match configure_with(&root, &lean, &options) {
            Err(e) => {
                let code = e.downcast_ref::<crate::exit::Failure>().map(|f| f.code);
                prop_assert_eq!(code, Some(2), "{}", e);
                prop_assert!(crate::layout::tests::tree_of(&root) == snapshot, "an exit 2 changed the tree: {}", e);
            }
            Ok(_) if dry_run => {
                prop_assert!(crate::layout::tests::tree_of(&root) == snapshot, "--dry-run changed the tree")
            }
            Ok(_) => {
                let after = crate::layout::tests::tree_of(&root);
                for (rel, bytes) in &theirs {
                    let in_place = after.get(rel) == Some(bytes);
                    let backed_up = after.iter().any(|(p, b)| {
                        p.to_string_lossy().starts_with(BACKUP_PREFIX)
                            && p.ends_with(rel.strip_prefix("components").unwrap_or(rel))
                            && b == bytes
                    });
                    prop_assert!(in_place || backed_up, "{} was lost", rel.display());
                }
                let text = std::fs::read_to_string(&defaults_path).unwrap();
                let outside: Vec<&str> = {
                    let begin = text.lines().position(|l| l.starts_with("# >>> esp-libdatachannel"));
                    let end = text.lines().position(|l| l.starts_with("# <<< esp-libdatachannel"));
                    text.lines()
                        .enumerate()
                        .filter(|(i, _)| match (begin, end) {
                            (Some(b), Some(e)) => *i < b || *i > e,
                            _ => true,
                        })
                        .map(|(_, l)| l)
                        .filter(|l| !l.is_empty())
                        .collect()
                };
                // The user's lines, less a block of their own (one begin before one end: ours to replace).
                let all: Vec<&str> = user_defaults.lines().collect();
                let begin = all.iter().position(|l| l.starts_with("# >>> esp-libdatachannel"));
                let end = all.iter().position(|l| l.starts_with("# <<< esp-libdatachannel"));
                let user: Vec<&str> = all
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| match (begin, end) {
                        (Some(b), Some(e)) if b < e => *i < b || *i > e,
                        _ => true,
                    })
                    .map(|(_, l)| *l)
                    .filter(|l| !l.is_empty())
                    .collect();
                prop_assert_eq!(outside, user, "the user's lines changed:\n{}", text);
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
