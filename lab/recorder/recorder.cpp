// liblabrec.so: preloaded into the measured 32-bit process, it sees every allocation, thread,
// mutex, condition variable and socket, and writes them to $LAB_TRACE in the format of
// lab_trace.h. Its own bookkeeping lives in mmap'd memory, so nothing it does is ever counted.
//
// It also provides the host side of esp_dc_port_alloc.h: C sources compiled with the
// force-included redirect header call esp_dc_port_malloc(size, caps, component), and the
// recorder keeps that exact component id. (libesp_dc_port_host.so has the same functions
// without recording, for processes that run without the recorder; the preload wins.)

#include "lab_trace.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <unwind.h>

#include <atomic>
#include <new>

namespace {

// ---- real functions, resolved lazily; dlsym may itself call calloc ----

using malloc_fn = void *(*)(size_t);
using calloc_fn = void *(*)(size_t, size_t);
using realloc_fn = void *(*)(void *, size_t);
using free_fn = void (*)(void *);
using memalign_fn = void *(*)(size_t, size_t);
using posix_memalign_fn = int (*)(void **, size_t, size_t);
using pthread_create_fn = int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
using mutex_fn = int (*)(pthread_mutex_t *);
using mutex_init_fn = int (*)(pthread_mutex_t *, const pthread_mutexattr_t *);
using cond_fn = int (*)(pthread_cond_t *);
using cond_init_fn = int (*)(pthread_cond_t *, const pthread_condattr_t *);
using cond_wait_fn = int (*)(pthread_cond_t *, pthread_mutex_t *);
using cond_timedwait_fn = int (*)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *);
using socket_fn = int (*)(int, int, int);
using close_fn = int (*)(int);

malloc_fn real_malloc;
calloc_fn real_calloc;
realloc_fn real_realloc;
free_fn real_free;
memalign_fn real_memalign;
posix_memalign_fn real_posix_memalign;
pthread_create_fn real_pthread_create;
mutex_fn real_mutex_lock;
mutex_fn real_mutex_trylock;
mutex_fn real_mutex_destroy;
mutex_init_fn real_mutex_init;
cond_fn real_cond_signal;
cond_fn real_cond_broadcast;
cond_fn real_cond_destroy;
cond_init_fn real_cond_init;
cond_wait_fn real_cond_wait;
cond_timedwait_fn real_cond_timedwait;
socket_fn real_socket;
close_fn real_close;

// dlsym's own allocations during resolution come from here and are never freed or recorded.
// Each block is preceded by 16 bytes holding its size, so realloc copies the block and no more.
alignas(16) char bootstrap_arena[16384];
size_t bootstrap_used;
bool resolving;
const size_t bootstrap_header = 16;

bool in_bootstrap(void *p) {
	return p >= static_cast<void *>(bootstrap_arena) &&
	       p < static_cast<void *>(bootstrap_arena + sizeof(bootstrap_arena));
}

void *bootstrap_alloc(size_t size) {
	if (size > sizeof(bootstrap_arena))
		return nullptr;
	size_t need = bootstrap_header + ((size + 15) & ~size_t(15));
	if (bootstrap_used + need > sizeof(bootstrap_arena))
		return nullptr;
	char *p = bootstrap_arena + bootstrap_used;
	bootstrap_used += need;
	memcpy(p, &size, sizeof(size));
	return p + bootstrap_header;
}

size_t bootstrap_size(const void *p) {
	size_t size;
	memcpy(&size, static_cast<const char *>(p) - bootstrap_header, sizeof(size));
	return size;
}

template <class F> void resolve(F &fn, const char *name) { fn = reinterpret_cast<F>(dlsym(RTLD_NEXT, name)); }

