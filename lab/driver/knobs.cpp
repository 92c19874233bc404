// The policy's run-time knobs, applied where the device applies them: the process-wide ones as
// esp_dc_port_init() does (rtcSetSctpSettings), the others as the application does, on each
// PeerConnection and video sender. The knobs are the rows of the generated
// esp_dc_runtime_knobs.h (from the catalogue in xtask/src/policy.rs); each value comes in its
// row's LAB_* variable (xtask/src/replica/run.rs, knob_env). An absent variable means
// libdatachannel's default: 0 in rtcSctpSettings and rtcConfiguration, upstream's value for
// rtcChainRtcpNackResponder, which has no such 0.
//
// Each use below defines what one row of each api becomes (SCTP_SETTINGS(...) and so on) and
// expands the list with LAB_BY_API.

#include "driver.h"

#include <esp_dc_runtime_knobs.h>

#include <cstdio>
#include <cstring>

#define LAB_BY_API(api, field, name, kconfig, env, upstream) api(field, name, env, upstream)

namespace lab {

namespace {

rtcSctpSettings sctp_settings() {
	rtcSctpSettings s;
	std::memset(&s, 0, sizeof(s));
#define SCTP_SETTINGS(field, name, env, upstream) s.field = int(env_long(env, 0));
#define CONFIGURATION(field, name, env, upstream)
#define NACK_RESPONDER(field, name, env, upstream)
	ESP_DC_RUNTIME_KNOBS(LAB_BY_API)
#undef SCTP_SETTINGS
#undef CONFIGURATION
#undef NACK_RESPONDER
	return s;
}

void echo(const char *api, const char *field, const char *name, long value) {
	std::fprintf(stderr, "[knobs] %s=%ld (%s %s)\n", name, value, api, field);
}

// `[knobs] <name>=<value> (<api> <field>)` for every row, read back from the structures the
// functions below fill: a test sees each knob of the catalogue reach libdatachannel's API with
// the policy's value.
void echo_knobs(const rtcSctpSettings &sctp) {
	rtcConfiguration config;
	std::memset(&config, 0, sizeof(config));
	apply_configuration_knobs(config);
	unsigned nack = nack_responder_knob();
#define SCTP_SETTINGS(field, name, env, upstream) echo("SCTP_SETTINGS", #field, #name, long(sctp.field));
#define CONFIGURATION(field, name, env, upstream) echo("CONFIGURATION", #field, #name, long(config.field));
#define NACK_RESPONDER(field, name, env, upstream) echo("NACK_RESPONDER", #field, #name, long(nack));
	ESP_DC_RUNTIME_KNOBS(LAB_BY_API)
#undef SCTP_SETTINGS
#undef CONFIGURATION
#undef NACK_RESPONDER
}

} // namespace

void apply_runtime_knobs() {
	// LAB_RTC_LOG_LEVEL=6 (verbose) when a scenario needs debugging; warnings otherwise. To
	// stderr: stdout carries the signaling.
	rtcInitLogger(rtcLogLevel(env_long("LAB_RTC_LOG_LEVEL", RTC_LOG_WARNING)),
	              [](rtcLogLevel, const char *message) { std::fprintf(stderr, "rtc: %s\n", message); });
	rtcSctpSettings s = sctp_settings();
	echo_knobs(s);
	rtcSetSctpSettings(&s);
}

void apply_configuration_knobs(rtcConfiguration &config) {
#define SCTP_SETTINGS(field, name, env, upstream)
#define CONFIGURATION(field, name, env, upstream) config.field = int(env_long(env, 0));
#define NACK_RESPONDER(field, name, env, upstream)
	ESP_DC_RUNTIME_KNOBS(LAB_BY_API)
#undef SCTP_SETTINGS
#undef CONFIGURATION
#undef NACK_RESPONDER
}

unsigned nack_responder_knob() {
	unsigned packets = 0;
#define SCTP_SETTINGS(field, name, env, upstream)
#define CONFIGURATION(field, name, env, upstream)
#define NACK_RESPONDER(field, name, env, upstream) packets = unsigned(env_long(env, upstream));
	ESP_DC_RUNTIME_KNOBS(LAB_BY_API)
#undef SCTP_SETTINGS
#undef CONFIGURATION
#undef NACK_RESPONDER
	return packets;
}

} // namespace lab
