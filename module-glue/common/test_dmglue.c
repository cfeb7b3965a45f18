/*
 * Unit test of dmglue (no SIP server, no bridge). Built with AddressSanitizer/UBSan by
 * `make -C module-glue/common test`; prints "N passed, N failed" and exits non-zero on failure.
 */
#include "dmglue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int passed, failed;

#define CHECK(cond)                                                              \
	do {                                                                         \
		if(cond) {                                                               \
			passed++;                                                            \
		} else {                                                                 \
			failed++;                                                            \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
		}                                                                        \
	} while(0)

static void *t_alloc(size_t n, void *ctx)
{
	(*(int *)ctx)++;
	return malloc(n);
}

static void test_handled_names(void)
{
	const char *routes[] = {"E_DM_PPR", "htable:mod-init", "E_DM_RTR", NULL, "E_DM_",
			"E_DM_PPR", "E_DM_8388622", "E_DM_bad name", "E_DM_REQUEST", "xE_DM_UAR",
			"E_DM_REQUEST"};
	const char *out[8];
	size_t n = dmg_handled_names(routes, sizeof(routes) / sizeof(routes[0]), out, 8);
	CHECK(n == 4);
	CHECK(strcmp(out[0], "PPR") == 0);
	CHECK(strcmp(out[1], "RTR") == 0);
	CHECK(strcmp(out[2], "8388622") == 0);
	CHECK(strcmp(out[3], DMG_HANDLED_ALL) == 0);
	/* names point into the route strings, no copies */
	CHECK(out[0] == routes[0] + DMG_EVENT_PREFIX_LEN);

	/* a too small array: the count still tells the full size, nothing written past cap */
	const char *small[2] = {NULL, NULL};
	CHECK(dmg_handled_names(routes, sizeof(routes) / sizeof(routes[0]), small, 1) == 4);
	CHECK(strcmp(small[0], "PPR") == 0 && small[1] == NULL);

	const char *none[] = {"E_DM", "event_route", "e_dm_PPR"};
	CHECK(dmg_handled_names(none, 3, out, 8) == 0);
}

static void test_event_route_name(void)
{
	char buf[16];
	CHECK(dmg_event_route_name("PPR", buf, sizeof(buf)) == 8 && strcmp(buf, "E_DM_PPR") == 0);
	CHECK(dmg_event_route_name("E_DM_RTR", buf, sizeof(buf)) == 8
			&& strcmp(buf, "E_DM_RTR") == 0);
	CHECK(dmg_event_route_name("", buf, sizeof(buf)) == -1);
	CHECK(dmg_event_route_name("E_DM_", buf, sizeof(buf)) == -1);
	CHECK(dmg_event_route_name(NULL, buf, sizeof(buf)) == -1);
	CHECK(dmg_event_route_name("0123456789A", buf, sizeof(buf)) == -1); /* 16 + NUL */
	CHECK(dmg_event_route_name("0123456789", buf, sizeof(buf)) == 15);
}

static int json_ok(const char *s)
{
	size_t off;
	const char *msg;
	return dmg_json_check_avps(s, strlen(s), &off, &msg) == 0;
}

static size_t json_err_off(const char *s)
{
	size_t off = (size_t)-1;
	const char *msg = NULL;
	if(dmg_json_check_avps(s, strlen(s), &off, &msg) == 0)
		return (size_t)-1;
	return msg ? off : (size_t)-2;
}

