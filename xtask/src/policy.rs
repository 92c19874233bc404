//! The memory policy: one TOML file is the single source of truth for where each
//! component allocates, which knobs shrink it, which sdkconfig memory settings the
//! application gets, and which budgets hold. `configure`, `lab`, `size-check` and
//! `audit` all read it through `Policy::load`.
//!
//! Errors name the file, the line and the key (`policies/lean.toml:12: components.libsrtp.placement: ...`)
//! and are raised before anything is written.

use crate::components;
use crate::exit;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod validate;
use validate::{escaped, first_line, key_on_line, line_of_offset, span_line};

/// Where a component's heap allocations go on the ESP32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// `heap_caps_malloc(MALLOC_CAP_SPIRAM)`, falling back to internal RAM when PSRAM is exhausted.
    Psram,
    /// `heap_caps_malloc(MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT)`.
    Internal,
    /// Plain `malloc`: ESP-IDF's own policy (`[memory]`) decides by size.
    Default,
}

impl Placement {
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Psram => "psram",
            Placement::Internal => "internal",
            Placement::Default => "default",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub policy: Meta,
    pub components: BTreeMap<String, Component>,
    pub memory: Memory,
    pub mbedtls: Mbedtls,
    pub pthread: Pthread,
    pub cxx: Cxx,
    /// Where the FreeRTOS objects of pthread mutexes and condition variables go.
    #[serde(default)]
    pub sync: SyncObjects,
    pub heap_tracing: HeapTracing,
    /// Extra sdkconfig lines the typed sections do not cover, written verbatim (`CONFIG_X = "y"`).
    #[serde(default)]
    pub sdkconfig_extra: BTreeMap<String, String>,
    pub budgets: Budgets,
    #[serde(default)]
    pub audit: Audit,
    /// Where the policy file came from; filled in by `load`.
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub placement: Placement,
    /// Header force-included into every source of the component (`-include`), from
    /// `components/esp_dc_port/include/`. Empty: no redirection.
    #[serde(default)]
    pub force_include: String,
    /// Extra compile definitions, `NAME = value` (value: string, integer or boolean).
    #[serde(default)]
    pub definitions: BTreeMap<String, DefinitionValue>,
    /// Memory knobs from the catalogue in `KNOBS`; each becomes a Kconfig option.
    #[serde(default)]
    pub knobs: BTreeMap<String, i64>,
    /// Our own diffs under `patches/`, applied in order at configure time.
    #[serde(default)]
    pub patches: Vec<String>,
    /// Stack size and placement of the threads this component creates.
    #[serde(default)]
    pub threads: Option<Threads>,
    /// Where the component's zero-initialised static data (`.bss`) goes: `psram` emits an
    /// `extram_bss` linker fragment. `.data` (initialised) always stays in internal RAM.
    #[serde(default)]
    pub static_placement: StaticPlacement,
}

/// Where a component's `.bss` is linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StaticPlacement {
    /// DRAM, ESP-IDF's default for every library.
    #[default]
    Internal,
    /// External RAM through the `extram_bss` scheme (CONFIG_SPIRAM_ALLOW_BSS_SEG_EXTERNAL_MEMORY).
    Psram,
}

/// Components whose `.bss` a policy may move: the generated components with sources of their own.
pub const STATIC_PLACEABLE: &[&str] = &["libdatachannel", "libjuice", "usrsctp", "libsrtp"];

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum DefinitionValue {
    Bool(bool),
    Int(i64),
    Str(String),
}