void resolve_all() {
	if (real_malloc || resolving)
		return;
	resolving = true;
	resolve(real_calloc, "calloc");
	resolve(real_realloc, "realloc");
	resolve(real_free, "free");
	resolve(real_memalign, "memalign");
	resolve(real_posix_memalign, "posix_memalign");
	resolve(real_pthread_create, "pthread_create");
	resolve(real_mutex_lock, "pthread_mutex_lock");
	resolve(real_mutex_trylock, "pthread_mutex_trylock");
	resolve(real_mutex_destroy, "pthread_mutex_destroy");
	resolve(real_mutex_init, "pthread_mutex_init");
	resolve(real_cond_signal, "pthread_cond_signal");
	resolve(real_cond_broadcast, "pthread_cond_broadcast");
	resolve(real_cond_destroy, "pthread_cond_destroy");
	resolve(real_cond_init, "pthread_cond_init");
	resolve(real_cond_wait, "pthread_cond_wait");
	resolve(real_cond_timedwait, "pthread_cond_timedwait");
	resolve(real_socket, "socket");
	resolve(real_close, "close");
	malloc_fn m;
	resolve(m, "malloc");
	real_malloc = m;
	resolving = false;
}

// ---- the event log: one big mmap'd region, appended to lock-free ----
//
// A writer reserves a slot (begin), fills it, and publishes it by storing its kind last
// (publish); until then the slot's kind is 0. lab_finish stops new events, waits for the
// writers in flight, and writes only published events: a slot still being written is stepped
// over (its `size` is set first) and counted, never copied half-written.

char *log_base;
size_t log_capacity;
std::atomic<size_t> log_used{0};
// log_used once lab_finish has taken the log: no reservation fits after it.
const size_t log_closed = ~size_t(0);
std::atomic<uint32_t> lost_events{0}; // refused because the log was full
std::atomic<uint32_t> writers{0};     // threads between begin() and publish()
uint64_t start_ns;
std::atomic<uint32_t> next_thread_index{1};
std::atomic<uint32_t> next_thread_serial{1};
std::atomic<bool> finished{false};
uint32_t default_stack_bytes;

thread_local bool in_recorder;
thread_local uint32_t thread_index;
thread_local bool finishing; // the thread in lab_finish, which still appends the module list

