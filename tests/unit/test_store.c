/* Unit tests for the SQLite store (src/store/). Every test works in its own mkdtemp
 * directory, removed afterwards. store_int.h gives access to the write connection
 * (PRAGMA checks, simulated disk full). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <time.h>

#include "broker/msg.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "store/store.h"
#include "store/store_int.h"
#include "unit.h"

/* ---- helpers ---- */

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* A fresh temporary directory; data_dir is a not-yet-existing subdirectory of it. */
struct tmp {
	char root[64];
	char data[96];
	char db[128];
};

static void tmp_make(struct tmp *t)
{
	snprintf(t->root, sizeof t->root, "/tmp/bw-store-test-XXXXXX");
	if (!mkdtemp(t->root))
		abort();
	snprintf(t->data, sizeof t->data, "%s/data", t->root);
	snprintf(t->db, sizeof t->db, "%s/bulwark.db", t->data);
}

static void tmp_remove(struct tmp *t)
{
	chmod(t->data, 0700);
	nftw(t->root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static struct store *open_ok(const char *dir, enum cfg_fsync fs)
{
	char err[512] = "";
	struct store *s = store_open(dir, fs, err, sizeof err);
	if (!s)
		fprintf(stderr, "store_open: %s\n", err);
	return s;
}

/* One integer from a side connection to the database (the store may be open). */
static int64_t q1(const char *db, const char *sql)
{
	sqlite3 *c = NULL;
	int64_t v = -1;
	if (sqlite3_open_v2(db, &c, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK) {
		sqlite3_busy_timeout(c, 5000);
		sqlite3_stmt *st = NULL;
		if (sqlite3_prepare_v2(c, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
			v = sqlite3_column_int64(st, 0);
		else
			fprintf(stderr, "q1(%s): %s\n", sql, sqlite3_errmsg(c));
		sqlite3_finalize(st);
	}
	sqlite3_close(c);
	return v;
}

static void x1(const char *db, const char *sql)
{
	sqlite3 *c = NULL;
	if (sqlite3_open_v2(db, &c, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK ||
	    sqlite3_exec(c, sql, NULL, NULL, NULL) != SQLITE_OK)
		fprintf(stderr, "x1(%s): %s\n", sql, sqlite3_errmsg(c));
	sqlite3_close(c);
}

static struct msg *mk(const char *topic, const void *props, size_t props_len, const void *payload, size_t len,
		      uint8_t qos, bool retain, int64_t expiry_at)
{
	struct msg *m = msg_new(topic, strlen(topic), props, props_len, payload, len, qos, retain);
	m->expiry_at = expiry_at;
	return m;
}

static bool msg_same(const struct msg *a, const struct msg *b)
{
	return a && b && a->topic_len == b->topic_len && a->props_len == b->props_len &&
	       a->payload_len == b->payload_len && a->qos == b->qos && a->retain == b->retain &&
	       a->expiry_at == b->expiry_at &&
	       memcmp(a->data, b->data, (size_t)a->topic_len + a->props_len + a->payload_len) == 0;
}

/* A loader that records everything it is given. */
struct r_session {
	char *cid;
	uint32_t expiry;
	uint8_t proto;
	int64_t disc;
};
struct r_sub {
	char *cid, *filter;
	uint8_t opts;
	uint32_t sub_id;
};
struct r_dlv {
	char *cid;
	uint32_t seq;
	struct msg *m;
	uint8_t qos, flags;
	uint32_t sub_id;
	uint16_t pid;
};
struct r_rel {
	char *cid;
	uint16_t pid;
};

struct rec {
	struct r_session *sessions;
	struct r_sub *subs;
	struct r_dlv *dlvs;
	struct r_rel *rels;
	struct msg **retained;
	size_t n_sessions, n_subs, n_dlvs, n_rels, n_retained;
	char order[64]; /* S s d r R, each kind once when it first appears */
	size_t n_order;
};

/* Append a slot to a dynamic array, doubling its size whenever n reaches a power of two. */
#define GROW(arr, n)                                                                                      \
	((((n) & ((n) - 1)) == 0 ? (void)((arr) = xrealloc((arr), ((n) ? 2 * (n) : 1) * sizeof *(arr))) : (void)0), \
	 &(arr)[(n)++])

static void note(struct rec *r, char c)
{
	if (r->n_order == 0 || r->order[r->n_order - 1] != c)
		if (r->n_order < sizeof r->order - 1)
			r->order[r->n_order++] = c;
}

static void cb_session(void *arg, const char *cid, uint32_t expiry, uint8_t proto, int64_t disc)
{
	struct rec *r = arg;
	note(r, 'S');
	*GROW(r->sessions, r->n_sessions) = (struct r_session){ xstrdup(cid), expiry, proto, disc };
}

static void cb_sub(void *arg, const char *cid, const char *filter, uint8_t opts, uint32_t sub_id)
{
	struct rec *r = arg;
	note(r, 's');
	*GROW(r->subs, r->n_subs) = (struct r_sub){ xstrdup(cid), xstrdup(filter), opts, sub_id };
}

static void cb_dlv(void *arg, const char *cid, uint32_t seq, struct msg *m, uint8_t qos, uint8_t flags, uint32_t sub_id,
		   uint16_t pid)
{
	struct rec *r = arg;
	note(r, 'd');
	*GROW(r->dlvs, r->n_dlvs) = (struct r_dlv){ xstrdup(cid), seq, m, qos, flags, sub_id, pid };
}

static void cb_rel(void *arg, const char *cid, uint16_t pid)
{
	struct rec *r = arg;
	note(r, 'r');
	*GROW(r->rels, r->n_rels) = (struct r_rel){ xstrdup(cid), pid };
}

static void cb_retained(void *arg, struct msg *m)
{
	struct rec *r = arg;
	note(r, 'R');
	*GROW(r->retained, r->n_retained) = m;
}

static void rec_free(struct rec *r)
{
	for (size_t i = 0; i < r->n_sessions; i++)
		free(r->sessions[i].cid);
	for (size_t i = 0; i < r->n_subs; i++) {
		free(r->subs[i].cid);
		free(r->subs[i].filter);
	}
	for (size_t i = 0; i < r->n_dlvs; i++) {
		free(r->dlvs[i].cid);
		msg_unref(r->dlvs[i].m);
	}
	for (size_t i = 0; i < r->n_rels; i++)
		free(r->rels[i].cid);
	for (size_t i = 0; i < r->n_retained; i++)
		msg_unref(r->retained[i]);
	free(r->sessions);
	free(r->subs);
	free(r->dlvs);
	free(r->rels);
	free(r->retained);
	memset(r, 0, sizeof *r);
}

static bool load_rec(struct store *s, struct rec *r)
{
	memset(r, 0, sizeof *r);
	struct store_loader ld = { r, cb_retained, cb_session, cb_sub, cb_dlv, cb_rel };
	char err[512] = "";
	bool ok = store_load(s, &ld, err, sizeof err);
	if (!ok)
		fprintf(stderr, "store_load: %s\n", err);
	return ok;
}

/* Close, reopen and load. */
static struct store *reopen_load(struct store *s, const char *dir, enum cfg_fsync fs, struct rec *r)
{
	store_close(s);
	s = open_ok(dir, fs);
	if (s && !load_rec(s, r)) {
		store_close(s);
		return NULL;
	}
	return s;
}

static struct r_session *find_session(struct rec *r, const char *cid)
{
	for (size_t i = 0; i < r->n_sessions; i++)
		if (strcmp(r->sessions[i].cid, cid) == 0)
			return &r->sessions[i];
	return NULL;
}

static struct r_sub *find_sub(struct rec *r, const char *cid, const char *filter)
{
	for (size_t i = 0; i < r->n_subs; i++)
		if (strcmp(r->subs[i].cid, cid) == 0 && strcmp(r->subs[i].filter, filter) == 0)
			return &r->subs[i];
	return NULL;
}

static struct r_dlv *find_dlv(struct rec *r, const char *cid, uint32_t seq)
{
	for (size_t i = 0; i < r->n_dlvs; i++)
		if (strcmp(r->dlvs[i].cid, cid) == 0 && r->dlvs[i].seq == seq)
			return &r->dlvs[i];
	return NULL;
}

static size_t count_dlvs(struct rec *r, const char *cid)
{
	size_t n = 0;
	for (size_t i = 0; i < r->n_dlvs; i++)
		n += strcmp(r->dlvs[i].cid, cid) == 0;
	return n;
}

static bool has_rel(struct rec *r, const char *cid, uint16_t pid)
{
	for (size_t i = 0; i < r->n_rels; i++)
		if (strcmp(r->rels[i].cid, cid) == 0 && r->rels[i].pid == pid)
			return true;
	return false;
}

static struct msg *find_retained(struct rec *r, const char *topic)
{
	for (size_t i = 0; i < r->n_retained; i++)
		if (r->retained[i]->topic_len == strlen(topic) && memcmp(msg_topic(r->retained[i]), topic, strlen(topic)) == 0)
			return r->retained[i];
	return NULL;
}

/* stderr capture, to count log lines. */
static int capture_begin(const char *path)
{
	int saved = dup(2);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	dup2(fd, 2);
	close(fd);
	return saved;
}

static void capture_end(int saved)
{
	dup2(saved, 2);
	close(saved);
}

/* Over the lines of a file that contain needle: their count, or (sum) the sum of the
 * numbers that follow needle in them. -1 when the file cannot be read. */
static int64_t scan_file(const char *path, const char *needle, bool sum)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	char line[4096];
	int64_t n = 0;
	while (fgets(line, sizeof line, f)) {
		const char *p = strstr(line, needle);
		if (p)
			n += sum ? strtoll(p + strlen(needle), NULL, 10) : 1;
	}
	fclose(f);
	return n;
}

static int count_in_file(const char *path, const char *needle)
{
	return (int)scan_file(path, needle, false);
}

static const uint8_t props1[] = { 0x01, 0x01,                                 /* payload format 1 */
				  0x03, 0x00, 0x04, 't', 'e', 'x', 't',       /* content type */
				  0x09, 0x00, 0x03, 0x00, 0xff, 0x10,         /* correlation data */
				  0x26, 0x00, 0x01, 'k', 0x00, 0x02, 'v', 'v' }; /* user property */

/* ---- tests ---- */

TEST(roundtrip)
{
	struct tmp t;
	tmp_make(&t);
	struct store *s = open_ok(t.data, CFG_FSYNC_BATCH);
	CHECK(s != NULL);
	if (!s)
		goto out;
	int64_t now = clock_wall_s();
	const uint8_t bin[] = { 0, 1, 2, 0, 0xff, 'x', 0 };
	struct msg *m1 = mk("a/b/c", props1, sizeof props1, bin, sizeof bin, 1, false, now + 3600);
	struct msg *m2 = mk("x", NULL, 0, NULL, 0, 2, false, 0);
	size_t big_len = 200000;
	uint8_t *big = xmalloc(big_len);
	for (size_t i = 0; i < big_len; i++)
		big[i] = (uint8_t)(i * 7 + 3);
	struct msg *m3 = mk("big/one", NULL, 0, big, big_len, 1, false, 0);
	struct msg *r1 = mk("sensors/1", props1, sizeof props1, "21.5", 4, 1, true, now + 1000);
	struct msg *r2 = mk("empty/props", NULL, 0, "v", 1, 0, true, 0);
	struct msg *r3 = mk("shared/retained", NULL, 0, "", 0, 2, true, 0);
	/* copies to compare with after the originals are gone */
	struct msg *c1 = mk("a/b/c", props1, sizeof props1, bin, sizeof bin, 1, false, now + 3600);
	struct msg *c2 = mk("x", NULL, 0, NULL, 0, 2, false, 0);
	struct msg *c3 = mk("big/one", NULL, 0, big, big_len, 1, false, 0);
	struct msg *cr1 = mk("sensors/1", props1, sizeof props1, "21.5", 4, 1, true, now + 1000);
	struct msg *cr2 = mk("empty/props", NULL, 0, "v", 1, 0, true, 0);
	struct msg *cr3 = mk("shared/retained", NULL, 0, "", 0, 2, true, 0);
	free(big);

	store_session_put(s, "alice", 3600, 5, 0);
	store_session_put(s, "bob", 0xffffffffu, 4, 1700000000);
	store_session_put(s, "k\xc3\xa4rl \xe2\x9c\x93", 60, 3, -5);
	store_sub_put(s, "alice", "a/b/#", 0x02, 7);
	store_sub_put(s, "alice", "$share/g1/sensors/+/temp", 0x01, 0);
	store_sub_put(s, "bob", "x", 0x2d, 268435455);
	store_sub_put(s, "bob", "$share/grp/x/#", 0x00, 3);

	uint64_t id1 = store_msg_ref(s, m1);
	CHECK(id1 != 0);
	CHECK_EQ_INT(store_msg_ref(s, m1), id1);
	CHECK_EQ_INT(atomic_load(&m1->store_id), id1);
	uint64_t id2 = store_msg_ref(s, m2), id3 = store_msg_ref(s, m3);
	CHECK(id2 != id1 && id3 != id1 && id3 != id2);
	store_dlv_put(s, "alice", 5, id1, 1, 3, 7, 10, false);
	store_dlv_put(s, "alice", 2, id2, 2, 0, 0, 0, false);
	store_dlv_put(s, "alice", 9, id1, 1, 1, 7, 0, false);
	store_dlv_put(s, "alice", 0xffffffffu, id3, 1, 0xff, 0xfffffff, 0xffff, false);
	store_dlv_put(s, "bob", 1, id1, 0, 0, 268435455, 0, false);
	store_dlv_put(s, "bob", 2, 0, 2, 4, 0, 77, false); /* PUBREL stage: no message */
	store_retain_put(s, r1);
	store_retain_put(s, r2);
	store_retain_put(s, r3);
	uint64_t id_r3 = store_msg_ref(s, r3); /* already stored by retain_put */
	CHECK_EQ_INT(id_r3, atomic_load(&r3->store_id));
	store_dlv_put(s, "bob", 3, id_r3, 2, 0, 0, 5, false);
	store_rel_put(s, "alice", 1);
	store_rel_put(s, "alice", 65535);
	store_rel_put(s, "bob", 42);
	/* Like sessions, keep the messages referenced until their writes are done (the store
	 * skips the insert of a message nothing else refers to). */
	store_sync(s);
	msg_unref(m1);
	msg_unref(m2);
	msg_unref(m3);
	msg_unref(r1);
	msg_unref(r2);
	msg_unref(r3);

	struct rec r;
	s = reopen_load(s, t.data, CFG_FSYNC_BATCH, &r);
	CHECK(s != NULL);
	if (!s)
		goto free_copies;
	CHECK_STR(r.order, "SsdrR");
	CHECK_EQ_INT(r.n_sessions, 3);
	struct r_session *se = find_session(&r, "alice");
	CHECK(se && se->expiry == 3600 && se->proto == 5 && se->disc == 0);
	se = find_session(&r, "bob");
	CHECK(se && se->expiry == 0xffffffffu && se->proto == 4 && se->disc == 1700000000);
	se = find_session(&r, "k\xc3\xa4rl \xe2\x9c\x93");
	CHECK(se && se->expiry == 60 && se->proto == 3 && se->disc == -5);

	CHECK_EQ_INT(r.n_subs, 4);
	struct r_sub *sb = find_sub(&r, "alice", "a/b/#");
	CHECK(sb && sb->opts == 0x02 && sb->sub_id == 7);
	sb = find_sub(&r, "alice", "$share/g1/sensors/+/temp");
	CHECK(sb && sb->opts == 0x01 && sb->sub_id == 0);
	sb = find_sub(&r, "bob", "x");
	CHECK(sb && sb->opts == 0x2d && sb->sub_id == 268435455);
	sb = find_sub(&r, "bob", "$share/grp/x/#");
	CHECK(sb && sb->opts == 0 && sb->sub_id == 3);

	/* deliveries: per session, in seq order */
	CHECK_EQ_INT(r.n_dlvs, 7);
	if (r.n_dlvs == 7) {
		static const char *const cids[] = { "alice", "alice", "alice", "alice", "bob", "bob", "bob" };
		static const uint32_t seqs[] = { 2, 5, 9, 0xffffffffu, 1, 2, 3 };
		for (size_t i = 0; i < 7; i++) {
			CHECK_STR(r.dlvs[i].cid, cids[i]);
			CHECK_EQ_INT(r.dlvs[i].seq, seqs[i]);
		}
	}
	struct r_dlv *d5 = find_dlv(&r, "alice", 5), *d9 = find_dlv(&r, "alice", 9), *db1 = find_dlv(&r, "bob", 1);
	struct r_dlv *d2 = find_dlv(&r, "alice", 2), *dmax = find_dlv(&r, "alice", 0xffffffffu);
	struct r_dlv *db2 = find_dlv(&r, "bob", 2), *db3 = find_dlv(&r, "bob", 3);
	CHECK(d5 && d9 && db1 && d2 && dmax && db2 && db3);
	if (d5 && d9 && db1 && d2 && dmax && db2 && db3) {
		CHECK(d5->qos == 1 && d5->flags == 3 && d5->sub_id == 7 && d5->pid == 10);
		CHECK(d9->qos == 1 && d9->flags == 1 && d9->sub_id == 7 && d9->pid == 0);
		CHECK(dmax->qos == 1 && dmax->flags == 0xff && dmax->sub_id == 0xfffffff && dmax->pid == 0xffff);
		CHECK(db1->qos == 0 && db1->sub_id == 268435455);
		CHECK(db2->m == NULL && db2->qos == 2 && db2->flags == 4 && db2->pid == 77);
		/* one rebuilt message shared by every delivery of it */
		CHECK(d5->m == d9->m && d5->m == db1->m);
		CHECK(msg_same(d5->m, c1));
		CHECK(msg_same(d2->m, c2));
		CHECK(msg_same(dmax->m, c3));
		CHECK(msg_same(db3->m, cr3));
		CHECK_EQ_INT(atomic_load(&d5->m->store_id), id1);
		CHECK_EQ_INT(atomic_load(&d5->m->refs), 3); /* three deliveries, the loader's map let go */
		/* storing a loaded message again is a no-op returning its id */
		int64_t before = q1(t.db, "SELECT count(*) FROM messages");
		CHECK_EQ_INT(store_msg_ref(s, d5->m), id1);
		store_sync(s);
		CHECK_EQ_INT(q1(t.db, "SELECT count(*) FROM messages"), before);
		/* retained shares the message with bob's delivery 3 */
		CHECK(find_retained(&r, "shared/retained") == db3->m);
	}
	CHECK_EQ_INT(r.n_rels, 3);
	CHECK(has_rel(&r, "alice", 1) && has_rel(&r, "alice", 65535) && has_rel(&r, "bob", 42));

	CHECK_EQ_INT(r.n_retained, 3);
	CHECK(msg_same(find_retained(&r, "sensors/1"), cr1));
	CHECK(msg_same(find_retained(&r, "empty/props"), cr2));
	CHECK(msg_same(find_retained(&r, "shared/retained"), cr3));
	rec_free(&r);
	store_close(s);
free_copies:
	msg_unref(c1);
	msg_unref(c2);
	msg_unref(c3);
	msg_unref(cr1);
	msg_unref(cr2);
	msg_unref(cr3);
out:
	tmp_remove(&t);
}

TEST(updates)
{
	struct tmp t;
	tmp_make(&t);
	struct store *s = open_ok(t.data, CFG_FSYNC_BATCH);
	CHECK(s != NULL);
	if (!s)
		goto out;
	struct msg *a = mk("t/a", NULL, 0, "A", 1, 1, false, 0);
	struct msg *b = mk("t/b", NULL, 0, "B", 1, 2, false, 0);
	struct msg *ra = mk("ret", NULL, 0, "old", 3, 1, true, 0);
	struct msg *rb = mk("ret", props1, sizeof props1, "new", 3, 0, true, 0);
	store_session_put(s, "c", 10, 5, 0);
	store_session_put(s, "c", 20, 4, 99);
	store_sub_put(s, "c", "f/#", 1, 1);
	store_sub_put(s, "c", "f/#", 2, 9);
	store_dlv_put(s, "c", 1, store_msg_ref(s, a), 1, 0, 0, 0, false);
	store_dlv_put(s, "c", 1, store_msg_ref(s, b), 2, 6, 5, 300, false); /* same seq: replaces */
	store_rel_put(s, "c", 7);
	store_rel_put(s, "c", 7);
	store_retain_put(s, ra);
	store_retain_put(s, rb);
	msg_unref(a);
	msg_unref(ra);
	store_sync(s);
	CHECK_EQ_INT(q1(t.db, "SELECT count(*) FROM dlvs"), 1);
	CHECK_EQ_INT(q1(t.db, "SELECT count(*) FROM rels"), 1);

	struct rec r;
	s = reopen_load(s, t.data, CFG_FSYNC_BATCH, &r);
	CHECK(s != NULL);
	if (s) {
		CHECK_EQ_INT(r.n_sessions, 1);
		CHECK(r.n_sessions == 1 && r.sessions[0].expiry == 20 && r.sessions[0].proto == 4 &&
		      r.sessions[0].disc == 99);
		CHECK_EQ_INT(r.n_subs, 1);
		CHECK(r.n_subs == 1 && r.subs[0].opts == 2 && r.subs[0].sub_id == 9);
		CHECK_EQ_INT(r.n_dlvs, 1);
		if (r.n_dlvs == 1) {
			CHECK(r.dlvs[0].qos == 2 && r.dlvs[0].flags == 6 && r.dlvs[0].sub_id == 5 &&
			      r.dlvs[0].pid == 300);
			CHECK(msg_same(r.dlvs[0].m, b));
		}
		CHECK_EQ_INT(r.n_rels, 1);
		CHECK_EQ_INT(r.n_retained, 1);
		CHECK(r.n_retained == 1 && msg_same(r.retained[0], rb));
		/* the replaced message and retained message are collected at the next open */
		rec_free(&r);
		store_close(s);
		s = open_ok(t.data, CFG_FSYNC_BATCH);
		CHECK_EQ_INT(q1(t.db, "SELECT count(*) FROM messages"), 2);
		store_close(s);
	}
	msg_unref(b);
	msg_unref(rb);
out:
	tmp_remove(&t);
}

TEST(deletes)
{
	struct tmp t;
	tmp_make(&t);
	struct store *s = open_ok(t.data, CFG_FSYNC_BATCH);
	CHECK(s != NULL);
	if (!s)
		goto out;
	struct msg *m = mk("d/1", NULL, 0, "x", 1, 1, false, 0);
	struct msg *ret1 = mk("keep", NULL, 0, "k", 1, 0, true, 0);
	struct msg *ret2 = mk("drop", NULL, 0, "d", 1, 0, true, 0);
	uint64_t id = store_msg_ref(s, m);
	const char *cids[] = { "gone", "stays" };
	for (int i = 0; i < 2; i++) {
		store_session_put(s, cids[i], 100, 5, 0);
		store_sub_put(s, cids[i], "a", 1, 0);
		store_sub_put(s, cids[i], "b", 1, 0);
		for (uint32_t q = 1; q <= 5; q++)
			store_dlv_put(s, cids[i], q, id, 1, 0, 0, (uint16_t)q, false);
		store_rel_put(s, cids[i], 1);
		store_rel_put(s, cids[i], 2);
	}
	store_retain_put(s, ret1);
	store_retain_put(s, ret2);
	store_session_del(s, "gone");
	store_sub_del(s, "stays", "a");
	store_dlv_del(s, "stays", 3);
	store_dlv_del(s, "stays", 42); /* absent: harmless */
	store_rel_del(s, "stays", 2);
	store_retain_del(s, "drop", 4);
	store_retain_del(s, "never", 5);
	store_sync(s);
	msg_unref(m);
	msg_unref(ret1);
	msg_unref(ret2);
	CHECK_EQ_INT(q1(t.db, "SELECT count(*) FROM subs WHERE client_id = 'gone'"), 0);
	CHECK_EQ_INT(q1(t.db, "SELECT count(*) FROM dlvs WHERE client_id = 'gone'"), 0);
	CHECK_EQ_INT(q1(t.db, "SELECT count(*) FROM rels WHERE client_id = 'gone'"), 0);

	struct rec r;
	s = reopen_load(s, t.data, CFG_FSYNC_BATCH, &r);
	CHECK(s != NULL);
	if (s) {
		CHECK_EQ_INT(r.n_sessions, 1);
		CHECK(find_session(&r, "gone") == NULL);
		CHECK_EQ_INT(r.n_subs, 1);
		CHECK(find_sub(&r, "stays", "b") != NULL);
		CHECK_EQ_INT(count_dlvs(&r, "gone"), 0);
		CHECK_EQ_INT(count_dlvs(&r, "stays"), 4);
		CHECK(find_dlv(&r, "stays", 3) == NULL);
		CHECK_EQ_INT(r.n_rels, 1);
		CHECK(has_rel(&r, "stays", 1));
		CHECK_EQ_INT(r.n_retained, 1);
		CHECK(find_retained(&r, "keep") != NULL);
		rec_free(&r);
		store_close(s);
	}
out:
	tmp_remove(&t);
}

TEST(gc)
{
	struct tmp t;
	tmp_make(&t);
	struct store *s = open_ok(t.data, CFG_FSYNC_BATCH);
	CHECK(s != NULL);
	if (!s)
		goto out;
	struct msg *unref = mk("gc/unreferenced", NULL, 0, "1", 1, 1, false, 0);
	struct msg *dlv_deleted = mk("gc/dlv-deleted", NULL, 0, "2", 1, 1, false, 0);
	struct msg *retained = mk("gc/retained", NULL, 0, "3", 1, 1, true, 0);
	struct msg *ret_deleted = mk("gc/retained-deleted", NULL, 0, "4", 1, 1, true, 0);
	struct msg *session_deleted = mk("gc/session-deleted", NULL, 0, "5", 1, 1, false, 0);
	struct msg *live = mk("gc/live", NULL, 0, "6", 1, 1, false, 0);
	store_session_put(s, "a", 100, 5, 0);
	store_session_put(s, "b", 100, 5, 0);
	store_msg_ref(s, unref);
	store_dlv_put(s, "a", 1, store_msg_ref(s, dlv_deleted), 1, 0, 0, 0, false);
	store_dlv_del(s, "a", 1);
	store_retain_put(s, retained);
	store_retain_put(s, ret_deleted);
	store_retain_del(s, "gc/retained-deleted", strlen("gc/retained-deleted"));
	store_dlv_put(s, "b", 1, store_msg_ref(s, session_deleted), 1, 0, 0, 0, false);
	store_session_del(s, "b");
	uint64_t live_id = store_msg_ref(s, live);
	store_dlv_put(s, "a", 2, live_id, 1, 0, 0, 0, false);
	store_sync(s);
	CHECK_EQ_INT(q1(t.db, "SELECT count(*) FROM messages"), 6); /* no deletes while running */
	store_close(s);

	s = open_ok(t.data, CFG_FSYNC_BATCH);
	CHECK(s != NULL);
	CHECK_EQ_INT(q1(t.db, "SELECT count(*) FROM messages"), 2);
	CHECK_EQ_INT(q1(t.db, "SELECT count(*) FROM messages WHERE topic = CAST('gc/retained' AS BLOB)"), 1);
	CHECK_EQ_INT(q1(t.db, "SELECT count(*) FROM messages WHERE topic = CAST('gc/live' AS BLOB)"), 1);
	if (s) {
		/* new ids never collide with surviving ones */
		struct msg *n = mk("gc/new", NULL, 0, "7", 1, 1, false, 0);
		CHECK(store_msg_ref(s, n) > live_id);
		msg_unref(n);
		store_close(s);
	}
	msg_unref(unref);
	msg_unref(dlv_deleted);
	msg_unref(retained);
	msg_unref(ret_deleted);
	msg_unref(session_deleted);
	msg_unref(live);
out:
	tmp_remove(&t);
}

/* ---- concurrency ---- */

#define CW_THREADS 4
#define CW_ITERS 10000
#define CW_POOL 64

struct cw_arg {
	struct store *s;
	int t;
	struct msg **pool;
	uint64_t ids[CW_POOL];
	size_t ops;
};

static void *cw_main(void *p)
{
	struct cw_arg *a = p;
	char cid[16];
	snprintf(cid, sizeof cid, "cw%d", a->t);
	store_session_put(a->s, cid, 3600, 5, 0);
	a->ops = 1;
	for (uint32_t i = 0; i < CW_ITERS; i++) {
		size_t k = (i + (size_t)a->t * 7) % CW_POOL;
		uint64_t id = store_msg_ref(a->s, a->pool[k]);
		if (a->ids[k] && a->ids[k] != id)
			a->ids[k] = UINT64_MAX; /* inconsistent: flagged */
		else
			a->ids[k] = id;
		/* the final state depends on the order: put, replace, maybe delete */
		store_dlv_put(a->s, cid, i, id, 1, 1, 0, 0, false);
		store_dlv_put(a->s, cid, i, id, 1, 2, i, (uint16_t)(i & 0xffff), false);
		a->ops += 2;
		if (i % 4 == 0) {
			store_dlv_del(a->s, cid, i);
			a->ops++;
		}
		if (i % 100 == 0) {
			store_rel_put(a->s, cid, (uint16_t)i);
			store_rel_del(a->s, cid, (uint16_t)(i - 100));
			a->ops += 2;
		}
	}
	return NULL;
}

TEST(concurrent_writers)
{
	struct tmp t;
	tmp_make(&t);
	struct store *s = open_ok(t.data, CFG_FSYNC_BATCH);
	CHECK(s != NULL);
	if (!s)
		goto out;
	struct msg *pool[CW_POOL], *copies[CW_POOL];
	for (int k = 0; k < CW_POOL; k++) {
		char topic[32];
		snprintf(topic, sizeof topic, "pool/%d", k);
		pool[k] = mk(topic, NULL, 0, topic, strlen(topic), 1, false, 0);
		copies[k] = mk(topic, NULL, 0, topic, strlen(topic), 1, false, 0);
	}
	struct cw_arg args[CW_THREADS];
	pthread_t th[CW_THREADS];
	uint64_t t0 = clock_mono_ns();
	for (int i = 0; i < CW_THREADS; i++) {
		memset(&args[i], 0, sizeof args[i]);
		args[i].s = s;
		args[i].t = i;
		args[i].pool = pool;
		pthread_create(&th[i], NULL, cw_main, &args[i]);
	}
	size_t ops = 0;
	for (int i = 0; i < CW_THREADS; i++) {
		pthread_join(th[i], NULL);
		ops += args[i].ops;
	}
	for (int k = 0; k < CW_POOL; k++)
		msg_unref(pool[k]);
	store_sync(s);
	double secs = (double)(clock_mono_ns() - t0) / 1e9;
	fprintf(stderr, "  concurrent: %d threads, %zu ops in %.3f s (%.0f ops/s, BATCH)\n", CW_THREADS, ops, secs,
		(double)ops / secs);
	/* every thread saw one id per pooled message, and each message was inserted once */
	for (int k = 0; k < CW_POOL; k++)
		for (int i = 1; i < CW_THREADS; i++)
			CHECK(args[i].ids[k] == args[0].ids[k] && args[i].ids[k] != UINT64_MAX);
	CHECK_EQ_INT(q1(t.db, "SELECT count(*) FROM messages"), CW_POOL);

	struct rec r;
	s = reopen_load(s, t.data, CFG_FSYNC_BATCH, &r);
	CHECK(s != NULL);
	if (s) {
		CHECK_EQ_INT(r.n_sessions, CW_THREADS);
		CHECK_EQ_INT(r.n_dlvs, (size_t)CW_THREADS * (CW_ITERS - CW_ITERS / 4));
		CHECK_EQ_INT(r.n_rels, CW_THREADS);
		size_t bad = 0;
		struct msg *seen[CW_POOL] = { 0 };
		for (int ti = 0; ti < CW_THREADS; ti++) {
			char cid[16];
			snprintf(cid, sizeof cid, "cw%d", ti);
			int64_t last = -1;
			size_t n = 0;
			for (size_t i = 0; i < r.n_dlvs; i++) {
				struct r_dlv *d = &r.dlvs[i];
				if (strcmp(d->cid, cid) != 0)
					continue;
				n++;
				size_t k = (d->seq + (size_t)ti * 7) % CW_POOL;
				if ((int64_t)d->seq <= last || d->seq % 4 == 0 || d->flags != 2 || d->sub_id != d->seq ||
				    d->pid != (uint16_t)d->seq || !msg_same(d->m, copies[k]))
					bad++;
				if (!seen[k])
					seen[k] = d->m;
				else if (seen[k] != d->m)
					bad++; /* one rebuilt object per stored message */
				last = d->seq;
			}
			CHECK_EQ_INT(n, CW_ITERS - CW_ITERS / 4);
			CHECK(has_rel(&r, cid, (uint16_t)(CW_ITERS - 100)));
		}
		CHECK_EQ_INT(bad, 0);
		rec_free(&r);
		store_close(s);
	}
	for (int k = 0; k < CW_POOL; k++)
		msg_unref(copies[k]);
out:
	tmp_remove(&t);
}

struct sync_arg {
	struct store *s;
	const char *db;
	int t;
	int failures;
};

static void *sync_main(void *p)
{
	struct sync_arg *a = p;
	char cid[16];
	snprintf(cid, sizeof cid, "sync%d", a->t);
	for (int round = 0; round < 20; round++) {
		for (int i = 0; i < 50; i++)
			store_rel_put(a->s, cid, (uint16_t)(round * 50 + i));
		store_sync(a->s);
		char sql[128];
		snprintf(sql, sizeof sql, "SELECT count(*) FROM rels WHERE client_id = '%s'", cid);
		if (q1(a->db, sql) != (round + 1) * 50)
			a->failures++;
	}
	return NULL;
}

TEST(sync_semantics)
{
	struct tmp t;
	tmp_make(&t);
	struct store *s = open_ok(t.data, CFG_FSYNC_BATCH);
	CHECK(s != NULL);
	if (!s)
		goto out;
	store_sync(s); /* empty queue: returns at once */
	for (int i = 0; i < 1000; i++)
		store_rel_put(s, "one", (uint16_t)i);
	store_sync(s);
	CHECK_EQ_INT(q1(t.db, "SELECT count(*) FROM rels"), 1000);
	store_sync(s);

	/* several threads writing and syncing at once: each sees its own writes committed */
	struct sync_arg a[4];
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		a[i] = (struct sync_arg){ s, t.db, i, 0 };
		pthread_create(&th[i], NULL, sync_main, &a[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CHECK_EQ_INT(a[i].failures, 0);
	}

	/* store_close drains what was queued without a sync */
	for (int i = 0; i < 5000; i++)
		store_dlv_put(s, "drain", (uint32_t)i, 0, 2, 0, 0, (uint16_t)i, false);
	store_session_put(s, "drain", 1, 5, 0);
	store_close(s);
	CHECK_EQ_INT(q1(t.db, "SELECT count(*) FROM dlvs WHERE client_id = 'drain'"), 5000);
	/* checkpointed at close: the WAL is empty or gone */
	char wal[160];
	snprintf(wal, sizeof wal, "%s-wal", t.db);
	struct stat sb;
	CHECK(stat(wal, &sb) != 0 || sb.st_size == 0);
out:
	tmp_remove(&t);
}

static void write_file(const char *path, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, p, n) != (ssize_t)n)
		abort();
	close(fd);
}

/* A database with some substance (several hundred pages). */
static void make_valid_db(const char *dir)
{
	struct store *s = open_ok(dir, CFG_FSYNC_NEVER);
	if (!s)
		abort();
	uint8_t payload[1500];
	for (size_t i = 0; i < sizeof payload; i++)
		payload[i] = (uint8_t)i;
	store_session_put(s, "c", 100, 5, 0);
	struct msg *ms[600];
	for (uint32_t i = 0; i < 600; i++) {
		char topic[32];
		snprintf(topic, sizeof topic, "t/%u", i);
		ms[i] = mk(topic, NULL, 0, payload, sizeof payload, 1, false, 0);
		store_dlv_put(s, "c", i, store_msg_ref(s, ms[i]), 1, 0, 0, 0, false);
		store_sub_put(s, "c", topic, 1, i);
	}
	store_close(s); /* the deliveries still hold their messages */
	for (uint32_t i = 0; i < 600; i++)
		msg_unref(ms[i]);
}

struct notify_rec {
	const char *db;
	int64_t rows;   /* rows committed when the callback ran */
	int order;      /* 1-based call order */
	int durable;    /* -1 until called */
};
static int notify_calls;

static void notify_cb(void *arg, bool durable)
{
	struct notify_rec *r = arg;
	if (r->db)
		r->rows = q1(r->db, "SELECT count(*) FROM rels WHERE client_id = 'n'");
	r->order = ++notify_calls;
	r->durable = durable;
}

/* Run fn on a fresh store once per fsync mode; fn closes the store. */
static void each_fsync_mode(void (*fn)(struct tmp *t, struct store *s, enum cfg_fsync mode))
{
	static const enum cfg_fsync modes[] = { CFG_FSYNC_ALWAYS, CFG_FSYNC_BATCH, CFG_FSYNC_NEVER };
	for (int mi = 0; mi < 3; mi++) {
		struct tmp t;
		tmp_make(&t);
		struct store *s = open_ok(t.data, modes[mi]);
		CHECK(s != NULL);
		if (s)
			fn(&t, s, modes[mi]);
		tmp_remove(&t);
	}
}

static void notify_in_mode(struct tmp *t, struct store *s, enum cfg_fsync mode)
{
	notify_calls = 0;
	struct notify_rec r[2] = { { t->db, -1, 0, -1 }, { t->db, -1, 0, -1 } };
	uint64_t ops = store_thread_ops();
	for (int i = 0; i < 100; i++)
		store_rel_put(s, "n", (uint16_t)i);
	store_notify(s, ops, notify_cb, &r[0]);
	for (int i = 100; i < 200; i++)
		store_rel_put(s, "n", (uint16_t)i);
	store_notify(s, ops + 100, notify_cb, &r[1]);
	/* notifications are not writes */
	CHECK_EQ_INT((int64_t)(store_thread_ops() - ops), 200);
	store_sync(s);
	/* called after everything queued before them was committed, in order */
	CHECK(r[0].rows >= 100);
	CHECK_EQ_INT(r[1].rows, 200);
	CHECK_EQ_INT(r[0].order, 1);
	CHECK_EQ_INT(r[1].order, 2);
	CHECK(r[0].durable == 1 && r[1].durable == 1);
	if (mode == CFG_FSYNC_ALWAYS)
		CHECK_EQ_INT(r[0].rows, 100); /* released right after its own writes */
	store_close(s);
}

TEST(notify)
{
	each_fsync_mode(notify_in_mode);
}

TEST(corruption)
{
	struct tmp t;
	tmp_make(&t);
	char err[512];

	/* garbage bytes */
	mkdir(t.data, 0700);
	uint8_t junk[16384];
	uint32_t x = 12345;
	for (size_t i = 0; i < sizeof junk; i++) {
		x = x * 1103515245u + 12345u;
		junk[i] = (uint8_t)(x >> 16);
	}
	write_file(t.db, junk, sizeof junk);
	err[0] = 0;
	struct store *s = store_open(t.data, CFG_FSYNC_BATCH, err, sizeof err);
	CHECK(s == NULL);
	store_close(s);
	char expect[256];
	snprintf(expect, sizeof expect,
		 "%s: file is not a database (move it aside to start with an empty store, or restore a backup)", t.db);
	CHECK_STR(err, expect);
	/* and the file was left alone */
	uint8_t back[sizeof junk];
	int fd = open(t.db, O_RDONLY);
	CHECK(fd >= 0 && read(fd, back, sizeof back) == (ssize_t)sizeof back);
	close(fd);
	CHECK_MEM(back, junk, sizeof junk);

	/* a valid database truncated to half its size */
	unlink(t.db);
	make_valid_db(t.data);
	struct stat sb;
	CHECK(stat(t.db, &sb) == 0 && sb.st_size > 100000);
	CHECK(truncate(t.db, sb.st_size / 2) == 0);
	err[0] = 0;
	s = store_open(t.data, CFG_FSYNC_BATCH, err, sizeof err);
	if (s) {
		struct rec r;
		memset(&r, 0, sizeof r);
		struct store_loader ld = { &r, cb_retained, cb_session, cb_sub, cb_dlv, cb_rel };
		CHECK(!store_load(s, &ld, err, sizeof err));
		rec_free(&r);
		store_close(s);
	}
	fprintf(stderr, "  truncated: %s\n", err);
	CHECK(strstr(err, "database disk image is malformed") != NULL);
	CHECK(strstr(err, t.db) != NULL);

	/* a valid database with garbage over pages in the middle */
	unlink(t.db);
	make_valid_db(t.data);
	CHECK(stat(t.db, &sb) == 0);
	fd = open(t.db, O_WRONLY);
	CHECK(fd >= 0 && pwrite(fd, junk, sizeof junk, sb.st_size / 3) == (ssize_t)sizeof junk);
	close(fd);
	err[0] = 0;
	s = store_open(t.data, CFG_FSYNC_BATCH, err, sizeof err);
	if (s) {
		struct rec r;
		memset(&r, 0, sizeof r);
		struct store_loader ld = { &r, cb_retained, cb_session, cb_sub, cb_dlv, cb_rel };
		CHECK(!store_load(s, &ld, err, sizeof err));
		rec_free(&r);
		store_close(s);
	}
	fprintf(stderr, "  overwritten: %s\n", err);
	CHECK(strstr(err, "malformed") != NULL);

	/* rows with impossible values: open works, load refuses with a clear message */
	unlink(t.db);
	make_valid_db(t.data);
	x1(t.db, "UPDATE messages SET qos = 7 WHERE id = (SELECT max(id) FROM messages)");
	s = open_ok(t.data, CFG_FSYNC_BATCH);
	CHECK(s != NULL);
	if (s) {
		struct rec r;
		memset(&r, 0, sizeof r);
		struct store_loader ld = { &r, cb_retained, cb_session, cb_sub, cb_dlv, cb_rel };
		err[0] = 0;
		CHECK(!store_load(s, &ld, err, sizeof err));
		fprintf(stderr, "  bad row: %s\n", err);
		CHECK(strstr(err, "invalid row in messages") != NULL && strstr(err, t.db) != NULL);
		CHECK_EQ_INT(r.n_dlvs, 599); /* what came before was delivered, and is freed by rec_free */
		rec_free(&r);
		store_close(s);
	}

	/* just the magic string */
	unlink(t.db);
	write_file(t.db, "SQLite format 3", 16);
	err[0] = 0;
	s = store_open(t.data, CFG_FSYNC_BATCH, err, sizeof err);
	CHECK(s == NULL);
	store_close(s);
	CHECK(strstr(err, "file is not a database") != NULL);

	/* a schema version from the future */
	unlink(t.db);
	make_valid_db(t.data);
	x1(t.db, "PRAGMA user_version = 99");
	err[0] = 0;
	s = store_open(t.data, CFG_FSYNC_BATCH, err, sizeof err);
	CHECK(s == NULL);
	store_close(s);
	CHECK(strstr(err, "schema version 99") != NULL);

	/* some other application's database */
	unlink(t.db);
	x1(t.db, "CREATE TABLE sessions(x); PRAGMA user_version = 0");
	err[0] = 0;
	s = store_open(t.data, CFG_FSYNC_BATCH, err, sizeof err);
	CHECK(s == NULL);
	store_close(s);
	fprintf(stderr, "  foreign: %s\n", err);
	CHECK(strstr(err, t.db) != NULL);
	CHECK_EQ_INT(q1(t.db, "SELECT count(*) FROM sqlite_schema"), 1); /* left untouched */
	tmp_remove(&t);
}

static void *read_file(const char *path, size_t *len)
{
	struct stat sb;
	int fd = open(path, O_RDONLY);
	if (fd < 0 || fstat(fd, &sb) != 0)
		abort();
	uint8_t *p = xmalloc((size_t)sb.st_size + 1);
	if (read(fd, p, (size_t)sb.st_size) != (ssize_t)sb.st_size)
		abort();
	close(fd);
	*len = (size_t)sb.st_size;
	return p;
}

/* Open and load; returns 0 when both worked, 1 when open failed, 2 when load failed.
 * A failure must come with a message naming the file. */
static int try_open_load(struct tmp *t)
{
	char err[512] = "";
	struct store *s = store_open(t->data, CFG_FSYNC_NEVER, err, sizeof err);
	int res = 1;
	if (s) {
		struct rec r;
		memset(&r, 0, sizeof r);
		struct store_loader ld = { &r, cb_retained, cb_session, cb_sub, cb_dlv, cb_rel };
		res = store_load(s, &ld, err, sizeof err) ? 0 : 2;
		rec_free(&r);
		store_close(s);
	}
	if (res)
		CHECK(strstr(err, t->db) != NULL);
	return res;
}

/* Damaged files of many shapes: never a crash (or sanitizer report), always either a
 * working store or a clear error. */
TEST(corruption_sweep)
{
	struct tmp t;
	tmp_make(&t);
	make_valid_db(t.data);
	size_t len;
	uint8_t *orig = read_file(t.db, &len);
	uint8_t *buf = xmalloc(len);
	int outcome[3] = { 0, 0, 0 };
	/* truncations */
	const size_t cuts[] = { 0, 1, 15, 16, 99, 100, 101, 512, 4095, 4096, 4097, 8192, len / 3, len / 2,
				len - 4096, len - 1 };
	for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
		unlink(t.db);
		write_file(t.db, orig, cuts[i]);
		int res = try_open_load(&t);
		outcome[res]++;
		if (cuts[i] == 0)
			CHECK_EQ_INT(res, 0); /* an empty file is a new database */
		else if (res == 0)
			fprintf(stderr, "  truncated to %zu of %zu bytes: opened and loaded\n", cuts[i], len);
	}
	/* random byte damage (header excluded half of the time) */
	uint32_t x = 777;
	for (int iter = 0; iter < 60; iter++) {
		memcpy(buf, orig, len);
		for (int k = 0; k < 1 + iter % 40; k++) {
			x = x * 1103515245u + 12345u;
			size_t off = (iter & 1) ? 100 + (x >> 4) % (len - 100) : (x >> 4) % len;
			x = x * 1103515245u + 12345u;
			buf[off] ^= (uint8_t)(1 + (x >> 16) % 255);
		}
		unlink(t.db);
		write_file(t.db, buf, len);
		outcome[try_open_load(&t)]++;
	}
	fprintf(stderr, "  sweep: %d opened and loaded, %d refused at open, %d failed at load\n", outcome[0],
		outcome[1], outcome[2]);
	free(orig);
	free(buf);
	tmp_remove(&t);
}

TEST(data_dir)
{
	struct tmp t;
	tmp_make(&t);
	char err[512], dir[192];
	struct stat sb;

	/* missing, nested: created with 0700; database file 0600 (and its WAL) */
	snprintf(dir, sizeof dir, "%s/a/b/c", t.root);
	struct store *s = open_ok(dir, CFG_FSYNC_BATCH);
	CHECK(s != NULL);
	CHECK(stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode) && (sb.st_mode & 0777) == 0700);
	char path[256];
	snprintf(path, sizeof path, "%s/bulwark.db", dir);
	CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600);
	if (s) {
		store_session_put(s, "x", 1, 5, 0);
		store_sync(s);
		snprintf(path, sizeof path, "%s/bulwark.db-wal", dir);
		CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600);
		CHECK_EQ_INT(atomic_load(&s->next_id), 1);
		store_close(s);
	}

	/* data_dir is a file */
	snprintf(dir, sizeof dir, "%s/file", t.root);
	write_file(dir, "x", 1);
	s = store_open(dir, CFG_FSYNC_BATCH, err, sizeof err);
	CHECK(s == NULL);
	CHECK(strstr(err, "not a directory") != NULL);
	/* a parent is a file */
	snprintf(dir, sizeof dir, "%s/file/sub", t.root);
	s = store_open(dir, CFG_FSYNC_BATCH, err, sizeof err);
	CHECK(s == NULL);
	CHECK(strstr(err, "cannot create directory") != NULL);
	/* the database path is a directory */
	snprintf(dir, sizeof dir, "%s/dbdir", t.root);
	snprintf(path, sizeof path, "%s/bulwark.db", dir);
	mkdir(dir, 0700);
	mkdir(path, 0700);
	s = store_open(dir, CFG_FSYNC_BATCH, err, sizeof err);
	CHECK(s == NULL);
	CHECK(strstr(err, "not a regular file") != NULL);
	/* read-only data dir (root ignores permissions: then only the message is shown) */
	snprintf(dir, sizeof dir, "%s/ro", t.root);
	mkdir(dir, 0500);
	s = store_open(dir, CFG_FSYNC_BATCH, err, sizeof err);
	if (geteuid() != 0) {
		CHECK(s == NULL);
		CHECK(strstr(err, "not writable") != NULL);
	} else {
		fprintf(stderr, "  (running as root: read-only data dir check skipped)\n");
	}
	store_close(s);
	chmod(dir, 0700);
	/* an unreadable database file: named, with the cause (root reads anything: skipped;
	 * tests/e2e/test_durability_corrupt.py runs this case as nobody) */
	s = open_ok(dir, CFG_FSYNC_BATCH);
	CHECK(s != NULL);
	store_close(s);
	snprintf(path, sizeof path, "%s/bulwark.db", dir);
	chmod(path, 0);
	s = store_open(dir, CFG_FSYNC_BATCH, err, sizeof err);
	if (geteuid() != 0) {
		CHECK(s == NULL);
		CHECK(strstr(err, path) == err && strstr(err, ": Permission denied (the broker, running as uid ") != NULL);
	} else {
		fprintf(stderr, "  (running as root: unreadable database check skipped)\n");
	}
	store_close(s);
	chmod(path, 0600);
	/* read-only file system */
	s = store_open("/proc/bulwark-test", CFG_FSYNC_BATCH, err, sizeof err);
	CHECK(s == NULL);
	fprintf(stderr, "  /proc: %s\n", s ? "" : err);
	store_close(s);
	tmp_remove(&t);
}

