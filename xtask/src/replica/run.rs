//! Runs one scenario: the measured device process (recorder preloaded) and the unmeasured remote
//! process, their signaling lines relayed between them, their stderr kept as logs. With a lossy
//! link (`--loss`, `--jitter-ms`) their media crosses `crate::relay` instead of plain loopback.

use super::HostBuild;
use crate::background::{self, Io};
use crate::policy::{KnobEffect, Policy, KNOBS};
use crate::relay::{Impairment, LinkStats, Relay};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xshell::cmd;

#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub messages: u32,
    pub video_seconds: u32,
    pub cycles: u32,
    /// Tests only: in `cycle` the device keeps one block of this many bytes (as libdatachannel's)
    /// per closed connection, a real per-cycle leak (`LAB_LEAK_BYTES_PER_CONNECTION`). 0: none.
    pub leak_bytes_per_connection: u32,
    /// `viewers`: how many viewers join (0: the driver's default, 4).
    pub viewers: u32,
    /// `viewers`: seconds of stream after each join, leave and rejoin (0: the driver's default, 3).
    pub viewer_seconds: u32,
}

/// Environment both peers get: the policy's value of every run-time knob under its `LAB_*` name
/// (what esp_dc_port_init and the application apply on the device; the driver expands the same
/// generated list), and the thread stack size.
pub fn knob_env(policy: &Policy) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = KNOBS
        .iter()
        .filter(|k| matches!(k.effect, KnobEffect::Runtime(..)))
        .map(|k| (k.lab_env(), policy.knob_value(k).to_string()))
        .collect();
    env.push(("LAB_DEFAULT_STACK_BYTES".into(), policy.thread_stack_bytes().to_string()));
    env
}

/// Starts one peer of `scenario` with the stack's libraries, `env`, stderr to `log` and stdin and
/// stdout piped for signaling; with `preload` = (recorder, trace), the recorder writes the trace.
pub fn spawn(
    build: &HostBuild,
    role: &str,
    scenario: &str,
    env: &[(String, String)],
    log: &Path,
    preload: Option<(&Path, &Path)>,
) -> Result<Child> {
    let sh = xshell::Shell::new()?;
    let driver = &build.driver;
    let lib_path = std::env::join_paths(&build.lib_dirs)?;
    let mut cmd = cmd!(sh, "{driver} {role} {scenario}").env("LD_LIBRARY_PATH", lib_path);
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    if let Some((recorder, trace)) = preload {
        cmd = cmd.env("LD_PRELOAD", recorder).env("LAB_TRACE", trace);
    }
    background::spawn(cmd, Io::Piped, Io::Piped, Io::File(std::fs::File::create(log)?))
        .with_context(|| format!("starting {}", build.driver.display()))
}

/// Which peer a signaling line comes from, for the lossy link's address rewriting.
#[derive(Clone, Copy)]
enum From {
    Device,
    Remote,
}

/// Copies lines from one peer's stdout to the other's stdin until the source closes; with a
/// lossy link, each candidate in them is pointed at the relay.
fn relay(
    from: impl std::io::Read + Send + 'static,
    mut to: impl Write + Send + 'static,
    link: Option<(Arc<Relay>, From)>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            let line = match &link {
                Some((r, From::Device)) => r.line_from_device(&line),
                Some((r, From::Remote)) => r.line_from_remote(&line),
                None => line,
            };
            if writeln!(to, "{line}").and_then(|_| to.flush()).is_err() {
                break;
            }
        }
    })
}

/// The scenarios whose device and remote run one connection at a time, which is what the
/// relay can stand between (`cycle` and `scale` are about connections, not the link).
pub const LOSSY_SCENARIOS: &[&str] = &["datachannel", "video", "camera"];

/// One scenario's run: the device's trace, both peers' logs and, on a lossy link, what crossed it.
#[derive(Debug, Clone)]
pub struct ScenarioRun {
    pub trace: PathBuf,
    pub device_log: PathBuf,
    pub remote_log: PathBuf,
    pub link: Option<LinkRun>,
}

#[derive(Debug, Clone)]
pub struct LinkRun {
    pub impairment: Impairment,
    pub seed: u64,
    pub stats: LinkStats,
}

/// What the names of a run's files end with: its link, so a lossy run keeps the plain run's files.
pub fn link_suffix(link: Option<Impairment>) -> String {
    // No dot: the logs are named by replacing the stem's extension.
    link.map(|i| format!("-loss{}-jitter{}", i.loss_percent, i.jitter_ms).replace('.', "p")).unwrap_or_default()
}

/// Runs `scenario` and returns the device's trace file.
pub fn run_scenario(
    build: &HostBuild,
    policy: &Policy,
    scenario: &str,
    settings: &Settings,
    out: &Path,
) -> Result<PathBuf> {
    Ok(run_scenario_on_link(build, policy, scenario, settings, out, None)?.trace)
}

