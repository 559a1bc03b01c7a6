/* `mechanism = password_based, backend = built_in_database` (reference/emqx.md §4.2, §4.7).
 *
 * Users live in <data_dir>/auth.db and in memory (authn_builtin_db.h). A lookup runs on
 * the calling worker thread under a read lock; a cheap hash is checked inline, a slow one
 * (bcrypt, pbkdf2 with many iterations) on the hashing pool, whose done callback runs on
 * the pool thread and calls authn_done (thread-safe). A full pool refuses with 0x89.
 *
 * bootstrap_file (CSV or JSON by extension, plain or hash) is read at create and on
 * reload; users that already exist are kept as they are (EMQX behaviour).
 */
#include "auth/authn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "auth/authn_builtin.h"
#include "auth/authn_builtin_db.h"
#include "auth/hashpool.h"
#include "auth/passwd.h"
#include "config/hocon.h"
#include "core/alloc.h"
#include "core/log.h"

#define BOOTSTRAP_MAX_BYTES (64u << 20) /* a bootstrap file larger than this is refused */

enum { USER_ID_USERNAME, USER_ID_CLIENTID };
enum { BOOT_PLAIN, BOOT_HASH };

static const char *const user_id_names[] = { "username", "clientid", NULL };
static const char *const boot_type_names[] = { "plain", "hash", NULL };

struct builtin_cfg {
	int user_id_type;
	struct passwd_cfg hash;
	char *bootstrap_file;
	int bootstrap_type;
};

struct builtin {
	struct builtin_cfg cfg; /* strings owned (copied from the parsed config) */
	struct hashpool *pool;  /* may be NULL (unit tests): slow checks then run inline */
	struct udb *db;
	char *id;
};

/* ---- configuration ---- */

static bool skip_core_key(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	(void)r, (void)m, (void)target;
	return true; /* mechanism, backend, enable: read by the chain core */
}

static bool read_hash_algo(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	return passwd_parse(r, m, &((struct builtin_cfg *)target)->hash);
}

static const struct cfg_field builtin_fields[] = {
	{ "mechanism", CFG_F_CUSTOM, 0, 0, 0, NULL, skip_core_key },
	{ "backend", CFG_F_CUSTOM, 0, 0, 0, NULL, skip_core_key },
	{ "enable", CFG_F_CUSTOM, 0, 0, 0, NULL, skip_core_key },
	{ "user_id_type", CFG_F_ENUM, offsetof(struct builtin_cfg, user_id_type), 0, 0, user_id_names, NULL },
	{ "password_hash_algorithm", CFG_F_CUSTOM, 0, 0, 0, NULL, read_hash_algo },
	{ "bootstrap_file", CFG_F_STRING, offsetof(struct builtin_cfg, bootstrap_file), 0, 0, NULL, NULL },
	{ "bootstrap_type", CFG_F_ENUM, offsetof(struct builtin_cfg, bootstrap_type), 0, 0, boot_type_names, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static void builtin_free_config(void *p)
{
	struct builtin_cfg *c = p;
	if (!c)
		return;
	free(c->bootstrap_file);
	free(c);
}

static void *builtin_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	struct builtin_cfg *c = xcalloc(1, sizeof *c);
	c->user_id_type = USER_ID_USERNAME;
	c->bootstrap_type = BOOT_PLAIN;
	passwd_default(&c->hash);
	if (!cfgr_load_fields(r, m, m->value, builtin_fields, c)) {
		builtin_free_config(c);
		return NULL;
	}
	if (c->bootstrap_file && !*c->bootstrap_file) {
		free(c->bootstrap_file);
		c->bootstrap_file = NULL;
	}
	if (c->bootstrap_file) {
		/* Read the file now too, so `--check` reports a broken one with its file:line. */
		const struct hocon_member *bf = hocon_get_member(m->value, "bootstrap_file");
		struct boot_list l;
		char err[512];
		if (!builtin_boot_read(c->bootstrap_file, c->bootstrap_type, &l, err, sizeof err)) {
			size_t old = cfgr_path_push(r, "bootstrap_file");
			cfgr_fail(r, bf ? bf : m, "%s", err);
			cfgr_path_pop(r, old);
			builtin_free_config(c);
			return NULL;
		}
		builtin_boot_free(&l);
	}
	return c;
}

/* ---- bootstrap files ---- */

static char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "bootstrap_file %s: %s", path, strerror(errno));
		return NULL;
	}
	struct stat st;
	if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > BOOTSTRAP_MAX_BYTES) {
		snprintf(err, errlen, "bootstrap_file %s: not a regular file of at most %u MB", path,
			 BOOTSTRAP_MAX_BYTES >> 20);
		fclose(f);
		return NULL;
	}
	char *buf = xmalloc((size_t)st.st_size + 1);
	size_t n = fread(buf, 1, (size_t)st.st_size, f);
	bool bad = ferror(f);
	fclose(f);
	if (bad) {
		snprintf(err, errlen, "bootstrap_file %s: read error", path);
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	*len = n;
	return buf;
}

