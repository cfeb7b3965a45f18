/*
 * dmglue: the parts of the dmbridge SIP-server modules that do not depend on the SIP server.
 *
 * Both the Kamailio and the OpenSIPS module need the same small pieces around libdmbridge:
 * turning the script's event route names into the command names the bridge must route to us,
 * checking script JSON before it crosses to the bridge (so the script gets a log line with an
 * offset, not just "rejected"), and carrying an asynchronous request from the SIP worker that
 * suspended a transaction to the module process that owns the bridge attachment. Keeping them
 * here, free of any SIP-server header, lets CI test them with a plain C unit test.
 *
 * Nothing here allocates on its own: callers pass the allocator (Kamailio shm/pkg, OpenSIPS
 * shm/pkg, or malloc in the tests).
 */
#ifndef DMGLUE_H
#define DMGLUE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Script event names: `E_DM_<ABBR>` per command, `E_DM_REQUEST` catches the rest. */
#define DMG_EVENT_PREFIX "E_DM_"
#define DMG_EVENT_PREFIX_LEN 5
#define DMG_EVENT_CATCHALL "E_DM_REQUEST"
/** What the bridge is told for "every command" (dmb_set_handled). */
#define DMG_HANDLED_ALL "*"

/**
 * Picks the handled command names out of a list of route names.
 *
 * Every `E_DM_<X>` with a well-formed X (letters, digits, '_' and '-') yields X; `E_DM_REQUEST`
 * yields "*". Other names are ignored, duplicates dropped, order kept. `out[i]` points into
 * `routes[j]` (or at a static "*"), so it lives as long as the route names do.
 *
 * Returns the number of names found, which may exceed `cap` (only `cap` are stored): the
 * caller can size its array and call again.
 */
size_t dmg_handled_names(const char *const *routes, size_t nroutes, const char **out, size_t cap);

/**
 * Writes the route name for an event into buf: "E_DM_PPR" stays as it is, "PPR" becomes
 * "E_DM_PPR". Returns the length, or -1 when the name is empty or does not fit (NUL included).
 */
int dmg_event_route_name(const char *event, char *buf, size_t cap);

/**
 * Checks that `s` is one well-formed JSON document (RFC 8259) whose top level is an array, as
 * DESIGN §4 requires of AVP lists. Depth is bounded (64) so hostile input cannot exhaust the
 * stack. Returns 0 when valid; otherwise -1 with *err_off set to the byte offset at fault and
 * *err_msg to a static description.
 */
int dmg_json_check_avps(const char *s, size_t len, size_t *err_off, const char **err_msg);

/**
 * Parses an Application-Id or Command-Code written in the script: decimal digits only (no
 * sign, no spaces), 0..4294967295 (RFC 6733 §3: both are 32- and 24-bit unsigned; the bridge
 * checks the command code's range). Returns 0, or -1 with *why set to a static reason.
 */
int dmg_parse_u32(const char *s, size_t len, uint32_t *out, const char **why);

/* --- what both modules count, show and pace --------------------------------------------- */

/**
 * The module's counters, one copy in shared memory for all of the SIP server's processes
 * (updated with atomic builtins: DMG_INC), shown by dmbridge.status / dm_status.
 */
typedef struct dmg_stats {
	uint64_t requests_in;     /* incoming requests given to the script */
	uint64_t replies;         /* dm_send_reply calls that reached the bridge */
	uint64_t replies_refused; /* dm_send_reply calls that returned an error (invalid JSON or
	                             AVPs, a second reply, no request here, too big, detached;
	                             each also logged) */
	uint64_t auto_replies;    /* requests the module answered (no route, no reply) */
	uint64_t sent_sync;       /* dm_send_request */
	uint64_t sent_async;      /* dm_send_request_async / async(dm_send_request) */
	uint64_t answers_ok;      /* outcome 1 */
	uint64_t answers_error;   /* outcome -1 */
	uint64_t timeouts;        /* outcome -2 */
	uint64_t not_sent;        /* outcome -3, and async calls that suspended nothing */
	uint64_t async_abandoned; /* async requests whose transaction the SIP server ended (its
	                             timer's 408, a CANCEL) before they were sent (not sent) or
	                             before their outcome could resume it (outcome dropped) */
	uint64_t async_direct;    /* Kamailio: async requests the SIP worker sent itself (the
	                             direct path, async_direct=1), a part of sent_async */
	int32_t workers_attached; /* processes attached to the bridge */
	int32_t workers_serving;  /* of those, the ones taking incoming requests */
} dmg_stats;

