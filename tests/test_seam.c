/* SPDX-License-Identifier: MIT */
/*
 * Error paths and rare kernel answers, through the syscall seam with a
 * simulated kTLS kernel (this test needs none).
 *
 * Every case: a kite client and a plain GnuTLS server do a real handshake
 * over a loopback TCP pair. The client's socket calls go through `mock`:
 * TCP_ULP and SOL_TLS setsockopts are recorded and answered as a kTLS
 * kernel would (or with an injected errno); everything else passes to libc
 * until the case sets mock.scripted, after which sendmsg/recvmsg/sendfile/
 * getsockopt(TLS_TX) on that socket are answered from the case's script -
 * that is "the kernel" behind an offloaded direction. The GnuTLS server
 * talks to libc directly and serves as the oracle for key material.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "common.h"
#include "kite-private.h"

/* ---- The simulated kernel ------------------------------------------------ */

enum ev_kind { EV_ULP, EV_SET, EV_CTRL };

/* What kite asked of the kernel, in order. Data sends are not events (a
 * bulk case makes thousands); they are counted and hashed instead. */
struct event {
	enum ev_kind kind;
	int name;         /* EV_SET: TLS_TX / TLS_RX */
	int err;          /* errno answered, 0 for success */
	uint8_t type;     /* EV_CTRL: record content type */
	uint8_t data[sizeof(union kite_crypto_info)]; /* crypto_info or record payload */
	size_t len;
	size_t data_before; /* data bytes sent before this event */
};

/* One scripted answer: fail with err, or take at most max bytes (0: all). */
struct step {
	int err;
	size_t max;
};

/* Steps in order, then the default (max/err) forever. */
struct script {
	struct step s[8];
	int n, pos;
	size_t max;
	int err;
};

struct rx_item {
	int err;          /* recvmsg fails with this */
	bool eof;         /* recvmsg returns 0 without cmsg (TCP FIN) */
	uint8_t type;
	uint8_t data[64];
	size_t len, off;  /* off: already handed out (record read in pieces) */
};

static struct mock {
	int fd;             /* the kite client's socket; other fds go to libc */
	bool scripted;
	int ulp_err;        /* errno for TCP_ULP */
	bool ulp_attached;
	/* errno for TLS_TX [1] / TLS_RX [2] / TLS_TX_ZEROCOPY_RO [3] /
	 * TLS_RX_EXPECT_NO_PAD [4] */
	int set_err[5];
	bool installed[5];
	int kernel_rekey;   /* a second TLS_TX/RX: 0 accepted, else -EBUSY */

	struct event ev[64];
	int nev;

	struct script send, sf;
	size_t send_calls, sf_calls, data_bytes, max_call, no_nosignal;
	uint64_t data_hash;
	bool no_hash;       /* bulk cases: count only */

	struct rx_item rx[8];
	int nrx, rx_pos;
	size_t recv_calls;

	union kite_crypto_info tx_ci; /* last TLS_TX, for getsockopt */
	socklen_t tx_ci_len;
	uint64_t tx_seq;
	size_t getsockopt_calls;
} m;

static uint8_t sf_buf[65536];

static struct event *ev_add(enum ev_kind kind, int name, int err, const void *data, size_t len)
{
	struct event *e;

	if (m.nev == (int)(sizeof(m.ev) / sizeof(m.ev[0])))
		t_fail("mock: too many events");
	e = &m.ev[m.nev++];
	memset(e, 0, sizeof(*e));
	e->kind = kind, e->name = name, e->err = err, e->len = len;
	e->data_before = m.data_bytes;
	memcpy(e->data, data, len < sizeof(e->data) ? len : sizeof(e->data));
	return e;
}

static uint8_t *rec_seq_of(union kite_crypto_info *ci)
{
	switch (ci->base.cipher_type) {
	case TLS_CIPHER_AES_GCM_128: return ci->gcm128.rec_seq;
	case TLS_CIPHER_AES_GCM_256: return ci->gcm256.rec_seq;
	case TLS_CIPHER_AES_CCM_128: return ci->ccm128.rec_seq;
	case TLS_CIPHER_CHACHA20_POLY1305: return ci->chacha.rec_seq;
	default: t_fail("mock: unknown cipher_type %u", ci->base.cipher_type);
	}
}

static uint64_t get_be64(const uint8_t *b)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | b[i];
	return v;
}

static void put_be64(uint8_t *b, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		b[i] = (uint8_t)v;
}

/* The next answer of a script: an errno, or 0 and how much to take. */
static int script_next(struct script *s, size_t want, size_t *take)
{
	struct step st = s->pos < s->n ? s->s[s->pos++] : (struct step){s->err, s->max};

	if (st.err)
		return st.err;
	*take = st.max && st.max < want ? st.max : want;
	return 0;
}

/*
 * Key hygiene: every buffer that carried key material across the seam
 * (crypto_info for TLS_TX/TLS_RX, getsockopt(TLS_TX) read-backs, a
 * connection's kept traffic secrets) must be wiped through kite_sys.wipe
 * before the library touches the next key buffer, and by the end of each
 * case. Not reset by mock_reset(): checked across it.
 */
static struct keybuf { const void *p; size_t n; bool wiped; const char *what; } keybufs[64];
static size_t nkeybufs, nwipes;

static void check_keybufs(const char *when)
{
	for (size_t i = 0; i < nkeybufs; i++)
		if (!keybufs[i].wiped)
			t_fail("%s (%zu bytes) not wiped %s", keybufs[i].what, keybufs[i].n, when);
	nkeybufs = 0;
}

static void track_keybuf(const void *p, size_t n, const char *what)
{
	check_keybufs("before the next key buffer was used");
	keybufs[nkeybufs++] = (struct keybuf){p, n, false, what};
}

static void mock_wipe(void *p, size_t n)
{
	const uint8_t *b = p;

	kite_sys_libc.wipe(p, n);
	nwipes++;
	for (size_t i = 0; i < n; i++)
		if (b[i])
			t_fail("wipe left a non-zero byte");
	for (size_t i = 0; i < nkeybufs; i++)
		if ((const uint8_t *)keybufs[i].p >= b &&
		    (const uint8_t *)keybufs[i].p + keybufs[i].n <= b + n)
			keybufs[i].wiped = true;
}

static int mock_setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	int err = 0;

	if (fd != m.fd)
		return kite_sys_libc.setsockopt(fd, level, name, val, len);
	if (level == IPPROTO_TCP && name == TCP_ULP) {
		/* The kernel attaches a ULP once; a second one is EEXIST. */
		err = m.ulp_err ? m.ulp_err : m.ulp_attached ? EEXIST : 0;
		if (!err)
			m.ulp_attached = true;
		ev_add(EV_ULP, name, err, val, len);
	} else if (level == SOL_TLS && (name == TLS_TX || name == TLS_RX)) {
		if (len > sizeof(union kite_crypto_info))
			t_fail("mock: crypto_info of %u bytes", (unsigned)len);
		track_keybuf(val, len, name == TLS_TX ? "TLS_TX crypto_info" : "TLS_RX crypto_info");
		if (!m.ulp_attached)
			err = ENOPROTOOPT;
		else if (m.set_err[name])
			err = m.set_err[name];
		else if (m.installed[name] && m.kernel_rekey)
			err = -m.kernel_rekey;
		ev_add(EV_SET, name, err, val, len);
		if (!err) {
			m.installed[name] = true;
			if (name == TLS_TX) {
				memcpy(&m.tx_ci, val, len);
				m.tx_ci_len = len;
				m.tx_seq = get_be64(rec_seq_of(&m.tx_ci));
			}
		}
	} else if (level == SOL_TLS && (name == TLS_TX_ZEROCOPY_RO || name == TLS_RX_EXPECT_NO_PAD)) {
		/* Like the kernel: an int, and only once the direction it
		 * tunes is installed (and for no-pad, with TLS 1.3). */
		if (len != sizeof(int))
			err = EINVAL;
		else if (!m.installed[name == TLS_TX_ZEROCOPY_RO ? TLS_TX : TLS_RX])
			err = EINVAL;
		else if (m.set_err[name])
			err = m.set_err[name];
		ev_add(EV_SET, name, err, val, len);
		if (!err)
			m.installed[name] = *(const int *)val == 1;
	} else {
		return kite_sys_libc.setsockopt(fd, level, name, val, len);
	}
	if (err) {
		errno = err;
		return -1;
	}
	return 0;
}

static int mock_getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	union kite_crypto_info ci;

	if (fd != m.fd || !m.scripted || level != SOL_TLS || name != TLS_TX)
		return kite_sys_libc.getsockopt(fd, level, name, val, len);
	m.getsockopt_calls++;
	/* Like the kernel: the length must be the cipher's struct size. */
	if (!m.installed[TLS_TX] || *len != m.tx_ci_len) {
		errno = m.installed[TLS_TX] ? EINVAL : EBUSY;
		return -1;
	}
	/* The kernel reports the current rec_seq of the installed key. */
	ci = m.tx_ci;
	put_be64(rec_seq_of(&ci), m.tx_seq);
	memcpy(val, &ci, m.tx_ci_len);
	*len = m.tx_ci_len;
	/* The kernel copies the key out too: the caller must wipe it. */
	track_keybuf(val, m.tx_ci_len, "getsockopt(TLS_TX) read-back");
	kite_sys_libc.wipe(&ci, sizeof(ci));
	return 0;
}

