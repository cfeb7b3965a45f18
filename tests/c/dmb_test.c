/*
 * dmb_test: exercises every function of libdmbridge through include/dmbridge.h,
 * from several forked worker processes, against dmshm's reference bridge.
 *
 * Driven by cabi/tests/c_program.rs (cargo test -p dmbridge-cabi), which runs
 * the bridge and this program under valgrind, and talks to it over
 * stdin/stdout for the phases it cannot do itself:
 *   we print "RESTART"  -> the driver stops the bridge, answers "STOPPED"
 *   we print "START"    -> the driver starts a new bridge, answers "STARTED"
 *   we print "HELD <pid> <token>..." and "KILLED <pid>" -> the driver checks the
 *   bridge reported exactly those tokens outstanding for that worker.
 * Last line: "PASS <checks>" or "FAIL <failures> of <checks>"; exit status 0
 * only if every check passed in this process and in every child.
 *
 * usage: dmb_test <control socket> <control socket of a bridge with another wire version>
 */
#define _GNU_SOURCE
#include "dmbridge.h"

#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Thread-exit destructors registered with glibc (Rust's thread_local! with a Drop type, C++
 * thread_local): exit() runs them (__call_tls_dtors). OpenSIPS's children call exit(0) from
 * their SIGTERM handler, so such a destructor would run inside a signal handler, where a free()
 * that lands on the malloc lock the interrupted code holds hangs the process. The library must
 * register none: this program's definition comes first in the symbol search (the library's
 * reference to it is weak and dynamic), counts, and forwards to glibc's. */
static int tls_dtors;
int __cxa_thread_atexit_impl(void (*dtor)(void *), void *obj, void *dso);
int __cxa_thread_atexit_impl(void (*dtor)(void *), void *obj, void *dso)
{
    int (*real)(void (*)(void *), void *, void *);
    *(void **)&real = dlsym(RTLD_NEXT, "__cxa_thread_atexit_impl");
    tls_dtors++;
    return real ? real(dtor, obj, dso) : 0;
}

/* Command codes the reference bridge treats specially (dmshm::reference). */
#define CMD_NEVER_ANSWER 999001u
#define CMD_ERROR_ANSWER 999002u
#define CMD_INJECT 999003u

#define CHILDREN 3
#define INJECT_PPR 30
#define VICTIM_HOLDS 3

static int checks, failures;
static const char *who = "parent";

