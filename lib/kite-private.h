/* SPDX-License-Identifier: MIT */
/* Private to libkite and its tests: never installed. */
#ifndef KITE_PRIVATE_H
#define KITE_PRIVATE_H

#include <gnutls/gnutls.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "cipher.h"
#include "compat.h"
#include "kite.h"

/* Symbol rule: libkite is compiled with -fvisibility=hidden and only kite.h
 * switches visibility back to default, so nothing declared here can be
 * exported; libkite.map then pins the exported list. Private declarations
 * need no marking. */

/* Record content types (RFC 8446 5.1). */
enum {
	KITE_CT_CHANGE_CIPHER_SPEC = 20,
	KITE_CT_ALERT = 21,
	KITE_CT_HANDSHAKE = 22,
	KITE_CT_APPLICATION_DATA = 23,
};

/* Handshake message types that may arrive after the handshake. */
enum {
	KITE_HS_HELLO_REQUEST = 0,
	KITE_HS_NEW_SESSION_TICKET = 4,
	KITE_HS_KEY_UPDATE = 24,
};

#define KITE_MAX_RECORD 16384u

/* ---- Syscall seam (sys.c) ----------------------------------------------
 * Every syscall on the connection's socket that can give a rare kernel
 * answer goes through this table; tests replace it with kite_sys_set().
 * Functions return -1 and set errno, exactly like the libc calls.
 */
struct kite_sys {
	int (*setsockopt)(int fd, int level, int name, const void *val, socklen_t len);
	int (*getsockopt)(int fd, int level, int name, void *val, socklen_t *len);
	ssize_t (*sendmsg)(int fd, const struct msghdr *msg, int flags);
	ssize_t (*recvmsg)(int fd, struct msghdr *msg, int flags);
	ssize_t (*sendfile)(int out_fd, int in_fd, off_t *offset, size_t count);
	ssize_t (*pread)(int fd, void *buf, size_t count, off_t offset);
	/* Wipe key material (a memset the compiler cannot drop). In the seam
	 * so that tests can check every buffer that held keys is wiped. */
	void (*wipe)(void *p, size_t n);
	/* io_uring completions bypass libc: NULL (libc, no cost) or a test's
	 * filter that sees each result (enum kite_uop) and returns the one the
	 * engine acts on. A filter that turns an accepted fd into an error
	 * must close that fd. */
	int (*cqe)(int uop, int res);
};

/* What an io_uring operation did, for kite_sys.cqe (engine/uring.c). */
enum kite_uop {
	KITE_UOP_ACCEPT,
	KITE_UOP_RECV,        /* socket -> buffer (userspace TLS, plaintext) */
	KITE_UOP_RECVMSG,     /* kernel TLS RX, with the record type cmsg */
	KITE_UOP_READ,        /* file -> buffer (READ / READ_FIXED) */
	KITE_UOP_SPLICE_IN,   /* file -> pipe */
	KITE_UOP_SPLICE_OUT,  /* pipe -> socket */
	KITE_UOP_SEND,        /* buffer -> socket */
	KITE_UOP_SENDMSG,     /* close_notify through kernel TLS */
	KITE_UOP_OTHER,       /* poll, timeout, shutdown, cancel, close */
};

/* Wipe through the seam: every key buffer in libkite goes through here. */
void kite_wipe(void *p, size_t n);

extern const struct kite_sys *kite_sys;
/* Replace the seam (NULL restores libc). Not thread-safe: tests only. */
void kite_sys_set(const struct kite_sys *ops);
extern const struct kite_sys kite_sys_libc;

/* ---- Connection internals ------------------------------------------------ */

struct kite_ctx {
	/* One reference for the creator, one per connection: a context
	 * replaced at run time (certificate reload) lives until its last
	 * connection ends. */
	atomic_uint refs;
	atomic_bool frozen;     /* in use by a connection: setters refuse */
	enum kite_role role;
	gnutls_certificate_credentials_t cred;
	gnutls_priority_t prio;
	char *prio_str;
	gnutls_datum_t ticket_key;
	gnutls_datum_t alpn[4];
	unsigned nalpn;
	bool have_cred;
	unsigned ncred;          /* certificate/key pairs loaded (GnuTLS indexes 0..) */
	struct kite_sni_group *sni; /* pairs by server name (sni.c) */
	unsigned nsni;
	struct kite_sni_group *sni_last; /* the group of the pair loaded last */
	unsigned sni_last_idx;
	bool insecure_key_perms; /* kite_ctx_allow_insecure_key_perms() */
	bool verify;
	unsigned ktls_flags;
	char err[256];
};

void kite_ctx_ref(struct kite_ctx *ctx);

/* sni.c: certificates by server name, also for TLS 1.2 suite choice. */
int kite_sni_add(struct kite_ctx *ctx, const gnutls_datum_t *cert,
		 const gnutls_datum_t *key);
