/* SPDX-License-Identifier: MIT */
/*
 * kite.h - TLS handshake in GnuTLS, bulk data through Linux kernel TLS.
 *
 * Conventions (all functions):
 *   - Success is 0 or a byte count; failure is a negative errno value.
 *     Nothing sets or relies on the global errno, nothing returns GnuTLS codes.
 *   - Fixed meanings: -EAGAIN the socket would block (retry after poll(),
 *     see kite_conn_poll_events()); -EOPNOTSUPP kernel offload impossible;
 *     -EPROTO the peer misbehaved; -EINVAL caller misuse; -EALREADY a
 *     setting changed after a connection started using it.
 *     kite_conn_strerror() turns any of them into a message with detail.
 *   - create/destroy pairs; destroy(NULL) is a no-op.
 *   - Blocking behaviour follows the socket: on a blocking fd every call
 *     completes (or fails); on an O_NONBLOCK fd calls may return -EAGAIN.
 *
 * ABI rule (a program built against an older kite.h keeps working with a
 * newer libkite.so.0):
 *   - Handles (kite_ctx, kite_conn, kite_engine, kite_stream) are opaque.
 *   - A struct the caller allocates (kite_conn_info, kite_engine_config,
 *     kite_engine_info, kite_engine_stats) never changes size: it ends in
 *     reserved space, and a new member takes the place of reserved words at
 *     the end of what is used, so older members keep their offsets. The
 *     library fills reserved space with zeros; kite_engine_config_init()
 *     zeroes it, and kite_engine_create() refuses a config whose reserved
 *     words are not zero (a newer caller's setting an older library cannot
 *     honour fails instead of being ignored).
 *   - A struct only the library allocates (kite_caps, read through a const
 *     pointer) may grow at its end.
 *   - Arrays indexed by an enum are sized by a *_SLOTS constant that stays
 *     fixed, so a new cipher, version or path adds an index, not a stride.
 *   - Enum values and #define'd flags are never renumbered or reused.
 *   - Symbols are versioned (libkite.map): a new function goes into the
 *     node of the release that adds it.
 * lib/abi/libkite.abi is the committed description of this ABI; the test
 * suite compares every build against it (lib/abi/README.md).
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
/* libkite is compiled with hidden visibility: what this header declares is
 * the only thing it can export (libkite.map then pins the list). */
#pragma GCC visibility push(default)
#else
#define KITE_MUST_CHECK
#endif

struct kite_ctx;
struct kite_conn;
/* GnuTLS's session type (gnutls_session_t is a pointer to it), declared
 * here so that kite.h does not need <gnutls/gnutls.h>. */
struct gnutls_session_int;

enum kite_role { KITE_SERVER = 0, KITE_CLIENT = 1 };

/* Directions of a connection; used as array indices. */
enum kite_dir { KITE_TX = 0, KITE_RX = 1, KITE_DIR_COUNT = 2 };

/* Protocol versions kite can hand to the kernel. */
enum kite_version { KITE_TLS12 = 0, KITE_TLS13 = 1, KITE_VERSION_COUNT = 2 };

/* Array sizes for enum-indexed arrays in structs (ABI: never change). */
#define KITE_VERSION_SLOTS 4
#define KITE_CIPHER_SLOTS 8

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
/*
 * Kernel fast-path switches, off by default because each changes a
 * contract. Applied per connection right after its direction went to the
 * kernel; a kernel that refuses one keeps the connection offloaded without
 * it, and kite_conn_info() says why.
 *
 * KITE_KTLS_TX_ZEROCOPY_RO (TLS_TX_ZEROCOPY_RO, Linux >= 5.19): sendfile
 * pages go to a NIC with TLS offload without the kernel's copy. Only NIC
 * (device) offload uses it; software kTLS copies either way. The file must
 * not change while it is being sent: TCP may retransmit a segment, and the
 * NIC then encrypts the page as it is at that moment. If the bytes changed,
 * the retransmitted record no longer matches the tag the peer checks: the
 * peer's TLS stack reports a record authentication failure (bad_record_mac
 * alert) and the connection ends. The peer never accepts the changed bytes,
 * but the transfer fails. Serve only files that are replaced by rename.
 *
 * KITE_KTLS_RX_EXPECT_NO_PAD (TLS_RX_EXPECT_NO_PAD, Linux >= 6.0, TLS 1.3
 * only): the kernel decrypts straight into the kite_recv() buffer, trusting
 * that the peer does not pad records. A padded record is decrypted again
 * through a kernel buffer (slower, still correct; /proc/net/tls_stat
 * TlsDecryptRetry counts it). Ignored for TLS 1.2.
 */
