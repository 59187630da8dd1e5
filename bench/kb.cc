// SPDX-License-Identifier: MIT
//
// kb.cc - the C API of kb.h over Google Benchmark. The only C++ in kite:
// it keeps Google Benchmark's flags, reporters and JSON output while every
// benchmark body stays C. Adds what kite-bench needs on top: "skipped" vs
// "FAILED" rows (both are SkipWithError rows in Google Benchmark 1.7; the
// message prefix tells them apart and only failures change the exit status),
// a --quick profile, progress lines and a closing summary.
#include "kb.h"

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

struct kb_state {
	benchmark::State *s;
	bool stopped;
	bool failed;
};

struct kb_bench {
	benchmark::internal::Benchmark *b;
	std::string name;
	int nargs;
};

namespace {

enum row_status { ROW_RAN, ROW_SKIPPED, ROW_FAILED };

struct runner {
	bool progress = false;
	bool any_failed = false;
	std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
	std::string last_row;
	std::map<std::string, row_status> rows;
	std::vector<std::pair<std::string, std::string>> context;
	std::vector<kb_bench *> benches;
};

runner &R()
{
	static runner r;
	return r;
}

double elapsed()
{
	return std::chrono::duration<double>(std::chrono::steady_clock::now() - R().t0).count();
}

// Row key as the user sees it, close to Google Benchmark's own name.
std::string row_key(const kb_bench *kb, const benchmark::State &s)
{
	std::string k = kb->name;

	for (int i = 0; i < kb->nargs; i++)
		k += "/" + std::to_string(s.range(static_cast<std::size_t>(i)));
	return k;
}

void call_body(const kb_bench *kb, kb_body *body, const void *arg, benchmark::State &s)
{
	runner &r = R();
	kb_state st{&s, false, false};
	std::string key = row_key(kb, s);

	if (r.progress && key != r.last_row) {
		std::fprintf(stderr, "kite-bench: [%7.1f s] #%zu %s\n", elapsed(), r.rows.size() + 1,
			     key.c_str());
		std::fflush(stderr);
	}
	r.last_row = key;
	body(&st, arg);
	// Google Benchmark calls a body several times per row; the worst
	// outcome of any call is the row's.
	row_status now = ROW_RAN;
	if (st.stopped)
		now = st.failed ? ROW_FAILED : ROW_SKIPPED;
	auto it = r.rows.find(key);
	if (it == r.rows.end())
		r.rows.emplace(key, now);
	else if (now > it->second)
		it->second = now;
}

std::string vformat(const char *fmt, va_list ap)
{
	char buf[1024];

	std::vsnprintf(buf, sizeof(buf), fmt, ap);
	return buf;
}

} // namespace

