//! The lossy link of `cargo xtask interop` and `cargo xtask lab` (`--loss P --jitter-ms J`): an
//! in-process UDP relay on 127.0.0.1 between the device and the remote that drops, delays and so
//! reorders packets. Both commands only hand it their signaling lines, so it lives beside them.
//!
//! In-process rather than `tc netem`: netem needs root and a network namespace per case (the
//! browsers and aiortc would have to run inside it), while every peer here is on loopback and
//! learns the other's address only from the signaling the runner already relays. So the runner
//! rewrites each candidate's address to a relay socket, and every packet between the peers then
//! crosses the relay, where it is counted, dropped or held back. ICE, DTLS and SCTP see the
//! impairment like any other packet: nothing is exempt.
//!
//!   remote  <->  [device face, one socket]  relay  [one socket per remote address]  <->  device
//!
//! The device face stands for the device (its candidate's port is replaced by the face's); every
//! remote address (a candidate, or an address the remote's checks come from, as with Chromium's
//! peer-reflexive one) gets a socket of its own that stands for it towards the device, so the
//! device sees one address per remote address, as without the relay.
//!
//! What the relay can read without keys: the first byte tells RTP/RTCP from STUN and DTLS, and
//! SRTP leaves the RTP header in the clear. A second packet from the device with the same SSRC
//! and sequence number is a retransmission: libdatachannel's `RtcpNackResponder` resends the
//! stored packet as it was (no RTX stream), so duplicates count the NACK responder's answers.

use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How the link misbehaves: each packet is dropped with `loss_percent`, and the others are held
/// back `delay_ms` plus a uniform 0..=`jitter_ms`, so packets closer together than the jitter
/// arrive out of order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Impairment {
    pub loss_percent: f64,
    pub jitter_ms: u32,
    pub delay_ms: u32,
}

/// What crossed the relay, per direction; field names are part of the `--json` interface.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkStats {
    pub device_to_remote_packets: u64,
    pub device_to_remote_dropped: u64,
    pub remote_to_device_packets: u64,
    pub remote_to_device_dropped: u64,
    /// RTP packets of the device's video (SSRC 42) seen, first copies only.
    pub video_rtp_packets: u64,
    pub video_rtp_dropped: u64,
    /// RTP packets the device sent again with a sequence number already seen: NACK answers.
    pub video_rtp_retransmitted: u64,
    /// RTCP packets from the remote whose first header is a generic NACK (RTPFB, FMT 1); a NACK
    /// later in a compound packet is encrypted and not counted, so this is a lower bound.
    pub nack_packets_seen: u64,
    /// Packets that held back longer than the one sent after them (reordered on the way).
    pub reordered: u64,
    /// How late the relay itself sent its latest packet past the time the impairment gave it:
    /// a busy relay must not pass for the link's delay.
    pub max_send_late_ms: u64,
    /// Milliseconds since the relay started at which it last read a packet from each side (a
    /// side that falls silent shows here).
    pub last_from_device_ms: u64,
    pub last_from_remote_ms: u64,
    /// Milliseconds since the relay started, when these stats were taken.
    pub taken_at_ms: u64,
}

/// The device's video SSRC (lab/driver/media.cpp, add_h264_sender).
const VIDEO_SSRC: u32 = 42;

struct Pending {
    due: Instant,
    order: u64,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    // BinaryHeap pops the greatest: the earliest due, then the first scheduled.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

#[derive(Default)]
struct Counters {
    d2r: AtomicU64,
    d2r_dropped: AtomicU64,
    r2d: AtomicU64,
    r2d_dropped: AtomicU64,
    rtp: AtomicU64,
    rtp_dropped: AtomicU64,
    rtp_retransmitted: AtomicU64,
    nacks: AtomicU64,
    reordered: AtomicU64,
    max_late_us: AtomicU64,
    last_from_device_ms: AtomicU64,
    last_from_remote_ms: AtomicU64,
}

struct Shared {
    impairment: Impairment,
    started: Instant,
    stop: AtomicBool,
    device_face: Arc<UdpSocket>,
    /// The device's real address, from its candidate.
    device: Mutex<Option<SocketAddr>>,
    /// Remote address -> the socket that stands for it towards the device.
    remote_faces: Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>,
    queue: Mutex<(BinaryHeap<Pending>, u64)>,
    wake: Condvar,
    rng: Mutex<u64>,
    seen_video: Mutex<HashSet<u16>>,
    counters: Counters,
}

/// Stops its threads when dropped.
pub struct Relay {
    shared: Arc<Shared>,
    pub seed: u64,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
    }
}