#define KITE_KTLS_TX_ZEROCOPY_RO   (1u << 3)
#define KITE_KTLS_RX_EXPECT_NO_PAD (1u << 4)

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
	/* [version][cipher][dir]; entries past the *_COUNTs are unused. */
	int offload[KITE_VERSION_SLOTS][KITE_CIPHER_SLOTS][KITE_DIR_COUNT];
	const char *offload_reason[KITE_VERSION_SLOTS][KITE_CIPHER_SLOTS][KITE_DIR_COUNT];
	int rekey;               /* TLS 1.3 key update of an installed key (Linux >= 6.14) */
	const char *rekey_reason;
	int rx_no_pad;           /* TLS_RX_EXPECT_NO_PAD (Linux >= 6.0) */
	const char *rx_no_pad_reason;
	int tx_zerocopy_ro;      /* TLS_TX_ZEROCOPY_RO (Linux >= 5.19) */
	const char *tx_zerocopy_ro_reason;
};

/* The process-wide probe result; runs the probe on first call (thread-safe). */
const struct kite_caps *kite_caps_get(void);

/* ---- Context: credentials and policy, shared by many connections ------ */

/*
 * Create a context for one role. The context is configured with the setters
 * below before its first connection; after that it is read-only (setters
 * return -EALREADY) and may be shared between threads. Connections hold a
 * reference: kite_ctx_destroy() drops the creator's, and the context is
 * freed when its last connection is destroyed (so a server can replace its
 * context, e.g. to reload a certificate, while old connections finish).
 */
KITE_MUST_CHECK int kite_ctx_create(struct kite_ctx **out, enum kite_role role);
void kite_ctx_destroy(struct kite_ctx *ctx);

/* PEM certificate chain and private key. Required for servers. The key file
 * must not be readable or writable by others (-EPERM otherwise) unless
 * kite_ctx_allow_insecure_key_perms() said so first. May be called again
 * (as may kite_ctx_add_credentials_mem()) to add further pairs: GnuTLS
 * picks the pair whose certificate names the client's SNI and whose key
 * type the client's signature algorithms allow; the first pair otherwise. */
KITE_MUST_CHECK int kite_ctx_set_credentials(struct kite_ctx *ctx, const char *cert_file,
					     const char *key_file);

/* Like kite_ctx_set_credentials() from PEM in memory (read by the caller,
 * for example from descriptors kept open after dropping privileges). The
 * buffers are copied; the caller wipes its copy of the key. 0, -EINVAL with
 * detail in kite_ctx_error(), -EBUSY once in use. */
KITE_MUST_CHECK int kite_ctx_add_credentials_mem(struct kite_ctx *ctx, const void *cert_pem,
						 size_t cert_len, const void *key_pem,
						 size_t key_len);

/* Servers: a DER OCSP response to staple for the pair added last. GnuTLS
 * checks it belongs to that chain, and staples it only while it is valid
 * (never after its nextUpdate). 0; -EKEYEXPIRED already expired; -EINVAL
 * no pair yet or not a response for it; -EBUSY once in use. */
KITE_MUST_CHECK int kite_ctx_set_ocsp_response(struct kite_ctx *ctx, const void *der,
					       size_t len);

/* Accept private key and ticket key files that others can read or write
 * (default: refuse them with -EPERM). For test setups that cannot chmod;
 * a key others can read is a key others have. */
KITE_MUST_CHECK int kite_ctx_allow_insecure_key_perms(struct kite_ctx *ctx, bool allow);

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

/* Offload policy: KITE_KTLS_* bits (fast-path switches included).
 * Default KITE_KTLS_DEFAULT. -EINVAL for unknown bits. */
KITE_MUST_CHECK int kite_ctx_set_ktls(struct kite_ctx *ctx, unsigned flags);

/* Servers: enable TLS 1.3 session tickets (resumption) with a fresh key. */
KITE_MUST_CHECK int kite_ctx_enable_tickets(struct kite_ctx *ctx);

/*
 * Servers: session ticket key from a file of exactly KITE_TICKET_KEY_SIZE
 * random bytes (`head -c 64 /dev/urandom > FILE`; not accessible to other
 * users), so that servers sharing the file resume each other's sessions.
 * Enables tickets. -EINVAL wrong size, -EPERM bad permissions, -ENOENT.
 */
#define KITE_TICKET_KEY_SIZE 64
KITE_MUST_CHECK int kite_ctx_set_ticket_key_file(struct kite_ctx *ctx, const char *path);

