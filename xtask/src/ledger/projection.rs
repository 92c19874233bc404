//! ESP32 projection: places each live byte of the host replica in internal RAM or PSRAM by the
//! policy, and adds what ESP-IDF itself spends for the same objects. All sizes are for 32-bit
//! ESP-IDF 5.5 targets (Xtensa ESP32-S3, RISC-V ESP32-P4) and name the file they come from.
//! They are a model, not a device measurement: `cargo xtask analyze` gives the device's truth.

use crate::policy::{
    MbedtlsAllocator, Placement, Policy, SharedPtrLockPolicy, SpiramMalloc, StaticPlacement, SyncPlacement,
};
use crate::report::{Projection, ProjectionLine};

/// TLSF block header overhead: one `size_t` per allocated block
/// (components/heap/tlsf/tlsf_block_functions.h: `block_header_overhead = sizeof(size_t)`).
pub const TLSF_BLOCK_OVERHEAD: u64 = 4;
/// TLSF minimum block payload: `sizeof(block_header_t) - sizeof(block_header_t*)` = 16 - 4
/// (components/heap/tlsf/tlsf_block_functions.h, `block_size_min`).
pub const TLSF_BLOCK_MIN: u64 = 12;
/// TLSF aligns every block to `ALIGN_SIZE` = 4 on 32-bit targets (components/heap/tlsf/tlsf_common.h).
pub const TLSF_ALIGN: u64 = 4;
/// A FreeRTOS task control block, `sizeof(StaticTask_t)` with ESP-IDF's SMP kernel options
/// (components/freertos/FreeRTOS-Kernel/include/freertos/FreeRTOS.h, `xSTATIC_TCB`), always internal RAM
/// (components/pthread/pthread.c allocates it with MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT).
pub const FREERTOS_TCB: u64 = 352;
/// ESP-IDF's per-pthread bookkeeping `esp_pthread_t` (components/pthread/pthread.c): list node,
/// task handle, join task, state, detached flag, task argument.
pub const ESP_PTHREAD_T: u64 = 28;
/// A pthread mutex on ESP-IDF: `esp_pthread_mutex_t` (components/pthread/pthread.c:59-63: semaphore
/// handle, type), malloc'd, plus the FreeRTOS mutex it creates, `sizeof(StaticQueue_t)`
/// (components/freertos/FreeRTOS-Kernel/include/freertos/FreeRTOS.h, `xSTATIC_QUEUE`, with the SMP spinlock).
pub const PTHREAD_MUTEX: u64 = 8;
pub const FREERTOS_QUEUE: u64 = 84;
/// A condition variable: `esp_pthread_cond_t` (components/pthread/pthread_cond_var.c: a newlib
/// `_lock_t` and the waiter list's TAILQ_HEAD), calloc'd, plus the FreeRTOS recursive mutex
/// `_lock_init_recursive` creates for that lock (components/newlib/src/locks.c lock_init_generic:
/// xQueueCreateMutex, a `StaticQueue_t`-sized queue from pvPortMalloc).
pub const PTHREAD_COND: u64 = 12;
/// With `sync.placement = "with_owner"` and the handle in PSRAM, esp_dc_port_sync.c builds the
/// same two objects in one PSRAM block (ESP-IDF's struct, then the `StaticSemaphore_t`):
/// `psram_mutex_t` and `psram_cond_t`. `StaticSemaphore_t` is `StaticQueue_t`
/// (components/freertos/FreeRTOS-Kernel/include/freertos/FreeRTOS.h).
pub const PSRAM_MUTEX_BLOCK: u64 = PTHREAD_MUTEX + FREERTOS_QUEUE;
pub const PSRAM_COND_BLOCK: u64 = PTHREAD_COND + FREERTOS_QUEUE;
/// lwIP state per UDP socket (components/lwip/lwip/src/include/lwip/api.h `struct netconn`,
/// lwip/udp.h `struct udp_pcb`, lwip/src/api/sockets.c `struct lwip_sock`) and its receive
/// mailbox, a FreeRTOS queue of CONFIG_LWIP_UDP_RECVMBOX_SIZE (6) pointers (components/lwip/port/freertos/sys_arch.c).
pub const LWIP_NETCONN: u64 = 48;
pub const LWIP_UDP_PCB: u64 = 40;
pub const LWIP_SOCK: u64 = 28;
pub const LWIP_UDP_RECVMBOX: u64 = FREERTOS_QUEUE + 6 * 4;
/// With `_S_mutex` (RISC-V builds without atomics) every shared_ptr control block embeds a
/// `__gnu_cxx::__mutex`, i.e. a `pthread_mutex_t` handle (4 bytes on ESP-IDF,
/// components/newlib/platform_include/sys/_pthreadtypes.h), whose first lock creates an ESP-IDF mutex.
pub const SHARED_PTR_MUTEX_HANDLE: u64 = 4;

