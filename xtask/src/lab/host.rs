//! The host replica: the same upstream sources, patches, knobs and force-included redirect
//! header as the ESP-IDF tree, built 32-bit (-m32) so pointers and struct sizes match the MCU.
//! mbedTLS 3.6.5 is configured as ESP-IDF configures it for DTLS (DTLS-SRTP on, the policy's
//! record buffer lengths); every dependency is its own shared library (BUILD_SHARED_DEPS_LIBS).
//! Builds are cached under ~/.cache/esp-dc/host/<policy>-<hash>/ and reused while nothing changed.

use crate::fsutil::{fnv1a64, project_root, write_atomic};
use crate::policy::{KnobEffect, Placement, Policy, KNOBS};
use crate::upstream::{self, Tree};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const TARGET: &str = "i686-unknown-linux-gnu";
const HOST: &str = "x86_64-unknown-linux-gnu";

/// What the lab runs: the built stack, our host port library, the recorder and the driver.
#[derive(Debug, Clone)]
pub struct HostBuild {
    /// Directories holding the stack's shared libraries (for LD_LIBRARY_PATH).
    pub lib_dirs: Vec<PathBuf>,
    pub driver: PathBuf,
    pub recorder: PathBuf,
    /// Component -> its built shared library.
    pub libraries: BTreeMap<String, PathBuf>,
}