/* The same from memory: exactly KITE_TICKET_KEY_SIZE bytes, copied (the
 * caller wipes its buffer). Enables tickets. 0, -EINVAL, -ENOMEM. */
KITE_MUST_CHECK int kite_ctx_set_ticket_key(struct kite_ctx *ctx, const void *key, size_t len);

/* ALPN protocols to offer/accept, most preferred first (at most 4), e.g.
 * {"http/1.1"}. A server then refuses clients that offer only others. */
KITE_MUST_CHECK int kite_ctx_set_alpn(struct kite_ctx *ctx, const char *const *protos, size_t n);

/* Last detailed error of a context setter; never NULL. */
const char *kite_ctx_error(const struct kite_ctx *ctx);

/* ---- Connection ---------------------------------------------------------- */

/*
 * Wrap a connected TCP socket. The fd stays owned by the caller and must
 * outlive the connection; kite never closes it. The connection keeps the
 * context alive.
 */
KITE_MUST_CHECK int kite_conn_create(struct kite_conn **out, struct kite_ctx *ctx, int fd);
void kite_conn_destroy(struct kite_conn *conn);

/*
 * Bring your own GnuTLS session. Both calls need <gnutls/gnutls.h> (the
 * session is passed as its pointer type, gnutls_session_t). ctx supplies
 * the role (it must be the session's: KITE_SERVER for GNUTLS_SERVER) and
 * the offload policy (kite_ctx_set_ktls); its credentials, priority,
 * tickets and ALPN are not used: the session's own configuration is. fd is
 * the connected TCP socket the session talks over; as with
 * kite_conn_create() it stays the caller's and must outlive the connection.
 *
 * Ownership, the same for both calls: when *out is set on return (0, or
 * the -EOPNOTSUPP / -EPROTO of kite_conn_adopt_session() below), the
 * connection owns the session: kite replaces its transport callbacks and
 * frees it (gnutls_deinit) in kite_conn_destroy() - or earlier, once both
 * directions are in the kernel, so that GnuTLS's copy of the keys is wiped.
 * The caller must not use or free the session after that. When *out is
 * NULL on return, the session is still the caller's, untouched. Session
 * callbacks that read gnutls_session_get_ptr() keep working: kite uses the
 * transport pointer, not the session pointer.
 */

/*
 * A session whose handshake the caller completed (gnutls_handshake()
 * returned 0), with any records already exchanged. The kernel offload is
 * attempted at once, with the same checks and reasons as after
 * kite_handshake(); data GnuTLS already decrypted but the caller has not
 * read keeps RX in userspace (reason "GnuTLS holds received data").
 * kite_handshake() then returns 0 at once.
 * TLS 1.3 key updates on an offloaded direction need the traffic secrets,
 * which GnuTLS reveals only during the handshake: here kite has none, so a
 * peer's KeyUpdate on kernel RX ends the connection with -EKEYEXPIRED,
 * kite_key_update() on kernel TX returns -EOPNOTSUPP, and at the AEAD
 * usage limit kite sends close_notify (as on kernels that cannot rekey).
 * Use kite_conn_create_session() to keep key updates.
 * Returns 0; -EINVAL (NULL argument, fd < 0, handshake not complete;
 * *out NULL); -ENOMEM (*out NULL); with KITE_KTLS_REQUIRE, -EOPNOTSUPP if
 * a wanted direction could not be offloaded (*out set, the connection is
 * unusable: destroy it); -EPROTO if GnuTLS set up kernel TLS itself (*out
 * set, unusable).
 */
KITE_MUST_CHECK int kite_conn_adopt_session(struct kite_conn **out, struct kite_ctx *ctx,
					    struct gnutls_session_int *session, int fd);

/*
 * A session the caller configured (credentials, priority, SNI or
 * certificate callbacks, ALPN, ...) whose handshake has not started. kite
 * drives it with kite_handshake() (blocking or non-blocking, following the
 * socket) and then offloads as for its own sessions, key updates included
 * (kite watches the traffic secrets through the session's keylog hook and
 * still calls a keylog function the caller had set). Returns 0, -EINVAL
 * (NULL argument, fd < 0, handshake already started), -ENOMEM; *out is
 * set only on 0.
 */
