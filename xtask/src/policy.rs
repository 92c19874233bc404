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
    /// (`esp_dc_runtime_knobs.h`, `runtime_knobs_header`), so neither names a knob itself.
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

/// Knobs whose code lives in patches of their own, not in a knobs.patch: (knob's component, knob,
/// the patches by component). A policy that sets such a knob lists its patches (checked), and
/// `--knob-savings` reverts the knob, not them (they are its plumbing).
pub const KNOB_PATCHES: &[(&str, &str, &[(&str, &str)])] = &[
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
];

/// Whether `patch` is one of a knob's own patches (see KNOB_PATCHES).
pub fn is_knob_patch(patch: &str) -> bool {
    KNOB_PATCHES.iter().any(|(_, _, patches)| patches.iter().any(|(_, p)| *p == patch))
}

pub fn knob(component: &str, name: &str) -> Option<&'static KnobSpec> {
    KNOBS.iter().find(|k| k.component == component && k.name == name)
}

/// Where `configure` writes `runtime_knobs_header` in the generated libdatachannel component (a
/// public include directory of its CMakeLists), and the name the driver includes it by.
pub const RUNTIME_KNOBS_HEADER: &str = "include/esp_dc_runtime_knobs.h";

/// The run-time rows of KNOBS as one X-macro list, `ESP_DC_RUNTIME_KNOBS(X)`, which
/// `esp_dc_port_init.c` (with the `CONFIG_` values) and the lab's driver (with the `LAB_*`
/// environment) expand: a run-time knob is one row of KNOBS and nothing else. The same text for
/// every policy: the values come from Kconfig on the device and from the environment on the host.
pub fn runtime_knobs_header() -> String {
    let mut rows = String::new();
    for k in KNOBS {
        if let KnobEffect::Runtime(api, field) = k.effect {
            rows.push_str(&format!(
                " \\\n    X({}, {field}, {}, {}, \"{}\", {})",
                api.token(),
                k.name,
                k.kconfig_symbol(),
                k.lab_env(),
                k.stock
            ));
        }
    }
    format!(
        "/* Generated by `cargo xtask configure` (and the lab's replica build) from the knob catalogue,
 * xtask/src/policy.rs KNOBS; do not edit. One row per run-time knob:
 *   X(api, field, name, kconfig, lab_env, upstream)
 *   api      where libdatachannel takes it: SCTP_SETTINGS (a field of rtcSctpSettings, set once by
 *            esp_dc_port_init() through rtcSetSctpSettings), CONFIGURATION (a field of
 *            rtcConfiguration, every PeerConnection), NACK_RESPONDER (rtcChainRtcpNackResponder's
 *            argument, every video sender)
 *   field    the C field or argument it sets
 *   name     the policy key (components.<component>.knobs.<name>)
 *   kconfig  its Kconfig symbol without CONFIG_: the device's value is CONFIG_<kconfig>
 *   lab_env  the environment variable the host lab passes the policy's value in
 *   upstream upstream's value (libdatachannel's own default)
 */
#ifndef ESP_DC_RUNTIME_KNOBS_H
#define ESP_DC_RUNTIME_KNOBS_H

#define ESP_DC_RUNTIME_KNOBS(X){rows}

#endif /* ESP_DC_RUNTIME_KNOBS_H */
"
    )
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

    /// Semantic checks serde cannot express. Returns (key path, what is wrong), in file order of keys.
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let placed = components::placed();
        if let Some(what) = unsafe_name(&self.policy.name) {
            problems.push(("policy.name".into(), what));
        }
        if let Some(what) = unsafe_text(&self.policy.description) {
            problems.push(("policy.description".into(), what));
        }
        for (name, component) in &self.components {
            if !placed.contains(&name.as_str()) {
                problems.push((
                    format!("components.{name}"),
                    format!("unknown component `{name}`; the policy lays out {}", placed.join(", ")),
                ));
                continue;
            }
            self.check_force_include(name, component, &mut problems);
            self.check_knobs_and_definitions(name, component, &mut problems);
            self.check_patches(name, component, &mut problems);
            self.check_static_placement_and_threads(name, component, &mut problems);
        }
        for name in &placed {
            if !self.components.contains_key(*name) {
                problems.push((
                    "components".into(),
                    format!("missing component `{name}`: every component needs a placement"),
                ));
            }
        }
        for (key, value, range) in self.kconfig_numbers() {
            check_range(&mut problems, key, value.into(), range);
        }
        self.check_across_sections(&mut problems);
        self.check_budget_names(&placed, &mut problems);
        for (key, value) in &self.sdkconfig_extra {
            if !key.starts_with("CONFIG_") {
                problems.push((format!("sdkconfig_extra.{key}"), "sdkconfig symbols start with CONFIG_".into()));
            } else if !key[7..].chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || key.len() == 7 {
                // (Lower case is refused later, with the upper-case name to use.)
                problems.push((
                    format!("sdkconfig_extra.{key}"),
                    "not a Kconfig symbol: after CONFIG_ only letters, digits and `_`".into(),
                ));
            } else if let Some(what) = unsafe_text(value).or_else(|| unsafe_sdkconfig_value(value)) {
                // One line of sdkconfig.defaults each: a line break would add lines of its own.
                problems.push((format!("sdkconfig_extra.{key}"), what));
            }
        }
        problems
    }

    /// A force-included header must be one of esp_dc_port's.
    fn check_force_include(&self, name: &str, component: &Component, problems: &mut Vec<(String, String)>) {
        let at = |field: &str| format!("components.{name}.{field}");
        if !component.force_include.is_empty() {
            let include = crate::fsutil::project_root().join("components/esp_dc_port/include");
            let header = include.join(&component.force_include);
            if let Some(what) = unsafe_path(&component.force_include, &include) {
                problems
                    .push((at("force_include"), format!("{what}; name a header in components/esp_dc_port/include/")));
            } else if !header.is_file() {
                problems.push((
                    at("force_include"),
                    format!("no header `{}` in components/esp_dc_port/include/", component.force_include),
                ));
            }
        }
    }

    /// Knobs known and in range; definitions valid C macro names with safe values.
    fn check_knobs_and_definitions(&self, name: &str, component: &Component, problems: &mut Vec<(String, String)>) {
        for (knob_name, value) in &component.knobs {
            match knob(name, knob_name) {
                None => {
                    let known: Vec<_> = KNOBS.iter().filter(|k| k.component == name).map(|k| k.name).collect();
                    problems.push((
                        format!("components.{name}.knobs.{knob_name}"),
                        format!(
                            "unknown knob for {name}; known: {}",
                            if known.is_empty() { "none".to_string() } else { known.join(", ") }
                        ),
                    ));
                }
                Some(spec) if *value < spec.min || *value > spec.max => problems.push((
                    format!("components.{name}.knobs.{knob_name}"),
                    format!("{value} is out of range {}..={}", spec.min, spec.max),
                )),
                Some(_) => {}
            }
        }
        for (def, value) in &component.definitions {
            if def.is_empty()
                || !def.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || def.starts_with(|c: char| c.is_ascii_digit())
            {
                problems.push((format!("components.{name}.definitions.{def}"), "not a valid C macro name".into()));
            } else if let Some(what) = unsafe_definition(value) {
                problems.push((format!("components.{name}.definitions.{def}"), what));
            }
        }
    }

    /// Each patch a file under patches/.
    fn check_patches(&self, name: &str, component: &Component, problems: &mut Vec<(String, String)>) {
        let at = |field: &str| format!("components.{name}.{field}");
        let patches_dir = crate::fsutil::project_root().join("patches");
        for patch in &component.patches {
            if let Some(what) = unsafe_path(patch, &patches_dir) {
                problems
                    .push((at("patches"), format!("`{}`: {what}; name a patch under patches/", patch.escape_debug())));
            } else if !patches_dir.join(patch).is_file() {
                problems.push((at("patches"), format!("no patch `{patch}` under patches/")));
            }
        }
    }

    /// `.bss` in PSRAM only for a generated library with PSRAM; a thread stack ESP-IDF can start.
    fn check_static_placement_and_threads(
        &self,
        name: &str,
        component: &Component,
        problems: &mut Vec<(String, String)>,
    ) {
        let at = |field: &str| format!("components.{name}.{field}");
        if component.static_placement == StaticPlacement::Psram {
            if !STATIC_PLACEABLE.contains(&name) {
                problems.push((
                    at("static_placement"),
                    format!(
                        "`psram` places a generated library's .bss; {name} has none of its own (placeable: {})",
                        STATIC_PLACEABLE.join(", ")
                    ),
                ));
            } else if !self.memory.spiram {
                problems.push((at("static_placement"), "`psram` needs `memory.spiram = true`".into()));
            }
        }
        if let Some(threads) = &component.threads {
            if threads.stack_bytes < 2048 {
                problems.push((at("threads.stack_bytes"), "below 2048 bytes no ESP-IDF pthread can start".into()));
            } else if name == "libdatachannel" {
                // Only libdatachannel's reaches the device (Policy::thread_stack_bytes).
                check_range(problems, &at("threads.stack_bytes"), threads.stack_bytes.into(), &THREAD_STACK_RANGE);
            }
        }
    }

    /// The numbers that become Kconfig `int` options, each with the range its Kconfig allows.
    fn kconfig_numbers(&self) -> [(&'static str, u32, &'static KconfigRange); 8] {
        [
            (
                "memory.always_internal_bytes",
                self.memory.always_internal_bytes,
                &KconfigRange {
                    min: 0,
                    max: 131072,
                    option: "SPIRAM_MALLOC_ALWAYSINTERNAL",
                    file: "components/esp_psram/Kconfig.spiram.common",
                },
            ),
            (
                "memory.reserve_internal_bytes",
                self.memory.reserve_internal_bytes,
                &KconfigRange {
                    min: 0,
                    max: 262144,
                    option: "SPIRAM_MALLOC_RESERVE_INTERNAL",
                    file: "components/esp_psram/Kconfig.spiram.common",
                },
            ),
            (
                "mbedtls.ssl_in_content_len",
                self.mbedtls.ssl_in_content_len,
                &KconfigRange {
                    min: 512,
                    max: 16384,
                    option: "MBEDTLS_SSL_IN_CONTENT_LEN",
                    file: "components/mbedtls/Kconfig",
                },
            ),
            (
                "mbedtls.ssl_out_content_len",
                self.mbedtls.ssl_out_content_len,
                &KconfigRange {
                    min: 512,
                    max: 16384,
                    option: "MBEDTLS_SSL_OUT_CONTENT_LEN",
                    file: "components/mbedtls/Kconfig",
                },
            ),
            // No range in Kconfig: an `int` symbol is a C int (the define is returned as size_t
            // and printed with %u by components/cxx/cxx_init.cpp).
            (
                "cxx.emergency_pool_bytes",
                self.cxx.emergency_pool_bytes,
                &KconfigRange {
                    min: 0,
                    max: i32::MAX as u64,
                    option: "COMPILER_CXX_EXCEPTIONS_EMG_POOL_SIZE",
                    file: "Kconfig (int, no range: a C int)",
                },
            ),
            // No range in Kconfig either; the lower bound is ours (pthread.c refuses less than
            // PTHREAD_STACK_MIN, and below 2048 bytes none of the stack's threads starts).
            (
                "pthread.default_stack_bytes",
                self.pthread.default_stack_bytes,
                &KconfigRange {
                    min: 2048,
                    max: i32::MAX as u64,
                    option: "PTHREAD_TASK_STACK_SIZE_DEFAULT",
                    file: "components/pthread/Kconfig (int, no range: a C int)",
                },
            ),
            (
                "heap_tracing.stack_depth",
                self.heap_tracing.stack_depth,
                &KconfigRange { min: 0, max: 32, option: "HEAP_TRACING_STACK_DEPTH", file: "components/heap/Kconfig" },
            ),
            (
                "heap_tracing.records",
                self.heap_tracing.records,
                &KconfigRange {
                    min: 0,
                    max: 100000,
                    option: "ESP_DC_PORT_HEAP_TRACE_RECORDS",
                    file: "components/esp_dc_port/Kconfig (ours)",
                },
            ),
        ]
    }

    /// Checks that read two sections together.
    fn check_across_sections(&self, problems: &mut Vec<(String, String)>) {
        // Without libdatachannel threads the pthread default is also the stack's thread stack.
        if self.components.get("libdatachannel").is_some_and(|c| c.threads.is_none())
            && self.pthread.default_stack_bytes >= 2048
        {
            check_range(
                problems,
                "pthread.default_stack_bytes",
                self.pthread.default_stack_bytes.into(),
                &THREAD_STACK_RANGE,
            );
        }
        // These knobs only switch code that their patches add: without them a build would quietly
        // keep upstream's behaviour (or fail to link on one side).
        for (knob_component, knob, patches) in KNOB_PATCHES {
            let Some(value) = self.components.get(*knob_component).and_then(|c| c.knobs.get(*knob)) else { continue };
            if *value == 0 {
                continue;
            }
            for (component, patch) in patches.iter() {
                if !self.components.get(*component).is_some_and(|c| c.patches.iter().any(|p| p == patch)) {
                    problems.push((
                        format!("components.{knob_component}.knobs.{knob}"),
                        format!("{value} needs `{patch}` in components.{component}.patches"),
                    ));
                }
            }
        }
        // A DTLS read buffer smaller than a record would split an SCTP packet in two.
        if let Some(buffer) = self.components.get("libdatachannel").and_then(|c| c.knobs.get("dtls_recv_buffer_bytes"))
        {
            if *buffer < i64::from(self.mbedtls.ssl_in_content_len) {
                problems.push((
                    "components.libdatachannel.knobs.dtls_recv_buffer_bytes".into(),
                    format!(
                        "{buffer} is below mbedtls.ssl_in_content_len ({}): a record would not fit",
                        self.mbedtls.ssl_in_content_len
                    ),
                ));
            }
        }
        if !self.memory.spiram {
            for (name, c) in &self.components {
                if c.placement == Placement::Psram {
                    problems
                        .push((format!("components.{name}.placement"), "`psram` needs `memory.spiram = true`".into()));
                }
            }
        }
    }

    /// Budgets name known components.
    fn check_budget_names(&self, placed: &[&str], problems: &mut Vec<(String, String)>) {
        // Budgets may also name what the policy does not lay out: ESP-IDF's mbedTLS (configured
        // through `[mbedtls]`) and the toolchain's C++ runtime.
        let known_budget_components: Vec<&str> = placed.iter().copied().chain(components::external()).collect();
        for name in self.budgets.static_.keys() {
            if !known_budget_components.contains(&name.as_str()) {
                problems.push((format!("budgets.static.{name}"), format!("unknown component `{name}`")));
            }
        }
        for name in self.budgets.dynamic.components.keys() {
            if !known_budget_components.contains(&name.as_str()) {
                problems.push((format!("budgets.dynamic.components.{name}"), format!("unknown component `{name}`")));
            }
        }
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

/// A policy name becomes part of file and directory names (build/<example>-<target>-<name>, the
/// lab's cache) and is written into the stamp (TOML), idf_component.yml, Kconfig and CMake
/// comments: only letters, digits, `_` and `-` are safe in all of them.
fn unsafe_name(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    (!ok).then(|| {
        format!(
            "`{}` is not a safe policy name: 1 to 64 letters, digits, `_` or `-`, starting with a letter or digit (it names build and cache directories)",
            name.escape_debug()
        )
    })
}

/// Free text ends up on one line of a generated file (`# Policy `lean`: <description>` in
/// sdkconfig.defaults): a line break or carriage return there would start a line of its own,
/// e.g. a `CONFIG_...=y` or the policy block's end marker.
fn unsafe_text(text: &str) -> Option<String> {
    text.chars().find(|c| c.is_control()).map(|c| {
        format!("contains the control character {:?}; generated files take it on one line, so write it without line breaks or control characters", c)
    })
}

/// A `[sdkconfig_extra]` value becomes one line of sdkconfig.defaults and, through kconfgen,
/// `set(CONFIG_X "value")` in the build's sdkconfig.cmake and a `#define` in sdkconfig.h. So it
/// must be one of the forms kconfgen reads (y, n, m, a decimal or 0x hex number, or a string in
/// double quotes) and a string may not hold what CMake or the line would read differently: a
/// line break or control character (a line of its own), `"` and `\` (end or escape the
/// string), `$` (`${...}` expands in CMake), `;` (splits a CMake list).
fn unsafe_sdkconfig_value(value: &str) -> Option<String> {
    let number = value.strip_prefix('-').unwrap_or(value);
    let plain = matches!(value, "y" | "n" | "m")
        || (!number.is_empty() && number.chars().all(|c| c.is_ascii_digit()))
        || value.strip_prefix("0x").is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()));
    if plain {
        return None;
    }
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).filter(|_| value.len() >= 2) else {
        return Some(format!(
            "`{}` is not a value kconfgen reads: write y, n, a decimal or 0x hex number, or a string in double quotes (`\"text\"` in TOML: `'\"text\"'`)",
            crate::fsutil::shown(value)
        ));
    };
    inner.chars().find(|c| c.is_control() || matches!(c, '"' | '\\' | '$' | ';')).map(|c| {
        format!(
            "the string contains {:?}, which sdkconfig.defaults or the build's sdkconfig.cmake would read differently (a line break ends the line, `\"` and `\\` end or escape the string, `$` expands `${{...}}` in CMake, `;` splits a CMake list); leave it out",
            c
        )
    })
}

