// Benchmark scenarios (`cargo xtask bench`, run without the recorder): data-channel throughput
// both ways and the video send rate.

#include "driver.h"

#include <cstdio>
#include <cstring>

namespace lab {

namespace {

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

struct BulkSize {
	long long total;
	int chunk, window;
};

void throughput_device(const BulkSize &size) {
	Conn *c = device_answer_channel(0, nullptr, true);
	rtcSetMessageCallback(c->dc, on_bulk_message);
	inbox.take("CTL ready");
	reset_bulk(0);
	double up = send_bulk(c, size.total, size.chunk, size.window);
	std::fprintf(stderr, "RESULT throughput direction=up bytes=%lld seconds=%.6f\n", size.total, up);
	reset_bulk(size.total);
	send_line("CTL down");
	receive_bulk(size.total);
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
}

void throughput_remote(const BulkSize &size) {
	Conn *c = remote_connect_channel(0);
	rtcSetMessageCallback(c->dc, on_bulk_message);
	reset_bulk(size.total);
	send_line("CTL ready");
	inbox.take("CTL down", std::chrono::seconds(180));
	{
		std::lock_guard<std::mutex> lock(bulk.mutex);
		if (bulk.received != size.total || bulk.corrupt)
			die("the bulk data from the device arrived incomplete or damaged");
	}
	reset_bulk(0);
	double down = send_bulk(c, size.total, size.chunk, size.window);
	std::fprintf(stderr, "RESULT throughput direction=down bytes=%lld seconds=%.6f\n", size.total, down);
	send_line("CTL done");
	inbox.take("CTL closed");
	delete_conn(0);
}

// The device pushes `frames` access units as fast as it can and reports its rate.
void videorate_device(long frames) {
	const long fps = 30;
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
}

} // namespace

// Data-channel throughput both ways over one reliable ordered channel: device -> remote ("up"),
// then remote -> device ("down"). The sender reports the rate until the receiver's "done".
void throughput() {
	BulkSize size{env_long("LAB_BENCH_BYTES", 8 << 20), int(env_long("LAB_BENCH_CHUNK_BYTES", 16384)),
	              int(env_long("LAB_BENCH_WINDOW_BYTES", 256 << 10))};
	if (is_device)
		throughput_device(size);
	else
		throughput_remote(size);
}

// Video send rate: the device pushes H.264 access units through the same chain as `video`
// (packetizer, SR reporter, NACK responder, SRTP) as fast as it can; the remote counts what
// arrives. Loopback UDP drops what the receiver's socket cannot take, so the remote's count is a
// sanity check, the device's rate the measure.
void videorate() {
	if (is_device)
		videorate_device(env_long("LAB_BENCH_FRAMES", 900));
	else
		remote_receive_video("videorate", 180);
}

} // namespace lab
