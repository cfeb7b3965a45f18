/*
 * dmbridge Kamailio module: the script's functions (native and KEMI), their fixups and $dm().
 * Above dmk_state and dmk_worker (async requests are handed to a module worker).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/sr_module.h"
#include "core/dprint.h"
#include "core/ut.h"
#include "core/pvar.h"
#include "core/lvalue.h"
#include "core/route.h"
#include "core/mod_fix.h"
#include "core/kemi.h"
#include "core/mem/mem.h"
#include "core/mem/shm_mem.h"

#include "dmk_state.h"
#include "dmk_worker.h"
#include "dmk_script.h"

/* buffer for JSON parameters printed from the script (can be tens of kB) */
static str _dmk_jbuf = STR_NULL;
static int _dmk_jbuf_size = 0;

/* --- parameter helpers --------------------------------------------------------------------- */

/* Prints a format parameter into the process's growable JSON buffer (no pv_buffer_size cap). */
static int dmk_get_json(sip_msg_t *msg, pv_elem_t *fmt, str *out)
{
	int len, need;

	for(int attempt = 0; attempt < 2; attempt++) {
		if(_dmk_jbuf.s == NULL || attempt == 1) {
			need = attempt ? pv_printf_size(msg, fmt) + 1 : 8192;
			if(need <= 0)
				return -1;
			if(need > _dmk_jbuf_size) {
				char *b = pkg_malloc(need);
				if(b == NULL) {
					PKG_MEM_ERROR;
					return -1;
				}
				if(_dmk_jbuf.s)
					pkg_free(_dmk_jbuf.s);
				_dmk_jbuf.s = b;
				_dmk_jbuf_size = need;
			}
		}
		len = _dmk_jbuf_size;
		if(pv_printf_mode(msg, fmt, 0, _dmk_jbuf.s, &len) == 0) {
			out->s = _dmk_jbuf.s;
			out->len = len;
			return 0;
		}
	}
	return -1;
}

/* Validates script JSON before it crosses to the bridge: a log line that names the offset. */
static int dmk_check_json(const char *fname, str *json)
{
	size_t off = 0;
	const char *why = NULL;

	if(dmg_json_check_avps(json->s, (size_t)json->len, &off, &why) == 0)
		return 0;
	LM_ERR("%s: invalid AVP JSON at offset %zu: %s (%.*s%s)\n", fname, off, why,
			json->len > 120 ? 120 : json->len, json->s, json->len > 120 ? "..." : "");
	return -1;
}

/* An Application-Id or Command-Code parameter: a number checked when the script is loaded,
 * or a variable read (and checked) at each call. */
typedef struct dmk_u32_param
{
	pv_spec_t *pv; /* NULL for a literal */
	uint32_t v;
} dmk_u32_param_t;

static int fixup_dm_u32(void **param, const char *fname, const char *what)
{
	char *s = (char *)*param;
	const char *why = NULL;
	dmk_u32_param_t *p = pkg_mallocxz(sizeof(*p));

	if(p == NULL) {
		PKG_MEM_ERROR;
		return E_OUT_OF_MEM;
	}
	if(s[0] == '$') {
		str n = {s, (int)strlen(s)};
		p->pv = pv_cache_get(&n);
		if(p->pv == NULL) {
			LM_ERR("%s: %s [%s] is not a valid variable\n", fname, what, s);
			pkg_free(p);
			return E_CFG;
		}
	} else if(dmg_parse_u32(s, strlen(s), &p->v, &why) < 0) {
		LM_ERR("%s: %s [%s] is %s: write a number 0..4294967295 or a variable\n", fname,
				what, s, why);
		pkg_free(p);
		return E_CFG;
	}
	*param = p;
	return 0;
}

/* The value of an app id / command code parameter for this call; -1 and a log line when a
 * variable holds no number. */