/// A live block of the replica, as the projection sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub component: String,
    pub size: u64,
    /// lab_trace.h `lab_origin`: 0 malloc, 1 operator new, 2 tagged through the redirect header.
    pub origin: u8,
    pub caps: u32,
    pub shared_ptr_control: bool,
}

/// Everything live at one moment: blocks, threads (component, ESP32 stack bytes), sync objects, sockets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Census {
    pub blocks: Vec<Block>,
    pub threads: Vec<(String, u64)>,
    pub mutexes: u64,
    /// Mutexes by the component whose code first used them.
    pub mutex_owners: std::collections::BTreeMap<String, u64>,
    pub condvars: u64,
    /// The stack's sync objects with their owner: the live block holding the `pthread_*_t`, if
    /// any. Objects counted in `mutexes`/`condvars` but not listed here have no known owner.
    pub sync_objects: Vec<SyncObject>,
    pub udp_sockets: u64,
}

/// One pthread mutex or condition variable of the stack, as the recorder saw it first used.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncObject {
    pub mutex: bool,
    /// The component whose code first used it.
    pub component: String,
    /// The live heap block its handle lives in; None for static (`.bss`/`.data`) or stack storage.
    pub owner: Option<Block>,
    /// The owner block's allocation site (an index into the lab's site table), to count locks by
    /// the object that holds them.
    pub owner_site: Option<usize>,
}

// The caps a tagged block was allocated with, as the replica passed them (render::caps_bits).
use crate::render::{MALLOC_CAP_INTERNAL, MALLOC_CAP_SPIRAM};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Heap {
    Internal,
    Psram,
}

/// What a TLSF heap really spends for a request of `size` bytes.
pub fn tlsf_cost(size: u64) -> u64 {
    let payload = size.max(TLSF_BLOCK_MIN).div_ceil(TLSF_ALIGN) * TLSF_ALIGN;
    payload + TLSF_BLOCK_OVERHEAD
}

/// ESP-IDF's malloc() with PSRAM (components/heap/heap_caps_base.c, heap_caps_malloc_default):
/// requests up to CONFIG_SPIRAM_MALLOC_ALWAYSINTERNAL try internal RAM first, larger ones PSRAM first.
fn malloc_default(policy: &Policy, size: u64) -> Heap {
    if policy.memory.spiram
        && policy.memory.spiram_malloc == SpiramMalloc::Malloc
        && size > u64::from(policy.memory.always_internal_bytes)
    {
        Heap::Psram
    } else {
        Heap::Internal
    }
}

fn by_placement(policy: &Policy, placement: Placement, size: u64) -> Heap {
    match placement {
        Placement::Psram if policy.memory.spiram => Heap::Psram,
        Placement::Psram | Placement::Internal => Heap::Internal,
        Placement::Default => malloc_default(policy, size),
    }
}