static void count_data(const void *p, size_t n)
{
	if (!m.no_hash)
		m.data_hash = t_hash(m.data_hash, p, n);
	m.data_bytes += n;
}

static ssize_t mock_sendmsg(int fd, const struct msghdr *msg, int flags)
{
	struct cmsghdr *cm;
	size_t want = 0, take, left;
	int type = -1, err;

	if (fd != m.fd || !m.scripted)
		return kite_sys_libc.sendmsg(fd, msg, flags);
	if (!(flags & MSG_NOSIGNAL))
		m.no_nosignal++;
	for (size_t i = 0; i < msg->msg_iovlen; i++)
		want += msg->msg_iov[i].iov_len;
	for (cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR((struct msghdr *)msg, cm))
		if (cm->cmsg_level == SOL_TLS && cm->cmsg_type == TLS_SET_RECORD_TYPE)
			type = *CMSG_DATA(cm);
	m.send_calls++;
	err = script_next(&m.send, want, &take);
	if (err) {
		errno = err;
		return -1;
	}
	if (type >= 0) {
		struct event *e;

		if (msg->msg_iovlen != 1)
			t_fail("mock: control record in %zu iovecs", (size_t)msg->msg_iovlen);
		e = ev_add(EV_CTRL, 0, 0, msg->msg_iov[0].iov_base, take);
		e->type = (uint8_t)type;
		return (ssize_t)take;
	}
	if (take > m.max_call)
		m.max_call = take;
	left = take;
	for (size_t i = 0; i < msg->msg_iovlen && left; i++) {
		size_t k = msg->msg_iov[i].iov_len < left ? msg->msg_iov[i].iov_len : left;

		count_data(msg->msg_iov[i].iov_base, k);
		left -= k;
	}
	return (ssize_t)take;
}

static ssize_t mock_recvmsg(int fd, struct msghdr *msg, int flags)
{
	struct rx_item *it;
	struct cmsghdr *cm;
	size_t n, room = 0;

	if (fd != m.fd || !m.scripted)
		return kite_sys_libc.recvmsg(fd, msg, flags);
	m.recv_calls++;
	msg->msg_flags = 0;
	if (m.rx_pos == m.nrx) {
		errno = EAGAIN;
		return -1;
	}
	it = &m.rx[m.rx_pos];
	if (it->err) {
		m.rx_pos++;
		errno = it->err;
		return -1;
	}
	if (it->eof) {
		m.rx_pos++;
		msg->msg_controllen = 0;
		return 0;
	}
	/* uapi: the record type comes as a cmsg; a non-data record read
	 * without room for it fails with EIO. */
	if (!msg->msg_control || msg->msg_controllen < CMSG_SPACE(1)) {
		if (it->type != KITE_CT_APPLICATION_DATA) {
			errno = EIO;
			return -1;
		}
		msg->msg_controllen = 0;
	} else {
		cm = CMSG_FIRSTHDR(msg);
		cm->cmsg_level = SOL_TLS;
		cm->cmsg_type = TLS_GET_RECORD_TYPE;
		cm->cmsg_len = CMSG_LEN(1);
		*CMSG_DATA(cm) = it->type;
		msg->msg_controllen = CMSG_SPACE(1);
	}
	/* A record larger than the buffer is handed out in pieces. */
	n = it->len - it->off;
	for (size_t i = 0; i < msg->msg_iovlen && n; i++) {
		size_t k = msg->msg_iov[i].iov_len < n ? msg->msg_iov[i].iov_len : n;

		memcpy(msg->msg_iov[i].iov_base, it->data + it->off + room, k);
		room += k;
		n -= k;
	}
	it->off += room;
	if (it->off == it->len)
		m.rx_pos++;
	return (ssize_t)room;
}

static ssize_t mock_sendfile(int out_fd, int in_fd, off_t *off, size_t count)
{
	size_t take;
	ssize_t n;
	int err;

	if (out_fd != m.fd || !m.scripted)
		return kite_sys_libc.sendfile(out_fd, in_fd, off, count);
	if (!off)
		t_fail("mock: sendfile without an offset");
	m.sf_calls++;
	err = script_next(&m.sf, count, &take);
	if (err) {
		errno = err;
		return -1;
	}
	if (take > sizeof(sf_buf))
		take = sizeof(sf_buf);
	/* Like sendfile(2): what the file has, 0 at its end. */
	n = pread(in_fd, sf_buf, take, *off);
	if (n < 0)
		t_fail("mock: pread: %s", strerror(errno));
	count_data(sf_buf, (size_t)n);
	*off += n;
	return n;
}

static const struct kite_sys mock_sys = {
	.setsockopt = mock_setsockopt,
	.getsockopt = mock_getsockopt,
	.sendmsg = mock_sendmsg,
	.recvmsg = mock_recvmsg,
	.sendfile = mock_sendfile,
	.pread = pread,
	.wipe = mock_wipe,
};

static void rx_push(uint8_t type, const void *data, size_t len)
{
	struct rx_item *it = &m.rx[m.nrx++];

	if (len > sizeof(it->data))
		t_fail("rx_push: %zu bytes", len);
	*it = (struct rx_item){.type = type, .len = len};
	memcpy(it->data, data, len);
}

static void rx_push_err(int err)
{
	m.rx[m.nrx++] = (struct rx_item){.err = err};
}

/* Events from index `from` on. */
static int count_ev(int from, enum ev_kind kind)
{
	int n = 0;

	for (int i = from; i < m.nev; i++)
		n += m.ev[i].kind == kind;
	return n;
}

/* ---- Simulated capabilities ------------------------------------------- */

static struct kite_caps sim;

/* A kernel that offloads everything; rekey 0 (Linux >= 6.14) or -EBUSY. */
static void sim_caps(int rekey)
{
	memset(&sim, 0, sizeof(sim));
	sim.ulp_reason = "simulated kernel TLS";
	for (int v = 0; v < KITE_VERSION_COUNT; v++)
		for (int c = 0; c < KITE_CIPHER_COUNT; c++)
			for (int d = 0; d < KITE_DIR_COUNT; d++)
				sim.offload_reason[v][c][d] = "simulated offload";
	sim.rekey = rekey;
	sim.rekey_reason = rekey ? "simulated kernel cannot update kTLS keys" : "simulated rekey";
	sim.rx_no_pad_reason = "simulated";
	sim.tx_zerocopy_ro_reason = "simulated";
	kite_caps_set(&sim);
}

/* ---- A kite client and a GnuTLS server ---------------------------------- */

static struct t_creds creds;
static gnutls_certificate_credentials_t peer_cred;

struct pair {
	int fds[2];
	struct kite_ctx *ctx;
	struct kite_conn *c;
	gnutls_session_t peer;
	/* The peer's traffic secrets, seen from the kite client: [KITE_TX]
	 * CLIENT_TRAFFIC_SECRET_0, [KITE_RX] SERVER_TRAFFIC_SECRET_0. */
	uint8_t secret[KITE_DIR_COUNT][KITE_MAX_SECRET];
	size_t secret_len[KITE_DIR_COUNT];
	int hs;     /* kite_handshake() */
	int nev_hs; /* events after the handshake start here */
};

static int peer_keylog(gnutls_session_t s, const char *label, const gnutls_datum_t *secret)
{
	struct pair *p = gnutls_session_get_ptr(s);
	int d;

	if (!strcmp(label, "CLIENT_TRAFFIC_SECRET_0"))
		d = KITE_TX;
	else if (!strcmp(label, "SERVER_TRAFFIC_SECRET_0"))
		d = KITE_RX;
	else
		return 0;
	if (secret->size > KITE_MAX_SECRET)
		t_fail("traffic secret of %u bytes", secret->size);
	memcpy(p->secret[d], secret->data, secret->size);
	p->secret_len[d] = secret->size;
	return 0;
}

static void *peer_handshake(void *arg)
{
	gnutls_session_t s = arg;
	intptr_t r;

	do
		r = gnutls_handshake(s);
	while (r < 0 && !gnutls_error_is_fatal((int)r));
	return (void *)r;
}

static void mock_reset(void)
{
	memset(&m, 0, sizeof(m));
	m.fd = -1;
	m.data_hash = T_HASH_INIT;
}

/* The sockets (the client's through the mock), the kite client context
 * and the GnuTLS server peer, not yet handshaking. */
