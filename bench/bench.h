/* SPDX-License-Identifier: MIT */
/* kite-bench: what the C benchmark families share (util.c). */
#ifndef KITE_BENCH_H
#define KITE_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <gnutls/gnutls.h>

#include "kb.h"
#include "kite.h"

/* Families; each registers its rows with kb_register(). */
void bench_cipher_register(bool quick);
void bench_socket_register(bool quick);
void bench_handshake_register(bool quick);

/* The ciphers every family is parameterised by. */
struct bench_cipher {
	enum kite_cipher id;
	const char *name;                /* "AES-128-GCM": row names */
	const char *prio;                /* its GnuTLS priority keyword, without '+' */
	gnutls_cipher_algorithm_t gnutls;
};
#define BENCH_NCIPHERS 3
extern const struct bench_cipher bench_ciphers[BENCH_NCIPHERS];

/* GnuTLS priority selecting exactly one version and cipher, in buf. */
const char *bench_priority(char *buf, size_t len, enum kite_version v, const struct bench_cipher *c);

/* Certificates for the servers: self-signed, generated on first use into a
 * private temp dir (key mode 0600) that is removed at exit. */
enum bench_cert { BENCH_ECDSA_P256 = 0, BENCH_RSA_2048 = 1, BENCH_NCERTS = 2 };
struct bench_creds {
	const char *name;                /* "ECDSA-P256": row names */
	char cert[300], key[300];
};
/* NULL (with a message on stderr) if generation failed. */
const struct bench_creds *bench_creds(enum bench_cert which);

/*
 * Connected loopback TCP pair: fds[0] the client (receiving) side, fds[1]
 * the server (sending) side. kTLS needs TCP; socketpair() would not do.
 * Both ends have TCP_NODELAY, as TLS servers set it (nginx's tcp_nodelay):
 * without it, Nagle holds the second of two sub-MSS records until the
 * peer's delayed ACK, 40 ms later, and small transfers measure that timer.
 * Returns 0 or -errno.
 */
int bench_tcp_pair(int fds[2]);
/* A loopback listener on an ephemeral port; 0 or -errno. */
int bench_listen(int *fd, uint16_t *port);
/* A connected socket with TCP_NODELAY; fd or -errno. */
int bench_connect(uint16_t port);
/* TCP_NODELAY on fd; 0 or -errno. */
int bench_nodelay(int fd);

/*
 * Sender and receiver on different cores: the first two CPUs this process
 * may use. Returns how many there are (1: no pinning is done).
 */
int bench_cpus(int cpu[2]);
/* Pin the calling thread to cpu (cpu < 0: leave it), saving the old mask
 * in *old for bench_unpin(). 0 or -errno. */
struct bench_affinity { bool saved; unsigned char mask[128]; };
int bench_pin(int cpu, struct bench_affinity *old);
void bench_unpin(const struct bench_affinity *old);

/* CPU time of the calling thread (getrusage(RUSAGE_THREAD)), ns. */
struct bench_cpu { uint64_t user_ns, sys_ns; };
void bench_thread_cpu(struct bench_cpu *out);
/* CPU time of the whole process, all threads (getrusage(RUSAGE_SELF)), ns. */
void bench_process_cpu(struct bench_cpu *out);

/*
 * A file of size pseudo-random bytes for the socket paths: a memfd (shmem
 * page cache, like a hot file; sendfile(2) and splice work on it), created
 * once per size and kept for the life of the process. -errno on failure.
 */
int bench_data_file(size_t size);

/* KITE_REQUIRE_KTLS=1 (tests/uml/uml-run sets it): a kite kTLS row that
 * cannot offload fails instead of being skipped. */
bool bench_require_ktls(void);

/* KITE_IN_UML=1 (set by uml-run): inside User-Mode Linux, whose per-thread
 * CPU clocks advance in scheduler ticks; CPU counters are left out there. */
bool bench_in_uml(void);

/* How GnuTLS's own kTLS switch was set up by main(), for skip reasons;
 * never NULL. */
extern const char *bench_gnutls_ktls_config;
extern bool bench_gnutls_ktls_switch_on;

/* Blocking GnuTLS handshake; returns 0 or a GnuTLS error. */
int bench_gnutls_handshake(gnutls_session_t s);

#endif /* KITE_BENCH_H */
