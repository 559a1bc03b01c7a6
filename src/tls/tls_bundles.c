/* Managed certificate bundles (ssl_options.managed_certs, SPEC §2, seed 002).
 *
 * A bundle is a folder <data_dir>/certs/<namespace>/<bundle_name>/ holding
 *   chain.pem      the server certificate, then its intermediates (PEM)
 *   key.pem        its private key (PEM, mode 0600)
 *   key-password   optional: the passphrase of an encrypted key.pem (trailing whitespace and
 *                  line breaks are trimmed, like `password = "file://..."`), mode 0600
 *   ca.pem         optional: the CA chain that issued the certificate, kept with the bundle
 *                  for tooling; listeners never use it (clients are verified against the
 *                  listener's cacertfile)
 * Folders are mode 0700. `bulwark ctl certs ...` manages them (tls_bundles_ctl); each file
 * is written to a temporary name, fsync'ed and renamed into place, then the folder is
 * fsync'ed, so a crash leaves either the old or the new file, never a torn one.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "config/config.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "tls/tls.h"
#include "tls/tls_int.h"

#define BUNDLE_MAX_FILE (1u << 20)

char *tls_bundle_dir(const char *data_dir, const char *ns, const char *name)
{
	return xasprintf("%s/certs/%s/%s", data_dir, ns, name);
}

/* Whole file (at most BUNDLE_MAX_FILE bytes, NUL-terminated), or NULL with errno set. */
static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	struct buf b = { 0 };
	char chunk[8192];
	size_t n;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
		if (b.len + n > BUNDLE_MAX_FILE) {
			fclose(f);
			if (b.data)
				OPENSSL_cleanse(b.data, b.len);
			buf_free(&b);
			errno = EFBIG;
			return NULL;
		}
		buf_append(&b, chunk, n);
	}
	int bad = ferror(f);
	fclose(f);
	if (bad) {
		buf_free(&b);
		errno = EIO;
		return NULL;
	}
	buf_append(&b, "", 1);
	*len = b.len - 1;
	return (char *)b.data;
}

static void free_secret(char *s, size_t len)
{
	if (s) {
		OPENSSL_cleanse(s, len);
		free(s);
	}
}

/* The key-password file's passphrase (trimmed), NULL when there is none (errno = ENOENT). */
static char *read_password(const char *path, bool *failed)
{
	size_t len = 0;
	char *s = slurp(path, &len);
	*failed = false;
	if (!s) {
		*failed = errno != ENOENT;
		return NULL;
	}
	while (len && (s[len - 1] == '\n' || s[len - 1] == '\r' || s[len - 1] == ' ' || s[len - 1] == '\t'))
		s[--len] = '\0';
	return s;
}

bool tls_bundle_load(SSL_CTX *ctx, const char *dir, const char *label, char *err, size_t errlen)
{
	char *chain = xasprintf("%s/chain.pem", dir), *key = xasprintf("%s/key.pem", dir);
	char *pwpath = xasprintf("%s/key-password", dir);
	char *pw = NULL;
	bool ok = false, pwfail;
	const char *files[2] = { chain, key };
	for (int i = 0; i < 2; i++) {
		if (access(files[i], R_OK) != 0) {
			snprintf(err, errlen, "bundle %s: cannot read %s: %s (add it with: bulwark ctl certs add %s --chain "
					      "FILE --key FILE)",
				 label, files[i], strerror(errno), label);
			goto out;
		}
	}
	pw = read_password(pwpath, &pwfail);
	if (pwfail) {
		snprintf(err, errlen, "bundle %s: cannot read %s: %s", label, pwpath, strerror(errno));
		goto out;
	}
	SSL_CTX_set_default_passwd_cb(ctx, tls_password_cb);
	SSL_CTX_set_default_passwd_cb_userdata(ctx, pw);
	if (SSL_CTX_use_certificate_chain_file(ctx, chain) != 1) {
		unsigned long e = ERR_peek_last_error();
		snprintf(err, errlen, "bundle %s: cannot load %s: %s", label, chain,
			 e ? ERR_reason_error_string(e) : "no certificate");
		goto out;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		unsigned long e = ERR_peek_last_error();
		if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
			snprintf(err, errlen, "bundle %s: %s does not match the certificate in %s", label, key, chain);
			goto out;
		}
		snprintf(err, errlen, "bundle %s: cannot load %s: %s%s", label, key,
			 e ? ERR_reason_error_string(e) : "no key",
			 pw ? "" : " (an encrypted key needs its passphrase in key-password)");
		goto out;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, errlen, "bundle %s: %s does not match the certificate in %s", label, key, chain);
		goto out;
	}
	ok = true;
