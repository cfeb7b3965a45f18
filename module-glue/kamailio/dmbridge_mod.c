/*
 * dmbridge Kamailio module: serve and originate Diameter from the routing script through the
 * dmbridge sidecar (libdmbridge). See README for the script contract.
 *
 * This file holds the module exports, parameters, init, the script functions (native and
 * KEMI), $dm(...) and the RPC. The module processes live in dmk_worker.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/sr_module.h"
#include "core/dprint.h"
#include "core/ut.h"
#include "core/pt.h"
#include "core/pvar.h"
#include "core/lvalue.h"
#include "core/route.h"
#include "core/mod_fix.h"
#include "core/fmsg.h"
#include "core/kemi.h"
#include "core/rpc.h"
#include "core/rpc_lookup.h"
#include "core/clist.h"
#include "core/mem/mem.h"
#include "core/mem/shm_mem.h"
#include "core/cfg/cfg_struct.h"

#include "dmk.h"

MODULE_VERSION

char *_dmk_bridge_socket = "/run/dmbridge/control.sock";
int _dmk_workers = 2;
int _dmk_request_timeout = 5000;
int _dmk_auto_reply_code = 5012;
int _dmk_reconnect_interval = 1000;
str _dmk_event_callback = STR_NULL;

tm_api_t _dmk_tmb;
const char **_dmk_handled = NULL;
size_t _dmk_handled_n = 0;
int _dmk_rt_catchall = -1;
int *_dmk_pipes = NULL;
dmk_stats_t *_dmk_stats = NULL;

dmb_worker *_dmk_w = NULL;
dmb_request *_dmk_cur_req = NULL;
int _dmk_cur_replied = 0;
int _dmk_worker_idx = -1;

static uint64_t _dmk_next_attach_ms = 0;
static int _dmk_attach_failed_logged = 0;

/* the outcome of the last request sent by this process */
static int _dmk_out_rc = 0;
static uint32_t _dmk_out_code = 0;
static str _dmk_out_json = STR_NULL;
static int _dmk_out_json_size = 0;
static char _dmk_out_error[256] = "";

/* buffer for JSON parameters printed from the script (can be tens of kB) */
static str _dmk_jbuf = STR_NULL;
static int _dmk_jbuf_size = 0;

static int mod_init(void);
static int child_init(int rank);
static void mod_destroy(void);

/* One C wrapper per arity: Kamailio calls a 3-parameter function through a 3-argument
 * pointer type (action.c, MODULE3_T), so a wrapper shared with the 4-parameter form would read
 * a fourth argument that was never passed (a register's garbage: issue 16's crash). */
static int w_dm_send_reply1(sip_msg_t *msg, char *pjson, char *unused);
static int w_dm_send_reply2(sip_msg_t *msg, char *pjson, char *perr);
static int w_dm_send_request3(sip_msg_t *msg, char *papp, char *pcmd, char *pjson);
static int w_dm_send_request4(sip_msg_t *msg, char *papp, char *pcmd, char *pjson, char *pvar);
static int w_dm_send_request_async(
		sip_msg_t *msg, char *papp, char *pcmd, char *pjson, char *proute);
static int fixup_dm_reply(void **param, int param_no);
static int fixup_free_dm_reply(void **param, int param_no);
static int fixup_dm_request(void **param, int param_no);
static int fixup_free_dm_request(void **param, int param_no);
static int fixup_dm_request_async(void **param, int param_no);
static int fixup_free_dm_request_async(void **param, int param_no);

static int pv_parse_dm_name(pv_spec_p sp, str *in);
static int pv_get_dm(sip_msg_t *msg, pv_param_t *param, pv_value_t *res);

static void dmk_rpc_status(rpc_t *rpc, void *ctx);

