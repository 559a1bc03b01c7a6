/* Banned clients (bans.h): the in-memory tables and their checks, the SQLite store
 * (<data_dir>/bans.db), the sweeper, the bootstrap import and the `bans ...` commands. */
#include "bans/bans_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/fs.h"
#include "core/clock.h"
#include "core/hash.h"
#include "core/list.h"
#include "core/log.h"

#define SWEEP_INTERVAL_MS 60000u
#define BOOTSTRAP_MAX (64u << 20)

static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS bans("
	" kind TEXT NOT NULL,"          /* as: clientid, username, ... */
	" who TEXT NOT NULL,"
	" by TEXT NOT NULL DEFAULT '',"
	" reason TEXT NOT NULL DEFAULT '',"
	" at INTEGER NOT NULL DEFAULT 0,"
	" until INTEGER NOT NULL DEFAULT 0," /* epoch seconds, 0 = infinity */
	" PRIMARY KEY (kind, who)"
	") WITHOUT ROWID";

static const char *const stmt_sql[BST__COUNT] = {
	[BST_PUT] = "INSERT OR REPLACE INTO bans(kind, who, by, reason, at, until) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[BST_DEL] = "DELETE FROM bans WHERE kind = ?1 AND who = ?2",
	[BST_CLEAR] = "DELETE FROM bans",
	[BST_EXPIRE] = "DELETE FROM bans WHERE until != 0 AND until <= ?1",
};

/* ---- memory ---- */

static bool is_exact(enum bans_as as)
{
	return as == BANS_CLIENTID || as == BANS_USERNAME || as == BANS_PEERHOST;
}

static void bent_free(struct bent *e)
{
	if (!e)
		return;
	relin_free(e->re);
	bans_rec_clear(&e->r);
	free(e);
}

/* A memory entry for r (copied); NULL with err when who does not compile or parse. */
static struct bent *bent_new(const struct ban_rec *r, char *err, size_t errlen)
{
	struct bent *e = xcalloc(1, sizeof *e);
	bans_rec_copy(&e->r, r);
	e->who_len = strlen(e->r.who);
	if (r->as == BANS_CLIENTID_RE || r->as == BANS_USERNAME_RE) {
		if (!relin_compile(r->who, &e->re, err, errlen)) {
			bent_free(e);
			return NULL;
		}
	} else if (r->as == BANS_PEERHOST_NET) {
		if (!cfg_parse_cidr(r->who, &e->net)) {
			snprintf(err, errlen, "peerhost_net: not a CIDR block");
			bent_free(e);
			return NULL;
		}
	} else if ((unsigned)r->as >= BANS__COUNT) {
		snprintf(err, errlen, "unknown ban type");
		bent_free(e);
		return NULL;
	}
	return e;
}

/* Caller holds the lock (read or write). */
static struct bent *find_locked(struct bans *b, enum bans_as as, const char *who, size_t len)
{
	if (is_exact(as)) {
		uint64_t h = hash_bytes(who, len);
		hmap_for_hash(&b->exact[as], h, it) {
			struct bent *e = container_of(it, struct bent, node);
			if (e->who_len == len && memcmp(e->r.who, who, len) == 0)
				return e;
		}
		return NULL;
	}
	for (size_t i = 0; i < b->nrules; i++) {
		struct bent *e = b->rules[i];
		if (e->r.as == as && e->who_len == len && memcmp(e->r.who, who, len) == 0)
			return e;
	}
	return NULL;
}

/* Caller holds the write lock. */
static void insert_locked(struct bans *b, struct bent *e)
{
	if (is_exact(e->r.as)) {
		hmap_insert(&b->exact[e->r.as], &e->node, hash_bytes(e->r.who, e->who_len));
		return;
	}
	if (b->nrules == b->caprules) {
		b->caprules = b->caprules ? b->caprules * 2 : 8;
		b->rules = xrealloc(b->rules, b->caprules * sizeof *b->rules);
	}
	b->rules[b->nrules++] = e;
}

/* Caller holds the write lock; e is unlinked, not freed. */
static void remove_locked(struct bans *b, struct bent *e)
{
	if (is_exact(e->r.as)) {
		hmap_remove(&b->exact[e->r.as], &e->node);
		return;
	}
	for (size_t i = 0; i < b->nrules; i++) {
		if (b->rules[i] == e) {
			b->rules[i] = b->rules[--b->nrules];
			return;
		}
	}
}

/* Replace whatever is stored for (as, who) with e. Caller holds the write lock; returns the
 * old entry (to free after unlocking) or NULL. */
static struct bent *replace_locked(struct bans *b, struct bent *e)
{
	struct bent *old = find_locked(b, e->r.as, e->r.who, e->who_len);
	if (old)
		remove_locked(b, old);
	insert_locked(b, e);
	return old;
}

size_t bans_count(struct bans *b)
{
	pthread_rwlock_rdlock(&b->lock);
	size_t n = b->nrules;
	for (int i = 0; i < 3; i++)
		n += b->exact[i].count;
	pthread_rwlock_unlock(&b->lock);
	return n;
}

/* ---- checks ---- */

/* The peer's address as a canonical text (IPv4-mapped IPv6 as IPv4); false for others. */
static bool peer_host(const struct sockaddr *sa, char *out, size_t outlen)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)sa;
		return inet_ntop(AF_INET, &s4->sin_addr, out, (socklen_t)outlen) != NULL;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
			return inet_ntop(AF_INET, s6->sin6_addr.s6_addr + 12, out, (socklen_t)outlen) != NULL;
		return inet_ntop(AF_INET6, &s6->sin6_addr, out, (socklen_t)outlen) != NULL;
	}
	return false;
}

