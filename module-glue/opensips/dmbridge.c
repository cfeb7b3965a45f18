/*
 * dmbridge OpenSIPS module: serve and originate Diameter from the routing script through the
 * dmbridge sidecar (libdmbridge). A drop-in for aaa_diameter scripts: same function names,
 * parameters, return codes, event and $param() names (see README.md).
 *
 * This file holds the exports, parameters, init, the script functions and the MI command; the
 * reactor side (incoming requests, event routes, async answers) is in dmo_worker.c.
 */
/* first: io_wait.h must include <fcntl.h> itself, with F_SETSIG enabled */
#include "../../reactor_defs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../sr_module.h"
#include "../../dprint.h"
#include "../../ut.h"
#include "../../pt.h"
#include "../../route.h"
#include "../../mem/mem.h"
#include "../../mem/shm_mem.h"
#include "../../mi/mi.h"
#include "../../evi/evi_modules.h"

#include "dmo.h"

char *dmo_bridge_socket = "/run/dmbridge/control.sock";
int dmo_request_timeout = 2000; /* ms, aaa_diameter's answer_timeout default */
int dmo_auto_reply_code = 5012;
int dmo_max_json_log_size = 512;
static char *dmo_dict_file = NULL;
static char *dmo_aaa_url = NULL;
static int dmo_fd_log_level = -1;
static char *dmo_realm = NULL;
static char *dmo_peer_identity = NULL;

const char **dmo_handled = NULL;
size_t dmo_handled_n = 0;
dmo_stats_t *dmo_stats = NULL;

dmb_worker *dmo_w = NULL;
int dmo_serving = 0;
dmb_request *dmo_cur_req = NULL;
int dmo_cur_replied = 0;

static int dmo_w_pid = 0; /* the process that attached dmo_w */
static uint64_t dmo_next_attach_ms = 0;
static int dmo_attach_logged = 0;
#define DMO_ATTACH_RETRY_MS 1000
static int dmo_fixing_script = 1; /* fixups run for the script's literals (see fixup_dm_json) */

static int mod_init(void);
static int child_init(int rank);
static void mod_destroy(void);

static int w_dm_send_reply(struct sip_msg *msg, str *json, int *is_error);
static int w_dm_send_request(struct sip_msg *msg, int *app_id, int *cmd_code, str *json,
		pv_spec_t *rpl);
static int w_dm_send_request_async(struct sip_msg *msg, async_ctx *ctx, int *app_id,
		int *cmd_code, str *json, pv_spec_t *rpl);
static mi_response_t *mi_dm_status(const mi_params_t *params, struct mi_handler *async_hdl);
static int fixup_dm_json(void **param);
static int fixup_dm_reply_var(void **param);

/* clang-format off */
static const cmd_export_t cmds[] = {
	{"dm_send_reply", (cmd_function)w_dm_send_reply, {
		{CMD_PARAM_STR, 0, 0},
		{CMD_PARAM_INT | CMD_PARAM_OPT, 0, 0}, {0, 0, 0}},
		EVENT_ROUTE},
	/* aaa_diameter's name */
	{"dm_send_answer", (cmd_function)w_dm_send_reply, {
		{CMD_PARAM_STR, 0, 0},
		{CMD_PARAM_INT | CMD_PARAM_OPT, 0, 0}, {0, 0, 0}},
		EVENT_ROUTE},
	{"dm_send_request", (cmd_function)w_dm_send_request, {
		{CMD_PARAM_INT, 0, 0},
		{CMD_PARAM_INT, 0, 0},
		{CMD_PARAM_STR, fixup_dm_json, 0},
		{CMD_PARAM_VAR | CMD_PARAM_OPT, fixup_dm_reply_var, 0}, {0, 0, 0}},
		ALL_ROUTES},
	{0, 0, {{0, 0, 0}}, 0}
};

static const acmd_export_t acmds[] = {
	{"dm_send_request", (acmd_function)w_dm_send_request_async, {
		{CMD_PARAM_INT, 0, 0},
		{CMD_PARAM_INT, 0, 0},
		{CMD_PARAM_STR, fixup_dm_json, 0},
		{CMD_PARAM_VAR | CMD_PARAM_OPT, fixup_dm_reply_var, 0}, {0, 0, 0}}},
	{0, 0, {{0, 0, 0}}}
};

