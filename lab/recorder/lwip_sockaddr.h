/*
 * Host replica only: libjuice's `struct sockaddr_storage` at lwIP's size.
 *
 * On ESP-IDF, <sys/socket.h> is lwIP's (components/lwip/lwip/src/include/lwip/sockets.h):
 * `struct sockaddr_storage` is s2_len, ss_family, s2_data1[2], s2_data2[3] and, with
 * CONFIG_LWIP_IPV6 (ESP-IDF's default), s2_data3[3]: 28 bytes, 4-byte aligned, exactly a
 * sockaddr_in6. glibc's is 128 bytes. libjuice embeds one in every addr_record_t (addr.h), so
 * each candidate and STUN entry inside juice_agent_t, and each stun_message_t on its thread's
 * stack, would be ~100 bytes larger on the host than on the chip (~5 KB per agent at lean's
 * sizes). The lab compiles libjuice, under every policy, with this header force-included so
 * its heap blocks and stack frames have the chip's layout size.
 *
 * Safe on the host: libjuice passes sizeof(struct sockaddr_storage) as the address length to
 * recvfrom/getsockname/accept, and the kernel fills at most that (AF_INET 16, AF_INET6 28 bytes);
 * no glibc function takes a sockaddr_storage by value or by type. The system headers that name
 * the type (<netinet/in.h> group_req) are read first, with glibc's.
 */
#ifndef ESP_DC_LAB_LWIP_SOCKADDR_H
#define ESP_DC_LAB_LWIP_SOCKADDR_H

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

struct esp_dc_lwip_sockaddr_storage {
	sa_family_t ss_family; /* glibc's position (lwIP's has s2_len first): same size, host calls work */
	char esp_dc_data[26];
} __attribute__((aligned(4)));

_Static_assert(sizeof(struct esp_dc_lwip_sockaddr_storage) == 28, "lwIP's sockaddr_storage is 28 bytes");
_Static_assert(sizeof(struct esp_dc_lwip_sockaddr_storage) >= sizeof(struct sockaddr_in6),
               "holds every address libjuice handles");

#define sockaddr_storage esp_dc_lwip_sockaddr_storage

#endif