TEST(fsync_modes)
{
	static const enum cfg_fsync modes[] = { CFG_FSYNC_ALWAYS, CFG_FSYNC_BATCH, CFG_FSYNC_NEVER };
	static const char *const names[] = { "always", "batch", "never" };
	for (int mi = 0; mi < 3; mi++) {
		struct tmp t;
		tmp_make(&t);
		struct store *s = open_ok(t.data, modes[mi]);
		CHECK(s != NULL);
		if (!s) {
			tmp_remove(&t);
			continue;
		}
		sqlite3_stmt *st = NULL;
		sqlite3_prepare_v2(s->db, "PRAGMA synchronous", -1, &st, NULL);
		CHECK(sqlite3_step(st) == SQLITE_ROW);
		CHECK_EQ_INT(sqlite3_column_int(st, 0), modes[mi] == CFG_FSYNC_NEVER ? 0 : 2);
		sqlite3_finalize(st);
		sqlite3_prepare_v2(s->db, "PRAGMA journal_mode", -1, &st, NULL);
		CHECK(sqlite3_step(st) == SQLITE_ROW);
		CHECK_STR((const char *)sqlite3_column_text(st, 0), "wal");
		sqlite3_finalize(st);

		struct msg *m = mk("fs/m", props1, sizeof props1, "p", 1, 2, false, 0);
		struct msg *rm = mk("fs/r", NULL, 0, "r", 1, 1, true, 0);
		uint64_t t0 = clock_mono_ns();
		store_session_put(s, "fs", 5, 5, 0);
		store_sub_put(s, "fs", "fs/#", 2, 1);
		for (uint32_t i = 0; i < 300; i++)
			store_dlv_put(s, "fs", i, store_msg_ref(s, m), 2, 0, 1, (uint16_t)(i + 1), false);
		for (uint32_t i = 0; i < 300; i += 2)
			store_dlv_del(s, "fs", i);
		store_rel_put(s, "fs", 9);
		store_retain_put(s, rm);
		store_sync(s);
		fprintf(stderr, "  fsync=%s: 454 ops in %.1f ms\n", names[mi], (double)(clock_mono_ns() - t0) / 1e6);
		msg_unref(rm);
		struct rec r;
		s = reopen_load(s, t.data, modes[mi], &r);
		CHECK(s != NULL);
		if (s) {
			CHECK_EQ_INT(r.n_sessions, 1);
			CHECK_EQ_INT(r.n_subs, 1);
			CHECK_EQ_INT(r.n_dlvs, 150);
			CHECK(r.n_dlvs == 150 && r.dlvs[0].seq == 1 && r.dlvs[149].seq == 299 && msg_same(r.dlvs[0].m, m));
			CHECK_EQ_INT(r.n_rels, 1);
			CHECK_EQ_INT(r.n_retained, 1);
			rec_free(&r);
			store_close(s);
		}
		msg_unref(m);
		tmp_remove(&t);
	}
}