fn bind() -> Result<Arc<UdpSocket>> {
    let socket = UdpSocket::bind("127.0.0.1:0").context("binding a relay socket on 127.0.0.1")?;
    // Readers wake up now and then to see `stop`.
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(Arc::new(socket))
}

impl Relay {
    /// A relay with `impairment`; `seed` makes the drops and delays repeatable (0: from the clock).
    pub fn start(impairment: Impairment, seed: u64) -> Result<Relay> {
        let seed = if seed == 0 {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
                | 1
        } else {
            seed
        };
        let shared = Arc::new(Shared {
            impairment,
            started: Instant::now(),
            stop: AtomicBool::new(false),
            device_face: bind()?,
            device: Mutex::new(None),
            remote_faces: Mutex::new(HashMap::new()),
            queue: Mutex::new((BinaryHeap::new(), 0)),
            wake: Condvar::new(),
            rng: Mutex::new(seed),
            seen_video: Mutex::new(HashSet::new()),
            counters: Counters::default(),
        });
        let sender = shared.clone();
        std::thread::spawn(move || sender.send_when_due());
        let reader = shared.clone();
        std::thread::spawn(move || reader.read_remote_side());
        Ok(Relay { shared, seed })
    }

    pub fn impairment(&self) -> Impairment {
        self.shared.impairment
    }

    pub fn stats(&self) -> LinkStats {
        let c = &self.shared.counters;
        let n = |a: &AtomicU64| a.load(Ordering::SeqCst);
        LinkStats {
            device_to_remote_packets: n(&c.d2r),
            device_to_remote_dropped: n(&c.d2r_dropped),
            remote_to_device_packets: n(&c.r2d),
            remote_to_device_dropped: n(&c.r2d_dropped),
            video_rtp_packets: n(&c.rtp),
            video_rtp_dropped: n(&c.rtp_dropped),
            video_rtp_retransmitted: n(&c.rtp_retransmitted),
            nack_packets_seen: n(&c.nacks),
            reordered: n(&c.reordered),
            max_send_late_ms: n(&c.max_late_us) / 1000,
            last_from_device_ms: n(&c.last_from_device_ms),
            last_from_remote_ms: n(&c.last_from_remote_ms),
            taken_at_ms: self.shared.started.elapsed().as_millis() as u64,
        }
    }

    /// A signaling line from the device with its UDP candidates pointing at the device face.
    pub fn line_from_device(&self, line: &str) -> String {
        let face = self.shared.device_face.local_addr().map(|a| a.port()).unwrap_or(0);
        rewrite_candidates(line, |addr| {
            *self.shared.device.lock().unwrap() = Some(addr);
            Some(face)
        })
    }

    /// A signaling line from the remote with each UDP candidate pointing at the socket that
    /// stands for that remote address towards the device.
    pub fn line_from_remote(&self, line: &str) -> String {
        rewrite_candidates(line, |addr| {
            self.shared.remote_face(addr).ok().and_then(|s| s.local_addr().ok()).map(|a| a.port())
        })
    }
}

impl Shared {
    fn remote_face(self: &Arc<Self>, remote: SocketAddr) -> Result<Arc<UdpSocket>> {
        let mut faces = self.remote_faces.lock().unwrap();
        if let Some(face) = faces.get(&remote) {
            return Ok(face.clone());
        }
        let face = bind()?;
        faces.insert(remote, face.clone());
        let (shared, reader) = (self.clone(), face.clone());
        std::thread::spawn(move || shared.read_device_side(reader, remote));
        Ok(face)
    }

