//! Laying out the ESP-IDF component tree from a policy (`cargo xtask configure`, `build`, the
//! ESP-IDF tests).
//!
//! Everything is computed in memory first (upstream sources read, our patches applied, templates
//! rendered, sdkconfig.defaults merged), so a bad policy, a patch that does not apply or a broken
//! template exits 2 before the first byte is written. Each generated component is then written
//! into a sibling staging directory and swapped in with renames; single files are written
//! atomically. A component whose bytes already match is not touched, which makes a second run a
//! no-op.

use crate::components;
use crate::exit::{self, Outcome};
use crate::fsutil::{fnv1a64, lock_project, project_root, write_atomic};
use crate::kconfig_keys;
use crate::policy::Policy;
use crate::render::{self, runtime_knobs_header, RUNTIME_KNOBS_HEADER};
use crate::upstream::{self, Tree};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[cfg(test)]
use crate::render::{BLOCK_BEGIN, BLOCK_END};

/// How a run treats the tree; `configure_into` is the plain run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub check: bool,
    pub json: bool,
    pub dry_run: bool,
    pub replace: bool,
    pub keep_sdkconfig: Vec<String>,
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
    /// The policy block's lines and the `--keep-sdkconfig` keys: under the lock the block is
    /// merged again if sdkconfig.defaults changed since the plan read it.
    pub sdkconfig_lines: Vec<String>,
    pub keep_sdkconfig: Vec<String>,
    /// sdkconfig.defaults as the plan read it (empty when there was none).
    pub defaults_seen: String,
}

pub const STAMP: &str = "components/.esp_dc_policy";

/// In every component folder configure writes: says the folder is configure's and lists the
/// files in it that are (what a later run may replace or delete; anything else is the user's).
pub const COMPONENT_STAMP: &str = ".esp_dc_component";

/// Where `--replace` moves a folder configure did not write: beside components/, not in it, so
/// ESP-IDF does not register the old copy as a second component with the same sources.
pub const BACKUP_PREFIX: &str = "components.esp_dc-backup-";

/// Upstream directories no ESP-IDF build reads; leaving them out keeps the copy small.
const SKIPPED_UPSTREAM_DIRS: &[&str] =
    &["test", "tests", "fuzzer", "doc", "docs", "pages", "samples", "programs", "timing"];

/// Computes the whole output in memory. `root` is where the existing sdkconfig.defaults is read.
pub fn plan(root: &Path, policy_path: &Path) -> Result<Plan> {
    plan_with(root, policy_path, &[])
}

/// `plan`, keeping the user's sdkconfig.defaults lines for `keep` (`--keep-sdkconfig`).
pub fn plan_with(root: &Path, policy_path: &Path, keep: &[String]) -> Result<Plan> {
    let policy = Policy::load(policy_path)?;
    let policy_text = std::fs::read_to_string(policy_path)?;
    let shown_policy = shown(policy_path);
    reject_unplaceable_threads(&policy, &policy_text, &shown_policy)?;
    reject_other_force_includes(&policy, &policy_text, &shown_policy)?;

    let sources = upstream::locate()?;
    let templates = Templates { kconfig: read_template("Kconfig")?, yml: read_template("idf_component.yml")? };

    let mut components = BTreeMap::new();
    let mut patches_by_component = BTreeMap::new();
    for component in components::generated() {
        let tree = generated_component(&sources, &policy, &policy_text, &shown_policy, component, &templates)?;
        patches_by_component.insert(component.to_string(), policy.component(component).patches.clone());
        components.insert(component.to_string(), tree);
    }
    add_committed_components(root, &mut components)?;
    for tree in components.values_mut() {
        let listing = component_stamp(tree);
        tree.files.insert(COMPONENT_STAMP.into(), listing);
    }

    let mut files = BTreeMap::new();
    let existing = read_existing_defaults(&root.join("sdkconfig.defaults"))?;
    let known = known_kconfig_keys(&policy, &components)?;
    let key_warnings = render::check_sdkconfig_keys(
        &render::policy_lines(&policy),
        &policy.sdkconfig_extra,
        &known,
        &policy_text,
        &shown_policy,
    )?;
    let lines = render::sdkconfig_lines(&policy);
    let merged = render::merge_sdkconfig_defaults(&existing, &lines, "sdkconfig.defaults", keep)?;
    files.insert(PathBuf::from("sdkconfig.defaults"), merged.into_bytes());

    let stamp = render::stamp(&policy, &shown_policy, &policy_hash(&policy, &policy_text)?, &patches_by_component);
    files.insert(PathBuf::from(STAMP), stamp.into_bytes());

    Ok(Plan {
        policy_name: policy.policy.name.clone(),
        components,
        files,
        warnings: [warnings(&policy), key_warnings].concat(),
        sdkconfig_lines: lines,
        keep_sdkconfig: keep.to_vec(),
        defaults_seen: existing,
    })
}

