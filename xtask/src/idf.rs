//! `cargo xtask build`: the real ESP-IDF build of an example, with the component tree and
//! sdkconfig.defaults the policy gives. ESP-IDF is found, never installed: without it the
//! command says how to get it and exits 2.

use crate::exit::{self, Outcome};
use crate::fsutil::{project_root, write_atomic};
use crate::layout;
use crate::policy::Policy;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const TARGETS: &[&str] = &["esp32", "esp32s3", "esp32p4", "esp32c6", "linux"];
/// Targets ESP-IDF 5.5 marks as preview (tools/idf_py_actions/constants.py PREVIEW_TARGETS).
const PREVIEW_TARGETS: &[&str] = &["linux"];
pub const EXAMPLES: &[&str] = &["datachannel_echo", "h264_sender", "whep_camera"];

/// Build an example application with ESP-IDF's idf.py for a chip.
///
/// Finds ESP-IDF (--idf, else $IDF_PATH, else idf.py on PATH), checks it is 5.x, runs
/// `cargo xtask configure` when the component tree is missing or differs from the policy, then
/// runs idf.py with the project's sdkconfig.defaults followed by the example's own. Each
/// example, target and policy builds in its own directory, build/<example>-<target>-<policy>,
/// and `set-target` runs only when that directory is new or was configured for another chip.
/// When sdkconfig.defaults changed since a directory was configured (a policy edit), its
/// sdkconfig is kept beside it as <dir>.sdkconfig-before-policy-change and set-target makes a
/// new one, so the policy reaches the build. Every command is echoed before it runs.
///
/// The `linux` target (ESP-IDF's host build, a preview target) runs the examples as host
/// programs with stdin/stdout as the console: that is what the ESP-IDF end-to-end test drives.
///
/// Examples:
///   cargo xtask build --target esp32s3
///   cargo xtask build --target esp32p4 --example h264_sender -- flash monitor
///   cargo xtask build --target linux --policy stock --idf ~/esp/esp-idf
///
/// With --matrix, every example under every shipped policy (lean, stock) for --target, each
/// policy in its own copy of the examples under $ESP_DC_CACHE/idf-<target>/<policy>/ (so the
/// project's component tree is left as it is), idf.py's output in lab-out/idf-matrix/, and one
/// line per build with its time and binary size:
///   cargo xtask build --target esp32p4 --matrix
///
/// A chip build names its compiler. The esp32p4 substitute toolchain beside the clone
/// (../shared/riscv32-esp-elf, put on PATH by scripts/setup.sh when no riscv32-esp-elf-gcc is
/// there) proves compiling, linking and placement; what it builds is never for flashing.
///
/// Exit codes: 0 built, 1 idf.py failed (its output is above),
/// 2 ESP-IDF or the chip's toolchain missing (the message says how to install it), ESP-IDF not
/// 5.x, or a bad policy.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct BuildArgs {
    /// Chip to build for.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub target: String,
    /// Example under examples/.
    #[arg(long, default_value = "datachannel_echo", value_parser = clap::builder::PossibleValuesParser::new(EXAMPLES))]
    pub example: String,
    /// ESP-IDF directory (default: $IDF_PATH, else the one whose tools/idf.py is on PATH).
    #[arg(long)]
    pub idf: Option<PathBuf>,
    /// Policy the component tree must follow.
    #[arg(long, default_value = "lean")]
    pub policy: String,
    /// Every example under lean and stock, in staged copies, with a line of times per build.
    #[arg(long, conflicts_with_all = ["example", "policy", "idf_args"])]
    pub matrix: bool,
    /// Extra idf.py arguments, after `--` (e.g. `-- flash monitor`).
    #[arg(last = true)]
    pub idf_args: Vec<String>,
}

/// An ESP-IDF checkout that can build: where it is and its version.
#[derive(Debug, Clone, PartialEq)]
pub struct Idf {
    pub path: PathBuf,
    pub idf_py: PathBuf,
    pub version: (u32, u32),
}

