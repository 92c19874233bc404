// Lab scenario driver: one process per peer, driving libdatachannel through its C API (rtc.h).
// Built -m32 so pointers and struct sizes match the MCU. The "device" role is the measured one
// (the recorder is preloaded into it); the "remote" role is the unmeasured other peer.
//
// Signaling and sequencing are plain text lines on stdin/stdout, relayed between the two
// processes by `cargo xtask lab`:
//   SIG <conn> <offer|answer> <sdp with CR/LF escaped as \r \n>
//   CTL <word> [<conn>]
// Everything human-readable goes to stderr.
//
// Phases are marked with lab_phase(), looked up with dlsym so the driver runs without recorder.

#include <rtc/rtc.h>

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

void phase(const char *name) {
	using PhaseFn = void (*)(const char *);
	static PhaseFn fn = reinterpret_cast<PhaseFn>(dlsym(RTLD_DEFAULT, "lab_phase"));
	if (fn)
		fn(name);
	std::fprintf(stderr, "[phase] %s\n", name);
}

long env_long(const char *name, long fallback);

// The quiet check must not make the trace grow that it watches: opendir and fopen allocate, and
// the recorder logs every close() (it tracks sockets), so these use the system calls directly.
void raw_close(int fd) { syscall(SYS_close, fd); }

// Names in a /proc directory through getdents64, calling `each(name)`.
template <class F> void each_entry(const char *dir, F each) {
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	alignas(8) char buf[4096];
	while (true) {
		long n = syscall(SYS_getdents64, fd, buf, sizeof buf);
		if (n <= 0)
			break;
		for (long at = 0; at < n;) {
			auto *d = reinterpret_cast<dirent64 *>(buf + at);
			if (d->d_name[0] != '.')
				each(d->d_name);
			at += d->d_reclen;
		}
	}
	raw_close(fd);
}

// True when no thread but the caller is running or waiting for a CPU (state R in
// /proc/self/task/*/stat): a starved thread that has work left is not a quiet stack.
bool others_parked() {
	char self[24];
	std::snprintf(self, sizeof self, "%ld", long(syscall(SYS_gettid)));
	bool parked = true;
	each_entry("/proc/self/task", [&](const char *tid) {
		if (std::strcmp(tid, self) == 0)
			return;
		char path[64], stat[512];
		std::snprintf(path, sizeof path, "/proc/self/task/%s/stat", tid);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return; // the thread ended meanwhile
		ssize_t n = read(fd, stat, sizeof stat - 1);
		raw_close(fd);
		stat[n > 0 ? n : 0] = 0;
		const char *close_paren = std::strrchr(stat, ')'); // the name may hold spaces and parentheses
		if (close_paren && close_paren[1] == ' ' && close_paren[2] == 'R')
			parked = false;
	});
	return parked;
}

int open_fds() {
	int fds = 0;
	each_entry("/proc/self/fd", [&](const char *) { ++fds; });
	return fds - 1; // the one each_entry held
}

// What the process holds: heap bytes in use (every glibc arena, mmapped blocks included) and its
// thread count. The recorder keeps its own books in mmap'd memory, so this is the stack's and the
// driver's heap alone. mallinfo2 takes the arena locks but allocates nothing.
struct Holding {
	size_t heap = 0;
	int threads = 0;
	bool operator!=(const Holding &o) const { return heap != o.heap || threads != o.threads; }
};
Holding holding() {
	struct mallinfo2 m = mallinfo2();
	Holding h;
	h.heap = m.uordblks + m.hblkhd;
	each_entry("/proc/self/task", [&](const char *) { ++h.threads; });
	return h;
}

// Marks a phase at a quiet point: for LAB_QUIET_MS what the process holds has not changed and
// every other thread is parked. Queues, timers and teardown threads (rtcCreatePeerConnection's
// certificate on the thread pool, usrsctp's association teardown, rtcCleanup's detached
// "RTC cleanup" thread) have then done what they will do, so the figure does not move with load:
// a busy machine makes the wait longer, not the figure different. Balanced churn does not count:
// the SCTP timer tick on the thread pool allocates and frees a std::function a hundred times a
// second and holds nothing across ticks.
void quiet_phase(const char *name) {
	const auto window = std::chrono::milliseconds(env_long("LAB_QUIET_MS", 250));
	const auto start = std::chrono::steady_clock::now();
	Holding last = holding();
	unsigned long changed = 0, busy = 0;
	auto since = start;
	while (true) {
		std::this_thread::sleep_for(10ms);
		auto now = std::chrono::steady_clock::now();
		Holding now_holding = holding();
		bool parked = others_parked();
		changed += now_holding != last;
		busy += !parked;
		if (now_holding != last || !parked) {
			last = now_holding;
			since = now;
		} else if (now - since >= window) {
			break;
		}
		if (now - start > 20s) {
			std::fprintf(stderr,
			             "[quiet] %s: the stack did not go quiet in 20 s (holding changed in %lu polls, a thread "
			             "ran in %lu); marked anyway\n",
			             name, changed, busy);
			break;
		}
	}
	auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
	phase(name);
	// Open descriptors at each quiet mark: a soak checks they stay flat.
	std::fprintf(stderr, "[quiet] %s after %lld ms, %d fds\n", name, (long long)waited.count(), open_fds());
}

long env_long(const char *name, long fallback) {
	const char *v = std::getenv(name);
	return v && *v ? std::strtol(v, nullptr, 10) : fallback;
}

[[noreturn]] void die(const std::string &why) {
	std::fprintf(stderr, "scenario: %s\n", why.c_str());
	std::fflush(stderr);
	std::_Exit(3);
}

// ---- line I/O with the relay ----

std::mutex out_mutex;
void send_line(const std::string &line) {
	std::lock_guard<std::mutex> lock(out_mutex);
	std::fwrite(line.data(), 1, line.size(), stdout);
	std::fputc('\n', stdout);
	std::fflush(stdout);
}

std::string escape(const std::string &sdp) {
	std::string out;
	for (char c : sdp) {
		if (c == '\r')
			out += "\\r";
		else if (c == '\n')
			out += "\\n";
		else
			out += c;
	}
	return out;
}

std::string unescape(const std::string &s) {
	std::string out;
	for (size_t i = 0; i < s.size(); ++i) {
		if (s[i] == '\\' && i + 1 < s.size()) {
			out += s[i + 1] == 'r' ? '\r' : '\n';
			++i;
		} else {
			out += s[i];
		}
	}
	return out;
}

struct Inbox {
	std::mutex mutex;
	std::condition_variable cv;
	std::deque<std::string> lines;
	bool closed = false;

	void reader() {
		std::string line;
		while (std::getline(std::cin, line)) {
			std::lock_guard<std::mutex> lock(mutex);
			lines.push_back(line);
			cv.notify_all();
		}
		std::lock_guard<std::mutex> lock(mutex);
		closed = true;
		cv.notify_all();
	}

	// Next line starting with `prefix` (others are kept for later waits).
	std::string take(const std::string &prefix, std::chrono::seconds timeout = 60s) {
		std::unique_lock<std::mutex> lock(mutex);
		auto deadline = std::chrono::steady_clock::now() + timeout;
		while (true) {
			for (auto it = lines.begin(); it != lines.end(); ++it) {
				if (it->compare(0, prefix.size(), prefix) == 0) {
					std::string line = *it;
					lines.erase(it);
					return line;
				}
			}
			if (closed)
				die("peer went away while waiting for `" + prefix + "`");
			if (cv.wait_until(lock, deadline) == std::cv_status::timeout)
				die("timed out waiting for `" + prefix + "`");
		}
	}

	// Like take, but false after `timeout` or once the peer went away: for lines that may never
	// come (trickled ICE candidates).
	bool poll(const std::string &prefix, std::chrono::milliseconds timeout, std::string &out) {
		std::unique_lock<std::mutex> lock(mutex);
		auto deadline = std::chrono::steady_clock::now() + timeout;
		while (true) {
			for (auto it = lines.begin(); it != lines.end(); ++it) {
				if (it->compare(0, prefix.size(), prefix) == 0) {
					out = *it;
					lines.erase(it);
					return true;
				}
			}
			if (closed || cv.wait_until(lock, deadline) == std::cv_status::timeout)
				return false;
		}
	}
};
Inbox inbox;

// ---- connections ----