/// The templates every generated component renders (read once, before the first component).
struct Templates {
    kconfig: String,
    yml: String,
}

fn read_template(name: &str) -> Result<String> {
    std::fs::read_to_string(project_root().join("templates").join(name))
        .map_err(|e| exit::bad_input(format!("templates/{name}: cannot read the template: {e}")))
}

/// One generated component's folder: its upstream sources with the policy's patches applied
/// (under upstream/, less the directories no build reads) and its rendered build files.
fn generated_component(
    sources: &upstream::Sources,
    policy: &Policy,
    policy_text: &str,
    shown_policy: &str,
    component: &str,
    templates: &Templates,
) -> Result<Tree> {
    let staged = upstream::stage_component(sources, policy, component).map_err(|e| {
        let line = key_line(policy_text, component, "patches");
        exit::bad_input(format!("{shown_policy}:{line}: components.{component}.patches: {e}"))
    })?;
    let staged = staged.expect("generated components have upstream sources");
    let mut tree = Tree::default();
    for (rel, bytes) in staged.files {
        let first = rel.components().next().and_then(|c| c.as_os_str().to_str()).unwrap_or("");
        if SKIPPED_UPSTREAM_DIRS.contains(&first) {
            continue;
        }
        if let Some(mode) = staged.modes.get(&rel) {
            tree.modes.insert(Path::new("upstream").join(&rel), *mode);
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
    tree.files.insert("Kconfig".into(), render::kconfig(component, &templates.kconfig)?.into_bytes());
    if component == "libdatachannel" {
        // The run-time knobs' list, for esp_dc_port_init() (esp_dc_init requires libdatachannel).
        tree.files.insert(RUNTIME_KNOBS_HEADER.into(), runtime_knobs_header().into_bytes());
    }
    tree.files.insert("idf_component.yml".into(), render::idf_component_yml(component, &templates.yml)?.into_bytes());
    Ok(tree)
}

/// In another application the committed components of ours travel with the generated ones;
/// in this project (`root` is the project) they are already where they belong.
fn add_committed_components(root: &Path, components: &mut BTreeMap<String, Tree>) -> Result<()> {
    let here = project_root().canonicalize().unwrap_or_else(|_| project_root());
    if root.canonicalize().map(|r| r != here).unwrap_or(true) {
        for name in components::ours() {
            let mut tree = Tree::read(&here.join("components").join(name))?;
            // The project's copy may hold a stamp of its own from an older layout; ours is rendered.
            tree.files.remove(Path::new(COMPONENT_STAMP));
            components.insert(name.to_string(), tree);
        }
    }
    Ok(())
}

/// The application's sdkconfig.defaults, empty when there is none yet.
fn read_existing_defaults(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(exit::bad_input(format!("{}: cannot read: {e}", path.display()))),
    }
}

/// Every key of the sdkconfig block must be a Kconfig symbol under its current name (kconfgen
/// drops the rest silently): the symbols of the project, of the components about to be written
/// and, for `sdkconfig_extra`, of ESP-IDF; `kconfig_keys` says what is checked against what.
fn known_kconfig_keys(policy: &Policy, components: &BTreeMap<String, Tree>) -> Result<kconfig_keys::Known> {
    let (mut ours, mut facts) = kconfig_keys::project_kconfig(&project_root(), &components::generated())?;
    for (name, tree) in components {
        if let Some(kconfig) = tree.files.get(Path::new("Kconfig")) {
            let text = String::from_utf8_lossy(kconfig);
            ours.extend(kconfig_keys::kconfig_symbols(&text));
            kconfig_keys::merge_facts(
                &mut facts,
                kconfig_keys::kconfig_facts(&text, &format!("components/{name}/Kconfig")),
            );
        }
    }
    let mut known = kconfig_keys::Known::new(ours).with_facts(facts);
    if let Some(idf) = kconfig_keys::idf_tree_from_env().filter(|_| !policy.sdkconfig_extra.is_empty()) {
        known = known.with_tree(&kconfig_keys::scan_tree(&idf)?);
    }
    Ok(known)
}

/// The `.esp_dc_component` of a component folder: every file configure writes there, one path a line.
fn component_stamp(tree: &Tree) -> Vec<u8> {
    let mut s = String::from(
        "# Written by `cargo xtask configure`: this folder is generated. A later run replaces the files\n\
         # listed below and refuses to delete any other (move yours out of the folder, or use --replace).\n",
    );
    for rel in tree.files.keys().filter(|rel| rel.as_path() != Path::new(COMPONENT_STAMP)) {
        s.push_str(&rel.to_string_lossy());
        s.push('\n');
    }
    s.into_bytes()
}

/// A component folder where configure would write that holds what configure did not write.
#[derive(Debug, Clone, PartialEq)]
pub struct Foreign {
    /// Relative to the root: `components/<name>`.
    pub dir: PathBuf,
    /// Why it is not ours, for the message.
    pub why: String,
}

/// Every folder `apply` would replace that is not entirely configure's own: no stamp (a hand
/// port, or anything else of that name), not a plain folder, or files the stamp does not list.
/// A folder of an older configure (no stamp of its own, but the tree's `.esp_dc_policy`) is ours
/// when each of its files is one configure writes.
pub fn foreign_folders(plan: &Plan, root: &Path) -> Result<Vec<Foreign>> {
    let mut out = Vec::new();
    let configured_before = root.join(STAMP).is_file();
    for (name, tree) in &plan.components {
        let rel_dir = Path::new("components").join(name);
        let dest = root.join(&rel_dir);
        let meta = match std::fs::symlink_metadata(&dest) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(exit::bad_input(format!("{}: cannot read: {e}", dest.display()))),
        };
        if !meta.is_dir() {
            let what = if meta.file_type().is_symlink() { "a symbolic link" } else { "a file" };
            out.push(Foreign { dir: rel_dir, why: format!("{what}, not a folder configure wrote") });
            continue;
        }
        let listed: Option<std::collections::BTreeSet<PathBuf>> = std::fs::read_to_string(dest.join(COMPONENT_STAMP))
            .ok()
            .map(|text| text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(PathBuf::from).collect());
        if listed.is_none() && !configured_before {
            out.push(Foreign {
                dir: rel_dir,
                why: format!("no {COMPONENT_STAMP} stamp: configure did not write it (your own port?)"),
            });
            continue;
        }
        let mut theirs = Vec::new();
        for entry in walkdir::WalkDir::new(&dest).sort_by_file_name() {
            let entry = entry.with_context(|| format!("reading {}", dest.display()))?;
            if entry.file_type().is_dir() {
                continue;
            }
            let rel = entry.path().strip_prefix(&dest).expect("below dest").to_path_buf();
            let ours = match &listed {
                Some(listed) => listed.contains(&rel) || rel == Path::new(COMPONENT_STAMP),
                None => tree.files.contains_key(&rel),
            };
            if !ours {
                theirs.push(crate::fsutil::shown(&rel.to_string_lossy()));
            }
        }
        if !theirs.is_empty() {
            let count = theirs.len();
            theirs.truncate(5);
            let more = if count > 5 { format!(" and {} more", count - 5) } else { String::new() };
            let stamp =
                if listed.is_some() { "not listed in its stamp" } else { "no stamp, and not files configure writes" };
            out.push(Foreign {
                dir: rel_dir,
                why: format!("{count} file(s) configure did not write ({stamp}): {}{more}", theirs.join(", ")),
            });
        }
    }
    Ok(out)
}