out:
	SSL_CTX_set_default_passwd_cb(ctx, NULL);
	SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
	if (pw)
		free_secret(pw, strlen(pw));
	free(chain);
	free(key);
	free(pwpath);
	ERR_clear_error();
	return ok;
}

/* ---- bulwark ctl certs ---- */

static const char usage_text[] =
	"usage: certs list [NAMESPACE]\n"
	"       certs add [NAMESPACE/]NAME --chain FILE --key FILE [--ca FILE] [--key-password-file FILE]\n"
	"       certs replace [NAMESPACE/]NAME --chain FILE --key FILE [--ca FILE] [--key-password-file FILE]\n"
	"       certs delete [NAMESPACE/]NAME [--force]\n"
	"NAMESPACE defaults to global; a bundle lives in DATA_DIR/certs/NAMESPACE/NAME/ (chain.pem = leaf then\n"
	"intermediates, key.pem, optional key-password and ca.pem). FILE paths are read by the broker.\n";

/* Bundle and namespace names become folder names. */
static bool safe_name(const char *s)
{
	return s && *s && *s != '.' && strlen(s) <= 128 &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == strlen(s);
}

static bool split_ref(const char *ref, char *ns, size_t nslen, char *name, size_t namelen, struct buf *out)
{
	const char *slash = strchr(ref, '/');
	if (slash) {
		snprintf(ns, nslen, "%.*s", (int)(slash - ref), ref);
		snprintf(name, namelen, "%s", slash + 1);
	} else {
		snprintf(ns, nslen, "global");
		snprintf(name, namelen, "%s", ref);
	}
	if (!safe_name(ns) || !safe_name(name)) {
		buf_printf(out, "bad bundle name %s: namespace and name use letters, digits, '-', '_' and '.' (not first)\n",
			   ref);
		return false;
	}
	return true;
}

static void fmt_time(const ASN1_TIME *t, char *out, size_t outlen)
{
	struct tm tm;
	if (!t || ASN1_TIME_to_tm(t, &tm) != 1) {
		snprintf(out, outlen, "?");
		return;
	}
	strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* "DNS:a,DNS:b,IP:1.2.3.4" */
static void fmt_sans(X509 *x, char *out, size_t outlen)
{
	size_t k = 0;
	out[0] = '\0';
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && k + 1 < outlen; i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, i);
		char v[128] = "";
		const char *kind = NULL;
		if (gn->type == GEN_DNS) {
			kind = "DNS";
			const ASN1_IA5STRING *s = gn->d.dNSName;
			int n = ASN1_STRING_length(s);
			const unsigned char *d = ASN1_STRING_get0_data(s);
			int j = 0;
			for (; j < n && j < (int)sizeof v - 1; j++)
				v[j] = d[j] >= 0x21 && d[j] < 0x7f && d[j] != ',' ? (char)d[j] : '?';
			v[j] = '\0';
		} else if (gn->type == GEN_IPADD) {
			kind = "IP";
			const unsigned char *d = ASN1_STRING_get0_data(gn->d.iPAddress);
			int n = ASN1_STRING_length(gn->d.iPAddress);
			if (n == 4)
				snprintf(v, sizeof v, "%u.%u.%u.%u", d[0], d[1], d[2], d[3]);
			else
				snprintf(v, sizeof v, "(IPv6)");
		}
		if (kind)
			k += (size_t)snprintf(out + k, outlen - k, "%s%s:%s", k ? "," : "", kind, v);
	}
	GENERAL_NAMES_free(gens);
	if (!out[0])
		snprintf(out, outlen, "-");
}

