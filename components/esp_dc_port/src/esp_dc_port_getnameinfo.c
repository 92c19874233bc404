/*
 * getnameinfo() for numeric hosts and services, which is all libjuice and libdatachannel ask
 * for. lwIP has no reverse lookup, so a request without NI_NUMERICHOST fails with EAI_NONAME
 * when NI_NAMEREQD is set and falls back to the numeric form otherwise (as POSIX allows).
 */
#include <stdio.h>
#include <string.h>

#include "lwip/sockets.h"

#include "esp_dc_port_posix.h"

#ifndef EAI_NONAME
#define EAI_NONAME 200
#endif
#ifndef EAI_FAMILY
#define EAI_FAMILY 204
#endif
#ifndef EAI_OVERFLOW
#define EAI_OVERFLOW 208
#endif

int esp_dc_port_getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen,
                            char *serv, socklen_t servlen, int flags)
{
    if (sa == NULL) {
        return EAI_FAMILY;
    }
    if (!(flags & NI_NUMERICHOST) && (flags & NI_NAMEREQD)) {
        return EAI_NONAME;
    }
    unsigned port;
    const void *addr;
    if (sa->sa_family == AF_INET && salen >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        addr = &sin->sin_addr;
        port = ntohs(sin->sin_port);
#if LWIP_IPV6
    } else if (sa->sa_family == AF_INET6 && salen >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        addr = &sin6->sin6_addr;
        port = ntohs(sin6->sin6_port);
#endif
    } else {
        return EAI_FAMILY;
    }
    if (host != NULL && hostlen > 0) {
        if (inet_ntop(sa->sa_family, addr, host, hostlen) == NULL) {
            return EAI_OVERFLOW;
        }
    }
    if (serv != NULL && servlen > 0) {
        int n = snprintf(serv, servlen, "%u", port);
        if (n < 0 || (socklen_t)n >= servlen) {
            return EAI_OVERFLOW;
        }
    }
    return 0;
}
