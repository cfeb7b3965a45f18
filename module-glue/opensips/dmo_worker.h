/*
 * dmbridge OpenSIPS module: the reactor side (dmo_worker.c): the attachment's descriptor in
 * the process's reactor, incoming requests and their event routes, async requests.
 */
#ifndef DMO_WORKER_H
#define DMO_WORKER_H

#include <stdint.h>

#include "../../async.h"
#include "../../pvar.h"
#include "../../parser/msg_parser.h"

/* puts the attachment's descriptor into this process's reactor (once) */
int dmo_serve(void);
/* async dm_send_request: sends, and resumes the transaction when the outcome comes */
int dmo_async_start(struct sip_msg *msg, async_ctx *ctx, uint32_t app_id, uint32_t cmd_code,
		const str *json, pv_spec_t *rpl, pv_spec_t *peer, pv_spec_t *worker);

#endif