static void boot_users_free(struct boot_user *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].user_id);
		if (v[i].secret) {
			memset(v[i].secret, 0, v[i].secret_len);
			free(v[i].secret);
		}
		free(v[i].salt);
	}
	free(v);
}

void builtin_boot_free(struct boot_list *l)
{
	boot_users_free(l->v, l->n);
	memset(l, 0, sizeof *l);
}

static struct boot_user *boot_push(struct boot_list *l)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 16;
		l->v = xrealloc(l->v, l->cap * sizeof *l->v);
	}
	struct boot_user *u = &l->v[l->n++];
	memset(u, 0, sizeof *u);
	return u;
}

static bool parse_superuser(const char *s, size_t n, bool *out)
{
	while (n && (*s == ' ' || *s == '\t'))
		s++, n--;
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	if (n == 0 || (n == 1 && *s == '0') || (n == 5 && strncasecmp(s, "false", 5) == 0)) {
		*out = false;
		return true;
	}
	if ((n == 1 && *s == '1') || (n == 4 && strncasecmp(s, "true", 4) == 0)) {
		*out = true;
		return true;
	}
	return false;
}

/* One CSV field list (RFC 4180: "quoted" fields with "" escapes may hold commas and line
 * breaks). *p advances past the record's line break; *line counts the lines consumed.
 * Returns the number of fields, or -1 with err set. */
struct csv_field {
	char *s;
	size_t n;
};

#define CSV_MAX_FIELDS 8

static int csv_record(const char **pp, const char *end, struct csv_field *f, int *line, char *why, size_t whylen)
{
	const char *p = *pp;
	int nf = 0;
	struct buf cur = { 0 };
	for (;;) {
		/* one field */
		buf_free(&cur);
		if (p < end && *p == '"') {
			p++;
			for (;;) {
				if (p >= end) {
					snprintf(why, whylen, "unterminated quoted field");
					goto bad;
				}
				if (*p == '"') {
					if (p + 1 < end && p[1] == '"') {
						buf_append(&cur, "\"", 1);
						p += 2;
						continue;
					}
					p++;
					break;
				}
				if (*p == '\n')
					(*line)++;
				buf_append(&cur, p, 1);
				p++;
			}
			if (p < end && *p == '\r' && (p + 1 >= end || p[1] == '\n'))
				p++;
			if (p < end && *p != ',' && *p != '\n') {
				snprintf(why, whylen, "unexpected character after a quoted field");
				goto bad;
			}
		} else {
			const char *s = p;
			while (p < end && *p != ',' && *p != '\n') {
				if (*p == '"') {
					snprintf(why, whylen, "a quote inside an unquoted field (quote the whole field)");
					goto bad;
				}
				p++;
			}
			size_t n = (size_t)(p - s);
			if (n && s[n - 1] == '\r' && (p >= end || *p == '\n'))
				n--;
			buf_append(&cur, s, n);
		}
		if (nf == CSV_MAX_FIELDS) {
			snprintf(why, whylen, "too many fields");
			goto bad;
		}
		f[nf].n = cur.len;
		f[nf].s = xmalloc(cur.len + 1);
		if (cur.len)
			memcpy(f[nf].s, cur.data, cur.len);
		f[nf].s[cur.len] = '\0';
		nf++;
		if (p < end && *p == ',') {
			p++;
			continue;
		}
		if (p < end && *p == '\n')
			p++;
		break;
	}
	buf_free(&cur);
	*pp = p;
	return nf;
bad:
	buf_free(&cur);
	for (int i = 0; i < nf; i++)
		free(f[i].s);
	return -1;
}