bool bans_check(struct bans *b, const char *clientid, const char *username, size_t username_len,
		const struct sockaddr *peer, char *why, size_t whylen)
{
	if (!b)
		return false;
	int64_t now = clock_wall_s();
	char host[INET6_ADDRSTRLEN];
	bool has_host = peer && peer_host(peer, host, sizeof host);
	size_t cid_len = clientid ? strlen(clientid) : 0;
	struct bent *hit = NULL;
	pthread_rwlock_rdlock(&b->lock);
	struct bent *e;
	if (clientid && (e = find_locked(b, BANS_CLIENTID, clientid, cid_len)) && !bans_expired(&e->r, now))
		hit = e;
	if (!hit && username && (e = find_locked(b, BANS_USERNAME, username, username_len)) &&
	    !bans_expired(&e->r, now))
		hit = e;
	if (!hit && has_host && (e = find_locked(b, BANS_PEERHOST, host, strlen(host))) && !bans_expired(&e->r, now))
		hit = e;
	for (size_t i = 0; !hit && i < b->nrules; i++) {
		e = b->rules[i];
		if (bans_expired(&e->r, now))
			continue;
		switch (e->r.as) {
		case BANS_CLIENTID_RE:
			if (clientid && relin_match(e->re, clientid, cid_len))
				hit = e;
			break;
		case BANS_USERNAME_RE:
			if (username && relin_match(e->re, username, username_len))
				hit = e;
			break;
		case BANS_PEERHOST_NET:
			if (peer && cfg_cidr_match(&e->net, peer))
				hit = e;
			break;
		default:
			break;
		}
	}
	if (hit && why && whylen) {
		if (hit->r.reason && hit->r.reason[0]) {
			char safe[256];
			snprintf(why, whylen, "banned: %s",
				 bans_safe(hit->r.reason, strlen(hit->r.reason), safe, sizeof safe));
		} else {
			snprintf(why, whylen, "banned: %s ban", bans_as_str(hit->r.as));
		}
	}
	pthread_rwlock_unlock(&b->lock);
	return hit != NULL;
}

bool bans_connected(struct bans *b, int worker, const char *clientid, const char *username, size_t username_len,
		    const struct sockaddr *peer, char *why, size_t whylen)
{
	if (!b)
		return false;
	if (bans_check(b, clientid, username, username_len, peer, why, whylen))
		return true;
	if (!b->flap.enable || !clientid || !*clientid)
		return false;
	uint32_t count;
	if (!flapping_count(b, worker, clientid, clock_mono_ms(), &count))
		return false;
	int64_t now = clock_wall_s();
	char window[32], reason[128], until[40], safe[128];
	uint64_t wms = b->flap.window_time_ms;
	if (wms == UINT64_MAX)
		snprintf(window, sizeof window, "infinity");
	else if (wms % 1000)
		snprintf(window, sizeof window, "%llums", (unsigned long long)wms);
	else
		snprintf(window, sizeof window, "%llus", (unsigned long long)(wms / 1000));
	snprintf(reason, sizeof reason, "flapping detected: %u connects within %s", count, window);
	struct ban_rec r = {
		.as = BANS_CLIENTID,
		.who = (char *)clientid,
		.by = (char *)BANS_FLAPPING_BY,
		.reason = reason,
		.at = now,
		.until = BANS_FOREVER,
	};
	if (b->flap.ban_time_ms != UINT64_MAX)
		r.until = now + (int64_t)((b->flap.ban_time_ms + 999) / 1000);
	bans_format_time(r.until, true, until, sizeof until);
	log_warn("client %s: flapping detected (%u connects within %s): banned until %s",
		 bans_safe(clientid, strlen(clientid), safe, sizeof safe), count, window, until);
	bans_add_from_worker(b, &r);
	if (why && whylen)
		snprintf(why, whylen, "banned: %s", reason);
	return true;
}