impl DefinitionValue {
    /// The value as it appears after `-DNAME=`.
    pub fn render(&self) -> String {
        match self {
            DefinitionValue::Bool(b) => (if *b { "1" } else { "0" }).to_string(),
            DefinitionValue::Int(i) => i.to_string(),
            DefinitionValue::Str(s) => s.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Threads {
    /// Stack size given to this component's threads (pthread attr or esp_pthread_cfg_t).
    pub stack_bytes: u32,
    /// Where the stacks live: `psram` uses esp_pthread_cfg_t.stack_alloc_caps = MALLOC_CAP_SPIRAM.
    pub placement: Placement,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpiramMalloc {
    /// CONFIG_SPIRAM_USE_MALLOC: malloc() may return PSRAM.
    Malloc,
    /// CONFIG_SPIRAM_USE_CAPS_ALLOC: PSRAM only through heap_caps_malloc(MALLOC_CAP_SPIRAM).
    CapsOnly,
    /// No PSRAM in the heap (chips without PSRAM).
    Off,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    /// CONFIG_SPIRAM: the board has PSRAM and ESP-IDF initialises it.
    pub spiram: bool,
    pub spiram_malloc: SpiramMalloc,
    /// CONFIG_SPIRAM_MALLOC_ALWAYSINTERNAL: malloc() requests up to this size stay internal.
    pub always_internal_bytes: u32,
    /// CONFIG_SPIRAM_MALLOC_RESERVE_INTERNAL: internal RAM kept back for DMA and stacks.
    pub reserve_internal_bytes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MbedtlsAllocator {
    /// CONFIG_MBEDTLS_INTERNAL_MEM_ALLOC
    Internal,
    /// CONFIG_MBEDTLS_EXTERNAL_MEM_ALLOC (PSRAM)
    External,
    /// CONFIG_MBEDTLS_DEFAULT_MEM_ALLOC (malloc)
    Default,
    /// CONFIG_MBEDTLS_CUSTOM_MEM_ALLOC (esp_dc_port provides esp_mbedtls_mem_calloc/free)
    Custom,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mbedtls {
    pub allocator: MbedtlsAllocator,
    /// CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN (MBEDTLS_SSL_IN_CONTENT_LEN on the host).
    pub ssl_in_content_len: u32,
    /// CONFIG_MBEDTLS_SSL_OUT_CONTENT_LEN (MBEDTLS_SSL_OUT_CONTENT_LEN on the host).
    pub ssl_out_content_len: u32,
    /// CONFIG_MBEDTLS_DYNAMIC_BUFFER: allocate record buffers only while in use.
    pub dynamic_buffer: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pthread {
    /// CONFIG_PTHREAD_TASK_STACK_SIZE_DEFAULT: stack of a pthread that asks for none.
    pub default_stack_bytes: u32,
    /// Where pthread stacks go (esp_pthread_cfg_t.stack_alloc_caps); `psram` also sets
    /// CONFIG_FREERTOS_TASK_CREATE_ALLOW_EXT_MEM.
    pub stack_placement: Placement,
    /// Margin over the lab's measured high-water mark that stack sizes must keep, in percent.
    pub stack_margin_percent: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SharedPtrLockPolicy {
    /// libstdc++'s default where atomics exist.
    Atomic,
    /// `_GLIBCXX_USE_... __default_lock_policy = _S_mutex`: a mutex per shared_ptr control block,
    /// what ESP-IDF's RISC-V toolchain builds without the A extension get.
    Mutex,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cxx {
    /// Where C++ `operator new` goes for the whole application (esp_dc_port's replacement).
    pub new_placement: Placement,
    /// CONFIG_COMPILER_CXX_EXCEPTIONS_EMG_POOL_SIZE: libstdc++'s emergency exception pool.
    pub emergency_pool_bytes: u32,
    pub shared_ptr_lock_policy: SharedPtrLockPolicy,
}

/// Where a pthread mutex's or condition variable's FreeRTOS object goes (esp_dc_port's
/// `ESP_DC_PORT_SYNC_PLACEMENT` choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncPlacement {
    /// Next to its `pthread_*_t`: PSRAM when the handle is in PSRAM (esp_dc_port_sync.c).
    WithOwner,
    /// Internal RAM, ESP-IDF's own behaviour (components/pthread/pthread.c).
    #[default]
    Internal,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyncObjects {
    #[serde(default)]
    pub placement: SyncPlacement,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeapTracing {
    /// CONFIG_HEAP_TRACING_STANDALONE
    pub enabled: bool,
    /// CONFIG_HEAP_TRACING_STACK_DEPTH: return addresses kept per record.
    pub stack_depth: u32,
    /// Records in the tracker's trace buffer (placed in PSRAM when there is PSRAM).
    pub records: u32,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Static budgets per component, from `idf.py size-components` or the host build.
    #[serde(default, rename = "static")]
    pub static_: BTreeMap<String, StaticBudget>,
    #[serde(default)]
    pub dynamic: DynamicBudgets,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticBudget {
    /// DIRAM .data + .bss (internal RAM).
    pub dram_bytes: Option<u64>,
    /// IRAM text and data.
    pub iram_bytes: Option<u64>,
    /// Flash: .text + .rodata.
    pub flash_bytes: Option<u64>,
    /// `size-check`: the component's `.bss` in external RAM (`static_placement = "psram"`).
    pub psram_bytes: Option<u64>,
    /// `size-check --host`: .data + .bss of the component's 32-bit host library that stays
    /// internal on the device (all of it, or only .data with `static_placement = "psram"`).
    pub host_dram_bytes: Option<u64>,
    /// `size-check --host`: the host library's .bss that `static_placement = "psram"` moves.
    pub host_psram_bytes: Option<u64>,
    /// `size-check --host`: .text + .rodata of the host library (x86 code: a regression
    /// guard, not a device figure).
    pub host_flash_bytes: Option<u64>,
}

/// Dynamic budgets, measured by the host lab. A missing figure is not checked.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicBudgets {
    /// Live bytes after the first PeerConnection is created (global init included).
    pub init_bytes: Option<u64>,
    /// Live bytes of one connected data-channel connection.
    pub connected_bytes: Option<u64>,
    /// Peak live bytes during the handshake.
    pub peak_bytes: Option<u64>,
    /// Live bytes while streaming video, steady state.
    pub video_steady_bytes: Option<u64>,
    /// `camera` (H.264 + Opus + a data channel, the device offering): live bytes when connected.
    pub camera_connected_bytes: Option<u64>,
    /// `camera`: live bytes while streaming, steady state.
    pub camera_steady_bytes: Option<u64>,
    /// Threads the stack creates for one session.
    pub threads: Option<u64>,
    /// Bytes still held after each connect/disconnect cycle.
    pub leak_bytes_per_cycle: Option<u64>,
    /// Projected internal RAM per connection on the ESP32.
    pub internal_bytes_per_connection: Option<u64>,
    /// Sum of thread stack high-water marks.
    pub stack_high_water_bytes: Option<u64>,
    /// `viewers`: projected internal RAM per extra viewer (least-squares slope over the join
    /// marks, rounded up).
    pub viewer_internal_bytes: Option<u64>,
    /// `viewers`: projected PSRAM per extra viewer (the same slope).
    pub viewer_psram_bytes: Option<u64>,
    /// `viewers`: the device's CPU per viewer at any number of viewers against one viewer's, in
    /// percent (110: within 10 % of linear).
    pub viewer_cpu_of_linear_percent: Option<u64>,
    /// `viewers`: bytes viewers allocated still held after the last one left (time-wait and
    /// DTLS timer hold aside).
    pub viewer_held_after_last_bytes: Option<u64>,
    /// Per component: connected and peak bytes.
    #[serde(default)]
    pub components: BTreeMap<String, ComponentDynamicBudget>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentDynamicBudget {
    pub connected_bytes: Option<u64>,
    pub peak_bytes: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// `cargo xtask audit` exits 1 while any site is not covered by the policy.
    #[serde(default)]
    pub require_full_coverage: bool,
    /// Static or global objects at least this large are listed.
    #[serde(default = "default_static_threshold")]
    pub static_object_threshold_bytes: u64,
}

impl Default for Audit {
    fn default() -> Self {
        Audit { require_full_coverage: false, static_object_threshold_bytes: default_static_threshold() }
    }
}

fn default_static_threshold() -> u64 {
    1024
}

/// How a knob reaches the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnobEffect {
    /// A compile definition on the component (`-DNAME=value`), read by upstream code or one of our patches.
    Define(&'static str),
    /// A value libdatachannel takes through its C API at run time: the call and the field it sets.
    /// `esp_dc_port_init()` and the lab's driver both expand the generated list of these rows
    /// (`esp_dc_runtime_knobs.h`, `render::runtime_knobs_header`), so neither names a knob itself.
    Runtime(RuntimeApi, &'static str),
}

/// Where libdatachannel's C API takes a run-time knob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeApi {
    /// A field of `rtcSctpSettings`, set once for the process by `esp_dc_port_init()` through
    /// `rtcSetSctpSettings()` before the first PeerConnection.
    SctpSettings,
    /// A field of `rtcConfiguration`, set by `esp_dc_port_configure()` on every PeerConnection's
    /// configuration.
    Configuration,
    /// The argument of `rtcChainRtcpNackResponder()`, which `esp_dc_port_chain_nack_responder()`
    /// passes for every video sender.
    NackResponder,
}

impl RuntimeApi {
    /// The token of the generated X-macro list (`X(SCTP_SETTINGS, ...)`).
    pub fn token(self) -> &'static str {
        match self {
            RuntimeApi::SctpSettings => "SCTP_SETTINGS",
            RuntimeApi::Configuration => "CONFIGURATION",
            RuntimeApi::NackResponder => "NACK_RESPONDER",
        }
    }

    /// What the knob sets, as the docs and Kconfig help name it: `rtcSctpSettings.recvBufferSize`.
    pub fn target(self, field: &str) -> String {
        match self {
            RuntimeApi::SctpSettings => format!("rtcSctpSettings.{field}"),
            RuntimeApi::Configuration => format!("rtcConfiguration.{field}"),
            RuntimeApi::NackResponder => format!("rtcChainRtcpNackResponder({field})"),
        }
    }
}

/// One memory knob: the policy key, the Kconfig option it becomes, and how it acts.
#[derive(Debug, Clone, Copy)]
pub struct KnobSpec {
    pub component: &'static str,
    pub name: &'static str,
    /// Upstream's value: what `stock` has and what an absent knob means.
    pub stock: i64,
    pub min: i64,
    pub max: i64,
    pub effect: KnobEffect,
    pub help: &'static str,
}

impl KnobSpec {
    /// `ESP_DC_<COMPONENT>_<NAME>` (the Kconfig symbol, without CONFIG_).
    pub fn kconfig_symbol(&self) -> String {
        format!("ESP_DC_{}_{}", self.component.to_uppercase(), self.name.to_uppercase())
    }

    /// The environment variable the lab's driver reads a run-time knob from: `LAB_<NAME>`.
    pub fn lab_env(&self) -> String {
        format!("LAB_{}", self.name.to_uppercase())
    }
}

/// The knob catalogue. A policy may only set knobs listed here, within [min, max].
pub const KNOBS: &[KnobSpec] = &[
    KnobSpec {
        component: "libdatachannel",
        name: "sctp_max_streams",
        stock: 1024,
        min: 1,
        max: 65535,
        effect: KnobEffect::Define("RTC_ESP_SCTP_MAX_STREAMS"),
        help: "SCTP streams negotiated per association (MAX_SCTP_STREAMS_COUNT). usrsctp allocates per-stream state for each; a data channel needs one stream, Chromium offers 1024.",
    },
    KnobSpec {
        component: "libdatachannel",
        name: "sctp_recv_buffer_bytes",
        stock: 1048576,
        min: 4096,
        max: 16777216,
        effect: KnobEffect::Runtime(RuntimeApi::SctpSettings, "recvBufferSize"),
        help: "SCTP receive window (rtcSctpSettings.recvBufferSize). Bounds what usrsctp queues for a slow reader; must hold the largest message.",
    },
    KnobSpec {
        component: "libdatachannel",
        name: "sctp_send_buffer_bytes",
        stock: 1048576,
        min: 4096,
        max: 16777216,
        effect: KnobEffect::Runtime(RuntimeApi::SctpSettings, "sendBufferSize"),
        help: "SCTP send buffer (rtcSctpSettings.sendBufferSize). Bounds what usrsctp keeps queued for retransmission.",
    },
    KnobSpec {
        component: "libdatachannel",
        name: "sctp_max_chunks_on_queue",
        stock: 10240,
        min: 16,
        max: 1048576,
        effect: KnobEffect::Runtime(RuntimeApi::SctpSettings, "maxChunksOnQueue"),
        help: "Chunks usrsctp may queue per association (rtcSctpSettings.maxChunksOnQueue).",
    },
    KnobSpec {
        component: "libdatachannel",
        name: "max_message_bytes",
        stock: 262144,
        min: 1024,
        max: 16777216,
        effect: KnobEffect::Runtime(RuntimeApi::Configuration, "maxMessageSize"),
        help: "Largest data-channel message accepted (rtcConfiguration.maxMessageSize, DEFAULT_LOCAL_MAX_MESSAGE_SIZE).",
    },
    KnobSpec {
        component: "libdatachannel",
        name: "thread_pool_size",
        stock: 0,
        min: 0,
        max: 64,
        effect: KnobEffect::Define("RTC_ESP_THREADPOOL_SIZE"),
        help: "Worker threads of libdatachannel's thread pool; 0 keeps upstream's max(hardware_concurrency, MIN_THREADPOOL_SIZE).",
    },
    KnobSpec {
        component: "libdatachannel",
        name: "sctp_recv_chunk_bytes",
        stock: 65536,
        min: 1024,
        max: 65536,
        effect: KnobEffect::Define("RTC_ESP_SCTP_RECV_CHUNK_BYTES"),
        help: "Buffer SctpTransport::doRecv reads into; upstream keeps 64 KB on the thread's stack.",
    },
    KnobSpec {
        component: "libdatachannel",
        name: "nack_max_packets",
        stock: 512,
        min: 1,
        max: 65535,
        effect: KnobEffect::Runtime(RuntimeApi::NackResponder, "maxStoredPacketsCount"),
        help: "Packets RtcpNackResponder keeps for retransmission (rtcChainRtcpNackResponder maxStoredPacketsCount).",
    },
    KnobSpec {
        component: "libdatachannel",
        name: "nack_window_ms",
        stock: 0,
        min: 0,
        max: 10000,
        effect: KnobEffect::Define("RTC_ESP_NACK_WINDOW_MS"),
        help: "RtcpNackResponder keeps each sent packet this long (patch libdatachannel/nack-window.patch): the store follows the send rate instead of holding a fixed count. Set it to how long the receiver may still ask for a packet: its NACK delay, the round trip and the re-NACK rounds it makes. 0: no time limit (upstream: the count alone).",
    },
    KnobSpec {
        component: "libdatachannel",
        name: "nack_max_bytes",
        stock: 0,
        min: 0,
        max: 16777216,
        effect: KnobEffect::Define("RTC_ESP_NACK_MAX_BYTES"),
        help: "Cap on the packet bytes RtcpNackResponder holds (patch libdatachannel/nack-window.patch): above it the oldest packets leave the store before nack_window_ms, so a burst or a high bitrate costs at most this much. 0: no byte cap (upstream).",
    },
    KnobSpec {
        component: "libdatachannel",
        name: "recv_queue_limit",
        stock: 1024,
        min: 1,
        max: 65535,
        effect: KnobEffect::Define("RTC_ESP_RECV_QUEUE_LIMIT"),
        help: "Messages a channel queues before the application reads them (RECV_QUEUE_LIMIT).",
    },
    KnobSpec {
        component: "usrsctp",
        name: "own_threads",
        stock: 1,
        min: 0,
        max: 1,
        effect: KnobEffect::Define("RTC_ESP_USRSCTP_OWN_THREADS"),
        help: "1: usrsctp_init starts its own timer thread. 0: usrsctp_init_nothreads, libdatachannel drives usrsctp_handle_timers.",
    },
    KnobSpec {
        component: "usrsctp",
        name: "tcb_hash_size",
        stock: 1024,
        min: 1,
        max: 65536,
        effect: KnobEffect::Define("SCTP_TCBHASHSIZE"),
        help: "usrsctp's hash table size (SCTP_TCBHASHSIZE, the sctp_hashtblsize sysctl), allocated at usrsctp_init: the association table gets 31 times this many buckets (rounded down to a power of two), the endpoint tables this many. A handful of associations needs no more than a few dozen buckets.",
    },
    KnobSpec {
        component: "usrsctp",
        name: "pcb_hash_size",
        stock: 256,
        min: 16,
        max: 65536,
        effect: KnobEffect::Define("SCTP_PCBHASHSIZE"),
        help: "Buckets of usrsctp's endpoint hash table (SCTP_PCBHASHSIZE), allocated at usrsctp_init.",
    },
    KnobSpec {
        component: "libjuice",
        name: "max_stun_servers",
        stock: 2,
        min: 1,
        max: 8,
        effect: KnobEffect::Define("ICE_MAX_STUN_SERVERS_COUNT"),
        help: "STUN servers libjuice can use at once; sizes arrays inside juice_agent_t.",
    },
    KnobSpec {
        component: "libjuice",
        name: "max_candidates",
        stock: 20,
        min: 2,
        max: 64,
        effect: KnobEffect::Define("ICE_MAX_CANDIDATES_COUNT"),
        help: "Candidates per ICE description (ICE_MAX_CANDIDATES_COUNT); sizes the agent's candidate arrays.",
    },
    KnobSpec {
        component: "libdatachannel",
        name: "dtls_recv_buffer_bytes",
        stock: 4096,
        min: 512,
        max: 16384,
        effect: KnobEffect::Define("RTC_ESP_DTLS_RECV_BUFFER_BYTES"),
        help: "Stack buffer DtlsTransport::doRecv reads decrypted records into, on the thread pool's stack (patch). Must be at least mbedtls.ssl_in_content_len: a record is never split. After the handshake upstream also takes this size + 1 as the DTLS MTU.",
    },
    KnobSpec {
        component: "libdatachannel",
        name: "small_random_engine",
        stock: 0,
        min: 0,
        max: 1,
        effect: KnobEffect::Define("RTC_ESP_SMALL_RANDOM_ENGINE"),
        help: "1: libdatachannel's thread_local random engine (RTP initial sequence number and timestamp, SDP session id, ICE server shuffle) is std::minstd_rand, 4 bytes, seeded as before, instead of std::mt19937's 2.5 KB (patch). ESP-IDF reserves a program's thread_local storage on the stack of every FreeRTOS task, so the 2.5 KB is paid once per task in the system, system tasks included.",
    },
    KnobSpec {
        component: "libdatachannel",
        name: "dtls_client_when_offering",
        stock: 0,
        min: 0,
        max: 1,
        effect: KnobEffect::Define("RTC_ESP_DTLS_OFFER_ACTIVE"),
        help: "1: the device's first offer says a=setup:active instead of actpass, so it is the DTLS client whichever side offers (port patch patches/esp-idf/libdatachannel/dtls-offer-active.patch, every policy). mbedTLS 3.6.5's DTLS server refuses a ClientHello split into fragments, which Chromium and Firefox send with their post-quantum key share; as client the device never parses one. A remote that offers a=setup:active still makes the device the server. Not a memory knob: both shipped policies set it.",
    },
    KnobSpec {
        component: "libjuice",
        name: "max_turn_servers",
        stock: 2,
        min: 0,
        max: 8,
        effect: KnobEffect::Define("ICE_MAX_TURN_SERVERS_COUNT"),
        help: "TURN servers per agent (MAX_RELAY_ENTRIES_COUNT). Each one multiplies the candidate-pair and STUN-entry arrays inside juice_agent_t; 0 means no relay candidates at all.",
    },
    KnobSpec {
        component: "libjuice",
        name: "stun_max_peer_addresses",
        stock: 8,
        min: 1,
        max: 8,
        effect: KnobEffect::Define("JUICE_ESP_STUN_MAX_PEER_ADDRESSES"),
        help: "XOR-PEER-ADDRESS slots in stun_message_t (STUN_MAX_PEER_ADDRESSES, patch). The ICE agent writes one peer per TURN request and reads at most this many; every stun_message_t sits on the connection thread's stack.",
    },
    KnobSpec {
        component: "libjuice",
        name: "stun_max_username_bytes",
        stock: 513,
        min: 64,
        max: 513,
        effect: KnobEffect::Define("JUICE_ESP_STUN_MAX_USERNAME_BYTES"),
        help: "Longest STUN USERNAME (and password) libjuice accepts (STUN_MAX_USERNAME_LEN - 1, patch). Sizes stun_message_t, which the connection thread keeps on its stack, and a copy in the binding-request check. ICE usernames are remote:local ufrag (browsers use 4 to 32 characters each); a longer one is rejected, so it must also hold the TURN username.",
    },
    KnobSpec {
        component: "libjuice",
        name: "stun_max_realm_bytes",
        stock: 763,
        min: 64,
        max: 763,
        effect: KnobEffect::Define("JUICE_ESP_STUN_MAX_REALM_BYTES"),
        help: "Longest STUN REALM libjuice accepts (STUN_MAX_REALM_LEN - 1, patch). Only TURN servers send one; RFC 8489 limits it to 127 characters, 763 bytes only if every character is multi-byte UTF-8. Sizes every stun_message_t on the connection thread's stack.",
    },
    KnobSpec {
        component: "libjuice",
        name: "stun_max_nonce_bytes",
        stock: 763,
        min: 64,
        max: 763,
        effect: KnobEffect::Define("JUICE_ESP_STUN_MAX_NONCE_BYTES"),
        help: "Longest STUN NONCE libjuice accepts (STUN_MAX_NONCE_LEN - 1, patch). Only TURN servers send one; RFC 8489 limits it to 127 characters (coturn's are 16 to 32). Sizes every stun_message_t on the connection thread's stack.",
    },
    KnobSpec {
        component: "libjuice",
        name: "ice_max_hostname_bytes",
        stock: 256,
        min: 46,
        max: 256,
        effect: KnobEffect::Define("JUICE_ESP_ICE_MAX_HOSTNAME_BYTES"),
        help: "Longest candidate address text libjuice keeps (ice_candidate_t.hostname, patch ice-field-knobs.patch): a numeric IP (IPv6 at most 45 characters) or an mDNS name (42). Sizes every candidate of both descriptions inside juice_agent_t; a remote candidate with a longer address is ignored with a warning, never truncated.",
    },
    KnobSpec {
        component: "libjuice",
        name: "ice_max_credential_bytes",
        stock: 256,
        min: 32,
        max: 256,
        effect: KnobEffect::Define("JUICE_ESP_ICE_MAX_CREDENTIAL_BYTES"),
        help: "Longest ICE ufrag and pwd libjuice keeps (ice_description_t, patch ice-field-knobs.patch; RFC 8839 allows 256, peers use 4 to 32). A longer remote one fails the description, a longer local one is refused.",
    },
    KnobSpec {
        component: "libjuice",
        name: "agent_buffer_bytes",
        stock: 4096,
        min: 512,
        max: 65536,
        effect: KnobEffect::Define("JUICE_ESP_AGENT_BUFFER_SIZE"),
        help: "Stack buffer the ICE agent writes STUN messages and candidate lines into (agent.c BUFFER_SIZE). A STUN binding request is under 200 bytes; the buffer sits on the connection thread's stack.",
    },
    KnobSpec {
        component: "libjuice",
        name: "recv_buffer_bytes",
        stock: 4096,
        min: 1500,
        max: 65536,
        effect: KnobEffect::Define("JUICE_ESP_RECV_BUFFER_SIZE"),
        help: "Stack buffer the connection thread receives each UDP datagram into (conn_*.c BUFFER_SIZE). Must hold the largest datagram a peer sends: WebRTC peers keep DTLS and SRTP packets under the path MTU, 1500 bytes on Ethernet and Wi-Fi.",
    },
    KnobSpec {
        component: "libjuice",
        name: "driven_by_pool",
        stock: 0,
        min: 0,
        max: 1,
        effect: KnobEffect::Define("RTC_ESP_JUICE_DRIVEN_BY_POOL"),
        help: "1: libjuice starts no connections thread; an idle worker of libdatachannel's thread pool polls the ICE agents' sockets and runs their timers (juice_esp_poll, patches libjuice/driven-by-pool.patch and libdatachannel/juice-driven-by-pool.patch, which the policy must list). One FreeRTOS task (stack and TCB) fewer. 0: upstream's \"juice poll\" thread.",
    },
];

/// (knob's component, knob, its patches as (component, patch)).
pub type KnobPatches = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

/// Knobs whose code lives in patches of their own, not in a knobs.patch: (knob's component, knob,
/// the patches by component). A policy that sets such a knob lists its patches (checked), and
/// `--knob-savings` reverts the knob, not them (they are its plumbing).
pub const KNOB_PATCHES: &[KnobPatches] = &[
    (
        "libjuice",
        "driven_by_pool",
        &[
            ("libjuice", "libjuice/driven-by-pool.patch"),
            ("libdatachannel", "libdatachannel/juice-driven-by-pool.patch"),
        ],
    ),
    ("libdatachannel", "nack_window_ms", &[("libdatachannel", "libdatachannel/nack-window.patch")]),
    ("libdatachannel", "nack_max_bytes", &[("libdatachannel", "libdatachannel/nack-window.patch")]),
    ("libjuice", "ice_max_hostname_bytes", &[("libjuice", "libjuice/ice-field-knobs.patch")]),
    ("libjuice", "ice_max_credential_bytes", &[("libjuice", "libjuice/ice-field-knobs.patch")]),
];

/// Whether `patch` is one of a knob's own patches (see KNOB_PATCHES).
pub fn is_knob_patch(patch: &str) -> bool {
    KNOB_PATCHES.iter().any(|(_, _, patches)| patches.iter().any(|(_, p)| *p == patch))
}

pub fn knob(component: &str, name: &str) -> Option<&'static KnobSpec> {
    KNOBS.iter().find(|k| k.component == component && k.name == name)
}

impl Policy {
    /// The policies shipped with the project, by name: `policies/<name>.toml`.
    pub fn path_for(name_or_path: &str) -> PathBuf {
        let as_path = Path::new(name_or_path);
        if name_or_path.ends_with(".toml") || as_path.components().count() > 1 {
            as_path.to_path_buf()
        } else {
            crate::fsutil::project_root().join("policies").join(format!("{name_or_path}.toml"))
        }
    }

    /// Reads and validates a policy. Every error is `file:line: key: what is wrong` and exit 2.
    pub fn load(path: &Path) -> Result<Policy> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            exit::bad_input(format!(
                "{}: cannot read the policy: {e}\n  hint: name a shipped policy (`--policy lean`, `--policy stock`) or a path to a .toml file",
                path.display()
            ))
        })?;
        Policy::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Policy> {
        let shown = path.display().to_string();
        let doc = toml_edit::Document::parse(text.to_string()).map_err(|e| {
            let line = e.span().map(|s| line_of_offset(text, s.start)).unwrap_or(1);
            let key = key_on_line(text, line).unwrap_or_else(|| "(syntax)".into());
            exit::bad_input(escaped(format!("{shown}:{line}: {key}: TOML syntax error: {}", first_line(e.message()))))
        })?;
        let de = toml_edit::de::Deserializer::from(doc.clone());
        let mut policy: Policy = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.inner();
            let line = inner
                .span()
                .map(|s| line_of_offset(text, s.start))
                .or_else(|| span_line(&doc, text, &key))
                .unwrap_or(1);
            exit::bad_input(escaped(format!("{shown}:{line}: {key}: {}", first_line(inner.message()))))
        })?;
        policy.path = path.to_path_buf();
        let problems = policy.validate();
        if let Some((key, what)) = problems.into_iter().next() {
            let line = span_line(&doc, text, &key).unwrap_or(1);
            return Err(exit::bad_input(escaped(format!("{shown}:{line}: {key}: {what}"))));
        }
        Ok(policy)
    }

    pub fn component(&self, name: &str) -> &Component {
        &self.components[name]
    }

    /// The stack every thread of the stack gets on the device: esp_dc_port_init() sets
    /// libdatachannel's `threads.stack_bytes` in the one esp_pthread_cfg_t they all inherit;
    /// without it, the pthread default.
    pub fn thread_stack_bytes(&self) -> u32 {
        self.components
            .get("libdatachannel")
            .and_then(|c| c.threads.as_ref())
            .map(|t| t.stack_bytes)
            .unwrap_or(self.pthread.default_stack_bytes)
    }

    /// A knob's value under this policy (upstream's value when the policy leaves it unset).
    pub fn knob_value(&self, spec: &KnobSpec) -> i64 {
        self.components.get(spec.component).and_then(|c| c.knobs.get(spec.name)).copied().unwrap_or(spec.stock)
    }
}

#[cfg(test)]
mod tests;