const INSTALL_HINT: &str = "\
  ESP-IDF 5.x is needed (5.5 is what this project is measured with). Install it once:
    git clone -b v5.5 --recursive https://github.com/espressif/esp-idf.git ~/esp/esp-idf
    ~/esp/esp-idf/install.sh esp32s3,esp32p4
  then, in each shell:  . ~/esp/esp-idf/export.sh
  or point this command at it: --idf ~/esp/esp-idf
  (https://docs.espressif.com/projects/esp-idf/en/v5.5/esp32s3/get-started/)";

/// The ESP-IDF tree tests build against: `IDF_PATH` when set, else the v5.5.1 tree trimmed for the
/// linux target that CI keeps beside every clone (`../shared/esp-idf-v5.5.1/esp-idf`). None when
/// neither exists; tests that need it then report themselves skipped by name.
#[cfg(test)]
pub fn tree_for_tests() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("IDF_PATH").filter(|p| !p.is_empty()).map(PathBuf::from),
        project_root().parent().map(|p| p.join("shared/esp-idf-v5.5.1/esp-idf")),
    ];
    candidates.into_iter().flatten().find(|p| p.join("tools/idf.py").is_file())
}

/// A test that needs an ESP-IDF tree and has none says so on the terminal (libtest captures only
/// the print macros, so a `println!` would vanish with a pass) and then returns.
#[cfg(test)]
pub fn say_skipped(test: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {test}: no ESP-IDF tree (set IDF_PATH, or keep ../shared/esp-idf-v5.5.1/esp-idf beside the clone)"
    );
}

/// Tests that measure memory or time (the lab's smoke run) and the ESP-IDF end-to-end test,
/// whose builds load both cores, take turns: a measured mark moves with machine load.
#[cfg(test)]
pub static HEAVY_TEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Finds ESP-IDF from `--idf`, `IDF_PATH` or `idf.py` on `PATH`, in that order.
pub fn locate(explicit: Option<&Path>, idf_path_env: Option<&str>, path_env: Option<&str>) -> Result<Idf> {
    let (root, from) = if let Some(p) = explicit {
        (p.to_path_buf(), "--idf")
    } else if let Some(p) = idf_path_env.filter(|p| !p.is_empty()) {
        (PathBuf::from(p), "IDF_PATH")
    } else if let Some(tools) = path_env.and_then(|p| std::env::split_paths(p).find(|d| d.join("idf.py").is_file())) {
        (tools.parent().map(Path::to_path_buf).unwrap_or(tools), "idf.py on PATH")
    } else {
        return Err(exit::bad_input(format!(
            "ESP-IDF not found: no --idf, IDF_PATH is not set and idf.py is not on PATH.\n{INSTALL_HINT}"
        )));
    };
    let idf_py = root.join("tools/idf.py");
    if !idf_py.is_file() {
        return Err(exit::bad_input(format!(
            "{} (from {from}) is not an ESP-IDF checkout: no tools/idf.py.\n{INSTALL_HINT}",
            root.display()
        )));
    }
    let version = read_version(&root)?;
    if version.0 != 5 {
        return Err(exit::bad_input(format!(
            "{} is ESP-IDF {}.{}; this project needs 5.x (its mbedTLS 3.x and heap_caps API).\n{INSTALL_HINT}",
            root.display(),
            version.0,
            version.1
        )));
    }
    Ok(Idf { path: root, idf_py, version })
}

/// How a chip build will be compiled: with Espressif's toolchain, or with the substitute for it
/// (`../shared/riscv32-esp-elf`: Debian's GCC 12 and Espressif's newlib, which `scripts/setup.sh`
/// puts on PATH only when no `riscv32-esp-elf-gcc` is there).
#[derive(Debug, PartialEq)]
pub enum Toolchain {
    /// The linux target: the host's gcc.
    Host,
    Espressif(PathBuf),
    /// Good for compiling, linking and reading the map; never for flashing.
    Substitute(PathBuf),
}

