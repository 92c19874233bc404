//! `cargo xtask interop`: the lab's measured device peer (lean or stock) against independent
//! WebRTC implementations on loopback, one line per case with pass/FAIL and the device's memory.
//!
//! The device is the lab's driver (`scenario device interop`, recorder preloaded); the remote is
//! aiortc (lab/interop/aiortc_peer.py) or headless Chromium running lab/interop/chromium_peer.html.
//! Both speak the driver's SIG/CTL lines: aiortc on stdin/stdout, Chromium through the tiny HTTP
//! bridge in `chromium.rs`. Remotes report their verdict on a `RESULT key=value ...` line that the
//! runner keeps for itself instead of relaying.

mod chromium;
mod firefox;
mod http;
#[cfg(test)]
mod tests;

use crate::exit::{self, Outcome};
use crate::fsutil::{project_root, write_atomic};
use crate::ledger::account;
use crate::policy::Policy;
use crate::relay;
use crate::replica::{self, run as peers};
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const PEERS: &[&str] = &["chromium", "firefox", "aiortc"];
pub const OFFERERS: &[&str] = &["device", "remote"];

/// Run the device peer (lean and stock) against Chromium and aiortc on loopback.
///
/// Every case connects the measured device (the lab's 32-bit replica, recorder preloaded) to an
/// independent WebRTC implementation: the remote sends messages of 1 B to 64 KB on an ordered and
/// an unordered data channel and checks each echo; the device sends an H.264 clip and the remote
/// counts the frames it receives and decodes. The offerer alternates, so the device is DTLS
/// client (it answers) and DTLS server (it offers; both remotes answer `a=setup:active`).
/// One line per case: pass/FAIL, device DTLS role, messages verified, frames, and the device's
/// live bytes when connected, its peak, threads and stack high-water sum (from the recorder).
/// A failing case keeps both peers' logs in <out>/<case>/ and prints their tails.
///
/// Exit 0: every case passed; 1: a case failed; 2: missing prerequisites (run scripts/setup.sh).
///
/// Examples:
///   cargo xtask interop                                # all 8 cases (peer x policy x offerer)
///   cargo xtask interop --peer chromium --policy lean  # Chromium, lean, both directions
///   cargo xtask interop --peer aiortc --offer remote --json interop.json
///   cargo xtask interop --peer chromium --no-video     # data channels only
///   cargo xtask interop --peer aiortc --offer device --device-dtls-server --repeat 500
///                                                      # the DTLS server path, 500 runs in a row
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Remote implementations to test against; repeat for several.
    #[arg(long = "peer", value_parser = clap::builder::PossibleValuesParser::new(PEERS), default_values = PEERS)]
    peers: Vec<String>,
    /// Policies the device is built with (name under policies/ or a path); repeat for several.
    #[arg(long = "policy", default_values = ["lean", "stock"])]
    policies: Vec<String>,
    /// Who makes the offer; repeat for both (the default).
    #[arg(long = "offer", value_parser = clap::builder::PossibleValuesParser::new(OFFERERS), default_values = OFFERERS)]
    offerers: Vec<String>,
    /// Messages per data channel (two channels per case).
    #[arg(long, default_value_t = 20)]
    messages: u32,
    /// Decoded frames the remote waits for (10 s at most) before it ends the case.
    #[arg(long, default_value_t = 30)]
    frames: u32,
    /// Data channels only: the remote neither offers nor accepts video.
    #[arg(long)]
    no_video: bool,
    /// Turn the browsers' post-quantum DTLS key exchange off (Chromium's WebRtcPqcForDtls,
    /// Firefox's ML-KEM key share). On by default, as they ship: their ClientHello then arrives
    /// in two DTLS fragments, which the device never has to parse because it is the DTLS client
    /// in both offer directions (policy knob libdatachannel.dtls_client_when_offering).
    #[arg(long, alias = "chromium-no-pqc")]
    no_pqc: bool,
    /// The device offers a=setup:actpass (upstream's offer) instead of active, so the remote
    /// answers active and the device is the DTLS server: mbedTLS's server path, tested against
    /// aiortc. A browser with post-quantum DTLS then fails (fragmented ClientHello).
    #[arg(long)]
    device_dtls_server: bool,
    /// Run every selected case this many times in a row and count the failures (a reliability
    /// run). Runs after the first go without the recorder, so they show no memory figures; a
    /// failing run's logs stay in <out>/<case>/run-<n>/, a passing run's are removed.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Trickle ICE: both sides send their description at once and their candidates as gathered
    /// (`SIG 0 candidate` lines). The browsers trickle; aiortc does not (it gathers before its
    /// description is made) but takes the device's trickled candidates.
    #[arg(long)]
    trickle: bool,
    /// The browser rejects the device's video m-line (port 0), as one without H.264 does: the
    /// data channels must still work (device offers; the device's offer puts them first).
    #[arg(long)]
    refuse_video: bool,
    /// Lossy link: packets between the peers cross an in-process UDP relay that drops this
    /// percentage of them (both directions, ICE and DTLS included).
    #[arg(long, value_name = "PERCENT")]
    loss: Option<f64>,
    /// With --loss (or alone): each packet is held back a uniform 0..=MS, so packets reorder.
    #[arg(long, value_name = "MS")]
    jitter_ms: Option<u32>,
    /// Write every case as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Directory for each case's logs and trace.
    #[arg(long, default_value = "lab-out/interop")]
    out: PathBuf,
}

