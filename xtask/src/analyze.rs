//! `cargo xtask analyze LOG`: turns an `idf.py monitor` log (esp_memtrack lines and ESP-IDF
//! heap trace dumps) into the same report the lab produces, attributed to components through
//! the app ELF's DWARF line information.

mod elf;
pub(crate) mod log;
#[cfg(test)]
mod tests;

use crate::exit::{bad_input, Outcome};
use crate::report::{
    self, ComponentReport, DeviceLog, HeapFigure, PhaseFigure, Projection, ProjectionLine, Report, Site, ThreadReport,
};
use log::{Dump, Heap, Log, Record, TraceMode};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Read a device log: per-component internal/PSRAM bytes, leaks, largest sites, task stacks.
///
/// Capture it with the esp_memtrack component (see docs/analyze.md):
/// `idf.py -p PORT monitor | tee log.txt`. Label the heap trace dump taken while the
/// connection is up `connected`; a HEAP_TRACE_LEAKS dump (or an ALL dump labelled
/// `cleaned-up`/`closed`) taken after disconnecting gives the leaks.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The monitor log (ANSI colours and other tasks' lines are fine).
    pub log: PathBuf,
    /// The app ELF of the same build (build/<project>.elf) to symbolize backtraces.
    /// Checked against the log's `ELF file SHA256` line and the chip's architecture.
    #[arg(long)]
    pub elf: Option<PathBuf>,
    /// The build's linker map (build/<project>.map) for the stack's static data, internal vs
    /// PSRAM per component. Default: the `.map` beside `--elf`, when there is one.
    #[arg(long)]
    pub map: Option<PathBuf>,
    /// Also write the report as JSON (the lab's shape, scenario `device-log`).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Policy the firmware was built with (recorded in the report).
    #[arg(long, default_value = "lean")]
    pub policy: String,
    /// How many allocation sites to list.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

