/*
 * Prints memory facts as "MEMTRACK <kind> key=value ..." lines. printf (not ESP_LOG) so the
 * lines carry no colour codes or timestamps and stay one line each; the analyzer still strips
 * both in case the monitor adds them.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdkconfig.h"
#include "esp_err.h"
#include "esp_heap_caps.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "esp_memtrack.h"

#if CONFIG_HEAP_TRACING_STANDALONE
#include "esp_heap_trace.h"
#endif

#if CONFIG_ESP_MEMTRACK_ENABLE

typedef struct {
    const char *name;
    uint32_t caps;
} heap_kind_t;

static const heap_kind_t HEAPS[] = {
    {"internal", MALLOC_CAP_INTERNAL},
    {"psram", MALLOC_CAP_SPIRAM},
#if CONFIG_ESP_MEMTRACK_REPORT_DMA
    {"dma", MALLOC_CAP_DMA},
#endif
};
#define HEAP_COUNT (sizeof(HEAPS) / sizeof(HEAPS[0]))

typedef struct {
    size_t free;
    size_t min_free;
    size_t largest;
} heap_figures_t;

static heap_figures_t s_baseline[HEAP_COUNT];
static char s_baseline_label[32] = "";
static bool s_have_baseline;

/* Values are space-separated key=value pairs, so a label must not contain spaces or '='. */
static void copy_token(char *dst, size_t size, const char *src)
{
    size_t i = 0;
    if (src == NULL || src[0] == '\0') {
        src = "-";
    }
    for (; src[i] != '\0' && i + 1 < size; i++) {
        char c = src[i];
        dst[i] = (c == ' ' || c == '=' || c == '\t' || c == '\n' || c == '\r') ? '_' : c;
    }
    dst[i] = '\0';
}

static void measure(heap_figures_t *out)
{
    for (size_t i = 0; i < HEAP_COUNT; i++) {
        out[i].free = heap_caps_get_free_size(HEAPS[i].caps);
        out[i].min_free = heap_caps_get_minimum_free_size(HEAPS[i].caps);
        out[i].largest = heap_caps_get_largest_free_block(HEAPS[i].caps);
    }
}

static void print_snapshot(const char *label, const heap_figures_t *now)
{
    for (size_t i = 0; i < HEAP_COUNT; i++) {
        printf("MEMTRACK snapshot label=%s heap=%s free=%u min_free=%u largest=%u\n", label, HEAPS[i].name,
               (unsigned)now[i].free, (unsigned)now[i].min_free, (unsigned)now[i].largest);
    }
}

void esp_memtrack_snapshot(const char *label, bool as_baseline)
{
    char tag[32];
    heap_figures_t now[HEAP_COUNT];
    copy_token(tag, sizeof(tag), label);
    measure(now);
    print_snapshot(tag, now);
    if (as_baseline) {
        memcpy(s_baseline, now, sizeof(s_baseline));
        strcpy(s_baseline_label, tag);
        s_have_baseline = true;
    }
}

/* Signed difference of two heap sizes. long (32-bit on the chips) holds any heap figure, and
 * %ld works with CONFIG_NEWLIB_NANO_FORMAT, where %lld does not. */
static long diff(size_t now, size_t base)
{
    return (long)now - (long)base;
}

void esp_memtrack_delta(const char *label)
{
    char tag[32];
    heap_figures_t now[HEAP_COUNT];
    copy_token(tag, sizeof(tag), label);
    measure(now);
    print_snapshot(tag, now);
    if (!s_have_baseline) {
        printf("MEMTRACK note label=%s text=no_baseline_call_esp_memtrack_snapshot_with_as_baseline_first\n", tag);
        return;
    }
    for (size_t i = 0; i < HEAP_COUNT; i++) {
        printf("MEMTRACK delta label=%s base=%s heap=%s free=%ld min_free=%ld largest=%ld\n", tag,
               s_baseline_label, HEAPS[i].name, diff(now[i].free, s_baseline[i].free),
               diff(now[i].min_free, s_baseline[i].min_free), diff(now[i].largest, s_baseline[i].largest));
    }
}

void esp_memtrack_tasks(const char *label)
{
    char tag[32];
    copy_token(tag, sizeof(tag), label);
#if configUSE_TRACE_FACILITY
    const UBaseType_t capacity = CONFIG_ESP_MEMTRACK_MAX_TASKS;
    TaskStatus_t *tasks = calloc(capacity, sizeof(TaskStatus_t));
    if (tasks == NULL) {
        printf("MEMTRACK note label=%s text=no_memory_for_task_list\n", tag);
        return;
    }
    UBaseType_t running = uxTaskGetNumberOfTasks();
    UBaseType_t count = uxTaskGetSystemState(tasks, capacity, NULL);
    for (UBaseType_t i = 0; i < count; i++) {
        char name[configMAX_TASK_NAME_LEN + 1];
        copy_token(name, sizeof(name), tasks[i].pcTaskName);
        /* The high-water mark uxTaskGetSystemState() took with uxTaskGetStackHighWaterMark()'s
         * own code: asking again by handle could touch a task deleted since. ESP-IDF's FreeRTOS
         * counts stacks in bytes (StackType_t is uint8_t). */
        printf("MEMTRACK task label=%s name=%s stack_free_min=%u prio=%u\n", tag, name,
               (unsigned)tasks[i].usStackHighWaterMark, (unsigned)tasks[i].uxCurrentPriority);
    }
    if (count == 0 && running > capacity) {
        printf("MEMTRACK task label=%s truncated=%u\n", tag, (unsigned)running);
    }
    free(tasks);
#else
    printf("MEMTRACK note label=%s text=enable_FREERTOS_USE_TRACE_FACILITY_for_task_stacks\n", tag);
#endif
}

