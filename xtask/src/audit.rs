//! `cargo xtask audit`: every allocation and thread site in the configured component tree,
//! whether the policy places it, and what the lab measured there.

mod scan;

use crate::components;
use crate::exit::{self, Outcome};
use crate::fsutil::{project_root, write_atomic};
use crate::layout;
use crate::policy::{MbedtlsAllocator, Placement, Policy};
use anyhow::Result;
use scan::{Defines, Kind, Lang};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The header whose force-include redirects a component's C allocations.
const REDIRECT_HEADER: &str = "esp_dc_alloc_redirect.h";

/// Directories that hold no code the component compiles.
const NOT_COMPILED: &[&str] = &[
    "test",
    "tests",
    "example",
    "examples",
    "fuzzer",
    "fuzz",
    "bench",
    "benchmark",
    "samples",
    "sample",
    "doc",
    "docs",
    "programs",
    "cmake",
    "pages",
    ".git",
    "build",
    "deps",
];

/// List every allocation and thread site of the stack and whether the policy places it.
///
/// Walks the sources `cargo xtask configure` laid out under components/ (the compiled sources
/// of each component, its headers, and our port), following the `#if` branches their compile
/// definitions decide (as the host replica compiled the same sources: its compile_commands.json,
/// built if needed), and reports per site:
///   c-alloc        malloc/calloc/realloc, also through wrappers (SCTP_MALLOC, SCTP_ZONE_GET,
///                  srtp_crypto_alloc → what they expand to); covered when the component
///                  force-includes the redirect header (C files only)
///   libc-alloc     strdup, posix_memalign, asprintf, …: libc allocates where no macro reaches
///   c++-new        new, new[], std::make_shared/make_unique; covered by cxx.new_placement
///   container      std::vector, std::map, std::function, …: allocate through operator new
///   mbedtls-alloc  mbedtls_calloc: covered by mbedtls.allocator
///   caps-alloc     heap_caps_* with caps chosen at the call (covered)
///   thread         pthread_create, std::thread, libjuice's thread_init, with the stack they ask
///                  for; covered by pthread.stack_placement (esp_pthread_cfg_t)
///   task           xTaskCreate*: FreeRTOS takes the stack from internal RAM (not covered)
///   runtime        a line where the lab measured allocations but the scan saw no site
/// plus static objects of at least audit.static_object_threshold_bytes in the component's
/// 32-bit host library (the replica's; --no-statics skips them).
///
/// With a lab report (--lab, default lab-out/lab.json when present) each site carries the bytes
/// the lab measured live there at the peak (largest over the policy's scenarios; a thread: its
/// stack), and uncovered sites are ranked by them.
///
/// Examples:
///   cargo xtask configure && cargo xtask audit
///   cargo xtask lab --policy lean --json lab-out/lab.json && cargo xtask audit --all
///   cargo xtask audit --json audit.json
///
/// Exit codes: 0 done, 1 an uncovered site remains and the policy sets
/// audit.require_full_coverage, 2 the tree is not configured (for this policy) or a file cannot
/// be read.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Policy to audit against (default: the one the tree is configured for).
    #[arg(long)]
    policy: Option<String>,
    /// A `cargo xtask lab --json` report whose measured bytes rank the sites.
    #[arg(long)]
    lab: Option<PathBuf>,
    /// Skip static objects.
    #[arg(long)]
    no_statics: bool,
    /// List covered sites too, not only uncovered ones.
    #[arg(long)]
    all: bool,
    /// Print the summary as a Markdown table (for docs/lab.md).
    #[arg(long)]
    markdown: bool,
    /// Also write every site, the summary and the statics as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Site {
    pub component: String,
    /// Path under components/<component>/ (mbedTLS: under ESP-IDF's mbedtls).
    pub file: String,
    pub line: u32,
    pub kind: Kind,
    pub call: String,
    /// Threads and tasks: the stack size they ask for (as written, or what they inherit).
    pub stack: Option<String>,
    pub covered: bool,
    /// Where the policy sends it, or why it escapes.
    pub placement: String,
    /// Bytes the lab measured here (None: not seen at run time).
    pub measured_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StaticObject {
    pub component: String,
    pub symbol: String,
    pub bytes: u64,
    pub section: String,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub component: String,
    pub sites: usize,
    pub covered: usize,
    pub uncovered: usize,
    pub measured_bytes: u64,
    pub measured_uncovered_bytes: u64,
    pub statics: usize,
    pub static_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub policy: String,
    pub lab: Option<String>,
    pub summary: Vec<Summary>,
    /// Uncovered first, by measured bytes, then unmeasured; covered after.
    pub sites: Vec<Site>,
    pub statics: Vec<StaticObject>,
}

