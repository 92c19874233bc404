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

/// The workspace root (where the top-level Cargo.toml lives), whatever the current directory.
pub fn project_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives one level below the root").to_path_buf()
}