    fn random(&self) -> u64 {
        // xorshift64*: repeatable from the seed, no dependency.
        let mut x = self.rng.lock().unwrap();
        *x ^= *x >> 12;
        *x ^= *x << 25;
        *x ^= *x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Drops the packet or queues it for later; true when dropped.
    fn impair(&self, socket: Arc<UdpSocket>, to: SocketAddr, bytes: Vec<u8>) -> bool {
        let i = self.impairment;
        if (self.random() % 1_000_000) as f64 / 10_000.0 < i.loss_percent {
            return true;
        }
        let jitter_us = u64::from(i.jitter_ms) * 1000;
        let extra = if jitter_us > 0 { self.random() % (jitter_us + 1) } else { 0 };
        let due = Instant::now() + Duration::from_millis(u64::from(i.delay_ms)) + Duration::from_micros(extra);
        let mut queue = self.queue.lock().unwrap();
        // Something already queued leaves after this one: this one overtakes it.
        if queue.0.iter().any(|p| p.due > due && p.to == to) {
            self.counters.reordered.fetch_add(1, Ordering::SeqCst);
        }
        queue.1 += 1;
        let order = queue.1;
        queue.0.push(Pending { due, order, socket, to, bytes });
        self.wake.notify_all();
        false
    }

    fn send_when_due(&self) {
        let mut queue = self.queue.lock().unwrap();
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            match queue.0.peek().map(|p| p.due) {
                Some(due) if due <= now => {
                    let p = queue.0.pop().unwrap();
                    drop(queue);
                    let late = now.duration_since(p.due).as_micros() as u64;
                    self.counters.max_late_us.fetch_max(late, Ordering::SeqCst);
                    let _ = p.socket.send_to(&p.bytes, p.to);
                    queue = self.queue.lock().unwrap();
                }
                Some(due) => queue = self.wake.wait_timeout(queue, due - now).unwrap().0,
                None => queue = self.wake.wait_timeout(queue, Duration::from_millis(200)).unwrap().0,
            }
        }
    }