#define DMG_INC(st, field) __atomic_fetch_add(&(st)->field, 1, __ATOMIC_RELAXED)

/** Counts one outcome of a sent request (1, -1, -2, anything else as not sent). */
void dmg_count_outcome(dmg_stats *st, int rc);

/**
 * The event parameters of an incoming request, as the script reads them: $param(name) in
 * OpenSIPS (aaa_diameter's names first, so $param(1)..$param(4) match it), $dm(name) in
 * Kamailio. DMG_P_* are 1-based, in this order.
 */
enum {
	DMG_P_SESS_ID = 1,
	DMG_P_APP_ID,
	DMG_P_CMD_CODE,
	DMG_P_AVPS_JSON,
	DMG_P_CMD_NAME,
	DMG_P_ORIGIN_HOST,
	DMG_P_ORIGIN_REALM,
	DMG_P_EVENT,
	DMG_P_COUNT = DMG_P_EVENT
};

/** The DMG_P_* id of a parameter name (`len` bytes), 0 when there is none. */
int dmg_param_id(const char *name, size_t len);
/** The name of a DMG_P_* id, NULL outside 1..DMG_P_COUNT. */
const char *dmg_param_name(int id);
/** 1 when the parameter is a number (app_id, cmd_code), 0 when it is text. */
int dmg_param_is_int(int id);

/**
 * When a process that is not attached tries again. Both modules attach on use and from their
 * loops; the library itself backs off after a refusal (dmb_attach's DMB_E_REFUSED), this adds
 * the module's own interval for the other failures (bridge not running) and says what to log:
 * the first failure of a run of failures, and every refusal that reached the bridge.
 */
typedef struct dmg_attach_pacer {
	uint64_t next_ms;     /* no attempt before this */
	uint32_t interval_ms; /* between attempts while failing */
	int failing;          /* failures since the last success */
} dmg_attach_pacer;

/** 1 when an attempt may be made now. */
int dmg_attach_due(const dmg_attach_pacer *p, uint64_t now_ms);
/**
 * Records a failed attempt (`why` is dmb_last_error()). Returns 1 when it should be logged:
 * the first failure after a success, or a refusal the bridge just gave (the library's message
 * starts with "refused by the bridge" then; its fast "next attach attempt in" ones are not).
 */
int dmg_attach_failed(dmg_attach_pacer *p, uint64_t now_ms, const char *why);
/** Records a success; returns 1 when it ends a run of failures (worth an "attached" line). */
int dmg_attach_ok(dmg_attach_pacer *p);

/** Script return codes of dm_send_request (DESIGN §3). */
enum {
	DMG_RC_OK = 1,         /* 2xxx answer */
	DMG_RC_ERROR = -1,     /* error answer (3xxx/4xxx/5xxx or E bit) */
	DMG_RC_TIMEOUT = -2,   /* no answer in time */
	DMG_RC_NOT_SENT = -3,  /* bad JSON, no route, bridge down */
};

/** Maps libdmbridge's answer class (1, -1, -2, -3) to the script's return code. */
int dmg_rc_from_class(int answer_class);

typedef void *(*dmg_alloc_f)(size_t size, void *ctx);
typedef void (*dmg_free_f)(void *p, void *ctx);

