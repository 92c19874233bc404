// Media: the device's H.264 and Opus senders as a camera sets them up, the synthetic frames and
// telemetry they carry, and the remote's receiver that checks what arrives.

#include "driver.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>

namespace lab {

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
	rtcChainRtcpNackResponder(tr, nack_responder_knob());
	return tr;
}

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

// ---- remote: a browser's receiver for the device's video (SSRC 42) ----
//
// On loopback nothing is lost; across the lab's lossy relay (`cargo xtask lab --loss`) the remote
// does what a browser does: it asks for each missing packet with a generic NACK (RFC 4585) once
// the packet is overdue by more than the link's jitter (LAB_NACK_DELAY_MS), again every 100 ms
// until it comes or 1 s has passed, so the device's RtcpNackResponder answers from its store.
// It reports the frames that arrived, the frames that arrived whole, the longest wait between
// two frames and the packets a retransmission recovered.
VideoReceiver video_receiver;

void VideoReceiver::on_rtp(int tr, const uint8_t *p, int size) {
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

// Asks again for the missing packets that are due, giving up on those missing over 1 s.
void VideoReceiver::nack_due(std::chrono::milliseconds delay) {
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
	if (!due.empty())
		send_nack(tr, due);
}

// One generic NACK (RTPFB, FMT 1) for `due`, as PID + BLP pairs.
void VideoReceiver::send_nack(int tr, const std::vector<uint16_t> &due) {
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

void VideoReceiver::start() {
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
long VideoReceiver::whole_frames() {
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
std::string VideoReceiver::result() {
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

void on_remote_media(int tr, const char *data, int size, void *) {
	Conn *c = conn_of(tr);
	if (!viewers_scenario) // one receiver for one stream; viewers count their bytes each
		video_receiver.on_rtp(tr, reinterpret_cast<const uint8_t *>(data), size);
	std::lock_guard<std::mutex> lock(c->mutex);
	c->media_bytes += size;
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

} // namespace lab
