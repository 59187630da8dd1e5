/* SPDX-License-Identifier: MIT */
/*
 * kite against a peer that does its own userspace TLS with plain GnuTLS (in
 * a thread, blocking socket): whatever the kernel encrypts the peer must
 * decrypt, and the other way round. On a kernel without kTLS the same cases
 * check the userspace fallback and its stated reason; inside UML
 * (KITE_REQUIRE_KTLS=1) the GCM and ChaCha20 suites must be offloaded.
 *
 * Each case is a script of steps; both sides walk it, each doing its half
 * and recording what happened; the results are judged after the peer
 * thread has ended.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "common.h"

#define KiB 1024u
#define MiB (1024u * 1024u)
#define MAX_STEPS 24
#define IO_TIMEOUT_S 120 /* per blocking socket call; UML crypto is slow */
#define NOT_RUN LONG_MIN

enum act {
	K2P,         /* kite sends n bytes (kite_send or kite_sendfile), peer receives */
	P2K,         /* peer sends n bytes, kite receives */
	K_CLOSE,     /* kite_shutdown; peer's gnutls_record_recv returns 0 */
	P_CLOSE,     /* peer gnutls_bye(SHUT_WR); kite_recv returns 0 */
	P_TICKETS,   /* peer (server) sends two more TLS 1.3 NewSessionTickets */
	P_KEYUPDATE, /* peer gnutls_session_key_update(GNUTLS_KU_PEER) */
	P_ALERT,     /* peer sends a fatal internal_error alert; kite_recv fails */
	P_RESET,     /* peer ends TCP without close_notify; kite_recv fails */
};

struct step {
	enum act a;
	size_t n;
	bool file;     /* K2P through kite_sendfile */
	uint64_t seed;
};

/* What one side saw in one step. rc: bytes moved (== n when complete),
 * else the return value that ended the step; NOT_RUN if never reached. */
struct res {
	long rc;
	size_t got;
	uint64_t hash;
	char msg[200];
};

enum scen { S_TRANSFER, S_TICKETS, S_KEYUPDATE, S_ALERT, S_RESET };
static const char *const scen_name[] = {"transfer", "tickets", "key-update", "alert", "reset"};

struct pcase {
	enum scen s;
	enum kite_version v;
	enum kite_cipher c;
	enum kite_role role; /* kite's role; the peer takes the other */
};

struct peer {
	bool server;
	bool tickets;
	char prio[160];
	int fd;
	const struct step *st;
	int n;
	int hs;                 /* gnutls_handshake() result */
	int ku_in, nst_out;     /* KeyUpdates received, NewSessionTickets sent */
	struct res r[MAX_STEPS];
	pthread_t th;
};

static const size_t sizes[] = {0, 1, 16383, 16384, 16385, 4 * MiB};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

static struct t_creds creds;
static gnutls_certificate_credentials_t peer_cred_srv, peer_cred_cli;
static gnutls_datum_t ticket_key;
static struct { int fd; uint64_t hash; } files[NSIZES];

/* rc of a step that went as planned. */
static long done_rc(const struct step *st)
{
	return st->a == K2P || st->a == P2K ? (long)st->n : 0;
}

/* ---- data ---------------------------------------------------------------- */

static uint8_t *pattern(size_t n, uint64_t seed, uint64_t *hash)
{
	uint8_t *p = malloc(n ? n : 1);

	if (!p)
		t_fail("out of memory");
	t_fill(p, n, seed);
	if (hash)
		*hash = t_hash(T_HASH_INIT, p, n);
	return p;
}

static int file_index(size_t n)
{
	for (size_t i = 0; i < NSIZES; i++)
		if (sizes[i] == n)
			return (int)i;
	t_fail("no temp file of %zu bytes", n);
}

/* The hash the receiving side must end up with for a data step. */
static uint64_t want_hash(const struct step *st)
{
	uint64_t h;

	if (st->a == K2P && st->file)
		return files[file_index(st->n)].hash;
	free(pattern(st->n, st->seed, &h));
	return h;
}

/* ---- the GnuTLS peer ------------------------------------------------------ */

