//! The host replica: the same upstream sources, patches, knobs and force-included redirect
//! header as the ESP-IDF tree, built 32-bit (-m32) so pointers and struct sizes match the MCU.
//! mbedTLS (the release ESP-IDF 5.5 ships) is configured as ESP-IDF configures it for DTLS
//! (DTLS-SRTP on, the policy's record buffer lengths); every dependency is its own shared library (BUILD_SHARED_DEPS_LIBS).
//! Builds are cached under ~/.cache/esp-dc/host/<policy>-<hash>/ and reused while nothing changed.
//!
//! build (this file: cmake and the compilers, `tools`; what they get, `flags`) -> run (the
//! device and remote driver processes) -> trace (what the recorder wrote). `lab`, `bench`,
//! `interop`, `size-check --host` and `audit` use it; it knows nothing of them.

pub mod cache;
pub mod run;
pub mod tools;
pub mod trace;

#[cfg(test)]
mod recorder_tests;
#[cfg(test)]
mod tests;

pub use cache::hash_of;
pub use tools::{Progress, VERBOSE};

use crate::fsutil::{project_root, write_atomic};
use crate::policy::Policy;
use crate::render::host::{component_flags, knob_definitions, mbedtls_config_lines, project_include_cmake};
use crate::render::{runtime_knobs_header, RUNTIME_KNOBS_HEADER};
use crate::upstream::{self, Tree};
use anyhow::{Context, Result};
use cache::INCLUDE_DIR;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tools::{cmake_build, compile_artifact, BuildLog, ARTIFACT_FLAGS, CC, CMAKE_BASE_FLAGS, CXX};
use xshell::{cmd, Shell};

/// What the lab runs: the built stack, our host port library, the recorder and the driver.
#[derive(Debug, Clone)]
pub struct HostBuild {
    /// Directories holding the stack's shared libraries (for LD_LIBRARY_PATH).
    pub lib_dirs: Vec<PathBuf>,
    pub driver: PathBuf,
    pub recorder: PathBuf,
    /// Component -> its built shared library.
    pub libraries: BTreeMap<String, PathBuf>,
    /// How each of the stack's sources was compiled (CMAKE_EXPORT_COMPILE_COMMANDS), with the
    /// staged sources under `stack_src`: what `audit` reads its definitions from.
    pub compile_commands: PathBuf,
    pub stack_src: PathBuf,
}

pub fn cache_root() -> PathBuf {
    std::env::var_os("ESP_DC_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into())).join(".cache/esp-dc"))
}

/// Builds (or reuses) the replica for `policy`: the build's output goes to
/// $ESP_DC_CACHE/host/logs/<policy>.log and the terminal gets one line per step with its time
/// (`--verbose`: everything on stderr; stdout is for reports).
pub fn build(policy: &Policy) -> Result<HostBuild> {
    let mut log = BuildLog::start(&policy.policy.name)?;
    let build = build_logged(policy, &mut log)?;
    log.finish()?;
    Ok(build)
}

/// Component -> built 32-bit shared library, for `size-check --host` and `audit`.
pub fn component_libraries(policy: &Policy) -> Result<BTreeMap<String, PathBuf>> {
    Ok(build(policy)?.libraries)
}

fn build_logged(policy: &Policy, log: &mut BuildLog) -> Result<HostBuild> {
    tools::check_multilib()?;
    let sources = upstream::locate()?;
    let root = project_root();
    let recorder_dir = root.join("lab/recorder");
    let stack = upstream::stage_stack(&sources, policy)?;
    let key = cache::cache_key(&root, policy, &stack)?;
    let dir = cache_root().join("host").join(format!("{}-{key}", policy.policy.name));
    std::fs::create_dir_all(&dir)?;
    // One writer per cache directory: tests build in-process and in parallel (lab, size,
    // interop), and separate processes (two test binaries, a second clone) share the cache.
    let _only_writer = tools::lock_artifact(&dir, log)?;

    let port_host = build_port_host(&dir, &recorder_dir)?;
    let recorder = build_recorder(&dir, &recorder_dir)?;
    let mbed_prefix = dir.join("mbedtls-install");
    if !dir.join("mbedtls.done").exists() {
        build_mbedtls(policy, &sources.mbedtls, &dir, log)?;
        write_atomic(&dir.join("mbedtls.done"), b"")?;
    }
    if !dir.join("stack.done").exists() {
        build_stack(policy, &root, stack, &dir, &port_host, log)?;
        write_atomic(&dir.join("stack.done"), b"")?;
    }
    let mut libraries = stack_libraries(&dir.join("stack-build"))?;
    if let Some(lib) = find_library(&mbed_prefix.join("lib"), "libmbedtls.so") {
        libraries.insert("mbedtls".into(), lib);
    }
    libraries.insert("esp_dc_port".into(), port_host);
    let mut lib_dirs: Vec<PathBuf> = libraries.values().filter_map(|p| p.parent().map(Path::to_path_buf)).collect();
    lib_dirs.push(mbed_prefix.join("lib"));
    lib_dirs.sort();
    lib_dirs.dedup();
    let driver = build_driver(&dir, &sources.libdatachannel, &libraries["libdatachannel"])?;
    Ok(HostBuild {
        lib_dirs,
        driver,
        recorder,
        libraries,
        compile_commands: dir.join("stack-build/compile_commands.json"),
        stack_src: dir.join("stack-src"),
    })
}

/// The upstream release a component's row names (components::REGISTRY), for the progress lines.
fn upstream_version(component: &str) -> &'static str {
    crate::components::known(component).upstream.map_or("", |u| u.version)
}