/// Finds the C compiler ESP-IDF's toolchain file names for `target`
/// (tools/cmake/toolchain-<target>.cmake, `set(CMAKE_C_COMPILER …)`) on `path_env`. None found is
/// exit 2 with how to install ESP-IDF's tools; a tree without the chip's folders is exit 2 too.
pub fn toolchain_for(idf: &Idf, target: &str, path_env: Option<&str>) -> Result<Toolchain> {
    if target == "linux" {
        return Ok(Toolchain::Host);
    }
    if !idf.path.join("components/soc").join(target).is_dir() {
        return Err(exit::bad_input(format!(
            "{}: this ESP-IDF tree has no {target} support (no components/soc/{target}: a tree trimmed to other chips). Use a full ESP-IDF 5.5 checkout for {target}.\n{INSTALL_HINT}",
            idf.path.display()
        )));
    }
    let file = idf.path.join(format!("tools/cmake/toolchain-{target}.cmake"));
    let text = std::fs::read_to_string(&file)
        .map_err(|e| exit::bad_input(format!("{}: cannot read: {e}\n{INSTALL_HINT}", file.display())))?;
    let compiler = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("set(CMAKE_C_COMPILER ")?.strip_suffix(')').map(str::trim))
        .ok_or_else(|| exit::bad_input(format!("{}: no `set(CMAKE_C_COMPILER …)`", file.display())))?;
    let found = path_env
        .and_then(|p| std::env::split_paths(p).map(|d| d.join(compiler)).find(|c| c.is_file()))
        .ok_or_else(|| {
            exit::bad_input(format!(
                "{compiler} is not on PATH: ESP-IDF's {target} toolchain is not installed or not exported.\n  Install it once:  ~/esp/esp-idf/install.sh {target}\n  then, in each shell:  . ~/esp/esp-idf/export.sh\n(esp32p4 only, for compiling and sizing, never flashing: `source scripts/setup.sh` puts the substitute toolchain beside the clone, ../shared/riscv32-esp-elf, on PATH when there is one)"
            ))
        })?;
    // The substitute's tools are links to one script, xc-wrap.
    let resolved = std::fs::canonicalize(&found).unwrap_or_else(|_| found.clone());
    Ok(if resolved.file_name().is_some_and(|n| n == "xc-wrap") {
        Toolchain::Substitute(found)
    } else {
        Toolchain::Espressif(found)
    })
}

/// The one line a chip build says about its compiler.
pub fn toolchain_line(toolchain: &Toolchain) -> Option<String> {
    match toolchain {
        Toolchain::Host => None,
        Toolchain::Espressif(path) => Some(format!("build: toolchain {}", path.display())),
        Toolchain::Substitute(path) => Some(format!(
            "build: toolchain {} is the SUBSTITUTE for Espressif's (Debian GCC 12 + Espressif newlib, ../shared/riscv32-esp-elf): this build proves compiling, linking and placement only; the firmware is NOT for flashing",
            path.display()
        )),
    }
}

/// The version ESP-IDF declares in components/esp_common/include/esp_idf_version.h.
fn read_version(root: &Path) -> Result<(u32, u32)> {
    let header = root.join("components/esp_common/include/esp_idf_version.h");
    let text = std::fs::read_to_string(&header).map_err(|e| {
        exit::bad_input(format!("{}: cannot read the ESP-IDF version: {e}\n{INSTALL_HINT}", header.display()))
    })?;
    let number = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("#define ")
                    .and_then(|r| r.strip_prefix(name))
                    .and_then(|v| v.trim().parse::<u32>().ok())
            })
            .ok_or_else(|| exit::bad_input(format!("{}: no `#define {name}`", header.display())))
    };
    Ok((number("ESP_IDF_VERSION_MAJOR")?, number("ESP_IDF_VERSION_MINOR")?))
}