static void csv_free_fields(struct csv_field *f, int n)
{
	for (int i = 0; i < n; i++) {
		memset(f[i].s, 0, f[i].n);
		free(f[i].s);
	}
}

/* True for an empty line (only a line break, or blanks). */
static bool blank_line(const char *p, const char *end)
{
	for (; p < end && *p != '\n'; p++)
		if (*p != ' ' && *p != '\t' && *p != '\r')
			return false;
	return true;
}

/* Past the end of the line at p; *line counts it only when a line break follows (a last
 * line without one is still the same line for messages). */
static const char *next_line(const char *p, const char *end, int *line)
{
	const char *nl = memchr(p, '\n', (size_t)(end - p));
	if (!nl)
		return end;
	(*line)++;
	return nl + 1;
}

enum { COL_USER_ID, COL_SECRET, COL_SALT, COL_SUPER, COL__COUNT };

static bool parse_csv(const char *path, const char *text, size_t len, int type, struct boot_list *out, char *err,
		      size_t errlen)
{
	const char *p = text, *end = text + len;
	const char *secret_name = type == BOOT_HASH ? "password_hash" : "password";
	const char *expect = type == BOOT_HASH ? "user_id,password_hash,salt,is_superuser" : "user_id,password,is_superuser";
	char why[160];
	int line = 1;
	if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
		p += 3; /* UTF-8 byte order mark */
	while (p < end && blank_line(p, end))
		p = next_line(p, end, &line);
	if (p >= end) {
		snprintf(err, errlen, "%s:%d: empty file: expected the header line %s", path, line, expect);
		return false;
	}
	struct csv_field f[CSV_MAX_FIELDS];
	int hl = line;
	int nh = csv_record(&p, end, f, &line, why, sizeof why);
	line++;
	if (nh < 0) {
		snprintf(err, errlen, "%s:%d: header: %s", path, hl, why);
		return false;
	}
	int col[COL__COUNT] = { -1, -1, -1, -1 };
	bool ok = true;
	for (int i = 0; i < nh && ok; i++) {
		const char *name = f[i].s;
		size_t n = f[i].n;
		while (n && (name[n - 1] == ' ' || name[n - 1] == '\t'))
			n--;
		while (n && (*name == ' ' || *name == '\t'))
			name++, n--;
		int c = -1;
		if (n == 7 && memcmp(name, "user_id", 7) == 0)
			c = COL_USER_ID;
		else if (n == strlen(secret_name) && memcmp(name, secret_name, n) == 0)
			c = COL_SECRET;
		else if (type == BOOT_HASH && n == 4 && memcmp(name, "salt", 4) == 0)
			c = COL_SALT;
		else if (n == 12 && memcmp(name, "is_superuser", 12) == 0)
			c = COL_SUPER;
		if (c < 0) {
			snprintf(err, errlen, "%s:%d: header: unknown column \"%.*s\" for bootstrap_type = %s (expected %s)",
				 path, hl, (int)(n > 40 ? 40 : n), name, boot_type_names[type], expect);
			ok = false;
		} else if (col[c] >= 0) {
			snprintf(err, errlen, "%s:%d: header: column %s appears twice", path, hl, name);
			ok = false;
		} else {
			col[c] = i;
		}
	}
	csv_free_fields(f, nh);
	if (ok && (col[COL_USER_ID] < 0 || col[COL_SECRET] < 0)) {
		snprintf(err, errlen, "%s:%d: header: needs columns user_id and %s (expected %s)", path, hl, secret_name,
			 expect);
		ok = false;
	}
	while (ok && p < end) {
		if (blank_line(p, end)) {
			p = next_line(p, end, &line);
			continue;
		}
		int rl = line;
		int nf = csv_record(&p, end, f, &line, why, sizeof why);
		line++;
		if (nf < 0) {
			snprintf(err, errlen, "%s:%d: %s", path, rl, why);
			return false;
		}
		if (nf != nh) {
			snprintf(err, errlen, "%s:%d: expected %d fields (%s), got %d", path, rl, nh, expect, nf);
			ok = false;
		} else if (f[col[COL_USER_ID]].n == 0) {
			snprintf(err, errlen, "%s:%d: user_id is empty", path, rl);
			ok = false;
		} else if (f[col[COL_USER_ID]].n > 65535) {
			snprintf(err, errlen, "%s:%d: user_id is longer than 65535 bytes", path, rl);
			ok = false;
		} else {
			struct boot_user *u = boot_push(out);
			u->line = rl;
			u->user_id = f[col[COL_USER_ID]].s;
			u->user_id_len = f[col[COL_USER_ID]].n;
			f[col[COL_USER_ID]].s = NULL;
			u->secret = f[col[COL_SECRET]].s;
			u->secret_len = f[col[COL_SECRET]].n;
			f[col[COL_SECRET]].s = NULL;
			if (col[COL_SALT] >= 0) {
				u->salt = f[col[COL_SALT]].s;
				u->salt_len = f[col[COL_SALT]].n;
				f[col[COL_SALT]].s = NULL;
			}
			if (col[COL_SUPER] >= 0 &&
			    !parse_superuser(f[col[COL_SUPER]].s, f[col[COL_SUPER]].n, &u->is_superuser)) {
				snprintf(err, errlen, "%s:%d: is_superuser must be true or false", path, rl);
				ok = false;
			}
		}
		for (int i = 0; i < nf; i++) {
			if (f[i].s) {
				memset(f[i].s, 0, f[i].n);
				free(f[i].s);
			}
		}
	}
	return ok;
}