uint64_t now_ns() {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

void log_init() {
	if (log_base)
		return;
	// Reserved, not committed: pages appear as they are written. LAB_LOG_BYTES makes it smaller
	// (the tests fill it on purpose).
	const char *bytes = getenv("LAB_LOG_BYTES");
	log_capacity = bytes ? size_t(strtoul(bytes, nullptr, 10)) : size_t(1) << 30;
	void *p = mmap(nullptr, log_capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		log_capacity = 0;
		return;
	}
	log_base = static_cast<char *>(p);
	start_ns = now_ns();
	const char *s = getenv("LAB_DEFAULT_STACK_BYTES");
	default_stack_bytes = s ? uint32_t(strtoul(s, nullptr, 10)) : 0;
}

// Reserves `size` bytes; nullptr when they do not fit (counted) or the log is closed. A
// compare-and-swap, not fetch_add: refused reservations must not move log_used, which would
// otherwise creep past the capacity, wrap around 32 bits and hand out slots over live events.
char *log_reserve(size_t size) {
	size_t at = log_used.load(std::memory_order_relaxed);
	do {
		if (at == log_closed)
			return nullptr;
		if (!log_base || size > log_capacity - at) {
			lost_events.fetch_add(1);
			return nullptr;
		}
	} while (!log_used.compare_exchange_weak(at, at + size));
	return log_base + at;
}

uint32_t current_thread() {
	if (!thread_index)
		thread_index = next_thread_index.fetch_add(1);
	return thread_index;
}

// Starts an event with `extra` bytes after it; the caller fills it and Event publishes it.
lab_event *begin(size_t extra) {
	writers.fetch_add(1); // before the check: lab_finish either sees this writer or we see finished
	if (finished.load() && !finishing) {
		writers.fetch_sub(1);
		return nullptr;
	}
	size_t size = sizeof(lab_event) + ((extra + 3) & ~size_t(3));
	char *p = log_reserve(size);
	if (!p) {
		writers.fetch_sub(1);
		return nullptr;
	}
	lab_event *e = reinterpret_cast<lab_event *>(p);
	__atomic_store_n(&e->size, uint32_t(size), __ATOMIC_RELEASE); // first: lab_finish can step over
	e->origin = 0;
	e->frames = 0;
	e->component = -1;
	e->thread = current_thread();
	uint64_t t = now_ns() - start_ns;
	e->time_lo = uint32_t(t);
	e->time_hi = uint32_t(t >> 32);
	e->a = e->b = e->caps = 0;
	return e;
}

void publish(lab_event *e, uint8_t kind) {
	__atomic_store_n(&e->kind, kind, __ATOMIC_RELEASE); // last: the event is whole
	writers.fetch_sub(1, std::memory_order_release);
}

// One event: `if (Event e{KIND, extra}) { e->a = ...; }` publishes it when the scope ends.
struct Event {
	lab_event *e;
	uint8_t kind;
	Event(uint8_t kind, size_t extra) : e(begin(extra)), kind(kind) {}
	~Event() {
		if (e)
			publish(e, kind);
	}
	Event(const Event &) = delete;
	Event &operator=(const Event &) = delete;
	explicit operator bool() const { return e != nullptr; }
	lab_event *operator->() const { return e; }
	void *body() const { return e + 1; }
};

struct Frames {
	uint32_t pc[LAB_MAX_FRAMES + 2];
	int count;
	int skip;
};

_Unwind_Reason_Code collect(struct _Unwind_Context *ctx, void *arg) {
	Frames *f = static_cast<Frames *>(arg);
	if (f->skip > 0) {
		--f->skip;
		return _URC_NO_REASON;
	}
	if (f->count >= LAB_MAX_FRAMES)
		return _URC_END_OF_STACK;
	f->pc[f->count++] = uint32_t(_Unwind_GetIP(ctx));
	return _URC_NO_REASON;
}

// Records an event with the caller's stack; `skip` drops the recorder's own frames.
void event_with_frames(uint8_t kind, uint8_t origin, uint32_t a, uint32_t b, int component, uint32_t caps) {
	Frames f;
	f.count = 0;
	f.skip = 2;
	_Unwind_Backtrace(collect, &f);
	Event e(kind, size_t(f.count) * 4);
	if (!e)
		return;
	e->origin = origin;
	e->a = a;
	e->b = b;
	e->component = int8_t(component);
	e->caps = caps;
	e->frames = uint8_t(f.count);
	memcpy(e.body(), f.pc, size_t(f.count) * 4);
}

struct Guard {
	bool active;
	Guard() : active(!in_recorder) {
		if (active) {
			in_recorder = true;
			resolve_all();
			log_init();
		}
	}
	~Guard() {
		if (active)
			in_recorder = false;
	}
};

void record_alloc(void *p, size_t size, uint8_t origin, int component = -1, uint32_t caps = 0) {
	if (!p)
		return;
	Guard g;
	if (g.active)
		event_with_frames(LAB_EV_ALLOC, origin, uint32_t(uintptr_t(p)), uint32_t(size), component, caps);
}

void record_free(void *p) {
	if (!p)
		return;
	Guard g;
	if (!g.active)
		return;
	if (Event e{LAB_EV_FREE, 0})
		e->a = uint32_t(uintptr_t(p));
}

// ---- first use of mutexes and condition variables: an open-addressing set in mmap'd memory ----
//
// Everything, the mapping included, happens under one lock: two threads meeting the table
// before it existed each mapped one and all but one lost their entries. A destroyed object
// leaves a tombstone that the next insertion reuses (a soak reuses the same addresses all day),
// the table is rebuilt without tombstones when they crowd it, and it never fills beyond 7/8,
// so a probe is short and always ends; a first use it has no room for is counted
// (seen_untracked, in the trace header), never looped on.

std::atomic<uint32_t *> seen_set{nullptr};
const size_t seen_slots = size_t(1) << 20;
const size_t seen_limit = seen_slots / 8 * 7;    // occupied (live + tombstones) at most
const size_t seen_rebuild = seen_slots / 16;     // tombstones worth a rebuild when at the limit
const uint32_t seen_empty = 0, seen_tomb = 1;    // no object has address 0 or 1
size_t seen_live, seen_tombs;
std::atomic<uint32_t> seen_untracked{0};
std::atomic_flag seen_lock = ATOMIC_FLAG_INIT;

struct SeenLock {
	SeenLock() {
		while (seen_lock.test_and_set(std::memory_order_acquire)) {
		}
	}
	~SeenLock() { seen_lock.clear(std::memory_order_release); }
};

size_t seen_home(uint32_t key) {
	// Fibonacci hashing takes the product's high bits: the low ones only mirror the key's low
	// bits, which are zero for aligned objects and would crowd them into a few slots.
	return size_t((key * 2654435761u) >> 12) & (seen_slots - 1);
}

uint32_t *seen_map() {
	void *p = mmap(nullptr, seen_slots * 4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return p == MAP_FAILED ? nullptr : static_cast<uint32_t *>(p);
}

// Where `key` is, or else where it would go (the first tombstone on its path, else the empty
// slot that ends it); seen_slots when a whole sweep found neither.
size_t seen_find(uint32_t *set, uint32_t key, bool *found) {
	size_t slot = seen_home(key), reuse = seen_slots;
	*found = false;
	for (size_t probes = 0; probes < seen_slots; ++probes, slot = (slot + 1) & (seen_slots - 1)) {
		uint32_t v = set[slot];
		if (v == key) {
			*found = true;
			return slot;
		}
		if (v == seen_empty)
			return reuse != seen_slots ? reuse : slot;
		if (v == seen_tomb && reuse == seen_slots)
			reuse = slot;
	}
	return reuse;
}

// Copies the live keys into a fresh table, dropping the tombstones.
void seen_rebuild_table() {
	uint32_t *fresh = seen_map();
	if (!fresh)
		return;
	uint32_t *old = seen_set.load();
	for (size_t i = 0; i < seen_slots; ++i) {
		if (old[i] != seen_empty && old[i] != seen_tomb) {
			bool found;
			fresh[seen_find(fresh, old[i], &found)] = old[i];
		}
	}
	seen_set.store(fresh);
	seen_tombs = 0;
	munmap(old, seen_slots * 4);
}

bool first_use(const void *addr) {
	uint32_t key = uint32_t(uintptr_t(addr));
	if (key == seen_empty || key == seen_tomb)
		return false;
	SeenLock lock;
	if (!seen_set.load()) {
		seen_set.store(seen_map());
		seen_live = seen_tombs = 0;
		if (!seen_set.load()) {
			seen_untracked.fetch_add(1);
			return false;
		}
	}
	bool found;
	size_t slot = seen_find(seen_set.load(), key, &found);
	if (found)
		return false;
	bool into_tomb = slot != seen_slots && seen_set.load()[slot] == seen_tomb;
	if (!into_tomb && seen_live + seen_tombs >= seen_limit) {
		if (seen_tombs >= seen_rebuild)
			seen_rebuild_table();
		slot = seen_live + seen_tombs < seen_limit ? seen_find(seen_set.load(), key, &found) : seen_slots;
	}
	if (slot == seen_slots) {
		seen_untracked.fetch_add(1);
		return false;
	}
	uint32_t *set = seen_set.load();
	if (set[slot] == seen_tomb)
		--seen_tombs;
	set[slot] = key;
	++seen_live;
	return true;
}

void forget(const void *addr) {
	uint32_t key = uint32_t(uintptr_t(addr));
	if (key == seen_empty || key == seen_tomb)
		return;
	SeenLock lock;
	uint32_t *set = seen_set.load();
	if (!set)
		return;
	bool found;
	size_t slot = seen_find(set, key, &found);
	if (!found)
		return;
	set[slot] = seen_tomb; // probing continues past it; the next insertion on this path reuses it
	--seen_live;
	++seen_tombs;
}

void note_sync(uint8_t kind, const void *addr) {
	Guard g;
	if (g.active && first_use(addr))
		event_with_frames(kind, 0, uint32_t(uintptr_t(addr)), 0, -1, 0);
}

void note_destroy(const void *addr) {
	Guard g;
	if (!g.active)
		return;
	forget(addr);
	if (Event e{LAB_EV_SYNC_DESTROY, 0})
		e->a = uint32_t(uintptr_t(addr));
}

// ---- threads: the recorder provides each stack, painted, and measures its high-water mark ----

const unsigned char paint = 0xA5;
const size_t host_stack_bytes = size_t(1) << 20; // generous: the host must never overflow
// Above a larger request: glibc keeps the thread descriptor and static TLS at the top of a
// caller-provided stack, which must not eat into what the thread asked for.
const size_t host_stack_slack = size_t(64) << 10;
const size_t page_bytes = 4096;

struct ThreadStart {
	void *(*routine)(void *);
	void *arg;
	uint32_t serial;
	char *stack;
	size_t stack_size;
	uintptr_t entry_sp;
};

void end_of_thread(void *raw) {
	ThreadStart *start = static_cast<ThreadStart *>(raw);
	// The lowest painted byte that changed bounds what the thread ever used. glibc keeps its
	// thread descriptor and static TLS at the top of a caller-provided stack; that is not stack
	// use, so the mark is measured from the routine's first frame (entry_sp) downwards.
	size_t untouched = 0;
	while (untouched < start->stack_size && static_cast<unsigned char>(start->stack[untouched]) == paint)
		++untouched;
	uintptr_t low = reinterpret_cast<uintptr_t>(start->stack) + untouched;
	Guard g;
	if (g.active) {
		if (Event e{LAB_EV_THREAD_END, 0}) {
			e->b = start->serial;
			e->a = uint32_t(start->entry_sp > low ? start->entry_sp - low : 0);
		}
	}
}

void *thread_trampoline(void *raw) {
	ThreadStart *start = static_cast<ThreadStart *>(raw);
	char marker;
	uintptr_t entry_sp = reinterpret_cast<uintptr_t>(&marker);
	start->entry_sp = entry_sp;
	void *result;
	pthread_cleanup_push(end_of_thread, start);
	result = start->routine(start->arg);
	pthread_cleanup_pop(1);
	return result;
}

} // namespace

// ---- exported: phases and finish ----

extern "C" void lab_phase(const char *name) {
	Guard g;
	if (!g.active)
		return;
	size_t len = strlen(name);
	if (Event e{LAB_EV_PHASE, len}) {
		e->a = uint32_t(len);
		memcpy(e.body(), name, len);
	}
}

namespace {
int add_module(struct dl_phdr_info *info, size_t, void *) {
	const char *path = info->dlpi_name;
	if (!path || !*path)
		path = "/proc/self/exe";
	size_t len = strlen(path);
	if (Event e{LAB_EV_MODULE, len}) {
		e->a = uint32_t(len);
		e->b = uint32_t(info->dlpi_addr);
		memcpy(e.body(), path, len);
	}
	return 0;
}

void write_all(int fd, const char *p, size_t n) {
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		p += w;
		n -= size_t(w);
	}
}
} // namespace

