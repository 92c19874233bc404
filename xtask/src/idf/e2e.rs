//! The ESP-IDF end-to-end test: both examples built by real ESP-IDF (its `linux` target, the one
//! whose toolchain is this machine's gcc) under lean and stock, each run 10 times against aiortc
//! over loopback with console signaling, as `idf.py monitor` would carry it.
//!
//! ESP-IDF comes from `IDF_PATH`, else `../shared/esp-idf-v5.5.1/esp-idf` (what CI has beside every
//! clone; `scripts/setup.sh` gives it a Python venv). Without either the test says
//! `skipped: idf_e2e…` on the terminal and returns. Each policy's project copy and builds live in
//! `$ESP_DC_CACHE/idf-e2e/<policy>/`, so a second run rebuilds only what changed; the device logs
//! of every run are kept in `lab-out/idf-e2e/`, with each build's idf.py output.

use super::*;
use crate::background::{self, Io};
use crate::replica::cache_root;
use crate::upstream::Tree;
use std::io::Write;
use xshell::{cmd, Shell};

/// ESP-IDF for one of these tests, held alone (they build and run heavily), or None once the test
/// has said by name that it is skipped: a machine with neither `IDF_PATH` nor the shared tree.
pub(super) fn idf_for(test: &str) -> Option<(Idf, std::sync::MutexGuard<'static, ()>)> {
    let Some(idf_root) = tree_for_tests() else {
        say_skipped(test);
        return None;
    };
    let heavy = HEAVY_TEST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    Some((locate(Some(&idf_root), None, None).unwrap(), heavy))
}

const RUNS: usize = 10;
/// The examples signaled through their console (idf_example_peer.py types the answer).
const CONSOLE_EXAMPLES: &[&str] = &["datachannel_echo", "h264_sender"];

/// Lines the test must show even when it passes (libtest captures only the print macros).
pub(super) fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The examples, copied; configure then adds our components and sdkconfig.defaults, as it does
/// for any application. Unchanged files are not touched, so the builds stay incremental.
pub(super) fn stage_project(root: &Path) -> Result<()> {
    stage_examples(root)
}

fn interop_python() -> PathBuf {
    let venv =
        std::env::var_os("ESP_DC_INTEROP_VENV").map(PathBuf::from).unwrap_or_else(|| cache_root().join("interop-venv"));
    let python = venv.join("bin/python");
    assert!(python.is_file(), "no aiortc venv at {}: run `source scripts/setup.sh`", venv.display());
    python
}

/// One run of the example against aiortc: Ok(RESULT line) when every check passed.
fn run_once(python: &Path, elf: &Path, example: &str, log: &Path) -> std::result::Result<String, String> {
    let script = project_root().join("lab/interop/idf_example_peer.py");
    // The peer bounds each step (30 s); `timeout` bounds the whole run should the peer hang.
    let sh = Shell::new().map_err(|e| e.to_string())?;
    let out = cmd!(sh, "timeout 180 {python} {script} --elf {elf} --example {example} --device-log {log}")
        .quiet()
        .ignore_status()
        .output()
        .map_err(|e| format!("cannot start {}: {e}", script.display()))?;
    verdict_of(&out, "peer")
}