pub fn run(args: Args) -> Outcome {
    let log = read_log(&args.log)?;
    if log.tracker_lines == 0 && log.dumps.is_empty() {
        return Err(bad_input(format!(
            "{} has no MEMTRACK lines and no heap trace dump; see docs/analyze.md for how to capture one",
            args.log.display()
        )));
    }
    let mut elf = match &args.elf {
        Some(path) => {
            let addresses: Vec<u64> =
                log.dumps.iter().flat_map(|d| d.records.iter().flat_map(|r| r.callers.iter().copied())).collect();
            Some(elf::open(path, log.chip.as_deref(), log.elf_sha256_prefix.as_ref(), &addresses)?)
        }
        None => None,
    };
    let mut report = build_report(&log, elf.as_mut(), &args.policy, args.top);
    let map = args.map.clone().or_else(|| args.elf.as_ref().map(|e| e.with_extension("map")).filter(|m| m.is_file()));
    let mut map_lost = Vec::new();
    if let Some(map) = map {
        let (sizes, skipped) = crate::static_sizes::read_report_lines(&map)
            .map_err(|e| bad_input(format!("cannot read linker map {}: {e:#}", map.display())))?;
        add_static(&mut report, &sizes, &map.display().to_string());
        // The lines size-check names: a static figure above that misses them would look whole.
        for (number, text) in &skipped {
            eprintln!(
                "analyze: {}:{number}: skipped, its size could not be read: {}",
                map.display(),
                crate::fsutil::shown(text)
            );
        }
        if !skipped.is_empty() {
            map_lost.push(format!(
                "{} line(s) of the linker map {} skipped (listed above)",
                skipped.len(),
                map.display()
            ));
        }
    }
    print!("{}", render(&report, &args));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)? + "\n";
        crate::fsutil::write_atomic(path, json.as_bytes())?;
    }
    match data_lost(&log).into_iter().chain(map_lost).reduce(|a, b| format!("{a}, {b}")) {
        Some(what) => Err(crate::exit::verdict(format!(
            "{}: {what}; the figures above miss that data. Capture the log again (idf.py monitor | tee), with less output from other tasks while the dump prints",
            args.log.display()
        ))),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Reads the log streaming (`log::parse_reader`): memory follows what the log holds of ours,
/// not its size. On a long log a progress line on stderr says how far the reading is.
fn read_log(path: &std::path::Path) -> anyhow::Result<Log> {
    let cannot = |e: std::io::Error| bad_input(format!("cannot read {}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mib = |bytes: u64| bytes >> 20;
    let reader = std::io::BufReader::with_capacity(1 << 16, file);
    log::parse_reader(reader, |read| {
        if total >= 64 << 20 {
            eprintln!("analyze: read {} of {} MiB of {}", mib(read), mib(total), path.display());
        }
    })
    .map_err(cannot)
}

/// What of the log could not be read, or None when every line of ours was: skipped lines and
/// dumps cut short (by a second header or the end of the log) or disagreeing with their own
/// summary. Any of it makes the report incomplete: exit 1, after printing what was read.
pub(crate) fn data_lost(log: &Log) -> Option<String> {
    let mut lost = Vec::new();
    if log.skipped_count > 0 {
        lost.push(format!("{} line(s) skipped", log.skipped_count));
    }
    let cut = log.dumps.iter().filter(|d| !d.complete).count();
    if cut > 0 {
        lost.push(format!("{cut} heap trace dump(s) end before their summary"));
    }
    let disagree = log
        .dumps
        .iter()
        .filter(|d| match (d.summary_bytes, d.summary_allocations) {
            (Some(bytes), Some(count)) => {
                (bytes, count) != (saturating_sum(live(d).map(|r| r.size)), live(d).count() as u64)
            }
            _ => false,
        })
        .count();
    if disagree > 0 {
        lost.push(format!("{disagree} heap trace dump(s) disagree with their own summary"));
    }
    (!lost.is_empty()).then(|| lost.join(", "))
}

/// Components of allocations outside the stack, and of allocations we could not symbolize.
const OTHER: &str = "other";
const UNSYMBOLIZED: &str = "unsymbolized";

/// Which heap an allocation sits on when the dump printed no label: by address, from
/// soc.h of ESP-IDF v5.5.5. ESP32-S3 (components/soc/esp32s3/include/soc/soc.h):
/// SOC_DRAM_LOW 0x3FC88000..SOC_DRAM_HIGH 0x3FD00000, SOC_EXTRAM_DATA_LOW 0x3C000000..
/// SOC_EXTRAM_DATA_HIGH 0x3E000000. ESP32-P4 (components/soc/esp32p4/include/soc/soc.h):
/// SOC_DRAM_LOW 0x4FF00000..SOC_DRAM_HIGH 0x4FFC0000, SOC_EXTRAM_LOW 0x48000000..SOC_EXTRAM_HIGH 0x4C000000.
pub fn heap_of_address(address: u64) -> Heap {
    const RANGES: &[(u64, u64, Heap)] = &[
        (0x3FC8_8000, 0x3FD0_0000, Heap::Internal),
        (0x3C00_0000, 0x3E00_0000, Heap::Psram),
        (0x4FF0_0000, 0x4FFC_0000, Heap::Internal),
        (0x4800_0000, 0x4C00_0000, Heap::Psram),
    ];
    RANGES.iter().find(|(lo, hi, _)| address >= *lo && address < *hi).map(|r| r.2).unwrap_or(Heap::Unknown)
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SiteKey {
    component: String,
    file: String,
    line: u32,
    function: String,
}

/// Frames of the allocator itself (ESP-IDF heap, newlib, libstdc++'s operator new and
/// containers): never the site that asked for the bytes.
fn is_allocator_frame(file: &str) -> bool {
    const ALLOCATOR_PATHS: &[&str] =
        &["components/heap/", "/newlib/", "libstdc++", "/libsupc++/", "/c++/", "/bits/", "/libc/", "/gcc/"];
    let file = file.replace('\\', "/");
    ALLOCATOR_PATHS.iter().any(|p| file.contains(p))
}

/// The first caller frame that maps to a stack component wins; heap, newlib and libstdc++
/// frames map to none and are passed over. No such frame: the allocation is `other`,
/// placed at its first frame outside the allocator.
fn attribute(record: &Record, elf: Option<&mut elf::Elf>) -> SiteKey {
    let Some(elf) = elf else {
        let file = record.callers.first().map(|a| format!("{a:#010x}")).unwrap_or_default();
        return SiteKey { component: UNSYMBOLIZED.into(), file, line: 0, function: String::new() };
    };
    let mut first: Option<elf::Frame> = None;
    for &address in &record.callers {
        for frame in elf.caller_frames(address) {
            if let Some(component) = frame.component {
                return SiteKey {
                    component: component.into(),
                    file: frame.file.clone(),
                    line: frame.line,
                    function: frame.function.clone(),
                };
            }
            if first.is_none() && !is_allocator_frame(&frame.file) {
                first = Some(frame.clone());
            }
        }
    }
    match first {
        Some(f) => SiteKey { component: OTHER.into(), file: f.file, line: f.line, function: f.function },
        None => SiteKey {
            component: OTHER.into(),
            file: record.callers.first().map(|a| format!("{a:#010x}")).unwrap_or_default(),
            line: 0,
            function: String::new(),
        },
    }
}

fn heap_of(record: &Record) -> Heap {
    record.heap.unwrap_or_else(|| heap_of_address(record.address))
}

/// Records still held at the dump: in LEAKS mode all listed ones, in ALL mode the unfreed.
fn live(dump: &Dump) -> impl Iterator<Item = &Record> {
    dump.records.iter().filter(|r| !r.freed)
}

/// Sums byte counts read from the log without panicking: the tracker's figures are u64/i64 as
/// printed, so a damaged line can carry any value; past u64 the total stays at u64::MAX.
fn saturating_sum(values: impl Iterator<Item = u64>) -> u64 {
    values.fold(0, u64::saturating_add)
}

#[derive(Default, Clone, Copy)]
struct Tally {
    bytes: u64,
    count: u64,
    internal: u64,
    psram: u64,
}

fn tally_by_component(dump: &Dump, keys: &BTreeMap<usize, SiteKey>) -> BTreeMap<String, Tally> {
    let mut out: BTreeMap<String, Tally> = BTreeMap::new();
    for r in live(dump) {
        let t = out.entry(keys[&r.line].component.clone()).or_default();
        // Saturating: record sizes are 32-bit (parse_record), so only a log of billions of
        // records could reach the bound; it must not panic on one.
        t.bytes = t.bytes.saturating_add(r.size);
        t.count += 1;
        match heap_of(r) {
            Heap::Internal | Heap::Dma => t.internal = t.internal.saturating_add(r.size),
            Heap::Psram => t.psram = t.psram.saturating_add(r.size),
            Heap::Unknown => {}
        }
    }
    out
}

fn sites_of<'a>(records: impl Iterator<Item = &'a Record>, keys: &BTreeMap<usize, SiteKey>, top: usize) -> Vec<Site> {
    let mut by_site: BTreeMap<SiteKey, (u64, u64)> = BTreeMap::new();
    for r in records {
        let e = by_site.entry(keys[&r.line].clone()).or_default();
        e.0 = e.0.saturating_add(r.size);
        e.1 += 1;
    }
    let mut sites: Vec<Site> = by_site
        .into_iter()
        .map(|(k, (bytes, count))| Site {
            component: k.component,
            file: k.file,
            line: k.line,
            function: k.function,
            bytes,
            count,
        })
        .collect();
    sites.sort_by(|a, b| {
        b.bytes.cmp(&a.bytes).then(b.count.cmp(&a.count)).then(a.file.cmp(&b.file)).then(a.line.cmp(&b.line))
    });
    sites.truncate(top);
    sites
}

/// The pthread objects the lab's projection counts, as a heap trace shows them on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum SyncKind {
    /// esp_dc_port_sync.c (`sync.placement = "with_owner"`): one PSRAM block per object.
    PsramMutex,
    PsramCond,
    /// ESP-IDF's own: a small struct plus a FreeRTOS queue, two blocks per object.
    IdfMutex,
    IdfCond,
}

impl SyncKind {
    /// The same words as the lab's projection lines (ledger/projection.rs), with the device's source.
    fn line(self, objects: u64) -> (String, &'static str) {
        match self {
            SyncKind::PsramMutex => (
                format!("{objects} pthread mutex(es) with their owner in PSRAM: one block each"),
                "components/esp_dc_port/src/esp_dc_port_sync.c psram_mutex_new (heap trace)",
            ),
            SyncKind::PsramCond => (
                format!("{objects} condition variable(s) with their owner in PSRAM: one block each"),
                "components/esp_dc_port/src/esp_dc_port_sync.c psram_cond_new (heap trace)",
            ),
            SyncKind::IdfMutex => (
                format!("{objects} pthread mutex(es): esp_pthread_mutex_t + FreeRTOS mutex"),
                "components/pthread/pthread.c pthread_mutex_init (heap trace)",
            ),
            SyncKind::IdfCond => (
                format!("{objects} condition variable(s): esp_pthread_cond_t + its newlib lock's FreeRTOS mutex"),
                "components/pthread/pthread_cond_var.c pthread_cond_init (heap trace)",
            ),
        }
    }
}

/// Whether a record belongs to a pthread mutex or condition variable, and whether it is the
/// object's first block (counted once): esp_dc_port's PSRAM objects are one block; ESP-IDF's
/// are its struct (allocated by pthread_*_init itself) and a FreeRTOS queue (allocated below it).
fn sync_kind(record: &Record, elf: &mut elf::Elf) -> Option<(SyncKind, bool)> {
    let mut first_outside_allocator: Option<String> = None;
    let mut kind = None;
    for &address in &record.callers {
        for frame in elf.caller_frames(address) {
            let file = frame.file.replace('\\', "/");
            if first_outside_allocator.is_none() && !is_allocator_frame(&file) {
                first_outside_allocator = Some(frame.function.clone());
            }
            let found = match frame.function.as_str() {
                "psram_mutex_new" if file.ends_with("esp_dc_port_sync.c") => Some(SyncKind::PsramMutex),
                "psram_cond_new" if file.ends_with("esp_dc_port_sync.c") => Some(SyncKind::PsramCond),
                "pthread_mutex_init" if file.contains("components/pthread/") => Some(SyncKind::IdfMutex),
                "pthread_cond_init" if file.contains("components/pthread/") => Some(SyncKind::IdfCond),
                _ => None,
            };
            if let Some(found) = found {
                kind = Some((found, frame.function.clone()));
                break;
            }
        }
        if kind.is_some() {
            break;
        }
    }
    let (kind, function) = kind?;
    let first = matches!(kind, SyncKind::PsramMutex | SyncKind::PsramCond)
        || first_outside_allocator.as_deref() == Some(function.as_str());
    Some((kind, first))
}

/// The stack's static data from a linker map, as `size-check` reads it: per component internal
/// (.data + .bss in DRAM) and PSRAM (.bss in .ext_ram.bss), the internal sum beside the lab's.
pub(crate) fn add_static(report: &mut Report, sizes: &BTreeMap<String, crate::static_sizes::Sizes>, source: &str) {
    let device = report.device.get_or_insert_with(Default::default);
    device.static_source = source.to_string();
    device.static_data = sizes
        .iter()
        .map(|(component, s)| report::StaticFigure {
            component: component.clone(),
            internal_bytes: s.dram_bytes,
            psram_bytes: s.psram_bytes,
        })
        .collect();
    report.static_internal_bytes = Some(saturating_sum(sizes.values().map(|s| s.dram_bytes)));
}

/// Each record's site and, for a sync object's block, its kind, keyed by the record's line number
/// (unique across the log).
type Attributed = (BTreeMap<usize, SiteKey>, BTreeMap<usize, (SyncKind, bool)>);

fn attribute_records(log: &Log, mut elf: Option<&mut elf::Elf>) -> Attributed {
    let mut keys: BTreeMap<usize, SiteKey> = BTreeMap::new();
    let mut sync: BTreeMap<usize, (SyncKind, bool)> = BTreeMap::new();
    for dump in &log.dumps {
        for r in &dump.records {
            keys.insert(r.line, attribute(r, elf.as_deref_mut()));
            if let Some(kind) = elf.as_deref_mut().and_then(|e| sync_kind(r, e)) {
                sync.insert(r.line, kind);
            }
        }
    }
    (keys, sync)
}

pub fn build_report(log: &Log, elf: Option<&mut elf::Elf>, policy: &str, top: usize) -> Report {
    let (keys, sync) = attribute_records(log, elf);
    // Every dump lists what was live when it was printed: in LEAKS mode the unfreed
    // allocations since heap_trace_start, in ALL mode the records not marked freed.
    let is_leak_check = |d: &Dump| d.mode == Some(TraceMode::Leaks) && d.label != "connected";
    let moments: Vec<&Dump> = log.dumps.iter().filter(|d| !is_leak_check(d)).collect();
    let connected = moments
        .iter()
        .find(|d| d.label == "connected")
        .or_else(|| moments.iter().find(|d| d.mode != Some(TraceMode::Leaks)))
        .copied();
    let leak_dump = log.dumps.iter().rev().find(|d| is_leak_check(d)).or_else(|| {
        moments.iter().rev().find(|d| matches!(d.label.as_str(), "cleaned-up" | "closed" | "disconnected")).copied()
    });
    let mut report = Report { scenario: "device-log".into(), policy: policy.into(), ..Default::default() };
    let mut device = DeviceLog::default();

    let connected_tally = connected.map(|d| tally_by_component(d, &keys)).unwrap_or_default();
    let per_dump: Vec<(&Dump, BTreeMap<String, Tally>)> =
        moments.iter().map(|d| (*d, tally_by_component(d, &keys))).collect();
    report.components = components_of(&per_dump, &connected_tally);
    report.total_connected_bytes = saturating_sum(connected_tally.values().map(|t| t.bytes));
    report.total_peak_bytes =
        per_dump.iter().map(|(_, t)| saturating_sum(t.values().map(|t| t.bytes))).max().unwrap_or(0);
    if let Some(d) = connected {
        report.sites = sites_of(live(d), &keys, top);
        device.connected_dump = d.label.clone();
    }
    if let Some(d) = leak_dump {
        report.leaks = sites_of(live(d), &keys, usize::MAX);
        report.leak_bytes_per_cycle = Some(saturating_sum(live(d).map(|r| r.size)));
    }
    if let Some(threads) = tasks_of(log) {
        report.threads = threads.len() as u64;
        report.thread_list = threads;
    }
    report.projection = projection_of(log, connected, &connected_tally, &sync, &device.connected_dump);
    heap_figures(log, &mut device);
    // Without a leak check in the trace, the tracker's figure is the only leak measure.
    if report.leak_bytes_per_cycle.is_none()
        && (device.not_returned_internal_bytes.is_some() || device.not_returned_psram_bytes.is_some())
    {
        report.leak_bytes_per_cycle = Some(
            device
                .not_returned_internal_bytes
                .unwrap_or(0)
                .saturating_add(device.not_returned_psram_bytes.unwrap_or(0)),
        );
    }
    device.skipped_lines = log.skipped_count as u64;
    // Every one, not a sample: each is data the report lacks.
    // Shown escaped: a damaged line may hold escape sequences that would drive the terminal.
    device.skipped_examples =
        log.skipped.iter().map(|(n, t)| format!("line {n}: {}", crate::fsutil::shown(t))).collect();
    if log.skipped_count > log.skipped.len() {
        device.skipped_examples.push(format!(
            "... and {} more (the first {} are listed)",
            log.skipped_count - log.skipped.len(),
            log.skipped.len()
        ));
    }
    device.warnings.extend(dump_warnings(log));
    report.device = Some(device);
    report
}

/// One row per component any dump names: its bytes at `connected`, its largest over the dumps,
/// and each phase's dump; largest first.
fn components_of(
    per_dump: &[(&Dump, BTreeMap<String, Tally>)],
    connected_tally: &BTreeMap<String, Tally>,
) -> Vec<ComponentReport> {
    let mut names: Vec<String> = per_dump.iter().flat_map(|(_, t)| t.keys().cloned()).collect();
    names.sort();
    names.dedup();
    let mut components = Vec::new();
    for name in names {
        let now = connected_tally.get(&name).copied().unwrap_or_default();
        let peak = per_dump.iter().map(|(_, t)| t.get(&name).map_or(0, |t| t.bytes)).max().unwrap_or(0);
        let phases = per_dump
            .iter()
            .filter(|(d, _)| report::PHASES.contains(&d.label.as_str()))
            .map(|(d, t)| {
                let t = t.get(&name).copied().unwrap_or_default();
                PhaseFigure { phase: d.label.clone(), live_bytes: t.bytes, peak_bytes: t.bytes, blocks: t.count }
            })
            .collect();
        components.push(ComponentReport {
            name,
            connected_bytes: now.bytes,
            peak_bytes: peak,
            phases,
            internal_bytes: now.internal,
            psram_bytes: now.psram,
        });
    }
    components.sort_by(|a, b| b.connected_bytes.cmp(&a.connected_bytes).then(a.name.cmp(&b.name)));
    components
}

/// Tasks: the `connected` listing, else the last one printed; None without any.
fn tasks_of(log: &Log) -> Option<Vec<ThreadReport>> {
    let label = if log.tasks.iter().any(|t| t.label == "connected") {
        "connected".to_string()
    } else {
        log.tasks.last()?.label.clone()
    };
    let threads = log.tasks.iter().filter(|t| t.label == label).map(|t| ThreadReport {
        name: t.name.clone(),
        stack_free_min_bytes: t.stack_free_min,
        ..Default::default()
    });
    Some(threads.collect())
}

/// Measured, not projected: the tracker's free-heap drop at `connected` when it printed one
/// (it sees everything, traced or not), else the connected dump's live bytes by heap; then the
/// lab's sync-object lines, counted from the connected dump.
fn projection_of(
    log: &Log,
    connected: Option<&Dump>,
    connected_tally: &BTreeMap<String, Tally>,
    sync: &BTreeMap<usize, (SyncKind, bool)>,
    connected_dump: &str,
) -> Projection {
    let drop_at = |heap: Heap| {
        log.deltas
            .iter()
            .find(|d| d.label == "connected" && d.heap == heap)
            .map(|d| (d.free.min(0).unsigned_abs(), d.base.clone()))
    };
    let traced = |heap: Heap| {
        saturating_sum(connected_tally.values().map(|t| if heap == Heap::Psram { t.psram } else { t.internal }))
    };
    let mut projection = Projection::default();
    for heap in [Heap::Internal, Heap::Psram] {
        let (bytes, mut line) = match drop_at(heap) {
            Some((bytes, base)) => (
                bytes,
                ProjectionLine {
                    what: format!("measured: {} free heap at `connected` minus at `{base}`", heap.name()),
                    source: "esp_memtrack delta: heap_caps_get_free_size()".into(),
                    ..Default::default()
                },
            ),
            None => (
                traced(heap),
                ProjectionLine {
                    what: format!("measured: {} bytes live in heap trace dump `{connected_dump}`", heap.name()),
                    source: "heap_trace_dump() (components/heap/heap_trace_standalone.c)".into(),
                    ..Default::default()
                },
            ),
        };
        if heap == Heap::Psram {
            projection.psram_bytes = bytes;
            line.psram_bytes = bytes;
        } else {
            projection.internal_bytes = bytes;
            line.internal_bytes = bytes;
        }
        projection.lines.push(line);
    }
    let mut by_kind: BTreeMap<SyncKind, (u64, u64, u64)> = BTreeMap::new(); // objects, internal, psram
    for r in connected.into_iter().flat_map(live) {
        let Some(&(kind, first)) = sync.get(&r.line) else { continue };
        let e = by_kind.entry(kind).or_default();
        e.0 += u64::from(first);
        match heap_of(r) {
            Heap::Psram => e.2 = e.2.saturating_add(r.size),
            Heap::Internal | Heap::Dma | Heap::Unknown => e.1 = e.1.saturating_add(r.size),
        }
    }
    for (kind, (objects, internal, psram)) in by_kind {
        let (what, source) = kind.line(objects);
        projection.lines.push(ProjectionLine {
            what: format!("of which {what}"),
            internal_bytes: internal,
            psram_bytes: psram,
            source: source.into(),
        });
    }
    projection
}

/// The tracker's heap figures: each snapshot, the heap's own peak and what was not returned.
fn heap_figures(log: &Log, device: &mut DeviceLog) {
    for s in &log.snapshots {
        let free_delta = log.deltas.iter().find(|d| d.label == s.label && d.heap == s.heap).map(|d| d.free);
        device.heaps.push(HeapFigure {
            label: s.label.clone(),
            heap: s.heap.name().into(),
            free: s.free,
            min_free: s.min_free,
            largest_free_block: s.largest,
            free_delta,
        });
    }
    // The heap's own peak: free at the baseline minus the lowest minimum-free seen after it.
    // Sees everything (untraced allocations, other tasks), unlike the dumps.
    for heap in [Heap::Internal, Heap::Psram] {
        let base = log.deltas.iter().find(|d| d.heap == heap).map(|d| d.base.clone());
        let Some(base) = base else { continue };
        let Some(start) = log.snapshots.iter().position(|s| s.label == base && s.heap == heap) else { continue };
        let lowest = log.snapshots[start + 1..].iter().filter(|s| s.heap == heap).map(|s| s.min_free).min();
        if let Some(lowest) = lowest {
            let peak = log.snapshots[start].free.saturating_sub(lowest);
            match heap {
                Heap::Psram => device.peak_psram_bytes = Some(peak),
                _ => device.peak_internal_bytes = Some(peak),
            }
        }
    }
    const AFTER: &[&str] = &["cleaned-up", "closed", "disconnected"];
    let not_returned = |heap: Heap| {
        AFTER
            .iter()
            .find_map(|label| log.deltas.iter().find(|d| d.label == *label && d.heap == heap))
            .map(|d| d.free.min(0).unsigned_abs())
    };
    device.not_returned_internal_bytes = not_returned(Heap::Internal);
    device.not_returned_psram_bytes = not_returned(Heap::Psram);
}

/// What a dump's own lines say the report lacks: cut short, disagreeing with its summary, or
/// overflowed.
fn dump_warnings(log: &Log) -> Vec<String> {
    let mut warnings = Vec::new();
    for d in &log.dumps {
        let read_bytes = saturating_sum(live(d).map(|r| r.size));
        let read_count = live(d).count() as u64;
        if !d.complete {
            warnings.push(format!(
                "heap trace dump `{}` (line {}) ends before its summary (cut by another dump's header or the end of the log): its records may be incomplete",
                d.label, d.line
            ));
        }
        if let (Some(bytes), Some(count)) = (d.summary_bytes, d.summary_allocations) {
            if (bytes, count) != (read_bytes, read_count) {
                warnings.push(format!(
                    "heap trace dump `{}` (line {}) says {bytes} bytes in {count} allocations, {read_bytes} bytes in {read_count} were read",
                    d.label, d.line
                ));
            }
        }
        if d.overflowed {
            warnings.push(format!(
                "heap trace dump `{}` (line {}): record buffer overflowed, raise ESP_MEMTRACK_TRACE_RECORDS",
                d.label, d.line
            ));
        }
    }
    warnings
}

pub(crate) fn render(report: &Report, args: &Args) -> String {
    let mut o = String::new();
    let device = report.device.clone().unwrap_or_default();
    let _ = writeln!(o, "device log {} (policy {})", args.log.display(), report.policy);
    for part in [render_components, render_heaps, render_measured, render_sites, render_threads_and_problems] {
        part(&mut o, report, &device);
    }
    o
}

/// The components at the connected dump, with their total.
fn render_components(o: &mut String, report: &Report, device: &DeviceLog) {
    if !device.connected_dump.is_empty() {
        let _ = writeln!(o, "components, from heap trace dump `{}`:", device.connected_dump);
        let _ =
            writeln!(o, "  {:<16} {:>10} {:>10} {:>10} {:>10}", "component", "connected", "peak", "internal", "psram");
        for c in &report.components {
            let _ = writeln!(
                o,
                "  {:<16} {:>10} {:>10} {:>10} {:>10}",
                c.name, c.connected_bytes, c.peak_bytes, c.internal_bytes, c.psram_bytes
            );
        }
        let internal = saturating_sum(report.components.iter().map(|c| c.internal_bytes));
        let psram = saturating_sum(report.components.iter().map(|c| c.psram_bytes));
        let _ = writeln!(
            o,
            "  {:<16} {:>10} {:>10} {:>10} {:>10}",
            "total", report.total_connected_bytes, report.total_peak_bytes, internal, psram
        );
    }
}

/// esp_memtrack's heap snapshots.
fn render_heaps(o: &mut String, _: &Report, device: &DeviceLog) {
    if !device.heaps.is_empty() {
        let _ = writeln!(o, "heaps (esp_memtrack):");
        let _ = writeln!(
            o,
            "  {:<14} {:<9} {:>10} {:>10} {:>10} {:>10}",
            "label", "heap", "free", "min_free", "largest", "delta"
        );
        for h in &device.heaps {
            let delta = h.free_delta.map(|d| d.to_string()).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                o,
                "  {:<14} {:<9} {:>10} {:>10} {:>10} {:>10}",
                h.label, h.heap, h.free, h.min_free, h.largest_free_block, delta
            );
        }
    }
}

/// The figure measured at `connected`, its sync-object lines, the static data and the peak.
fn render_measured(o: &mut String, report: &Report, device: &DeviceLog) {
    let _ = writeln!(
        o,
        "measured at `connected`: internal {} bytes, psram {} bytes",
        report.projection.internal_bytes, report.projection.psram_bytes
    );
    for l in report.projection.lines.iter().filter(|l| l.what.starts_with("of which ")) {
        let _ = writeln!(o, "  {:>9} int {:>9} psram  {}  [{}]", l.internal_bytes, l.psram_bytes, l.what, l.source);
    }
    if !device.static_data.is_empty() {
        let _ = writeln!(
            o,
            "static data, linker map {} (internal: .data + .bss in DRAM; psram: .ext_ram.bss):",
            device.static_source
        );
        let _ = writeln!(o, "  {:<16} {:>10} {:>10}", "component", "internal", "psram");
        for s in &device.static_data {
            let _ = writeln!(o, "  {:<16} {:>10} {:>10}", s.component, s.internal_bytes, s.psram_bytes);
        }
        let psram = saturating_sum(device.static_data.iter().map(|s| s.psram_bytes));
        let _ = writeln!(o, "  {:<16} {:>10} {:>10}", "total", report.static_internal_bytes.unwrap_or(0), psram);
    }
    if let (Some(internal), Some(psram)) = (device.peak_internal_bytes, device.peak_psram_bytes) {
        let _ = writeln!(
            o,
            "peak since baseline (free minus lowest min_free): internal {internal} bytes, psram {psram} bytes"
        );
    }
}

/// The largest sites, what the heap did not get back, and the leaks with their sites.
fn render_sites(o: &mut String, report: &Report, device: &DeviceLog) {
    let site_line = |o: &mut String, s: &Site| {
        let place = if s.line == 0 { s.file.clone() } else { format!("{}:{}", s.file, s.line) };
        let row = format!("  {:>8} {:>5}  {:<14} {} {}", s.bytes, s.count, s.component, place, s.function);
        let _ = writeln!(o, "{}", row.trim_end());
    };
    if !report.sites.is_empty() {
        let _ = writeln!(o, "largest allocation sites (bytes, blocks):");
        report.sites.iter().for_each(|s| site_line(o, s));
    }
    if let (Some(internal), Some(psram)) = (device.not_returned_internal_bytes, device.not_returned_psram_bytes) {
        let _ = writeln!(
            o,
            "heap not returned after the connection (esp_memtrack): internal {internal} bytes, psram {psram} bytes"
        );
    }
    match report.leak_bytes_per_cycle {
        Some(bytes) if !report.leaks.is_empty() => {
            let _ = writeln!(
                o,
                "leaks across the connection: {bytes} bytes in {} blocks",
                report.leaks.iter().map(|s| s.count).sum::<u64>()
            );
            report.leaks.iter().for_each(|s| site_line(o, s));
        }
        _ => {
            let _ = writeln!(o, "leak sites: no HEAP_TRACE_LEAKS dump and no dump labelled cleaned-up/closed");
        }
    }
}

/// Task stacks, then what the log lacked: skipped lines and warnings.
fn render_threads_and_problems(o: &mut String, report: &Report, device: &DeviceLog) {
    if !report.thread_list.is_empty() {
        let _ = writeln!(o, "task stacks (least free ever, bytes):");
        for t in &report.thread_list {
            let _ = writeln!(o, "  {:<16} {:>8}", t.name, t.stack_free_min_bytes);
        }
    }
    if device.skipped_lines > 0 {
        let _ = writeln!(o, "skipped {} unreadable line(s):", device.skipped_lines);
        for e in &device.skipped_examples {
            let _ = writeln!(o, "  {e}");
        }
    }
    for w in &device.warnings {
        let _ = writeln!(o, "warning: {w}");
    }
}
