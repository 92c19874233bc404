/*
 * <ifaddrs.h> for ESP-IDF, which lwIP does not provide: getifaddrs() lists esp_netif's
 * interfaces (CONFIG_ESP_DC_PORT_SHIM_GETIFADDRS). Same layout as BSD/glibc so libjuice's
 * udp.c compiles unchanged.
 */
#ifndef ESP_DC_PORT_IFADDRS_H
#define ESP_DC_PORT_IFADDRS_H

#include <sys/socket.h>

#ifndef IFF_UP
#define IFF_UP 0x1
#endif
#ifndef IFF_LOOPBACK
#define IFF_LOOPBACK 0x8
#endif
#ifndef IFF_RUNNING
#define IFF_RUNNING 0x40
#endif

#ifdef __cplusplus
extern "C" {
#endif

struct ifaddrs {
    struct ifaddrs *ifa_next;
    char *ifa_name;
    unsigned int ifa_flags;
    struct sockaddr *ifa_addr;
    struct sockaddr *ifa_netmask;
    struct sockaddr *ifa_dstaddr;
    void *ifa_data;
};

int getifaddrs(struct ifaddrs **ifap);
void freeifaddrs(struct ifaddrs *ifa);

#ifdef __cplusplus
}
#endif

#endif /* ESP_DC_PORT_IFADDRS_H */
