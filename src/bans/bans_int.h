/* Internals shared by the files of src/bans/: the store (bans.c), flapping detection
 * (flapping.c) and the pure helpers (bans_csv.c). Not for use outside src/bans/. */
#ifndef BW_BANS_INT_H
#define BW_BANS_INT_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bans/bans.h"
#include "config/config.h"
#include "config/values.h"
#include "core/buf.h"
#include "core/relin.h"
#include "core/hmap.h"
#include "net/loop.h"

#define BANS_WHO_MAX 65535      /* an MQTT string cannot be longer */
#define BANS_RE_MAX RELIN_PATTERN_MAX /* regular expressions */
#define BANS_REASON_MAX 4096
#define BANS_BY_MAX 256
#define BANS_DEFAULT_BY_FILE "mgmt_api" /* EMQX's default `by` */
#define BANS_DEFAULT_BY_CTL "ctl"
#define BANS_FLAPPING_BY "flapping_detect"

/* One ban in memory. Exact types live in b->exact[as], rule types in b->rules. */
struct bent {
	struct hmap_node node;
	struct ban_rec r;
	size_t who_len;
	struct relin *re;   /* clientid_re, username_re */
	struct cfg_cidr net;  /* peerhost_net */
};

/* Flapping counters of one worker (touched by that worker's thread only). */
struct flap_table {
	struct hmap map;      /* struct flap_ent */
	uint64_t next_gc_ms;
};

enum {
	BST_PUT,
	BST_DEL,
	BST_CLEAR,
	BST_EXPIRE,
	BST__COUNT,
};

struct bans {
	pthread_rwlock_t lock;        /* guards exact, rules */
	struct hmap exact[3];         /* BANS_CLIENTID, BANS_USERNAME, BANS_PEERHOST */
	struct bent **rules;
	size_t nrules, caprules;

	/* main thread only */
	char *path;
	sqlite3 *db;
	sqlite3_stmt *st[BST__COUNT];
	char *bootstrap_file;
	struct loop *main_loop;
	struct timer sweep_timer;
	void (*on_change)(void *arg);
	void *on_change_arg;

	/* flapping detection: flaps[i] belongs to worker i */
	struct cfg_flapping flap;
	int nworkers;
	struct flap_table *flaps;

	/* bans made on workers, waiting for their SQLite write on the main thread */
	pthread_mutex_t pend_lock;
	struct ban_rec *pend;
	size_t npend, cappend;
};

/* Is a ban expired at now? */
static inline bool bans_expired(const struct ban_rec *r, int64_t now)
{
	return r->until != BANS_FOREVER && r->until <= now;
}

/* Append s[0..n) to out with control characters, DEL, tab and backslash escaped (\xNN, \\). */
void bans_escape(struct buf *out, const void *s, size_t n);
/* Log-safe copy of s (escaped, truncated) in buf; returns buf. */
const char *bans_safe(const char *s, size_t n, char *buf, size_t buflen);
/* Deep copy of a record. */
void bans_rec_copy(struct ban_rec *dst, const struct ban_rec *src);


/* Add a ban made on a worker thread: memory at once (unless an unexpired ban for the same
 * (as, who) exists: false), SQLite later on the main loop. */
bool bans_add_from_worker(struct bans *b, const struct ban_rec *r);

/* Flapping: count a connect of client ID cid on worker `worker` at now_ms; true when it
 * exceeds max_count within window_time (the counter restarts), *count = connects seen. */
bool flapping_count(struct bans *b, int worker, const char *cid, uint64_t now_ms, uint32_t *count);
/* Create / free the per-worker tables. */
void flapping_init(struct bans *b, const struct cfg_flapping *cfg, int nworkers);
void flapping_free(struct bans *b);

#endif