static int dmk_get_u32(sip_msg_t *msg, void *param, const char *fname, const char *what,
		uint32_t *out)
{
	dmk_u32_param_t *p = (dmk_u32_param_t *)param;
	pv_value_t val;
	const char *why = NULL;

	if(p->pv == NULL) {
		*out = p->v;
		return 0;
	}
	memset(&val, 0, sizeof(val));
	if(pv_get_spec_value(msg, p->pv, &val) < 0 || (val.flags & PV_VAL_NULL)) {
		LM_ERR("%s: the %s variable has no value\n", fname, what);
		return -1;
	}
	if(val.flags & PV_TYPE_INT) {
		if(val.ri < 0) {
			LM_ERR("%s: %s %d is negative\n", fname, what, val.ri);
			return -1;
		}
		*out = (uint32_t)val.ri;
		return 0;
	}
	if(dmg_parse_u32(val.rs.s, (size_t)val.rs.len, out, &why) < 0) {
		LM_ERR("%s: %s [%.*s] is %s\n", fname, what, val.rs.len > 64 ? 64 : val.rs.len,
				val.rs.s, why);
		return -1;
	}
	return 0;
}

static int fixup_dm_json(void **param, const char *fname)
{
	str s = {(char *)*param, strlen((char *)*param)};
	pv_elem_t *model = NULL;
	size_t off = 0;
	const char *why = NULL;

	if(pv_parse_format(&s, &model) < 0 || model == NULL) {
		LM_ERR("%s: invalid JSON parameter format [%s]\n", fname, s.s);
		return E_UNSPEC;
	}
	/* a literal (no variable in it) is checked now, so a typo stops the start */
	if(model->next == NULL && (model->spec == NULL || model->spec->type == PVT_NONE)
			&& dmg_json_check_avps(s.s, (size_t)s.len, &off, &why) < 0) {
		LM_ERR("%s: invalid AVP JSON at offset %zu: %s (%s)\n", fname, off, why, s.s);
		pv_elem_free_all(model);
		return E_CFG;
	}
	*param = (void *)model;
	return 0;
}

static int fixup_free_dm_json(void **param)
{
	if(*param) {
		pv_elem_free_all((pv_elem_t *)*param);
		*param = NULL;
	}
	return 0;
}

int fixup_dm_reply(void **param, int param_no)
{
	if(param_no == 1)
		return fixup_dm_json(param, "dm_send_reply");
	if(param_no == 2)
		return fixup_igp_all(param, param_no);
	return E_UNSPEC;
}

int fixup_free_dm_reply(void **param, int param_no)
{
	if(param_no == 1)
		return fixup_free_dm_json(param);
	if(param_no == 2)
		return fixup_free_igp_all(param, param_no);
	return 0;
}

int fixup_dm_request(void **param, int param_no)
{
	if(param_no == 1)
		return fixup_dm_u32(param, "dm_send_request", "app_id");
	if(param_no == 2)
		return fixup_dm_u32(param, "dm_send_request", "cmd_code");
	if(param_no == 3)
		return fixup_dm_json(param, "dm_send_request");
	if(param_no == 4) {
		char *name = (char *)*param;
		if(fixup_pvar_all(param, param_no) < 0) {
			LM_ERR("dm_send_request: reply variable [%s] is not a variable\n", name);
			return E_CFG;
		}
		if(!pv_is_w((pv_spec_t *)*param)) {
			LM_ERR("dm_send_request: reply variable [%s] is read-only\n", name);
			return E_CFG;
		}
		return 0;
	}
	return E_UNSPEC;
}

int fixup_free_dm_request(void **param, int param_no)
{
	if(param_no == 1 || param_no == 2) {
		pkg_free(*param);
		*param = NULL;
		return 0;
	}
	if(param_no == 3)
		return fixup_free_dm_json(param);
	if(param_no == 4)
		return fixup_free_pvar_all(param, param_no);
	return 0;
}

int fixup_dm_request_async(void **param, int param_no)
{
	if(param_no == 4) {
		gparam_t *gp;
		if(fixup_spve_all(param, param_no) < 0)
			return E_CFG;
		gp = (gparam_t *)*param;
		/* a literal route name must name a route[] of the script */
		if(gp->type == GPARAM_TYPE_STR && route_lookup(&main_rt, gp->v.str.s) < 0) {
			LM_ERR("dm_send_request_async: route [%s] does not exist\n", gp->v.str.s);
			return E_CFG;
		}
		return 0;
	}
	if(param_no == 1)
		return fixup_dm_u32(param, "dm_send_request_async", "app_id");
	if(param_no == 2)
		return fixup_dm_u32(param, "dm_send_request_async", "cmd_code");
	if(param_no == 3)
		return fixup_dm_json(param, "dm_send_request_async");
	return E_UNSPEC;
}