/// The refusal for folders configure did not write: each named, with the two ways on.
fn refuse_foreign(foreign: &[Foreign]) -> anyhow::Error {
    let mut message = String::from("configure would replace folders it did not write, and lose what is in them:");
    for f in foreign {
        let _ = std::fmt::Write::write_fmt(&mut message, format_args!("\n  {}: {}", f.dir.display(), f.why));
    }
    message.push_str(&format!(
        "\nMove them out of components/ (e.g. `mv components/libdatachannel ../libdatachannel-mine`), or run again with --replace, which first moves each to {BACKUP_PREFIX}<UTC date>/ beside components/ and says where; --dry-run shows what would change. README, \"Use it in your application\", says what of a hand port to keep."
    ));
    exit::bad_input(message)
}

/// A folder `--replace` moved: (where it was, where it went), relative to the root.
pub type Moved = (PathBuf, PathBuf);

/// `--replace`: moves each foreign folder to `components.esp_dc-backup-<UTC date>/<name>` under
/// the root (a new directory per run). Returns (folder, where it went), both relative to root.
fn move_to_backup(foreign: &[Foreign], root: &Path) -> Result<Vec<Moved>> {
    if foreign.is_empty() {
        return Ok(Vec::new());
    }
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let base = format!("{BACKUP_PREFIX}{}", crate::fsutil::utc_stamp(secs));
    let mut backup = PathBuf::from(&base);
    let mut n = 1;
    while std::fs::symlink_metadata(root.join(&backup)).is_ok() {
        n += 1;
        backup = PathBuf::from(format!("{base}-{n}"));
    }
    std::fs::create_dir_all(root.join(&backup))
        .with_context(|| format!("creating {}", root.join(&backup).display()))?;
    let mut moved = Vec::new();
    for f in foreign {
        let to = backup.join(f.dir.file_name().expect("components/<name>"));
        std::fs::rename(root.join(&f.dir), root.join(&to))
            .with_context(|| format!("moving {} to {}", f.dir.display(), to.display()))?;
        eprintln!("configure: moved {} (not written by configure) to {}", f.dir.display(), to.display());
        moved.push((f.dir.clone(), to));
    }
    Ok(moved)
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

/// Line of `key` inside `[components.<component>]` (or of the table when the key is absent), as
/// the TOML parser places them, so any spelling of the table (`[components."libdatachannel"]`,
/// a dotted or inline table) points at the user's own line (issue 27: a quoted table name was
/// reported at line 1).
fn key_line(text: &str, component: &str, key: &str) -> usize {
    toml_key_line(text, &["components", component], key)
}

/// Line of `key` in the table at `path` (any TOML spelling of it), else of the table, else 1:
/// errors point where the user has to edit.
pub(crate) fn toml_key_line(text: &str, path: &[&str], key: &str) -> usize {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let Ok(doc) = toml_edit::Document::parse(text.to_string()) else { return 1 };
    let Some((last, parents)) = path.split_last() else { return 1 };
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    for name in parents {
        let Some(inner) = table.get(name).and_then(|t| t.as_table_like()) else { return 1 };
        table = inner;
    }
    let Some((table_key, table)) = table.get_key_value(last) else { return 1 };
    table
        .as_table_like()
        .and_then(|t| t.get_key_value(key))
        .and_then(|(k, v)| k.span().or_else(|| v.span()))
        .or_else(|| table_key.span().or_else(|| table.span()))
        .map(|s| line_of(s.start))
        .unwrap_or(1)
}

#[cfg(test)]
#[test]
fn key_line_finds_any_spelling_of_the_table() {
    let text = "[policy]\nname = \"x\"\n\n[components.\"libdatachannel\"]\nplacement = \"psram\"\npatches = []\n\n[components.plog]\n";
    assert_eq!(key_line(text, "libdatachannel", "patches"), 6);
    assert_eq!(key_line(text, "libdatachannel", "threads"), 4);
    assert_eq!(key_line(text, "plog", "patches"), 8);
    let dotted = "[components]\nlibsrtp.placement = \"psram\"\nlibsrtp.patches = [\"x\"]\n";
    assert_eq!(key_line(dotted, "libsrtp", "patches"), 3);
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
/// names a policy only once the tree matches it. A folder configure did not write is refused
/// (`foreign_folders`), never deleted.
#[cfg(test)]
pub fn apply(plan: &Plan, root: &Path) -> Result<Vec<PathBuf>> {
    apply_with(plan, root, false).map(|(changed, _)| changed)
}

/// `apply`; with `replace` a folder configure did not write is first moved to a backup
/// (returned: folder, where it went) instead of refused.
pub fn apply_with(plan: &Plan, root: &Path, replace: bool) -> Result<(Vec<PathBuf>, Vec<Moved>)> {
    let foreign = foreign_folders(plan, root)?;
    if !foreign.is_empty() && !replace {
        return Err(refuse_foreign(&foreign));
    }
    let moved = move_to_backup(&foreign, root)?;
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
        stage_component_files(tree, &dest, &staging)?;
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
    Ok((changed, moved))
}

/// Writes a component's files into `staging` as they should replace `dest`, under the rules
/// sdkconfig.defaults follows (`fsutil::write_atomic`): a file that exists keeps its mode; a
/// symbolic link stays the same link, and the file it names gets the bytes (in the staged copy
/// when it lies inside the folder, else in place); a new file gets 0666 minus the umask, plus
/// execute bits where the upstream file had them.
fn stage_component_files(tree: &Tree, dest: &Path, staging: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(staging).with_context(|| format!("creating {}", staging.display()))?;
    let in_staging = |path: &Path| -> Option<PathBuf> { path.strip_prefix(dest).ok().map(|rel| staging.join(rel)) };
    let write_new = |path: &Path, bytes: &[u8], mode: Option<u32>| -> Result<()> {
        std::fs::create_dir_all(path.parent().expect("below staging"))?;
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
        match mode {
            Some(mode) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("setting the mode of {}", path.display())),
            None => Ok(()),
        }
    };
    for (rel, bytes) in &tree.files {
        let existing = dest.join(rel);
        let staged = staging.join(rel);
        let mode_of = |p: &Path| std::fs::metadata(p).ok().map(|m| m.permissions().mode() & 0o7777);
        match std::fs::symlink_metadata(&existing) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link = std::fs::read_link(&existing).with_context(|| format!("reading {}", existing.display()))?;
                std::fs::create_dir_all(staged.parent().expect("below staging"))?;
                std::os::unix::fs::symlink(&link, &staged).with_context(|| format!("linking {}", staged.display()))?;
                let target = crate::fsutil::follow_links(&existing)?;
                match in_staging(&target) {
                    Some(inside) => write_new(&inside, bytes, mode_of(&target))?,
                    None => {
                        write_atomic(&target, bytes)?;
                    }
                }
            }
            Ok(meta) if meta.is_file() => write_new(&staged, bytes, mode_of(&existing))?,
            _ => {
                write_new(&staged, bytes, None)?;
                crate::fsutil::give_execute_bits(&staged, tree.modes.get(rel).copied())?;
            }
        }
    }
    Ok(())
}

