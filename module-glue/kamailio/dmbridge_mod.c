/*
 * dmbridge Kamailio module: serve and originate Diameter from the routing script through the
 * dmbridge sidecar (libdmbridge). See README (generated from doc/) for the script contract.
 *
 * This file holds the exports (functions, parameters, $dm, RPC, KEMI) and the init. The rest,
 * each file using only the ones before it:
 *   dmk_state.c   configuration and each process's state (attachment, current request,
 *                 last outcome), behind functions
 *   dmk_worker.c  the module processes (incoming requests, async requests)
 *   dmk_script.c  the script functions, their fixups and $dm()
 *   dmk_rpc.c     dmbridge.status and dmbridge.peers
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

#include "dmk_state.h"
#include "dmk_worker.h"
#include "dmk_script.h"
#include "dmk_rpc.h"

MODULE_VERSION

static int mod_init(void);
static int child_init(int rank);
static void mod_destroy(void);

/* sched_slice_us / sched_nice / sched_fifo_priority: the scheduling of the processes that run
 * the Diameter routes (the module workers, and the SIP workers that call dm_send_request),
 * applied in child_init; 0: the kernel's (BENCHMARKS.md "Session 11: latency under load",
 * "Session 15: async p99 at load without losing throughput") */
static int dmk_sched_slice_us = 0;
static int dmk_sched_nice = 0;
static int dmk_sched_fifo_priority = 0;

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
	{"bridge_socket",      PARAM_STRING, &dmk_cfg.bridge_socket},
	{"workers",            PARAM_INT,    &dmk_cfg.workers},
	{"request_timeout",    PARAM_INT,    &dmk_cfg.request_timeout},
	{"auto_reply_code",    PARAM_INT,    &dmk_cfg.auto_reply_code},
	{"reconnect_interval", PARAM_INT,    &dmk_cfg.reconnect_interval},
	{"event_callback",     PARAM_STR,    &dmk_cfg.event_callback},
	{"sync_spin_us",       PARAM_INT,    &dmk_cfg.sync_spin_us},
	{"async_queue",        PARAM_INT,    &dmk_cfg.async_queue},
	{"async_direct",       PARAM_INT,    &dmk_cfg.async_direct},
	{"sched_slice_us",     PARAM_INT,    &dmk_sched_slice_us},
	{"sched_nice",          PARAM_INT,   &dmk_sched_nice},
	{"sched_fifo_priority", PARAM_INT,   &dmk_sched_fifo_priority},
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

static const char *dmk_rpc_peers_doc[2] = {
	"The bridge's Diameter peers: host, state, watchdog, usable, applications, pending", 0
};

static rpc_export_t dmk_rpc_cmds[] = {
	{"dmbridge.status", dmk_rpc_status, dmk_rpc_status_doc, 0},
	{"dmbridge.peers", dmk_rpc_peers, dmk_rpc_peers_doc, RET_ARRAY},
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
static int dmk_collect_handled(const char ***handled, size_t *nhandled)
{
	const char **names = NULL;
	size_t n = 0, cap = 0;
	struct str_hash_entry *e;

	*handled = NULL;
	*nhandled = 0;
	if(dmk_cfg.event_callback.s != NULL && dmk_cfg.event_callback.len > 0) {
		/* KEMI: one callback gets every event, so every command is handled */
		static const char *all[1] = {DMG_HANDLED_ALL};
		*handled = all;
		*nhandled = 1;
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
		}
	}
	/* dmg_handled_names filters, dedups and strips the prefix; the names point into the
	 * route names, which (like both arrays) live for the whole run */
	if(n > 0) {
		*handled = pkg_malloc(n * sizeof(**handled));
		if(*handled == NULL) {
			PKG_MEM_ERROR;
			return -1;
		}
		*nhandled = dmg_handled_names(names, n, *handled, n);
	}
	return 0;
}