/// What one case showed. Field names are part of the `--json` interface.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CaseResult {
    pub case: String,
    pub peer: String,
    pub policy: String,
    pub offer: String,
    pub passed: bool,
    /// Why it failed, empty when it passed.
    pub failure: String,
    /// `client` or `server`, from the answer's `a=setup:`.
    pub device_dtls_role: String,
    pub messages_verified: u64,
    pub messages_expected: u64,
    pub frames_sent: u64,
    pub frames_received: u64,
    /// `None` when the remote cannot tell (no H.264 decoder).
    pub frames_decoded: Option<u64>,
    /// What the device did with video: `sent`, `refused` (the remote rejected the m-line) or
    /// `none` (the remote's offer had no H.264).
    pub device_video: String,
    /// Why the video part of this case was not checked, empty when it was (Firefox without OpenH264).
    pub video_skipped: String,
    /// Trickled candidate lines the device sent and applied (0 without trickle).
    pub device_candidates_sent: u64,
    pub device_candidates_received: u64,
    /// NACKs the remote reports sending (browsers' getStats `nackCount`; aiortc: not reported).
    pub remote_nacks_sent: Option<u64>,
    /// The lossy link's settings and what crossed it (`--loss`/`--jitter-ms`).
    pub link: Option<relay::Impairment>,
    pub link_stats: Option<relay::LinkStats>,
    pub connected_bytes: u64,
    pub peak_bytes: u64,
    pub threads: u64,
    pub stack_high_water_bytes: u64,
    pub log_dir: PathBuf,
}

#[derive(Clone, Default)]
pub struct Settings {
    pub messages: u32,
    pub frames: u32,
    pub video: bool,
    /// The browsers' post-quantum DTLS off (on by default, as shipped).
    pub no_pqc: bool,
    pub out: PathBuf,
    pub trickle: bool,
    pub refuse_video: bool,
    pub impairment: Option<relay::Impairment>,
    /// The device offers actpass, so the remote answers active and the device is the DTLS server.
    pub device_dtls_server: bool,
    /// No recorder preloaded: no memory figures (repeated runs).
    pub unrecorded: bool,
}

