/* SPDX-License-Identifier: MIT */
/* Helpers shared by kite's test programs. Tests exit 0 pass, 77 skip, 1 fail. */
#ifndef KITE_TEST_COMMON_H
#define KITE_TEST_COMMON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kite.h"

#define T_SKIP 77

/* Fail the test with a message (file:line), exit 1. */
#define t_fail(...) t_fail_at(__FILE__, __LINE__, __VA_ARGS__)
#define t_assert(cond, ...) \
	do { if (!(cond)) t_fail_at(__FILE__, __LINE__, "assertion `" #cond "` failed: " __VA_ARGS__); } while (0)
#define t_ok(expr) \
	do { long long t_r_ = (long long)(expr); \
	     if (t_r_ < 0) t_fail_at(__FILE__, __LINE__, "%s = %lld (%s)", #expr, t_r_, kite_strerror((int)t_r_)); } while (0)

__attribute__((noreturn, format(printf, 3, 4)))
void t_fail_at(const char *file, int line, const char *fmt, ...);
__attribute__((noreturn, format(printf, 1, 2)))
void t_skip(const char *fmt, ...);

/* KITE_REQUIRE_KTLS=1: kTLS must engage (set inside UML by tests/uml/uml-run). */
bool t_require_ktls(void);
/* Does this kernel offload version/cipher both ways (per the probe)? */
bool t_kernel_offloads(enum kite_version v, enum kite_cipher c);

/* Connected loopback TCP pair: fds[0] client side, fds[1] server side. */
void t_tcp_pair(int fds[2]);

/* A fresh directory with an ECDSA P-256 self-signed cert.pem / key.pem
 * (key mode 0600). Paths stay valid until exit; the dir is removed at exit. */
struct t_creds { char dir[256], cert[300], key[300]; };
void t_make_creds(struct t_creds *out);

/* Server and client contexts ready for t_tcp_pair sockets. prio may be NULL. */
struct kite_ctx *t_server_ctx(const struct t_creds *cr, const char *prio, unsigned ktls);
struct kite_ctx *t_client_ctx(const char *prio, unsigned ktls);

/* Priority string selecting exactly one version and cipher. Static buffer. */
const char *t_priority(enum kite_version v, enum kite_cipher c);

/* Counter from /proc/net/tls_stat, or -1 if absent. */
long long t_tls_stat(const char *name);

/* Deterministic pseudo-random bytes (xorshift) and a 64-bit FNV-1a hash. */
void t_fill(uint8_t *p, size_t n, uint64_t seed);
uint64_t t_hash(uint64_t h, const void *p, size_t n);
#define T_HASH_INIT 0xcbf29ce484222325ull

/* A temp file of n pseudo-random bytes (unlinked; fd open O_RDONLY). */
int t_temp_file(size_t n, uint64_t seed, uint64_t *hash);

/* After -EAGAIN: poll the connection's socket for what it waits for
 * (fails the test after 60 s without progress). */
void t_wait(struct kite_conn *c);

/* Helpers that fail the test on error; on an O_NONBLOCK socket they wait
 * with t_wait() and retry, so one test body covers both modes. */
void t_send_all(struct kite_conn *c, const void *buf, size_t n);
/* Read until EOF (close_notify) or n bytes; returns bytes read, hashes them. */
size_t t_recv_hash(struct kite_conn *c, size_t max, uint64_t *hash);
void t_handshake(struct kite_conn *c, const char *who);
/* kite_sendfile until len bytes went out. */
void t_sendfile_all(struct kite_conn *c, int fd, off_t *off, size_t len);

#endif