/* clang-format off */
static cmd_export_t cmds[] = {
	{"dm_send_reply", (cmd_function)w_dm_send_reply1, 1, fixup_dm_reply,
		fixup_free_dm_reply, ANY_ROUTE},
	{"dm_send_reply", (cmd_function)w_dm_send_reply2, 2, fixup_dm_reply,
		fixup_free_dm_reply, ANY_ROUTE},
	{"dm_send_answer", (cmd_function)w_dm_send_reply1, 1, fixup_dm_reply,
		fixup_free_dm_reply, ANY_ROUTE},
	{"dm_send_answer", (cmd_function)w_dm_send_reply2, 2, fixup_dm_reply,
		fixup_free_dm_reply, ANY_ROUTE},
	{"dm_send_request", (cmd_function)w_dm_send_request3, 3, fixup_dm_request,
		fixup_free_dm_request, ANY_ROUTE},
	{"dm_send_request", (cmd_function)w_dm_send_request4, 4, fixup_dm_request,
		fixup_free_dm_request, ANY_ROUTE},
	{"dm_send_request_async", (cmd_function)w_dm_send_request_async, 4,
		fixup_dm_request_async, fixup_free_dm_request_async, REQUEST_ROUTE},
	{0, 0, 0, 0, 0, 0}
};

static param_export_t params[] = {
	{"bridge_socket",      PARAM_STRING, &_dmk_bridge_socket},
	{"workers",            PARAM_INT,    &_dmk_workers},
	{"request_timeout",    PARAM_INT,    &_dmk_request_timeout},
	{"auto_reply_code",    PARAM_INT,    &_dmk_auto_reply_code},
	{"reconnect_interval", PARAM_INT,    &_dmk_reconnect_interval},
	{"event_callback",     PARAM_STR,    &_dmk_event_callback},
	{0, 0, 0}
};

static pv_export_t mod_pvs[] = {
	{ {"dm", (sizeof("dm")-1)}, PVT_OTHER, pv_get_dm, 0,
		pv_parse_dm_name, 0, 0, 0},
	{ {0, 0}, 0, 0, 0, 0, 0, 0, 0 }
};

static const char *dmk_rpc_status_doc[2] = {
	"Bridge attachment, the bridge's peers and counters, and this module's counters", 0
};

static rpc_export_t dmk_rpc_cmds[] = {
	{"dmbridge.status", dmk_rpc_status, dmk_rpc_status_doc, 0},
	{0, 0, 0, 0}
};

struct module_exports exports = {
	"dmbridge",       /* module name */
	DEFAULT_DLFLAGS,  /* dlopen flags */
	cmds,             /* cfg functions */
	params,           /* module parameters */
	dmk_rpc_cmds,     /* RPC methods */
	mod_pvs,          /* pseudo-variables */
	0,                /* response handling function */
	mod_init,         /* module init function */
	child_init,       /* per-child init function */
	mod_destroy       /* module destroy function */
};
/* clang-format on */

/* Collects the handled command names from the event_route[dmbridge:E_DM_*] blocks. */
static int dmk_collect_handled(void)
{
	const char **names = NULL;
	size_t n = 0, cap = 0;
	struct str_hash_entry *e;

	if(_dmk_event_callback.s != NULL && _dmk_event_callback.len > 0) {
		/* KEMI: one callback gets every event, so every command is handled */
		static const char *all[1] = {DMG_HANDLED_ALL};
		_dmk_handled = all;
		_dmk_handled_n = 1;
		return 0;
	}
	for(int i = 0; i < event_rt.names.size; i++) {
		clist_foreach(&event_rt.names.table[i], e, next)
		{
			if(e->u.n < 0 || e->u.n >= event_rt.entries || event_rt.rlist[e->u.n] == NULL)
				continue;
			/* dmbridge:E_DM_<X> -> E_DM_<X> */
			if(e->key.len < (int)DMK_RT_PREFIX_LEN
					|| strncmp(e->key.s, DMK_RT_PREFIX, DMK_RT_PREFIX_LEN) != 0)
				continue;
			if(n == cap) {
				size_t ncap = cap ? cap * 2 : 16;
				const char **nn = pkg_reallocxf(names, ncap * sizeof(*names));
				if(nn == NULL) {
					PKG_MEM_ERROR;
					return -1;
				}
				names = nn;
				cap = ncap;
			}
			int klen = e->key.len - (int)DMK_RT_PREFIX_LEN;
			char *k = pkg_malloc(klen + 1);
			if(k == NULL) {
				PKG_MEM_ERROR;
				return -1;
			}
			memcpy(k, e->key.s + DMK_RT_PREFIX_LEN, klen);
			k[klen] = '\0';
			names[n++] = k;
			if(strcmp(k, DMG_EVENT_CATCHALL) == 0)
				_dmk_rt_catchall = e->u.n;
		}
	}
	/* dmg_handled_names filters, dedups and strips the prefix; the names point into the
	 * route names, which (like both arrays) live for the whole run */
	if(n > 0) {
		_dmk_handled = pkg_malloc(n * sizeof(*_dmk_handled));
		if(_dmk_handled == NULL) {
			PKG_MEM_ERROR;
			return -1;
		}
		_dmk_handled_n = dmg_handled_names(names, n, _dmk_handled, n);
	}
	return 0;
}

