/*
 * dmbridge OpenSIPS module: serve and originate Diameter from the routing script through the
 * dmbridge sidecar (libdmbridge). A drop-in for aaa_diameter scripts: same function names,
 * parameters, return codes, event and $param() names (see README.md).
 *
 * This file holds the exports and the init (events published, handled commands collected,
 * attach retries before SIP messages). The rest, each file using only the ones before it:
 *   dmo_state.c   configuration and each process's state (attachment, current request)
 *   dmo_worker.c  the reactor side: incoming requests, event routes, async requests
 *   dmo_script.c  the script functions and their fixups
 *   dmo_mi.c      dm_status and dm_peers
 *   dmo_glue.c    module-glue/common, compiled in
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
#include "../../route_struct.h"
#include "../../mem/mem.h"
#include "../../mem/shm_mem.h"
#include "../../mi/mi.h"
#include "../../evi/evi_modules.h"
#include "../../script_cb.h"

#include "dmo_state.h"
#include "dmo_worker.h"
#include "dmo_script.h"
#include "dmo_mi.h"

static char *dmo_dict_file = NULL;
static char *dmo_aaa_url = NULL;
static int dmo_fd_log_level = -1;
static char *dmo_realm = NULL;
static char *dmo_peer_identity = NULL;

static int mod_init(void);
static int child_init(int rank);

/* sched_slice_us / sched_fifo_priority: the scheduling of the SIP workers, which run the
 * Diameter routes and dm_send_request, applied in child_init; 0: the kernel's (BENCHMARKS.md
 * "Session 11: latency under load"). No sched_nice as Kamailio's: measured once, nice -10 did
 * not help OpenSIPS's async path (BENCHMARKS.md "Session 15: async p99 at load without losing
 * throughput") */
static int dmo_sched_slice_us = 0;
static int dmo_sched_fifo_priority = 0;
static int dmo_retry_attach(struct sip_msg *msg, void *param);
static void mod_destroy(void);

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
		{CMD_PARAM_VAR | CMD_PARAM_OPT, fixup_dm_reply_var, 0},
		{CMD_PARAM_VAR | CMD_PARAM_OPT, fixup_dm_peer_var, 0},
		{CMD_PARAM_VAR | CMD_PARAM_OPT, fixup_dm_worker_var, 0}, {0, 0, 0}},
		ALL_ROUTES},
	{0, 0, {{0, 0, 0}}, 0}
};

static const acmd_export_t acmds[] = {
	{"dm_send_request", (acmd_function)w_dm_send_request_async, {
		{CMD_PARAM_INT, 0, 0},
		{CMD_PARAM_INT, 0, 0},
		{CMD_PARAM_STR, fixup_dm_json, 0},
		{CMD_PARAM_VAR | CMD_PARAM_OPT, fixup_dm_reply_var, 0},
		{CMD_PARAM_VAR | CMD_PARAM_OPT, fixup_dm_peer_var, 0},
		{CMD_PARAM_VAR | CMD_PARAM_OPT, fixup_dm_worker_var, 0}, {0, 0, 0}}},
	{0, 0, {{0, 0, 0}}}
};