struct Conn {
	int index = 0;
	int pc = -1;
	int dc = -1;
	int tr = -1;
	std::mutex mutex;
	std::condition_variable cv;
	bool gathered = false;
	bool connected = false;
	bool failed = false;
	bool channel_open = false;
	bool track_open = false;
	long echoes = 0;          // remote: messages echoed back and verified
	long long media_bytes = 0; // remote: RTP bytes received
	std::string last_echo;

	template <class Pred> void wait(Pred pred, const char *what, std::chrono::seconds timeout = 30s) {
		std::unique_lock<std::mutex> lock(mutex);
		if (!cv.wait_for(lock, timeout, [&] { return pred() || failed; }))
			die(std::string("timed out waiting for ") + what);
		if (failed && !pred())
			die(std::string("connection failed while waiting for ") + what);
	}
	void notify() { cv.notify_all(); }
};

std::map<int, std::unique_ptr<Conn>> conns;
std::mutex conns_mutex;
bool is_device = false;
bool camera_scenario = false; // the remote checks telemetry instead of echoes

Conn *conn_of(int id) { return static_cast<Conn *>(rtcGetUserPointer(id)); }

void on_state(int pc, rtcState state, void *) {
	Conn *c = conn_of(pc);
	std::lock_guard<std::mutex> lock(c->mutex);
	if (state == RTC_CONNECTED)
		c->connected = true;
	if (state == RTC_FAILED)
		c->failed = true;
	c->notify();
}

void on_gathering(int pc, rtcGatheringState state, void *) {
	Conn *c = conn_of(pc);
	std::lock_guard<std::mutex> lock(c->mutex);
	if (state == RTC_GATHERING_COMPLETE)
		c->gathered = true;
	c->notify();
}

void on_channel_open(int dc, void *) {
	Conn *c = conn_of(dc);
	std::lock_guard<std::mutex> lock(c->mutex);
	c->channel_open = true;
	c->notify();
}

void on_track_open(int tr, void *) {
	Conn *c = conn_of(tr);
	std::lock_guard<std::mutex> lock(c->mutex);
	c->track_open = true;
	c->notify();
}

// Device: echo every message back unchanged.
void on_device_message(int dc, const char *data, int size, void *) {
	if (rtcSendMessage(dc, data, size) < 0)
		std::fprintf(stderr, "echo of %d bytes failed\n", size);
}

// Remote: remember the echo so the sender can verify it.
void on_remote_message(int dc, const char *data, int size, void *) {
	Conn *c = conn_of(dc);
	std::lock_guard<std::mutex> lock(c->mutex);
	c->last_echo.assign(data, size < 0 ? std::strlen(data) : size_t(size));
	++c->echoes;
	c->notify();
}

// ---- remote: a browser's receiver for the device's video (SSRC 42) ----
//
// On loopback nothing is lost; across the lab's lossy relay (`cargo xtask lab --loss`) the remote
// does what a browser does: it asks for each missing packet with a generic NACK (RFC 4585) once
// the packet is overdue by more than the link's jitter (LAB_NACK_DELAY_MS), again every 100 ms
// until it comes or 1 s has passed, so the device's RtcpNackResponder answers from its store.
// It reports the frames that arrived, the frames that arrived whole, the longest wait between
// two frames and the packets a retransmission recovered.
struct VideoReceiver {
	using Clock = std::chrono::steady_clock;
	struct Missing {
		Clock::time_point since, last_nack;
		int nacks = 0;
	};
	struct Packet {
		uint32_t timestamp;
		bool marker;
	};
	std::mutex mutex;
	int track = -1;
	bool started = false;
	int64_t highest = 0;                // extended sequence number
	std::map<int64_t, Packet> packets;  // every packet received, by extended sequence number
	std::map<int64_t, Missing> missing; // gaps not yet filled nor given up
	uint32_t last_timestamp = 0;
	Clock::time_point last_frame_at;
	long frames = 0, longest_gap_ms = 0, nack_packets = 0, nacked = 0, recovered = 0, given_up = 0;
	std::atomic<bool> stop{false};
	std::thread nacker;

	void on_rtp(int tr, const uint8_t *p, int size) {
		if (size < 12 || ((p[1] & 0x7f) >= 64 && (p[1] & 0x7f) < 96)) // RTCP (RFC 5761)
			return;
		if ((uint32_t(p[8]) << 24 | uint32_t(p[9]) << 16 | uint32_t(p[10]) << 8 | p[11]) != 42)
			return;
		uint16_t seq = uint16_t(p[2] << 8 | p[3]);
		uint32_t ts = uint32_t(p[4]) << 24 | uint32_t(p[5]) << 16 | uint32_t(p[6]) << 8 | p[7];
		auto now = Clock::now();
		std::lock_guard<std::mutex> lock(mutex);
		track = tr;
		int64_t ext = started ? highest + int16_t(uint16_t(seq - uint16_t(highest))) : seq;
		if (!started) {
			started = true;
			highest = ext;
			last_timestamp = ts;
			last_frame_at = now;
			frames = 1;
		} else if (int32_t(ts - last_timestamp) > 0) {
			longest_gap_ms = std::max<long>(
			    longest_gap_ms, long(std::chrono::duration_cast<std::chrono::milliseconds>(now - last_frame_at).count()));
			last_timestamp = ts;
			last_frame_at = now;
			++frames;
		}
		packets.emplace(ext, Packet{ts, (p[1] & 0x80) != 0});
		// Filled after a NACK asked for it: recovered. Filled before: it was only reordered.
		if (auto gap = missing.find(ext); gap != missing.end()) {
			recovered += gap->second.nacks > 0;
			missing.erase(gap);
		}
		for (int64_t k = highest + 1; k < ext; ++k)
			missing.emplace(k, Missing{now, {}, 0});
		highest = std::max(highest, ext);
	}

	// One generic NACK (RTPFB, FMT 1) for the missing packets that are due, as PID + BLP pairs.
	void nack_due(std::chrono::milliseconds delay) {
		std::vector<uint16_t> due;
		int tr;
		{
			std::lock_guard<std::mutex> lock(mutex);
			auto now = Clock::now();
			for (auto it = missing.begin(); it != missing.end();) {
				Missing &m = it->second;
				if (now - m.since > 1s) {
					++given_up;
					it = missing.erase(it);
					continue;
				}
				if (now - m.since >= delay && (m.nacks == 0 || now - m.last_nack >= 100ms)) {
					due.push_back(uint16_t(it->first));
					m.last_nack = now;
					++m.nacks;
					++nacked;
				}
				++it;
			}
			tr = track;
			if (!due.empty())
				++nack_packets;
		}
		if (due.empty())
			return;
		std::vector<uint8_t> fci;
		for (size_t i = 0; i < due.size();) {
			uint16_t pid = due[i++], blp = 0;
			while (i < due.size() && uint16_t(due[i] - pid) <= 16)
				blp |= uint16_t(1u << (uint16_t(due[i++] - pid) - 1));
			for (uint16_t v : {pid, blp}) {
				fci.push_back(uint8_t(v >> 8));
				fci.push_back(uint8_t(v));
			}
		}
		std::vector<uint8_t> rtcp = {0x81, 205, 0, uint8_t(2 + fci.size() / 4), 0, 0, 0, 1, 0, 0, 0, 42};
		rtcp.insert(rtcp.end(), fci.begin(), fci.end());
		if (rtcSendMessage(tr, reinterpret_cast<const char *>(rtcp.data()), int(rtcp.size())) < 0)
			std::fprintf(stderr, "sending a NACK failed\n");
	}

	void start() {
		auto delay = std::chrono::milliseconds(env_long("LAB_NACK_DELAY_MS", 50));
		nacker = std::thread([this, delay] {
			while (!stop) {
				std::this_thread::sleep_for(10ms);
				nack_due(delay);
			}
		});
	}

	// Frames whose every packet, from the one after the previous frame's last to its own marked
	// last, arrived (retransmissions included).
	long whole_frames() {
		long whole = 0;
		int64_t after = INT64_MIN;
		for (auto &[ext, packet] : packets) {
			if (!packet.marker)
				continue;
			if (after != INT64_MIN) {
				bool all = true;
				for (int64_t k = after + 1; k <= ext && all; ++k)
					all = packets.count(k) != 0;
				whole += all;
			}
			after = ext;
		}
		return whole + (after != INT64_MIN); // the first frame has no predecessor to start from
	}