impl Settings {
    /// What the name of a case run with these settings ends with: the variants, so that their
    /// logs do not overwrite the plain case's.
    pub fn case_suffix(&self) -> String {
        let mut suffix = String::new();
        if self.trickle {
            suffix += "-trickle";
        }
        if self.refuse_video {
            suffix += "-refuse-video";
        }
        if let Some(i) = self.impairment {
            suffix += &format!("-loss{}-jitter{}", i.loss_percent, i.jitter_ms);
        }
        if self.device_dtls_server {
            suffix += "-dtls-server";
        }
        suffix
    }
}

pub fn run(args: Args) -> Outcome {
    let mut policies = Vec::new();
    for name in &args.policies {
        policies.push(Policy::load(&Policy::path_for(name))?);
    }
    let prerequisites = Prerequisites::find(&args.peers)?;
    let out = if args.out.is_absolute() { args.out.clone() } else { project_root().join(&args.out) };
    let settings = Settings {
        messages: args.messages,
        frames: args.frames,
        video: !args.no_video,
        no_pqc: args.no_pqc,
        device_dtls_server: args.device_dtls_server,
        unrecorded: false,
        out,
        trickle: args.trickle,
        refuse_video: args.refuse_video,
        impairment: (args.loss.is_some() || args.jitter_ms.is_some()).then(|| relay::Impairment {
            loss_percent: args.loss.unwrap_or(0.0),
            jitter_ms: args.jitter_ms.unwrap_or(0),
            delay_ms: 0,
        }),
    };
    let mut results = Vec::new();
    for policy in &policies {
        let build = replica::build(policy)?;
        for peer in &args.peers {
            for offer in &args.offerers {
                let result = run_case(&prerequisites, &build, policy, peer, offer, &settings)?;
                println!("{}", case_line(&result));
                if !result.passed {
                    print_failure(&result);
                }
                let name = result.case.clone();
                results.push(result);
                if args.repeat > 1 {
                    results.extend(repeat_case(
                        &prerequisites,
                        &build,
                        policy,
                        peer,
                        offer,
                        &settings,
                        &name,
                        args.repeat,
                    )?);
                }
            }
        }
    }
    if settings.impairment.is_some() {
        print_side_by_side(&results);
    }
    if let Some(path) = &args.json {
        write_atomic(path, serde_json::to_string_pretty(&results)?.as_bytes())?;
    }
    let failed: Vec<&str> = results.iter().filter(|r| !r.passed).map(|r| r.case.as_str()).collect();
    println!("{} passed, {} failed", results.len() - failed.len(), failed.len());
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(exit::verdict(format!("interop case(s) failed: {}", failed.join(", "))))
    }
}

/// Runs one case again until it has run `runs` times (the first run is the caller's), without
/// the recorder; prints each failure, a count every 50 runs and `<case>: N of M runs passed`.
/// Returns the failed runs only, so that each fails the exit status.
#[allow(clippy::too_many_arguments)]
pub fn repeat_case(
    pre: &Prerequisites,
    build: &replica::HostBuild,
    policy: &Policy,
    peer: &str,
    offer: &str,
    settings: &Settings,
    case: &str,
    runs: u32,
) -> Result<Vec<CaseResult>> {
    let mut failed = Vec::new();
    for n in 2..=runs {
        let run =
            Settings { out: settings.out.join(case).join(format!("run-{n}")), unrecorded: true, ..settings.clone() };
        let mut r = run_case(pre, build, policy, peer, offer, &run)?;
        r.case = format!("{case}#{n}");
        if r.passed {
            let _ = std::fs::remove_dir_all(&run.out);
        } else {
            println!("{}", case_line(&r));
            print_failure(&r);
            failed.push(r);
        }
        if n % 50 == 0 {
            println!("{case}: {n} runs, {} failed", failed.len());
        }
    }
    println!("{case}: {} of {runs} runs passed", runs - failed.len() as u32);
    Ok(failed)
}

/// The remotes' tools, found once; a missing one is exit 2 with what to run.
pub struct Prerequisites {
    pub python: Option<PathBuf>,
    pub chromium: Option<PathBuf>,
    pub clip: PathBuf,
    pub firefox: Option<PathBuf>,
    /// The OpenH264 plugin's folder for Firefox; None: Firefox cases skip their video part.
    pub openh264: Option<PathBuf>,
}