/// A peer script's `RESULT ... ok=1` line, or what went wrong: its last RESULT line, exit code and
/// last line of stderr (`who` names it).
fn verdict_of(out: &std::process::Output, who: &str) -> Result<String, String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = stdout.lines().find(|l| l.starts_with("RESULT ")).unwrap_or("no RESULT line").to_string();
    if out.status.success() && result.ends_with(" ok=1") {
        Ok(result)
    } else {
        Err(format!(
            "{result} (exit {:?}); {who}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        ))
    }
}

#[test]
fn idf_e2e_examples_build_for_linux_and_connect_to_aiortc() {
    let Some((idf, _heavy)) = idf_for("idf::e2e::idf_e2e_examples_build_for_linux_and_connect_to_aiortc") else {
        return;
    };
    let python = interop_python();
    let logs = project_root().join("lab-out/idf-e2e");
    std::fs::create_dir_all(&logs).unwrap();
    say(&format!("idf-e2e: ESP-IDF {}.{} at {}", idf.version.0, idf.version.1, idf.path.display()));
    let mut failures = Vec::new();
    for policy_name in ["lean", "stock"] {
        let policy_path = Policy::path_for(policy_name);
        let policy = Policy::load(&policy_path).unwrap();
        let root = cache_root().join("idf-e2e").join(policy_name);
        stage_project(&root).unwrap();
        let code = layout::configure_into(&root, &policy_path, false, false).unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        for example in CONSOLE_EXAMPLES {
            let dir = build_dir(&root, example, "linux", policy_name);
            let started = std::time::Instant::now();
            let build_log = logs.join(format!("{policy_name}-{example}-build.log"));
            if let Err(e) = build_in(&idf, &root, example, "linux", &dir, &[], Some(&build_log)) {
                panic!("idf.py build of {example} ({policy_name}) failed: {e:#}\n(build directory {})", dir.display());
            }
            let built = started.elapsed();
            // The policy reached the build: its record length is in the sdkconfig idf.py used.
            let sdkconfig = std::fs::read_to_string(dir.join("sdkconfig")).unwrap();
            let expected = format!("CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN={}", policy.mbedtls.ssl_in_content_len);
            assert!(
                sdkconfig.lines().any(|l| l == expected),
                "{}: {expected} missing",
                dir.join("sdkconfig").display()
            );
            let elf = dir.join(format!("{example}.elf"));
            let mut passed = 0;
            let started = std::time::Instant::now();
            for run in 1..=RUNS {
                let log = logs.join(format!("{policy_name}-{example}-{run}.log"));
                match run_once(&python, &elf, example, &log) {
                    Ok(_) => passed += 1,
                    Err(why) => {
                        failures.push(format!("{policy_name} {example} run {run}: {why}; device log {}", log.display()))
                    }
                }
            }
            say(&format!(
                "idf-e2e: {policy_name:<5} {example:<16} built in {:>4.0} s, {passed}/{RUNS} runs passed in {:.0} s",
                built.as_secs_f64(),
                started.elapsed().as_secs_f64()
            ));
        }
    }
    assert!(failures.is_empty(), "{} run(s) failed:\n{}", failures.len(), failures.join("\n"));
}

/// A throwaway copy of lab/fixtures/idf_app (its own CMakeLists.txt, main and sdkconfig.defaults)
/// at `$ESP_DC_CACHE/idf-e2e/<name>`, given the component tree with `configure --into` (lean).
fn configured_fixture_app(name: &str) -> PathBuf {
    let app = cache_root().join("idf-e2e").join(name);
    Tree::read(&project_root().join("lab/fixtures/idf_app")).unwrap().write(&app).unwrap();
    let root = layout::application_root(&app).unwrap();
    assert_eq!(layout::configure_into(&root, &Policy::path_for("lean"), false, false).unwrap(), ExitCode::SUCCESS);
    app
}

/// idf.py on a fixture application and its `build/`, every step's output kept in one log that a
/// failed step names.
struct AppIdfPy<'a> {
    idf: &'a Idf,
    python: PathBuf,
    app: PathBuf,
    build: PathBuf,
    log: PathBuf,
    output: Vec<u8>,
}

