/* Development CA and server certificate, made with OpenSSL's API. Contract in devcert.h. */
#include "tls/devcert.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "core/alloc.h"
#include "core/log.h"

#define CA_CN "Bulwark Development CA"
#define CA_DAYS 3652      /* 10 years */
#define SERVER_DAYS 825   /* the longest validity Apple platforms accept for TLS servers */
#define RENEW_DAYS 30     /* reissue a certificate expiring sooner than this */
#define BACKDATE_SECS 3600

static const char *const file_names[DEVCERT_NFILES] = {
	[DEVCERT_CA_CERT] = "dev-ca.pem",
	[DEVCERT_CA_KEY] = "dev-ca-key.pem",
	[DEVCERT_SERVER_CERT] = "dev-server.pem",
	[DEVCERT_SERVER_KEY] = "dev-server-key.pem",
};

const char *devcert_file_name(enum devcert_file f)
{
	return (unsigned)f < DEVCERT_NFILES ? file_names[f] : "?";
}

char *devcert_path(const char *dir, enum devcert_file f)
{
	return xasprintf("%s/%s", dir, devcert_file_name(f));
}

/* Log what went wrong, with every error in OpenSSL's queue (which is emptied). */
static void log_ssl_error(const char *what, const char *path)
{
	unsigned long e = ERR_get_error();
	if (!e) {
		log_error("devcert: %s %s", what, path);
		return;
	}
	for (; e; e = ERR_get_error()) {
		char buf[256];
		ERR_error_string_n(e, buf, sizeof buf);
		log_error("devcert: %s %s: %s", what, path, buf);
	}
}

/* ---- files ---- */

/* mkdir -p with mode 0700 for every directory created. */
static bool make_dirs(const char *dir)
{
	if (!dir[0]) {
		log_error("devcert: the certificate directory name is empty");
		return false;
	}
	char *p = xstrdup(dir);
	bool ok = false;
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0700) != 0 && errno != EEXIST) {
			log_error("devcert: cannot create directory %s: %s", p, strerror(errno));
			goto out;
		}
		*s = '/';
	}
	if (mkdir(p, 0700) == 0)
		log_info("devcert: created directory %s", p);
	else if (errno != EEXIST) {
		log_error("devcert: cannot create directory %s: %s", p, strerror(errno));
		goto out;
	}
	struct stat st;
	if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
		log_error("devcert: %s is not a directory", p);
		goto out;
	}
	ok = true;
out:
	free(p);
	return ok;
}

static bool fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) != 0) {
		log_error("devcert: cannot sync directory %s: %s", dir, strerror(errno));
		if (fd >= 0)
			close(fd);
		return false;
	}
	close(fd);
	return true;
}

/* Write data to dir/<file> atomically: a fresh temporary file created with mode (so a key
 * is never readable by others, not even for a moment), fsync, rename, fsync the dir. */