static void test_json(void)
{
	CHECK(json_ok("[]"));
	CHECK(json_ok(" [ {\"Session-Id\":\"a;1\"}, {\"Result-Code\":2001} ] \n"));
	CHECK(json_ok("[{\"Subscription-Id\":[{\"Subscription-Id-Type\":0},"
				  "{\"Subscription-Id-Data\":\"123\"}]},{\"701:10415\":{\"hex\":\"00ff\"}},"
				  "{\"x\":-1.5e+3},{\"y\":[true,false,null]},{\"z\":\"\\u00e9\\n\\\"\"}]"));
	CHECK(json_ok("[{\"big\":18446744073709551615}]"));

	CHECK(json_err_off("") == 0);
	CHECK(json_err_off("{\"a\":1}") == 0);           /* must be an array */
	CHECK(json_err_off("[{\"a\":1}") == 8);          /* unterminated */
	CHECK(json_err_off("[{\"a\" 1}]") == 6);         /* ':' expected */
	CHECK(json_err_off("[{a:1}]") == 2);             /* key must be a string */
	CHECK(json_err_off("[1,]") == 3);                /* value expected */
	CHECK(json_err_off("[01]") == 2);                /* leading zero */
	CHECK(json_err_off("[\"a\tb\"]") == 3);          /* raw control char */
	CHECK(json_err_off("[\"\\x\"]") == 3);           /* bad escape */
	CHECK(json_err_off("[\"\\u12g4\"]") == 6);       /* bad \u */
	CHECK(json_err_off("[] x") == 3);                /* trailing */
	CHECK(json_err_off("[tru]") == 1);
	CHECK(json_err_off("[1.]") == 3);

	/* strings are scanned eight bytes at a time: a special byte at every position of a long
	 * string is found where it is, and UTF-8 (bytes >= 0x80) is plain text */
	for(int k = 0; k < 24; k++) {
		char str[64];
		memset(str, 0, sizeof(str));
		str[0] = '[';
		str[1] = '"';
		memset(str + 2, 'a', 30);
		str[32] = '"';
		str[33] = ']';
		str[2 + k] = '\t';
		CHECK(json_err_off(str) == (size_t)(2 + k));
		str[2 + k] = (char)0xc3;
		str[3 + k] = (char)0xa9;
		CHECK(json_ok(str));
		str[2 + k] = '\\';
		str[3 + k] = 'n';
		CHECK(json_ok(str));
		str[3 + k] = 'x';
		CHECK(json_err_off(str) == (size_t)(3 + k));
		str[2 + k] = '"';
		str[3 + k] = 'a';
		CHECK(json_err_off(str) == (size_t)(3 + k)); /* ']' or ',' expected after it */
	}
	CHECK(json_err_off("[\"aaaaaaaaaaaaaaaaaaaaa") == 23); /* unterminated, long */

	/* nesting is bounded: 64 levels pass, 65 fail, 100000 fail without recursion blow-up */
	char deep[200001];
	for(int i = 0; i < 64; i++) {
		deep[i] = '[';
		deep[64 + i] = ']';
	}
	deep[128] = '\0';
	CHECK(json_ok(deep));
	for(int i = 0; i < 100000; i++) {
		deep[i] = '[';
		deep[100000 + i] = ']';
	}
	deep[200000] = '\0';
	CHECK(json_err_off(deep) == 64);

	/* not NUL-terminated: the length bounds the scan */
	char buf[4] = {'[', ']', '[', ']'};
	size_t off;
	const char *msg;
	CHECK(dmg_json_check_avps(buf, 2, &off, &msg) == 0);
	CHECK(dmg_json_check_avps(NULL, 0, &off, &msg) == -1);
}

static void test_parse_u32(void)
{
	uint32_t v = 7;
	const char *why = NULL;
	CHECK(dmg_parse_u32("16777216", 8, &v, &why) == 0 && v == 16777216);
	CHECK(dmg_parse_u32("4294967295", 10, &v, &why) == 0 && v == 4294967295u);
	CHECK(dmg_parse_u32("0", 1, &v, &why) == 0 && v == 0);
	CHECK(dmg_parse_u32("4294967296", 10, &v, &why) == -1 && why != NULL);
	CHECK(dmg_parse_u32("99999999999999999999999", 23, &v, &why) == -1);
	CHECK(dmg_parse_u32("abc", 3, &v, &why) == -1);
	CHECK(dmg_parse_u32("-5", 2, &v, &why) == -1);
	CHECK(dmg_parse_u32(" 1", 2, &v, &why) == -1);
	CHECK(dmg_parse_u32("", 0, &v, &why) == -1);
	CHECK(dmg_parse_u32("12x", 2, &v, &why) == 0 && v == 12); /* only len bytes are read */
}