extern "C" {

struct kb_bench *kb_register(const char *name, kb_body *body, const void *arg)
{
	kb_bench *kb = new kb_bench{nullptr, name, 0};

	kb->b = benchmark::RegisterBenchmark(name, [kb, body, arg](benchmark::State &s) {
		call_body(kb, body, arg, s);
	});
	R().benches.push_back(kb);
	return kb;
}

void kb_args(struct kb_bench *kb, const char *const *names, const int64_t *vals, int n)
{
	std::vector<int64_t> v(vals, vals + n);

	if (names)
		kb->b->ArgNames(std::vector<std::string>(names, names + n));
	kb->b->Args(v);
	kb->nargs = n;
}

void kb_range(struct kb_bench *kb, const char *name, int64_t lo, int64_t hi, int mult)
{
	if (name)
		kb->b->ArgName(name);
	kb->b->RangeMultiplier(mult)->Range(lo, hi);
	kb->nargs = 1;
}

void kb_real_time(struct kb_bench *kb)
{
	kb->b->UseRealTime();
}

void kb_unit(struct kb_bench *kb, enum kb_unit u)
{
	static const benchmark::TimeUnit map[] = {benchmark::kNanosecond, benchmark::kMicrosecond,
						  benchmark::kMillisecond, benchmark::kSecond};
	kb->b->Unit(map[u]);
}

void kb_context(const char *key, const char *value)
{
	R().context.emplace_back(key, value);
}

bool kb_keep_running(struct kb_state *st)
{
	return st->s->KeepRunning();
}

int64_t kb_arg(const struct kb_state *st, int i)
{
	return st->s->range(static_cast<std::size_t>(i));
}

int64_t kb_iterations(const struct kb_state *st)
{
	return static_cast<int64_t>(st->s->iterations());
}

void kb_pause(struct kb_state *st)
{
	st->s->PauseTiming();
}

void kb_resume(struct kb_state *st)
{
	st->s->ResumeTiming();
}

void kb_bytes(struct kb_state *st, int64_t bytes)
{
	st->s->SetBytesProcessed(bytes);
}

void kb_counter(struct kb_state *st, const char *name, double value, enum kb_counter_kind kind)
{
	benchmark::Counter::Flags f = benchmark::Counter::kDefaults;

	if (kind == KB_RATE)
		f = benchmark::Counter::kIsRate;
	else if (kind == KB_PER_ITER)
		f = benchmark::Counter::kAvgIterations;
	st->s->counters[name] = benchmark::Counter(value, f);
}

void kb_label(struct kb_state *st, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	st->s->SetLabel(vformat(fmt, ap));
	va_end(ap);
}

void kb_skip(struct kb_state *st, const char *fmt, ...)
{
	va_list ap;

	if (st->stopped)
		return;
	va_start(ap, fmt);
	st->s->SkipWithError(("skipped: " + vformat(fmt, ap)).c_str());
	va_end(ap);
	st->stopped = true;
}

void kb_fail(struct kb_state *st, const char *fmt, ...)
{
	va_list ap;

	if (st->stopped)
		return;
	va_start(ap, fmt);
	st->s->SkipWithError(("FAILED: " + vformat(fmt, ap)).c_str());
	va_end(ap);
	st->stopped = st->failed = true;
	R().any_failed = true;
}

bool kb_stopped(const struct kb_state *st)
{
	return st->stopped;
}

int kb_main(int argc, char **argv, const char *usage, void (*register_all)(bool quick))
{
	runner &r = R();
	std::vector<char *> args;
	bool quick = false, have_min_time = false, help = false;
	int n_run = 0, n_skip = 0, n_fail = 0;

	r.progress = isatty(STDERR_FILENO) && !isatty(STDOUT_FILENO);
	for (int i = 0; i < argc; i++) {
		if (i > 0 && !std::strcmp(argv[i], "--quick"))
			quick = true;
		else if (i > 0 && !std::strcmp(argv[i], "--progress"))
			r.progress = true;
		else {
			if (!std::strncmp(argv[i], "--benchmark_min_time", 20))
				have_min_time = true;
			if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h"))
				help = true;
			args.push_back(argv[i]);
		}
	}
	// Ours first; Google Benchmark then prints its flags and exits.
	if (help)
		std::fputs(usage, stdout);
	// A short minimum time per row, by flag rather than MinTime(): MinTime
	// would add "/min_time:0.010" to every row name, and quick and full
	// runs should name their rows alike.
	static char quick_min_time[] = "--benchmark_min_time=0.01";
	if (quick && !have_min_time)
		args.push_back(quick_min_time);
	args.push_back(nullptr);
	int gargc = static_cast<int>(args.size()) - 1;

	benchmark::Initialize(&gargc, args.data());
	if (benchmark::ReportUnrecognizedArguments(gargc, args.data()))
		return 2;
	register_all(quick);
	r.context.emplace_back("kite_bench_profile", quick ? "quick" : "full");
	for (const auto &kv : r.context)
		benchmark::AddCustomContext(kv.first, kv.second);
	r.t0 = std::chrono::steady_clock::now();
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();

	for (const auto &row : r.rows)
		(row.second == ROW_RAN ? n_run : row.second == ROW_SKIPPED ? n_skip : n_fail)++;
	if (!r.rows.empty()) // not for --benchmark_list_tests
		std::fprintf(stderr, "kite-bench: %d rows ran, %d skipped, %d failed in %.1f s\n",
			     n_run, n_skip, n_fail, elapsed());
	for (kb_bench *kb : r.benches)
		delete kb;
	r.benches.clear();
	return r.any_failed ? 1 : 0;
}

} // extern "C"