static void pair_sockets(struct pair *p, const char *prio, unsigned flags)
{
	memset(p, 0, sizeof(*p));
	t_tcp_pair(p->fds);
	m.fd = p->fds[0];
	m.kernel_rekey = kite_caps_get()->rekey;
	kite_sys_set(&mock_sys);
	p->ctx = t_client_ctx(prio, flags);
	if (gnutls_init(&p->peer, GNUTLS_SERVER | GNUTLS_NO_TICKETS) < 0 ||
	    gnutls_priority_set_direct(p->peer, prio, NULL) < 0 ||
	    gnutls_credentials_set(p->peer, GNUTLS_CRD_CERTIFICATE, peer_cred) < 0)
		t_fail("GnuTLS peer setup");
	gnutls_transport_set_int(p->peer, p->fds[1]);
	gnutls_session_set_ptr(p->peer, p);
	gnutls_session_set_keylog_function(p->peer, peer_keylog);
}

/*
 * Handshake v/c with kite policy `flags` under the current simulated caps.
 * Callers set kernel answers (ulp_err, set_err) between mock_reset() and
 * this; a failed kite_handshake is left in p->hs for the case to judge.
 */
static void pair_open(struct pair *p, enum kite_version v, enum kite_cipher c, unsigned flags)
{
	const char *prio = t_priority(v, c);
	pthread_t th;
	void *pr;
	int r;

	pair_sockets(p, prio, flags);
	t_ok(kite_conn_create(&p->c, p->ctx, p->fds[0]));

	if (pthread_create(&th, NULL, peer_handshake, p->peer))
		t_fail("pthread_create");
	p->hs = kite_handshake(p->c);
	if (p->hs && !p->c->handshake_done)
		shutdown(p->fds[0], SHUT_RDWR); /* don't leave the peer waiting */
	pthread_join(th, &pr);
	r = (int)(intptr_t)pr;
	t_assert(r == 0, "peer handshake: %s (kite: %s)", gnutls_strerror(r),
		 kite_conn_strerror(p->c, p->hs));
	t_assert(p->c->handshake_done, "kite handshake: %s", kite_conn_strerror(p->c, p->hs));
	p->nev_hs = m.nev;
}

static void pair_close(struct pair *p)
{
	t_assert(m.no_nosignal == 0, "%zu kernel sends without MSG_NOSIGNAL", m.no_nosignal);
	track_keybuf(p->c->secret, sizeof(p->c->secret), "connection traffic secrets");
	kite_conn_destroy(p->c);
	check_keybufs("by kite_conn_destroy");
	kite_ctx_destroy(p->ctx);
	gnutls_deinit(p->peer);
	close(p->fds[0]);
	close(p->fds[1]);
	kite_sys_set(NULL);
	kite_caps_set(NULL);
	mock_reset();
}

/* TLS 1.3 AES-128-GCM, both directions in the (simulated) kernel. */
static void open_offloaded(struct pair *p, int rekey)
{
	struct kite_conn_info info;

	sim_caps(rekey);
	mock_reset();
	pair_open(p, KITE_TLS13, KITE_AES_128_GCM, KITE_KTLS_DEFAULT);
	t_ok(p->hs);
	t_ok(kite_conn_info(p->c, &info));
	t_assert(info.ktls[KITE_TX] && info.ktls[KITE_RX], "not offloaded: tx %s, rx %s",
		 info.ktls_reason[KITE_TX], info.ktls_reason[KITE_RX]);
	m.scripted = true;
}

static bool has(const char *s, const char *sub)
{
	return s && strcasestr(s, sub);
}

static bool all_zero(const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

/* The TLS 1.3 AES-128-GCM crypto_info, laid out by hand (uapi). */
static struct tls12_crypto_info_aes_gcm_128 gcm128_13(const uint8_t key[16], const uint8_t iv[12],
						      const uint8_t seq[8])
{
	struct tls12_crypto_info_aes_gcm_128 e = {
		.info = {.version = TLS_1_3_VERSION, .cipher_type = TLS_CIPHER_AES_GCM_128},
	};

	memcpy(e.salt, iv, 4);
	memcpy(e.iv, iv + 4, 8);
	memcpy(e.key, key, 16);
	memcpy(e.rec_seq, seq, 8);
	return e;
}

/* A GnuTLS session's current key state as the kernel struct. */
static struct tls12_crypto_info_aes_gcm_128 peer_state(gnutls_session_t s, unsigned read)
{
	gnutls_datum_t key, iv;
	uint8_t seq[8];
	int r = gnutls_record_get_state(s, read, NULL, &iv, &key, seq);

	t_assert(r == 0 && key.size == 16 && iv.size == 12, "peer key state: %s", gnutls_strerror(r));
	return gcm128_13(key.data, iv.data, seq);
}

/* The crypto_info for the key after `secret` (RFC 8446 7.2), at seq 0. */
static struct tls12_crypto_info_aes_gcm_128 next_key(const uint8_t *secret, size_t len,
						     uint8_t *next)
{
	static const uint8_t seq0[8];
	uint8_t key[16], iv[12];

	t_ok(kite_tls13_next_secret(KITE_AES_128_GCM, secret, len, next));
	t_ok(kite_tls13_traffic_keys(KITE_AES_128_GCM, next, len, key, 16, iv));
	return gcm128_13(key, iv, seq0);
}

static void check_ci(const struct event *e, int name, const void *want, size_t size,
		     const char *what)
{
	t_assert(e->kind == EV_SET && e->name == name && e->err == 0, "%s: event %d/%d/%d", what,
		 e->kind, e->name, e->err);
	t_assert(e->len == size, "%s: crypto_info of %zu bytes, want %zu", what, e->len, size);
	t_assert(!memcmp(e->data, want, size), "%s: crypto_info differs", what);
}

static void check_ctrl(const struct event *e, uint8_t type, const void *want, size_t len,
		       const char *what)
{
	t_assert(e->kind == EV_CTRL, "%s: event kind %d", what, e->kind);
	t_assert(e->type == type, "%s: record type %u, want %u", what, e->type, type);
	t_assert(e->len == len && !memcmp(e->data, want, len), "%s: payload differs (%zu bytes)",
		 what, e->len);
}

static const uint8_t close_notify[2] = {1, 0};

/* ---- Cases ------------------------------------------------------------ */

/* Fast-path switches: requested ones are set after their direction's key,
 * reported per connection; a refusal keeps the offload; TLS 1.2 gets no
 * no-pad; unrequested ones are never set. */
static void test_fastpath(void)
{
	const unsigned both = KITE_KTLS_DEFAULT | KITE_KTLS_TX_ZEROCOPY_RO |
			      KITE_KTLS_RX_EXPECT_NO_PAD;
	struct kite_conn_info info;
	struct pair p;

	/* Off by default: no such setsockopt. */
	sim_caps(-EBUSY);
	mock_reset();
	pair_open(&p, KITE_TLS13, KITE_AES_128_GCM, KITE_KTLS_DEFAULT);
	t_ok(p.hs);
	t_ok(kite_conn_info(p.c, &info));
	t_assert(!info.tx_zerocopy_ro && !info.rx_expect_no_pad, "switches on by default");
	t_assert(!strcmp(info.tx_zerocopy_ro_reason, "not requested") &&
		 !strcmp(info.rx_expect_no_pad_reason, "not requested"), "reasons: %s / %s",
		 info.tx_zerocopy_ro_reason, info.rx_expect_no_pad_reason);
	t_assert(!m.installed[TLS_TX_ZEROCOPY_RO] && !m.installed[TLS_RX_EXPECT_NO_PAD] &&
		 m.nev == 3, "%d kernel calls without switches", m.nev);
	pair_close(&p);

	/* Both requested, TLS 1.3: ULP, TLS_TX, ZEROCOPY_RO, TLS_RX, NO_PAD. */
	sim_caps(-EBUSY);
	mock_reset();
	pair_open(&p, KITE_TLS13, KITE_AES_128_GCM, both);
	t_ok(p.hs);
	t_ok(kite_conn_info(p.c, &info));
	t_assert(m.nev == 5, "%d kernel calls", m.nev);
	t_assert(m.ev[1].name == TLS_TX && m.ev[2].name == TLS_TX_ZEROCOPY_RO &&
		 m.ev[3].name == TLS_RX && m.ev[4].name == TLS_RX_EXPECT_NO_PAD,
		 "order %d %d %d %d", m.ev[1].name, m.ev[2].name, m.ev[3].name, m.ev[4].name);
	t_assert(m.installed[TLS_TX_ZEROCOPY_RO] && m.installed[TLS_RX_EXPECT_NO_PAD],
		 "switch values not 1");
	t_assert(info.tx_zerocopy_ro && info.rx_expect_no_pad, "info: %s / %s",
		 info.tx_zerocopy_ro_reason, info.rx_expect_no_pad_reason);
	t_assert(!strcmp(info.tx_zerocopy_ro_reason, "on"), "%s", info.tx_zerocopy_ro_reason);
	pair_close(&p);

	/* The kernel refuses no-pad: RX stays offloaded, with the reason. */
	sim_caps(-EBUSY);
	mock_reset();
	m.set_err[TLS_RX_EXPECT_NO_PAD] = ENOPROTOOPT;
	pair_open(&p, KITE_TLS13, KITE_AES_128_GCM, both);
	t_ok(p.hs);
	t_ok(kite_conn_info(p.c, &info));
	t_assert(info.ktls[KITE_RX] && !info.rx_expect_no_pad, "rx %d no-pad %d", info.ktls[KITE_RX],
		 info.rx_expect_no_pad);
	t_assert(has(info.rx_expect_no_pad_reason, "TLS_RX_EXPECT_NO_PAD"), "reason: %s",
		 info.rx_expect_no_pad_reason);
	t_assert(info.tx_zerocopy_ro, "tx switch lost with the rx one");
	pair_close(&p);

	/* The probe said no: not even tried. */
	sim_caps(-EBUSY);
	sim.tx_zerocopy_ro = -ENOPROTOOPT;
	sim.tx_zerocopy_ro_reason = "simulated old kernel";
	mock_reset();
	pair_open(&p, KITE_TLS13, KITE_AES_128_GCM, both);
	t_ok(p.hs);
	t_ok(kite_conn_info(p.c, &info));
	t_assert(!info.tx_zerocopy_ro && !strcmp(info.tx_zerocopy_ro_reason, "simulated old kernel"),
		 "reason: %s", info.tx_zerocopy_ro_reason);
	t_assert(count_ev(0, EV_SET) == 3, "switch tried against the probe");
	pair_close(&p);

	/* TLS 1.2: no-pad does not apply; zerocopy does. */
	sim_caps(-EBUSY);
	mock_reset();
	pair_open(&p, KITE_TLS12, KITE_AES_128_GCM, both);
	t_ok(p.hs);
	t_ok(kite_conn_info(p.c, &info));
	t_assert(info.tx_zerocopy_ro && !info.rx_expect_no_pad, "TLS 1.2: %d %d",
		 info.tx_zerocopy_ro, info.rx_expect_no_pad);
	t_assert(has(info.rx_expect_no_pad_reason, "TLS 1.3"), "reason: %s",
		 info.rx_expect_no_pad_reason);
	t_assert(!m.installed[TLS_RX_EXPECT_NO_PAD] && count_ev(0, EV_SET) == 3,
		 "no-pad set on TLS 1.2");
	pair_close(&p);

	/* Unknown policy bits are refused. */
	{
		struct kite_ctx *ctx;

		t_ok(kite_ctx_create(&ctx, KITE_CLIENT));
		t_assert(kite_ctx_set_ktls(ctx, 1u << 9) == -EINVAL, "unknown bit accepted");
		kite_ctx_destroy(ctx);
	}
}

/* Bring your own session, through the simulated kernel: the embedder's
 * client session is handshaken by the embedder (adopt) or by kite
 * (create_session); either way the kernel gets the peer's keys, the
 * key buffers are wiped, and the session is kite's to free. */
static int byo_sentinel;
static int byo_keylogs;
static bool byo_pending; /* adopt after the embedder read part of a record */

static int byo_user_keylog(gnutls_session_t s, const char *label, const gnutls_datum_t *secret)
{
	(void)label, (void)secret;
	/* kite must leave the session pointer to the embedder. */
	t_assert(gnutls_session_get_ptr(s) == &byo_sentinel, "session pointer changed");
	byo_keylogs++;
	return 0;
}

static void byo_open(struct pair *p, bool adopt, unsigned flags)
{
	const char *prio = t_priority(KITE_TLS13, KITE_AES_128_GCM);
	gnutls_session_t s;
	pthread_t th;
	void *pr;
	int r;

	pair_sockets(p, prio, flags);
	/* The embedder's session: its own priority, no kite involved yet. */
	if (gnutls_init(&s, GNUTLS_CLIENT) < 0 || gnutls_priority_set_direct(s, prio, NULL) < 0 ||
	    gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, peer_cred) < 0)
		t_fail("embedder session setup");
	gnutls_session_set_ptr(s, &byo_sentinel);
	gnutls_session_set_keylog_function(s, byo_user_keylog);
	gnutls_transport_set_int(s, p->fds[0]);
	byo_keylogs = 0;

	if (pthread_create(&th, NULL, peer_handshake, p->peer))
		t_fail("pthread_create");
	if (adopt) {
		/* An unfinished session is refused and left alone. */
		t_assert(kite_conn_adopt_session(&p->c, p->ctx, s, p->fds[0]) == -EINVAL && !p->c,
			 "adopted a session before its handshake");
		do
			r = gnutls_handshake(s);
		while (r < 0 && !gnutls_error_is_fatal(r));
		t_assert(r == 0, "embedder handshake: %s", gnutls_strerror(r));
		t_assert(kite_conn_create_session(&p->c, p->ctx, s, p->fds[0]) == -EINVAL && !p->c,
			 "create_session took an established session");
		pthread_join(th, &pr);
		if (byo_pending) {
			/* The embedder read part of a record: GnuTLS holds
			 * the rest, decrypted, which the kernel never sees. */
			char b[2];

			t_assert(gnutls_record_send(p->peer, "abcdef", 6) == 6, "peer send");
			do
				r = (int)gnutls_record_recv(s, b, sizeof(b));
			while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
			t_assert(r == 2 && !memcmp(b, "ab", 2), "embedder read %d", r);
		}
		p->hs = kite_conn_adopt_session(&p->c, p->ctx, s, p->fds[0]);
		t_assert(p->c, "adopt: no connection (%d)", p->hs);
	} else {
		t_ok(kite_conn_create_session(&p->c, p->ctx, s, p->fds[0]));
		p->hs = kite_handshake(p->c);
		pthread_join(th, &pr);
	}
	r = (int)(intptr_t)pr;
	t_assert(r == 0, "peer handshake: %s", gnutls_strerror(r));
	t_assert(p->c->handshake_done, "kite: %s", kite_conn_strerror(p->c, p->hs));
	p->nev_hs = m.nev;
}