static void test_common_homes(void)
{
	dmg_stats st;
	memset(&st, 0, sizeof(st));
	dmg_count_outcome(&st, 1);
	dmg_count_outcome(&st, -1);
	dmg_count_outcome(&st, -2);
	dmg_count_outcome(&st, -3);
	dmg_count_outcome(&st, 7);
	CHECK(st.answers_ok == 1 && st.answers_error == 1 && st.timeouts == 1 && st.not_sent == 2);

	CHECK(dmg_param_id("sess_id", 7) == DMG_P_SESS_ID);
	CHECK(dmg_param_id("event", 5) == DMG_P_EVENT);
	CHECK(dmg_param_id("events", 6) == 0 && dmg_param_id("even", 4) == 0);
	CHECK(strcmp(dmg_param_name(DMG_P_AVPS_JSON), "avps_json") == 0);
	CHECK(dmg_param_name(0) == NULL && dmg_param_name(DMG_P_COUNT + 1) == NULL);
	CHECK(dmg_param_is_int(DMG_P_APP_ID) && !dmg_param_is_int(DMG_P_CMD_NAME));
	for(int i = 1; i <= DMG_P_COUNT; i++)
		CHECK(dmg_param_id(dmg_param_name(i), strlen(dmg_param_name(i))) == i);

	dmg_attach_pacer p = {0, 1000, 0};
	CHECK(dmg_attach_due(&p, 5));
	CHECK(dmg_attach_failed(&p, 5, "connecting: No such file") == 1); /* first: logged */
	CHECK(!dmg_attach_due(&p, 1004) && dmg_attach_due(&p, 1005));
	CHECK(dmg_attach_failed(&p, 1005, "connecting: No such file") == 0); /* same run: quiet */
	CHECK(dmg_attach_failed(&p, 2005, "refused by the bridge: no free slot; retrying") == 1);
	CHECK(dmg_attach_failed(&p, 3005, "the bridge refused this process (x); next attach") == 0);
	CHECK(dmg_attach_ok(&p) == 1 && dmg_attach_ok(&p) == 0 && dmg_attach_due(&p, 0));
}

static void test_rc(void)
{
	CHECK(dmg_rc_from_class(1) == 1);
	CHECK(dmg_peer_us(0) == 0);
	CHECK(dmg_peer_us(1) == 1);
	CHECK(dmg_peer_us(1000) == 1);
	CHECK(dmg_peer_us(1001) == 2);
	CHECK(dmg_peer_us(812345) == 813);
	CHECK(dmg_peer_us(UINT64_MAX) == INT32_MAX);
	CHECK(dmg_rc_from_class(-1) == -1);
	CHECK(dmg_rc_from_class(-2) == -2);
	CHECK(dmg_rc_from_class(-3) == -3);
	CHECK(dmg_rc_from_class(0) == -3);
	CHECK(dmg_rc_from_class(42) == -3);
}

/* the direct path: one claim wins, the last of two releases frees; the sweep of a lost
 * attachment takes only the direct jobs, in deadline order */
static void test_direct_jobs(void)
{
	int allocs = 0;
	dmg_job *j = dmg_job_new(t_alloc, &allocs, 1, 2, 3, "r", 1, "[]", 2);

	CHECK(dmg_job_claimed(j) == DMG_CLAIM_OPEN);
	CHECK(dmg_job_claim(j, DMG_CLAIM_EXECUTOR) == 1);
	CHECK(dmg_job_claim(j, DMG_CLAIM_SENDER) == 0); /* the sender's failure comes too late */
	CHECK(dmg_job_claimed(j) == DMG_CLAIM_EXECUTOR);
	j->refs = 2;
	CHECK(dmg_job_release(j) == 0); /* the other process still holds it */
	CHECK(dmg_job_release(j) == 1); /* the last: free it */
	j->refs = 0;
	CHECK(dmg_job_release(j) == 1); /* a job one process held */
	free(j);

	dmg_pending p;
	dmg_job *js[6];
	dmg_pending_init(&p);
	for(int i = 0; i < 6; i++) {
		js[i] = dmg_job_new(t_alloc, &allocs, 1, 2, 3, "r", 1, "[]", 2);
		js[i]->handle = (i % 2 ? DMG_DIRECT_BIT : 0) | (uint64_t)(i + 1);
		js[i]->deadline_ms = 100 - (uint64_t)i; /* the later put, the earlier deadline */
		dmg_pending_put(&p, js[i]);
	}
	CHECK(dmg_pending_take_masked(&p, DMG_DIRECT_BIT) == js[5]);
	CHECK(dmg_pending_take_masked(&p, DMG_DIRECT_BIT) == js[3]);
	CHECK(dmg_pending_take_masked(&p, DMG_DIRECT_BIT) == js[1]);
	CHECK(dmg_pending_take_masked(&p, DMG_DIRECT_BIT) == NULL);
	CHECK(p.count == 3);
	CHECK(dmg_pending_take(&p, 3) == js[2]); /* the table still finds the others */
	CHECK(dmg_pending_take_any(&p) == js[4] && dmg_pending_take_any(&p) == js[0]);
	CHECK(p.count == 0 && p.first == NULL && p.last == NULL);
	for(int i = 0; i < 6; i++)
		free(js[i]);
}