/* ---- SQLite ---- */

static void db_err(struct bans *b, char *err, size_t errlen, const char *what)
{
	snprintf(err, errlen, "%s: %s: %s", b->path, what, b->db ? sqlite3_errmsg(b->db) : "out of memory");
}

static int run(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc;
}

static bool db_put(struct bans *b, const struct ban_rec *r, char *err, size_t errlen)
{
	if (!b->db)
		return true;
	sqlite3_stmt *st = b->st[BST_PUT];
	sqlite3_bind_text(st, 1, bans_as_str(r->as), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, r->who, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 3, r->by ? r->by : "", -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 4, r->reason ? r->reason : "", -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 5, r->at);
	sqlite3_bind_int64(st, 6, r->until);
	if (run(st) != SQLITE_DONE) {
		db_err(b, err, errlen, "writing a ban");
		return false;
	}
	return true;
}

static bool db_exec(struct bans *b, const char *sql, char *err, size_t errlen)
{
	if (!b->db)
		return true;
	if (sqlite3_exec(b->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
		db_err(b, err, errlen, sql);
		return false;
	}
	return true;
}

static bool load_rows(struct bans *b, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	static const char sql[] = "SELECT kind, who, by, reason, at, until FROM bans";
	if (sqlite3_prepare_v2(b->db, sql, -1, &st, NULL) != SQLITE_OK) {
		db_err(b, err, errlen, "reading bans");
		return false;
	}
	int rc;
	size_t n = 0, bad = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *kind = (const char *)sqlite3_column_text(st, 0);
		const char *who = (const char *)sqlite3_column_text(st, 1);
		struct ban_rec r = { 0 };
		char e[300] = "";
		if (!kind || !who || !bans_as_parse(kind, &r.as)) {
			bad++;
			continue;
		}
		r.who = (char *)who;
		r.by = (char *)sqlite3_column_text(st, 2);
		r.reason = (char *)sqlite3_column_text(st, 3);
		r.at = sqlite3_column_int64(st, 4);
		r.until = sqlite3_column_int64(st, 5);
		struct bent *ent = bent_new(&r, e, sizeof e);
		if (!ent) {
			char safe[128];
			log_warn("%s: ignoring the stored ban %s %s: %s", b->path, kind,
				 bans_safe(who, strlen(who), safe, sizeof safe), e);
			bad++;
			continue;
		}
		pthread_rwlock_wrlock(&b->lock);
		struct bent *old = replace_locked(b, ent);
		pthread_rwlock_unlock(&b->lock);
		bent_free(old);
		n++;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		db_err(b, err, errlen, "reading bans");
		return false;
	}
	if (bad)
		log_warn("%s: %zu unreadable ban records ignored", b->path, bad);
	return true;
}