/* Certificates in PEM text (at least one), or NULL with a reason. */
static STACK_OF(X509) *parse_certs(const char *pem, size_t len, const char *what, const char *path, struct buf *out)
{
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	STACK_OF(X509) *sk = sk_X509_new_null();
	X509 *x;
	while (b && sk && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)))
		sk_X509_push(sk, x);
	unsigned long e = ERR_peek_last_error();
	BIO_free(b);
	bool clean = !e || (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE);
	ERR_clear_error();
	if (!sk || !sk_X509_num(sk) || !clean) {
		buf_printf(out, "%s %s: %s\n", what, path,
			   !clean ? "not valid PEM certificates" : "holds no PEM certificate");
		sk_X509_pop_free(sk, X509_free);
		return NULL;
	}
	return sk;
}

static bool write_atomic(const char *dir, const char *name, const void *data, size_t len, mode_t mode, struct buf *out)
{
	char *tmp = xasprintf("%s/.%s.tmp.%ld", dir, name, (long)getpid());
	char *dst = xasprintf("%s/%s", dir, name);
	bool ok = false;
	unlink(tmp);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0) {
		buf_printf(out, "cannot create %s: %s\n", tmp, strerror(errno));
		goto out;
	}
	const char *p = data;
	size_t left = len;
	while (left) {
		ssize_t n = write(fd, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			buf_printf(out, "cannot write %s: %s\n", tmp, strerror(errno));
			close(fd);
			unlink(tmp);
			goto out;
		}
		p += n;
		left -= (size_t)n;
	}
	if (fchmod(fd, mode) != 0 || fsync(fd) != 0) {
		buf_printf(out, "cannot sync %s: %s\n", tmp, strerror(errno));
		close(fd);
		unlink(tmp);
		goto out;
	}
	close(fd);
	if (rename(tmp, dst) != 0) {
		buf_printf(out, "cannot rename %s to %s: %s\n", tmp, dst, strerror(errno));
		unlink(tmp);
		goto out;
	}
	ok = true;
out:
	free(tmp);
	free(dst);
	return ok;
}

static void sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
}

static bool mkdir_one(const char *path, struct buf *out)
{
	if (mkdir(path, 0700) == 0 || errno == EEXIST) {
		struct stat st;
		if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
			return true;
		errno = ENOTDIR;
	}
	buf_printf(out, "cannot create %s: %s\n", path, strerror(errno));
	return false;
}

static bool exists(const char *dir, const char *name)
{
	char *p = xasprintf("%s/%s", dir, name);
	bool r = access(p, F_OK) == 0;
	free(p);
	return r;
}

/* Names of the enabled ssl listeners that use bundle ns/name, appended to b ("" when none). */
static void users_of(const struct config *cfg, const char *ns, const char *name, struct buf *b)
{
	for (size_t i = 0; cfg && i < cfg->n_listeners; i++) {
		const struct cfg_listener *l = &cfg->listeners[i];
		if (!l->enable || l->type != CFG_LISTENER_SSL)
			continue;
		for (size_t k = 0; k < l->ssl.n_managed_certs; k++) {
			const struct cfg_managed_cert *mc = &l->ssl.managed_certs[k];
			if (!strcmp(mc->bundle_name, name) && !strcmp(mc->ns ? mc->ns : "global", ns)) {
				buf_printf(b, "%s%s", b->len ? "," : "", l->id);
				break;
			}
		}
	}
	buf_append(b, "", 1);
	b->len--;
}

