//! What each lever of a policy saves: the policy is measured once as it is, then once per lever
//! with only that lever put back to upstream's value. The difference is the lever's saving,
//! measured in the same run on the same machine.
//!
//! Levers are the policy's knobs that differ from upstream, its mbedTLS record buffer lengths,
//! the patches that are fixes rather than knob plumbing (`*knobs.patch` only makes knobs settable),
//! and the placement settings (`sync.placement`, `static_placement`), whose saving is internal RAM
//! moved to PSRAM rather than bytes: the `internal` columns show it.

use crate::fsutil::write_atomic;
use crate::ledger::account;
use crate::policy::{is_knob_patch, Policy, StaticPlacement, SyncPlacement, KNOBS};
use crate::replica::{self, run};
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
    /// The ESP32 projection's internal RAM for one connection (heap, TCBs, sync objects, sockets).
    pub internal_bytes: i64,
    /// The stack's static data left in internal RAM (`size-check --host` split by `static_placement`).
    pub static_internal_bytes: i64,
    /// pthread mutexes and condition variables the stack holds when connected.
    pub locks: i64,
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
            video: name.starts_with("nack_"),
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
    if policy.sync.placement == SyncPlacement::WithOwner {
        levers.push(Lever {
            name: "sync.placement".into(),
            policy_value: "with_owner".into(),
            upstream_value: "internal".into(),
            video: false,
            revert: Box::new(|doc| doc["sync"]["placement"] = value("internal")),
        });
    }
    // One lever for every component's .bss: the split moves no heap byte, so one host build shows it.
    let psram_statics: Vec<String> = policy
        .components
        .iter()
        .filter(|(_, c)| c.static_placement == StaticPlacement::Psram)
        .map(|(name, _)| name.clone())
        .collect();
    if !psram_statics.is_empty() {
        levers.push(Lever {
            name: format!("components.{{{}}}.static_placement", psram_statics.join(",")),
            policy_value: "psram".into(),
            upstream_value: "internal".into(),
            video: false,
            revert: Box::new(move |doc| {
                for c in &psram_statics {
                    doc["components"][c.as_str()]["static_placement"] = value("internal");
                }
            }),
        });
    }
    for (component, c) in &policy.components {
        // A knob's own patches are plumbing like knobs.patch: the knob's lever reverts it.
        let plumbing = |p: &str| p.ends_with("/knobs.patch") || is_knob_patch(p);
        for patch in c.patches.iter().filter(|p| !plumbing(p)) {
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
    let build = replica::build(policy)?;
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

/// Measures `policy` and each of its levers reverted (only those whose name contains one of
/// `only`, when given); writes the variant policies under `out`.
pub fn knob_savings(policy: &Policy, settings: &run::Settings, out: &Path, only: &[String]) -> Result<Vec<Saving>> {
    let text = std::fs::read_to_string(&policy.path)?;
    let mut levers = levers(policy);
    if !only.is_empty() {
        levers.retain(|l| only.iter().any(|o| l.name.contains(o.as_str())));
        if levers.is_empty() {
            return Err(crate::exit::bad_input(format!(
                "no lever of `{}` matches {}",
                policy.policy.name,
                only.join(", ")
            )));
        }
    }
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
            internal_bytes: d(r.projection.internal_bytes, base.projection.internal_bytes),
            static_internal_bytes: d(r.static_internal_bytes.unwrap_or(0), base.static_internal_bytes.unwrap_or(0)),
            locks: d(locks(&r), locks(&base)),
            video_live_bytes: match (&video, &base_video) {
                (Some(v), Some(b)) => Some(d(v.streaming_bytes.unwrap_or(0), b.streaming_bytes.unwrap_or(0))),
                _ => None,
            },
        });
    }
    Ok(savings)
}

fn locks(r: &Report) -> u64 {
    r.sync_owners.iter().map(|o| o.mutexes + o.condvars).sum()
}

fn cells(s: &Saving) -> [String; 11] {
    [
        s.lever.clone(),
        s.policy_value.clone(),
        s.upstream_value.clone(),
        s.connected_bytes.to_string(),
        s.handshake_peak_bytes.to_string(),
        s.stack_high_water_bytes.to_string(),
        s.threads.to_string(),
        s.internal_bytes.to_string(),
        s.static_internal_bytes.to_string(),
        s.locks.to_string(),
        s.video_live_bytes.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
    ]
}

pub fn print_savings(policy: &str, savings: &[Saving]) {
    println!("== what each lever of `{policy}` saves (bytes; that lever alone put back to upstream's value)");
    let header = [
        "lever",
        "policy",
        "upstream",
        "connected",
        "handshake",
        "stacks",
        "threads",
        "internal",
        "static int",
        "locks",
        "video live",
    ]
    .map(String::from);
    for c in std::iter::once(header).chain(savings.iter().map(cells)) {
        println!(
            "{:<52} {:>9} {:>9} {:>10} {:>10} {:>8} {:>8} {:>9} {:>10} {:>6} {:>10}",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10]
        );
    }
}

pub fn savings_markdown(savings: &[Saving]) -> String {
    let mut md = String::from(
        "| lever | lean | upstream | connected B | handshake peak B | stacks B | threads | internal/conn B | static internal B | locks | video live B |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in savings {
        let mut c = cells(s);
        c[0] = format!("`{}`", c[0]);
        md.push_str(&format!("| {} |\n", c.join(" | ")));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lean's placement levers exist and each, reverted, gives a policy with that setting back at
    /// ESP-IDF's default and everything else as it was.
    #[test]
    fn placement_levers_revert_to_internal() {
        let path = crate::fsutil::project_root().join("policies/lean.toml");
        let lean = Policy::load(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let levers = levers(&lean);
        let dir = tempfile::tempdir().unwrap();
        let reverted = |name: &str| {
            let lever = levers.iter().find(|l| l.name == name).unwrap_or_else(|| panic!("no lever {name}"));
            let mut doc: DocumentMut = text.parse().unwrap();
            (lever.revert)(&mut doc);
            let p = dir.path().join("lean.toml");
            std::fs::write(&p, doc.to_string()).unwrap();
            Policy::load(&p).unwrap()
        };
        let sync = reverted("sync.placement");
        assert_eq!(sync.sync.placement, SyncPlacement::Internal);
        assert!(sync.components.values().any(|c| c.static_placement == StaticPlacement::Psram));
        let statics = reverted("components.{libdatachannel,libjuice,libsrtp,usrsctp}.static_placement");
        assert!(statics.components.values().all(|c| c.static_placement == StaticPlacement::Internal));
        assert_eq!(statics.sync.placement, SyncPlacement::WithOwner);
        assert!(levers.iter().any(|l| l.name == "patch libdatachannel/fewer-locks.patch"));
    }
}