/// What the host replica compiled, from its compile_commands.json (CMAKE_EXPORT_COMPILE_COMMANDS):
/// each of the stack's compiled sources as (component, path under components/<component>/) with
/// the definitions it was compiled with. The same upstream sources, patches and knobs as the
/// ESP-IDF tree, so `#if` branches follow what is built, whatever text configure writes.
#[derive(Debug, Default)]
pub struct Compiled {
    pub sources: BTreeMap<(String, String), Defines>,
}

impl Compiled {
    /// Reads `compile_commands` whose sources were staged under `stack_src` (libdatachannel at
    /// the top, its dependencies under deps/<dir>/, as components/<component>/upstream/ holds them).
    pub fn read(compile_commands: &Path, stack_src: &Path) -> Result<Compiled> {
        #[derive(Deserialize)]
        struct Entry {
            directory: PathBuf,
            file: PathBuf,
            command: String,
        }
        let text = std::fs::read_to_string(compile_commands)
            .map_err(|e| exit::bad_input(format!("{}: cannot read: {e}", compile_commands.display())))?;
        let entries: Vec<Entry> = serde_json::from_str(&text).map_err(|e| {
            exit::bad_input(format!("{}: not a compile_commands.json: {e}", compile_commands.display()))
        })?;
        let mut compiled = Compiled::default();
        for e in entries {
            let file = lexically_normal(&e.directory.join(&e.file));
            let Ok(rel) = file.strip_prefix(stack_src) else { continue };
            let Some(key) = tree_source(&rel.to_string_lossy()) else { continue };
            compiled.sources.insert(key, command_defines(&e.command));
        }
        Ok(compiled)
    }

    /// The tree paths of `component`'s compiled sources.
    fn listed(&self, component: &str) -> Vec<&str> {
        self.sources.keys().filter(|(c, _)| c == component).map(|(_, f)| f.as_str()).collect()
    }

    /// A source's own definitions; a header (or a component the replica does not compile, like
    /// our port) gets every definition of the component's sources. ESP_PLATFORM always: ESP-IDF's
    /// compilers define it, so the audit follows the device's branches.
    fn defines(&self, component: &str, file: &str) -> Defines {
        let mut defines = match self.sources.get(&(component.to_string(), file.to_string())) {
            Some(own) => own.clone(),
            None => {
                let mut all = Defines::new();
                for ((c, _), d) in &self.sources {
                    if c == component {
                        for (k, v) in d {
                            all.entry(k.clone()).or_insert(*v);
                        }
                    }
                }
                all
            }
        };
        defines.insert("ESP_PLATFORM".into(), Some(1));
        defines
    }
}

/// `path` with `.` and `a/..` taken out, without asking the file system (the build may be gone).
fn lexically_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// (component, path under components/<component>/) of a source staged for the replica at `rel`.
fn tree_source(rel: &str) -> Option<(String, String)> {
    match rel.strip_prefix("deps/") {
        Some(rest) => {
            let (dir, path) = rest.split_once('/')?;
            let component = components::placed().into_iter().find(|c| crate::upstream::dep_dir(c) == Some(dir))?;
            Some((component.to_string(), format!("upstream/{path}")))
        }
        None => Some(("libdatachannel".to_string(), format!("upstream/{rel}"))),
    }
}

