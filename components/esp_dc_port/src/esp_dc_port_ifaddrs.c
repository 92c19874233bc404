/*
 * getifaddrs() over esp_netif: one entry per address of each interface that is up. Everything
 * for one entry (struct, name, address, netmask) is a single block, so freeifaddrs() is a walk.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "esp_netif.h"
#include "lwip/sockets.h"
#include "sdkconfig.h"

#include "esp_dc_port_alloc.h"
#include "ifaddrs.h"

#if CONFIG_ESP_DC_PORT_OWN_PLACEMENT_PSRAM
#define OWN_CAPS MALLOC_CAP_SPIRAM
#elif CONFIG_ESP_DC_PORT_OWN_PLACEMENT_INTERNAL
#define OWN_CAPS (MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT)
#else
#define OWN_CAPS MALLOC_CAP_DEFAULT
#endif

struct entry {
    struct ifaddrs ifa;
    struct sockaddr_storage addr;
    struct sockaddr_storage netmask;
    char name[8];
};

static struct entry *new_entry(const char *name, unsigned int flags)
{
    struct entry *e = esp_dc_port_calloc(1, sizeof(*e), OWN_CAPS, ESP_DC_COMPONENT_ESP_DC_PORT);
    if (e == NULL) {
        return NULL;
    }
    strlcpy(e->name, name, sizeof(e->name));
    e->ifa.ifa_name = e->name;
    e->ifa.ifa_flags = flags;
    e->ifa.ifa_addr = (struct sockaddr *)&e->addr;
    return e;
}

int getifaddrs(struct ifaddrs **ifap)
{
    if (ifap == NULL) {
        errno = EINVAL;
        return -1;
    }
    *ifap = NULL;
    struct ifaddrs **tail = ifap;
    for (esp_netif_t *netif = esp_netif_next_unsafe(NULL); netif != NULL; netif = esp_netif_next_unsafe(netif)) {
        if (!esp_netif_is_netif_up(netif)) {
            continue;
        }
        char name[8] = {0};
        if (esp_netif_get_netif_impl_name(netif, name) != ESP_OK) {
            strlcpy(name, "if", sizeof(name));
        }
        unsigned int flags = IFF_UP | IFF_RUNNING;
        if (strncmp(name, "lo", 2) == 0) {
            flags |= IFF_LOOPBACK;
        }

        esp_netif_ip_info_t ip;
        if (esp_netif_get_ip_info(netif, &ip) == ESP_OK && ip.ip.addr != 0) {
            struct entry *e = new_entry(name, flags);
            if (e == NULL) {
                goto oom;
            }
            struct sockaddr_in *sin = (struct sockaddr_in *)&e->addr;
            sin->sin_len = sizeof(*sin);
            sin->sin_family = AF_INET;
            sin->sin_addr.s_addr = ip.ip.addr;
            struct sockaddr_in *mask = (struct sockaddr_in *)&e->netmask;
            mask->sin_len = sizeof(*mask);
            mask->sin_family = AF_INET;
            mask->sin_addr.s_addr = ip.netmask.addr;
            e->ifa.ifa_netmask = (struct sockaddr *)&e->netmask;
            *tail = &e->ifa;
            tail = &e->ifa.ifa_next;
        }

#if CONFIG_LWIP_IPV6
        esp_ip6_addr_t ip6[LWIP_IPV6_NUM_ADDRESSES];
        int count = esp_netif_get_all_ip6(netif, ip6);
        for (int i = 0; i < count; ++i) {
            struct entry *e = new_entry(name, flags);
            if (e == NULL) {
                goto oom;
            }
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&e->addr;
            sin6->sin6_len = sizeof(*sin6);
            sin6->sin6_family = AF_INET6;
            memcpy(&sin6->sin6_addr, ip6[i].addr, sizeof(sin6->sin6_addr));
            sin6->sin6_scope_id = ip6[i].zone;
            *tail = &e->ifa;
            tail = &e->ifa.ifa_next;
        }
#endif
    }
    return 0;

oom:
    freeifaddrs(*ifap);
    *ifap = NULL;
    errno = ENOMEM;
    return -1;
}

void freeifaddrs(struct ifaddrs *ifa)
{
    while (ifa != NULL) {
        struct ifaddrs *next = ifa->ifa_next;
        free(ifa); /* the entry starts with its struct ifaddrs */
        ifa = next;
    }
}
