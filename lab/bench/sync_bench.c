/*
 * Lock speed through esp_dc_port_sync.c's wrappers, on the host (issue 16).
 *
 * Builds components/esp_dc_port/src/esp_dc_port_sync.c as the linux target and a chip without
 * PSRAM compile it (the forwarding branch: no CONFIG_SPIRAM), links this program with the same
 * --wrap options components/esp_dc_port/CMakeLists.txt gives the application, and times an
 * uncontended lock/unlock pair and a trylock/unlock pair of a std::mutex-like
 * PTHREAD_MUTEX_INITIALIZER mutex, and signal of a cond nobody waits on, with and without the
 * wrappers (-DNO_WRAP builds the same program against the C library directly). What a PSRAM
 * semaphore costs on the chip (cache misses, the external-RAM CAS path) the host cannot show.
 *
 *   mkdir -p /tmp/sb && : > /tmp/sb/sdkconfig.h
 *   W="-Wl,--wrap=pthread_mutex_init -Wl,--wrap=pthread_mutex_lock -Wl,--wrap=pthread_mutex_trylock \
 *      -Wl,--wrap=pthread_mutex_timedlock -Wl,--wrap=pthread_cond_init -Wl,--wrap=pthread_cond_signal \
 *      -Wl,--wrap=pthread_cond_broadcast -Wl,--wrap=pthread_cond_wait -Wl,--wrap=pthread_cond_timedwait"
 *   gcc -O2 -m32 -I/tmp/sb -o /tmp/sb/wrapped lab/bench/sync_bench.c components/esp_dc_port/src/esp_dc_port_sync.c $W -lpthread
 *   gcc -O2 -m32 -DNO_WRAP -o /tmp/sb/direct lab/bench/sync_bench.c -lpthread
 *   /tmp/sb/direct; /tmp/sb/wrapped
 */
#include <pthread.h>
#include <stdio.h>
#include <time.h>

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;

int main(void)
{
    const int n = 20 * 1000 * 1000;
    double best_lock = 1e9, best_try = 1e9, best_signal = 1e9;
    for (int round = 0; round < 5; ++round) { /* best of five: the machine is shared */
        double t0 = now_ns();
        for (int i = 0; i < n; ++i) {
            pthread_mutex_lock(&m);
            pthread_mutex_unlock(&m);
        }
        double t1 = now_ns();
        for (int i = 0; i < n; ++i) {
            if (pthread_mutex_trylock(&m) == 0)
                pthread_mutex_unlock(&m);
        }
        double t2 = now_ns();
        for (int i = 0; i < n; ++i)
            pthread_cond_signal(&c);
        double t3 = now_ns();
        if ((t1 - t0) / n < best_lock)
            best_lock = (t1 - t0) / n;
        if ((t2 - t1) / n < best_try)
            best_try = (t2 - t1) / n;
        if ((t3 - t2) / n < best_signal)
            best_signal = (t3 - t2) / n;
    }
#ifdef NO_WRAP
    const char *how = "direct ";
#else
    const char *how = "wrapped";
#endif
    printf("%s lock+unlock %.2f ns  trylock+unlock %.2f ns  cond_signal %.2f ns\n", how, best_lock, best_try, best_signal);
    return 0;
}