TEST(write_errors)
{
	struct tmp t;
	tmp_make(&t);
	struct store *s = open_ok(t.data, CFG_FSYNC_BATCH);
	CHECK(s != NULL);
	if (!s)
		goto out;
	char logpath[160];
	snprintf(logpath, sizeof logpath, "%s/log", t.root);
	store_session_put(s, "w", 100, 5, 0);
	store_sync(s);
	/* Simulated disk full: the database may not grow any more. */
	CHECK(sqlite3_exec(s->db, "PRAGMA max_page_count = 1", NULL, NULL, NULL) == SQLITE_OK);
	size_t big_len = 256 * 1024;
	uint8_t *big = xcalloc(1, big_len);
	struct msg *m1 = mk("w/1", NULL, 0, big, big_len, 1, false, 0);
	struct msg *m2 = mk("w/2", NULL, 0, big, big_len, 1, false, 0);
	struct msg *m3 = mk("w/3", NULL, 0, "small", 5, 1, false, 0);
	free(big);
	int saved = capture_begin(logpath);
	uint64_t id1 = store_msg_ref(s, m1);
	store_sync(s); /* returns although the batch failed */
	store_retain_put(s, m2);
	store_sync(s);
	CHECK(sqlite3_exec(s->db, "PRAGMA max_page_count = 1073741823", NULL, NULL, NULL) == SQLITE_OK);
	s->failed_ms -= STORE_RECOVERED_AFTER_MS; /* space came back a while ago */
	/* The broker still refers to m1 by its id; that insert was dropped. */
	store_dlv_put(s, "w", 3, id1, 1, 0, 0, 0, false);
	store_dlv_put(s, "w", 4, store_msg_ref(s, m3), 1, 0, 0, 0, false);
	store_sync(s);
	capture_end(saved);
	CHECK_EQ_INT(count_in_file(logpath, " error: "), 1); /* logged once per kind */
	CHECK_EQ_INT(count_in_file(logpath, "database or disk is full"), 1);
	CHECK_EQ_INT(count_in_file(logpath, "writes succeed again ("), 1);
	CHECK_EQ_INT(s->dropped, 2);

	/* the live store loads what was committed and skips the dangling delivery */
	struct rec r;
	CHECK(load_rec(s, &r));
	CHECK_EQ_INT(r.n_dlvs, 1);
	CHECK(r.n_dlvs == 1 && r.dlvs[0].seq == 4 && msg_same(r.dlvs[0].m, m3));
	CHECK_EQ_INT(r.n_retained, 0);
	rec_free(&r);
	store_close(s);
	/* the dangling row is collected at the next open */
	CHECK_EQ_INT(q1(t.db, "SELECT count(*) FROM dlvs"), 2);
	s = open_ok(t.data, CFG_FSYNC_BATCH);
	CHECK_EQ_INT(q1(t.db, "SELECT count(*) FROM dlvs"), 1);
	if (s) {
		/* and a new id is never one that a dangling reference used */
		struct msg *m4 = mk("w/4", NULL, 0, "", 0, 0, false, 0);
		CHECK(store_msg_ref(s, m4) > id1);
		msg_unref(m4);
		store_close(s);
	}
	msg_unref(m1);
	msg_unref(m2);
	msg_unref(m3);
out:
	tmp_remove(&t);
}

