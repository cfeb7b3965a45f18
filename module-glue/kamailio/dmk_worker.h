/*
 * dmbridge Kamailio module: the module processes (dmk_worker.c). Above dmk_state; used by the
 * script functions (hand-over of async requests) and by the exports (start).
 */
#ifndef DMK_WORKER_H
#define DMK_WORKER_H

#include "dmglue.h"

/* mod_init: the job lists (shared memory) and doorbell pipes of the n module workers */
int dmk_worker_init(int n);
/* A SIP worker gives a suspended transaction's async request to a module worker (an awake one
 * first, else in turn): with async_direct, when the worker has a reply address, it sends the
 * request itself and the worker gets the outcome; else the worker sends it. Takes the job in
 * every case. 0: the transaction resumes in the worker; -1: no worker takes it (every list
 * full: stuck workers), DMG_RC_NOT_SENT: the send failed ($dm(error) says why); on both the
 * caller cancels the suspend. */
int dmk_worker_submit(dmg_job *job);
/* the module worker's loop: never returns */
void dmk_worker_main(int idx);

#endif
