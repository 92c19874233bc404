// The policy's run-time knobs, as esp_dc_port_init() and the application apply them on the device:
// the lab passes each as an environment variable (xtask/src/replica/run.rs, knob_env).

#include "driver.h"

#include <cstdio>
#include <cstring>

namespace lab {

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

void apply_configuration_knobs(rtcConfiguration &config) {
	config.maxMessageSize = int(env_long("LAB_MAX_MESSAGE_BYTES", 0));
}

unsigned nack_responder_knob() { return unsigned(env_long("LAB_NACK_MAX_PACKETS", 512)); }

} // namespace lab