/// The idf.py command lines for one build, as argument lists (idf.py itself first).
/// `set_target` is false when the build directory is already configured for `target`.
pub fn build_commands(
    idf: &Idf,
    root: &Path,
    example: &str,
    target: &str,
    build_dir: &Path,
    set_target: bool,
    extra: &[String],
) -> Vec<Vec<String>> {
    let defaults = defaults_files(root, example).iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(";");
    let common = vec![
        idf.idf_py.display().to_string(),
        "-C".into(),
        root.join("examples").join(example).display().to_string(),
        "-B".into(),
        build_dir.display().to_string(),
        "-D".into(),
        format!("SDKCONFIG={}", build_dir.join("sdkconfig").display()),
        "-D".into(),
        format!("SDKCONFIG_DEFAULTS={defaults}"),
    ];
    let mut commands = Vec::new();
    if set_target {
        let mut c = common.clone();
        // ESP-IDF 5.5 lists `linux` among its preview targets: set-target refuses it without --preview.
        if PREVIEW_TARGETS.contains(&target) {
            c.insert(1, "--preview".into());
        }
        c.extend(["set-target".to_string(), target.to_string()]);
        commands.push(c);
    }
    let mut c = common;
    c.push("build".into());
    c.extend(extra.iter().cloned());
    commands.push(c);
    commands
}

/// The sdkconfig.defaults files of a build, in the order idf.py reads them (later ones win).
fn defaults_files(root: &Path, example: &str) -> [PathBuf; 2] {
    [root.join("sdkconfig.defaults"), root.join("examples").join(example).join("sdkconfig.defaults")]
}

/// Each example, chip and policy builds in its own directory: SDKCONFIG_DEFAULTS only fills the
/// options a sdkconfig lacks, so a directory shared by two policies would keep the first one's.
pub fn build_dir(root: &Path, example: &str, target: &str, policy: &str) -> PathBuf {
    root.join("build").join(format!("{example}-{target}-{policy}"))
}

/// Whether the build directory's sdkconfig was made for `target` (then set-target is skipped).
fn configured_for(build_dir: &Path, target: &str) -> bool {
    std::fs::read_to_string(build_dir.join("sdkconfig"))
        .is_ok_and(|t| t.lines().any(|l| l == format!("CONFIG_IDF_TARGET=\"{target}\"")))
}

/// What a build directory's sdkconfig was last made from (the defaults files' text), so that a
/// changed policy block reaches an existing build.
const DEFAULTS_SEEN: &str = "esp_dc_sdkconfig.defaults";

/// Where a sdkconfig made from older defaults is kept, beside its build directory (set-target
/// empties the directory); menuconfig changes made in it survive there.
pub fn stale_sdkconfig(build_dir: &Path) -> PathBuf {
    let name = build_dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    build_dir.with_file_name(format!("{name}.sdkconfig-before-policy-change"))
}

/// The defaults files' text as idf.py reads them for `example`.
fn defaults_seen(root: &Path, example: &str) -> Result<String> {
    let mut seen = String::new();
    for file in defaults_files(root, example) {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| exit::bad_input(format!("{}: cannot read: {e}", file.display())))?;
        seen.push_str(&format!("# {}\n{text}\n", file.display()));
    }
    Ok(seen)
}

/// Makes sure the build's sdkconfig follows the defaults as they are now. kconfgen only applies
/// a default to an option the sdkconfig lacks, so when the policy block changed (a knob, a record
/// length) the old sdkconfig would silently win: it is moved aside, and set-target makes a new
/// one from the defaults. Returns true when it was moved.
pub fn refresh_sdkconfig(build_dir: &Path, seen: &str) -> Result<bool> {
    let sdkconfig = build_dir.join("sdkconfig");
    let moved =
        sdkconfig.exists() && std::fs::read_to_string(build_dir.join(DEFAULTS_SEEN)).ok().as_deref() != Some(seen);
    if moved {
        let kept = stale_sdkconfig(build_dir);
        std::fs::rename(&sdkconfig, &kept)?;
        eprintln!("build: sdkconfig.defaults changed since {} was configured; its sdkconfig is kept as {} and a new one is made from the defaults", build_dir.display(), kept.display());
    }
    Ok(moved)
}

/// Configures the component tree when it is missing or differs from the policy. The caller
/// holds the project lock (`fsutil::lock_project`).
pub fn ensure_configured(root: &Path, policy_path: &Path) -> Result<()> {
    let plan = layout::plan(root, policy_path)?;
    if layout::drift(&plan, root)?.is_empty() {
        return Ok(());
    }
    eprintln!("build: the component tree differs from {}; running configure", policy_path.display());
    let code = layout::configure_locked(root, policy_path, false, false)?;
    if code != ExitCode::SUCCESS {
        return Err(exit::bad_input("configure did not finish; see above"));
    }
    Ok(())
}

