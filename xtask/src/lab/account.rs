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
use crate::policy::{Policy, COMPONENTS};
use crate::replica::trace::{self, Event};
use crate::replica::HostBuild;
use crate::report::{self, ComponentReport, PhaseFigure, Report, Site, ThreadReport};
use anyhow::Result;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Least-squares slope of `values` against their index (bytes per step); 0 for fewer than two.
pub fn slope(values: &[u64]) -> f64 {
    let n = values.len() as f64;
    if values.len() < 2 {
        return 0.0;
    }
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = values.iter().map(|v| *v as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, v) in values.iter().enumerate() {
        let dx = i as f64 - mean_x;
        num += dx * (*v as f64 - mean_y);
        den += dx * dx;
    }
    num / den
}

/// Components counted as the stack's, in report order.
pub fn stack_components() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = COMPONENTS.to_vec();
    v.push("mbedtls");
    v
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
    let statics = crate::size::host_sizes(&build.libraries, policy)?;
    report.static_internal_bytes = Some(statics.values().map(|s| s.dram_bytes).sum());
    Ok(report)
}

/// The accounting itself, on a parsed trace (tests feed hand-made and fixture traces).
pub fn account(trace: &trace::Trace, scenario: &str, policy: &Policy, app_path: &str) -> Result<Report> {
    let modules: Vec<(u32, String)> = trace
        .records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Module { path, base } => Some((*base, path.clone())),
            _ => None,
        })
        .collect();
    let mut sym = Symbolizer::new(modules, app_path.to_string());

    let mut names: Vec<&'static str> = stack_components();
    names.push("libstdc++");
    names.extend(UNCOUNTED);
    let index = |n: &str| names.iter().position(|c| *c == n).unwrap_or(names.len() - 1);
    let counted: Vec<bool> = names.iter().map(|n| !UNCOUNTED.contains(n) && *n != "libstdc++").collect();
    let n = names.len();

    let mut sites: Vec<SiteKey> = Vec::new();
    let mut site_index: HashMap<SiteKey, usize> = HashMap::new();
    let mut live: HashMap<u32, Live> = HashMap::new();
    let mut live_bytes = vec![0u64; n];
    let mut live_blocks = vec![0u64; n];
    let mut peak_in_phase = vec![0u64; n];
    let mut peak_total_in_phase = 0u64;
    let mut total = 0u64;
    let mut global_peak = 0u64;
    let mut global_peak_at = 0usize;
    let mut marks: Vec<Mark> = Vec::new();
    let mut threads: BTreeMap<u32, ThreadInfo> = BTreeMap::new();
    let mut sync: HashMap<u32, (bool, &'static str)> = HashMap::new(); // addr -> (is mutex, component)
    let mut sockets: HashMap<u32, bool> = HashMap::new(); // fd -> is UDP
    let mut timeline: Vec<(u64, Vec<u64>)> = Vec::new();
    let mut last_sample = 0u64;
    let mut in_phase: Option<usize> = None;
    // Bytes and blocks by site at the connected mark: what a connection holds, line by line.
    let mut at_connected: HashMap<usize, (u64, u64)> = HashMap::new();

    // Each of the stack's sync objects with the live block its pthread_*_t sits in (None: static
    // or stack storage): sync.placement = "with_owner" places its FreeRTOS object by that block.
    // A lock inside a block the driver allocated is the driver's, even when a stack thread (a
    // callback) happened to take it first: which thread is first is timing.
    let sync_objects = |live: &HashMap<u32, Live>, sync: &HashMap<u32, (bool, &'static str)>| -> Vec<SyncObject> {
        let mut blocks: Vec<(u32, &Live)> = live.iter().map(|(a, l)| (*a, l)).collect();
        blocks.sort_unstable_by_key(|(a, _)| *a);
        let mut objects: Vec<(u32, SyncObject)> = sync
            .iter()
            .filter(|(_, (_, component))| *component != "app")
            .filter_map(|(addr, (mutex, component))| {
                let at = blocks.partition_point(|(a, _)| *a <= *addr);
                let owner =
                    at.checked_sub(1).map(|i| blocks[i]).filter(|(a, l)| u64::from(*addr) < u64::from(*a) + l.size);
                if owner.is_some_and(|(_, l)| names[l.component] == "app") {
                    return None;
                }
                let owner_site = owner.map(|(_, l)| l.site);
                let owner = owner.map(|(_, l)| Block {
                    component: names[l.component].to_string(),
                    size: l.size,
                    origin: l.origin,
                    caps: l.caps,
                    shared_ptr_control: l.shared_ptr,
                });
                Some((*addr, SyncObject { mutex: *mutex, component: component.to_string(), owner, owner_site }))
            })
            .collect();
        objects.sort_unstable_by_key(|(a, _)| *a);
        objects.into_iter().map(|(_, o)| o).collect()
    };
    let census = |live: &HashMap<u32, Live>,
                  threads: &BTreeMap<u32, ThreadInfo>,
                  sync: &HashMap<u32, (bool, &'static str)>,
                  sockets: &HashMap<u32, bool>|
     -> Census {
        // The driver's own locks are the application's, not the stack's (as its threads are).
        let objects = sync_objects(live, sync);
        let mut mutex_owners: BTreeMap<String, u64> = BTreeMap::new();
        for o in objects.iter().filter(|o| o.mutex) {
            *mutex_owners.entry(o.component.clone()).or_default() += 1;
        }
        Census {
            blocks: live
                .values()
                .filter(|l| counted[l.component])
                .map(|l| Block {
                    component: names[l.component].to_string(),
                    size: l.size,
                    origin: l.origin,
                    caps: l.caps,
                    shared_ptr_control: l.shared_ptr,
                })
                .collect(),
            threads: threads
                .values()
                .filter(|t| t.end_ns.is_none() && t.component != "app")
                .map(|t| (t.component.clone(), t.requested))
                .collect(),
            mutexes: objects.iter().filter(|o| o.mutex).count() as u64,
            mutex_owners,
            condvars: objects.iter().filter(|o| !o.mutex).count() as u64,
            sync_objects: objects,
            udp_sockets: sockets.values().filter(|u| **u).count() as u64,
        }
    };

    for (i, record) in trace.records.iter().enumerate() {
        match &record.event {
            Event::Alloc { addr, size, origin, component, caps, frames } => {
                let (comp, file, line, function, shared_ptr) = if *component > 0 {
                    let name = COMPONENTS.get(*component as usize - 1).copied().unwrap_or("runtime");
                    let (_, file, line, function, sp) = sym.attribute(frames);
                    (name, file, line, function, sp)
                } else {
                    sym.attribute(frames)
                };
                let ci = index(comp);
                let key = SiteKey { component: ci, file, line, function };
                let si = *site_index.entry(key.clone()).or_insert_with(|| {
                    sites.push(key);
                    sites.len() - 1
                });
                if let Some(old) = live.insert(
                    *addr,
                    Live { size: u64::from(*size), component: ci, site: si, origin: *origin, caps: *caps, shared_ptr },
                ) {
                    // The allocator handed out a live address again: the free was not seen.
                    live_bytes[old.component] -= old.size;
                    live_blocks[old.component] -= 1;
                    if counted[old.component] {
                        total -= old.size;
                    }
                }
                live_bytes[ci] += u64::from(*size);
                live_blocks[ci] += 1;
                if counted[ci] {
                    total += u64::from(*size);
                }
                peak_in_phase[ci] = peak_in_phase[ci].max(live_bytes[ci]);
                if total > global_peak {
                    global_peak = total;
                    global_peak_at = i;
                }
                peak_total_in_phase = peak_total_in_phase.max(total);
            }
            Event::Free { addr } => {
                if let Some(old) = live.remove(addr) {
                    live_bytes[old.component] -= old.size;
                    live_blocks[old.component] -= 1;
                    if counted[old.component] {
                        total -= old.size;
                    }
                }
            }
            Event::Phase { name } => {
                if CONNECTED_MARKS.contains(&name.as_str())
                    && !marks.iter().any(|m| CONNECTED_MARKS.contains(&m.name.as_str()))
                {
                    for l in live.values() {
                        let e = at_connected.entry(l.site).or_default();
                        e.0 += l.size;
                        e.1 += 1;
                    }
                }
                if let Some(p) = in_phase {
                    marks[p].peak = peak_in_phase.clone();
                    marks[p].peak_total = peak_total_in_phase;
                }
                marks.push(Mark {
                    name: name.clone(),
                    live: live_bytes.clone(),
                    blocks: live_blocks.clone(),
                    peak: live_bytes.clone(),
                    peak_total: total,
                    census: census(&live, &threads, &sync, &sockets),
                });
                in_phase = Some(marks.len() - 1);
                peak_in_phase = live_bytes.clone();
                peak_total_in_phase = total;
                timeline.push((record.time_ns / 1_000_000, live_bytes.clone()));
            }
            Event::ThreadCreate { requested, serial, frames } => {
                let (comp, file, line, function, _) = sym.attribute(frames);
                threads.insert(
                    *serial,
                    ThreadInfo {
                        component: comp.to_string(),
                        created_at: format!("{file}:{line} {function}"),
                        requested: u64::from(if *requested == 0 { trace.default_stack_bytes } else { *requested }),
                        high_water: 0,
                        start_ns: record.time_ns,
                        end_ns: None,
                    },
                );
            }
            Event::ThreadEnd { high_water, serial } => {
                if let Some(t) = threads.get_mut(serial) {
                    t.high_water = u64::from(*high_water);
                    t.end_ns = Some(record.time_ns);
                }
            }
            Event::Mutex { addr, frames } => {
                sync.insert(*addr, (true, sym.attribute(frames).0));
            }
            Event::Cond { addr, frames } => {
                sync.insert(*addr, (false, sym.attribute(frames).0));
            }
            Event::SyncDestroy { addr } => {
                sync.remove(addr);
            }
            Event::Socket { fd, kind, .. } => {
                sockets.insert(*fd, *kind == 2 /* SOCK_DGRAM */);
            }
            Event::SocketClose { fd } => {
                sockets.remove(fd);
            }
            Event::Module { .. } => {}
        }
        if record.time_ns / 1_000_000 >= last_sample + 50 {
            last_sample = record.time_ns / 1_000_000;
            timeline.push((last_sample, live_bytes.clone()));
        }
    }
    if let Some(p) = in_phase {
        marks[p].peak = peak_in_phase.clone();
        marks[p].peak_total = peak_total_in_phase;
    }

    // Sites: bytes live at the global peak, by site (second pass up to the peak).
    let mut at_peak: HashMap<usize, (u64, u64)> = HashMap::new();
    for (si, size) in live_sites_replay(trace, &mut sym, &names, &site_index, global_peak_at).into_values() {
        let e = at_peak.entry(si).or_default();
        e.0 += size;
        e.1 += 1;
    }
    // Every counted site with bytes, largest first: tables show the first few, `audit` ranks by all.
    let ranked = |by_site: HashMap<usize, (u64, u64)>| -> Vec<Site> {
        let mut list: Vec<Site> = by_site
            .into_iter()
            .filter(|(si, (bytes, _))| counted[sites[*si].component] && *bytes > 0)
            .map(|(si, (bytes, count))| {
                let k = &sites[si];
                Site {
                    component: names[k.component].to_string(),
                    file: k.file.clone(),
                    line: k.line,
                    function: k.function.clone(),
                    bytes,
                    count,
                }
            })
            .collect();
        list.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.file.cmp(&b.file)).then(a.line.cmp(&b.line)));
        list
    };
    let top = ranked(at_peak);
    let connected_sites = ranked(at_connected);

    // Leaks: what the stack still holds at the end.
    let mut leaks_by_site: HashMap<usize, (u64, u64)> = HashMap::new();
    for l in live.values() {
        let e = leaks_by_site.entry(l.site).or_default();
        e.0 += l.size;
        e.1 += 1;
    }
    let leaks = ranked(leaks_by_site);

    let mark = |name: &str| marks.iter().find(|m| m.name == name);
    let total_of = |m: &Mark| -> u64 { m.live.iter().zip(&counted).filter(|(_, c)| **c).map(|(v, _)| *v).sum() };
    let connected_mark = marks.iter().find(|m| CONNECTED_MARKS.contains(&m.name.as_str()));

    let mut components = Vec::new();
    for (ci, name) in names.iter().enumerate() {
        let phases: Vec<PhaseFigure> = marks
            .iter()
            .map(|m| PhaseFigure {
                phase: m.name.clone(),
                live_bytes: m.live[ci],
                peak_bytes: m.peak[ci],
                blocks: m.blocks[ci],
            })
            .collect();
        let peak = marks.iter().map(|m| m.peak[ci]).max().unwrap_or(0);
        if peak == 0 && !counted[ci] {
            continue;
        }
        components.push(ComponentReport {
            name: name.to_string(),
            connected_bytes: connected_mark.map(|m| m.live[ci]).unwrap_or(0),
            peak_bytes: peak,
            phases,
            ..Default::default()
        });
    }

    let thread_list: Vec<ThreadReport> = threads
        .values()
        .filter(|t| t.component != "app")
        .map(|t| ThreadReport {
            component: t.component.clone(),
            created_at: t.created_at.clone(),
            requested_bytes: t.requested,
            high_water_bytes: t.high_water,
            lifetime_ms: t
                .end_ns
                .unwrap_or(trace.records.last().map(|r| r.time_ns).unwrap_or(0))
                .saturating_sub(t.start_ns)
                / 1_000_000,
            ended: t.end_ns.is_some(),
            ..Default::default()
        })
        .collect();

    let handshake_peak = marks
        .iter()
        .filter(|m| matches!(m.name.as_str(), "pc-created" | "gathered" | "connected"))
        .map(|m| m.peak_total)
        .max()
        .unwrap_or(0);

    let leak_per_cycle = if scenario == "cycle" {
        let closed: Vec<u64> = marks
            .iter()
            .filter(|m| m.name.starts_with("cycle-") && m.name.ends_with("-closed"))
            .map(total_of)
            .collect();
        // The first cycle also pays the global init that stays until rtcCleanup: fit from the
        // second. Each `closed` mark is a quiet point (usrsctp's teardown done), so the slope of
        // the rest is what a cycle keeps; a negative slope keeps nothing.
        (closed.len() >= 4).then(|| slope(&closed[1..]).max(0.0).round() as u64)
    } else {
        None
    };
    let per_extra = if scenario == "scale" {
        match (mark("scale-1-connected"), mark("scale-4-connected")) {
            (Some(a), Some(b)) => Some(total_of(b).saturating_sub(total_of(a)) / 3),
            _ => None,
        }
    } else {
        None
    };

    let projection_census = connected_mark.or_else(|| mark("streaming")).map(|m| m.census.clone()).unwrap_or_default();
    let projection = projection::project(policy, &projection_census);
    let sync_owners = sync_owners(&projection_census, &sites, &names);

    Ok(Report {
        scenario: scenario.to_string(),
        policy: policy.policy.name.clone(),
        total_connected_bytes: connected_mark.map(total_of).unwrap_or(0),
        total_peak_bytes: global_peak,
        handshake_peak_bytes: handshake_peak,
        init_bytes: mark("pc-created")
            .map(total_of)
            .unwrap_or(0)
            .saturating_sub(mark("start").map(total_of).unwrap_or(0)),
        load_bytes: mark("start").map(total_of).unwrap_or(0),
        streaming_bytes: mark("streaming").map(total_of),
        streaming_peak_bytes: mark("streaming").map(|m| m.peak_total.max(total_of(m))),
        threads: max_concurrent_threads(&threads),
        threads_created: thread_list.len() as u64,
        leak_bytes_per_cycle: leak_per_cycle,
        bytes_per_extra_connection: per_extra,
        leak_bytes: leaks.iter().map(|l| l.bytes).sum(),
        leaks,
        sites: top,
        connected_sites,
        total_stack_high_water_bytes: max_concurrent_high_water(&threads),
        thread_list,
        projection,
        sync_owners,
        components,
        timeline_components: names.iter().map(|s| s.to_string()).collect(),
        timeline,
        ..Default::default()
    })
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
    list.sort_by(|a, b| (b.mutexes + b.condvars).cmp(&(a.mutexes + a.condvars)));
    list
}

/// Live blocks (site, size) right after event `until`.
fn live_sites_replay(
    trace: &trace::Trace,
    sym: &mut Symbolizer,
    names: &[&'static str],
    site_index: &HashMap<SiteKey, usize>,
    until: usize,
) -> HashMap<u32, (usize, u64)> {
    let mut live: HashMap<u32, (usize, u64)> = HashMap::new();
    for record in trace.records.iter().take(until + 1) {
        match &record.event {
            Event::Alloc { addr, size, component, frames, .. } => {
                let (comp, file, line, function, _) = sym.attribute(frames);
                let comp = if *component > 0 {
                    COMPONENTS.get(*component as usize - 1).copied().unwrap_or(comp)
                } else {
                    comp
                };
                let ci = names.iter().position(|c| *c == comp).unwrap_or(names.len() - 1);
                if let Some(si) = site_index.get(&SiteKey { component: ci, file, line, function }) {
                    live.insert(*addr, (*si, u64::from(*size)));
                }
            }
            Event::Free { addr } => {
                live.remove(addr);
            }
            _ => {}
        }
    }
    live
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