/// The `-D` definitions of a compile command (`-DNAME`, `-DNAME=VALUE`, `-D NAME`); a value that
/// is not a number is known to be defined, with no value.
pub fn command_defines(command: &str) -> Defines {
    let words = shell_words(command);
    let mut defines = Defines::new();
    let mut words = words.iter();
    while let Some(w) = words.next() {
        let def = match w.strip_prefix("-D") {
            Some("") => words.next().map(String::as_str),
            Some(d) => Some(d),
            None => None,
        };
        let Some(def) = def else { continue };
        match def.split_once('=') {
            Some((name, value)) => defines.insert(name.to_string(), value.parse::<i64>().ok()),
            None => defines.insert(def.to_string(), Some(1)),
        };
    }
    defines
}

/// A command line split as sh splits it: whitespace separates words, quotes group, a backslash
/// escapes the next character (CMake quotes `-DNAME="value"` this way).
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut in_word) = (Vec::new(), String::new(), false);
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => word.extend(chars.next()),
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
                continue;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                }
                in_word = false;
                continue;
            }
            (None, c) => word.push(c),
        }
        in_word = true;
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Sources a component compiles: the .c/.cpp files in `listed` (paths under the component; all
/// of them when empty, as for our own components), and every header outside test and example
/// directories.
fn component_files(dir: &Path, listed: &[&str]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            !(e.file_type().is_dir()
                && e.depth() > 0
                && NOT_COMPILED.contains(&e.file_name().to_string_lossy().as_ref()))
        })
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
    {
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let rel_s = rel.to_string_lossy().replace('\\', "/");
        let header = ["h", "hpp", "hh", "hxx", "inl", "ipp"].iter().any(|e| rel_s.ends_with(&format!(".{e}")));
        if header || (is_source(&rel_s) && (listed.is_empty() || listed.contains(&rel_s.as_str()))) {
            files.push(entry.path().to_path_buf());
        }
    }
    files
}

fn is_source(name: &str) -> bool {
    ["c", "cc", "cpp", "cxx"].iter().any(|e| name.ends_with(&format!(".{e}")))
}

/// C or C++: by extension; headers follow the component (libdatachannel and plog are C++).
fn language(component: &str, file: &str) -> Lang {
    if file.ends_with(".c") {
        Lang::C
    } else if file.ends_with(".h") {
        if matches!(component, "libdatachannel" | "plog") {
            Lang::Cxx
        } else {
            Lang::C
        }
    } else {
        Lang::Cxx
    }
}

/// Whether the policy places a site, and where.
pub fn coverage(policy: &Policy, component: &str, file: &str, kind: Kind, call: &str) -> (bool, String) {
    let lang = language(component, file);
    let new_placement = policy.cxx.new_placement;
    let via_new = || match new_placement {
        Placement::Default => (false, "operator new: default heap (cxx.new_placement = default)".to_string()),
        p => (true, format!("operator new → {}", p.as_str())),
    };
    let redirect = || {
        if component == "mbedtls" {
            return mbedtls(policy);
        }
        let Some(spec) = policy.components.get(component) else {
            return (false, "not a policy component: default heap".to_string());
        };
        if lang == Lang::Cxx {
            return (false, "C call in C++: the redirect header applies to C files; default heap".to_string());
        }
        match (spec.force_include.as_str(), spec.placement) {
            (REDIRECT_HEADER, Placement::Default) => {
                (false, "redirect with placement default: default heap".to_string())
            }
            (REDIRECT_HEADER, p) => (true, format!("redirect → heap_caps {}", p.as_str())),
            _ => (false, "no redirect force-included: default heap".to_string()),
        }
    };
    match kind {
        // esp_dc_port's allocator is the redirect: its plain malloc serves placement `default`.
        Kind::CAlloc if component == "esp_dc_port" => {
            (true, "the redirect's allocator (placement default → malloc)".to_string())
        }
        Kind::CAlloc => redirect(),
        Kind::LibcAlloc => (false, format!("{call} allocates inside libc, beyond the redirect: default heap")),
        Kind::CapsAlloc => (true, "caps chosen at the call".to_string()),
        Kind::MbedtlsAlloc => mbedtls(policy),
        Kind::CxxNew | Kind::Container => via_new(),
        Kind::Runtime => {
            if component == "mbedtls" {
                mbedtls(policy)
            } else if lang == Lang::Cxx {
                via_new()
            } else {
                redirect()
            }
        }
        Kind::Thread => match policy.pthread.stack_placement {
            Placement::Default => {
                (false, "pthread stack: default heap (pthread.stack_placement = default)".to_string())
            }
            p => (true, format!("esp_pthread_cfg_t stack → {}", p.as_str())),
        },
        Kind::Task => {
            if call.ends_with("WithCaps") {
                (true, "task stack caps chosen at the call".to_string())
            } else {
                (false, "FreeRTOS task: stack from internal RAM, not esp_pthread_cfg_t".to_string())
            }
        }
    }
}

