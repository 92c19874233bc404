//! `cargo xtask configure`: policy -> ESP-IDF component tree.
//!
//! Everything is computed in memory first (upstream sources read, our patches applied, templates
//! rendered, sdkconfig.defaults merged), so a bad policy, a patch that does not apply or a broken
//! template exits 2 before the first byte is written. Each generated component is then written
//! into a sibling staging directory and swapped in with renames; single files are written
//! atomically. A component whose bytes already match is not touched, which makes a second run a
//! no-op.

mod render;

use crate::components;
use crate::exit::{self, Outcome};
use crate::fsutil::{fnv1a64, lock_project, project_root, write_atomic};
use crate::kconfig_keys;
use crate::policy::{runtime_knobs_header, Policy, RUNTIME_KNOBS_HEADER};
use crate::upstream::{self, Tree};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[cfg(test)]
use render::{BLOCK_BEGIN, BLOCK_END};

/// `cargo xtask configure [--policy lean|stock|PATH] [--check] [--json]`
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Writes components/<lib>/ for libdatachannel, libjuice, usrsctp, libsrtp and plog (CMakeLists.txt,
Kconfig, idf_component.yml from templates/, upstream sources with the policy's patches from
patches/ copied into upstream/, git-ignored), the policy block of sdkconfig.defaults (your lines
outside the block are kept) and the stamp components/.esp_dc_policy. A second run changes nothing.

With --into APP_DIR the same lands in your own ESP-IDF application: APP_DIR/components/ gets
libdatachannel, libjuice, usrsctp, libsrtp, plog, esp_dc_port and esp_dc_init (ours: replaced on every run),
APP_DIR/sdkconfig.defaults the policy block (your lines are kept), and the stamp. Your main/,
CMakeLists.txt, other components and sdkconfig are never touched.

Examples:
  cargo xtask configure                   # lean, then: cd examples/datachannel_echo && idf.py build
  cargo xtask configure --policy stock    # the seed's baseline
  cargo xtask configure --check           # CI: is the tree what the policy says?
  cargo xtask configure --into ~/src/my-camera      # then in it: idf.py build
  cargo xtask configure --into ~/src/my-camera --check

Exit codes: 0 done (or no drift with --check), 1 --check found drift,
2 bad policy, patch or template: `file:line: key: what is wrong`, nothing written.")]
pub struct Args {
    /// Policy: `lean`, `stock` (policies/<name>.toml) or a path to a .toml file.
    #[arg(long, default_value = "lean")]
    pub policy: String,
    /// Report which files differ from what the policy generates, write nothing; exit 1 on drift.
    #[arg(long)]
    pub check: bool,
    /// Print the result as JSON instead of a human summary.
    #[arg(long)]
    pub json: bool,
    /// Lay the tree into your own ESP-IDF application instead of this project: its components/
    /// gets our components and its sdkconfig.defaults the policy block; nothing else is touched.
    #[arg(long, value_name = "APP_DIR")]
    pub into: Option<PathBuf>,
}

pub fn run(args: Args) -> Outcome {
    let root = match &args.into {
        Some(app) => application_root(app)?,
        None => project_root(),
    };
    configure_into(&root, &Policy::path_for(&args.policy), args.check, args.json)
}

/// The directory of an ESP-IDF application: its top CMakeLists.txt includes project.cmake and
/// calls project(). Refusing anything else keeps `--into` from writing into a wrong directory.
pub fn application_root(app: &Path) -> Result<PathBuf> {
    let cmake = app.join("CMakeLists.txt");
    let text = std::fs::read_to_string(&cmake).map_err(|e| {
        exit::bad_input(format!(
            "{}: not an ESP-IDF application ({e}); --into takes the directory whose CMakeLists.txt calls project()",
            cmake.display()
        ))
    })?;
    if !text.contains("project.cmake") || !text.contains("project(") {
        return Err(exit::bad_input(format!(
            "{}: not an ESP-IDF application's top CMakeLists.txt (no include of project.cmake and project() call)",
            cmake.display()
        )));
    }
    Ok(app.canonicalize()?)
}