	// `RESULT` words: frames arrived and whole, the longest wait for a next frame, NACKs sent.
	std::string result() {
		stop = true;
		if (nacker.joinable())
			nacker.join();
		std::lock_guard<std::mutex> lock(mutex);
		return "frames_received=" + std::to_string(frames) + " frames_whole=" + std::to_string(whole_frames()) +
		       " longest_frame_gap_ms=" + std::to_string(longest_gap_ms) + " rtp_received=" +
		       std::to_string(packets.size()) + " nack_packets=" + std::to_string(nack_packets) +
		       " nacked=" + std::to_string(nacked) + " recovered=" + std::to_string(recovered) +
		       " unrecovered=" + std::to_string(given_up + long(missing.size()));
	}
};
VideoReceiver video_receiver;

void on_remote_media(int tr, const char *data, int size, void *) {
	Conn *c = conn_of(tr);
	video_receiver.on_rtp(tr, reinterpret_cast<const uint8_t *>(data), size);
	std::lock_guard<std::mutex> lock(c->mutex);
	c->media_bytes += size;
}

// Telemetry the camera sends on its data channel every 100 ms: "<n> " then filler to 200 bytes.
std::string telemetry(long n) {
	std::string m = std::to_string(n) + " ";
	m.resize(200, char('a' + n % 26));
	return m;
}

// Remote: each telemetry message must be the next one, whole (SCTP ordered, reliable).
void on_camera_telemetry(int dc, const char *data, int size, void *) {
	Conn *c = conn_of(dc);
	std::lock_guard<std::mutex> lock(c->mutex);
	std::string got(data, size < 0 ? std::strlen(data) : size_t(size));
	if (got != telemetry(c->echoes))
		c->last_echo = "message " + std::to_string(c->echoes) + " out of order or damaged";
	++c->echoes;
	c->notify();
}

void on_data_channel(int pc, int dc, void *) {
	Conn *c = conn_of(pc);
	rtcSetUserPointer(dc, c);
	{
		std::lock_guard<std::mutex> lock(c->mutex);
		c->dc = dc;
	}
	rtcSetMessageCallback(dc, is_device ? on_device_message : camera_scenario ? on_camera_telemetry : on_remote_message);
	rtcSetOpenCallback(dc, on_channel_open);
}

void on_track(int pc, int tr, void *) {
	Conn *c = conn_of(pc);
	rtcSetUserPointer(tr, c);
	{
		std::lock_guard<std::mutex> lock(c->mutex);
		c->tr = tr;
	}
	rtcSetMessageCallback(tr, on_remote_media);
	rtcSetOpenCallback(tr, on_track_open);
}

Conn *new_conn(int index) {
	rtcConfiguration config;
	std::memset(&config, 0, sizeof(config));
	config.bindAddress = "127.0.0.1";
	config.maxMessageSize = int(env_long("LAB_MAX_MESSAGE_BYTES", 0));
	// The camera creates its channel before its tracks: with auto-negotiation the channel alone
	// would be offered at once and the tracks need a second round.
	config.disableAutoNegotiation = camera_scenario && is_device;
	auto conn = std::make_unique<Conn>();
	conn->index = index;
	conn->pc = rtcCreatePeerConnection(&config);
	if (conn->pc < 0)
		die("rtcCreatePeerConnection failed");
	rtcSetUserPointer(conn->pc, conn.get());
	rtcSetStateChangeCallback(conn->pc, on_state);
	rtcSetGatheringStateChangeCallback(conn->pc, on_gathering);
	rtcSetDataChannelCallback(conn->pc, on_data_channel);
	rtcSetTrackCallback(conn->pc, on_track);
	Conn *raw = conn.get();
	std::lock_guard<std::mutex> lock(conns_mutex);
	conns[index] = std::move(conn);
	return raw;
}

void delete_conn(int index) {
	std::unique_ptr<Conn> conn;
	{
		std::lock_guard<std::mutex> lock(conns_mutex);
		conn = std::move(conns[index]);
		conns.erase(index);
	}
	if (conn->dc >= 0)
		rtcDeleteDataChannel(conn->dc);
	if (conn->tr >= 0)
		rtcDeleteTrack(conn->tr);
	rtcDeletePeerConnection(conn->pc);
}

std::string local_description(Conn *c) {
	c->wait([&] { return c->gathered; }, "ICE gathering");
	std::vector<char> buffer(16384);
	if (rtcGetLocalDescription(c->pc, buffer.data(), int(buffer.size())) < 0)
		die("rtcGetLocalDescription failed");
	return buffer.data();
}

// The remote stands for a browser, and browsers offer a=setup:actpass (RFC 5763). Our build
// offers a=setup:active (policy libdatachannel.dtls_client_when_offering), which would make the
// device the DTLS server when it answers; as actpass the device answers active and is the DTLS
// client, as it is with every browser. Only the text changes: the remote's ICE transport keeps
// ActPass until the answer and takes the server role from the device's active, as upstream does.
// LAB_REMOTE_OFFERS_ACTIVE=1 keeps our build's active offer: the device answers as DTLS server,
// as it would to another device with the same policy (the pairing that found
// patches/esp-idf/libdatachannel/dtls-server-idle-timer.patch).
std::string offer_as_a_browser_would(std::string sdp) {
	for (size_t at; (at = sdp.find("a=setup:active\r\n")) != std::string::npos;)
		sdp.replace(at, std::strlen("a=setup:active"), "a=setup:actpass");
	return sdp;
}

void send_description(Conn *c, const char *type) {
	std::string sdp = local_description(c);
	if (!is_device && std::strcmp(type, "offer") == 0 && !env_long("LAB_REMOTE_OFFERS_ACTIVE", 0))
		sdp = offer_as_a_browser_would(std::move(sdp));
	send_line("SIG " + std::to_string(c->index) + " " + type + " " + escape(sdp));
}

// Reads `SIG <index> <type> <sdp>` for this connection index.
std::string take_description(int index, const char *type) {
	std::string line = inbox.take("SIG " + std::to_string(index) + " " + type + " ");
	return unescape(line.substr(line.find(type) + std::strlen(type) + 1));
}

// ---- data channel messages (remote side) ----

// Deterministic mixed sizes from 1 byte to 64 KB: mostly small, some large, a few at the limit.
size_t message_size(long i) {
	static const size_t sizes[] = {1, 17, 100, 512, 1200, 4096, 16384, 65536, 333, 9000};
	uint32_t x = uint32_t(i) * 2654435761u;
	return sizes[i % 10] + (sizes[i % 10] >= 65536 ? 0 : x % 7);
}

std::string message_body(long i) {
	std::string body(message_size(i), '\0');
	for (size_t k = 0; k < body.size(); ++k)
		body[k] = char('a' + (i + long(k)) % 26);
	return body;
}

// Sends `count` messages one at a time and checks each echo. Returns bytes sent.
long long exchange(Conn *c, long count) {
	long long bytes = 0;
	for (long i = 0; i < count; ++i) {
		std::string body = message_body(i);
		long before;
		{
			std::lock_guard<std::mutex> lock(c->mutex);
			before = c->echoes;
		}
		if (rtcSendMessage(c->dc, body.data(), int(body.size())) < 0)
			die("rtcSendMessage failed at message " + std::to_string(i));
		std::string what = "the echo of message " + std::to_string(i) + " (" + std::to_string(body.size()) + " B)";
		c->wait([&] { return c->echoes > before; }, what.c_str());
		std::lock_guard<std::mutex> lock(c->mutex);
		if (c->last_echo != body)
			die("echo " + std::to_string(i) + " differs (" + std::to_string(c->last_echo.size()) +
			    " bytes back for " + std::to_string(body.size()) + ")");
		bytes += (long long)body.size();
	}
	return bytes;
}

// ---- one connection, both roles ----

// Remote offers a data channel; the device answers. Returns when the channel is open.
Conn *remote_connect_channel(int index) {
	Conn *c = new_conn(index);
	int dc = rtcCreateDataChannel(c->pc, "echo");
	rtcSetUserPointer(dc, c);
	c->dc = dc;
	rtcSetMessageCallback(dc, on_remote_message);
	rtcSetOpenCallback(dc, on_channel_open);
	send_description(c, "offer");
	rtcSetRemoteDescription(c->pc, take_description(index, "answer").c_str(), "answer");
	c->wait([&] { return c->channel_open; }, "the data channel to open");
	// The device marks its quiet points before any message flows.
	inbox.take("CTL ready " + std::to_string(index));
	return c;
}

