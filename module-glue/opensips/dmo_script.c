/*
 * dmbridge OpenSIPS module: the script functions and their fixups. Above dmo_state and
 * dmo_worker (async requests are started and resumed there).
 */
/* first: io_wait.h must include <fcntl.h> itself, with F_SETSIG enabled */
#include "../../reactor_defs.h"

#include <string.h>

#include "../../sr_module.h"
#include "../../dprint.h"
#include "../../mod_fix.h"
#include "../../pvar.h"

#include "dmo_state.h"
#include "dmo_worker.h"
#include "dmo_script.h"

/* --- fixups ------------------------------------------------------------------------------ */

/* OpenSIPS calls a parameter's fixup for literals when it loads the script, and again at each
 * call for values printed from variables. Only the first kind is checked here (until
 * child_init calls dmo_script_loaded), so that a typo in a literal stops the start; values of
 * variables are checked at the call (-3 and a log line). */
static int dmo_fixing_script = 1;

void dmo_script_loaded(void)
{
	dmo_fixing_script = 0;
}

int fixup_dm_json(void **param)
{
	str *json = (str *)*param;
	size_t off = 0;
	const char *why = NULL;

	if(!dmo_fixing_script || json == NULL || json->s == NULL)
		return 0;
	if(dmg_json_check_avps(json->s, (size_t)json->len, &off, &why) < 0) {
		LM_ERR("dm_send_request: invalid AVP JSON at offset %zu: %s (%.*s)\n", off,
				why ? why : "syntax error", json->len > 200 ? 200 : json->len, json->s);
		return E_CFG;
	}
	return 0;
}

/* an output variable of dm_send_request (`what` names it) must be writable */
static int fixup_dm_out_var(void **param, const char *what)
{
	pv_spec_t *sp = (pv_spec_t *)*param;

	if(sp != NULL && !pv_is_w(sp)) {
		LM_ERR("dm_send_request: %s variable is read-only: use a writable one"
			   " such as $var(x) or $avp(x)\n",
				what);
		return E_CFG;
	}
	return 0;
}

int fixup_dm_reply_var(void **param)
{
	return fixup_dm_out_var(param, "reply");
}

int fixup_dm_peer_var(void **param)
{
	return fixup_dm_out_var(param, "peer wait");
}

int fixup_dm_worker_var(void **param)
{
	return fixup_dm_out_var(param, "library round trip");
}

/* --- dm_send_reply ----------------------------------------------------------------------- */

static int dmo_send_reply(str *json, int *is_error);

/* Every refused call (no request here, a second reply, invalid JSON or AVPs, the E-bit rule,
 * too big, detached, full) is counted (replies_refused) as well as logged: the bridge sees
 * only those the library reported to it. */
int w_dm_send_reply(struct sip_msg *msg, str *json, int *is_error)
{
	int rc = dmo_send_reply(json, is_error);

	if(rc < 0 && dmo_stats() != NULL)
		DMG_INC(dmo_stats(), replies_refused);
	return rc;
}

static int dmo_send_reply(str *json, int *is_error)
{
	int rc;

	if(dmo_request() == NULL || dmo_w() == NULL) {
		LM_ERR("dm_send_reply: no Diameter request is being handled here"
			   " (use it in event_route[E_DM_*])\n");
		return -1;
	}
	if(dmo_request_replied()) {
		LM_ERR("dm_send_reply: this request was already answered\n");
		return -1;
	}
	/* libdmbridge parses and converts the reply once; the syntax check here runs only when it
	 * refused the reply, to name the offset of a syntax error (then nothing was answered: a
	 * corrected dm_send_reply may follow, else the module answers auto_reply_code after the
	 * route) */
	rc = dmb_reply(dmo_w(), dmb_request_token(dmo_request()), json->s, (size_t)json->len,
			(is_error && *is_error) ? 1 : 0);
	if(rc < 0) {
		if(rc == DMB_E_INVAL && dmo_check_json("dm_send_reply", json) < 0)
			return -1;
		LM_ERR("dm_send_reply: %s\n", dmb_last_error());
		/* INVAL/TOO_BIG: the library already told the bridge (5012 to the peer);
		 * DETACHED: the old bridge dealt with it; FULL: the module retries after the route */
		if(rc != DMB_E_FULL)
			dmo_request_set_replied();
		return -1;
	}
	dmo_request_set_replied();
	DMG_INC(dmo_stats(), replies);
	return 1;
}

/* --- dm_send_request (synchronous) ------------------------------------------------------- */

int w_dm_send_request(struct sip_msg *msg, int *app_id, int *cmd_code, str *json,
		pv_spec_t *rpl, pv_spec_t *peer, pv_spec_t *worker)
{
	dmb_answer *ans = NULL;
	int rc;

	DMG_INC(dmo_stats(), sent_sync);
	if(*app_id < 0 || *cmd_code < 0) {
		LM_ERR("dm_send_request: app_id and cmd_code must be >= 0\n");
		rc = DMG_RC_NOT_SENT;
		goto done;
	}
	if(dmo_check_json("dm_send_request", json) < 0) {
		rc = DMG_RC_NOT_SENT;
		goto done;
	}
	if(dmo_attach(dmo_serving() ? "sip" : "aux") < 0) {
		LM_ERR("dm_send_request(%d, %d): bridge not attached\n", *app_id, *cmd_code);
		rc = DMG_RC_NOT_SENT;
		goto done;
	}
	/* checked above (dmo_check_json): the library need not look again */
	rc = dmb_send_request_checked(dmo_w(), (uint32_t)*app_id, (uint32_t)*cmd_code, json->s,
			(size_t)json->len, (uint32_t)dmo_cfg.request_timeout, &ans);
	if(ans == NULL) {
		LM_ERR("dm_send_request(%d, %d): %s\n", *app_id, *cmd_code, dmb_last_error());
		rc = DMG_RC_NOT_SENT;
		goto done;
	}
	rc = dmg_rc_from_class(dmb_answer_class(ans));
	if(rc == DMG_RC_NOT_SENT || rc == DMG_RC_TIMEOUT) {
		const char *why = dmb_answer_error(ans);
		LM_NOTICE("dm_send_request(%d, %d): %s\n", *app_id, *cmd_code,
				why && *why ? why : (rc == DMG_RC_TIMEOUT ? "no answer in time" : "not sent"));
	}
done:
	dmo_set_out_vars(msg, rpl, peer, worker, ans);
	if(ans)
		dmb_answer_free(ans);
	dmg_count_outcome(dmo_stats(), rc);
	return rc;
}

int w_dm_send_request_async(struct sip_msg *msg, async_ctx *ctx, int *app_id,
		int *cmd_code, str *json, pv_spec_t *rpl, pv_spec_t *peer, pv_spec_t *worker)
{
	if(*app_id < 0 || *cmd_code < 0) {
		LM_ERR("dm_send_request: app_id and cmd_code must be >= 0\n");
		dmo_set_out_vars(msg, rpl, peer, worker, NULL);
		DMG_INC(dmo_stats(), sent_async);
		dmg_count_outcome(dmo_stats(), DMG_RC_NOT_SENT);
		async_status = ASYNC_NO_IO;
		return DMG_RC_NOT_SENT;
	}
	return dmo_async_start(
			msg, ctx, (uint32_t)*app_id, (uint32_t)*cmd_code, json, rpl, peer, worker);
}