/// Everything a run would write, relative to the project root.
#[derive(Debug)]
pub struct Plan {
    pub policy_name: String,
    /// components/<name> -> its full content (rendered files + upstream/).
    pub components: BTreeMap<String, Tree>,
    /// Single files: sdkconfig.defaults, components/.esp_dc_policy.
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    /// Consistent but probably wrong settings, printed on stderr (they do not stop the run).
    pub warnings: Vec<String>,
}

pub const STAMP: &str = "components/.esp_dc_policy";

/// Upstream directories no ESP-IDF build reads; leaving them out keeps the copy small.
const SKIPPED_UPSTREAM_DIRS: &[&str] =
    &["test", "tests", "fuzzer", "doc", "docs", "pages", "samples", "programs", "timing"];

/// Computes the whole output in memory. `root` is where the existing sdkconfig.defaults is read.
pub fn plan(root: &Path, policy_path: &Path) -> Result<Plan> {
    let policy = Policy::load(policy_path)?;
    let policy_text = std::fs::read_to_string(policy_path)?;
    let shown_policy = shown(policy_path);
    reject_unplaceable_threads(&policy, &policy_text, &shown_policy)?;
    reject_other_force_includes(&policy, &policy_text, &shown_policy)?;

    let sources = upstream::locate()?;
    let templates = project_root().join("templates");
    let read_template = |name: &str| -> Result<String> {
        std::fs::read_to_string(templates.join(name))
            .map_err(|e| exit::bad_input(format!("templates/{name}: cannot read the template: {e}")))
    };
    let kconfig_template = read_template("Kconfig")?;
    let yml_template = read_template("idf_component.yml")?;

    let mut components = BTreeMap::new();
    let mut patches_by_component = BTreeMap::new();
    for component in components::generated() {
        let staged = upstream::stage_component(&sources, &policy, component).map_err(|e| {
            let line = key_line(&policy_text, component, "patches");
            exit::bad_input(format!("{shown_policy}:{line}: components.{component}.patches: {e}"))
        })?;
        let staged = staged.expect("generated components have upstream sources");
        let mut tree = Tree::default();
        for (rel, bytes) in staged.files {
            let first = rel.components().next().and_then(|c| c.as_os_str().to_str()).unwrap_or("");
            if SKIPPED_UPSTREAM_DIRS.contains(&first) {
                continue;
            }
            tree.files.insert(Path::new("upstream").join(rel), bytes);
        }
        // The build files depend on the component only (the policy reaches them through
        // Kconfig and sdkconfig.defaults); only upstream/ differs between policies (patches).
        let cmake = render::cmakelists(component, &read_template(&format!("{component}/CMakeLists.txt"))?)?;
        tree.files.insert("CMakeLists.txt".into(), cmake.into_bytes());
        if let Some(fragment) = render::linker_fragment(component) {
            tree.files.insert("linker.lf".into(), fragment.into_bytes());
        }
        tree.files.insert("Kconfig".into(), render::kconfig(component, &kconfig_template)?.into_bytes());
        if component == "libdatachannel" {
            // The run-time knobs' list, for esp_dc_port_init() (esp_dc_init requires libdatachannel).
            tree.files.insert(RUNTIME_KNOBS_HEADER.into(), runtime_knobs_header().into_bytes());
        }
        tree.files
            .insert("idf_component.yml".into(), render::idf_component_yml(component, &yml_template)?.into_bytes());
        patches_by_component.insert(component.to_string(), policy.component(component).patches.clone());
        components.insert(component.to_string(), tree);
    }

    // In another application the committed components of ours travel with the generated ones;
    // in this project they are already where they belong.
    let here = project_root().canonicalize().unwrap_or_else(|_| project_root());
    if root.canonicalize().map(|r| r != here).unwrap_or(true) {
        for name in components::ours() {
            components.insert(name.to_string(), Tree::read(&here.join("components").join(name))?);
        }
    }

    let mut files = BTreeMap::new();
    let defaults_path = root.join("sdkconfig.defaults");
    let existing = match std::fs::read_to_string(&defaults_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(exit::bad_input(format!("{}: cannot read: {e}", defaults_path.display()))),
    };
    // Every key of the block must be a Kconfig symbol under its current name (kconfgen drops
    // the rest silently); `kconfig_keys` says what is checked against what.
    let rendered_kconfigs = components.values().filter_map(|t| t.files.get(Path::new("Kconfig")));
    let mut ours = kconfig_keys::project_symbols(&project_root(), &components::generated())?;
    ours.extend(rendered_kconfigs.flat_map(|k| kconfig_keys::kconfig_symbols(&String::from_utf8_lossy(k))));
    let mut known = kconfig_keys::Known::new(ours);
    if let Some(idf) = kconfig_keys::idf_tree_from_env().filter(|_| !policy.sdkconfig_extra.is_empty()) {
        known = known.with_tree(&kconfig_keys::scan_tree(&idf)?);
    }
    let key_warnings = render::check_sdkconfig_keys(
        &render::policy_lines(&policy),
        &policy.sdkconfig_extra,
        &known,
        &policy_text,
        &shown_policy,
    )?;
    let lines = render::sdkconfig_lines(&policy);
    let merged = render::merge_sdkconfig_defaults(&existing, &lines, "sdkconfig.defaults")?;
    files.insert(PathBuf::from("sdkconfig.defaults"), merged.into_bytes());

    let stamp = render::stamp(&policy, &shown_policy, &policy_hash(&policy, &policy_text)?, &patches_by_component);
    files.insert(PathBuf::from(STAMP), stamp.into_bytes());

    Ok(Plan {
        policy_name: policy.policy.name.clone(),
        components,
        files,
        warnings: [warnings(&policy), key_warnings].concat(),
    })
}