int fixup_free_dm_request_async(void **param, int param_no)
{
	if(param_no == 4)
		return fixup_free_spve_all(param, param_no);
	return fixup_free_dm_request(param, param_no);
}

/* --- dm_send_reply ------------------------------------------------------------------------- */

static int dmk_send_reply(str *json, int is_error);

/* Every refused call is counted (replies_refused) as well as logged. */
int ki_dm_send_reply_ex(sip_msg_t *msg, str *json, int is_error)
{
	int rc = dmk_send_reply(json, is_error);

	if(rc < 0 && dmk_stats() != NULL)
		DMG_INC(dmk_stats(), replies_refused);
	return rc;
}

static int dmk_send_reply(str *json, int is_error)
{
	int rc;

	if(dmk_request() == NULL || dmk_w() == NULL) {
		LM_ERR("dm_send_reply: no Diameter request is being handled here"
			   " (use it in event_route[dmbridge:E_DM_*])\n");
		return -1;
	}
	if(dmk_request_replied()) {
		LM_ERR("dm_send_reply: this request was already answered\n");
		return -1;
	}
	/* libdmbridge parses and converts the reply once; the syntax check here runs only when it
	 * refused the reply, to name the offset of a syntax error (then nothing was answered: a
	 * corrected dm_send_reply may follow, else auto_reply_code) */
	rc = dmb_reply(dmk_w(), dmb_request_token(dmk_request()), json->s, (size_t)json->len,
			is_error ? 1 : 0);
	if(rc < 0) {
		if(rc == DMB_E_INVAL && dmk_check_json("dm_send_reply", json) < 0)
			return -1;
		LM_ERR("dm_send_reply: %s\n", dmb_last_error());
		/* INVAL/TOO_BIG: the library already told the bridge (5012 to the peer);
		 * DETACHED: the old bridge dealt with it; FULL: auto_reply_code after the route */
		if(rc != DMB_E_FULL)
			dmk_request_set_replied();
		return -1;
	}
	dmk_request_set_replied();
	DMG_INC(dmk_stats(), replies);
	return 1;
}

int ki_dm_send_reply(sip_msg_t *msg, str *json)
{
	return ki_dm_send_reply_ex(msg, json, 0);
}

int w_dm_send_reply2(sip_msg_t *msg, char *pjson, char *perr)
{
	str json;
	int is_error = 0;

	if(dmk_get_json(msg, (pv_elem_t *)pjson, &json) < 0) {
		LM_ERR("dm_send_reply: cannot print the JSON parameter\n");
		return -1;
	}
	if(perr != NULL && fixup_get_ivalue(msg, (gparam_t *)perr, &is_error) < 0) {
		LM_ERR("dm_send_reply: invalid is_error parameter\n");
		return -1;
	}
	return ki_dm_send_reply_ex(msg, &json, is_error);
}

int w_dm_send_reply1(sip_msg_t *msg, char *pjson, char *unused)
{
	return w_dm_send_reply2(msg, pjson, NULL);
}

/* --- dm_send_request (synchronous) ----------------------------------------------------------- */

static int dmk_send_sync(sip_msg_t *msg, int64_t app_id, int64_t cmd_code, str *json)
{
	dmb_answer *ans = NULL;
	int rc;

	DMG_INC(dmk_stats(), sent_sync);
	if(app_id < 0 || cmd_code < 0 || app_id > UINT32_MAX || cmd_code > UINT32_MAX) {
		LM_ERR("dm_send_request: app_id and cmd_code must be 0..4294967295\n");
		rc = DMG_RC_NOT_SENT;
		dmk_outcome_set(rc, 0, NULL, "invalid app_id or cmd_code");
		goto done;
	}
	if(dmk_check_json("dm_send_request", json) < 0) {
		rc = DMG_RC_NOT_SENT;
		dmk_outcome_set(rc, 0, NULL, "invalid JSON");
		goto done;
	}
	if(dmk_attach(dmk_worker_index() >= 0 ? "dm" : "sip") < 0) {
		rc = DMG_RC_NOT_SENT;
		dmk_outcome_set(rc, 0, NULL, "bridge not attached");
		goto done;
	}
	/* returns the answer class (negative for -1/-2/-3); only a NULL answer is a failure;
	 * the JSON was checked above, the library need not look again */
	dmb_send_request_checked(dmk_w(), (uint32_t)app_id, (uint32_t)cmd_code, json->s,
			(size_t)json->len, (uint32_t)dmk_cfg.request_timeout, &ans);
	if(ans == NULL) {
		LM_ERR("dm_send_request(%lld, %lld): %s\n", (long long)app_id, (long long)cmd_code,
				dmb_last_error());
		rc = DMG_RC_NOT_SENT;
		dmk_outcome_set(rc, 0, NULL, dmb_last_error());
		goto done;
	}
	rc = dmg_rc_from_class(dmb_answer_class(ans));
	dmk_outcome_from_answer(rc, ans);
	if(rc == DMG_RC_NOT_SENT || rc == DMG_RC_TIMEOUT)
		LM_NOTICE("dm_send_request(%lld, %lld): %s\n", (long long)app_id, (long long)cmd_code,
				dmb_answer_error(ans) ? dmb_answer_error(ans) : "no answer");
	dmb_answer_free(ans);
done:
	dmg_count_outcome(dmk_stats(), rc);
	return rc;
}

