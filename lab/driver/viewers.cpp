// `viewers`: one camera, many viewers. The device offers each viewer what `camera` offers one
// (H.264 1 Mbit/s + Opus 20 ms + a telemetry channel) and sends the same encoded frames to every
// viewer at once; each viewer sends telemetry every 100 ms and the device echoes it. Viewers join
// one by one (LAB_VIEWERS, default 4), then the first leaves and rejoins while the others watch,
// then all leave.
//
// After each change the stream runs LAB_VIEWER_SECONDS (default 3) with that many viewers: the
// device's CPU time over that window (every thread's, from /proc/self/task/*/schedstat) is
// printed as `[cpu] <mark> viewers=K cpu_ns=.. wall_ns=..`. Then device and viewers pause (no
// frame, no telemetry) and the device marks `viewers-K` (`viewers-left`, `viewers-rejoined`,
// `viewers-0` after the last left) at a quiet point: what K viewers hold between frames, with
// every stream's state (NACK store, SRTP contexts) in place, free of what is in flight.
//
// Conn indexes: viewer k joins as connection k; the rejoin is connection N + 1.

#include "driver.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>

namespace lab {

namespace {

// CPU time of every thread alive now, in ns (field 1 of /proc/self/task/<tid>/schedstat): the
// device's stack threads and the application's sender alike. A thread that ends within a window
// is not counted; the stack's threads live for the whole scenario.
long long process_cpu_ns() {
	long long total = 0;
	bool listed = each_entry("/proc/self/task", [&](const char *tid) {
		char path[64], text[128];
		std::snprintf(path, sizeof path, "/proc/self/task/%s/schedstat", tid);
		int f = open(path, O_RDONLY | O_CLOEXEC);
		if (f < 0)
			return; // ended meanwhile
		ssize_t got = read(f, text, sizeof text - 1);
		raw_close(f);
		text[got > 0 ? got : 0] = 0;
		total += std::strtoll(text, nullptr, 10);
	});
	if (!listed)
		die("cannot open /proc/self/task");
	return total;
}

// ---- device ----

struct Viewer {
	Conn *c = nullptr;
	int audio = -1;
};

std::mutex viewers_mutex;
std::map<int, Viewer> watching; // by connection index: those the frames go to
std::atomic<bool> paused{true};
std::atomic<bool> sender_idle{true};
std::atomic<bool> stopping{false};

void echo_telemetry(int dc, const char *data, int size, void *) {
	if (rtcSendMessage(dc, data, size) < 0)
		std::fprintf(stderr, "echo of %d bytes failed\n", size);
	Conn *c = conn_of(dc);
	std::lock_guard<std::mutex> lock(c->mutex);
	++c->received;
}

bool send_stamped(int tr, const std::string &frame, double seconds) {
	uint32_t ts = 0;
	rtcTransformSecondsToTimestamp(tr, seconds, &ts);
	rtcSetTrackRtpTimestamp(tr, ts);
	return rtcSendMessage(tr, frame.data(), int(frame.size())) >= 0;
}

// The application's sender thread: every 20 ms one Opus frame, and each due 30 fps H.264 frame,
// built once and sent to every viewer watching. Paused, it sends nothing (the clock runs on).
void sender() {
	const long fps = 30;
	std::string opus(160, '\x55'); // 20 ms at 64 kbit/s
	auto start = std::chrono::steady_clock::now();
	long audio_frames = 0, video_frames = 0;
	for (auto next = start; !stopping; next += 20ms) {
		std::this_thread::sleep_until(next);
		auto since = next - start;
		if (paused) {
			sender_idle = true;
			audio_frames = since / 20ms;
			video_frames = long(since * fps / 1s);
			continue;
		}
		sender_idle = false;
		std::vector<std::string> video;
		double first_video = double(video_frames) / fps;
		for (; video_frames * 1000ms / fps <= since; ++video_frames)
			video.push_back(h264_frame(video_frames, fps));
		std::lock_guard<std::mutex> lock(viewers_mutex);
		for (auto &[index, v] : watching) {
			if (!send_stamped(v.audio, opus, double(audio_frames) * 0.02))
				die("viewer " + std::to_string(index) + ": sending audio failed");
			for (size_t k = 0; k < video.size(); ++k)
				if (!send_stamped(v.c->tr, video[k], first_video + double(k) / fps))
					die("viewer " + std::to_string(index) + ": sending video failed");
		}
		++audio_frames;
	}
	sender_idle = true;
}

void join(int index, bool first) {
	Conn *c = new_conn(index);
	if (first)
		quiet_phase("pc-created");
	c->dc = rtcCreateDataChannel(c->pc, "telemetry");
	rtcSetUserPointer(c->dc, c);
	rtcSetOpenCallback(c->dc, on_channel_open);
	rtcSetMessageCallback(c->dc, echo_telemetry);
	c->tr = add_h264_sender(c, 96, "video", "");
	rtcSetOpenCallback(c->tr, on_track_open);
	int audio = add_opus_sender(c);
	rtcSetLocalDescription(c->pc, "offer");
	send_description(c, "offer");
	if (first)
		phase("gathered");
	rtcSetRemoteDescription(c->pc, take_description(index, "answer").c_str(), "answer");
	c->wait([&] { return c->connected; }, "the connection");
	c->wait([&] { return c->track_open; }, "the video track to open");
	c->wait([&] { return c->channel_open; }, "the telemetry channel to open");
	if (first)
		quiet_phase("connected");
	std::lock_guard<std::mutex> lock(viewers_mutex);
	watching[index] = Viewer{c, audio};
}

void leave(int index) {
	Viewer v;
	{
		std::lock_guard<std::mutex> lock(viewers_mutex);
		v = watching.at(index);
		watching.erase(index);
	}
	rtcDeleteTrack(v.audio);
	delete_conn(index);
	leak_one_block_if_asked();
}

// Streams LAB_VIEWER_SECONDS with the viewers watching now, prints the window's CPU time, then
// pauses everyone and marks `mark` at a quiet point.
void stream_and_mark(const std::string &mark, long seconds) {
	long count;
	{
		std::lock_guard<std::mutex> lock(viewers_mutex);
		count = long(watching.size());
	}
	send_line("CTL stream");
	inbox.take("CTL streaming");
	long long cpu0 = process_cpu_ns();
	auto t0 = std::chrono::steady_clock::now();
	paused = false;
	std::this_thread::sleep_for(std::chrono::seconds(seconds));
	paused = true;
	while (!sender_idle)
		std::this_thread::sleep_for(5ms);
	long long cpu = process_cpu_ns() - cpu0;
	auto wall = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0);
	send_line("CTL pause");
	inbox.take("CTL paused");
	std::fprintf(stderr, "[cpu] %s viewers=%ld cpu_ns=%lld wall_ns=%lld\n", mark.c_str(), count, cpu,
	             (long long)wall.count());
	quiet_phase(mark.c_str());
}

void viewers_device(long n, long seconds) {
	std::thread streamer(sender);
	for (long k = 1; k <= n; ++k) {
		join(int(k), k == 1);
		stream_and_mark("viewers-" + std::to_string(k), seconds);
	}
	// The first viewer leaves mid-stream while the others watch, then comes back.
	inbox.take("CTL leave 1");
	leave(1);
	send_line("CTL left 1");
	stream_and_mark("viewers-left", seconds);
	join(int(n + 1), false);
	stream_and_mark("viewers-rejoined", seconds);
	// Everyone leaves, the last one last.
	std::vector<int> left;
	{
		std::lock_guard<std::mutex> lock(viewers_mutex);
		for (auto &[index, v] : watching)
			left.push_back(index);
	}
	for (int index : left) {
		inbox.take("CTL leave " + std::to_string(index));
		leave(index);
		send_line("CTL left " + std::to_string(index));
	}
	stopping = true;
	streamer.join();
	quiet_phase("viewers-0");
	inbox.take("CTL done");
	send_line("CTL closed");
}

// ---- remote: the viewers ----

std::mutex remote_mutex;
std::map<int, Conn *> viewing;
std::map<int, long> telemetry_sent;
std::map<int, long long> bytes_at_pause; // media bytes at the last pause, by viewer
std::atomic<bool> remote_paused{true};
std::atomic<bool> remote_stopping{false};
std::atomic<bool> telemetry_idle{true};

// Every 100 ms the next telemetry message on each viewer's channel (checked when it comes back
// by on_camera_telemetry: in order and whole).
void telemetry_sender() {
	for (auto next = std::chrono::steady_clock::now(); !remote_stopping; next += 100ms) {
		std::this_thread::sleep_until(next);
		if (remote_paused) {
			telemetry_idle = true;
			continue;
		}
		telemetry_idle = false;
		std::lock_guard<std::mutex> lock(remote_mutex);
		for (auto &[index, c] : viewing) {
			std::string m = telemetry(telemetry_sent[index]++);
			if (rtcSendMessage(c->dc, m.data(), int(m.size())) < 0)
				die("viewer " + std::to_string(index) + ": sending telemetry failed");
		}
	}
	telemetry_idle = true;
}

void viewer_join(int index) {
	std::string offer = take_description(index, "offer");
	Conn *c = new_conn(index);
	rtcSetRemoteDescription(c->pc, offer.c_str(), "offer");
	send_description(c, "answer");
	c->wait([&] { return c->channel_open && c->dc >= 0; }, "the telemetry channel");
	std::lock_guard<std::mutex> lock(remote_mutex);
	viewing[index] = c;
	bytes_at_pause[index] = 0;
}

long long media_bytes(Conn *c) {
	std::lock_guard<std::mutex> lock(c->mutex);
	return c->media_bytes;
}

// The device asks for a window of stream, then a pause: telemetry flows in between, and every
// viewer watching must have received more media by the pause than at the one before.
void viewer_window() {
	inbox.take("CTL stream");
	remote_paused = false;
	send_line("CTL streaming");
	inbox.take("CTL pause");
	remote_paused = true;
	while (!telemetry_idle)
		std::this_thread::sleep_for(5ms);
	// Every echo back before the device looks for its quiet point.
	std::lock_guard<std::mutex> lock(remote_mutex);
	for (auto &[index, c] : viewing) {
		long sent = telemetry_sent[index];
		c->wait([&] { return c->echoes >= sent; }, "the telemetry echoes");
		long long now = media_bytes(c);
		if (now <= bytes_at_pause[index])
			die("viewer " + std::to_string(index) + " received no media in the last window");
		bytes_at_pause[index] = now;
	}
	send_line("CTL paused");
}

// The viewer closes its PeerConnection (a tab closed), then the device lets go of it.
void viewer_leave(int index) {
	Conn *c;
	{
		std::lock_guard<std::mutex> lock(remote_mutex);
		c = viewing.at(index);
		viewing.erase(index);
	}
	long long bytes = media_bytes(c);
	long echoes;
	std::string damage;
	{
		std::lock_guard<std::mutex> lock(c->mutex);
		echoes = c->echoes;
		damage = c->last_echo;
	}
	std::fprintf(stderr, "RESULT viewer index=%d received_bytes=%lld telemetry_echoed=%ld\n", index, bytes, echoes);
	if (!damage.empty())
		die("viewer " + std::to_string(index) + " telemetry: " + damage);
	if (echoes != telemetry_sent[index])
		die("viewer " + std::to_string(index) + ": " + std::to_string(echoes) + " echoes of " +
		    std::to_string(telemetry_sent[index]));
	send_line("CTL leave " + std::to_string(index));
	inbox.take("CTL left " + std::to_string(index));
	delete_conn(index);
}

void viewers_remote(long n) {
	std::thread sender_thread(telemetry_sender);
	for (long k = 1; k <= n; ++k) {
		viewer_join(int(k));
		viewer_window();
	}
	viewer_leave(1);
	viewer_window(); // the others keep receiving
	viewer_join(int(n + 1));
	viewer_window();
	std::vector<int> left;
	{
		std::lock_guard<std::mutex> lock(remote_mutex);
		for (auto &[index, c] : viewing)
			left.push_back(index);
	}
	for (int index : left)
		viewer_leave(index);
	remote_stopping = true;
	sender_thread.join();
	send_line("CTL done");
	inbox.take("CTL closed");
	std::fprintf(stderr, "RESULT viewers viewers=%ld joins=%ld\n", n, n + 1);
}

} // namespace

void viewers(long n, long seconds) {
	if (n < 2)
		die("viewers: at least 2 viewers (LAB_VIEWERS)");
	if (is_device)
		viewers_device(n, seconds);
	else
		viewers_remote(n);
}

} // namespace lab
