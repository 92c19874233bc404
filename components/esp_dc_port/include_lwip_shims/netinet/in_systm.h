/*
 * <netinet/in_systm.h> for lwIP targets, which have no BSD network headers: the network-order
 * integer types usrsctp's sctp_os_userspace.h expects. An ESP-IDF release that grows the real
 * header wins.
 */
#ifndef ESP_DC_PORT_NETINET_IN_SYSTM_H
#define ESP_DC_PORT_NETINET_IN_SYSTM_H
#if __has_include_next(<netinet/in_systm.h>)
#include_next <netinet/in_systm.h>
#else
#include <stdint.h>
typedef uint16_t n_short;
typedef uint32_t n_long;
typedef uint32_t n_time;
#endif
#endif /* ESP_DC_PORT_NETINET_IN_SYSTM_H */