static const param_export_t params[] = {
	{"bridge_socket",     STR_PARAM, &dmo_bridge_socket},
	{"request_timeout",   INT_PARAM, &dmo_request_timeout},
	{"auto_reply_code",   INT_PARAM, &dmo_auto_reply_code},
	{"dict_file",         STR_PARAM, &dmo_dict_file},
	{"max_json_log_size", INT_PARAM, &dmo_max_json_log_size},
	/* aaa_diameter's parameters, so its scripts only change loadmodule */
	{"answer_timeout",    INT_PARAM, &dmo_request_timeout},
	{"aaa_url",           STR_PARAM, &dmo_aaa_url},
	{"fd_log_level",      INT_PARAM, &dmo_fd_log_level},
	{"realm",             STR_PARAM, &dmo_realm},
	{"peer_identity",     STR_PARAM, &dmo_peer_identity},
	{0, 0, 0}
};

static const mi_export_t mi_cmds[] = {
	{"dm_status", "bridge attachment, the bridge's peers and counters, this module's counters",
		0, 0, {
		{mi_dm_status, {0}},
		{EMPTY_MI_RECIPE}}
#if DMO_OPENSIPS_VER >= 400
		, {0}  /* 4.0: aliases */
#endif
	},
	{EMPTY_MI_EXPORT}
};

static const dep_export_t deps = {
	{ /* OpenSIPS module dependencies: tm only for async(), not required */
		{MOD_TYPE_DEFAULT, "tm", DEP_SILENT},
		{MOD_TYPE_NULL, NULL, 0},
	},
	{ /* modparam dependencies */
		{NULL, NULL},
	},
};

struct module_exports exports = {
	"dmbridge",       /* module's name */
	MOD_TYPE_DEFAULT, /* class of this module */
	MODULE_VERSION,
	DEFAULT_DLFLAGS,  /* dlopen flags */
	NULL,             /* load function */
	&deps,            /* OpenSIPS module dependencies */
	cmds,             /* exported functions */
	acmds,            /* exported async functions */
	params,           /* param exports */
	NULL,             /* exported statistics */
	mi_cmds,          /* exported MI functions */
	NULL,             /* exported pseudo-variables */
	NULL,             /* exported transformations */
	NULL,             /* extra processes: none, see dmo.h */
	NULL,             /* module pre-initialization function */
	mod_init,         /* module initialization function */
	NULL,             /* reply processing function */
	mod_destroy,      /* shutdown function */
	child_init,       /* per-child init function */
	NULL              /* reload confirm function */
};
/* clang-format on */

/* --- init -------------------------------------------------------------------------------- */

/* Publishes one E_DM_* event unless it exists (the core already published the ones the
 * script has event routes for). */
static int dmo_publish(const char *name)
{
	str s;
	char *copy;

	s.s = (char *)name;
	s.len = strlen(name);
	if(evi_get_id(&s) != EVI_ERROR)
		return 0;
	copy = pkg_malloc(s.len + 1); /* evi keeps the pointer */
	if(copy == NULL) {
		LM_ERR("no more pkg memory\n");
		return -1;
	}
	memcpy(copy, name, s.len + 1);
	s.s = copy;
	if(evi_publish_event(s) == EVI_ERROR) {
		LM_ERR("cannot publish event %s\n", name);
		return -1;
	}
	return 0;
}

static int dmo_publish_failed;

static void dmo_publish_cb(const char *event, void *ctx)
{
	if(dmo_publish(event) < 0)
		dmo_publish_failed = 1;
	else
		(*(int *)ctx)++;
}

/* Events of a dictionary file in the aaa_diameter format (the bridge must load the same file;
 * it cannot be handed over from here). */