static int mod_init(void)
{
	if(_dmk_workers < 0) {
		LM_ERR("workers must be >= 0\n");
		return -1;
	}
	if(_dmk_request_timeout <= 0) {
		LM_ERR("request_timeout must be > 0 (ms)\n");
		return -1;
	}
	if(_dmk_bridge_socket == NULL || *_dmk_bridge_socket == '\0') {
		LM_ERR("bridge_socket is empty\n");
		return -1;
	}
	if(faked_msg_init() < 0) {
		LM_ERR("failed to init faked sip message\n");
		return -1;
	}
	if(load_tm_api(&_dmk_tmb) < 0) {
		LM_INFO("tm not loaded - dm_send_request_async disabled\n");
		memset(&_dmk_tmb, 0, sizeof(_dmk_tmb));
	}
	_dmk_stats = shm_mallocxz(sizeof(*_dmk_stats));
	if(_dmk_stats == NULL) {
		SHM_MEM_ERROR;
		return -1;
	}
	if(dmk_collect_handled() < 0)
		return -1;
	if(_dmk_workers > 0) {
		_dmk_pipes = pkg_malloc(2 * _dmk_workers * sizeof(int));
		if(_dmk_pipes == NULL) {
			PKG_MEM_ERROR;
			return -1;
		}
		for(int i = 0; i < _dmk_workers; i++) {
			if(pipe(&_dmk_pipes[2 * i]) < 0) {
				LM_ERR("pipe: %s\n", strerror(errno));
				return -1;
			}
			/* the worker drains its end without blocking; a SIP worker never waits on a
			 * full pipe (a stuck module worker): the call fails and the transaction is
			 * released instead */
			fcntl(_dmk_pipes[2 * i], F_SETFL, O_NONBLOCK);
			fcntl(_dmk_pipes[2 * i + 1], F_SETFL, O_NONBLOCK);
		}
		register_procs(_dmk_workers);
		cfg_register_child(_dmk_workers);
	}
	if(_dmk_workers == 0 && _dmk_handled_n > 0)
		LM_WARN("event_route[dmbridge:E_DM_*] present but workers=0: no process will run them\n");
	LM_INFO("libdmbridge %s, bridge %s, %d worker(s), %zu handled command name(s)\n",
			dmb_version(), _dmk_bridge_socket, _dmk_workers, _dmk_handled_n);
	for(size_t i = 0; i < _dmk_handled_n; i++)
		LM_INFO("handles command [%s]\n", _dmk_handled[i]);
	return 0;
}

static int child_init(int rank)
{
	int pid;

	if(rank == PROC_INIT || rank == PROC_TCP_MAIN)
		return 0;
	if(rank != PROC_MAIN)
		return 0; /* SIP/RPC/timer processes attach on first use */

	for(int i = 0; i < _dmk_workers; i++) {
		char desc[32];
		snprintf(desc, sizeof(desc), "DMBRIDGE WORKER %d", i + 1);
		pid = fork_process(PROC_XWORKER, desc, 1);
		if(pid < 0)
			return -1;
		if(pid == 0) {
			if(cfg_child_init())
				return -1;
			dmk_worker_main(i);
			/* not reached */
			return -1;
		}
	}
	return 0;
}