impl<'a> AppIdfPy<'a> {
    fn new(idf: &'a Idf, app: &Path, log_name: &str) -> AppIdfPy<'a> {
        let python = std::env::var_os("IDF_PYTHON_ENV_PATH")
            .map(|v| PathBuf::from(v).join("bin/python"))
            .unwrap_or_else(|| "python3".into());
        let log = project_root().join("lab-out/idf-e2e").join(log_name);
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        AppIdfPy { idf, python, app: app.to_path_buf(), build: app.join("build"), log, output: Vec::new() }
    }

    fn run(&mut self, args: &[&str]) {
        let sh = Shell::new().unwrap();
        let (python, idf_py, app, build) = (&self.python, &self.idf.idf_py, &self.app, &self.build);
        let out = cmd!(sh, "{python} {idf_py} -C {app} -B {build} {args...}")
            .env("IDF_PATH", &self.idf.path)
            .quiet()
            .ignore_status()
            .output()
            .unwrap();
        self.output.extend_from_slice(&out.stdout);
        self.output.extend_from_slice(&out.stderr);
        std::fs::write(&self.log, &self.output).unwrap();
        assert!(
            out.status.success(),
            "idf.py {} of {} failed; see {}",
            args.join(" "),
            self.app.display(),
            self.log.display()
        );
    }
}

/// README "Use it in your application", done by a test: `configure --into` a throwaway
/// application (lab/fixtures/idf_app: its own CMakeLists.txt, main and sdkconfig.defaults), then
/// idf.py builds it for linux and it runs: one PeerConnection, an offer with its data channel.
#[test]
fn idf_application_takes_the_tree_with_configure_into() {
    let Some((idf, _heavy)) = idf_for("idf::e2e::idf_application_takes_the_tree_with_configure_into") else {
        return;
    };
    let app = configured_fixture_app("app");
    let own_main = std::fs::read(project_root().join("lab/fixtures/idf_app/main/app_main.c")).unwrap();
    assert_eq!(
        std::fs::read(app.join("main/app_main.c")).unwrap(),
        own_main,
        "configure touched the application's main"
    );
    let defaults = std::fs::read_to_string(app.join("sdkconfig.defaults")).unwrap();
    assert!(
        defaults.contains("CONFIG_FREERTOS_HZ=1000") && defaults.contains("CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN=1536"),
        "{defaults}"
    );

    let mut idf_py = AppIdfPy::new(&idf, &app, "app-build.log");
    if !configured_for(&idf_py.build, "linux") {
        idf_py.run(&["--preview", "set-target", "linux"]);
    }
    idf_py.run(&["build"]);
    let build = idf_py.build;
    let (sh, elf) = (Shell::new().unwrap(), build.join("throwaway_app.elf"));
    let run = cmd!(sh, "timeout 60 {elf}").quiet().ignore_status().output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    say(&format!(
        "idf-e2e: application via configure --into: {}",
        stdout.lines().find(|l| l.starts_with("app:")).unwrap_or("no line")
    ));
    assert!(
        run.status.success() && stdout.contains("app: offer") && stdout.contains("data channel present"),
        "{stdout}"
    );
}

/// The compile command of every source under `components/<component>/` in a build directory's
/// compile_commands.json (what ESP-IDF's CMake really passes to the compiler), without the shell
/// quotes CMake puts around values such as `-DESP_DC_ALLOC_CAPS="(MALLOC_CAP_SPIRAM)"`.
fn compile_commands_of(build: &Path, component: &str) -> Vec<String> {
    let path = build.join("compile_commands.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let entries: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let marker = format!("/components/{component}/");
    let commands: Vec<String> = entries
        .iter()
        .filter(|e| e["file"].as_str().is_some_and(|f| f.contains(&marker) && f.ends_with(".c")))
        .map(|e| e["command"].as_str().unwrap_or_default().replace('"', ""))
        .collect();
    assert!(!commands.is_empty(), "{}: no C source of {component}", path.display());
    commands
}

/// Placement is Kconfig, not generated CMake: an application configured once under lean, whose
/// sdkconfig is then edited as `idf.py menuconfig` would save it (libsrtp's heap to internal RAM,
/// libjuice's malloc redirect off, a libjuice knob changed), compiles with the changed definitions
/// after `idf.py reconfigure`, without configure running again; compile_commands.json shows both.
#[test]
fn idf_menuconfig_changes_placement_without_configure() {
    let Some((idf, _heavy)) = idf_for("idf::e2e::idf_menuconfig_changes_placement_without_configure") else {
        return;
    };
    let app = configured_fixture_app("kconfig-app");
    let sdkconfig = app.join("sdkconfig");
    // Start from the policy: a sdkconfig left by an earlier run holds that run's edit.
    let _ = std::fs::remove_file(&sdkconfig);
    let mut idf_py = AppIdfPy::new(&idf, &app, "kconfig-app.log");
    let build = idf_py.build.clone();
    let first: &[&str] =
        if configured_for(&build, "linux") { &["reconfigure"] } else { &["--preview", "set-target", "linux"] };
    idf_py.run(first);
    let component_files = || {
        ["libsrtp", "libjuice"].map(|c| std::fs::read(app.join("components").join(c).join("CMakeLists.txt")).unwrap())
    };
    let generated = component_files();
    let redirect = "esp_dc_alloc_redirect.h";
    let psram = "ESP_DC_ALLOC_CAPS=(MALLOC_CAP_SPIRAM)";
    let internal = "ESP_DC_ALLOC_CAPS=(MALLOC_CAP_INTERNAL|MALLOC_CAP_8BIT)";
    let lean_candidates = "-DICE_MAX_CANDIDATES_COUNT=8 ";
    for command in compile_commands_of(&build, "libsrtp") {
        assert!(command.contains(psram) && command.contains(redirect), "lean libsrtp: {command}");
    }
    for command in compile_commands_of(&build, "libjuice") {
        assert!(command.contains(redirect) && command.contains(lean_candidates), "lean libjuice: {command}");
    }

    // What menuconfig writes: the other member of a choice unset, the chosen one set.
    let text = std::fs::read_to_string(&sdkconfig).unwrap();
    let mut edited = text.clone();
    for (from, to) in [
        ("CONFIG_ESP_DC_LIBSRTP_HEAP_PSRAM=y", "# CONFIG_ESP_DC_LIBSRTP_HEAP_PSRAM is not set"),
        ("# CONFIG_ESP_DC_LIBSRTP_HEAP_INTERNAL is not set", "CONFIG_ESP_DC_LIBSRTP_HEAP_INTERNAL=y"),
        ("CONFIG_ESP_DC_LIBJUICE_REDIRECT_MALLOC=y", "# CONFIG_ESP_DC_LIBJUICE_REDIRECT_MALLOC is not set"),
        ("CONFIG_ESP_DC_LIBJUICE_MAX_CANDIDATES=8", "CONFIG_ESP_DC_LIBJUICE_MAX_CANDIDATES=12"),
    ] {
        assert!(edited.lines().any(|l| l == from), "{}: no line `{from}`", sdkconfig.display());
        edited = edited.replacen(&format!("{from}\n"), &format!("{to}\n"), 1);
    }
    std::fs::write(&sdkconfig, edited).unwrap();
    idf_py.run(&["reconfigure"]);
    for command in compile_commands_of(&build, "libsrtp") {
        assert!(command.contains(internal) && !command.contains(psram), "edited libsrtp: {command}");
        assert!(command.contains(redirect), "libsrtp's redirect was not edited: {command}");
    }
    for command in compile_commands_of(&build, "libjuice") {
        assert!(!command.contains(redirect), "edited libjuice still redirected: {command}");
        assert!(command.contains("-DICE_MAX_CANDIDATES_COUNT=12 "), "edited libjuice: {command}");
    }
    assert_eq!(component_files(), generated, "the component files changed: configure must not be needed");
    say("idf-e2e: menuconfig edit (libsrtp heap internal, libjuice redirect off, max_candidates 12) reached compile_commands.json");
}

/// Runs per policy and client of the WHEP example (each against a fresh device process).
const WHEP_RUNS: usize = 3;
/// Frames Chromium must decode before the page ends the session with DELETE.
const WHEP_FRAMES: u64 = 30;

/// The example as a running program on a port of its own (tests may run side by side); killed
/// when dropped.
struct WhepDevice {
    child: std::process::Child,
    port: u16,
}

impl Drop for WhepDevice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WhepDevice {
    /// Starts the ELF with its console in `log` and waits until its HTTP server accepts.
    fn start(elf: &Path, log: &Path) -> std::result::Result<WhepDevice, String> {
        // A port the kernel just had free; the device takes it a moment later.
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let console = std::fs::File::create(log).map_err(|e| e.to_string())?;
        let sh = Shell::new().map_err(|e| e.to_string())?;
        let program = cmd!(sh, "{elf}").env("WHEP_CAMERA_HTTP_PORT", port.to_string());
        let stdout = Io::File(console.try_clone().map_err(|e| e.to_string())?);
        let child = background::spawn(program, Io::Null, stdout, Io::File(console))
            .map_err(|e| format!("cannot start {}: {e}", elf.display()))?;
        let mut device = WhepDevice { child, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = device.child.try_wait() {
                return Err(format!("the device exited ({status}) before serving"));
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("nothing listens on port {port} after 20 s"));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(device)
    }
}

/// What the page reported: the highest `frames decoded` and echo counts, and how it ended.
#[derive(Debug, Default)]
struct PageReport {
    frames: u64,
    echoes: u64,
    created: bool,
    deleted: bool,
    failure: Option<String>,
}

impl PageReport {
    /// One line the page POSTed (page.html's log()).
    fn read(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("status frames decoded ") {
            // "status frames decoded 14, echoes 1 of 1, connected"
            let mut numbers = rest.split(|c: char| !c.is_ascii_digit()).filter(|w| !w.is_empty());
            let frames = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let echoes = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            self.frames = self.frames.max(frames);
            self.echoes = self.echoes.max(echoes);
        } else if line.starts_with("POST /whep: 201") {
            self.created = true;
        } else if line.starts_with("POST /whep: ") || line == "connection failed" {
            self.failure = Some(line.to_string());
        } else if line.starts_with("DELETE /whep/") {
            if line.ends_with(": 200") {
                self.deleted = true;
            } else {
                self.failure = Some(line.to_string());
            }
        }
    }
}

/// Headless Chromium on `url` with its own profile, stderr to `log`. The flags of the interop
/// runner (interop/chromium.rs): no network at start (this machine has no route out), plain host
/// candidates instead of mDNS names.
fn start_chromium(
    chromium: &Path,
    url: &str,
    profile: &Path,
    log: &Path,
) -> std::result::Result<std::process::Child, String> {
    let sh = Shell::new().map_err(|e| e.to_string())?;
    let user_data = format!("--user-data-dir={}", profile.display());
    let browser = cmd!(
        sh,
        "{chromium} --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking --disable-component-update --disable-sync --autoplay-policy=no-user-gesture-required --disable-features=WebRtcHideLocalIpsWithMdns --enable-logging=stderr {user_data} {url}"
    );
    let stderr = Io::File(std::fs::File::create(log).map_err(|e| e.to_string())?);
    background::spawn(browser, Io::Null, Io::Null, stderr)
        .map_err(|e| format!("cannot start {}: {e}", chromium.display()))
}

/// Headless Chromium loads the page from the device, connects (the page offers, POSTs to /whep),
/// plays until WHEP_FRAMES frames are decoded and 3 messages echoed, then DELETEs the session. The
/// page reports its log lines to a collector here (its `report` query). Post-quantum DTLS stays
/// on (Chromium as shipped): the device answers, so it is the DTLS client and never has to
/// reassemble the fragmented ClientHello mbedTLS's server refuses (docs/interop.md).
fn whep_chromium_once(chromium: &Path, elf: &Path, logs: &Path, name: &str) -> std::result::Result<String, String> {
    let device = WhepDevice::start(elf, &logs.join(format!("{name}-device.log")))?;
    let collector = tiny_http::Server::http("127.0.0.1:0").map_err(|e| format!("collector: {e}"))?;
    let collector_port = collector.server_addr().to_ip().map(|a| a.port()).ok_or("collector has no port")?;
    let profile = tempfile::Builder::new().prefix("esp-dc-chromium-").tempdir().map_err(|e| e.to_string())?;
    let url = format!(
        "http://127.0.0.1:{}/?autoconnect&stop_after_frames={WHEP_FRAMES}&report=http://127.0.0.1:{collector_port}/",
        device.port
    );
    let mut browser = start_chromium(chromium, &url, profile.path(), &logs.join(format!("{name}-browser.log")))?;
    let mut page_log = std::fs::File::create(logs.join(format!("{name}-page.log"))).map_err(|e| e.to_string())?;
    let mut report = PageReport::default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !report.deleted && report.failure.is_none() && std::time::Instant::now() < deadline {
        let Ok(Some(mut request)) = collector.recv_timeout(std::time::Duration::from_millis(500)) else { continue };
        let mut line = String::new();
        let _ = request.as_reader().read_to_string(&mut line);
        let _ = request.respond(tiny_http::Response::empty(204));
        let _ = writeln!(page_log, "{line}");
        report.read(&line);
    }
    let _ = browser.kill();
    let _ = browser.wait();
    drop(device);
    let device_log = std::fs::read_to_string(logs.join(format!("{name}-device.log"))).unwrap_or_default();
    let summary = format!("frames decoded {} echoes {} deleted {}", report.frames, report.echoes, report.deleted);
    let device_saw_delete = device_log.contains("-> 200 OK") && device_log.contains("session ended");
    if report.created
        && report.deleted
        && report.frames >= WHEP_FRAMES
        && report.echoes >= 3
        && report.failure.is_none()
        && device_saw_delete
    {
        Ok(summary)
    } else {
        Err(format!("{summary}; {}", report.failure.as_deref().unwrap_or("no failure line (timed out after 60 s)")))
    }
}

/// lab/interop/whep_client.py: aiortc as a WHEP player, with the endpoint's error statuses
/// (415, 400, 405, 503 while a session runs, 405 PATCH, 404 after DELETE).
fn whep_aiortc_once(python: &Path, elf: &Path, logs: &Path, name: &str) -> std::result::Result<String, String> {
    let device = WhepDevice::start(elf, &logs.join(format!("{name}-device.log")))?;
    let script = project_root().join("lab/interop/whep_client.py");
    let sh = Shell::new().map_err(|e| e.to_string())?;
    let url = format!("http://127.0.0.1:{}", device.port);
    let out = cmd!(sh, "timeout 120 {python} {script} --url {url} --frames 10 --messages 8 --errors")
        .quiet()
        .ignore_status()
        .output()
        .map_err(|e| format!("cannot start {}: {e}", script.display()))?;
    drop(device);
    verdict_of(&out, "client")
}

/// examples/whep_camera built by ESP-IDF for linux (esp_http_server on the host's sockets) under
/// lean and stock; per policy WHEP_RUNS Chromium runs (page from the device, video decoded, data
/// channel echoed, DELETE) and WHEP_RUNS aiortc runs (WHEP player plus error statuses).
#[test]
fn idf_whep_camera_serves_chromium_and_aiortc_over_http() {
    let Some((idf, _heavy)) = idf_for("idf::e2e::idf_whep_camera_serves_chromium_and_aiortc_over_http") else {
        return;
    };
    let python = interop_python();
    let chromium =
        std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(chromium.is_file(), "no Chromium at {}: run `bash scripts/setup.sh` or set CHROMIUM", chromium.display());
    let logs = project_root().join("lab-out/idf-e2e");
    std::fs::create_dir_all(&logs).unwrap();
    let example = "whep_camera";
    let mut failures = Vec::new();
    for policy_name in ["lean", "stock"] {
        let policy_path = Policy::path_for(policy_name);
        let root = cache_root().join("idf-e2e").join(policy_name);
        stage_project(&root).unwrap();
        assert_eq!(layout::configure_into(&root, &policy_path, false, false).unwrap(), ExitCode::SUCCESS);
        let dir = build_dir(&root, example, "linux", policy_name);
        let started = std::time::Instant::now();
        let build_log = logs.join(format!("{policy_name}-{example}-build.log"));
        if let Err(e) = build_in(&idf, &root, example, "linux", &dir, &[], Some(&build_log)) {
            panic!("idf.py build of {example} ({policy_name}) failed: {e:#}\n(build directory {})", dir.display());
        }
        let built = started.elapsed();
        let elf = dir.join(format!("{example}.elf"));
        let started = std::time::Instant::now();
        let (mut chromium_passed, mut aiortc_passed) = (0, 0);
        let mut last = String::new();
        for run in 1..=WHEP_RUNS {
            let name = format!("{policy_name}-{example}-chromium-{run}");
            match whep_chromium_once(&chromium, &elf, &logs, &name) {
                Ok(summary) => {
                    chromium_passed += 1;
                    last = summary;
                }
                Err(why) => failures.push(format!("{name}: {why}; logs {}/{name}-*.log", logs.display())),
            }
            let name = format!("{policy_name}-{example}-aiortc-{run}");
            match whep_aiortc_once(&python, &elf, &logs, &name) {
                Ok(_) => aiortc_passed += 1,
                Err(why) => failures.push(format!("{name}: {why}; device log {}/{name}-device.log", logs.display())),
            }
        }
        say(&format!(
            "idf-e2e: {policy_name:<5} {example:<16} built in {:>4.0} s, chromium {chromium_passed}/{WHEP_RUNS} and aiortc {aiortc_passed}/{WHEP_RUNS} WHEP runs passed in {:.0} s (chromium: {last})",
            built.as_secs_f64(),
            started.elapsed().as_secs_f64()
        ));
    }
    assert!(failures.is_empty(), "{} run(s) failed:\n{}", failures.len(), failures.join("\n"));
}

/// One Chromium viewer of the three-viewer run: its browser, profile and what its page reported.
struct Viewer {
    browser: std::process::Child,
    _profile: tempfile::TempDir,
    report: PageReport,
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.browser.kill();
        let _ = self.browser.wait();
    }
}

/// A POST of an offer to the device's /whep: the status line and the Retry-After header.
fn post_offer(port: u16, offer: &str) -> std::result::Result<(String, Option<String>), String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20))).map_err(|e| e.to_string())?;
    write!(
        stream,
        "POST /whep HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{offer}",
        offer.len()
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.lines().next().unwrap_or_default().to_string();
    let retry_after = response
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("retry-after")))
        .map(|(_, v)| v.trim().to_string());
    Ok((status, retry_after))
}

