/* Test-only stand-in for ESP-IDF's FreeRTOS.h. */
#pragma once
#include <stdint.h>
typedef unsigned int UBaseType_t;
typedef void *TaskHandle_t;
#define configUSE_TRACE_FACILITY 1
#define configMAX_TASK_NAME_LEN 16