static int mod_init(void)
{
	const char **handled = NULL;
	size_t nhandled = 0;

	if(dmk_cfg.workers < 0) {
		LM_ERR("workers must be >= 0\n");
		return -1;
	}
	if(dmk_cfg.async_queue < 1 || dmk_cfg.async_queue > DMK_MAX_ASYNC_QUEUE) {
		LM_ERR("async_queue must be 1..%d (jobs per module worker)\n", DMK_MAX_ASYNC_QUEUE);
		return -1;
	}
	if(dmk_cfg.async_direct != 0 && dmk_cfg.async_direct != 1) {
		LM_ERR("async_direct must be 0 (module workers send) or 1 (SIP workers send)\n");
		return -1;
	}
	if(dmk_cfg.sync_spin_us < 0 || dmk_cfg.sync_spin_us > DMB_MAX_SYNC_SPIN_US) {
		LM_ERR("sync_spin_us must be 0..%d (us)\n", DMB_MAX_SYNC_SPIN_US);
		return -1;
	}
	if(dmk_sched_slice_us != 0
			&& (dmk_sched_slice_us < DMB_MIN_SLICE_US
					|| dmk_sched_slice_us > DMB_MAX_SLICE_US)) {
		LM_ERR("sched_slice_us must be 0 (the kernel's) or %d..%d (us)\n", DMB_MIN_SLICE_US,
				DMB_MAX_SLICE_US);
		return -1;
	}
	if(dmk_sched_nice < DMB_MIN_NICE || dmk_sched_nice > DMB_MAX_NICE) {
		LM_ERR("sched_nice must be %d..%d (0: unchanged)\n", DMB_MIN_NICE, DMB_MAX_NICE);
		return -1;
	}
	if(dmk_sched_fifo_priority < 0 || dmk_sched_fifo_priority > DMB_MAX_FIFO_PRIORITY) {
		LM_ERR("sched_fifo_priority must be 0 (SCHED_OTHER) or 1..%d\n", DMB_MAX_FIFO_PRIORITY);
		return -1;
	}
	if(dmk_cfg.request_timeout <= 0) {
		LM_ERR("request_timeout must be > 0 (ms)\n");
		return -1;
	}
	if(dmk_cfg.bridge_socket == NULL || *dmk_cfg.bridge_socket == '\0') {
		LM_ERR("bridge_socket is empty\n");
		return -1;
	}
	if(faked_msg_init() < 0) {
		LM_ERR("failed to init faked sip message\n");
		return -1;
	}
	if(dmk_collect_handled(&handled, &nhandled) < 0 || dmk_state_init(handled, nhandled) < 0)
		return -1;
	if(dmk_cfg.workers > 0) {
		if(dmk_worker_init(dmk_cfg.workers) < 0)
			return -1;
		register_procs(dmk_cfg.workers);
		cfg_register_child(dmk_cfg.workers);
	}
	if(dmk_cfg.workers == 0 && nhandled > 0)
		LM_WARN("event_route[dmbridge:E_DM_*] present but workers=0: no process will run them\n");
	LM_INFO("libdmbridge %s, bridge %s, %d worker(s), %zu handled command name(s)\n",
			dmb_version(), dmk_cfg.bridge_socket, dmk_cfg.workers, nhandled);
	for(size_t i = 0; i < nhandled; i++)
		LM_INFO("handles command [%s]\n", handled[i]);
	return 0;
}

/* The process's scheduling per sched_slice_us / sched_nice / sched_fifo_priority; a refusal
 * (EPERM, a kernel before 6.12) is logged and the process runs as it was. */
static void dmk_apply_scheduling(const char *who)
{
	char *now = NULL;

	if(dmk_sched_slice_us == 0 && dmk_sched_nice == 0 && dmk_sched_fifo_priority == 0)
		return;
	if(dmb_set_scheduling((uint32_t)dmk_sched_slice_us, (int32_t)dmk_sched_nice,
			   (uint32_t)dmk_sched_fifo_priority, &now)
			== DMB_OK) {
		LM_INFO("%s: %s\n", who, now);
		dmb_string_free(now);
	} else {
		LM_WARN("%s: %s; running with the kernel's defaults\n", who, dmb_last_error());
	}
}

static int child_init(int rank)
{
	int pid;

	if(rank == PROC_INIT || rank == PROC_TCP_MAIN)
		return 0;
	if(rank > 0)
		dmk_apply_scheduling("SIP worker"); /* it runs dm_send_request */
	if(rank != PROC_MAIN)
		return 0; /* SIP/RPC/timer processes attach on first use */

	for(int i = 0; i < dmk_cfg.workers; i++) {
		char desc[32];
		snprintf(desc, sizeof(desc), "DMBRIDGE WORKER %d", i + 1);
		pid = fork_process(PROC_XWORKER, desc, 1);
		if(pid < 0)
			return -1;
		if(pid == 0) {
			if(cfg_child_init())
				return -1;
			dmk_apply_scheduling(desc);
			dmk_worker_main(i);
			/* not reached */
			return -1;
		}
	}
	return 0;
}

static void mod_destroy(void)
{
	dmk_detach();
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