static bool db_open(struct bans *b, const char *data_dir, char *err, size_t errlen)
{
	if (!fs_make_dirs(data_dir, err, errlen))
		return false;
	b->path = xasprintf("%s/bans.db", data_dir);
	int rc = sqlite3_open_v2(b->path, &b->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
				 NULL);
	if (rc != SQLITE_OK) {
		db_err(b, err, errlen, "cannot open");
		return false;
	}
	chmod(b->path, 0600);
	sqlite3_extended_result_codes(b->db, 1);
	sqlite3_busy_timeout(b->db, 5000);
	sqlite3_db_config(b->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
	sqlite3_db_config(b->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
	/* Bans are rare writes that must survive a crash. */
	if (sqlite3_exec(b->db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA cell_size_check = ON",
			 NULL, NULL, NULL) != SQLITE_OK) {
		db_err(b, err, errlen, "cannot use");
		return false;
	}
	if (sqlite3_exec(b->db, schema_sql, NULL, NULL, NULL) != SQLITE_OK) {
		db_err(b, err, errlen, "cannot create the bans table");
		return false;
	}
	for (int i = 0; i < BST__COUNT; i++) {
		int rc2 = sqlite3_prepare_v3(b->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &b->st[i], NULL);
		if (rc2 != SQLITE_OK) {
			db_err(b, err, errlen, "unexpected schema");
			return false;
		}
	}
	return load_rows(b, err, errlen);
}

/* ---- changes ---- */

static void changed(struct bans *b)
{
	if (b->on_change)
		b->on_change(b->on_change_arg);
}

void bans_on_change(struct bans *b, void (*fn)(void *arg), void *arg)
{
	b->on_change = fn;
	b->on_change_arg = arg;
}

static enum bw_err add_one(struct bans *b, const struct ban_rec *r, int64_t now, char *err, size_t errlen)
{
	if (bans_expired(r, now)) {
		snprintf(err, errlen, "until must be in the future");
		return BW_ERR_INVALID;
	}
	struct bent *e = bent_new(r, err, errlen);
	if (!e)
		return BW_ERR_INVALID;
	pthread_rwlock_rdlock(&b->lock);
	struct bent *old = find_locked(b, r->as, e->r.who, e->who_len);
	bool exists = old && !bans_expired(&old->r, now);
	pthread_rwlock_unlock(&b->lock);
	if (exists) {
		bent_free(e);
		return BW_ERR_EXISTS;
	}
	if (!db_put(b, &e->r, err, errlen)) {
		bent_free(e);
		return BW_ERR_STORE;
	}
	pthread_rwlock_wrlock(&b->lock);
	old = replace_locked(b, e);
	pthread_rwlock_unlock(&b->lock);
	bent_free(old);
	return BW_OK;
}

enum bw_err bans_add(struct bans *b, const struct ban_rec *r, char *err, size_t errlen)
{
	enum bw_err e = add_one(b, r, clock_wall_s(), err, errlen);
	if (e == BW_OK)
		changed(b);
	return e;
}

enum bw_err bans_delete(struct bans *b, enum bans_as as, const char *who, char *err, size_t errlen)
{
	size_t len = strlen(who);
	pthread_rwlock_rdlock(&b->lock);
	bool found = find_locked(b, as, who, len) != NULL;
	pthread_rwlock_unlock(&b->lock);
	if (!found)
		return BW_ERR_NOTFOUND;
	if (b->db) {
		sqlite3_stmt *st = b->st[BST_DEL];
		sqlite3_bind_text(st, 1, bans_as_str(as), -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, who, (int)len, SQLITE_TRANSIENT);
		if (run(st) != SQLITE_DONE) {
			db_err(b, err, errlen, "deleting a ban");
			return BW_ERR_STORE;
		}
	}
	pthread_rwlock_wrlock(&b->lock);
	struct bent *e = find_locked(b, as, who, len);
	if (e)
		remove_locked(b, e);
	pthread_rwlock_unlock(&b->lock);
	bent_free(e);
	return BW_OK;
}

/* Unlink every entry (write lock held by the caller) and return them chained through node.next. */
static struct hmap_node *steal_all_locked(struct bans *b)
{
	struct hmap_node *head = NULL;
	for (int i = 0; i < 3; i++) {
		for (struct hmap_node *n = hmap_steal(&b->exact[i]), *next; n; n = next) {
			next = n->next;
			n->next = head;
			head = n;
		}
	}
	for (size_t i = 0; i < b->nrules; i++) {
		b->rules[i]->node.next = head;
		head = &b->rules[i]->node;
	}
	b->nrules = 0;
	return head;
}

static void free_chain(struct hmap_node *n)
{
	while (n) {
		struct hmap_node *next = n->next;
		bent_free(container_of(n, struct bent, node));
		n = next;
	}
}

bool bans_clear(struct bans *b, char *err, size_t errlen)
{
	if (b->db && run(b->st[BST_CLEAR]) != SQLITE_DONE) {
		db_err(b, err, errlen, "deleting bans");
		return false;
	}
	pthread_rwlock_wrlock(&b->lock);
	struct hmap_node *all = steal_all_locked(b);
	pthread_rwlock_unlock(&b->lock);
	free_chain(all);
	return true;
}

size_t bans_sweep(struct bans *b, int64_t now)
{
	struct hmap_node *doomed = NULL;
	size_t n = 0;
	pthread_rwlock_wrlock(&b->lock);
	for (int i = 0; i < 3; i++) {
		struct hmap_node *keep = NULL;
		for (struct hmap_node *it = hmap_steal(&b->exact[i]), *next; it; it = next) {
			next = it->next;
			if (bans_expired(&container_of(it, struct bent, node)->r, now)) {
				it->next = doomed;
				doomed = it;
				n++;
			} else {
				it->next = keep;
				keep = it;
			}
		}
		for (struct hmap_node *it = keep, *next; it; it = next) {
			next = it->next;
			hmap_insert(&b->exact[i], it, it->hash);
		}
	}
	for (size_t i = 0; i < b->nrules;) {
		struct bent *e = b->rules[i];
		if (bans_expired(&e->r, now)) {
			b->rules[i] = b->rules[--b->nrules];
			e->node.next = doomed;
			doomed = &e->node;
			n++;
		} else {
			i++;
		}
	}
	pthread_rwlock_unlock(&b->lock);
	free_chain(doomed);
	if (b->db) {
		sqlite3_stmt *st = b->st[BST_EXPIRE];
		sqlite3_bind_int64(st, 1, now);
		if (run(st) != SQLITE_DONE)
			log_warn("%s: deleting expired bans: %s", b->path, sqlite3_errmsg(b->db));
	}
	if (n)
		log_info("bans: %zu expired ban%s removed", n, n == 1 ? "" : "s");
	return n;
}

static void on_sweep(struct timer *t)
{
	struct bans *b = container_of(t, struct bans, sweep_timer);
	bans_sweep(b, clock_wall_s());
	timer_arm(b->main_loop, &b->sweep_timer, SWEEP_INTERVAL_MS);
}

/* ---- bans made on workers (flapping) ---- */

/* Main thread: write the bans workers made. A ban deleted (or replaced) meanwhile by a
 * control command is not written back. */
static void flush_pending(void *arg)
{
	struct bans *b = arg;
	pthread_mutex_lock(&b->pend_lock);
	struct ban_rec *v = b->pend;
	size_t n = b->npend;
	b->pend = NULL;
	b->npend = b->cappend = 0;
	pthread_mutex_unlock(&b->pend_lock);
	if (!n)
		return;
	for (size_t i = 0; i < n; i++) {
		struct ban_rec *r = &v[i];
		pthread_rwlock_rdlock(&b->lock);
		struct bent *e = find_locked(b, r->as, r->who, strlen(r->who));
		bool current = e && e->r.at == r->at && e->r.until == r->until && strcmp(e->r.by, r->by) == 0;
		pthread_rwlock_unlock(&b->lock);
		char err[512];
		if (current && !db_put(b, r, err, sizeof err))
			log_error("bans: %s", err);
	}
	bans_recs_free(v, n);
	changed(b);
}

bool bans_add_from_worker(struct bans *b, const struct ban_rec *r)
{
	char err[300];
	struct bent *e = bent_new(r, err, sizeof err);
	if (!e)
		return false;
	int64_t now = clock_wall_s();
	pthread_rwlock_wrlock(&b->lock);
	struct bent *old = find_locked(b, r->as, e->r.who, e->who_len);
	if (old && !bans_expired(&old->r, now)) {
		pthread_rwlock_unlock(&b->lock);
		bent_free(e);
		return false;
	}
	old = replace_locked(b, e);
	pthread_rwlock_unlock(&b->lock);
	bent_free(old);
	pthread_mutex_lock(&b->pend_lock);
	bool first = b->npend == 0;
	if (b->npend == b->cappend) {
		b->cappend = b->cappend ? b->cappend * 2 : 4;
		b->pend = xrealloc(b->pend, b->cappend * sizeof *b->pend);
	}
	bans_rec_copy(&b->pend[b->npend++], r);
	pthread_mutex_unlock(&b->pend_lock);
	if (first && b->main_loop)
		loop_post(b->main_loop, flush_pending, b);
	return true;
}

/* ---- bootstrap ---- */

static bool read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		return false;
	}
	struct buf b = { 0 };
	for (;;) {
		uint8_t *dst = buf_reserve(&b, 65536);
		size_t n = fread(dst, 1, 65536, f);
		b.len += n;
		if (b.len > BOOTSTRAP_MAX) {
			snprintf(err, errlen, "%s: larger than %u MB", path, BOOTSTRAP_MAX >> 20);
			fclose(f);
			buf_free(&b);
			return false;
		}
		if (n < 65536)
			break;
	}
	bool bad = ferror(f);
	fclose(f);
	if (bad) {
		snprintf(err, errlen, "%s: read error", path);
		buf_free(&b);
		return false;
	}
	buf_append(&b, "", 1);
	*out = (char *)b.data;
	*len = b.len - 1;
	return true;
}

