/*
 * Sync objects follow their owner (policy: sync.placement = "with_owner",
 * CONFIG_ESP_DC_PORT_SYNC_PLACEMENT_WITH_OWNER).
 *
 * ESP-IDF's pthread_mutex_t and pthread_cond_t are 4-byte handles. The first init or lock
 * mallocs the object behind the handle and a FreeRTOS semaphore from internal RAM
 * (components/pthread/pthread.c:622-660 pthread_mutex_init: malloc(esp_pthread_mutex_t) +
 * xSemaphoreCreate[Recursive]Mutex; pthread_cond_var.c pthread_cond_init: calloc(esp_pthread_cond_t)
 * + _lock_init_recursive, which is xQueueCreateMutex in components/newlib/src/locks.c:53-80), so
 * a std::mutex inside a PSRAM object still costs ~100 B of internal RAM.
 *
 * CMakeLists.txt links the application with --wrap for the calls that create those objects
 * (pthread_mutex_init, and lock/trylock/timedlock, which create a PTHREAD_MUTEX_INITIALIZER
 * mutex lazily; pthread_cond_init, and signal/broadcast/wait/timedwait for
 * PTHREAD_COND_INITIALIZER). When the handle itself lives in external RAM
 * (esp_ptr_external_ram(), components/esp_hw_support/esp_memory_utils.c) the wrapper builds the
 * same object ESP-IDF would, in ONE PSRAM block: ESP-IDF's struct first, then the
 * StaticSemaphore_t its semaphore is created in with xSemaphoreCreate*Static (what
 * xSemaphoreCreateGenericWithCaps does, components/freertos/esp_additions/idf_additions.c:269-309,
 * but in the same block). Everything after creation is ESP-IDF's own code on ESP-IDF's own
 * layout: lock, unlock, wait and destroy are not ours. Destroy frees it all, because
 * vSemaphoreDelete frees nothing of a statically created semaphore (FreeRTOS-Kernel/queue.c
 * vQueueDelete: only when ucStaticallyAllocated == pdFALSE) and free() of ESP-IDF's struct frees
 * the block. A handle in internal RAM goes to ESP-IDF's function untouched: the rest of the
 * application keeps its internal objects.
 *
 * Cost: PSRAM is reached through the cache, so a PSRAM semaphore must not be touched while the
 * flash cache is disabled. Only FreeRTOS and pthread code running in a task touches these objects
 * (a mutex cannot be taken from an ISR), pthread_* lives in flash so it cannot run with the cache
 * off, and during a flash operation both CPUs have the scheduler suspended
 * (components/spi_flash/cache_utils.c:125-190: vTaskSuspendAll, esp_intr_noniram_disable), so the
 * tick only counts pended ticks (FreeRTOS-Kernel/tasks.c xTaskIncrementTick, xPendedTicks++) and
 * never walks a PSRAM queue's waiter list. On Xtensa, the queue's spinlock in PSRAM is taken with
 * esp_cpu_compare_and_set's external-RAM path (components/esp_hw_support/cpu.c:195-228:
 * interrupts off plus a global lock), slower than S32C1I on internal RAM.
 *
 * The layouts below mirror ESP-IDF's private structs, so the file refuses other ESP-IDF versions
 * until someone re-reads them.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "sdkconfig.h"

/* Referenced with -u from CMakeLists.txt so the linker keeps this file. */
const int esp_dc_port_sync_linked = 1;

int __real_pthread_mutex_init(pthread_mutex_t *mutex, const pthread_mutexattr_t *attr);
int __real_pthread_mutex_lock(pthread_mutex_t *mutex);
int __real_pthread_mutex_trylock(pthread_mutex_t *mutex);
int __real_pthread_mutex_timedlock(pthread_mutex_t *mutex, const struct timespec *timeout);
int __real_pthread_cond_init(pthread_cond_t *cond, const pthread_condattr_t *attr);
int __real_pthread_cond_signal(pthread_cond_t *cond);
int __real_pthread_cond_broadcast(pthread_cond_t *cond);
int __real_pthread_cond_wait(pthread_cond_t *cond, pthread_mutex_t *mutex);
int __real_pthread_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *mutex, const struct timespec *timeout);

int __wrap_pthread_mutex_init(pthread_mutex_t *mutex, const pthread_mutexattr_t *attr);
int __wrap_pthread_mutex_lock(pthread_mutex_t *mutex);
int __wrap_pthread_mutex_trylock(pthread_mutex_t *mutex);
int __wrap_pthread_mutex_timedlock(pthread_mutex_t *mutex, const struct timespec *timeout);
int __wrap_pthread_cond_init(pthread_cond_t *cond, const pthread_condattr_t *attr);
int __wrap_pthread_cond_signal(pthread_cond_t *cond);
int __wrap_pthread_cond_broadcast(pthread_cond_t *cond);
int __wrap_pthread_cond_wait(pthread_cond_t *cond, pthread_mutex_t *mutex);
int __wrap_pthread_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *mutex, const struct timespec *timeout);

#if CONFIG_SPIRAM && !CONFIG_IDF_TARGET_LINUX