fn heap_of(policy: &Policy, b: &Block) -> Heap {
    match b.origin {
        2 if b.caps & MALLOC_CAP_SPIRAM != 0 => {
            if policy.memory.spiram {
                Heap::Psram
            } else {
                Heap::Internal
            }
        }
        2 if b.caps & MALLOC_CAP_INTERNAL != 0 => Heap::Internal,
        2 => malloc_default(policy, b.size),
        1 => by_placement(policy, policy.cxx.new_placement, b.size),
        _ if b.component == "mbedtls" => match policy.mbedtls.allocator {
            MbedtlsAllocator::Internal => Heap::Internal,
            MbedtlsAllocator::External => by_placement(policy, Placement::Psram, b.size),
            MbedtlsAllocator::Default => malloc_default(policy, b.size),
            MbedtlsAllocator::Custom => by_placement(policy, policy.component("esp_dc_port").placement, b.size),
        },
        _ => malloc_default(policy, b.size),
    }
}

/// The projection's lines; one of 0 bytes is left out.
#[derive(Default)]
struct Lines(Vec<ProjectionLine>);

impl Lines {
    fn add(&mut self, what: String, heap: Heap, bytes: u64, source: &str) {
        if bytes == 0 {
            return;
        }
        let (internal_bytes, psram_bytes) = if heap == Heap::Internal { (bytes, 0) } else { (0, bytes) };
        self.0.push(ProjectionLine { what, internal_bytes, psram_bytes, source: source.to_string() });
    }
}

pub fn project(policy: &Policy, census: &Census) -> Projection {
    let mut lines = Lines::default();
    heap_lines(policy, census, &mut lines);
    thread_lines(policy, census, &mut lines);
    sync_lines(policy, census, &mut lines);
    socket_and_shared_ptr_lines(policy, census, &mut lines);
    let lines = lines.0;
    let internal_bytes = lines.iter().map(|l| l.internal_bytes).sum();
    let psram_bytes = lines.iter().map(|l| l.psram_bytes).sum();
    Projection { internal_bytes, psram_bytes, lines }
}

/// A pthread mutex on the device: esp_pthread_mutex_t and its FreeRTOS mutex.
fn pthread_mutex_cost() -> u64 {
    tlsf_cost(PTHREAD_MUTEX) + tlsf_cost(FREERTOS_QUEUE)
}

/// The replica's heap blocks where the policy places them, and TLSF's cost for each.
fn heap_lines(policy: &Policy, census: &Census, lines: &mut Lines) {
    let mut heap_bytes = [0u64; 2];
    let mut overhead = [0u64; 2];
    for b in &census.blocks {
        let h = heap_of(policy, b) as usize;
        heap_bytes[h] += b.size;
        overhead[h] += tlsf_cost(b.size) - b.size;
    }
    lines.add("heap blocks (payload)".into(), Heap::Internal, heap_bytes[0], "host replica, placed by the policy");
    lines.add("heap blocks (payload)".into(), Heap::Psram, heap_bytes[1], "host replica, placed by the policy");
    lines.add(
        "TLSF block overhead and alignment".into(),
        Heap::Internal,
        overhead[0],
        "components/heap/tlsf/tlsf_block_functions.h",
    );
    lines.add(
        "TLSF block overhead and alignment".into(),
        Heap::Psram,
        overhead[1],
        "components/heap/tlsf/tlsf_block_functions.h",
    );
}

/// Each thread's TCB, esp_pthread_t and stack.
fn thread_lines(policy: &Policy, census: &Census, lines: &mut Lines) {
    let tasks = census.threads.len() as u64;
    lines.add(
        format!("{tasks} FreeRTOS TCB(s) + esp_pthread_t"),
        Heap::Internal,
        tasks * (tlsf_cost(FREERTOS_TCB) + tlsf_cost(ESP_PTHREAD_T)),
        "components/freertos/FreeRTOS-Kernel/include/freertos/FreeRTOS.h; components/pthread/pthread.c",
    );
    let stack_heap = match policy.pthread.stack_placement {
        Placement::Psram if policy.memory.spiram => Heap::Psram,
        _ => Heap::Internal,
    };
    let stacks: u64 = census
        .threads
        .iter()
        .map(|(component, requested)| {
            let configured =
                policy.components.get(component).and_then(|c| c.threads.as_ref()).map(|t| u64::from(t.stack_bytes));
            tlsf_cost(configured.unwrap_or(*requested))
        })
        .sum();
    lines.add(
        format!("{tasks} pthread stack(s) (esp_pthread_cfg_t)"),
        stack_heap,
        stacks,
        "components/pthread/pthread.c (stack_alloc_caps)",
    );
}

