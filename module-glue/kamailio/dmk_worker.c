/*
 * dmbridge Kamailio module: the module processes.
 *
 * Each one owns a bridge attachment and waits (poll) on two things: the attachment's fd
 * (incoming requests, answers to what it sent, bridge state changes) and a doorbell pipe.
 * SIP workers hand over asynchronous requests on a list in shared memory, and write to the
 * pipe only when the worker said it is going to sleep. Incoming requests run
 * event_route[dmbridge:E_DM_<ABBR>] (or dmbridge:E_DM_REQUEST, or the KEMI event callback).
 * Async requests resume here, in the script route the caller named, with $dm(reply_json),
 * $dm(result_code), $dm(result) and $dm(peer_us) set. With async_direct (the default) the SIP
 * worker sends the request itself, naming this worker's attachment (its reply address, which
 * the worker publishes in its dmk_jobq) as where the outcome goes: the job on the list only
 * tells the worker which transaction an outcome resumes. Otherwise (async_direct 0, no
 * address: a bridge without reply-to, the worker detached) the worker sends it, and its
 * answer comes back to this worker because it sent it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/sr_module.h"
#include "core/dprint.h"
#include "core/route.h"
#include "core/action.h"
#include "core/fmsg.h"
#include "core/kemi.h"
#include "core/receive.h"
#include "core/mem/mem.h"
#include "core/mem/shm_mem.h"
#include "core/cfg/cfg_struct.h"
#include "core/pt.h"

#include "dmk_state.h"
#include "dmk_worker.h"

/* how long past its own timeout an async request may wait for libdmbridge's outcome before
 * the module resumes the transaction with a timeout itself (a safety net, never expected) */
#define DMK_ASYNC_GRACE_MS 2000
/* requests / answers taken per wake-up before looking at the other queue */
#define DMK_BATCH 64

/*
 * The hand-over to one module worker, in shared memory. It replaced a pipe that carried each
 * job pointer: a write(2) in the SIP worker and a wake-up plus two read(2)s in the module
 * worker per call (BENCHMARKS "Session 13: the async call's cost in Kamailio"). Now SIP
 * workers push jobs on `head` (a lock-free stack: compare-and-swap, newest first) and ring
 * the worker's pipe only when `sleeping` is set; the worker takes the whole list with one
 * exchange and runs it oldest first. Sleeping is the doorbell pattern of libdmbridge's own
 * queues: the worker sets `sleeping` and then looks at `head` again before poll(2), the
 * producer pushes and then looks at `sleeping` (both sequentially consistent), so a job
 * pushed while the worker goes to sleep is seen by one of the two.
 */
typedef struct dmk_jobq
{
	dmg_job *head; /* pushed jobs, newest first, linked by job->next */
	int queued;	   /* jobs on the list, bounded by the async_queue parameter */
	int sleeping;  /* the worker is in (or about to enter) poll: ring the pipe */
	/* the worker's dmb_reply_address(): where a SIP worker's direct request names the outcome
	 * to go; 0 while the worker is detached or its bridge has no reply-to */
	uint64_t reply_addr;
	char pad[64 - sizeof(dmg_job *) - 2 * sizeof(int) - sizeof(uint64_t)]; /* a cache line */
} dmk_jobq;

/* A direct request whose outcome can no longer come: its bridge went away (or this worker lost
 * it). The SIP worker put it in its own attachment's ring, which this process cannot see, so
 * whether the bridge had taken it is not known here: it may have reached the peer, and the
 * peer may have acted on it (an Ro CCR-Initial reserved credit). So -2, "no answer", as the
 * library says for its own requests the bridge took (RFC 6733 §5.5.4: the sender cannot know
 * whether the peer processed it), never -3 "not sent", which invites a retry that may act
 * twice. (For the requests this worker sends itself, async_direct 0, the library knows and
 * says -3 for those the bridge never took.) */
#define DMK_BRIDGE_LOST \
	"no answer: the bridge went away before answering; the request may have reached the peer"

