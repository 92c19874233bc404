/* libesp_dc_port_host.so: the host side of esp_dc_port_alloc.h for processes that run without
 * the recorder (the lab's unmeasured remote peer). The stack's redirected C sources link against
 * it; in the measured process the preloaded recorder's definitions take precedence. */
#include <stdint.h>
#include <stdlib.h>

void *esp_dc_port_malloc(size_t size, uint32_t caps, int component_id) {
	(void)caps;
	(void)component_id;
	return malloc(size);
}

void *esp_dc_port_calloc(size_t count, size_t size, uint32_t caps, int component_id) {
	(void)caps;
	(void)component_id;
	return calloc(count, size);
}

void *esp_dc_port_realloc(void *ptr, size_t size, uint32_t caps, int component_id) {
	(void)caps;
	(void)component_id;
	return realloc(ptr, size);
}