/* Simulated disk full on the store's own connection (the store thread is idle between
 * store_sync calls): the database may not grow. */
static void disk_full(struct store *s, bool full)
{
	CHECK(sqlite3_exec(s->db, full ? "PRAGMA max_page_count = 1" : "PRAGMA max_page_count = 1073741823", NULL,
			   NULL, NULL) == SQLITE_OK);
}

/* Queue a write that cannot fit in a full database: a new 256 KB retained message. */
static void put_big(struct store *s)
{
	static uint8_t zeros[256 * 1024];
	static unsigned n;
	char topic[32];
	snprintf(topic, sizeof topic, "nf/big/%u", n++);
	struct msg *m = mk(topic, NULL, 0, zeros, sizeof zeros, 1, true, 0);
	store_retain_put(s, m);
	msg_unref(m);
}

struct failing_writer {
	struct store *s;
	struct notify_rec rec;
};

/* Another thread: a write that fails, then its notification. */
static void *failing_writer_main(void *p)
{
	struct failing_writer *fw = p;
	uint64_t since = store_thread_ops();
	put_big(fw->s);
	store_notify(fw->s, since, notify_cb, &fw->rec);
	return NULL;
}

/* A notification reports durable = false exactly when a write its thread queued after
 * `since` was dropped; write errors are logged once, not once per failure. */
