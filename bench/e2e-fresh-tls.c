/* SPDX-License-Identifier: MIT */
/*
 * e2e-fresh-tls.c - an LD_PRELOAD shim for wrk: a full TLS handshake on
 * every connection. bench/e2e compiles it into its temp dir (cc -shared)
 * for the connection-close cells.
 *
 * Why: wrk keeps one OpenSSL SSL object per connection slot and, after the
 * server closes, calls SSL_shutdown + SSL_clear + SSL_connect on it again.
 * SSL_clear keeps a cleanly shut down session, so every handshake after the
 * first presents its ticket and resumes (TLS 1.3 psk_dhe_ke: no certificate,
 * no signature). "Handshakes per second" would then measure resumptions.
 * Dropping the session before each ClientHello makes each one full.
 *
 * No OpenSSL headers: the two calls are declared here and resolved at run
 * time from the libssl that wrk itself loaded.
 */
#include <dlfcn.h>
#include <stddef.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;

int SSL_in_before(const SSL *s);
int SSL_set_session(SSL *s, SSL_SESSION *session);
int SSL_connect(SSL *s);

int SSL_connect(SSL *s)
{
	static int (*real)(SSL *);

	if (!real) {
		*(void **)&real = dlsym(RTLD_NEXT, "SSL_connect");
		if (!real)
			return -1;
	}
	/* SSL_in_before: no byte of this handshake sent yet. wrk calls
	 * SSL_connect again on every WANT_READ/WANT_WRITE; those calls are
	 * past "before" and go straight through. */
	if (SSL_in_before(s))
		SSL_set_session(s, NULL);
	return real(s);
}
