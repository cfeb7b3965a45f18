/*
 * dmbridge OpenSIPS module: the configuration and each process's state (see dmo_state.h).
 */
/* first: io_wait.h must include <fcntl.h> itself, with F_SETSIG enabled */
#include "../../reactor_defs.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../../sr_module.h"
#include "../../dprint.h"
#include "../../pt.h"
#include "../../mem/shm_mem.h"

#include "dmo_state.h"

dmo_cfg_t dmo_cfg = {
	.bridge_socket = "/run/dmbridge/control.sock",
	.request_timeout = 2000,
	.auto_reply_code = 5012,
	.max_json_log_size = 512,
	.sync_spin_us = DMB_DEFAULT_SYNC_SPIN_US,
};

/* shared by all processes, set in mod_init */
static dmg_stats *_dmo_stats = NULL;
static const char **_dmo_handled = NULL;
static size_t _dmo_handled_n = 0;

/* per process */
static dmb_worker *_dmo_w = NULL;
static int _dmo_w_pid = 0; /* the process that attached _dmo_w */
static int _dmo_serving = 0;
static dmg_attach_pacer _dmo_pacer = {0, 1000, 0};
static int _dmo_unreachable_logged = 0;
static dmb_request *_dmo_cur_req = NULL;
static int _dmo_cur_replied = 0;

int dmo_state_init(const char **handled, size_t nhandled)
{
	_dmo_stats = shm_malloc(sizeof(*_dmo_stats));
	if(_dmo_stats == NULL) {
		LM_ERR("no more shm memory\n");
		return -1;
	}
	memset(_dmo_stats, 0, sizeof(*_dmo_stats));
	_dmo_handled = handled;
	_dmo_handled_n = nhandled;
	return 0;
}

dmg_stats *dmo_stats(void)
{
	return _dmo_stats;
}

const char **dmo_handled(size_t *n)
{
	*n = _dmo_handled_n;
	return _dmo_handled;
}

/* --- attachment -------------------------------------------------------------------------- */

int dmo_attach(const char *role)
{
	char name[64];
	uint64_t now;
	int rc;

	if(_dmo_w != NULL) {
		if(_dmo_w_pid == dmg_pid())
			return 0;
		/* inherited through a fork: the parent's slot, not ours (libdmbridge refuses it) */
		_dmo_w = NULL;
		_dmo_serving = 0;
	}
	now = dmg_now_ms();
	if(!dmg_attach_due(&_dmo_pacer, now))
		return -1;

	snprintf(name, sizeof(name), "opensips %s %d (pid %d)", role, process_no, (int)getpid());
	rc = dmb_attach(dmo_cfg.bridge_socket, name, &_dmo_w);
	if(rc < 0 || _dmo_w == NULL) {
		/* no worker at all (version mismatch, refused, bad path): retried on use and, in
		 * SIP workers, before each message (dmbridge.c) */
		const char *why = dmb_last_error();
		if(dmg_attach_failed(&_dmo_pacer, now, why))
			LM_ERR("cannot attach to bridge at %s: %s\n", dmo_cfg.bridge_socket, why);
		_dmo_w = NULL;
		return -1;
	}
	dmg_attach_ok(&_dmo_pacer);
	/* the sync wait's poll bound (checked in mod_init) */
	if(dmb_set_sync_spin(_dmo_w, (uint32_t)dmo_cfg.sync_spin_us) < 0)
		LM_ERR("setting sync_spin_us: %s\n", dmb_last_error());
	if(rc == 0 && !_dmo_unreachable_logged) {
		/* the worker exists and attaches by itself when the bridge comes up */
		LM_WARN("bridge at %s not reachable yet (%s): Diameter calls fail with -3 until it"
				" is; SIP keeps running\n",
				dmo_cfg.bridge_socket, dmb_last_error());
		_dmo_unreachable_logged = 1;
	}
	_dmo_w_pid = dmg_pid();
	__atomic_fetch_add(&_dmo_stats->workers_attached, 1, __ATOMIC_RELAXED);
	return 0;
}

dmb_worker *dmo_w(void)
{
	return _dmo_w != NULL && _dmo_w_pid == dmg_pid() ? _dmo_w : NULL;
}

void dmo_detach(void)
{
	if(_dmo_w != NULL && _dmo_w_pid == dmg_pid()) {
		dmb_detach(_dmo_w);
		_dmo_w = NULL;
	}
}

int dmo_serving(void)
{
	return _dmo_serving;
}

void dmo_set_serving(void)
{
	_dmo_serving = 1;
	__atomic_fetch_add(&_dmo_stats->workers_serving, 1, __ATOMIC_RELAXED);
}

/* --- the request being handled ------------------------------------------------------------ */

void dmo_request_begin(dmb_request *r)
{
	_dmo_cur_req = r;
	_dmo_cur_replied = 0;
}

dmb_request *dmo_request(void)
{
	return _dmo_cur_req;
}

int dmo_request_replied(void)
{
	return _dmo_cur_replied;
}

void dmo_request_set_replied(void)
{
	_dmo_cur_replied = 1;
}

void dmo_request_end(void)
{
	_dmo_cur_req = NULL;
	_dmo_cur_replied = 0;
}

/* --- JSON checks ------------------------------------------------------------------------- */

int dmo_check_json(const char *fn, const str *json)
{
	size_t off = 0;
	const char *why = NULL;
	int show;

	if(json == NULL || json->s == NULL) {
		LM_ERR("%s: NULL JSON input\n", fn);
		return -1;
	}
	if(dmg_json_check_avps(json->s, (size_t)json->len, &off, &why) == 0)
		return 0;
	show = json->len > dmo_cfg.max_json_log_size ? dmo_cfg.max_json_log_size : json->len;
	LM_ERR("%s: invalid AVP JSON at offset %zu: %s ('%.*s'%s, len: %d)\n", fn, off,
			why ? why : "syntax error", show, json->s, show < json->len ? " ..." : "",
			json->len);
	return -1;
}

/* --- the reply variable ------------------------------------------------------------------- */

/* an integer output variable of dm_send_request: `ns` as microseconds (dmg_peer_us) */
static void dmo_set_us_var(struct sip_msg *msg, pv_spec_t *sp, uint64_t ns, const char *what)
{
	pv_value_t val;

	memset(&val, 0, sizeof(val));
	val.ri = (int)dmg_peer_us(ns);
	val.flags = PV_VAL_INT | PV_TYPE_INT;
	if(pv_set_value(msg, sp, 0, &val) != 0)
		LM_ERR("dm_send_request: cannot set the %s variable\n", what);
}

void dmo_set_out_vars(struct sip_msg *msg, pv_spec_t *rpl, pv_spec_t *peer, pv_spec_t *worker,
		const dmb_answer *ans)
{
	const char *json = NULL;
	size_t len = 0;
	pv_value_t val;

	if(ans != NULL)
		json = dmb_answer_avps_json(ans, &len);
	if(rpl != NULL) {
		memset(&val, 0, sizeof(val));
		if(json != NULL && len > 0) {
			val.rs.s = (char *)json;
			val.rs.len = (int)len;
			val.flags = PV_VAL_STR;
		} else {
			val.flags = PV_VAL_NULL;
		}
		if(pv_set_value(msg, rpl, 0, &val) != 0)
			LM_ERR("dm_send_request: cannot set the reply variable\n");
	}
	if(peer != NULL)
		dmo_set_us_var(msg, peer, ans ? dmb_answer_peer_ns(ans) : 0, "peer wait");
	if(worker != NULL)
		dmo_set_us_var(msg, worker, ans ? dmb_answer_worker_ns(ans) : 0, "library round trip");
}