impl Prerequisites {
    pub fn find(peers: &[String]) -> Result<Prerequisites> {
        let venv = std::env::var_os("ESP_DC_INTEROP_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| replica::cache_root().join("interop-venv"));
        let chromium =
            std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
        let mut found = Self::find_in(&venv, &chromium, peers)?;
        if peers.iter().any(|p| p == "firefox") {
            let firefox =
                std::env::var_os("FIREFOX").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/firefox-esr"));
            if !firefox.exists() {
                return Err(exit::bad_input(format!(
                    "no Firefox at {} (Debian package `firefox-esr`); run `bash scripts/setup.sh` or set FIREFOX",
                    firefox.display()
                )));
            }
            found.firefox = Some(firefox);
            found.openh264 = firefox::openh264();
        }
        Ok(found)
    }

    pub fn find_in(venv: &Path, chromium: &Path, peers: &[String]) -> Result<Prerequisites> {
        let python = venv.join("bin/python");
        let has_aiortc = Command::new(&python)
            .args(["-c", "import aiortc, av"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_aiortc {
            return Err(exit::bad_input(format!(
                "no aiortc/PyAV venv at {} (it runs the aiortc peer and encodes the H.264 clip); run `bash scripts/setup.sh` or `source scripts/setup.sh`",
                venv.display()
            )));
        }
        let chromium = if peers.iter().any(|p| p == "chromium") {
            if !chromium.exists() {
                return Err(exit::bad_input(format!(
                    "no Chromium at {} (Debian package `chromium`); run `bash scripts/setup.sh` or set CHROMIUM",
                    chromium.display()
                )));
            }
            Some(chromium.to_path_buf())
        } else {
            None
        };
        let clip = h264_clip(&python)?;
        Ok(Prerequisites { python: Some(python), chromium, clip, firefox: None, openh264: None })
    }
}

/// The real H.264 clip the device sends, encoded once and cached beside the host builds.
fn h264_clip(python: &Path) -> Result<PathBuf> {
    let script = project_root().join("lab/interop/make_clip.py");
    let digest = replica::hash_of(&[&std::fs::read(&script)?]);
    let clip = replica::cache_root().join(format!("interop/clip-{digest}.h264"));
    // Tests in one process ask at once (the matrix and the post-quantum test): encode once.
    static ENCODING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ENCODING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if clip.exists() {
        return Ok(clip);
    }
    std::fs::create_dir_all(clip.parent().unwrap())?;
    // Another process (a second clone's tests) may encode the same clip: each writes its own
    // partial file, and the rename puts one whole clip in place, whichever comes last.
    let partial = clip.with_extension(format!("{}.partial", std::process::id()));
    let status = Command::new(python).arg(&script).arg(&partial).status()?;
    if !status.success() {
        return Err(exit::bad_input(format!(
            "encoding the H.264 clip with {} failed (output above)",
            script.display()
        )));
    }
    std::fs::rename(&partial, &clip)?;
    Ok(clip)
}

pub fn case_name(peer: &str, policy: &str, offer: &str) -> String {
    format!("{peer}-{policy}-{offer}-offers")
}

/// A remote peer: lines for it go into `to_remote`, its lines come out of `from_remote`.
pub struct Remote {
    pub to_remote: mpsc::Sender<String>,
    pub from_remote: mpsc::Receiver<String>,
    pub process: Child,
    /// Keeps the HTTP bridge alive for Chromium.
    pub _bridge: Option<chromium::Bridge>,
    pub _profile: Option<tempfile::TempDir>,
}

fn spawn_aiortc(python: &Path, offer: &str, settings: &Settings, log: &Path) -> Result<Remote> {
    let mut cmd = Command::new(python);
    cmd.arg(project_root().join("lab/interop/aiortc_peer.py")).args([
        "--offer",
        offer,
        "--messages",
        &settings.messages.to_string(),
        "--frames",
        &settings.frames.to_string(),
    ]);
    if !settings.video {
        cmd.arg("--no-video");
    }
    let mut process = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("starting the aiortc peer")?;
    let (to_remote, inbox) = mpsc::channel::<String>();
    let mut stdin = process.stdin.take().unwrap();
    std::thread::spawn(move || {
        for line in inbox {
            if writeln!(stdin, "{line}").and_then(|_| stdin.flush()).is_err() {
                break;
            }
        }
    });
    let (outbox, from_remote) = mpsc::channel();
    let stdout = process.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if outbox.send(line).is_err() {
                break;
            }
        }
    });
    Ok(Remote { to_remote, from_remote, process, _bridge: None, _profile: None })
}

