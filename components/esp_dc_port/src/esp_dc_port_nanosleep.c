/*
 * nanosleep() for lwIP targets: newlib declares it, ESP-IDF 5.5 does not define it. usrsctp's
 * timer thread sleeps with it between ticks (sctp_callout.c; with own_threads = 0 that thread is
 * never started, but the call must still link). usleep() is ESP-IDF's: it sleeps at least the
 * time asked for, yielding to FreeRTOS for anything of a tick or more. Never interrupted by a
 * signal here, so `rem` is always zero. Weak, so an ESP-IDF that grows the real one wins.
 */
#include <errno.h>
#include <time.h>
#include <unistd.h>

__attribute__((weak)) int nanosleep(const struct timespec *req, struct timespec *rem)
{
    if (req == NULL || req->tv_sec < 0 || req->tv_nsec < 0 || req->tv_nsec >= 1000000000L) {
        errno = EINVAL;
        return -1;
    }
    /* usleep's argument is 32 bits: sleep whole seconds one at a time. */
    for (time_t s = 0; s < req->tv_sec; ++s) {
        usleep(1000000);
    }
    usleep((useconds_t)((req->tv_nsec + 999) / 1000));
    if (rem != NULL) {
        rem->tv_sec = 0;
        rem->tv_nsec = 0;
    }
    return 0;
}
