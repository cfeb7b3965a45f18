/*
 * dmbridge OpenSIPS module: the reactor side (see dmo_state.h for the process model). Above
 * dmo_state; the script functions start async requests here.
 *
 * The attachment's descriptor sits in the process's reactor as an F_FD_ASYNC reader that never
 * completes. When it is readable, dmo_on_fd() takes incoming requests and runs their event
 * routes in place, and takes the outcomes of async requests and resumes their transactions.
 *
 * Why async requests do not put the descriptor itself into the reactor (fd = dmb_fd): the
 * reactor refuses a second registration of the same fd with other data, so only one async
 * request per process could be in flight. Instead each async request is started with
 * ASYNC_NO_FD and resumed by dmo_on_fd() through async_script_resume_f() when libdmbridge
 * returns its outcome (exactly one per request, also on timeout or bridge restart); this is the
 * pattern OpenSIPS' own event_routing module uses.
 */
/* first: io_wait.h must include <fcntl.h> itself, with F_SETSIG enabled */
#include "../../reactor_defs.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../../sr_module.h"
#include "../../dprint.h"
#include "../../ut.h"
#include "../../pt.h"
#include "../../ipc.h"
#include "../../route.h"
#include "../../action.h"
#include "../../usr_avp.h"
#include "../../mem/mem.h"
#include "../../mem/shm_mem.h"

#include "dmo_state.h"
#include "dmo_worker.h"

/* requests / answers taken per wake-up, so a flood of Diameter cannot starve SIP: the library
 * leaves the descriptor readable while anything is left */
#define DMO_BATCH 64
/* how long past its timeout an async request waits for libdmbridge's outcome when the module
 * has to wait for it synchronously (never expected: a safety net) */
#define DMO_ASYNC_GRACE_MS 2000

/* one async request of this process; `job` first so dmg_pending's pointers convert back */
typedef struct dmo_async {
	dmg_job job;           /* handle, deadline, chaining in dmo_pending */
	async_ctx *ctx;        /* the suspended transaction's context */
	pv_spec_t *rpl;        /* reply variable or NULL */
	pv_spec_t *peer;       /* peer wait variable or NULL */
	pv_spec_t *worker;     /* library round trip variable or NULL */
	dmb_answer *ans;       /* the outcome, once taken */
	int rc;                /* its script return code */
	struct dmo_async *next_done;
} dmo_async;

static dmg_pending dmo_pending; /* static storage: zeroed, i.e. initialised */
/* Records of finished async requests kept for the next ones (chained through next_done), at
 * most DMO_POOL_MAX: pkg_malloc was ~6k instructions per request on OpenSIPS 3.6's f_malloc
 * (its size buckets scanned up to the next free fragment; BENCHMARKS.md, "Session 11: the
 * OpenSIPS async path"), and a process keeps about as many records as it has requests in
 * flight. */
#define DMO_POOL_MAX 1024
static dmo_async *dmo_pool;
static int dmo_pool_n;
/* outcomes taken while waiting synchronously for another request; resumed from the reactor */
static dmo_async *dmo_done_head, *dmo_done_tail;
static int dmo_kick_queued;

static void dmo_resume_done(void);

static void dmo_ipc_kick(int sender, void *param)
{
	dmo_kick_queued = 0;
	dmo_resume_done();
}

/* --- $param() in event_route[E_DM_*] ------------------------------------------------------- */

/* names and order from module-glue/common (DMG_P_*): aaa_diameter's four first */
#define DMO_NPARAMS DMG_P_COUNT

static int dmo_param_str(pv_value_t *res, const char *s, size_t len)
{
	res->rs.s = (char *)s;
	res->rs.len = (int)len;
	res->flags = PV_VAL_STR;
	return 0;
}

static int dmo_param_int(pv_value_t *res, uint32_t v)
{
	res->ri = (int)v;
	res->rs.s = int2str((unsigned long)v, &res->rs.len);
	res->flags = PV_VAL_STR | PV_VAL_INT | PV_TYPE_INT;
	return 0;
}

