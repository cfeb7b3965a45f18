/*
 * dmbridge Kamailio module: the RPC commands (dmbridge.status, dmbridge.peers). Above
 * dmk_state.
 */
#include <string.h>

#include "core/dprint.h"
#include "core/rpc.h"
#include "core/utils/srjson.h"

#include "dmk_state.h"
#include "dmk_rpc.h"

/* --- RPC ----------------------------------------------------------------------------------- */

void dmk_rpc_status(rpc_t *rpc, void *ctx)
{
	void *th;
	char *bridge = NULL;
	dmg_stats s;
	size_t nhandled = 0;

	if(rpc->add(ctx, "{", &th) < 0) {
		rpc->fault(ctx, 500, "Internal error creating the reply");
		return;
	}
	memcpy(&s, dmk_stats(), sizeof(s)); /* counters only: a torn read is harmless */
	dmk_handled(&nhandled);
	if(dmk_attach("rpc") == 0 && dmb_status_json(dmk_w(), &bridge) >= 0 && bridge != NULL) {
		rpc->struct_add(th, "ss", "attached", "yes", "bridge", bridge);
		dmb_string_free(bridge);
	} else {
		rpc->struct_add(th, "ss", "attached", "no", "error", dmb_last_error());
	}
	rpc->struct_add(th, "sdddd", "socket", dmk_cfg.bridge_socket, "workers", dmk_cfg.workers,
			"workers_attached", (int)__atomic_load_n(&dmk_stats()->workers_attached,
										__ATOMIC_RELAXED),
			"handled_commands", (int)nhandled, "request_timeout_ms", dmk_cfg.request_timeout);
	/* 'j' is unsigned long: 64 bits on the LP64 targets Kamailio runs on */
	rpc->struct_add(th, "jjjjjjjjjjjj", "requests_in", (unsigned long)s.requests_in, "replies",
			(unsigned long)s.replies, "replies_refused", (unsigned long)s.replies_refused,
			"auto_replies", (unsigned long)s.auto_replies,
			"sent_sync", (unsigned long)s.sent_sync, "sent_async",
			(unsigned long)s.sent_async, "answers_ok", (unsigned long)s.answers_ok,
			"answers_error", (unsigned long)s.answers_error, "timeouts",
			(unsigned long)s.timeouts, "not_sent", (unsigned long)s.not_sent,
			"async_abandoned", (unsigned long)s.async_abandoned, "async_direct",
			(unsigned long)s.async_direct);
}

/* One string member of a peer object ("" when absent). */
static char *dmk_json_str(srjson_doc_t *doc, srjson_t *o, const char *name)
{
	srjson_t *v = srjson_GetObjectItem(doc, o, name);
	return (v != NULL && v->type == srjson_String && v->valuestring) ? v->valuestring : "";
}

/* dmbridge.peers: one struct per peer of the bridge's status document (its "peers" list). */
void dmk_rpc_peers(rpc_t *rpc, void *ctx)
{
	char *bridge = NULL;
	srjson_doc_t doc;
	srjson_t *b, *peers, *p;

	if(dmk_attach("rpc") < 0 || dmb_status_json(dmk_w(), &bridge) < 0 || bridge == NULL) {
		rpc->fault(ctx, 503, "bridge not attached: %s", dmb_last_error());
		return;
	}
	srjson_InitDoc(&doc, NULL);
	doc.root = srjson_Parse(&doc, bridge);
	/* the library's document: the worker's state, the bridge's own status under "bridge" */
	b = doc.root ? srjson_GetObjectItem(&doc, doc.root, "bridge") : NULL;
	peers = (b != NULL && b->type == srjson_Object) ? srjson_GetObjectItem(&doc, b, "peers")
												 : NULL;
	if(peers == NULL || peers->type != srjson_Array) {
		rpc->fault(ctx, 500, "the bridge did not answer the status request (or has no peer list)");
		goto done;
	}
	for(p = peers->child; p != NULL; p = p->next) {
		void *th;
		srjson_t *apps = srjson_GetObjectItem(&doc, p, "apps");
		srjson_t *usable = srjson_GetObjectItem(&doc, p, "usable");
		srjson_t *pending = srjson_GetObjectItem(&doc, p, "pending");
		char *apps_s = apps ? srjson_PrintUnformatted(&doc, apps) : NULL;
		if(rpc->add(ctx, "{", &th) < 0) {
			if(apps_s)
				doc.free_fn(apps_s);
			break;
		}
		rpc->struct_add(th, "sssssd", "host", dmk_json_str(&doc, p, "host"), "state",
				dmk_json_str(&doc, p, "state"), "watchdog",
				dmk_json_str(&doc, p, "watchdog"), "usable",
				(usable && usable->type == srjson_True) ? "yes" : "no", "apps",
				apps_s ? apps_s : "[]", "pending",
				(pending && pending->type == srjson_Number) ? SRJSON_GET_INT(pending) : 0);
		if(apps_s)
			doc.free_fn(apps_s);
	}
done:
	srjson_DestroyDoc(&doc);
	dmb_string_free(bridge);
}
