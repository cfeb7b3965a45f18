/*
 * dmbridge Kamailio module: the RPC commands (dmk_rpc.c), exported by dmbridge_mod.c.
 */
#ifndef DMK_RPC_H
#define DMK_RPC_H

#include "core/rpc.h"

void dmk_rpc_status(rpc_t *rpc, void *ctx);
void dmk_rpc_peers(rpc_t *rpc, void *ctx);

#endif
