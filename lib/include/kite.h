/* SPDX-License-Identifier: MIT */
/*
 * kite.h - TLS handshake in GnuTLS, bulk data through Linux kernel TLS.
 *
 * Conventions (all functions):
 *   - Success is 0 or a byte count; failure is a negative errno value.
 *     Nothing sets or relies on the global errno, nothing returns GnuTLS codes.
 *   - Fixed meanings: -EAGAIN the socket would block (retry after poll(),
 *     see kite_conn_poll_events()); -EOPNOTSUPP kernel offload impossible;
 *     -EPROTO the peer misbehaved; -EINVAL caller misuse.
 *     kite_conn_strerror() turns any of them into a message with detail.
 *   - create/destroy pairs; destroy(NULL) is a no-op.
 *   - Blocking behaviour follows the socket: on a blocking fd every call
 *     completes (or fails); on an O_NONBLOCK fd calls may return -EAGAIN.
 */
#ifndef KITE_H
#define KITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define KITE_MUST_CHECK __attribute__((warn_unused_result))
#else
#define KITE_MUST_CHECK
#endif

struct kite_ctx;
struct kite_conn;

enum kite_role { KITE_SERVER = 0, KITE_CLIENT = 1 };

/* Directions of a connection; used as array indices. */
enum kite_dir { KITE_TX = 0, KITE_RX = 1, KITE_DIR_COUNT = 2 };

/* Protocol versions kite can hand to the kernel. */
enum kite_version { KITE_TLS12 = 0, KITE_TLS13 = 1, KITE_VERSION_COUNT = 2 };

/* AEADs kite can hand to the kernel. */
enum kite_cipher {
	KITE_AES_128_GCM = 0,
	KITE_AES_256_GCM = 1,
	KITE_CHACHA20_POLY1305 = 2,
	KITE_AES_128_CCM = 3,
	KITE_CIPHER_COUNT = 4,
};

/* Offload policy (kite_ctx_set_ktls), a bit set. */
#define KITE_KTLS_TX      (1u << 0) /* try kernel TLS for sending */
#define KITE_KTLS_RX      (1u << 1) /* try kernel TLS for receiving */
#define KITE_KTLS_REQUIRE (1u << 2) /* handshake fails if a wanted direction cannot be offloaded */
#define KITE_KTLS_DEFAULT (KITE_KTLS_TX | KITE_KTLS_RX)

/* ---- Library-wide ------------------------------------------------------ */

/* Human-readable text for a -errno returned by kite; never NULL. */
const char *kite_strerror(int err);

/* Names for the enums above ("TLS1.3", "AES-128-GCM", "tx"); never NULL. */
const char *kite_version_name(enum kite_version v);
const char *kite_cipher_name(enum kite_cipher c);
const char *kite_dir_name(enum kite_dir d);

/*
 * Kernel capabilities, probed once per process on a loopback TCP pair (real
 * setsockopt attempts, no version parsing). Each field is 0 when available
 * or the -errno the kernel answered; reason strings explain and are never
 * NULL. The result is static and valid for the life of the process.
 */
struct kite_caps {
	int ulp;                 /* TCP_ULP "tls" */
	const char *ulp_reason;
	int offload[KITE_VERSION_COUNT][KITE_CIPHER_COUNT][KITE_DIR_COUNT];
	const char *offload_reason[KITE_VERSION_COUNT][KITE_CIPHER_COUNT][KITE_DIR_COUNT];
	int rekey;               /* TLS 1.3 key update of an installed key (Linux >= 6.14) */
	const char *rekey_reason;
	int rx_no_pad;           /* TLS_RX_EXPECT_NO_PAD (Linux >= 6.0) */
	const char *rx_no_pad_reason;
};

/* The process-wide probe result; runs the probe on first call (thread-safe). */
const struct kite_caps *kite_caps_get(void);

/* ---- Context: credentials and policy, shared by many connections ------ */

/*
 * Create a context for one role. The context is configured with the setters
 * below before its first connection; after that it is read-only (setters
 * return -EBUSY) and may be shared between threads.
 */
KITE_MUST_CHECK int kite_ctx_create(struct kite_ctx **out, enum kite_role role);
void kite_ctx_destroy(struct kite_ctx *ctx);

/* PEM certificate chain and private key. Required for servers. The key file
 * must not be readable by group/other (-EPERM otherwise). */
KITE_MUST_CHECK int kite_ctx_set_credentials(struct kite_ctx *ctx, const char *cert_file,
					     const char *key_file);

/*
 * Servers: generate an ephemeral ECDSA P-256 self-signed certificate for
 * `name` (valid 30 days, key only in memory). If fingerprint is not NULL it
 * receives the SHA-256 fingerprint as "AB:CD:..." (96 bytes with the NUL).
 */
KITE_MUST_CHECK int kite_ctx_set_ephemeral_cert(struct kite_ctx *ctx, const char *name,
						char fingerprint[96]);

/* Clients: PEM file of trusted CAs; without one (or with verify off) the
 * server certificate is not checked. */
KITE_MUST_CHECK int kite_ctx_set_ca_file(struct kite_ctx *ctx, const char *ca_file);
KITE_MUST_CHECK int kite_ctx_set_verify(struct kite_ctx *ctx, bool verify);

/*
 * GnuTLS priority string. NULL restores the default: TLS 1.3 and 1.2 with
 * only the AEADs this kernel can offload (or, if it can offload none, the
 * AEADs kite knows how to offload). -EINVAL with detail for a bad string.
 */