static int dmo_publish_dict_file(const char *path, size_t plen)
{
	char fname[1024];
	char *text = NULL;
	struct stat st;
	size_t err_line = 0;
	int fd = -1, n, count = 0, rc = -1;

	if(plen >= sizeof(fname)) {
		LM_ERR("dictionary file name too long\n");
		return -1;
	}
	memcpy(fname, path, plen);
	fname[plen] = '\0';
	fd = open(fname, O_RDONLY);
	if(fd < 0 || fstat(fd, &st) < 0) {
		LM_ERR("cannot read dictionary file %s: %s\n", fname, strerror(errno));
		goto done;
	}
	if(st.st_size > 16 * 1024 * 1024) {
		LM_ERR("dictionary file %s is larger than 16 MB\n", fname);
		goto done;
	}
	text = pkg_malloc((size_t)st.st_size + 1);
	if(text == NULL) {
		LM_ERR("no more pkg memory\n");
		goto done;
	}
	for(size_t got = 0; got < (size_t)st.st_size;) {
		ssize_t r = read(fd, text + got, (size_t)st.st_size - got);
		if(r < 0 && errno == EINTR)
			continue;
		if(r <= 0) {
			LM_ERR("cannot read dictionary file %s: %s\n", fname,
					r < 0 ? strerror(errno) : "short read");
			goto done;
		}
		got += (size_t)r;
	}
	dmo_publish_failed = 0;
	n = dmg_dict_request_events(text, (size_t)st.st_size, dmo_publish_cb, &count, &err_line);
	if(n < 0) {
		LM_ERR("dictionary file %s, line %zu: malformed REQUEST or COMMAND line\n", fname,
				err_line);
		goto done;
	}
	if(dmo_publish_failed)
		goto done;
	LM_INFO("dictionary %s: %d request command(s) published as events"
			" (the bridge must load this file too)\n",
			fname, n);
	rc = 0;
done:
	if(fd >= 0)
		close(fd);
	if(text)
		pkg_free(text);
	return rc;
}

static int dmo_publish_events(void)
{
	size_t n;
	const dmg_command *t = dmg_builtin_requests(&n);
	char buf[64];

	if(dmo_publish(DMG_EVENT_CATCHALL) < 0)
		return -1;
	for(size_t i = 0; i < n; i++) {
		if(dmg_event_route_name(t[i].abbr, buf, sizeof(buf)) < 0 || dmo_publish(buf) < 0)
			return -1;
	}
	if(dmo_dict_file != NULL && *dmo_dict_file) {
		if(dmo_publish_dict_file(dmo_dict_file, strlen(dmo_dict_file)) < 0)
			return -1;
	}
	if(dmo_aaa_url != NULL) {
		const char *p;
		size_t plen;
		if(dmg_aaa_url_dict_file(dmo_aaa_url, &p, &plen) == 0) {
			if(dmo_dict_file == NULL && dmo_publish_dict_file(p, plen) < 0)
				return -1;
		}
		LM_NOTICE("aaa_url is aaa_diameter's: its freeDiameter configuration is not used"
				  " (peers, realm and dictionaries are the bridge's configuration)\n");
	}
	return 0;
}

/* The handled names: one per event_route[E_DM_*] of the script (E_DM_REQUEST -> "*"). */
static int dmo_collect_handled(void)
{
	const char *routes[EVENT_RT_NO];
	size_t nr = 0;

	for(int i = 1; i < EVENT_RT_NO; i++) {
		if(sroutes->event[i].a == NULL || sroutes->event[i].name == NULL)
			continue;
		routes[nr++] = sroutes->event[i].name;
	}
	dmo_handled_n = 0;
	if(nr == 0)
		return 0;
	/* the names point into the route names, which live as long as the script */
	dmo_handled = pkg_malloc(nr * sizeof(*dmo_handled));
	if(dmo_handled == NULL) {
		LM_ERR("no more pkg memory\n");
		return -1;
	}
	dmo_handled_n = dmg_handled_names(routes, nr, dmo_handled, nr);
	/* E_DM_<code> routes of commands no dictionary here names: 3.4/3.5's event_route module
	 * subscribes the script's routes only to published events (3.6+ publish them itself) */
	for(size_t i = 0; i < nr; i++)
		if(strncmp(routes[i], DMG_EVENT_PREFIX, DMG_EVENT_PREFIX_LEN) == 0
				&& dmo_publish(routes[i]) < 0)
			return -1;
	return 0;
}