fn mbedtls(policy: &Policy) -> (bool, String) {
    match policy.mbedtls.allocator {
        MbedtlsAllocator::Default => (false, "mbedTLS default allocator: default heap".to_string()),
        MbedtlsAllocator::Internal => (true, "mbedTLS allocator → internal".to_string()),
        MbedtlsAllocator::External => (true, "mbedTLS allocator → psram".to_string()),
        MbedtlsAllocator::Custom => (true, "mbedTLS allocator → esp_dc_port".to_string()),
    }
}

fn inherited_stack(policy: &Policy) -> String {
    format!("inherited {}", policy.thread_stack_bytes())
}

/// Scans every component of the tree under `root` (a project root), the stack's sources with
/// the definitions the replica compiled them with (`compiled`).
pub fn scan_tree(root: &Path, policy: &Policy, compiled: &Compiled) -> Result<Vec<Site>> {
    let mut sites = Vec::new();
    for component in components::placed() {
        let dir = root.join("components").join(component);
        if !dir.is_dir() {
            continue;
        }
        for path in component_files(&dir, &compiled.listed(component)) {
            let rel = path.strip_prefix(&dir).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            let bytes =
                std::fs::read(&path).map_err(|e| exit::bad_input(format!("{}: cannot read: {e}", path.display())))?;
            let text = String::from_utf8_lossy(&bytes);
            for f in scan::scan(&text, language(component, &rel), &compiled.defines(component, &rel)) {
                let (covered, placement) = coverage(policy, component, &rel, f.kind, &f.call);
                let stack = match f.kind {
                    Kind::Thread => Some(f.stack.clone().unwrap_or_else(|| inherited_stack(policy))),
                    _ => f.stack.clone(),
                };
                sites.push(Site {
                    component: component.to_string(),
                    file: rel.clone(),
                    line: f.line,
                    kind: f.kind,
                    call: f.call,
                    stack,
                    covered,
                    placement,
                    measured_bytes: None,
                });
            }
        }
    }
    Ok(sites)
}

#[derive(Deserialize)]
struct LabRun {
    policy: String,
    #[serde(default)]
    sites: Vec<LabSite>,
    #[serde(default)]
    thread_list: Vec<LabThread>,
}

#[derive(Deserialize)]
struct LabSite {
    component: String,
    file: String,
    line: u32,
    bytes: u64,
}

#[derive(Deserialize)]
struct LabThread {
    component: String,
    created_at: String,
    requested_bytes: u64,
}

/// What the lab measured for `policy`: (component, file under the component, line) → bytes,
/// the largest over its scenarios; threads separately with their stack.
pub struct Measured {
    pub sites: BTreeMap<(String, String, u32), u64>,
    pub threads: BTreeMap<(String, String, u32), u64>,
    pub scenarios: usize,
}