static void write_errors_in_mode(struct tmp *t, struct store *s, enum cfg_fsync mode)
{
	char logpath[160];
	snprintf(logpath, sizeof logpath, "%s/log", t->root);
	store_session_put(s, "nf", 100, 5, 0);
	store_sync(s);
	int saved = capture_begin(logpath);
	disk_full(s, true);
	struct notify_rec r[6];
	memset(r, 0, sizeof r);
	for (int i = 0; i < 6; i++)
		r[i].durable = -1;

	/* 0: its own write fails */
	uint64_t since = store_thread_ops();
	put_big(s);
	store_notify(s, since, notify_cb, &r[0]);
	/* 1: queued before a failing write of its own thread: not its write */
	since = store_thread_ops();
	store_notify(s, since, notify_cb, &r[1]);
	put_big(s);
	/* 2: another thread's write fails; this thread wrote nothing since */
	struct failing_writer other = { s, { NULL, -1, 0, -1 } };
	pthread_t th;
	pthread_create(&th, NULL, failing_writer_main, &other);
	pthread_join(th, NULL);
	since = store_thread_ops();
	store_notify(s, since, notify_cb, &r[2]);
	/* many more failing batches: still one error line */
	for (int i = 0; i < 50; i++) {
		put_big(s);
		store_sync(s);
	}
	CHECK(r[0].durable == 0);
	CHECK(r[1].durable == 1);
	CHECK(other.rec.durable == 0);
	CHECK(r[2].durable == 1);
	CHECK_EQ_INT(s->dropped, 53);

	/* space again: a small write commits and its notification is durable; recovery is
	 * logged once the last failure is STORE_RECOVERED_AFTER_MS old */
	disk_full(s, false);
	store_rel_put(s, "nf", 3); /* right after a failure: not a recovery yet */
	store_sync(s);
	CHECK(s->failing);
	CHECK_EQ_INT(count_in_file(logpath, "writes succeed again ("), 0);
	s->failed_ms -= STORE_RECOVERED_AFTER_MS;
	since = store_thread_ops();
	store_rel_put(s, "nf", 1);
	store_notify(s, since, notify_cb, &r[3]);
	store_sync(s);
	CHECK(r[3].durable == 1);
	CHECK(!s->failing);
	CHECK_EQ_INT(count_in_file(logpath, "writes succeed again ("), 1);
	CHECK_EQ_INT(q1(t->db, "SELECT count(*) FROM rels"), 2);

	/* flapping (fail, succeed at once, fail) within the interval: no new lines */
	disk_full(s, true);
	since = store_thread_ops();
	put_big(s);
	store_notify(s, since, notify_cb, &r[4]);
	store_sync(s);
	disk_full(s, false);
	store_rel_put(s, "nf", 2);
	store_sync(s);
	CHECK(r[4].durable == 0);

	/* once the interval has passed, a failure is reported again with the count since */
	disk_full(s, true);
	put_big(s);
	store_sync(s);
	s->err_logged_ms -= STORE_ERR_LOG_INTERVAL_MS;
	since = store_thread_ops();
	put_big(s);
	store_notify(s, since, notify_cb, &r[5]);
	store_sync(s);
	CHECK(r[5].durable == 0);
	disk_full(s, false);
	capture_end(saved);
	/* the first failure, then (after the recovery line) the next one once due, counting
	 * the drops that were not reported meanwhile */
	CHECK_EQ_INT(count_in_file(logpath, " error: "), 2);
	CHECK_EQ_INT(count_in_file(logpath, "retained put failed: database or disk is full; "), 2);
	CHECK_EQ_INT(scan_file(logpath, "retained put failed: database or disk is full; ", true), 56);
	CHECK_EQ_INT(s->dropped, 56);
	CHECK_EQ_INT(count_in_file(logpath, "writes succeed again ("), 1);
	/* and while failing all along, the next report says so */
	disk_full(s, true);
	saved = capture_begin(logpath);
	for (int i = 0; i < 2; i++) {
		s->err_logged_ms -= STORE_ERR_LOG_INTERVAL_MS;
		put_big(s);
		store_sync(s);
	}
	capture_end(saved);
	disk_full(s, false);
	CHECK_EQ_INT(count_in_file(logpath, " error: "), 2);
	CHECK_EQ_INT(count_in_file(logpath, "writes still fail (retained put failed: database or disk is full); 1 "
					    "operations not persisted since the last report"),
		     2);
	store_close(s);
}