/// Mutexes and condition variables: internal RAM, or with sync.placement = "with_owner" the
/// owner's heap.
fn sync_lines(policy: &Policy, census: &Census, lines: &mut Lines) {
    let sem = pthread_mutex_cost();
    let cond = tlsf_cost(PTHREAD_COND) + tlsf_cost(FREERTOS_QUEUE);
    // Where each sync object's FreeRTOS object goes: ESP-IDF's internal RAM, or with
    // sync.placement = "with_owner" the heap of the memory holding its handle: the owner block's
    // heap, or for static and stack storage the component's static_placement (its .bss).
    let follows_owner = policy.sync.placement == SyncPlacement::WithOwner && policy.memory.spiram;
    let mut in_psram = [0u64; 2]; // [mutexes, condition variables] placed in PSRAM
    let mut psram_owners: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    if follows_owner {
        for o in &census.sync_objects {
            let owner_heap = match &o.owner {
                Some(block) => heap_of(policy, block),
                None => match policy.components.get(&o.component).map(|c| c.static_placement) {
                    Some(StaticPlacement::Psram) => Heap::Psram,
                    _ => Heap::Internal,
                },
            };
            if owner_heap == Heap::Psram {
                in_psram[usize::from(!o.mutex)] += 1;
                if o.mutex {
                    *psram_owners.entry(o.component.clone()).or_default() += 1;
                }
            }
        }
    }
    let internal_owners: Vec<String> = census
        .mutex_owners
        .iter()
        .map(|(c, n)| (c, n - psram_owners.get(c).copied().unwrap_or(0).min(*n)))
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    let owners = if internal_owners.is_empty() { String::new() } else { format!(" ({})", internal_owners.join(", ")) };
    let internal_mutexes = census.mutexes.saturating_sub(in_psram[0]);
    lines.add(
        format!("{internal_mutexes} pthread mutex(es){owners}: esp_pthread_mutex_t + FreeRTOS mutex"),
        Heap::Internal,
        internal_mutexes * sem,
        "components/pthread/pthread.c; FreeRTOS.h StaticQueue_t",
    );
    let psram_list: Vec<String> = psram_owners.iter().map(|(c, n)| format!("{c} {n}")).collect();
    lines.add(
        format!(
            "{} pthread mutex(es) with their owner in PSRAM ({}): one block each",
            in_psram[0],
            psram_list.join(", ")
        ),
        Heap::Psram,
        in_psram[0] * tlsf_cost(PSRAM_MUTEX_BLOCK),
        "components/esp_dc_port/src/esp_dc_port_sync.c; freertos/esp_additions/idf_additions.c xSemaphoreCreateGenericWithCaps",
    );
    let internal_conds = census.condvars.saturating_sub(in_psram[1]);
    lines.add(
        format!("{internal_conds} condition variable(s): esp_pthread_cond_t + its newlib lock's FreeRTOS mutex"),
        Heap::Internal,
        internal_conds * cond,
        "components/pthread/pthread_cond_var.c; components/newlib/src/locks.c",
    );
    lines.add(
        format!("{} condition variable(s) with their owner in PSRAM: one block each", in_psram[1]),
        Heap::Psram,
        in_psram[1] * tlsf_cost(PSRAM_COND_BLOCK),
        "components/esp_dc_port/src/esp_dc_port_sync.c",
    );
}