/// SctpTransport::doRecv keeps a 64 KB buffer on the processor thread's stack unless the knob
/// patch moves it to the heap: with small thread stacks that is an overflow on the device.
fn warnings(policy: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    let ldc = policy.component("libdatachannel");
    let stack = policy.thread_stack_bytes();
    let chunk =
        crate::policy::knob("libdatachannel", "sctp_recv_chunk_bytes").map(|k| policy.knob_value(k)).unwrap_or(65536);
    let patched = ldc.patches.iter().any(|p| p == "libdatachannel/knobs.patch");
    if (chunk == 65536 || !patched) && stack < 65536 + 8192 {
        out.push(format!(
            "components.libdatachannel: thread stacks are {stack} bytes but SctpTransport::doRecv keeps a 64 KB receive buffer on the stack ({}); set knobs.sctp_recv_chunk_bytes below 65536 with libdatachannel/knobs.patch applied",
            if patched { "sctp_recv_chunk_bytes = 65536" } else { "knobs.patch not applied" }
        ));
    }
    out
}

/// What `components/.esp_dc_policy` says: the policy the tree was last configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamp {
    pub policy: String,
    pub path: String,
    /// `fnv1a64:<16 hex digits>` over the policy file and its patches (see `policy_hash`).
    pub hash: String,
    pub patches: Vec<String>,
}

/// Reads the stamp under `root` (the project root); None when the tree was never configured.
/// `build`, `size-check` and `lab` compare `hash` with `policy_hash` of their own policy to
/// refuse measuring a tree configured from another one.
pub fn read_stamp(root: &Path) -> Result<Option<Stamp>> {
    let path = root.join(STAMP);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(exit::bad_input(format!("{}: cannot read: {e}", path.display()))),
    };
    let doc: toml_edit::DocumentMut = text.parse().map_err(|e| {
        exit::bad_input(format!("{STAMP}: not the stamp `cargo xtask configure` writes ({e}); run it again"))
    })?;
    let field = |key: &str| doc.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let missing = || exit::bad_input(format!("{STAMP}: incomplete; run `cargo xtask configure` again"));
    Ok(Some(Stamp {
        policy: field("policy").ok_or_else(missing)?,
        path: field("path").ok_or_else(missing)?,
        hash: field("hash").ok_or_else(missing)?,
        patches: doc
            .get("patches")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
    }))
}

