//! Reads an `idf.py monitor` log: esp_memtrack's `MEMTRACK` lines and ESP-IDF's
//! `heap_trace_dump()` text. Everything else (other tasks' logs, colours, boot chatter) is
//! ignored; lines that look like ours but do not parse are counted as skipped.
//!
//! The dump grammar follows `heap_trace_dump_base()` in ESP-IDF v5.5.5,
//! components/heap/heap_trace_standalone.c:
//!
//! ```text
//! ====== Heap Trace: %u records (%u capacity) ======
//! %6d bytes (@ %p%s) allocated CPU %d ccount 0x%08x[ caller %p:%p:...][ freed]
//! [freed by %p:%p:...:%p]                      (HEAP_TRACE_ALL with a freeing call stack)
//! ====== Heap Trace Summary ======
//! Mode: Heap Trace All | Mode: Heap Trace Leaks
//! %u bytes alive in trace (%u/%u allocations) | %u bytes 'leaked' in trace (%u allocations)
//! records: ...   hashmap: ...   total allocations: ...   total frees: ...   (NB: ...)
//! ================================
//! ```
//! `%s` is `", Internal"`, `",    PSRAM"` or empty; `%p` prints `0x` and 8 hex digits
//! (components/esp_rom/patches/esp_rom_print.c). ESP-IDF 5.0-5.2 print " caller " even with
//! an empty call stack and have no " freed" suffix; both shapes are accepted.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Heap {
    Internal,
    Psram,
    Dma,
    Unknown,
}