static void test_byo(bool adopt)
{
	struct tls12_crypto_info_aes_gcm_128 want;
	struct kite_conn_info info;
	struct pair p;
	char buf[64];
	ssize_t n;
	int r;

	sim_caps(0); /* a kernel that could rekey */
	mock_reset();
	byo_open(&p, adopt, KITE_KTLS_DEFAULT);
	t_ok(p.hs);
	t_ok(kite_conn_info(&*p.c, &info));
	t_assert(info.ktls[KITE_TX] && info.ktls[KITE_RX], "not offloaded: %s / %s",
		 info.ktls_reason[KITE_TX], info.ktls_reason[KITE_RX]);
	t_assert(!strcmp(info.version_name, "TLS1.3") && info.cipher == KITE_AES_128_GCM,
		 "negotiated %s %s", info.version_name, info.cipher_name);
	/* Same handoff as for kite's own handshakes: the peer's keys. */
	want = peer_state(p.peer, 1);
	check_ci(&m.ev[1], TLS_TX, &want, sizeof(want), "TLS_TX");
	want = peer_state(p.peer, 0);
	check_ci(&m.ev[2], TLS_RX, &want, sizeof(want), "TLS_RX");
	/* Both directions in the kernel: the session (and GnuTLS's copy of
	 * the keys) is gone already. */
	t_assert(p.c->s == NULL, "session kept with both directions in the kernel");
	if (adopt) {
		/* No secrets were seen: no kernel key update, said before any
		 * KeyUpdate record could go out. */
		t_assert(byo_keylogs > 0 && p.c->secret_len[KITE_TX] == 0, "secrets after adopt");
		r = kite_key_update(p.c);
		t_assert(r == -EOPNOTSUPP && has(kite_conn_strerror(p.c, r), "secret"),
			 "key update: %d %s", r, kite_conn_strerror(p.c, r));
		t_assert(count_ev(p.nev_hs, EV_CTRL) == 0, "KeyUpdate sent without a next key");
	} else {
		/* kite watched the handshake: secrets kept, the embedder's
		 * keylog still called. */
		t_assert(byo_keylogs > 0, "the embedder's keylog function was not called");
		for (int d = 0; d < KITE_DIR_COUNT; d++)
			t_assert(p.c->secret_len[d] == 32 && !memcmp(p.c->secret[d], p.secret[d], 32),
				 "%s secret", kite_dir_name(d));
		m.scripted = true;
		t_ok(kite_key_update(p.c));
		t_assert(p.c->key_updates[KITE_TX] == 1, "key update not counted");
	}
	m.scripted = true;
	rx_push(KITE_CT_APPLICATION_DATA, "kernel rx", 9);
	n = kite_recv(p.c, buf, sizeof(buf));
	t_assert(n == 9 && !memcmp(buf, "kernel rx", 9), "kite_recv %zd", n);
	pair_close(&p);

	/* Data GnuTLS already decrypted keeps RX in userspace, where the
	 * rest of that record is read first; TX still goes to the kernel. */
	if (adopt) {
		sim_caps(0);
		mock_reset();
		byo_pending = true;
		byo_open(&p, adopt, KITE_KTLS_DEFAULT);
		byo_pending = false;
		t_ok(p.hs);
		t_ok(kite_conn_info(p.c, &info));
		t_assert(info.ktls[KITE_TX] && !info.ktls[KITE_RX], "tx %d rx %d", info.ktls[KITE_TX],
			 info.ktls[KITE_RX]);
		t_assert(has(info.ktls_reason[KITE_RX], "GnuTLS holds received data"), "rx: %s",
			 info.ktls_reason[KITE_RX]);
		t_assert(p.c->s != NULL, "session freed with RX in userspace");
		n = kite_recv(p.c, buf, sizeof(buf));
		t_assert(n == 4 && !memcmp(buf, "cdef", 4), "kite_recv %zd", n);
		pair_close(&p);
	}

	/* Required offload that fails: the connection exists, owns the
	 * session (pair_close frees both once: valgrind checks) and is dead. */
	sim_caps(-EBUSY);
	mock_reset();
	m.ulp_err = ENOENT;
	byo_open(&p, adopt, KITE_KTLS_DEFAULT | KITE_KTLS_REQUIRE);
	t_assert(p.hs == -EOPNOTSUPP, "REQUIRE without ULP: %d", p.hs);
	t_assert(p.c->s != NULL, "userspace session dropped");
	n = kite_send(p.c, "x", 1);
	t_assert(n == -EOPNOTSUPP, "kite_send on a failed REQUIRE: %zd", n);
	pair_close(&p);

	/* No kernel: userspace records through the embedder's session. */
	sim_caps(-EBUSY);
	mock_reset();
	m.ulp_err = ENOENT;
	byo_open(&p, adopt, KITE_KTLS_DEFAULT);
	t_ok(p.hs);
	t_send_all(p.c, "user tx", 7);
	n = gnutls_record_recv(p.peer, buf, sizeof(buf));
	t_assert(n == 7 && !memcmp(buf, "user tx", 7), "peer read %zd", n);
	pair_close(&p);
}

