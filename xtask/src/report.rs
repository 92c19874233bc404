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
    /// Bytes the first PeerConnection added to what was live at `start`: the global init
    /// (usrsctp, thread pool, certificate) plus the PeerConnection itself.
    pub init_bytes: u64,
    /// Heap the stack holds at `start`, before any call into it: C++ static constructors run
    /// at load (on the ESP32, at boot). Counted in every later phase total.
    #[serde(default)]
    pub load_bytes: u64,
    /// Most stack threads alive at the same time (each costs a stack and a TCB on the ESP32).
    pub threads: u64,
    /// Threads the stack created over the whole scenario, short-lived ones included.
    #[serde(default)]
    pub threads_created: u64,
    /// `cycle` only: bytes still held per connect/disconnect cycle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leak_bytes_per_cycle: Option<u64>,
    /// `cycle` run beside `datachannel` (one connection) in the same `lab` call: what each extra
    /// cycle still holds after rtcCleanup, (held after cleanup - datachannel's) / (cycles - 1).
    /// Exact (every thread joined, usrsctp finished); checked against the same budget as
    /// `leak_bytes_per_cycle`, which it does not replace: a device never calls rtcCleanup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak_bytes_per_cycle_after_cleanup: Option<u64>,
    /// `cycle` only: usrsctp's verification tags in time-wait at the quiet `closed` marks, a
    /// line of its own with its bound. Left out of `leak_bytes_per_cycle`: it is bounded and
    /// expires (see `TimeWait`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_wait: Option<TimeWait>,
    /// `cycle` only: closed connections' DTLS transports still held by a pending retransmission
    /// timer at the quiet `closed` marks, a line of its own with its bound. Left out of
    /// `leak_bytes_per_cycle`: it is bounded and expires (see `DtlsTimers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtls_timers: Option<DtlsTimers>,
    /// `cycle` only: every site whose live bytes at the quiet `closed` marks are not the same at
    /// every mark from the second on: what the per-cycle figure is made of, site by site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cycle_sites: Vec<CycleSite>,
    /// `scale` only: marginal live bytes per extra simultaneous connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_extra_connection: Option<u64>,
    /// `viewers` only: the quiet marks after each join, leave and rejoin, and the cost per extra
    /// viewer as least-squares slopes over the join marks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewers: Option<Viewers>,
    /// Bytes live at the end that were never freed (leaks), by site.
    #[serde(default)]
    pub leaks: Vec<Site>,
    /// Largest allocation sites (by bytes live at their peak or total bytes allocated).
    #[serde(default)]
    pub sites: Vec<Site>,
    /// Bytes live at the connected mark, by call site, largest first.
    #[serde(default)]
    pub connected_sites: Vec<Site>,
    /// Every thread the stack created.
    #[serde(default)]
    pub thread_list: Vec<ThreadReport>,
    pub total_stack_high_water_bytes: u64,
    pub projection: Projection,
    /// The stack's pthread mutexes and condition variables at the projection's mark, by the
    /// allocation site of the block holding them (`static or stack` when none): which objects
    /// own the locks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_owners: Vec<SyncOwner>,
    /// Static data of the stack's host libraries that stays in internal RAM on the device:
    /// `.data`, TLS, and `.bss` unless the component's `static_placement` is `psram`
    /// (`size::host_sizes`). Added to the projection for the whole-stack internal RAM figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_internal_bytes: Option<u64>,
    /// The same sum from the esp32p4 linker map of this policy's `datachannel_echo`, when a chip
    /// build is at hand (`size::chip_map`): what the chip's linker really leaves in internal RAM.
    /// The whole-stack internal figure uses it in place of the host proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_internal_chip_bytes: Option<u64>,
    /// Highest live total from the first PeerConnection until the connection is up.
    #[serde(default)]
    pub handshake_peak_bytes: u64,
    /// `video` only: live bytes at the `streaming` mark, after the whole stream was sent
    /// (between frames: what the stream keeps, e.g. the NACK responder's packets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming_bytes: Option<u64>,
    /// `video` only: highest live bytes while streaming (a key frame in flight through the packetizer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming_peak_bytes: Option<u64>,
    /// Bytes the stack still held at the end (after rtcCleanup), all sites.
    #[serde(default)]
    pub leak_bytes: u64,
    /// Live bytes by component over time (ms, bytes per `timeline_components`), for the SVG.
    #[serde(skip)]
    pub timeline: Vec<(u64, Vec<u64>)>,
    #[serde(skip)]
    pub timeline_components: Vec<String>,
    /// With `lab --runs N`: each measure's lowest and highest value over the N runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spread: Vec<Spread>,
    /// `analyze` only: what the device log itself said (heap snapshots, skipped lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceLog>,
}