#if CONFIG_HEAP_TRACING_STANDALONE
static heap_trace_record_t *s_records;

esp_err_t esp_memtrack_trace_init(void)
{
    if (s_records != NULL) {
        return ESP_OK;
    }
#if CONFIG_ESP_MEMTRACK_TRACE_RECORDS_IN_PSRAM
    const uint32_t caps = MALLOC_CAP_SPIRAM;
#else
    const uint32_t caps = MALLOC_CAP_INTERNAL;
#endif
    s_records = heap_caps_calloc(CONFIG_ESP_MEMTRACK_TRACE_RECORDS, sizeof(heap_trace_record_t), caps);
    if (s_records == NULL) {
        printf("MEMTRACK note label=init text=no_memory_for_%u_trace_records\n", (unsigned)CONFIG_ESP_MEMTRACK_TRACE_RECORDS);
        return ESP_ERR_NO_MEM;
    }
    esp_err_t err = heap_trace_init_standalone(s_records, CONFIG_ESP_MEMTRACK_TRACE_RECORDS);
    printf("MEMTRACK trace label=init event=init records=%u record_bytes=%u heap=%s err=%d\n",
           (unsigned)CONFIG_ESP_MEMTRACK_TRACE_RECORDS, (unsigned)sizeof(heap_trace_record_t),
           caps == MALLOC_CAP_SPIRAM ? "psram" : "internal", (int)err);
    return err;
}

esp_err_t esp_memtrack_trace_start(const char *label, bool leaks_only)
{
    char tag[32];
    copy_token(tag, sizeof(tag), label);
    esp_err_t err = heap_trace_start(leaks_only ? HEAP_TRACE_LEAKS : HEAP_TRACE_ALL);
    printf("MEMTRACK trace label=%s event=start mode=%s err=%d\n", tag, leaks_only ? "leaks" : "all", (int)err);
    return err;
}

esp_err_t esp_memtrack_trace_stop(const char *label)
{
    char tag[32];
    copy_token(tag, sizeof(tag), label);
    esp_err_t err = heap_trace_stop();
    printf("MEMTRACK trace label=%s event=stop err=%d\n", tag, (int)err);
    return err;
}

void esp_memtrack_trace_dump(const char *label, uint32_t caps)
{
    char tag[32];
    copy_token(tag, sizeof(tag), label);
    const char *which = (caps & MALLOC_CAP_INTERNAL) && (caps & MALLOC_CAP_SPIRAM) ? "internal+psram"
                        : (caps & MALLOC_CAP_SPIRAM)                               ? "psram"
                                                                                   : "internal";
    /* The label line comes first: heap_trace_dump itself does not say which moment it shows. */
    printf("MEMTRACK trace label=%s event=dump heaps=%s\n", tag, which);
    fflush(stdout);
    heap_trace_dump_caps(caps);
}
#else
esp_err_t esp_memtrack_trace_init(void) { return ESP_ERR_NOT_SUPPORTED; }
esp_err_t esp_memtrack_trace_start(const char *label, bool leaks_only) { (void)label; (void)leaks_only; return ESP_ERR_NOT_SUPPORTED; }
esp_err_t esp_memtrack_trace_stop(const char *label) { (void)label; return ESP_ERR_NOT_SUPPORTED; }
void esp_memtrack_trace_dump(const char *label, uint32_t caps) { (void)label; (void)caps; }
#endif /* CONFIG_HEAP_TRACING_STANDALONE */

#else /* !CONFIG_ESP_MEMTRACK_ENABLE */
void esp_memtrack_snapshot(const char *label, bool as_baseline) { (void)label; (void)as_baseline; }
void esp_memtrack_delta(const char *label) { (void)label; }
void esp_memtrack_tasks(const char *label) { (void)label; }
esp_err_t esp_memtrack_trace_init(void) { return ESP_ERR_NOT_SUPPORTED; }
esp_err_t esp_memtrack_trace_start(const char *label, bool leaks_only) { (void)label; (void)leaks_only; return ESP_ERR_NOT_SUPPORTED; }
esp_err_t esp_memtrack_trace_stop(const char *label) { (void)label; return ESP_ERR_NOT_SUPPORTED; }
void esp_memtrack_trace_dump(const char *label, uint32_t caps) { (void)label; (void)caps; }
#endif /* CONFIG_ESP_MEMTRACK_ENABLE */