static const param_export_t params[] = {
	{"bridge_socket",     STR_PARAM, &dmo_cfg.bridge_socket},
	{"request_timeout",   INT_PARAM, &dmo_cfg.request_timeout},
	{"auto_reply_code",   INT_PARAM, &dmo_cfg.auto_reply_code},
	{"dict_file",         STR_PARAM, &dmo_dict_file},
	{"max_json_log_size", INT_PARAM, &dmo_cfg.max_json_log_size},
	{"sync_spin_us",      INT_PARAM, &dmo_cfg.sync_spin_us},
	{"sched_slice_us",    INT_PARAM, &dmo_sched_slice_us},
	{"sched_fifo_priority", INT_PARAM, &dmo_sched_fifo_priority},
	/* aaa_diameter's parameters, so its scripts only change loadmodule */
	{"answer_timeout",    INT_PARAM, &dmo_cfg.request_timeout},
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
	{"dm_peers", "the bridge's Diameter peers: host, state, watchdog, usable, applications,"
		" pending requests",
		0, 0, {
		{mi_dm_peers, {0}},
		{EMPTY_MI_RECIPE}}
#if DMO_OPENSIPS_VER >= 400
		, {0}
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
	NULL,             /* extra processes: none, see dmo_state.h */
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
static int dmo_collect_handled(const char ***handled, size_t *nhandled)
{
	const char *routes[EVENT_RT_NO];
	size_t nr = 0;

	for(int i = 1; i < EVENT_RT_NO; i++) {
		if(sroutes->event[i].a == NULL || sroutes->event[i].name == NULL)
			continue;
		routes[nr++] = sroutes->event[i].name;
	}
	*handled = NULL;
	*nhandled = 0;
	if(nr == 0)
		return 0;
	/* the names point into the route names, which live as long as the script */
	*handled = pkg_malloc(nr * sizeof(**handled));
	if(*handled == NULL) {
		LM_ERR("no more pkg memory\n");
		return -1;
	}
	*nhandled = dmg_handled_names(routes, nr, *handled, nr);
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
	const char **handled = NULL;
	size_t nhandled = 0;

	if(dmo_cfg.sync_spin_us < 0 || dmo_cfg.sync_spin_us > DMB_MAX_SYNC_SPIN_US) {
		LM_ERR("sync_spin_us must be 0..%d (us)\n", DMB_MAX_SYNC_SPIN_US);
		return -1;
	}
	if(dmo_sched_slice_us != 0
			&& (dmo_sched_slice_us < DMB_MIN_SLICE_US
					|| dmo_sched_slice_us > DMB_MAX_SLICE_US)) {
		LM_ERR("sched_slice_us must be 0 (the kernel's) or %d..%d (us)\n", DMB_MIN_SLICE_US,
				DMB_MAX_SLICE_US);
		return -1;
	}
	if(dmo_sched_fifo_priority < 0 || dmo_sched_fifo_priority > DMB_MAX_FIFO_PRIORITY) {
		LM_ERR("sched_fifo_priority must be 0 (SCHED_OTHER) or 1..%d\n", DMB_MAX_FIFO_PRIORITY);
		return -1;
	}
	if(dmo_cfg.request_timeout <= 0) {
		LM_ERR("request_timeout (answer_timeout) must be > 0 ms\n");
		return -1;
	}
	if(dmo_cfg.bridge_socket == NULL || *dmo_cfg.bridge_socket == '\0') {
		LM_ERR("bridge_socket is empty\n");
		return -1;
	}
	if(dmo_cfg.auto_reply_code < 0 || dmo_cfg.auto_reply_code > 9999) {
		LM_ERR("auto_reply_code must be a Result-Code (0 disables)\n");
		return -1;
	}
	if(dmo_fd_log_level != -1)
		LM_NOTICE("fd_log_level is aaa_diameter's (freeDiameter logging): ignored,"
				  " the bridge logs by itself\n");
	if(dmo_realm != NULL || dmo_peer_identity != NULL)
		LM_NOTICE("realm/peer_identity are aaa_diameter's: ignored, Origin-Realm and the"
				  " peers are the bridge's configuration\n");

	if(dmo_publish_events() < 0)
		return -1;
	if(dmo_collect_handled(&handled, &nhandled) < 0 || dmo_state_init(handled, nhandled) < 0)
		return -1;
	/* a SIP worker the bridge refused (or that started before it) tries again before the
	 * messages it handles, paced by dmo_attach and libdmbridge's backoff */
	if(register_script_cb(dmo_retry_attach, PRE_SCRIPT_CB | REQ_TYPE_CB | RPL_TYPE_CB, 0)
			< 0) {
		LM_ERR("cannot register the attach retry callback\n");
		return -1;
	}

	LM_INFO("%s, bridge %s, %zu handled command name(s)\n", dmb_version(),
			dmo_cfg.bridge_socket, nhandled);
	for(size_t i = 0; i < nhandled; i++)
		LM_INFO("handles command [%s]\n", handled[i]);
	if(nhandled == 0)
		LM_INFO("no event_route[E_DM_*]: the bridge answers incoming requests with 3001\n");
	return 0;
}

/* Whether an action list uses async(dm_send_request(...), ROUTE) with a ROUTE the script does
 * not define: OpenSIPS starts with it (the reference is resolved to nothing) and a SIP worker
 * dies when such a request resumes, so the module refuses the start instead. Route references
 * are resolved after mod_init (fix_rls), hence the check from child_init. */
static int dmo_undefined_resume_route(struct action *a)
{
	for(; a != NULL; a = a->next) {
		if(a->type == ASYNC_T && a->elem[0].type == ACTIONS_ST
				&& a->elem[1].type == ROUTE_REF_ST) {
			struct action *call = (struct action *)a->elem[0].u.data;
			struct script_route_ref *ref = (struct script_route_ref *)a->elem[1].u.data;
			const acmd_export_t *acmd =
					call && call->type == AMODULE_T ? call->elem[0].u.data_const : NULL;
			if(acmd != NULL && acmd->function == (acmd_function)w_dm_send_request_async
					&& ref != NULL && ref->idx < 0) {
				LM_ERR("async(dm_send_request(...), %s) in %s line %d: route[%s] does not"
					   " exist\n",
						ref->name.s, a->file ? a->file : "?", a->line, ref->name.s);
				return 1;
			}
		}
		for(int i = 0; i < MAX_ACTION_ELEMS; i++)
			if(a->elem[i].type == ACTIONS_ST
					&& dmo_undefined_resume_route((struct action *)a->elem[i].u.data))
				return 1;
	}
	return 0;
}

/* Before each SIP message of a process with a reactor that does not serve yet. */
static int dmo_retry_attach(struct sip_msg *msg, void *param)
{
	if(!dmo_serving() && dmo_has_reactor() && dmo_attach("sip") == 0)
		dmo_serve();
	return SCB_RUN_ALL;
}

static int child_init(int rank)
{
	static int routes_checked = 0;

	dmo_script_loaded();
	if(!routes_checked) {
		routes_checked = 1;
		for(int i = 0; i < RT_NO; i++)
			if(sroutes->request[i].a != NULL
					&& dmo_undefined_resume_route(sroutes->request[i].a))
				return -1;
	}
	/* only processes with a reactor serve requests: SIP workers (and 4.0's timer workers);
	 * the reactor is set up before child_init there */
	if(rank < 1 || !dmo_has_reactor())
		return 0;
	if(dmo_sched_slice_us != 0 || dmo_sched_fifo_priority != 0) {
		/* a refusal (EPERM, a kernel before 6.12) is logged; the worker runs as it was */
		char *now = NULL;
		if(dmb_set_scheduling((uint32_t)dmo_sched_slice_us, 0,
				   (uint32_t)dmo_sched_fifo_priority, &now)
				== DMB_OK) {
			LM_INFO("SIP worker %d: %s\n", rank, now);
			dmb_string_free(now);
		} else {
			LM_WARN("SIP worker %d: %s; running with the kernel's defaults\n", rank,
					dmb_last_error());
		}
	}
	if(dmo_attach("sip") == 0)
		dmo_serve();
	/* failures are logged; SIP keeps running and Diameter calls fail with -3 until the
	 * bridge is there (the library re-attaches by itself) */
	return 0;
}

static void mod_destroy(void)
{
	dmo_detach();
}

