//! Accounting: replays the trace, attributes every block to a component, and gives live bytes,
//! peaks and block counts per component and phase, the top call sites, leaks and threads.
//!
//! Attribution: a block allocated through the force-included redirect header carries its exact
//! component id. Any other block (C++ new, libc-internal, untagged malloc) is attributed by its
//! call stack: the innermost frame whose source path belongs to a component
//! (`report::component_of_source_path`), else the innermost frame inside one of the stack's
//! shared libraries. Blocks of the driver itself (`app`) and of the C/C++ runtime alone are shown
//! but never counted as the stack's.
//!
//! A phase's figure is taken at the moment the driver marks it (`connected` = live bytes when the
//! connection came up); its peak is the highest live total until the next mark.

use super::projection::{self, Block, Census, SyncObject};
use crate::components;
use crate::policy::Policy;
use crate::replica::trace::{self, Event};
use crate::replica::HostBuild;
use crate::report::{self, ComponentReport, CycleSite, DtlsTimers, PhaseFigure, Report, Site, ThreadReport, TimeWait};
use anyhow::Result;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The Theil-Sen slope: the median of the slopes between every pair of points. A leak moves
/// every pair; a queue that happens to hold 168 B at a few marks moves only the pairs that
/// touch those marks, so it cannot fake a leak the way it tips a least-squares fit.
pub fn median_slope(values: &[u64]) -> f64 {
    let mut slopes = Vec::with_capacity(values.len() * values.len().saturating_sub(1) / 2);
    for i in 0..values.len() {
        for j in i + 1..values.len() {
            slopes.push((values[j] as f64 - values[i] as f64) / (j - i) as f64);
        }
    }
    if slopes.is_empty() {
        return 0.0;
    }
    slopes.sort_by(f64::total_cmp);
    let mid = slopes.len() / 2;
    if slopes.len() % 2 == 1 {
        slopes[mid]
    } else {
        (slopes[mid - 1] + slopes[mid]) / 2.0
    }
}

/// Components counted as the stack's, in report order: those with an allocation id.
pub fn stack_components() -> Vec<&'static str> {
    components::counted()
}

/// Not the stack's: the lab driver (`app`) and allocations only the C/C++ runtime made (`runtime`).
const UNCOUNTED: &[&str] = &["app", "runtime"];

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SiteKey {
    component: usize,
    file: String,
    line: u32,
    function: String,
}

/// What symbolizing one return address tells us.
#[derive(Debug, Clone)]
struct FrameInfo {
    component: Option<&'static str>,
    module_component: Option<&'static str>,
    file: String,
    line: u32,
    function: String,
    in_app: bool,
    shared_ptr: bool,
}

struct Symbolizer {
    modules: Vec<(u32, String)>,
    loaders: HashMap<String, Option<addr2line::Loader>>,
    cache: HashMap<u32, FrameInfo>,
    app: String,
}

fn module_component(path: &str) -> Option<&'static str> {
    let name = Path::new(path).file_name()?.to_string_lossy().to_string();
    Some(match () {
        _ if name.starts_with("libdatachannel.so") => "libdatachannel",
        _ if name.starts_with("libjuice.so") => "libjuice",
        _ if name.starts_with("libusrsctp.so") => "usrsctp",
        _ if name.starts_with("libsrtp2.so") => "libsrtp",
        _ if name.starts_with("libmbed") => "mbedtls",
        _ if name.starts_with("libesp_dc_port_host") => "esp_dc_port",
        _ => return None,
    })
}

impl Symbolizer {
    fn new(mut modules: Vec<(u32, String)>, app: String) -> Self {
        modules.sort();
        Symbolizer { modules, loaders: HashMap::new(), cache: HashMap::new(), app }
    }

    fn info(&mut self, pc: u32) -> FrameInfo {
        if let Some(info) = self.cache.get(&pc) {
            return info.clone();
        }
        let module = self.modules.iter().rev().find(|(base, _)| *base <= pc).cloned();
        let mut info = FrameInfo {
            component: None,
            module_component: None,
            file: String::new(),
            line: 0,
            function: String::new(),
            in_app: false,
            shared_ptr: false,
        };
        if let Some((base, path)) = module {
            let path = if path == "/proc/self/exe" { self.app.clone() } else { path };
            info.module_component = module_component(&path);
            info.in_app = path == self.app;
            let loader = self.loaders.entry(path.clone()).or_insert_with(|| addr2line::Loader::new(&path).ok());
            if let Some(loader) = loader {
                // A return address points after the call; look up the call itself.
                let probe = u64::from(pc.wrapping_sub(base).wrapping_sub(1));
                if let Ok(mut frames) = loader.find_frames(probe) {
                    // Inlined frames come innermost first: the first that maps to a component wins.
                    while let Ok(Some(frame)) = frames.next() {
                        let file = frame.location.as_ref().and_then(|l| l.file).unwrap_or("").to_string();
                        let line = frame.location.as_ref().and_then(|l| l.line).unwrap_or(0);
                        let function = frame
                            .function
                            .as_ref()
                            .and_then(|f| f.demangle().ok().map(|s| s.into_owned()))
                            .unwrap_or_default();
                        if function.contains("_Sp_counted") || function.contains("__shared_count") {
                            info.shared_ptr = true;
                        }
                        if info.component.is_none() {
                            if let Some(c) = report::component_of_source_path(&file) {
                                info.component = Some(c);
                                info.file = short_path(&file);
                                info.line = line;
                                info.function = short_function(&function);
                            } else if info.file.is_empty() {
                                info.file = short_path(&file);
                                info.line = line;
                                info.function = short_function(&function);
                            }
                        }
                    }
                }
            }
        }
        self.cache.insert(pc, info.clone());
        info
    }

