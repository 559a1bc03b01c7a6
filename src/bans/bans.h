/* Banned clients (EMQX "banned", reference/emqx.md §6) and flapping detection.
 *
 * A ban is (as, who) plus by, reason, at and until. `as` is an exact type (clientid,
 * username, peerhost) or a rule type (clientid_re, username_re: POSIX extended regular
 * expressions, unanchored; peerhost_net: an IPv4 or IPv6 CIDR block).
 *
 * Storage: <data_dir>/bans.db (SQLite, WAL), one table; written only from the main thread
 * (control commands, the sweeper, the writes that flapping detection posts there).
 *
 * Memory: exact bans in one hash map per type, rules in a list, all under a read-write
 * lock. bans_check runs on worker threads (CONNECT, wills, live rechecks) under the read
 * lock, never touching SQLite. A ban whose `until` has passed is ignored at once by checks
 * and deleted by the sweeper (every minute, main loop timer).
 *
 * Flapping detection (flapping_detect): each worker counts the connects of the client IDs
 * it owns (sessions are partitioned by client ID, so the counters need no lock); a client ID
 * connecting more than max_count times within window_time gets a clientid ban for ban_time
 * (by "flapping_detect"), added to memory at once; its SQLite write is posted to the main loop.
 *
 * Every new ban (control command, flapping, bootstrap import on reload) calls the change
 * callback on the main thread: the broker then rechecks every live connection.
 */
#ifndef BW_BANS_H
#define BW_BANS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "core/err.h"

struct config;
struct loop;
struct bans;

enum bans_as {
	BANS_CLIENTID,
	BANS_USERNAME,
	BANS_PEERHOST,
	BANS_CLIENTID_RE,
	BANS_USERNAME_RE,
	BANS_PEERHOST_NET,
	BANS__COUNT,
};

/* until = BANS_FOREVER: the ban never expires ("infinity"). */
#define BANS_FOREVER 0

/* One ban record; strings owned by the record (free with bans_rec_clear). */
struct ban_rec {
	enum bans_as as;
	char *who;     /* canonical form (bans_who_canon) */
	char *by;
	char *reason;
	int64_t at;    /* epoch seconds */
	int64_t until; /* epoch seconds, BANS_FOREVER = never */
};

/* Name of a type ("clientid", "peerhost_net", ...). */
const char *bans_as_str(enum bans_as as);
/* Parse a type name; false when unknown. */
bool bans_as_parse(const char *s, enum bans_as *out);
/* Validate who for a type and give its canonical form in *canon (fresh string): addresses
 * in their standard text, CIDR blocks with host bits cleared, regular expressions compiled
 * as a check. false with a one-line reason in err. */
bool bans_who_canon(enum bans_as as, const char *who, char **canon, char *err, size_t errlen);
/* Epoch seconds ("1767225600") or RFC 3339 ("2026-12-01T00:00:00Z", "...+02:00",
 * fractions ignored) into *out. */
bool bans_parse_time(const char *s, int64_t *out);
/* RFC 3339 UTC text of t ("infinity" for BANS_FOREVER when forever_ok). */
void bans_format_time(int64_t t, bool forever_ok, char *out, size_t outlen);
/* Free a record's strings and zero it. */
void bans_rec_clear(struct ban_rec *r);
/* Free an array of n records. */
void bans_recs_free(struct ban_rec *v, size_t n);

/* Parse a bootstrap CSV (header with `as` and `who`, optional `by`, `reason`, `at`, `until`;
 * RFC 4180 quoting). Lines whose `until` is not after now are skipped with a warning. On
 * success *out holds *n records (free with bans_recs_free); on failure err is
 * "FILE:LINE: message" and nothing is returned. Pure: no file system access. */
bool bans_csv_parse(const char *text, size_t len, const char *file, int64_t now, struct ban_rec **out, size_t *n,
		    char *err, size_t errlen);

/* `bulwark --check`: read and parse a bootstrap file (nothing is imported). */
bool bans_check_bootstrap(const char *path, char *err, size_t errlen);

/* Open <data_dir>/bans.db, load it, import banned.bootstrap_file when the tables are empty,
 * start the sweeper on main_loop (NULL: no timer, for tests) and set up flapping detection
 * for nworkers workers. NULL with err ("FILE:LINE: ..." for a bad bootstrap line) on failure.
 * Main thread. */
struct bans *bans_open(const struct config *cfg, struct loop *main_loop, int nworkers, char *err, size_t errlen);
/* Stop the sweeper, close the database, free everything. Main thread, after the workers stopped. */
void bans_close(struct bans *b);
/* fn(arg) runs on the main thread after bans were added. */
void bans_on_change(struct bans *b, void (*fn)(void *arg), void *arg);

/* Is a client with these attributes banned (unexpired ban of any type)? clientid and
 * username may be NULL, peer may be NULL. When true and why is given, why holds
 * "banned: REASON". Thread-safe, in memory only. b may be NULL (nothing is banned). */
bool bans_check(struct bans *b, const char *clientid, const char *username, size_t username_len,
		const struct sockaddr *peer, char *why, size_t whylen);

/* At the end of a connect, on the worker owning the client ID (worker = its index): a last
 * bans_check (auth may have changed the identity; a ban may have arrived meanwhile), then
 * flapping detection, which may create a clientid ban. true = refuse, why as bans_check. */
bool bans_connected(struct bans *b, int worker, const char *clientid, const char *username, size_t username_len,
		    const struct sockaddr *peer, char *why, size_t whylen);

/* Add a ban (who already canonical). BW_ERR_EXISTS when an unexpired ban for (as, who)
 * exists, BW_ERR_INVALID when until is not in the future, BW_ERR_STORE (err set) when
 * SQLite fails. Calls the change callback. Main thread. */
enum bw_err bans_add(struct bans *b, const struct ban_rec *r, char *err, size_t errlen);
/* Delete one ban: BW_OK, BW_ERR_NOTFOUND or BW_ERR_STORE. Main thread. */
enum bw_err bans_delete(struct bans *b, enum bans_as as, const char *who, char *err, size_t errlen);
/* Delete every ban. Main thread. */
bool bans_clear(struct bans *b, char *err, size_t errlen);
/* Number of bans in memory (expired ones not yet swept included). Thread-safe. */
size_t bans_count(struct bans *b);
/* Delete bans expired at now (memory and SQLite); returns how many. Main thread. */
size_t bans_sweep(struct bans *b, int64_t now);
/* SIGHUP / ctl reload: import banned.bootstrap_file if the tables are empty. A bad file is
 * reported (and logged) and changes nothing. false on failure. Main thread. */
bool bans_reload(struct bans *b, struct buf *report);
/* The `bans ...` control commands (argv[0] = "bans"): add, list, delete, clear. The answer or
 * the error is appended to out; false on error. Main thread. */
bool bans_ctl(struct bans *b, int argc, char **argv, struct buf *out);

#endif
