/* Drives esp_memtrack through one connection the way an app would; the Rust test compares
 * the output with expected.txt byte for byte. */
#include "esp_heap_caps.h"
#include "esp_memtrack.h"

extern int fake_step;

int main(void)
{
    esp_memtrack_delta("before baseline");
    esp_memtrack_trace_init();
    esp_memtrack_snapshot("start", true);
    esp_memtrack_trace_start("start", false);
    fake_step = 3;
    esp_memtrack_delta("connected");
    esp_memtrack_tasks("connected");
    esp_memtrack_trace_dump("connected", MALLOC_CAP_INTERNAL | MALLOC_CAP_SPIRAM);
    fake_step = 1;
    esp_memtrack_trace_stop("cleaned-up");
    esp_memtrack_delta("cleaned-up");
    esp_memtrack_trace_start("leak check with spaces", true);
    esp_memtrack_trace_dump("leaks", MALLOC_CAP_SPIRAM);
    return 0;
}