static int peer_hook(gnutls_session_t s, unsigned htype, unsigned when, unsigned incoming,
		     const gnutls_datum_t *msg)
{
	struct peer *p = gnutls_session_get_ptr(s);

	(void)when, (void)msg;
	if (htype == GNUTLS_HANDSHAKE_KEY_UPDATE && incoming)
		p->ku_in++;
	if (htype == GNUTLS_HANDSHAKE_NEW_SESSION_TICKET && !incoming)
		p->nst_out++;
	return 0;
}

static void peer_err(struct res *r, long rc)
{
	int e = errno;

	r->rc = rc;
	snprintf(r->msg, sizeof(r->msg), "%s%s%s", rc < 0 ? gnutls_strerror((int)rc)
		 : rc ? "data instead of close_notify" : "end of stream",
		 rc == GNUTLS_E_PUSH_ERROR || rc == GNUTLS_E_PULL_ERROR ? ": " : "",
		 rc == GNUTLS_E_PUSH_ERROR || rc == GNUTLS_E_PULL_ERROR ? strerror(e) : "");
}

/* GnuTLS answers AGAIN after a record without application data (empty,
 * NewSessionTicket, KeyUpdate) even on a blocking socket; only AGAIN after
 * SO_RCVTIMEO expired in this pull means the other side went silent. */
static __thread bool peer_timed_out;

static ssize_t peer_pull(gnutls_transport_ptr_t fd, void *buf, size_t len)
{
	ssize_t r = recv((int)(intptr_t)fd, buf, len, 0);

	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		peer_timed_out = true;
	return r;
}

static ssize_t peer_record_recv(gnutls_session_t s, void *buf, size_t len)
{
	ssize_t k;

	peer_timed_out = false;
	do
		k = gnutls_record_recv(s, buf, len);
	while (k == GNUTLS_E_INTERRUPTED || (k == GNUTLS_E_AGAIN && !peer_timed_out));
	return k;
}

/* Receive up to n bytes; stops early at EOF (rc 0) or an error. */
static void peer_recv(gnutls_session_t s, size_t n, struct res *r)
{
	static __thread uint8_t buf[64 * KiB];
	ssize_t k = 0;

	r->hash = T_HASH_INIT;
	while (r->got < n) {
		size_t want = n - r->got < sizeof(buf) ? n - r->got : sizeof(buf);

		k = peer_record_recv(s, buf, want);
		if (k <= 0)
			break;
		r->hash = t_hash(r->hash, buf, (size_t)k);
		r->got += (size_t)k;
	}
	if (r->got == n)
		r->rc = (long)n;
	else
		peer_err(r, k);
}

static void peer_send(gnutls_session_t s, const struct step *st, struct res *r)
{
	uint8_t *p = pattern(st->n, st->seed, NULL);
	size_t done = 0;
	ssize_t k = 0;

	/* GnuTLS refuses empty sends; TLS 1.3 can carry "0 bytes" as a record
	 * with only padding, which the receiver must skip. */
	if (!st->n && gnutls_protocol_get_version(s) == GNUTLS_TLS1_3)
		k = gnutls_record_send2(s, p, 0, 32, 0);
	while (k >= 0 && done < st->n) {
		k = gnutls_record_send(s, p + done, st->n - done);
		if (k > 0)
			done += (size_t)k;
		else if (k == GNUTLS_E_INTERRUPTED)
			k = 0;
	}
	free(p);
	if (k < 0)
		peer_err(r, k);
	else
		r->rc = (long)st->n;
}