#include <sys/lock.h>
#include <sys/queue.h>

#include "esp_heap_caps.h"
#include "esp_idf_version.h"
#include "esp_memory_utils.h"
#include "freertos/FreeRTOS.h"
#include "freertos/semphr.h"

#if ESP_IDF_VERSION < ESP_IDF_VERSION_VAL(5, 5, 0) || ESP_IDF_VERSION >= ESP_IDF_VERSION_VAL(5, 6, 0)
#error "esp_dc_port_sync.c mirrors ESP-IDF 5.5's esp_pthread_mutex_t and esp_pthread_cond_t: re-read pthread.c and pthread_cond_var.c"
#endif

/* components/pthread/pthread.c:59-63 */
typedef struct {
    SemaphoreHandle_t sem;
    int type;
} idf_pthread_mutex_t;

/* components/pthread/pthread_cond_var.c: esp_pthread_cond_waiter_t and esp_pthread_cond_t */
typedef struct idf_pthread_cond_waiter {
    SemaphoreHandle_t wait_sem;
    TAILQ_ENTRY(idf_pthread_cond_waiter) link;
} idf_pthread_cond_waiter_t;

typedef struct {
    _lock_t lock;
    TAILQ_HEAD(, idf_pthread_cond_waiter) waiter_list;
} idf_pthread_cond_t;

/* ESP-IDF's struct first: its destroy frees this pointer, which is the whole block. */
typedef struct {
    idf_pthread_mutex_t mux;
    StaticSemaphore_t sem_buffer;
} psram_mutex_t;

typedef struct {
    idf_pthread_cond_t cond;
    StaticSemaphore_t lock_buffer;
} psram_cond_t;

#define PSRAM_CAPS (MALLOC_CAP_SPIRAM | MALLOC_CAP_8BIT)

/* Publishes a lazily created object; ESP-IDF uses its own spinlock for the same step
 * (pthread.c pthread_mutex_init_if_static), which it does not export. */
static portMUX_TYPE s_lazy_lock = portMUX_INITIALIZER_UNLOCKED;

static inline bool lives_in_psram(const void *p)
{
    return esp_ptr_external_ram(p);
}

static int mutex_type_of(const pthread_mutexattr_t *attr, int *type)
{
    *type = PTHREAD_MUTEX_NORMAL;
    if (attr == NULL) {
        return 0;
    }
    if (!attr->is_initialized) {
        return EINVAL;
    }
    /* pthread.c mutexattr_check */
    if (attr->type != PTHREAD_MUTEX_NORMAL && attr->type != PTHREAD_MUTEX_RECURSIVE &&
        attr->type != PTHREAD_MUTEX_ERRORCHECK) {
        return EINVAL;
    }
    *type = attr->type;
    return 0;
}

/* NULL when PSRAM is exhausted: the caller then lets ESP-IDF create it in internal RAM. */
static psram_mutex_t *psram_mutex_new(int type)
{
    psram_mutex_t *m = heap_caps_malloc(sizeof(*m), PSRAM_CAPS);
    if (m == NULL) {
        return NULL;
    }
    m->mux.type = type;
    m->mux.sem = type == PTHREAD_MUTEX_RECURSIVE ? xSemaphoreCreateRecursiveMutexStatic(&m->sem_buffer)
                                                 : xSemaphoreCreateMutexStatic(&m->sem_buffer);
    return m;
}

static void psram_mutex_delete(psram_mutex_t *m)
{
    vSemaphoreDelete(m->mux.sem);
    heap_caps_free(m);
}

int __wrap_pthread_mutex_init(pthread_mutex_t *mutex, const pthread_mutexattr_t *attr)
{
    if (mutex == NULL || !lives_in_psram(mutex)) {
        return __real_pthread_mutex_init(mutex, attr);
    }
    int type;
    int res = mutex_type_of(attr, &type);
    if (res != 0) {
        return res;
    }
    psram_mutex_t *m = psram_mutex_new(type);
    if (m == NULL) {
        return __real_pthread_mutex_init(mutex, attr);
    }
    *mutex = (pthread_mutex_t)(uintptr_t)&m->mux;
    return 0;
}

/* A PTHREAD_MUTEX_INITIALIZER handle in PSRAM gets its PSRAM object before ESP-IDF's lock sees
 * it (pthread.c would create it in internal RAM, pthread_mutex_init_if_static). */
static inline void mutex_init_if_static(pthread_mutex_t *mutex)
{
    if (mutex == NULL || (intptr_t)*mutex != (intptr_t)PTHREAD_MUTEX_INITIALIZER || !lives_in_psram(mutex)) {
        return;
    }
    psram_mutex_t *m = psram_mutex_new(PTHREAD_MUTEX_NORMAL);
    if (m == NULL) {
        return;
    }
    portENTER_CRITICAL(&s_lazy_lock);
    if ((intptr_t)*mutex == (intptr_t)PTHREAD_MUTEX_INITIALIZER) {
        *mutex = (pthread_mutex_t)(uintptr_t)&m->mux;
        m = NULL;
    }
    portEXIT_CRITICAL(&s_lazy_lock);
    if (m != NULL) { /* another task was first */
        psram_mutex_delete(m);
    }
}

