/* SPDX-License-Identifier: MIT */
/* kite-serve's command line (flags.c). */
#ifndef KITE_SERVE_FLAGS_H
#define KITE_SERVE_FLAGS_H

#include "server.h"

#define KITE_SERVE_VERSION "0.1.0"

/* Fill *c from argv (defaults first). 0, or -EINVAL after saying why on
 * stderr; --help and --version print and exit(0). */
int parse_args(int argc, char **argv, struct serve_config *c);

/* "ADDR:PORT", "[V6]:PORT", "*:PORT", ":PORT" with a numeric address. */
int parse_addr(const char *s, struct serve_addr *a);

#endif