int ki_dm_send_request(sip_msg_t *msg, int app_id, int cmd_code, str *json)
{
	return dmk_send_sync(msg, app_id, cmd_code, json);
}

int w_dm_send_request4(sip_msg_t *msg, char *papp, char *pcmd, char *pjson, char *pvar)
{
	uint32_t app_id, cmd_code;
	int rc;
	str json;

	if(dmk_get_u32(msg, papp, "dm_send_request", "app_id", &app_id) < 0
			|| dmk_get_u32(msg, pcmd, "dm_send_request", "cmd_code", &cmd_code) < 0) {
		dmk_outcome_set(DMG_RC_NOT_SENT, 0, NULL, "invalid app_id or cmd_code");
		DMG_INC(dmk_stats(), sent_sync);
		dmg_count_outcome(dmk_stats(), DMG_RC_NOT_SENT);
		rc = DMG_RC_NOT_SENT;
		goto setvar;
	}
	if(dmk_get_json(msg, (pv_elem_t *)pjson, &json) < 0) {
		LM_ERR("dm_send_request: cannot print the JSON parameter\n");
		return DMG_RC_NOT_SENT;
	}
	rc = dmk_send_sync(msg, app_id, cmd_code, &json);
setvar:
	if(pvar != NULL) {
		pv_value_t val;
		memset(&val, 0, sizeof(val));
		if(dmk_outcome_json()->len > 0) {
			val.flags = PV_VAL_STR;
			val.rs = *dmk_outcome_json();
		} else {
			val.flags = PV_VAL_NULL;
		}
		if(pv_set_spec_value(msg, (pv_spec_t *)pvar, EQ_T, &val) < 0)
			LM_ERR("dm_send_request: cannot set the reply variable\n");
	}
	return rc;
}

int w_dm_send_request3(sip_msg_t *msg, char *papp, char *pcmd, char *pjson)
{
	return w_dm_send_request4(msg, papp, pcmd, pjson, NULL);
}

/* --- dm_send_request_async ------------------------------------------------------------------ */

static void *dmk_shm_alloc(size_t size, void *ctx)
{
	return shm_malloc(size);
}

/* Every call is counted in sent_async, and one that suspends nothing in not_sent, as the
 * synchronous side counts its calls (dmk_send_sync). */
static int dmk_send_async_call(
		sip_msg_t *msg, int64_t app_id, int64_t cmd_code, str *json, str *route);

/* a call that suspended nothing: counted, and its return code passed on */
static int dmk_async_not_sent(int rc)
{
	DMG_INC(dmk_stats(), sent_async);
	dmg_count_outcome(dmk_stats(), DMG_RC_NOT_SENT);
	return rc;
}

static int dmk_send_async(
		sip_msg_t *msg, int64_t app_id, int64_t cmd_code, str *json, str *route)
{
	int rc = dmk_send_async_call(msg, app_id, cmd_code, json, route);

	if(rc < 0)
		return dmk_async_not_sent(rc);
	DMG_INC(dmk_stats(), sent_async);
	return rc;
}

