/* Test-only stand-in for ESP-IDF's freertos/task.h: the TaskStatus_t fields esp_memtrack reads. */
#pragma once
#include <stdint.h>
#include "freertos/FreeRTOS.h"
typedef struct {
    TaskHandle_t xHandle;
    const char *pcTaskName;
    UBaseType_t uxCurrentPriority;
    uint32_t usStackHighWaterMark;
} TaskStatus_t;
UBaseType_t uxTaskGetNumberOfTasks(void);
UBaseType_t uxTaskGetSystemState(TaskStatus_t *tasks, UBaseType_t capacity, uint32_t *total_run_time);
