/* Test-only stand-ins for the ESP-IDF calls esp_memtrack makes: deterministic figures that
 * move with fake_step, so the test can check the printed snapshots and deltas exactly. */
#include <stdio.h>
#include <stdlib.h>
#include "esp_heap_caps.h"
#include "esp_heap_trace.h"
#include "freertos/task.h"

int fake_step;

static size_t base_of(uint32_t caps)
{
    if (caps == MALLOC_CAP_INTERNAL) return 300000;
    if (caps == MALLOC_CAP_SPIRAM) return 8000000;
    return 150000; /* DMA */
}

size_t heap_caps_get_free_size(uint32_t caps) { return base_of(caps) - (size_t)fake_step * 12345; }
size_t heap_caps_get_minimum_free_size(uint32_t caps) { return base_of(caps) - (size_t)fake_step * 20000 - 100; }
size_t heap_caps_get_largest_free_block(uint32_t caps) { return base_of(caps) / 2 - (size_t)fake_step * 1000; }

void *heap_caps_calloc(size_t n, size_t size, uint32_t caps)
{
    printf("FAKE heap_caps_calloc n=%zu size=%zu caps=0x%x\n", n, size, (unsigned)caps);
    return calloc(n, size);
}

esp_err_t heap_trace_init_standalone(heap_trace_record_t *record_buffer, size_t num_records)
{
    printf("FAKE heap_trace_init_standalone records=%zu buffer=%s\n", num_records, record_buffer ? "set" : "null");
    return ESP_OK;
}
esp_err_t heap_trace_start(heap_trace_mode_t mode)
{
    printf("FAKE heap_trace_start mode=%s\n", mode == HEAP_TRACE_ALL ? "HEAP_TRACE_ALL" : "HEAP_TRACE_LEAKS");
    return ESP_OK;
}
esp_err_t heap_trace_stop(void) { printf("FAKE heap_trace_stop\n"); return ESP_OK; }
void heap_trace_dump_caps(const uint32_t caps) { printf("FAKE heap_trace_dump_caps caps=0x%x\n", (unsigned)caps); }

static const char *names[] = {"main", "juice thread", "IDLE0"};
static const UBaseType_t hwm[] = {1804, 2236, 612};

UBaseType_t uxTaskGetNumberOfTasks(void) { return 3; }
UBaseType_t uxTaskGetSystemState(TaskStatus_t *tasks, UBaseType_t capacity, uint32_t *total_run_time)
{
    (void)total_run_time;
    if (capacity < 3) return 0;
    for (UBaseType_t i = 0; i < 3; i++) {
        tasks[i].xHandle = (TaskHandle_t)(uintptr_t)(i + 1);
        tasks[i].pcTaskName = names[i];
        tasks[i].uxCurrentPriority = 5 - i;
        tasks[i].usStackHighWaterMark = hwm[i];
    }
    return 3;
}
