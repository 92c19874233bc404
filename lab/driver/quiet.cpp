// Phase marks at quiet points: the figures at a mark must not move with the machine's load.

#include "driver.h"

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

namespace lab {

void phase(const char *name) {
	using PhaseFn = void (*)(const char *);
	static PhaseFn fn = reinterpret_cast<PhaseFn>(dlsym(RTLD_DEFAULT, "lab_phase"));
	if (fn)
		fn(name);
	std::fprintf(stderr, "[phase] %s\n", name);
}

namespace {


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

} // namespace

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

} // namespace lab
