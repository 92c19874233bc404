//! Reads the recorder's trace (layouts from lab/recorder/lab_trace.h through bindgen).

use anyhow::{bail, Result};
use std::path::Path;

#[allow(non_camel_case_types, non_upper_case_globals, dead_code, clippy::all)]
pub mod ffi {
    include!(concat!(env!("OUT_DIR"), "/lab_trace.rs"));
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Alloc { addr: u32, size: u32, origin: u8, component: i8, caps: u32, frames: Vec<u32> },
    Free { addr: u32 },
    Phase { name: String },
    ThreadCreate { requested: u32, serial: u32, frames: Vec<u32> },
    ThreadEnd { high_water: u32, serial: u32 },
    Mutex { addr: u32, frames: Vec<u32> },
    Cond { addr: u32, frames: Vec<u32> },
    SyncDestroy { addr: u32 },
    Socket { fd: u32, domain: u32, kind: u32, frames: Vec<u32> },
    SocketClose { fd: u32 },
    Module { path: String, base: u32 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub thread: u32,
    pub time_ns: u64,
    pub event: Event,
}

#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub default_stack_bytes: u32,
    pub records: Vec<Record>,
    /// Events the recorder refused because its log was full.
    pub lost_events: u32,
    /// Events other threads had begun but not finished writing when the trace was taken.
    pub unpublished_events: u32,
    /// First uses of mutexes and condition variables the recorder's table had no room for.
    pub sync_untracked: u32,
}

impl Trace {
    /// Whether the trace holds every event of the run; the error says what was missed and what
    /// to do. A trace with gaps would give figures that look exact and are not.
    pub fn check_complete(&self) -> Result<()> {
        if self.lost_events > 0 {
            bail!(
                "the recorder's log was full: {} event(s) are missing, so every figure would be too low; \
                 the log holds LAB_LOG_BYTES bytes (default 1 GiB): raise it, or run fewer cycles or messages",
                self.lost_events
            );
        }
        if self.unpublished_events > 0 {
            bail!(
                "{} event(s) were still being written by other threads when the device took its trace \
                 (lab_finish), and are missing: the scenario must end the stack's threads (rtcCleanup) first",
                self.unpublished_events
            );
        }
        if self.sync_untracked > 0 {
            bail!(
                "{} first use(s) of a mutex or condition variable found no room in the recorder's table \
                 (over 900,000 alive at once): the sync objects are not counted exactly; enlarge seen_slots \
                 in lab/recorder/recorder.cpp",
                self.sync_untracked
            );
        }
        Ok(())
    }
}

fn pod<T: Copy + Default>(bytes: &[u8]) -> T {
    let mut value = T::default();
    let n = std::mem::size_of::<T>();
    // SAFETY: T is a bindgen plain-old-data struct and `bytes` holds at least n bytes.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), &mut value as *mut T as *mut u8, n) };
    value
}

/// Reads a trace and refuses one with gaps (`Trace::check_complete`).
pub fn read(path: &Path) -> Result<Trace> {
    let bytes = std::fs::read(path)?;
    parse(&bytes).and_then(|t| t.check_complete().map(|_| t)).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The trace as written, gaps included (their counts in `lost_events` and the like).
pub fn parse(bytes: &[u8]) -> Result<Trace> {
    let header_len = std::mem::size_of::<ffi::lab_trace_header>();
    let event_len = std::mem::size_of::<ffi::lab_event>();
    if bytes.len() < header_len {
        bail!("not a lab trace (too short)");
    }
    let header: ffi::lab_trace_header = pod(bytes);
    if header.magic == 0x4c41_4231 {
        bail!(
            "written by an older recorder (LAB1, no completeness counts): run the lab again, it rebuilds the recorder"
        );
    }
    if header.magic != ffi::LAB_TRACE_MAGIC {
        bail!("not a lab trace (bad magic)");
    }
    if header.pointer_bytes != 4 {
        bail!("the trace comes from a {}-bit process; the lab replica is 32-bit", header.pointer_bytes * 8);
    }
    let mut trace = Trace {
        default_stack_bytes: header.default_stack_bytes,
        records: Vec::new(),
        lost_events: header.lost_events,
        unpublished_events: header.unpublished_events,
        sync_untracked: header.sync_untracked,
    };
    let mut at = header_len;
    let words = |from: usize, n: usize| -> Vec<u32> {
        (0..n).map(|i| u32::from_le_bytes(bytes[from + 4 * i..from + 4 * i + 4].try_into().unwrap())).collect()
    };
    while at + event_len <= bytes.len() {
        let e: ffi::lab_event = pod(&bytes[at..]);
        let body = at + event_len;
        let extra = match e.kind as u32 {
            ffi::lab_event_kind_LAB_EV_PHASE | ffi::lab_event_kind_LAB_EV_MODULE => (e.a as usize + 3) & !3,
            _ => e.frames as usize * 4,
        };
        if body + extra > bytes.len() {
            bail!("trace truncated inside an event at byte {at}");
        }
        let frames = || words(body, e.frames as usize);
        let text = || String::from_utf8_lossy(&bytes[body..body + e.a as usize]).into_owned();
        let event = match e.kind as u32 {
            ffi::lab_event_kind_LAB_EV_ALLOC => Event::Alloc {
                addr: e.a,
                size: e.b,
                origin: e.origin,
                component: e.component,
                caps: e.caps,
                frames: frames(),
            },
            ffi::lab_event_kind_LAB_EV_FREE => Event::Free { addr: e.a },
            ffi::lab_event_kind_LAB_EV_PHASE => Event::Phase { name: text() },
            ffi::lab_event_kind_LAB_EV_THREAD_CREATE => {
                Event::ThreadCreate { requested: e.a, serial: e.b, frames: frames() }
            }
            ffi::lab_event_kind_LAB_EV_THREAD_END => Event::ThreadEnd { high_water: e.a, serial: e.b },
            ffi::lab_event_kind_LAB_EV_MUTEX => Event::Mutex { addr: e.a, frames: frames() },
            ffi::lab_event_kind_LAB_EV_COND => Event::Cond { addr: e.a, frames: frames() },
            ffi::lab_event_kind_LAB_EV_SYNC_DESTROY => Event::SyncDestroy { addr: e.a },
            ffi::lab_event_kind_LAB_EV_SOCKET => {
                Event::Socket { fd: e.a, domain: e.b >> 16, kind: e.b & 0xffff, frames: frames() }
            }
            ffi::lab_event_kind_LAB_EV_SOCKET_CLOSE => Event::SocketClose { fd: e.a },
            ffi::lab_event_kind_LAB_EV_MODULE => Event::Module { path: text(), base: e.b },
            other => bail!("unknown event kind {other} at byte {at}"),
        };
        trace.records.push(Record {
            thread: e.thread,
            time_ns: (u64::from(e.time_hi) << 32) | u64::from(e.time_lo),
            event,
        });
        at = body + extra;
    }
    Ok(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_32_bit_writer() {
        assert_eq!(std::mem::size_of::<ffi::lab_event>(), 32);
        assert_eq!(std::mem::size_of::<ffi::lab_trace_header>(), 32);
    }

    #[test]
    fn refuses_foreign_files() {
        assert!(parse(b"hello").is_err());
        assert!(parse(&[0u8; 64]).unwrap_err().to_string().contains("bad magic"));
    }
}
