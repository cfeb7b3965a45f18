/*
 * dmbridge Kamailio module: the script's functions, fixups and $dm() (dmk_script.c), named in
 * the export tables of dmbridge_mod.c.
 */
#ifndef DMK_SCRIPT_H
#define DMK_SCRIPT_H

#include "core/parser/msg_parser.h"
#include "core/pvar.h"

/* native functions: one C wrapper per arity (Kamailio calls an N-parameter function through
 * an N-argument pointer type: a wrapper shared across arities would read arguments that were
 * never passed) */
int w_dm_send_reply1(sip_msg_t *msg, char *pjson, char *unused);
int w_dm_send_reply2(sip_msg_t *msg, char *pjson, char *perr);
int w_dm_send_request3(sip_msg_t *msg, char *papp, char *pcmd, char *pjson);
int w_dm_send_request4(sip_msg_t *msg, char *papp, char *pcmd, char *pjson, char *pvar);
int w_dm_send_request_async(sip_msg_t *msg, char *papp, char *pcmd, char *pjson, char *proute);

int fixup_dm_reply(void **param, int param_no);
int fixup_free_dm_reply(void **param, int param_no);
int fixup_dm_request(void **param, int param_no);
int fixup_free_dm_request(void **param, int param_no);
int fixup_dm_request_async(void **param, int param_no);
int fixup_free_dm_request_async(void **param, int param_no);

/* KEMI */
int ki_dm_send_reply(sip_msg_t *msg, str *json);
int ki_dm_send_reply_ex(sip_msg_t *msg, str *json, int is_error);
int ki_dm_send_request(sip_msg_t *msg, int app_id, int cmd_code, str *json);
int ki_dm_send_request_async(sip_msg_t *msg, int app_id, int cmd_code, str *json, str *route);

/* $dm(name) */
int pv_parse_dm_name(pv_spec_p sp, str *in);
int pv_get_dm(sip_msg_t *msg, pv_param_t *param, pv_value_t *res);

#endif