KITE_MUST_CHECK int kite_conn_create_session(struct kite_conn **out, struct kite_ctx *ctx,
					     struct gnutls_session_int *session, int fd);

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
 * sendfile(2) has no MSG_NOSIGNAL: a process whose peers may reset must
 * ignore SIGPIPE (kite does not change signal dispositions for you).
 * While the socket's SO_SNDBUF is under 256 KiB (as reported), kernel TLS
 * gets one record per sendfile(2) call: larger calls can stall in Linux
 * 6.1's kTLS with such a buffer (lib/io_ktls.c).
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
	char alpn[32];        /* negotiated ALPN protocol, "" if none */
	bool ktls[KITE_DIR_COUNT];        /* direction offloaded to the kernel */
	int ktls_error[KITE_DIR_COUNT];   /* 0, or -errno why not */
	const char *ktls_reason[KITE_DIR_COUNT]; /* "kernel TLS" or why not; never NULL */
	uint64_t records_tx;  /* records sent under the current TX key (kernel path: last read back) */
	uint64_t key_updates[KITE_DIR_COUNT];
	/* The fast-path switches (KITE_KTLS_TX_ZEROCOPY_RO,
	 * KITE_KTLS_RX_EXPECT_NO_PAD) as the kernel reports them on this
	 * socket; the reasons say "on", "not requested" or why not (never
	 * NULL). */
	bool tx_zerocopy_ro;
	bool rx_expect_no_pad;
	const char *tx_zerocopy_ro_reason;
	const char *rx_expect_no_pad_reason;
	uint64_t reserved[16];  /* ABI: zero; later members come from here */
};

int kite_conn_info(const struct kite_conn *conn, struct kite_conn_info *info);

/* Message for err with this connection's last detail (owned by conn, valid
 * until the next call on conn); never NULL. */
const char *kite_conn_strerror(struct kite_conn *conn, int err);

/* ==== Engine: many connections per thread over io_uring ==================
 *
 * One struct kite_engine per thread owns an io_uring (or, where io_uring is
 * unavailable, epoll) event loop. It accepts connections (multishot accept
 * on SO_REUSEPORT listeners), drives each TLS handshake by readiness, hands
 * the keys to kernel TLS, then works through a queue per stream: bytes,
 * file ranges (io_uring SPLICE file -> pipe -> socket into kTLS, READ_FIXED
 * -> SEND for small ranges, GnuTLS records where the kernel cannot encrypt),
 * and received data delivered to a callback. Nothing in the loop blocks.
 *
 * Threading: an engine is used by one thread at a time; with io_uring
 * SINGLE_ISSUER it must be the thread that first calls kite_engine_run().
 * kite_engine_stop() is the only call allowed from other threads (and from
 * signal handlers). Callbacks run inside kite_engine_run() and may call any
 * kite_stream_* / kite_engine_* function except kite_engine_run/destroy.
 */
struct kite_engine;
struct kite_stream;

/* The rungs of the runtime ladder, best first. */
enum kite_engine_backend {
	KITE_ENGINE_AUTO = 0,        /* config only: best rung that works here */
	KITE_ENGINE_URING = 1,       /* io_uring: SINGLE_ISSUER|DEFER_TASKRUN (or the
				      * best flags accepted), registered buffers,
				      * multishot accept */
	KITE_ENGINE_URING_BASIC = 2, /* io_uring without setup flags, registered
				      * buffers or multishot operations */
	KITE_ENGINE_EPOLL = 3,       /* epoll + sendfile(2) / sendmsg / recvmsg */
};

struct kite_engine_config {
	/* TLS context (server or client role) shared by all streams; NULL:
	 * plaintext TCP (the benchmark baseline). Must outlive the engine. */
	struct kite_ctx *ctx;

	/* Callbacks (any may be NULL). Every stream gets exactly one on_close,
	 * also when its handshake fails or the engine is destroyed
	 * (-ECANCELED); the stream pointer is invalid after it returns. err is
	 * 0 after a graceful kite_stream_close(), else -errno: -ETIMEDOUT
	 * (handshake, idle or stalled-send timeout), -ENODATA (file shorter
	 * than queued), -ECONNRESET, -EPROTO, -EAGAIN (the io_uring
	 * submission queue had no room for the stream's next operation:
	 * raise ring_entries), ... */
	void (*on_open)(struct kite_stream *s);  /* handshake done, offload decided */
	/* Plaintext received; buf is valid during the call. len == 0 (buf
	 * NULL): the peer finished sending (close_notify, or FIN in
	 * plaintext); the stream can still send. A TLS peer that closes TCP
	 * without close_notify (truncation) ends the stream: -ECONNRESET;
	 * after kite_stream_close() the queue still goes out first. */
	void (*on_data)(struct kite_stream *s, const void *buf, size_t len);
	void (*on_drain)(struct kite_stream *s); /* send queue became empty */
	void (*on_close)(struct kite_stream *s, int err);
	void *user;                   /* kite_engine_user() */