bool bans_check_bootstrap(const char *path, char *err, size_t errlen)
{
	char *text;
	size_t len;
	if (!read_file(path, &text, &len, err, errlen))
		return false;
	struct ban_rec *v = NULL;
	size_t n = 0;
	bool ok = bans_csv_parse(text, len, path, clock_wall_s(), &v, &n, err, errlen);
	free(text);
	if (ok)
		bans_recs_free(v, n);
	return ok;
}

/* Import the bootstrap file (the tables are empty). *imported = bans added. */
static bool import_bootstrap(struct bans *b, size_t *imported, char *err, size_t errlen)
{
	*imported = 0;
	char *text;
	size_t len;
	if (!read_file(b->bootstrap_file, &text, &len, err, errlen))
		return false;
	int64_t now = clock_wall_s();
	struct ban_rec *v = NULL;
	size_t n = 0;
	bool ok = bans_csv_parse(text, len, b->bootstrap_file, now, &v, &n, err, errlen);
	free(text);
	if (!ok)
		return false;
	if (!db_exec(b, "BEGIN", err, errlen)) {
		bans_recs_free(v, n);
		return false;
	}
	for (size_t i = 0; i < n && ok; i++) {
		enum bw_err e = add_one(b, &v[i], now, err, errlen);
		if (e == BW_OK)
			(*imported)++;
		else if (e == BW_ERR_STORE)
			ok = false;
		/* EXISTS/INVALID cannot happen: the parser refused duplicates and expired lines */
	}
	if (ok)
		ok = db_exec(b, "COMMIT", err, errlen);
	if (!ok) {
		char e2[200];
		db_exec(b, "ROLLBACK", e2, sizeof e2);
		/* memory holds what was added before the failure: drop it with the transaction */
		pthread_rwlock_wrlock(&b->lock);
		struct hmap_node *all = steal_all_locked(b);
		pthread_rwlock_unlock(&b->lock);
		free_chain(all);
		*imported = 0;
	}
	bans_recs_free(v, n);
	return ok;
}

