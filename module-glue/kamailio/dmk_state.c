/*
 * dmbridge Kamailio module: the module's configuration and each process's state (see
 * dmk_state.h).
 */
#include <stdio.h>
#include <string.h>

#include "core/dprint.h"
#include "core/pt.h"
#include "core/mem/mem.h"
#include "core/mem/shm_mem.h"

#include "dmk_state.h"

dmk_cfg_t dmk_cfg = {
	.bridge_socket = "/run/dmbridge/control.sock",
	.workers = 2,
	.request_timeout = 5000,
	.auto_reply_code = 5012,
	.reconnect_interval = 1000,
	.sync_spin_us = DMB_DEFAULT_SYNC_SPIN_US,
	.async_queue = DMK_DEFAULT_ASYNC_QUEUE,
	.async_direct = 1,
	.event_callback = STR_NULL,
};

/* shared by all processes, set in mod_init */
static dmg_stats *_dmk_stats = NULL;
static tm_api_t _dmk_tmb;
static const char **_dmk_handled = NULL;
static size_t _dmk_handled_n = 0;

/* per process */
static dmb_worker *_dmk_w = NULL;
static int _dmk_worker_idx = -1;
static dmg_attach_pacer _dmk_pacer;
static dmb_request *_dmk_cur_req = NULL;
static int _dmk_cur_replied = 0;
static int _dmk_out_rc = 0;
static uint32_t _dmk_out_code = 0;
static uint32_t _dmk_out_peer_us = 0;
static uint32_t _dmk_out_worker_us = 0;
static str _dmk_out_json = STR_NULL;
static int _dmk_out_json_size = 0;
static char _dmk_out_error[256] = "";

int dmk_state_init(const char **handled, size_t nhandled)
{
	_dmk_stats = shm_mallocxz(sizeof(*_dmk_stats));
	if(_dmk_stats == NULL) {
		SHM_MEM_ERROR;
		return -1;
	}
	if(load_tm_api(&_dmk_tmb) < 0) {
		LM_INFO("tm not loaded - dm_send_request_async disabled\n");
		memset(&_dmk_tmb, 0, sizeof(_dmk_tmb));
	}
	_dmk_handled = handled;
	_dmk_handled_n = nhandled;
	_dmk_pacer.interval_ms = (uint32_t)dmk_cfg.reconnect_interval;
	return 0;
}

dmg_stats *dmk_stats(void)
{
	return _dmk_stats;
}

tm_api_t *dmk_tm(void)
{
	return &_dmk_tmb;
}

const char **dmk_handled(size_t *n)
{
	*n = _dmk_handled_n;
	return _dmk_handled;
}

/* --- attachment --------------------------------------------------------------------------- */

void dmk_state_set_worker(int idx)
{
	_dmk_worker_idx = idx;
}

int dmk_worker_index(void)
{
	return _dmk_worker_idx;
}

dmb_worker *dmk_w(void)
{
	return _dmk_w;
}

void dmk_detach(void)
{
	if(_dmk_w != NULL) {
		dmb_detach(_dmk_w);
		_dmk_w = NULL;
	}
}

int dmk_attach(const char *role)
{
	char name[64];
	uint64_t now;
	int rc;

	if(_dmk_w != NULL)
		return 0;
	now = dmg_now_ms();
	if(!dmg_attach_due(&_dmk_pacer, now))
		return -1;
	snprintf(name, sizeof(name), "kamailio-%s-%d", role, my_pid());
	rc = dmb_attach(dmk_cfg.bridge_socket, name, &_dmk_w);
	if(rc == 0 && _dmk_w != NULL) {
		/* created but the bridge is not reachable yet: this module retries by itself */
		dmb_detach(_dmk_w);
		_dmk_w = NULL;
		rc = -1;
	}
	if(rc < 0 || _dmk_w == NULL) {
		const char *why = dmb_last_error();
		_dmk_w = NULL;
		if(dmg_attach_failed(&_dmk_pacer, now, why))
			LM_WARN("cannot attach to bridge at %s (%s): retrying every %d ms\n",
					dmk_cfg.bridge_socket, why, dmk_cfg.reconnect_interval);
		return -1;
	}
	dmg_attach_ok(&_dmk_pacer);
	/* the sync wait's poll bound (checked in mod_init) */
	if(dmb_set_sync_spin(_dmk_w, (uint32_t)dmk_cfg.sync_spin_us) < 0)
		LM_ERR("setting sync_spin_us: %s\n", dmb_last_error());
	/* only module workers take requests; everyone else declares none */
	if(_dmk_worker_idx >= 0)
		rc = dmb_set_handled(_dmk_w, _dmk_handled, _dmk_handled_n);
	else
		rc = dmb_set_handled(_dmk_w, NULL, 0);
	if(rc < 0)
		LM_ERR("declaring handled commands failed: %s\n", dmb_last_error());
	LM_INFO("attached to bridge at %s as %s\n", dmk_cfg.bridge_socket, name);
	return 0;
}

/* --- the request being handled ------------------------------------------------------------ */

void dmk_request_begin(dmb_request *r)
{
	_dmk_cur_req = r;
	_dmk_cur_replied = 0;
}

dmb_request *dmk_request(void)
{
	return _dmk_cur_req;
}

int dmk_request_replied(void)
{
	return _dmk_cur_replied;
}

void dmk_request_set_replied(void)
{
	_dmk_cur_replied = 1;
}

void dmk_request_end(void)
{
	_dmk_cur_req = NULL;
	_dmk_cur_replied = 0;
}

/* --- outcome of sent requests ------------------------------------------------------------- */

void dmk_outcome_set(int rc, uint32_t result_code, const char *json, const char *error)
{
	int len = json ? (int)strlen(json) : 0;

	_dmk_out_rc = rc;
	_dmk_out_code = result_code;
	_dmk_out_peer_us = 0;
	_dmk_out_worker_us = 0;
	snprintf(_dmk_out_error, sizeof(_dmk_out_error), "%s", error ? error : "");
	if(len + 1 > _dmk_out_json_size) {
		char *b = pkg_malloc(len + 1);
		if(b == NULL) {
			PKG_MEM_ERROR;
			_dmk_out_json.len = 0;
			return;
		}
		if(_dmk_out_json.s)
			pkg_free(_dmk_out_json.s);
		_dmk_out_json.s = b;
		_dmk_out_json_size = len + 1;
	}
	if(len)
		memcpy(_dmk_out_json.s, json, len);
	if(_dmk_out_json.s)
		_dmk_out_json.s[len] = '\0';
	_dmk_out_json.len = len;
}

int dmk_outcome_rc(void)
{
	return _dmk_out_rc;
}

uint32_t dmk_outcome_code(void)
{
	return _dmk_out_code;
}

void dmk_outcome_from_answer(int rc, const dmb_answer *ans)
{
	dmk_outcome_set(rc, dmb_answer_result_code(ans), dmb_answer_avps_json(ans, NULL),
			dmb_answer_error(ans));
	_dmk_out_peer_us = dmg_peer_us(dmb_answer_peer_ns(ans));
	/* same rounding and cap as peer_us, so that peer_us <= worker_us holds for the script */
	_dmk_out_worker_us = dmg_peer_us(dmb_answer_worker_ns(ans));
}

uint32_t dmk_outcome_peer_us(void)
{
	return _dmk_out_peer_us;
}

uint32_t dmk_outcome_worker_us(void)
{
	return _dmk_out_worker_us;
}

str *dmk_outcome_json(void)
{
	return &_dmk_out_json;
}

const char *dmk_outcome_error(void)
{
	return _dmk_out_error[0] ? _dmk_out_error : NULL;
}
