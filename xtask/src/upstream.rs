//! Pinned upstream sources. `upstream/Cargo.toml` pins the crates that carry them (the
//! `crate_name` of each `components::REGISTRY` row: libdatachannel with libjuice, usrsctp,
//! libsrtp and plog; mbedTLS); cargo fetches them with checksums from Cargo.lock and
//! cargo_metadata tells where they are. Nothing here builds them.
//!
//! Sources are read into memory as a `Tree`, our patches are applied there (so a patch that does
//! not apply is found before anything is written), and only then written out.

use crate::components;
use crate::exit;
use crate::fsutil::{project_root, write_atomic};
use crate::policy::Policy;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the pinned crates' sources are on this machine.
#[derive(Debug, Clone)]
pub struct Sources {
    /// `.../datachannel-sys-<version>/libdatachannel`
    pub libdatachannel: PathBuf,
    /// `.../mbedtls-rs-sys-<version>/mbedtls`
    pub mbedtls: PathBuf,
}

impl Sources {
    /// Root of a generated component's upstream sources (`esp_dc_port` is ours and has none).
    pub fn component_root(&self, component: &str) -> Option<PathBuf> {
        Some(match component {
            "libdatachannel" => self.libdatachannel.clone(),
            dep => self.libdatachannel.join("deps").join(dep_dir(dep)?),
        })
    }
}

/// Directory of a dependency under libdatachannel's `deps/` (its `components::REGISTRY` row).
pub fn dep_dir(component: &str) -> Option<&'static str> {
    components::get(component)?.upstream.map(|u| u.deps_dir).filter(|d| !d.is_empty())
}

/// The pinned crates, each once, in registry order.
fn pinned_crates() -> Vec<&'static str> {
    let mut crates: Vec<&'static str> = Vec::new();
    for up in components::REGISTRY.iter().filter_map(|c| c.upstream) {
        if !crates.contains(&up.crate_name) {
            crates.push(up.crate_name);
        }
    }
    crates
}

/// The version upstream/Cargo.toml (under the clone at `root`) pins each crate to (`=<version>`),
/// in registry order: the one place a crate's version is written.
pub fn pinned_versions(root: &Path) -> Result<Vec<String>> {
    let path = root.join("upstream/Cargo.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let doc: toml_edit::DocumentMut = text.parse().with_context(|| format!("parsing {}", path.display()))?;
    pinned_crates()
        .into_iter()
        .map(|name| {
            let req = doc["dependencies"][name].as_str().unwrap_or_default();
            req.strip_prefix('=').map(str::to_string).ok_or_else(|| {
                exit::bad_input(format!(
                    "{}: dependencies.{name}: expected an exact pin \"=<version>\", found {req:?}",
                    path.display()
                ))
            })
        })
        .collect()
}

/// Fetches (if needed) and locates the pinned crates. Fails with exit 2 and a hint when offline.
pub fn locate() -> Result<Sources> {
    let manifest = project_root().join("upstream/Cargo.toml");
    let metadata = cargo_metadata::MetadataCommand::new()
        .manifest_path(&manifest)
        .other_options(vec!["--locked".to_string()])
        .exec()
        .map_err(|e| {
            exit::bad_input(format!(
                "cannot resolve the pinned upstream crates from {}: {e}\n  hint: run `cargo fetch --manifest-path upstream/Cargo.toml` with access to crates.io",
                manifest.display()
            ))
        })?;
    let pins: BTreeMap<&str, String> = pinned_crates().into_iter().zip(pinned_versions(&project_root())?).collect();
    let dir_of = |component: &str| -> Result<PathBuf> {
        let up = components::known(component).upstream.unwrap_or_else(|| unreachable!("{component}: no upstream"));
        let name = up.crate_name;
        let package = metadata
            .packages
            .iter()
            .find(|p| p.name.as_str() == name)
            .ok_or_else(|| exit::bad_input(format!("{name} is missing from upstream/Cargo.lock")))?;
        if package.version.to_string() != pins[name] {
            return Err(exit::bad_input(format!(
                "{name} resolved to {} but the project pins ={}; upstream/Cargo.lock was changed",
                package.version, pins[name]
            )));
        }
        Ok(package.manifest_path.parent().expect("manifest has a directory").join(up.crate_dir).into())
    };
    let sources = Sources { libdatachannel: dir_of("libdatachannel")?, mbedtls: dir_of("mbedtls")? };
    for dir in [&sources.libdatachannel, &sources.mbedtls] {
        if !dir.join("CMakeLists.txt").is_file() {
            return Err(exit::bad_input(format!(
                "{} has no CMakeLists.txt: the crate cache looks damaged; remove it and fetch again",
                dir.display()
            )));
        }
    }
    Ok(sources)
}

/// A source tree held in memory: relative path -> bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tree {
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    /// Permission bits of files that had an execute bit where they were read (an upstream
    /// script): a new copy gets them too, as `cp` would. Other files need no entry.
    pub modes: BTreeMap<PathBuf, u32>,
}