static bool write_atomic(const char *dir, enum devcert_file f, const void *data, size_t len, mode_t mode)
{
	char *path = devcert_path(dir, f), *tmp = NULL;
	int fd = -1;
	bool ok = false;
	for (int attempt = 0; fd < 0 && attempt < 16; attempt++) {
		uint32_t r = 0;
		if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
			r = (uint32_t)getpid() ^ (uint32_t)attempt ^ (uint32_t)time(NULL);
		free(tmp);
		tmp = xasprintf("%s/.%s.%08x.tmp", dir, devcert_file_name(f), r);
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
		if (fd < 0 && errno != EEXIST) {
			log_error("devcert: cannot create %s: %s", tmp, strerror(errno));
			free(tmp);
			tmp = NULL; /* nothing of ours to unlink */
			goto out;
		}
	}
	if (fd < 0) {
		log_error("devcert: cannot create a temporary file in %s: %s", dir, strerror(errno));
		free(tmp);
		tmp = NULL;
		goto out;
	}
	for (const char *p = data; len > 0;) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			log_error("devcert: cannot write %s: %s", tmp, n < 0 ? strerror(errno) : "short write");
			goto out;
		}
		p += n;
		len -= (size_t)n;
	}
	if (fsync(fd) != 0) {
		log_error("devcert: cannot sync %s: %s", tmp, strerror(errno));
		goto out;
	}
	int rc = close(fd);
	fd = -1;
	if (rc != 0) {
		log_error("devcert: cannot close %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (rename(tmp, path) != 0) {
		log_error("devcert: cannot rename %s to %s: %s", tmp, path, strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	if (!fsync_dir(dir))
		goto out;
	log_info("devcert: wrote %s", path);
	ok = true;
out:
	if (fd >= 0)
		close(fd);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	free(path);
	return ok;
}

/* Serialise with a PEM writer into memory (secure heap for keys, wiped on free), then
 * write the file. */
static bool write_pem(const char *dir, enum devcert_file f, X509 *cert, EVP_PKEY *key)
{
	BIO *b = BIO_new(key ? BIO_s_secmem() : BIO_s_mem());
	char *path = devcert_path(dir, f), *data = NULL;
	long len;
	bool ok = false;
	if (!b)
		goto fail;
	if (key ? !PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) : !PEM_write_bio_X509(b, cert))
		goto fail;
	len = BIO_get_mem_data(b, &data);
	if (len <= 0)
		goto fail;
	ok = write_atomic(dir, f, data, (size_t)len, key ? 0600 : 0644);
	goto out;
fail:
	log_ssl_error("cannot encode", path);
out:
	BIO_free(b);
	free(path);
	return ok;
}

/* Never prompt on the terminal for a passphrase: an encrypted key is unreadable here. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

/* Open dir/<file> for reading. 1: opened, 0: it does not exist, -1: error (logged). */
static int open_existing(const char *path, BIO **out, struct stat *st)
{
	if (stat(path, st) != 0) {
		if (errno == ENOENT)
			return 0;
		log_error("devcert: cannot stat %s: %s", path, strerror(errno));
		return -1;
	}
	*out = BIO_new_file(path, "r");
	if (!*out) {
		log_ssl_error("cannot open", path);
		return -1;
	}
	return 1;
}

/* Load a private key. 1: loaded, 0: missing, -1: error (logged; a key is never replaced). */
static int load_key(const char *dir, enum devcert_file f, EVP_PKEY **out)
{
	char *path = devcert_path(dir, f);
	BIO *b = NULL;
	struct stat st;
	int r = open_existing(path, &b, &st);
	if (r == 1) {
		if (st.st_mode & 077)
			log_warn("devcert: %s can be read by others (mode %03o); it should be 0600", path,
				 (unsigned)(st.st_mode & 0777));
		*out = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
		if (!*out) {
			log_ssl_error("cannot read the private key in", path);
			log_error("devcert: remove %s to have a new one generated", path);
			r = -1;
		}
	}
	BIO_free(b);
	free(path);
	return r;
}

/* Load a certificate. 1: loaded, 0: missing or unparsable (to be reissued), -1: error. */
static int load_cert(const char *dir, enum devcert_file f, X509 **out)
{
	char *path = devcert_path(dir, f);
	BIO *b = NULL;
	struct stat st;
	int r = open_existing(path, &b, &st);
	if (r == 1) {
		*out = PEM_read_bio_X509(b, NULL, no_passphrase, NULL);
		if (!*out) {
			ERR_clear_error();
			log_warn("devcert: %s is not a PEM certificate: issuing a new one", path);
			r = 0;
		}
	}
	BIO_free(b);
	free(path);
	return r;
}

/* ---- certificates ---- */

static EVP_PKEY *new_key(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	if (!k)
		log_ssl_error("cannot generate", "an ECDSA P-256 key");
	return k;
}

/* True when the certificate is still valid RENEW_DAYS from now. */
static bool valid_for_a_while(const X509 *x)
{
	time_t limit = time(NULL) + (time_t)RENEW_DAYS * 86400;
	return X509_cmp_time(X509_get0_notAfter(x), &limit) > 0;
}

static bool set_random_serial(X509 *x)
{
	BIGNUM *bn = BN_new();
	bool ok = false;
	if (!bn)
		return false;
	do {
		if (!BN_rand(bn, 128, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY))
			goto out;
	} while (BN_is_zero(bn));
	ok = BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
out:
	BN_free(bn);
	return ok;
}

static bool add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
	bool ok = e && X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	return ok;
}

struct ext {
	int nid;
	const char *value;
};

/* A certificate for key, signed by issuer_key; issuer NULL means self-signed. */
static X509 *issue(EVP_PKEY *key, const char *cn, long days, X509 *issuer, EVP_PKEY *issuer_key,
		   const struct ext *exts, size_t nexts)
{
	X509 *x = X509_new();
	if (!x)
		goto fail;
	X509_NAME *name = X509_get_subject_name(x);
	if (!X509_set_version(x, X509_VERSION_3) || !set_random_serial(x) ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), -BACKDATE_SECS) ||
	    !X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, NULL) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0) ||
	    !X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) ||
	    !X509_set_pubkey(x, key))
		goto fail;
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
	for (size_t i = 0; i < nexts; i++)
		if (!add_ext(x, &ctx, exts[i].nid, exts[i].value))
			goto fail;
	if (X509_sign(x, issuer_key, EVP_sha256()) <= 0)
		goto fail;
	return x;
fail:
	log_ssl_error("cannot issue the certificate for", cn);
	X509_free(x);
	return NULL;
}

