/*
 * dmbridge Kamailio module: the module processes (dmk_worker.c). Above dmk_state; used by the
 * script functions (hand-over of async requests) and by the exports (start).
 */
#ifndef DMK_WORKER_H
#define DMK_WORKER_H

#include "dmglue.h"

/* mod_init: the job lists (shared memory) and doorbell pipes of the n module workers */
int dmk_worker_init(int n);
/* a SIP worker hands an async request to a module worker (an awake one first, else in turn);
 * -1 when it cannot (its list full: a stuck worker), the caller keeps the job */
int dmk_worker_hand_over(dmg_job *job);
/* the module worker's loop: never returns */
void dmk_worker_main(int idx);

#endif