static void *peer_main(void *arg)
{
	struct peer *p = arg;
	gnutls_session_t s;
	int rc;

	if (gnutls_init(&s, p->server ? GNUTLS_SERVER : GNUTLS_CLIENT) < 0)
		t_fail("peer: gnutls_init");
	gnutls_session_set_ptr(s, p);
	if (gnutls_priority_set_direct(s, p->prio, NULL) < 0 ||
	    gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE,
				   p->server ? peer_cred_srv : peer_cred_cli) < 0 ||
	    (p->tickets && gnutls_session_ticket_enable_server(s, &ticket_key) < 0))
		t_fail("peer: session setup (%s)", p->prio);
	gnutls_handshake_set_hook_function(s, GNUTLS_HANDSHAKE_ANY, GNUTLS_HOOK_POST, peer_hook);
	gnutls_transport_set_int(s, p->fd);
	gnutls_transport_set_pull_function(s, peer_pull);
	do
		p->hs = gnutls_handshake(s);
	while (p->hs < 0 && !gnutls_error_is_fatal(p->hs) && p->hs != GNUTLS_E_AGAIN);
	if (p->hs < 0)
		goto out;

	for (int i = 0; i < p->n; i++) {
		const struct step *st = &p->st[i];
		struct res *r = &p->r[i];

		r->rc = 0;
		switch (st->a) {
		case K2P:
			peer_recv(s, st->n, r);
			break;
		case P2K:
			peer_send(s, st, r);
			break;
		case K_CLOSE: {
			uint8_t b;

			rc = (int)peer_record_recv(s, &b, 1);
			if (rc)
				peer_err(r, rc > 0 ? 1 : rc); /* 1: data instead of close_notify */
			break;
		}
		case P_CLOSE:
			rc = gnutls_bye(s, GNUTLS_SHUT_WR);
			if (rc < 0)
				peer_err(r, rc);
			break;
		case P_TICKETS:
			rc = gnutls_session_ticket_send(s, 2, 0);
			if (rc < 0)
				peer_err(r, rc);
			break;
		case P_KEYUPDATE:
			rc = gnutls_session_key_update(s, GNUTLS_KU_PEER);
			if (rc < 0)
				peer_err(r, rc);
			break;
		case P_ALERT:
			rc = gnutls_alert_send(s, GNUTLS_AL_FATAL, GNUTLS_A_INTERNAL_ERROR);
			if (rc < 0)
				peer_err(r, rc);
			break;
		case P_RESET:
			if (shutdown(p->fd, SHUT_WR))
				r->rc = -errno;
			break;
		}
		if (r->rc != done_rc(st))
			break;
	}
out:
	gnutls_deinit(s);
	return NULL;
}

/* ---- the kite side -------------------------------------------------------- */

static void kite_err(struct kite_conn *k, struct res *r, long rc)
{
	r->rc = rc;
	snprintf(r->msg, sizeof(r->msg), "%s",
		 rc < 0 ? kite_conn_strerror(k, (int)rc) : rc ? "unexpected data" : "end of stream");
}

static void kite_step(struct kite_conn *k, const struct step *st, struct res *r)
{
	static uint8_t buf[64 * KiB];
	long rc = 0;

	r->rc = 0;
	switch (st->a) {
	case K2P:
		if (st->file) {
			off_t off = 0;

			rc = kite_sendfile(k, files[file_index(st->n)].fd, &off, st->n);
			if (rc >= 0 && off != (off_t)rc)
				t_fail("kite_sendfile returned %ld but moved the offset to %lld", rc,
				       (long long)off);
		} else {
			uint8_t *p = pattern(st->n, st->seed, NULL);

			rc = kite_send(k, p, st->n);
			free(p);
		}
		if (rc != (long)st->n)
			kite_err(k, r, rc);
		else
			r->rc = rc;
		break;
	case P2K:
		r->hash = T_HASH_INIT;
		while (r->got < st->n) {
			size_t want = st->n - r->got < sizeof(buf) ? st->n - r->got : sizeof(buf);

			rc = kite_recv(k, buf, want);
			if (rc <= 0)
				break;
			r->hash = t_hash(r->hash, buf, (size_t)rc);
			r->got += (size_t)rc;
		}
		if (r->got == st->n)
			r->rc = (long)st->n;
		else
			kite_err(k, r, rc);
		break;
	case K_CLOSE:
		rc = kite_shutdown(k);
		if (rc)
			kite_err(k, r, rc);
		break;
	case P_CLOSE:
	case P_ALERT:
	case P_RESET:
		rc = kite_recv(k, buf, sizeof(buf));
		if (rc)
			kite_err(k, r, rc);
		break;
	case P_TICKETS:
	case P_KEYUPDATE:
		break; /* noticed by the next kite_recv */
	}
}

/* ---- scripts -------------------------------------------------------------- */