impl Tree {
    /// Reads every file below `root`, skipping VCS and CI clutter that no build needs.
    pub fn read(root: &Path) -> Result<Tree> {
        use std::os::unix::fs::PermissionsExt;
        let mut files = BTreeMap::new();
        let mut modes = BTreeMap::new();
        for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
            let entry = entry.with_context(|| format!("walking {}", root.display()))?;
            if !entry.file_type().is_file() {
                continue;
            }
            let rel = entry.path().strip_prefix(root).expect("walkdir stays below root").to_path_buf();
            if rel.components().any(|c| matches!(c.as_os_str().to_str(), Some(".git" | ".github"))) {
                continue;
            }
            let mode = entry.metadata().map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644);
            if mode & 0o111 != 0 {
                modes.insert(rel.clone(), mode);
            }
            files.insert(
                rel,
                std::fs::read(entry.path()).with_context(|| format!("reading {}", entry.path().display()))?,
            );
        }
        Ok(Tree { files, modes })
    }

    /// Applies a unified diff (one or more files, `git diff` or `diff -u` style) whose paths are
    /// relative to this tree, optionally below `prefix`. Errors name the patch, file and hunk.
    pub fn apply_patch(&mut self, patch_name: &str, patch_text: &str, prefix: &Path) -> Result<()> {
        let pieces = split_patch(patch_text);
        if pieces.is_empty() {
            return Err(exit::bad_input(format!("patch `{patch_name}` contains no file diffs")));
        }
        for (path, piece) in pieces {
            let rel = prefix.join(&path);
            let original = self.files.get(&rel).ok_or_else(|| {
                exit::bad_input(format!(
                    "patch `{patch_name}` does not apply: no file `{}` in the upstream sources",
                    rel.display()
                ))
            })?;
            let original = String::from_utf8(original.clone())
                .map_err(|_| exit::bad_input(format!("patch `{patch_name}`: `{}` is not UTF-8 text", rel.display())))?;
            let parsed = diffy::Patch::from_str(&piece).map_err(|e| {
                exit::bad_input(format!("patch `{patch_name}` is malformed for `{}`: {e}", path.display()))
            })?;
            let patched = diffy::apply(&original, &parsed).map_err(|e| {
                exit::bad_input(format!("patch `{patch_name}` does not apply to `{}`: {e}", rel.display()))
            })?;
            self.files.insert(rel, patched.into_bytes());
        }
        Ok(())
    }

    /// Writes the tree below `dest`, touching only files whose bytes differ and deleting files
    /// the tree no longer has. Returns how many files changed.
    pub fn write(&self, dest: &Path) -> Result<usize> {
        let mut changed = 0;
        for (rel, bytes) in &self.files {
            let path = dest.join(rel);
            let new = std::fs::symlink_metadata(&path).is_err();
            if write_atomic(&path, bytes)? {
                changed += 1;
                if new {
                    crate::fsutil::give_execute_bits(&path, self.modes.get(rel).copied())?;
                }
            }
        }
        if dest.is_dir() {
            for entry in walkdir::WalkDir::new(dest).contents_first(true) {
                let entry = entry?;
                let rel = entry.path().strip_prefix(dest).expect("below dest");
                if entry.file_type().is_file() && !self.files.contains_key(rel) {
                    std::fs::remove_file(entry.path())?;
                    changed += 1;
                } else if entry.file_type().is_dir()
                    && entry.path() != dest
                    && std::fs::read_dir(entry.path())?.next().is_none()
                {
                    std::fs::remove_dir(entry.path())?;
                }
            }
        }
        Ok(changed)
    }

    /// Files whose bytes differ from what is under `dest`, and files `dest` has that the tree has not.
    pub fn drift(&self, dest: &Path) -> Result<Vec<PathBuf>> {
        let mut drifted = Vec::new();
        for (rel, bytes) in &self.files {
            if std::fs::read(dest.join(rel)).ok().as_deref() != Some(bytes.as_slice()) {
                drifted.push(rel.clone());
            }
        }
        if dest.is_dir() {
            for entry in walkdir::WalkDir::new(dest) {
                let entry = entry?;
                let rel = entry.path().strip_prefix(dest).expect("below dest");
                if entry.file_type().is_file() && !self.files.contains_key(rel) {
                    drifted.push(rel.to_path_buf());
                }
            }
        }
        Ok(drifted)
    }
}