static void test_jobs_and_pending(void)
{
	int allocs = 0;
	const char json[] = "[{\"Result-Code\":2001}]";
	dmg_job *j = dmg_job_new(t_alloc, &allocs, 16777216, 301, 2500, "SAR_DONE", 8, json,
			strlen(json));
	CHECK(j != NULL && allocs == 1);
	CHECK(strcmp(j->route, "SAR_DONE") == 0);
	CHECK(strcmp(j->json, json) == 0 && j->json_len == strlen(json));
	CHECK(j->app_id == 16777216 && j->cmd_code == 301 && j->timeout_ms == 2500);
	free(j);

	dmg_pending p;
	dmg_pending_init(&p);
	enum { N = 3000 };
	static dmg_job *jobs[N];
	for(int i = 0; i < N; i++) {
		jobs[i] = dmg_job_new(t_alloc, &allocs, 1, 2, 3, "r", 1, "[]", 2);
		jobs[i]->handle = (uint64_t)i * 7 + 1;
		jobs[i]->deadline_ms = 1000 + (uint64_t)(i % 10);
		dmg_pending_put(&p, jobs[i]);
	}
	CHECK(p.count == N);
	CHECK(dmg_pending_take(&p, 7 * 10 + 1) == jobs[10]);
	CHECK(dmg_pending_take(&p, 7 * 10 + 1) == NULL); /* only once */
	CHECK(dmg_pending_take(&p, 2) == NULL);          /* never put */
	CHECK(p.count == N - 1);

	/* at 1000 only the i%10==0 jobs are due (300, one of them already taken) */
	int expired = 0;
	dmg_job *e;
	while((e = dmg_pending_take_expired(&p, 1000)) != NULL) {
		CHECK(e->deadline_ms <= 1000);
		expired++;
	}
	CHECK(expired == N / 10 - 1);
	/* then in deadline order, FIFO among equal deadlines, never one taken by handle */
	CHECK(dmg_pending_take(&p, 7 * 11 + 1) == jobs[11]);
	CHECK(dmg_pending_take(&p, 7 * (N - 1) + 1) == jobs[N - 1]); /* the last put */
	int rest = 0;
	uint64_t prev_deadline = 0, prev_handle = 0;
	while((e = dmg_pending_take_any(&p)) != NULL) {
		CHECK(e != jobs[11] && e != jobs[N - 1]);
		CHECK(e->deadline_ms >= prev_deadline);
		CHECK(e->deadline_ms > prev_deadline || e->handle > prev_handle);
		prev_deadline = e->deadline_ms;
		prev_handle = e->handle;
		rest++;
	}
	CHECK(rest == N - N / 10 - 2);
	CHECK(p.count == 0 && p.first == NULL && p.last == NULL);
	for(int i = 0; i < N; i++)
		free(jobs[i]);

	/* the module's loop: same timeout, so deadlines arrive in order; the answers come in any
	 * order; an expiry check finds nothing due without touching the table */
	dmg_pending_init(&p);
	for(int i = 0; i < 8; i++) {
		jobs[i] = dmg_job_new(t_alloc, &allocs, 1, 2, 3, "r", 1, "[]", 2);
		jobs[i]->handle = (uint64_t)i + 1;
		jobs[i]->deadline_ms = 5000 + (uint64_t)i;
		dmg_pending_put(&p, jobs[i]);
	}
	CHECK(dmg_pending_take(&p, 1) == jobs[0]); /* the first */
	CHECK(dmg_pending_take(&p, 5) == jobs[4]); /* a middle one */
	CHECK(dmg_pending_take_expired(&p, 5000) == NULL);
	CHECK(dmg_pending_take_expired(&p, 5002) == jobs[1]);
	CHECK(dmg_pending_take_expired(&p, 5002) == jobs[2]);
	CHECK(dmg_pending_take_expired(&p, 5002) == NULL);
	/* an earlier deadline put late goes first */
	jobs[8] = dmg_job_new(t_alloc, &allocs, 1, 2, 3, "r", 1, "[]", 2);
	jobs[8]->handle = 9;
	jobs[8]->deadline_ms = 10;
	dmg_pending_put(&p, jobs[8]);
	CHECK(dmg_pending_take_expired(&p, 10) == jobs[8]);
	CHECK(dmg_pending_take(&p, 8) == jobs[7]); /* the last */
	CHECK(dmg_pending_take_expired(&p, UINT64_MAX) == jobs[3]);
	CHECK(dmg_pending_take_expired(&p, UINT64_MAX) == jobs[5]);
	CHECK(dmg_pending_take_expired(&p, UINT64_MAX) == jobs[6]);
	CHECK(dmg_pending_take_expired(&p, UINT64_MAX) == NULL);
	CHECK(p.count == 0 && p.first == NULL && p.last == NULL);
	for(int i = 0; i < 9; i++)
		free(jobs[i]);

	uint64_t t0 = dmg_now_ms(), t1 = dmg_now_ms();
	CHECK(t1 >= t0);
}