/* The $param() getter the core calls while our event route runs (param_getf_t). Names as
 * aaa_diameter's E_DM_REQUEST (sess_id, app_id, cmd_code, avps_json) plus cmd_name,
 * origin_host, origin_realm, event; an index 1..8 selects in that order. */
static int dmo_param_get(struct sip_msg *msg, pv_param_t *ip, pv_value_t *res, void *params,
		void *extra)
{
	dmb_request *r = params;
	pv_value_t tv;
	const char *s;
	size_t len = 0;
	int id = 0;

	if(r == NULL)
		return pv_get_null(msg, ip, res);
	memset(&tv, 0, sizeof(tv));
	if(ip->pvn.type == PV_NAME_INTSTR) {
		if(ip->pvn.u.isname.type != 0) {
			tv.rs = ip->pvn.u.isname.name.s;
			tv.flags = PV_VAL_STR;
		} else {
			tv.ri = ip->pvn.u.isname.name.n;
			tv.flags = PV_VAL_INT | PV_TYPE_INT;
		}
	} else if(pv_get_spec_value(msg, (pv_spec_p)(ip->pvn.u.dname), &tv) != 0
			  || (tv.flags & (PV_VAL_NULL | PV_VAL_EMPTY))) {
		LM_ERR("invalid $param() name\n");
		return -1;
	}
	if(tv.flags & PV_VAL_INT) {
		if(tv.ri >= 1 && tv.ri <= DMO_NPARAMS)
			id = tv.ri;
	} else {
		id = dmg_param_id(tv.rs.s, (size_t)tv.rs.len);
	}
	switch(id) {
		case DMG_P_SESS_ID:
			s = dmb_request_sess_id(r);
			return s && *s ? dmo_param_str(res, s, strlen(s)) : pv_get_null(msg, ip, res);
		case DMG_P_APP_ID:
			return dmo_param_int(res, dmb_request_app_id(r));
		case DMG_P_CMD_CODE:
			return dmo_param_int(res, dmb_request_cmd_code(r));
		case DMG_P_AVPS_JSON:
			s = dmb_request_avps_json(r, &len);
			return s ? dmo_param_str(res, s, len) : pv_get_null(msg, ip, res);
		case DMG_P_CMD_NAME:
			s = dmb_request_cmd_name(r);
			break;
		case DMG_P_ORIGIN_HOST:
			s = dmb_request_origin_host(r);
			break;
		case DMG_P_ORIGIN_REALM:
			s = dmb_request_origin_realm(r);
			break;
		case DMG_P_EVENT:
			s = dmb_request_event(r);
			break;
		default:
			if(tv.flags & PV_VAL_INT)
				LM_WARN("$param(%d) does not exist in a Diameter event (1..%d)\n", tv.ri,
						DMO_NPARAMS);
			else
				LM_WARN("$param(%.*s) does not exist in a Diameter event\n", tv.rs.len,
						tv.rs.s);
			return pv_get_null(msg, ip, res);
	}
	return s ? dmo_param_str(res, s, strlen(s)) : pv_get_null(msg, ip, res);
}

/* --- incoming requests ------------------------------------------------------------------- */

/* An answer carrying only a Result-Code; libdmbridge sets the E bit for 3xxx (RFC 6733 §7.1.3) */
static void dmo_reply_code(dmb_request *r, int code, const char *why)
{
	const char *sid = dmb_request_sess_id(r);

	LM_WARN("%s (session %s): %s, answering %d\n", dmb_request_event(r), sid ? sid : "-", why,
			code);
	if(dmb_reply_result(dmo_w(), dmb_request_token(r), (uint32_t)code) < 0)
		LM_ERR("answering %d failed: %s\n", code, dmb_last_error());
	else
		DMG_INC(dmo_stats(), auto_replies);
}