static bool certs_put(const char *data_dir, bool replace, int argc, char **argv, struct buf *out)
{
	const char *chain_path = NULL, *key_path = NULL, *ca_path = NULL, *pw_path = NULL;
	char ns[160], name[160];
	if (argc < 3) {
		buf_append_str(out, usage_text);
		return false;
	}
	for (int i = 3; i < argc; i++) {
		const char **slot = !strcmp(argv[i], "--chain")	      ? &chain_path
				    : !strcmp(argv[i], "--key")		      ? &key_path
				    : !strcmp(argv[i], "--ca")		      ? &ca_path
				    : !strcmp(argv[i], "--key-password-file") ? &pw_path
									      : NULL;
		if (!slot || i + 1 >= argc) {
			buf_printf(out, "%s: %s\n", slot ? "missing value after" : "unknown option", argv[i]);
			buf_append_str(out, usage_text);
			return false;
		}
		*slot = argv[++i];
	}
	if (!split_ref(argv[2], ns, sizeof ns, name, sizeof name, out))
		return false;
	if (!chain_path || !key_path) {
		buf_printf(out, "certs %s needs --chain FILE and --key FILE\n", argv[1]);
		return false;
	}
	char *chain = NULL, *key = NULL, *ca = NULL, *pw = NULL;
	size_t chain_len = 0, key_len = 0, ca_len = 0, pw_len = 0;
	STACK_OF(X509) *certs = NULL, *cas = NULL;
	EVP_PKEY *pkey = NULL;
	char *ns_dir = NULL, *dir = NULL;
	bool ok = false;
	struct { const char *path; char **data; size_t *len; } in[] = {
		{ chain_path, &chain, &chain_len }, { key_path, &key, &key_len },
		{ ca_path, &ca, &ca_len }, { pw_path, &pw, &pw_len },
	};
	for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
		if (!in[i].path)
			continue;
		*in[i].data = slurp(in[i].path, in[i].len);
		if (!*in[i].data) {
			buf_printf(out, "cannot read %s: %s\n", in[i].path, strerror(errno));
			goto out;
		}
	}
	if (pw)
		while (pw_len && (pw[pw_len - 1] == '\n' || pw[pw_len - 1] == '\r' || pw[pw_len - 1] == ' ' ||
				  pw[pw_len - 1] == '\t'))
			pw[--pw_len] = '\0';
	/* Validate what will be written (the bytes in memory, not the paths again). */
	if (!(certs = parse_certs(chain, chain_len, "--chain", chain_path, out)))
		goto out;
	if (ca && !(cas = parse_certs(ca, ca_len, "--ca", ca_path, out)))
		goto out;
	BIO *kb = BIO_new_mem_buf(key, (int)key_len);
	pkey = kb ? PEM_read_bio_PrivateKey(kb, NULL, tls_password_cb, pw) : NULL;
	BIO_free(kb);
	if (!pkey) {
		unsigned long e = ERR_peek_last_error();
		buf_printf(out, "--key %s: cannot load the private key: %s%s\n", key_path,
			   e ? ERR_reason_error_string(e) : "no PEM private key",
			   pw ? "" : " (an encrypted key needs --key-password-file)");
		ERR_clear_error();
		goto out;
	}
	X509 *leaf = sk_X509_value(certs, 0);
	if (X509_check_private_key(leaf, pkey) != 1) {
		buf_printf(out, "--key %s does not match the first certificate of --chain %s\n", key_path, chain_path);
		ERR_clear_error();
		goto out;
	}
	ns_dir = xasprintf("%s/certs/%s", data_dir, ns);
	dir = tls_bundle_dir(data_dir, ns, name);
	char *certs_dir = xasprintf("%s/certs", data_dir);
	bool made = mkdir_one(data_dir, out) && mkdir_one(certs_dir, out) && mkdir_one(ns_dir, out);
	free(certs_dir);
	if (!made)
		goto out;
	bool present = exists(dir, "chain.pem") || exists(dir, "key.pem");
	if (!replace && present) {
		buf_printf(out, "bundle %s/%s already exists (use: certs replace %s/%s ...)\n", ns, name, ns, name);
		goto out;
	}
	if (replace && !present) {
		buf_printf(out, "no bundle %s/%s (use: certs add %s/%s ...)\n", ns, name, ns, name);
		goto out;
	}
	if (!mkdir_one(dir, out))
		goto out;
	/* Key material first: until chain.pem changes, a reload that catches the bundle half
	 * written fails the key check and keeps the previous generation. */
	if (pw && !write_atomic(dir, "key-password", pw, pw_len, 0600, out))
		goto out;
	if (!write_atomic(dir, "key.pem", key, key_len, 0600, out))
		goto out;
	if (!pw && exists(dir, "key-password")) {
		char *p = xasprintf("%s/key-password", dir);
		unlink(p);
		free(p);
	}
	if (ca && !write_atomic(dir, "ca.pem", ca, ca_len, 0644, out))
		goto out;
	if (!ca && exists(dir, "ca.pem")) {
		char *p = xasprintf("%s/ca.pem", dir);
		unlink(p);
		free(p);
	}
	if (!write_atomic(dir, "chain.pem", chain, chain_len, 0644, out))
		goto out;
	sync_dir(dir);
	sync_dir(ns_dir);
	char subject[256], until[32];
	tls_name_str(X509_get_subject_name(leaf), subject, sizeof subject);
	fmt_time(X509_get0_notAfter(leaf), until, sizeof until);
	buf_printf(out, "%s bundle %s/%s: %s, %d certificate%s, valid until %s\n", replace ? "replaced" : "added", ns,
		   name, subject, sk_X509_num(certs), sk_X509_num(certs) == 1 ? "" : "s", until);
	if (X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0)
		buf_printf(out, "warning: the certificate has expired\n");
	else if (X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0)
		buf_printf(out, "warning: the certificate is not valid yet\n");
	ok = true;