// The device answers the remote's data-channel offer. `connected` (or `<prefix>connected`) is
// marked at the first quiet point after the connection: ICE, DTLS, the SCTP association and the
// channel are up and idle, since the remote waits for `CTL ready` before it sends. With
// `open_phase` that mark follows too, then the remote is let go.
Conn *device_answer_channel(int index, const char *phase_prefix, bool first, const char *open_phase = nullptr) {
	std::string offer = take_description(index, "offer");
	Conn *c = new_conn(index);
	if (first)
		quiet_phase("pc-created");
	rtcSetRemoteDescription(c->pc, offer.c_str(), "offer");
	send_description(c, "answer");
	if (first)
		phase("gathered");
	c->wait([&] { return c->connected; }, "the connection");
	c->wait([&] { return c->channel_open; }, "the data channel");
	if (phase_prefix)
		quiet_phase((std::string(phase_prefix) + "connected").c_str());
	else if (first)
		quiet_phase("connected");
	if (open_phase)
		quiet_phase(open_phase);
	send_line("CTL ready " + std::to_string(index));
	return c;
}

void apply_runtime_knobs() {
	// LAB_RTC_LOG_LEVEL=6 (verbose) when a scenario needs debugging; warnings otherwise. To
	// stderr: stdout carries the signaling.
	rtcInitLogger(rtcLogLevel(env_long("LAB_RTC_LOG_LEVEL", RTC_LOG_WARNING)),
	              [](rtcLogLevel, const char *message) { std::fprintf(stderr, "rtc: %s\n", message); });
	rtcSctpSettings s;
	std::memset(&s, 0, sizeof(s));
	s.recvBufferSize = int(env_long("LAB_SCTP_RECV_BUFFER_BYTES", 0));
	s.sendBufferSize = int(env_long("LAB_SCTP_SEND_BUFFER_BYTES", 0));
	s.maxChunksOnQueue = int(env_long("LAB_SCTP_MAX_CHUNKS_ON_QUEUE", 0));
	rtcSetSctpSettings(&s);
}

// ---- scenarios ----

void datachannel(long messages) {
	if (is_device) {
		device_answer_channel(0, nullptr, true, "channel-open");
		inbox.take("CTL done");
		delete_conn(0);
		quiet_phase("closed");
		send_line("CTL closed");
	} else {
		Conn *c = remote_connect_channel(0);
		long long bytes = exchange(c, messages);
		std::fprintf(stderr, "RESULT datachannel messages=%ld bytes=%lld\n", messages, bytes);
		send_line("CTL done");
		inbox.take("CTL closed");
		delete_conn(0);
	}
}

// Synthetic H.264 access units with long start codes: an IDR (with SPS and PPS) every second,
// P slices between; payload bytes are never 0 so no start code is emulated. ~1 Mbit/s at 30 fps.
std::string h264_frame(long n, long fps) {
	auto nal = [](std::string &out, uint8_t header, size_t size, long seed) {
		out.append("\x00\x00\x00\x01", 4);
		out.push_back(char(header));
		for (size_t k = 0; k < size; ++k)
			out.push_back(char(1 + (seed * 31 + long(k)) % 255));
	};
	std::string frame;
	if (n % fps == 0) {
		nal(frame, 0x67, 12, n); // SPS
		nal(frame, 0x68, 4, n);  // PPS
		nal(frame, 0x65, 12000, n);
	} else {
		nal(frame, 0x41, 3900, n);
	}
	return frame;
}

// The device's H.264 sender: a sendonly track (SSRC 42) on `payload_type` and `mid` with the
// packetizer, SR reporter and NACK responder chained, as an ESP32 camera would set it up. An
// empty `fmtp` keeps libdatachannel's default profile (constrained baseline, packetization-mode 1).
int add_h264_sender(Conn *c, int payload_type, const char *mid, const std::string &fmtp) {
	rtcTrackInit init;
	std::memset(&init, 0, sizeof(init));
	init.direction = RTC_DIRECTION_SENDONLY;
	init.codec = RTC_CODEC_H264;
	init.payloadType = payload_type;
	init.ssrc = 42;
	init.mid = mid;
	init.name = "video";
	init.msid = "stream";
	init.trackId = "video";
	init.profile = fmtp.empty() ? nullptr : fmtp.c_str(); // nullptr: upstream's default profile
	int tr = rtcAddTrackEx(c->pc, &init);
	if (tr < 0)
		die("rtcAddTrackEx failed");
	rtcSetUserPointer(tr, c);
	rtcPacketizerInit pkt;
	std::memset(&pkt, 0, sizeof(pkt));
	pkt.ssrc = 42;
	pkt.cname = "video";
	pkt.payloadType = uint8_t(payload_type);
	pkt.clockRate = 90000;
	pkt.nalSeparator = RTC_NAL_SEPARATOR_LONG_START_SEQUENCE;
	rtcSetH264Packetizer(tr, &pkt);
	rtcChainRtcpSrReporter(tr);
	rtcChainRtcpNackResponder(tr, unsigned(env_long("LAB_NACK_MAX_PACKETS", 512)));
	return tr;
}

// The remote side of a device-offered video: answers, counts RTP bytes until the device's
// `CTL done` (waiting at most `timeout_seconds`), reports them and closes with the device.
void remote_receive_video(const char *scenario, long timeout_seconds) {
	std::string offer = take_description(0, "offer");
	Conn *c = new_conn(0);
	video_receiver.start();
	rtcSetRemoteDescription(c->pc, offer.c_str(), "offer");
	send_description(c, "answer");
	inbox.take("CTL done", std::chrono::seconds(timeout_seconds));
	std::this_thread::sleep_for(300ms); // the last packets are still in flight
	long long bytes;
	{
		std::lock_guard<std::mutex> lock(c->mutex);
		bytes = c->media_bytes;
	}
	std::fprintf(stderr, "RESULT %s received_bytes=%lld %s\n", scenario, bytes, video_receiver.result().c_str());
	send_line("CTL counted");
	inbox.take("CTL closed");
	delete_conn(0);
	if (bytes == 0)
		die("the remote received no media");
}

void video(long seconds) {
	const long fps = 30;
	if (is_device) {
		Conn *c = new_conn(0);
		quiet_phase("pc-created");
		c->tr = add_h264_sender(c, 96, "video", "");
		rtcSetOpenCallback(c->tr, on_track_open);
		rtcSetLocalDescription(c->pc, "offer");
		send_description(c, "offer");
		phase("gathered");
		rtcSetRemoteDescription(c->pc, take_description(0, "answer").c_str(), "answer");
		c->wait([&] { return c->connected; }, "the connection");
		c->wait([&] { return c->track_open; }, "the track");
		quiet_phase("connected");
		auto start = std::chrono::steady_clock::now();
		long long sent = 0;
		for (long n = 0; n < seconds * fps; ++n) {
			std::this_thread::sleep_until(start + n * 1000ms / fps);
			if (n == 2 * fps)
				phase("streaming");
			uint32_t ts = 0;
			rtcTransformSecondsToTimestamp(c->tr, double(n) / fps, &ts);
			rtcSetTrackRtpTimestamp(c->tr, ts);
			std::string frame = h264_frame(n, fps);
			if (rtcSendMessage(c->tr, frame.data(), int(frame.size())) < 0)
				die("sending frame " + std::to_string(n) + " failed");
			sent += (long long)frame.size();
		}
		std::fprintf(stderr, "RESULT video frames=%ld bytes=%lld\n", seconds * fps, sent);
		send_line("CTL done");
		inbox.take("CTL counted");
		delete_conn(0);
		quiet_phase("closed");
		send_line("CTL closed");
	} else {
		remote_receive_video("video", seconds + 60);
	}
}

// ---- camera: what the user's streamer does ----

// An Opus sender as a camera sets one up: sendonly, SSRC 43, 48 kHz, with SR reporter.
int add_opus_sender(Conn *c) {
	rtcTrackInit init;
	std::memset(&init, 0, sizeof(init));
	init.direction = RTC_DIRECTION_SENDONLY;
	init.codec = RTC_CODEC_OPUS;
	init.payloadType = 111;
	init.ssrc = 43;
	init.mid = "audio";
	init.name = "audio";
	init.msid = "stream";
	init.trackId = "audio";
	int tr = rtcAddTrackEx(c->pc, &init);
	if (tr < 0)
		die("rtcAddTrackEx (opus) failed");
	rtcSetUserPointer(tr, c);
	rtcPacketizerInit pkt;
	std::memset(&pkt, 0, sizeof(pkt));
	pkt.ssrc = 43;
	pkt.cname = "video"; // one CNAME per endpoint: the stream's tracks are synchronised
	pkt.payloadType = 111;
	pkt.clockRate = 48000;
	rtcSetOpusPacketizer(tr, &pkt);
	rtcChainRtcpSrReporter(tr);
	return tr;
}

