//! `cargo xtask lab --loss P --jitter-ms MS`: the one-connection scenarios (datachannel, video,
//! camera) with the device and the remote talking across `crate::relay`, which drops P % of the
//! packets both ways and delays each by 0..=MS (so they reorder). The remote (lab/driver) asks
//! for missing video packets with NACKs as a browser does; the device's RtcpNackResponder must
//! answer, its data channels must deliver every message whole and in order (the driver dies
//! otherwise), frames must keep arriving, and the policy's dynamic budgets must hold as on
//! loopback. Lean and stock side by side, per loss rate.

use crate::relay::{Impairment, LinkStats};
use crate::replica::run::ScenarioRun;
use crate::report::Report;
use serde::Serialize;
use std::collections::BTreeMap;

/// Longest wait between two frames arriving that still counts as "frames keep arriving": a
/// lost tail recovered by NACK takes a round trip plus the jitter; a stall is seconds.
pub const MAX_FRAME_GAP_MS: u64 = 1000;

/// One scenario run on a lossy link; field names are part of the `--json` interface.
#[derive(Debug, Clone, Serialize)]
pub struct LossyRun {
    pub policy: String,
    pub scenario: String,
    pub link: Impairment,
    /// The relay's random seed (drops and delays).
    pub seed: u64,
    pub stats: LinkStats,
    /// Data-channel messages the remote checked byte for byte and in order, of those sent.
    pub messages_checked: Option<u64>,
    pub messages_sent: Option<u64>,
    /// `datachannel`: how long the remote took to send every message and check its echo, and its
    /// longest wait for one echo (the driver gives up at 60 s; the device after 90 s without a
    /// message).
    pub exchange_ms: Option<u64>,
    pub slowest_echo_ms: Option<u64>,
    pub frames_sent: Option<u64>,
    /// From the remote: frames with at least one packet, frames with every packet.
    pub frames_received: Option<u64>,
    pub frames_whole: Option<u64>,
    pub longest_frame_gap_ms: Option<u64>,
    /// NACK packets the remote sent, and the sequence numbers they asked for (repeats included).
    pub nack_packets: Option<u64>,
    pub nacked: Option<u64>,
    /// Missing packets a retransmission filled, and those never filled.
    pub recovered: Option<u64>,
    pub unrecovered: Option<u64>,
    pub connected_bytes: u64,
    pub handshake_peak_bytes: u64,
    pub streaming_bytes: Option<u64>,
    pub peak_bytes: u64,
    pub threads: u64,
    pub stack_high_water_bytes: u64,
}

fn fields(path: &std::path::Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    crate::replica::run::result_fields(text.lines())
}

impl LossyRun {
    pub fn new(run: &ScenarioRun, report: &Report) -> Option<LossyRun> {
        let link = run.link.as_ref()?;
        let (device, remote) = (fields(&run.device_log), fields(&run.remote_log));
        let n = |f: &BTreeMap<String, String>, k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok());
        let scenario = report.scenario.as_str();
        let (messages_checked, messages_sent) = match scenario {
            "datachannel" => (n(&remote, "messages"), n(&remote, "messages")),
            "camera" => (n(&remote, "messages_received"), n(&device, "messages")),
            _ => (None, None),
        };
        let frames_sent = match scenario {
            "video" => n(&device, "frames"),
            "camera" => n(&device, "video_frames"),
            _ => None,
        };
        Some(LossyRun {
            policy: report.policy.clone(),
            scenario: scenario.to_string(),
            link: link.impairment,
            seed: link.seed,
            stats: link.stats.clone(),
            messages_checked,
            messages_sent,
            exchange_ms: n(&remote, "exchange_ms"),
            slowest_echo_ms: n(&remote, "slowest_echo_ms"),
            frames_sent,
            frames_received: n(&remote, "frames_received"),
            frames_whole: n(&remote, "frames_whole"),
            longest_frame_gap_ms: n(&remote, "longest_frame_gap_ms"),
            nack_packets: n(&remote, "nack_packets"),
            nacked: n(&remote, "nacked"),
            recovered: n(&remote, "recovered"),
            unrecovered: n(&remote, "unrecovered"),
            connected_bytes: report.total_connected_bytes,
            handshake_peak_bytes: report.handshake_peak_bytes,
            streaming_bytes: report.streaming_bytes,
            peak_bytes: report.total_peak_bytes,
            threads: report.threads,
            stack_high_water_bytes: report.total_stack_high_water_bytes,
        })
    }

    fn carries_video(&self) -> bool {
        self.scenario == "video" || self.scenario == "camera"
    }
}