static int mod_init(void)
{
	if(dmo_request_timeout <= 0) {
		LM_ERR("request_timeout (answer_timeout) must be > 0 ms\n");
		return -1;
	}
	if(dmo_bridge_socket == NULL || *dmo_bridge_socket == '\0') {
		LM_ERR("bridge_socket is empty\n");
		return -1;
	}
	if(dmo_auto_reply_code < 0 || dmo_auto_reply_code > 9999) {
		LM_ERR("auto_reply_code must be a Result-Code (0 disables)\n");
		return -1;
	}
	if(dmo_fd_log_level != -1)
		LM_NOTICE("fd_log_level is aaa_diameter's (freeDiameter logging): ignored,"
				  " the bridge logs by itself\n");
	if(dmo_realm != NULL || dmo_peer_identity != NULL)
		LM_NOTICE("realm/peer_identity are aaa_diameter's: ignored, Origin-Realm and the"
				  " peers are the bridge's configuration\n");

	dmo_stats = shm_malloc(sizeof(*dmo_stats));
	if(dmo_stats == NULL) {
		LM_ERR("no more shm memory\n");
		return -1;
	}
	memset(dmo_stats, 0, sizeof(*dmo_stats));

	if(dmo_publish_events() < 0)
		return -1;
	if(dmo_collect_handled() < 0)
		return -1;

	LM_INFO("%s, bridge %s, %zu handled command name(s)\n", dmb_version(), dmo_bridge_socket,
			dmo_handled_n);
	for(size_t i = 0; i < dmo_handled_n; i++)
		LM_INFO("handles command [%s]\n", dmo_handled[i]);
	if(dmo_handled_n == 0)
		LM_INFO("no event_route[E_DM_*]: the bridge answers incoming requests with 3001\n");
	return 0;
}

static int child_init(int rank)
{
	dmo_fixing_script = 0;
	/* only processes with a reactor serve requests: SIP workers (and 4.0's timer workers);
	 * the reactor is set up before child_init there */
	if(rank < 1 || !dmo_has_reactor())
		return 0;
	if(dmo_attach("sip") == 0)
		dmo_serve();
	/* failures are logged; SIP keeps running and Diameter calls fail with -3 until the
	 * bridge is there (the library re-attaches by itself) */
	return 0;
}

static void mod_destroy(void)
{
	if(dmo_w != NULL && dmo_w_pid == (int)getpid()) {
		dmb_detach(dmo_w);
		dmo_w = NULL;
	}
}

/* --- fixups ------------------------------------------------------------------------------ */

/* OpenSIPS calls a parameter's fixup for literals when it loads the script, and again at each
 * call for values printed from variables. Only the first kind is checked here (until
 * child_init clears dmo_fixing_script), so that a typo in a literal stops the start; values of
 * variables are checked at the call (-3 and a log line). */

static int fixup_dm_json(void **param)
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

static int fixup_dm_reply_var(void **param)
{
	pv_spec_t *sp = (pv_spec_t *)*param;

	if(sp != NULL && !pv_is_w(sp)) {
		LM_ERR("dm_send_request: reply variable is read-only: use a writable one"
			   " such as $var(x) or $avp(x)\n");
		return E_CFG;
	}
	return 0;
}

/* --- attachment -------------------------------------------------------------------------- */

int dmo_attach(const char *role)
{
	char name[64];
	uint64_t now;
	int rc;

	if(dmo_w != NULL) {
		if(dmo_w_pid == (int)getpid())
			return 0;
		/* inherited through a fork: the parent's slot, not ours (libdmbridge refuses it) */
		dmo_w = NULL;
		dmo_serving = 0;
	}
	now = dmg_now_ms();
	if(now < dmo_next_attach_ms)
		return -1;
	dmo_next_attach_ms = now + DMO_ATTACH_RETRY_MS;

	snprintf(name, sizeof(name), "opensips %s %d (pid %d)", role, process_no, (int)getpid());
	rc = dmb_attach(dmo_bridge_socket, name, &dmo_w);
	if(rc < 0 || dmo_w == NULL) {
		/* no worker at all (version mismatch, refused, bad path): retried on use */
		if(!dmo_attach_logged)
			LM_ERR("cannot attach to bridge at %s: %s\n", dmo_bridge_socket, dmb_last_error());
		dmo_attach_logged = 1;
		dmo_w = NULL;
		return -1;
	}
	if(rc == 0 && !dmo_attach_logged) {
		/* the worker exists and attaches by itself when the bridge comes up */
		LM_WARN("bridge at %s not reachable yet (%s): Diameter calls fail with -3 until it"
				" is; SIP keeps running\n",
				dmo_bridge_socket, dmb_last_error());
		dmo_attach_logged = 1;
	}
	dmo_w_pid = (int)getpid();
	__atomic_fetch_add(&dmo_stats->workers_attached, 1, __ATOMIC_RELAXED);
	return 0;
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
	show = json->len > dmo_max_json_log_size ? dmo_max_json_log_size : json->len;
	LM_ERR("%s: invalid AVP JSON at offset %zu: %s ('%.*s'%s, len: %d)\n", fn, off,
			why ? why : "syntax error", show, json->s, show < json->len ? " ..." : "",
			json->len);
	return -1;
}

