/*
 * dmbridge OpenSIPS module: the MI commands (dmo_mi.c), exported by dmbridge.c.
 */
#ifndef DMO_MI_H
#define DMO_MI_H

#include "../../mi/mi.h"

mi_response_t *mi_dm_status(const mi_params_t *params, struct mi_handler *async_hdl);
mi_response_t *mi_dm_peers(const mi_params_t *params, struct mi_handler *async_hdl);

#endif