/// mbedTLS with its config header extended by `mbedtls_config_lines` (ESP-IDF's API choices and
/// the policy's record lengths), shared, without tests, programs or generated files.
fn build_mbedtls(policy: &Policy, sources: &Path, dir: &Path, log: &mut BuildLog) -> Result<()> {
    log.step(&format!(
        "building mbedTLS {} (-m32, DTLS-SRTP, records {}/{})",
        upstream_version("mbedtls"),
        policy.mbedtls.ssl_in_content_len,
        policy.mbedtls.ssl_out_content_len
    ));
    let mut mbed = Tree::read(sources)?;
    mbed.files.retain(|rel, _| !rel.starts_with("tests") && !rel.starts_with("programs") && !rel.starts_with("docs"));
    let config = PathBuf::from("include/mbedtls/mbedtls_config.h");
    let mut text = String::from_utf8(mbed.files[&config].clone())?;
    text.push_str(&mbedtls_config_lines(policy));
    mbed.files.insert(config, text.into_bytes());
    // mbedTLS's CMakeLists refers to these directories unconditionally.
    for d in ["tests/CMakeLists.txt", "programs/CMakeLists.txt"] {
        mbed.files.insert(PathBuf::from(d), b"# not built by the lab\n".to_vec());
    }
    let src = dir.join("mbedtls-src");
    mbed.write(&src)?;
    let flags = [CMAKE_BASE_FLAGS, &["-w"]].concat();
    cmake_build(
        log,
        &src,
        &dir.join("mbedtls-build"),
        &dir.join("mbedtls-install"),
        &flags,
        &[
            ("USE_SHARED_MBEDTLS_LIBRARY", "ON"),
            ("USE_STATIC_MBEDTLS_LIBRARY", "OFF"),
            ("ENABLE_PROGRAMS", "OFF"),
            ("ENABLE_TESTING", "OFF"),
            ("GEN_FILES", "OFF"),
            // mbedTLS's CMakeLists runs scripts/config.py only to warn about a 128-bit CTR_DRBG
            // key (which no policy sets); the crate's copy lacks the `framework/` that script
            // imports, so it printed a `No module named 'mbedtls_framework'` traceback.
            ("CMAKE_DISABLE_FIND_PACKAGE_Python3", "ON"),
            ("CMAKE_DISABLE_FIND_PACKAGE_PythonInterp", "ON"),
        ],
    )
}