/// The stamp's hash for a policy: its file bytes and the bytes of every patch it applies (the
/// port patches included), in component order. Cheap (no upstream sources read).
pub fn policy_hash(policy: &Policy, policy_text: &str) -> Result<String> {
    let mut parts: Vec<Vec<u8>> = vec![policy_text.as_bytes().to_vec()];
    for component in components::generated() {
        for patch in &policy.component(component).patches {
            parts.push(upstream::read_patch(patch)?.into_bytes());
        }
        for (_, text) in upstream::port_patches(component)? {
            parts.push(text.into_bytes());
        }
    }
    let slices: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
    Ok(format!("fnv1a64:{:016x}", fnv1a64(&slices)))
}

/// Only libdatachannel's threads can be placed: esp_dc_port_init() sets one inherited
/// esp_pthread_cfg_t before the stack starts, and every thread of libjuice and usrsctp descends
/// from libdatachannel's. A per-component entry elsewhere would be silently ignored, so refuse it.
fn reject_unplaceable_threads(policy: &Policy, text: &str, shown_policy: &str) -> Result<()> {
    if let Some(threads) = &policy.component("libdatachannel").threads {
        if threads.placement != policy.pthread.stack_placement {
            let line = key_line(text, "libdatachannel", "threads");
            return Err(exit::bad_input(format!(
                "{shown_policy}:{line}: components.libdatachannel.threads.placement: `{}` differs from pthread.stack_placement = `{}`; esp_dc_port places the stack's pthreads with one esp_pthread_cfg_t, so the two must agree",
                threads.placement.as_str(),
                policy.pthread.stack_placement.as_str()
            )));
        }
    }
    for (name, component) in &policy.components {
        if name != "libdatachannel" && component.threads.is_some() {
            let line = key_line(text, name, "threads");
            return Err(exit::bad_input(format!(
                "{shown_policy}:{line}: components.{name}.threads: only components.libdatachannel.threads can be placed (the stack's threads all inherit its esp_pthread_cfg_t); remove this entry"
            )));
        }
    }
    Ok(())
}

/// A generated component's Kconfig has one bool for the redirect, so the only header it can
/// force-include is esp_dc_alloc_redirect.h (esp_dc_port is ours and force-includes nothing).
fn reject_other_force_includes(policy: &Policy, text: &str, shown_policy: &str) -> Result<()> {
    for (name, component) in &policy.components {
        let header = component.force_include.as_str();
        let allowed = header.is_empty()
            || (components::generated().contains(&name.as_str()) && header == render::REDIRECT_HEADER);
        if !allowed {
            let line = key_line(text, name, "force_include");
            let what = if components::generated().contains(&name.as_str()) {
                format!(
                    "a component's Kconfig has one bool for the redirect; use \"{}\" or \"\"",
                    render::REDIRECT_HEADER
                )
            } else {
                "esp_dc_port is ours and force-includes nothing; use \"\"".to_string()
            };
            return Err(exit::bad_input(format!(
                "{shown_policy}:{line}: components.{name}.force_include: `{header}` cannot be expressed: {what}"
            )));
        }
    }
    Ok(())
}

/// Line of `key` inside `[components.<component>]` (or of the table header when absent).
fn key_line(text: &str, component: &str, key: &str) -> usize {
    let header = format!("[components.{component}]");
    let mut in_table = false;
    let mut header_line = 1;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') {
            in_table = line == header;
            if in_table {
                header_line = i + 1;
            }
            continue;
        }
        if in_table && line.split('=').next().map(str::trim) == Some(key) {
            return i + 1;
        }
    }
    header_line
}

fn shown(path: &Path) -> String {
    path.strip_prefix(project_root()).unwrap_or(path).display().to_string()
}

/// Files (relative to root) whose content differs from the plan.
pub fn drift(plan: &Plan, root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (name, tree) in &plan.components {
        let dir = Path::new("components").join(name);
        out.extend(tree.drift(&root.join(&dir))?.into_iter().map(|rel| dir.join(rel)));
    }
    for (rel, bytes) in &plan.files {
        if std::fs::read(root.join(rel)).ok().as_deref() != Some(bytes.as_slice()) {
            out.push(rel.clone());
        }
    }
    Ok(out)
}