/// Facts only a device log has. Added for `analyze`; the lab leaves it `None`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DeviceLog {
    /// esp_memtrack snapshots in log order, one per label and heap.
    pub heaps: Vec<HeapFigure>,
    /// Label of the heap trace dump the component figures come from.
    pub connected_dump: String,
    /// Lines that looked like tracker or heap trace lines but did not parse.
    pub skipped_lines: u64,
    /// The first few of them, as `line N: text`.
    pub skipped_examples: Vec<String>,
    /// Inconsistencies worth a look (dump summary disagreeing with the lines read, overflow).
    pub warnings: Vec<String>,
    /// Heap taken at its worst since the baseline snapshot: baseline free minus the lowest
    /// min_free (heap_caps_get_minimum_free_size) printed after it. Counts everything on that heap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_internal_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_psram_bytes: Option<u64>,
    /// Free heap that did not come back after the connection: the tracker's delta at
    /// `cleaned-up` (or `closed`, `disconnected`) against its baseline, as positive bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_returned_internal_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_returned_psram_bytes: Option<u64>,
    /// The stack's static data by component from the build's linker map (`--map`, or the map
    /// beside `--elf`): internal = `.data` + `.bss` in DRAM, psram = `.bss` in `.ext_ram.bss`
    /// (`static_placement = "psram"`). `Report.static_internal_bytes` is their internal sum.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_data: Vec<StaticFigure>,
    /// The linker map those figures come from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub static_source: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StaticFigure {
    pub component: String,
    pub internal_bytes: u64,
    pub psram_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HeapFigure {
    pub label: String,
    /// `internal`, `psram` or `dma`.
    pub heap: String,
    pub free: u64,
    pub min_free: u64,
    pub largest_free_block: u64,
    /// Free bytes now minus at the baseline (negative: bytes taken since), when the tracker printed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_delta: Option<i64>,
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

/// One measure over repeated runs (`lab --runs N`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Spread {
    pub measure: String,
    pub min: u64,
    pub max: u64,
    pub runs: u32,
}

/// An allocation site: where the bytes were asked for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Site {
    pub component: String,
    /// Source file (as in the debug info, upstream-relative where possible) and line.
    pub file: String,
    pub line: u32,
    pub function: String,
    /// Bytes: live at peak for `sites`, at the connected mark for `connected_sites`, still held for `leaks`.
    pub bytes: u64,
    pub count: u64,
}

/// usrsctp keeps each freed association's verification tag for `sctp_vtag_time_wait` (60 s,
/// SCTP_TIME_WAIT) in `sctp_add_vtag_to_timewait` (sctp_pcb.c): 32 hash buckets
/// (SCTP_STACK_VTAG_HASH_SIZE), each a list of 188-byte blocks of 15 tags
/// (SCTP_NUMBER_IN_VTAG_BLOCK, on a 32-bit target). A new tag takes a free or expired slot of its
/// bucket; a block is added only when all of the bucket's slots hold unexpired tags, and blocks
/// are freed only by usrsctp_finish. So after k closed associations, W of them freed within the
/// time-wait of one another at most: blocks <= min(k, 32 x ceil(W / 15)).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TimeWait {
    /// Blocks and bytes at the last `closed` mark, and the most blocks at any.
    pub blocks: u64,
    pub bytes: u64,
    pub most_blocks: u64,
    /// The bound at the last mark (it only grows): min(closed associations, 32 x ceil(W / 15)).
    pub bound_blocks: u64,
    /// Most associations closed within one time-wait (61 s) of one another, W above.
    pub closed_within_time_wait: u64,
    /// The first mark whose blocks exceeded its bound, if any (then something else allocates
    /// there, or the model is wrong: either way the verdict fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over_bound_at: Option<String>,
}