// The device offers H.264 (1 Mbit/s, 30 fps) + Opus (20 ms frames, ~64 kbit/s) + a data channel
// carrying telemetry, like a streaming camera; the remote answers and checks what arrives.
void camera(long seconds) {
	const long fps = 30;
	if (is_device) {
		Conn *c = new_conn(0);
		quiet_phase("pc-created");
		c->dc = rtcCreateDataChannel(c->pc, "telemetry");
		rtcSetUserPointer(c->dc, c);
		rtcSetOpenCallback(c->dc, on_channel_open);
		c->tr = add_h264_sender(c, 96, "video", "");
		rtcSetOpenCallback(c->tr, on_track_open);
		int audio = add_opus_sender(c);
		rtcSetLocalDescription(c->pc, "offer");
		send_description(c, "offer");
		phase("gathered");
		rtcSetRemoteDescription(c->pc, take_description(0, "answer").c_str(), "answer");
		c->wait([&] { return c->connected; }, "the connection");
		c->wait([&] { return c->track_open; }, "the video track to open");
		c->wait([&] { return c->channel_open; }, "the telemetry channel to open");
		quiet_phase("connected");
		auto start = std::chrono::steady_clock::now();
		long long video_bytes = 0;
		long audio_frames = 0, messages = 0;
		const auto end = start + std::chrono::seconds(seconds);
		long video_n = 0;
		bool streaming = false;
		std::string opus(160, '\x55'); // 20 ms at 64 kbit/s
		for (auto next = start; next < end; next += 20ms) {
			std::this_thread::sleep_until(next);
			auto since = next - start;
			if (!streaming && since >= 2s) {
				phase("streaming");
				streaming = true;
			}
			// Audio every 20 ms; video when its 33.3 ms slot has come; telemetry every 100 ms.
			uint32_t ts = 0;
			rtcTransformSecondsToTimestamp(audio, double(audio_frames) * 0.02, &ts);
			rtcSetTrackRtpTimestamp(audio, ts);
			if (rtcSendMessage(audio, opus.data(), int(opus.size())) < 0)
				die("sending audio frame " + std::to_string(audio_frames) + " failed");
			++audio_frames;
			while (video_n * 1000ms / fps <= since) {
				rtcTransformSecondsToTimestamp(c->tr, double(video_n) / fps, &ts);
				rtcSetTrackRtpTimestamp(c->tr, ts);
				std::string frame = h264_frame(video_n, fps);
				if (rtcSendMessage(c->tr, frame.data(), int(frame.size())) < 0)
					die("sending frame " + std::to_string(video_n) + " failed");
				video_bytes += (long long)frame.size();
				++video_n;
			}
			if (audio_frames % 5 == 0) {
				std::string m = telemetry(messages++);
				if (rtcSendMessage(c->dc, m.data(), int(m.size())) < 0)
					die("sending telemetry " + std::to_string(messages - 1) + " failed");
			}
		}
		std::fprintf(stderr, "RESULT camera video_frames=%ld video_bytes=%lld audio_frames=%ld messages=%ld\n",
		             video_n, video_bytes, audio_frames, messages);
		send_line("CTL done " + std::to_string(messages));
		inbox.take("CTL counted");
		rtcDeleteTrack(audio);
		delete_conn(0);
		quiet_phase("closed");
		send_line("CTL closed");
	} else {
		std::string offer = take_description(0, "offer");
		Conn *c = new_conn(0);
		video_receiver.start();
		rtcSetRemoteDescription(c->pc, offer.c_str(), "offer");
		send_description(c, "answer");
		std::string done = inbox.take("CTL done ", std::chrono::seconds(seconds + 60));
		long sent = std::strtol(done.c_str() + 9, nullptr, 10);
		c->wait([&] { return c->echoes >= sent; }, "the last telemetry message");
		std::this_thread::sleep_for(300ms); // the last RTP packets are still in flight
		long long bytes;
		long received;
		std::string damage;
		{
			std::lock_guard<std::mutex> lock(c->mutex);
			bytes = c->media_bytes;
			received = c->echoes;
			damage = c->last_echo;
		}
		std::fprintf(stderr, "RESULT camera received_bytes=%lld messages_received=%ld %s\n", bytes, received,
		             video_receiver.result().c_str());
		send_line("CTL counted");
		inbox.take("CTL closed");
		delete_conn(0);
		if (bytes == 0)
			die("the remote received no media");
		if (!damage.empty())
			die("telemetry: " + damage);
		if (received != sent)
			die("telemetry: " + std::to_string(received) + " messages arrived of " + std::to_string(sent));
	}
}

void cycle(long cycles, long messages) {
	for (long n = 1; n <= cycles; ++n) {
		std::string prefix = "cycle-" + std::to_string(n) + "-";
		if (is_device) {
			device_answer_channel(int(n), prefix.c_str(), n == 1);
			inbox.take("CTL done");
			delete_conn(int(n));
			quiet_phase((prefix + "closed").c_str());
			send_line("CTL closed");
		} else {
			Conn *c = remote_connect_channel(int(n));
			exchange(c, messages);
			send_line("CTL done");
			inbox.take("CTL closed");
			delete_conn(int(n));
		}
	}
	if (!is_device)
		std::fprintf(stderr, "RESULT cycle cycles=%ld\n", cycles);
}

void scale(long max_connections) {
	for (long n = 1; n <= max_connections; ++n) {
		bool mark = (n & (n - 1)) == 0; // 1, 2, 4
		if (is_device) {
			device_answer_channel(int(n), nullptr, n == 1);
			inbox.take("CTL echoed " + std::to_string(n));
			if (mark)
				quiet_phase(("scale-" + std::to_string(n) + "-connected").c_str());
			send_line("CTL marked " + std::to_string(n));
		} else {
			Conn *c = remote_connect_channel(int(n));
			exchange(c, 3);
			send_line("CTL echoed " + std::to_string(n));
			inbox.take("CTL marked " + std::to_string(n));
		}
	}
	if (is_device) {
		inbox.take("CTL done");
		for (long n = 1; n <= max_connections; ++n)
			delete_conn(int(n));
		quiet_phase("closed");
		send_line("CTL closed");
	} else {
		send_line("CTL done");
		inbox.take("CTL closed");
		for (long n = 1; n <= max_connections; ++n)
			delete_conn(int(n));
		std::fprintf(stderr, "RESULT scale connections=%ld\n", max_connections);
	}
}

// ---- interop: the device against an independent WebRTC peer (Chromium, aiortc) ----
//
// The remote is not this driver but anything that speaks the same SIG/CTL lines. Whoever offers
// creates an ordered and an unordered channel; the device echoes every message on both, so data
// flows both ways and the remote verifies it. The device sends H.264 on one video m-line until
// the remote says `CTL done`. LAB_INTEROP_OFFER=device|remote picks the offerer; the answerer's
// a=setup decides the DTLS role, so the two directions exercise both roles.

struct InteropState {
	std::mutex mutex;
	std::vector<int> channels;
	std::atomic<long> echoed{0};
};
InteropState interop_state;

void on_interop_message(int dc, const char *data, int size, void *) {
	if (rtcSendMessage(dc, data, size) < 0)
		std::fprintf(stderr, "echo of %d bytes failed\n", size);
	else
		++interop_state.echoed;
}

void watch_interop_channel(Conn *c, int dc) {
	rtcSetUserPointer(dc, c);
	rtcSetMessageCallback(dc, on_interop_message);
	std::lock_guard<std::mutex> lock(interop_state.mutex);
	interop_state.channels.push_back(dc);
}

void on_interop_channel(int pc, int dc, void *) { watch_interop_channel(conn_of(pc), dc); }