/* --- dm_send_reply ----------------------------------------------------------------------- */

static int w_dm_send_reply(struct sip_msg *msg, str *json, int *is_error)
{
	int rc;

	if(dmo_cur_req == NULL || dmo_w == NULL) {
		LM_ERR("dm_send_reply: no Diameter request is being handled here"
			   " (use it in event_route[E_DM_*])\n");
		return -1;
	}
	if(dmo_cur_replied) {
		LM_ERR("dm_send_reply: this request was already answered\n");
		return -1;
	}
	if(dmo_check_json("dm_send_reply", json) < 0) {
		/* the module answers 5012 (auto_reply_code) after the route */
		return -1;
	}
	rc = dmb_reply(dmo_w, dmb_request_token(dmo_cur_req), json->s, (size_t)json->len,
			(is_error && *is_error) ? 1 : 0);
	if(rc < 0) {
		LM_ERR("dm_send_reply: %s\n", dmb_last_error());
		/* INVAL/TOO_BIG: the library already told the bridge (5012 to the peer);
		 * DETACHED: the old bridge dealt with it; FULL: the module retries after the route */
		if(rc != DMB_E_FULL)
			dmo_cur_replied = 1;
		return -1;
	}
	dmo_cur_replied = 1;
	DMO_INC(replies);
	return 1;
}

/* --- dm_send_request (synchronous) ------------------------------------------------------- */

void dmo_count_outcome(int rc)
{
	switch(rc) {
		case DMG_RC_OK:
			DMO_INC(answers_ok);
			break;
		case DMG_RC_ERROR:
			DMO_INC(answers_error);
			break;
		case DMG_RC_TIMEOUT:
			DMO_INC(timeouts);
			break;
		default:
			DMO_INC(not_sent);
	}
}

