// Interop: the device against an independent WebRTC peer (Chromium, aiortc).
//
// The remote is not this driver but anything that speaks the same SIG/CTL lines. Whoever offers
// creates an ordered and an unordered channel; the device echoes every message on both, so data
// flows both ways and the remote verifies it. The device sends H.264 on one video m-line until
// the remote says `CTL done`. LAB_INTEROP_OFFER=device|remote picks the offerer; the answerer's
// a=setup decides the DTLS role, so the two directions exercise both roles.

#include "driver.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace lab {

namespace {

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

// The device's one PeerConnection, marked `pc-created` once quiet.
std::unique_ptr<Conn> interop_peer_connection(bool trickled) {
	rtcConfiguration config;
	std::memset(&config, 0, sizeof(config));
	config.bindAddress = "127.0.0.1";
	apply_configuration_knobs(config);
	// Off so that the answer is made after the device put its H.264 sender on the offered m-line.
	config.disableAutoNegotiation = true;
	auto c = std::make_unique<Conn>();
	c->pc = rtcCreatePeerConnection(&config);
	if (c->pc < 0)
		die("rtcCreatePeerConnection failed");
	rtcSetUserPointer(c->pc, c.get());
	rtcSetStateChangeCallback(c->pc, on_state);
	rtcSetGatheringStateChangeCallback(c->pc, on_gathering);
	rtcSetDataChannelCallback(c->pc, on_interop_channel);
	if (trickled)
		rtcSetLocalCandidateCallback(c->pc, on_interop_candidate);
	quiet_phase("pc-created");
	return c;
}

// The device offers two channels and (LAB_INTEROP_VIDEO, default on) H.264; returns the answer.
std::string device_offers(Conn *c, bool trickled, bool &video_refused) {
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
	std::string answer = take_description(0, "answer");
	rtcSetRemoteDescription(c->pc, answer.c_str(), "answer");
	if (c->tr >= 0 && media_refused(answer, "video")) {
		std::fprintf(stderr, "interop: the remote refused the video m-line; data channels only\n");
		video_refused = true;
	}
	return answer;
}

// The device answers the remote's offer, with H.264 on its video m-line when it offers some.
std::string device_answers(Conn *c, bool trickled) {
	std::string offer = take_description(0, "offer");
	rtcSetRemoteDescription(c->pc, offer.c_str(), "offer");
	std::string mid, fmtp;
	int pt = offered_h264_payload_type(offer, mid, fmtp);
	if (pt >= 0)
		c->tr = add_h264_sender(c, pt, mid.c_str(), fmtp.empty() ? "packetization-mode=1" : fmtp);
	else
		std::fprintf(stderr, "interop: the offer has no H.264 video; no track sent\n");
	rtcSetLocalDescription(c->pc, "answer");
	std::string answer = interop_local_description(c, trickled);
	send_interop_description(answer, "answer");
	phase("gathered");
	return answer;
}

// The remote's trickled candidates, applied as they come until `finished`:
// `SIG 0 candidate <mid> <candidate>`; an empty candidate ends the remote's gathering.
void apply_remote_candidates(Conn *c, const std::atomic<bool> &finished) {
	std::string line;
	while (!finished) {
		if (!inbox.poll("SIG 0 candidate ", 100ms, line))
			continue;
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
}

void wait_all_open(Conn *c, bool video_refused) {
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
}

// Sends H.264 at 30 fps (the clip's units in turn, or synthetic frames) until the remote's
// `CTL done`; returns the frames sent.
long stream_until_done(Conn *c, bool video, const std::vector<std::string> &clip) {
	std::atomic<bool> stop{false};
	std::atomic<long> frames_sent{0};
	std::thread sender([&] {
		if (!video)
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
	return frames_sent.load();
}

void delete_interop_channels() {
	std::lock_guard<std::mutex> lock(interop_state.mutex);
	for (int dc : interop_state.channels)
		rtcDeleteDataChannel(dc);
	interop_state.channels.clear();
}

} // namespace

void interop() {
	if (!is_device)
		die("interop has no remote role in this driver: the remote is Chromium or aiortc (cargo xtask interop)");
	std::string offerer = std::getenv("LAB_INTEROP_OFFER") ? std::getenv("LAB_INTEROP_OFFER") : "device";
	if (offerer != "device" && offerer != "remote")
		die("LAB_INTEROP_OFFER must be device or remote");
	std::vector<std::string> clip;
	if (const char *path = std::getenv("LAB_H264_FILE"); path && *path)
		clip = h264_file_frames(path);
	const bool trickled = env_long("LAB_INTEROP_TRICKLE", 0) != 0;
	std::unique_ptr<Conn> owned = interop_peer_connection(trickled);
	Conn *c = owned.get();

	bool video_refused = false;
	std::string answer = offerer == "device" ? device_offers(c, trickled, video_refused) : device_answers(c, trickled);
	std::atomic<bool> finished{false};
	std::thread remote_candidates([&] { apply_remote_candidates(c, finished); });
	std::string setup = attribute(answer, "a=setup:");
	std::string role = offerer == "device" ? (setup == "active" ? "server" : "client") : (setup == "active" ? "client" : "server");
	std::fprintf(stderr, "RESULT interop offer=%s answer_setup=%s dtls_role=%s\n", offerer.c_str(), setup.c_str(), role.c_str());

	c->wait([&] { return c->connected; }, "the connection");
	phase("connected");
	wait_all_open(c, video_refused);
	phase("channel-open");
	send_line("CTL open");
	long frames_sent = stream_until_done(c, c->tr >= 0 && !video_refused, clip);
	phase("streaming");
	std::fprintf(stderr, "RESULT interop echoed=%ld frames_sent=%ld video=%s candidates_sent=%ld candidates_received=%ld\n",
	             interop_state.echoed.load(), frames_sent, c->tr < 0 ? "none" : video_refused ? "refused" : "sent",
	             trickle.sent.load(), trickle.received.load());
	delete_interop_channels();
	finished = true;
	remote_candidates.join();
	if (c->tr >= 0)
		rtcDeleteTrack(c->tr);
	rtcDeletePeerConnection(c->pc);
	phase("closed");
	send_line("CTL closed");
}

} // namespace lab