pub fn cache_root() -> PathBuf {
    std::env::var_os("ESP_DC_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into())).join(".cache/esp-dc"))
}

/// Component id as in components/esp_dc_port/include/esp_dc_port_alloc.h.
pub fn component_id(component: &str) -> i32 {
    crate::policy::COMPONENTS.iter().position(|c| *c == component).map(|i| i as i32 + 1).unwrap_or(0)
}

fn caps_of(placement: Placement) -> u32 {
    // Bit values of ESP-IDF's esp_heap_caps.h (mirrored in esp_dc_port_alloc.h).
    const MALLOC_CAP_8BIT: u32 = 1 << 2;
    const MALLOC_CAP_SPIRAM: u32 = 1 << 10;
    const MALLOC_CAP_INTERNAL: u32 = 1 << 11;
    const MALLOC_CAP_DEFAULT: u32 = 1 << 12;
    match placement {
        Placement::Psram => MALLOC_CAP_SPIRAM,
        Placement::Internal => MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT,
        Placement::Default => MALLOC_CAP_DEFAULT,
    }
}

/// CMake project names of the stack's subprojects, by policy component.
pub(crate) const PROJECTS: &[(&str, &str)] = &[
    ("libdatachannel", "libdatachannel"),
    ("libjuice", "libjuice"),
    ("usrsctp", "usrsctplib"),
    ("libsrtp", "libsrtp2"),
];

/// mbedTLS 3.6.5 as ESP-IDF 5.5 configures it (components/mbedtls/port/include/mbedtls/esp_config.h
/// read with the sdkconfig our policies render: CONFIG_MBEDTLS_SSL_PROTO_DTLS and
/// CONFIG_MBEDTLS_SSL_DTLS_SRTP on, everything else ESP-IDF's default), as far as it decides WHICH
/// APIs exist: code using something esp_config.h leaves out must fail here as it fails in idf.py.
/// (Its memory/platform hooks - PLATFORM_MEMORY, MD5_ALT, ROM tables - change no API the stack
/// sees and are the lab's to measure.) Then the policy's record lengths.
pub(crate) fn mbedtls_config_lines(policy: &Policy) -> String {
    format!(
        "\n/* esp-libdatachannel lab: what ESP-IDF 5.5's esp_config.h decides about which APIs exist */\n\
         #define MBEDTLS_SSL_DTLS_SRTP\n\
         /* esp_config.h line ~3101, unconditional: deprecated APIs are gone (mbedtls_ssl_conf_max_version, \
         mbedtls_x509write_crt_set_serial, ...) */\n\
         #define MBEDTLS_DEPRECATED_REMOVED\n\
         /* CONFIG_MBEDTLS_SSL_PROTO_TLS1_3 off: no TLS 1.3 (mbedtls_ssl_conf_tls13_*, TLS 1.3 suites) */\n\
         #undef MBEDTLS_SSL_PROTO_TLS1_3\n#undef MBEDTLS_SSL_TLS1_3_COMPATIBILITY_MODE\n\
         #undef MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_PSK_ENABLED\n#undef MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_EPHEMERAL_ENABLED\n\
         #undef MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_PSK_EPHEMERAL_ENABLED\n\
         /* DTLS/TLS features ESP-IDF leaves off: mbedtls_ssl_export_keying_material, mbedtls_ssl_set_cid, \
         mbedtls_ssl_context_save/load, mbedtls_debug_*, mbedtls_timing_*, mbedtls_net_*, wall-clock dates */\n\
         #undef MBEDTLS_SSL_KEYING_MATERIAL_EXPORT\n#undef MBEDTLS_SSL_DTLS_CONNECTION_ID\n\
         #undef MBEDTLS_SSL_DTLS_CONNECTION_ID_COMPAT\n#undef MBEDTLS_SSL_CONTEXT_SERIALIZATION\n\
         #undef MBEDTLS_DEBUG_C\n#undef MBEDTLS_TIMING_C\n#undef MBEDTLS_NET_C\n#undef MBEDTLS_HAVE_TIME_DATE\n\
         /* Ciphers, hashes and key exchanges ESP-IDF leaves off (also what DTLS can negotiate) */\n\
         #undef MBEDTLS_CHACHAPOLY_C\n#undef MBEDTLS_CHACHA20_C\n#undef MBEDTLS_POLY1305_C\n\
         #undef MBEDTLS_CAMELLIA_C\n#undef MBEDTLS_DES_C\n#undef MBEDTLS_CMAC_C\n#undef MBEDTLS_HKDF_C\n\
         #undef MBEDTLS_NIST_KW_C\n#undef MBEDTLS_SHA3_C\n#undef MBEDTLS_RIPEMD160_C\n#undef MBEDTLS_ECJPAKE_C\n\
         #undef MBEDTLS_ECP_DP_CURVE448_ENABLED\n#undef MBEDTLS_DHM_C\n\
         #undef MBEDTLS_KEY_EXCHANGE_DHE_RSA_ENABLED\n#undef MBEDTLS_KEY_EXCHANGE_DHE_PSK_ENABLED\n\
         #undef MBEDTLS_KEY_EXCHANGE_PSK_ENABLED\n#undef MBEDTLS_KEY_EXCHANGE_ECDHE_PSK_ENABLED\n\
         #undef MBEDTLS_KEY_EXCHANGE_RSA_PSK_ENABLED\n\
         /* the policy's record buffers */\n\
         #undef MBEDTLS_SSL_IN_CONTENT_LEN\n#define MBEDTLS_SSL_IN_CONTENT_LEN {}\n\
         #undef MBEDTLS_SSL_OUT_CONTENT_LEN\n#define MBEDTLS_SSL_OUT_CONTENT_LEN {}\n",
        policy.mbedtls.ssl_in_content_len, policy.mbedtls.ssl_out_content_len
    )
}

/// The warning options ESP-IDF 5.5 compiles every component with: the `compile_options` of
/// tools/cmake/build.cmake `__build_set_default_build_specifications`, with "-Werror" replaced by
/// "-Werror=all" as the top CMakeLists.txt does under CONFIG_COMPILER_DISABLE_DEFAULT_ERRORS=y
/// (ESP-IDF's default). The stack (libdatachannel, libjuice, usrsctp, libsrtp) gets them, so a lab
/// build fails where idf.py fails; mbedTLS itself and our lab code (recorder, driver, port_host)
/// keep `-w`. lab::tests checks this list against the ESP-IDF tree.
pub const IDF_WARNING_FLAGS: &[&str] = &[
    "-Wall",
    "-Werror=all",
    "-Wno-error=unused-function",
    "-Wno-error=unused-variable",
    "-Wno-error=unused-but-set-variable",
    "-Wno-error=deprecated-declarations",
    "-Wextra",
    "-Wno-error=extra",
    "-Wno-unused-parameter",
    "-Wno-sign-compare",
    "-Wno-enum-conversion",
];

/// C only: ESP-IDF's top CMakeLists.txt adds this to `c_compile_options` for GCC.
pub const IDF_C_WARNING_FLAGS: &[&str] = &["-Wno-old-style-declaration"];

/// Each component's own warning options: the `-W...` arguments of every `target_compile_options`
/// in templates/<component>/CMakeLists.txt, which is what the ESP-IDF component adds after
/// ESP-IDF's own (e.g. usrsctp's -Wno-address-of-packed-member).
pub fn template_warning_options(root: &Path, component: &str) -> Result<Vec<String>> {
    let path = root.join("templates").join(component).join("CMakeLists.txt");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(warning_options_in(&text))
}

fn warning_options_in(cmake: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = cmake;
    while let Some(start) = rest.find("target_compile_options(") {
        let body = &rest[start + "target_compile_options(".len()..];
        let end = body.find(')').unwrap_or(body.len());
        out.extend(body[..end].split_whitespace().filter(|w| w.starts_with("-W")).map(str::to_string));
        rest = &body[end..];
    }
    out
}

/// What a component's sources get: C-only options (force-include, caps, id), definitions, and
/// warning options (ESP-IDF's, then the component template's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProjectFlags {
    pub c_only: Vec<String>,
    pub definitions: Vec<String>,
    pub warnings: Vec<String>,
}