static int script(const struct pcase *pc, struct step *st, uint64_t seed)
{
	int n = 0;

#define ADD(...) (st[n] = (struct step){__VA_ARGS__, .seed = seed + (uint64_t)n}, n++)
	switch (pc->s) {
	case S_TRANSFER:
		for (size_t i = 0; i < NSIZES; i++) {
			ADD(.a = K2P, .n = sizes[i]);
			ADD(.a = K2P, .n = sizes[i], .file = true);
		}
		for (size_t i = 0; i < NSIZES; i++)
			ADD(.a = P2K, .n = sizes[i]);
		ADD(.a = K_CLOSE);
		ADD(.a = P_CLOSE);
		break;
	case S_TICKETS:
		ADD(.a = P_TICKETS);
		ADD(.a = P2K, .n = 64 * KiB);
		ADD(.a = K2P, .n = 1000);
		ADD(.a = K_CLOSE);
		ADD(.a = P_CLOSE);
		break;
	case S_KEYUPDATE:
		ADD(.a = P2K, .n = 100 * KiB);
		ADD(.a = P_KEYUPDATE);
		ADD(.a = P2K, .n = 100 * KiB);
		ADD(.a = K2P, .n = 100 * KiB);
		ADD(.a = K_CLOSE);
		ADD(.a = P_CLOSE);
		break;
	case S_ALERT:
	case S_RESET:
		ADD(.a = P2K, .n = 1000);
		ADD(.a = K2P, .n = 1000);
		ADD(.a = pc->s == S_ALERT ? P_ALERT : P_RESET);
		break;
	}
#undef ADD
	return n;
}

/* ---- judging -------------------------------------------------------------- */

static const char *label;

static const char *res_str(const struct res *r)
{
	static __thread char b[2][260];
	static __thread int i;

	i ^= 1;
	if (r->rc == NOT_RUN)
		return "not reached";
	snprintf(b[i], sizeof(b[i]), "rc %ld, %zu bytes%s%s", r->rc, r->got,
		 r->msg[0] ? ": " : "", r->msg);
	return b[i];
}

static bool names_alert(const char *msg, gnutls_alert_description_t a)
{
	const char *n1 = gnutls_alert_get_name(a), *n2 = gnutls_alert_get_strname(a);

	return (n1 && strstr(msg, n1)) || (n2 && strstr(msg, n2));
}

/* The outcome every step has when nothing goes wrong. */
static void judge_step(int i, const struct step *st, const struct res *k, const struct res *p)
{
	static const char *const an[] = {"kite->peer data", "peer->kite data", "kite close_notify",
					 "peer close_notify", "peer tickets", "peer KeyUpdate",
					 "peer alert", "peer TCP close"};
	const char *what = an[st->a];

	switch (st->a) {
	case K2P:
		t_assert(k->rc == (long)st->n, "%s: step %d %s (%zu): kite: %s", label, i, what,
			 st->n, res_str(k));
		t_assert(p->rc == (long)st->n && p->got == st->n, "%s: step %d %s (%zu): peer: %s",
			 label, i, what, st->n, res_str(p));
		t_assert(p->hash == want_hash(st), "%s: step %d %s (%zu): peer received wrong bytes",
			 label, i, what, st->n);
		break;
	case P2K:
		t_assert(p->rc == (long)st->n, "%s: step %d %s (%zu): peer: %s", label, i, what,
			 st->n, res_str(p));
		t_assert(k->rc == (long)st->n && k->got == st->n, "%s: step %d %s (%zu): kite: %s",
			 label, i, what, st->n, res_str(k));
		t_assert(k->hash == want_hash(st), "%s: step %d %s (%zu): kite received wrong bytes",
			 label, i, what, st->n);
		break;
	case K_CLOSE:
	case P_CLOSE:
	case P_TICKETS:
	case P_KEYUPDATE:
		t_assert(k->rc == 0, "%s: step %d %s: kite: %s", label, i, what, res_str(k));
		t_assert(p->rc == 0, "%s: step %d %s: peer: %s", label, i, what, res_str(p));
		break;
	case P_ALERT:
		t_assert(p->rc == 0, "%s: step %d %s: peer: %s", label, i, what, res_str(p));
		t_assert(k->rc == -EPROTO, "%s: %s: kite_recv should be -EPROTO: %s", label, what,
			 res_str(k));
		t_assert(names_alert(k->msg, GNUTLS_A_INTERNAL_ERROR),
			 "%s: %s: message does not name the alert: %s", label, what, k->msg);
		break;
	case P_RESET:
		t_assert(p->rc == 0, "%s: step %d %s: peer: %s", label, i, what, res_str(p));
		t_assert(k->rc == -ECONNRESET, "%s: %s: kite_recv should be -ECONNRESET: %s", label,
			 what, res_str(k));
		break;
	}
}

