//! The report shape shared by `lab` (host replica) and `analyze` (device log), so the two
//! can be compared line by line. Field names are part of the `--json` interface: add, never rename.

use serde::{Deserialize, Serialize};

/// Phases of a scenario, in order. The lab marks them from the driver; `analyze` from tracker labels.
pub const PHASES: &[&str] =
    &["start", "pc-created", "gathered", "connected", "channel-open", "streaming", "closed", "cleaned-up"];

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// `datachannel`, `video`, `cycle`, `scale`, or `device-log` for `analyze`.
    pub scenario: String,
    /// Policy name (`lean`, `stock`, ...).
    pub policy: String,
    pub components: Vec<ComponentReport>,
    /// Live bytes of the stack when the connection is up (phase `connected`), all components.
    pub total_connected_bytes: u64,
    /// Highest live bytes at any moment of the scenario.
    pub total_peak_bytes: u64,
    /// Live bytes after the first PeerConnection was created (global init included).
    pub init_bytes: u64,
    /// Threads the stack created.
    pub threads: u64,
    /// `cycle` only: bytes still held per connect/disconnect cycle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leak_bytes_per_cycle: Option<u64>,
    /// `scale` only: marginal live bytes per extra simultaneous connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_extra_connection: Option<u64>,
    /// Bytes live at the end that were never freed (leaks), by site.
    #[serde(default)]
    pub leaks: Vec<Site>,
    /// Largest allocation sites (by bytes live at their peak or total bytes allocated).
    #[serde(default)]
    pub sites: Vec<Site>,
    /// Every thread the stack created.
    #[serde(default)]
    pub thread_list: Vec<ThreadReport>,
    pub total_stack_high_water_bytes: u64,
    pub projection: Projection,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ComponentReport {
    pub name: String,
    pub connected_bytes: u64,
    pub peak_bytes: u64,
    /// Live bytes and block counts at the end of each phase, in PHASES order (absent phases skipped).
    #[serde(default)]
    pub phases: Vec<PhaseFigure>,
    /// Device logs only: bytes by heap.
    #[serde(default)]
    pub internal_bytes: u64,
    #[serde(default)]
    pub psram_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PhaseFigure {
    pub phase: String,
    pub live_bytes: u64,
    pub peak_bytes: u64,
    pub blocks: u64,
}

/// An allocation site: where the bytes were asked for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Site {
    pub component: String,
    /// Source file (as in the debug info, upstream-relative where possible) and line.
    pub file: String,
    pub line: u32,
    pub function: String,
    /// Bytes: live at peak for `sites`, still held for `leaks`.
    pub bytes: u64,
    pub count: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ThreadReport {
    pub component: String,
    /// `file:line function` of the pthread_create call.
    pub created_at: String,
    pub requested_bytes: u64,
    pub high_water_bytes: u64,
    /// Lifetime in milliseconds.
    pub lifetime_ms: u64,
}

/// Live bytes placed on the ESP32's heaps under the policy, with the ESP-IDF cost model applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Projection {
    pub internal_bytes: u64,
    pub psram_bytes: u64,
    /// Each cost the model added (TLSF overhead, TCBs, semaphores, lwIP sockets, stacks), for the report.
    #[serde(default)]
    pub lines: Vec<ProjectionLine>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProjectionLine {
    pub what: String,
    pub internal_bytes: u64,
    pub psram_bytes: u64,
    /// The ESP-IDF source the constant comes from.
    pub source: String,
}