/// What the link must not break, beside the budgets: each a sentence naming run and figure.
pub fn verdicts(r: &LossyRun) -> Vec<String> {
    let mut out = Vec::new();
    let name =
        format!("{} / {} at {}% loss, {} ms jitter", r.policy, r.scenario, r.link.loss_percent, r.link.jitter_ms);
    if r.scenario != "video" {
        match (r.messages_checked, r.messages_sent) {
            (Some(c), Some(s)) if c == s && s > 0 => {}
            (c, s) => out.push(format!(
                "{name}: data channel: {} of {} messages arrived whole and in order",
                c.map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
                s.map(|v| v.to_string()).unwrap_or_else(|| "?".into())
            )),
        }
    }
    if r.carries_video() {
        if r.frames_received.unwrap_or(0) == 0 || r.frames_whole.unwrap_or(0) == 0 {
            out.push(format!("{name}: no video frame arrived whole"));
        }
        match r.longest_frame_gap_ms {
            Some(gap) if gap <= MAX_FRAME_GAP_MS => {}
            gap => out.push(format!(
                "{name}: frames stopped arriving: longest gap {} ms (at most {MAX_FRAME_GAP_MS})",
                gap.map(|v| v.to_string()).unwrap_or_else(|| "?".into())
            )),
        }
        // A lost video packet is asked for, and the device's NACK responder sends it again.
        if r.stats.video_rtp_dropped > 0 && r.stats.video_rtp_retransmitted == 0 {
            out.push(format!(
                "{name}: {} video packets lost, {} NACKs sent, none retransmitted by the device",
                r.stats.video_rtp_dropped,
                r.nack_packets.unwrap_or(0)
            ));
        }
    }
    out
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// Rows of one scenario at one link, a value per policy.
fn rows(runs: &[&LossyRun]) -> Vec<(&'static str, Vec<String>)> {
    let all = |f: &dyn Fn(&LossyRun) -> String| runs.iter().map(|r| f(r)).collect::<Vec<_>>();
    let mut rows = vec![
        (
            "link packets dropped (to remote, to device)",
            all(&|r| {
                format!(
                    "{}/{} {}/{}",
                    r.stats.device_to_remote_dropped,
                    r.stats.device_to_remote_packets,
                    r.stats.remote_to_device_dropped,
                    r.stats.remote_to_device_packets
                )
            }),
        ),
        ("packets reordered", all(&|r| r.stats.reordered.to_string())),
        ("relay's own delay, worst (ms)", all(&|r| r.stats.max_send_late_ms.to_string())),
    ];
    if runs.iter().any(|r| r.messages_sent.is_some()) {
        rows.push((
            "messages whole and in order",
            all(&|r| format!("{}/{}", opt(r.messages_checked), opt(r.messages_sent))),
        ));
    }
    if runs.iter().any(|r| r.exchange_ms.is_some()) {
        rows.push((
            "echoed all in (s), slowest echo (ms)",
            all(&|r| format!("{} {}", opt(r.exchange_ms.map(|ms| ms.div_ceil(1000))), opt(r.slowest_echo_ms))),
        ));
    }
    if runs.iter().any(|r| r.carries_video()) {
        rows.extend([
            (
                "frames sent / arrived / whole",
                all(&|r| format!("{}/{}/{}", opt(r.frames_sent), opt(r.frames_received), opt(r.frames_whole))),
            ),
            ("longest gap between frames (ms)", all(&|r| opt(r.longest_frame_gap_ms))),
            (
                "video RTP dropped by the link",
                all(&|r| format!("{}/{}", r.stats.video_rtp_dropped, r.stats.video_rtp_packets)),
            ),
            ("NACKs sent (packets, seqs asked)", all(&|r| format!("{} {}", opt(r.nack_packets), opt(r.nacked)))),
            ("retransmitted by the NACK responder", all(&|r| r.stats.video_rtp_retransmitted.to_string())),
            ("recovered / never recovered", all(&|r| format!("{}/{}", opt(r.recovered), opt(r.unrecovered)))),
        ]);
    }
    rows.extend([
        ("connected (stack total, B)", all(&|r| r.connected_bytes.to_string())),
        ("handshake peak (B)", all(&|r| r.handshake_peak_bytes.to_string())),
    ]);
    if runs.iter().any(|r| r.carries_video()) {
        rows.push(("live after streaming (B)", all(&|r| opt(r.streaming_bytes))));
    }
    rows.extend([
        ("peak (B)", all(&|r| r.peak_bytes.to_string())),
        ("threads", all(&|r| r.threads.to_string())),
        ("stack high-water sum (B)", all(&|r| r.stack_high_water_bytes.to_string())),
    ]);
    rows
}

/// One table per link and scenario, policies side by side, as text.
pub fn side_by_side(runs: &[LossyRun]) -> String {
    let mut text = String::new();
    let mut links: Vec<Impairment> = Vec::new();
    for r in runs {
        if !links.contains(&r.link) {
            links.push(r.link);
        }
    }
    for link in links {
        let mut scenarios: Vec<&str> = Vec::new();
        for r in runs.iter().filter(|r| r.link == link) {
            if !scenarios.contains(&r.scenario.as_str()) {
                scenarios.push(&r.scenario);
            }
        }
        for scenario in scenarios {
            let same: Vec<&LossyRun> = runs.iter().filter(|r| r.link == link && r.scenario == scenario).collect();
            text += &format!("== {scenario}, {}% loss, {} ms jitter\n", link.loss_percent, link.jitter_ms);
            text += &format!("{:<44}", "measure");
            for r in &same {
                text += &format!(" {:>14}", r.policy);
            }
            text += "\n";
            for (label, values) in rows(&same) {
                text += &format!("{label:<44}");
                for v in values {
                    text += &format!(" {v:>14}");
                }
                text += "\n";
            }
            text += "\n";
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::render;
    use crate::ledger::account;
    use crate::policy::Policy;
    use crate::replica::{self, run};

    fn video_run(dropped: u64, retransmitted: u64, gap_ms: u64) -> LossyRun {
        LossyRun {
            policy: "lean".into(),
            scenario: "video".into(),
            link: Impairment { loss_percent: 10.0, jitter_ms: 30, delay_ms: 0 },
            seed: 1,
            stats: LinkStats {
                video_rtp_dropped: dropped,
                video_rtp_retransmitted: retransmitted,
                ..Default::default()
            },
            messages_checked: None,
            messages_sent: None,
            exchange_ms: None,
            slowest_echo_ms: None,
            frames_sent: Some(120),
            frames_received: Some(120),
            frames_whole: Some(110),
            longest_frame_gap_ms: Some(gap_ms),
            nack_packets: Some(40),
            nacked: Some(60),
            recovered: Some(50),
            unrecovered: Some(10),
            connected_bytes: 1,
            handshake_peak_bytes: 1,
            streaming_bytes: Some(1),
            peak_bytes: 1,
            threads: 3,
            stack_high_water_bytes: 1,
        }
    }

    #[test]
    fn lost_video_without_retransmission_or_a_stall_is_a_verdict() {
        assert!(verdicts(&video_run(74, 62, 59)).is_empty());
        let silent = verdicts(&video_run(74, 0, 59));
        assert!(silent.len() == 1 && silent[0].contains("none retransmitted"), "{silent:?}");
        let stalled = verdicts(&video_run(74, 62, 1500));
        assert!(stalled.len() == 1 && stalled[0].contains("longest gap 1500 ms"), "{stalled:?}");
        // Nothing lost, nothing to resend: no verdict.
        assert!(verdicts(&video_run(0, 0, 40)).is_empty());
        let short = LossyRun {
            scenario: "camera".into(),
            messages_checked: Some(39),
            messages_sent: Some(40),
            ..video_run(74, 62, 59)
        };
        let v = verdicts(&short);
        assert!(v.len() == 1 && v[0].contains("39 of 40 messages"), "{v:?}");
    }

    /// The real stack, lean, short runs at 10% loss and 30 ms jitter: the relay drops packets
    /// both ways, every message comes back whole, video keeps arriving, the device's NACK
    /// responder resends lost packets, and lean's dynamic budgets hold as on loopback.
    #[test]
    fn lean_on_a_lossy_link_resends_lost_video_and_holds_its_budgets() {
        let _measuring = crate::idf::HEAVY_TEST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let out = tempfile::tempdir().unwrap();
        let settings = run::Settings { messages: 50, video_seconds: 4, cycles: 4, ..Default::default() };
        let link = Impairment { loss_percent: 10.0, jitter_ms: 30, delay_ms: 0 };
        let policy = Policy::load(&Policy::path_for("lean")).unwrap();
        let build = replica::build(&policy).unwrap();
        let (mut reports, mut runs) = (Vec::new(), Vec::new());
        for scenario in run::LOSSY_SCENARIOS {
            let ran = run::run_scenario_on_link(&build, &policy, scenario, &settings, out.path(), Some(link)).unwrap();
            let report = account::build_report(&ran.trace, scenario, &policy, &build).unwrap();
            runs.push(LossyRun::new(&ran, &report).unwrap());
            reports.push(report);
        }
        let table = side_by_side(&runs);
        eprintln!("{table}");
        for r in &runs {
            assert!(r.stats.device_to_remote_dropped > 0 && r.stats.remote_to_device_dropped > 0, "{table}");
            assert!(verdicts(r).is_empty(), "{:?}\n{table}", verdicts(r));
        }
        for r in runs.iter().filter(|r| r.scenario != "datachannel") {
            assert!(r.stats.video_rtp_dropped > 0 && r.nack_packets.unwrap_or(0) > 0, "{table}");
            assert!(r.stats.video_rtp_retransmitted > 0 && r.recovered.unwrap_or(0) > 0, "{table}");
        }
        let dc = runs.iter().find(|r| r.scenario == "datachannel").unwrap();
        assert_eq!((dc.messages_checked, dc.messages_sent), (Some(50), Some(50)), "{table}");
        let breaches = render::check_budgets(std::slice::from_ref(&policy), &reports);
        assert!(breaches.is_empty(), "{breaches:#?}\n{table}");
    }

    /// The data-channel stall on a reordering link (issue 15): the remote sends a message only
    /// after the echo of the one before, so through 30 ms of jitter alone 700 messages take ~75 s,
    /// and the device, which waited 60 s from the channel's opening for `CTL done`, left at
    /// message ~560 while the exchange still moved (the remote then timed out on an echo). Every
    /// message must come back whole and in order, and the exchange must outlast that minute, else
    /// this test no longer covers it.
    #[test]
    fn lean_datachannel_through_jitter_alone_echoes_every_message_past_a_minute() {
        let _measuring = crate::idf::HEAVY_TEST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let out = tempfile::tempdir().unwrap();
        let settings = run::Settings { messages: 700, video_seconds: 4, cycles: 4, ..Default::default() };
        let link = Impairment { loss_percent: 0.0, jitter_ms: 30, delay_ms: 0 };
        let policy = Policy::load(&Policy::path_for("lean")).unwrap();
        let build = replica::build(&policy).unwrap();
        let ran = run::run_scenario_on_link(&build, &policy, "datachannel", &settings, out.path(), Some(link)).unwrap();
        let report = account::build_report(&ran.trace, "datachannel", &policy, &build).unwrap();
        let r = LossyRun::new(&ran, &report).unwrap();
        let table = side_by_side(std::slice::from_ref(&r));
        eprintln!("{table}");
        assert!(verdicts(&r).is_empty(), "{:?}\n{table}", verdicts(&r));
        assert_eq!((r.messages_checked, r.messages_sent), (Some(700), Some(700)), "{table}");
        assert!(
            r.stats.reordered > 0 && r.stats.device_to_remote_dropped + r.stats.remote_to_device_dropped == 0,
            "{table}"
        );
        assert!(r.exchange_ms.unwrap_or(0) > 60_000, "the exchange took under a minute: raise `messages`\n{table}");
    }
}
