/* SPDX-License-Identifier: MIT */
/*
 * Kernel TLS constants that some C library headers lack. linux/tls.h
 * (Linux >= 5.11 headers, checked by meson) carries the crypto_info structs
 * and TLS_TX/TLS_RX, but SOL_TLS is defined in the kernel's non-uapi
 * linux/socket.h, which a C library's <sys/socket.h> may or may not copy,
 * and older <netinet/tcp.h> lack TCP_ULP. Both values are kernel ABI and
 * never change. Include this instead of linux/tls.h; kite-private.h does.
 */
#ifndef KITE_COMPAT_H
#define KITE_COMPAT_H

#include <linux/tls.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#ifndef SOL_TLS
#define SOL_TLS 282 /* include/linux/socket.h */
#endif
#ifndef TCP_ULP
#define TCP_ULP 31 /* include/uapi/linux/tcp.h: setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls") */
#endif

#endif /* KITE_COMPAT_H */