/// ESP-IDF's Python environment, when the shell names one (export.sh and scripts/setup.sh do):
/// it runs idf.py even if its bin/ is not first on PATH. Every idf.py call uses it, since idf.py
/// refuses a build directory configured with another Python.
pub fn idf_python() -> Option<PathBuf> {
    std::env::var_os("IDF_PYTHON_ENV_PATH").map(|v| PathBuf::from(v).join("bin/python")).filter(|p| p.is_file())
}

/// One idf.py build of `example` in `root` (a project laid out like this one: examples/,
/// components/, sdkconfig.defaults) into `build_dir`. Every command is echoed before it runs;
/// with `log`, idf.py's output goes to that file instead of the terminal and a failure quotes
/// its end (the end-to-end test keeps CI's log readable that way).
pub fn build_in(
    idf: &Idf,
    root: &Path,
    example: &str,
    target: &str,
    build_dir: &Path,
    extra: &[String],
    log: Option<&Path>,
) -> Result<()> {
    let seen = defaults_seen(root, example)?;
    refresh_sdkconfig(build_dir, &seen)?;
    let set_target = !configured_for(build_dir, target);
    let python = idf_python();
    let mut output = Vec::new();
    for mut command in build_commands(idf, root, example, target, build_dir, set_target, extra) {
        if let Some(python) = &python {
            command.insert(0, python.display().to_string());
        }
        eprintln!("$ {}", command.join(" "));
        let mut process = std::process::Command::new(&command[0]);
        process.args(&command[1..]).env("IDF_PATH", &idf.path);
        let hint = format!(
            "if it could not start, run `. {}/export.sh` in this shell first so idf.py finds its Python environment",
            idf.path.display()
        );
        let Some(log) = log else {
            let status =
                process.status().map_err(|e| exit::verdict(format!("idf.py did not start: {e}\n  hint: {hint}")))?;
            if !status.success() {
                return Err(exit::verdict(format!("idf.py failed ({status}); its output is above\n  hint: {hint}")));
            }
            continue;
        };
        let out = process.output().map_err(|e| exit::verdict(format!("idf.py did not start: {e}\n  hint: {hint}")))?;
        output.extend_from_slice(format!("$ {}\n", command.join(" ")).as_bytes());
        output.extend_from_slice(&out.stdout);
        output.extend_from_slice(&out.stderr);
        std::fs::write(log, &output)?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&output);
            let tail: Vec<&str> = text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
            return Err(exit::verdict(format!(
                "idf.py failed ({}); the end of {}:\n{}",
                out.status,
                log.display(),
                tail.join("\n")
            )));
        }
    }
    write_atomic(&build_dir.join(DEFAULTS_SEEN), seen.as_bytes())?;
    Ok(())
}