/* Argument errors leave the caller's session alone (and *out NULL). */
static void test_byo_args(void)
{
	struct kite_conn *c = (struct kite_conn *)&byo_sentinel;
	struct kite_ctx *ctx;
	gnutls_session_t s;

	t_ok(kite_ctx_create(&ctx, KITE_SERVER));
	if (gnutls_init(&s, GNUTLS_SERVER) < 0)
		t_fail("gnutls_init");
	t_assert(kite_conn_adopt_session(NULL, ctx, s, 3) == -EINVAL, "NULL out");
	t_assert(kite_conn_adopt_session(&c, NULL, s, 3) == -EINVAL && !c, "NULL ctx");
	c = (struct kite_conn *)&byo_sentinel;
	t_assert(kite_conn_create_session(&c, ctx, NULL, 3) == -EINVAL && !c, "NULL session");
	t_assert(kite_conn_create_session(&c, ctx, s, -1) == -EINVAL && !c, "fd -1");
	/* A server ctx without credentials is fine: the session has its own. */
	t_ok(kite_conn_create_session(&c, ctx, s, 3));
	kite_conn_destroy(c); /* frees s */
	kite_ctx_destroy(ctx);
}

/* No TLS ULP: both directions stay in GnuTLS and still work. */
static void test_ulp_missing(void)
{
	struct kite_conn_info info;
	struct pair p;
	char buf[64];
	ssize_t n;
	int r;

	sim_caps(-EBUSY);
	mock_reset();
	m.ulp_err = ENOENT;
	pair_open(&p, KITE_TLS13, KITE_AES_128_GCM, KITE_KTLS_DEFAULT);
	t_ok(p.hs);
	t_ok(kite_conn_info(p.c, &info));
	for (int d = 0; d < KITE_DIR_COUNT; d++) {
		t_assert(!info.ktls[d], "%s offloaded without a ULP", kite_dir_name(d));
		t_assert(info.ktls_error[d] == -EOPNOTSUPP, "%s error %d", kite_dir_name(d),
			 info.ktls_error[d]);
		t_assert(has(info.ktls_reason[d], "TCP_ULP"), "%s reason: %s", kite_dir_name(d),
			 info.ktls_reason[d]);
	}
	t_assert(count_ev(0, EV_SET) == 0, "SOL_TLS setsockopt without a ULP");
	t_assert(count_ev(0, EV_ULP) == 2, "%d TCP_ULP attempts", count_ev(0, EV_ULP));

	/* Userspace records over the real socket, both ways. */
	t_send_all(p.c, "over userspace", 14);
	n = gnutls_record_recv(p.peer, buf, sizeof(buf));
	t_assert(n == 14 && !memcmp(buf, "over userspace", 14), "peer read %zd", n);
	n = gnutls_record_send(p.peer, "reply", 5);
	t_assert(n == 5, "peer send %zd", n);
	n = kite_recv(p.c, buf, sizeof(buf));
	t_assert(n == 5 && !memcmp(buf, "reply", 5), "kite_recv %zd: %s", n,
		 kite_conn_strerror(p.c, (int)n));
	pair_close(&p);

	/* Required offload: the handshake fails, and stays failed. */
	sim_caps(-EBUSY);
	mock_reset();
	m.ulp_err = ENOENT;
	pair_open(&p, KITE_TLS13, KITE_AES_128_GCM, KITE_KTLS_DEFAULT | KITE_KTLS_REQUIRE);
	t_assert(p.hs == -EOPNOTSUPP, "REQUIRE without ULP: %d", p.hs);
	t_assert(has(kite_conn_strerror(p.c, p.hs), "TCP_ULP"), "message: %s",
		 kite_conn_strerror(p.c, p.hs));
	r = kite_handshake(p.c);
	t_assert(r == -EOPNOTSUPP, "second kite_handshake after a REQUIRE failure: %d", r);
	n = kite_send(p.c, "x", 1);
	t_assert(n == -EOPNOTSUPP, "kite_send after a REQUIRE failure: %zd", n);
	pair_close(&p);
}

/* TLS_TX refused, TLS_RX accepted: each direction has its own outcome,
 * and each got the key of its own direction. */
static void test_tx_refused(int err)
{
	struct tls12_crypto_info_aes_gcm_128 want;
	struct kite_conn_info info;
	struct pair p;
	char buf[64];
	ssize_t n;

	sim_caps(-EBUSY);
	mock_reset();
	m.set_err[TLS_TX] = err;
	pair_open(&p, KITE_TLS13, KITE_AES_128_GCM, KITE_KTLS_DEFAULT);
	t_ok(p.hs);
	t_ok(kite_conn_info(p.c, &info));
	t_assert(!info.ktls[KITE_TX] && info.ktls_error[KITE_TX] == -EOPNOTSUPP,
		 "tx: ktls %d error %d", info.ktls[KITE_TX], info.ktls_error[KITE_TX]);
	t_assert(has(info.ktls_reason[KITE_TX], "TLS_TX"), "tx reason: %s", info.ktls_reason[KITE_TX]);
	t_assert(info.ktls[KITE_RX] && info.ktls_error[KITE_RX] == 0, "rx: ktls %d error %d (%s)",
		 info.ktls[KITE_RX], info.ktls_error[KITE_RX], info.ktls_reason[KITE_RX]);
	t_assert(!strcmp(info.ktls_reason[KITE_RX], "kernel TLS"), "rx reason: %s",
		 info.ktls_reason[KITE_RX]);

	/* ULP, TLS_TX (refused), ULP again (EEXIST, tolerated), TLS_RX. */
	t_assert(m.nev == 4, "%d kernel calls", m.nev);
	t_assert(m.ev[0].kind == EV_ULP && m.ev[0].err == 0, "first ULP");
	t_assert(m.ev[1].kind == EV_SET && m.ev[1].name == TLS_TX && m.ev[1].err == err, "TLS_TX");
	t_assert(m.ev[2].kind == EV_ULP && m.ev[2].err == EEXIST, "second ULP");
	/* Our RX key is the peer's write key, our TX key its read key. */
	want = peer_state(p.peer, 0);
	check_ci(&m.ev[3], TLS_RX, &want, sizeof(want), "TLS_RX");
	want = peer_state(p.peer, 1);
	t_assert(m.ev[1].len == sizeof(want) && !memcmp(m.ev[1].data, &want, sizeof(want)),
		 "TLS_TX crypto_info is not the peer's read key");

	/* TX through GnuTLS on the real socket... */
	t_send_all(p.c, "user tx", 7);
	n = gnutls_record_recv(p.peer, buf, sizeof(buf));
	t_assert(n == 7 && !memcmp(buf, "user tx", 7), "peer read %zd", n);
	/* ...RX from the kernel. */
	m.scripted = true;
	rx_push(KITE_CT_APPLICATION_DATA, "kernel rx", 9);
	n = kite_recv(p.c, buf, sizeof(buf));
	t_assert(n == 9 && !memcmp(buf, "kernel rx", 9), "kite_recv %zd", n);
	pair_close(&p);
}

