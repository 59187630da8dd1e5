/* SPDX-License-Identifier: MIT */
/*
 * kb.h - a small C API over Google Benchmark (kb.cc is the only C++ in
 * kite). Benchmark bodies are C functions:
 *
 *	static void bm_x(struct kb_state *st, const void *arg)
 *	{
 *		setup();                       // not timed
 *		while (kb_keep_running(st))
 *			work(kb_arg(st, 0));       // timed
 *		kb_bytes(st, kb_iterations(st) * kb_arg(st, 0));
 *	}
 *	kb_range(kb_register("x/AES-128-GCM", bm_x, NULL), "size", 16, 16384, 4);
 *
 * A body must either run the kb_keep_running() loop until it returns false
 * or call kb_skip()/kb_fail() (before or inside the loop; inside it, break
 * out right after). Google Benchmark calls a body several times per row while
 * it settles the iteration count: setup runs each time, only the loop is timed.
 */
#ifndef KB_H
#define KB_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct kb_state;  /* one run of one row: wraps benchmark::State */
struct kb_bench;  /* one registered family member: wraps benchmark::internal::Benchmark */

typedef void kb_body(struct kb_state *st, const void *arg);

/* ---- Registration (before kb_main runs them) ------------------------------ */

/* Register body under name; arg is passed to every call and must outlive the
 * run. The name is copied. Returns the handle for the calls below. */
struct kb_bench *kb_register(const char *name, kb_body *body, const void *arg);

/* One more row with these argument values (kb_arg(st, i) in the body).
 * names, if not NULL, label them in the row name ("size:4096"). */
void kb_args(struct kb_bench *b, const char *const *names, const int64_t *vals, int n);
/* Rows for one argument: lo, lo*mult, lo*mult^2, ..., hi (Google Benchmark's
 * Range: powers of mult between the ends, both ends included). */
void kb_range(struct kb_bench *b, const char *name, int64_t lo, int64_t hi, int mult);
/* Time by the wall clock instead of this thread's CPU time (bodies that wait
 * for another thread or the network). Adds "/real_time" to the row name. */
void kb_real_time(struct kb_bench *b);

enum kb_unit { KB_NS, KB_US, KB_MS, KB_S };
void kb_unit(struct kb_bench *b, enum kb_unit u);

/* Key/value for the run header and the JSON "context" (kernel, versions). */
void kb_context(const char *key, const char *value);

/* ---- Inside a body --------------------------------------------------------- */

/* The keep-running loop: true while another timed iteration is wanted. */
bool kb_keep_running(struct kb_state *st);
/* Argument i of this row. */
int64_t kb_arg(const struct kb_state *st, int i);
/* Iterations run so far (after the loop: all of them). */
int64_t kb_iterations(const struct kb_state *st);
/* Stop / restart the timer inside the loop. Costly (clock reads): for
 * per-iteration setup much longer than a microsecond only. */
void kb_pause(struct kb_state *st);
void kb_resume(struct kb_state *st);

/* Bytes handled by the whole run: reported as bytes_per_second. */
void kb_bytes(struct kb_state *st, int64_t bytes);

enum kb_counter_kind {
	KB_VALUE,     /* reported as given */
	KB_RATE,      /* divided by the run's time: per second */
	KB_PER_ITER,  /* divided by the iteration count */
};
/* A custom column: name=value. The name is copied. */
void kb_counter(struct kb_state *st, const char *name, double value, enum kb_counter_kind kind);
/* Free text shown at the end of the row ("TLS1.3 X25519 kernel rx"). */
void kb_label(struct kb_state *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * The row cannot run here (kernel lacks kTLS, not implemented yet): it is
 * reported, with the reason, as an error row whose message starts with
 * "skipped: ". The exit status stays 0.
 */
void kb_skip(struct kb_state *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The row went wrong (a transfer failed, kTLS was required and missing):
 * reported as "FAILED: ...", and kb_main returns 1. */
void kb_fail(struct kb_state *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Has kb_skip or kb_fail been called in this run? */
bool kb_stopped(const struct kb_state *st);

/* ---- Running --------------------------------------------------------------- */

/*
 * Take the shim's own flags (--quick, --progress; --help prints usage, then
 * Google Benchmark's flags), call register_all(quick), then hand the rest
 * of argv to Google Benchmark (--benchmark_filter, --benchmark_repetitions,
 * --benchmark_out=FILE --benchmark_out_format=json, ...) and run. --quick
 * sets a short minimum time per row (--benchmark_min_time=0.01 unless one
 * is given); --progress prints a line on stderr as each row starts (the
 * default when stderr is a terminal and stdout is not). A summary line
 * (rows ran / skipped / failed) goes to stderr at the end.
 * Returns the exit status: 0, 1 if any row failed, 2 for bad usage.
 */
int kb_main(int argc, char **argv, const char *usage, void (*register_all)(bool quick));

#ifdef __cplusplus
}
#endif
#endif /* KB_H */