/**
 * One asynchronous request, from the SIP worker that suspended its transaction to the module
 * process that sends it and resumes the transaction. Allocated in one block (strings inline)
 * in memory both processes see, so passing the pointer through a pipe is the whole hand-over.
 */
typedef struct dmg_job {
	struct dmg_job *next;  /* pending-table bucket chain, owned by the executing process */
	struct dmg_job *dnext; /* pending-table deadline order: later (or equal) deadline */
	struct dmg_job *dprev; /* pending-table deadline order: earlier (or equal) deadline */
	uint64_t handle;      /* libdmbridge's async handle, once sent */
	uint64_t deadline_ms; /* when the executor gives up waiting (safety net) */
	unsigned int tindex;  /* suspended transaction's identity */
	unsigned int tlabel;
	uint32_t app_id;
	uint32_t cmd_code;
	uint32_t timeout_ms;
	uint32_t sip_status; /* Kamailio: the transaction's final reply status when suspended */
	uint64_t reply_to;   /* Kamailio's direct path: the executor's reply address the request
	                        was sent to (dmb_reply_address); 0: the executor sends it */
	int32_t refs;        /* processes still holding the job (dmg_job_release); 0 is 1 */
	int32_t claim;       /* who ends the suspended transaction (dmg_job_claim) */
	size_t json_len;
	char *route; /* NUL-terminated, inside this block */
	char *json;  /* NUL-terminated, inside this block */
} dmg_job;

dmg_job *dmg_job_new(dmg_alloc_f alloc, void *actx, uint32_t app_id, uint32_t cmd_code,
		uint32_t timeout_ms, const char *route, size_t route_len, const char *json,
		size_t json_len);

/**
 * The direct path (Kamailio's async_direct): the SIP worker pushes the job on the executor's
 * list and THEN sends the request itself, naming the executor as where the outcome goes. Both
 * processes hold the job until each is done with it (refs 2, the last release frees it), and
 * exactly one of them ends the suspended transaction: the SIP worker when its send failed (it
 * cancels the suspend and the script gets the error), or the executor (it resumes it with the
 * outcome, or with not-sent when its attachment went away). Whoever claims first wins; the
 * other leaves the transaction alone.
 */
enum {
	DMG_CLAIM_OPEN = 0,     /* nobody has ended the transaction yet */
	DMG_CLAIM_SENDER = 1,   /* the SIP worker's send failed: it cancelled the suspend */
	DMG_CLAIM_EXECUTOR = 2, /* the executor resumes (or resumed) the transaction */
};
/** Tokens of the direct path carry this bit; libdmbridge's own handles never reach it. */
#define DMG_DIRECT_BIT (1ull << 63)

/** Sets the job's claim to `who` if nobody claimed it yet: 1 won, 0 the other side had. */
int dmg_job_claim(dmg_job *job, int32_t who);
/** The job's claim now (DMG_CLAIM_*). */
int32_t dmg_job_claimed(const dmg_job *job);
/**
 * Gives up one process's hold on the job: 1 when it was the last (the caller frees the job),
 * 0 when the other process still holds it. A job whose refs were never set (0) counts as
 * held once.
 */
int dmg_job_release(dmg_job *job);

/**
 * Jobs sent and waiting for their answer, by handle, and in deadline order. Process-local, no
 * allocation (the links are in the jobs). The deadline list lets the module's loop ask "has
 * anything expired?" every turn by looking at its first job, instead of walking every bucket
 * (issue 15: that walk cost ~2k instructions per originated call).
 */
#define DMG_PENDING_BUCKETS 1024
typedef struct dmg_pending {
	dmg_job *bucket[DMG_PENDING_BUCKETS];
	dmg_job *first; /* earliest deadline */
	dmg_job *last;  /* latest deadline */
	size_t count;
} dmg_pending;

void dmg_pending_init(dmg_pending *p);
/**
 * Adds a job; set its handle and deadline_ms first. Jobs put with the same timeout arrive in
 * deadline order, so the insertion looks at the last job only; an earlier deadline walks back
 * from the end.
 */