/// The command with its root made explicit (tests run it on a temporary directory). Holds the
/// project lock from reading the tree to writing the stamp: a second run waits.
#[cfg(test)]
pub fn configure_into(root: &Path, policy_path: &Path, check: bool, json: bool) -> Outcome {
    configure_with(root, policy_path, &Options { check, json, ..Options::default() })
}

/// `configure_into` with every option. The plan (policy, patches, templates, the merge of
/// sdkconfig.defaults) and the check of the folders it would replace come first and read only:
/// an error there exits 2 before the lock file or components/ is created.
pub fn configure_with(root: &Path, policy_path: &Path, options: &Options) -> Outcome {
    let plan = plan_with(root, policy_path, &options.keep_sdkconfig)?;
    let foreign = foreign_folders(&plan, root)?;
    // --check only reports: a file configure did not write is drift like any other (exit 1).
    if !foreign.is_empty() && !options.replace && !options.check {
        return Err(refuse_foreign(&foreign));
    }
    if options.check || options.dry_run {
        // Reading only: take the lock where a run made one (a writer is then waited for), never
        // create it.
        let _lock =
            if root.join(crate::fsutil::LOCK_FILE).is_file() { Some(lock_project(root, "configure")?) } else { None };
        return report_run(&plan, root, options, &foreign);
    }
    let _lock = lock_project(root, "configure")?;
    let plan = refresh_defaults(plan, root)?;
    report_run(&plan, root, options, &foreign)
}