/// Reads a `cargo xtask lab --json` report. Its paths are relative to libdatachannel's source
/// root (`deps/usrsctp/usrsctplib/user_mbuf.c`); the tree's are `upstream/usrsctplib/user_mbuf.c`.
pub fn read_lab(path: &Path, policy: &str) -> Result<Measured> {
    let text =
        std::fs::read_to_string(path).map_err(|e| exit::bad_input(format!("{}: cannot read: {e}", path.display())))?;
    let runs: Vec<LabRun> = serde_json::from_str(&text)
        .map_err(|e| exit::bad_input(format!("{}: not a `cargo xtask lab --json` report: {e}", path.display())))?;
    let mut m = Measured { sites: BTreeMap::new(), threads: BTreeMap::new(), scenarios: 0 };
    for run in runs.iter().filter(|r| r.policy == policy) {
        m.scenarios += 1;
        for s in &run.sites {
            let key = (s.component.clone(), tree_path(&s.component, &s.file), s.line);
            let e = m.sites.entry(key).or_default();
            *e = (*e).max(s.bytes);
        }
        for t in &run.thread_list {
            let Some((file, line)) = t.created_at.split_whitespace().next().and_then(|fl| fl.rsplit_once(':')) else {
                continue;
            };
            let Ok(line) = line.parse::<u32>() else { continue };
            let key = (t.component.clone(), tree_path(&t.component, file), line);
            let e = m.threads.entry(key).or_default();
            *e = (*e).max(t.requested_bytes);
        }
    }
    Ok(m)
}

fn tree_path(component: &str, lab_file: &str) -> String {
    if component == "mbedtls" || component == "esp_dc_port" {
        return lab_file.to_string();
    }
    let rel = match crate::upstream::dep_dir(component) {
        Some(dir) => lab_file.strip_prefix(&format!("deps/{dir}/")).unwrap_or(lab_file),
        None => lab_file,
    };
    format!("upstream/{rel}")
}

/// Marks sites with what the lab measured (the nearest scanned site within 2 lines of the
/// measured line, as inlining moves line numbers a little; threads within 20 lines above) and adds measured lines with no
/// scanned site as `runtime` sites.
pub fn attach(sites: &mut Vec<Site>, measured: &Measured, policy: &Policy) {
    for (table, is_thread) in [(&measured.sites, false), (&measured.threads, true)] {
        for ((component, file, line), bytes) in table {
            // A thread's creation line can sit inside the std::thread's arguments (a lambda):
            // match the nearest thread site at most 20 lines above.
            let near = |s: &Site| {
                if is_thread {
                    s.line <= *line && *line - s.line <= 20
                } else {
                    s.line.abs_diff(*line) <= 2
                }
            };
            let nearest = sites
                .iter_mut()
                .filter(|s| {
                    &s.component == component
                        && &s.file == file
                        && matches!(s.kind, Kind::Thread | Kind::Task) == is_thread
                        && near(s)
                })
                .min_by_key(|s| s.line.abs_diff(*line));
            match nearest {
                Some(site) => *site.measured_bytes.get_or_insert(0) += bytes,
                None => {
                    let kind = if is_thread { Kind::Thread } else { Kind::Runtime };
                    let (covered, placement) = coverage(policy, component, file, kind, "");
                    sites.push(Site {
                        component: component.clone(),
                        file: file.clone(),
                        line: *line,
                        kind,
                        call: if is_thread { "thread (seen at run time)".into() } else { "seen at run time".into() },
                        stack: is_thread.then(|| inherited_stack(policy)),
                        covered,
                        placement,
                        measured_bytes: Some(*bytes),
                    });
                }
            }
        }
    }
}