int kite_sni_set_ocsp(struct kite_ctx *ctx, const gnutls_datum_t *der);
void kite_sni_free(struct kite_ctx *ctx);
void kite_sni_attach(struct kite_conn *c);

/* One direction's backend: kernel TLS or userspace GnuTLS records. */
struct kite_tx_ops {
	ssize_t (*send)(struct kite_conn *c, const void *buf, size_t len);
	ssize_t (*sendfile)(struct kite_conn *c, int fd, off_t *off, size_t len);
	int (*close_notify)(struct kite_conn *c);
};
struct kite_rx_ops {
	ssize_t (*recv)(struct kite_conn *c, void *buf, size_t len);
};

extern const struct kite_tx_ops kite_tx_ktls, kite_tx_user;
extern const struct kite_rx_ops kite_rx_ktls, kite_rx_user;

struct kite_conn {
	struct kite_ctx *ctx;
	gnutls_session_t s;    /* NULL once both directions are in the kernel */
	int fd;
	short poll_events;
	int io_errno;          /* errno of the last failed push/pull */
	bool peer_eof;         /* the transport (or kTLS RX) read TCP EOF */
	bool handshake_done;
	bool tx_closed;        /* close_notify sent (or connection finished) */
	bool rx_eof;           /* close_notify received */
	int dead;              /* sticky -errno: connection unusable */
	int version;           /* enum kite_version or -1 */
	int cipher;            /* enum kite_cipher or -1 */
	const struct kite_tx_ops *tx;
	const struct kite_rx_ops *rx;
	/* Negotiated parameters, kept so the GnuTLS session (and the record
	 * keys inside it) can be freed once the kernel owns both directions. */
	char version_name[16];
	char cipher_name[32];
	char alpn[32];
	bool resumed;
	bool ktls[KITE_DIR_COUNT];
	int ktls_err[KITE_DIR_COUNT];
	char ktls_reason[KITE_DIR_COUNT][256];

	/* TLS 1.3 application traffic secrets, kept only while the kernel
	 * could need the next key; wiped otherwise. */
	uint8_t secret[KITE_DIR_COUNT][KITE_MAX_SECRET];
	size_t secret_len[KITE_DIR_COUNT];
	uint64_t key_updates[KITE_DIR_COUNT];

	/* AEAD usage tracking for the kernel TX key: records as last read back
	 * and a pessimistic estimate since then. */
	uint64_t tx_records;
	uint64_t tx_estimate;

	/* Userspace TX: bytes handed to gnutls_record_send that returned
	 * EAGAIN (GnuTLS holds the record). */
	size_t tx_pending;
	uint8_t *buf;          /* KITE_MAX_RECORD bytes for pread/control records: kite_conn_buf() */

	/* Fast-path switches in force (KITE_KTLS_TX_ZEROCOPY_RO,
	 * KITE_KTLS_RX_EXPECT_NO_PAD) and why (not), for kite_conn_info(). */
	bool fast[KITE_DIR_COUNT];
	char fast_reason[KITE_DIR_COUNT][128];

	/* A keylog function the embedder set on its own session: kite's hook
	 * takes its place and calls it (kite_conn_create_session()). */
	gnutls_keylog_func user_keylog;

	/* An owner that moves the records through memory (kite_conn_set_io;
	 * NULL: the socket alone). GnuTLS's transport pointer is always the
	 * conn: the keylog hook finds the conn there. */
	const struct kite_io *io;
	void *owner;

	char detail[256];
	char msg[384];
};

/* conn->buf, allocated at its first use (most connections never need it:
 * it is for pread() fallbacks and control records); NULL: out of memory. */
static inline uint8_t *kite_conn_buf(struct kite_conn *c)
{
	if (!c->buf)
		c->buf = malloc(KITE_MAX_RECORD);
	return c->buf;
}

/* ---- What the engine reads of a connection ---- */

/* Sticky -errno once the connection is unusable, else 0. */
static inline int kite_conn_dead(const struct kite_conn *c)
{
	return c->dead;
}

/* The handshake is done (and each direction's backend chosen). */
static inline bool kite_conn_ready(const struct kite_conn *c)
{
	return c->handshake_done;
}

/* Direction d belongs to kernel TLS. */
static inline bool kite_conn_ktls(const struct kite_conn *c, enum kite_dir d)
{
	return c->ktls[d];
}

/* The transport (or kTLS RX) read the peer's TCP FIN. */
static inline bool kite_conn_peer_eof(const struct kite_conn *c)
{
	return c->peer_eof;
}

/* The peer's close_notify arrived. */
static inline bool kite_conn_rx_eof(const struct kite_conn *c)
{
	return c->rx_eof;
}

/* The peer's FIN ended receiving only: the receive path marked the whole
 * connection dead for the missing close_notify, but its owner reads no
 * more and still sends. */
static inline void kite_conn_rx_over(struct kite_conn *c)
{
	c->dead = 0;
}