/// lwIP's objects per UDP socket, and the mutex of each shared_ptr control block when libstdc++
/// locks them with one.
fn socket_and_shared_ptr_lines(policy: &Policy, census: &Census, lines: &mut Lines) {
    let lwip = tlsf_cost(LWIP_NETCONN) + tlsf_cost(LWIP_UDP_PCB) + tlsf_cost(LWIP_SOCK) + tlsf_cost(LWIP_UDP_RECVMBOX);
    lines.add(
        format!("{} UDP socket(s): netconn, udp_pcb, lwip_sock, recvmbox", census.udp_sockets),
        Heap::Internal,
        census.udp_sockets * lwip,
        "components/lwip/lwip/src/include/lwip/{api,udp}.h; sockets.c; port/freertos/sys_arch.c",
    );
    if policy.cxx.shared_ptr_lock_policy == SharedPtrLockPolicy::Mutex {
        let control = census.blocks.iter().filter(|b| b.shared_ptr_control).count() as u64;
        lines.add(
            format!("{control} shared_ptr control block mutex(es) (_S_mutex)"),
            Heap::Internal,
            control * (SHARED_PTR_MUTEX_HANDLE + pthread_mutex_cost()),
            "libstdc++ bits/shared_ptr_base.h _Mutex_base<_S_mutex>; components/pthread/pthread.c",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str) -> Policy {
        Policy::load(&Policy::path_for(name)).unwrap()
    }

    fn block(component: &str, size: u64, origin: u8, caps: u32) -> Block {
        Block { component: component.into(), size, origin, caps, shared_ptr_control: false }
    }

    #[test]
    fn tlsf_cost_rounds_and_adds_the_header() {
        assert_eq!(tlsf_cost(1), 16);
        assert_eq!(tlsf_cost(12), 16);
        assert_eq!(tlsf_cost(13), 20);
        assert_eq!(tlsf_cost(1000), 1004);
    }

    #[test]
    fn blocks_are_placed_by_origin_caps_and_size() {
        let stock = policy("stock"); // new -> default; always_internal 16384; mbedtls internal
        let census = Census {
            blocks: vec![
                block("usrsctp", 1000, 2, MALLOC_CAP_SPIRAM), // tagged psram
                block("libsrtp", 100, 0, 0),                  // untagged small -> internal
                block("libdatachannel", 20000, 1, 0),         // new, default, > 16384 -> psram
                block("mbedtls", 16384, 0, 0),                // mbedtls internal allocator
            ],
            ..Default::default()
        };
        let p = project(&stock, &census);
        let payload_internal =
            p.lines.iter().find(|l| l.what.starts_with("heap blocks") && l.internal_bytes > 0).unwrap().internal_bytes;
        let payload_psram =
            p.lines.iter().find(|l| l.what.starts_with("heap blocks") && l.psram_bytes > 0).unwrap().psram_bytes;
        assert_eq!(payload_internal, 100 + 16384);
        assert_eq!(payload_psram, 1000 + 20000);
        // overhead: internal 100 -> 104, 16384 -> 16388; psram 1000 -> 1004, 20000 -> 20004
        assert_eq!(p.internal_bytes, 104 + 16388);
        assert_eq!(p.psram_bytes, 1004 + 20004);
    }

    #[test]
    fn threads_sync_objects_and_sockets_cost_internal_ram() {
        let lean = policy("lean");
        let census = Census {
            threads: vec![("libdatachannel".into(), 8192), ("usrsctp".into(), 16384)],
            mutexes: 3,
            condvars: 2,
            udp_sockets: 1,
            ..Default::default()
        };
        let p = project(&lean, &census);
        let tcb = 2 * (tlsf_cost(FREERTOS_TCB) + tlsf_cost(ESP_PTHREAD_T));
        let sync = 3 * (tlsf_cost(PTHREAD_MUTEX) + tlsf_cost(FREERTOS_QUEUE))
            + 2 * (tlsf_cost(PTHREAD_COND) + tlsf_cost(FREERTOS_QUEUE));
        let lwip =
            tlsf_cost(LWIP_NETCONN) + tlsf_cost(LWIP_UDP_PCB) + tlsf_cost(LWIP_SOCK) + tlsf_cost(LWIP_UDP_RECVMBOX);
        assert_eq!(p.internal_bytes, tcb + sync + lwip);
        // lean places stacks in PSRAM; libdatachannel's threads get the policy's size, usrsctp its request.
        let lean_stack = lean.components["libdatachannel"].threads.as_ref().unwrap().stack_bytes as u64;
        assert_ne!(lean_stack, 8192, "the census must differ from the policy for the case to prove anything");
        assert_eq!(p.psram_bytes, tlsf_cost(lean_stack) + tlsf_cost(16384));
    }

    #[test]
    fn sync_objects_follow_their_owner_only_under_with_owner() {
        let lean = policy("lean");
        assert_eq!(lean.sync.placement, SyncPlacement::WithOwner);
        let in_psram_object = block("libdatachannel", 200, 1, 0); // operator new -> psram under lean
        let small_internal = block("usrsctp", 64, 2, MALLOC_CAP_INTERNAL);
        let object = |mutex: bool, component: &str, owner: Option<Block>| SyncObject {
            mutex,
            component: component.into(),
            owner,
            owner_site: None,
        };
        let census = Census {
            mutexes: 3,
            condvars: 1,
            mutex_owners: [("libdatachannel".to_string(), 2), ("usrsctp".to_string(), 1)].into(),
            sync_objects: vec![
                object(true, "libdatachannel", Some(in_psram_object.clone())),
                object(true, "usrsctp", Some(small_internal)),
                object(true, "libdatachannel", None), // .bss of libdatachannel: static_placement psram
                object(false, "libdatachannel", Some(in_psram_object)),
            ],
            ..Default::default()
        };
        let with_owner = project(&lean, &census);
        let mut internal = lean.clone();
        internal.sync.placement = SyncPlacement::Internal;
        let all_internal = project(&internal, &census);
        let sem = tlsf_cost(PTHREAD_MUTEX) + tlsf_cost(FREERTOS_QUEUE);
        let cond = tlsf_cost(PTHREAD_COND) + tlsf_cost(FREERTOS_QUEUE);
        assert_eq!(all_internal.internal_bytes, 3 * sem + cond);
        assert_eq!(all_internal.psram_bytes, 0);
        // Only the usrsctp mutex, whose handle sits in an internal block, stays internal.
        assert_eq!(with_owner.internal_bytes, sem);
        assert_eq!(with_owner.psram_bytes, 2 * tlsf_cost(PSRAM_MUTEX_BLOCK) + tlsf_cost(PSRAM_COND_BLOCK));
        // A static mutex of a component whose .bss stays internal stays internal too.
        let mut bss_internal = lean.clone();
        bss_internal.components.get_mut("libdatachannel").unwrap().static_placement = StaticPlacement::Internal;
        assert_eq!(project(&bss_internal, &census).internal_bytes, 2 * sem);
    }

    #[test]
    fn shared_ptr_mutex_policy_adds_a_mutex_per_control_block() {
        let mut lean = policy("lean");
        let mut b = block("libdatachannel", 32, 1, 0);
        b.shared_ptr_control = true;
        let census = Census { blocks: vec![b], ..Default::default() };
        let atomic = project(&lean, &census);
        lean.cxx.shared_ptr_lock_policy = SharedPtrLockPolicy::Mutex;
        let mutex = project(&lean, &census);
        assert_eq!(
            mutex.internal_bytes - atomic.internal_bytes,
            SHARED_PTR_MUTEX_HANDLE + tlsf_cost(PTHREAD_MUTEX) + tlsf_cost(FREERTOS_QUEUE)
        );
    }
}
