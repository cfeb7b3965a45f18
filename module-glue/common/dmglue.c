/*
 * dmglue: SIP-server independent helpers of the dmbridge modules (see dmglue.h).
 */
#include "dmglue.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>

static int name_char_ok(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
		   || c == '_' || c == '-';
}

/* The handled name a route stands for, or NULL when it is no E_DM_ route. */
static const char *route_handled_name(const char *r)
{
	if(r == NULL || strncmp(r, DMG_EVENT_PREFIX, DMG_EVENT_PREFIX_LEN) != 0)
		return NULL;
	if(strcmp(r, DMG_EVENT_CATCHALL) == 0)
		return DMG_HANDLED_ALL;
	r += DMG_EVENT_PREFIX_LEN;
	if(*r == '\0')
		return NULL;
	for(const char *c = r; *c; c++)
		if(!name_char_ok(*c))
			return NULL;
	return r;
}

size_t dmg_handled_names(const char *const *routes, size_t nroutes, const char **out, size_t cap)
{
	size_t found = 0;

	for(size_t i = 0; i < nroutes; i++) {
		const char *name = route_handled_name(routes[i]);
		int dup = 0;

		if(name == NULL)
			continue;
		/* against the earlier routes, not `out`, so the count is right when cap is short */
		for(size_t k = 0; k < i && !dup; k++) {
			const char *prev = route_handled_name(routes[k]);
			dup = prev != NULL && strcmp(prev, name) == 0;
		}
		if(dup)
			continue;
		if(found < cap)
			out[found] = name;
		found++;
	}
	return found;
}

int dmg_event_route_name(const char *event, char *buf, size_t cap)
{
	size_t elen, plen = 0;

	if(event == NULL || *event == '\0' || buf == NULL)
		return -1;
	elen = strlen(event);
	if(strncmp(event, DMG_EVENT_PREFIX, DMG_EVENT_PREFIX_LEN) != 0)
		plen = DMG_EVENT_PREFIX_LEN;
	else if(elen == DMG_EVENT_PREFIX_LEN)
		return -1;
	if(plen + elen + 1 > cap)
		return -1;
	memcpy(buf, DMG_EVENT_PREFIX, plen);
	memcpy(buf + plen, event, elen + 1);
	return (int)(plen + elen);
}

/* --- JSON syntax check ------------------------------------------------------------------- */

#define DMG_JSON_MAX_DEPTH 64

typedef struct jcur {
	const char *s;
	size_t len, pos;
	const char *err;
} jcur;

/* The hot loops below work on local copies of the cursor and write it back once: a store
 * through `c` per byte (char data may alias it) made this check ~16 instructions per byte of
 * script JSON, 2k per test_app request and 13k per Ro CCR (issue 15 item 1). */
static void jws(jcur *c)
{
	const char *s = c->s;
	size_t pos = c->pos, len = c->len;

	while(pos < len && (s[pos] == ' ' || s[pos] == '\t' || s[pos] == '\n' || s[pos] == '\r'))
		pos++;
	c->pos = pos;
}

static int jfail(jcur *c, const char *msg)
{
	if(c->err == NULL)
		c->err = msg;
	return -1;
}