	/* Timeouts in milliseconds, 0: none. Defaults 10 s, 60 s, 30 s. */
	unsigned handshake_timeout_ms; /* accept/adopt -> handshake done */
	unsigned idle_timeout_ms;      /* nothing to send and nothing received */
	unsigned send_timeout_ms;      /* queued bytes and no progress into the socket */

	unsigned max_streams;  /* further accepted connections are closed; default 4096 */
	size_t max_queued;     /* bytes queued per stream (copies + 64 per item); default 1 MiB.
				* Above half of it the stream stops reading (backpressure). */

	/* KITE_ENGINE_AUTO (default) climbs down the ladder; the environment
	 * variable KITE_ENGINE=uring|uring-basic|epoll then forces a rung.
	 * A forced rung that cannot work makes kite_engine_create() fail. */
	enum kite_engine_backend backend;

	unsigned pipes;        /* pipe pool for SPLICE; default 64, 0: no splicing */
	size_t pipe_size;      /* F_SETPIPE_SZ per pipe; default 256 KiB */
	unsigned buffers;      /* I/O buffers (registered with io_uring); default 64 */
	size_t buffer_size;    /* bytes per buffer: 16 KiB multiple, up to 256 KiB; default 64 KiB */
	size_t small_max;      /* file ranges up to this go READ_FIXED -> SEND; default 16 KiB */
	unsigned ring_entries; /* submission queue size; default 1024 */
	/* Receive buffers shared by the streams of an io_uring engine (a
	 * provided-buffer ring, Linux >= 5.19; rung uring): a stream waiting
	 * for the peer holds no buffer, the kernel picks one when bytes
	 * arrive and the engine takes it back once on_data returned. A power
	 * of two up to 32768, default 256 (4 KiB each); a receive that finds
	 * none left uses a buffer of the stream's own for that read (counted
	 * in kite_engine_stats.rx_nobufs). 0: every stream keeps its own
	 * 16.4 KiB receive buffer, as on the uring-basic rung (the epoll
	 * rung reads when the socket is readable, into one buffer per
	 * engine). */
	unsigned rx_buffers;

	uint64_t reserved[16];  /* ABI: zero (kite_engine_config_init); later members come from here */
};

/* Fill cfg with the defaults above (ctx NULL, no callbacks). */
void kite_engine_config_init(struct kite_engine_config *cfg);

/*
 * Create an engine. The configuration is copied. Returns 0, -EINVAL (bad
 * configuration or KITE_ENGINE value), -EOPNOTSUPP (a forced rung cannot
 * work here), -ENOMEM, -EMFILE; kite_engine_create_error() says why.
 */
KITE_MUST_CHECK int kite_engine_create(struct kite_engine **out,
				       const struct kite_engine_config *cfg);

/* Detail of this thread's last failed kite_engine_create(); never NULL. */
const char *kite_engine_create_error(void);

/* Abort every stream (on_close(-ECANCELED)), wait for the kernel to let go
 * of all buffers, free everything. Listener fds are not closed. Call it on
 * the thread that ran the engine (io_uring SINGLE_ISSUER), never from a
 * callback. NULL: no-op. */
void kite_engine_destroy(struct kite_engine *e);

/*
 * Accept connections from a listening TCP socket (owned by the caller, kept
 * open until the engine is destroyed; made O_NONBLOCK). Accepted streams
 * start their handshake at once. Returns 0, -EINVAL (fd < 0 or not
 * listening), -ENOTSOCK, -ENOSPC (16 listeners already), -errno of fcntl.
 */
KITE_MUST_CHECK int kite_engine_add_listener(struct kite_engine *e, int fd);

/* A listening TCP socket on host:port (numeric IPv4/IPv6, NULL: any) with
 * SO_REUSEADDR and SO_REUSEPORT, so that one engine per thread can listen on
 * the same port; port 0 picks a free one (read it with getsockname()). */
KITE_MUST_CHECK int kite_listen_reuseport(const char *host, uint16_t port, int backlog);

/*
 * Hand a connected TCP socket to the engine, which owns it from now on
 * (closes it; made O_NONBLOCK). The handshake runs in the role of the
 * engine's context. *out (may be NULL) gets the stream, valid until its
 * on_close. Returns 0; -EINVAL (fd < 0, not SOCK_STREAM) or -ENOTSOCK, and
 * the fd stays the caller's; -EMFILE (max_streams reached) or -ENOMEM, and
 * the fd has been closed.
 */
KITE_MUST_CHECK int kite_engine_adopt(struct kite_engine *e, int fd, struct kite_stream **out);

