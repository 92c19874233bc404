// One PeerConnection of a scenario: its state, callbacks and signaling, and the two ways the lab
// brings up a data channel (the remote offers, the device answers).

#include "driver.h"

#include <cstdio>
#include <cstring>

namespace lab {

namespace {

std::map<int, std::unique_ptr<Conn>> conns;
std::mutex conns_mutex;

// Device: echo every message back unchanged.
void on_device_message(int dc, const char *data, int size, void *) {
	if (rtcSendMessage(dc, data, size) < 0)
		std::fprintf(stderr, "echo of %d bytes failed\n", size);
	Conn *c = conn_of(dc);
	std::lock_guard<std::mutex> lock(c->mutex);
	++c->received;
}

// Remote: remember the echo so the sender can verify it.
void on_remote_message(int dc, const char *data, int size, void *) {
	Conn *c = conn_of(dc);
	std::lock_guard<std::mutex> lock(c->mutex);
	c->last_echo.assign(data, size < 0 ? std::strlen(data) : size_t(size));
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

} // namespace

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

Conn *new_conn(int index) {
	rtcConfiguration config;
	std::memset(&config, 0, sizeof(config));
	config.bindAddress = "127.0.0.1";
	apply_configuration_knobs(config);
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

void send_description(Conn *c, const char *type) {
	std::string sdp = local_description(c);
	if (!is_device && std::strcmp(type, "offer") == 0 && !env_long("LAB_REMOTE_OFFERS_ACTIVE", 0))
		sdp = offer_as_a_browser_would(std::move(sdp));
	send_line("SIG " + std::to_string(c->index) + " " + type + " " + escape(sdp));
}

std::string take_description(int index, const char *type) {
	std::string line = inbox.take("SIG " + std::to_string(index) + " " + type + " ");
	return unescape(line.substr(line.find(type) + std::strlen(type) + 1));
}

long long exchange(Conn *c, long count, long long *slowest_ms) {
	long long bytes = 0;
	for (long i = 0; i < count; ++i) {
		auto sent = std::chrono::steady_clock::now();
		std::string body = message_body(i);
		long before;
		{
			std::lock_guard<std::mutex> lock(c->mutex);
			before = c->echoes;
		}
		if (rtcSendMessage(c->dc, body.data(), int(body.size())) < 0)
			die("rtcSendMessage failed at message " + std::to_string(i));
		std::string what = "the echo of message " + std::to_string(i) + " (" + std::to_string(body.size()) + " B)";
		// 60 s: at 10% loss one echo took up to 24.5 s (SCTP's retransmission timer backs off to
		// 10 s), so 30 s was near; an association that cannot recover fails on its own (5
		// retransmissions) and ends the wait at once.
		c->wait([&] { return c->echoes > before; }, what.c_str(), 60s);
		std::lock_guard<std::mutex> lock(c->mutex);
		if (c->last_echo != body)
			die("echo " + std::to_string(i) + " differs (" + std::to_string(c->last_echo.size()) +
			    " bytes back for " + std::to_string(body.size()) + ")");
		bytes += (long long)body.size();
		auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - sent);
		if (slowest_ms && took.count() > *slowest_ms)
			*slowest_ms = took.count();
	}
	return bytes;
}

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
Conn *device_answer_channel(int index, const char *phase_prefix, bool first, const char *open_phase) {
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

} // namespace lab