/// examples/whep_camera under lean with CONFIG_WHEP_MAX_SESSIONS=3 (its own project copy and
/// build, so the one-session builds above keep their sdkconfig): three headless Chromium viewers
/// at once, each decoding frames; the second leaves (DELETE) after 30 frames while the first and
/// third keep decoding, then comes back in a new browser and decodes again; with three sessions
/// running, a fourth POST gets 503 with Retry-After.
#[test]
fn idf_whep_camera_serves_three_chromium_viewers_at_once() {
    let Some((idf, _heavy)) = idf_for("idf::e2e::idf_whep_camera_serves_three_chromium_viewers_at_once") else {
        return;
    };
    let chromium =
        std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(chromium.is_file(), "no Chromium at {}: run `bash scripts/setup.sh` or set CHROMIUM", chromium.display());
    let logs = project_root().join("lab-out/idf-e2e");
    std::fs::create_dir_all(&logs).unwrap();
    let (example, policy_name) = ("whep_camera", "lean");
    let root = cache_root().join("idf-e2e").join("lean-3-viewers");
    stage_project(&root).unwrap();
    assert_eq!(layout::configure_into(&root, &Policy::path_for(policy_name), false, false).unwrap(), ExitCode::SUCCESS);
    let defaults = root.join("examples").join(example).join("sdkconfig.defaults");
    let text = std::fs::read_to_string(&defaults).unwrap();
    if !text.contains("CONFIG_WHEP_MAX_SESSIONS=3") {
        std::fs::write(&defaults, format!("{text}\n# e2e: three viewers at once\nCONFIG_WHEP_MAX_SESSIONS=3\n"))
            .unwrap();
    }
    let dir = build_dir(&root, example, "linux", policy_name);
    let build_log = logs.join("lean-3-viewers-whep_camera-build.log");
    if let Err(e) = build_in(&idf, &root, example, "linux", &dir, &[], Some(&build_log)) {
        panic!("idf.py build of {example} (lean, 3 sessions) failed: {e:#}\n(build directory {})", dir.display());
    }
    let sdkconfig = std::fs::read_to_string(dir.join("sdkconfig")).unwrap();
    assert!(sdkconfig.contains("CONFIG_WHEP_MAX_SESSIONS=3"), "the build did not take CONFIG_WHEP_MAX_SESSIONS=3");
    let elf = dir.join(format!("{example}.elf"));
    let name = "lean-whep_camera-3-viewers";
    let device = WhepDevice::start(&elf, &logs.join(format!("{name}-device.log"))).unwrap();
    let collector = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let collector_port = collector.server_addr().to_ip().unwrap().port();
    // Viewer k reports to /k. The first and third stay for 250 frames (25 s at the example's 10
    // fps), the second and its return leave after 30.
    let start = |k: usize, frames: u64| {
        let profile = tempfile::Builder::new().prefix("esp-dc-chromium-").tempdir().unwrap();
        let url = format!(
            "http://127.0.0.1:{}/?autoconnect&stop_after_frames={frames}&report=http://127.0.0.1:{collector_port}/{k}",
            device.port
        );
        let browser = start_chromium(&chromium, &url, profile.path(), &logs.join(format!("{name}-{k}-browser.log")))
            .unwrap_or_else(|e| panic!("{e}"));
        Viewer { browser, _profile: profile, report: PageReport::default() }
    };
    let mut viewers: Vec<Viewer> = Vec::new();
    for (k, frames) in [(1, 250), (2, 30), (3, 250)] {
        viewers.push(start(k, frames));
    }
    let mut page_log = std::fs::File::create(logs.join(format!("{name}-pages.log"))).unwrap();
    // Frames the first and third had decoded when the second left, and the fourth POST's answer.
    let mut at_leave: Option<(u64, u64)> = None;
    let mut fourth: Option<(String, Option<String>)> = None;
    let mut rejoined = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let offer = std::fs::read_to_string(
        project_root().join("examples/common_components/whep_endpoint/host_test/offers/chromium.sdp"),
    )
    .unwrap_or_else(|_| "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=recvonly\r\n".into());
    loop {
        let done =
            viewers.len() == 4 && viewers[3].report.deleted && viewers[0].report.deleted && viewers[2].report.deleted;
        let failed = viewers.iter().any(|v| v.report.failure.is_some());
        if done || failed || std::time::Instant::now() > deadline {
            break;
        }
        let Ok(Some(mut request)) = collector.recv_timeout(std::time::Duration::from_millis(200)) else { continue };
        let k: usize = request.url().trim_start_matches('/').parse().unwrap_or(0);
        let mut line = String::new();
        let _ = request.as_reader().read_to_string(&mut line);
        let _ = request.respond(tiny_http::Response::empty(204));
        let _ = writeln!(page_log, "{k}: {line}");
        let Some(viewer) = k.checked_sub(1).and_then(|i| viewers.get_mut(i)) else { continue };
        viewer.report.read(&line);
        // The second left: note where the others were, bring it back in a new browser.
        if !rejoined && viewers[1].report.deleted {
            at_leave = Some((viewers[0].report.frames, viewers[2].report.frames));
            rejoined = true;
            viewers.push(start(4, 30));
        }
        // Three sessions running (the return is in): a fourth viewer is turned away.
        if fourth.is_none()
            && viewers.len() == 4
            && viewers[3].report.created
            && !viewers[0].report.deleted
            && !viewers[2].report.deleted
        {
            fourth = Some(post_offer(device.port, &offer).unwrap());
        }
    }
    let summary: Vec<String> = viewers
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "viewer {}: frames {} created {} deleted {} failure {:?}",
                i + 1,
                v.report.frames,
                v.report.created,
                v.report.deleted,
                v.report.failure
            )
        })
        .collect();
    drop(viewers);
    drop(device);
    let why = format!("{}; fourth POST {fourth:?}; logs {}/{name}-*", summary.join("; "), logs.display());
    assert!(!summary.iter().any(|s| s.contains("Some(")), "{why}");
    for line in &summary {
        assert!(line.contains("created true") && line.contains("deleted true"), "{why}");
    }
    let (first_then, third_then) = at_leave.unwrap_or_else(|| panic!("the second viewer never left: {why}"));
    let frames = |i: usize| {
        summary[i]
            .split("frames ")
            .nth(1)
            .and_then(|w| w.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(frames(0) >= 250 && frames(2) >= 250 && frames(1) >= 30 && frames(3) >= 30, "{why}");
    assert!(
        frames(0) > first_then + 30 && frames(2) > third_then + 30,
        "the others did not keep decoding after the second left ({first_then}, {third_then}): {why}"
    );
    let (status, retry_after) = fourth.unwrap_or_else(|| panic!("no moment with three sessions running: {why}"));
    assert!(status.contains(" 503 "), "fourth POST: {status}; {why}");
    assert!(
        retry_after.is_some_and(|v| v.parse::<u32>().is_ok_and(|s| s > 0)),
        "fourth POST without Retry-After: {why}"
    );
    say(&format!("idf-e2e: lean whep_camera, 3 sessions: {}; fourth POST {status}", summary.join("; ")));
}