static dmg_pending _dmk_pending;
/* doorbell pipes of the module workers: _dmk_pipes[2*i] read, [2*i+1] write */
static int *_dmk_pipes = NULL;
static int _dmk_npipes = 0;
static dmk_jobq *_dmk_queues = NULL; /* shared memory, one per module worker */
/* Shared memory: bumped by a module worker before it publishes a changed reply address (its
 * bridge went away, or a new bridge took it). A SIP worker that only sends direct requests
 * never waits on its attachment's descriptor, so its library does not see a dead bridge's
 * EOF by itself: it would push the next request into the dead bridge's ring ("sent", and no
 * outcome ever). When the epoch moved since its last look, the SIP worker has its library
 * service the connection first (EOF -> detach -> re-attach), once per change. */
static unsigned int *_dmk_epoch = NULL;
static unsigned int _dmk_epoch_seen = 0; /* per SIP worker */

int dmk_worker_init(int n)
{
	if(n <= 0)
		return 0;
	_dmk_pipes = pkg_malloc(2 * n * sizeof(int));
	if(_dmk_pipes == NULL) {
		PKG_MEM_ERROR;
		return -1;
	}
	_dmk_queues = shm_malloc(n * sizeof(dmk_jobq));
	if(_dmk_queues == NULL) {
		SHM_MEM_ERROR;
		return -1;
	}
	memset(_dmk_queues, 0, n * sizeof(dmk_jobq));
	_dmk_epoch = shm_mallocxz(sizeof(*_dmk_epoch));
	if(_dmk_epoch == NULL) {
		SHM_MEM_ERROR;
		return -1;
	}
	for(int i = 0; i < n; i++) {
		if(pipe(&_dmk_pipes[2 * i]) < 0) {
			LM_ERR("pipe: %s\n", strerror(errno));
			return -1;
		}
		/* the worker drains its end without blocking; a SIP worker never waits on a full
		 * pipe (bytes in it already wake the worker) */
		fcntl(_dmk_pipes[2 * i], F_SETFL, O_NONBLOCK);
		fcntl(_dmk_pipes[2 * i + 1], F_SETFL, O_NONBLOCK);
	}
	_dmk_npipes = n;
	return 0;
}

/* a worker that is awake takes a job without a wake-up, if few jobs wait for it already (a
 * worker blocked in a long event route must not collect them all); else one that sleeps (it
 * is not blocked); else the next in turn */
#define DMK_AWAKE_MAX 16
static int dmk_pick_worker(unsigned int turn)
{
	int i, j, n = _dmk_npipes;

	for(i = 0; i < n; i++) {
		j = (int)((turn + i) % (unsigned int)n);
		if(!__atomic_load_n(&_dmk_queues[j].sleeping, __ATOMIC_RELAXED)
				&& __atomic_load_n(&_dmk_queues[j].queued, __ATOMIC_RELAXED) < DMK_AWAKE_MAX)
			return j;
	}
	for(i = 0; i < n; i++) {
		j = (int)((turn + i) % (unsigned int)n);
		if(__atomic_load_n(&_dmk_queues[j].sleeping, __ATOMIC_RELAXED))
			return j;
	}
	return (int)(turn % (unsigned int)n);
}

/* A place on a module worker's list (an awake worker first, see dmk_pick_worker): its index,
 * with its `queued` counting the job, or -1 when every list is full. */
static int dmk_reserve(void)
{
	static unsigned int rr = 0;
	static uint64_t logged = 0;
	int widx, tries;
	dmk_jobq *q;

	if(_dmk_npipes <= 0)
		return -1;
	widx = dmk_pick_worker(rr++);
	/* a full list is a stuck worker (stopped, or blocked in an event route): the next
	 * workers in turn before refusing, so one stuck worker does not fail calls others can
	 * take */
	for(tries = 1;; tries++) {
		q = &_dmk_queues[widx];
		/* beyond async_queue the worker is stuck: the call fails instead of queueing */
		if(__atomic_add_fetch(&q->queued, 1, __ATOMIC_RELAXED) <= dmk_cfg.async_queue)
			return widx;
		__atomic_sub_fetch(&q->queued, 1, __ATOMIC_RELAXED);
		if(tries >= _dmk_npipes) {
			/* once per 5 s per process: every call fails the same way meanwhile (each
			 * counted in not_sent) */
			uint64_t now = dmg_now_ms();
			if(now - logged >= 5000) {
				LM_ERR("cannot hand the job over: each of the %d dmbridge workers has %d jobs"
					   " waiting (stuck?)\n",
						_dmk_npipes, dmk_cfg.async_queue);
				logged = now;
			}
			return -1;
		}
		widx = (widx + 1) % _dmk_npipes;
	}
}