static int dmo_event_route(const char *name)
{
	int idx;

	if(name == NULL)
		return -1;
	idx = get_script_route_ID_by_name((char *)name, sroutes->event, EVENT_RT_NO);
	if(idx < 1 || sroutes->event[idx].a == NULL)
		return -1;
	return idx;
}

static void dmo_run_request(dmb_request *r)
{
	const char *ev = dmb_request_event(r);
	struct sip_msg *msg;
	int idx, old_route_type;

	DMG_INC(dmo_stats(), requests_in);
	idx = dmo_event_route(ev);
	if(idx < 0)
		idx = dmo_event_route(DMG_EVENT_CATCHALL);
	if(idx < 0) {
		/* the bridge routes only declared commands here: a script reload removed the route */
		if(dmo_cfg.auto_reply_code > 0)
			dmo_reply_code(r, 3001, "no event route");
		dmb_request_free(r);
		return;
	}
	msg = get_dummy_sip_msg();
	if(msg == NULL) {
		LM_ERR("cannot create a dummy SIP message for the event route\n");
		dmo_reply_code(r, 5012, "out of memory");
		dmb_request_free(r);
		return;
	}

	dmo_request_begin(r);
	route_params_push_level(sroutes->event[idx].name, r, NULL, dmo_param_get);
	swap_route_type(old_route_type, EVENT_ROUTE);
	run_top_route(sroutes->event[idx], msg);
	set_route_type(old_route_type);
	route_params_pop_level();
	release_dummy_sip_msg(msg);
	reset_avps();

	if(!dmo_request_replied() && dmo_cfg.auto_reply_code > 0)
		dmo_reply_code(r, dmo_cfg.auto_reply_code, "the script sent no reply");
	dmo_request_end();
	/* a request still unanswered (auto_reply_code 0, or the answer failed) is answered 5012
	 * by libdmbridge when it is freed: exactly one answer either way */
	dmb_request_free(r);
}

/* --- async requests ---------------------------------------------------------------------- */

static dmo_async *dmo_async_new(void)
{
	dmo_async *a = dmo_pool;

	if(a != NULL) {
		dmo_pool = a->next_done;
		dmo_pool_n--;
	} else {
		a = pkg_malloc(sizeof(*a));
		if(a == NULL)
			return NULL;
	}
	memset(a, 0, sizeof(*a));
	return a;
}

static void dmo_async_free(dmo_async *a)
{
	if(a->ans)
		dmb_answer_free(a->ans);
	if(dmo_pool_n >= DMO_POOL_MAX) {
		pkg_free(a);
		return;
	}
	a->next_done = dmo_pool;
	dmo_pool = a;
	dmo_pool_n++;
}

/* Takes every outcome libdmbridge holds; `want` (if any) is only marked, the others are queued
 * for dmo_resume_done(). Returns 1 when `want` is complete. */
static int dmo_take_answers(dmo_async *want, int limit)
{
	dmb_answer *ans;
	int got_want = 0;

	for(int i = 0; limit <= 0 || i < limit; i++) {
		int rc = dmb_next_answer(dmo_w(), &ans);
		dmo_async *a;

		if(rc < 0) {
			LM_ERR("taking an answer: %s\n", dmb_last_error());
			break;
		}
		if(rc == 0 || ans == NULL)
			break;
		a = (dmo_async *)dmg_pending_take(&dmo_pending, dmb_answer_handle(ans));
		if(a == NULL) {
			LM_WARN("answer for unknown async handle %llu\n",
					(unsigned long long)dmb_answer_handle(ans));
			dmb_answer_free(ans);
			continue;
		}
		a->ans = ans;
		a->rc = dmg_rc_from_class(dmb_answer_class(ans));
		if(a == want) {
			got_want = 1;
			continue;
		}
		a->next_done = NULL;
		if(dmo_done_tail)
			dmo_done_tail->next_done = a;
		else
			dmo_done_head = a;
		dmo_done_tail = a;
	}
	return got_want;
}

