/* PSK authentication (psk_authentication, EMQX §2.4): the init_file's identities and
 * secrets, and the server callback that hands OpenSSL the secret for an identity.
 *
 * The secret is the text after the separator, used as is: its bytes are the key (EMQX
 * stores the text and returns it from its user_lookup_fun unchanged, no hex decoding).
 * A client tool that takes the key in hex (openssl s_client -psk) needs the hex of those
 * bytes. PSK cipher suites exist for TLS <= 1.2 only; TLS 1.3 handshakes never use these
 * identities (as in EMQX).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "tls/tls_int.h"

static int entry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct tls_psk_entry *)a)->identity, ((const struct tls_psk_entry *)b)->identity);
}

void tls_psk_free(struct tls_psk_table *t)
{
	for (size_t i = 0; i < t->n; i++) {
		free(t->v[i].identity);
		if (t->v[i].secret) {
			OPENSSL_cleanse(t->v[i].secret, t->v[i].secret_len);
			free(t->v[i].secret);
		}
	}
	free(t->v);
	t->v = NULL;
	t->n = 0;
}

bool tls_psk_parse(const char *text, size_t len, const char *name, const char *sep, struct tls_psk_table *t, char *err,
		   size_t errlen)
{
	size_t seplen = strlen(sep);
	size_t cap = 0;
	int *lines = NULL; /* line number of each entry, for duplicate messages */
	t->v = NULL;
	t->n = 0;
	if (!seplen) {
		snprintf(err, errlen, "%s: the separator is empty", name);
		return false;
	}
	const char *p = text, *end = text + len;
	int lineno = 0;
	bool ok = true;
	while (p < end && ok) {
		lineno++;
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		const char *next = nl ? nl + 1 : end;
		if (le > p && le[-1] == '\r')
			le--;
		const char *s = p;
		p = next;
		size_t n = (size_t)(le - s);
		size_t blank = 0;
		while (blank < n && (s[blank] == ' ' || s[blank] == '\t'))
			blank++;
		if (blank == n)
			continue;
		if (memchr(s, '\0', n)) {
			snprintf(err, errlen, "%s:%d: NUL byte in line", name, lineno);
			ok = false;
			break;
		}
		const char *at = memmem(s, n, sep, seplen);
		if (!at) {
			snprintf(err, errlen, "%s:%d: expected identity%ssecret (no \"%s\" separator)", name, lineno, sep, sep);
			ok = false;
			break;
		}
		size_t idlen = (size_t)(at - s);
		const char *sec = at + seplen;
		size_t seclen = (size_t)(le - sec);
		if (!idlen || !seclen) {
			snprintf(err, errlen, "%s:%d: empty %s", name, lineno, idlen ? "secret" : "identity");
			ok = false;
			break;
		}
		if (idlen > PSK_MAX_IDENTITY_LEN) {
			snprintf(err, errlen, "%s:%d: identity longer than %d bytes", name, lineno, PSK_MAX_IDENTITY_LEN);
			ok = false;
			break;
		}
		if (seclen > PSK_MAX_PSK_LEN) {
			snprintf(err, errlen, "%s:%d: secret longer than %d bytes", name, lineno, PSK_MAX_PSK_LEN);
			ok = false;
			break;
		}
		if (t->n == cap) {
			cap = cap ? cap * 2 : 16;
			t->v = xrealloc(t->v, cap * sizeof *t->v);
			lines = xrealloc(lines, cap * sizeof *lines);
		}
		struct tls_psk_entry *e = &t->v[t->n];
		e->identity = xstrndup(s, idlen);
		e->secret = xmemdup(sec, seclen);
		e->secret_len = seclen;
		lines[t->n] = lineno;
		t->n++;
	}
	if (ok && t->n > 1) {
		/* Sort with the line numbers alongside, to name both lines of a duplicate. */
		struct pair { struct tls_psk_entry e; int line; } *tmp = xmalloc(t->n * sizeof *tmp);
		for (size_t i = 0; i < t->n; i++) {
			tmp[i].e = t->v[i];
			tmp[i].line = lines[i];
		}
		qsort(tmp, t->n, sizeof *tmp, entry_cmp); /* e is the first member */
		for (size_t i = 0; i < t->n; i++) {
			t->v[i] = tmp[i].e;
			lines[i] = tmp[i].line;
		}
		free(tmp);
		for (size_t i = 1; i < t->n && ok; i++) {
			if (strcmp(t->v[i - 1].identity, t->v[i].identity) == 0) {
				int a = lines[i - 1], b = lines[i];
				snprintf(err, errlen, "%s:%d: duplicate identity (also on line %d)", name, a > b ? a : b,
					 a > b ? b : a);
				ok = false;
			}
		}
	}
	free(lines);
	if (!ok)
		tls_psk_free(t);
	return ok;
}

bool tls_psk_load(const char *path, const char *sep, struct tls_psk_table *t, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "psk_authentication.init_file: cannot read %s: %s", path, strerror(errno));
		return false;
	}
	struct buf b = { 0 };
	char chunk[8192];
	size_t n;
	bool ok = true;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
		if (b.len + n > (64u << 20)) {
			snprintf(err, errlen, "psk_authentication.init_file: %s is larger than 64 MB", path);
			ok = false;
			break;
		}
		buf_append(&b, chunk, n);
	}
	if (ok && ferror(f)) {
		snprintf(err, errlen, "psk_authentication.init_file: cannot read %s: %s", path, strerror(errno));
		ok = false;
	}
	fclose(f);
	if (ok) {
		char e[400];
		ok = tls_psk_parse(b.data ? (const char *)b.data : "", b.len, path, sep, t, e, sizeof e);
		if (!ok)
			snprintf(err, errlen, "psk_authentication.init_file: %s", e);
	}
	if (b.data)
		OPENSSL_cleanse(b.data, b.len);
	buf_free(&b);
	return ok;
}

const struct tls_psk_entry *tls_psk_find(const struct tls_psk_table *t, const char *identity)
{
	if (!t->n || !identity)
		return NULL;
	struct tls_psk_entry key = { .identity = (char *)identity };
	return bsearch(&key, t->v, t->n, sizeof *t->v, entry_cmp);
}

unsigned int tls_psk_server_cb(SSL *ssl, const char *identity, unsigned char *psk, unsigned int max_psk_len)
{
	struct tls_gen *g = tls_gen_of(ssl);
	if (!g || !g->psk)
		return 0;
	/* TLS 1.3 would take an external PSK through this callback too; EMQX's PSK is TLS <= 1.2. */
	if (SSL_version(ssl) >= TLS1_3_VERSION)
		return 0;
	const struct tls_psk_entry *e = tls_psk_find(&g->psk_table, identity);
	if (!e || e->secret_len > max_psk_len) {
		struct tls_conn_info *ci = tls_conn_info_of(ssl, true);
		if (ci && !ci->failed) {
			char safe[80];
			size_t k = 0;
			for (const char *p = identity ? identity : ""; *p && k + 5 < sizeof safe; p++) {
				unsigned char ch = (unsigned char)*p;
				if (ch < 0x20 || ch >= 0x7f)
					k += (size_t)snprintf(safe + k, sizeof safe - k, "\\x%02X", ch);
				else
					safe[k++] = (char)ch;
			}
			safe[k] = '\0';
			ci->failed = true;
			ci->depth = -1;
			snprintf(ci->reason, sizeof ci->reason, "unknown PSK identity \"%s\"", safe);
		}
		return 0;
	}
	memcpy(psk, e->secret, e->secret_len);
	return (unsigned int)e->secret_len;
}