impl TimeWait {
    /// What the lab and the soak print after their own context: the blocks now and at most,
    /// and the bound they are held to.
    pub fn summary(&self) -> String {
        format!(
            "{} blocks ({} B) at the last closed mark, {} at most; bound {} blocks (at most {} associations closed within one time-wait){}",
            self.blocks,
            self.bytes,
            self.most_blocks,
            self.bound_blocks,
            self.closed_within_time_wait,
            self.over_bound_at.as_ref().map(|at| format!(", OVER THE BOUND at {at}")).unwrap_or_default()
        )
    }
}

/// During the DTLS handshake libdatachannel's DtlsTransport::doRecv (mbedTLS) schedules itself on
/// the thread pool for mbedTLS's retransmission timer (1 s, doubling on each retransmission up to
/// 60 s, MBEDTLS_SSL_DTLS_TIMEOUT_DFL_MIN/MAX); the task holds a weak_ptr to the transport, and a
/// weak_ptr keeps the storage of a make_shared object (peerconnection.cpp initDtlsTransport,
/// 1968 B on the host) until it is gone. So a connection closed before its last timer fired
/// leaves that block and the task (84 B) until the timer fires, then both go: at most one
/// transport per connection closed within 62 s, and only while it has a task pending. At a
/// `closed` mark no transport is live, so a transport block there is a closed one's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DtlsTimers {
    /// At the last `closed` mark: transports held by a pending timer, timer tasks, their bytes.
    pub transports: u64,
    pub tasks: u64,
    pub bytes: u64,
    /// The most at any `closed` mark.
    pub most_transports: u64,
    pub most_tasks: u64,
    pub most_bytes: u64,
    /// Transport blocks at a mark beyond its tasks or beyond the connections closed within 62 s:
    /// not held by a timer, so counted in `leak_bytes_per_cycle` (the most at any mark).
    pub most_unexplained_transports: u64,
    /// Timer tasks may number at most `DTLS_TIMER_TASKS_PER_CONNECTION` per connection closed
    /// within 62 s (the bound at the last mark), the first mark over it if any.
    pub bound_tasks: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over_bound_at: Option<String>,
}

/// One site's live bytes at the quiet `cycle-N-closed` marks (`Report.cycle_sites`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CycleSite {
    pub component: String,
    pub file: String,
    pub line: u32,
    pub function: String,
    /// Live bytes at the second `closed` mark and at the last; blocks at the last.
    pub first_bytes: u64,
    pub last_bytes: u64,
    pub last_blocks: u64,
    /// Median (Theil-Sen) slope over the marks from the second on, bytes per cycle.
    pub slope_bytes_per_cycle: f64,
    /// `time-wait` or `dtls-timer` when the site is counted in `time_wait` or `dtls_timers`
    /// (bounded and expiring), not in `leak_bytes_per_cycle`; empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expiring: String,
    /// Live bytes at every `closed` mark, the first included.
    #[serde(default)]
    pub bytes_at_marks: Vec<u64>,
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
    /// The thread ended before the trace was written (joined or detached and returned).
    #[serde(default)]
    pub ended: bool,
    /// Device logs only: FreeRTOS task name and the least free stack it ever had
    /// (uxTaskGetStackHighWaterMark, bytes on ESP-IDF).
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub stack_free_min_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SyncOwner {
    pub component: String,
    /// `file:line function` of the owner block's allocation, or `static or stack`.
    pub owner: String,
    pub mutexes: u64,
    pub condvars: u64,
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

/// The component a source file belongs to, from its path as debug info records it. Used by the
/// lab (host DWARF) and by `analyze` (device ELF) so both attribute the same line to the same
/// component. `None`: not part of the stack (C/C++ runtime, application, ESP-IDF itself).
pub fn component_of_source_path(path: &str) -> Option<&'static str> {
    crate::components::of_source_path(path)
}

#[cfg(test)]
mod tests {
    use super::component_of_source_path as c;