/// Compile flags for each component, from the policy: force-include, caps, id, definitions, and
/// ESP-IDF's warning options plus the component template's (read from the clone at `root`).
pub(crate) fn component_flags(
    policy: &Policy,
    root: &Path,
    include_dir: &Path,
) -> Result<BTreeMap<&'static str, ProjectFlags>> {
    let mut out = BTreeMap::new();
    for (component, project) in PROJECTS {
        let spec = policy.component(component);
        let mut c_only = Vec::new();
        if !spec.force_include.is_empty() {
            c_only.push(format!("-include{}", include_dir.join(&spec.force_include).display()));
            c_only.push(format!("-DESP_DC_ALLOC_CAPS={}", caps_of(spec.placement)));
            c_only.push(format!("-DESP_DC_COMPONENT_ID={}", component_id(component)));
        }
        let definitions: Vec<String> = spec.definitions.iter().map(|(k, v)| format!("{k}={}", v.render())).collect();
        let mut warnings: Vec<String> = IDF_WARNING_FLAGS.iter().map(|f| f.to_string()).collect();
        warnings.extend(template_warning_options(root, component)?);
        out.insert(*project, ProjectFlags { c_only, definitions, warnings });
    }
    Ok(out)
}

/// Knob definitions apply to every subproject: usrsctp's own_threads is read by libdatachannel,
/// and the names are distinct, so one global list is both simplest and what the ESP-IDF tree does
/// with PUBLIC definitions.
fn knob_definitions(policy: &Policy) -> Vec<String> {
    KNOBS
        .iter()
        .filter_map(|k| match k.effect {
            KnobEffect::Define(name) if policy.knob_value(k) != k.stock => {
                Some(format!("-D{name}={}", policy.knob_value(k)))
            }
            _ => None,
        })
        .collect()
}

/// A short content key for cached build products: `fsutil::fnv1a64` as 16 hex digits.
pub fn hash_of(parts: &[&[u8]]) -> String {
    format!("{:016x}", fnv1a64(parts))
}

/// What this file does with the inputs beyond their content (cmake options, compiler flags,
/// directory layout). Change it with the recipe: old cache directories then stop matching.
const RECIPE: &str = "host-recipe-6: mbedTLS without Python; key from content";

/// Where the stack's flags find the redirect header, relative to the clone.
const INCLUDE_DIR: &str = "components/esp_dc_port/include";

/// The host build's cache key, from content only: the recipe, the policy's flags, knobs and
/// mbedTLS lines, the pinned versions, every file of the patched stack tree (so every patch),
/// the port headers and port_host.c the stack links with, each component template. Paths count
/// relative to the clone at `root`, never absolutely, so a second clone (or CI's scratch copy)
/// finds the first one's build. The recorder and the driver are separate artifacts in the
/// directory, each keyed by its own sources (`recorder-<hash>`, `driver-<hash>`): a recorder
/// fix then costs a second, not a rebuild of the stack.
pub(crate) fn cache_key(root: &Path, policy: &Policy, stack: &Tree) -> Result<String> {
    let flags = component_flags(policy, root, Path::new(INCLUDE_DIR))?;
    let mut parts: Vec<Vec<u8>> = vec![
        RECIPE.into(),
        upstream::DATACHANNEL_SYS_VERSION.into(),
        upstream::MBEDTLS_SYS_VERSION.into(),
        format!("{flags:?}").into_bytes(),
        format!("{:?}", knob_definitions(policy)).into_bytes(),
        mbedtls_config_lines(policy).into_bytes(),
    ];
    let port = Tree::read(&root.join(INCLUDE_DIR))?;
    for (rel, bytes) in stack.files.iter().chain(&port.files) {
        parts.push(rel.to_string_lossy().as_bytes().to_vec());
        parts.push(bytes.clone());
    }
    let port_host = root.join("lab/recorder/port_host.c");
    parts.push(std::fs::read(&port_host).with_context(|| format!("reading {}", port_host.display()))?);
    let refs: Vec<&[u8]> = parts.iter().map(|v| v.as_slice()).collect();
    Ok(hash_of(&refs))
}

