/* SPDX-License-Identifier: MIT */
/*
 * Replacing an engine's TLS context at run time (kite-serve's SIGHUP:
 * reloaded certificate, rotated ticket key). Only connections accepted or
 * adopted afterwards use the new context; each existing one keeps the
 * context it was created with alive through its own reference
 * (kite_conn_create), so nothing in flight is disturbed.
 */
#include "core.h"

void kite_engine_set_ctx(struct kite_engine *e, struct kite_ctx *ctx)
{
	struct kite_ctx *old;

	if (!e)
		return;
	old = e->cfg.ctx;
	/* The backends may have set themselves up for TLS or plaintext
	 * streams when the engine was created, and a stream runs its
	 * handshake in the role of the engine's context: neither may change
	 * under them. */
	if (!ctx || !old || ctx->role != old->role)
		return;
	/* The engine borrows cfg.ctx (kite_engine_config: "must outlive the
	 * engine"), so no reference moves here. The only reader is
	 * eng_tls_begin() on this engine's thread, and every stream it made
	 * holds its own reference: the caller may destroy the old context as
	 * soon as this returns. */
	e->cfg.ctx = ctx;
}
