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
    let sizes = crate::size::parse_json2(JSON2).expect("the json2 fixture reads");
    fuzz("policy", &[POLICY_LEAN, POLICY_STOCK], |text| {
        let Ok(policy) = crate::policy::Policy::parse(text, &path) else { return false };
        // What configure and size-check then read from it.
        let _ = policy.thread_stack_bytes();
        for spec in crate::policy::KNOBS {
            let _ = policy.knob_value(spec);
        }
        let _ = crate::size::check(&policy.budgets.static_, &sizes, false);
        let _ = crate::size::check(&policy.budgets.static_, &sizes, true);
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
        let _ = crate::size::parse_map_lines(text);
        let Ok(sizes) = crate::size::parse_map(text) else { return false };
        let _ = crate::size::check(&budgets, &sizes, false);
        true
    });
}

#[test]
fn fuzz_json2() {
    let budgets = lean_budgets();
    fuzz("json2", &[JSON2], |text| {
        let Ok(sizes) = crate::size::parse_json2(text) else { return false };
        let _ = crate::size::check(&budgets, &sizes, false);
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
