/*
 * dmb_echo_worker: the benchmark's SIP-server stand-in. Forks N worker
 * processes; each attaches to the bridge through libdmbridge (include/dmbridge.h),
 * declares the events it serves, waits on dmb_fd() with poll(2) and answers every
 * request the way a script's event route that "echoes a value" would: it takes
 * one AVP's value from the request's avps_json and replies
 * [{"<key>":<value>}] (Result-Code 2001 is added by the bridge).
 *
 * usage: dmb_echo_worker CONTROL_SOCKET [WORKERS [EVENT [KEY]]]
 *   WORKERS  worker processes (default 2)
 *   EVENT    event served (default "*", every command)
 *   KEY      the AVP key whose value is echoed (default test_app's Test-AVP,
 *            "345678:999999"); a request without it gets an empty reply.
 * Runs until SIGTERM/SIGINT; each worker prints its count on exit.
 * Built by tests/c/build-echo-worker.sh.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dmbridge.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

/* The JSON value following "KEY": in json (a number, string, or balanced
 * object/array), as [start, end). Returns 0 when absent. Good enough for the
 * bridge's own JSON (no whitespace, escaped quotes only inside strings). */
static int find_value(const char *json, const char *key, const char **start, const char **end) {
    char pat[256];
    int n = snprintf(pat, sizeof pat, "\"%s\":", key);
    if (n <= 0 || (size_t)n >= sizeof pat) return 0;
    const char *p = strstr(json, pat);
    if (!p) return 0;
    p += n;
    const char *q = p;
    int depth = 0, in_str = 0;
    for (; *q; q++) {
        char c = *q;
        if (in_str) {
            if (c == '\\' && q[1]) q++;
            else if (c == '"') in_str = 0;
            continue;
        }
        if (c == '"') in_str = 1;
        else if (c == '{' || c == '[') depth++;
        else if (c == '}' || c == ']') {
            if (depth == 0) break;
            depth--;
        } else if (c == ',' && depth == 0) break;
    }
    *start = p;
    *end = q;
    return q > p;
}

static int serve(const char *ctl, int idx, const char *event, const char *key) {
    char name[64];
    snprintf(name, sizeof name, "echo-worker-%d", idx);
    dmb_worker *w = NULL;
    int rc = dmb_attach(ctl, name, &w);
    if (rc < 0) {
        fprintf(stderr, "%s: attach: %s\n", name, dmb_last_error());
        return 1;
    }
    const char *names[1] = {event};
    if (dmb_set_handled(w, names, 1) != DMB_OK) {
        fprintf(stderr, "%s: set_handled: %s\n", name, dmb_last_error());
        dmb_detach(w);
        return 1;
    }
    unsigned long long served = 0, failed = 0;
    char *reply = NULL;
    size_t cap = 0;
    struct pollfd pfd = {.fd = dmb_fd(w), .events = POLLIN};
    while (!stop) {
        int n = poll(&pfd, 1, 500);
        if (n < 0 && errno != EINTR) break;
        dmb_request *r = NULL;
        while (dmb_next_request(w, &r) == 1) {
            const char *json = dmb_request_avps_json(r, NULL);
            const char *s, *e;
            size_t len = 2;
            if (find_value(json, key, &s, &e)) {
                size_t need = strlen(key) + (size_t)(e - s) + 16;
                if (need > cap) {
                    free(reply);
                    cap = need * 2;
                    reply = malloc(cap);
                    if (!reply) { cap = 0; failed++; dmb_request_free(r); continue; }
                }
                len = (size_t)snprintf(reply, cap, "[{\"%s\":%.*s}]", key, (int)(e - s), s);
            } else {
                if (cap < 3) { free(reply); cap = 64; reply = malloc(cap); }
                if (!reply) { cap = 0; failed++; dmb_request_free(r); continue; }
                memcpy(reply, "[]", 3);
            }
            if (dmb_reply(w, dmb_request_token(r), reply, len, 0) == DMB_OK) served++;
            else failed++;
            dmb_request_free(r);
        }
        dmb_answer *a = NULL;
        while (dmb_next_answer(w, &a) == 1) dmb_answer_free(a);
    }
    printf("%s: served %llu, failed %llu\n", name, served, failed);
    free(reply);
    dmb_detach(w);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CONTROL_SOCKET [WORKERS [EVENT [KEY]]]\n", argv[0]);
        return 2;
    }
    const char *ctl = argv[1];
    int workers = argc > 2 ? atoi(argv[2]) : 2;
    const char *event = argc > 3 ? argv[3] : "*";
    const char *key = argc > 4 ? argv[4] : "345678:999999";
    if (workers < 1 || workers > 64) workers = 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    pid_t pids[64];
    for (int i = 0; i < workers; i++) {
        pid_t p = fork();
        if (p == 0) return serve(ctl, i, event, key);
        pids[i] = p;
    }
    while (!stop) pause();
    for (int i = 0; i < workers; i++) kill(pids[i], SIGTERM);
    for (int i = 0; i < workers; i++) waitpid(pids[i], NULL, 0);
    return 0;
}
