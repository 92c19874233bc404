/*
 * <poll.h> for lwIP targets: ESP-IDF's C library has poll() (newlib's platform_include, on lwIP's
 * select) but only as <sys/poll.h>; libjuice and libdatachannel include the POSIX name. An
 * ESP-IDF release that grows the real header wins.
 */
#ifndef ESP_DC_PORT_POLL_H
#define ESP_DC_PORT_POLL_H
#if __has_include_next(<poll.h>)
#include_next <poll.h>
#else
#include <sys/poll.h>
#endif
#endif /* ESP_DC_PORT_POLL_H */