TEST(notify_after_write_errors)
{
	each_fsync_mode(write_errors_in_mode);
}

TEST(expired_retained)
{
	struct tmp t;
	tmp_make(&t);
	struct store *s = open_ok(t.data, CFG_FSYNC_BATCH);
	CHECK(s != NULL);
	if (!s)
		goto out;
	int64_t now = clock_wall_s();
	struct msg *old = mk("exp/old", NULL, 0, "o", 1, 1, true, now - 10);
	struct msg *fresh = mk("exp/fresh", NULL, 0, "f", 1, 1, true, now + 1000);
	struct msg *qd = mk("exp/queued", NULL, 0, "q", 1, 1, false, now - 10);
	store_retain_put(s, old);
	store_retain_put(s, fresh);
	store_session_put(s, "e", 100, 5, 0);
	store_dlv_put(s, "e", 1, store_msg_ref(s, qd), 1, 0, 0, 0, false);
	struct rec r;
	s = reopen_load(s, t.data, CFG_FSYNC_BATCH, &r);
	CHECK(s != NULL);
	if (s) {
		CHECK_EQ_INT(r.n_retained, 1);
		CHECK(find_retained(&r, "exp/fresh") != NULL);
		/* deliveries are passed on with their expiry; the broker decides */
		CHECK_EQ_INT(r.n_dlvs, 1);
		CHECK(r.n_dlvs == 1 && r.dlvs[0].m->expiry_at == now - 10);
		rec_free(&r);
		store_sync(s);
		CHECK_EQ_INT(q1(t.db, "SELECT count(*) FROM retained"), 1);
		store_close(s);
	}
	msg_unref(old);
	msg_unref(fresh);
	msg_unref(qd);
out:
	tmp_remove(&t);
}