/// Numbers the staging directories of the calls in this process.
static STAGING_RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Writes the plan; the caller holds the project lock (`fsutil::lock_project`). A changed component is staged complete beside its destination and renamed
/// into place, so a reader sees the old or the new component. The stamp is written last: it
/// names a policy only once the tree matches it.
pub fn apply(plan: &Plan, root: &Path) -> Result<Vec<PathBuf>> {
    let changed = drift(plan, root)?;
    let components_dir = root.join("components");
    // An interrupted run may have left staging copies; they are never trusted, only swept
    // (the caller holds the project lock: no other run is staging now).
    if components_dir.is_dir() {
        for entry in std::fs::read_dir(&components_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') && (name.ends_with(".configure-new") || name.ends_with(".configure-old")) {
                std::fs::remove_dir_all(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
    }
    for (name, tree) in &plan.components {
        let dest = components_dir.join(name);
        if tree.drift(&dest)?.is_empty() {
            continue;
        }
        // Unique per run (process and call), so even a run that took no lock (an older xtask)
        // cannot write into or sweep this one's copy mid-way.
        let run = format!("{}-{}", std::process::id(), STAGING_RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let staging = components_dir.join(format!(".{name}.{run}.configure-new"));
        let old = components_dir.join(format!(".{name}.{run}.configure-old"));
        tree.write(&staging)?;
        if dest.exists() {
            std::fs::rename(&dest, &old).with_context(|| format!("moving {} aside", dest.display()))?;
        }
        std::fs::rename(&staging, &dest).with_context(|| format!("moving {} into place", dest.display()))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
        }
    }
    for (rel, bytes) in plan.files.iter().filter(|(rel, _)| rel.as_path() != Path::new(STAMP)) {
        write_atomic(&root.join(rel), bytes)?;
    }
    write_atomic(&root.join(STAMP), &plan.files[Path::new(STAMP)])?;
    Ok(changed)
}

/// The command with its root made explicit (tests run it on a temporary directory). Holds the
/// project lock from reading the tree to writing the stamp: a second run waits.
pub fn configure_into(root: &Path, policy_path: &Path, check: bool, json: bool) -> Outcome {
    let _lock = lock_project(root, "configure")?;
    configure_locked(root, policy_path, check, json)
}

/// `configure_into` for a caller that already holds the project lock (`build`).
pub fn configure_locked(root: &Path, policy_path: &Path, check: bool, json: bool) -> Outcome {
    let plan = plan(root, policy_path)?;
    let changed = if check { drift(&plan, root)? } else { apply(&plan, root)? };
    let summary = summarize(&changed);
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    if json {
        let report = serde_json::json!({
            "policy": plan.policy_name,
            "check": check,
            "warnings": plan.warnings,
            "changed": changed.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if changed.is_empty() {
        println!(
            "configure: policy `{}`: tree is up to date, nothing {}",
            plan.policy_name,
            if check { "drifted" } else { "changed" }
        );
    } else {
        let verb = if check { "differ from the policy" } else { "written" };
        println!("configure: policy `{}`: {} file(s) {verb}:", plan.policy_name, changed.len());
        for line in summary {
            println!("  {line}");
        }
    }
    Ok(if check && !changed.is_empty() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// One line per top-level item: a component's upstream copy counts as one entry with a total.
fn summarize(changed: &[PathBuf]) -> Vec<String> {
    let mut upstream_counts: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let mut lines = Vec::new();
    for path in changed {
        let parts: Vec<_> = path.components().collect();
        if parts.len() > 3 && parts[0].as_os_str() == "components" && parts[2].as_os_str() == "upstream" {
            *upstream_counts.entry(parts[..3].iter().collect()).or_default() += 1;
        } else {
            lines.push(path.display().to_string());
        }
    }
    for (dir, count) in upstream_counts {
        lines.push(format!("{}/ ({count} upstream file(s))", dir.display()));
    }
    lines
}

#[cfg(test)]
mod tests;
