/* SPDX-License-Identifier: MIT */
/*
 * One HTTP/1.1 connection of kite-serve, above the transport: buffers what
 * the client sent, answers complete requests in order (pipelining, at most
 * pipeline_max responses queued before the transport has drained them),
 * decides when the connection ends, and times out slow request heads.
 *
 * The transport is a table of functions, so the server plugs in kite's
 * engine streams and tests/serve/test_session.c plugs in a recorder.
 */
#ifndef KITE_SERVE_SESSION_H
#define KITE_SERVE_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "http.h"
#include "respond.h"

/* What was answered, for the access log and the metrics. */
struct sess_answer {
	const struct http_request *req; /* NULL: no parsable request (400, 408, 503, ...) */
	const char *line;               /* the request line as received, maybe empty */
	size_t line_len;
	int status;
	uint64_t body_bytes;            /* bytes of body queued */
	time_t when;
	uint32_t stream_id;             /* HTTP/2 stream; 0: HTTP/1.x */
};

struct sess_transport {
	/* Queue a copy of buf: 0 or -errno. */
	int (*send)(void *t, const void *buf, size_t len);
	/* Queue len bytes of fd from off; owns fd from now on (closes it on
	 * every path). 0 or -errno. */
	int (*sendfile)(void *t, int fd, uint64_t off, uint64_t len);
	/* The same for a long-lived descriptor (an open-file cache's) that
	 * stays the caller's, open until the transport has drained or ended;
	 * the transport may register it (KITE_SENDFILE_KEEP_FD). 0 or -errno.
	 * Needed where sess_config.fc is set. */
	int (*sendfile_kept)(void *t, int fd, uint64_t off, uint64_t len);
	/* Queue a copy of head, then len bytes of fd from off (fd -1 and len
	 * 0: only the head), as one unit on lane (kite_stream_queue_unit():
	 * lane 0 is send()'s, in order and first; other lanes share the
	 * connection fairly, each in order). fd stays the caller's, who keeps
	 * it open until the transport has drained or ended; kept: fd is
	 * long-lived (an open-file cache's) and may be registered
	 * (KITE_UNIT_KEEP_FD). 0 or -errno. May be NULL where nothing uses
	 * lanes (HTTP/1.1). */
	int (*unit)(void *t, uint32_t lane, const void *head, size_t head_len, int fd, uint64_t off,
		    uint64_t len, bool kept);
	/* End after the queue has gone out. */
	void (*close)(void *t);
	/* End now with a reset. */
	void (*abort)(void *t, int err);
	void (*answered)(void *t, const struct sess_answer *a);
	/* Stop (true) or resume reading from the client; may be NULL. */
	void (*pause)(void *t, bool on);
	/* Bytes queued and not yet handed to the kernel; may be NULL. */
	size_t (*queued)(void *t);
};

struct sess_config {
	const struct responder *rp;
	unsigned pipeline_max;    /* responses queued before waiting for a drain */
	size_t in_max;            /* request bytes buffered before the connection is dropped */
	unsigned head_timeout_ms; /* first byte of a request head to its end; 0: none */
	size_t inline_max;        /* file bodies up to this size are read and sent with the
				   * head (one TLS record in all up to 16 KiB); 0: never.
				   * Files the cache holds in memory need no read. */
	struct filecache *fc;     /* this thread's open-file cache, or NULL */
};

struct session {
	const struct sess_config *cfg;
	const struct sess_transport *tp;
	void *t;
	char *in;              /* received, not yet answered */
	size_t in_len, in_cap;
	unsigned queued;       /* responses queued since the last drain */
	uint64_t head_start;   /* ms: an incomplete head is arriving since; 0: none */
	bool closing;          /* the transport was told to end: ignore everything */
	bool peer_done;        /* the client finished sending */
	bool draining;         /* server shutting down: answer with close, then end */
	bool busy;             /* inside sess_data: re-entry guard */
	bool paused;           /* reading stopped until the pipeline drains */
	struct fc_entry **held; /* cache entries whose descriptor a queued range
				 * names: released once the transport drained */
	unsigned nheld, held_cap;
};

void sess_init(struct session *s, const struct sess_config *cfg, const struct sess_transport *tp,
	       void *t);
/* Free the buffer, release the cache entries held; the transport is not
 * called (it has ended: nothing queued names them). */
void sess_fini(struct session *s);

/* Bytes from the client (len 0: it finished sending). now_ms: a monotonic
 * clock. */
void sess_data(struct session *s, const void *buf, size_t len, uint64_t now_ms);
/* The transport has sent everything queued: answer what waits. */
void sess_drained(struct session *s, uint64_t now_ms);
/* Periodic check: a request head slower than head_timeout_ms gets 408. */
void sess_tick(struct session *s, uint64_t now_ms);
/* The server stops: end now if idle, else after the request in progress. */
void sess_drain_server(struct session *s);
/* Refuse the connection (503 over limits, or shutting down) and end it. */
void sess_reject(struct session *s, int status);

/* Read len bytes of fd at off (a small body sent from memory); false on a
 * short read or an error: the file shrank or cannot be read. */
bool sess_pread_all(int fd, char *buf, size_t len, uint64_t off);

#endif