/// libdatachannel and its dependencies, each a shared library linked with our port library,
/// with the policy's knob definitions on every source and each component's own flags from
/// esp_dc_component_flags.cmake (CMAKE_PROJECT_INCLUDE). No `-w`: ESP-IDF's warnings apply.
fn build_stack(
    policy: &Policy,
    root: &Path,
    stack: Tree,
    dir: &Path,
    port_host: &Path,
    log: &mut BuildLog,
) -> Result<()> {
    log.step(&format!(
        "building libdatachannel {} + libjuice, usrsctp, libsrtp (-m32)",
        upstream_version("libdatachannel")
    ));
    let src = dir.join("stack-src");
    stack.write(&src)?;
    let project_include = dir.join("esp_dc_component_flags.cmake");
    let flags = component_flags(policy, root, &root.join(INCLUDE_DIR))?;
    write_atomic(&project_include, project_include_cmake(&flags).as_bytes())?;
    let knobs = knob_definitions(policy);
    let mut c_flags: Vec<&str> = vec![CMAKE_BASE_FLAGS[0]];
    c_flags.extend(knobs.iter().map(String::as_str));
    c_flags.extend(&CMAKE_BASE_FLAGS[1..]);
    let port_dir = port_host.parent().expect("the port library lives in a directory").display().to_string();
    let link = format!("-Wl,--no-as-needed -L{port_dir} -lesp_dc_port_host -Wl,-rpath,{port_dir}");
    let (stack_prefix, mbed_prefix) = (dir.join("stack-install"), dir.join("mbedtls-install"));
    let mbed = mbed_prefix.to_string_lossy();
    let rpath = format!("{}/lib;{mbed}/lib", stack_prefix.display());
    let include = project_include.to_string_lossy();
    cmake_build(
        log,
        &src,
        &dir.join("stack-build"),
        &stack_prefix,
        &c_flags,
        &[
            ("MbedTLS_ROOT", &*mbed),
            ("CMAKE_PREFIX_PATH", &*mbed),
            ("CMAKE_PROJECT_INCLUDE", &*include),
            ("CMAKE_SHARED_LINKER_FLAGS", &link),
            ("CMAKE_INSTALL_RPATH", &rpath),
        ]
        .into_iter()
        .chain(STACK_OPTIONS.iter().copied())
        .collect::<Vec<_>>(),
    )
}

/// The stack's CMake options that do not depend on where the build lives; part of the cache key,
/// so changing one rebuilds the stack.
pub(crate) const STACK_OPTIONS: &[(&str, &str)] = &[
    ("USE_MBEDTLS", "ON"),
    ("BUILD_SHARED_DEPS_LIBS", "ON"),
    // The scenarios need no WebSocket; ESP builds drop it too (RTC_ENABLE_WEBSOCKET=0).
    ("NO_WEBSOCKET", "ON"),
    // libjuice's embedded STUN/TURN server: the device's libjuice component defines NO_SERVER
    // (templates/libjuice/CMakeLists.txt), so the replica leaves it out as well; otherwise audit
    // and the static figures would count server.c, which the device never compiles.
    ("NO_SERVER", "ON"),
    ("NO_EXAMPLES", "ON"),
    ("NO_TESTS", "ON"),
    // Errors are ESP-IDF's (-Werror=all, esp_dc_component_flags.cmake), not upstream's
    // -Werror: libsrtp's ENABLE_WARNINGS_AS_ERRORS defaults ON, which ESP-IDF's libsrtp
    // component (its own CMakeLists) never sees; the others default OFF already.
    ("WARNINGS_AS_ERRORS", "OFF"),
    ("sctp_werror", "OFF"),
    ("ENABLE_WARNINGS_AS_ERRORS", "OFF"),
];

/// Each stack component's shared library in the build tree.
fn stack_libraries(build_dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut libraries = BTreeMap::new();
    for (component, prefix) in [
        ("libdatachannel", "libdatachannel.so"),
        ("libjuice", "libjuice.so"),
        ("usrsctp", "libusrsctp.so"),
        ("libsrtp", "libsrtp2.so"),
    ] {
        let lib = find_library(build_dir, prefix)
            .with_context(|| format!("the host build has no {prefix} under {}", build_dir.display()))?;
        libraries.insert(component.to_string(), lib);
    }
    Ok(libraries)
}