/*
 * Run the loop until kite_engine_stop() (the request is consumed) or until
 * timeout_ms has passed (< 0: no limit; 0: handle what is ready, do not
 * wait). Returns 0, -EDEADLK when called from a callback (a run inside
 * the run), -EEXIST from another thread than the first run's (io_uring
 * SINGLE_ISSUER), or the -errno of a failed io_uring_enter / epoll_wait.
 */
KITE_MUST_CHECK int kite_engine_run(struct kite_engine *e, int timeout_ms);

/* Make kite_engine_run() return. Thread-safe and async-signal-safe. */
void kite_engine_stop(struct kite_engine *e);

void *kite_engine_user(const struct kite_engine *e);

/*
 * Give the engine a new TLS context for the connections it accepts or
 * adopts from now on (e.g. a reloaded certificate or ticket key; a server
 * stream whose client has not sent its first bytes yet gets it too);
 * streams already there keep the context they started with (each holds a
 * reference). Like cfg.ctx the engine borrows ctx: it must outlive the
 * engine or the next kite_engine_set_ctx(), while the previous context may
 * be destroyed as soon as this returns. Call it from the engine's thread
 * (between kite_engine_run() calls or from a callback). ctx must have the
 * role of the engine's context; NULL, a plaintext engine or another role
 * leave the engine unchanged.
 */
void kite_engine_set_ctx(struct kite_engine *e, struct kite_ctx *ctx);

/*
 * fd, queued before with KITE_SENDFILE_KEEP_FD, is about to be closed: the
 * engine drops its registration (ranges already queued still read the same
 * file; the caller still keeps fd open until their on_drain or on_close,
 * as for any range). Without this a new file that gets the same descriptor
 * number would be read through the old registration: the old file's bytes.
 * Call it from the engine's thread. A no-op where nothing is registered
 * (the epoll and uring-basic rungs, an fd never queued with the flag).
 * Returns 0, or -EINVAL (e NULL, fd < 0).
 */
int kite_engine_forget_fd(struct kite_engine *e, int fd);

/* Which rung runs and why. Strings are owned by the engine. */
struct kite_engine_info {
	enum kite_engine_backend backend; /* never AUTO */
	const char *name;        /* "uring", "uring-basic", "epoll" */
	const char *detail;      /* e.g. "io_uring SINGLE_ISSUER|DEFER_TASKRUN, multishot
				  * accept, 64 registered buffers, 64 pipes of 256 KiB" */
	const char *reason;      /* why this rung, e.g. "KITE_ENGINE=epoll" or
				  * "io_uring_setup: Operation not permitted
				  * (kernel.io_uring_disabled=2)" */
	unsigned ring_flags;     /* IORING_SETUP_* in use; 0 for epoll */
	unsigned pipes;          /* pipes in the pool */
	size_t pipe_size;        /* bytes per pipe, as the kernel granted */
	uint64_t reserved[8];    /* ABI: zero; later members come from here */
};
int kite_engine_describe(const struct kite_engine *e, struct kite_engine_info *info);

/* How file ranges (and queued bytes) reach the socket. */
enum kite_engine_path {
	KITE_PATH_KTLS_SPLICE = 0,  /* io_uring SPLICE file -> pipe -> kTLS socket */
	KITE_PATH_KTLS_SENDFILE,    /* sendfile(2) into kTLS (epoll rung) */
	KITE_PATH_KTLS_COPY,        /* READ_FIXED -> SEND into kTLS (small, or no free pipe) */
	KITE_PATH_USER,             /* file read, GnuTLS records in userspace, sent */
	KITE_PATH_PLAIN_SPLICE,     /* as above on plaintext sockets */
	KITE_PATH_PLAIN_SENDFILE,
	KITE_PATH_PLAIN_COPY,
	KITE_PATH_SEND,             /* kite_stream_send() bytes, any socket; a unit's
				     * head sent on its own (before a spliced or
				     * sendfile'd range) */
	KITE_PATH_COUNT
};
const char *kite_engine_path_name(enum kite_engine_path p); /* "ktls-splice", ...; never NULL */

struct kite_engine_path_stats {
	uint64_t requests;  /* queued items that used this path */
	uint64_t bytes;     /* payload bytes it moved into sockets */
	uint64_t sqes;      /* io_uring submissions it made */
	uint64_t syscalls;  /* direct syscalls it made (epoll rung, GnuTLS I/O) */
	uint64_t reserved[4]; /* ABI: zero; later members come from here */
};

/* Size of kite_engine_stats.path (ABI: never changes); paths past
 * KITE_PATH_COUNT are unused. */
