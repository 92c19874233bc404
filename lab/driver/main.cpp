// `scenario <device|remote> <scenario>`: one peer of one scenario (see driver.h).

#include "driver.h"

#include <dlfcn.h>

#include <cstdio>

using namespace lab;

namespace {

void run(const std::string &scenario) {
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
	else if (scenario == "viewers")
		viewers(env_long("LAB_VIEWERS", 4), env_long("LAB_VIEWER_SECONDS", 3));
	else if (scenario == "interop")
		interop();
	else if (scenario == "throughput")
		throughput();
	else if (scenario == "videorate")
		videorate();
	else
		die("unknown scenario " + scenario);
}

} // namespace

namespace lab {
bool is_device = false;
bool camera_scenario = false;
bool viewers_scenario = false;
} // namespace lab

int main(int argc, char **argv) {
	if (argc < 3) {
		std::fprintf(stderr, "usage: scenario <device|remote> <datachannel|video|cycle|scale|camera|viewers|interop|throughput|videorate>\n");
		return 2;
	}
	std::string role = argv[1], scenario = argv[2];
	is_device = role == "device";
	viewers_scenario = scenario == "viewers";
	// The viewers get the camera's telemetry channel (checked in order) and the device offers.
	camera_scenario = scenario == "camera" || viewers_scenario;
	std::thread(&Inbox::reader, &inbox).detach();
	if (is_device)
		phase("start");
	apply_runtime_knobs();
	run(scenario);
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