fn find_library(dir: &Path, prefix: &str) -> Option<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .find(|e| {
            let name = e.file_name().to_string_lossy();
            e.file_type().is_file() && name.starts_with(prefix) && name.contains(".so")
        })
        .map(|e| e.into_path())
}

fn build_port_host(dir: &Path, recorder_dir: &Path) -> Result<PathBuf> {
    let lib = dir.join("port-host/libesp_dc_port_host.so");
    let src = recorder_dir.join("port_host.c");
    compile_artifact(&lib, "libesp_dc_port_host.so", |to| {
        let sh = shell();
        cmd!(sh, "{CC} {ARTIFACT_FLAGS...} -shared -fPIC -o {to} {src}").into()
    })?;
    Ok(lib)
}

/// liblabrec.so, rebuilt when its sources change.
pub fn build_recorder(dir: &Path, recorder_dir: &Path) -> Result<PathBuf> {
    let src = recorder_dir.join("recorder.cpp");
    let key = hash_of(&[&std::fs::read(&src)?, &std::fs::read(recorder_dir.join("lab_trace.h"))?]);
    let lib = dir.join(format!("recorder-{key}")).join("liblabrec.so");
    compile_artifact(&lib, "the recorder liblabrec.so", |to| {
        let sh = shell();
        cmd!(sh, "{CXX} {ARTIFACT_FLAGS...} -std=c++17 -shared -fPIC -o {to} {src} -I{recorder_dir} -ldl -lpthread")
            .into()
    })?;
    Ok(lib)
}

/// The scenario driver: every `.cpp` of lab/driver, one program, rebuilt when any of its files
/// (headers included) or the knob catalogue changes. The catalogue's run-time rows reach it as
/// the generated `esp_dc_runtime_knobs.h` that the device's esp_dc_port_init.c expands too.
fn build_driver(dir: &Path, libdatachannel_src: &Path, libdatachannel: &Path) -> Result<PathBuf> {
    let driver_dir = project_root().join("lab/driver");
    let files = driver_files(&driver_dir)?;
    let knobs_header = runtime_knobs_header();
    let mut parts = vec![knobs_header.as_bytes().to_vec()];
    for file in &files {
        parts.push(file.file_name().unwrap_or_default().as_encoded_bytes().to_vec());
        parts.push(std::fs::read(file)?);
    }
    let key = hash_of(&parts.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let exe = dir.join(format!("driver-{key}")).join("scenario");
    let generated = dir.join(format!("driver-{key}"));
    let header = generated.join(RUNTIME_KNOBS_HEADER);
    if !header.exists() {
        std::fs::create_dir_all(header.parent().expect("the header lives in a directory"))?;
        write_atomic(&header, knobs_header.as_bytes())?;
    }
    let generated_include = header.parent().expect("the header lives in a directory").to_path_buf();
    let sources: Vec<&PathBuf> = files.iter().filter(|f| f.extension().is_some_and(|e| e == "cpp")).collect();
    let libdir = libdatachannel.parent().expect("a library lives in a directory");
    let include = libdatachannel_src.join("include");
    compile_artifact(&exe, "the scenario driver", |to| {
        let sh = shell();
        cmd!(
            sh,
            "{CXX} {ARTIFACT_FLAGS...} -std=c++17 -o {to} {sources...} -I{driver_dir} -I{generated_include} -I{include}
             -L{libdir} -Wl,-rpath,{libdir} -ldatachannel -ldl -lpthread"
        )
        .into()
    })?;
    Ok(exe)
}

/// The driver's sources and headers, sorted (the cache key and the compile order are stable).
pub fn driver_files(driver_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(driver_dir).with_context(|| format!("reading {}", driver_dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "cpp" || e == "h") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn shell() -> Shell {
    Shell::new().expect("a shell in the current directory")
}