/* TLS 1.3 secrets are kept only for directions the kernel may rekey. */
static void test_secrets(void)
{
	struct kite_conn *c;
	struct pair p;

	/* No kernel rekey: nothing kept. */
	open_offloaded(&p, -EBUSY);
	c = p.c;
	t_assert(p.secret_len[KITE_TX] == 32 && p.secret_len[KITE_RX] == 32, "peer secrets");
	t_assert(all_zero(c->secret, sizeof(c->secret)), "secrets kept without kernel rekey");
	t_assert(!c->secret_len[KITE_TX] && !c->secret_len[KITE_RX], "secret lengths kept");
	pair_close(&p);

	/* Kernel rekey: both kept, each the right direction's. */
	open_offloaded(&p, 0);
	c = p.c;
	for (int d = 0; d < KITE_DIR_COUNT; d++)
		t_assert(c->secret_len[d] == 32 && !memcmp(c->secret[d], p.secret[d], 32),
			 "%s secret is not the %s traffic secret", kite_dir_name(d),
			 d == KITE_TX ? "client" : "server");
	pair_close(&p);

	/* Kernel rekey, TX refused: only RX kept. */
	sim_caps(0);
	mock_reset();
	m.set_err[TLS_TX] = EBUSY;
	pair_open(&p, KITE_TLS13, KITE_AES_128_GCM, KITE_KTLS_DEFAULT);
	t_ok(p.hs);
	c = p.c;
	t_assert(!c->ktls[KITE_TX] && c->ktls[KITE_RX], "tx %d rx %d", c->ktls[KITE_TX],
		 c->ktls[KITE_RX]);
	t_assert(all_zero(c->secret[KITE_TX], KITE_MAX_SECRET) && !c->secret_len[KITE_TX],
		 "tx secret kept for a userspace direction");
	t_assert(c->secret_len[KITE_RX] == 32 && !memcmp(c->secret[KITE_RX], p.secret[KITE_RX], 32),
		 "rx secret not kept");
	pair_close(&p);

	/* TLS 1.2 has no traffic secrets to keep. */
	sim_caps(0);
	mock_reset();
	pair_open(&p, KITE_TLS12, KITE_AES_128_GCM, KITE_KTLS_DEFAULT);
	t_ok(p.hs);
	t_assert(p.c->ktls[KITE_TX] && p.c->ktls[KITE_RX], "TLS 1.2 not offloaded");
	t_assert(all_zero(p.c->secret, sizeof(p.c->secret)), "TLS 1.2 secrets kept");
	pair_close(&p);
}

/* The kernel's record counter starts where GnuTLS's did. */
static void test_records_tx(enum kite_version v)
{
	struct kite_conn_info info;
	struct pair p;
	const struct event *e = NULL;
	union kite_crypto_info ci;

	sim_caps(-EBUSY);
	mock_reset();
	pair_open(&p, v, KITE_AES_128_GCM, KITE_KTLS_DEFAULT);
	t_ok(p.hs);
	for (int i = 0; i < m.nev; i++)
		if (m.ev[i].kind == EV_SET && m.ev[i].name == TLS_TX)
			e = &m.ev[i];
	t_assert(e && e->err == 0, "no TLS_TX");
	memcpy(&ci, e->data, e->len);
	t_ok(kite_conn_info(p.c, &info));
	t_assert(info.records_tx == get_be64(rec_seq_of(&ci)),
		 "%s: records_tx %llu, but the kernel got rec_seq %llu", kite_version_name(v),
		 (unsigned long long)info.records_tx,
		 (unsigned long long)get_be64(rec_seq_of(&ci)));
	pair_close(&p);
}

static void test_short_writes(void)
{
	static uint8_t buf[100000];
	struct pair p;
	ssize_t n;

	t_fill(buf, sizeof(buf), 1);
	open_offloaded(&p, -EBUSY);

	/* At most 1000 bytes per call: kite loops until all is taken. */
	m.send.max = 1000;
	n = kite_send(p.c, buf, sizeof(buf));
	t_assert(n == (ssize_t)sizeof(buf), "kite_send %zd", n);
	t_assert(m.data_bytes == sizeof(buf) && m.data_hash == t_hash(T_HASH_INIT, buf, sizeof(buf)),
		 "kernel got %zu bytes, or not in order", m.data_bytes);
	t_assert(m.send_calls == 100 && m.max_call == 1000, "%zu calls, largest %zu", m.send_calls,
		 m.max_call);
	t_assert(count_ev(p.nev_hs, EV_CTRL) == 0, "control record in a data send");
	t_assert(m.getsockopt_calls == 0, "rec_seq read back after 100 KB");

	/* EINTR: retried. */
	m.send = (struct script){.n = 1, .s = {{EINTR, 0}}};
	m.send_calls = m.data_bytes = 0;
	m.data_hash = T_HASH_INIT;
	n = kite_send(p.c, buf, 5000);
	t_assert(n == 5000 && m.send_calls == 2 && m.data_bytes == 5000,
		 "EINTR: %zd after %zu calls", n, m.send_calls);

	/* EAGAIN after 3000 bytes: the partial count, then -EAGAIN. */
	m.send = (struct script){.n = 1, .s = {{0, 3000}}, .err = EAGAIN};
	m.data_bytes = 0;
	m.data_hash = T_HASH_INIT;
	n = kite_send(p.c, buf, 10000);
	t_assert(n == 3000, "partial send %zd", n);
	p.c->poll_events = POLLIN;
	n = kite_send(p.c, buf + 3000, 7000);
	t_assert(n == -EAGAIN, "send with nothing taken: %zd", n);
	t_assert(kite_conn_poll_events(p.c) == POLLOUT, "poll events %d", kite_conn_poll_events(p.c));
	/* Writable again: the rest goes, and the stream is intact. */
	m.send.err = 0;
	n = kite_send(p.c, buf + 3000, 7000);
	t_assert(n == 7000, "send after EAGAIN %zd", n);
	t_assert(m.data_bytes == 10000 && m.data_hash == t_hash(T_HASH_INIT, buf, 10000),
		 "stream after EAGAIN: %zu bytes", m.data_bytes);
	pair_close(&p);
}

static void test_sendfile(void)
{
	struct pair p;
	uint64_t fhash;
	off_t off = 0;
	ssize_t n;
	int fd = t_temp_file(20000, 7, &fhash);

	open_offloaded(&p, -EBUSY);

	/* Short counts, then EAGAIN: the progress so far. */
	m.sf = (struct script){.n = 3, .s = {{0, 4096}, {0, 10000}, {EAGAIN, 0}}};
	n = kite_sendfile(p.c, fd, &off, 50000);
	t_assert(n == 14096 && off == 14096, "sendfile %zd, offset %lld", n, (long long)off);

	/* EAGAIN at once: -EAGAIN, offset unchanged. */
	m.sf = (struct script){.n = 1, .s = {{EAGAIN, 0}}};
	p.c->poll_events = POLLIN;
	n = kite_sendfile(p.c, fd, &off, 50000);
	t_assert(n == -EAGAIN && off == 14096, "sendfile %zd, offset %lld", n, (long long)off);
	t_assert(kite_conn_poll_events(p.c) == POLLOUT, "poll events %d", kite_conn_poll_events(p.c));

	/* EINTR retried; the file ends early: the partial count... */
	m.sf = (struct script){.n = 1, .s = {{EINTR, 0}}};
	n = kite_sendfile(p.c, fd, &off, 50000);
	t_assert(n == 5904 && off == 20000, "sendfile to EOF %zd, offset %lld", n, (long long)off);
	/* ...then -ENODATA, nothing moved. */
	n = kite_sendfile(p.c, fd, &off, 100);
	t_assert(n == -ENODATA && off == 20000, "sendfile past EOF %zd, offset %lld", n,
		 (long long)off);
	t_assert(has(kite_conn_strerror(p.c, (int)n), "file ends"), "message: %s",
		 kite_conn_strerror(p.c, (int)n));

	t_assert(m.data_bytes == 20000 && m.data_hash == fhash, "kernel got %zu bytes of the file",
		 m.data_bytes);
	t_assert(m.send_calls == 0, "sendfile went through sendmsg");
	close(fd);
	pair_close(&p);
}

static void test_shutdown(void)
{
	struct pair p;
	ssize_t n;

	open_offloaded(&p, -EBUSY);
	t_ok(kite_shutdown(p.c));
	t_assert(m.send_calls == 1 && count_ev(p.nev_hs, EV_CTRL) == 1, "%zu sends", m.send_calls);
	check_ctrl(&m.ev[p.nev_hs], KITE_CT_ALERT, close_notify, 2, "close_notify");
	n = kite_send(p.c, "x", 1);
	t_assert(n == -EPIPE, "send after shutdown: %zd", n);
	t_ok(kite_shutdown(p.c));
	t_assert(m.send_calls == 1, "second shutdown sent again");
	pair_close(&p);
}

/* ---- Receive path ---- */

static void test_recv_data(void)
{
	struct pair p;
	char buf[64];
	ssize_t n;

	open_offloaded(&p, -EBUSY);
	rx_push(KITE_CT_APPLICATION_DATA, "hello", 5);
	n = kite_recv(p.c, buf, sizeof(buf));
	t_assert(n == 5 && !memcmp(buf, "hello", 5), "kite_recv %zd", n);
	pair_close(&p);
}

