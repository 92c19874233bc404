/* Test-only stand-in: the options esp_memtrack reads, as the host test sets them. */
#pragma once
#define CONFIG_ESP_MEMTRACK_ENABLE 1
#define CONFIG_ESP_MEMTRACK_REPORT_DMA 1
#define CONFIG_ESP_MEMTRACK_MAX_TASKS 8
#define CONFIG_HEAP_TRACING_STANDALONE 1
#define CONFIG_ESP_MEMTRACK_TRACE_RECORDS 64
#define CONFIG_ESP_MEMTRACK_TRACE_RECORDS_IN_PSRAM 1