static void dmk_push(dmk_jobq *q, dmg_job *job)
{
	dmg_job *head;

	/* job->next is the pending table's link in the worker; until then it links the list */
	head = __atomic_load_n(&q->head, __ATOMIC_RELAXED);
	do {
		job->next = head;
	} while(!__atomic_compare_exchange_n(
			&q->head, &head, job, 1, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
}

/* wakes worker `widx` if it said it sleeps: one producer rings per sleep */
static void dmk_ring(dmk_jobq *q, int widx)
{
	char bell = 0;

	/* EAGAIN: the pipe is full of rings already */
	if(__atomic_load_n(&q->sleeping, __ATOMIC_SEQ_CST)
			&& __atomic_exchange_n(&q->sleeping, 0, __ATOMIC_SEQ_CST)
			&& write(_dmk_pipes[2 * widx + 1], &bell, 1) < 0 && errno != EAGAIN)
		/* the job is queued: the worker takes it at its next poll timeout (<= 1 s) */
		LM_ERR("cannot wake worker %d: %s\n", widx + 1, strerror(errno));
}

/* A token for a direct request: DMG_DIRECT_BIT (libdmbridge's own handles never reach it),
 * this process's number and a counter, so tokens of different SIP workers never collide in a
 * module worker's pending table. */
static uint64_t dmk_direct_token(void)
{
	static uint64_t n = 0;

	n = (n + 1) & ((1ull << 40) - 1);
	return DMG_DIRECT_BIT | ((uint64_t)(unsigned int)process_no << 40) | n;
}

/* Has libdmbridge look at this process's connection to the bridge (see _dmk_epoch): taking
 * answers services it, and a SIP worker has none of its own to take (its sync requests are
 * waited for in dm_send_request). */
static void dmk_service_attachment(void)
{
	dmb_answer *a = NULL;

	while(dmb_next_answer(dmk_w(), &a) == 1 && a != NULL) {
		LM_WARN("unexpected answer %llu in a SIP worker, dropped\n",
				(unsigned long long)dmb_answer_handle(a));
		dmb_answer_free(a);
		a = NULL;
	}
}

/* The direct path: the job goes on worker `widx`'s list first, without its doorbell (the
 * outcome wakes it), so it is there before its outcome can arrive; then this process sends.
 * A failed send claims the transaction (unless the worker claimed it already: it found the
 * worker's address stale and resumes it with not-sent); the worker frees what it holds when
 * it sees the claim. */
static int dmk_send_direct(dmg_job *job, int widx, uint64_t addr)
{
	dmk_jobq *q = &_dmk_queues[widx];
	int rc;

	job->handle = dmk_direct_token();
	job->reply_to = addr;
	job->refs = 2; /* this process until the send returns, and the worker */
	dmk_push(q, job);
	/* the SIP worker checked the JSON (dmk_send_async): the library need not look again */
	rc = dmb_send_request_reply_to_checked(dmk_w(), addr, job->handle, job->app_id,
			job->cmd_code, job->json, job->json_len, job->timeout_ms);
	if(rc == DMB_OK) {
		DMG_INC(dmk_stats(), async_direct);
		if(dmg_job_release(job))
			shm_free(job); /* the worker resumed it already */
		return 0;
	}
	LM_ERR("dm_send_request_async(%u, %u): %s\n", job->app_id, job->cmd_code,
			dmb_last_error());
	if(!dmg_job_claim(job, DMG_CLAIM_SENDER)) {
		/* the worker took the transaction first (its address went stale) and resumes it */
		if(dmg_job_release(job))
			shm_free(job);
		return 0;
	}
	dmk_outcome_set(DMG_RC_NOT_SENT, 0, NULL, dmb_last_error());
	if(dmg_job_release(job))
		shm_free(job);
	return DMG_RC_NOT_SENT;
}

int dmk_worker_submit(dmg_job *job)
{
	int widx;
	dmk_jobq *q;
	uint64_t addr = 0;

	widx = dmk_reserve();
	if(widx < 0) {
		shm_free(job);
		return -1;
	}
	q = &_dmk_queues[widx];
	/* a module worker (a resume route calls again) hands over, as before */
	if(dmk_cfg.async_direct && dmk_worker_index() < 0)
		addr = __atomic_load_n(&q->reply_addr, __ATOMIC_ACQUIRE);
	if(addr != 0 && dmk_attach("sip") == 0) {
		unsigned int e = __atomic_load_n(_dmk_epoch, __ATOMIC_ACQUIRE);
		if(e != _dmk_epoch_seen) {
			dmk_service_attachment();
			_dmk_epoch_seen = e;
		}
		return dmk_send_direct(job, widx, addr);
	}
	dmk_push(q, job);
	dmk_ring(q, widx);
	LM_DBG("job handed to worker %d\n", widx + 1);
	return 0;
}

/* An answer carrying only a Result-Code; libdmbridge sets the E bit for 3xxx (RFC 6733 §7.1.3) */
static void dmk_reply_code(dmb_request *r, int code, const char *why)
{
	const char *sid = dmb_request_sess_id(r);

	LM_WARN("%s (session %s): %s, answering %d\n", dmb_request_event(r), sid ? sid : "-", why,
			code);
	if(dmb_reply_result(dmk_w(), dmb_request_token(r), (uint32_t)code) < 0)
		LM_ERR("answering %d failed: %s\n", code, dmb_last_error());
	else
		DMG_INC(dmk_stats(), auto_replies);
}

/* Event route index by event name, looked up once per name: Kamailio's route tables do not
 * change after start-up, and route_lookup hashed the name on every request (~320
 * instructions of the worker's ~11k per request, issue 15 item 2). Names that do not fit, or
 * beyond the first DMK_RT_CACHE, are looked up each time as before. */
#define DMK_RT_CACHE 16
static struct
{
	char ev[48];
	int ri;
} _dmk_rt_cache[DMK_RT_CACHE];
static int _dmk_rt_cached = 0;

/* the event route of `rname` ("dmbridge:E_DM_<X>"), or the catch-all's; -1 if neither */
static int dmk_event_route(const char *ev, const char *rname, int valid)
{
	int i, ri;

	if(valid) {
		for(i = 0; i < _dmk_rt_cached; i++)
			if(strcmp(_dmk_rt_cache[i].ev, ev) == 0)
				return _dmk_rt_cache[i].ri;
	}
	ri = route_lookup(&event_rt, (char *)rname);
	if(ri < 0 || event_rt.rlist[ri] == NULL)
		ri = route_lookup(&event_rt, DMK_RT_PREFIX DMG_EVENT_CATCHALL);
	if(ri < 0 || event_rt.rlist[ri] == NULL)
		return -1;
	if(valid && _dmk_rt_cached < DMK_RT_CACHE && strlen(ev) < sizeof(_dmk_rt_cache[0].ev)) {
		strcpy(_dmk_rt_cache[_dmk_rt_cached].ev, ev);
		_dmk_rt_cache[_dmk_rt_cached].ri = ri;
		_dmk_rt_cached++;
	}
	return ri;
}

static void dmk_run_request(dmb_request *r)
{
	const char *ev = dmb_request_event(r);
	char rname[128];
	sr_kemi_eng_t *keng = NULL;
	struct run_act_ctx ctx;
	sip_msg_t *fmsg;
	int ri = -1, backup_rt, valid = 1;

	DMG_INC(dmk_stats(), requests_in);
	/* rname = "dmbridge:E_DM_<X>"; the event name (for KEMI) starts after the prefix */
	memcpy(rname, DMK_RT_PREFIX, DMK_RT_PREFIX_LEN);
	if(ev == NULL
			|| dmg_event_route_name(
					   ev, rname + DMK_RT_PREFIX_LEN, sizeof(rname) - DMK_RT_PREFIX_LEN)
					   < 0) {
		LM_ERR("request with an invalid event name [%s]\n", ev ? ev : "(null)");
		snprintf(rname + DMK_RT_PREFIX_LEN, sizeof(rname) - DMK_RT_PREFIX_LEN, "%s",
				DMG_EVENT_CATCHALL);
		valid = 0;
	}
	if(dmk_cfg.event_callback.len > 0) {
		keng = sr_kemi_eng_get();
		if(keng == NULL) {
			dmk_reply_code(r, 3001, "event_callback set but no KEMI engine");
			dmb_request_free(r);
			return;
		}
	} else {
		ri = dmk_event_route(ev, rname, valid);
		if(ri < 0) {
			/* the bridge only routes declared commands here; this is a race with a change */
			dmk_reply_code(r, 3001, "no event route");
			dmb_request_free(r);
			return;
		}
	}

	dmk_request_begin(r);
	backup_rt = get_route_type();
	set_route_type(EVENT_ROUTE);
	fmsg = faked_msg_next();
	if(keng != NULL) {
		str evname = {rname + DMK_RT_PREFIX_LEN, (int)strlen(rname + DMK_RT_PREFIX_LEN)};
		if(sr_kemi_route(keng, fmsg, EVENT_ROUTE, &dmk_cfg.event_callback, &evname) < 0)
			LM_ERR("error running KEMI callback for %s\n", rname);
	} else {
		init_run_actions_ctx(&ctx);
		run_top_route(event_rt.rlist[ri], fmsg, &ctx);
	}
	set_route_type(backup_rt);
	ksr_msg_env_reset();

	if(!dmk_request_replied() && dmk_cfg.auto_reply_code > 0)
		dmk_reply_code(r, dmk_cfg.auto_reply_code, "script sent no reply");
	dmk_request_end();
	/* a request still unanswered (auto_reply_code 0, or the answer failed) is answered 5012
	 * by libdmbridge when it is freed: exactly one answer either way */
	dmb_request_free(r);
}

/* this worker is done with the job: freed unless the SIP worker still holds it (a direct
 * request whose send has not returned there yet) */
static void dmk_job_done(dmg_job *job)
{
	if(dmg_job_release(job))
		shm_free(job);
}

/* resumes the job's transaction with its outcome: the answer's (`ans`), or the module's own
 * (`rc` and `error`) when there is none */
static void dmk_async_resume(dmg_job *job, int rc, const dmb_answer *ans, const char *error)
{
	sr_kemi_eng_t *keng;
	int ri, ret;

	dmg_count_outcome(dmk_stats(), rc);
	if(ans != NULL)
		dmk_outcome_from_answer(rc, ans);
	else
		dmk_outcome_set(rc, 0, NULL, error);
	keng = sr_kemi_eng_get();
	if(keng == NULL) {
		ri = route_lookup(&main_rt, job->route);
		if(ri < 0 || main_rt.rlist[ri] == NULL) {
			/* checked when suspending; only an empty route block gets here */
			LM_ERR("route [%s] is empty, transaction [%u:%u] resumes without it\n", job->route,
					job->tindex, job->tlabel);
			ret = dmk_tm()->t_cancel_suspend(job->tindex, job->tlabel);
		} else {
			ret = dmk_tm()->t_continue(job->tindex, job->tlabel, main_rt.rlist[ri]);
		}
	} else {
		str cb = {job->route, (int)strlen(job->route)};
		str ev = str_init("dmbridge:async");
		ret = dmk_tm()->t_continue_cb(job->tindex, job->tlabel, &cb, &ev);
	}
	/* tm's t_continue (modules/tm/t_suspend.c, 5.6): < 0 when the transaction is gone or no
	 * longer suspended; 1 when it resumed nothing because tm ended the transaction first: a
	 * CANCEL, or the suspend's blind branch timed out (fr_timer's 408) and the transaction is
	 * not yet on its wait timer. 0: the route ran. */
	if(ret < 0 || ret == 1) {
		LM_ERR("cannot resume transaction [%u:%u] (%s)\n", job->tindex, job->tlabel,
				ret < 0 ? "already gone?" : "tm ended it: cancelled or timed out");
		DMG_INC(dmk_stats(), async_abandoned);
	}
	dmk_job_done(job);
}

/* Whether tm ended the job's transaction since it was suspended: freed it, or sent a final
 * reply it had not sent then (its fr_timer's 408 while the job waited for a blocked worker, a
 * CANCEL's 487). t_lookup_ident() sets T and takes a reference: both are given back. */
static int dmk_transaction_ended(const dmg_job *job)
{
	tm_api_t *tm = dmk_tm();
	tm_cell_t *backup = tm->t_gett(), *t = NULL;
	int backup_branch = tm->t_gett_branch();
	int ended = 1;

	if(tm->t_lookup_ident(&t, job->tindex, job->tlabel) > 0 && t != NULL) {
		ended = t->uas.status >= 200 && job->sip_status < 200;
		tm->unref_cell(t);
	}
	tm->t_sett(backup, backup_branch);
	return ended;
}

/* A direct job this worker ends without an answer (its address stale, the safety net): it
 * resumes the transaction only if the SIP worker's send did not fail first. */
static void dmk_direct_end(dmg_job *job, int rc, const char *error)
{
	if(job->reply_to == 0 || dmg_job_claim(job, DMG_CLAIM_EXECUTOR))
		dmk_async_resume(job, rc, NULL, error);
	else
		dmk_job_done(job); /* the send failed: the SIP worker cancelled the suspend */
}

static void dmk_async_start(dmg_job *job, uint64_t now)
{
	uint64_t handle = 0;

	if(dmk_attach("dm") < 0) {
		dmk_async_resume(job, DMG_RC_NOT_SENT, NULL, "bridge not attached");
		return;
	}
	/* the SIP worker checked the JSON (dmk_send_async): the library need not look again */
	if(dmb_send_request_async_checked(dmk_w(), job->app_id, job->cmd_code, job->json,
			   job->json_len, job->timeout_ms, &handle)
			< 0) {
		const char *err = dmb_last_error();
		LM_ERR("dm_send_request_async(%u, %u): %s\n", job->app_id, job->cmd_code, err);
		dmk_async_resume(job, DMG_RC_NOT_SENT, NULL, err);
		return;
	}
	job->handle = handle;
	job->deadline_ms = now + job->timeout_ms + DMK_ASYNC_GRACE_MS;
	dmg_pending_put(&_dmk_pending, job);
}

/* empties the doorbell pipe (its bytes carry nothing) */
static void dmk_drain_pipe(int fd)
{
	char buf[64];
	ssize_t n;

	do {
		n = read(fd, buf, sizeof(buf));
	} while(n == (ssize_t)sizeof(buf) || (n < 0 && errno == EINTR));
}

/* Takes every job handed to this worker and sends them, oldest first.
 *
 * A job waited at most since this worker's previous take. When that is long (the worker was
 * blocked in an event route, or stopped), tm may have ended the job's transaction meanwhile:
 * its fr_timer answered the SIP client 408. Such a job is not sent (a Diameter request whose
 * answer nobody would see; a charging request for a call that failed): it is counted
 * (async_abandoned) and logged once per take. A worker that turns often pays nothing for
 * the check; a fr_timer shorter than DMK_STALE_MS is not seen before sending, only when the
 * outcome cannot resume the transaction (also counted). */
#define DMK_STALE_MS 100
static void dmk_take_jobs(dmk_jobq *q, uint64_t now)
{
	uint64_t addr = __atomic_load_n(&q->reply_addr, __ATOMIC_RELAXED);
	static uint64_t last = 0;
	dmg_job *list, *fifo = NULL, *next;
	uint64_t waited = now - last;
	int n = 0, ended = 0;

	last = now;
	if(__atomic_load_n(&q->head, __ATOMIC_RELAXED) == NULL)
		return;
	list = __atomic_exchange_n(&q->head, NULL, __ATOMIC_ACQUIRE);
	for(; list != NULL; list = next, n++) {
		next = list->next;
		list->next = fifo;
		fifo = list;
	}
	__atomic_sub_fetch(&q->queued, n, __ATOMIC_RELAXED);
	for(; fifo != NULL; fifo = next) {
		next = fifo->next;
		fifo->next = NULL;
		if(fifo->reply_to != 0) {
			/* a direct request, on the wire already (or its send failed) */
			if(dmg_job_claimed(fifo) == DMG_CLAIM_SENDER) {
				dmk_job_done(fifo);
			} else if(fifo->reply_to != addr) {
				/* sent to this worker's address from before it lost its bridge: no outcome
				 * will come (DMK_BRIDGE_LOST: why -2) */
				dmk_direct_end(fifo, DMG_RC_TIMEOUT, DMK_BRIDGE_LOST);
			} else {
				fifo->deadline_ms = now + fifo->timeout_ms + DMK_ASYNC_GRACE_MS;
				dmg_pending_put(&_dmk_pending, fifo);
			}
			continue;
		}
		if(waited >= DMK_STALE_MS && dmk_transaction_ended(fifo)) {
			DMG_INC(dmk_stats(), async_abandoned);
			shm_free(fifo);
			ended++;
			continue;
		}
		dmk_async_start(fifo, now);
	}
	if(ended > 0)
		LM_WARN("%d of %d async requests not sent: their transactions ended (tm's fr_timer)"
				" while they waited up to %llu ms for this worker\n",
				ended, n, (unsigned long long)waited);
}

static void dmk_async_finish(dmk_jobq *q, dmb_answer *a)
{
	uint64_t h = dmb_answer_handle(a);
	dmg_job *job = dmg_pending_take(&_dmk_pending, h);

	if(job == NULL && (h & DMG_DIRECT_BIT) != 0) {
		/* a direct request's job may have been pushed after this turn's take */
		dmk_take_jobs(q, dmg_now_ms());
		job = dmg_pending_take(&_dmk_pending, h);
	}
	if(job == NULL) {
		LM_WARN("answer for unknown async handle %llu (given up on already?)\n",
				(unsigned long long)h);
		dmb_answer_free(a);
		return;
	}
	if(job->reply_to == 0 || dmg_job_claim(job, DMG_CLAIM_EXECUTOR))
		dmk_async_resume(job, dmg_rc_from_class(dmb_answer_class(a)), a, NULL);
	else
		dmk_job_done(job); /* not expected: an outcome for a send that failed */
	dmb_answer_free(a);
}

/* Publishes this worker's reply address when it changed. An address that changed (the bridge
 * went away, or a new one took the worker) ends the direct requests sent to the old one at
 * once, as "no answer" (DMK_BRIDGE_LOST says why not "not sent"): their outcomes can no
 * longer come here (libdmbridge ends its own requests at the same moment, and says nothing
 * about these). */
static void dmk_publish_address(dmk_jobq *q, dmb_worker *w)
{
	/* async_direct 0: none published, the SIP workers hand every request over */
	uint64_t addr = w != NULL && dmk_cfg.async_direct ? dmb_reply_address(w) : 0;
	dmg_job *job;
	int n = 0;

	if(addr == __atomic_load_n(&q->reply_addr, __ATOMIC_RELAXED))
		return;
	/* before the address: a SIP worker that sees the new address sees the new epoch */
	__atomic_add_fetch(_dmk_epoch, 1, __ATOMIC_RELEASE);
	__atomic_store_n(&q->reply_addr, addr, __ATOMIC_RELEASE);
	while((job = dmg_pending_take_masked(&_dmk_pending, DMG_DIRECT_BIT)) != NULL) {
		dmk_direct_end(job, DMG_RC_TIMEOUT, DMK_BRIDGE_LOST);
		n++;
	}
	if(n > 0)
		LM_WARN("%d direct async requests ended: %s\n", n, DMK_BRIDGE_LOST);
	LM_INFO("reply address %s\n", addr != 0 ? "published: SIP workers send async requests"
												: "withdrawn: this worker sends them");
}

static void dmk_log_queue_error(const char *what)
{
	static uint64_t last = 0;
	uint64_t now = dmg_now_ms();

	if(now - last >= 5000) {
		LM_ERR("%s: %s\n", what, dmb_last_error());
		last = now;
	}
}

void dmk_worker_main(int idx)
{
	int rfd = _dmk_pipes[2 * idx];
	dmk_jobq *q = &_dmk_queues[idx];
	dmb_worker *w;
	dmb_request *req;
	dmb_answer *ans;
	dmg_job *job;

	dmk_state_set_worker(idx);
	dmg_pending_init(&_dmk_pending);
	LM_INFO("dmbridge worker %d started\n", idx + 1);

	/* set when a batch limit was hit: the queues may hold more, and the library rings the
	 * doorbell only after a take found a queue empty (the worker said it sleeps), so the
	 * next poll must not wait */
	int more = 0;

	for(;;) {
		struct pollfd pfd[2];
		int nfd = 1, timeout, n;
		uint64_t now;

		cfg_update();
		if(dmk_w() == NULL && dmk_attach("dm") == 0) {
			__atomic_fetch_add(&dmk_stats()->workers_attached, 1, __ATOMIC_RELAXED);
			__atomic_fetch_add(&dmk_stats()->workers_serving, 1, __ATOMIC_RELAXED);
		}
		w = dmk_w();

		pfd[0].fd = rfd;
		pfd[0].events = POLLIN;
		pfd[0].revents = 0;
		timeout = 1000;
		if(w != NULL) {
			pfd[1].fd = dmb_fd(w);
			pfd[1].events = POLLIN;
			pfd[1].revents = 0;
			if(pfd[1].fd >= 0)
				nfd = 2;
		} else if(dmk_cfg.reconnect_interval < timeout) {
			timeout = dmk_cfg.reconnect_interval;
		}
		if(_dmk_pending.count > 0 && timeout > 250)
			timeout = 250;
		if(more) {
			timeout = 0;
		} else {
			/* going to sleep: say so, then look again (see dmk_jobq) */
			__atomic_store_n(&q->sleeping, 1, __ATOMIC_SEQ_CST);
			if(__atomic_load_n(&q->head, __ATOMIC_SEQ_CST) != NULL) {
				__atomic_store_n(&q->sleeping, 0, __ATOMIC_RELAXED);
				timeout = 0;
			}
		}
		more = 0;

		n = poll(pfd, nfd, timeout);
		__atomic_store_n(&q->sleeping, 0, __ATOMIC_SEQ_CST);
		if(n < 0 && errno != EINTR) {
			LM_ERR("poll: %s\n", strerror(errno));
			usleep(100000);
			continue;
		}
		if(n > 0 && (pfd[0].revents & POLLIN))
			dmk_drain_pipe(rfd);
		now = dmg_now_ms();
		dmk_take_jobs(q, now);

		/* always look at the queues: a missed wake-up costs at most one poll timeout */
		if(w != NULL) {
			int i;
			for(i = 0; i < DMK_BATCH; i++) {
				int rc = dmb_next_request(w, &req);
				if(rc < 0)
					dmk_log_queue_error("taking a request");
				if(rc <= 0 || req == NULL)
					break;
				dmk_run_request(req);
			}
			if(i == DMK_BATCH)
				more = 1;
			for(i = 0; i < DMK_BATCH; i++) {
				int rc = dmb_next_answer(w, &ans);
				if(rc < 0)
					dmk_log_queue_error("taking an answer");
				if(rc <= 0 || ans == NULL)
					break;
				dmk_async_finish(q, ans);
			}
			if(i == DMK_BATCH)
				more = 1;
		}
		dmk_publish_address(q, w);
		if(_dmk_pending.count > 0) {
			while((job = dmg_pending_take_expired(&_dmk_pending, now)) != NULL) {
				if(job->reply_to != 0 && dmg_job_claimed(job) == DMG_CLAIM_SENDER) {
					/* its send failed after this worker took it: nothing to resume */
					dmk_job_done(job);
					continue;
				}
				LM_ERR("async request %llu: no outcome from libdmbridge %d ms after its"
					   " timeout, resuming with a timeout\n",
						(unsigned long long)job->handle, DMK_ASYNC_GRACE_MS);
				dmk_direct_end(job, DMG_RC_TIMEOUT, "no answer (module safety net)");
			}
		}
	}
}