static void test_recv_close_notify(size_t bufsize)
{
	struct pair p;
	char buf[64];
	ssize_t n;

	open_offloaded(&p, -EBUSY);
	rx_push(KITE_CT_ALERT, close_notify, 2);
	/* Into a 1-byte buffer the kernel hands the alert in two reads. */
	n = kite_recv(p.c, buf, bufsize);
	t_assert(n == 0, "close_notify (buffer %zu): %zd", bufsize, n);
	t_assert(m.recv_calls == (bufsize == 1 ? 2u : 1u), "%zu reads", m.recv_calls);
	n = kite_recv(p.c, buf, bufsize);
	t_assert(n == 0 && m.recv_calls == (bufsize == 1 ? 2u : 1u), "again: %zd", n);
	pair_close(&p);
}

static void test_recv_fatal_alert(void)
{
	static const uint8_t alert[2] = {2, 40}; /* fatal handshake_failure */
	struct pair p;
	char buf[64];
	ssize_t n;

	open_offloaded(&p, -EBUSY);
	rx_push(KITE_CT_ALERT, alert, 2);
	rx_push(KITE_CT_APPLICATION_DATA, "never", 5);
	n = kite_recv(p.c, buf, sizeof(buf));
	t_assert(n == -EPROTO, "fatal alert: %zd", n);
	t_assert(has(kite_conn_strerror(p.c, (int)n), "handshake_failure"), "message: %s",
		 kite_conn_strerror(p.c, (int)n));
	n = kite_recv(p.c, buf, sizeof(buf));
	t_assert(n == -EPROTO && m.recv_calls == 1, "after a fatal alert: %zd", n);
	pair_close(&p);
}

/* A client drops TLS 1.3 NewSessionTickets and returns the data after. */
static void test_recv_ticket(size_t bufsize)
{
	static const uint8_t nst[] = {
		KITE_HS_NEW_SESSION_TICKET, 0, 0, 17,
		0, 0, 0x0e, 0x10,       /* lifetime */
		1, 2, 3, 4,             /* age_add */
		1, 9,                   /* nonce */
		0, 3, 't', 'k', 't',    /* ticket */
		0, 0,                   /* extensions */
	};
	struct pair p;
	char buf[64];
	ssize_t n;

	open_offloaded(&p, -EBUSY);
	rx_push(KITE_CT_HANDSHAKE, nst, sizeof(nst));
	rx_push(KITE_CT_APPLICATION_DATA, "data", 4);
	n = kite_recv(p.c, buf, bufsize);
	t_assert(n == (ssize_t)(bufsize < 4 ? bufsize : 4) && !memcmp(buf, "data", (size_t)n),
		 "after a ticket (buffer %zu): %zd: %s", bufsize, n, kite_conn_strerror(p.c, (int)n));
	t_assert(count_ev(p.nev_hs, EV_CTRL) == 0, "a ticket made kite send a record");
	pair_close(&p);
}

/* recvmsg errors and EOF: each ends the connection with its own error. */
static void test_recv_error(int err, bool eof, int want, const char *detail)
{
	struct pair p;
	char buf[64];
	ssize_t n;

	open_offloaded(&p, -EBUSY);
	if (eof)
		m.rx[m.nrx++] = (struct rx_item){.eof = true};
	else
		rx_push_err(err);
	rx_push(KITE_CT_APPLICATION_DATA, "never", 5);
	n = kite_recv(p.c, buf, sizeof(buf));
	t_assert(n == want, "recvmsg %s: %zd, want %d", eof ? "EOF" : strerrorname_np(err), n, want);
	t_assert(has(kite_conn_strerror(p.c, (int)n), detail), "message: %s",
		 kite_conn_strerror(p.c, (int)n));
	n = kite_recv(p.c, buf, sizeof(buf));
	t_assert(n == want && m.recv_calls == 1, "second recv %zd after %zu reads", n, m.recv_calls);
	pair_close(&p);
}

static void test_recv_eintr(void)
{
	struct pair p;
	char buf[64];
	ssize_t n;

	open_offloaded(&p, -EBUSY);
	rx_push_err(EINTR);
	rx_push(KITE_CT_APPLICATION_DATA, "ok", 2);
	n = kite_recv(p.c, buf, sizeof(buf));
	t_assert(n == 2 && !memcmp(buf, "ok", 2) && m.recv_calls == 2, "EINTR: %zd after %zu reads",
		 n, m.recv_calls);
	pair_close(&p);
}

static void test_recv_unknown_type(void)
{
	struct pair p;
	char buf[64];
	ssize_t n;

	open_offloaded(&p, -EBUSY);
	rx_push(24 /* heartbeat */, "\x01\x00\x00", 3);
	n = kite_recv(p.c, buf, sizeof(buf));
	t_assert(n == -EPROTO, "unknown record type: %zd", n);
	t_assert(has(kite_conn_strerror(p.c, (int)n), "record type 24"), "message: %s",
		 kite_conn_strerror(p.c, (int)n));
	/* The connection ends: close_notify goes out, sends fail. */
	t_assert(count_ev(p.nev_hs, EV_CTRL) == 1, "no close_notify");
	check_ctrl(&m.ev[p.nev_hs], KITE_CT_ALERT, close_notify, 2, "close_notify");
	t_assert(kite_send(p.c, "x", 1) < 0, "send after a protocol error");
	pair_close(&p);
}

/* ---- KeyUpdate received ---- */

static const uint8_t ku_requested[5] = {KITE_HS_KEY_UPDATE, 0, 0, 1, 1};
static const uint8_t ku_not_requested[5] = {KITE_HS_KEY_UPDATE, 0, 0, 1, 0};

static void test_key_update_no_rekey(void)
{
	struct pair p;
	char buf[64];
	ssize_t n;

	open_offloaded(&p, -EBUSY);
	rx_push(KITE_CT_HANDSHAKE, ku_requested, 5);
	rx_push(KITE_CT_APPLICATION_DATA, "never", 5);
	n = kite_recv(p.c, buf, sizeof(buf));
	t_assert(n == -EKEYEXPIRED, "KeyUpdate without kernel rekey: %zd", n);
	t_assert(has(kite_conn_strerror(p.c, (int)n), "KeyUpdate"), "message: %s",
		 kite_conn_strerror(p.c, (int)n));
	t_assert(count_ev(p.nev_hs, EV_SET) == 0, "a key was installed");
	t_assert(count_ev(p.nev_hs, EV_CTRL) == 1 && m.send_calls == 1, "%zu sends", m.send_calls);
	check_ctrl(&m.ev[p.nev_hs], KITE_CT_ALERT, close_notify, 2, "close_notify");
	n = kite_send(p.c, "x", 1);
	t_assert(n == -EKEYEXPIRED && m.send_calls == 1, "send after: %zd", n);
	n = kite_recv(p.c, buf, sizeof(buf));
	t_assert(n == -EKEYEXPIRED && m.rx_pos == 1, "recv after: %zd", n);
	pair_close(&p);
}

static void test_key_update_rekey(bool requested)
{
	struct tls12_crypto_info_aes_gcm_128 want, peer;
	uint8_t next[KITE_MAX_SECRET];
	struct kite_conn_info info;
	struct pair p;
	char buf[64];
	ssize_t n;
	int e, r;

	open_offloaded(&p, 0);
	/* The peer really updates its key: GnuTLS's new write key is what
	 * kite must install for RX. (The KeyUpdate it sends on the real
	 * socket is never read; the script plays it.) */
	r = gnutls_session_key_update(p.peer, requested ? GNUTLS_KU_PEER : 0);
	t_assert(r == 0, "peer key update: %s", gnutls_strerror(r));
	peer = peer_state(p.peer, 0);

	rx_push(KITE_CT_HANDSHAKE, requested ? ku_requested : ku_not_requested, 5);
	rx_push(KITE_CT_APPLICATION_DATA, "after", 5);
	n = kite_recv(p.c, buf, sizeof(buf));
	t_assert(n == 5 && !memcmp(buf, "after", 5), "data after KeyUpdate: %zd: %s", n,
		 kite_conn_strerror(p.c, (int)n));

	e = p.nev_hs;
	t_assert(m.nev - e == (requested ? 3 : 1), "%d kernel calls", m.nev - e);
	want = next_key(p.secret[KITE_RX], 32, next);
	check_ci(&m.ev[e], TLS_RX, &want, sizeof(want), "next RX key");
	t_assert(!memcmp(&peer.key, &want.key, 16) && !memcmp(peer.iv, want.iv, 8) &&
		 !memcmp(peer.salt, want.salt, 4), "next RX key is not GnuTLS's");
	t_assert(!memcmp(p.c->secret[KITE_RX], next, 32), "rx secret not advanced");
	if (requested) {
		/* Our answer goes out under the old key, then the new one. */
		check_ctrl(&m.ev[e + 1], KITE_CT_HANDSHAKE, ku_not_requested, 5, "KeyUpdate answer");
		want = next_key(p.secret[KITE_TX], 32, next);
		check_ci(&m.ev[e + 2], TLS_TX, &want, sizeof(want), "next TX key");
	}
	t_ok(kite_conn_info(p.c, &info));
	t_assert(info.key_updates[KITE_RX] == 1 && info.key_updates[KITE_TX] == (requested ? 1u : 0u),
		 "key updates tx %llu rx %llu", (unsigned long long)info.key_updates[KITE_TX],
		 (unsigned long long)info.key_updates[KITE_RX]);
	t_send_all(p.c, "more", 4);
	t_assert(m.data_bytes == 4, "data after the update");
	pair_close(&p);
}