/* async_resume_module: called by tm with the faked request of the suspended transaction */
static enum async_ret_code dmo_async_resume(int fd, struct sip_msg *msg, void *param)
{
	dmo_async *a = param;
	int rc;

	if(a->ans == NULL) {
		/* tm runs us synchronously (a route without async support): wait for the outcome */
		uint64_t deadline = dmg_now_ms() + a->job.timeout_ms + DMO_ASYNC_GRACE_MS;
		while(a->ans == NULL) {
			struct pollfd pfd = {dmb_fd(dmo_w()), POLLIN, 0};
			uint64_t now = dmg_now_ms();
			if(now >= deadline) {
				dmg_pending_take(&dmo_pending, a->job.handle);
				a->rc = DMG_RC_TIMEOUT;
				LM_ERR("async request %llu: no outcome from libdmbridge in time\n",
						(unsigned long long)a->job.handle);
				break;
			}
			/* requests keep the descriptor readable: sleep a little instead of spinning */
			if(poll(&pfd, 1, 10) >= 0)
				dmo_take_answers(a, 0);
			usleep(200);
		}
	}
	if(a->ans && (a->rc == DMG_RC_NOT_SENT || a->rc == DMG_RC_TIMEOUT)) {
		const char *why = dmb_answer_error(a->ans);
		LM_NOTICE("dm_send_request(%u, %u): %s\n", a->job.app_id, a->job.cmd_code,
				why && *why ? why : (a->rc == DMG_RC_TIMEOUT ? "no answer in time" : "not sent"));
	}
	rc = a->rc;
	dmo_set_out_vars(msg, a->rpl, a->peer, a->worker, a->ans);
	dmg_count_outcome(dmo_stats(), rc);
	dmo_async_free(a);
	async_status = ASYNC_DONE;
	if(dmo_done_head != NULL && !dmo_kick_queued) {
		/* others completed while we waited: resume them from the reactor, not from inside
		 * this resume */
		if(ipc_send_rpc(process_no, dmo_ipc_kick, NULL) == 0)
			dmo_kick_queued = 1;
		else
			LM_ERR("cannot schedule %s: they resume with the next answer\n",
					"completed async requests");
	}
	return rc;
}

static void dmo_resume_one(dmo_async *a)
{
	async_ctx *ctx = a->ctx;

	if(async_script_resume_f == NULL) {
		LM_BUG("async request completed but no async engine (tm) is loaded\n");
		dmo_async_free(a);
		return;
	}
	/* tm calls dmo_async_resume(), which frees `a`, then runs the resume route */
	async_script_resume_f(ASYNC_FD_NONE, ctx, 0);
}

static void dmo_resume_done(void)
{
	while(dmo_done_head != NULL) {
		dmo_async *a = dmo_done_head;
		dmo_done_head = a->next_done;
		if(dmo_done_head == NULL)
			dmo_done_tail = NULL;
		dmo_resume_one(a);
	}
}

