/* `authorization.sources = [{ type = file, path = "etc/acl.conf" }]`: rules from an EMQX
 * acl.conf (acl.h), or inline as `rules = """..."""` (EMQX's API form). Exactly one of path
 * and rules. A relative path is relative to the broker's working directory.
 *
 * The file is parsed when the config is loaded (so `bulwark --check` and start-up refuse a
 * broken acl.conf with "FILE:LINE: message"), again when the source is created, and on
 * every reload (SIGHUP, ctl reload): a broken file then keeps the previous rules.
 *
 * check() runs on every worker thread at once: the rule list is read under a rwlock
 * (writer-preferring, so a reload is not starved); reload parses outside the lock and
 * only swaps the pointer under it.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "authz/acl.h"
#include "authz/source.h"
#include "core/alloc.h"

#define ACL_FILE_MAX (64u << 20) /* bytes */

struct file_cfg {
	char *path;
	char *rules;
};

struct authz_source {
	pthread_rwlock_t lock;
	struct acl *acl;  /* under lock */
	char *path;       /* NULL for inline rules */
	char *text;       /* what acl was parsed from (reload compares) */
	size_t text_len;
};

static bool skip_core_key(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	(void)r;
	(void)m;
	(void)target;
	return true; /* type / enable: read by the authorization core */
}

static const struct cfg_field fields[] = {
	{ "type", CFG_F_CUSTOM, 0, 0, 0, NULL, skip_core_key },
	{ "enable", CFG_F_CUSTOM, 0, 0, 0, NULL, skip_core_key },
	{ "path", CFG_F_STRING, offsetof(struct file_cfg, path), 0, 0, NULL, NULL },
	{ "rules", CFG_F_STRING, offsetof(struct file_cfg, rules), 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

/* The whole file, NUL-terminated; NULL with err. */
static char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return NULL;
	}
	struct stat st;
	char *buf = NULL;
	if (fstat(fd, &st) != 0) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "cannot read %s: not a regular file", path);
		goto fail;
	}
	if ((uint64_t)st.st_size > ACL_FILE_MAX) {
		snprintf(err, errlen, "%s: larger than %u MB", path, ACL_FILE_MAX >> 20);
		goto fail;
	}
	size_t cap = (size_t)st.st_size + 1, n = 0;
	buf = xmalloc(cap + 1);
	for (;;) {
		ssize_t got = read(fd, buf + n, cap - n);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
			goto fail;
		}
		if (got == 0)
			break;
		n += (size_t)got;
		if (n == cap) { /* the file grew while we read it */
			if (cap > ACL_FILE_MAX) {
				snprintf(err, errlen, "%s: larger than %u MB", path, ACL_FILE_MAX >> 20);
				goto fail;
			}
			cap *= 2;
			buf = xrealloc(buf, cap + 1);
		}
	}
	close(fd);
	buf[n] = '\0';
	*len = n;
	return buf;
fail:
	free(buf);
	close(fd);
	return NULL;
}

/* Read (when path) and parse; text is returned for the caller to keep. */
static struct acl *load(const struct file_cfg *c, char **text, size_t *text_len, char *err, size_t errlen)
{
	char *t;
	size_t len;
	if (c->path) {
		t = read_file(c->path, &len, err, errlen);
		if (!t)
			return NULL;
	} else {
		len = strlen(c->rules);
		t = xmemdup(c->rules, len + 1);
	}
	struct acl *a = acl_parse_conf(t, len, c->path ? c->path : "rules", err, errlen);
	if (!a) {
		free(t);
		return NULL;
	}
	*text = t;
	*text_len = len;
	return a;
}

static void file_free_config(void *p)
{
	struct file_cfg *c = p;
	if (!c)
		return;
	free(c->path);
	free(c->rules);
	free(c);
}

static void *file_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	struct file_cfg *c = xcalloc(1, sizeof *c);
	if (!cfgr_load_fields(r, m, m->value, fields, c))
		goto fail;
	if (!c->path == !c->rules) {
		cfgr_fail(r, m, "a file source needs exactly one of path (an acl.conf file) and rules (its text)");
		goto fail;
	}
	if (c->path && !c->path[0]) {
		cfgr_fail(r, hocon_get_member(m->value, "path"), "path is empty");
		goto fail;
	}
	char err[512];
	char *text;
	size_t len;
	struct acl *a = load(c, &text, &len, err, sizeof err);
	if (!a) {
		const struct hocon_member *k = hocon_get_member(m->value, c->path ? "path" : "rules");
		size_t old = cfgr_path_push(r, c->path ? "path" : "rules");
		cfgr_fail(r, k ? k : m, "%s", err);
		cfgr_path_pop(r, old);
		goto fail;
	}
	acl_free(a);
	free(text);
	return c;
fail:
	file_free_config(c);
	return NULL;
}

static struct authz_source *file_create(const void *cfg, const struct authz_env *env, char *err, size_t errlen)
{
	(void)env;
	const struct file_cfg *c = cfg;
	struct authz_source *s = xcalloc(1, sizeof *s);
	s->acl = load(c, &s->text, &s->text_len, err, errlen);
	if (!s->acl) {
		free(s);
		return NULL;
	}
	pthread_rwlockattr_t at;
	pthread_rwlockattr_init(&at);
	pthread_rwlockattr_setkind_np(&at, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&s->lock, &at);
	pthread_rwlockattr_destroy(&at);
	s->path = c->path ? xstrdup(c->path) : NULL;
	return s;
}

static void file_destroy(struct authz_source *s)
{
	if (!s)
		return;
	pthread_rwlock_destroy(&s->lock);
	acl_free(s->acl);
	free(s->path);
	free(s->text);
	free(s);
}

static enum authz_verdict file_check(struct authz_source *s, const struct authz_client *cl, const struct authz_action *a)
{
	pthread_rwlock_rdlock(&s->lock);
	enum authz_verdict v = acl_check(s->acl, cl, a);
	pthread_rwlock_unlock(&s->lock);
	return v;
}

/* Reloads run on one thread (the main loop): text/text_len are only touched here and in
 * create/destroy. */
static bool file_reload(struct authz_source *s, bool *changed, char *err, size_t errlen)
{
	*changed = false;
	if (!s->path)
		return true; /* inline rules change with the config, not here */
	size_t len;
	char *text = read_file(s->path, &len, err, errlen);
	if (!text)
		return false;
	if (len == s->text_len && memcmp(text, s->text, len) == 0) {
		free(text);
		return true;
	}
	struct acl *a = acl_parse_conf(text, len, s->path, err, errlen);
	if (!a) {
		free(text);
		return false;
	}
	pthread_rwlock_wrlock(&s->lock);
	struct acl *old = s->acl;
	s->acl = a;
	pthread_rwlock_unlock(&s->lock);
	acl_free(old);
	free(s->text);
	s->text = text;
	s->text_len = len;
	*changed = true;
	return true;
}

static const struct authz_source_ops file_ops = {
	.type = "file",
	.async = false,
	.parse = file_parse,
	.free_config = file_free_config,
	.create = file_create,
	.destroy = file_destroy,
	.check = file_check,
	.start = NULL,
	.reload = file_reload,
	.ctl = NULL,
};

__attribute__((constructor)) static void file_register(void)
{
	authz_source_register(&file_ops);
}