/// A policy error as printed: keys and values come from the file, and a line break or escape
/// sequence in one would print a forged second line or drive the terminal (`fsutil::shown`).
fn escaped(message: String) -> String {
    crate::fsutil::shown(&message)
}

/// A path the policy names below `base` (a header under components/esp_dc_port/include, a patch
/// under patches/): relative, no `..`, only characters that are safe unquoted in CMake and in
/// the stamp, and still inside `base` once symbolic links are resolved.
fn unsafe_path(path: &str, base: &Path) -> Option<String> {
    if !path.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '+')) {
        return Some("only letters, digits and `_ - . / +` may appear in the path".into());
    }
    if path.starts_with('/') || path.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return Some(format!("`{path}` must be a relative path without `.`, `..` or empty parts"));
    }
    // A symbolic link inside `base` may still point out of the repository.
    if let (Ok(real), Ok(real_base)) = (base.join(path).canonicalize(), base.canonicalize()) {
        if !real.starts_with(&real_base) {
            return Some(format!("`{path}` leads outside {} (a symbolic link)", base.display()));
        }
    }
    None
}

/// A definition is written as the quoted CMake argument `"NAME=value"` of
/// target_compile_definitions: `"` would end it (and let the rest run as CMake code), `\` and
/// `$` escape or expand inside it, `;` splits the definition list, a line break or other
/// control character breaks the line.
fn unsafe_definition(value: &DefinitionValue) -> Option<String> {
    let DefinitionValue::Str(text) = value else { return None };
    text.chars().find(|c| c.is_control() || matches!(c, '"' | '\\' | '$' | ';')).map(|c| {
        format!(
            "the value contains {:?}, which would end or change the quoted CMake argument \"NAME=value\" in the generated CMakeLists.txt; use letters, digits and punctuation other than `\" \\ $ ;` (for a C string, define it in a header under components/esp_dc_port/include)",
            c
        )
    })
}