#define KITE_PATH_SLOTS 16

/* Counters since creation. syscalls counts every syscall the engine makes
 * itself: io_uring_enter, epoll_wait, and direct calls. */
struct kite_engine_stats {
	struct kite_engine_path_stats path[KITE_PATH_SLOTS];
	uint64_t enters;          /* io_uring_enter / epoll_wait calls */
	uint64_t syscalls;        /* all of the engine's syscalls, enters included */
	uint64_t sqes;            /* all io_uring submissions */
	uint64_t handshake_syscalls; /* part of syscalls: handshakes and key handoff */
	uint64_t accepted;        /* connections accepted or adopted */
	uint64_t rejected;        /* closed at once: max_streams reached */
	uint64_t opened;          /* handshakes completed (on_open) */
	uint64_t closed_ok;       /* on_close with 0 */
	uint64_t closed_err;      /* on_close with an error */
	uint64_t timeouts;        /* of which timeouts */
	uint64_t recv_bytes;      /* plaintext delivered to on_data */
	uint64_t pipe_exhausted;  /* file rounds that found no free pipe (copy path instead) */
	uint64_t buffer_waits;    /* rounds that waited for a free buffer */
	uint64_t rx_paused;       /* times a stream stopped reading (backpressure) */
	uint64_t streams;         /* live streams now */
	uint64_t peak_queued;     /* largest per-stream queue seen, bytes */
	uint64_t accept_errors;   /* accept failures (EMFILE, ENFILE, ENOBUFS, ...),
				   * retried after ~100 ms */
	int accept_error;         /* the last of them, -errno; 0: none */
	uint64_t ktls_pushes;     /* kTLS TX sends that met a full socket and pushed
				   * TCP's queued records first (see engine/core.c) */
	uint64_t rx_nobufs;       /* receives that found no shared buffer free
				   * (rx_buffers) and used the stream's own */
	uint64_t files_registered; /* KITE_SENDFILE_KEEP_FD descriptors registered
				    * with the ring (io_uring rung uring) */
	uint64_t reserved[31];    /* ABI: zero; later members come from here */
};
int kite_engine_stats(const struct kite_engine *e, struct kite_engine_stats *st);

/* ---- Streams (valid from accept/adopt until their on_close returns) ---- */

/* Queue a copy of buf. Returns len, -ENOBUFS when the stream's queue would
 * exceed max_queued (wait for on_drain), -EMSGSIZE if it never could,
 * -EPIPE after kite_stream_close(), -EINVAL. */
KITE_MUST_CHECK ssize_t kite_stream_send(struct kite_stream *s, const void *buf, size_t len);

/* kite_stream_sendfile() flags. */
#define KITE_SENDFILE_CLOSE_FD (1u << 0) /* the engine closes fd after the range (or on error) */
/* fd outlives the range (e.g. an open-file cache's): the engine may register
 * it with the ring once and read it through the registration from then on.
 * The caller must call kite_engine_forget_fd() before closing fd. */
#define KITE_SENDFILE_KEEP_FD (1u << 1)

/*
 * Queue len bytes of the regular file fd from offset off. Without
 * KITE_SENDFILE_CLOSE_FD the caller keeps fd open until on_drain or
 * on_close. If the file ends before off + len the stream is aborted with
 * -ENODATA: the peer gets a reset, never wrong bytes. Returns 0, -ENOBUFS,
 * -EPIPE, -EINVAL (also for a negative offset or fd, unknown flags, or
 * both KITE_SENDFILE_CLOSE_FD and KITE_SENDFILE_KEEP_FD). With
 * KITE_SENDFILE_CLOSE_FD, fd is closed on every error return as well.
 */
KITE_MUST_CHECK int kite_stream_sendfile(struct kite_stream *s, int fd, off_t off, size_t len,
					 unsigned flags);

/* kite_stream_queue_unit() flags. */
#define KITE_UNIT_CLOSE_FD KITE_SENDFILE_CLOSE_FD /* the engine closes fd after the unit (or on error) */
#define KITE_UNIT_KEEP_FD KITE_SENDFILE_KEEP_FD   /* fd outlives the unit (kite_engine_forget_fd) */