int dmo_async_start(struct sip_msg *msg, async_ctx *ctx, uint32_t app_id, uint32_t cmd_code,
		const str *json, pv_spec_t *rpl, pv_spec_t *peer, pv_spec_t *worker)
{
	dmo_async *a;
	uint64_t handle = 0;
	int rc;

	DMG_INC(dmo_stats(), sent_async);
	if(dmo_check_json("dm_send_request", json) < 0)
		goto not_sent;
	if(dmo_attach("sip") < 0) {
		LM_ERR("dm_send_request(%u, %u): bridge not attached\n", app_id, cmd_code);
		goto not_sent;
	}
	if(!dmo_serving() && dmo_serve() < 0)
		goto sync; /* no reactor to wake us here: do it synchronously */
	if(route_type != REQUEST_ROUTE && route_type != ONREPLY_ROUTE)
		goto sync; /* tm would resume at once; let it find the outcome ready */

	a = dmo_async_new();
	if(a == NULL) {
		LM_ERR("no more pkg memory\n");
		goto not_sent;
	}
	/* checked above (dmo_check_json): the library need not look again */
	rc = dmb_send_request_async_checked(dmo_w(), app_id, cmd_code, json->s, (size_t)json->len,
			(uint32_t)dmo_cfg.request_timeout, &handle);
	if(rc < 0) {
		LM_ERR("dm_send_request(%u, %u): %s\n", app_id, cmd_code, dmb_last_error());
		dmo_async_free(a);
		goto not_sent;
	}
	a->job.handle = handle;
	a->job.app_id = app_id;
	a->job.cmd_code = cmd_code;
	a->job.timeout_ms = (uint32_t)dmo_cfg.request_timeout;
	a->ctx = ctx;
	a->rpl = rpl;
	a->peer = peer;
	a->worker = worker;
	a->rc = DMG_RC_TIMEOUT;
	dmg_pending_put(&dmo_pending, &a->job);
	ctx->resume_param = a;
	ASYNC_SET_RESUME_F(ctx, dmo_async_resume);
	async_status = ASYNC_NO_FD;
	return 1;

sync: {
	dmb_answer *ans = NULL;

	rc = dmb_send_request_checked(dmo_w(), app_id, cmd_code, json->s, (size_t)json->len,
			(uint32_t)dmo_cfg.request_timeout, &ans);
	rc = ans ? dmg_rc_from_class(dmb_answer_class(ans)) : DMG_RC_NOT_SENT;
	dmo_set_out_vars(msg, rpl, peer, worker, ans);
	if(ans)
		dmb_answer_free(ans);
	dmg_count_outcome(dmo_stats(), rc);
	async_status = ASYNC_SYNC;
	return rc;
}
not_sent:
	dmo_set_out_vars(msg, rpl, peer, worker, NULL);
	dmg_count_outcome(dmo_stats(), DMG_RC_NOT_SENT);
	async_status = ASYNC_NO_IO;
	return DMG_RC_NOT_SENT;
}

/* --- the descriptor in the reactor ------------------------------------------------------- */

static int dmo_on_fd(int fd, void *param)
{
	dmb_request *req;
	dmb_worker *w = dmo_w();

	if(w == NULL) {
		async_status = ASYNC_DONE;
		return 0;
	}
	for(int i = 0; i < DMO_BATCH; i++) {
		int rc = dmb_next_request(w, &req);
		if(rc < 0) {
			LM_ERR("taking a request: %s\n", dmb_last_error());
			if(rc != DMB_E_PROTO)
				break;
			continue; /* a damaged record: later ones may be fine */
		}
		if(rc == 0 || req == NULL)
			break;
		dmo_run_request(req);
	}
	dmo_take_answers(NULL, DMO_BATCH);
	dmo_resume_done();
	/* the scripts we ran may have changed it: this reader stays in the reactor */
	async_status = ASYNC_CONTINUE;
	return 0;
}

int dmo_serve(void)
{
	int fd;
	size_t nhandled = 0;
	const char **handled = dmo_handled(&nhandled);
	dmb_worker *w = dmo_w();

	if(dmo_serving())
		return 0;
	if(w == NULL || !dmo_has_reactor())
		return -1;
	fd = dmb_fd(w);
	if(fd < 0) {
		LM_ERR("libdmbridge gave no descriptor\n");
		return -1;
	}
	if(nhandled > 0 && dmb_set_handled(w, (const char *const *)handled, nhandled) < 0) {
		LM_ERR("declaring the handled commands: %s\n", dmb_last_error());
		return -1;
	}
	if(register_async_fd(fd, dmo_on_fd, NULL) < 0) {
		LM_ERR("cannot put the bridge descriptor into the reactor\n");
		return -1;
	}
	dmo_set_serving();
	return 0;
}