KITE_MUST_CHECK int kite_ctx_set_priority(struct kite_ctx *ctx, const char *priority);

/* The priority string in force (the default expanded); owned by ctx. */
const char *kite_ctx_priority(const struct kite_ctx *ctx);

/* Offload policy: KITE_KTLS_* bits. Default KITE_KTLS_DEFAULT. */
KITE_MUST_CHECK int kite_ctx_set_ktls(struct kite_ctx *ctx, unsigned flags);

/* Servers: enable TLS 1.3 session tickets (resumption) with a fresh key. */
KITE_MUST_CHECK int kite_ctx_enable_tickets(struct kite_ctx *ctx);

/* Last detailed error of a context setter; never NULL. */
const char *kite_ctx_error(const struct kite_ctx *ctx);

/* ---- Connection ---------------------------------------------------------- */

/*
 * Wrap a connected TCP socket. The fd stays owned by the caller and must
 * outlive the connection; kite never closes it. The context must outlive
 * the connection.
 */
KITE_MUST_CHECK int kite_conn_create(struct kite_conn **out, struct kite_ctx *ctx, int fd);
void kite_conn_destroy(struct kite_conn *conn);

/* Clients: server name for SNI and certificate verification. */
KITE_MUST_CHECK int kite_conn_set_server_name(struct kite_conn *conn, const char *name);

/*
 * Drive the handshake. Returns 0 when it is complete and the kernel offload
 * has been attempted for each direction the policy allows, -EAGAIN on a
 * non-blocking socket (poll for kite_conn_poll_events() and call again),
 * -EPROTO / -ECONNRESET / ... on failure. With KITE_KTLS_REQUIRE, returns
 * -EOPNOTSUPP if a wanted direction could not be offloaded.
 */
KITE_MUST_CHECK int kite_handshake(struct kite_conn *conn);

/* POLLIN and/or POLLOUT: what the last -EAGAIN was waiting for. */
short kite_conn_poll_events(const struct kite_conn *conn);

/* The socket the connection was created on (-EINVAL for NULL). */
int kite_conn_fd(const struct kite_conn *conn);

/*
 * Send application data. Returns the bytes taken (on a blocking socket all
 * of them), or -errno. After -EAGAIN the caller must call again with the
 * same buffer (kite may already hold an encrypted record of it).
 */
KITE_MUST_CHECK ssize_t kite_send(struct kite_conn *conn, const void *buf, size_t len);

/*
 * Receive application data. Returns bytes (> 0), 0 on orderly close by the
 * peer (close_notify), or -errno: -EPROTO for a fatal alert or a bad record,
 * -EKEYEXPIRED when the peer updated its keys and this kernel cannot follow
 * (the connection is then finished; no wrong byte is ever returned).
 * TLS 1.3 NewSessionTicket and KeyUpdate messages are handled internally.
 */
KITE_MUST_CHECK ssize_t kite_recv(struct kite_conn *conn, void *buf, size_t len);

/*
 * Send len bytes of file fd starting at *offset, advancing *offset by what
 * was sent (like sendfile(2)). Uses sendfile(2) into kernel TLS when TX is
 * offloaded, pread + GnuTLS records otherwise. -ENODATA if the file ends
 * before any byte could be sent. Partial counts as kite_send().
 */
KITE_MUST_CHECK ssize_t kite_sendfile(struct kite_conn *conn, int fd, off_t *offset, size_t len);

/*
 * Send close_notify (an alert record, through the kernel if TX is
 * offloaded). Further sends fail with -EPIPE. The socket stays open; the
 * caller may still read until kite_recv() returns 0.
 */
KITE_MUST_CHECK int kite_shutdown(struct kite_conn *conn);

/*
 * TLS 1.3: update our sending key (RFC 8446 4.6.3) now. On the kernel path
 * this needs a kernel that can rekey (kite_caps_get()->rekey == 0);
 * otherwise -EOPNOTSUPP and nothing changes. kite also does this by itself
 * before the AEAD usage limit (RFC 8446 5.5); where it cannot, it sends
 * close_notify and the next send fails with -EKEYEXPIRED.
 */
KITE_MUST_CHECK int kite_key_update(struct kite_conn *conn);

/* What was negotiated and what the kernel does. */
struct kite_conn_info {
	enum kite_role role;
	bool handshake_done;
	int version;          /* enum kite_version, or -1 if not offloadable/unknown */
	int cipher;           /* enum kite_cipher, or -1 */
	const char *version_name; /* e.g. "TLS1.3"; never NULL */
	const char *cipher_name;  /* e.g. "AES-128-GCM"; never NULL */
	bool resumed;
	bool ktls[KITE_DIR_COUNT];        /* direction offloaded to the kernel */
	int ktls_error[KITE_DIR_COUNT];   /* 0, or -errno why not */
	const char *ktls_reason[KITE_DIR_COUNT]; /* "kernel TLS" or why not; never NULL */
	uint64_t records_tx;  /* records sent under the current TX key (kernel path: last read back) */
	uint64_t key_updates[KITE_DIR_COUNT];
};

int kite_conn_info(const struct kite_conn *conn, struct kite_conn_info *info);

/* Message for err with this connection's last detail (owned by conn, valid
 * until the next call on conn); never NULL. */
const char *kite_conn_strerror(struct kite_conn *conn, int err);

#ifdef __cplusplus
}
#endif
#endif /* KITE_H */