fn spawn_device(
    build: &replica::HostBuild,
    policy: &Policy,
    offer: &str,
    settings: &Settings,
    clip: &Path,
    log: &Path,
    trace: &Path,
) -> Result<Child> {
    let mut env = peers::knob_env(policy);
    env.push(("LAB_INTEROP_OFFER".into(), offer.into()));
    env.push(("LAB_INTEROP_VIDEO".into(), u8::from(settings.video).to_string()));
    env.push(("LAB_H264_FILE".into(), clip.display().to_string()));
    env.push(("LAB_INTEROP_TRICKLE".into(), u8::from(settings.trickle).to_string()));
    env.push(("LAB_INTEROP_DEVICE_DTLS_SERVER".into(), u8::from(settings.device_dtls_server).to_string()));
    let recorder = (!settings.unrecorded).then_some((build.recorder.as_path(), trace));
    peers::spawn(build, "device", "interop", &env, log, recorder)
}

fn number(fields: &BTreeMap<String, String>, key: &str) -> Option<u64> {
    fields.get(key).and_then(|v| v.parse().ok())
}

/// One case: the remote and the device started, their signaling relayed until both are done, then
/// what they reported read back and judged.
pub fn run_case(
    pre: &Prerequisites,
    build: &replica::HostBuild,
    policy: &Policy,
    peer: &str,
    offer: &str,
    settings: &Settings,
) -> Result<CaseResult> {
    let case = case_name(peer, &policy.policy.name, offer) + &settings.case_suffix();
    let dir = settings.out.join(&case);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    eprintln!("interop: {case}");
    let (device_log, trace) = (dir.join("device.log"), dir.join("device.trace"));
    let mut result = new_case_result(pre, policy, peer, offer, settings, &case, &dir);
    let relay = match settings.impairment {
        Some(i) => Some(std::sync::Arc::new(relay::Relay::start(i, 0)?)),
        None => None,
    };
    if let Some(r) = &relay {
        eprintln!("interop: {case}: lossy link {:?}, seed {}", r.impairment(), r.seed);
    }
    let remote = match peer {
        "aiortc" => spawn_aiortc(pre.python.as_ref().unwrap(), offer, settings, &dir.join("remote.log")),
        "firefox" => firefox::spawn(pre.firefox.as_ref().unwrap(), pre.openh264.as_deref(), offer, settings, &dir),
        _ => chromium::spawn(pre.chromium.as_ref().unwrap(), offer, settings, &dir),
    };
    let remote = match remote {
        Ok(r) => r,
        Err(e) => {
            result.failure = format!("the {peer} peer did not start: {e:#}");
            return Ok(result);
        }
    };
    let device = spawn_device(build, policy, offer, settings, &pre.clip, &device_log, &trace)?;
    let ended = exchange(peer, device, remote, relay.clone(), &dir)?;

    let device_text = std::fs::read_to_string(&device_log).unwrap_or_default();
    let device_fields = peers::result_fields(device_text.lines());
    let remote_fields = peers::result_fields(ended.remote_results.iter().map(String::as_str));
    read_results(&mut result, &device_fields, &remote_fields);
    result.link_stats = relay.as_ref().map(|r| r.stats());
    std::fs::write(dir.join("remote-result.txt"), ended.remote_results.join("\n") + "\n")?;

    let mut failures = exchange_failures(&result, peer, settings, &ended, &remote_fields);
    if settings.unrecorded {
        // A repeated run: whether it passes, not what it holds.
    } else if trace.exists() && ended.device_status.is_some_and(|s| s.success()) {
        match account::build_report(&trace, "interop", policy, build) {
            Ok(report) => {
                result.connected_bytes = report.total_connected_bytes;
                result.peak_bytes = report.total_peak_bytes;
                result.threads = report.threads;
                result.stack_high_water_bytes = report.total_stack_high_water_bytes;
            }
            Err(e) => failures.push(format!("the device trace did not account: {e:#}")),
        }
    } else if failures.is_empty() {
        failures.push("the device wrote no trace".into());
    }
    result.passed = failures.is_empty();
    result.failure = failures.join("; ");
    Ok(result)
}