/// The whole libdatachannel tree (with deps/) with every component's policy patches applied at
/// that component's place in it. This is what the host lab builds.
pub fn stage_stack(sources: &Sources, policy: &Policy) -> Result<Tree> {
    let mut tree = Tree::read(&sources.libdatachannel)?;
    for (component, spec) in &policy.components {
        let prefix = match component.as_str() {
            "libdatachannel" => PathBuf::new(),
            other => match dep_dir(other) {
                Some(dir) => Path::new("deps").join(dir),
                None => continue,
            },
        };
        for patch in &spec.patches {
            let text = read_patch(patch)?;
            tree.apply_patch(patch, &text, &prefix)?;
        }
        for (name, text) in port_patches(component)? {
            tree.apply_patch(&name, &text, &prefix)?;
        }
    }
    Ok(tree)
}

/// One component's upstream sources with its patches applied (what `configure` lays out).
/// libdatachannel's own tree excludes `deps/`, which become components of their own.
pub fn stage_component(sources: &Sources, policy: &Policy, component: &str) -> Result<Option<Tree>> {
    let Some(root) = sources.component_root(component) else { return Ok(None) };
    let mut tree = Tree::read(&root)?;
    if component == "libdatachannel" {
        tree.files.retain(|rel, _| !rel.starts_with("deps"));
    }
    for patch in &policy.component(component).patches {
        let text = read_patch(patch)?;
        tree.apply_patch(patch, &text, Path::new(""))?;
    }
    for (name, text) in port_patches(component)? {
        tree.apply_patch(&name, &text, Path::new(""))?;
    }
    Ok(Some(tree))
}

/// ESP-IDF port patches (`patches/esp-idf/<component>/*.patch`, in name order): what every
/// policy needs to build against ESP-IDF at all. They are mechanism, like templates/, so no
/// policy lists them, and both the component tree and the lab's host tree get them, after the
/// policy's own patches: the lab compiles what idf.py compiles. A change that only makes sense
/// on a chip (the hardware RNG) is guarded by `ESP_PLATFORM`, which the host replica lacks; one
/// that follows ESP-IDF's mbedTLS configuration (MBEDTLS_DEPRECATED_REMOVED) applies on both.
pub fn port_patches(component: &str) -> Result<Vec<(String, String)>> {
    let dir = project_root().join("patches/esp-idf").join(component);
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut names: Vec<_> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().to_string()))
        .collect::<std::io::Result<_>>()?;
    names.retain(|n| n.ends_with(".patch"));
    names.sort();
    for name in names {
        let rel = format!("esp-idf/{component}/{name}");
        out.push((rel.clone(), read_patch(&rel)?));
    }
    Ok(out)
}