/* JSON through the HOCON parser (a superset of JSON that keeps file:line on every value). */
static bool json_string(const struct hocon_member *m, char **out, size_t *len)
{
	const struct hocon_node *n = m->value;
	if (n->type != HOCON_STRING && n->type != HOCON_NUMBER)
		return false;
	*len = strlen(n->str);
	*out = xstrndup(n->str, *len);
	return true;
}

static bool parse_json(const char *path, const char *text, size_t len, int type, struct boot_list *out, char *err,
		       size_t errlen)
{
	const char *secret_name = type == BOOT_HASH ? "password_hash" : "password";
	const char *expect = type == BOOT_HASH ? "user_id, password_hash, salt, is_superuser"
					       : "user_id, password, is_superuser";
	/* "users = <the file>": the prefix stays on line 1, so lines match the file's */
	static const char prefix[] = "bootstrap_users = ";
	char *wrapped = xmalloc(sizeof prefix + len);
	memcpy(wrapped, prefix, sizeof prefix - 1);
	memcpy(wrapped + sizeof prefix - 1, text, len);
	wrapped[sizeof prefix - 1 + len] = '\0';
	struct hocon_error herr;
	memset(&herr, 0, sizeof herr);
	struct hocon_node *root = hocon_parse_string_ex(wrapped, sizeof prefix - 1 + len, path, &herr, HOCON_NO_INCLUDE);
	memset(wrapped, 0, sizeof prefix - 1 + len);
	free(wrapped);
	if (!root) {
		snprintf(err, errlen, "%s:%d: %s", path, herr.line, herr.msg);
		return false;
	}
	bool ok = true;
	const struct hocon_member *top = hocon_get_member(root, "bootstrap_users");
	if (!top || top->value->type != HOCON_ARRAY || root->n != 1) {
		snprintf(err, errlen, "%s:%d: expected a JSON array of objects {%s}", path, top ? top->value->line : 1,
			 expect);
		ok = false;
	}
	for (size_t i = 0; ok && i < top->value->n; i++) {
		const struct hocon_node *obj = top->value->items[i];
		if (obj->type != HOCON_OBJECT) {
			snprintf(err, errlen, "%s:%d: item %zu: expected an object {%s}, got %s", path, obj->line, i + 1,
				 expect, hocon_type_str(obj->type));
			ok = false;
			break;
		}
		struct boot_user *u = boot_push(out);
		u->line = obj->line;
		for (size_t k = 0; ok && k < obj->n; k++) {
			const struct hocon_member *m = &obj->members[k];
			if (strcmp(m->key, "user_id") == 0) {
				free(u->user_id);
				if (!json_string(m, &u->user_id, &u->user_id_len))
					goto type_error;
			} else if (strcmp(m->key, secret_name) == 0) {
				free(u->secret);
				if (!json_string(m, &u->secret, &u->secret_len))
					goto type_error;
			} else if (type == BOOT_HASH && strcmp(m->key, "salt") == 0) {
				free(u->salt);
				u->salt = NULL;
				if (m->value->type != HOCON_NULL && !json_string(m, &u->salt, &u->salt_len))
					goto type_error;
			} else if (strcmp(m->key, "is_superuser") == 0) {
				const struct hocon_node *v = m->value;
				if (v->type == HOCON_BOOL)
					u->is_superuser = v->boolean;
				else if (v->type == HOCON_NULL)
					u->is_superuser = false;
				else if ((v->type != HOCON_STRING && v->type != HOCON_NUMBER) ||
					 !parse_superuser(v->str, strlen(v->str), &u->is_superuser)) {
					snprintf(err, errlen, "%s:%d: item %zu: is_superuser must be true or false", path,
						 m->line, i + 1);
					ok = false;
				}
			} else {
				snprintf(err, errlen, "%s:%d: item %zu: unknown key \"%.40s\" for bootstrap_type = %s (expected %s)",
					 path, m->line, i + 1, m->key, boot_type_names[type], expect);
				ok = false;
			}
			continue;
type_error:
			snprintf(err, errlen, "%s:%d: item %zu: %s must be a string", path, m->line, i + 1, m->key);
			ok = false;
		}
		if (ok && (!u->user_id || !*u->user_id)) {
			snprintf(err, errlen, "%s:%d: item %zu: user_id is missing or empty", path, obj->line, i + 1);
			ok = false;
		} else if (ok && u->user_id_len > 65535) {
			snprintf(err, errlen, "%s:%d: item %zu: user_id is longer than 65535 bytes", path, obj->line, i + 1);
			ok = false;
		} else if (ok && !u->secret) {
			snprintf(err, errlen, "%s:%d: item %zu: %s is missing", path, obj->line, i + 1, secret_name);
			ok = false;
		}
	}
	hocon_free(root);
	return ok;
}