static X509 *issue_ca(EVP_PKEY *ca_key)
{
	static const struct ext exts[] = {
		{ NID_basic_constraints, "critical,CA:TRUE" },
		{ NID_key_usage, "critical,keyCertSign,cRLSign" },
		{ NID_subject_key_identifier, "hash" },
	};
	return issue(ca_key, CA_CN, CA_DAYS, NULL, ca_key, exts, sizeof exts / sizeof exts[0]);
}

static X509 *issue_server(EVP_PKEY *key, X509 *ca, EVP_PKEY *ca_key, long days)
{
	static const struct ext exts[] = {
		{ NID_basic_constraints, "CA:FALSE" },
		{ NID_key_usage, "critical,digitalSignature" },
		{ NID_ext_key_usage, "serverAuth" },
		{ NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1" },
		{ NID_subject_key_identifier, "hash" },
		{ NID_authority_key_identifier, "keyid:always" },
	};
	return issue(key, "localhost", days, ca, ca_key, exts, sizeof exts / sizeof exts[0]);
}

/* Why an existing server certificate must be reissued, or NULL when it is fine. */
static const char *server_cert_problem(X509 *cert, EVP_PKEY *key, X509 *ca)
{
	const char *why = NULL;
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	if (!X509_check_private_key(cert, key)) {
		why = "it does not match the server key";
	} else if (!store || !ctx || !X509_STORE_add_cert(store, ca) ||
		   !X509_STORE_CTX_init(ctx, store, cert, NULL) ||
		   !X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER)) {
		why = "it cannot be checked";
	} else if (X509_verify_cert(ctx) != 1) {
		why = X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx));
	} else if (X509_check_host(cert, "localhost", 0, 0, NULL) != 1 ||
		   X509_check_ip_asc(cert, "127.0.0.1", 0) != 1) {
		why = "it is not for localhost and 127.0.0.1";
	} else if (!valid_for_a_while(cert)) {
		why = "it expires within 30 days"; /* RENEW_DAYS */
	}
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	ERR_clear_error();
	return why;
}

bool devcert_ensure(const char *dir, bool *generated)
{
	EVP_PKEY *ca_key = NULL, *srv_key = NULL;
	X509 *ca = NULL, *srv = NULL;
	bool ok = false, gen = false, new_ca_key = false, new_srv_key = false;
	int r;
	ERR_clear_error();
	if (!make_dirs(dir))
		goto out;

	/* The CA: key first, so a crash in between leaves a state the next run completes. */
	if ((r = load_key(dir, DEVCERT_CA_KEY, &ca_key)) < 0)
		goto out;
	if (r == 0) {
		if (!(ca_key = new_key()) || !write_pem(dir, DEVCERT_CA_KEY, NULL, ca_key))
			goto out;
		gen = new_ca_key = true;
	}
	if ((r = new_ca_key ? 0 : load_cert(dir, DEVCERT_CA_CERT, &ca)) < 0)
		goto out;
	if (r == 1 && !X509_check_private_key(ca, ca_key)) {
		ERR_clear_error();
		log_warn("devcert: %s/%s does not match its key: issuing a new one", dir,
			 devcert_file_name(DEVCERT_CA_CERT));
		r = 0;
	} else if (r == 1 && !valid_for_a_while(ca)) {
		log_info("devcert: %s/%s expires within %d days: issuing a new one", dir,
			 devcert_file_name(DEVCERT_CA_CERT), RENEW_DAYS);
		r = 0;
	}
	if (r == 0) {
		X509_free(ca);
		if (!(ca = issue_ca(ca_key)) || !write_pem(dir, DEVCERT_CA_CERT, ca, NULL))
			goto out;
		gen = true;
	}

	/* The server. */
	if ((r = load_key(dir, DEVCERT_SERVER_KEY, &srv_key)) < 0)
		goto out;
	if (r == 0) {
		if (!(srv_key = new_key()) || !write_pem(dir, DEVCERT_SERVER_KEY, NULL, srv_key))
			goto out;
		gen = new_srv_key = true;
	}
	if ((r = new_ca_key || new_srv_key ? 0 : load_cert(dir, DEVCERT_SERVER_CERT, &srv)) < 0)
		goto out;
	const char *why = r == 1 ? server_cert_problem(srv, srv_key, ca) : NULL;
	if (why) {
		log_info("devcert: issuing a new %s/%s: %s", dir, devcert_file_name(DEVCERT_SERVER_CERT), why);
		r = 0;
	}
	if (r == 0) {
		X509_free(srv);
		if (!(srv = issue_server(srv_key, ca, ca_key, SERVER_DAYS)) ||
		    !write_pem(dir, DEVCERT_SERVER_CERT, srv, NULL))
			goto out;
		gen = true;
	}
	ok = true;
out:
	X509_free(srv);
	X509_free(ca);
	EVP_PKEY_free(srv_key);
	EVP_PKEY_free(ca_key);
	ERR_clear_error();
	if (generated)
		*generated = gen;
	return ok;
}
