//! Atomic writes: a file is either its old content or its new content, never half.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Writes `contents` to `path` through a temporary file in the same directory and a rename.
/// Returns false (and touches nothing) when the file already holds exactly these bytes,
/// which is what makes `configure` idempotent.
///
/// The file keeps what the rename would otherwise lose: a symbolic link stays a link and the
/// file it names is replaced (a user may link sdkconfig.defaults to a shared one), and the
/// replaced file keeps its permission bits; a new file gets 0666 minus the umask, as if
/// created by `std::fs::write` (the temporary file alone would be 0600).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<bool> {
    if std::fs::read(path).map(|old| old == contents).unwrap_or(false) {
        return Ok(false);
    }
    let path = &follow_links(path)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let existing = std::fs::metadata(path).ok().map(|m| m.permissions());
    let mut builder = tempfile::Builder::new();
    if existing.is_none() {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp =
        builder.tempfile_in(dir).with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    if let Some(permissions) = existing {
        tmp.as_file()
            .set_permissions(permissions)
            .with_context(|| format!("keeping the mode of {}", path.display()))?;
    }
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(true)
}

/// A file just created (0666 minus the umask, as `std::fs::write` makes it) that came from a file
/// with execute bits (`mode`, e.g. an upstream script at 0755) gets execute bits where it has read
/// bits, as `cp` does under the same umask; without a mode nothing changes.
pub fn give_execute_bits(path: &Path, mode: Option<u32>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Some(mode) = mode.filter(|m| m & 0o111 != 0) else { return Ok(()) };
    let current = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    let wanted = current | ((current & 0o444) >> 2 & mode & 0o111);
    if wanted != current {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    Ok(())
}

/// The file a chain of symbolic links at `path` ends in (relative links resolved against the
/// link's directory); `path` itself when it is no link. The target need not exist yet.
pub fn follow_links(path: &Path) -> Result<std::path::PathBuf> {
    let mut current = path.to_path_buf();
    // 40: Linux's own limit (MAXSYMLINKS) before ELOOP.
    for _ in 0..40 {
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target =
                    std::fs::read_link(&current).with_context(|| format!("reading the link {}", current.display()))?;
                current = match current.parent() {
                    Some(parent) if target.is_relative() => parent.join(target),
                    _ => target,
                };
            }
            _ => return Ok(current),
        }
    }
    Err(crate::exit::bad_input(format!("{}: too many levels of symbolic links; point it at a file", path.display())))
}

/// Lines of a log or map as a terminal shows them: ended by `\n`, `\r\n` or a lone `\r` (a CR-only capture,
/// or a mixed one where a program wrote `\r` alone), so no line of ours hides inside another.
pub fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest.find(['\n', '\r']).unwrap_or(rest.len());
        let line = &rest[..end];
        let skip = if rest[end..].starts_with("\r\n") { 2 } else { usize::from(end < rest.len()) };
        rest = &rest[end + skip..];
        Some(line)
    })
}

/// Text from outside (a key of a policy, a value of a user's file, a line of a log) as an error
/// message may show it: control characters (a line break would print a second, forged `error:`
/// line; an escape sequence would reach the terminal) and the invisible Unicode marks that
/// reorder or hide text come out as Rust escapes (`\n`, `\u{1b}`), everything else unchanged.
pub fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let invisible = matches!(c as u32, 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x2069 | 0xfeff);
        if c.is_control() || invisible {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `YYYYMMDD-HHMMSS` in UTC for `secs` since 1970 (a backup's name). Civil-from-days after
/// Howard Hinnant's algorithm, so no date crate is needed for one file name.
pub fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rest / 3600, rest / 60 % 60, rest % 60)
}

/// FNV-1a, 64 bit, with a 0xff byte after each part (so part boundaries count): the project's
/// one content hash, for the configure stamp and every cache key. Unlike std's DefaultHasher it
/// gives the same value on every Rust release and machine, so a cache filled by one toolchain
/// or clone serves the next. Not cryptographic: it tells states apart, it does not defend.
pub fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
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
    let file = lock_file(&path, "work in a local clone", || {
        eprintln!(
            "{command}: another `cargo xtask` run is writing this tree (it holds {}); waiting for it to finish",
            path.display()
        )
    })?;
    Ok(ProjectLock { _file: file })
}

/// Opens `path` (creating it) and takes an exclusive flock(2) on it, calling `waiting` first when
/// another process or thread holds it. The kernel drops the lock when the holder dies, so a
/// killed run leaves no stale lock. `where_to` says what to do when the file system has no flock.
pub fn lock_file(path: &Path, where_to: &str, waiting: impl FnOnce()) -> Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            waiting();
            file.lock().with_context(|| format!("waiting for the lock {}", path.display()))?;
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(crate::exit::bad_input(format!(
                "{}: cannot lock ({e}); the file system must support flock(2): {where_to}",
                path.display()
            )))
        }
    }
    Ok(file)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// Issue 18: generated files and sdkconfig.defaults became 0600 after a write.
    #[test]
    fn a_rewritten_file_keeps_its_mode_and_a_new_one_follows_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        for wanted in [0o644, 0o755, 0o640] {
            let path = dir.path().join(format!("f{wanted:o}"));
            std::fs::write(&path, "old").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wanted)).unwrap();
            assert!(write_atomic(&path, b"new").unwrap());
            assert_eq!((std::fs::read_to_string(&path).unwrap().as_str(), mode(&path)), ("new", wanted));
        }
        // What std::fs::write gives a new file here is 0666 minus this process's umask.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        let fresh = dir.path().join("sub/fresh");
        assert!(write_atomic(&fresh, b"x").unwrap());
        assert_eq!(mode(&fresh), mode(&plain));
    }

    /// Issue 18: a symlinked sdkconfig.defaults was replaced by a regular file.
    #[test]
    fn a_symbolic_link_stays_and_the_file_it_names_is_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("shared")).unwrap();
        let real = dir.path().join("shared/defaults");
        std::fs::write(&real, "old").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o664)).unwrap();
        let hop = dir.path().join("hop");
        symlink("shared/defaults", &hop).unwrap(); // relative to the link's directory
        let link = dir.path().join("sdkconfig.defaults");
        symlink(&hop, &link).unwrap(); // a chain of two
        assert!(write_atomic(&link, b"new").unwrap());
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert!(std::fs::symlink_metadata(&hop).unwrap().file_type().is_symlink());
        assert_eq!((std::fs::read_to_string(&real).unwrap().as_str(), mode(&real)), ("new", 0o664));
        assert!(!write_atomic(&link, b"new").unwrap(), "same bytes: untouched");
        // A dangling link gets its target created; a loop is an error, not a hang.
        let dangling = dir.path().join("dangling");
        symlink("shared/later", &dangling).unwrap();
        assert!(write_atomic(&dangling, b"x").unwrap());
        assert_eq!(std::fs::read_to_string(dir.path().join("shared/later")).unwrap(), "x");
        symlink("loop-b", dir.path().join("loop-a")).unwrap();
        symlink("loop-a", dir.path().join("loop-b")).unwrap();
        assert!(write_atomic(&dir.path().join("loop-a"), b"x").unwrap_err().to_string().contains("too many levels"));
    }
}
