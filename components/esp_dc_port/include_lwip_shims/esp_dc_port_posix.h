/*
 * POSIX pieces lwIP leaves out, force-included into libjuice's and usrsctp's C sources by their
 * generated CMakeLists.txt (templates/). Each declaration is guarded so that an ESP-IDF release
 * which grows the real one wins.
 */
#ifndef ESP_DC_PORT_POSIX_H
#define ESP_DC_PORT_POSIX_H

#include <stddef.h>
#include <sys/socket.h>
#include <netdb.h>

#ifndef NI_MAXHOST
#define NI_MAXHOST 1025
#endif
#ifndef NI_MAXSERV
#define NI_MAXSERV 32
#endif
#ifndef NI_NUMERICHOST
#define NI_NUMERICHOST 0x01
#endif
#ifndef NI_NUMERICSERV
#define NI_NUMERICSERV 0x02
#endif
#ifndef NI_NAMEREQD
#define NI_NAMEREQD 0x08
#endif
#ifndef NI_DGRAM
#define NI_DGRAM 0x10
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Numeric-only getnameinfo (CONFIG_ESP_DC_PORT_SHIM_GETNAMEINFO). */
int esp_dc_port_getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen,
                            char *serv, socklen_t servlen, int flags);
#ifndef getnameinfo
#define getnameinfo esp_dc_port_getnameinfo
#endif

/* Hardware-RNG backed arc4random (CONFIG_ESP_DC_PORT_SHIM_RANDOM). */
void esp_dc_port_random(void *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* ESP_DC_PORT_POSIX_H */
