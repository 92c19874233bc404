/*
 * <netinet/ip.h> for lwIP targets, which have no BSD network headers. usrsctp names the IPv4
 * header in code shared with its raw-socket transports; libdatachannel builds it with those off
 * (AF_CONN only: the DTLS transport carries every packet), so nothing here is ever filled from
 * the wire, it only has to compile with the BSD layout. An ESP-IDF release that grows the real
 * header wins.
 */
#ifndef ESP_DC_PORT_NETINET_IP_H
#define ESP_DC_PORT_NETINET_IP_H
#if __has_include_next(<netinet/ip.h>)
#include_next <netinet/ip.h>
#else
#include <stdint.h>
#include <netinet/in.h>
#include <netinet/in_systm.h>

#define IPVERSION 4

struct ip {
#if BYTE_ORDER == LITTLE_ENDIAN
    uint8_t ip_hl : 4, ip_v : 4;
#else
    uint8_t ip_v : 4, ip_hl : 4;
#endif
    uint8_t ip_tos;
    uint16_t ip_len;
    uint16_t ip_id;
    uint16_t ip_off;
    uint8_t ip_ttl;
    uint8_t ip_p;
    uint16_t ip_sum;
    struct in_addr ip_src, ip_dst;
} __attribute__((packed, aligned(2)));

#define IP_RF 0x8000
#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFMASK 0x1fff
#define IP_MAXPACKET 65535
#define MAXTTL 255
#define IPDEFTTL 64
#endif
#endif /* ESP_DC_PORT_NETINET_IP_H */