bool bans_reload(struct bans *b, struct buf *report)
{
	if (!b || !b->bootstrap_file || bans_count(b) > 0)
		return true;
	char err[600];
	size_t n;
	if (!import_bootstrap(b, &n, err, sizeof err)) {
		log_error("banned.bootstrap_file: %s (nothing imported)", err);
		buf_printf(report, "banned.bootstrap_file: %s (nothing imported)\n", err);
		return false;
	}
	log_info("banned.bootstrap_file: imported %zu ban%s from %s", n, n == 1 ? "" : "s", b->bootstrap_file);
	buf_printf(report, "banned.bootstrap_file: imported %zu ban%s\n", n, n == 1 ? "" : "s");
	if (n)
		changed(b);
	return true;
}

/* ---- life cycle ---- */

struct bans *bans_open(const struct config *cfg, struct loop *main_loop, int nworkers, char *err, size_t errlen)
{
	struct bans *b = xcalloc(1, sizeof *b);
	pthread_rwlock_init(&b->lock, NULL);
	pthread_mutex_init(&b->pend_lock, NULL);
	for (int i = 0; i < 3; i++)
		hmap_init(&b->exact[i]);
	timer_init(&b->sweep_timer, on_sweep);
	flapping_init(b, &cfg->flapping, nworkers);
	if (cfg->banned.bootstrap_file && *cfg->banned.bootstrap_file)
		b->bootstrap_file = xstrdup(cfg->banned.bootstrap_file);
	if (!db_open(b, cfg->data_dir, err, errlen))
		goto fail;
	int64_t now = clock_wall_s();
	bans_sweep(b, now);
	size_t count = bans_count(b);
	if (b->bootstrap_file && count == 0) {
		size_t n;
		if (!import_bootstrap(b, &n, err, errlen))
			goto fail;
		log_info("banned.bootstrap_file: imported %zu ban%s from %s", n, n == 1 ? "" : "s",
			 b->bootstrap_file);
		count = n;
	} else if (b->bootstrap_file) {
		log_info("banned.bootstrap_file: not imported, %zu bans are stored already", count);
	}
	if (count)
		log_info("bans: %zu active", count);
	if (b->flap.enable)
		log_info("flapping detection on: more than %u connects within %llu ms bans a client ID for %llu ms",
			 b->flap.max_count, (unsigned long long)b->flap.window_time_ms,
			 (unsigned long long)b->flap.ban_time_ms);
	b->main_loop = main_loop;
	if (main_loop)
		timer_arm(main_loop, &b->sweep_timer, SWEEP_INTERVAL_MS);
	return b;
fail:
	bans_close(b);
	return NULL;
}

void bans_close(struct bans *b)
{
	if (!b)
		return;
	if (timer_armed(&b->sweep_timer))
		timer_cancel(&b->sweep_timer);
	for (int i = 0; i < BST__COUNT; i++)
		sqlite3_finalize(b->st[i]);
	if (b->db)
		sqlite3_close(b->db);
	pthread_rwlock_wrlock(&b->lock);
	struct hmap_node *all = steal_all_locked(b);
	pthread_rwlock_unlock(&b->lock);
	free_chain(all);
	for (int i = 0; i < 3; i++)
		hmap_destroy(&b->exact[i]);
	free(b->rules);
	bans_recs_free(b->pend, b->npend);
	flapping_free(b);
	pthread_mutex_destroy(&b->pend_lock);
	pthread_rwlock_destroy(&b->lock);
	free(b->bootstrap_file);
	free(b->path);
	free(b);
}

