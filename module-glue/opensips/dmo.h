/*
 * dmbridge OpenSIPS module: declarations shared by its source files.
 *
 * Process model (why there is no module process):
 *   libdmbridge hands each incoming request to one attached process and only that process may
 *   reply to it (the token belongs to its slot), and OpenSIPS module processes cannot run script
 *   routes. So every process with a reactor (UDP/TCP SIP workers, 4.0's timer workers) attaches
 *   to the bridge in child_init, declares the commands the script has event routes for, and
 *   registers the attachment's descriptor in its own reactor once (register_async_fd). When it
 *   is readable the process runs event_route[E_DM_<ABBR>] (or E_DM_REQUEST) in place, and the
 *   route's dm_send_reply() answers through the same attachment: no IPC hop, no extra process
 *   whose death would take OpenSIPS down, and the bridge spreads requests over the workers.
 *   Answers to async dm_send_request() come back to the process that sent them, on the same
 *   descriptor, and resume the suspended transaction from there.
 *   Processes without a reactor (MI, main, module processes) attach on first use, for
 *   synchronous requests and dm_status only, and declare nothing.
 */
#ifndef DMO_H
#define DMO_H

#include <stdint.h>

#include "../../str.h"
#include "../../async.h"
#include "../../pvar.h"
#include "../../parser/msg_parser.h"
#include "../../reactor_defs.h"

#include "dmbridge.h"
#include "dmglue.h"

#ifndef DMO_OPENSIPS_VER
#error "DMO_OPENSIPS_VER must be defined by the Makefile (major*100 + minor)"
#endif

/* 3.4 has no resume_f_name in async_ctx nor the macro that sets both */
#ifndef ASYNC_SET_RESUME_F
#define ASYNC_SET_RESUME_F(_ctx, _resume_f) ((_ctx)->resume_f = (void *)(_resume_f))
#endif

/* whether this process runs a reactor (set up before child_init in SIP/timer workers) */
#define dmo_has_reactor() (_worker_io.fd_hash != NULL)

/* module parameters */
extern char *dmo_bridge_socket;
extern int dmo_request_timeout;
extern int dmo_auto_reply_code;
extern int dmo_max_json_log_size;

/* handled command names (for dmb_set_handled), from the script's E_DM_* event routes */
extern const char **dmo_handled;
extern size_t dmo_handled_n;

/* counters in shm, shared by all processes (atomic builtins) */
typedef struct dmo_stats {
	uint64_t requests_in;   /* incoming requests given to the script */
	uint64_t replies;       /* dm_send_reply calls that reached the bridge */
	uint64_t auto_replies;  /* requests answered by the module (no route, no reply) */
	uint64_t sent_sync;     /* dm_send_request */
	uint64_t sent_async;    /* async(dm_send_request) */
	uint64_t answers_ok;    /* outcome 1 */
	uint64_t answers_error; /* outcome -1 */
	uint64_t timeouts;      /* outcome -2 */
	uint64_t not_sent;      /* outcome -3 */
	int32_t workers_attached;
	int32_t workers_serving; /* with the descriptor in their reactor */
} dmo_stats_t;
extern dmo_stats_t *dmo_stats;

#define DMO_INC(field) __atomic_fetch_add(&dmo_stats->field, 1, __ATOMIC_RELAXED)

/* per-process state */
extern dmb_worker *dmo_w;         /* this process's attachment, or NULL */
extern int dmo_serving;           /* its descriptor is in this process's reactor */
extern dmb_request *dmo_cur_req;  /* request whose event route runs now */
extern int dmo_cur_replied;

/* attaches this process if it is not yet (rate-limited retries); 0 attached, -1 not */
int dmo_attach(const char *role);
/* puts the attachment's descriptor into this process's reactor (once) */
int dmo_serve(void);
void dmo_count_outcome(int rc);
/* logs a JSON error with at most max_json_log_size characters of the input */
int dmo_check_json(const char *fn, const str *json);

/* async dm_send_request: the module-side half (dmo_worker.c) */
int dmo_async_start(struct sip_msg *msg, async_ctx *ctx, uint32_t app_id, uint32_t cmd_code,
		const str *json, pv_spec_t *rpl);

/* sets the reply variable to the answer's AVPs (or NULL) */
void dmo_set_reply_var(struct sip_msg *msg, pv_spec_t *rpl, const char *json, size_t len);

#endif