#define CHECK(cond, ...)                                                              \
    do {                                                                              \
        checks++;                                                                     \
        if (!(cond)) {                                                                \
            failures++;                                                               \
            fprintf(stderr, "FAIL [%s] %s:%d: %s: ", who, __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                             \
            fprintf(stderr, " (dmb_last_error: %s)\n", dmb_last_error());             \
        }                                                                             \
    } while (0)

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int readable(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int rc;
    do {
        rc = poll(&p, 1, ms);
    } while (rc < 0 && errno == EINTR);
    return rc > 0;
}

static void line_out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void line_out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

/* Waits for the driver's answer line. */
static void expect_line(const char *want)
{
    char buf[128];
    if (!fgets(buf, sizeof buf, stdin)) {
        fprintf(stderr, "[%s] driver closed stdin waiting for %s\n", who, want);
        exit(3);
    }
    buf[strcspn(buf, "\n")] = 0;
    CHECK(strcmp(buf, want) == 0, "driver said %s, expected %s", buf, want);
}

static int contains(const char *hay, const char *needle)
{
    return hay && strstr(hay, needle) != NULL;
}

/* Synchronous request; returns the class and copies the answer's JSON. */
static int send_sync(dmb_worker *w, uint32_t cmd, const char *json, uint32_t timeout_ms, char *json_out,
                     size_t out_len, uint32_t *result_code)
{
    dmb_answer *a = NULL;
    int cls = dmb_send_request(w, 4, cmd, json, json ? strlen(json) : 0, timeout_ms, &a);
    CHECK(a != NULL, "sync send must always return an answer object");
    if (a) {
        size_t n = 0;
        const char *j = dmb_answer_avps_json(a, &n);
        CHECK(strlen(j) == n, "answer JSON length");
        CHECK(dmb_answer_class(a) == cls, "class in answer %d vs return %d", dmb_answer_class(a), cls);
        if (json_out)
            snprintf(json_out, out_len, "%s", j);
        if (result_code)
            *result_code = dmb_answer_result_code(a);
        if (cls == DMB_ANSWER_NOT_SENT || cls == DMB_ANSWER_TIMEOUT)
            CHECK(dmb_answer_error(a)[0] != 0, "a -2/-3 answer says why");
        dmb_answer_free(a);
    }
    return cls;
}

/* Asks the reference bridge to dispatch n incoming requests for `name`. */
static void inject(dmb_worker *w, const char *name, unsigned n, unsigned expect_sent)
{
    char json[128], got[256], want[64];
    snprintf(json, sizeof json, "[{\"inject\":\"%s\"}]", name);
    dmb_answer *a = NULL;
    int cls = dmb_send_request(w, n, CMD_INJECT, json, strlen(json), 5000, &a);
    snprintf(got, sizeof got, "%s", a ? dmb_answer_avps_json(a, NULL) : "");
    dmb_answer_free(a);
    snprintf(want, sizeof want, "{\"sent\":%u}", expect_sent);
    CHECK(cls == DMB_ANSWER_SUCCESS && contains(got, want), "inject %s: class %d, %s", name, cls, got);
}

/* Replies to every queued request with JSON echoing its Session-Id. */
static int serve(dmb_worker *w)
{
    int served = 0;
    dmb_request *r;
    int rc;
    while ((rc = dmb_next_request(w, &r)) == 1) {
        size_t n = 0;
        const char *avps = dmb_request_avps_json(r, &n);
        CHECK(strcmp(dmb_request_event(r), "E_DM_PPR") == 0, "event %s", dmb_request_event(r));
        CHECK(dmb_request_app_id(r) == 16777216 && dmb_request_cmd_code(r) == 305, "app/cmd");
        CHECK(strcmp(dmb_request_cmd_name(r), "Push-Profile-Request") == 0, "cmd_name");
        CHECK(strcmp(dmb_request_origin_host(r), "hss.reference") == 0, "origin_host");
        CHECK(strcmp(dmb_request_origin_realm(r), "reference") == 0, "origin_realm");
        CHECK(n == strlen(avps) && contains(avps, dmb_request_sess_id(r)), "avps %s", avps);
        char reply[256];
        int len = snprintf(reply, sizeof reply, "[{\"Session-Id\":\"%s\"},{\"Result-Code\":2001}]",
                           dmb_request_sess_id(r));
        CHECK(dmb_reply(w, dmb_request_token(r), reply, (size_t)len, 0) == DMB_OK, "reply");
        dmb_request_free(r);
        served++;
    }
    CHECK(rc == 0, "next_request rc %d", rc);
    return served;
}

/* A worker process: serves PPR until its control pipe closes, and uses the
 * request functions concurrently with the others. */
static int child_main(int idx, const char *sock, int ctl_fd, int ready_fd)
{
    static char name[32];
    snprintf(name, sizeof name, "child %d", idx);
    who = name;
    checks = failures = 0; /* counted per process */
    dmb_worker *w = NULL;
    CHECK(dmb_attach(sock, name, &w) == 1, "attach");
    if (!w)
        return 1;
    const char *names[] = {"PPR", "E_DM_PPR"};
    CHECK(dmb_set_handled(w, names, 2) == DMB_OK, "set_handled");

    /* Requests of its own, concurrently with the other workers. */
    char got[256];
    for (int i = 0; i < 20; i++) {
        char json[64];
        snprintf(json, sizeof json, "[{\"child\":%d},{\"i\":%d}]", idx, i);
        uint32_t rcode = 0;
        int cls = send_sync(w, 272, json, 5000, got, sizeof got, &rcode);
        CHECK(cls == DMB_ANSWER_SUCCESS && rcode == 2001 && strcmp(got, json) == 0, "echo %d: %d %s", i, cls, got);
    }
    uint64_t handles[10];
    for (int i = 0; i < 10; i++)
        CHECK(dmb_send_request_async(w, 4, 272, "[]", 2, 5000, &handles[i]) == DMB_OK, "async %d", i);
    char one = 'r';
    CHECK(write(ready_fd, &one, 1) == 1, "ready");
    close(ready_fd);

    int answers = 0, served = 0;
    long deadline = now_ms() + 60000;
    for (;;) {
        struct pollfd p[2] = {{.fd = dmb_fd(w), .events = POLLIN}, {.fd = ctl_fd, .events = POLLIN}};
        if (poll(p, 2, 1000) < 0 && errno != EINTR)
            break;
        served += serve(w);
        dmb_answer *a;
        while (dmb_next_answer(w, &a) == 1) {
            CHECK(dmb_answer_class(a) == DMB_ANSWER_SUCCESS, "async class %d", dmb_answer_class(a));
            CHECK(dmb_answer_handle(a) == handles[answers], "async answers in order");
            answers++;
            dmb_answer_free(a);
        }
        if (p[1].revents)
            break; /* the parent closed the pipe: finish */
        if (now_ms() > deadline) {
            CHECK(0, "parent never told us to finish");
            break;
        }
    }
    served += serve(w);
    CHECK(answers == 10, "async answers %d", answers);
    char *status = NULL;
    CHECK(dmb_status_json(w, &status) == DMB_OK && contains(status, "\"attached\":true"), "status %s", status);
    dmb_string_free(status);
    line_out("SERVED %d %d\n", (int)getpid(), served);
    dmb_detach(w);
    return failures ? 1 : 0;
}

/* Holds VICTIM_HOLDS requests without replying (and without freeing them:
 * freeing answers them), reports their tokens, and waits to be killed. */
static void victim_main(const char *sock, int ready_fd, dmb_worker *inherited)
{
    who = "victim";
    checks = failures = 0;
    /* The parent's worker, inherited through fork, must refuse to work. */
    uint64_t h;
    int rc = dmb_send_request_async(inherited, 4, 272, "[]", 2, 1000, &h);
    char verdict = (rc == DMB_E_INVAL && contains(dmb_last_error(), "after fork")) ? 'r' : 'x';
    dmb_worker *w = NULL;
    if (dmb_attach(sock, "victim", &w) != 1)
        _exit(1);
    const char *names[] = {"KIL"};
    if (dmb_set_handled(w, names, 1) != DMB_OK)
        _exit(1);
    char c = verdict;
    if (write(ready_fd, &c, 1) != 1)
        _exit(1);
    uint64_t tokens[VICTIM_HOLDS];
    int held = 0;
    long deadline = now_ms() + 30000;
    while (held < VICTIM_HOLDS && now_ms() < deadline) {
        readable(dmb_fd(w), 200);
        dmb_request *r;
        while (held < VICTIM_HOLDS && dmb_next_request(w, &r) == 1) {
            tokens[held++] = dmb_request_token(r); /* r is kept: killed holding it */
        }
    }
    char line[256];
    int off = snprintf(line, sizeof line, "HELD %d", (int)getpid());
    for (int i = 0; i < held; i++)
        off += snprintf(line + off, sizeof line - (size_t)off, " %" PRIu64, tokens[i]);
    line_out("%s\n", line);
    if (write(ready_fd, &c, 1) != 1)
        _exit(1);
    for (;;)
        pause(); /* killed with SIGKILL: never replies, never detaches */
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s <control socket> <control socket of a mismatched bridge>\n", argv[0]);
        return 2;
    }
    const char *sock = argv[1], *bad_sock = argv[2];
    signal(SIGPIPE, SIG_IGN);

    /* Version and errors before anything is attached. */
    CHECK(strncmp(dmb_version(), "libdmbridge ", 12) == 0, "version %s", dmb_version());
    dmb_worker *w = (dmb_worker *)1;
    CHECK(dmb_attach(NULL, "x", &w) == DMB_E_INVAL && w == NULL, "NULL path");
    CHECK(contains(dmb_last_error(), "NULL"), "last error names the NULL argument");
    CHECK(dmb_attach(sock, "x", NULL) == DMB_E_INVAL, "NULL out");
    CHECK(dmb_fd(NULL) < 0 && dmb_is_attached(NULL) < 0, "NULL worker");
    CHECK(dmb_set_handled(NULL, NULL, 0) == DMB_E_INVAL, "NULL worker");
    dmb_detach(NULL);
    dmb_request_free(NULL);
    dmb_answer_free(NULL);
    dmb_string_free(NULL);
    CHECK(dmb_request_token(NULL) == 0 && dmb_answer_class(NULL) == DMB_ANSWER_NOT_SENT, "NULL accessors");

    /* A bridge that is not there: the worker exists, detached, failing fast. */
    dmb_worker *lonely = NULL;
    CHECK(dmb_attach("/nonexistent/dmbridge.sock", "lonely", &lonely) == 0 && lonely, "attach to nothing");
    CHECK(contains(dmb_last_error(), "/nonexistent/dmbridge.sock"), "error names the path");
    CHECK(dmb_is_attached(lonely) == 0, "detached");
    CHECK(send_sync(lonely, 272, "[]", 10000, NULL, 0, NULL) == DMB_ANSWER_NOT_SENT, "detached send");
    uint64_t h;
    CHECK(dmb_send_request_async(lonely, 4, 272, "[]", 2, 1000, &h) == DMB_E_DETACHED, "detached async");
    dmb_detach(lonely);

    /* A bridge of another wire version: refused with a clear message. */
    w = (dmb_worker *)1;
    int rc = dmb_attach(bad_sock, "mismatch", &w);
    CHECK(rc == DMB_E_VERSION && w == NULL, "version mismatch refused: rc %d", rc);
    CHECK(contains(dmb_last_error(), "version mismatch") && contains(dmb_last_error(), "99"),
          "clear version message");

    /* Fork the workers before attaching ourselves (they attach after fork). */
    pid_t kids[CHILDREN];
    int ctl[CHILDREN], ready[2];
    CHECK(pipe(ready) == 0, "pipe");
    for (int i = 0; i < CHILDREN; i++) {
        int p[2];
        CHECK(pipe(p) == 0, "pipe");
        fflush(stdout);
        kids[i] = fork();
        if (kids[i] == 0) {
            close(p[1]);
            close(ready[0]);
            for (int j = 0; j < i; j++)
                close(ctl[j]);
            exit(child_main(i, sock, p[0], ready[1]));
        }
        close(p[0]);
        ctl[i] = p[1];
    }
    close(ready[1]);

    CHECK(dmb_attach(sock, "parent", &w) == 1 && w, "attach");
    int fd = dmb_fd(w);
    CHECK(fd >= 0, "fd");
    const char *mine[] = {"RTR"};
    CHECK(dmb_set_handled(w, mine, 1) == DMB_OK, "set_handled");
    const char *bad_names[] = {"has space"};
    CHECK(dmb_set_handled(w, bad_names, 1) == DMB_E_INVAL, "bad name refused");

    for (int i = 0; i < CHILDREN; i++) {
        char c;
        CHECK(read(ready[0], &c, 1) == 1, "child %d ready", i);
    }

    /* Incoming requests to the children (they reply), and to us. */
    inject(w, "PPR", INJECT_PPR, INJECT_PPR);
    inject(w, "RTR", 3, 3);
    inject(w, "ASR", 1, 0); /* nobody serves ASR */
    CHECK(readable(fd, 5000), "requests make the fd readable");
    dmb_request *r[3] = {0};
    for (int i = 0; i < 3; i++) {
        CHECK(dmb_next_request(w, &r[i]) == 1 && r[i], "RTR %d", i);
        if (r[i])
            CHECK(strcmp(dmb_request_event(r[i]), "E_DM_RTR") == 0, "event %s", dmb_request_event(r[i]));
    }
    dmb_request *none = (dmb_request *)1;
    CHECK(dmb_next_request(w, &none) == 0 && none == NULL, "no more requests");
    if (r[0] && r[1] && r[2]) {
        uint64_t t0 = dmb_request_token(r[0]);
        /* Not JSON: refused, nothing answered, the token stays open for a corrected reply. */
        CHECK(dmb_reply(w, t0, "[{", 2, 0) == DMB_E_INVAL, "bad JSON reply refused");
        CHECK(contains(dmb_last_error(), "not valid JSON") && contains(dmb_last_error(), "not sent"),
              "says why: %s", dmb_last_error());
        /* An AVP array that would make an invalid answer: refused, and the bridge answers 5012. */
        const char *two = "[{\"Result-Code\":2001},{\"Result-Code\":2001}]";
        CHECK(dmb_reply(w, t0, two, strlen(two), 0) == DMB_E_INVAL, "two Result-Codes refused");
        CHECK(contains(dmb_last_error(), "2 Result-Code AVPs"), "says why: %s", dmb_last_error());
        CHECK(dmb_reply(w, t0, "[]", 2, 0) == DMB_E_INVAL, "token answered once (bridge got a 5012)");
        CHECK(contains(dmb_last_error(), "unknown token"), "says why");
        /* is_error (the E bit) with a 5xxx: RFC 6733 §7.2 gives E to 3xxx only; refused, and
         * the bridge answers the peer 5012 (the token is spent). */
        CHECK(dmb_reply(w, dmb_request_token(r[1]), "[{\"Result-Code\":5012}]", 22, 1) == DMB_E_INVAL,
              "E bit with 5012 refused");
        CHECK(contains(dmb_last_error(), "3xxx") && contains(dmb_last_error(), "7.2"), "says why: %s",
              dmb_last_error());
        CHECK(dmb_reply(w, dmb_request_token(r[1]), "[{\"Result-Code\":3002}]", 22, 1) == DMB_E_INVAL
                  && contains(dmb_last_error(), "unknown token"),
              "E bit refusal answered it (token spent)");
        CHECK(dmb_reply(w, dmb_request_token(r[2]), NULL, 0, 0) == DMB_OK, "empty reply");
        CHECK(dmb_reply(w, 12345, "[]", 2, 0) == DMB_E_INVAL, "unknown token");
        char *big = malloc(70000);
        memset(big, ' ', 70000);
        big[0] = '[';
        big[69999] = ']';
        CHECK(dmb_reply(w, 999, big, 70000, 0) == DMB_E_INVAL, "unknown token checked first");
        free(big);
    }
    for (int i = 0; i < 3; i++)
        dmb_request_free(r[i]);

    /* Exactly one answer: a request freed without a reply is answered by the library (the
     * bridge answers the peer 5012); its token is then spent. */
    inject(w, "RTR", 1, 1);
    CHECK(readable(fd, 5000), "the unanswered request arrives");
    dmb_request *lost = NULL;
    CHECK(dmb_next_request(w, &lost) == 1 && lost, "unanswered RTR taken");
    if (lost) {
        uint64_t t = dmb_request_token(lost);
        dmb_request_free(lost);
        CHECK(dmb_reply(w, t, "[]", 2, 0) == DMB_E_INVAL && contains(dmb_last_error(), "unknown token"),
              "freeing it answered it (token spent)");
    }

    /* Answers carrying only a Result-Code: the library sets the E bit exactly for 3xxx
     * (RFC 6733 §7.1.3); the driver counts one more error reply (3001) and one more plain
     * reply without the Session-Id (5012). */
    inject(w, "RTR", 2, 2);
    CHECK(readable(fd, 5000), "the Result-Code-only requests arrive");
    dmb_request *rr[2] = {0};
    for (int i = 0; i < 2; i++)
        CHECK(dmb_next_request(w, &rr[i]) == 1 && rr[i], "RTR for dmb_reply_result %d", i);
    if (rr[0] && rr[1]) {
        CHECK(dmb_reply_result(w, dmb_request_token(rr[0]), 3001) == DMB_OK, "3001 answer");
        CHECK(dmb_reply_result(w, dmb_request_token(rr[1]), 5012) == DMB_OK, "5012 answer");
        CHECK(dmb_reply_result(w, dmb_request_token(rr[1]), 5012) == DMB_E_INVAL
                  && contains(dmb_last_error(), "unknown token"),
              "a token answered by dmb_reply_result is spent");
    }
    CHECK(dmb_reply_result(NULL, 1, 5012) == DMB_E_INVAL, "NULL worker refused");
    for (int i = 0; i < 2; i++)
        dmb_request_free(rr[i]);

    /* Synchronous requests: each class. */
    char got[512];
    uint32_t rcode = 0;
    CHECK(send_sync(w, 272, "[{\"Session-Id\":\"p;1\"}]", 5000, got, sizeof got, &rcode) == DMB_ANSWER_SUCCESS &&
              rcode == 2001 && strcmp(got, "[{\"Session-Id\":\"p;1\"}]") == 0,
          "echo %s", got);
    CHECK(send_sync(w, CMD_ERROR_ANSWER, "[]", 5000, NULL, 0, &rcode) == DMB_ANSWER_ERROR && rcode == 5012,
          "error answer");
    CHECK(send_sync(w, CMD_NEVER_ANSWER, "[]", 100, NULL, 0, NULL) == DMB_ANSWER_TIMEOUT, "timeout");
    CHECK(send_sync(w, 272, "[{\"a\":", 5000, NULL, 0, NULL) == DMB_ANSWER_NOT_SENT, "bad JSON");
    CHECK(contains(dmb_last_error(), "not valid JSON"), "bad JSON says why");
    CHECK(send_sync(w, 272, "{\"a\":1}", 5000, NULL, 0, NULL) == DMB_ANSWER_NOT_SENT, "not an array");
    CHECK(dmb_send_request(w, 4, 272, "[]", 2, 1000, NULL) == DMB_ANSWER_SUCCESS, "NULL out is allowed");
    {
        size_t n = 100000;
        char *big = malloc(n + 1);
        memset(big, ' ', n);
        big[0] = '[';
        big[n - 1] = ']';
        big[n] = 0;
        CHECK(send_sync(w, 272, big, 5000, NULL, 0, NULL) == DMB_ANSWER_NOT_SENT, "oversized");
        CHECK(contains(dmb_last_error(), "exceeds the configured maximum"), "oversized says why");
        CHECK(dmb_send_request_async(w, 4, 272, big, n, 1000, &h) == DMB_E_TOO_BIG, "oversized async");
        free(big);
    }
    CHECK(dmb_send_request_async(w, 4, 272, "nope", 4, 1000, &h) == DMB_E_INVAL, "bad JSON async");
    CHECK(dmb_send_request_async(w, 4, 272, "[]", 2, 1000, NULL) == DMB_E_INVAL, "NULL handle");
    CHECK(dmb_send_request_async_checked(w, 4, 272, "[]", 2, 1000, NULL) == DMB_E_INVAL,
          "NULL handle (checked)");
    {
        /* a caller that checked its JSON: the library passes it on as it is (the reference
         * bridge echoes it; the real one converts it and answers -3 to what it cannot) */
        dmb_answer *ca = NULL;
        CHECK(dmb_send_request_checked(w, 4, 272, "nope", 4, 5000, &ca) == DMB_ANSWER_SUCCESS &&
                  ca && strcmp(dmb_answer_avps_json(ca, NULL), "nope") == 0,
              "sync, checked by the caller, not parsed again");
        dmb_answer_free(ca);
        ca = NULL;
        CHECK(dmb_send_request_checked(w, 4, 272, " ", 1, 5000, &ca) == DMB_ANSWER_SUCCESS &&
                  ca && strcmp(dmb_answer_avps_json(ca, NULL), "[]") == 0,
              "sync, checked by the caller: blank is []");
        dmb_answer_free(ca);
        CHECK(dmb_send_request_checked(w, 4, 272, NULL, 3, 5000, NULL) == DMB_ANSWER_NOT_SENT,
              "NULL json with a length (checked)");
    }

    /* Asynchronous requests: completions through the fd, including a timeout. */
    uint64_t hs[8];
    for (int i = 0; i < 5; i++)
        CHECK(dmb_send_request_async(w, 4, 272, "[{\"n\":1}]", 9, 5000, &hs[i]) == DMB_OK, "async");
    /* JSON the caller checked goes as it is (the reference bridge echoes it) */
    CHECK(dmb_send_request_async_checked(w, 4, 272, "[{\"n\":1}]", 9, 5000, &hs[5]) == DMB_OK,
          "async, checked by the caller");
    /* and is not looked at: the library does not refuse it (the real bridge answers -3) */
    CHECK(dmb_send_request_async_checked(w, 4, 272, "nope", 4, 5000, &hs[6]) == DMB_OK,
          "async, checked by the caller, not parsed again");
    CHECK(dmb_send_request_async(w, 4, CMD_NEVER_ANSWER, "[]", 2, 150, &hs[7]) == DMB_OK, "async timeout");
    int seen = 0, timeouts = 0;
    long deadline = now_ms() + 10000;
    while (seen < 8 && now_ms() < deadline) {
        readable(fd, 500);
        dmb_answer *a;
        while (dmb_next_answer(w, &a) == 1) {
            if (dmb_answer_handle(a) == hs[7]) {
                timeouts++;
                CHECK(dmb_answer_class(a) == DMB_ANSWER_TIMEOUT, "async timeout class %d", dmb_answer_class(a));
            } else if (dmb_answer_handle(a) == hs[6]) {
                CHECK(strcmp(dmb_answer_avps_json(a, NULL), "nope") == 0, "unchecked JSON echoed");
            } else {
                CHECK(dmb_answer_class(a) == DMB_ANSWER_SUCCESS && dmb_answer_result_code(a) == 2001, "async ok");
                CHECK(strcmp(dmb_answer_avps_json(a, NULL), "[{\"n\":1}]") == 0, "async json");
            }
            seen++;
            dmb_answer_free(a);
        }
    }
    CHECK(seen == 8 && timeouts == 1, "async outcomes %d, timeouts %d", seen, timeouts);
    dmb_answer *a = (dmb_answer *)1;
    CHECK(dmb_next_answer(w, &a) == 0 && a == NULL, "no more answers");

    char *status = NULL;
    CHECK(dmb_status_json(w, &status) == DMB_OK && contains(status, "\"attached\":true") &&
              contains(status, "\"handles\":[\"RTR\"]"),
          "status %s", status);
    dmb_string_free(status);
    CHECK(dmb_status_json(w, NULL) == DMB_E_INVAL, "NULL out");

    /* Let the children finish and collect their verdicts. */
    for (int i = 0; i < CHILDREN; i++)
        close(ctl[i]);
    for (int i = 0; i < CHILDREN; i++) {
        int st = 0;
        CHECK(waitpid(kids[i], &st, 0) == kids[i], "waitpid");
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d status %d (valgrind errors exit 99)", i, st);
    }
    close(ready[0]);

    /* Bridge restart: a request in flight ends at once, calls fail fast, then
     * the worker re-attaches by itself. The request was taken by the bridge
     * (the echo sent after it is answered, and the ring is in order), so it
     * may have reached the peer: "no answer" (-2), not "not sent" (-3). */
    CHECK(dmb_send_request_async(w, 4, CMD_NEVER_ANSWER, "[]", 2, 60000, &h) == DMB_OK, "in flight");
    CHECK(send_sync(w, 272, "[]", 5000, NULL, 0, NULL) == DMB_ANSWER_SUCCESS, "taken in order");
    line_out("RESTART\n");
    expect_line("STOPPED");
    CHECK(readable(fd, 5000), "bridge EOF makes the fd readable");
    CHECK(dmb_next_answer(w, &a) == 1 && a, "in-flight request completes");
    if (a) {
        CHECK(dmb_answer_handle(a) == h && dmb_answer_class(a) == DMB_ANSWER_TIMEOUT, "class %d",
              dmb_answer_class(a));
        CHECK(contains(dmb_answer_error(a), "bridge went away after taking the request"), "%s",
              dmb_answer_error(a));
        dmb_answer_free(a);
    }
    CHECK(dmb_is_attached(w) == 0, "detached");
    long t0 = now_ms();
    CHECK(send_sync(w, 272, "[]", 30000, NULL, 0, NULL) == DMB_ANSWER_NOT_SENT, "fails while down");
    CHECK(now_ms() - t0 < 10000, "fails fast, not after the 30 s timeout (%ld ms)", now_ms() - t0);
    CHECK(dmb_send_request_async(w, 4, 272, "[]", 2, 1000, &h) == DMB_E_DETACHED, "async while down");
    CHECK(dmb_reply(w, 1, "[]", 2, 0) == DMB_E_DETACHED, "reply while down");
    line_out("START\n");
    expect_line("STARTED");
    deadline = now_ms() + 10000;
    while (dmb_is_attached(w) != 1 && now_ms() < deadline) {
        if (readable(fd, 200)) { /* the library's retry timer fires */
            dmb_request *x;
            while (dmb_next_request(w, &x) == 1)
                dmb_request_free(x);
            while (dmb_next_answer(w, &a) == 1)
                dmb_answer_free(a);
        }
    }
    CHECK(dmb_is_attached(w) == 1, "re-attached by itself");
    CHECK(dmb_fd(w) == fd, "same fd across the restart");
    CHECK(send_sync(w, 272, "[1]", 5000, got, sizeof got, NULL) == DMB_ANSWER_SUCCESS, "works again");
    inject(w, "RTR", 1, 1); /* handled names were re-declared */
    dmb_request *x = NULL;
    CHECK(readable(fd, 5000) && dmb_next_request(w, &x) == 1, "RTR after restart");
    if (x)
        CHECK(dmb_reply(w, dmb_request_token(x), "[]", 2, 0) == DMB_OK, "reply after restart");
    dmb_request_free(x);

    /* kill -9 of a worker holding requests. */
    int vp[2];
    CHECK(pipe(vp) == 0, "pipe");
    fflush(stdout);
    pid_t victim = fork();
    if (victim == 0) {
        close(vp[0]);
        victim_main(sock, vp[1], w);
    }
    close(vp[1]);
    char c;
    CHECK(read(vp[0], &c, 1) == 1 && c == 'r', "victim ready; inherited worker refused after fork");
    inject(w, "KIL", VICTIM_HOLDS, VICTIM_HOLDS);
    CHECK(read(vp[0], &c, 1) == 1, "victim holds its requests");
    close(vp[0]);
    kill(victim, SIGKILL);
    int st;
    CHECK(waitpid(victim, &st, 0) == victim && WIFSIGNALED(st), "victim killed");
    line_out("KILLED %d\n", (int)victim);

    dmb_detach(w);
    CHECK(tls_dtors == 0, "no thread-exit destructor registered (%d): exit() from a signal"
          " handler (OpenSIPS's SIGTERM) must not run library code", tls_dtors);
    if (failures)
        line_out("FAIL %d of %d\n", failures, checks);
    else
        line_out("PASS %d\n", checks);
    return failures ? 1 : 0;
}