/* kite_conn_info against the probe: a direction is offloaded exactly when
 * the probe says the kernel can, else it names the probe's reason. */
static void check_offload(struct kite_conn *k, const struct pcase *pc, struct kite_conn_info *in)
{
	const struct kite_caps *caps = kite_caps_get();

	t_ok(kite_conn_info(k, in));
	t_assert(in->handshake_done && in->version == (int)pc->v && in->cipher == (int)pc->c,
		 "%s: negotiated %s %s", label, in->version_name, in->cipher_name);
	if (t_require_ktls() && pc->c != KITE_AES_128_CCM && !t_kernel_offloads(pc->v, pc->c))
		t_fail("%s: KITE_REQUIRE_KTLS=1 but this kernel does not offload it: tx: %s; rx: %s",
		       label, caps->ulp ? caps->ulp_reason : caps->offload_reason[pc->v][pc->c][KITE_TX],
		       caps->ulp ? caps->ulp_reason : caps->offload_reason[pc->v][pc->c][KITE_RX]);
	for (int d = 0; d < KITE_DIR_COUNT; d++) {
		bool can = !caps->ulp && !caps->offload[pc->v][pc->c][d];
		const char *why = caps->ulp ? caps->ulp_reason : caps->offload_reason[pc->v][pc->c][d];

		if (can) {
			t_assert(in->ktls[d] && in->ktls_error[d] == 0,
				 "%s: %s not offloaded although the kernel can: %s", label,
				 kite_dir_name(d), in->ktls_reason[d]);
			continue;
		}
		t_assert(!in->ktls[d] && in->ktls_error[d] < 0,
			 "%s: %s offloaded although the probe says: %s", label, kite_dir_name(d), why);
		t_assert(in->ktls_reason[d][0] && !strcmp(in->ktls_reason[d], why),
			 "%s: %s reason \"%s\", probe says \"%s\"", label, kite_dir_name(d),
			 in->ktls_reason[d], why);
	}
}

/* TLS 1.3 KeyUpdate(update_requested) from the peer, as this kernel allows.
 * Returns what happened, for the case's line. */
static const char *judge_key_update(struct kite_conn *k, const struct kite_conn_info *in,
			     const struct step *st, int n, const struct res *kr, const struct peer *p)
{
	uint8_t b[16];
	ssize_t r;

	if (in->ktls[KITE_RX] && kite_caps_get()->rekey) {
		/* The kernel cannot take the next RX key: end cleanly, never
		 * return bytes decrypted with a wrong key. */
		judge_step(0, &st[0], &kr[0], &p->r[0]);
		t_assert(p->r[1].rc == 0 && p->r[2].rc == (long)st[2].n, "%s: peer: %s / %s", label,
			 res_str(&p->r[1]), res_str(&p->r[2]));
		t_assert(kr[2].rc == -EKEYEXPIRED && kr[2].got == 0,
			 "%s: after the KeyUpdate kite_recv should be -EKEYEXPIRED with no data: %s",
			 label, res_str(&kr[2]));
		t_assert(strstr(kr[2].msg, "KeyUpdate"), "%s: message does not mention KeyUpdate: %s",
			 label, kr[2].msg);
		t_assert(p->r[3].rc == 0 && p->r[3].got == 0,
			 "%s: peer should see an orderly close (close_notify): %s", label,
			 res_str(&p->r[3]));
		r = kite_recv(k, b, sizeof(b));
		t_assert(r == -EKEYEXPIRED, "%s: kite_recv after -EKEYEXPIRED = %zd", label, r);
		r = kite_send(k, b, sizeof(b));
		t_assert(r == -EKEYEXPIRED || r == -EPIPE, "%s: kite_send after -EKEYEXPIRED = %zd",
			 label, r);
		return "KeyUpdate: kernel cannot rekey, -EKEYEXPIRED and close_notify";
	}
	for (int i = 0; i < n; i++)
		judge_step(i, &st[i], &kr[i], &p->r[i]);
	/* kite answered update_requested with its own KeyUpdate, and the
	 * peer decrypted kite's data under the new key (step 3). */
	t_assert(p->ku_in == 1, "%s: peer received %d KeyUpdate messages, want 1", label, p->ku_in);
	if (in->ktls[KITE_RX])
		t_assert(in->key_updates[KITE_RX] == 1 && in->key_updates[KITE_TX] == 1,
			 "%s: kite key_updates rx %llu tx %llu, want 1 and 1", label,
			 (unsigned long long)in->key_updates[KITE_RX],
			 (unsigned long long)in->key_updates[KITE_TX]);
	return in->ktls[KITE_RX] ? "KeyUpdate: kernel rekeyed both ways" : "KeyUpdate: in userspace";
}

