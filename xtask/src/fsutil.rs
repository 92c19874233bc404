//! Atomic writes: a file is either its old content or its new content, never half.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Writes `contents` to `path` through a temporary file in the same directory and a rename.
/// Returns false (and touches nothing) when the file already holds exactly these bytes,
/// which is what makes `configure` idempotent.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<bool> {
    if std::fs::read(path).map(|old| old == contents).unwrap_or(false) {
        return Ok(false);
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(true)
}

/// The lock file of a project tree, under components/ (git-ignored).
pub const LOCK_FILE: &str = "components/.esp_dc.lock";

/// Held while a command writes the project tree (components/, sdkconfig.defaults, the stamp,
/// build directories); released when dropped, or by the kernel when the process dies, so a
/// killed run leaves no stale lock behind.
pub struct ProjectLock {
    _file: std::fs::File,
}

/// Takes the project's lock, waiting (with a message) while another run holds it: two
/// `configure` runs at once swapped each other's components and left a tree matching neither.
pub fn lock_project(root: &Path, command: &str) -> Result<ProjectLock> {
    let path = root.join(LOCK_FILE);
    let dir = path.parent().expect("the lock file is below components/");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            eprintln!("{command}: another `cargo xtask` run is writing this tree (it holds {}); waiting for it to finish", path.display());
            file.lock().with_context(|| format!("waiting for the lock {}", path.display()))?;
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(crate::exit::bad_input(format!(
                "{}: cannot lock ({e}); the file system must support flock(2): work in a local clone",
                path.display()
            )))
        }
    }
    Ok(ProjectLock { _file: file })
}

/// The workspace root (where the top-level Cargo.toml lives), whatever the current directory.
///
/// `cargo run` and `cargo test` set CARGO_MANIFEST_DIR at run time; that value wins over the
/// compile-time one because the binary is cached under $ESP_DC_CACHE and may have been built
/// for a clone at another path.
pub fn project_root() -> std::path::PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    manifest_dir.parent().expect("xtask lives one level below the root").to_path_buf()
}