/// The range of the Kconfig option a policy number feeds (ESP-IDF 5.5 or our Kconfig). Checked
/// here because kconfgen drops an out-of-range value with only a warning and builds with the
/// option's default: the device would silently not follow the policy.
pub struct KconfigRange {
    pub min: u64,
    pub max: u64,
    /// The symbol without CONFIG_.
    pub option: &'static str,
    /// Where the option and its range are defined.
    pub file: &'static str,
}

/// components.libdatachannel.threads.stack_bytes (else pthread.default_stack_bytes) becomes
/// CONFIG_ESP_DC_PORT_THREAD_STACK_BYTES.
const THREAD_STACK_RANGE: KconfigRange = KconfigRange {
    min: 2048,
    max: 131072,
    option: "ESP_DC_PORT_THREAD_STACK_BYTES",
    file: "components/esp_dc_port/Kconfig (ours)",
};

fn check_range(problems: &mut Vec<(String, String)>, key: &str, value: u64, range: &KconfigRange) {
    if value < range.min || value > range.max {
        problems.push((
            key.to_string(),
            format!(
                "{value} is out of range {}..={} of CONFIG_{} ({}); kconfgen would drop it and build with the option's default. Choose a value within the range",
                range.min, range.max, range.option, range.file
            ),
        ));
    }
}