static int dmk_send_async_call(
		sip_msg_t *msg, int64_t app_id, int64_t cmd_code, str *json, str *route)
{
	unsigned int tindex = 0, tlabel = 0;
	tm_api_t *tm = dmk_tm();
	tm_cell_t *t;
	dmg_job *job;
	char rname[128];
	int rc;

	if(dmk_cfg.workers <= 0 || tm->t_suspend == NULL) {
		LM_ERR("dm_send_request_async needs tm and workers > 0\n");
		return -1;
	}
	if(app_id < 0 || cmd_code < 0 || app_id > UINT32_MAX || cmd_code > UINT32_MAX) {
		LM_ERR("dm_send_request_async: app_id and cmd_code must be 0..4294967295\n");
		return -1;
	}
	if(route == NULL || route->len <= 0 || route->len >= (int)sizeof(rname)) {
		LM_ERR("dm_send_request_async: invalid route name\n");
		return -1;
	}
	if(sr_kemi_eng_get() == NULL) {
		memcpy(rname, route->s, route->len);
		rname[route->len] = '\0';
		if(route_lookup(&main_rt, rname) < 0) {
			LM_ERR("dm_send_request_async: route [%s] does not exist\n", rname);
			return -1;
		}
	}
	if(dmk_check_json("dm_send_request_async", json) < 0)
		return DMG_RC_NOT_SENT;

	t = tm->t_gett();
	if(t == NULL || t == T_UNDEFINED) {
		if(tm->t_newtran(msg) < 0) {
			LM_ERR("dm_send_request_async: cannot create the transaction\n");
			return -1;
		}
		t = tm->t_gett();
		if(t == NULL || t == T_UNDEFINED) {
			LM_ERR("dm_send_request_async: cannot look up the transaction\n");
			return -1;
		}
	}
	job = dmg_job_new(dmk_shm_alloc, NULL, (uint32_t)app_id, (uint32_t)cmd_code,
			(uint32_t)dmk_cfg.request_timeout, route->s, (size_t)route->len, json->s,
			(size_t)json->len);
	if(job == NULL) {
		SHM_MEM_ERROR;
		return -1;
	}
	if(tm->t_suspend(msg, &tindex, &tlabel) < 0) {
		LM_ERR("dm_send_request_async: failed to suspend the transaction\n");
		shm_free(job);
		return -1;
	}
	job->tindex = tindex;
	job->tlabel = tlabel;
	job->sip_status = (uint32_t)t->uas.status; /* dmk_transaction_ended() compares */
	rc = dmk_worker_submit(job); /* the job is not ours any more */
	if(rc < 0) {
		if(rc == -1)
			LM_ERR("dm_send_request_async: no module worker takes the request\n");
		tm->t_cancel_suspend(tindex, tlabel);
		return rc;
	}
	LM_DBG("transaction [%u:%u] suspended, request sent or handed over\n", tindex, tlabel);
	return 0; /* stop the script: the transaction continues in the route */
}

int ki_dm_send_request_async(
		sip_msg_t *msg, int app_id, int cmd_code, str *json, str *route)
{
	return dmk_send_async(msg, app_id, cmd_code, json, route);
}

int w_dm_send_request_async(
		sip_msg_t *msg, char *papp, char *pcmd, char *pjson, char *proute)
{
	uint32_t app_id, cmd_code;
	str json, route;

	if(dmk_get_u32(msg, papp, "dm_send_request_async", "app_id", &app_id) < 0
			|| dmk_get_u32(msg, pcmd, "dm_send_request_async", "cmd_code", &cmd_code) < 0)
		return dmk_async_not_sent(-1);
	if(fixup_get_svalue(msg, (gparam_t *)proute, &route) < 0) {
		LM_ERR("dm_send_request_async: invalid route parameter\n");
		return dmk_async_not_sent(-1);
	}
	/* the route name is in the pv buffer; copy before printing the JSON */
	char rbuf[128];
	if(route.len <= 0 || route.len >= (int)sizeof(rbuf)) {
		LM_ERR("dm_send_request_async: invalid route name\n");
		return dmk_async_not_sent(-1);
	}
	memcpy(rbuf, route.s, route.len);
	route.s = rbuf;
	if(dmk_get_json(msg, (pv_elem_t *)pjson, &json) < 0) {
		LM_ERR("dm_send_request_async: cannot print the JSON parameter\n");
		return dmk_async_not_sent(-1);
	}
	return dmk_send_async(msg, app_id, cmd_code, &json, &route);
}

/* --- $dm(name) ----------------------------------------------------------------------------- */

/* $dm(name): the request's event parameters (module-glue/common's DMG_P_* ids and names),
 * then the outcome of the last request sent from this process */