pub fn build(args: BuildArgs) -> Outcome {
    let idf =
        locate(args.idf.as_deref(), std::env::var("IDF_PATH").ok().as_deref(), std::env::var("PATH").ok().as_deref())?;
    eprintln!("build: ESP-IDF {}.{} at {}", idf.version.0, idf.version.1, idf.path.display());
    let toolchain = toolchain_for(&idf, &args.target, std::env::var("PATH").ok().as_deref())?;
    if let Some(line) = toolchain_line(&toolchain) {
        eprintln!("{line}");
    }
    if args.matrix {
        return build_matrix(&idf, &args.target);
    }
    let root = project_root();
    let policy_path = Policy::path_for(&args.policy);
    let policy = Policy::load(&policy_path)?;
    // Held through the build: a configure run meanwhile would swap sources under the compiler,
    // and two builds of one directory would interleave.
    let _lock = crate::fsutil::lock_project(&root, "build")?;
    ensure_configured(&root, &policy_path)?;
    let dir = build_dir(&root, &args.example, &args.target, &policy.policy.name);
    build_in(&idf, &root, &args.example, &args.target, &dir, &args.idf_args, None)?;
    eprintln!("build: {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// A copy of the project's examples under `root`; `configure_into` then adds the component tree
/// and sdkconfig.defaults, as for any application. Unchanged files are not touched, so builds
/// there stay incremental.
pub fn stage_examples(root: &Path) -> Result<()> {
    crate::upstream::Tree::read(&project_root().join("examples"))?.write(&root.join("examples"))?;
    Ok(())
}

/// Where chip builds of staged copies live: `$ESP_DC_CACHE/idf-<target>/<policy>/` (the
/// esp32p4 test and `build --matrix` share them, so one reuses the other's builds).
pub fn staged_root(target: &str, policy: &str) -> PathBuf {
    crate::replica::cache_root().join(format!("idf-{target}")).join(policy)
}

/// `build --matrix`: every example × shipped policy for `target`, one line each.
fn build_matrix(idf: &Idf, target: &str) -> Outcome {
    let logs = project_root().join("lab-out/idf-matrix");
    std::fs::create_dir_all(&logs)?;
    let mut failed = Vec::new();
    let started = std::time::Instant::now();
    for policy_name in ["lean", "stock"] {
        let root = staged_root(target, policy_name);
        stage_examples(&root)?;
        let code = layout::configure_with(&root, &Policy::path_for(policy_name), &layout::Options::default())?;
        if code != ExitCode::SUCCESS {
            return Err(exit::bad_input(format!("configure --into {} did not finish", root.display())));
        }
        for example in EXAMPLES {
            let dir = build_dir(&root, example, target, policy_name);
            let log = logs.join(format!("{example}-{target}-{policy_name}.log"));
            let one = std::time::Instant::now();
            let result = build_in(idf, &root, example, target, &dir, &[], Some(&log));
            let secs = one.elapsed().as_secs_f64();
            match result {
                Ok(()) => {
                    let bin = std::fs::metadata(dir.join(format!("{example}.bin"))).map(|m| m.len()).unwrap_or(0);
                    println!(
                        "build: {target} {policy_name:<5} {example:<16} ok     {secs:>5.0} s  {bin:>8} B  {}",
                        log.display()
                    );
                }
                Err(e) => {
                    println!("build: {target} {policy_name:<5} {example:<16} FAILED {secs:>5.0} s  {}", log.display());
                    failed.push(format!("{policy_name} {example}: {e:#}"));
                }
            }
        }
    }
    println!("build: {} builds in {:.0} s", 2 * EXAMPLES.len(), started.elapsed().as_secs_f64());
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(exit::verdict(format!("{} build(s) failed:\n{}", failed.len(), failed.join("\n"))))
    }
}

#[cfg(test)]
mod e2e;

#[cfg(test)]
mod p4;

#[cfg(test)]
mod whep_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_idf(major: u32, minor: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tools")).unwrap();
        std::fs::write(dir.path().join("tools/idf.py"), "#!/usr/bin/env python\n").unwrap();
        std::fs::create_dir_all(dir.path().join("components/esp_common/include")).unwrap();
        std::fs::write(
            dir.path().join("components/esp_common/include/esp_idf_version.h"),
            format!("#pragma once\n#define ESP_IDF_VERSION_MAJOR   {major}\n#define ESP_IDF_VERSION_MINOR   {minor}\n#define ESP_IDF_VERSION_PATCH   0\n"),
        )
        .unwrap();
        dir
    }

    fn message(err: anyhow::Error) -> (u8, String) {
        let f = err.downcast_ref::<exit::Failure>().expect("a Failure with an exit code");
        (f.code, f.message.clone())
    }

    #[test]
    fn missing_esp_idf_exits_2_and_says_how_to_get_it() {
        let empty = tempfile::tempdir().unwrap();
        let (code, msg) = message(locate(None, None, Some(&empty.path().display().to_string())).unwrap_err());
        assert_eq!(code, 2);
        assert!(
            msg.starts_with("ESP-IDF not found: no --idf, IDF_PATH is not set and idf.py is not on PATH."),
            "{msg}"
        );
        assert!(msg.contains("install.sh") && msg.contains("export.sh") && msg.contains("--idf"), "{msg}");
        let (code, msg) = message(locate(None, Some("/nonexistent/esp-idf"), None).unwrap_err());
        assert_eq!(code, 2);
        assert!(msg.contains("/nonexistent/esp-idf (from IDF_PATH) is not an ESP-IDF checkout"), "{msg}");
    }

    #[test]
    fn finds_esp_idf_by_flag_env_or_path_and_checks_the_version() {
        let idf = fake_idf(5, 5);
        let found = locate(Some(idf.path()), Some("/elsewhere"), None).unwrap();
        assert_eq!((found.path.as_path(), found.version), (idf.path(), (5, 5)));
        let found = locate(None, Some(&idf.path().display().to_string()), None).unwrap();
        assert_eq!(found.idf_py, idf.path().join("tools/idf.py"));
        let path = std::env::join_paths(["/usr/bin".into(), idf.path().join("tools")]).unwrap();
        let found = locate(None, None, Some(path.to_str().unwrap())).unwrap();
        assert_eq!(found.path, idf.path());
        let old = fake_idf(4, 4);
        let (code, msg) = message(locate(Some(old.path()), None, None).unwrap_err());
        assert_eq!(code, 2);
        assert!(msg.contains("is ESP-IDF 4.4; this project needs 5.x"), "{msg}");
    }

    /// A chip build finds its compiler from ESP-IDF's toolchain file, says when it is the
    /// substitute, and exits 2 with how to install ESP-IDF's tools when there is none (esp32s3).
    #[test]
    fn a_chip_build_names_its_toolchain_or_says_how_to_install_one() {
        let idf_dir = fake_idf(5, 5);
        let idf = locate(Some(idf_dir.path()), None, None).unwrap();
        for (target, compiler) in [("esp32s3", "xtensa-esp32s3-elf-gcc"), ("esp32p4", "riscv32-esp-elf-gcc")] {
            std::fs::create_dir_all(idf_dir.path().join("components/soc").join(target)).unwrap();
            std::fs::create_dir_all(idf_dir.path().join("tools/cmake")).unwrap();
            std::fs::write(
                idf_dir.path().join(format!("tools/cmake/toolchain-{target}.cmake")),
                format!("include($ENV{{IDF_PATH}}/tools/cmake/utilities.cmake)\nset(CMAKE_C_COMPILER {compiler})\n"),
            )
            .unwrap();
        }
        assert_eq!(toolchain_for(&idf, "linux", None).unwrap(), Toolchain::Host);
        let empty = tempfile::tempdir().unwrap();
        let (code, msg) =
            message(toolchain_for(&idf, "esp32s3", Some(&empty.path().display().to_string())).unwrap_err());
        assert_eq!(code, 2);
        assert!(
            msg.starts_with("xtensa-esp32s3-elf-gcc is not on PATH") && msg.contains("install.sh esp32s3"),
            "{msg}"
        );

        let bin = tempfile::tempdir().unwrap();
        let script = bin.path().join("xc-wrap");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink(&script, bin.path().join("riscv32-esp-elf-gcc")).unwrap();
        let path = bin.path().display().to_string();
        let found = toolchain_for(&idf, "esp32p4", Some(&path)).unwrap();
        assert_eq!(found, Toolchain::Substitute(bin.path().join("riscv32-esp-elf-gcc")));
        assert!(toolchain_line(&found).unwrap().contains("NOT for flashing"));
        std::fs::remove_file(bin.path().join("riscv32-esp-elf-gcc")).unwrap();
        std::fs::write(bin.path().join("riscv32-esp-elf-gcc"), "#!/bin/sh\n").unwrap();
        let real = toolchain_for(&idf, "esp32p4", Some(&path)).unwrap();
        assert_eq!(real, Toolchain::Espressif(bin.path().join("riscv32-esp-elf-gcc")));
        assert!(!toolchain_line(&real).unwrap().contains("SUBSTITUTE"));

        let (code, msg) = message(toolchain_for(&idf, "esp32c6", Some(&path)).unwrap_err());
        assert_eq!(code, 2);
        assert!(msg.contains("has no esp32c6 support"), "{msg}");
    }

    #[test]
    fn build_composes_set_target_then_build_for_each_target() {
        let idf = Idf { path: "/idf".into(), idf_py: "/idf/tools/idf.py".into(), version: (5, 5) };
        let root = Path::new("/p");
        for target in TARGETS {
            let dir = build_dir(root, "datachannel_echo", target, "lean");
            let lines: Vec<String> = build_commands(&idf, root, "datachannel_echo", target, &dir, true, &[])
                .iter()
                .map(|c| c.join(" "))
                .collect();
            let args = format!(
                "-C /p/examples/datachannel_echo -B /p/build/datachannel_echo-{target}-lean -D SDKCONFIG=/p/build/datachannel_echo-{target}-lean/sdkconfig -D SDKCONFIG_DEFAULTS=/p/sdkconfig.defaults;/p/examples/datachannel_echo/sdkconfig.defaults"
            );
            let preview = if *target == "linux" { " --preview" } else { "" };
            assert_eq!(
                lines,
                vec![
                    format!("/idf/tools/idf.py{preview} {args} set-target {target}"),
                    format!("/idf/tools/idf.py {args} build")
                ]
            );
        }
        let dir = build_dir(root, "h264_sender", "esp32p4", "lean");
        let again =
            build_commands(&idf, root, "h264_sender", "esp32p4", &dir, false, &["flash".into(), "monitor".into()]);
        assert_eq!(again.len(), 1, "an already configured build directory skips set-target");
        assert_eq!(again[0][again[0].len() - 3..], ["build", "flash", "monitor"]);
    }

    /// Switching policy must reach the build: each policy has its own build directory (so its own
    /// sdkconfig), and a directory whose defaults changed gets a new sdkconfig.
    #[test]
    fn stock_after_lean_builds_with_stock_values() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("examples/datachannel_echo")).unwrap();
        std::fs::write(r.join("examples/datachannel_echo/sdkconfig.defaults"), "CONFIG_FREERTOS_HZ=1000\n").unwrap();
        assert_ne!(
            build_dir(r, "datachannel_echo", "linux", "lean"),
            build_dir(r, "datachannel_echo", "linux", "stock")
        );

        let dir = build_dir(r, "datachannel_echo", "linux", "lean");
        std::fs::write(r.join("sdkconfig.defaults"), "CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN=1536\n").unwrap();
        let lean = defaults_seen(r, "datachannel_echo").unwrap();
        assert!(!refresh_sdkconfig(&dir, &lean).unwrap(), "a new directory has nothing to move");
        // idf.py made the sdkconfig from lean's defaults; build_in then notes what it was made from.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sdkconfig"), "CONFIG_IDF_TARGET=\"linux\"\nCONFIG_MBEDTLS_SSL_IN_CONTENT_LEN=1536\n")
            .unwrap();
        std::fs::write(dir.join(DEFAULTS_SEEN), &lean).unwrap();
        assert!(!refresh_sdkconfig(&dir, &lean).unwrap(), "unchanged defaults keep the sdkconfig");
        assert!(configured_for(&dir, "linux"));

        // The same directory built again from stock's defaults: lean's sdkconfig must not win.
        std::fs::write(r.join("sdkconfig.defaults"), "CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN=16384\n").unwrap();
        let stock = defaults_seen(r, "datachannel_echo").unwrap();
        assert!(refresh_sdkconfig(&dir, &stock).unwrap());
        assert!(!configured_for(&dir, "linux"), "set-target runs and makes a new sdkconfig from the defaults");
        let kept = std::fs::read_to_string(stale_sdkconfig(&dir)).unwrap();
        assert!(kept.contains("=1536"), "{kept}");
        assert_eq!(stale_sdkconfig(&dir).parent(), dir.parent(), "kept outside the directory set-target empties");
    }

    #[test]
    fn set_target_is_skipped_only_for_the_same_chip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!configured_for(dir.path(), "esp32s3"));
        std::fs::write(dir.path().join("sdkconfig"), "CONFIG_IDF_TARGET=\"esp32s3\"\n").unwrap();
        assert!(configured_for(dir.path(), "esp32s3"));
        assert!(!configured_for(dir.path(), "esp32p4"));
    }
}
