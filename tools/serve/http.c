/* SPDX-License-Identifier: MIT */
/* HTTP/1.1 request parsing (RFC 9110, RFC 9112) for kite-serve. */
#include "http.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static bool is_tchar(unsigned char c)
{
	/* RFC 9110 5.6.2 token characters */
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool str_ieq(struct http_str s, const char *lit)
{
	size_t n = strlen(lit);

	return s.n == n && strncasecmp(s.p, lit, n) == 0;
}

/* Next line of buf[off..len): its length without CR LF; *next is where the
 * following line starts. Returns -1 if no complete line yet. */
static long next_line(const char *buf, size_t len, size_t off, size_t *next)
{
	const char *nl = memchr(buf + off, '\n', len - off);
	size_t end;

	if (!nl)
		return -1;
	end = (size_t)(nl - buf);
	*next = end + 1;
	if (end > off && buf[end - 1] == '\r')
		end--;
	return (long)(end - off);
}

static int parse_request_line(const char *p, size_t n, struct http_request *req)
{
	const char *sp1 = memchr(p, ' ', n), *sp2;
	size_t i;

	if (!sp1 || sp1 == p)
		return -400;
	sp2 = memchr(sp1 + 1, ' ', n - (size_t)(sp1 + 1 - p));
	if (!sp2 || sp2 == sp1 + 1)
		return -400;
	req->method_name = (struct http_str){p, (size_t)(sp1 - p)};
	for (i = 0; i < req->method_name.n; i++)
		if (!is_tchar((unsigned char)p[i]))
			return -400;
	req->target = (struct http_str){sp1 + 1, (size_t)(sp2 - sp1 - 1)};
	for (i = 0; i < req->target.n; i++) {
		unsigned char c = (unsigned char)req->target.p[i];

		if (c <= 0x20 || c == 0x7f)
			return -400;
	}
	{
		const char *v = sp2 + 1;
		size_t vn = n - (size_t)(v - p);

		if (vn != 8 || memcmp(v, "HTTP/", 5) || v[6] != '.' || v[5] < '0' || v[5] > '9' ||
		    v[7] < '0' || v[7] > '9')
			return -400;
		if (v[5] != '1')
			return -505;
		req->minor = v[7] - '0';
	}
	if (str_ieq(req->method_name, "GET") && !memcmp(p, "GET", 3))
		req->method = HTTP_GET;
	else if (req->method_name.n == 4 && !memcmp(p, "HEAD", 4))
		req->method = HTTP_HEAD;
	else
		req->method = HTTP_OTHER; /* methods are case-sensitive (RFC 9110 9.1) */
	return 0;
}

static void trim(struct http_str *s)
{
	while (s->n && (s->p[0] == ' ' || s->p[0] == '\t'))
		s->p++, s->n--;
	while (s->n && (s->p[s->n - 1] == ' ' || s->p[s->n - 1] == '\t'))
		s->n--;
}

/* Connection: comma-separated tokens. */
static void connection_tokens(struct http_str v, bool *close, bool *keep)
{
	while (v.n) {
		const char *comma = memchr(v.p, ',', v.n);
		struct http_str t = {v.p, comma ? (size_t)(comma - v.p) : v.n};

		trim(&t);
		if (str_ieq(t, "close"))
			*close = true;
		else if (str_ieq(t, "keep-alive"))
			*keep = true;
		if (!comma)
			break;
		v.n -= (size_t)(comma - v.p) + 1;
		v.p = comma + 1;
	}
}

static int parse_header(const char *p, size_t n, struct http_request *req, bool *close,
			bool *keep)
{
	const char *colon = memchr(p, ':', n);
	struct http_str name, v;

	if (!colon || colon == p)
		return -400;
	name = (struct http_str){p, (size_t)(colon - p)};
	for (size_t i = 0; i < name.n; i++)
		if (!is_tchar((unsigned char)name.p[i]))
			return -400; /* includes whitespace before the colon (RFC 9112 5.1) */
	v = (struct http_str){colon + 1, n - name.n - 1};
	for (size_t i = 0; i < v.n; i++) {
		unsigned char c = (unsigned char)v.p[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return -400;
	}
	trim(&v);
	if (str_ieq(name, "host")) {
		if (req->has_host)
			return -400; /* RFC 9112 3.2: exactly one Host */
		req->has_host = true;
		req->host = v;
	} else if (str_ieq(name, "connection")) {
		connection_tokens(v, close, keep);
	} else if (str_ieq(name, "range")) {
		req->range = v;
	} else if (str_ieq(name, "if-none-match")) {
		req->if_none_match = v;
	} else if (str_ieq(name, "if-modified-since")) {
		req->if_modified_since = v;
	} else if (str_ieq(name, "if-range")) {
		req->if_range = v;
	} else if (str_ieq(name, "accept-encoding")) {
		/* Two fields make one list (RFC 9110 5.3) that the parser
		 * cannot join without copying: a coding one of them refuses
		 * must not be chosen from the other, so answer with identity. */
		req->accept_encoding = req->accept_encoding.p ? (struct http_str){"identity", 8} : v;
	} else if (str_ieq(name, "user-agent")) {
		req->user_agent = v;
	} else if (str_ieq(name, "referer")) {
		req->referer = v;
	} else if (str_ieq(name, "transfer-encoding")) {
		req->has_body = true;
	} else if (str_ieq(name, "content-length")) {
		if (!v.n)
			return -400;
		for (size_t i = 0; i < v.n; i++) {
			if (v.p[i] < '0' || v.p[i] > '9')
				return -400;
			if (v.p[i] != '0')
				req->has_body = true;
		}
	}
	return 0;
}

int http_parse_request(const char *buf, size_t len, struct http_request *req)
{
	size_t off = 0, next, hstart;
	bool close = false, keep = false;
	int nheaders = 0, r;
	long ln;

	memset(req, 0, sizeof(*req));
	/* RFC 9112 2.2: ignore empty lines before the request line. */
	while (off < len && (buf[off] == '\r' || buf[off] == '\n')) {
		off++;
		if (off > 64)
			return -400;
	}
	ln = next_line(buf, len, off, &next);
	if (ln < 0)
		return len - off > HTTP_MAX_REQUEST_LINE ? -414 : 0;
	if (ln > HTTP_MAX_REQUEST_LINE)
		return -414;
	r = parse_request_line(buf + off, (size_t)ln, req);
	if (r)
		return r;
	off = hstart = next;
	for (;;) {
		/* The header block alone is limited, however short the
		 * request line was. */
		ln = next_line(buf, len, off, &next);
		if (ln < 0)
			return len - hstart > HTTP_MAX_HEADERS_BYTES ? -431 : 0;
		if (next - hstart > HTTP_MAX_HEADERS_BYTES)
			return -431;
		if (ln == 0)
			break;
		if (buf[off] == ' ' || buf[off] == '\t')
			return -400; /* obs-fold (RFC 9112 5.2) */
		if (++nheaders > HTTP_MAX_HEADERS)
			return -431;
		r = parse_header(buf + off, (size_t)ln, req, &close, &keep);
		if (r)
			return r;
		off = next;
	}
	if (req->minor >= 1 && !req->has_host)
		return -400;
	if (req->has_body)
		return -413;
	req->keep_alive = req->minor >= 1 ? !close : (keep && !close);
	return (int)next;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)(c | 0x20);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int http_normalize_path(const char *t, size_t n, char *out, size_t cap)
{
	size_t o = 0, i = 0;

	/* absolute-form (RFC 9112 3.2.2), which servers must accept: the
	 * authority names this server whatever it says; the path follows. */
	for (const char *const *sc = (const char *const[]){"http://", "https://", NULL}; *sc; sc++) {
		size_t k = strlen(*sc);

		if (n > k && !strncasecmp(t, *sc, k)) {
			for (i = k; i < n && t[i] != '/' && t[i] != '?' && t[i] != '#'; i++)
				;
			if (i == k)
				return -400; /* no authority */
			if (i == n || t[i] != '/') {
				/* "http://host" or "http://host?q": the root */
				t = "/";
				n = 1;
			} else {
				t += i;
				n -= i;
			}
			i = 0;
			break;
		}
	}
	if (!n || t[0] != '/')
		return -400; /* origin-form or absolute-form only (RFC 9112 3.2) */
	if (cap < 2)
		return -414;
	while (i < n && t[i] != '?' && t[i] != '#') {
		size_t seg_start;

		/* t[i] == '/': collapse runs of slashes */
		while (i < n && t[i] == '/')
			i++;
		if (i >= n || t[i] == '?' || t[i] == '#')
			break;
		seg_start = o;
		if (o) {
			if (o + 1 >= cap)
				return -414;
			out[o++] = '/';
			seg_start = o;
		}
		while (i < n && t[i] != '/' && t[i] != '?' && t[i] != '#') {
			unsigned char c = (unsigned char)t[i++];

			if (c == '%') {
				int hi, lo;

				if (i + 1 >= n || (hi = hexval(t[i])) < 0 || (lo = hexval(t[i + 1])) < 0)
					return -400;
				c = (unsigned char)(hi << 4 | lo);
				i += 2;
				/* An encoded slash or NUL never names a path. */
				if (c == '/' || c == 0)
					return -400;
			}
			if (c < 0x20 || c == 0x7f || c == '\\')
				return -400;
			if (o + 1 >= cap)
				return -414;
			out[o++] = (char)c;
		}
		/* The segment is out[seg_start..o): resolve "." and "..". */
		if (o - seg_start == 1 && out[seg_start] == '.') {
			o = seg_start ? seg_start - 1 : 0;
		} else if (o - seg_start == 2 && out[seg_start] == '.' && out[seg_start + 1] == '.') {
			if (seg_start == 0)
				return -400; /* above the root */
			o = seg_start - 1; /* drop "/.." */
			while (o > 0 && out[o - 1] != '/')
				o--;
			if (o > 0)
				o--; /* and the '/' before the parent segment */
		}
	}
	out[o] = 0;
	return (int)o;
}

static bool parse_u64(const char *p, size_t n, uint64_t *v)
{
	uint64_t x = 0;

	if (!n || n > 19)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		x = x * 10 + (uint64_t)(p[i] - '0');
	}
	*v = x;
	return true;
}

int http_parse_range(const char *v, size_t n, uint64_t size, uint64_t *start, uint64_t *len)
{
	const char *dash;
	uint64_t a, b;

	if (n < 7 || strncasecmp(v, "bytes=", 6))
		return 0; /* unknown range unit: ignore (RFC 9110 14.2) */
	v += 6, n -= 6;
	while (n && (*v == ' ' || *v == '\t'))
		v++, n--;
	while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	if (memchr(v, ',', n))
		return 0; /* several ranges: serve the whole file, allowed */
	dash = memchr(v, '-', n);
	if (!dash)
		return 0;
	if (dash == v) {
		/* suffix range: the last b bytes */
		if (!parse_u64(dash + 1, n - 1, &b))
			return 0;
		if (b == 0 || size == 0)
			return -416;
		*len = b < size ? b : size;
		*start = size - *len;
		return 1;
	}
	if (!parse_u64(v, (size_t)(dash - v), &a))
		return 0;
	if ((size_t)(dash - v) + 1 == n) {
		b = UINT64_MAX;
	} else if (!parse_u64(dash + 1, n - (size_t)(dash - v) - 1, &b) || b < a) {
		return 0; /* invalid range-spec: ignore the header */
	}
	if (a >= size)
		return -416;
	if (b >= size)
		b = size - 1;
	*start = a;
	*len = b - a + 1;
	return 1;
}

static const char wdays[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
				   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

void http_date(time_t t, char out[30])
{
	struct tm tm;

	gmtime_r(&t, &tm);
	snprintf(out, 30, "%s, %02d %s %04d %02d:%02d:%02d GMT", wdays[tm.tm_wday % 7],
		 tm.tm_mday % 100, months[tm.tm_mon % 12], (tm.tm_year + 1900) % 10000,
		 tm.tm_hour % 100, tm.tm_min % 100, tm.tm_sec % 100);
}

time_t http_parse_date(const char *s, size_t n)
{
	char buf[30];
	struct tm tm = {0};
	char wd[4], mon[4];
	int i;

	if (n != 29)
		return -1;
	memcpy(buf, s, 29);
	buf[29] = 0;
	if (sscanf(buf, "%3s, %2d %3s %4d %2d:%2d:%2d GMT", wd, &tm.tm_mday, mon, &tm.tm_year,
		   &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 7)
		return -1;
	for (i = 0; i < 12 && strcmp(mon, months[i]); i++)
		;
	if (i == 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
	    tm.tm_sec > 60 || tm.tm_year < 1970)
		return -1;
	tm.tm_mon = i;
	tm.tm_year -= 1900;
	return timegm(&tm);
}

/* q-value (RFC 9110 12.4.2) in thousandths: "1", "1.000", "0", "0.5".
 * -1 when it is not one. */
static int parse_qvalue(const char *p, size_t n)
{
	int v, scale = 100;
	size_t i;

	if (!n || (p[0] != '0' && p[0] != '1'))
		return -1;
	v = (p[0] - '0') * 1000;
	if (n == 1)
		return v;
	if (p[1] != '.' || n > 5)
		return -1;
	for (i = 2; i < n; i++, scale /= 10) {
		if (p[i] < '0' || p[i] > '9' || (v == 1000 && p[i] != '0'))
			return -1;
		v += (p[i] - '0') * scale;
	}
	return v;
}

int http_accept_encoding(const char *v, size_t n, unsigned offered, unsigned order[2])
{
	/* Weights in thousandths; -1: not named. */
	int br = -1, gz = -1, id = -1, star = -1, wbr, wgz, wid;
	int cnt = 0;

	while (n) {
		const char *e = memchr(v, ',', n), *semi, *tok = v;
		size_t len = e ? (size_t)(e - v) : n, tl;
		int q = 1000;

		v += len, n -= len;
		if (e)
			v++, n--;
		while (len && (*tok == ' ' || *tok == '\t'))
			tok++, len--;
		while (len && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
			len--;
		semi = memchr(tok, ';', len);
		tl = semi ? (size_t)(semi - tok) : len;
		while (tl && (tok[tl - 1] == ' ' || tok[tl - 1] == '\t'))
			tl--;
		if (!tl)
			continue;
		if (semi) {
			/* The one parameter allowed: weight = OWS ";" OWS "q=" qvalue */
			const char *p = semi + 1;
			size_t pl = len - (size_t)(p - tok);

			while (pl && (*p == ' ' || *p == '\t'))
				p++, pl--;
			if (pl < 2 || (p[0] != 'q' && p[0] != 'Q') || p[1] != '=')
				continue;
			q = parse_qvalue(p + 2, pl - 2);
			if (q < 0)
				continue;
		}
#define IS(lit) (tl == sizeof(lit) - 1 && !strncasecmp(tok, lit, tl))
		if (IS("br"))
			br = q;
		else if (IS("gzip") || IS("x-gzip"))
			gz = q;
		else if (IS("identity"))
			id = q;
		else if (IS("*"))
			star = q;
#undef IS
	}
	wbr = offered & HTTP_CE_BR ? (br >= 0 ? br : star >= 0 ? star : 0) : 0;
	wgz = offered & HTTP_CE_GZIP ? (gz >= 0 ? gz : star >= 0 ? star : 0) : 0;
	/* Identity unnamed is acceptable but the last choice, so a listed
	 * coding wins; named (or covered by "*"), its weight competes. */
	wid = id >= 0 ? id : star >= 0 ? star : 0;
	if (wbr > 0 && wbr >= wid && wbr >= wgz)
		order[cnt++] = HTTP_CE_BR;
	if (wgz > 0 && wgz >= wid)
		order[cnt++] = HTTP_CE_GZIP;
	if (wbr > 0 && wbr >= wid && wbr < wgz)
		order[cnt++] = HTTP_CE_BR;
	return cnt;
}

bool http_etag_match(const char *list, size_t n, const char *etag)
{
	size_t el = strlen(etag);

	while (n) {
		const char *comma;
		size_t k;

		while (n && (*list == ' ' || *list == '\t' || *list == ','))
			list++, n--;
		if (!n)
			break;
		if (*list == '*')
			return true;
		/* Weak comparison (RFC 9110 13.1.2 for If-None-Match): W/ is ignored. */
		if (n >= 2 && list[0] == 'W' && list[1] == '/')
			list += 2, n -= 2;
		comma = memchr(list, ',', n);
		k = comma ? (size_t)(comma - list) : n;
		while (k && (list[k - 1] == ' ' || list[k - 1] == '\t'))
			k--;
		if (k == el && !memcmp(list, etag, el))
			return true;
		if (!comma)
			break;
		n -= (size_t)(comma - list);
		list = comma;
	}
	return false;
}

const char *http_mime_type(const char *path)
{
	static const struct { const char *ext, *type; } types[] = {
		{"html", "text/html; charset=utf-8"}, {"htm", "text/html; charset=utf-8"},
		{"css", "text/css; charset=utf-8"}, {"js", "text/javascript; charset=utf-8"},
		{"mjs", "text/javascript; charset=utf-8"}, {"json", "application/json"},
		{"txt", "text/plain; charset=utf-8"}, {"md", "text/markdown; charset=utf-8"},
		{"xml", "application/xml"}, {"csv", "text/csv; charset=utf-8"},
		{"png", "image/png"}, {"jpg", "image/jpeg"}, {"jpeg", "image/jpeg"},
		{"gif", "image/gif"}, {"svg", "image/svg+xml"}, {"webp", "image/webp"},
		{"avif", "image/avif"}, {"ico", "image/vnd.microsoft.icon"},
		{"woff", "font/woff"}, {"woff2", "font/woff2"}, {"ttf", "font/ttf"},
		{"otf", "font/otf"}, {"pdf", "application/pdf"}, {"wasm", "application/wasm"},
		{"zip", "application/zip"}, {"gz", "application/gzip"},
		{"tar", "application/x-tar"}, {"xz", "application/x-xz"},
		{"zst", "application/zstd"}, {"bz2", "application/x-bzip2"},
		{"iso", "application/x-iso9660-image"}, {"deb", "application/vnd.debian.binary-package"},
		{"mp4", "video/mp4"}, {"webm", "video/webm"}, {"mp3", "audio/mpeg"},
		{"ogg", "audio/ogg"}, {"wav", "audio/wav"}, {"flac", "audio/flac"},
	};
	const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');

	if (!dot || (slash && dot < slash) || dot == path || (slash && dot == slash + 1))
		return "application/octet-stream";
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (!strcasecmp(dot + 1, types[i].ext))
			return types[i].type;
	return "application/octet-stream";
}