/* ---- one case ------------------------------------------------------------- */

static void set_timeouts(int fd)
{
	struct timeval tv = {.tv_sec = IO_TIMEOUT_S};

	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)))
		t_fail("SO_RCVTIMEO/SO_SNDTIMEO: %s", strerror(errno));
}

static bool run_case(const struct pcase *pc, int no, const char *only)
{
	static char lbl[128];
	static struct peer p;
	struct step st[MAX_STEPS];
	struct res kr[MAX_STEPS];
	struct kite_conn_info in;
	struct kite_ctx *ctx;
	struct kite_conn *k;
	const char *prio = t_priority(pc->v, pc->c);
	long long tx0 = t_tls_stat("TlsTxSw"), rx0 = t_tls_stat("TlsRxSw");
	const char *note = NULL;
	int fds[2], kfd, n, r;

	snprintf(lbl, sizeof(lbl), "%s %s kite-%s %s", kite_version_name(pc->v),
		 kite_cipher_name(pc->c), pc->role == KITE_SERVER ? "server" : "client",
		 scen_name[pc->s]);
	label = lbl;
	if (only && !strstr(lbl, only))
		return false;
	n = script(pc, st, (uint64_t)no * 1000);
	memset(kr, 0, sizeof(kr));
	for (int i = 0; i < n; i++)
		kr[i].rc = NOT_RUN;

	ctx = pc->role == KITE_SERVER ? t_server_ctx(&creds, prio, KITE_KTLS_DEFAULT)
				      : t_client_ctx(prio, KITE_KTLS_DEFAULT);
	t_tcp_pair(fds);
	/* fds[0] is the client end. */
	kfd = pc->role == KITE_CLIENT ? fds[0] : fds[1];
	memset(&p, 0, sizeof(p));
	for (int i = 0; i < n; i++)
		p.r[i].rc = NOT_RUN;
	p.fd = pc->role == KITE_CLIENT ? fds[1] : fds[0];
	p.server = pc->role == KITE_CLIENT;
	p.tickets = pc->s == S_TICKETS;
	snprintf(p.prio, sizeof(p.prio), "%s", prio);
	p.st = st;
	p.n = n;
	set_timeouts(kfd);
	set_timeouts(p.fd);
	/* Room for what kite never reads when it ends the connection
	 * (KeyUpdate case), so that the peer's send does not hang. */
	if (setsockopt(p.fd, SOL_SOCKET, SO_SNDBUF, &(int){1 << 20}, sizeof(int)))
		t_fail("SO_SNDBUF: %s", strerror(errno));
	if (pthread_create(&p.th, NULL, peer_main, &p))
		t_fail("pthread_create");

	t_ok(kite_conn_create(&k, ctx, kfd));
	r = kite_handshake(k);
	if (r) {
		shutdown(kfd, SHUT_RDWR);
		pthread_join(p.th, NULL);
		t_fail("%s: kite_handshake: %s (peer: %s)", label, kite_conn_strerror(k, r),
		       p.hs < 0 ? gnutls_strerror(p.hs) : "ok");
	}
	check_offload(k, pc, &in);

	for (int i = 0; i < n; i++) {
		kite_step(k, &st[i], &kr[i]);
		if (kr[i].rc != done_rc(&st[i]))
			break;
	}
	/* Whatever happened, the peer must not wait for kite's data any
	 * longer. Only FIN: SHUT_RD would make TCP answer data the peer may
	 * still be sending (KeyUpdate case) with a reset. */
	shutdown(kfd, SHUT_WR);
	pthread_join(p.th, NULL);
	t_assert(p.hs == 0, "%s: peer handshake: %s", label, gnutls_strerror(p.hs));
	t_ok(kite_conn_info(k, &in));

	if (pc->s == S_KEYUPDATE) {
		note = judge_key_update(k, &in, st, n, kr, &p);
	} else {
		for (int i = 0; i < n; i++)
			judge_step(i, &st[i], &kr[i], &p.r[i]);
	}
	if (pc->s == S_TICKETS)
		t_assert(p.nst_out >= 3, "%s: peer sent %d NewSessionTickets, want >= 1 + 2", label,
			 p.nst_out);
	if (in.ktls[KITE_TX] && in.ktls[KITE_RX]) {
		long long tx1 = t_tls_stat("TlsTxSw"), rx1 = t_tls_stat("TlsRxSw");

		t_assert(tx1 > tx0 && rx1 > rx0,
			 "%s: /proc/net/tls_stat TlsTxSw %lld -> %lld, TlsRxSw %lld -> %lld", label,
			 tx0, tx1, rx0, rx1);
	}
	printf("%s: tx=%s rx=%s ok%s%s\n", label, in.ktls[KITE_TX] ? "kernel" : "user",
	       in.ktls[KITE_RX] ? "kernel" : "user", note ? "; " : "", note ? note : "");
	fflush(stdout);

	kite_conn_destroy(k);
	kite_ctx_destroy(ctx);
	close(fds[0]);
	close(fds[1]);
	return true;
}

