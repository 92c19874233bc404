//! What each lever of a policy saves: the policy is measured once as it is, then once per lever
//! with only that lever put back to upstream's value. The difference is the lever's saving,
//! measured in the same run on the same machine.
//!
//! Levers are the policy's knobs that differ from upstream, its mbedTLS record buffer lengths and
//! the patches that are fixes rather than knob plumbing (`*/knobs.patch` only makes knobs settable).

use super::{account, host, run};
use crate::fsutil::write_atomic;
use crate::policy::{Policy, KNOBS};
use crate::report::Report;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;
use toml_edit::{value, DocumentMut};

/// One lever of the policy and the bytes it saves (`reverted` minus `policy`; negative = costs).
#[derive(Debug, Clone, Serialize)]
pub struct Saving {
    /// `components.<c>.knobs.<k>`, `mbedtls.<field>` or `patch <name>`.
    pub lever: String,
    pub policy_value: String,
    pub upstream_value: String,
    pub connected_bytes: i64,
    pub handshake_peak_bytes: i64,
    pub stack_high_water_bytes: i64,
    pub threads: i64,
    /// From the `video` scenario, for levers that act on media (the NACK responder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video_live_bytes: Option<i64>,
}

struct Lever {
    name: String,
    policy_value: String,
    upstream_value: String,
    video: bool,
    revert: Box<dyn Fn(&mut DocumentMut)>,
}

fn levers(policy: &Policy) -> Vec<Lever> {
    let mut levers = Vec::new();
    for spec in KNOBS {
        let current = policy.knob_value(spec);
        if current == spec.stock {
            continue;
        }
        let (component, name, stock) = (spec.component, spec.name, spec.stock);
        levers.push(Lever {
            name: format!("components.{component}.knobs.{name}"),
            policy_value: current.to_string(),
            upstream_value: stock.to_string(),
            video: name == "nack_max_packets",
            revert: Box::new(move |doc| {
                doc["components"][component]["knobs"][name] = value(stock);
            }),
        });
    }
    for (field, current, upstream) in [
        ("ssl_in_content_len", policy.mbedtls.ssl_in_content_len, 16384),
        ("ssl_out_content_len", policy.mbedtls.ssl_out_content_len, 16384),
    ] {
        if current != upstream {
            let paired = field == "ssl_in_content_len"
                && policy
                    .components
                    .get("libdatachannel")
                    .is_some_and(|c| c.knobs.contains_key("dtls_recv_buffer_bytes"));
            levers.push(Lever {
                // A DTLS read buffer must hold a whole record (policy check): it goes up with it.
                name: if paired {
                    format!("mbedtls.{field} (+ dtls_recv_buffer_bytes)")
                } else {
                    format!("mbedtls.{field}")
                },
                policy_value: current.to_string(),
                upstream_value: upstream.to_string(),
                video: false,
                revert: Box::new(move |doc| {
                    doc["mbedtls"][field] = value(i64::from(upstream));
                    if paired {
                        doc["components"]["libdatachannel"]["knobs"]["dtls_recv_buffer_bytes"] =
                            value(i64::from(upstream));
                    }
                }),
            });
        }
    }
    for (component, c) in &policy.components {
        for patch in c.patches.iter().filter(|p| !p.ends_with("/knobs.patch")) {
            let (component, patch) = (component.clone(), patch.clone());
            levers.push(Lever {
                name: format!("patch {patch}"),
                policy_value: "applied".into(),
                upstream_value: "not applied".into(),
                video: false,
                revert: Box::new(move |doc| {
                    if let Some(list) = doc["components"][component.as_str()]["patches"].as_array_mut() {
                        list.retain(|v| v.as_str() != Some(patch.as_str()));
                    }
                }),
            });
        }
    }
    levers
}

fn measure(policy: &Policy, settings: &run::Settings, out: &Path, video: bool) -> Result<(Report, Option<Report>)> {
    std::fs::create_dir_all(out)?;
    let build = host::build(policy)?;
    let dc = run::run_scenario(&build, policy, "datachannel", settings, out)?;
    let dc = account::build_report(&dc, "datachannel", policy, &build)?;
    let video = if video {
        let trace = run::run_scenario(&build, policy, "video", settings, out)?;
        Some(account::build_report(&trace, "video", policy, &build)?)
    } else {
        None
    };
    Ok((dc, video))
}

/// Measures `policy` and each of its levers reverted; writes the variant policies under `out`.
pub fn knob_savings(policy: &Policy, settings: &run::Settings, out: &Path) -> Result<Vec<Saving>> {
    let text = std::fs::read_to_string(&policy.path)?;
    let levers = levers(policy);
    eprintln!("lab: {} as it is", policy.policy.name);
    let (base, base_video) = measure(policy, settings, &out.join("as-is"), levers.iter().any(|l| l.video))?;
    let mut savings = Vec::new();
    for (i, lever) in levers.iter().enumerate() {
        eprintln!("lab: {} with {} back at {}", policy.policy.name, lever.name, lever.upstream_value);
        let mut doc: DocumentMut = text.parse().context("the policy parsed once already")?;
        (lever.revert)(&mut doc);
        let dir = out.join(format!("lever-{i:02}"));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.toml", policy.policy.name));
        write_atomic(&path, doc.to_string().as_bytes())?;
        let variant = Policy::load(&path)?;
        let (r, video) = measure(&variant, settings, &dir, lever.video)?;
        let d = |a: u64, b: u64| a as i64 - b as i64;
        savings.push(Saving {
            lever: lever.name.clone(),
            policy_value: lever.policy_value.clone(),
            upstream_value: lever.upstream_value.clone(),
            connected_bytes: d(r.total_connected_bytes, base.total_connected_bytes),
            handshake_peak_bytes: d(r.handshake_peak_bytes, base.handshake_peak_bytes),
            stack_high_water_bytes: d(r.total_stack_high_water_bytes, base.total_stack_high_water_bytes),
            threads: d(r.threads, base.threads),
            video_live_bytes: match (&video, &base_video) {
                (Some(v), Some(b)) => Some(d(v.streaming_bytes.unwrap_or(0), b.streaming_bytes.unwrap_or(0))),
                _ => None,
            },
        });
    }
    Ok(savings)
}

fn cells(s: &Saving) -> [String; 8] {
    [
        s.lever.clone(),
        s.policy_value.clone(),
        s.upstream_value.clone(),
        s.connected_bytes.to_string(),
        s.handshake_peak_bytes.to_string(),
        s.stack_high_water_bytes.to_string(),
        s.threads.to_string(),
        s.video_live_bytes.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
    ]
}

pub fn print_savings(policy: &str, savings: &[Saving]) {
    println!("== what each lever of `{policy}` saves (bytes; that lever alone put back to upstream's value)");
    let header =
        ["lever", "policy", "upstream", "connected", "handshake", "stacks", "threads", "video live"].map(String::from);
    for c in std::iter::once(header).chain(savings.iter().map(cells)) {
        println!("{:<52} {:>9} {:>9} {:>10} {:>10} {:>8} {:>8} {:>10}", c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]);
    }
}

pub fn savings_markdown(savings: &[Saving]) -> String {
    let mut md = String::from("| lever | lean | upstream | connected B | handshake peak B | stacks B | threads | video live B |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for s in savings {
        let mut c = cells(s);
        c[0] = format!("`{}`", c[0]);
        md.push_str(&format!("| {} |\n", c.join(" | ")));
    }
    md
}
