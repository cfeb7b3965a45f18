/*
 * dmbridge Kamailio module: declarations shared by its source files.
 *
 * Process model:
 *  - `workers` module processes (forked from PROC_MAIN) attach to the bridge, declare the
 *    commands the script has event routes for, run those routes for incoming requests, and
 *    execute asynchronous requests handed over by SIP workers (answers always come back to
 *    the process that sent the request, so the process that sends is the one that resumes).
 *  - SIP workers, RPC and timer processes attach lazily, only for synchronous requests and
 *    status, and declare no handled commands so the bridge never routes requests to them.
 */
#ifndef DMK_H
#define DMK_H

#include <stdint.h>

#include "core/str.h"
#include "core/parser/msg_parser.h"
#include "modules/tm/tm_load.h"

#include "dmbridge.h"
#include "dmglue.h"

/* Kamailio's grammar wants event route names as "module:event", so the script's routes are
 * event_route[dmbridge:E_DM_PPR], event_route[dmbridge:E_DM_REQUEST]; the event names
 * themselves (what the bridge and KEMI see) are the DESIGN §3 ones, E_DM_<ABBR>. */
#define DMK_RT_PREFIX "dmbridge:"
#define DMK_RT_PREFIX_LEN (sizeof(DMK_RT_PREFIX) - 1)

/* module parameters */
extern char *_dmk_bridge_socket;
extern int _dmk_workers;
extern int _dmk_request_timeout;
extern int _dmk_auto_reply_code;
extern int _dmk_reconnect_interval;
extern str _dmk_event_callback;

extern tm_api_t _dmk_tmb;

/* handled command names (for dmb_set_handled), built in mod_init from the event routes */
extern const char **_dmk_handled;
extern size_t _dmk_handled_n;
extern int _dmk_rt_catchall; /* index of event_route[E_DM_REQUEST] or -1 */

/* pipes from SIP workers to module worker i: _dmk_pipes[2*i] read, [2*i+1] write */
extern int *_dmk_pipes;

/* counters in shm, shared by all processes (updated with atomic builtins) */
typedef struct dmk_stats {
	uint64_t requests_in;   /* incoming requests given to the script */
	uint64_t replies;       /* dm_send_reply calls that reached the bridge */
	uint64_t auto_replies;  /* requests the script left unanswered, answered by the module */
	uint64_t sent_sync;     /* dm_send_request */
	uint64_t sent_async;    /* dm_send_request_async */
	uint64_t answers_ok;    /* outcome 1 */
	uint64_t answers_error; /* outcome -1 */
	uint64_t timeouts;      /* outcome -2 */
	uint64_t not_sent;      /* outcome -3 */
	int32_t workers_attached;
} dmk_stats_t;
extern dmk_stats_t *_dmk_stats;

#define DMK_INC(field) __atomic_fetch_add(&_dmk_stats->field, 1, __ATOMIC_RELAXED)

/* per-process state */
extern dmb_worker *_dmk_w;            /* this process's attachment, or NULL */
extern dmb_request *_dmk_cur_req;     /* request whose event route runs now */
extern int _dmk_cur_replied;
extern int _dmk_worker_idx;           /* module worker index, -1 in other processes */

/* outcome of the last request this process sent ($dm(reply_json) etc.) */
void dmk_set_outcome(int rc, uint32_t result_code, const char *json, const char *error);
void dmk_count_outcome(int rc);

/* attach this process if it is not yet (rate-limited retries); 0 attached, -1 not */
int dmk_attach(const char *role);

/* module worker: never returns */
void dmk_worker_main(int idx);

#endif