/*
 * Queue one unit: head_len bytes copied from head, then len bytes of the
 * regular file fd from offset off, on lane `lane`. The two go out as one
 * piece of the byte stream: on kernel TLS TX the head is sent with
 * MSG_MORE and the file pieces are spliced with SPLICE_F_MORE (the epoll
 * rung: sendfile(2)), so the kernel packs head and payload into the same
 * records; in userspace GnuTLS seals them into the same record buffer.
 * The unit's last piece says "more follows" only when another item is
 * already queued behind it, so no record is ever held open with nothing
 * to complete it. Only bytes: fd -1 or len 0 (fd is then not read; with
 * KITE_UNIT_CLOSE_FD it is closed at once). Only a range: head_len 0.
 *
 * Lanes share the stream fairly. Lane 0 is the ordered lane that
 * kite_stream_send() and kite_stream_sendfile() use. The queue is kept in
 * order of finish tags given at enqueue time: a unit on lane N (N > 0)
 * gets F = max(V, F_last(N)) + head_len + len, where V is the tag of the
 * item at the head of the queue (which may have started going out) and
 * F_last(N) the tag of lane N's last queued unit (0: none); a lane-0 item
 * gets F = V. The unit is inserted after every queued item with a smaller
 * or equal tag (lane-0 items before lane-N items of the same tag), never
 * ahead of the head item. Guarantees:
 *   - within a lane, units go out in the order queued;
 *   - lane 0 is FIFO, and a lane-0 item goes out before every lane-N unit
 *     queued after it, and before every queued lane-N unit except the
 *     head item (control bytes never wait behind a big file);
 *   - two lanes with units queued share the socket by bytes: a small unit
 *     on lane 2 goes out after at most one unit already started and the
 *     lane-N units whose tags are smaller, not after all of lane 1.
 * So bytes queued on lane 0 before a lane-N unit precede it (a protocol
 * header, e.g. HTTP/2 HEADERS before that stream's DATA) and lane-0 bytes
 * queued one after another stay contiguous (HEADERS + CONTINUATION).
 *
 * The head is charged to max_queued (head_len + 64), the range is not.
 * Without KITE_UNIT_CLOSE_FD the caller keeps fd open until on_drain or
 * on_close. If the file ends before off + len the stream is aborted with
 * -ENODATA. Returns 0; -ENOBUFS when the queue would exceed max_queued
 * (wait for on_drain); -EMSGSIZE if it never could; -EPIPE after
 * kite_stream_close(); -EINVAL (s NULL, head NULL with head_len, fd < 0
 * with len, negative offset, range past the end of off_t, unknown flags,
 * both KITE_UNIT_CLOSE_FD and KITE_UNIT_KEEP_FD);
 * -ENOMEM. On an error nothing is queued, and with KITE_UNIT_CLOSE_FD fd
 * (if >= 0) is closed on every error return too.
 */
KITE_MUST_CHECK int kite_stream_queue_unit(struct kite_stream *s, uint32_t lane, const void *head,
					   size_t head_len, int fd, off_t off, size_t len,
					   unsigned flags);

/* Graceful close: after the queue has drained, close_notify (TLS), FIN,
 * then wait briefly for the peer's end and close; on_close(s, 0). Further
 * sends fail with -EPIPE. Idempotent. */
int kite_stream_close(struct kite_stream *s);

/* Abortive close now: queued data is dropped, the peer gets a reset;
 * on_close(s, err) (err < 0; 0 means -ECONNABORTED). */
void kite_stream_abort(struct kite_stream *s, int err);

/* The stream's TLS connection (NULL for plaintext) for kite_conn_info() and
 * kite_conn_set_server_name() (clients: before the first kite_engine_run).
 * A server stream makes it when the client's first bytes arrive: NULL
 * before that, from on_open on always there. */
struct kite_conn *kite_stream_conn(const struct kite_stream *s);
int kite_stream_fd(const struct kite_stream *s);
struct kite_engine *kite_stream_engine(const struct kite_stream *s);
void kite_stream_set_user(struct kite_stream *s, void *user);
void *kite_stream_user(const struct kite_stream *s);
/* Bytes (and item charges) queued and not yet handed to the kernel. */
size_t kite_stream_queued(const struct kite_stream *s);

/* Bytes of what was queued (kite_stream_send() bytes, file ranges) that
 * are in the kernel by now, since the stream began; what a reset drops
 * from the socket buffers is counted too. */
uint64_t kite_stream_sent(const struct kite_stream *s);

/* Stop (pause true) or resume reading from the peer, e.g. while answers
 * to what it sent are still queued: TCP then slows the peer down. A
 * receive already under way still delivers (at most 16 KiB + 256 bytes);
 * after that on_data waits for the resume. Meant for while something is
 * queued: the stalled-send timeout then bounds the pause. */
void kite_stream_pause_rx(struct kite_stream *s, bool pause);

/* ==== end of engine ===================================================== */

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif /* KITE_H */