// Annex-B access units from LAB_H264_FILE (a real clip a remote can decode), split where a new
// picture starts: at an AUD or SPS, or at a slice whose first_mb_in_slice is 0 (ue(v) 0 is a
// single 1 bit) after the current unit already holds a slice.
std::vector<std::string> h264_file_frames(const char *path) {
	FILE *f = std::fopen(path, "rb");
	if (!f)
		die(std::string("cannot read LAB_H264_FILE ") + path);
	std::string data;
	char buf[65536];
	size_t n;
	while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0)
		data.append(buf, n);
	std::fclose(f);
	std::vector<size_t> starts; // offset of each NAL's start code
	for (size_t i = 0; i + 3 < data.size(); ++i) {
		if (data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1) {
			starts.push_back(i > 0 && data[i - 1] == 0 ? i - 1 : i);
			i += 2;
		}
	}
	std::vector<std::string> frames;
	std::string current;
	bool has_slice = false;
	for (size_t k = 0; k < starts.size(); ++k) {
		size_t begin = starts[k], end = k + 1 < starts.size() ? starts[k + 1] : data.size();
		size_t header = data.find('\x01', begin) + 1;
		if (header >= end)
			continue;
		int type = data[header] & 0x1f;
		bool slice = type == 1 || type == 5;
		bool first_mb_zero = slice && header + 1 < end && (uint8_t(data[header + 1]) & 0x80);
		if (has_slice && (type == 9 || type == 7 || first_mb_zero)) {
			frames.push_back(current);
			current.clear();
			has_slice = false;
		}
		std::string nal = data.substr(begin, end - begin);
		if (nal.compare(0, 4, std::string("\x00\x00\x00\x01", 4)) != 0)
			nal.insert(0, 1, '\0'); // one separator for the packetizer: the long start code
		current += nal;
		has_slice = has_slice || slice;
	}
	if (has_slice)
		frames.push_back(current);
	if (frames.empty())
		die(std::string("no H.264 access units in ") + path);
	return frames;
}

std::string attribute(const std::string &sdp, const char *name) {
	size_t at = sdp.find(name);
	if (at == std::string::npos)
		return "";
	size_t end = sdp.find_first_of("\r\n", at);
	return sdp.substr(at + std::strlen(name), end - at - std::strlen(name));
}

// The offer's H.264 payload type a constrained-baseline encoder fits: packetization-mode=1 and a
// 42xxxx profile preferred, else the first H.264 one; -1 when the offer has no H.264 at all.
int offered_h264_payload_type(const std::string &sdp, std::string &mid, std::string &fmtp) {
	int best = -1, any = -1;
	bool in_video = false;
	size_t pos = 0;
	while (pos < sdp.size()) {
		size_t eol = sdp.find('\n', pos);
		std::string line = sdp.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos);
		pos = eol == std::string::npos ? sdp.size() : eol + 1;
		if (!line.empty() && line.back() == '\r')
			line.pop_back();
		if (line.compare(0, 2, "m=") == 0)
			in_video = line.compare(0, 8, "m=video ") == 0 && mid.empty();
		if (!in_video)
			continue;
		if (line.compare(0, 6, "a=mid:") == 0)
			mid = line.substr(6);
		int pt = -1;
		if (std::sscanf(line.c_str(), "a=rtpmap:%d H264/90000", &pt) == 1 && line.find("H264/90000") != std::string::npos && any < 0)
			any = pt;
		if (std::sscanf(line.c_str(), "a=fmtp:%d ", &pt) == 1 && best < 0 &&
		    line.find("packetization-mode=1") != std::string::npos && line.find("profile-level-id=42") != std::string::npos &&
		    sdp.find("a=rtpmap:" + std::to_string(pt) + " H264/90000") != std::string::npos)
			best = pt;
	}
	int pt = best >= 0 ? best : any;
	// The answer repeats the offer's parameters: a peer that finds none assumes packetization-mode 0.
	if (pt >= 0)
		fmtp = attribute(sdp, ("a=fmtp:" + std::to_string(pt) + " ").c_str());
	return pt;
}



// The offer with its m=application section first and its mid first in a=group:BUNDLE, which
// makes it the offerer's BUNDLE tag (RFC 8843). libdatachannel puts every track before the
// application in a first offer, whatever was created first, and has no setting for it; a remote
// that rejects the tagged m-line (port 0: a browser without H.264) drops the whole BUNDLE and no
// ICE runs at all, data channels included. An application that offers media and data channels
// must reorder like this before signaling (or offer data channels alone and add media later by
// renegotiation). libdatachannel matches the answer's m-lines by mid, so its own order differs
// harmlessly. Its candidates sit in one m-section (the first, the video's): they move to the
// application's too, or a browser that rejects video discards them with the video's transport.
std::string application_first(const std::string &sdp) {
	std::vector<std::string> sections(1); // [0] the session part, then one per m=
	std::string candidates;
	size_t pos = 0;
	while (pos < sdp.size()) {
		size_t eol = sdp.find("\r\n", pos);
		std::string line = sdp.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos);
		pos = eol == std::string::npos ? sdp.size() : eol + 2;
		if (line.compare(0, 2, "m=") == 0)
			sections.emplace_back();
		if (line.compare(0, 12, "a=candidate:") == 0 || line == "a=end-of-candidates")
			candidates += line + "\r\n";
		else if (!line.empty())
			sections.back() += line + "\r\n";
	}
	auto app = std::find_if(sections.begin() + 1, sections.end(),
	                        [](const std::string &m) { return m.compare(0, 14, "m=application ") == 0; });
	if (app == sections.end())
		return sdp;
	std::string mid = attribute(*app, "a=mid:");
	std::string moved = *app + candidates;
	sections.erase(app);
	sections.insert(sections.begin() + 1, moved);
	std::string &session = sections[0];
	size_t group = session.find("a=group:BUNDLE ");
	if (group != std::string::npos && !mid.empty()) {
		size_t end = session.find("\r\n", group);
		std::string mids = " " + session.substr(group + 15, end - group - 15) + " ";
		size_t at = mids.find(" " + mid + " ");
		if (at != std::string::npos)
			mids.erase(at, mid.size() + 1);
		session.replace(group, end - group, "a=group:BUNDLE " + mid + mids.substr(0, mids.size() - 1));
	}
	std::string out;
	for (const auto &section : sections)
		out += section;
	return out;
}

// True when the m-section with this mid is rejected (port 0) or inactive in `sdp`.
bool media_refused(const std::string &sdp, const std::string &mid) {
	size_t at = sdp.find("a=mid:" + mid + "\r\n");
	if (at == std::string::npos)
		return true;
	size_t start = sdp.rfind("\r\nm=", at);
	size_t next = sdp.find("\r\nm=", at);
	std::string section = sdp.substr(start + 2, next == std::string::npos ? std::string::npos : next - start - 2);
	size_t port = section.find(' ') + 1;
	return section.compare(port, 2, "0 ") == 0 || section.find("a=inactive\r\n") != std::string::npos;
}

// Trickle ICE (LAB_INTEROP_TRICKLE=1): the description goes out before gathering ends, then one
// `SIG 0 candidate <mid> <candidate>` line per local candidate, the mid being the BUNDLE tag of
// the description sent (a remote may reject the m-line libdatachannel puts first). Candidates
// gathered before the description went out wait for it.
struct Trickle {
	std::mutex mutex;
	bool described = false;
	std::string mid;
	std::vector<std::string> pending;
	std::atomic<long> sent{0}, received{0};
} trickle;

void send_trickled(const std::string &candidate) {
	send_line("SIG 0 candidate " + trickle.mid + " " + candidate);
	++trickle.sent;
}

void on_interop_candidate(int, const char *candidate, const char *, void *) {
	std::lock_guard<std::mutex> lock(trickle.mutex);
	if (trickle.described)
		send_trickled(candidate);
	else
		trickle.pending.push_back(candidate);
}

void send_interop_description(const std::string &sdp, const char *type) {
	std::lock_guard<std::mutex> lock(trickle.mutex);
	send_line(std::string("SIG 0 ") + type + " " + escape(sdp));
	std::string group = attribute(sdp, "a=group:BUNDLE ");
	trickle.mid = group.substr(0, group.find(' '));
	trickle.described = true;
	for (const auto &candidate : trickle.pending)
		send_trickled(candidate);
	trickle.pending.clear();
}

// The description as it stands (trickle) or once gathering completed (candidates inside).
std::string interop_local_description(Conn *c, bool trickled) {
	if (!trickled)
		return local_description(c);
	std::vector<char> buffer(16384);
	if (rtcGetLocalDescription(c->pc, buffer.data(), int(buffer.size())) < 0)
		die("rtcGetLocalDescription failed");
	return buffer.data();
}