void dmo_set_reply_var(struct sip_msg *msg, pv_spec_t *rpl, const char *json, size_t len)
{
	pv_value_t val;

	if(rpl == NULL)
		return;
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

static int w_dm_send_request(struct sip_msg *msg, int *app_id, int *cmd_code, str *json,
		pv_spec_t *rpl)
{
	dmb_answer *ans = NULL;
	const char *aj = NULL;
	size_t alen = 0;
	int rc;

	DMO_INC(sent_sync);
	if(*app_id < 0 || *cmd_code < 0) {
		LM_ERR("dm_send_request: app_id and cmd_code must be >= 0\n");
		rc = DMG_RC_NOT_SENT;
		goto done;
	}
	if(dmo_check_json("dm_send_request", json) < 0) {
		rc = DMG_RC_NOT_SENT;
		goto done;
	}
	if(dmo_attach(dmo_serving ? "sip" : "aux") < 0) {
		LM_ERR("dm_send_request(%d, %d): bridge not attached\n", *app_id, *cmd_code);
		rc = DMG_RC_NOT_SENT;
		goto done;
	}
	rc = dmb_send_request(dmo_w, (uint32_t)*app_id, (uint32_t)*cmd_code, json->s,
			(size_t)json->len, (uint32_t)dmo_request_timeout, &ans);
	if(ans == NULL) {
		LM_ERR("dm_send_request(%d, %d): %s\n", *app_id, *cmd_code, dmb_last_error());
		rc = DMG_RC_NOT_SENT;
		goto done;
	}
	rc = dmg_rc_from_class(dmb_answer_class(ans));
	aj = dmb_answer_avps_json(ans, &alen);
	if(rc == DMG_RC_NOT_SENT || rc == DMG_RC_TIMEOUT) {
		const char *why = dmb_answer_error(ans);
		LM_NOTICE("dm_send_request(%d, %d): %s\n", *app_id, *cmd_code,
				why && *why ? why : (rc == DMG_RC_TIMEOUT ? "no answer in time" : "not sent"));
	}
done:
	dmo_set_reply_var(msg, rpl, aj, alen);
	if(ans)
		dmb_answer_free(ans);
	dmo_count_outcome(rc);
	return rc;
}

static int w_dm_send_request_async(struct sip_msg *msg, async_ctx *ctx, int *app_id,
		int *cmd_code, str *json, pv_spec_t *rpl)
{
	if(*app_id < 0 || *cmd_code < 0) {
		LM_ERR("dm_send_request: app_id and cmd_code must be >= 0\n");
		dmo_set_reply_var(msg, rpl, NULL, 0);
		DMO_INC(sent_async);
		dmo_count_outcome(DMG_RC_NOT_SENT);
		async_status = ASYNC_NO_IO;
		return DMG_RC_NOT_SENT;
	}
	return dmo_async_start(msg, ctx, (uint32_t)*app_id, (uint32_t)*cmd_code, json, rpl);
}

/* --- MI ---------------------------------------------------------------------------------- */

static mi_response_t *mi_dm_status(const mi_params_t *params, struct mi_handler *async_hdl)
{
	mi_response_t *resp;
	mi_item_t *obj, *arr, *cnt;
	char *bridge = NULL;
	dmo_stats_t s;

	resp = init_mi_result_object(&obj);
	if(resp == NULL)
		return NULL;
	memcpy(&s, dmo_stats, sizeof(s)); /* counters only: a torn read is harmless */

	if(dmo_attach("mi") == 0 && dmb_is_attached(dmo_w) == 1
			&& dmb_status_json(dmo_w, &bridge) >= 0 && bridge != NULL) {
		/* MI builds its replies with the system allocator (it frees them that way too) and
		 * leaves cJSON's hooks on pkg in between */
		mi_item_t *b;
		_init_mi_sys_mem_hooks();
		b = cJSON_Parse(bridge);
		_init_mi_pkg_mem_hooks();
		if(add_mi_bool(obj, MI_SSTR("attached"), 1) < 0)
			goto error;
		if(b != NULL) {
			_init_mi_sys_mem_hooks();
			cJSON_AddItemToObject(obj, "bridge", b);
			_init_mi_pkg_mem_hooks();
		}
		else if(add_mi_string(obj, MI_SSTR("bridge"), bridge, strlen(bridge)) < 0)
			goto error;
	} else {
		const char *err = dmb_last_error();
		if(add_mi_bool(obj, MI_SSTR("attached"), 0) < 0
				|| add_mi_string(obj, MI_SSTR("error"), (char *)err, strlen(err)) < 0)
			goto error;
	}
	if(add_mi_string(obj, MI_SSTR("socket"), dmo_bridge_socket, strlen(dmo_bridge_socket)) < 0
			|| add_mi_string(obj, MI_SSTR("library"), (char *)dmb_version(),
					   strlen(dmb_version()))
					   < 0
			|| add_mi_number(obj, MI_SSTR("request_timeout_ms"), dmo_request_timeout) < 0
			|| add_mi_number(obj, MI_SSTR("workers_attached"),
					   __atomic_load_n(&dmo_stats->workers_attached, __ATOMIC_RELAXED))
					   < 0
			|| add_mi_number(obj, MI_SSTR("workers_serving"),
					   __atomic_load_n(&dmo_stats->workers_serving, __ATOMIC_RELAXED))
					   < 0)
		goto error;
	arr = add_mi_array(obj, MI_SSTR("handled"));
	if(arr == NULL)
		goto error;
	for(size_t i = 0; i < dmo_handled_n; i++)
		if(add_mi_string(arr, 0, 0, (char *)dmo_handled[i], strlen(dmo_handled[i])) < 0)
			goto error;
	cnt = add_mi_object(obj, MI_SSTR("counters"));
	if(cnt == NULL || add_mi_number(cnt, MI_SSTR("requests_in"), (double)s.requests_in) < 0
			|| add_mi_number(cnt, MI_SSTR("replies"), (double)s.replies) < 0
			|| add_mi_number(cnt, MI_SSTR("auto_replies"), (double)s.auto_replies) < 0
			|| add_mi_number(cnt, MI_SSTR("sent_sync"), (double)s.sent_sync) < 0
			|| add_mi_number(cnt, MI_SSTR("sent_async"), (double)s.sent_async) < 0
			|| add_mi_number(cnt, MI_SSTR("answers_ok"), (double)s.answers_ok) < 0
			|| add_mi_number(cnt, MI_SSTR("answers_error"), (double)s.answers_error) < 0
			|| add_mi_number(cnt, MI_SSTR("timeouts"), (double)s.timeouts) < 0
			|| add_mi_number(cnt, MI_SSTR("not_sent"), (double)s.not_sent) < 0)
		goto error;
	if(bridge)
		dmb_string_free(bridge);
	return resp;
error:
	if(bridge)
		dmb_string_free(bridge);
	free_mi_response(resp);
	return init_mi_error(500, MI_SSTR("Internal error building the reply"));
}
