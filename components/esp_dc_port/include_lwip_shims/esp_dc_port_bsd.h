/*
 * BSD socket-layer constants newlib and lwIP leave out, force-included into usrsctp's sources on
 * lwIP targets by its generated CMakeLists.txt. usrsctp's user_socketvar.h and
 * sctp_os_userspace.h define them per OS (FreeBSD, Apple, Windows, native client) and take
 * glibc's on Linux; these are the BSD values. Each is guarded so a C library that has it wins.
 */
#ifndef ESP_DC_PORT_BSD_H
#define ESP_DC_PORT_BSD_H

#include <sys/socket.h>

/* user_socket.c: the iovec count sctp_lower_sosend accepts (Linux and BSD: 1024). */
#ifndef UIO_MAXIOV
#define UIO_MAXIOV 1024
#endif
/* user_socket.c: "restart the system call", a kernel-only errno; BSD's value never collides. */
#ifndef ERESTART
#define ERESTART (-1)
#endif
/* sctp_pcb.c: ports below it need privilege to bind (BSD and Linux: 1024). */
#ifndef IPPORT_RESERVED
#define IPPORT_RESERVED 1024
#endif
/* sctp_output.c walks control messages with it: the alignment lwIP's own CMSG_* macros use. */
#ifndef CMSG_ALIGN
#define CMSG_ALIGN(len) ALIGN_H(len)
#endif

#endif /* ESP_DC_PORT_BSD_H */