/* Optional argument: run only the cases whose label contains it. */
int main(int argc, char **argv)
{
	static const enum kite_cipher two[] = {KITE_AES_128_GCM, KITE_CHACHA20_POLY1305};
	struct pcase cases[64];
	const struct kite_caps *caps = kite_caps_get();
	int nc = 0, ran = 0;

	signal(SIGPIPE, SIG_IGN);
	printf("kernel TLS: %s; rekey: %s\n", caps->ulp_reason, caps->rekey_reason);

	for (int v = 0; v < KITE_VERSION_COUNT; v++)
		for (int c = 0; c < KITE_CIPHER_COUNT; c++)
			for (int role = 0; role < 2; role++)
				cases[nc++] = (struct pcase){S_TRANSFER, v, c, role};
	for (int i = 0; i < 2; i++)
		cases[nc++] = (struct pcase){S_TICKETS, KITE_TLS13, two[i], KITE_CLIENT};
	for (int i = 0; i < 2; i++)
		for (int role = 0; role < 2; role++)
			cases[nc++] = (struct pcase){S_KEYUPDATE, KITE_TLS13, two[i], role};
	for (int s = S_ALERT; s <= S_RESET; s++)
		for (int v = 0; v < KITE_VERSION_COUNT; v++)
			for (int role = 0; role < 2; role++)
				cases[nc++] = (struct pcase){s, v, KITE_AES_128_GCM, role};

	t_make_creds(&creds);
	if (gnutls_certificate_allocate_credentials(&peer_cred_srv) < 0 ||
	    gnutls_certificate_set_x509_key_file(peer_cred_srv, creds.cert, creds.key,
						 GNUTLS_X509_FMT_PEM) < 0 ||
	    gnutls_certificate_allocate_credentials(&peer_cred_cli) < 0 ||
	    gnutls_session_ticket_key_generate(&ticket_key) < 0)
		t_fail("peer credentials");
	for (size_t i = 0; i < NSIZES; i++)
		files[i].fd = t_temp_file(sizes[i], 7000 + i, &files[i].hash);

	for (int i = 0; i < nc; i++)
		ran += run_case(&cases[i], i, argc > 1 ? argv[1] : NULL);

	for (size_t i = 0; i < NSIZES; i++)
		close(files[i].fd);
	gnutls_free(ticket_key.data);
	gnutls_certificate_free_credentials(peer_cred_srv);
	gnutls_certificate_free_credentials(peer_cred_cli);
	if (!ran)
		t_fail("no case matches \"%s\"", argv[1]);
	printf("%d cases passed\n", ran);
	return 0;
}