    /// Packets the remote sends to the device face go to the device from the remote's own face.
    fn read_remote_side(self: Arc<Self>) {
        let mut buf = vec![0u8; 65536];
        while !self.stop.load(Ordering::SeqCst) {
            let Ok((n, from)) = self.device_face.recv_from(&mut buf) else { continue };
            let Some(device) = *self.device.lock().unwrap() else { continue };
            let Ok(face) = self.remote_face(from) else { continue };
            let bytes = buf[..n].to_vec();
            self.counters.r2d.fetch_add(1, Ordering::SeqCst);
            self.counters.last_from_remote_ms.store(self.started.elapsed().as_millis() as u64, Ordering::SeqCst);
            if is_generic_nack(&bytes) {
                self.counters.nacks.fetch_add(1, Ordering::SeqCst);
            }
            if self.impair(face, device, bytes) {
                self.counters.r2d_dropped.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Packets the device sends to a remote's face go to that remote from the device face.
    fn read_device_side(self: Arc<Self>, face: Arc<UdpSocket>, remote: SocketAddr) {
        let mut buf = vec![0u8; 65536];
        while !self.stop.load(Ordering::SeqCst) {
            let Ok((n, _)) = face.recv_from(&mut buf) else { continue };
            let bytes = buf[..n].to_vec();
            self.counters.d2r.fetch_add(1, Ordering::SeqCst);
            self.counters.last_from_device_ms.store(self.started.elapsed().as_millis() as u64, Ordering::SeqCst);
            let video_seq = video_rtp_sequence(&bytes);
            if let Some(seq) = video_seq {
                if self.seen_video.lock().unwrap().insert(seq) {
                    self.counters.rtp.fetch_add(1, Ordering::SeqCst);
                } else {
                    self.counters.rtp_retransmitted.fetch_add(1, Ordering::SeqCst);
                }
            }
            if self.impair(self.device_face.clone(), remote, bytes) {
                self.counters.d2r_dropped.fetch_add(1, Ordering::SeqCst);
                if video_seq.is_some() {
                    self.counters.rtp_dropped.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }
}

/// RTP or RTCP: version 2 in the first byte (RFC 7983: 128..=191); RTCP when the second byte is
/// an RTCP packet type (192..=223, RFC 5761).
fn video_rtp_sequence(p: &[u8]) -> Option<u16> {
    if p.len() < 12 || !(128..=191).contains(&p[0]) || (192..=223).contains(&p[1]) {
        return None;
    }
    let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
    (ssrc == VIDEO_SSRC).then(|| u16::from_be_bytes([p[2], p[3]]))
}

/// An RTCP packet whose first header is RTPFB (205) with FMT 1, generic NACK (RFC 4585).
fn is_generic_nack(p: &[u8]) -> bool {
    p.len() >= 12 && (128..=191).contains(&p[0]) && p[0] & 0x1f == 1 && p[1] == 205
}

/// Rewrites the port of every UDP candidate in a signaling line (a description with its CR LF
/// escaped, or a trickled `SIG 0 candidate <mid> <candidate>`): `port_for` gets the candidate's
/// address and returns the relay port to put there (its address becomes 127.0.0.1), or None to
/// leave it. The m= line's port is the default candidate's: it follows its candidate.
pub fn rewrite_candidates(line: &str, mut port_for: impl FnMut(SocketAddr) -> Option<u16>) -> String {
    let mut moved: HashMap<String, String> = HashMap::new();
    let mut parts: Vec<String> = line.split("\\r\\n").map(str::to_string).collect();
    for part in parts.iter_mut() {
        let Some(at) = part.find("candidate:") else { continue };
        let words: Vec<&str> = part[at..].split(' ').collect();
        if words.len() < 8 || !words[2].eq_ignore_ascii_case("udp") {
            continue;
        }
        let Ok(addr) = format!("{}:{}", words[4], words[5]).parse::<SocketAddr>() else { continue };
        let Some(port) = port_for(addr) else { continue };
        moved.insert(words[5].to_string(), port.to_string());
        let mut rewritten: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        rewritten[4] = "127.0.0.1".into();
        rewritten[5] = port.to_string();
        *part = format!("{}{}", &part[..at], rewritten.join(" "));
    }
    for part in parts.iter_mut().filter(|p| p.starts_with("m=")) {
        let mut words: Vec<String> = part.split(' ').map(str::to_string).collect();
        if let Some(port) = words.get(1).and_then(|p| moved.get(p)) {
            words[1] = port.clone();
            *part = words.join(" ");
        }
    }
    parts.join("\\r\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_in_descriptions_and_trickle_lines_are_rewritten() {
        let sdp = "SIG 0 offer v=0\\r\\nm=application 50000 UDP/DTLS/SCTP webrtc-datachannel\\r\\na=candidate:1 1 UDP 2122317823 127.0.0.1 50000 typ host\\r\\na=candidate:2 1 TCP 2122317823 127.0.0.1 9 typ host tcptype active\\r\\n";
        let mut seen = Vec::new();
        let out = rewrite_candidates(sdp, |a| {
            seen.push(a);
            Some(40000)
        });
        assert_eq!(seen, vec!["127.0.0.1:50000".parse::<SocketAddr>().unwrap()]);
        assert!(out.contains("m=application 40000 UDP"), "{out}");
        assert!(out.contains("a=candidate:1 1 UDP 2122317823 127.0.0.1 40000 typ host"), "{out}");
        assert!(out.contains("127.0.0.1 9 typ host tcptype active"), "{out}");
        let trickled = rewrite_candidates("SIG 0 candidate 0 candidate:3 1 udp 1 10.1.2.3 5555 typ host", |_| Some(7));
        assert_eq!(trickled, "SIG 0 candidate 0 candidate:3 1 udp 1 127.0.0.1 7 typ host");
    }

    #[test]
    fn rtp_of_the_device_video_and_nacks_are_recognised() {
        let mut rtp = vec![0x80, 96, 0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 42];
        assert_eq!(video_rtp_sequence(&rtp), Some(0x1234));
        rtp[11] = 43;
        assert_eq!(video_rtp_sequence(&rtp), None, "another SSRC");
        let nack = [0x81, 205, 0, 3, 0, 0, 0, 1, 0, 0, 0, 42];
        assert!(is_generic_nack(&nack));
        assert_eq!(video_rtp_sequence(&nack), None, "RTCP is not RTP");
        assert!(!is_generic_nack(&[0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0]), "DTLS");
    }

    /// Two sockets talk through the relay at 50% loss: about half arrives, none twice, and the
    /// counts add up. Real packets, real sockets.
    #[test]
    fn the_relay_forwards_both_ways_and_drops_what_it_says() {
        let relay = Relay::start(Impairment { loss_percent: 50.0, jitter_ms: 5, delay_ms: 0 }, 7).unwrap();
        let device = UdpSocket::bind("127.0.0.1:0").unwrap();
        let remote = UdpSocket::bind("127.0.0.1:0").unwrap();
        device.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        remote.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let cand =
            |s: &UdpSocket| format!("a=candidate:1 1 UDP 1 127.0.0.1 {} typ host", s.local_addr().unwrap().port());
        let port_in = |line: String| line.split(' ').nth(5).unwrap().parse::<u16>().unwrap();
        let device_face = port_in(relay.line_from_device(&cand(&device)));
        let remote_face = port_in(relay.line_from_remote(&cand(&remote)));
        for i in 0..200u8 {
            remote.send_to(&[i], ("127.0.0.1", device_face)).unwrap();
            device.send_to(&[i], ("127.0.0.1", remote_face)).unwrap();
        }
        let drain = |s: &UdpSocket| {
            let mut got = HashSet::new();
            let mut buf = [0u8; 16];
            while let Ok((n, _)) = s.recv_from(&mut buf) {
                assert!(got.insert(buf[..n].to_vec()), "a packet arrived twice");
            }
            got.len() as u64
        };
        let (at_device, at_remote) = (drain(&device), drain(&remote));
        let stats = relay.stats();
        assert_eq!(stats.remote_to_device_packets, 200);
        assert_eq!(stats.device_to_remote_packets, 200);
        assert_eq!(at_device, 200 - stats.remote_to_device_dropped, "{stats:?}");
        assert_eq!(at_remote, 200 - stats.device_to_remote_dropped, "{stats:?}");
        assert!((60..=140).contains(&stats.remote_to_device_dropped), "{stats:?}");
    }

    /// 10,240 packets of 1200 B each way through 30 ms of jitter and no loss, about what a long
    /// data-channel run sends: every one comes out, so a stall seen there is not the relay's. Sent
    /// in windows of 64 that must arrive before the next, so no socket buffer overflows on a busy
    /// machine (the relay would be blamed for the kernel's drop).
    #[test]
    fn a_long_jittery_stream_arrives_whole_both_ways() {
        let relay = Relay::start(Impairment { loss_percent: 0.0, jitter_ms: 30, delay_ms: 0 }, 7).unwrap();
        let device = UdpSocket::bind("127.0.0.1:0").unwrap();
        let remote = UdpSocket::bind("127.0.0.1:0").unwrap();
        let cand =
            |s: &UdpSocket| format!("a=candidate:1 1 UDP 1 127.0.0.1 {} typ host", s.local_addr().unwrap().port());
        let port_in = |line: String| line.split(' ').nth(5).unwrap().parse::<u16>().unwrap();
        let device_face = port_in(relay.line_from_device(&cand(&device)));
        let remote_face = port_in(relay.line_from_remote(&cand(&remote)));
        let counter = |s: UdpSocket| {
            let got = Arc::new(AtomicU64::new(0));
            let seen = got.clone();
            s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let mut idle = 0;
                while idle < 50 {
                    match s.recv_from(&mut buf) {
                        Ok(_) => {
                            seen.fetch_add(1, Ordering::SeqCst);
                            idle = 0;
                        }
                        Err(_) => idle += 1,
                    }
                }
            });
            got
        };
        let at_device = counter(device.try_clone().unwrap());
        let at_remote = counter(remote.try_clone().unwrap());
        let body = [7u8; 1200];
        let (windows, window) = (160u64, 64u64);
        for w in 1..=windows {
            for _ in 0..window {
                remote.send_to(&body, ("127.0.0.1", device_face)).unwrap();
                device.send_to(&body, ("127.0.0.1", remote_face)).unwrap();
            }
            let until = Instant::now() + Duration::from_secs(5);
            while at_device.load(Ordering::SeqCst).min(at_remote.load(Ordering::SeqCst)) < w * window {
                assert!(
                    Instant::now() < until,
                    "window {w}: {} at the device, {} at the remote of {}; {:?}",
                    at_device.load(Ordering::SeqCst),
                    at_remote.load(Ordering::SeqCst),
                    w * window,
                    relay.stats()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let stats = relay.stats();
        assert_eq!((stats.remote_to_device_packets, stats.device_to_remote_packets), (10240, 10240), "{stats:?}");
        assert!(stats.reordered > 0, "{stats:?}");
    }
}