extern "C" void lab_finish(void) {
	Guard g;
	if (!g.active || finished.exchange(true))
		return;
	// From here other threads' events are refused; this thread still appends the module list.
	finishing = true;
	dl_iterate_phdr(add_module, nullptr);
	finishing = false;
	// Writers that began before `finished` publish within microseconds unless descheduled: give
	// them a second, then take the log as it is.
	for (int i = 0; i < 1000 && writers.load() != 0; ++i) {
		struct timespec ms = {0, 1000000};
		nanosleep(&ms, nullptr);
	}
	size_t used = log_used.exchange(log_closed); // no reservation succeeds after this
	if (used > log_capacity)
		used = log_capacity;
	const char *path = getenv("LAB_TRACE");
	if (!path || !log_base)
		return;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return;
	lab_trace_header header = {};
	write_all(fd, reinterpret_cast<const char *>(&header), sizeof(header)); // completed below
	// Published events go out in runs; an unpublished slot is stepped over by its size and
	// counted. One without even its size (reserved an instant ago) hides where the next event
	// starts, so the log ends there.
	uint32_t unpublished = 0;
	size_t at = 0, run = 0;
	while (at + sizeof(lab_event) <= used) {
		lab_event *e = reinterpret_cast<lab_event *>(log_base + at);
		if (__atomic_load_n(&e->kind, __ATOMIC_ACQUIRE) != 0) {
			at += e->size;
			continue;
		}
		write_all(fd, log_base + run, at - run);
		++unpublished;
		uint32_t size = __atomic_load_n(&e->size, __ATOMIC_ACQUIRE);
		at = size ? at + size : used;
		run = at;
	}
	write_all(fd, log_base + run, at > run ? at - run : 0);
	header.magic = LAB_TRACE_MAGIC;
	header.pointer_bytes = uint32_t(sizeof(void *));
	header.default_stack_bytes = default_stack_bytes;
	header.lost_events = lost_events.load();
	header.unpublished_events = unpublished;
	header.sync_untracked = seen_untracked.load();
	header.flags = (header.lost_events ? LAB_TRACE_FULL : 0) | (unpublished ? LAB_TRACE_UNPUBLISHED : 0) |
	               (header.sync_untracked ? LAB_TRACE_UNTRACKED : 0);
	// Should this fail, the zeroed header stays, which the reader refuses (no magic).
	if (pwrite(fd, &header, sizeof(header), 0) != ssize_t(sizeof(header))) {
	}
	close(fd);
}