    /// Component and call site of a block from its frames.
    fn attribute(&mut self, frames: &[u32]) -> (&'static str, String, u32, String, bool) {
        let infos: Vec<FrameInfo> = frames.iter().map(|pc| self.info(*pc)).collect();
        let shared_ptr = infos.iter().take(6).any(|i| i.shared_ptr);
        if let Some(i) = infos.iter().find(|i| i.component.is_some()) {
            return (i.component.unwrap(), i.file.clone(), i.line, i.function.clone(), shared_ptr);
        }
        if let Some(i) = infos.iter().find(|i| i.module_component.is_some()) {
            return (i.module_component.unwrap(), i.file.clone(), i.line, i.function.clone(), shared_ptr);
        }
        if let Some(i) = infos.iter().find(|i| i.in_app) {
            return ("app", i.file.clone(), i.line, i.function.clone(), shared_ptr);
        }
        let first = infos.first();
        (
            "runtime",
            first.map(|i| i.file.clone()).unwrap_or_default(),
            first.map(|i| i.line).unwrap_or(0),
            first.map(|i| i.function.clone()).unwrap_or_default(),
            shared_ptr,
        )
    }
}

/// Upstream-relative paths read better: `deps/usrsctp/usrsctplib/netinet/sctp_pcb.c`.
fn short_path(path: &str) -> String {
    for marker in ["/stack-src/", "/mbedtls-src/", "/lab/"] {
        if let Some(i) = path.find(marker) {
            return path[i + marker.len()..].to_string();
        }
    }
    path.to_string()
}

fn short_function(f: &str) -> String {
    let f = f.split('(').next().unwrap_or(f);
    if f.len() > 80 {
        format!("…{}", &f[f.len() - 79..])
    } else {
        f.to_string()
    }
}

#[derive(Clone)]
struct Live {
    size: u64,
    component: usize,
    site: usize,
    origin: u8,
    caps: u32,
    shared_ptr: bool,
}

#[derive(Clone, Default)]
struct ThreadInfo {
    component: String,
    created_at: String,
    requested: u64,
    high_water: u64,
    start_ns: u64,
    end_ns: Option<u64>,
}

/// The phase figures and census of live objects at one mark.
#[derive(Clone)]
struct Mark {
    name: String,
    live: Vec<u64>,
    blocks: Vec<u64>,
    peak: Vec<u64>,
    peak_total: u64,
    census: Census,
}

pub fn build_report(trace_path: &Path, scenario: &str, policy: &Policy, build: &HostBuild) -> Result<Report> {
    let trace = trace::read(trace_path)?;
    let mut report = account(&trace, scenario, policy, &build.driver.to_string_lossy())?;
    let statics = crate::static_sizes::host_sizes(&build.libraries, policy)?;
    report.static_internal_bytes = Some(statics.values().map(|s| s.dram_bytes).sum());
    if let Some(chip) = crate::static_sizes::chip_static(&policy.policy.name) {
        let chip = chip?;
        report.static_internal_chip_bytes =
            Some(statics.keys().filter_map(|c| chip.sizes.get(c)).map(|s| s.dram_bytes).sum());
    }
    Ok(report)
}

/// The accounting itself, on a parsed trace (tests feed hand-made and fixture traces).
pub fn account(trace: &trace::Trace, scenario: &str, policy: &Policy, app_path: &str) -> Result<Report> {
    let mut ledger = Ledger::new(trace, app_path);
    for (i, record) in trace.records.iter().enumerate() {
        ledger.record(i, record);
    }
    ledger.close_phase();
    Ok(ledger.report(scenario, policy))
}

/// The component columns: the stack's, then `libstdc++`, then the uncounted ones. Anything not
/// named falls in the last (`runtime`).
struct Columns {
    names: Vec<&'static str>,
    counted: Vec<bool>,
}

impl Columns {
    fn new() -> Columns {
        let mut names: Vec<&'static str> = stack_components();
        names.push("libstdc++");
        names.extend(UNCOUNTED);
        let counted = names.iter().map(|n| !UNCOUNTED.contains(n) && *n != "libstdc++").collect();
        Columns { names, counted }
    }

    fn index(&self, name: &str) -> usize {
        self.names.iter().position(|c| *c == name).unwrap_or(self.names.len() - 1)
    }

    fn total(&self, per_column: &[u64]) -> u64 {
        per_column.iter().zip(&self.counted).filter(|(_, c)| **c).map(|(v, _)| *v).sum()
    }
}

/// The replay's state: live blocks and their sums per column, the marks so far, threads, sync
/// objects and sockets. One method per trace event.
struct Ledger<'t> {
    trace: &'t trace::Trace,
    sym: Symbolizer,
    cols: Columns,
    sites: Vec<SiteKey>,
    site_index: HashMap<SiteKey, usize>,
    live: HashMap<u32, Live>,
    live_bytes: Vec<u64>,
    live_blocks: Vec<u64>,
    /// Live bytes of the counted columns.
    total: u64,
    peak_in_phase: Vec<u64>,
    peak_total_in_phase: u64,
    global_peak: u64,
    global_peak_at: usize,
    marks: Vec<Mark>,
    threads: BTreeMap<u32, ThreadInfo>,
    /// addr -> (is mutex, component of the first user).
    sync: HashMap<u32, (bool, &'static str)>,
    /// fd -> is UDP.
    sockets: HashMap<u32, bool>,
    timeline: Vec<(u64, Vec<u64>)>,
    last_sample_ms: u64,
    /// Bytes and blocks by site at the connected mark: what a connection holds, line by line.
    at_connected: HashMap<usize, (u64, u64)>,
    /// At each quiet `cycle-N-closed` mark: its time and bytes and blocks by site.
    closed_by_site: Vec<ClosedMark>,
}