void interop() {
	if (!is_device)
		die("interop has no remote role in this driver: the remote is Chromium or aiortc (cargo xtask interop)");
	std::string offerer = std::getenv("LAB_INTEROP_OFFER") ? std::getenv("LAB_INTEROP_OFFER") : "device";
	if (offerer != "device" && offerer != "remote")
		die("LAB_INTEROP_OFFER must be device or remote");
	std::vector<std::string> clip;
	if (const char *path = std::getenv("LAB_H264_FILE"); path && *path)
		clip = h264_file_frames(path);

	rtcConfiguration config;
	std::memset(&config, 0, sizeof(config));
	config.bindAddress = "127.0.0.1";
	config.maxMessageSize = int(env_long("LAB_MAX_MESSAGE_BYTES", 0));
	// Off so that the answer is made after the device put its H.264 sender on the offered m-line.
	config.disableAutoNegotiation = true;
	auto owned = std::make_unique<Conn>();
	Conn *c = owned.get();
	c->pc = rtcCreatePeerConnection(&config);
	if (c->pc < 0)
		die("rtcCreatePeerConnection failed");
	rtcSetUserPointer(c->pc, c);
	rtcSetStateChangeCallback(c->pc, on_state);
	rtcSetGatheringStateChangeCallback(c->pc, on_gathering);
	rtcSetDataChannelCallback(c->pc, on_interop_channel);
	const bool trickled = env_long("LAB_INTEROP_TRICKLE", 0) != 0;
	if (trickled)
		rtcSetLocalCandidateCallback(c->pc, on_interop_candidate);
	quiet_phase("pc-created");

	std::string answer;
	bool video_refused = false;
	if (offerer == "device") {
		watch_interop_channel(c, rtcCreateDataChannel(c->pc, "ordered"));
		rtcDataChannelInit unordered;
		std::memset(&unordered, 0, sizeof(unordered));
		unordered.reliability.unordered = true;
		watch_interop_channel(c, rtcCreateDataChannelEx(c->pc, "unordered", &unordered));
		if (env_long("LAB_INTEROP_VIDEO", 1))
			c->tr = add_h264_sender(c, 96, "video", "profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1");
		rtcSetLocalDescription(c->pc, "offer");
		std::string offer = interop_local_description(c, trickled);
		if (env_long("LAB_INTEROP_APP_FIRST", 1))
			offer = application_first(offer);
		// The stack offers a=setup:active (dtls_client_when_offering); actpass as upstream lets the
		// remote answer active, so the device is the DTLS server (cargo xtask interop
		// --device-dtls-server): mbedTLS's server path stays tested against aiortc. The stack's
		// own role is still undecided (actpass) until the answer, so the text is all that changes.
		if (env_long("LAB_INTEROP_DEVICE_DTLS_SERVER", 0)) {
			for (size_t at; (at = offer.find("a=setup:active")) != std::string::npos;)
				offer.replace(at, std::strlen("a=setup:active"), "a=setup:actpass");
		}
		send_interop_description(offer, "offer");
		phase("gathered");
		answer = take_description(0, "answer");
		rtcSetRemoteDescription(c->pc, answer.c_str(), "answer");
		if (c->tr >= 0 && media_refused(answer, "video")) {
			std::fprintf(stderr, "interop: the remote refused the video m-line; data channels only\n");
			video_refused = true;
		}
	} else {
		std::string offer = take_description(0, "offer");
		rtcSetRemoteDescription(c->pc, offer.c_str(), "offer");
		std::string mid, fmtp;
		int pt = offered_h264_payload_type(offer, mid, fmtp);
		if (pt >= 0)
			c->tr = add_h264_sender(c, pt, mid.c_str(), fmtp.empty() ? "packetization-mode=1" : fmtp);
		else
			std::fprintf(stderr, "interop: the offer has no H.264 video; no track sent\n");
		rtcSetLocalDescription(c->pc, "answer");
		answer = interop_local_description(c, trickled);
		send_interop_description(answer, "answer");
		phase("gathered");
	}
	// The remote's trickled candidates, applied as they come now that its description is set.
	std::atomic<bool> finished{false};
	std::thread remote_candidates([&] {
		std::string line;
		while (!finished) {
			if (!inbox.poll("SIG 0 candidate ", 100ms, line))
				continue;
			// SIG 0 candidate <mid> <candidate>; an empty candidate ends the remote's gathering.
			size_t mid_at = std::strlen("SIG 0 candidate ");
			size_t space = line.find(' ', mid_at);
			std::string mid = line.substr(mid_at, space == std::string::npos ? std::string::npos : space - mid_at);
			std::string candidate = space == std::string::npos ? "" : line.substr(space + 1);
			if (candidate.empty())
				continue;
			if (rtcAddRemoteCandidate(c->pc, candidate.c_str(), mid.c_str()) < 0)
				std::fprintf(stderr, "interop: remote candidate refused: %s\n", candidate.c_str());
			else
				++trickle.received;
		}
	});
	std::string setup = attribute(answer, "a=setup:");
	std::string role = offerer == "device" ? (setup == "active" ? "server" : "client") : (setup == "active" ? "client" : "server");
	std::fprintf(stderr, "RESULT interop offer=%s answer_setup=%s dtls_role=%s\n", offerer.c_str(), setup.c_str(), role.c_str());

	c->wait([&] { return c->connected; }, "the connection");
	phase("connected");
	auto deadline = std::chrono::steady_clock::now() + 30s;
	auto all_open = [&] {
		std::lock_guard<std::mutex> lock(interop_state.mutex);
		bool open = interop_state.channels.size() >= 2;
		for (int dc : interop_state.channels)
			open = open && rtcIsOpen(dc);
		return open && (c->tr < 0 || video_refused || rtcIsOpen(c->tr));
	};
	while (!all_open()) {
		if (std::chrono::steady_clock::now() > deadline)
			die("timed out waiting for both data channels and the track to open");
		std::this_thread::sleep_for(20ms);
	}
	phase("channel-open");
	send_line("CTL open");

	std::atomic<bool> stop{false};
	std::atomic<long> frames_sent{0};
	std::thread sender([&] {
		if (c->tr < 0 || video_refused)
			return;
		const long fps = 30;
		auto start = std::chrono::steady_clock::now();
		for (long n = 0; !stop; ++n) {
			std::this_thread::sleep_until(start + n * 1000ms / fps);
			uint32_t ts = 0;
			rtcTransformSecondsToTimestamp(c->tr, double(n) / fps, &ts);
			rtcSetTrackRtpTimestamp(c->tr, ts);
			std::string frame = clip.empty() ? h264_frame(n, fps) : clip[size_t(n) % clip.size()];
			if (rtcSendMessage(c->tr, frame.data(), int(frame.size())) < 0)
				std::fprintf(stderr, "sending frame %ld failed\n", n);
			else
				++frames_sent;
		}
	});
	inbox.take("CTL done", 120s);
	stop = true;
	sender.join();
	phase("streaming");
	std::fprintf(stderr, "RESULT interop echoed=%ld frames_sent=%ld video=%s candidates_sent=%ld candidates_received=%ld\n",
	             interop_state.echoed.load(), frames_sent.load(), c->tr < 0 ? "none" : video_refused ? "refused" : "sent",
	             trickle.sent.load(), trickle.received.load());
	{
		std::lock_guard<std::mutex> lock(interop_state.mutex);
		for (int dc : interop_state.channels)
			rtcDeleteDataChannel(dc);
		interop_state.channels.clear();
	}
	finished = true;
	remote_candidates.join();
	if (c->tr >= 0)
		rtcDeleteTrack(c->tr);
	rtcDeletePeerConnection(c->pc);
	phase("closed");
	send_line("CTL closed");
}

// ---- benchmark scenarios (`cargo xtask bench`, run without the recorder) ----

// Bulk transfer state of one side. Binary messages are payload; a string message is a control
// word ("done": the receiver has every byte), so both can share the one reliable channel.
struct Bulk {
	std::mutex mutex;
	std::condition_variable cv;
	long long received = 0;
	long long expected = 0;
	bool peer_done = false;
	bool corrupt = false;
	std::chrono::steady_clock::time_point first_byte, last_byte;
};
Bulk bulk;