static void mod_destroy(void)
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
	if(now < _dmk_next_attach_ms)
		return -1;
	snprintf(name, sizeof(name), "kamailio-%s-%d", role, my_pid());
	rc = dmb_attach(_dmk_bridge_socket, name, &_dmk_w);
	if(rc == 0 && _dmk_w != NULL) {
		/* created but the bridge is not reachable yet: this module retries by itself */
		dmb_detach(_dmk_w);
		_dmk_w = NULL;
		rc = -1;
	}
	if(rc < 0 || _dmk_w == NULL) {
		_dmk_w = NULL;
		_dmk_next_attach_ms = now + (uint64_t)_dmk_reconnect_interval;
		if(!_dmk_attach_failed_logged) {
			LM_WARN("cannot attach to bridge at %s (%s): retrying every %d ms\n",
					_dmk_bridge_socket, dmb_last_error(), _dmk_reconnect_interval);
			_dmk_attach_failed_logged = 1;
		}
		return -1;
	}
	_dmk_attach_failed_logged = 0;
	/* only module workers take requests; everyone else declares none */
	if(_dmk_worker_idx >= 0)
		rc = dmb_set_handled(_dmk_w, _dmk_handled, _dmk_handled_n);
	else
		rc = dmb_set_handled(_dmk_w, NULL, 0);
	if(rc < 0)
		LM_ERR("declaring handled commands failed: %s\n", dmb_last_error());
	LM_INFO("attached to bridge at %s as %s\n", _dmk_bridge_socket, name);
	return 0;
}

/* --- outcome of sent requests ------------------------------------------------------------ */

void dmk_count_outcome(int rc)
{
	switch(rc) {
		case DMG_RC_OK:
			DMK_INC(answers_ok);
			break;
		case DMG_RC_ERROR:
			DMK_INC(answers_error);
			break;
		case DMG_RC_TIMEOUT:
			DMK_INC(timeouts);
			break;
		default:
			DMK_INC(not_sent);
	}
}