/// The compiler for mbedTLS and our lab code: warnings off (`-w`).
pub fn cc_build() -> cc::Build {
    let mut b = cc::Build::new();
    b.target(TARGET).host(HOST).opt_level(2).debug(true).cargo_metadata(false).cargo_warnings(false).warnings(false);
    b
}

/// CMAKE_<LANG>_FLAGS as the cmake crate derives them from cc_build(), minus `-w`: the crate
/// forces cc's warnings(false), whose `-w` would silence ESP-IDF's -Werror=all in the stack.
fn flags_without_w(cpp: bool, extra: &[&str]) -> String {
    // What the cmake crate sets on the cc::Build it is given (cmake 0.1 `Config::build`).
    let compiler = cc_build().cpp(cpp).opt_level(0).debug(false).get_compiler();
    let mut out: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    for arg in compiler.args() {
        let a = arg.to_string_lossy();
        if a == "-w" || a.starts_with("-O") || a == "-g" {
            continue;
        }
        out.push(a.into_owned());
    }
    out.join(" ")
}

/// `--verbose`: the build's full output on the terminal instead of progress lines and a log.
pub static VERBOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What the build prints before each step; the parent shows it as a progress line.
const STEP: &str = "lab-step: ";

fn step(text: &str) {
    eprintln!("{STEP}{text}");
}

/// Builds (or reuses) the replica for `policy`. The build runs in a child `cargo xtask lab
/// --build-only`: the cmake and cc crates speak to cargo on stdout, and the lab's stdout is for
/// its report. By default the child's whole output (cmake, ninja, compilers) goes to a log file
/// and the terminal gets one line per step with its time; `--verbose` shows everything.
pub fn build(policy: &Policy) -> Result<HostBuild> {
    if std::env::var_os("ESP_DC_LAB_BUILDING").is_none() {
        build_in_child(policy)?;
    }
    build_here(policy)
}