void dmg_pending_put(dmg_pending *p, dmg_job *job);
/** Removes and returns the job with this handle, or NULL. */
dmg_job *dmg_pending_take(dmg_pending *p, uint64_t handle);
/** Removes and returns the job with the earliest deadline if it is <= now_ms, or NULL. */
dmg_job *dmg_pending_take_expired(dmg_pending *p, uint64_t now_ms);
/** Removes and returns any job (for shutdown), or NULL when empty. */
dmg_job *dmg_pending_take_any(dmg_pending *p);
/**
 * Removes and returns the job with the earliest deadline among those whose handle has a bit
 * of `mask` (DMG_DIRECT_BIT: the direct path's jobs), or NULL. Walks the table: for rare
 * events (the attachment lost), not per call.
 */
dmg_job *dmg_pending_take_masked(dmg_pending *p, uint64_t mask);

/* --- event names of the dictionaries' request commands ------------------------------------ */

/** A request command a script can serve: E_DM_<abbr> (DESIGN §3). */
typedef struct dmg_command {
	uint32_t code;
	const char *abbr; /* request abbreviation, e.g. "PPR" */
	const char *name; /* dictionary name, e.g. "Push-Profile" */
} dmg_command;

/**
 * The request commands of the bridge's built-in dictionaries (proto/src/dict/builtin/ *.dict files,
 * their COMMAND lines) that a peer may send to a SIP server: the base protocol's
 * CER/DWR/DPR are left out, the bridge answers those itself. libdmbridge does not expose the
 * dictionary, so the table is kept here; the unit test checks it against the .dict files.
 * A code may appear more than once (Sh PUR 307 and S6a PUR 321 share "PUR"). Sets *n.
 */
const dmg_command *dmg_builtin_requests(size_t *n);

/** The built-in abbreviation of a request code, or NULL. */
const char *dmg_builtin_abbr(uint32_t code);

/**
 * Calls `cb(event, ctx)` with the event name of every request command declared in a dictionary
 * file in the aaa_diameter format (`REQUEST <code> <name>` lines), which the module publishes
 * at start-up: E_DM_<abbr> with the abbreviation from the file's own `COMMAND <code> <req>
 * <ans>` line (dmbridge's extension), else the built-in one for that code, else E_DM_<code>
 * (as the bridge names it). Keywords are case-insensitive, '#' starts a comment. Returns the
 * number of REQUEST lines, or -1 with *err_line (1-based) set at a malformed REQUEST/COMMAND
 * line. Nothing is allocated; `event` is valid during the call only.
 */
int dmg_dict_request_events(const char *text, size_t len,
		void (*cb)(const char *event, void *ctx), void *ctx, size_t *err_line);

/**
 * The extra-avps-file named in an aaa_diameter `aaa_url` ("diameter:fd.conf;extra-avps-file:
 * dict.opensips"): sets *out and *out_len to the path inside `url` and returns 0, or -1 when the
 * URL names none.
 */
int dmg_aaa_url_dict_file(const char *url, const char **out, size_t *out_len);

/** Monotonic milliseconds. */
uint64_t dmg_now_ms(void);

/**
 * The bridge's wait for the peer (dmb_answer_peer_ns) as the scripts see it: microseconds,
 * rounded up so that any wait reads as at least 1 (0 says no peer answered), at most
 * INT32_MAX (the SIP servers' integer variables are int).
 */
uint32_t dmg_peer_us(uint64_t peer_ns);

/**
 * This process's pid, cached: getpid() is a system call each time (glibc >= 2.25), and the
 * OpenSIPS glue checks the pid on every use of its worker (the fork rule). A pthread_atfork
 * child handler forgets the cached value, so a forked child reads its own.
 */
int dmg_pid(void);

#ifdef __cplusplus
}
#endif

#endif