bool builtin_boot_parse(const char *name, const char *text, size_t len, bool json, int type, struct boot_list *out,
			char *err, size_t errlen)
{
	memset(out, 0, sizeof *out);
	bool ok = json ? parse_json(name, text, len, type, out, err, errlen)
		       : parse_csv(name, text, len, type, out, err, errlen);
	if (!ok)
		builtin_boot_free(out);
	return ok;
}

static bool has_ext(const char *path, const char *ext)
{
	size_t n = strlen(path), e = strlen(ext);
	return n > e && strcasecmp(path + n - e, ext) == 0;
}

bool builtin_boot_read(const char *path, int type, struct boot_list *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof *out);
	bool json = has_ext(path, ".json");
	if (!json && !has_ext(path, ".csv")) {
		snprintf(err, errlen, "bootstrap_file %s: unknown format (the name must end in .csv or .json)", path);
		return false;
	}
	size_t len = 0;
	char *text = read_file(path, &len, err, errlen);
	if (!text)
		return false;
	bool ok = builtin_boot_parse(path, text, len, json, type, out, err, errlen);
	memset(text, 0, len);
	free(text);
	return ok;
}

/* ---- the authenticator ---- */

static struct builtin *B(struct authn *a)
{
	return (struct builtin *)(void *)a;
}

static bool make_password_cred(void *ctx, const uint8_t *password, size_t password_len, struct udb_user *u, char *err,
			       size_t errlen)
{
	struct builtin *b = ctx;
	char *hash = NULL, *salt = NULL;
	if (!passwd_hash(&b->cfg.hash, password, password_len, &hash, &salt)) {
		snprintf(err, errlen, "cannot hash the password");
		return false;
	}
	u->password_hash = hash;
	u->hash_len = strlen(hash);
	u->salt = (uint8_t *)salt;
	u->salt_len = strlen(salt);
	return true;
}