void dmk_set_outcome(int rc, uint32_t result_code, const char *json, const char *error)
{
	int len = json ? (int)strlen(json) : 0;

	_dmk_out_rc = rc;
	_dmk_out_code = result_code;
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

static int fixup_dm_reply(void **param, int param_no)
{
	if(param_no == 1)
		return fixup_dm_json(param, "dm_send_reply");
	if(param_no == 2)
		return fixup_igp_all(param, param_no);
	return E_UNSPEC;
}

static int fixup_free_dm_reply(void **param, int param_no)
{
	if(param_no == 1)
		return fixup_free_dm_json(param);
	if(param_no == 2)
		return fixup_free_igp_all(param, param_no);
	return 0;
}

static int fixup_dm_request(void **param, int param_no)
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

static int fixup_free_dm_request(void **param, int param_no)
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

static int fixup_dm_request_async(void **param, int param_no)
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

static int fixup_free_dm_request_async(void **param, int param_no)
{
	if(param_no == 4)
		return fixup_free_spve_all(param, param_no);
	return fixup_free_dm_request(param, param_no);
}

/* --- dm_send_reply ------------------------------------------------------------------------- */

static int ki_dm_send_reply_ex(sip_msg_t *msg, str *json, int is_error)
{
	if(_dmk_cur_req == NULL || _dmk_w == NULL) {
		LM_ERR("dm_send_reply: no Diameter request is being handled here"
			   " (use it in event_route[dmbridge:E_DM_*])\n");
		return -1;
	}
	if(_dmk_cur_replied) {
		LM_ERR("dm_send_reply: this request was already answered\n");
		return -1;
	}
	if(dmk_check_json("dm_send_reply", json) < 0)
		return -1;
	if(dmb_reply(_dmk_w, dmb_request_token(_dmk_cur_req), json->s, (size_t)json->len,
			   is_error ? 1 : 0)
			< 0) {
		LM_ERR("dm_send_reply: %s\n", dmb_last_error());
		return -1;
	}
	_dmk_cur_replied = 1;
	DMK_INC(replies);
	return 1;
}

static int ki_dm_send_reply(sip_msg_t *msg, str *json)
{
	return ki_dm_send_reply_ex(msg, json, 0);
}

static int w_dm_send_reply2(sip_msg_t *msg, char *pjson, char *perr)
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

static int w_dm_send_reply1(sip_msg_t *msg, char *pjson, char *unused)
{
	return w_dm_send_reply2(msg, pjson, NULL);
}

/* --- dm_send_request (synchronous) ----------------------------------------------------------- */

static int dmk_send_sync(sip_msg_t *msg, int64_t app_id, int64_t cmd_code, str *json)
{
	dmb_answer *ans = NULL;
	int rc;

	DMK_INC(sent_sync);
	if(app_id < 0 || cmd_code < 0 || app_id > UINT32_MAX || cmd_code > UINT32_MAX) {
		LM_ERR("dm_send_request: app_id and cmd_code must be 0..4294967295\n");
		rc = DMG_RC_NOT_SENT;
		dmk_set_outcome(rc, 0, NULL, "invalid app_id or cmd_code");
		goto done;
	}
	if(dmk_check_json("dm_send_request", json) < 0) {
		rc = DMG_RC_NOT_SENT;
		dmk_set_outcome(rc, 0, NULL, "invalid JSON");
		goto done;
	}
	if(dmk_attach(_dmk_worker_idx >= 0 ? "dm" : "sip") < 0) {
		rc = DMG_RC_NOT_SENT;
		dmk_set_outcome(rc, 0, NULL, "bridge not attached");
		goto done;
	}
	/* returns the answer class (negative for -1/-2/-3); only a NULL answer is a failure */
	dmb_send_request(_dmk_w, (uint32_t)app_id, (uint32_t)cmd_code, json->s, (size_t)json->len,
			(uint32_t)_dmk_request_timeout, &ans);
	if(ans == NULL) {
		LM_ERR("dm_send_request(%lld, %lld): %s\n", (long long)app_id, (long long)cmd_code,
				dmb_last_error());
		rc = DMG_RC_NOT_SENT;
		dmk_set_outcome(rc, 0, NULL, dmb_last_error());
		goto done;
	}
	rc = dmg_rc_from_class(dmb_answer_class(ans));
	dmk_set_outcome(rc, dmb_answer_result_code(ans), dmb_answer_avps_json(ans, NULL),
			dmb_answer_error(ans));
	if(rc == DMG_RC_NOT_SENT || rc == DMG_RC_TIMEOUT)
		LM_NOTICE("dm_send_request(%lld, %lld): %s\n", (long long)app_id, (long long)cmd_code,
				dmb_answer_error(ans) ? dmb_answer_error(ans) : "no answer");
	dmb_answer_free(ans);
done:
	dmk_count_outcome(rc);
	return rc;
}

static int ki_dm_send_request(sip_msg_t *msg, int app_id, int cmd_code, str *json)
{
	return dmk_send_sync(msg, app_id, cmd_code, json);
}

static int w_dm_send_request4(sip_msg_t *msg, char *papp, char *pcmd, char *pjson, char *pvar)
{
	uint32_t app_id, cmd_code;
	int rc;
	str json;

	if(dmk_get_u32(msg, papp, "dm_send_request", "app_id", &app_id) < 0
			|| dmk_get_u32(msg, pcmd, "dm_send_request", "cmd_code", &cmd_code) < 0) {
		dmk_set_outcome(DMG_RC_NOT_SENT, 0, NULL, "invalid app_id or cmd_code");
		DMK_INC(sent_sync);
		dmk_count_outcome(DMG_RC_NOT_SENT);
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
		if(_dmk_out_json.len > 0) {
			val.flags = PV_VAL_STR;
			val.rs = _dmk_out_json;
		} else {
			val.flags = PV_VAL_NULL;
		}
		if(pv_set_spec_value(msg, (pv_spec_t *)pvar, EQ_T, &val) < 0)
			LM_ERR("dm_send_request: cannot set the reply variable\n");
	}
	return rc;
}

static int w_dm_send_request3(sip_msg_t *msg, char *papp, char *pcmd, char *pjson)
{
	return w_dm_send_request4(msg, papp, pcmd, pjson, NULL);
}

/* --- dm_send_request_async ------------------------------------------------------------------ */

static void *dmk_shm_alloc(size_t size, void *ctx)
{
	return shm_malloc(size);
}

static int dmk_send_async(
		sip_msg_t *msg, int64_t app_id, int64_t cmd_code, str *json, str *route)
{
	static unsigned int rr = 0;
	unsigned int tindex = 0, tlabel = 0;
	tm_cell_t *t;
	dmg_job *job;
	int widx;
	char rname[128];

	if(_dmk_workers <= 0 || _dmk_tmb.t_suspend == NULL) {
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

	t = _dmk_tmb.t_gett();
	if(t == NULL || t == T_UNDEFINED) {
		if(_dmk_tmb.t_newtran(msg) < 0) {
			LM_ERR("dm_send_request_async: cannot create the transaction\n");
			return -1;
		}
		t = _dmk_tmb.t_gett();
		if(t == NULL || t == T_UNDEFINED) {
			LM_ERR("dm_send_request_async: cannot look up the transaction\n");
			return -1;
		}
	}
	job = dmg_job_new(dmk_shm_alloc, NULL, (uint32_t)app_id, (uint32_t)cmd_code,
			(uint32_t)_dmk_request_timeout, route->s, (size_t)route->len, json->s,
			(size_t)json->len);
	if(job == NULL) {
		SHM_MEM_ERROR;
		return -1;
	}
	if(_dmk_tmb.t_suspend(msg, &tindex, &tlabel) < 0) {
		LM_ERR("dm_send_request_async: failed to suspend the transaction\n");
		shm_free(job);
		return -1;
	}
	job->tindex = tindex;
	job->tlabel = tlabel;
	widx = (int)(rr++ % (unsigned int)_dmk_workers);
	/* a pointer is 8 bytes < PIPE_BUF: the write is atomic, whole or EAGAIN */
	if(write(_dmk_pipes[2 * widx + 1], &job, sizeof(job)) != sizeof(job)) {
		LM_ERR("dm_send_request_async: cannot hand the job to worker %d: %s\n", widx + 1,
				strerror(errno));
		_dmk_tmb.t_cancel_suspend(tindex, tlabel);
		shm_free(job);
		return -1;
	}
	DMK_INC(sent_async);
	LM_DBG("transaction [%u:%u] suspended, job for worker %d\n", tindex, tlabel, widx + 1);
	return 0; /* stop the script: the transaction continues in the route */
}

static int ki_dm_send_request_async(
		sip_msg_t *msg, int app_id, int cmd_code, str *json, str *route)
{
	return dmk_send_async(msg, app_id, cmd_code, json, route);
}

static int w_dm_send_request_async(
		sip_msg_t *msg, char *papp, char *pcmd, char *pjson, char *proute)
{
	uint32_t app_id, cmd_code;
	str json, route;

	if(dmk_get_u32(msg, papp, "dm_send_request_async", "app_id", &app_id) < 0
			|| dmk_get_u32(msg, pcmd, "dm_send_request_async", "cmd_code", &cmd_code) < 0)
		return -1;
	if(fixup_get_svalue(msg, (gparam_t *)proute, &route) < 0) {
		LM_ERR("dm_send_request_async: invalid route parameter\n");
		return -1;
	}
	/* the route name is in the pv buffer; copy before printing the JSON */
	char rbuf[128];
	if(route.len <= 0 || route.len >= (int)sizeof(rbuf)) {
		LM_ERR("dm_send_request_async: invalid route name\n");
		return -1;
	}
	memcpy(rbuf, route.s, route.len);
	route.s = rbuf;
	if(dmk_get_json(msg, (pv_elem_t *)pjson, &json) < 0) {
		LM_ERR("dm_send_request_async: cannot print the JSON parameter\n");
		return -1;
	}
	return dmk_send_async(msg, app_id, cmd_code, &json, &route);
}

/* --- $dm(name) ----------------------------------------------------------------------------- */

enum {
	DMK_PV_SESS_ID = 1,
	DMK_PV_APP_ID,
	DMK_PV_CMD_CODE,
	DMK_PV_AVPS_JSON,
	DMK_PV_CMD_NAME,
	DMK_PV_ORIGIN_HOST,
	DMK_PV_ORIGIN_REALM,
	DMK_PV_EVENT,
	DMK_PV_REPLY_JSON,
	DMK_PV_RESULT_CODE,
	DMK_PV_RESULT,
	DMK_PV_ERROR,
};

static const struct {
	const char *name;
	int id;
} dmk_pv_names[] = {
	{"sess_id", DMK_PV_SESS_ID},
	{"app_id", DMK_PV_APP_ID},
	{"cmd_code", DMK_PV_CMD_CODE},
	{"avps_json", DMK_PV_AVPS_JSON},
	{"cmd_name", DMK_PV_CMD_NAME},
	{"origin_host", DMK_PV_ORIGIN_HOST},
	{"origin_realm", DMK_PV_ORIGIN_REALM},
	{"event", DMK_PV_EVENT},
	{"reply_json", DMK_PV_REPLY_JSON},
	{"result_code", DMK_PV_RESULT_CODE},
	{"result", DMK_PV_RESULT},
	{"error", DMK_PV_ERROR},
};

static int pv_parse_dm_name(pv_spec_p sp, str *in)
{
	if(sp == NULL || in == NULL || in->len <= 0)
		return -1;
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

static int pv_get_dm(sip_msg_t *msg, pv_param_t *param, pv_value_t *res)
{
	dmb_request *r = _dmk_cur_req;

	if(param == NULL)
		return -1;
	switch(param->pvn.u.isname.name.n) {
		case DMK_PV_REPLY_JSON:
			return _dmk_out_json.len > 0 ? pv_get_strval(msg, param, res, &_dmk_out_json)
										 : pv_get_null(msg, param, res);
		case DMK_PV_RESULT_CODE:
			return pv_get_uintval(msg, param, res, _dmk_out_code);
		case DMK_PV_RESULT:
			return pv_get_sintval(msg, param, res, _dmk_out_rc);
		case DMK_PV_ERROR:
			return pv_get_cstr(msg, param, res, _dmk_out_error[0] ? _dmk_out_error : NULL);
	}
	if(r == NULL)
		return pv_get_null(msg, param, res);
	switch(param->pvn.u.isname.name.n) {
		case DMK_PV_SESS_ID:
			return pv_get_cstr(msg, param, res, dmb_request_sess_id(r));
		case DMK_PV_APP_ID:
			return pv_get_uintval(msg, param, res, dmb_request_app_id(r));
		case DMK_PV_CMD_CODE:
			return pv_get_uintval(msg, param, res, dmb_request_cmd_code(r));
		case DMK_PV_AVPS_JSON:
			return pv_get_cstr(msg, param, res, dmb_request_avps_json(r, NULL));
		case DMK_PV_CMD_NAME:
			return pv_get_cstr(msg, param, res, dmb_request_cmd_name(r));
		case DMK_PV_ORIGIN_HOST:
			return pv_get_cstr(msg, param, res, dmb_request_origin_host(r));
		case DMK_PV_ORIGIN_REALM:
			return pv_get_cstr(msg, param, res, dmb_request_origin_realm(r));
		case DMK_PV_EVENT:
			return pv_get_cstr(msg, param, res, dmb_request_event(r));
	}
	return pv_get_null(msg, param, res);
}

/* --- RPC ----------------------------------------------------------------------------------- */

static void dmk_rpc_status(rpc_t *rpc, void *ctx)
{
	void *th;
	char *bridge = NULL;
	dmk_stats_t s;

	if(rpc->add(ctx, "{", &th) < 0) {
		rpc->fault(ctx, 500, "Internal error creating the reply");
		return;
	}
	memcpy(&s, _dmk_stats, sizeof(s)); /* counters only: a torn read is harmless */
	if(dmk_attach("rpc") == 0 && dmb_status_json(_dmk_w, &bridge) >= 0 && bridge != NULL) {
		rpc->struct_add(th, "ss", "attached", "yes", "bridge", bridge);
		dmb_string_free(bridge);
	} else {
		rpc->struct_add(th, "ss", "attached", "no", "error", dmb_last_error());
	}
	rpc->struct_add(th, "sdddd", "socket", _dmk_bridge_socket, "workers", _dmk_workers,
			"workers_attached", (int)__atomic_load_n(&_dmk_stats->workers_attached,
										__ATOMIC_RELAXED),
			"handled_commands", (int)_dmk_handled_n, "request_timeout_ms",
			_dmk_request_timeout);
	/* 'j' is unsigned long: 64 bits on the LP64 targets Kamailio runs on */
	rpc->struct_add(th, "jjjjjjjjj", "requests_in", (unsigned long)s.requests_in, "replies",
			(unsigned long)s.replies, "auto_replies", (unsigned long)s.auto_replies,
			"sent_sync", (unsigned long)s.sent_sync, "sent_async",
			(unsigned long)s.sent_async, "answers_ok", (unsigned long)s.answers_ok,
			"answers_error", (unsigned long)s.answers_error, "timeouts",
			(unsigned long)s.timeouts, "not_sent", (unsigned long)s.not_sent);
}

/* --- KEMI ---------------------------------------------------------------------------------- */

/* clang-format off */
static sr_kemi_t sr_kemi_dmbridge_exports[] = {
	{ str_init("dmbridge"), str_init("dm_send_reply"),
		SR_KEMIP_INT, ki_dm_send_reply,
		{ SR_KEMIP_STR, SR_KEMIP_NONE, SR_KEMIP_NONE,
			SR_KEMIP_NONE, SR_KEMIP_NONE, SR_KEMIP_NONE }
	},
	{ str_init("dmbridge"), str_init("dm_send_reply_ex"),
		SR_KEMIP_INT, ki_dm_send_reply_ex,
		{ SR_KEMIP_STR, SR_KEMIP_INT, SR_KEMIP_NONE,
			SR_KEMIP_NONE, SR_KEMIP_NONE, SR_KEMIP_NONE }
	},
	{ str_init("dmbridge"), str_init("dm_send_answer"),
		SR_KEMIP_INT, ki_dm_send_reply,
		{ SR_KEMIP_STR, SR_KEMIP_NONE, SR_KEMIP_NONE,
			SR_KEMIP_NONE, SR_KEMIP_NONE, SR_KEMIP_NONE }
	},
	{ str_init("dmbridge"), str_init("dm_send_request"),
		SR_KEMIP_INT, ki_dm_send_request,
		{ SR_KEMIP_INT, SR_KEMIP_INT, SR_KEMIP_STR,
			SR_KEMIP_NONE, SR_KEMIP_NONE, SR_KEMIP_NONE }
	},
	{ str_init("dmbridge"), str_init("dm_send_request_async"),
		SR_KEMIP_INT, ki_dm_send_request_async,
		{ SR_KEMIP_INT, SR_KEMIP_INT, SR_KEMIP_STR,
			SR_KEMIP_STR, SR_KEMIP_NONE, SR_KEMIP_NONE }
	},
	{ {0, 0}, {0, 0}, 0, NULL, { 0, 0, 0, 0, 0, 0 } }
};
/* clang-format on */

int mod_register(char *path, int *dlflags, void *p1, void *p2)
{
	sr_kemi_modules_add(sr_kemi_dmbridge_exports);
	return 0;
}