/// Data objects of at least `threshold` bytes in each component's library.
pub fn statics(libraries: &BTreeMap<String, PathBuf>, threshold: u64) -> Result<Vec<StaticObject>> {
    use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
    let mut out = Vec::new();
    for (component, path) in libraries {
        let data = std::fs::read(path).map_err(|e| exit::bad_input(format!("{}: cannot read: {e}", path.display())))?;
        let file = object::File::parse(&*data)
            .map_err(|e| exit::bad_input(format!("{}: not an object file: {e}", path.display())))?;
        for sym in file.symbols() {
            if sym.kind() != SymbolKind::Data && sym.kind() != SymbolKind::Tls || sym.size() < threshold {
                continue;
            }
            let Some(section) = sym.section_index().and_then(|i| file.section_by_index(i).ok()) else { continue };
            let name = section.name().unwrap_or("");
            if crate::static_sizes::is_host_ram_section(name) {
                let raw = sym.name().unwrap_or("?");
                let symbol = addr2line::demangle_auto(raw.into(), None).into_owned();
                out.push(StaticObject {
                    component: component.clone(),
                    symbol,
                    bytes: sym.size(),
                    section: name.to_string(),
                });
            }
        }
    }
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.symbol.cmp(&b.symbol)));
    out.dedup();
    Ok(out)
}

pub fn summarize(sites: &[Site], statics: &[StaticObject]) -> Vec<Summary> {
    let mut by: BTreeMap<&str, Summary> = BTreeMap::new();
    for s in sites {
        let e =
            by.entry(&s.component).or_insert_with(|| Summary { component: s.component.clone(), ..Default::default() });
        e.sites += 1;
        if s.covered {
            e.covered += 1;
        } else {
            e.uncovered += 1;
            e.measured_uncovered_bytes += s.measured_bytes.unwrap_or(0);
        }
        e.measured_bytes += s.measured_bytes.unwrap_or(0);
    }
    for o in statics {
        let e =
            by.entry(&o.component).or_insert_with(|| Summary { component: o.component.clone(), ..Default::default() });
        e.statics += 1;
        e.static_bytes += o.bytes;
    }
    by.into_values().collect()
}

/// Uncovered sites first (measured, largest first; then unmeasured), covered after.
pub fn rank(sites: &mut [Site]) {
    sites.sort_by(|a, b| {
        a.covered
            .cmp(&b.covered)
            .then(b.measured_bytes.is_some().cmp(&a.measured_bytes.is_some()))
            .then(b.measured_bytes.cmp(&a.measured_bytes))
            .then(a.component.cmp(&b.component))
            .then(a.file.cmp(&b.file))
            .then(a.line.cmp(&b.line))
    });
}

/// The policy the tree under `root` is configured for, or `name` if it is configured for it;
/// exit 2 when the tree is not configured, or configured from another policy or version.
pub fn configured_policy(root: &Path, name: Option<&str>) -> Result<Policy> {
    let stamp = layout::read_stamp(root)?
        .ok_or_else(|| exit::bad_input("components/ is not configured yet: run `cargo xtask configure` (or `--policy NAME`) first, then `cargo xtask audit`"))?;
    let name = name.unwrap_or(&stamp.policy).to_string();
    let policy_path = Policy::path_for(&name);
    let policy = Policy::load(&policy_path)?;
    let text = std::fs::read_to_string(&policy_path)?;
    if layout::policy_hash(&policy, &text)? != stamp.hash {
        return Err(exit::bad_input(format!(
            "components/ is configured for `{}`{}, not from {}: run `cargo xtask configure --policy {name}` first",
            stamp.policy,
            if stamp.policy == name { " as it was before its last edit" } else { "" },
            policy_path.display()
        )));
    }
    Ok(policy)
}

