/*
 * dmbridge OpenSIPS module: the MI commands (dm_status, dm_peers). Above dmo_state.
 */
/* first: io_wait.h must include <fcntl.h> itself, with F_SETSIG enabled */
#include "../../reactor_defs.h"

#include <string.h>

#include "../../dprint.h"
#include "../../mi/mi.h"

#include "dmo_state.h"
#include "dmo_mi.h"

/* --- MI ---------------------------------------------------------------------------------- */

mi_response_t *mi_dm_status(const mi_params_t *params, struct mi_handler *async_hdl)
{
	mi_response_t *resp;
	mi_item_t *obj, *arr, *cnt;
	char *bridge = NULL;
	dmg_stats s;
	size_t nhandled = 0;
	const char **handled = dmo_handled(&nhandled);

	resp = init_mi_result_object(&obj);
	if(resp == NULL)
		return NULL;
	memcpy(&s, dmo_stats(), sizeof(s)); /* counters only: a torn read is harmless */

	if(dmo_attach("mi") == 0 && dmb_is_attached(dmo_w()) == 1
			&& dmb_status_json(dmo_w(), &bridge) >= 0 && bridge != NULL) {
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
	if(add_mi_string(obj, MI_SSTR("socket"), dmo_cfg.bridge_socket, strlen(dmo_cfg.bridge_socket)) < 0
			|| add_mi_string(obj, MI_SSTR("library"), (char *)dmb_version(),
					   strlen(dmb_version()))
					   < 0
			|| add_mi_number(obj, MI_SSTR("request_timeout_ms"), dmo_cfg.request_timeout) < 0
			|| add_mi_number(obj, MI_SSTR("workers_attached"),
					   __atomic_load_n(&dmo_stats()->workers_attached, __ATOMIC_RELAXED))
					   < 0
			|| add_mi_number(obj, MI_SSTR("workers_serving"),
					   __atomic_load_n(&dmo_stats()->workers_serving, __ATOMIC_RELAXED))
					   < 0)
		goto error;
	arr = add_mi_array(obj, MI_SSTR("handled"));
	if(arr == NULL)
		goto error;
	for(size_t i = 0; i < nhandled; i++)
		if(add_mi_string(arr, 0, 0, (char *)handled[i], strlen(handled[i])) < 0)
			goto error;
	cnt = add_mi_object(obj, MI_SSTR("counters"));
	if(cnt == NULL || add_mi_number(cnt, MI_SSTR("requests_in"), (double)s.requests_in) < 0
			|| add_mi_number(cnt, MI_SSTR("replies"), (double)s.replies) < 0
			|| add_mi_number(cnt, MI_SSTR("replies_refused"), (double)s.replies_refused) < 0
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

/* dm_peers: the "peers" list of the bridge's status document, as it is. */
mi_response_t *mi_dm_peers(const mi_params_t *params, struct mi_handler *async_hdl)
{
	mi_response_t *resp;
	mi_item_t *obj, *doc, *b, *peers = NULL;
	char *bridge = NULL;

	if(dmo_attach("mi") < 0 || dmb_is_attached(dmo_w()) != 1
			|| dmb_status_json(dmo_w(), &bridge) < 0 || bridge == NULL) {
		const char *err = dmb_last_error();
		return init_mi_error_extra(503, MI_SSTR("bridge not attached"), (char *)err,
				strlen(err));
	}
	/* MI replies are built with the system allocator (see mi_dm_status) */
	_init_mi_sys_mem_hooks();
	doc = cJSON_Parse(bridge);
	/* the library's document: the worker's state, the bridge's own status under "bridge" */
	b = doc != NULL ? cJSON_GetObjectItem(doc, "bridge") : NULL;
	if(b != NULL)
		peers = cJSON_DetachItemFromObject(b, "peers");
	if(doc != NULL)
		cJSON_Delete(doc);
	_init_mi_pkg_mem_hooks();
	dmb_string_free(bridge);
	if(peers == NULL)
		return init_mi_error(
				500, MI_SSTR("the bridge did not answer the status request (or has no peers)"));
	resp = init_mi_result_object(&obj);
	if(resp == NULL) {
		_init_mi_sys_mem_hooks();
		cJSON_Delete(peers);
		_init_mi_pkg_mem_hooks();
		return NULL;
	}
	_init_mi_sys_mem_hooks();
	cJSON_AddItemToObject(obj, "peers", peers);
	_init_mi_pkg_mem_hooks();
	return resp;
}