/// A `cycle-N-closed` mark, site by site (`Report.cycle_sites`, `Report.time_wait`).
struct ClosedMark {
    time_ns: u64,
    by_site: HashMap<usize, (u64, u64)>,
}

fn is_cycle_closed(name: &str) -> bool {
    name.starts_with("cycle-") && name.ends_with("-closed")
}

impl<'t> Ledger<'t> {
    fn new(trace: &'t trace::Trace, app_path: &str) -> Ledger<'t> {
        let modules = trace
            .records
            .iter()
            .filter_map(|r| match &r.event {
                Event::Module { path, base } => Some((*base, path.clone())),
                _ => None,
            })
            .collect();
        let cols = Columns::new();
        let n = cols.names.len();
        Ledger {
            trace,
            sym: Symbolizer::new(modules, app_path.to_string()),
            cols,
            sites: Vec::new(),
            site_index: HashMap::new(),
            live: HashMap::new(),
            live_bytes: vec![0; n],
            live_blocks: vec![0; n],
            total: 0,
            peak_in_phase: vec![0; n],
            peak_total_in_phase: 0,
            global_peak: 0,
            global_peak_at: 0,
            marks: Vec::new(),
            threads: BTreeMap::new(),
            sync: HashMap::new(),
            sockets: HashMap::new(),
            timeline: Vec::new(),
            last_sample_ms: 0,
            at_connected: HashMap::new(),
            closed_by_site: Vec::new(),
        }
    }

    /// Event `i` of the trace, then a timeline sample every 50 ms.
    fn record(&mut self, i: usize, record: &trace::Record) {
        match &record.event {
            Event::Alloc { addr, size, origin, component, caps, frames } => {
                self.alloc(i, *addr, u64::from(*size), *origin, *component, *caps, frames)
            }
            Event::Free { addr } => self.free(*addr),
            Event::Phase { name } => self.phase(name, record.time_ns),
            Event::ThreadCreate { requested, serial, frames } => {
                self.thread_create(*requested, *serial, frames, record.time_ns)
            }
            Event::ThreadEnd { high_water, serial } => self.thread_end(*high_water, *serial, record.time_ns),
            Event::Mutex { addr, frames } => self.sync_first_use(*addr, true, frames),
            Event::Cond { addr, frames } => self.sync_first_use(*addr, false, frames),
            Event::SyncDestroy { addr } => {
                self.sync.remove(addr);
            }
            Event::Socket { fd, kind, .. } => {
                self.sockets.insert(*fd, *kind == 2 /* SOCK_DGRAM */);
            }
            Event::SocketClose { fd } => {
                self.sockets.remove(fd);
            }
            Event::Module { .. } => {}
        }
        let ms = record.time_ns / 1_000_000;
        if ms >= self.last_sample_ms + 50 {
            self.last_sample_ms = ms;
            self.timeline.push((ms, self.live_bytes.clone()));
        }
    }

    /// Column and site of a block: a tagged block's component is its tag, its site the frames'.
    fn attribute(&mut self, component: i8, frames: &[u32]) -> (usize, SiteKey, bool) {
        let (by_frames, file, line, function, shared_ptr) = self.sym.attribute(frames);
        let name =
            if component > 0 { components::placed_by_id(component.into()).unwrap_or("runtime") } else { by_frames };
        let ci = self.cols.index(name);
        (ci, SiteKey { component: ci, file, line, function }, shared_ptr)
    }

    #[allow(clippy::too_many_arguments)]
    fn alloc(&mut self, i: usize, addr: u32, size: u64, origin: u8, component: i8, caps: u32, frames: &[u32]) {
        let (ci, key, shared_ptr) = self.attribute(component, frames);
        let sites = &mut self.sites;
        let site = *self.site_index.entry(key.clone()).or_insert_with(|| {
            sites.push(key);
            sites.len() - 1
        });
        let block = Live { size, component: ci, site, origin, caps, shared_ptr };
        if let Some(old) = self.live.insert(addr, block) {
            self.forget(&old);
        }
        self.live_bytes[ci] += size;
        self.live_blocks[ci] += 1;
        if self.cols.counted[ci] {
            self.total += size;
        }
        self.peak_in_phase[ci] = self.peak_in_phase[ci].max(self.live_bytes[ci]);
        if self.total > self.global_peak {
            self.global_peak = self.total;
            self.global_peak_at = i;
        }
        self.peak_total_in_phase = self.peak_total_in_phase.max(self.total);
    }

    fn free(&mut self, addr: u32) {
        if let Some(old) = self.live.remove(&addr) {
            self.forget(&old);
        }
    }

    /// Takes a block that is no longer live out of the sums.
    fn forget(&mut self, old: &Live) {
        self.live_bytes[old.component] -= old.size;
        self.live_blocks[old.component] -= 1;
        if self.cols.counted[old.component] {
            self.total -= old.size;
        }
    }

    /// A mark: the previous phase's peaks are final, this one's figures and census are taken.
    fn phase(&mut self, name: &str, time_ns: u64) {
        let is_connected = |n: &str| CONNECTED_MARKS.contains(&n);
        if is_connected(name) && !self.marks.iter().any(|m| is_connected(&m.name)) {
            for l in self.live.values() {
                let e = self.at_connected.entry(l.site).or_default();
                e.0 += l.size;
                e.1 += 1;
            }
        }
        if is_cycle_closed(name) {
            let mut by_site: HashMap<usize, (u64, u64)> = HashMap::new();
            for l in self.live.values().filter(|l| self.cols.counted[l.component]) {
                let e = by_site.entry(l.site).or_default();
                e.0 += l.size;
                e.1 += 1;
            }
            self.closed_by_site.push(ClosedMark { time_ns, by_site });
        }
        self.close_phase();
        self.marks.push(Mark {
            name: name.to_string(),
            live: self.live_bytes.clone(),
            blocks: self.live_blocks.clone(),
            peak: self.live_bytes.clone(),
            peak_total: self.total,
            census: self.census(),
        });
        self.peak_in_phase = self.live_bytes.clone();
        self.peak_total_in_phase = self.total;
        self.timeline.push((time_ns / 1_000_000, self.live_bytes.clone()));
    }

    /// The last mark's peaks: the highest seen since it was taken.
    fn close_phase(&mut self) {
        if let Some(m) = self.marks.last_mut() {
            m.peak = self.peak_in_phase.clone();
            m.peak_total = self.peak_total_in_phase;
        }
    }

    fn thread_create(&mut self, requested: u32, serial: u32, frames: &[u32], time_ns: u64) {
        let (component, file, line, function, _) = self.sym.attribute(frames);
        let requested = if requested == 0 { self.trace.default_stack_bytes } else { requested };
        self.threads.insert(
            serial,
            ThreadInfo {
                component: component.to_string(),
                created_at: format!("{file}:{line} {function}"),
                requested: u64::from(requested),
                high_water: 0,
                start_ns: time_ns,
                end_ns: None,
            },
        );
    }

    fn thread_end(&mut self, high_water: u32, serial: u32, time_ns: u64) {
        if let Some(t) = self.threads.get_mut(&serial) {
            t.high_water = u64::from(high_water);
            t.end_ns = Some(time_ns);
        }
    }

    fn sync_first_use(&mut self, addr: u32, mutex: bool, frames: &[u32]) {
        let component = self.sym.attribute(frames).0;
        self.sync.insert(addr, (mutex, component));
    }

    fn block(&self, l: &Live) -> Block {
        Block {
            component: self.cols.names[l.component].to_string(),
            size: l.size,
            origin: l.origin,
            caps: l.caps,
            shared_ptr_control: l.shared_ptr,
        }
    }

    /// What is alive now, for the projection: counted blocks, the stack's threads, locks, sockets.
    fn census(&self) -> Census {
        let objects = self.sync_objects();
        let mut mutex_owners: BTreeMap<String, u64> = BTreeMap::new();
        for o in objects.iter().filter(|o| o.mutex) {
            *mutex_owners.entry(o.component.clone()).or_default() += 1;
        }
        Census {
            blocks: self.live.values().filter(|l| self.cols.counted[l.component]).map(|l| self.block(l)).collect(),
            threads: self
                .threads
                .values()
                .filter(|t| t.end_ns.is_none() && t.component != "app")
                .map(|t| (t.component.clone(), t.requested))
                .collect(),
            mutexes: objects.iter().filter(|o| o.mutex).count() as u64,
            mutex_owners,
            condvars: objects.iter().filter(|o| !o.mutex).count() as u64,
            sync_objects: objects,
            udp_sockets: self.sockets.values().filter(|u| **u).count() as u64,
        }
    }

    /// Each of the stack's sync objects with the live block its pthread_*_t sits in (None: static
    /// or stack storage): sync.placement = "with_owner" places its FreeRTOS object by that block.
    /// The driver's own locks are the application's, not the stack's (as its threads are); a
    /// lock inside a block the driver allocated is the driver's, even when a stack thread (a
    /// callback) happened to take it first: which thread is first is timing.
    fn sync_objects(&self) -> Vec<SyncObject> {
        let mut blocks: Vec<(u32, &Live)> = self.live.iter().map(|(a, l)| (*a, l)).collect();
        blocks.sort_unstable_by_key(|(a, _)| *a);
        let mut objects: Vec<(u32, SyncObject)> = self
            .sync
            .iter()
            .filter(|(_, (_, component))| *component != "app")
            .filter_map(|(addr, (mutex, component))| {
                let at = blocks.partition_point(|(a, _)| *a <= *addr);
                let owner =
                    at.checked_sub(1).map(|i| blocks[i]).filter(|(a, l)| u64::from(*addr) < u64::from(*a) + l.size);
                if owner.is_some_and(|(_, l)| self.cols.names[l.component] == "app") {
                    return None;
                }
                let (owner, owner_site) = (owner.map(|(_, l)| self.block(l)), owner.map(|(_, l)| l.site));
                Some((*addr, SyncObject { mutex: *mutex, component: component.to_string(), owner, owner_site }))
            })
            .collect();
        objects.sort_unstable_by_key(|(a, _)| *a);
        objects.into_iter().map(|(_, o)| o).collect()
    }

    /// Every counted site with bytes, largest first: tables show the first few, `audit` ranks by all.
    fn ranked(&self, by_site: HashMap<usize, (u64, u64)>) -> Vec<Site> {
        let mut list: Vec<Site> = by_site
            .into_iter()
            .filter(|(si, (bytes, _))| self.cols.counted[self.sites[*si].component] && *bytes > 0)
            .map(|(si, (bytes, count))| {
                let k = &self.sites[si];
                let component = self.cols.names[k.component].to_string();
                Site { component, file: k.file.clone(), line: k.line, function: k.function.clone(), bytes, count }
            })
            .collect();
        // Ties in full, so the order does not depend on the hash map's.
        list.sort_by(|a, b| {
            (b.bytes, &a.file, a.line, &a.function, &a.component, a.count).cmp(&(
                a.bytes,
                &b.file,
                b.line,
                &b.function,
                &b.component,
                b.count,
            ))
        });
        list
    }

    /// Bytes and blocks by site of the blocks live right after event `until` (a second pass: the
    /// global peak's moment is known only at the end).
    fn sites_live_at(&mut self, until: usize) -> HashMap<usize, (u64, u64)> {
        let mut live: HashMap<u32, (usize, u64)> = HashMap::new();
        for record in self.trace.records.iter().take(until + 1) {
            match &record.event {
                Event::Alloc { addr, size, component, frames, .. } => {
                    let (by_frames, file, line, function, _) = self.sym.attribute(frames);
                    let name = match *component {
                        c if c > 0 => components::placed_by_id(c.into()).unwrap_or(by_frames),
                        _ => by_frames,
                    };
                    let key = SiteKey { component: self.cols.index(name), file, line, function };
                    if let Some(si) = self.site_index.get(&key) {
                        live.insert(*addr, (*si, u64::from(*size)));
                    }
                }
                Event::Free { addr } => {
                    live.remove(addr);
                }
                _ => {}
            }
        }
        let mut by_site: HashMap<usize, (u64, u64)> = HashMap::new();
        for (si, size) in live.into_values() {
            let e = by_site.entry(si).or_default();
            e.0 += size;
            e.1 += 1;
        }
        by_site
    }

    fn mark(&self, name: &str) -> Option<&Mark> {
        self.marks.iter().find(|m| m.name == name)
    }

    fn total_at(&self, name: &str) -> Option<u64> {
        self.mark(name).map(|m| self.cols.total(&m.live))
    }

    fn connected_mark(&self) -> Option<&Mark> {
        self.marks.iter().find(|m| CONNECTED_MARKS.contains(&m.name.as_str()))
    }

    /// Per column: live bytes at the connected mark, the highest peak and every mark's figures;
    /// an uncounted column only when it ever held something.
    fn component_reports(&self) -> Vec<ComponentReport> {
        let connected = self.connected_mark();
        let mut components = Vec::new();
        for (ci, name) in self.cols.names.iter().enumerate() {
            let phases: Vec<PhaseFigure> = self
                .marks
                .iter()
                .map(|m| PhaseFigure {
                    phase: m.name.clone(),
                    live_bytes: m.live[ci],
                    peak_bytes: m.peak[ci],
                    blocks: m.blocks[ci],
                })
                .collect();
            let peak = self.marks.iter().map(|m| m.peak[ci]).max().unwrap_or(0);
            if peak == 0 && !self.cols.counted[ci] {
                continue;
            }
            components.push(ComponentReport {
                name: name.to_string(),
                connected_bytes: connected.map(|m| m.live[ci]).unwrap_or(0),
                peak_bytes: peak,
                phases,
                ..Default::default()
            });
        }
        components
    }

    fn thread_reports(&self) -> Vec<ThreadReport> {
        let last_ns = self.trace.records.last().map(|r| r.time_ns).unwrap_or(0);
        self.threads
            .values()
            .filter(|t| t.component != "app")
            .map(|t| ThreadReport {
                component: t.component.clone(),
                created_at: t.created_at.clone(),
                requested_bytes: t.requested,
                high_water_bytes: t.high_water,
                lifetime_ms: t.end_ns.unwrap_or(last_ns).saturating_sub(t.start_ns) / 1_000_000,
                ended: t.end_ns.is_some(),
                ..Default::default()
            })
            .collect()
    }

    /// `cycle`: what each cycle keeps, the median slope of the totals at the `closed` marks
    /// without what is bounded and expires, each its own line with its bound: usrsctp's
    /// verification-tag time-wait (`time_wait`) and closed DTLS transports held by a pending
    /// retransmission timer (`dtls_timers`). The first cycle also pays the global init that stays
    /// until rtcCleanup: fit from the second. Each `closed` mark is a quiet point (usrsctp's
    /// teardown done), so the slope of the rest is what a cycle keeps; a negative slope keeps
    /// nothing.
    fn leak_per_cycle(&self) -> Option<u64> {
        let expiring = self.expiring_at_marks();
        let closed: Vec<u64> = self
            .marks
            .iter()
            .filter(|m| is_cycle_closed(&m.name))
            .zip(&expiring)
            .map(|(m, e)| self.cols.total(&m.live).saturating_sub(e.time_wait.0 + e.dtls_bytes))
            .collect();
        (closed.len() >= 4).then(|| median_slope(&closed[1..]).max(0.0).round() as u64)
    }

    /// Which kind of bounded, expiring hold a site's blocks are, if any.
    fn expiring_kind(&self, site: usize) -> Option<Expiring> {
        let k = &self.sites[site];
        let component = self.cols.names[k.component];
        if component == "usrsctp" && k.function == TIME_WAIT_FUNCTION {
            Some(Expiring::TimeWait)
        } else if component == "libdatachannel" && k.function.ends_with(DTLS_TRANSPORT_FUNCTION) {
            Some(Expiring::DtlsTransport)
        } else if component == "libdatachannel" && k.function.contains(DTLS_TIMER_TASK) {
            Some(Expiring::DtlsTimerTask)
        } else {
            None
        }
    }

    /// At each `closed` mark: the time-wait's bytes and blocks, the DTLS transports and timer
    /// tasks, and the bytes of both kinds left out of the per-cycle slope.
    fn expiring_at_marks(&self) -> Vec<ExpiringAtMark> {
        let times: Vec<u64> = self.closed_by_site.iter().map(|m| m.time_ns).collect();
        let mut within = 0;
        self.closed_by_site
            .iter()
            .enumerate()
            .map(|(k, m)| {
                within = closed_within_time_wait(&times, k).max(within);
                let mut e = ExpiringAtMark { within, ..Default::default() };
                let (mut transport_bytes, mut task_bytes, mut tasks) = (0, 0, None);
                for (si, (bytes, blocks)) in &m.by_site {
                    match self.expiring_kind(*si) {
                        Some(Expiring::TimeWait) => {
                            e.time_wait.0 += bytes;
                            e.time_wait.1 += blocks;
                        }
                        Some(Expiring::DtlsTransport) => {
                            transport_bytes += bytes;
                            e.transports += blocks;
                        }
                        Some(Expiring::DtlsTimerTask) => {
                            task_bytes += bytes;
                            // A task has blocks at each of its sites (three for its packaged_task
                            // and bound lambda, one for the queue's std::function): count the fewest.
                            tasks = Some(tasks.map_or(*blocks, |t: u64| t.min(*blocks)));
                        }
                        None => {}
                    }
                }
                e.tasks = tasks.unwrap_or(0);
                e.held_transports = e.transports.min(e.tasks).min(within);
                e.dtls_bytes = task_bytes + transport_bytes.checked_div(e.transports).unwrap_or(0) * e.held_transports;
                e
            })
            .collect()
    }

    /// `cycle`: the time-wait line and its bound at every `closed` mark (see `TimeWait`).
    fn time_wait(&self) -> Option<TimeWait> {
        let expiring = self.expiring_at_marks();
        let last = expiring.last()?;
        let names: Vec<&str> = self.marks.iter().map(|m| m.name.as_str()).filter(|n| is_cycle_closed(n)).collect();
        let mut tw = TimeWait { bytes: last.time_wait.0, blocks: last.time_wait.1, ..Default::default() };
        for (k, e) in expiring.iter().enumerate() {
            tw.closed_within_time_wait = e.within;
            tw.bound_blocks = time_wait_bound(k as u64 + 1, e.within);
            tw.most_blocks = tw.most_blocks.max(e.time_wait.1);
            if e.time_wait.1 > tw.bound_blocks && tw.over_bound_at.is_none() {
                tw.over_bound_at = Some(format!(
                    "{}: {} blocks, bound {}",
                    names.get(k).copied().unwrap_or("?"),
                    e.time_wait.1,
                    tw.bound_blocks
                ));
            }
        }
        Some(tw)
    }

    /// `cycle`: the closed DTLS transports held by a pending timer, and their bound (see `DtlsTimers`).
    fn dtls_timers(&self) -> Option<DtlsTimers> {
        let expiring = self.expiring_at_marks();
        let last = expiring.last()?;
        let names: Vec<&str> = self.marks.iter().map(|m| m.name.as_str()).filter(|n| is_cycle_closed(n)).collect();
        let mut d = DtlsTimers {
            transports: last.held_transports,
            tasks: last.tasks,
            bytes: last.dtls_bytes,
            ..Default::default()
        };
        for (k, e) in expiring.iter().enumerate() {
            d.most_transports = d.most_transports.max(e.held_transports);
            d.most_tasks = d.most_tasks.max(e.tasks);
            d.most_bytes = d.most_bytes.max(e.dtls_bytes);
            d.most_unexplained_transports = d.most_unexplained_transports.max(e.transports - e.held_transports);
            d.bound_tasks = DTLS_TIMER_TASKS_PER_CONNECTION * e.within;
            if e.tasks > d.bound_tasks && d.over_bound_at.is_none() {
                d.over_bound_at = Some(format!(
                    "{}: {} timer tasks, bound {}",
                    names.get(k).copied().unwrap_or("?"),
                    e.tasks,
                    d.bound_tasks
                ));
            }
        }
        Some(d)
    }

    /// `cycle`: every site whose bytes at the `closed` marks moved from the second mark on.
    fn cycle_sites(&self) -> Vec<CycleSite> {
        if self.closed_by_site.len() < 3 {
            return Vec::new();
        }
        let marks = &self.closed_by_site[1..];
        let mut sites: Vec<usize> = marks.iter().flat_map(|m| m.by_site.keys().copied()).collect();
        sites.sort_unstable();
        sites.dedup();
        let mut out: Vec<CycleSite> = sites
            .into_iter()
            .filter_map(|si| {
                let series: Vec<u64> = marks.iter().map(|m| m.by_site.get(&si).map_or(0, |v| v.0)).collect();
                let (first, last) = (series[0], *series.last().unwrap());
                if series.iter().all(|v| *v == first) {
                    return None;
                }
                let slope = median_slope(&series);
                let k = &self.sites[si];
                Some(CycleSite {
                    component: self.cols.names[k.component].to_string(),
                    file: k.file.clone(),
                    line: k.line,
                    function: k.function.clone(),
                    first_bytes: first,
                    last_bytes: last,
                    last_blocks: marks.last().and_then(|m| m.by_site.get(&si)).map_or(0, |v| v.1),
                    slope_bytes_per_cycle: (slope * 100.0).round() / 100.0,
                    expiring: match self.expiring_kind(si) {
                        Some(Expiring::TimeWait) => "time-wait".into(),
                        Some(Expiring::DtlsTransport | Expiring::DtlsTimerTask) => "dtls-timer".into(),
                        None => String::new(),
                    },
                    bytes_at_marks: self.closed_by_site.iter().map(|m| m.by_site.get(&si).map_or(0, |v| v.0)).collect(),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            let key = |c: &CycleSite| (c.last_bytes as i64 - c.first_bytes as i64).abs();
            key(b).cmp(&key(a)).then_with(|| (&a.file, a.line, &a.function).cmp(&(&b.file, b.line, &b.function)))
        });
        out
    }

    /// `scale`: the marginal bytes of each connection beyond the first (1 -> 4 connected).
    fn per_extra_connection(&self) -> Option<u64> {
        Some(self.total_at("scale-4-connected")?.saturating_sub(self.total_at("scale-1-connected")?) / 3)
    }

    fn handshake_peak(&self) -> u64 {
        let handshake = |m: &&Mark| matches!(m.name.as_str(), "pc-created" | "gathered" | "connected");
        self.marks.iter().filter(handshake).map(|m| m.peak_total).max().unwrap_or(0)
    }

    fn report(mut self, scenario: &str, policy: &Policy) -> Report {
        let top = self.sites_live_at(self.global_peak_at);
        let top = self.ranked(top);
        let at_connected = std::mem::take(&mut self.at_connected);
        let connected_sites = self.ranked(at_connected);
        // Leaks: what the stack still holds at the end.
        let mut leaks_by_site: HashMap<usize, (u64, u64)> = HashMap::new();
        for l in self.live.values() {
            let e = leaks_by_site.entry(l.site).or_default();
            e.0 += l.size;
            e.1 += 1;
        }
        let leaks = self.ranked(leaks_by_site);
        let census = self.connected_mark().or_else(|| self.mark("streaming")).map(|m| m.census.clone());
        let census = census.unwrap_or_default();
        let load = self.total_at("start").unwrap_or(0);
        let streaming = self.mark("streaming");
        let thread_list = self.thread_reports();
        Report {
            scenario: scenario.to_string(),
            policy: policy.policy.name.clone(),
            total_connected_bytes: self.connected_mark().map(|m| self.cols.total(&m.live)).unwrap_or(0),
            total_peak_bytes: self.global_peak,
            handshake_peak_bytes: self.handshake_peak(),
            init_bytes: self.total_at("pc-created").unwrap_or(0).saturating_sub(load),
            load_bytes: load,
            streaming_bytes: streaming.map(|m| self.cols.total(&m.live)),
            streaming_peak_bytes: streaming.map(|m| m.peak_total.max(self.cols.total(&m.live))),
            threads: max_concurrent_threads(&self.threads),
            threads_created: thread_list.len() as u64,
            leak_bytes_per_cycle: if scenario == "cycle" { self.leak_per_cycle() } else { None },
            time_wait: if scenario == "cycle" { self.time_wait() } else { None },
            dtls_timers: if scenario == "cycle" { self.dtls_timers() } else { None },
            cycle_sites: if scenario == "cycle" { self.cycle_sites() } else { Vec::new() },
            bytes_per_extra_connection: if scenario == "scale" { self.per_extra_connection() } else { None },
            leak_bytes: leaks.iter().map(|l| l.bytes).sum(),
            leaks,
            sites: top,
            connected_sites,
            total_stack_high_water_bytes: max_concurrent_high_water(&self.threads),
            thread_list,
            projection: projection::project(policy, &census),
            sync_owners: sync_owners(&census, &self.sites, &self.cols.names),
            components: self.component_reports(),
            timeline_components: self.cols.names.iter().map(|s| s.to_string()).collect(),
            timeline: std::mem::take(&mut self.timeline),
            ..Default::default()
        }
    }
}

/// Most stack threads alive at once: what stacks and TCBs cost at the worst moment. (libdatachannel's
/// short-lived cleanup thread runs after the others are joined.)
fn max_concurrent_threads(threads: &BTreeMap<u32, ThreadInfo>) -> u64 {
    max_concurrent(threads, |_| 1)
}

/// The most stack the threads alive at the same moment ever needed together (sum of their
/// high-water marks): what their stacks must hold at once, however many come and go over cycles.
fn max_concurrent_high_water(threads: &BTreeMap<u32, ThreadInfo>) -> u64 {
    max_concurrent(threads, |t| t.high_water as i64)
}

/// The largest sum of `weight` over the stack's threads alive at the same moment. A thread that
/// ends when another starts is not counted with it.
fn max_concurrent(threads: &BTreeMap<u32, ThreadInfo>, weight: fn(&ThreadInfo) -> i64) -> u64 {
    let mut edges: Vec<(u64, i64)> = Vec::new();
    for t in threads.values().filter(|t| t.component != "app") {
        edges.push((t.start_ns, weight(t)));
        edges.push((t.end_ns.unwrap_or(u64::MAX), -weight(t)));
    }
    edges.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut max) = (0i64, 0i64);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    max as u64
}

/// Bounded, expiring holds at the `closed` marks, each its own line (`report::TimeWait`,
/// `report::DtlsTimers`), told by the site's function: usrsctp's verification-tag time-wait;
/// libdatachannel's DTLS transports (make_shared in initDtlsTransport) and the retransmission
/// timer tasks DtlsTransport::doRecv schedules on the thread pool.
#[derive(Clone, Copy, PartialEq)]
enum Expiring {
    TimeWait,
    DtlsTransport,
    DtlsTimerTask,
}
const TIME_WAIT_FUNCTION: &str = "sctp_add_vtag_to_timewait";
const DTLS_TRANSPORT_FUNCTION: &str = "PeerConnection::initDtlsTransport";
const DTLS_TIMER_TASK: &str = "schedule<rtc::impl::DtlsTransport::doRecv";
/// Timer tasks one connection may leave: one per doRecv that returned WANT_READ while the
/// handshake ran (each incoming flight, each retransmission); the lab has seen 3 for 2 connections.
const DTLS_TIMER_TASKS_PER_CONNECTION: u64 = 8;

/// What is bounded and expiring at one `closed` mark (`Ledger::expiring_at_marks`).
#[derive(Default)]
struct ExpiringAtMark {
    /// Associations closed within one time-wait (62 s) of one another so far, the most.
    within: u64,
    /// usrsctp's time-wait: bytes, blocks.
    time_wait: (u64, u64),
    /// DTLS transport blocks, timer tasks, transports a task holds (at most one per task and
    /// per connection closed within 62 s), and the bytes of those and of the tasks.
    transports: u64,
    tasks: u64,
    held_transports: u64,
    dtls_bytes: u64,
}
/// usrsctp's sctp_constants.h: SCTP_STACK_VTAG_HASH_SIZE, SCTP_NUMBER_IN_VTAG_BLOCK, and
/// SCTP_TIME_WAIT (the sctp_vtag_time_wait sysctl's default) plus the second an expiry may
/// wait (a tag expires when `tv_sec_at_expire < now.tv_sec`) and one of slack.
const VTAG_HASH_BUCKETS: u64 = 32;
const VTAGS_PER_BLOCK: u64 = 15;
const TIME_WAIT_NS: u64 = 62_000_000_000;

/// How many of the associations closed by mark `k` (0-based, one per cycle) may still have
/// been in time-wait when association `k` was freed: association j (1-based j <= k + 1) was
/// freed before its own mark and association k + 1 after mark k - 1, so j had surely expired
/// when mark k-1 came over a time-wait after mark j.
fn closed_within_time_wait(times: &[u64], k: usize) -> u64 {
    let since = if k == 0 { 0 } else { times[k - 1] };
    times[..=k].iter().filter(|t| since.saturating_sub(**t) < TIME_WAIT_NS).count() as u64
}

/// The most blocks the time-wait can hold after `closed` associations, at most `within` of
/// them within one time-wait of one another: one per tag at most, and per bucket one per 15
/// tags waiting at once.
pub fn time_wait_bound(closed: u64, within: u64) -> u64 {
    closed.min(VTAG_HASH_BUCKETS * within.div_ceil(VTAGS_PER_BLOCK))
}

/// The mark where a scenario's first connection is up (one per scenario).
const CONNECTED_MARKS: &[&str] = &["connected", "cycle-1-connected", "scale-1-connected"];

/// The census's sync objects counted by owner site, most locks first.
fn sync_owners(census: &Census, sites: &[SiteKey], names: &[&'static str]) -> Vec<crate::report::SyncOwner> {
    let mut by: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for o in &census.sync_objects {
        let owner = match o.owner_site.and_then(|si| sites.get(si)) {
            Some(k) => format!("{}:{} {} [{}]", k.file, k.line, k.function, names[k.component]),
            None => "static or stack".to_string(),
        };
        let e = by.entry((o.component.clone(), owner)).or_default();
        if o.mutex {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    let mut list: Vec<crate::report::SyncOwner> = by
        .into_iter()
        .map(|((component, owner), (mutexes, condvars))| crate::report::SyncOwner {
            component,
            owner,
            mutexes,
            condvars,
        })
        .collect();
    list.sort_by_key(|o| std::cmp::Reverse(o.mutexes + o.condvars));
    list
}

#[cfg(test)]
mod sync_owner_tests {
    use super::*;

    #[test]
    fn sync_owners_counts_locks_by_the_owner_blocks_site() {
        let site = |file: &str, line| SiteKey { component: 0, file: file.into(), line, function: "f".into() };
        let sites = vec![site("src/impl/peerconnection.cpp", 371), site("src/impl/processor.cpp", 13)];
        let object =
            |mutex, owner_site| SyncObject { mutex, component: "libdatachannel".into(), owner: None, owner_site };
        let census = Census {
            sync_objects: vec![
                object(true, Some(0)),
                object(true, Some(0)),
                object(false, Some(0)),
                object(true, Some(1)),
                object(true, None),
            ],
            ..Default::default()
        };
        let owners = sync_owners(&census, &sites, &["libdatachannel"]);
        let rows: Vec<(&str, u64, u64)> = owners.iter().map(|o| (o.owner.as_str(), o.mutexes, o.condvars)).collect();
        assert_eq!(
            rows,
            [
                ("src/impl/peerconnection.cpp:371 f [libdatachannel]", 2, 1),
                ("src/impl/processor.cpp:13 f [libdatachannel]", 1, 0),
                ("static or stack", 1, 0),
            ]
        );
    }
}

#[cfg(test)]
mod time_wait_tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn the_time_wait_bound_is_one_block_per_tag_until_every_bucket_has_one() {
        // Ten associations closed within a minute: at most one block each.
        assert_eq!(time_wait_bound(10, 10), 10);
        // 1,000 closed, at most 40 of them within one time-wait: 3 blocks per bucket at most.
        assert_eq!(time_wait_bound(1000, 40), 96);
        // A device closing a few associations a minute, all day: one block per bucket.
        assert_eq!(time_wait_bound(100_000, 5), 32);
        assert_eq!(time_wait_bound(100_000, 15), 32);
        assert_eq!(time_wait_bound(100_000, 16), 64);
    }

    #[test]
    fn associations_closed_over_a_time_wait_apart_are_not_counted_together() {
        // Marks every 2 s: at mark k (0-based) the associations closed since mark k-1 minus 62 s.
        let every_2s: Vec<u64> = (1..=100).map(|i| i * 2 * S).collect();
        assert_eq!(closed_within_time_wait(&every_2s, 0), 1);
        assert_eq!(closed_within_time_wait(&every_2s, 9), 10);
        // Mark 99 at 200 s: mark 98 at 198 s; marks after 136 s (68..=99) may still wait.
        assert_eq!(closed_within_time_wait(&every_2s, 99), 32);
        // A pause longer than a time-wait: the associations before it have expired.
        let paused = [S, 2 * S, 3 * S, 100 * S, 101 * S];
        assert_eq!(closed_within_time_wait(&paused, 3), 4);
        assert_eq!(closed_within_time_wait(&paused, 4), 2);
    }
}
