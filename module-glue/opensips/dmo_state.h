/*
 * dmbridge OpenSIPS module: the configuration and each process's state, behind functions: the
 * lowest layer of the module (libdmbridge and module-glue/common below it, nothing of the module).
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
#ifndef DMO_STATE_H
#define DMO_STATE_H

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

/* the module parameters (modparam writes them before mod_init; read-only afterwards) */
typedef struct dmo_cfg {
	char *bridge_socket;
	int request_timeout;   /* ms, aaa_diameter's answer_timeout default */
	int auto_reply_code;   /* answer for requests the script leaves unanswered; 0: none */
	int max_json_log_size; /* characters of bad JSON quoted in a log line */
	int sync_spin_us;      /* dm_send_request polls for its answer this long (adaptive) */
} dmo_cfg_t;
extern dmo_cfg_t dmo_cfg;

/* mod_init: the shared counters, the handled command names (they live as long as the script) */
int dmo_state_init(const char **handled, size_t nhandled);
dmg_stats *dmo_stats(void);
const char **dmo_handled(size_t *n);

/* --- this process's attachment --- */

/* Attaches if it is not attached (paced; libdmbridge backs off after a refusal); 0 attached
 * (possibly still waiting for the bridge: libdmbridge attaches by itself), -1 not. */
int dmo_attach(const char *role);
dmb_worker *dmo_w(void); /* this process's attachment or NULL */
void dmo_detach(void);   /* mod_destroy: only the process that attached */
/* whether the attachment's descriptor is in this process's reactor (dmo_serve) */
int dmo_serving(void);
void dmo_set_serving(void);

/* --- the incoming request whose event route runs now --- */
void dmo_request_begin(dmb_request *r);
dmb_request *dmo_request(void);
int dmo_request_replied(void);
void dmo_request_set_replied(void);
void dmo_request_end(void);

/* logs a JSON error with at most max_json_log_size characters of the input */
int dmo_check_json(const char *fn, const str *json);
/* dm_send_request's output variables, each when given: rpl_avps_pv, the answer's AVPs (NULL
 * without any); peer_us_pv, the bridge's wait for the peer for this request in microseconds
 * (dmg_peer_us), 0 without an answer from a peer; worker_us_pv, libdmbridge's round trip for it
 * (dmb_answer_worker_ns: send call entered -> answer taken, the peer included; rounded like
 * peer_us), 0 when unknown (not sent, the library's own timeout). `ans` NULL: not sent. */
void dmo_set_out_vars(struct sip_msg *msg, pv_spec_t *rpl, pv_spec_t *peer, pv_spec_t *worker,
		const dmb_answer *ans);

#endif