__attribute__((destructor)) static void lab_at_exit() { lab_finish(); }

// ---- exported: the allocator family ----

extern "C" {

void *malloc(size_t size) {
	resolve_all();
	if (!real_malloc)
		return bootstrap_alloc(size);
	void *p = real_malloc(size);
	if (!in_recorder)
		record_alloc(p, size, LAB_ORIGIN_MALLOC);
	return p;
}

void *calloc(size_t count, size_t size) {
	if (!real_calloc) {
		resolve_all();
		if (!real_calloc) {
			void *p = bootstrap_alloc(count * size);
			if (p)
				memset(p, 0, count * size);
			return p;
		}
	}
	void *p = real_calloc(count, size);
	if (!in_recorder)
		record_alloc(p, count * size, LAB_ORIGIN_MALLOC);
	return p;
}

void *realloc(void *old, size_t size) {
	resolve_all();
	if (in_bootstrap(old)) {
		void *p = malloc(size);
		size_t had = bootstrap_size(old);
		if (p)
			memcpy(p, old, size < had ? size : had);
		return p;
	}
	void *p = real_realloc(old, size);
	if (!in_recorder && (p || size == 0)) {
		record_free(old);
		record_alloc(p, size, LAB_ORIGIN_MALLOC);
	}
	return p;
}

void free(void *p) {
	if (!p || in_bootstrap(p))
		return;
	resolve_all();
	if (!in_recorder)
		record_free(p);
	real_free(p);
}

void *memalign(size_t alignment, size_t size) {
	resolve_all();
	void *p = real_memalign(alignment, size);
	if (!in_recorder)
		record_alloc(p, size, LAB_ORIGIN_MALLOC);
	return p;
}

void *aligned_alloc(size_t alignment, size_t size) { return memalign(alignment, size); }

int posix_memalign(void **out, size_t alignment, size_t size) {
	resolve_all();
	int rc = real_posix_memalign(out, alignment, size);
	if (rc == 0 && !in_recorder)
		record_alloc(*out, size, LAB_ORIGIN_MALLOC);
	return rc;
}

// Host side of esp_dc_port_alloc.h, with the component's exact identity.
void *esp_dc_port_malloc(size_t size, uint32_t caps, int component) {
	resolve_all();
	void *p = real_malloc(size);
	if (!in_recorder)
		record_alloc(p, size, LAB_ORIGIN_TAGGED, component, caps);
	return p;
}

void *esp_dc_port_calloc(size_t count, size_t size, uint32_t caps, int component) {
	resolve_all();
	void *p = real_calloc(count, size);
	if (!in_recorder)
		record_alloc(p, count * size, LAB_ORIGIN_TAGGED, component, caps);
	return p;
}

void *esp_dc_port_realloc(void *old, size_t size, uint32_t caps, int component) {
	resolve_all();
	void *p = real_realloc(old, size);
	if (!in_recorder && (p || size == 0)) {
		record_free(old);
		record_alloc(p, size, LAB_ORIGIN_TAGGED, component, caps);
	}
	return p;
}

// ---- threads, mutexes, condition variables, sockets ----

int pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*routine)(void *), void *arg) {
	resolve_all();
	size_t requested = 0;
	int detach = PTHREAD_CREATE_JOINABLE;
	if (attr) {
		size_t size = 0;
		pthread_attr_t defaults;
		size_t default_size = 0;
		pthread_attr_getstacksize(attr, &size);
		pthread_attr_getdetachstate(attr, &detach);
		if (pthread_getattr_default_np(&defaults) == 0) {
			pthread_attr_getstacksize(&defaults, &default_size);
			pthread_attr_destroy(&defaults);
		}
		if (size != default_size)
			requested = size;
	}
	// The host gives a thread at least what it asked for: a request above 1 MiB was cut to 1 MiB
	// and the thread overflowed into whatever lay below.
	size_t stack_bytes = host_stack_bytes;
	if (requested > host_stack_bytes - host_stack_slack)
		stack_bytes = (requested + host_stack_slack + page_bytes - 1) & ~(page_bytes - 1);
	// One mapping: the stack, then a page above it for the recorder's ThreadStart (away from the
	// direction a stack overflows). A mapping that fails is EAGAIN, as when glibc cannot
	// allocate a stack: never a crash, never a thread the trace does not see.
	void *mem = mmap(nullptr, stack_bytes + page_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (mem == MAP_FAILED)
		return EAGAIN;
	memset(mem, paint, stack_bytes);
	ThreadStart *start = reinterpret_cast<ThreadStart *>(static_cast<char *>(mem) + stack_bytes);
	start->routine = routine;
	start->arg = arg;
	start->serial = next_thread_serial.fetch_add(1);
	start->stack = static_cast<char *>(mem);
	start->stack_size = stack_bytes;
	{
		Guard g;
		if (g.active)
			event_with_frames(LAB_EV_THREAD_CREATE, 0, uint32_t(requested), start->serial, -1, 0);
	}
	pthread_attr_t ours;
	pthread_attr_init(&ours);
	pthread_attr_setdetachstate(&ours, detach);
	pthread_attr_setstack(&ours, mem, stack_bytes);
	int rc = real_pthread_create(thread, &ours, thread_trampoline, start);
	pthread_attr_destroy(&ours);
	return rc;
}

int pthread_mutex_init(pthread_mutex_t *m, const pthread_mutexattr_t *a) {
	resolve_all();
	return real_mutex_init(m, a);
}

int pthread_mutex_lock(pthread_mutex_t *m) {
	resolve_all();
	if (!in_recorder)
		note_sync(LAB_EV_MUTEX, m);
	return real_mutex_lock(m);
}

int pthread_mutex_trylock(pthread_mutex_t *m) {
	resolve_all();
	if (!in_recorder)
		note_sync(LAB_EV_MUTEX, m);
	return real_mutex_trylock(m);
}

int pthread_mutex_destroy(pthread_mutex_t *m) {
	resolve_all();
	if (!in_recorder)
		note_destroy(m);
	return real_mutex_destroy(m);
}

int pthread_cond_init(pthread_cond_t *c, const pthread_condattr_t *a) {
	resolve_all();
	return real_cond_init(c, a);
}

int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m) {
	resolve_all();
	if (!in_recorder)
		note_sync(LAB_EV_COND, c);
	return real_cond_wait(c, m);
}

int pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *t) {
	resolve_all();
	if (!in_recorder)
		note_sync(LAB_EV_COND, c);
	return real_cond_timedwait(c, m, t);
}

int pthread_cond_signal(pthread_cond_t *c) {
	resolve_all();
	if (!in_recorder)
		note_sync(LAB_EV_COND, c);
	return real_cond_signal(c);
}

int pthread_cond_broadcast(pthread_cond_t *c) {
	resolve_all();
	if (!in_recorder)
		note_sync(LAB_EV_COND, c);
	return real_cond_broadcast(c);
}

int pthread_cond_destroy(pthread_cond_t *c) {
	resolve_all();
	if (!in_recorder)
		note_destroy(c);
	return real_cond_destroy(c);
}

int socket(int domain, int type, int protocol) {
	resolve_all();
	int fd = real_socket(domain, type, protocol);
	if (fd >= 0 && !in_recorder) {
		Guard g;
		if (g.active)
			// The socket's type without the creation flags: SOCK_DGRAM | SOCK_NONBLOCK is a UDP
			// socket, which the accounting compares with SOCK_DGRAM.
			event_with_frames(LAB_EV_SOCKET, 0, uint32_t(fd),
			                  uint32_t((domain << 16) | (type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC) & 0xffff)), -1, 0);
	}
	return fd;
}

