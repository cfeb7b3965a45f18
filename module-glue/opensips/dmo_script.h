/*
 * dmbridge OpenSIPS module: the script functions and their fixups (dmo_script.c), named in
 * the export tables of dmbridge.c. OpenSIPS passes a missing optional parameter as NULL, so
 * one C function serves every arity of a script function.
 */
#ifndef DMO_SCRIPT_H
#define DMO_SCRIPT_H

#include "../../async.h"
#include "../../pvar.h"
#include "../../parser/msg_parser.h"

int w_dm_send_reply(struct sip_msg *msg, str *json, int *is_error);
int w_dm_send_request(struct sip_msg *msg, int *app_id, int *cmd_code, str *json,
		pv_spec_t *rpl, pv_spec_t *peer, pv_spec_t *worker);
int w_dm_send_request_async(struct sip_msg *msg, async_ctx *ctx, int *app_id, int *cmd_code,
		str *json, pv_spec_t *rpl, pv_spec_t *peer, pv_spec_t *worker);

int fixup_dm_json(void **param);
int fixup_dm_reply_var(void **param);
int fixup_dm_peer_var(void **param);
int fixup_dm_worker_var(void **param);
/* child_init: the script is loaded; later fixup calls are for values of variables */
void dmo_script_loaded(void);

#endif