/* Add the users of the bootstrap file that do not exist yet; report counts. */
static bool load_bootstrap(struct builtin *b, int *added, int *kept, char *err, size_t errlen)
{
	struct boot_list l;
	*added = *kept = 0;
	if (!builtin_boot_read(b->cfg.bootstrap_file, b->cfg.bootstrap_type, &l, err, errlen))
		return false;
	bool ok = udb_begin(b->db, err, errlen);
	for (size_t i = 0; ok && i < l.n; i++) {
		struct boot_user *bu = &l.v[i];
		struct udb_user u = { 0 };
		if (udb_get(b->db, bu->user_id, bu->user_id_len, &u)) {
			udb_user_clear(&u);
			(*kept)++;
			continue;
		}
		u.id = (uint8_t *)xstrndup(bu->user_id, bu->user_id_len);
		u.id_len = bu->user_id_len;
		u.is_superuser = bu->is_superuser;
		if (b->cfg.bootstrap_type == BOOT_PLAIN) {
			char why[200];
			if (!make_password_cred(b, (const uint8_t *)bu->secret, bu->secret_len, &u, why, sizeof why)) {
				snprintf(err, errlen, "%s:%d: %s", b->cfg.bootstrap_file, bu->line, why);
				ok = false;
			}
		} else {
			u.password_hash = xstrndup(bu->secret, bu->secret_len);
			u.hash_len = bu->secret_len;
			u.salt = (uint8_t *)xstrndup(bu->salt ? bu->salt : "", bu->salt ? bu->salt_len : 0);
			u.salt_len = bu->salt ? bu->salt_len : 0;
		}
		if (ok) {
			enum bw_err e = udb_put(b->db, &u, false, err, errlen);
			if (e == BW_OK)
				(*added)++;
			else if (e == BW_ERR_EXISTS) /* the same user twice in the file: the first wins */
				(*kept)++;
			else
				ok = false;
		}
		udb_user_clear(&u);
	}
	if (ok)
		ok = udb_commit(b->db, err, errlen);
	else
		udb_commit(b->db, NULL, 0); /* keep what was added: the map already has it */
	builtin_boot_free(&l);
	return ok;
}

static void builtin_destroy(struct authn *a)
{
	struct builtin *b = B(a);
	if (!b)
		return;
	udb_close(b->db);
	free(b->cfg.bootstrap_file);
	free(b->id);
	free(b);
}

static struct authn *builtin_create(const void *cfgp, const struct authn_env *env, const char *id, char *err,
				    size_t errlen)
{
	const struct builtin_cfg *cfg = cfgp;
	struct builtin *b = xcalloc(1, sizeof *b);
	b->cfg = *cfg;
	b->cfg.bootstrap_file = cfg->bootstrap_file ? xstrdup(cfg->bootstrap_file) : NULL;
	b->pool = env->hashpool;
	b->id = udb_instance_key(env, cfgp, id);
	b->db = udb_open(env->data_dir, b->id, err, errlen);
	if (!b->db)
		goto fail;
	if (b->cfg.bootstrap_file) {
		int added, kept;
		if (!load_bootstrap(b, &added, &kept, err, errlen))
			goto fail;
		log_info("authenticator %s: bootstrap_file %s: %d users added, %d existing kept", b->id,
			 b->cfg.bootstrap_file, added, kept);
	}
	log_info("authenticator %s: %zu users in %s/auth.db", b->id, udb_count(b->db), env->data_dir);
	return (struct authn *)(void *)b;
fail:
	builtin_destroy((struct authn *)(void *)b);
	return NULL;
}

static bool builtin_reload(struct authn *a, char *err, size_t errlen)
{
	struct builtin *b = B(a);
	if (!b->cfg.bootstrap_file)
		return true;
	int added, kept;
	if (!load_bootstrap(b, &added, &kept, err, errlen))
		return false;
	log_info("authenticator %s: bootstrap_file %s reloaded: %d users added, %d existing kept", b->id,
		 b->cfg.bootstrap_file, added, kept);
	return true;
}

static bool builtin_ctl(struct authn *a, int argc, char **argv, struct buf *out)
{
	struct builtin *b = B(a);
	return udb_ctl(b->db, argc, argv, out, make_password_cred, b);
}

/* A check on the hashing pool: everything it needs is copied in. */
struct check_job {
	struct authn_call *call;
	struct passwd_cfg hash;
	struct udb_user user;
	uint8_t *password;
	size_t password_len;
	struct authn_result res;
};

static void finish(struct authn_call *call, enum authn_verdict v, uint8_t rc, bool super, const char *reason)
{
	struct authn_result res;
	memset(&res, 0, sizeof res);
	res.verdict = v;
	res.rc = rc;
	res.is_superuser = super;
	snprintf(res.reason, sizeof res.reason, "%s", reason);
	authn_done(call, &res);
}