/* --- dictionaries' request events ---------------------------------------------------------- */

typedef struct evlist {
	char names[16][24];
	int n;
} evlist;

static void ev_collect(const char *event, void *ctx)
{
	evlist *l = ctx;
	if(l->n < 16)
		snprintf(l->names[l->n], sizeof(l->names[0]), "%s", event);
	l->n++;
}

static void test_builtin_requests(void)
{
	size_t n;
	const dmg_command *t = dmg_builtin_requests(&n);
	CHECK(n > 20);
	CHECK(strcmp(dmg_builtin_abbr(305), "PPR") == 0);
	CHECK(strcmp(dmg_builtin_abbr(304), "RTR") == 0);
	CHECK(strcmp(dmg_builtin_abbr(272), "CCR") == 0);
	CHECK(dmg_builtin_abbr(257) == NULL); /* CER: the bridge's own */
	CHECK(dmg_builtin_abbr(92001) == NULL);
	for(size_t i = 0; i < n; i++) {
		char buf[32];
		/* every entry makes a valid route name that dmg_handled_names maps back */
		const char *r[1] = {buf};
		const char *out[1];
		CHECK(dmg_event_route_name(t[i].abbr, buf, sizeof(buf)) > 0);
		CHECK(dmg_handled_names(r, 1, out, 1) == 1 && strcmp(out[0], t[i].abbr) == 0);
	}

#ifdef DMG_DICT_DIR
	/* every proxiable COMMAND of the bridge's built-in dictionaries is in the table, so the
	 * module publishes the events the bridge raises */
	static const char *files[] = {"base.dict", "credit_control.dict", "cx.dict", "gx.dict",
			"nas.dict", "ro_rf.dict", "rx.dict", "s6a.dict", "sh.dict", "sip.dict"};
	int seen = 0;
	for(size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
		char path[512], line[512];
		snprintf(path, sizeof(path), "%s/%s", DMG_DICT_DIR, files[f]);
		FILE *fp = fopen(path, "r");
		CHECK(fp != NULL);
		if(fp == NULL)
			continue;
		while(fgets(line, sizeof(line), fp)) {
			unsigned code;
			char req[32], ans[32], extra[32] = "";
			if(sscanf(line, "COMMAND %u %31s %31s %31s", &code, req, ans, extra) < 3)
				continue;
			if(strcmp(extra, "not-proxiable") == 0)
				continue;
			const char *a = dmg_builtin_abbr(code);
			int ok = a != NULL && strcmp(a, req) == 0;
			if(!ok)
				fprintf(stderr, "%s: COMMAND %u %s missing from dmglue's table\n", files[f],
						code, req);
			CHECK(ok);
			seen++;
		}
		fclose(fp);
	}
	CHECK(seen >= 20);
#endif
}