fn new_case_result(
    pre: &Prerequisites,
    policy: &Policy,
    peer: &str,
    offer: &str,
    settings: &Settings,
    case: &str,
    dir: &Path,
) -> CaseResult {
    let mut result = CaseResult {
        case: case.into(),
        peer: peer.into(),
        policy: policy.policy.name.clone(),
        offer: offer.into(),
        messages_expected: u64::from(settings.messages) * 2,
        log_dir: dir.to_path_buf(),
        link: settings.impairment,
        ..Default::default()
    };
    if peer == "firefox" && pre.openh264.is_none() && settings.video {
        result.video_skipped = format!(
            "video skipped: Firefox has no H.264 without the OpenH264 plugin, not found at {} (set ESP_DC_FIREFOX_OPENH264)",
            firefox::openh264_wanted()
        );
    }
    result
}

/// How the two peers ended: the device's exit (None: killed at the deadline), aiortc's (None for
/// a browser, which never exits by itself) and the remote's RESULT lines.
struct Ended {
    device_status: Option<std::process::ExitStatus>,
    remote_status: Option<std::process::ExitStatus>,
    remote_results: Vec<String>,
}

/// Relays signaling until both peers are done (90 s at most) and stops them.
fn exchange(
    peer: &str,
    mut device: Child,
    mut remote: Remote,
    relay: Option<std::sync::Arc<relay::Relay>>,
    dir: &Path,
) -> Result<Ended> {
    // Device lines go to the remote as they come; the remote's go to the device, except RESULT.
    // Every relayed line is kept in signaling.log: a failed handshake is read from the SDPs.
    let signaling = std::sync::Arc::new(std::sync::Mutex::new(std::fs::File::create(dir.join("signaling.log"))?));
    let to_remote = remote.to_remote.clone();
    let device_out = device.stdout.take().unwrap();
    let device_signaling = signaling.clone();
    let device_link = relay.clone();
    let device_relay = std::thread::spawn(move || {
        for line in BufReader::new(device_out).lines().map_while(Result::ok) {
            // With a lossy link the remote is given the relay's address instead of the device's.
            let line = device_link.as_ref().map(|r| r.line_from_device(&line)).unwrap_or(line);
            let _ = writeln!(device_signaling.lock().unwrap(), "device> {}", line.replace("\\r\\n", "\n        "));
            if to_remote.send(line).is_err() {
                break;
            }
        }
    });
    let mut device_in = device.stdin.take().unwrap();
    let mut remote_results = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut device_status = None;
    let mut remote_done = false;
    while Instant::now() < deadline {
        match remote.from_remote.recv_timeout(Duration::from_millis(50)) {
            Ok(line) if line.starts_with("RESULT ") => remote_results.push(line),
            Ok(line) => {
                let line = relay.as_ref().map(|r| r.line_from_remote(&line)).unwrap_or(line);
                let _ = writeln!(signaling.lock().unwrap(), "remote> {}", line.replace("\\r\\n", "\n        "));
                let _ = writeln!(device_in, "{line}").and_then(|_| device_in.flush());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => remote_done = true,
        }
        if device_status.is_none() {
            device_status = device.try_wait()?;
        }
        if !remote_done {
            remote_done = remote.process.try_wait()?.is_some();
        }
        // Chromium never exits by itself: the case is over once the device is and the page reported.
        let remote_finished = remote_done || (peer != "aiortc" && !remote_results.is_empty());
        if device_status.is_some() && remote_finished {
            break;
        }
    }
    let remote_status = if peer == "aiortc" { wait_briefly(&mut remote.process)? } else { None };
    let _ = remote.process.kill();
    let _ = remote.process.wait();
    if device_status.is_none() {
        let _ = device.kill();
        let _ = device.wait();
    }
    // The device has exited: its last lines (the stack's own errors) reach signaling.log before we read.
    let _ = device_relay.join();
    Ok(Ended { device_status, remote_status, remote_results })
}

/// Gives aiortc its moment (5 s) to close after `CTL closed`.
fn wait_briefly(process: &mut Child) -> Result<Option<std::process::ExitStatus>> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(s) = process.try_wait()? {
            return Ok(Some(s));
        }
        if Instant::now() > until {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_results(
    result: &mut CaseResult,
    device_fields: &BTreeMap<String, String>,
    remote_fields: &BTreeMap<String, String>,
) {
    result.device_dtls_role = device_fields.get("dtls_role").cloned().unwrap_or_default();
    result.frames_sent = number(device_fields, "frames_sent").unwrap_or(0);
    result.messages_verified = number(remote_fields, "messages").unwrap_or(0);
    result.frames_received = number(remote_fields, "frames_received").unwrap_or(0);
    result.frames_decoded = number(remote_fields, "frames_decoded");
    result.device_video = device_fields.get("video").cloned().unwrap_or_default();
    result.device_candidates_sent = number(device_fields, "candidates_sent").unwrap_or(0);
    result.device_candidates_received = number(device_fields, "candidates_received").unwrap_or(0);
    result.remote_nacks_sent = number(remote_fields, "nacks_sent");
}

/// What went wrong in the exchange itself (the trace is judged after).
fn exchange_failures(
    result: &CaseResult,
    peer: &str,
    settings: &Settings,
    ended: &Ended,
    remote_fields: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut failures = Vec::new();
    match ended.device_status {
        None => failures.push("timed out (90 s)".to_string()),
        Some(s) if !s.success() => failures.push(format!("device exited {s}")),
        _ => {}
    }
    if peer == "aiortc" && !ended.remote_status.is_some_and(|s| s.success()) {
        failures.push(format!(
            "aiortc exited {}",
            ended.remote_status.map(|s| s.to_string()).unwrap_or_else(|| "late (killed)".into())
        ));
    }
    if let Some(error) = remote_fields.get("error") {
        failures.push(format!("remote: {error}"));
    }
    if ended.remote_results.is_empty() {
        failures.push("the remote reported no result".into());
    } else if result.messages_verified != result.messages_expected {
        failures.push(format!("{} of {} echoes verified", result.messages_verified, result.messages_expected));
    }
    let video_expected = settings.video && !settings.refuse_video && result.video_skipped.is_empty();
    if video_expected && result.frames_received == 0 {
        failures.push("no video frame received".into());
    }
    if settings.refuse_video && result.device_video != "refused" {
        failures.push(format!(
            "the remote was to refuse video, the device says video={:?} (see signaling.log)",
            result.device_video
        ));
    }
    let device_ok = ended.device_status.is_some_and(|s| s.success());
    if settings.trickle && device_ok && result.device_candidates_sent == 0 {
        failures.push("trickle ICE: the device sent no candidate line".into());
    }
    if settings.trickle && peer != "aiortc" && number(remote_fields, "candidates_received").unwrap_or(0) == 0 {
        failures.push("trickle ICE: the browser applied none of the device's candidates".into());
    }
    failures
}

pub fn case_line(r: &CaseResult) -> String {
    let mut line = plain_case_line(r);
    if r.device_video == "refused" {
        line += "  video refused by the remote";
    }
    if r.device_candidates_sent + r.device_candidates_received > 0 {
        line += &format!("  trickled {} out {} in", r.device_candidates_sent, r.device_candidates_received);
    }
    if let (Some(i), Some(s)) = (&r.link, &r.link_stats) {
        line += &format!(
            "\n  link loss {}% jitter {} ms: dropped {}/{} to remote, {}/{} to device, {} reordered; video rtp {} dropped {} retransmitted {}, remote nacks {}",
            i.loss_percent,
            i.jitter_ms,
            s.device_to_remote_dropped,
            s.device_to_remote_packets,
            s.remote_to_device_dropped,
            s.remote_to_device_packets,
            s.reordered,
            s.video_rtp_packets,
            s.video_rtp_dropped,
            s.video_rtp_retransmitted,
            r.remote_nacks_sent.map(|n| n.to_string()).unwrap_or_else(|| "n/a".into())
        );
    }
    if !r.video_skipped.is_empty() {
        line += &format!("\n  {}: {}", r.case, r.video_skipped);
    }
    line
}

/// Lossy runs: lean and stock of each peer and offer on one line, the figures that loss moves.
fn print_side_by_side(results: &[CaseResult]) {
    let pairs = results
        .iter()
        .filter(|r| r.policy == "lean")
        .any(|lean| results.iter().any(|s| s.policy == "stock" && s.peer == lean.peer && s.offer == lean.offer));
    if !pairs {
        return; // one policy only: nothing to set side by side
    }
    println!("lossy link, lean vs stock:");
    for lean in results.iter().filter(|r| r.policy == "lean") {
        let Some(stock) = results.iter().find(|s| s.policy == "stock" && s.peer == lean.peer && s.offer == lean.offer)
        else {
            continue;
        };
        let cell = |r: &CaseResult| {
            let s = r.link_stats.clone().unwrap_or_default();
            format!(
                "{:<4} msgs {:>2}/{:<2} frames {:>3} retx {:>3} peak {:>6} B",
                if r.passed { "pass" } else { "FAIL" },
                r.messages_verified,
                r.messages_expected,
                r.frames_received,
                s.video_rtp_retransmitted,
                r.peak_bytes
            )
        };
        println!("  {:<8} {:<6} offers  lean: {}  |  stock: {}", lean.peer, lean.offer, cell(lean), cell(stock));
    }
}

fn plain_case_line(r: &CaseResult) -> String {
    let decoded = r.frames_decoded.map(|d| d.to_string()).unwrap_or_else(|| "n/a".into());
    format!(
        "{:<32} {:<4}  dtls {:<6}  messages {:>2}/{:<2}  frames sent {:>3} received {:>3} decoded {:>3}  connected {:>6} B  peak {:>6} B  threads {}  stacks {:>6} B",
        r.case,
        if r.passed { "pass" } else { "FAIL" },
        if r.device_dtls_role.is_empty() { "?" } else { &r.device_dtls_role },
        r.messages_verified,
        r.messages_expected,
        r.frames_sent,
        r.frames_received,
        decoded,
        r.connected_bytes,
        r.peak_bytes,
        r.threads,
        r.stack_high_water_bytes
    )
}

fn print_failure(r: &CaseResult) {
    println!("  {}: {}", r.case, r.failure);
    println!("  logs of both peers kept in {}", r.log_dir.display());
    for name in ["device.log", "signaling.log", "remote.log", "browser.log", "page.log"] {
        let path = r.log_dir.join(name);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let lines: Vec<&str> = text.lines().collect();
            println!("  --- {} (last lines)", path.display());
            for line in &lines[lines.len().saturating_sub(12)..] {
                println!("  | {line}");
            }
        }
    }
}
