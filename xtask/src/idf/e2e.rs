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
use crate::lab::host::cache_root;
use crate::upstream::Tree;
use std::io::Write;

const RUNS: usize = 10;

/// Lines the test must show even when it passes (libtest captures only the print macros).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The examples, copied; configure then adds our components and sdkconfig.defaults, as it does
/// for any application. Unchanged files are not touched, so the builds stay incremental.
fn stage_project(root: &Path) -> Result<()> {
    Tree::read(&project_root().join("examples"))?.write(&root.join("examples"))?;
    Ok(())
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
    let out = std::process::Command::new("timeout")
        .arg("180")
        .arg(python)
        .arg(&script)
        .arg("--elf")
        .arg(elf)
        .args(["--example", example, "--device-log"])
        .arg(log)
        .output()
        .map_err(|e| format!("cannot start {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = stdout.lines().find(|l| l.starts_with("RESULT ")).unwrap_or("no RESULT line").to_string();
    if out.status.success() && result.ends_with(" ok=1") {
        Ok(result)
    } else {
        Err(format!(
            "{result} (exit {:?}); peer: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        ))
    }
}

#[test]
fn idf_e2e_examples_build_for_linux_and_connect_to_aiortc() {
    let Some(idf_root) = tree_for_tests() else {
        say_skipped("idf::e2e::idf_e2e_examples_build_for_linux_and_connect_to_aiortc");
        return;
    };
    let _heavy = HEAVY_TEST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let idf = locate(Some(&idf_root), None, None).unwrap();
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
        let code = configure::configure_into(&root, &policy_path, false, false).unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        for example in EXAMPLES {
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

/// README "Use it in your application", done by a test: `configure --into` a throwaway
/// application (lab/fixtures/idf_app: its own CMakeLists.txt, main and sdkconfig.defaults), then
/// idf.py builds it for linux and it runs: one PeerConnection, an offer with its data channel.
#[test]
fn idf_application_takes_the_tree_with_configure_into() {
    let Some(idf_root) = tree_for_tests() else {
        say_skipped("idf::e2e::idf_application_takes_the_tree_with_configure_into");
        return;
    };
    let idf = locate(Some(&idf_root), None, None).unwrap();
    let _heavy = HEAVY_TEST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let app = cache_root().join("idf-e2e/app");
    Tree::read(&project_root().join("lab/fixtures/idf_app")).unwrap().write(&app).unwrap();
    let own_main = std::fs::read(app.join("main/app_main.c")).unwrap();
    let root = configure::application_root(&app).unwrap();
    assert_eq!(configure::configure_into(&root, &Policy::path_for("lean"), false, false).unwrap(), ExitCode::SUCCESS);
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

    let build = app.join("build");
    let python = std::env::var_os("IDF_PYTHON_ENV_PATH")
        .map(|v| PathBuf::from(v).join("bin/python"))
        .unwrap_or_else(|| "python3".into());
    let log = project_root().join("lab-out/idf-e2e/app-build.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let mut output = Vec::new();
    let set_target = !configured_for(&build, "linux");
    let steps: Vec<Vec<&str>> =
        if set_target { vec![vec!["--preview", "set-target", "linux"], vec!["build"]] } else { vec![vec!["build"]] };
    for step in steps {
        let out = std::process::Command::new(&python)
            .arg(idf.idf_py.as_os_str())
            .arg("-C")
            .arg(&app)
            .arg("-B")
            .arg(&build)
            .args(&step)
            .env("IDF_PATH", &idf.path)
            .output()
            .unwrap();
        output.extend_from_slice(&out.stdout);
        output.extend_from_slice(&out.stderr);
        std::fs::write(&log, &output).unwrap();
        assert!(
            out.status.success(),
            "idf.py {} of the throwaway application failed; see {}",
            step.join(" "),
            log.display()
        );
    }
    let run = std::process::Command::new("timeout").arg("60").arg(build.join("throwaway_app.elf")).output().unwrap();
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