out:
	sk_X509_pop_free(certs, X509_free);
	sk_X509_pop_free(cas, X509_free);
	EVP_PKEY_free(pkey);
	free(chain);
	free_secret(key, key_len);
	free(ca);
	free_secret(pw, pw_len);
	free(ns_dir);
	free(dir);
	ERR_clear_error();
	return ok;
}

static int name_filter(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

static void list_bundle(const struct config *cfg, const char *data_dir, const char *ns, const char *name,
			struct buf *out)
{
	char *dir = tls_bundle_dir(data_dir, ns, name);
	char *chain = xasprintf("%s/chain.pem", dir);
	size_t len = 0;
	char *pem = slurp(chain, &len);
	struct buf users = { 0 };
	users_of(cfg, ns, name, &users);
	if (!pem) {
		buf_printf(out, "%s/%s\t(no readable chain.pem: %s)\n", ns, name, strerror(errno));
		goto out;
	}
	struct buf err = { 0 };
	STACK_OF(X509) *sk = parse_certs(pem, len, "chain", chain, &err);
	buf_free(&err);
	if (!sk) {
		buf_printf(out, "%s/%s\t(chain.pem holds no valid certificate)\n", ns, name);
		goto out;
	}
	X509 *leaf = sk_X509_value(sk, 0);
	char subject[256], sans[256], until[32];
	tls_name_str(X509_get_subject_name(leaf), subject, sizeof subject);
	fmt_sans(leaf, sans, sizeof sans);
	fmt_time(X509_get0_notAfter(leaf), until, sizeof until);
	const char *state = X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0 ? "expired" : "valid";
	buf_printf(out, "%s/%s\tsubject=%s\tsan=%s\tnot_after=%s\t%s\tused_by=%s\n", ns, name, subject, sans, until,
		   state, users.len ? (char *)users.data : "-");
	sk_X509_pop_free(sk, X509_free);
out:
	buf_free(&users);
	free(pem);
	free(chain);
	free(dir);
}

static bool certs_list(const struct config *cfg, const char *data_dir, const char *only_ns, struct buf *out)
{
	if (only_ns && !safe_name(only_ns)) {
		buf_printf(out, "bad namespace %s\n", only_ns);
		return false;
	}
	char *root = xasprintf("%s/certs", data_dir);
	struct dirent **nss = NULL;
	int nn = scandir(root, &nss, name_filter, alphasort);
	size_t before = out->len;
	for (int i = 0; i < nn; i++) {
		const char *ns = nss[i]->d_name;
		char *nsdir = xasprintf("%s/%s", root, ns);
		struct stat st;
		if ((!only_ns || !strcmp(only_ns, ns)) && stat(nsdir, &st) == 0 && S_ISDIR(st.st_mode)) {
			struct dirent **bs = NULL;
			int nb = scandir(nsdir, &bs, name_filter, alphasort);
			for (int k = 0; k < nb; k++) {
				char *bdir = xasprintf("%s/%s", nsdir, bs[k]->d_name);
				if (stat(bdir, &st) == 0 && S_ISDIR(st.st_mode) &&
				    (exists(bdir, "chain.pem") || exists(bdir, "key.pem")))
					list_bundle(cfg, data_dir, ns, bs[k]->d_name, out);
				free(bdir);
				free(bs[k]);
			}
			free(bs);
		}
		free(nsdir);
		free(nss[i]);
	}
	free(nss);
	if (out->len == before)
		buf_printf(out, "no certificate bundles%s%s in %s\n", only_ns ? " in namespace " : "", only_ns ? only_ns : "",
			   root);
	free(root);
	return true;
}

static bool certs_delete(const struct config *cfg, const char *data_dir, int argc, char **argv, struct buf *out)
{
	char ns[160], name[160];
	bool force = false;
	if (argc < 3 || argc > 4 || (argc == 4 && !(force = !strcmp(argv[3], "--force")))) {
		buf_append_str(out, usage_text);
		return false;
	}
	if (!split_ref(argv[2], ns, sizeof ns, name, sizeof name, out))
		return false;
	char *dir = tls_bundle_dir(data_dir, ns, name);
	bool ok = false;
	struct buf users = { 0 };
	struct stat st;
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		buf_printf(out, "no bundle %s/%s\n", ns, name);
		goto out;
	}
	users_of(cfg, ns, name, &users);
	if (users.len && !force) {
		buf_printf(out,
			   "bundle %s/%s is used by listener %s: deleting it would make the next reload fail and a restart "
			   "refuse to start (use --force to delete anyway)\n",
			   ns, name, (char *)users.data);
		goto out;
	}
	static const char *const files[] = { "chain.pem", "key.pem", "key-password", "ca.pem" };
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		char *p = xasprintf("%s/%s", dir, files[i]);
		if (unlink(p) != 0 && errno != ENOENT) {
			buf_printf(out, "cannot delete %s: %s\n", p, strerror(errno));
			free(p);
			goto out;
		}
		free(p);
	}
	if (rmdir(dir) != 0) {
		buf_printf(out, "cannot remove %s: %s\n", dir, strerror(errno));
		goto out;
	}
	char *nsdir = xasprintf("%s/certs/%s", data_dir, ns);
	sync_dir(nsdir);
	free(nsdir);
	buf_printf(out, "deleted bundle %s/%s", ns, name);
	if (users.len)
		buf_printf(out, " (it was used by %s)", (char *)users.data);
	buf_printf(out, "\n");
	ok = true;
out:
	buf_free(&users);
	free(dir);
	return ok;
}

bool tls_bundles_ctl(const char *data_dir, const struct config *cfg, int argc, char **argv, struct buf *out)
{
	if (argc < 2 || strcmp(argv[0], "certs") != 0) {
		buf_append_str(out, usage_text);
		return false;
	}
	const char *sub = argv[1];
	if (!strcmp(sub, "list")) {
		if (argc > 3) {
			buf_append_str(out, usage_text);
			return false;
		}
		return certs_list(cfg, data_dir, argc == 3 ? argv[2] : NULL, out);
	}
	if (!strcmp(sub, "add") || !strcmp(sub, "replace"))
		return certs_put(data_dir, !strcmp(sub, "replace"), argc, argv, out);
	if (!strcmp(sub, "delete"))
		return certs_delete(cfg, data_dir, argc, argv, out);
	buf_append_str(out, usage_text);
	return false;
}