int close(int fd) {
	resolve_all();
	if (!in_recorder) {
		Guard g;
		if (g.active)
			if (Event e{LAB_EV_SOCKET_CLOSE, 0})
				e->a = uint32_t(fd);
	}
	return real_close(fd);
}

} // extern "C"

// ---- C++ operator new/delete, every form ----

namespace {
void *new_impl(size_t size) {
	resolve_all();
	void *p = real_malloc(size ? size : 1);
	if (!p)
		throw std::bad_alloc();
	if (!in_recorder)
		record_alloc(p, size, LAB_ORIGIN_NEW);
	return p;
}

void *new_aligned_impl(size_t size, size_t alignment) {
	resolve_all();
	void *p = nullptr;
	if (real_posix_memalign(&p, alignment < sizeof(void *) ? sizeof(void *) : alignment, size ? size : 1) != 0)
		throw std::bad_alloc();
	if (!in_recorder)
		record_alloc(p, size, LAB_ORIGIN_NEW);
	return p;
}

void delete_impl(void *p) {
	if (!p)
		return;
	resolve_all();
	if (!in_recorder)
		record_free(p);
	real_free(p);
}
} // namespace

void *operator new(size_t n) { return new_impl(n); }
void *operator new[](size_t n) { return new_impl(n); }
void *operator new(size_t n, const std::nothrow_t &) noexcept {
	try {
		return new_impl(n);
	} catch (...) {
		return nullptr;
	}
}
void *operator new[](size_t n, const std::nothrow_t &) noexcept {
	try {
		return new_impl(n);
	} catch (...) {
		return nullptr;
	}
}
void *operator new(size_t n, std::align_val_t a) { return new_aligned_impl(n, size_t(a)); }
void *operator new[](size_t n, std::align_val_t a) { return new_aligned_impl(n, size_t(a)); }
void *operator new(size_t n, std::align_val_t a, const std::nothrow_t &) noexcept {
	try {
		return new_aligned_impl(n, size_t(a));
	} catch (...) {
		return nullptr;
	}
}
void *operator new[](size_t n, std::align_val_t a, const std::nothrow_t &) noexcept {
	try {
		return new_aligned_impl(n, size_t(a));
	} catch (...) {
		return nullptr;
	}
}
void operator delete(void *p) noexcept { delete_impl(p); }
void operator delete[](void *p) noexcept { delete_impl(p); }
void operator delete(void *p, size_t) noexcept { delete_impl(p); }
void operator delete[](void *p, size_t) noexcept { delete_impl(p); }
void operator delete(void *p, const std::nothrow_t &) noexcept { delete_impl(p); }
void operator delete[](void *p, const std::nothrow_t &) noexcept { delete_impl(p); }
void operator delete(void *p, std::align_val_t) noexcept { delete_impl(p); }
void operator delete[](void *p, std::align_val_t) noexcept { delete_impl(p); }
void operator delete(void *p, size_t, std::align_val_t) noexcept { delete_impl(p); }
void operator delete[](void *p, size_t, std::align_val_t) noexcept { delete_impl(p); }
void operator delete(void *p, std::align_val_t, const std::nothrow_t &) noexcept { delete_impl(p); }
void operator delete[](void *p, std::align_val_t, const std::nothrow_t &) noexcept { delete_impl(p); }
