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
// The files, by concern: lines.cpp (the line protocol), quiet.cpp (phase marks at quiet points),
// conn.cpp (one PeerConnection and its signaling), knobs.cpp (the policy's run-time knobs),
// media.cpp (H.264/Opus senders, the remote's video receiver), scenarios.cpp (the lab's five
// scenarios), viewers.cpp (one camera, many viewers), sdp.cpp and interop.cpp (the device against Chromium and aiortc), bench.cpp
// (throughput, video rate), main.cpp.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <rtc/rtc.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace lab {

// Reading /proc at a quiet mark must not make the trace grow that it watches: opendir and fopen
// allocate, and the recorder logs every close() (it tracks sockets), so these use the system
// calls directly.
inline void raw_close(int fd) { syscall(SYS_close, fd); }

// Names in a /proc directory through getdents64, calling `each(name)`; false if it cannot be
// opened.
template <class F> bool each_entry(const char *dir, F each) {
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return false;
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
	return true;
}

using namespace std::chrono_literals;

// ---- process ----

extern bool is_device;
extern bool camera_scenario; // the remote checks telemetry instead of echoes
extern bool viewers_scenario; // several viewers at once: no shared video receiver

long env_long(const char *name, long fallback);
[[noreturn]] void die(const std::string &why);

// ---- phase marks (quiet.cpp) ----

// Marks a phase now (lab_phase, looked up with dlsym so the driver runs without recorder).
void phase(const char *name);
// Marks a phase once the stack is quiet: nothing held changes and every other thread is parked.
void quiet_phase(const char *name);

// ---- the line protocol (lines.cpp) ----

void send_line(const std::string &line);
std::string escape(const std::string &sdp);
std::string unescape(const std::string &s);

struct Inbox {
	std::mutex mutex;
	std::condition_variable cv;
	std::deque<std::string> lines;
	bool closed = false;

	void reader();
	// Next line starting with `prefix` (others are kept for later waits).
	std::string take(const std::string &prefix, std::chrono::seconds timeout = 60s);
	// Like take, but false after `timeout` or once the peer went away: for lines that may never
	// come (trickled ICE candidates).
	bool poll(const std::string &prefix, std::chrono::milliseconds timeout, std::string &out);
	// Like take, but for a line that ends work whose length the link decides: gives up only after
	// `idle` in which `progress()` did not change, and says how far it got.
	std::string take_while(const std::string &prefix, const std::function<long()> &progress,
	                       std::chrono::seconds idle);
};
extern Inbox inbox;

// ---- connections (conn.cpp) ----

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
	long echoes = 0;           // remote: messages echoed back and verified
	long received = 0;         // device: messages received (and echoed)
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

Conn *conn_of(int id);
void on_state(int pc, rtcState state, void *);
void on_gathering(int pc, rtcGatheringState state, void *);
void on_channel_open(int dc, void *);
void on_track_open(int tr, void *);
Conn *new_conn(int index);
void delete_conn(int index);
std::string local_description(Conn *c);
void send_description(Conn *c, const char *type);
// Reads `SIG <index> <type> <sdp>` for this connection index.
std::string take_description(int index, const char *type);
// Sends `count` messages one at a time and checks each echo (waiting 60 s at most for one).
// Returns bytes sent; `slowest_ms` gets the longest wait for an echo.
long long exchange(Conn *c, long count, long long *slowest_ms = nullptr);
Conn *remote_connect_channel(int index);
Conn *device_answer_channel(int index, const char *phase_prefix, bool first, const char *open_phase = nullptr);

// ---- the policy's run-time knobs (knobs.cpp) ----

// The logger, and the knobs libdatachannel takes process-wide (rtcSetSctpSettings).
void apply_runtime_knobs();
// The knobs of one PeerConnection (rtcConfiguration).
void apply_configuration_knobs(rtcConfiguration &config);
// The NACK responder's store, in packets (rtcChainRtcpNackResponder).
unsigned nack_responder_knob();

// ---- media (media.cpp) ----

std::string h264_frame(long n, long fps);
int add_h264_sender(Conn *c, int payload_type, const char *mid, const std::string &fmtp);
int add_opus_sender(Conn *c);
std::string telemetry(long n);
void on_camera_telemetry(int dc, const char *data, int size, void *);
void on_remote_media(int tr, const char *data, int size, void *);
void remote_receive_video(const char *scenario, long timeout_seconds);

// The remote's receiver for the device's video (SSRC 42): counts frames, NACKs what is missing.
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

	void on_rtp(int tr, const uint8_t *p, int size);
	void nack_due(std::chrono::milliseconds delay);
	void send_nack(int tr, const std::vector<uint16_t> &due);
	void start();
	long whole_frames();
	std::string result();
};
extern VideoReceiver video_receiver;

// ---- scenarios (scenarios.cpp, interop.cpp, bench.cpp) ----

void datachannel(long messages);
void video(long seconds);
void camera(long seconds);
void cycle(long cycles, long messages);
void scale(long max_connections);
void viewers(long n, long seconds);
// Tests only (LAB_LEAK_BYTES_PER_CONNECTION): keeps one block per closed connection.
void leak_one_block_if_asked();
void interop();
void throughput();
void videorate();

// ---- SDP text (sdp.cpp) ----

std::vector<std::string> h264_file_frames(const char *path);
std::string attribute(const std::string &sdp, const char *name);
int offered_h264_payload_type(const std::string &sdp, std::string &mid, std::string &fmtp);
std::string application_first(const std::string &sdp);
bool media_refused(const std::string &sdp, const std::string &mid);

} // namespace lab