/// Runs `scenario`, with `link` across the relay (device and remote see each other only through
/// it; LOSSY_SCENARIOS only).
pub fn run_scenario_on_link(
    build: &HostBuild,
    policy: &Policy,
    scenario: &str,
    settings: &Settings,
    out: &Path,
    link: Option<Impairment>,
) -> Result<ScenarioRun> {
    let stem = format!("{}-{scenario}{}", policy.policy.name, link_suffix(link));
    let trace = out.join(format!("{stem}.trace"));
    let _ = std::fs::remove_file(&trace);
    let mut env = knob_env(policy);
    env.push(("LAB_MESSAGES".into(), settings.messages.to_string()));
    env.push(("LAB_VIDEO_SECONDS".into(), settings.video_seconds.to_string()));
    env.push(("LAB_CYCLES".into(), settings.cycles.to_string()));
    if settings.leak_bytes_per_connection > 0 {
        env.push(("LAB_LEAK_BYTES_PER_CONNECTION".into(), settings.leak_bytes_per_connection.to_string()));
    }
    if settings.viewers > 0 {
        env.push(("LAB_VIEWERS".into(), settings.viewers.to_string()));
    }
    if settings.viewer_seconds > 0 {
        env.push(("LAB_VIEWER_SECONDS".into(), settings.viewer_seconds.to_string()));
    }
    // A cycle takes well under a second; quiet marks wait longer on a busy machine. `viewers`
    // streams a window per join, leave and rejoin, and each viewer's handshake takes a few seconds.
    let viewer_windows = if scenario == "viewers" { u64::from(settings.viewers.max(4)) + 2 } else { 0 };
    let mut timeout = Duration::from_secs(
        120 + settings.video_seconds as u64
            + 3 * settings.cycles as u64
            + viewer_windows * (u64::from(settings.viewer_seconds.max(3)) + 10),
    );
    let relay = match link {
        Some(i) => {
            if !LOSSY_SCENARIOS.contains(&scenario) {
                bail!("scenario `{scenario}` cannot run on a lossy link (only {})", LOSSY_SCENARIOS.join(", "));
            }
            // The remote asks again for a packet only once it is overdue by more than the
            // jitter, as a browser's receiver does: a reordered packet is not a lost one.
            env.push(("LAB_NACK_DELAY_MS".into(), (i.jitter_ms + 20).to_string()));
            // SCTP recovers a lost tail only by its retransmission timer (a second and more), and
            // each data-channel message waits for the echo of the one before: 1,000 messages took
            // 345 s at 10% loss and 30 ms jitter (lean), ~110 s with jitter alone.
            timeout = timeout * 4 + Duration::from_secs(settings.messages as u64);
            Some(Arc::new(Relay::start(i, 0)?))
        }
        None => None,
    };
    let stem = out.join(&stem);
    let run = PeerRun { policy, scenario, env: &env, stem: &stem, trace: Some(&trace), timeout, link: relay.clone() };
    let ran = run_peers(build, run);
    // A run that failed on the link says what the link did.
    let (device_log, remote_log) = match (ran, &relay) {
        (Err(e), Some(r)) => bail!("{e:#}\nlossy link {:?}, seed {}: {:?}", r.impairment(), r.seed, r.stats()),
        (ran, _) => ran?,
    };
    if !trace.exists() {
        bail!("the device wrote no trace at {} (was the recorder preloaded?)", trace.display());
    }
    let link = relay.map(|r| LinkRun { impairment: r.impairment(), seed: r.seed, stats: r.stats() });
    Ok(ScenarioRun { trace, device_log, remote_log, link })
}

/// One run of a scenario's two peers.
pub struct PeerRun<'a> {
    pub policy: &'a Policy,
    pub scenario: &'a str,
    pub env: &'a [(String, String)],
    /// The logs go to `<stem>.device.log` and `<stem>.remote.log`.
    pub stem: &'a Path,
    /// With a path, the recorder is preloaded into the device and writes its trace there.
    pub trace: Option<&'a Path>,
    pub timeout: Duration,
    /// The lossy relay the peers' packets cross, if any.
    pub link: Option<Arc<Relay>>,
}

/// Runs the device and remote peers of a scenario to the end, their signaling relayed, and
/// returns their logs (device, remote).
pub fn run_peers(build: &HostBuild, run: PeerRun) -> Result<(PathBuf, PathBuf)> {
    let PeerRun { policy, scenario, env, stem, trace, timeout, link } = run;
    let device_log = stem.with_extension("device.log");
    let remote_log = stem.with_extension("remote.log");
    let mut remote = spawn(build, "remote", scenario, env, &remote_log, None)?;
    let mut device = spawn(build, "device", scenario, env, &device_log, trace.map(|t| (build.recorder.as_path(), t)))?;
    let a = relay(remote.stdout.take().unwrap(), device.stdin.take().unwrap(), link.clone().map(|r| (r, From::Remote)));
    let b = relay(device.stdout.take().unwrap(), remote.stdin.take().unwrap(), link.map(|r| (r, From::Device)));

    let deadline = Instant::now() + timeout;
    let mut statuses = [None, None];
    while statuses.iter().any(Option::is_none) {
        for (i, child) in [&mut device, &mut remote].into_iter().enumerate() {
            if statuses[i].is_none() {
                statuses[i] = child.try_wait()?;
            }
        }
        if Instant::now() > deadline {
            let _ = device.kill();
            let _ = remote.kill();
            bail!(
                "scenario `{scenario}` ({}) timed out; logs: {} {}",
                policy.policy.name,
                device_log.display(),
                remote_log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = (a.join(), b.join());
    let [device_status, remote_status] = statuses.map(Option::unwrap);
    if !device_status.success() || !remote_status.success() {
        bail!(
            "scenario `{scenario}` ({}) failed: device {device_status}, remote {remote_status}\n--- device log ({}):\n{}\n--- remote log ({}):\n{}",
            policy.policy.name,
            device_log.display(),
            tail(&device_log),
            remote_log.display(),
            tail(&remote_log)
        );
    }
    Ok((device_log, remote_log))
}

/// The `key=value` words of a peer's `RESULT <kind> ...` lines (driver, aiortc, the Chromium
/// page), merged in order: a later value wins. Words without `=` (the kind) are skipped.
pub fn result_fields<'a>(lines: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    for line in lines.into_iter().filter(|l| l.starts_with("RESULT ")) {
        for word in line.split_whitespace().skip(1) {
            if let Some((k, v)) = word.split_once('=') {
                fields.insert(k.to_string(), v.to_string());
            }
        }
    }
    fields
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
