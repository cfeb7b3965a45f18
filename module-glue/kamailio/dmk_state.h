/*
 * dmbridge Kamailio module: the module's configuration and each process's state, behind
 * functions. The lowest layer of the module: it uses libdmbridge and module-glue/common and
 * nothing else of the module.
 *
 * Process model:
 *  - `workers` module processes (forked from PROC_MAIN) attach to the bridge, declare the
 *    commands the script has event routes for, run those routes for incoming requests, and
 *    resume the transactions of asynchronous requests: requests SIP workers sent themselves
 *    naming a module worker's attachment for the outcome (async_direct), or requests handed
 *    over to the module worker, which sends them (answers come back to the sender).
 *  - SIP workers, RPC and timer processes attach lazily, only for synchronous requests and
 *    status, and declare no handled commands so the bridge never routes requests to them.
 */
#ifndef DMK_STATE_H
#define DMK_STATE_H

#include <stdint.h>

#include "core/str.h"
#include "modules/tm/tm_load.h"

#include "dmbridge.h"
#include "dmglue.h"

/* Kamailio's grammar wants event route names as "module:event", so the script's routes are
 * event_route[dmbridge:E_DM_PPR], event_route[dmbridge:E_DM_REQUEST]; the event names
 * themselves (what the bridge and KEMI see) are the DESIGN §3 ones, E_DM_<ABBR>. */
#define DMK_RT_PREFIX "dmbridge:"
#define DMK_RT_PREFIX_LEN (sizeof(DMK_RT_PREFIX) - 1)

/* the module parameters (modparam writes them before mod_init; read-only afterwards) */
/* jobs a module worker's list holds by default, as many as its pipe of job pointers held
 * before (64 KiB / 8) */
#define DMK_DEFAULT_ASYNC_QUEUE 8192
#define DMK_MAX_ASYNC_QUEUE (1 << 20)

typedef struct dmk_cfg {
	char *bridge_socket;
	int workers;
	int request_timeout;    /* ms */
	int auto_reply_code;    /* answer for requests the script leaves unanswered; 0: none */
	int reconnect_interval; /* ms between attach attempts of a process */
	int sync_spin_us;       /* dm_send_request polls for its answer this long (adaptive) */
	int async_queue;        /* async jobs one module worker's list may hold */
	int async_direct;       /* 1: the SIP worker sends async requests itself (reply-to);
	                           0 (default): it hands them to a module worker */
	str event_callback;     /* KEMI: the function that gets every incoming request */
} dmk_cfg_t;
extern dmk_cfg_t dmk_cfg;

/* mod_init: the shared counters; the tm API (NULL functions when tm is not loaded); the
 * handled command names (they live for the whole run) */
int dmk_state_init(const char **handled, size_t nhandled);
dmg_stats *dmk_stats(void);
tm_api_t *dmk_tm(void);
const char **dmk_handled(size_t *n);

/* --- this process's attachment --- */

/* Marks this process as module worker `idx`: it declares the handled commands when it
 * attaches (everyone else declares none, so the bridge never routes requests to them). */
void dmk_state_set_worker(int idx);
int dmk_worker_index(void); /* -1 outside module workers */
/* Attaches if it is not attached (paced: reconnect_interval, the library's backoff after a
 * refusal); 0 attached, -1 not (logged when worth it). */
int dmk_attach(const char *role);
dmb_worker *dmk_w(void); /* the attachment or NULL */
void dmk_detach(void);

/* --- the incoming request whose event route runs now (module workers) --- */
void dmk_request_begin(dmb_request *r);
dmb_request *dmk_request(void);
int dmk_request_replied(void);
void dmk_request_set_replied(void);
void dmk_request_end(void);

/* --- the outcome of the last request this process sent ($dm(reply_json) etc.) --- */
void dmk_outcome_set(int rc, uint32_t result_code, const char *json, const char *error);
int dmk_outcome_rc(void);
uint32_t dmk_outcome_code(void);
/* the outcome of an answer from libdmbridge: as dmk_outcome_set, and $dm(peer_us), the
 * bridge's wait for the peer (dmb_answer_peer_ns, as dmg_peer_us), and $dm(worker_us), the
 * library's round trip (dmb_answer_worker_ns: send call entered -> answer taken, peer
 * included, as dmg_peer_us), which dmk_outcome_set leaves 0. The script's round trip less
 * worker_us is the module's own part (suspend before the send, resume after the take);
 * worker_us less peer_us the library's and the bridge's */
void dmk_outcome_from_answer(int rc, const dmb_answer *ans);
uint32_t dmk_outcome_peer_us(void);
uint32_t dmk_outcome_worker_us(void);
str *dmk_outcome_json(void); /* len 0 when none */
const char *dmk_outcome_error(void); /* NULL when none */

#endif