pub fn read_patch(name: &str) -> Result<String> {
    let path = project_root().join("patches").join(name);
    std::fs::read_to_string(&path).map_err(|e| exit::bad_input(format!("cannot read patch {}: {e}", path.display())))
}

/// Splits a multi-file unified diff into (path, single-file diff) pairs. Paths drop git's `a/` `b/`.
fn split_patch(text: &str) -> Vec<(PathBuf, String)> {
    let mut pieces: Vec<(PathBuf, String)> = Vec::new();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].starts_with("--- ") && i + 1 < lines.len() && lines[i + 1].starts_with("+++ ") {
            let target = lines[i + 1][4..].trim_end().split('\t').next().unwrap_or("").trim();
            let path = target.strip_prefix("b/").unwrap_or(target);
            let mut piece = String::new();
            piece.push_str(lines[i]);
            piece.push_str(lines[i + 1]);
            i += 2;
            while i < lines.len()
                && !lines[i].starts_with("diff ")
                && !(lines[i].starts_with("--- ") && lines.get(i + 1).is_some_and(|l| l.starts_with("+++ ")))
            {
                piece.push_str(lines[i]);
                i += 1;
            }
            pieces.push((PathBuf::from(path), piece));
        } else {
            i += 1;
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> Tree {
        Tree {
            files: files.iter().map(|(p, c)| (PathBuf::from(p), c.as_bytes().to_vec())).collect(),
            ..Default::default()
        }
    }

    const PATCH: &str = "diff --git a/src/a.h b/src/a.h\n--- a/src/a.h\n+++ b/src/a.h\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\ndiff --git a/b.c b/b.c\n--- a/b.c\n+++ b/b.c\n@@ -1,1 +1,2 @@\n x\n+y\n";

    #[test]
    fn multi_file_patch_applies_below_prefix() {
        let mut t = tree(&[("deps/u/src/a.h", "one\ntwo\nthree\n"), ("deps/u/b.c", "x\n")]);
        t.apply_patch("p.patch", PATCH, Path::new("deps/u")).unwrap();
        assert_eq!(t.files[Path::new("deps/u/src/a.h")], b"one\nTWO\nthree\n");
        assert_eq!(t.files[Path::new("deps/u/b.c")], b"x\ny\n");
    }

    #[test]
    fn patch_that_does_not_apply_names_patch_and_file() {
        let mut t = tree(&[("src/a.h", "one\nzwei\nthree\n"), ("b.c", "x\n")]);
        let err = t.apply_patch("knobs.patch", PATCH, Path::new("")).unwrap_err().to_string();
        assert!(err.contains("patch `knobs.patch` does not apply to `src/a.h`"), "{err}");
        let mut t = tree(&[("b.c", "x\n")]);
        let err = t.apply_patch("knobs.patch", PATCH, Path::new("")).unwrap_err().to_string();
        assert!(err.contains("no file `src/a.h`"), "{err}");
    }

    #[test]
    fn write_is_idempotent_and_removes_stale_files() {
        let dir = tempfile::tempdir().unwrap();
        let t = tree(&[("a/x.c", "1"), ("y.h", "2")]);
        assert_eq!(t.write(dir.path()).unwrap(), 2);
        assert_eq!(t.write(dir.path()).unwrap(), 0);
        assert!(t.drift(dir.path()).unwrap().is_empty());
        std::fs::write(dir.path().join("stale.c"), "old").unwrap();
        std::fs::write(dir.path().join("y.h"), "changed").unwrap();
        let drift = t.drift(dir.path()).unwrap();
        assert_eq!(drift, vec![PathBuf::from("y.h"), PathBuf::from("stale.c")]);
        assert_eq!(t.write(dir.path()).unwrap(), 2);
        assert!(!dir.path().join("stale.c").exists());
    }
}