/* The peer closed TCP where close_notify was due (kernel TLS RX read a
 * FIN): notes it and returns -ECONNRESET with the reason. */
int kite_conn_truncated(struct kite_conn *c);

/* Plaintext bytes per record GnuTLS writes now (the peer may ask for less
 * than KITE_MAX_RECORD, RFC 8449). */
size_t kite_conn_record_size(const struct kite_conn *c);
/* Pessimistic count of records sent under the kernel TX key; it drops
 * when kite_ktls_account() read the real one back (a getsockopt). */
static inline uint64_t kite_conn_tx_estimate(const struct kite_conn *c)
{
	return c->tx_estimate;
}
/* Syscalls the key handoff made after the handshake: TCP_ULP once, then
 * one SOL_TLS setsockopt per direction tried (from the probe's answers). */
unsigned kite_conn_handoff_syscalls(const struct kite_conn *c);

/* ---- The GnuTLS transport (conn.c), one for every connection ---- */

/* An owner that moves a connection's records through memory (the engine's
 * rounds) instead of the socket. conn.c's transport asks it first; every
 * hook may answer KITE_IO_SOCKET: "not now, use the socket". */
#define KITE_IO_SOCKET ((ssize_t)INT32_MIN)
struct kite_io {
	/* Records GnuTLS writes: bytes taken, -errno (-EAGAIN: full). */
	ssize_t (*push)(void *owner, const giovec_t *iov, int n);
	/* Bytes for GnuTLS: a count, 0 at the end, -errno (-EAGAIN). */
	ssize_t (*pull)(void *owner, void *buf, size_t len);
	/* Bytes ready for GnuTLS: 1 or 0; -1: poll the socket, never waiting. */
	int (*ready)(void *owner);
	/* The transport made a syscall for the owner (push: sending). */
	void (*syscall)(void *owner, bool push);
	/* The peer's end reached GnuTLS's read: true keeps it from GnuTLS
	 * ("not yet"), so that records still queued go out. */
	bool (*hold_eof)(void *owner);
};
/* Route c's transport through io (owner: its argument); NULL: the socket
 * alone. io must outlive c's use of it. */
void kite_conn_set_io(struct kite_conn *c, const struct kite_io *io, void *owner);


/* Record a detail message for the next kite_conn_strerror(). Returns err. */
int kite_conn_fail(struct kite_conn *c, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ktls.c: install one direction from GnuTLS's current state. All checks
 * precede the first SOL_TLS setsockopt; key material is wiped on return. */
KITE_MUST_CHECK int kite_ktls_install(struct kite_conn *c, enum kite_dir d);
/* After direction d went to the kernel: the fast-path switch the policy
 * asks for (TLS_TX_ZEROCOPY_RO / TLS_RX_EXPECT_NO_PAD). Never fails the
 * connection: a refusal leaves c->fast[d] false with the reason. */
void kite_ktls_fastpath(struct kite_conn *c, enum kite_dir d);
/* TLS_TX/TLS_RX with the next TLS 1.3 key; updates c->secret. */
KITE_MUST_CHECK int kite_ktls_rekey(struct kite_conn *c, enum kite_dir d);
/* Send one non-data record through kernel TLS (cmsg TLS_SET_RECORD_TYPE). */
KITE_MUST_CHECK int kite_ktls_send_control(struct kite_conn *c, uint8_t type, const void *buf,
					   size_t len);
/* A kernel TLS TX socket answered EAGAIN: make TCP send what it holds, or
 * the room the caller waits for may never come (ktls.c says why). */
void kite_ktls_push(int fd);
/* Called by the TX path after a successful kernel send of len bytes in
 * `calls` syscalls: keeps the AEAD usage limit. */
KITE_MUST_CHECK int kite_ktls_account(struct kite_conn *c, size_t calls, size_t len);

/* Map a GnuTLS error code to -errno, keeping GnuTLS's text as detail. */
int kite_gnutls_err(struct kite_conn *c, int gerr, const char *what);

/* caps.c. kite_caps_set() makes kite_caps_get() return c (NULL: the real
 * probe) so tests can simulate another kernel. Tests only. */
const char *kite_caps_ulp_reason(int err);
void kite_caps_set(const struct kite_caps *c);

/* ---- Engine (engine*.c) ------------------------------------------------- */

/* io_ktls.c, for the engine: bytes still missing of a control record that
 * starts at p (0: complete), and its handling (alerts, NewSessionTicket,
 * KeyUpdate) once whole. handle returns 0 or the connection's -errno;
 * c->rx_eof is set by close_notify. */
size_t kite_ktls_ctrl_missing(uint8_t type, const uint8_t *p, size_t have);
KITE_MUST_CHECK int kite_ktls_handle_control(struct kite_conn *c, uint8_t type, const uint8_t *p,
					     size_t have);

#endif /* KITE_PRIVATE_H */