/// `configure_into` for a caller that already holds the project lock (`build`).
pub fn configure_locked(root: &Path, policy_path: &Path, check: bool, json: bool) -> Outcome {
    let plan = plan(root, policy_path)?;
    report_run(&plan, root, &Options { check, json, ..Options::default() }, &[])
}

/// The plan again if sdkconfig.defaults changed between planning and taking the lock (another
/// run wrote it): its merge, conflicts and markers are checked on what will be replaced.
fn refresh_defaults(mut plan: Plan, root: &Path) -> Result<Plan> {
    let now = match std::fs::read_to_string(root.join("sdkconfig.defaults")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(exit::bad_input(format!("{}: cannot read: {e}", root.join("sdkconfig.defaults").display())))
        }
    };
    if now != plan.defaults_seen {
        let merged =
            render::merge_sdkconfig_defaults(&now, &plan.sdkconfig_lines, "sdkconfig.defaults", &plan.keep_sdkconfig)?;
        plan.files.insert(PathBuf::from("sdkconfig.defaults"), merged.into_bytes());
        plan.defaults_seen = now;
    }
    Ok(plan)
}

/// Writes (unless checking or a dry run) and prints what changed.
fn report_run(plan: &Plan, root: &Path, options: &Options, foreign: &[Foreign]) -> Outcome {
    let check = options.check;
    let foreign = if check { &[] } else { foreign };
    let (changed, moved) = if check || options.dry_run {
        let moved: Vec<Moved> = foreign
            .iter()
            .map(|f| {
                (f.dir.clone(), PathBuf::from(format!("{BACKUP_PREFIX}<UTC date>")).join(f.dir.file_name().unwrap()))
            })
            .collect();
        let mut changed = drift(plan, root)?;
        // A folder to be moved away is rewritten whole.
        changed.retain(|p| !foreign.iter().any(|f| p.starts_with(&f.dir)));
        for f in foreign {
            changed.extend(
                plan.components[f.dir.file_name().unwrap().to_str().unwrap()].files.keys().map(|rel| f.dir.join(rel)),
            );
        }
        (changed, moved)
    } else {
        apply_with(plan, root, options.replace)?
    };
    let summary = summarize(&changed);
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    if options.json {
        let report = serde_json::json!({
            "policy": plan.policy_name,
            "check": check,
            "dry_run": options.dry_run,
            "warnings": plan.warnings,
            "changed": changed.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "moved": moved.iter().map(|(from, to)| serde_json::json!({"from": from.display().to_string(), "to": to.display().to_string()})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for (from, to) in moved.iter().filter(|_| options.dry_run) {
            println!("configure: --dry-run: would move {} to {}", from.display(), to.display());
        }
        if changed.is_empty() {
            println!(
                "configure: policy `{}`: tree is up to date, nothing {}",
                plan.policy_name,
                if check {
                    "drifted"
                } else if options.dry_run {
                    "would change"
                } else {
                    "changed"
                }
            );
        } else {
            let verb = if check {
                "differ from the policy"
            } else if options.dry_run {
                "would be written (--dry-run: nothing was)"
            } else {
                "written"
            };
            println!("configure: policy `{}`: {} file(s) {verb}:", plan.policy_name, changed.len());
            for line in summary {
                println!("  {line}");
            }
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
pub(crate) mod tests;