void on_bulk_message(int dc, const char *data, int size, void *) {
	std::unique_lock<std::mutex> lock(bulk.mutex);
	if (size < 0) { // string: the peer's control word
		if (std::strcmp(data, "done") == 0)
			bulk.peer_done = true;
		bulk.cv.notify_all();
		return;
	}
	auto now = std::chrono::steady_clock::now();
	if (bulk.received == 0)
		bulk.first_byte = now;
	// Every chunk starts with its own sequence-derived byte: a reordered or damaged stream shows.
	if (size > 0 && uint8_t(data[0]) != uint8_t(bulk.received / size))
		bulk.corrupt = true;
	bulk.received += size;
	bulk.last_byte = now;
	if (bulk.expected > 0 && bulk.received >= bulk.expected) {
		bulk.cv.notify_all();
		lock.unlock();
		rtcSendMessage(dc, "done", -1);
		return;
	}
}

void on_buffered_low(int, void *) {
	std::lock_guard<std::mutex> lock(bulk.mutex);
	bulk.cv.notify_all();
}

// Sends `total` bytes in `chunk`-sized binary messages, keeping at most `window` bytes queued in
// libdatachannel (the same for every policy, so only the stack's own buffers differ), then waits
// for the receiver's "done". Returns seconds from the first send to the "done".
double send_bulk(Conn *c, long long total, int chunk, int window) {
	std::vector<char> buffer(size_t(chunk), 0);
	rtcSetBufferedAmountLowThreshold(c->dc, window / 2);
	rtcSetBufferedAmountLowCallback(c->dc, on_buffered_low);
	auto start = std::chrono::steady_clock::now();
	for (long long sent = 0, n = 0; sent < total; sent += chunk, ++n) {
		// Not under bulk.mutex: the low-water callback takes it from libdatachannel's thread.
		while (rtcGetBufferedAmount(c->dc) > window / 2) {
			std::unique_lock<std::mutex> lock(bulk.mutex);
			bulk.cv.wait_for(lock, 1ms);
		}
		buffer[0] = char(uint8_t(n));
		if (rtcSendMessage(c->dc, buffer.data(), chunk) < 0)
			die("bulk send failed at byte " + std::to_string(sent));
	}
	std::unique_lock<std::mutex> lock(bulk.mutex);
	if (!bulk.cv.wait_for(lock, 60s, [] { return bulk.peer_done; }))
		die("the receiver never confirmed the bulk transfer");
	bulk.peer_done = false;
	return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Waits until `total` bytes arrived; returns seconds from the first to the last byte.
double receive_bulk(long long total) {
	std::unique_lock<std::mutex> lock(bulk.mutex);
	if (!bulk.cv.wait_for(lock, 120s, [&] { return bulk.received >= total; }) && bulk.received < total)
		die("bulk receive stalled at " + std::to_string(bulk.received) + " of " + std::to_string(total) + " bytes");
	return std::chrono::duration<double>(bulk.last_byte - bulk.first_byte).count();
}

void reset_bulk(long long expected) {
	std::lock_guard<std::mutex> lock(bulk.mutex);
	bulk.received = 0;
	bulk.expected = expected;
	bulk.peer_done = false;
}

// Data-channel throughput both ways over one reliable ordered channel: device -> remote ("up"),
// then remote -> device ("down"). The sender reports the rate until the receiver's "done".
void throughput() {
	const long long total = env_long("LAB_BENCH_BYTES", 8 << 20);
	const int chunk = int(env_long("LAB_BENCH_CHUNK_BYTES", 16384));
	const int window = int(env_long("LAB_BENCH_WINDOW_BYTES", 256 << 10));
	if (is_device) {
		Conn *c = device_answer_channel(0, nullptr, true);
		rtcSetMessageCallback(c->dc, on_bulk_message);
		inbox.take("CTL ready");
		reset_bulk(0);
		double up = send_bulk(c, total, chunk, window);
		std::fprintf(stderr, "RESULT throughput direction=up bytes=%lld seconds=%.6f\n", total, up);
		reset_bulk(total);
		send_line("CTL down");
		receive_bulk(total);
		inbox.take("CTL done");
		bool corrupt;
		{
			std::lock_guard<std::mutex> lock(bulk.mutex);
			corrupt = bulk.corrupt;
		}
		if (corrupt)
			die("the bulk data from the remote arrived out of order or damaged");
		delete_conn(0);
		send_line("CTL closed");
	} else {
		Conn *c = remote_connect_channel(0);
		rtcSetMessageCallback(c->dc, on_bulk_message);
		reset_bulk(total);
		send_line("CTL ready");
		inbox.take("CTL down", std::chrono::seconds(180));
		{
			std::lock_guard<std::mutex> lock(bulk.mutex);
			if (bulk.received != total || bulk.corrupt)
				die("the bulk data from the device arrived incomplete or damaged");
		}
		reset_bulk(0);
		double down = send_bulk(c, total, chunk, window);
		std::fprintf(stderr, "RESULT throughput direction=down bytes=%lld seconds=%.6f\n", total, down);
		send_line("CTL done");
		inbox.take("CTL closed");
		delete_conn(0);
	}
}

// Video send rate: the device pushes `frames` H.264 access units through the same chain as
// `video` (packetizer, SR reporter, NACK responder, SRTP) as fast as it can; the remote counts
// what arrives. Loopback UDP drops what the receiver's socket cannot take, so the remote's count
// is a sanity check, the device's rate the measure.
void videorate() {
	const long frames = env_long("LAB_BENCH_FRAMES", 900);
	const long fps = 30;
	if (is_device) {
		Conn *c = new_conn(0);
		c->tr = add_h264_sender(c, 96, "video", "");
		rtcSetOpenCallback(c->tr, on_track_open);
		rtcSetLocalDescription(c->pc, "offer");
		send_description(c, "offer");
		rtcSetRemoteDescription(c->pc, take_description(0, "answer").c_str(), "answer");
		c->wait([&] { return c->track_open; }, "the track");
		std::vector<std::string> access_units;
		for (long n = 0; n < fps; ++n)
			access_units.push_back(h264_frame(n, fps));
		long long sent = 0;
		auto start = std::chrono::steady_clock::now();
		for (long n = 0; n < frames; ++n) {
			uint32_t ts = 0;
			rtcTransformSecondsToTimestamp(c->tr, double(n) / fps, &ts);
			rtcSetTrackRtpTimestamp(c->tr, ts);
			const std::string &frame = access_units[size_t(n % fps)];
			if (rtcSendMessage(c->tr, frame.data(), int(frame.size())) < 0)
				die("sending frame " + std::to_string(n) + " failed");
			sent += (long long)frame.size();
		}
		double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
		std::fprintf(stderr, "RESULT videorate frames=%ld bytes=%lld seconds=%.6f\n", frames, sent, seconds);
		send_line("CTL done");
		inbox.take("CTL counted");
		delete_conn(0);
		send_line("CTL closed");
	} else {
		remote_receive_video("videorate", 180);
	}
}

} // namespace

int main(int argc, char **argv) {
	if (argc < 3) {
		std::fprintf(stderr, "usage: scenario <device|remote> <datachannel|video|cycle|scale|camera|interop|throughput|videorate>\n");
		return 2;
	}
	std::string role = argv[1], scenario = argv[2];
	is_device = role == "device";
	camera_scenario = scenario == "camera";
	std::thread(&Inbox::reader, &inbox).detach();
	if (is_device)
		phase("start");
	apply_runtime_knobs();

	if (scenario == "datachannel")
		datachannel(env_long("LAB_MESSAGES", 1000));
	else if (scenario == "video")
		video(env_long("LAB_VIDEO_SECONDS", 10));
	else if (scenario == "cycle")
		cycle(env_long("LAB_CYCLES", 10), env_long("LAB_CYCLE_MESSAGES", 10));
	else if (scenario == "scale")
		scale(4);
	else if (scenario == "camera")
		camera(env_long("LAB_VIDEO_SECONDS", 10));
	else if (scenario == "interop")
		interop();
	else if (scenario == "throughput")
		throughput();
	else if (scenario == "videorate")
		videorate();
	else
		die("unknown scenario " + scenario);

	rtcCleanup();
	if (is_device)
		quiet_phase("cleaned-up");
	std::fflush(stdout);
	std::fflush(stderr);
	using FinishFn = void (*)();
	if (auto finish = reinterpret_cast<FinishFn>(dlsym(RTLD_DEFAULT, "lab_finish")))
		finish();
	// The stdin reader thread may still be blocked; leave without running static destructors.
	std::_Exit(0);
}