TEST(throughput)
{
	struct tmp t;
	tmp_make(&t);
	struct store *s = open_ok(t.data, CFG_FSYNC_BATCH);
	CHECK(s != NULL);
	if (!s)
		goto out;
	const uint32_t pairs = 200000;
	store_session_put(s, "tp", 100, 5, 0);
	struct msg *m = mk("tp/t", NULL, 0, "payload", 7, 1, false, 0);
	uint64_t id = store_msg_ref(s, m);
	store_sync(s);
	uint64_t t0 = clock_mono_ns();
	for (uint32_t i = 0; i < pairs; i++) {
		store_dlv_put(s, "tp", i, id, 1, 0, 0, (uint16_t)(i + 1), false);
		store_dlv_del(s, "tp", i);
	}
	uint64_t t1 = clock_mono_ns();
	store_sync(s);
	uint64_t t2 = clock_mono_ns();
	fprintf(stderr, "  throughput (BATCH): %u dlv put+del pairs = %u ops in %.3f s: %.0f ops/s"
		" (enqueue alone %.0f ns/op)\n",
		pairs, 2 * pairs, (double)(t2 - t0) / 1e9, 2.0 * pairs / ((double)(t2 - t0) / 1e9),
		(double)(t1 - t0) / (2.0 * pairs));
	CHECK_EQ_INT(q1(t.db, "SELECT count(*) FROM dlvs"), 0);
	msg_unref(m);
	store_close(s);
out:
	tmp_remove(&t);
}