    #[test]
    fn source_paths_map_to_components() {
        assert_eq!(c("/x/libdatachannel/deps/usrsctp/usrsctplib/netinet/sctp_pcb.c"), Some("usrsctp"));
        assert_eq!(c("/x/libdatachannel/deps/plog/include/plog/Record.h"), Some("plog"));
        assert_eq!(c("/x/libdatachannel/src/impl/sctptransport.cpp"), Some("libdatachannel"));
        assert_eq!(c("/proj/components/libsrtp/upstream/srtp/srtp.c"), Some("libsrtp"));
        assert_eq!(c("/r/mbedtls-rs-sys/mbedtls/library/ssl_tls.c"), Some("mbedtls"));
        assert_eq!(c("/usr/include/c++/12/bits/new_allocator.h"), None);
        // The inner directory decides: a dependency inside libdatachannel's crate, a staged copy.
        assert_eq!(c("/c/libdatachannel/deps/libjuice/src/agent.c"), Some("libjuice"));
        assert_eq!(c("/c/libdatachannel/include/../deps/libsrtp/srtp/srtp.c"), Some("libsrtp"));
        assert_eq!(c("/h/lean-1/stack-src/deps/usrsctp/usrsctplib/user_socket.c"), Some("usrsctp"));
        assert_eq!(c("/h/lean-1/stack-src/src/impl/dtlstransport.cpp"), Some("libdatachannel"));
        assert_eq!(c("/h/lean-1/mbedtls-src/library/ssl_msg.c"), Some("mbedtls"));
        assert_eq!(c("/idf/components/mbedtls/port/esp_mem.c"), Some("mbedtls"));
        assert_eq!(c("/app/components/esp_dc_init/src/esp_dc_port_init.c"), Some("esp_dc_init"));
        assert_eq!(c("C:\\app\\components\\esp_dc_port\\src\\esp_dc_port_alloc.c"), Some("esp_dc_port"));
    }
}

/// `viewers`: one camera, N viewers joining one by one, the first leaving and rejoining.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Viewers {
    /// Viewers that joined one by one (the rejoin not counted).
    pub viewers: u64,
    /// One per quiet `viewers-*` mark, in order: `viewers-1`..`viewers-N`, `viewers-left` (N - 1),
    /// `viewers-rejoined` (N), `viewers-0` (after the last left).
    pub phases: Vec<ViewerPhase>,
    /// Least squares over the join marks `viewers-1`..`viewers-N`: stack total, projected
    /// internal RAM and PSRAM, and each component's live bytes.
    pub bytes_per_viewer: Slope,
    pub internal_bytes_per_viewer: Slope,
    pub psram_bytes_per_viewer: Slope,
    #[serde(default)]
    pub component_bytes_per_viewer: Vec<(String, Slope)>,
    /// Device CPU ns per second of stream, least squares over the join windows.
    #[serde(default)]
    pub cpu_ns_per_viewer_second: Slope,
    /// The most CPU per viewer of any window against one viewer's, in percent:
    /// max over K of cpu(K) / (K x cpu(1)) x 100. 100 is linear, below it sublinear.
    #[serde(default)]
    pub cpu_per_viewer_of_linear_percent: u64,
    /// Bytes live at `viewers-0` (every viewer gone) that were allocated after `viewers-left`
    /// (global init, the first connection's and the first teardown's lazy set-up done),
    /// usrsctp's time-wait and the DTLS timer hold aside (bounded and expiring, see `TimeWait`,
    /// `DtlsTimers`).
    pub held_after_last_bytes: u64,
    /// The largest such sites, for the report when it is not 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_after_last_sites: Vec<Site>,
    /// What `held_after_last_bytes` leaves out at `viewers-0`: time-wait, DTLS timer hold, the
    /// pending SCTP timer tick and glibc's resolver cache (account.rs, held_after_viewers).
    #[serde(default)]
    pub set_aside_after_last_bytes: u64,
}

/// One `viewers-*` mark.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ViewerPhase {
    pub mark: String,
    pub viewers: u64,
    pub total_bytes: u64,
    /// Live bytes of each stack component at the mark.
    #[serde(default)]
    pub components: Vec<(String, u64)>,
    pub internal_bytes: u64,
    pub psram_bytes: u64,
    /// The stack's threads alive at the mark and the ESP32 stacks they take.
    pub threads: u64,
    pub stack_bytes: u64,
    /// The device's CPU time over the stream window before the mark (from its log's `[cpu]`
    /// line), and the window's length; 0 for `viewers-0`.
    #[serde(default)]
    pub cpu_ns: u64,
    #[serde(default)]
    pub wall_ns: u64,
}

/// A least-squares slope (per viewer) and its standard error.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Slope {
    pub per_viewer: f64,
    pub std_error: f64,
    /// The largest distance of a point from the fitted line.
    pub max_residual: f64,
}