int __wrap_pthread_mutex_lock(pthread_mutex_t *mutex)
{
    mutex_init_if_static(mutex);
    return __real_pthread_mutex_lock(mutex);
}

int __wrap_pthread_mutex_trylock(pthread_mutex_t *mutex)
{
    mutex_init_if_static(mutex);
    return __real_pthread_mutex_trylock(mutex);
}

int __wrap_pthread_mutex_timedlock(pthread_mutex_t *mutex, const struct timespec *timeout)
{
    mutex_init_if_static(mutex);
    return __real_pthread_mutex_timedlock(mutex, timeout);
}

static psram_cond_t *psram_cond_new(void)
{
    psram_cond_t *c = heap_caps_calloc(1, sizeof(*c), PSRAM_CAPS);
    if (c == NULL) {
        return NULL;
    }
    /* What _lock_init_recursive stores (newlib/src/locks.c lock_init_generic): the handle of a
     * FreeRTOS recursive mutex; ESP-IDF's _lock_close deletes it at pthread_cond_destroy. */
    c->cond.lock = (_lock_t)(intptr_t)xSemaphoreCreateRecursiveMutexStatic(&c->lock_buffer);
    TAILQ_INIT(&c->cond.waiter_list);
    return c;
}

static void psram_cond_delete(psram_cond_t *c)
{
    vSemaphoreDelete((SemaphoreHandle_t)(intptr_t)c->cond.lock);
    heap_caps_free(c);
}

int __wrap_pthread_cond_init(pthread_cond_t *cond, const pthread_condattr_t *attr)
{
    if (cond == NULL || !lives_in_psram(cond)) {
        return __real_pthread_cond_init(cond, attr);
    }
    psram_cond_t *c = psram_cond_new();
    if (c == NULL) {
        return __real_pthread_cond_init(cond, attr);
    }
    *cond = (pthread_cond_t)(uintptr_t)&c->cond;
    return 0;
}

static inline void cond_init_if_static(pthread_cond_t *cond)
{
    if (cond == NULL || *cond != PTHREAD_COND_INITIALIZER || !lives_in_psram(cond)) {
        return;
    }
    psram_cond_t *c = psram_cond_new();
    if (c == NULL) {
        return;
    }
    portENTER_CRITICAL(&s_lazy_lock);
    if (*cond == PTHREAD_COND_INITIALIZER) {
        *cond = (pthread_cond_t)(uintptr_t)&c->cond;
        c = NULL;
    }
    portEXIT_CRITICAL(&s_lazy_lock);
    if (c != NULL) {
        psram_cond_delete(c);
    }
}

int __wrap_pthread_cond_signal(pthread_cond_t *cond)
{
    cond_init_if_static(cond);
    return __real_pthread_cond_signal(cond);
}

int __wrap_pthread_cond_broadcast(pthread_cond_t *cond)
{
    cond_init_if_static(cond);
    return __real_pthread_cond_broadcast(cond);
}

int __wrap_pthread_cond_wait(pthread_cond_t *cond, pthread_mutex_t *mutex)
{
    cond_init_if_static(cond);
    return __real_pthread_cond_wait(cond, mutex);
}

int __wrap_pthread_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *mutex, const struct timespec *timeout)
{
    cond_init_if_static(cond);
    return __real_pthread_cond_timedwait(cond, mutex, timeout);
}

#else /* no PSRAM (the linux target, or CONFIG_SPIRAM off): every object stays where ESP-IDF puts it */

int __wrap_pthread_mutex_init(pthread_mutex_t *mutex, const pthread_mutexattr_t *attr)
{
    return __real_pthread_mutex_init(mutex, attr);
}

int __wrap_pthread_mutex_lock(pthread_mutex_t *mutex)
{
    return __real_pthread_mutex_lock(mutex);
}

int __wrap_pthread_mutex_trylock(pthread_mutex_t *mutex)
{
    return __real_pthread_mutex_trylock(mutex);
}

int __wrap_pthread_mutex_timedlock(pthread_mutex_t *mutex, const struct timespec *timeout)
{
    return __real_pthread_mutex_timedlock(mutex, timeout);
}

int __wrap_pthread_cond_init(pthread_cond_t *cond, const pthread_condattr_t *attr)
{
    return __real_pthread_cond_init(cond, attr);
}

int __wrap_pthread_cond_signal(pthread_cond_t *cond)
{
    return __real_pthread_cond_signal(cond);
}

int __wrap_pthread_cond_broadcast(pthread_cond_t *cond)
{
    return __real_pthread_cond_broadcast(cond);
}

int __wrap_pthread_cond_wait(pthread_cond_t *cond, pthread_mutex_t *mutex)
{
    return __real_pthread_cond_wait(cond, mutex);
}

int __wrap_pthread_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *mutex, const struct timespec *timeout)
{
    return __real_pthread_cond_timedwait(cond, mutex, timeout);
}

#endif