/* A notification that holds the store thread until released: everything queued meanwhile
 * lands in one batch. */
struct gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool entered, open;
};

static void gate_cb(void *arg, bool durable)
{
	(void)durable;
	struct gate *g = arg;
	pthread_mutex_lock(&g->mu);
	g->entered = true;
	pthread_cond_broadcast(&g->cv);
	while (!g->open)
		pthread_cond_wait(&g->cv, &g->mu);
	pthread_mutex_unlock(&g->mu);
}

static void gate_close(struct store *s, struct gate *g)
{
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cv, NULL);
	g->entered = g->open = false;
	store_notify(s, store_thread_ops(), gate_cb, g);
	pthread_mutex_lock(&g->mu);
	while (!g->entered)
		pthread_cond_wait(&g->cv, &g->mu);
	pthread_mutex_unlock(&g->mu);
}

static void gate_open(struct gate *g)
{
	pthread_mutex_lock(&g->mu);
	g->open = true;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

static int64_t dlv_flags(const char *db, const char *cid, uint32_t seq)
{
	char sql[160];
	snprintf(sql, sizeof sql, "SELECT flags FROM dlvs WHERE client_id = '%s' AND seq = %u", cid, seq);
	return q1(db, sql);
}

/* Writes whose effect a later write of the same batch undoes or replaces are not applied,
 * and the batch's end state is what applying everything would give. */
static void compaction_in_mode(struct tmp *t, struct store *s, enum cfg_fsync mode)
{
	(void)mode;
	store_session_put(s, "c", 100, 5, 0);
	struct msg *kept = mk("k", NULL, 0, "kept", 4, 1, false, 0);
	uint64_t kid = store_msg_ref(s, kept);
	store_dlv_put(s, "c", 1, kid, 1, 0, 0, 0, true); /* a row from an earlier batch */
	store_sync(s);
	uint64_t applied0 = s->applied, skipped0 = s->skipped;

	struct gate g;
	gate_close(s, &g);
	/* seq 2: created, updated and deleted within the batch: nothing to write */
	struct msg *acked = mk("a", NULL, 0, "acked", 5, 1, false, 0);
	uint64_t aid = store_msg_ref(s, acked);
	store_dlv_put(s, "c", 2, aid, 1, 0, 0, 0, true);
	store_dlv_put(s, "c", 2, aid, 1, 1, 0, 7, false);
	store_dlv_del(s, "c", 2);
	msg_unref(acked); /* the queued insert holds the last reference: skipped too */
	/* seq 1 existed before: updated then deleted: the delete alone */
	store_dlv_put(s, "c", 1, kid, 1, 1, 0, 9, false);
	store_dlv_del(s, "c", 1);
	/* seq 3: created then updated twice: the last version alone */
	store_dlv_put(s, "c", 3, kid, 1, 0, 0, 0, true);
	store_dlv_put(s, "c", 3, kid, 1, 1, 0, 11, false);
	store_dlv_put(s, "c", 3, kid, 1, 3, 0, 11, false);
	/* seq 4 of another client with the same seq as nothing else: applied */
	store_session_put(s, "d", 100, 5, 0);
	store_dlv_put(s, "d", 3, kid, 1, 5, 0, 0, true);
	/* seq 5: created, then the whole session deleted, then created again */
	store_session_put(s, "e", 100, 5, 0);
	store_dlv_put(s, "e", 5, kid, 1, 0, 0, 0, true);
	store_session_del(s, "e");
	store_session_put(s, "e", 100, 5, 0);
	store_dlv_put(s, "e", 5, kid, 1, 2, 0, 0, true);
	gate_open(&g);
	store_sync(s);

	CHECK_EQ_INT(q1(t->db, "SELECT count(*) FROM dlvs WHERE client_id = 'c' AND seq IN (1, 2)"), 0);
	CHECK_EQ_INT(dlv_flags(t->db, "c", 3), 3);
	CHECK_EQ_INT(dlv_flags(t->db, "d", 3), 5);
	CHECK_EQ_INT(dlv_flags(t->db, "e", 5), 2);
	char sql[96];
	snprintf(sql, sizeof sql, "SELECT count(*) FROM messages WHERE id = %llu", (unsigned long long)aid);
	CHECK_EQ_INT(q1(t->db, sql), 0);
	/* skipped: seq 2 x3 + its message, seq 1's put, seq 3's first two puts, e/5's first put */
	CHECK_EQ_INT(s->skipped - skipped0, 8);
	/* applied: the delete of seq 1, seq 3's last put, d/3, e: session put, session delete, put, dlv put */
	CHECK_EQ_INT(s->applied - applied0, 8);

	/* A message row goes when the last reference to it does: store_msg_del. */
	store_dlv_del(s, "c", 3);
	store_dlv_del(s, "d", 3);
	store_dlv_del(s, "e", 5);
	store_msg_del(s, kid);
	store_sync(s);
	CHECK_EQ_INT(q1(t->db, "SELECT count(*) FROM messages"), 0);
	CHECK_EQ_INT(q1(t->db, "SELECT count(*) FROM dlvs"), 0);
	msg_unref(kept);
	pthread_cond_destroy(&g.cv);
	pthread_mutex_destroy(&g.mu);
	store_close(s);
}

TEST(compaction)
{
	each_fsync_mode(compaction_in_mode);
}

int main(void)
{
	RUN(roundtrip);
	RUN(updates);
	RUN(deletes);
	RUN(gc);
	RUN(concurrent_writers);
	RUN(sync_semantics);
	RUN(notify);
	RUN(corruption);
	RUN(corruption_sweep);
	RUN(data_dir);
	RUN(fsync_modes);
	RUN(write_errors);
	RUN(notify_after_write_errors);
	RUN(expired_retained);
	RUN(throughput);
	RUN(compaction);
	return unit_summary();
}
