/* SPDX-License-Identifier: MIT */
/*
 * One HTTP/2 connection of kite-serve (ALPN "h2"), above the same transport
 * as the HTTP/1.1 session (session.h). libnghttp2 does the framing, HPACK
 * and flow control; every request goes through respond() like an HTTP/1.1
 * one, and its head is turned into HTTP/2 header fields.
 *
 * File bodies use nghttp2's no-copy data source: for each DATA frame this
 * code writes the 9-byte frame header itself and then either queues the
 * file range to the transport (kernel TLS: the engine splices it file ->
 * pipe -> socket right behind the header, in the same record) or reads it
 * into the output buffer next to the header (userspace TLS, small bodies:
 * header and payload sealed into one record).
 */
#ifndef KITE_SERVE_H2_H
#define KITE_SERVE_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "respond.h"
#include "session.h"

/* Defences: what a connection broke before it got GOAWAY. Each has a limit
 * (struct h2_config or a constant below) and a /metrics counter. */
enum h2_limit {
	H2L_RAPID_RESET,   /* streams reset by the client faster than resets_per_s */
	H2L_HEADER_LIST,   /* a header list (decoded) above max_header_list: oversized
			    * blocks and HPACK bombs */
	H2L_CONTINUATION,  /* more CONTINUATION frames than nghttp2's limit */
	H2L_SETTINGS,      /* SETTINGS frames above H2_CONTROL_PER_S */
	H2L_PING,          /* PING frames above H2_CONTROL_PER_S */
	H2L_EMPTY_DATA,    /* DATA without payload nor END_STREAM above H2_CONTROL_PER_S */
	H2L_WINDOW_UPDATE, /* WINDOW_UPDATEs for no data sent, above H2_CONTROL_PER_S */
	H2L_FLOOD,         /* nghttp2's own queue of acknowledgements overflowed */
	H2L_WINDOW_STALL,  /* a response waited for a window longer than send_timeout_ms */
	H2L_MAX_REQUESTS,  /* max_requests streams on one connection (stream ids) */
	H2L_PREFACE,       /* the connection did not start with the HTTP/2 preface */
	H2L_PROTOCOL,      /* any other protocol error nghttp2 found */
	H2L_SLOW_HEADERS,  /* a request not complete (END_STREAM) header_timeout_ms
			    * after its HEADERS began: slowloris over h2 */
	H2L_COUNT
};
const char *h2_limit_name(enum h2_limit l);

/* Control frames (SETTINGS, PING, empty DATA, useless WINDOW_UPDATE) a
 * client may send per second, each kind counted alone, before GOAWAY
 * ENHANCE_YOUR_CALM. Browsers send a handful per connection. */
#define H2_CONTROL_PER_S 200
/* Streams a client may reset per second before GOAWAY ENHANCE_YOUR_CALM
 * (CVE-2023-44487 opens and resets streams in a loop); a burst of
 * 2 * resets_per_s is tolerated. */
#define H2_RESETS_PER_S_DEFAULT 100
/* CONTINUATION frames after one HEADERS frame (nghttp2's limit). */
#define H2_MAX_CONTINUATIONS 8

/* Counters of one worker, summed for /metrics. */
struct h2_stats {
	uint64_t conns;             /* connections that negotiated h2 */
	uint64_t streams;           /* requests answered */
	uint64_t resets_in;         /* RST_STREAM received */
	uint64_t goaway_out;        /* GOAWAY sent (any code) */
	uint64_t data_frames;       /* DATA frames sent */
	uint64_t data_file_frames;  /* of which queued as a file range (no copy) */
	uint64_t limit[H2L_COUNT];
};

struct h2_config {
	const struct responder *rp;
	size_t inline_max;        /* a body up to this is read into the frames' buffer */
	struct filecache *fc;     /* this thread's open-file cache, or NULL */
	unsigned max_streams;     /* SETTINGS_MAX_CONCURRENT_STREAMS */
	unsigned max_requests;    /* streams per connection, then GOAWAY NO_ERROR */
	unsigned resets_per_s;    /* client resets tolerated per second */
	size_t max_header_list;   /* decoded bytes of one request's header list */
	unsigned send_timeout_ms; /* a response blocked by a closed window; 0: none */
	unsigned header_timeout_ms; /* a request's HEADERS to its END_STREAM; 0: none */
	struct h2_stats *stats;   /* counters (the worker's), never NULL */
};

struct h2conn;

/*
 * A connection that negotiated h2. Every DATA frame of a file body is
 * queued with the transport's unit() on the lane of its stream (a body of
 * one small frame goes with the lane-0 frames). file_direct: the payload
 * is a file range behind the frame header (kernel TLS TX); otherwise it is
 * read behind the header; a range names the stream's own descriptor, which
 * stays open after the stream ends until h2_drained() (transport empty) or
 * h2_destroy(). queued(t) tells how many bytes wait in the transport.
 * Returns NULL without memory.
 */
struct h2conn *h2_create(const struct h2_config *cfg, const struct sess_transport *tp, void *t,
			 bool file_direct);
/* Free everything; the transport is not called. NULL: no-op. */
void h2_destroy(struct h2conn *h);

/* Bytes from the client (len 0: it finished sending). */
void h2_data(struct h2conn *h, const void *buf, size_t len, uint64_t now_ms);
/* The transport sent everything queued: produce more. */
void h2_drained(struct h2conn *h, uint64_t now_ms);
/* Periodic check: responses stuck behind a window that never opens. */
void h2_tick(struct h2conn *h, uint64_t now_ms);
/* The server stops: GOAWAY with the last stream id; started streams finish. */
void h2_drain_server(struct h2conn *h);
/* Refuse the connection (server over its limits): every request gets
 * status, then the connection ends. */
void h2_reject(struct h2conn *h, int status);

#endif