static void test_dict_events(void)
{
	evlist l;
	size_t err = 0;
	const char dict[] = "# an aaa_diameter dictionary.opensips\n"
						"ATTRIBUTE out_gw 232 string\n"
						"APPLICATION 42 My Diameter Application\n"
						"REQUEST 92001 My-Custom-Request\n"
						"{\n\tOrigin-Host | REQUIRED | 1\n}\n"
						"ANSWER 92001 My-Custom-Answer\n"
						"  request 272 Credit-Control-Request   # built-in code: CCR\n"
						"REQUEST 92002 Other-Request\n"
						"COMMAND 92002 OTR OTA\n"
						"ANSWER 92002 Other-Answer";
	memset(&l, 0, sizeof(l));
	CHECK(dmg_dict_request_events(dict, strlen(dict), ev_collect, &l, &err) == 3);
	CHECK(l.n == 3);
	CHECK(strcmp(l.names[0], "E_DM_92001") == 0);
	CHECK(strcmp(l.names[1], "E_DM_CCR") == 0);
	CHECK(strcmp(l.names[2], "E_DM_OTR") == 0);

	memset(&l, 0, sizeof(l));
	CHECK(dmg_dict_request_events("", 0, ev_collect, &l, &err) == 0 && l.n == 0);
	CHECK(dmg_dict_request_events(NULL, 5, ev_collect, &l, &err) == 0);
	/* the length bounds the scan: "REQUEST 1 A" is cut before its name */
	CHECK(dmg_dict_request_events("REQUEST 1 A", 9, ev_collect, &l, &err) == -1 && err == 1);

	const char bad1[] = "APPLICATION 1 x\nREQUEST abc Foo-Request\n";
	err = 0;
	CHECK(dmg_dict_request_events(bad1, strlen(bad1), ev_collect, &l, &err) == -1 && err == 2);
	const char bad2[] = "\n\nCOMMAND 5 bad-abbr! X\n";
	CHECK(dmg_dict_request_events(bad2, strlen(bad2), ev_collect, &l, &err) == -1 && err == 3);
	const char bad3[] = "REQUEST 99999999 Too-Big-Request\n"; /* > 24 bits */
	CHECK(dmg_dict_request_events(bad3, strlen(bad3), ev_collect, &l, &err) == -1 && err == 1);
}

static void test_aaa_url(void)
{
	const char *p = NULL;
	size_t n = 0;
	CHECK(dmg_aaa_url_dict_file("diameter:fd.conf;extra-avps-file:/etc/dict.opensips", &p, &n)
			== 0);
	CHECK(n == strlen("/etc/dict.opensips") && strncmp(p, "/etc/dict.opensips", n) == 0);
	CHECK(dmg_aaa_url_dict_file("diameter:a.conf;extra-avps-file:d.txt;x:y", &p, &n) == 0
			&& n == 5 && strncmp(p, "d.txt", 5) == 0);
	CHECK(dmg_aaa_url_dict_file("diameter:fd.conf", &p, &n) == -1);
	CHECK(dmg_aaa_url_dict_file("diameter:fd.conf;extra-avps-file:", &p, &n) == -1);
	CHECK(dmg_aaa_url_dict_file("diameter:xextra-avps-file:a", &p, &n) == -1);
	CHECK(dmg_aaa_url_dict_file(NULL, &p, &n) == -1);
}

/* dmg_pid caches the pid; a forked child must see its own, not the parent's cached one */
static void test_pid(void)
{
	int st = 0;
	pid_t kid;

	CHECK(dmg_pid() == (int)getpid());
	CHECK(dmg_pid() == (int)getpid()); /* the cached value */
	kid = fork();
	if(kid == 0)
		_exit(dmg_pid() == (int)getpid() && dmg_pid() != (int)getppid() ? 0 : 1);
	CHECK(kid > 0 && waitpid(kid, &st, 0) == kid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CHECK(dmg_pid() == (int)getpid());
}

int main(void)
{
	test_handled_names();
	test_event_route_name();
	test_parse_u32();
	test_common_homes();
	test_json();
	test_rc();
	test_jobs_and_pending();
	test_direct_jobs();
	test_builtin_requests();
	test_dict_events();
	test_aaa_url();
	test_pid();
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