impl Heap {
    pub fn name(self) -> &'static str {
        match self {
            Heap::Internal => "internal",
            Heap::Psram => "psram",
            Heap::Dma => "dma",
            Heap::Unknown => "unknown",
        }
    }
    fn parse(s: &str) -> Option<Heap> {
        Some(match s {
            "internal" => Heap::Internal,
            "psram" => Heap::Psram,
            "dma" => Heap::Dma,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceMode {
    All,
    Leaks,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub label: String,
    pub heap: Heap,
    pub free: u64,
    pub min_free: u64,
    pub largest: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub label: String,
    pub base: String,
    pub heap: Heap,
    pub free: i64,
    pub min_free: i64,
    pub largest: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub label: String,
    pub name: String,
    pub stack_free_min: u64,
    pub prio: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub line: usize,
    pub size: u64,
    pub address: u64,
    /// From the dump's label; `None` when the dump printed none (then address ranges decide).
    pub heap: Option<Heap>,
    pub callers: Vec<u64>,
    pub freed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dump {
    pub line: usize,
    /// The label of the `MEMTRACK trace event=dump` line just before, else `dump-N`.
    pub label: String,
    pub mode: Option<TraceMode>,
    pub records: Vec<Record>,
    /// "N bytes alive/'leaked' in trace (M ...)" from the summary, to cross-check what we read.
    pub summary_bytes: Option<u64>,
    pub summary_allocations: Option<u64>,
    pub overflowed: bool,
    pub complete: bool,
}

#[derive(Debug, Default)]
pub struct Log {
    pub snapshots: Vec<Snapshot>,
    pub deltas: Vec<Delta>,
    pub tasks: Vec<Task>,
    pub dumps: Vec<Dump>,
    /// Hex prefix from the boot log's `app_init: ELF file SHA256:  xxxxxxxxx...`.
    pub elf_sha256_prefix: Option<(usize, String)>,
    /// Chip from the ROM banner `ESP-ROM:esp32s3-20210327`.
    pub chip: Option<String>,
    pub tracker_lines: usize,
    /// Lines that looked like tracker or dump lines but did not parse: (line number, text), the
    /// first `SKIPPED_KEPT` of them (text cut to `SKIPPED_TEXT` bytes), so a log of any size is
    /// read in bounded memory; `skipped_count` counts them all.
    pub skipped: Vec<(usize, String)>,
    pub skipped_count: usize,
}

/// How many skipped lines a `Log` keeps with their text, and how much of each.
pub const SKIPPED_KEPT: usize = 1000;
pub const SKIPPED_TEXT: usize = 240;

impl Log {
    fn skip(&mut self, number: usize, line: &str) {
        self.skipped_count += 1;
        if self.skipped.len() < SKIPPED_KEPT {
            let mut text = line.trim().to_string();
            if text.len() > SKIPPED_TEXT {
                let cut = (0..=SKIPPED_TEXT).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
                text.truncate(cut);
                text.push_str(" [...]");
            }
            self.skipped.push((number, text));
        }
    }
}

/// Removes ANSI escape sequences (ESP_LOG colours) and the carriage return of CRLF logs.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// Reads a whole log held in memory (tests, fuzzing); `parse_reader` is the same reader.
#[cfg(test)]
pub fn parse(text: &str) -> Log {
    parse_reader(text.as_bytes(), |_| {}).expect("reading from memory does not fail")
}

/// Reads a log line by line from `input`, holding one line at a time: a log of any size (a
/// monitor left running for days) is read in the memory of what it contains of ours. Lines end
/// at `\n`, `\r\n` or a lone `\r`, as `fsutil::split_lines` splits them; invalid UTF-8 is
/// replaced, as a terminal would show it. `progress` gets the bytes read so far, every 16 MiB.
pub fn parse_reader(mut input: impl std::io::BufRead, mut progress: impl FnMut(u64)) -> std::io::Result<Log> {
    let mut state = Reader::default();
    let mut chunk = Vec::new();
    let mut read: u64 = 0;
    let mut next_report: u64 = 16 << 20;
    loop {
        chunk.clear();
        let n = input.read_until(b'\n', &mut chunk)?;
        if n == 0 {
            break;
        }
        read += n as u64;
        if read >= next_report {
            progress(read);
            next_report = read + (16 << 20);
        }
        let mut body: &[u8] = &chunk;
        if let Some(rest) = body.strip_suffix(b"\n") {
            body = rest;
        }
        if let Some(rest) = body.strip_suffix(b"\r") {
            body = rest;
        }
        for piece in body.split(|b| *b == b'\r') {
            state.line(&String::from_utf8_lossy(piece));
        }
    }
    Ok(state.finish())
}

/// The reader's state between two lines.
#[derive(Default)]
struct Reader {
    log: Log,
    pending_dump_label: Option<String>,
    open: Option<Dump>,
    in_summary: bool,
    number: usize,
}

impl Reader {
    fn finish(mut self) -> Log {
        if let Some(unfinished) = self.open.take() {
            self.log.dumps.push(unfinished);
        }
        self.log
    }

    /// Reads one line. Our own markers are looked for anywhere in it (a monitor prefixes
    /// timestamps, another task's output may precede them), first match wins.
    fn line(&mut self, raw: &str) {
        self.number += 1;
        let line = strip_ansi(raw);
        if let Some(at) = line.find("MEMTRACK ") {
            self.tracker_line(&line, &line[at + "MEMTRACK ".len()..]);
        } else if let Some(at) = line.find("ELF file SHA256:") {
            self.elf_sha256_line(&line, &line[at + "ELF file SHA256:".len()..]);
        } else if let Some(at) = line.find("ESP-ROM:") {
            let chip: String =
                line[at + "ESP-ROM:".len()..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            if !chip.is_empty() {
                self.log.chip = Some(chip);
            }
        } else if line.contains("====== Heap Trace Summary ======") {
            if self.open.is_some() {
                self.in_summary = true;
            } else {
                self.log.skip(self.number, &line);
            }
        } else if let Some(at) = line.find("====== Heap Trace: ") {
            self.dump_header(&line, &line[at..]);
        } else if self.open.is_none() {
            self.line_outside_dump(&line);
        } else if self.in_summary {
            self.summary_line(&line);
        } else {
            self.record_line(&line);
        }
    }

    /// A `MEMTRACK ` line from components/esp_memtrack; `body` follows the marker.
    fn tracker_line(&mut self, line: &str, body: &str) {
        let log = &mut self.log;
        log.tracker_lines += 1;
        match parse_tracker(body) {
            Some(Tracker::Snapshot(s)) => log.snapshots.push(s),
            Some(Tracker::Delta(d)) => log.deltas.push(d),
            Some(Tracker::Task(t)) => log.tasks.push(t),
            Some(Tracker::DumpLabel(label)) => self.pending_dump_label = Some(label),
            Some(Tracker::Other) => {}
            None => log.skip(self.number, line),
        }
    }

    /// The boot banner's `ELF file SHA256:`; `rest` follows the marker.
    fn elf_sha256_line(&mut self, line: &str, rest: &str) {
        let hex = rest.trim().trim_end_matches('.').to_ascii_lowercase();
        if !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            self.log.elf_sha256_prefix = Some((self.number, hex));
        } else {
            self.log.skip(self.number, line);
        }
    }

    /// `====== Heap Trace: N records (...) ======` opens a dump (`header` starts at the
    /// marker); a dump still open has lost its summary and is kept as it is.
    fn dump_header(&mut self, line: &str, header: &str) {
        if let Some(unfinished) = self.open.take() {
            self.log.dumps.push(unfinished);
        }
        // A header without its count is named, but the dump is still opened: its records follow.
        if !header.contains(" records (") {
            self.log.skip(self.number, line);
        }
        let label = self.pending_dump_label.take().unwrap_or_else(|| format!("dump-{}", self.log.dumps.len() + 1));
        self.open = Some(Dump {
            line: self.number,
            label,
            mode: None,
            records: Vec::new(),
            summary_bytes: None,
            summary_allocations: None,
            overflowed: false,
            complete: false,
        });
        self.in_summary = false;
    }

    /// A record or frame line with no dump open: its header was cut or garbled (another
    /// task's output in the middle), so the records cannot be placed; each is named.
    fn line_outside_dump(&mut self, line: &str) {
        const OURS: &[&str] = &[
            " bytes (@ ",
            "freed by ",
            "====== Heap",
            "capacity) ======",
            " bytes alive in trace (",
            " bytes 'leaked' in trace (",
        ];
        if OURS.iter().any(|p| line.trim().contains(p)) {
            self.log.skip(self.number, line);
        }
    }

    /// A line of the open dump's summary, up to the `=====` that completes the dump.
    fn summary_line(&mut self, line: &str) {
        let trimmed = line.trim();
        let Some(dump) = self.open.as_mut() else { return };
        // ends_with, not ==: `idf.py monitor --timestamps` prefixes every line.
        if trimmed.ends_with("================================") {
            dump.complete = true;
            self.log.dumps.push(self.open.take().unwrap());
            self.in_summary = false;
        } else if trimmed.ends_with("Mode: Heap Trace All") {
            dump.mode = Some(TraceMode::All);
        } else if trimmed.ends_with("Mode: Heap Trace Leaks") {
            dump.mode = Some(TraceMode::Leaks);
        } else if trimmed.contains(" bytes alive in trace (") || trimmed.contains(" bytes 'leaked' in trace (") {
            match parse_summary_totals(trimmed) {
                Some((bytes, allocations)) => {
                    dump.summary_bytes = Some(bytes);
                    dump.summary_allocations = Some(allocations);
                }
                None => self.log.skip(self.number, line),
            }
        } else if trimmed.contains("Internal Buffer has overflowed") {
            dump.overflowed = true;
        }
    }

    /// A line of the open dump's body: a record, or the `freed by` frames of the record above
    /// (a record is counted freed once). Anything else (call frames, other output) is ignored.
    fn record_line(&mut self, line: &str) {
        let trimmed = line.trim();
        let Some(dump) = self.open.as_mut() else { return };
        if trimmed.contains(" bytes (@ ") {
            match parse_record(trimmed, self.number) {
                Some(record) => dump.records.push(record),
                None => self.log.skip(self.number, line),
            }
        } else if let Some(at) = trimmed.find("freed by ") {
            let rest = &trimmed[at + "freed by ".len()..];
            match (dump.records.last_mut(), parse_callers(rest)) {
                (Some(last), Some(_)) if !last.freed => last.freed = true,
                _ => self.log.skip(self.number, line),
            }
        }
    }
}

enum Tracker {
    Snapshot(Snapshot),
    Delta(Delta),
    Task(Task),
    DumpLabel(String),
    Other,
}

/// The keys each kind of line carries (components/esp_memtrack/src/esp_memtrack.c's printf
/// formats). A line with another key, a key twice, a word that is no `key=value` or a second
/// `MEMTRACK` is not one line read whole: another task's output ran into it, and taking the
/// last of two `free=` would report another figure as ours (skipped and named instead).
fn tracker_keys(kind: &str, event: Option<&str>, truncated: bool) -> Option<&'static [&'static str]> {
    Some(match (kind, event) {
        ("snapshot", _) => &["label", "heap", "free", "min_free", "largest"],
        ("delta", _) => &["label", "base", "heap", "free", "min_free", "largest"],
        ("task", _) if truncated => &["label", "truncated"],
        ("task", _) => &["label", "name", "stack_free_min", "prio"],
        ("trace", Some("init")) => &["label", "event", "records", "record_bytes", "heap", "err"],
        ("trace", Some("start")) => &["label", "event", "mode", "err"],
        ("trace", Some("stop")) => &["label", "event", "err"],
        ("trace", Some("dump")) => &["label", "event", "heaps"],
        ("note", _) => &["label", "text"],
        _ => return None,
    })
}

fn parse_tracker(rest: &str) -> Option<Tracker> {
    if rest.contains("MEMTRACK ") {
        return None;
    }
    let mut words = rest.split_whitespace();
    let kind = words.next()?;
    let mut fields = std::collections::HashMap::new();
    for word in words {
        let (key, value) = word.split_once('=')?;
        if fields.insert(key, value).is_some() {
            return None;
        }
    }
    let allowed = tracker_keys(kind, fields.get("event").copied(), fields.contains_key("truncated"))?;
    if fields.keys().any(|key| !allowed.contains(key)) {
        return None;
    }
    let text = |key: &str| fields.get(key).map(|v| v.to_string());
    let unsigned = |key: &str| fields.get(key)?.parse::<u64>().ok();
    let signed = |key: &str| fields.get(key)?.parse::<i64>().ok();
    let label = text("label")?;
    Some(match kind {
        "snapshot" => Tracker::Snapshot(Snapshot {
            label,
            heap: Heap::parse(fields.get("heap")?)?,
            free: unsigned("free")?,
            min_free: unsigned("min_free")?,
            largest: unsigned("largest")?,
        }),
        "delta" => Tracker::Delta(Delta {
            label,
            base: text("base")?,
            heap: Heap::parse(fields.get("heap")?)?,
            free: signed("free")?,
            min_free: signed("min_free")?,
            largest: signed("largest")?,
        }),
        "task" if fields.contains_key("truncated") => {
            unsigned("truncated")?;
            Tracker::Other
        }
        "task" => Tracker::Task(Task {
            label,
            name: text("name")?,
            stack_free_min: unsigned("stack_free_min")?,
            prio: unsigned("prio")?,
        }),
        "trace" => match *fields.get("event")? {
            "dump" => Tracker::DumpLabel(label),
            "init" | "start" | "stop" => Tracker::Other,
            _ => return None,
        },
        "note" => Tracker::Other,
        _ => return None,
    })
}

fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// `0x4200a1b2:0x4200c3d4:` -> addresses, dropping the empty tail and null frames.
fn parse_callers(s: &str) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    for part in s.trim().split(':').filter(|p| !p.is_empty()) {
        let address = parse_hex(part)?;
        if address != 0 {
            out.push(address);
        }
    }
    Some(out)
}

fn parse_record(line: &str, number: usize) -> Option<Record> {
    let (size, rest) = line.split_once(" bytes (@ ")?;
    // The last word: `idf.py monitor --timestamps` puts a time stamp before the record.
    let size = size.split_whitespace().last()?.parse::<u64>().ok()?;
    // heap_trace prints a size_t of a 32-bit chip: more is a damaged line (skipped and named),
    // and the bound keeps every sum of records far below u64's range.
    if size > u64::from(u32::MAX) {
        return None;
    }
    let (inside, rest) = rest.split_once(')')?;
    let (address, heap) = match inside.split_once(',') {
        Some((a, label)) => (
            a,
            Some(match label.trim() {
                "Internal" => Heap::Internal,
                "PSRAM" => Heap::Psram,
                _ => return None,
            }),
        ),
        None => (inside, None),
    };
    let address = parse_hex(address.trim())?;
    let rest = rest.strip_prefix(" allocated CPU ")?;
    let (cpu, rest) = rest.split_once(" ccount ")?;
    cpu.parse::<u32>().ok()?;
    let (rest, freed) = match rest.strip_suffix(" freed") {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let (ccount, callers) = match rest.split_once(" caller") {
        Some((c, callers)) => (c, parse_callers(callers)?),
        None => (rest, Vec::new()),
    };
    parse_hex(ccount.trim())?;
    Some(Record { line: number, size, address, heap, callers, freed })
}

/// "1234 bytes alive in trace (5/9 allocations)" or "1234 bytes 'leaked' in trace (5 allocations)".
fn parse_summary_totals(line: &str) -> Option<(u64, u64)> {
    let (bytes, rest) = line.split_once(" bytes ")?;
    let inside = rest.split_once('(')?.1.split_once(' ')?.0;
    let allocations = inside.split('/').next()?;
    Some((bytes.split_whitespace().last()?.parse().ok()?, allocations.parse().ok()?))
}