fn first_line(message: &str) -> String {
    message.trim().lines().next().unwrap_or("").to_string()
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The dotted key defined on `line`, for syntax errors where no parse tree exists.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let raw = text.lines().nth(line - 1)?.trim();
    let key = raw.split('=').next()?.trim().trim_matches(|c| c == '[' || c == ']');
    (!key.is_empty()).then(|| key.to_string())
}

/// Line of a dotted key path (`components.libsrtp.placement`, `components.x.patches[0]`) in the document.
fn span_line(doc: &toml_edit::Document<String>, text: &str, path: &str) -> Option<usize> {
    let segments: Vec<&str> =
        path.split('.').map(|s| s.split('[').next().unwrap_or(s)).filter(|s| !s.is_empty()).collect();
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut best: Option<usize> = None;
    let mut i = 0;
    while i < segments.len() {
        // A key may itself hold dots (`[components."lib.x"]`, `"CONFIG_A.B" = 1`): the longest
        // run of segments that names a key of this table wins.
        let Some((taken, key, item)) = (i + 1..=segments.len())
            .rev()
            .find_map(|end| table.get_key_value(&segments[i..end].join(".")).map(|(k, v)| (end - i, k, v)))
        else {
            break;
        };
        best = key.span().or_else(|| item.span()).map(|s| line_of_offset(text, s.start)).or(best);
        i += taken;
        match item.as_table_like() {
            Some(next) if i < segments.len() => table = next,
            _ => break,
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> String {
        std::fs::read_to_string(Policy::path_for(name)).unwrap()
    }

    fn parse_err(text: &str) -> String {
        Policy::parse(text, Path::new("p.toml")).unwrap_err().to_string()
    }

    #[test]
    fn shipped_policies_parse() {
        for name in ["lean", "stock"] {
            let p = Policy::load(&Policy::path_for(name)).unwrap();
            assert_eq!(p.policy.name, name);
            assert_eq!(p.components.len(), components::placed().len());
        }
    }

    #[test]
    fn lean_redirects_libsrtp_and_stock_does_not() {
        let lean = Policy::load(&Policy::path_for("lean")).unwrap();
        let stock = Policy::load(&Policy::path_for("stock")).unwrap();
        assert_eq!(lean.component("libsrtp").placement, Placement::Psram);
        assert!(!lean.component("libsrtp").force_include.is_empty());
        assert!(stock.component("libsrtp").force_include.is_empty(), "the seed forgot libsrtp");
    }

    /// Issue 27, class 4: a quoted dotted table name was reported at line 1; a key holding a
    /// line break printed a second, forged `error:` line; escape sequences reached the terminal.
    #[test]
    fn errors_name_the_real_line_and_show_keys_escaped() {
        let lean = shipped("lean");
        let text = format!("{lean}\n[components.\"lib.x\"]\nplacement = \"psram\"\n");
        let line = text.lines().position(|l| l.starts_with("[components.\"lib.x\"]")).unwrap() + 1;
        let err = parse_err(&text);
        assert!(err.starts_with(&format!("p.toml:{line}: components.lib.x: unknown component")), "{err}");

        let forged =
            lean.replacen("[sdkconfig_extra]\n", "[sdkconfig_extra]\n\"CONFIG_A\\nerror: all good\" = \"y\"\n", 1);
        let line = forged.lines().position(|l| l.starts_with("\"CONFIG_A")).unwrap() + 1;
        let err = parse_err(&forged);
        assert_eq!(err.lines().count(), 1, "a forged line: {err}");
        assert!(
            err.starts_with(&format!(
                "p.toml:{line}: sdkconfig_extra.CONFIG_A\\nerror: all good: not a Kconfig symbol"
            )),
            "{err}"
        );
        let escape = lean.replacen("[sdkconfig_extra]\n", "[sdkconfig_extra]\n\"CONFIG_\\u001b[2J\" = \"y\"\n", 1);
        let err = parse_err(&escape);
        assert!(!err.contains('\u{1b}') && err.contains("sdkconfig_extra.CONFIG_\\u{1b}[2J: "), "{err:?}");
        let value = lean.replacen("[sdkconfig_extra]\n", "[sdkconfig_extra]\nCONFIG_X = \"\\u001b]0;x\\u0007\"\n", 1);
        let err = parse_err(&value);
        assert!(!err.contains('\u{1b}') && err.contains("\\u{1b}"), "{err:?}");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text =
            shipped("lean").replacen("[components.libsrtp]\n", "[components.libsrtp]\nplacment = \"psram\"\n", 1);
        let line = text.lines().position(|l| l.starts_with("placment")).unwrap() + 1;
        let err = parse_err(&text);
        assert!(err.starts_with(&format!("p.toml:{line}: components.libsrtp")), "{err}");
        assert!(err.contains("placment"), "{err}");
    }

    #[test]
    fn invalid_placement_names_its_line() {
        let text = shipped("lean");
        let start = text.find("[components.libsrtp]").unwrap();
        let rel = text[start..].find("placement = \"psram\"").unwrap();
        let mut bad = text.clone();
        bad.replace_range(start + rel..start + rel + "placement = \"psram\"".len(), "placement = \"flash\"");
        let line = line_of_offset(&bad, start + rel);
        let err = parse_err(&bad);
        assert!(err.starts_with(&format!("p.toml:{line}: components.libsrtp.placement: ")), "{err}");
        assert!(err.contains("flash"), "{err}");
    }

    #[test]
    fn unknown_component_and_knob_are_refused() {
        let text = shipped("lean") + "\n[components.libfoo]\nplacement = \"psram\"\n";
        let err = parse_err(&text);
        assert!(err.contains(": components.libfoo: unknown component `libfoo`"), "{err}");

        let text = shipped("lean").replacen(
            "[components.libjuice.knobs]\n",
            "[components.libjuice.knobs]\nwarp_factor = 9\n",
            1,
        );
        let line = text.lines().position(|l| l.starts_with("warp_factor")).unwrap() + 1;
        let err = parse_err(&text);
        assert!(
            err.starts_with(&format!("p.toml:{line}: components.libjuice.knobs.warp_factor: unknown knob")),
            "{err}"
        );
    }

    #[test]
    fn knob_out_of_range_and_missing_patch() {
        let lean = shipped("lean");
        let line = lean.lines().find(|l| l.starts_with("max_candidates =")).expect("lean sets max_candidates");
        let text = lean.replacen(line, "max_candidates = 0", 1);
        assert!(parse_err(&text).contains("0 is out of range 2..=64"));
        let text =
            shipped("lean").replacen("[components.plog]\n", "[components.plog]\npatches = [\"nope.patch\"]\n", 1);
        let err = parse_err(&text);
        assert!(err.contains("components.plog.patches: no patch `nope.patch`"), "{err}");
    }

    #[test]
    fn syntax_error_names_line() {
        let text = "[policy]\nname = \"x\"\ndescription = \n";
        let err = parse_err(text);
        assert!(err.starts_with("p.toml:3: description: TOML syntax error"), "{err}");
    }

    #[test]
    fn knob_value_defaults_to_stock() {
        let stock = Policy::load(&Policy::path_for("stock")).unwrap();
        let lean = Policy::load(&Policy::path_for("lean")).unwrap();
        let spec = knob("libdatachannel", "sctp_max_streams").unwrap();
        assert_eq!(stock.knob_value(spec), 1024);
        assert!(lean.knob_value(spec) < 1024);
        assert_eq!(spec.kconfig_symbol(), "ESP_DC_LIBDATACHANNEL_SCTP_MAX_STREAMS");
    }

    /// docs/policy.md's knob table has one row per knob of KNOBS and no other: lean's and stock's
    /// values as shipped, and how it acts as the row says (the definition, or the C API field).
    #[test]
    fn knob_table_in_docs_follows_the_policies() {
        let doc = std::fs::read_to_string(crate::fsutil::project_root().join("docs/policy.md")).unwrap();
        let stock = Policy::load(&Policy::path_for("stock")).unwrap();
        let lean = Policy::load(&Policy::path_for("lean")).unwrap();
        let table: Vec<&str> = doc
            .lines()
            .skip_while(|l| !l.starts_with("| knob | how it acts |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .collect();
        assert_eq!(
            table.len(),
            KNOBS.len(),
            "docs/policy.md's knob table: {} rows for {} knobs",
            table.len(),
            KNOBS.len()
        );
        for spec in KNOBS {
            let key = format!("| `{}.{}` |", spec.component, spec.name);
            let row =
                table.iter().find(|l| l.starts_with(&key)).unwrap_or_else(|| panic!("docs/policy.md has no row {key}"));
            let cells: Vec<&str> = row.trim_end_matches('|').rsplitn(3, '|').map(str::trim).collect();
            assert_eq!(cells[1], lean.knob_value(spec).to_string(), "{key} lean");
            assert_eq!(cells[0], stock.knob_value(spec).to_string(), "{key} stock");
            let how = match spec.effect {
                KnobEffect::Define(name) => format!("| Define `{name}`"),
                KnobEffect::Runtime(api, field) => format!("| Runtime: `{}`", api.target(field)),
            };
            assert!(row[key.len() - 1..].starts_with(&how), "{key}: how it acts should start with {how}");
        }
    }

    /// The generated list holds exactly the catalogue's run-time rows, each with its API, field,
    /// Kconfig symbol, lab variable and upstream value; the lab variables are distinct.
    #[test]
    fn runtime_knobs_header_lists_exactly_the_runtime_rows() {
        let header = runtime_knobs_header();
        let rows: Vec<&str> = header.lines().map(str::trim).filter(|l| l.starts_with("X(")).collect();
        let runtime: Vec<&KnobSpec> = KNOBS.iter().filter(|k| matches!(k.effect, KnobEffect::Runtime(..))).collect();
        assert_eq!(rows.len(), runtime.len(), "{header}");
        assert!(runtime.len() >= 5, "sctp buffers, chunks, message size and the NACK store are run-time knobs");
        for (row, k) in rows.iter().zip(&runtime) {
            let KnobEffect::Runtime(api, field) = k.effect else { unreachable!() };
            let want = format!(
                "X({}, {field}, {}, {}, \"{}\", {})",
                api.token(),
                k.name,
                k.kconfig_symbol(),
                k.lab_env(),
                k.stock
            );
            assert_eq!(row.trim_end_matches(" \\"), want);
        }
        let mut envs: Vec<String> = runtime.iter().map(|k| k.lab_env()).collect();
        envs.sort();
        envs.dedup();
        assert_eq!(envs.len(), runtime.len(), "two run-time knobs share a LAB_ variable");
        assert_eq!(knob("libdatachannel", "nack_max_packets").unwrap().lab_env(), "LAB_NACK_MAX_PACKETS");
    }

    /// esp_dc_port_init.c and the lab's driver expand the generated list and name no run-time
    /// knob themselves: a knob added to KNOBS reaches both without touching either.
    #[test]
    fn runtime_knob_consumers_name_no_knob() {
        let root = crate::fsutil::project_root();
        let expanders = [root.join("components/esp_dc_init/src/esp_dc_port_init.c"), root.join("lab/driver/knobs.cpp")];
        let mut files = expanders.to_vec();
        files.extend(crate::replica::driver_files(&root.join("lab/driver")).unwrap());
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            if expanders.contains(&file) {
                assert!(text.contains("ESP_DC_RUNTIME_KNOBS("), "{} does not expand the list", file.display());
            }
            for k in KNOBS.iter().filter(|k| matches!(k.effect, KnobEffect::Runtime(..))) {
                let KnobEffect::Runtime(_, field) = k.effect else { unreachable!() };
                for word in [k.name.to_string(), k.lab_env(), k.kconfig_symbol(), field.to_string()] {
                    assert!(!text.contains(&word), "{} names {word} by hand", file.display());
                }
            }
        }
    }

    /// Every run-time knob reaches libdatachannel through esp_dc_init: for each API a row uses,
    /// esp_dc_port_init.c expands the rows of that API into an assignment or a call (the SCTP
    /// settings in esp_dc_port_init(), rtcConfiguration in esp_dc_port_configure(), the NACK
    /// responder in esp_dc_port_chain_nack_responder()). An API whose expansion is empty
    /// everywhere would drop its knobs silently; the examples call the two functions
    /// (configure::tests and the ESP-IDF e2e tests build and run them).
    #[test]
    fn every_runtime_api_is_applied_by_esp_dc_init() {
        let path = crate::fsutil::project_root().join("components/esp_dc_init/src/esp_dc_port_init.c");
        let source = std::fs::read_to_string(&path).unwrap();
        let mut apis: Vec<RuntimeApi> = KNOBS
            .iter()
            .filter_map(|k| if let KnobEffect::Runtime(api, _) = k.effect { Some(api) } else { None })
            .collect();
        apis.dedup();
        assert!(apis.len() >= 3, "SCTP settings, rtcConfiguration and the NACK responder carry knobs");
        for api in apis {
            let define = format!("#define {}(field, name, kconfig)", api.token());
            let applied =
                source.lines().filter_map(|l| l.trim().strip_prefix(&define)).any(|rest| !rest.trim().is_empty());
            assert!(applied, "esp_dc_port_init.c never applies the {} rows (`{define} <something>`)", api.token());
        }
        for (example, call) in [
            ("datachannel_echo", "esp_dc_port_configure(&config)"),
            ("h264_sender", "esp_dc_port_configure(&config)"),
            ("h264_sender", "esp_dc_port_chain_nack_responder(track)"),
            ("whep_camera", "esp_dc_port_configure(&config)"),
            ("whep_camera", "esp_dc_port_chain_nack_responder(track)"),
        ] {
            let main = crate::fsutil::project_root().join(format!("examples/{example}/main/{example}_main.c"));
            assert!(std::fs::read_to_string(&main).unwrap().contains(call), "{example} does not call {call}");
        }
    }

    #[test]
    fn dtls_read_buffer_must_hold_a_record() {
        let text = shipped("lean").replacen(
            "[components.libdatachannel.knobs]\n",
            "[components.libdatachannel.knobs]\ndtls_recv_buffer_bytes = 1024\n",
            1,
        );
        let text =
            text.lines().filter(|l| !l.starts_with("dtls_recv_buffer_bytes = 1536")).collect::<Vec<_>>().join("\n");
        let err = parse_err(&text);
        assert!(err.contains("components.libdatachannel.knobs.dtls_recv_buffer_bytes: 1024 is below mbedtls.ssl_in_content_len (1536)"), "{err}");
    }

    #[test]
    fn driven_by_pool_needs_both_of_its_patches() {
        let lean = shipped("lean");
        assert!(lean.contains("driven_by_pool = 1"), "lean drives libjuice from the pool");
        for patch in ["\"libjuice/driven-by-pool.patch\"", "\"libdatachannel/juice-driven-by-pool.patch\","] {
            let text = lean.replacen(patch, "", 1);
            assert_ne!(text, lean, "{patch} is listed in lean");
            let err = parse_err(&text);
            assert!(err.contains("components.libjuice.knobs.driven_by_pool: 1 needs"), "{err}");
        }
    }

    /// Issue 18: numbers past their Kconfig option's range passed and kconfgen then dropped
    /// them. Each is refused at its line, before anything is written.
    #[test]
    fn numbers_outside_their_kconfig_range_are_refused_at_their_line() {
        let lean = shipped("lean");
        for (from, to, says) in [
            ("stack_bytes = 15360", "stack_bytes = 4294967295", "components.libdatachannel.threads.stack_bytes: 4294967295 is out of range 2048..=131072 of CONFIG_ESP_DC_PORT_THREAD_STACK_BYTES"),
            ("emergency_pool_bytes = 0", "emergency_pool_bytes = 2147483648", "cxx.emergency_pool_bytes: 2147483648 is out of range 0..=2147483647 of CONFIG_COMPILER_CXX_EXCEPTIONS_EMG_POOL_SIZE"),
            ("reserve_internal_bytes = 32768", "reserve_internal_bytes = 4294967295", "memory.reserve_internal_bytes: 4294967295 is out of range 0..=262144 of CONFIG_SPIRAM_MALLOC_RESERVE_INTERNAL"),
            ("always_internal_bytes = ", "always_internal_bytes = 131073 #", "memory.always_internal_bytes: 131073 is out of range 0..=131072"),
            ("stack_depth = ", "stack_depth = 33 #", "heap_tracing.stack_depth: 33 is out of range 0..=32"),
            ("records = ", "records = 100001 #", "heap_tracing.records: 100001 is out of range 0..=100000"),
            ("ssl_in_content_len = ", "ssl_in_content_len = 16385 #", "mbedtls.ssl_in_content_len: 16385 is out of range 512..=16384"),
            ("default_stack_bytes = 8192", "default_stack_bytes = 2147483648", "pthread.default_stack_bytes: 2147483648 is out of range 2048..=2147483647"),
        ] {
            assert!(lean.contains(from), "lean has no `{from}`");
            let text = lean.replacen(from, to, 1);
            let line = text.lines().position(|l| l.contains(to.trim_end_matches(" #"))).unwrap() + 1;
            let err = parse_err(&text);
            assert!(err.starts_with(&format!("p.toml:{line}: {says}")), "{err}");
        }
        // The pthread default stands in for libdatachannel's threads when those are not set.
        let text = lean.replacen("threads = { stack_bytes = 15360, placement = \"psram\" }\n", "", 1).replacen(
            "default_stack_bytes = 8192",
            "default_stack_bytes = 262144",
            1,
        );
        assert!(parse_err(&text).contains("pthread.default_stack_bytes: 262144 is out of range 2048..=131072 of CONFIG_ESP_DC_PORT_THREAD_STACK_BYTES"), "{}", parse_err(&text));
        // A stack for another component's threads does not reach the Kconfig option.
        assert!(Policy::parse(
            &lean.replacen("default_stack_bytes = 8192", "default_stack_bytes = 262144", 1),
            Path::new("p.toml")
        )
        .is_ok());
    }

    /// Issue 18: policy strings reached generated files unescaped. Each reproducer is refused
    /// with `file:line: key: what`.
    #[test]
    fn strings_that_would_break_generated_files_are_refused_at_their_line() {
        let lean = shipped("lean");
        let description = "description = \"All allocations placed, upstream's desktop sizes cut to MCU sizes\"";
        let cases = [
            (description, "description = \"x\\n# ---- end of policy block ----\\nCONFIG_EVIL=y\"", "policy.description: contains the control character '\\n'"),
            (description, "description = \"x\\rCONFIG_EVIL=y\"", "policy.description: contains the control character '\\r'"),
            ("name = \"lean\"", "name = \"le\\\"an\"", "policy.name: `le\\\"an` is not a safe policy name"),
            ("name = \"lean\"", "name = \"../../x\"", "policy.name: `../../x` is not a safe policy name"),
            ("[components.plog]\n", "[components.plog]\ndefinitions = { EVIL = \"1\\\")\\nexecute_process(COMMAND touch /tmp/evil)\\n#\" }\n", "components.plog.definitions.EVIL: the value contains '\"'"),
            ("[components.plog]\n", "[components.plog]\ndefinitions = { EVIL = \"${CMAKE_COMMAND}\" }\n", "components.plog.definitions.EVIL: the value contains '$'"),
            ("[components.plog]\n", "[components.plog]\ndefinitions = { EVIL = \"a;b\" }\n", "components.plog.definitions.EVIL: the value contains ';'"),
            ("force_include = \"\"", "force_include = \"../../../README.md\"", "components.esp_dc_port.force_include: `../../../README.md` must be a relative path"),
            ("force_include = \"\"", "force_include = \"/etc/hostname\"", "components.esp_dc_port.force_include: `/etc/hostname` must be a relative path"),
            ("force_include = \"\"", "force_include = \"a\\\"b.h\"", "components.esp_dc_port.force_include: only letters, digits"),
            ("[components.plog]\n", "[components.plog]\npatches = [\"../README.md\"]\n", "components.plog.patches: `../README.md`: `../README.md` must be a relative path"),
            ("[components.plog]\n", "[components.plog]\npatches = [\"x\\n.patch\"]\n", "components.plog.patches: `x\\n.patch`: only letters, digits"),
        ];
        for (from, to, says) in cases {
            assert!(lean.contains(from), "lean has no `{from}`");
            let text = lean.replacen(from, to, 1);
            let first = to.lines().last().filter(|_| to.starts_with('[')).unwrap_or(to);
            let line = text.lines().position(|l| l == first.trim_end_matches('\n')).unwrap() + 1;
            let err = parse_err(&text);
            assert!(err.starts_with(&format!("p.toml:{line}: {says}")), "expected `{says}` at line {line}:\n{err}");
        }
        let text = lean.replacen(
            "[sdkconfig_extra]\n",
            "[sdkconfig_extra]\nCONFIG_LWIP_MAX_SOCKETS = \"16\\nCONFIG_EVIL=y\"\n",
            1,
        );
        let line = text.lines().position(|l| l.starts_with("CONFIG_LWIP_MAX_SOCKETS")).unwrap() + 1;
        assert!(
            parse_err(&text).starts_with(&format!(
                "p.toml:{line}: sdkconfig_extra.CONFIG_LWIP_MAX_SOCKETS: contains the control character"
            )),
            "{}",
            parse_err(&text)
        );
        // Plain definitions, names and the shipped policies pass.
        assert_eq!(unsafe_definition(&DefinitionValue::Str("-O2 x=1,y:2 (a+b)*c/d <e> 'f' # g".into())), None);
        assert_eq!(unsafe_name("lean-2_b"), None);
        assert!(unsafe_name("").is_some() && unsafe_name("-x").is_some() && unsafe_name(&"a".repeat(65)).is_some());
    }

    /// A relative path that is fine as text but leads out through a symbolic link is refused too.
    #[test]
    fn a_symbolic_link_out_of_the_base_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("include");
        std::fs::create_dir_all(base.join("ok")).unwrap();
        std::fs::write(base.join("ok/a.h"), "").unwrap();
        std::os::unix::fs::symlink(dir.path(), base.join("out")).unwrap();
        std::fs::write(dir.path().join("secret.h"), "").unwrap();
        assert_eq!(unsafe_path("ok/a.h", &base), None);
        assert!(
            unsafe_path("out/secret.h", &base).unwrap().contains("leads outside"),
            "{:?}",
            unsafe_path("out/secret.h", &base)
        );
        assert!(unsafe_path("ok//a.h", &base).is_some() && unsafe_path("./ok/a.h", &base).is_some());
    }
}