pub fn run(args: Args) -> Outcome {
    let root = project_root();
    let policy = configured_policy(&root, args.policy.as_deref())?;
    let replica = crate::replica::build(&policy)?;
    let compiled = Compiled::read(&replica.compile_commands, &replica.stack_src)?;
    let mut sites = scan_tree(&root, &policy, &compiled)?;
    let lab_path = args.lab.clone().or_else(|| Some(root.join("lab-out/lab.json")).filter(|p| p.is_file()));
    let mut lab_note = None;
    if let Some(path) = &lab_path {
        let measured = read_lab(path, &policy.policy.name)?;
        if measured.scenarios == 0 {
            eprintln!(
                "audit: {} has no run of `{}`; sites are not ranked by measured bytes",
                path.display(),
                policy.policy.name
            );
        } else {
            lab_note =
                Some(format!("{} ({} scenarios of `{}`)", path.display(), measured.scenarios, policy.policy.name));
            attach(&mut sites, &measured, &policy);
        }
    }
    let statics = if args.no_statics {
        Vec::new()
    } else {
        statics(&replica.libraries, policy.audit.static_object_threshold_bytes)?
    };
    rank(&mut sites);
    let report = Report {
        policy: policy.policy.name.clone(),
        lab: lab_note,
        summary: summarize(&sites, &statics),
        sites,
        statics,
    };
    if args.markdown {
        print_markdown(&report);
    } else {
        print_table(&report, args.all, policy.audit.static_object_threshold_bytes);
    }
    if let Some(path) = &args.json {
        write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    let uncovered = report.sites.iter().filter(|s| !s.covered).count();
    if policy.audit.require_full_coverage && uncovered > 0 {
        return Err(exit::verdict(format!(
            "{uncovered} site(s) not covered by `{}`, which sets audit.require_full_coverage",
            policy.policy.name
        )));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(r: &Report, all: bool, threshold: u64) {
    println!(
        "audit of `{}`; measured: {}",
        r.policy,
        r.lab.as_deref().unwrap_or("no lab report (run `cargo xtask lab --json lab-out/lab.json`)")
    );
    println!(
        "{:<15} {:>6} {:>8} {:>10} {:>12} {:>16} {:>8} {:>9}",
        "component", "sites", "covered", "uncovered", "measured B", "uncovered B", "statics", "static B"
    );
    for s in &r.summary {
        println!(
            "{:<15} {:>6} {:>8} {:>10} {:>12} {:>16} {:>8} {:>9}",
            s.component,
            s.sites,
            s.covered,
            s.uncovered,
            s.measured_bytes,
            s.measured_uncovered_bytes,
            s.statics,
            s.static_bytes
        );
    }
    let shown: Vec<&Site> = r.sites.iter().filter(|s| all || !s.covered).collect();
    if !shown.is_empty() {
        println!();
        println!(
            "{} sites{}:",
            if all { "all" } else { "uncovered" },
            if all { "" } else { " (ranked by measured bytes)" }
        );
        for s in shown {
            let measured = s.measured_bytes.map(|b| format!("{b} B")).unwrap_or_else(|| "-".into());
            let stack = s.stack.as_deref().map(|st| format!(" stack {st}")).unwrap_or_default();
            println!(
                "  {:>9}  {:<14} {:<13} {}:{}  {}{}  — {}",
                measured,
                s.component,
                s.kind.as_str(),
                s.file,
                s.line,
                s.call,
                stack,
                s.placement
            );
        }
    }
    if !r.statics.is_empty() {
        println!();
        println!("static objects ≥ {threshold} B (internal RAM; held by size-check):");
        for o in &r.statics {
            println!("  {:>7} B  {:<14} {} ({})", o.bytes, o.component, o.symbol, o.section);
        }
    }
}

fn print_markdown(r: &Report) {
    println!("| component | sites | covered | uncovered | measured B | uncovered measured B | statics ≥ threshold |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for s in &r.summary {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} ({} B) |",
            s.component,
            s.sites,
            s.covered,
            s.uncovered,
            s.measured_bytes,
            s.measured_uncovered_bytes,
            s.statics,
            s.static_bytes
        );
    }
}

#[cfg(test)]
mod tests;