fn build_in_child(policy: &Policy) -> Result<()> {
    let name = &policy.policy.name;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(["lab", "--build-only", "--policy"]).arg(&policy.path).env("ESP_DC_LAB_BUILDING", "1");
    if VERBOSE.load(std::sync::atomic::Ordering::Relaxed) {
        if !cmd.stdout(std::io::stderr()).status()?.success() {
            return Err(crate::exit::bad_input(format!("the host build for `{name}` failed (output above)")));
        }
        return Ok(());
    }
    let logs = cache_root().join("host/logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    // Per process while it runs (two runs may build at once), then the policy's last build log.
    let running = logs.join(format!("{name}-{}.log", std::process::id()));
    let last = logs.join(format!("{name}.log"));
    let mut log = std::fs::File::create(&running).with_context(|| format!("creating {}", running.display()))?;
    let (reader, writer) = std::io::pipe()?;
    cmd.stdout(writer.try_clone()?).stderr(writer);
    let mut child = cmd.spawn()?;
    drop(cmd); // its copies of the pipe's writing end: the reader sees the end when the child exits
    let mut progress = Progress::start(format!("host replica ({name}): checking"));
    let mut lines = std::io::BufReader::new(reader);
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if std::io::BufRead::read_until(&mut lines, b'\n', &mut line)? == 0 {
            break;
        }
        std::io::Write::write_all(&mut log, &line)?;
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if let Some(step) = text.strip_prefix(STEP) {
            progress.done();
            progress = Progress::start(format!("host replica ({name}): {step}"));
        } else {
            if tail.len() == 20 {
                tail.pop_front();
            }
            tail.push_back(text);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        progress.failed();
        let tail: Vec<String> = tail.into();
        return Err(crate::exit::bad_input(format!(
            "the host build for `{name}` failed ({status}); its last lines:\n{}\nthe whole output is in {} \
             (or run again with --verbose)",
            tail.join("\n"),
            running.display()
        )));
    }
    progress.done();
    drop(log);
    std::fs::rename(&running, &last).with_context(|| format!("keeping the build log as {}", last.display()))?;
    Ok(())
}

/// One progress line: "lab: <what>… 1m02s" on stderr, its time added when the step ends.
pub struct Progress {
    started: std::time::Instant,
    open: bool,
}

impl Progress {
    pub fn start(what: String) -> Progress {
        eprint!("lab: {what}… ");
        Progress { started: std::time::Instant::now(), open: true }
    }

    pub fn done(&mut self) {
        if std::mem::take(&mut self.open) {
            eprintln!("{}", elapsed(self.started.elapsed()));
        }
    }

    pub fn failed(&mut self) {
        if std::mem::take(&mut self.open) {
            eprintln!("failed after {}", elapsed(self.started.elapsed()));
        }
    }
}

impl Drop for Progress {
    /// A step left by an error (`?`) still ends its line, so the error starts on its own.
    fn drop(&mut self) {
        self.failed();
    }
}

pub fn elapsed(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Held while this process writes one cache directory; another process (a second test binary,
/// a second clone's run) or thread that wants the same directory waits, with a message. The
/// kernel drops it when the process dies, so a killed build leaves no stale lock.
fn lock_artifact(dir: &Path, what: &str) -> Result<std::fs::File> {
    let path = dir.with_extension("lock");
    crate::fsutil::lock_file(&path, "set ESP_DC_CACHE to a local directory", || {
        step(&format!("waiting for another build of {what} (it holds {})", path.display()))
    })
}

fn build_here(policy: &Policy) -> Result<HostBuild> {
    check_multilib()?;
    let sources = upstream::locate()?;
    let root = project_root();
    let include_dir = root.join(INCLUDE_DIR);
    let recorder_dir = root.join("lab/recorder");

    let stack = upstream::stage_stack(&sources, policy)?;
    let flags = component_flags(policy, &root, &include_dir)?;
    let knobs = knob_definitions(policy);
    let mbed_lines = mbedtls_config_lines(policy);
    let key = cache_key(&root, policy, &stack)?;
    let dir = cache_root().join("host").join(format!("{}-{key}", policy.policy.name));
    std::fs::create_dir_all(&dir)?;
    // One writer per cache directory: tests build in-process and in parallel (lab, size,
    // interop), and separate processes (two test binaries, a second clone) share the cache.
    let _only_writer = lock_artifact(&dir, &format!("`{}`", policy.policy.name))?;

    let port_host = build_port_host(&dir, &recorder_dir)?;
    let recorder = build_recorder(&dir, &recorder_dir)?;

    let mbed_prefix = dir.join("mbedtls-install");
    if !dir.join("mbedtls.done").exists() {
        step(&format!(
            "building mbedTLS 3.6.5 (-m32, DTLS-SRTP, records {}/{})",
            policy.mbedtls.ssl_in_content_len, policy.mbedtls.ssl_out_content_len
        ));
        let mut mbed = Tree::read(&sources.mbedtls)?;
        mbed.files
            .retain(|rel, _| !rel.starts_with("tests") && !rel.starts_with("programs") && !rel.starts_with("docs"));
        let config = PathBuf::from("include/mbedtls/mbedtls_config.h");
        let mut text = String::from_utf8(mbed.files[&config].clone())?;
        text.push_str(&mbed_lines);
        mbed.files.insert(config, text.into_bytes());
        // mbedTLS's CMakeLists refers to these directories unconditionally.
        for d in ["tests/CMakeLists.txt", "programs/CMakeLists.txt"] {
            mbed.files.insert(PathBuf::from(d), b"# not built by the lab\n".to_vec());
        }
        let src = dir.join("mbedtls-src");
        mbed.write(&src)?;
        cmake_build(
            &src,
            &dir.join("mbedtls-build"),
            &mbed_prefix,
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
            "",
            "",
            false,
        )?;
        write_atomic(&dir.join("mbedtls.done"), b"")?;
    }

    let stack_prefix = dir.join("stack-install");
    if !dir.join("stack.done").exists() {
        step("building libdatachannel 0.23.2 + libjuice, usrsctp, libsrtp (-m32)");
        let src = dir.join("stack-src");
        stack.write(&src)?;
        let project_include = dir.join("esp_dc_component_flags.cmake");
        write_atomic(&project_include, project_include_cmake(&flags).as_bytes())?;
        let knob_flags = knobs.join(" ");
        let link = format!(
            "-Wl,--no-as-needed -L{} -lesp_dc_port_host -Wl,-rpath,{}",
            port_host.parent().unwrap().display(),
            port_host.parent().unwrap().display()
        );
        cmake_build(
            &src,
            &dir.join("stack-build"),
            &stack_prefix,
            &[
                ("USE_MBEDTLS", "ON"),
                ("MbedTLS_ROOT", mbed_prefix.to_str().unwrap()),
                ("CMAKE_PREFIX_PATH", mbed_prefix.to_str().unwrap()),
                ("BUILD_SHARED_DEPS_LIBS", "ON"),
                // The scenarios need no WebSocket; ESP builds drop it too (RTC_ENABLE_WEBSOCKET=0).
                ("NO_WEBSOCKET", "ON"),
                ("NO_EXAMPLES", "ON"),
                ("NO_TESTS", "ON"),
                // Errors are ESP-IDF's (-Werror=all, esp_dc_component_flags.cmake), not upstream's
                // -Werror: libsrtp's ENABLE_WARNINGS_AS_ERRORS defaults ON, which ESP-IDF's libsrtp
                // component (its own CMakeLists) never sees; the others default OFF already.
                ("WARNINGS_AS_ERRORS", "OFF"),
                ("sctp_werror", "OFF"),
                ("ENABLE_WARNINGS_AS_ERRORS", "OFF"),
                ("CMAKE_PROJECT_INCLUDE", project_include.to_str().unwrap()),
                ("CMAKE_SHARED_LINKER_FLAGS", &link),
                ("CMAKE_INSTALL_RPATH", &format!("{}/lib;{}/lib", stack_prefix.display(), mbed_prefix.display())),
            ],
            &knob_flags,
            &knob_flags,
            true,
        )?;
        write_atomic(&dir.join("stack.done"), b"")?;
    }

    let build_dir = dir.join("stack-build");
    let mut libraries = BTreeMap::new();
    let find = |dir: &Path, prefix: &str| -> Option<PathBuf> {
        walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_map(|e| e.ok())
            .find(|e| {
                e.file_type().is_file()
                    && e.file_name().to_string_lossy().starts_with(prefix)
                    && e.file_name().to_string_lossy().contains(".so")
            })
            .map(|e| e.into_path())
    };
    for (component, prefix) in [
        ("libdatachannel", "libdatachannel.so"),
        ("libjuice", "libjuice.so"),
        ("usrsctp", "libusrsctp.so"),
        ("libsrtp", "libsrtp2.so"),
    ] {
        let lib = find(&build_dir, prefix)
            .with_context(|| format!("the host build has no {prefix} under {}", build_dir.display()))?;
        libraries.insert(component.to_string(), lib);
    }
    if let Some(lib) = find(&mbed_prefix.join("lib"), "libmbedtls.so") {
        libraries.insert("mbedtls".into(), lib);
    }
    libraries.insert("esp_dc_port".into(), port_host.clone());
    let mut lib_dirs: Vec<PathBuf> = libraries.values().filter_map(|p| p.parent().map(Path::to_path_buf)).collect();
    lib_dirs.push(mbed_prefix.join("lib"));
    lib_dirs.sort();
    lib_dirs.dedup();

    let driver = build_driver(&dir, &sources.libdatachannel, &libraries["libdatachannel"])?;
    Ok(HostBuild { lib_dirs, driver, recorder, libraries })
}

/// Component -> built 32-bit shared library, for `size-check --host`.
pub fn component_libraries(policy: &Policy) -> Result<BTreeMap<String, PathBuf>> {
    Ok(build(policy)?.libraries)
}

pub(crate) fn project_include_cmake(flags: &BTreeMap<&'static str, ProjectFlags>) -> String {
    let mut s = String::from(
        "# Generated by `cargo xtask lab`: included after every project() of the stack\n\
         # (CMAKE_PROJECT_INCLUDE) to give each component the policy's flags and ESP-IDF's warning\n\
         # options, as the ESP-IDF component tree does (build.cmake + target_compile_options).\n\
         # A subproject inherits its parent directory's options: drop the parent's redirect so\n\
         # a dependency without one (libsrtp under `stock`) allocates as on the device, and the\n\
         # parent's warning options so each component gets only its own template's.\n\
         get_property(_esp_dc_options DIRECTORY PROPERTY COMPILE_OPTIONS)\n\
         list(FILTER _esp_dc_options EXCLUDE REGEX \"ESP_DC_ALLOC_CAPS|ESP_DC_COMPONENT_ID|esp_dc_alloc_redirect|(^|:)-W\")\n\
         set_property(DIRECTORY PROPERTY COMPILE_OPTIONS \"${_esp_dc_options}\")\n",
    );
    for (project, f) in flags {
        s.push_str(&format!("if(PROJECT_NAME STREQUAL \"{project}\")\n"));
        if !f.warnings.is_empty() {
            s.push_str(&format!("  add_compile_options({})\n", f.warnings.join(" ")));
        }
        for w in IDF_C_WARNING_FLAGS {
            s.push_str(&format!("  add_compile_options($<$<COMPILE_LANGUAGE:C>:{w}>)\n"));
        }
        for c in &f.c_only {
            s.push_str(&format!("  add_compile_options($<$<COMPILE_LANGUAGE:C>:{c}>)\n"));
        }
        for d in &f.definitions {
            s.push_str(&format!("  add_compile_definitions({d})\n"));
        }
        s.push_str("endif()\n");
    }
    s
}

/// `warnings`: compile without `-w` (the stack; its warning options come from
/// esp_dc_component_flags.cmake). mbedTLS is built with `-w`.
fn cmake_build(
    src: &Path,
    build: &Path,
    prefix: &Path,
    defines: &[(&str, &str)],
    c_flags: &str,
    cxx_flags: &str,
    warnings: bool,
) -> Result<()> {
    let mut cfg = cmake::Config::new(src);
    cfg.generator("Ninja")
        .out_dir(build)
        .target(TARGET)
        .host(HOST)
        .profile("RelWithDebInfo")
        .init_c_cfg(cc_build())
        .init_cxx_cfg(cc_build())
        .cflag("-fasynchronous-unwind-tables")
        .cxxflag("-fasynchronous-unwind-tables")
        .define("CMAKE_INSTALL_PREFIX", prefix)
        .define("CMAKE_INSTALL_LIBDIR", "lib")
        .very_verbose(false);
    for f in c_flags.split_whitespace() {
        cfg.cflag(f);
    }
    for f in cxx_flags.split_whitespace() {
        cfg.cxxflag(f);
    }
    for (k, v) in defines {
        cfg.define(k, v);
    }
    // The cmake and cc crates are made for build scripts and read cargo's build-script
    // environment; give them the one a build script for i686 Linux would see.
    for (k, v) in [
        ("NUM_JOBS", "2"),
        ("TARGET", TARGET),
        ("HOST", HOST),
        ("OPT_LEVEL", "2"),
        ("DEBUG", "true"),
        ("PROFILE", "release"),
        ("CARGO_CFG_TARGET_OS", "linux"),
        ("CARGO_CFG_TARGET_ARCH", "x86"),
        ("CARGO_CFG_TARGET_ENV", "gnu"),
        ("CARGO_CFG_TARGET_VENDOR", "unknown"),
        ("CARGO_CFG_TARGET_POINTER_WIDTH", "32"),
        ("CARGO_CFG_TARGET_ENDIAN", "little"),
        ("CARGO_CFG_TARGET_FEATURE", ""),
        ("CARGO_ENCODED_RUSTFLAGS", ""),
    ] {
        std::env::set_var(k, v);
    }
    if warnings {
        let mut extra = vec!["-fasynchronous-unwind-tables"];
        extra.extend(c_flags.split_whitespace());
        cfg.define("CMAKE_C_FLAGS", flags_without_w(false, &extra));
        let mut extra = vec!["-fasynchronous-unwind-tables"];
        extra.extend(cxx_flags.split_whitespace());
        cfg.define("CMAKE_CXX_FLAGS", flags_without_w(true, &extra));
    }
    // The cmake crate speaks to cargo on stdout; keep our stdout for reports.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cfg.build()));
    match result {
        Ok(_) => Ok(()),
        Err(_) => bail!("the host build of {} failed (output above); build dir {}", src.display(), build.display()),
    }
}

/// Compiles one artifact unless it exists: the compiler writes a unique temporary file beside
/// it, renamed into place when whole, so no reader sees half a library and two writers (tests
/// in parallel, a second clone) each rename a complete one. `command` gets the path to write.
/// A failure says which: no compiler, or the compiler's own error.
pub(crate) fn compile_artifact(
    out: &Path,
    what: &str,
    command: impl FnOnce(&Path) -> std::process::Command,
) -> Result<()> {
    if out.exists() {
        return Ok(());
    }
    let dir = out.parent().expect("an artifact lives in a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // A name no other writer uses (process, then a counter for this process's threads), not a
    // created file: the linker makes the output itself, with an executable's mode.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = out.file_name().expect("an artifact has a name").to_string_lossy();
    let partial = tempfile::TempPath::try_from_path(dir.join(format!(".{name}.{}-{n}.partial", std::process::id())))?;
    let mut cmd = command(&partial);
    let program = cmd.get_program().to_string_lossy().into_owned();
    let output = match cmd.output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(crate::exit::bad_input(format!(
                "building {what}: no compiler `{program}`; run `bash scripts/setup.sh` (g++-multilib)"
            )))
        }
        Err(e) => return Err(e).with_context(|| format!("building {what}: starting `{program}`")),
    };
    if !output.status.success() {
        bail!(
            "building {what} failed: `{program}` exited with {}:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    partial.persist(out).with_context(|| format!("moving {what} into place at {}", out.display()))?;
    Ok(())
}

fn build_port_host(dir: &Path, recorder_dir: &Path) -> Result<PathBuf> {
    let lib = dir.join("port-host/libesp_dc_port_host.so");
    compile_artifact(&lib, "libesp_dc_port_host.so", |to| {
        let mut cmd = cc_build().get_compiler().to_command();
        cmd.args(["-shared", "-fPIC", "-o"]).arg(to).arg(recorder_dir.join("port_host.c"));
        cmd
    })?;
    Ok(lib)
}

/// liblabrec.so, rebuilt when its sources change.
pub fn build_recorder(dir: &Path, recorder_dir: &Path) -> Result<PathBuf> {
    let src = std::fs::read(recorder_dir.join("recorder.cpp"))?;
    let hdr = std::fs::read(recorder_dir.join("lab_trace.h"))?;
    let lib = dir.join(format!("recorder-{}", hash_of(&[&src, &hdr]))).join("liblabrec.so");
    compile_artifact(&lib, "the recorder liblabrec.so", |to| {
        let mut cmd = cc_build().cpp(true).get_compiler().to_command();
        cmd.args(["-std=c++17", "-shared", "-fPIC", "-o"])
            .arg(to)
            .arg(recorder_dir.join("recorder.cpp"))
            .arg(format!("-I{}", recorder_dir.display()))
            .args(["-ldl", "-lpthread"]);
        cmd
    })?;
    Ok(lib)
}

fn build_driver(dir: &Path, libdatachannel_src: &Path, libdatachannel: &Path) -> Result<PathBuf> {
    let src = project_root().join("lab/driver/scenario.cpp");
    let text = std::fs::read(&src)?;
    let exe = dir.join(format!("driver-{}", hash_of(&[&text]))).join("scenario");
    let libdir = libdatachannel.parent().unwrap();
    compile_artifact(&exe, "the scenario driver", |to| {
        let mut cmd = cc_build().cpp(true).get_compiler().to_command();
        cmd.args(["-std=c++17", "-o"])
            .arg(to)
            .arg(&src)
            .arg(format!("-I{}", libdatachannel_src.join("include").display()))
            .arg(format!("-L{}", libdir.display()))
            .arg(format!("-Wl,-rpath,{}", libdir.display()))
            .args(["-ldatachannel", "-ldl", "-lpthread"]);
        cmd
    })?;
    Ok(exe)
}

fn check_multilib() -> Result<()> {
    if !Path::new("/usr/lib/gcc/x86_64-linux-gnu").exists() || !Path::new("/usr/include/x86_64-linux-gnu").exists() {
        return Ok(());
    }
    if !Path::new("/usr/lib32").exists() && !Path::new("/usr/lib/i386-linux-gnu").exists() {
        return Err(crate::exit::bad_input(
            "the 32-bit host replica needs g++-multilib: run `bash scripts/setup.sh` (or `apt-get install g++-multilib`)",
        ));
    }
    Ok(())
}