static bool check(const struct passwd_cfg *hash, const struct udb_user *u, const uint8_t *pw, size_t pw_len)
{
	return u->password_hash &&
	       passwd_check(hash, u->password_hash, u->hash_len, (const char *)u->salt, u->salt_len, pw, pw_len);
}

static void job_work(void *arg)
{
	struct check_job *j = arg;
	memset(&j->res, 0, sizeof j->res);
	if (authn_call_cancelled(j->call)) {
		j->res.verdict = AUTHN_IGNORE;
		snprintf(j->res.reason, sizeof j->res.reason, "client gone before the password check");
	} else if (check(&j->hash, &j->user, j->password, j->password_len)) {
		j->res.verdict = AUTHN_ALLOW;
		j->res.is_superuser = j->user.is_superuser;
		snprintf(j->res.reason, sizeof j->res.reason, "password matches");
	} else {
		j->res.verdict = AUTHN_DENY;
		j->res.rc = 0x86;
		snprintf(j->res.reason, sizeof j->res.reason, "wrong password");
	}
}

static void job_free(struct check_job *j)
{
	udb_user_clear(&j->user);
	memset(j->password, 0, j->password_len);
	free(j->password);
	free(j);
}

static void job_done(void *arg)
{
	struct check_job *j = arg;
	struct authn_call *call = j->call;
	struct authn_result res = j->res;
	job_free(j);
	authn_done(call, &res);
}

/* The pool stopped before the job ran (broker shutdown): answer, so nothing is left waiting. */
static void job_dropped(void *arg)
{
	struct check_job *j = arg;
	struct authn_call *call = j->call;
	job_free(j);
	finish(call, AUTHN_DENY, 0x88, false, "server shutting down");
}

static void builtin_authenticate(struct authn *a, struct authn_call *call)
{
	struct builtin *b = B(a);
	const struct authn_request *rq = authn_call_request(call);
	if (rq->auth_method) {
		finish(call, AUTHN_IGNORE, 0, false, "enhanced authentication: not for a password authenticator");
		return;
	}
	if (!rq->password) {
		finish(call, AUTHN_IGNORE, 0, false, "no password");
		return;
	}
	const char *id = b->cfg.user_id_type == USER_ID_CLIENTID ? rq->client_id : rq->username;
	size_t id_len = b->cfg.user_id_type == USER_ID_CLIENTID ? (id ? strlen(id) : 0) : rq->username_len;
	if (!id) {
		finish(call, AUTHN_IGNORE, 0, false, "no username");
		return;
	}
	struct udb_user u;
	if (!udb_get(b->db, id, id_len, &u)) {
		finish(call, AUTHN_IGNORE, 0, false, "user not found");
		return;
	}
	if (!b->pool || !passwd_is_slow(&b->cfg.hash)) {
		bool ok = check(&b->cfg.hash, &u, rq->password, rq->password_len);
		bool super = u.is_superuser;
		udb_user_clear(&u);
		if (ok)
			finish(call, AUTHN_ALLOW, 0, super, "password matches");
		else
			finish(call, AUTHN_DENY, 0x86, false, "wrong password");
		return;
	}
	struct check_job *j = xcalloc(1, sizeof *j);
	j->call = call;
	j->hash = b->cfg.hash;
	j->user = u;
	j->password = xmemdup(rq->password_len ? (const void *)rq->password : "", rq->password_len ? rq->password_len : 1);
	j->password_len = rq->password_len;
	if (!hashpool_submit_drop(b->pool, job_work, NULL, job_done, job_dropped, j)) {
		job_free(j);
		finish(call, AUTHN_DENY, 0x89, false, "server busy: the password hashing pool is full");
	}
}

static const struct authn_ops builtin_ops = {
	.mechanism = "password_based",
	.backend = "built_in_database",
	.cacheable = false,
	.parse = builtin_parse,
	.free_config = builtin_free_config,
	.create = builtin_create,
	.destroy = builtin_destroy,
	.authenticate = builtin_authenticate,
	.ctl = builtin_ctl,
	.reload = builtin_reload,
};

__attribute__((constructor)) static void builtin_register(void)
{
	authn_register(&builtin_ops);
}