static void test_key_update_malformed(const uint8_t *msg, size_t len)
{
	struct pair p;
	char buf[64];
	ssize_t n;

	open_offloaded(&p, 0);
	rx_push(KITE_CT_HANDSHAKE, msg, len);
	n = kite_recv(p.c, buf, sizeof(buf));
	t_assert(n == -EPROTO, "malformed KeyUpdate: %zd", n);
	t_assert(has(kite_conn_strerror(p.c, (int)n), "malformed KeyUpdate"), "message: %s",
		 kite_conn_strerror(p.c, (int)n));
	t_assert(count_ev(p.nev_hs, EV_SET) == 0, "a key was installed");
	pair_close(&p);
}

/* ---- AEAD usage limit and kite_key_update() ---- */

#define MiB (1u << 20)

static void test_aead_limit(int rekey)
{
	static uint8_t buf[MiB];
	uint64_t limit = kite_aead_record_limit(KITE_AES_128_GCM), near = limit - (1u << 19);
	uint8_t next[KITE_MAX_SECRET];
	struct tls12_crypto_info_aes_gcm_128 want;
	struct kite_conn_info info;
	struct pair p;
	ssize_t n;
	int i, e;

	open_offloaded(&p, rekey);
	m.no_hash = true;
	m.tx_seq = near; /* the kernel has sent nearly all this key may */
	/* kite reads rec_seq back within 64 MiB: find the call that did. */
	for (i = 0; i < 64 && !m.getsockopt_calls; i++) {
		n = kite_send(p.c, buf, MiB);
		t_assert(n == MiB, "send %d: %zd: %s", i, n, kite_conn_strerror(p.c, (int)n));
	}
	t_assert(m.getsockopt_calls == 1, "rec_seq never read back in %d MiB", i);
	e = p.nev_hs;
	t_ok(kite_conn_info(p.c, &info));

	if (rekey) {
		/* No way to change the key: close_notify, last thing sent. */
		t_assert(m.nev - e == 1, "%d kernel calls", m.nev - e);
		check_ctrl(&m.ev[e], KITE_CT_ALERT, close_notify, 2, "close_notify");
		t_assert(m.ev[e].data_before == m.data_bytes, "data after close_notify");
		t_assert(info.records_tx == near, "records_tx %llu",
			 (unsigned long long)info.records_tx);
		n = kite_send(p.c, buf, MiB);
		t_assert(n == -EKEYEXPIRED, "send past the limit: %zd", n);
		t_assert(has(kite_conn_strerror(p.c, (int)n), "usage limit"), "message: %s",
			 kite_conn_strerror(p.c, (int)n));
		t_assert(m.data_bytes == (size_t)i * MiB, "sent %zu bytes", m.data_bytes);
		pair_close(&p);
		return;
	}
	/* KeyUpdate, then the next key at sequence 0. */
	t_assert(m.nev - e == 2, "%d kernel calls", m.nev - e);
	check_ctrl(&m.ev[e], KITE_CT_HANDSHAKE, ku_not_requested, 5, "KeyUpdate");
	want = next_key(p.secret[KITE_TX], 32, next);
	check_ci(&m.ev[e + 1], TLS_TX, &want, sizeof(want), "next TX key");
	t_assert(info.key_updates[KITE_TX] == 1 && info.key_updates[KITE_RX] == 0, "key updates");
	t_assert(info.records_tx == 0, "records_tx %llu", (unsigned long long)info.records_tx);
	/* Sending goes on under the new key; the next read-back is fine. */
	for (int j = 0; j < 70; j++) {
		n = kite_send(p.c, buf, MiB);
		t_assert(n == MiB, "send after rekey %d: %zd: %s", j, n,
			 kite_conn_strerror(p.c, (int)n));
	}
	t_assert(m.getsockopt_calls == 2 && m.nev - e == 2, "%zu read-backs, %d kernel calls",
		 m.getsockopt_calls, m.nev - e);
	pair_close(&p);
}

static void test_key_update_call(void)
{
	uint8_t next[KITE_MAX_SECRET], next2[KITE_MAX_SECRET];
	struct tls12_crypto_info_aes_gcm_128 want;
	struct pair p;
	int r, e;

	/* TLS 1.2 has no KeyUpdate. */
	sim_caps(0);
	mock_reset();
	pair_open(&p, KITE_TLS12, KITE_AES_128_GCM, KITE_KTLS_DEFAULT);
	t_ok(p.hs);
	m.scripted = true;
	r = kite_key_update(p.c);
	t_assert(r == -EOPNOTSUPP, "TLS 1.2 key update: %d", r);
	t_assert(m.send_calls == 0 && m.nev == p.nev_hs, "TLS 1.2 key update touched the socket");
	pair_close(&p);

	/* Kernel TX that cannot rekey: refused before anything is sent. */
	open_offloaded(&p, -EBUSY);
	r = kite_key_update(p.c);
	t_assert(r == -EOPNOTSUPP, "key update without kernel rekey: %d", r);
	t_assert(m.send_calls == 0 && m.nev == p.nev_hs, "a record went out: %zu sends",
		 m.send_calls);
	t_send_all(p.c, "still fine", 10);
	pair_close(&p);

	/* Kernel rekey: KeyUpdate then the next key, twice along the chain. */
	open_offloaded(&p, 0);
	e = p.nev_hs;
	t_ok(kite_key_update(p.c));
	t_ok(kite_key_update(p.c));
	t_assert(m.nev - e == 4, "%d kernel calls", m.nev - e);
	check_ctrl(&m.ev[e], KITE_CT_HANDSHAKE, ku_not_requested, 5, "first KeyUpdate");
	want = next_key(p.secret[KITE_TX], 32, next);
	check_ci(&m.ev[e + 1], TLS_TX, &want, sizeof(want), "first next key");
	check_ctrl(&m.ev[e + 2], KITE_CT_HANDSHAKE, ku_not_requested, 5, "second KeyUpdate");
	want = next_key(next, 32, next2);
	check_ci(&m.ev[e + 3], TLS_TX, &want, sizeof(want), "second next key");
	t_assert(p.c->key_updates[KITE_TX] == 2, "key updates %llu",
		 (unsigned long long)p.c->key_updates[KITE_TX]);
	pair_close(&p);

	/* The KeyUpdate went out but the kernel refused the key: the peer
	 * expects the new key, so the connection must end. */
	open_offloaded(&p, 0);
	m.set_err[TLS_TX] = ENOMEM;
	r = kite_key_update(p.c);
	t_assert(r == -ENOMEM, "failed rekey: %d", r);
	r = (int)kite_send(p.c, "x", 1);
	t_assert(r == -EKEYEXPIRED && m.data_bytes == 0, "send after a failed rekey: %d", r);
	pair_close(&p);
}

int main(void)
{
	t_make_creds(&creds);
	if (gnutls_certificate_allocate_credentials(&peer_cred) < 0 ||
	    gnutls_certificate_set_x509_key_file(peer_cred, creds.cert, creds.key,
						 GNUTLS_X509_FMT_PEM) < 0)
		t_fail("peer credentials");
	mock_reset();

	test_ulp_missing();
	test_tx_refused(EBUSY);
	test_tx_refused(ENOMEM);
	test_secrets();
	test_records_tx(KITE_TLS13);
	test_records_tx(KITE_TLS12);
	test_short_writes();
	test_sendfile();
	test_shutdown();

	test_recv_data();
	test_recv_close_notify(64);
	test_recv_close_notify(1);
	test_recv_fatal_alert();
	test_recv_ticket(64);
	test_recv_ticket(1);
	test_recv_error(EBADMSG, false, -EPROTO, "EBADMSG");
	test_recv_error(EMSGSIZE, false, -EPROTO, "EMSGSIZE");
	test_recv_error(EKEYEXPIRED, false, -EKEYEXPIRED, "KeyUpdate");
	test_recv_error(0, true, -ECONNRESET, "close_notify");
	test_recv_eintr();
	test_recv_unknown_type();

	test_key_update_no_rekey();
	test_key_update_rekey(true);
	test_key_update_rekey(false);
	test_key_update_malformed((const uint8_t[]){KITE_HS_KEY_UPDATE, 0, 0, 2, 1, 0}, 6);
	test_key_update_malformed((const uint8_t[]){KITE_HS_KEY_UPDATE, 0, 0, 1, 2}, 5);

	test_fastpath();
	test_byo(true);
	test_byo(false);
	test_byo_args();

	test_aead_limit(-EBUSY);
	test_aead_limit(0);
	test_key_update_call();
	check_keybufs("at the end");
	t_assert(nwipes > 0, "the library never wiped through the seam");

	gnutls_certificate_free_credentials(peer_cred);
	printf("PASS\n");
	return 0;
}