enum {
	DMK_PV_REPLY_JSON = DMG_P_COUNT + 1,
	DMK_PV_RESULT_CODE,
	DMK_PV_RESULT,
	DMK_PV_ERROR,
	DMK_PV_PEER_US,
	DMK_PV_WORKER_US,
};

static const struct {
	const char *name;
	int id;
} dmk_pv_names[] = {
	{"reply_json", DMK_PV_REPLY_JSON},
	{"result_code", DMK_PV_RESULT_CODE},
	{"result", DMK_PV_RESULT},
	{"error", DMK_PV_ERROR},
	{"peer_us", DMK_PV_PEER_US},
	{"worker_us", DMK_PV_WORKER_US},
};

int pv_parse_dm_name(pv_spec_p sp, str *in)
{
	int id;

	if(sp == NULL || in == NULL || in->len <= 0)
		return -1;
	id = dmg_param_id(in->s, (size_t)in->len);
	if(id > 0) {
		sp->pvp.pvn.type = PV_NAME_INTSTR;
		sp->pvp.pvn.u.isname.type = 0;
		sp->pvp.pvn.u.isname.name.n = id;
		return 0;
	}
	for(size_t i = 0; i < sizeof(dmk_pv_names) / sizeof(dmk_pv_names[0]); i++) {
		if(strlen(dmk_pv_names[i].name) == (size_t)in->len
				&& strncmp(dmk_pv_names[i].name, in->s, in->len) == 0) {
			sp->pvp.pvn.type = PV_NAME_INTSTR;
			sp->pvp.pvn.u.isname.type = 0;
			sp->pvp.pvn.u.isname.name.n = dmk_pv_names[i].id;
			return 0;
		}
	}
	LM_ERR("unknown $dm(%.*s)\n", in->len, in->s);
	return -1;
}

static int pv_get_cstr(sip_msg_t *msg, pv_param_t *param, pv_value_t *res, const char *s)
{
	str v;
	if(s == NULL)
		return pv_get_null(msg, param, res);
	v.s = (char *)s;
	v.len = strlen(s);
	return pv_get_strval(msg, param, res, &v);
}

int pv_get_dm(sip_msg_t *msg, pv_param_t *param, pv_value_t *res)
{
	dmb_request *r = dmk_request();

	if(param == NULL)
		return -1;
	switch(param->pvn.u.isname.name.n) {
		case DMK_PV_REPLY_JSON:
			return dmk_outcome_json()->len > 0
						   ? pv_get_strval(msg, param, res, dmk_outcome_json())
						   : pv_get_null(msg, param, res);
		case DMK_PV_RESULT_CODE:
			return pv_get_uintval(msg, param, res, dmk_outcome_code());
		case DMK_PV_RESULT:
			return pv_get_sintval(msg, param, res, dmk_outcome_rc());
		case DMK_PV_ERROR:
			return pv_get_cstr(msg, param, res, dmk_outcome_error());
		case DMK_PV_PEER_US:
			return pv_get_uintval(msg, param, res, dmk_outcome_peer_us());
		case DMK_PV_WORKER_US:
			return pv_get_uintval(msg, param, res, dmk_outcome_worker_us());
	}
	if(r == NULL)
		return pv_get_null(msg, param, res);
	switch(param->pvn.u.isname.name.n) {
		case DMG_P_SESS_ID:
			return pv_get_cstr(msg, param, res, dmb_request_sess_id(r));
		case DMG_P_APP_ID:
			return pv_get_uintval(msg, param, res, dmb_request_app_id(r));
		case DMG_P_CMD_CODE:
			return pv_get_uintval(msg, param, res, dmb_request_cmd_code(r));
		case DMG_P_AVPS_JSON:
			return pv_get_cstr(msg, param, res, dmb_request_avps_json(r, NULL));
		case DMG_P_CMD_NAME:
			return pv_get_cstr(msg, param, res, dmb_request_cmd_name(r));
		case DMG_P_ORIGIN_HOST:
			return pv_get_cstr(msg, param, res, dmb_request_origin_host(r));
		case DMG_P_ORIGIN_REALM:
			return pv_get_cstr(msg, param, res, dmb_request_origin_realm(r));
		case DMG_P_EVENT:
			return pv_get_cstr(msg, param, res, dmb_request_event(r));
	}
	return pv_get_null(msg, param, res);
}