/* ---- control commands ---- */

static const char usage[] =
	"usage: bans add AS WHO [--reason TEXT] [--by NAME] [--at TIME] [--until TIME | --for DURATION]\n"
	"       bans list\n"
	"       bans delete AS WHO\n"
	"       bans clear\n"
	"AS: clientid, username, peerhost, clientid_re, username_re, peerhost_net\n"
	"TIME: epoch seconds or RFC 3339 (2026-12-01T00:00:00Z); DURATION: 30s, 10m, 2h, 7d\n";

static bool fail(struct buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(struct buf *out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	if (vasprintf(&s, fmt, ap) >= 0) {
		buf_append_str(out, s);
		free(s);
	}
	va_end(ap);
	return false;
}

static void put_escaped(struct buf *out, const char *s)
{
	bans_escape(out, s, strlen(s));
}

static void describe(struct buf *out, enum bans_as as, const char *who)
{
	buf_printf(out, "%s ", bans_as_str(as));
	put_escaped(out, who);
}

static bool ctl_add(struct bans *b, int argc, char **argv, struct buf *out)
{
	const char *as_s = NULL, *who = NULL, *reason = "", *by = BANS_DEFAULT_BY_CTL, *at_s = NULL, *until_s = NULL,
		   *for_s = NULL;
	for (int i = 2; i < argc; i++) {
		const char **opt = NULL;
		if (strcmp(argv[i], "--reason") == 0)
			opt = &reason;
		else if (strcmp(argv[i], "--by") == 0)
			opt = &by;
		else if (strcmp(argv[i], "--at") == 0)
			opt = &at_s;
		else if (strcmp(argv[i], "--until") == 0)
			opt = &until_s;
		else if (strcmp(argv[i], "--for") == 0)
			opt = &for_s;
		if (opt) {
			if (i + 1 >= argc)
				return fail(out, "error: %s needs a value\n%s", argv[i], usage);
			*opt = argv[++i];
		} else if (!as_s) {
			as_s = argv[i];
		} else if (!who) {
			who = argv[i];
		} else {
			return fail(out, "error: unexpected argument\n%s", usage);
		}
	}
	if (!as_s || !who)
		return fail(out, "%s", usage);
	struct ban_rec r = { 0 };
	if (!bans_as_parse(as_s, &r.as))
		return fail(out, "error: unknown ban type (as): use clientid, username, peerhost, clientid_re, username_re "
				 "or peerhost_net\n");
	if (until_s && for_s)
		return fail(out, "error: give --until or --for, not both\n");
	if (strlen(reason) > BANS_REASON_MAX || strlen(by) > BANS_BY_MAX)
		return fail(out, "error: %s is too long\n", strlen(by) > BANS_BY_MAX ? "--by" : "--reason");
	int64_t now = clock_wall_s();
	r.at = now;
	r.until = BANS_FOREVER;
	if (at_s && !bans_parse_time(at_s, &r.at))
		return fail(out, "error: --at: expected epoch seconds or an RFC 3339 time (2026-12-01T00:00:00Z)\n");
	if (until_s && strcmp(until_s, "infinity") != 0) {
		if (!bans_parse_time(until_s, &r.until))
			return fail(out,
				    "error: --until: expected epoch seconds, an RFC 3339 time (2026-12-01T00:00:00Z) or "
				    "infinity\n");
		if (r.until <= now)
			return fail(out, "error: --until must be in the future\n");
	}
	if (for_s) {
		uint64_t ms;
		if (!cfg_parse_duration_ms(for_s, &ms) || ms == 0 || ms > (uint64_t)100 * 365 * 86400 * 1000)
			return fail(out, "error: --for: expected a duration such as 30s, 10m, 2h or 7d\n");
		r.until = now + (int64_t)((ms + 999) / 1000);
	}
	char why[300];
	if (!bans_who_canon(r.as, who, &r.who, why, sizeof why))
		return fail(out, "error: invalid who for %s: %s\n", bans_as_str(r.as), why);
	r.by = (char *)by;
	r.reason = (char *)reason;
	char err[600] = "";
	enum bw_err e = add_one(b, &r, now, err, sizeof err);
	bool ok = e == BW_OK;
	if (e == BW_ERR_EXISTS) {
		buf_append_str(out, "error: a ban for ");
		describe(out, r.as, r.who);
		buf_append_str(out, " already exists (delete it first)\n");
	} else if (e != BW_OK) {
		buf_printf(out, "error: %s\n", err);
	} else {
		char t[40];
		bans_format_time(r.until, true, t, sizeof t);
		buf_append_str(out, "banned ");
		describe(out, r.as, r.who);
		buf_printf(out, " until %s\n", t);
		char safe[256];
		log_info("ban added: %s %s until %s (by %s)", bans_as_str(r.as),
			 bans_safe(r.who, strlen(r.who), safe, sizeof safe), t, by);
	}
	free(r.who);
	if (ok)
		changed(b);
	return ok;
}

static int cmp_bent(const void *x, const void *y)
{
	const struct bent *a = *(const struct bent *const *)x, *b = *(const struct bent *const *)y;
	if (a->r.as != b->r.as)
		return (int)a->r.as - (int)b->r.as;
	return strcmp(a->r.who, b->r.who);
}

static void ctl_list(struct bans *b, struct buf *out)
{
	int64_t now = clock_wall_s();
	buf_append_str(out, "as\twho\tby\tat\tuntil\treason\n");
	pthread_rwlock_rdlock(&b->lock);
	size_t n = 0, cap = b->nrules + b->exact[0].count + b->exact[1].count + b->exact[2].count;
	struct bent **v = xmalloc((cap ? cap : 1) * sizeof *v);
	for (int i = 0; i < 3; i++)
		hmap_for_each(&b->exact[i], it) v[n++] = container_of(it, struct bent, node);
	for (size_t i = 0; i < b->nrules; i++)
		v[n++] = b->rules[i];
	qsort(v, n, sizeof *v, cmp_bent);
	for (size_t i = 0; i < n; i++) {
		const struct ban_rec *r = &v[i]->r;
		if (bans_expired(r, now))
			continue;
		char at[40], until[40];
		bans_format_time(r->at, false, at, sizeof at);
		bans_format_time(r->until, true, until, sizeof until);
		buf_printf(out, "%s\t", bans_as_str(r->as));
		put_escaped(out, r->who);
		buf_append_str(out, "\t");
		put_escaped(out, r->by);
		buf_printf(out, "\t%s\t%s\t", at, until);
		put_escaped(out, r->reason);
		buf_append_str(out, "\n");
	}
	pthread_rwlock_unlock(&b->lock);
	free(v);
}

bool bans_ctl(struct bans *b, int argc, char **argv, struct buf *out)
{
	if (argc < 2 || strcmp(argv[0], "bans") != 0)
		return fail(out, "%s", usage);
	const char *op = argv[1];
	char err[600] = "";
	if (strcmp(op, "add") == 0)
		return ctl_add(b, argc, argv, out);
	if (strcmp(op, "list") == 0 && argc == 2) {
		ctl_list(b, out);
		return true;
	}
	if (strcmp(op, "delete") == 0 && argc == 4) {
		enum bans_as as;
		if (!bans_as_parse(argv[2], &as))
			return fail(out, "error: unknown ban type (as): use clientid, username, peerhost, clientid_re, "
					 "username_re or peerhost_net\n");
		char *who = NULL;
		/* addresses are stored in their canonical form */
		bool addr = as == BANS_PEERHOST || as == BANS_PEERHOST_NET;
		if (!addr || !bans_who_canon(as, argv[3], &who, err, sizeof err)) {
			free(who);
			who = xstrdup(argv[3]);
		}
		enum bw_err e = bans_delete(b, as, who, err, sizeof err);
		bool ok = e == BW_OK;
		if (e == BW_ERR_NOTFOUND) {
			buf_append_str(out, "error: no ban for ");
			describe(out, as, who);
			buf_append_str(out, "\n");
		} else if (e != BW_OK) {
			buf_printf(out, "error: %s\n", err);
		} else {
			buf_append_str(out, "deleted the ban for ");
			describe(out, as, who);
			buf_append_str(out, "\n");
			char safe[256];
			log_info("ban deleted: %s %s", bans_as_str(as),
				 bans_safe(who, strlen(who), safe, sizeof safe));
		}
		free(who);
		return ok;
	}
	if (strcmp(op, "clear") == 0 && argc == 2) {
		size_t n = bans_count(b);
		if (!bans_clear(b, err, sizeof err))
			return fail(out, "error: %s\n", err);
		buf_printf(out, "deleted %zu ban%s\n", n, n == 1 ? "" : "s");
		log_info("bans cleared (%zu deleted)", n);
		return true;
	}
	return fail(out, "%s", usage);
}
