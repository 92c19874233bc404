/*
 * Linux target only: threads the stack creates must not take FreeRTOS's tick.
 *
 * ESP-IDF's FreeRTOS port for linux runs each task on a pthread and delivers the tick as a
 * process-wide SIGALRM whose handler switches tasks; it keeps every signal blocked in each
 * thread but the running task's. libdatachannel, libjuice and usrsctp start plain pthreads
 * (std::thread, pthread_create) from a task, so they inherit that task's unblocked mask: the
 * kernel may then run the tick handler on one of them, and it switches FreeRTOS tasks from a
 * thread that is none (tasks stall, two run at once). This pthread_create, which the dynamic
 * linker also binds libstdc++'s std::thread to, starts every thread with all signals blocked,
 * as the port's own threads are. A chip has no such signals: this file is not built there.
 */
#ifndef _GNU_SOURCE /* ESP-IDF defines it for every component; dlsym(RTLD_NEXT) needs it */
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>

/* Referenced with -u from CMakeLists.txt so the linker keeps this file. */
const int esp_dc_port_linux_threads_linked = 1;

typedef int (*pthread_create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

int pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *), void *arg)
{
    static pthread_create_fn real;
    if (real == NULL) {
        real = (pthread_create_fn)dlsym(RTLD_NEXT, "pthread_create");
        if (real == NULL) {
            return EAGAIN;
        }
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int err = real(thread, attr, start, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return err;
}