static int jhex(char h)
{
	return (h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') || (h >= 'A' && h <= 'F');
}

#define JONES 0x0101010101010101ull
#define JHIGHS 0x8080808080808080ull
/* Nonzero when one of the eight bytes of `v` is below 0x20, '"' or '\\': the classic tests
 * "has a byte < n" ((x - n*ONES) & ~x & HIGHS, exact for n <= 0x80) on v, and "has a zero
 * byte" (n = 1) on v ^ '"'... and v ^ '\\'...; the byte loop after it finds which. */
static uint64_t jword_special(uint64_t v)
{
	uint64_t q = v ^ (JONES * '"'), b = v ^ (JONES * '\\');
	return (((v - JONES * 0x20) & ~v) | ((q - JONES) & ~q) | ((b - JONES) & ~b)) & JHIGHS;
}

static int jstring(jcur *c)
{
	const unsigned char *s = (const unsigned char *)c->s;
	size_t pos = c->pos + 1, len = c->len; /* after the opening quote */

	for(;;) {
		/* the plain run, most of every string: no quote, backslash or control character;
		 * eight bytes at a time while they are all plain, then byte by byte */
		while(len - pos >= 8) {
			uint64_t v;
			memcpy(&v, s + pos, 8);
			if(jword_special(v))
				break;
			pos += 8;
		}
		while(pos < len && s[pos] >= 0x20 && s[pos] != '"' && s[pos] != '\\')
			pos++;
		if(pos >= len)
			break;
		if(s[pos] == '"') {
			c->pos = pos + 1;
			return 0;
		}
		if(s[pos] < 0x20) {
			c->pos = pos;
			return jfail(c, "control character in string");
		}
		pos++; /* the backslash */
		if(pos >= len)
			break;
		switch(s[pos]) {
			case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
				pos++;
				break;
			case 'u':
				for(int i = 1; i <= 4; i++)
					if(pos + i >= len || !jhex((char)s[pos + i])) {
						c->pos = pos + i;
						return jfail(c, "bad \\u escape");
					}
				pos += 5;
				break;
			default:
				c->pos = pos;
				return jfail(c, "bad escape in string");
		}
	}
	c->pos = pos;
	return jfail(c, "unterminated string");
}

static int jdigits(jcur *c)
{
	const char *s = c->s;
	size_t start = c->pos, pos = start, len = c->len;

	while(pos < len && s[pos] >= '0' && s[pos] <= '9')
		pos++;
	c->pos = pos;
	return pos > start ? 0 : jfail(c, "digit expected");
}
static int jnumber(jcur *c)
{
	if(c->s[c->pos] == '-')
		c->pos++;
	if(c->pos < c->len && c->s[c->pos] == '0')
		c->pos++;
	else if(jdigits(c) < 0)
		return -1;
	if(c->pos < c->len && c->s[c->pos] == '.') {
		c->pos++;
		if(jdigits(c) < 0)
			return -1;
	}
	if(c->pos < c->len && (c->s[c->pos] == 'e' || c->s[c->pos] == 'E')) {
		c->pos++;
		if(c->pos < c->len && (c->s[c->pos] == '+' || c->s[c->pos] == '-'))
			c->pos++;
		if(jdigits(c) < 0)
			return -1;
	}
	return 0;
}

static int jliteral(jcur *c, const char *lit)
{
	size_t n = strlen(lit);
	if(c->len - c->pos < n || memcmp(c->s + c->pos, lit, n) != 0)
		return jfail(c, "unexpected character");
	c->pos += n;
	return 0;
}

static int jvalue(jcur *c, int depth);

static int jcontainer(jcur *c, int depth, char close)
{
	if(depth >= DMG_JSON_MAX_DEPTH)
		return jfail(c, "nesting too deep");
	c->pos++;
	jws(c);
	if(c->pos < c->len && c->s[c->pos] == close) {
		c->pos++;
		return 0;
	}
	for(;;) {
		jws(c);
		if(close == '}') {
			if(c->pos >= c->len || c->s[c->pos] != '"')
				return jfail(c, "object key (string) expected");
			if(jstring(c) < 0)
				return -1;
			jws(c);
			if(c->pos >= c->len || c->s[c->pos] != ':')
				return jfail(c, "':' expected");
			c->pos++;
		}
		if(jvalue(c, depth + 1) < 0)
			return -1;
		jws(c);
		if(c->pos >= c->len)
			return jfail(c, "unexpected end of input");
		if(c->s[c->pos] == ',') {
			c->pos++;
			continue;
		}
		if(c->s[c->pos] == close) {
			c->pos++;
			return 0;
		}
		return jfail(c, close == ']' ? "',' or ']' expected" : "',' or '}' expected");
	}
}

static int jvalue(jcur *c, int depth)
{
	jws(c);
	if(c->pos >= c->len)
		return jfail(c, "value expected");
	switch(c->s[c->pos]) {
		case '[':
			return jcontainer(c, depth, ']');
		case '{':
			return jcontainer(c, depth, '}');
		case '"':
			return jstring(c);
		case 't':
			return jliteral(c, "true");
		case 'f':
			return jliteral(c, "false");
		case 'n':
			return jliteral(c, "null");
		default:
			if(c->s[c->pos] == '-' || (c->s[c->pos] >= '0' && c->s[c->pos] <= '9'))
				return jnumber(c);
			return jfail(c, "unexpected character");
	}
}

int dmg_json_check_avps(const char *s, size_t len, size_t *err_off, const char **err_msg)
{
	jcur c = {s, len, 0, NULL};

	if(s == NULL)
		len = c.len = 0;
	jws(&c);
	if(c.pos >= c.len) {
		jfail(&c, "empty input");
	} else if(c.s[c.pos] != '[') {
		jfail(&c, "top level must be an array of AVP objects");
	} else if(jvalue(&c, 0) == 0) {
		jws(&c);
		if(c.pos == c.len)
			return 0;
		jfail(&c, "trailing characters after the array");
	}
	if(err_off)
		*err_off = c.pos;
	if(err_msg)
		*err_msg = c.err;
	return -1;
}

void dmg_count_outcome(dmg_stats *st, int rc)
{
	switch(rc) {
		case DMG_RC_OK:
			DMG_INC(st, answers_ok);
			break;
		case DMG_RC_ERROR:
			DMG_INC(st, answers_error);
			break;
		case DMG_RC_TIMEOUT:
			DMG_INC(st, timeouts);
			break;
		default:
			DMG_INC(st, not_sent);
	}
}

static const char *const dmg_param_names[DMG_P_COUNT] = {"sess_id", "app_id", "cmd_code",
		"avps_json", "cmd_name", "origin_host", "origin_realm", "event"};

int dmg_param_id(const char *name, size_t len)
{
	for(int i = 0; i < DMG_P_COUNT; i++)
		if(strlen(dmg_param_names[i]) == len && memcmp(dmg_param_names[i], name, len) == 0)
			return i + 1;
	return 0;
}

const char *dmg_param_name(int id)
{
	return id >= 1 && id <= DMG_P_COUNT ? dmg_param_names[id - 1] : NULL;
}

int dmg_param_is_int(int id)
{
	return id == DMG_P_APP_ID || id == DMG_P_CMD_CODE;
}

int dmg_attach_due(const dmg_attach_pacer *p, uint64_t now_ms)
{
	return now_ms >= p->next_ms;
}

int dmg_attach_failed(dmg_attach_pacer *p, uint64_t now_ms, const char *why)
{
	static const char refused[] = "refused by the bridge";

	p->next_ms = now_ms + p->interval_ms;
	p->failing++;
	if(p->failing == 1)
		return 1;
	return why != NULL && strncmp(why, refused, sizeof(refused) - 1) == 0;
}

int dmg_attach_ok(dmg_attach_pacer *p)
{
	int was = p->failing > 0;

	p->failing = 0;
	p->next_ms = 0;
	return was;
}

int dmg_parse_u32(const char *s, size_t len, uint32_t *out, const char **why)
{
	uint64_t v = 0;

	if(s == NULL || len == 0) {
		*why = "empty";
		return -1;
	}
	for(size_t i = 0; i < len; i++) {
		if(s[i] < '0' || s[i] > '9') {
			*why = "not a decimal number";
			return -1;
		}
		v = v * 10 + (uint64_t)(s[i] - '0');
		if(v > UINT32_MAX) {
			*why = "larger than 4294967295";
			return -1;
		}
	}
	*out = (uint32_t)v;
	return 0;
}

int dmg_rc_from_class(int answer_class)
{
	switch(answer_class) {
		case 1:
			return DMG_RC_OK;
		case -1:
			return DMG_RC_ERROR;
		case -2:
			return DMG_RC_TIMEOUT;
		default:
			return DMG_RC_NOT_SENT;
	}
}

/* --- async jobs -------------------------------------------------------------------------- */

dmg_job *dmg_job_new(dmg_alloc_f alloc, void *actx, uint32_t app_id, uint32_t cmd_code,
		uint32_t timeout_ms, const char *route, size_t route_len, const char *json,
		size_t json_len)
{
	dmg_job *j;
	size_t size;

	if(route_len > SIZE_MAX / 4 || json_len > SIZE_MAX / 4)
		return NULL;
	size = sizeof(*j) + route_len + 1 + json_len + 1;
	j = alloc(size, actx);
	if(j == NULL)
		return NULL;
	memset(j, 0, sizeof(*j));
	j->app_id = app_id;
	j->cmd_code = cmd_code;
	j->timeout_ms = timeout_ms;
	j->route = (char *)(j + 1);
	if(route_len)
		memcpy(j->route, route, route_len);
	j->route[route_len] = '\0';
	j->json = j->route + route_len + 1;
	if(json_len)
		memcpy(j->json, json, json_len);
	j->json[json_len] = '\0';
	j->json_len = json_len;
	return j;
}

static size_t bucket_of(uint64_t handle)
{
	/* handles are usually sequential; a multiplicative hash spreads them anyway */
	return (size_t)((handle * 0x9E3779B97F4A7C15ull) >> 54) % DMG_PENDING_BUCKETS;
}

void dmg_pending_init(dmg_pending *p)
{
	memset(p, 0, sizeof(*p));
}

void dmg_pending_put(dmg_pending *p, dmg_job *job)
{
	size_t b = bucket_of(job->handle);
	dmg_job *after = p->last;

	job->next = p->bucket[b];
	p->bucket[b] = job;
	/* after the last job whose deadline is not later than this one's (FIFO among equals) */
	while(after != NULL && after->deadline_ms > job->deadline_ms)
		after = after->dprev;
	job->dprev = after;
	job->dnext = after != NULL ? after->dnext : p->first;
	if(job->dnext != NULL)
		job->dnext->dprev = job;
	else
		p->last = job;
	if(after != NULL)
		after->dnext = job;
	else
		p->first = job;
	p->count++;
}

/* Unlinks `j` (found at *pp in its bucket chain) from the chain and the deadline list. */
static dmg_job *pending_unlink(dmg_pending *p, dmg_job **pp)
{
	dmg_job *j = *pp;

	*pp = j->next;
	if(j->dprev != NULL)
		j->dprev->dnext = j->dnext;
	else
		p->first = j->dnext;
	if(j->dnext != NULL)
		j->dnext->dprev = j->dprev;
	else
		p->last = j->dprev;
	j->next = j->dnext = j->dprev = NULL;
	p->count--;
	return j;
}

/* The link in its bucket chain that points at the job with this handle, or NULL. */
static dmg_job **pending_find(dmg_pending *p, uint64_t handle)
{
	dmg_job **pp = &p->bucket[bucket_of(handle)];
	for(; *pp; pp = &(*pp)->next) {
		if((*pp)->handle == handle)
			return pp;
	}
	return NULL;
}

dmg_job *dmg_pending_take(dmg_pending *p, uint64_t handle)
{
	dmg_job **pp = pending_find(p, handle);
	return pp != NULL ? pending_unlink(p, pp) : NULL;
}

dmg_job *dmg_pending_take_expired(dmg_pending *p, uint64_t now_ms)
{
	dmg_job **pp;

	if(p->first == NULL || p->first->deadline_ms > now_ms)
		return NULL;
	/* the first job's own link in its bucket chain (handles are unique in the table) */
	for(pp = &p->bucket[bucket_of(p->first->handle)]; *pp != NULL && *pp != p->first;
			pp = &(*pp)->next)
		;
	return *pp != NULL ? pending_unlink(p, pp) : NULL;
}

dmg_job *dmg_pending_take_any(dmg_pending *p)
{
	return dmg_pending_take_expired(p, UINT64_MAX);
}

dmg_job *dmg_pending_take_masked(dmg_pending *p, uint64_t mask)
{
	dmg_job *j, **pp;

	for(j = p->first; j != NULL; j = j->dnext) {
		if((j->handle & mask) != 0 && (pp = pending_find(p, j->handle)) != NULL)
			return pending_unlink(p, pp);
	}
	return NULL;
}

int dmg_job_claim(dmg_job *job, int32_t who)
{
	int32_t open = DMG_CLAIM_OPEN;

	return __atomic_compare_exchange_n(
				   &job->claim, &open, who, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)
				   ? 1
				   : 0;
}

int32_t dmg_job_claimed(const dmg_job *job)
{
	return __atomic_load_n(&job->claim, __ATOMIC_ACQUIRE);
}

int dmg_job_release(dmg_job *job)
{
	/* refs 0 (a job only one process ever held) is one hold */
	if(__atomic_load_n(&job->refs, __ATOMIC_ACQUIRE) <= 1)
		return 1;
	return __atomic_sub_fetch(&job->refs, 1, __ATOMIC_ACQ_REL) == 0;
}

/* --- event names of the dictionaries' request commands ------------------------------------ */

static const dmg_command builtin_requests[] = {
	/* base protocol (RFC 6733) and base accounting; CER/DWR/DPR are the bridge's own */
	{258, "RAR", "Re-Auth"},
	{274, "ASR", "Abort-Session"},
	{275, "STR", "Session-Termination"},
	{271, "ACR", "Accounting"},
	/* Credit-Control (RFC 4006/8506), Gx, Ro */
	{272, "CCR", "Credit-Control"},
	/* Rx (TS 29.214), NASREQ */
	{265, "AAR", "AA"},
	/* SIP application (RFC 4740) */
	{283, "UAR", "User-Authorization"},
	{284, "SAR", "Server-Assignment"},
	{285, "LIR", "Location-Info"},
	{286, "MAR", "Multimedia-Auth"},
	{287, "RTR", "Registration-Termination"},
	{288, "PPR", "Push-Profile"},
	/* Cx/Dx (TS 29.229) */
	{300, "UAR", "User-Authorization"},
	{301, "SAR", "Server-Assignment"},
	{302, "LIR", "Location-Info"},
	{303, "MAR", "Multimedia-Auth"},
	{304, "RTR", "Registration-Termination"},
	{305, "PPR", "Push-Profile"},
	/* Sh (TS 29.329) */
	{306, "UDR", "User-Data"},
	{307, "PUR", "Profile-Update"},
	{308, "SNR", "Subscribe-Notifications"},
	{309, "PNR", "Push-Notification"},
	/* S6a/S6d (TS 29.272) */
	{316, "ULR", "Update-Location"},
	{317, "CLR", "Cancel-Location"},
	{318, "AIR", "Authentication-Information"},
	{319, "IDR", "Insert-Subscriber-Data"},
	{320, "DSR", "Delete-Subscriber-Data"},
	{321, "PUR", "Purge-UE"},
	{322, "RSR", "Reset"},
	{323, "NOR", "Notify"},
};

const dmg_command *dmg_builtin_requests(size_t *n)
{
	if(n)
		*n = sizeof(builtin_requests) / sizeof(builtin_requests[0]);
	return builtin_requests;
}

const char *dmg_builtin_abbr(uint32_t code)
{
	for(size_t i = 0; i < sizeof(builtin_requests) / sizeof(builtin_requests[0]); i++)
		if(builtin_requests[i].code == code)
			return builtin_requests[i].abbr;
	return NULL;
}

/* One line of a dictionary file split in up to 4 words (the rest is ignored). */
typedef struct dline {
	const char *w[4];
	size_t wl[4];
	int nw;
} dline;

static void dict_split(const char *s, size_t len, dline *l)
{
	size_t i = 0;
	l->nw = 0;
	while(l->nw < 4) {
		while(i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r'))
			i++;
		if(i >= len || s[i] == '#')
			return;
		l->w[l->nw] = s + i;
		while(i < len && s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '#')
			i++;
		l->wl[l->nw] = (size_t)(s + i - l->w[l->nw]);
		l->nw++;
	}
}

static int word_is(const dline *l, int k, const char *kw)
{
	size_t n = strlen(kw);
	if(k >= l->nw || l->wl[k] != n)
		return 0;
	for(size_t i = 0; i < n; i++) {
		char c = l->w[k][i];
		if(c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		if(c != kw[i])
			return 0;
	}
	return 1;
}

/* A decimal command code (24 bits on the wire). */
static int word_code(const dline *l, int k, uint32_t *code)
{
	uint32_t v = 0;
	if(k >= l->nw || l->wl[k] == 0 || l->wl[k] > 8)
		return -1;
	for(size_t i = 0; i < l->wl[k]; i++) {
		if(l->w[k][i] < '0' || l->w[k][i] > '9')
			return -1;
		v = v * 10 + (uint32_t)(l->w[k][i] - '0');
	}
	if(v > 0xFFFFFFu)
		return -1;
	*code = v;
	return 0;
}

static int abbr_ok(const char *s, size_t n)
{
	if(n == 0 || n > 16)
		return 0;
	for(size_t i = 0; i < n; i++)
		if(!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z')
				   || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return 0;
	return 1;
}

/* Iterates the lines of text: *pos is advanced past the line returned in *s and *n. */
static int next_line(const char *text, size_t len, size_t *pos, const char **s, size_t *n)
{
	const char *nl;
	if(*pos >= len)
		return 0;
	*s = text + *pos;
	nl = memchr(*s, '\n', len - *pos);
	*n = nl ? (size_t)(nl - *s) : len - *pos;
	*pos += *n + (nl ? 1 : 0);
	return 1;
}

/* The file's own COMMAND abbreviation for `code` (validated), or NULL. */
static const char *dict_command_abbr(const char *text, size_t len, uint32_t code, size_t *alen)
{
	size_t pos = 0, n;
	const char *s;
	dline l;
	uint32_t c;

	while(next_line(text, len, &pos, &s, &n)) {
		dict_split(s, n, &l);
		if(word_is(&l, 0, "COMMAND") && word_code(&l, 1, &c) == 0 && c == code
				&& l.nw >= 3 && abbr_ok(l.w[2], l.wl[2])) {
			*alen = l.wl[2];
			return l.w[2];
		}
	}
	return NULL;
}

int dmg_dict_request_events(const char *text, size_t len,
		void (*cb)(const char *event, void *ctx), void *ctx, size_t *err_line)
{
	size_t pos = 0, n, line = 0;
	const char *s;
	dline l;
	int found = 0;

	if(text == NULL)
		len = 0;
	while(next_line(text, len, &pos, &s, &n)) {
		char ev[DMG_EVENT_PREFIX_LEN + 17];
		const char *abbr;
		size_t alen = 0;
		uint32_t code;

		line++;
		dict_split(s, n, &l);
		if(word_is(&l, 0, "COMMAND")) {
			if(word_code(&l, 1, &code) < 0 || l.nw < 3 || !abbr_ok(l.w[2], l.wl[2]))
				goto bad;
			continue;
		}
		if(!word_is(&l, 0, "REQUEST"))
			continue;
		if(word_code(&l, 1, &code) < 0 || l.nw < 3)
			goto bad;
		abbr = dict_command_abbr(text, len, code, &alen);
		if(abbr == NULL && (abbr = dmg_builtin_abbr(code)) != NULL)
			alen = strlen(abbr);
		memcpy(ev, DMG_EVENT_PREFIX, DMG_EVENT_PREFIX_LEN);
		if(abbr != NULL) {
			memcpy(ev + DMG_EVENT_PREFIX_LEN, abbr, alen);
			ev[DMG_EVENT_PREFIX_LEN + alen] = '\0';
		} else {
			snprintf(ev + DMG_EVENT_PREFIX_LEN, sizeof(ev) - DMG_EVENT_PREFIX_LEN, "%u",
					(unsigned)code);
		}
		found++;
		if(cb)
			cb(ev, ctx);
	}
	return found;
bad:
	if(err_line)
		*err_line = line;
	return -1;
}

int dmg_aaa_url_dict_file(const char *url, const char **out, size_t *out_len)
{
	static const char key[] = "extra-avps-file:";
	const char *p, *end;

	if(url == NULL)
		return -1;
	for(p = url; (p = strstr(p, key)) != NULL; p++) {
		/* only at the start of a ';'-separated item */
		if(p != url && p[-1] != ';')
			continue;
		p += sizeof(key) - 1;
		end = strchr(p, ';');
		if(end == NULL)
			end = p + strlen(p);
		if(end == p)
			return -1;
		*out = p;
		*out_len = (size_t)(end - p);
		return 0;
	}
	return -1;
}

uint32_t dmg_peer_us(uint64_t peer_ns)
{
	uint64_t us = peer_ns / 1000u + (peer_ns % 1000u != 0);
	return us > INT32_MAX ? (uint32_t)INT32_MAX : (uint32_t)us;
}

uint64_t dmg_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int _dmg_pid = 0;
/* 1 once the atfork handler is registered (only then may the pid be kept), -1 if it failed */
static int _dmg_pid_atfork = 0;

static void dmg_pid_forget(void)
{
	_dmg_pid = 0;
}

int dmg_pid(void)
{
	if(_dmg_pid != 0)
		return _dmg_pid;
	if(_dmg_pid_atfork == 0)
		_dmg_pid_atfork = pthread_atfork(NULL, NULL, dmg_pid_forget) == 0 ? 1 : -1;
	if(_dmg_pid_atfork < 0)
		return (int)getpid();
	_dmg_pid = (int)getpid();
	return _dmg_pid;
}
