/* TLS listener helpers: cipher name translation, version ranges, PSK file parsing,
 * extendedKeyUsage matching, and the `ctl certs` bundle operations. */
#include "tls/tls_bundles.c"
#include "tls/tls_ctx.c"
#include "tls/tls_psk.c"
#include "tls/tls_verify.c"

#include <ftw.h>
#include <sys/stat.h>

#include <openssl/ec.h>
#include <openssl/evp.h>

#include "unit.h"

/* ---- ciphers and versions ---- */

TEST(cipher_names_iana_translated)
{
	char bad[64] = "";
	char *s = tls_ciphers_translate("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256:AES256-SHA", bad, sizeof bad);
	CHECK_STR(s, "ECDHE-RSA-AES128-GCM-SHA256:AES256-SHA");
	free(s);
	/* commas and spaces separate too; OpenSSL operators pass through */
	s = tls_ciphers_translate("TLS_RSA_WITH_AES_256_GCM_SHA384, !aNULL,@STRENGTH", bad, sizeof bad);
	CHECK_STR(s, "AES256-GCM-SHA384:!aNULL:@STRENGTH");
	free(s);
	/* the TLS 1.3 names are the same in both worlds */
	s = tls_ciphers_translate("TLS_AES_128_GCM_SHA256", bad, sizeof bad);
	CHECK_STR(s, "TLS_AES_128_GCM_SHA256");
	free(s);
	s = tls_ciphers_translate("", bad, sizeof bad);
	CHECK_STR(s, "");
	free(s);
}

TEST(cipher_names_unknown_iana_named)
{
	char bad[64] = "";
	char *s = tls_ciphers_translate("ECDHE-RSA-AES128-GCM-SHA256:TLS_NO_SUCH_CIPHER:AES256-SHA", bad, sizeof bad);
	CHECK(s == NULL);
	CHECK_STR(bad, "TLS_NO_SUCH_CIPHER");
}

TEST(cipher_tokens_checked_against_openssl)
{
	SSL_CTX *scratch = SSL_CTX_new(TLS_server_method());
	SSL_CTX_set_security_level(scratch, 0);
	CHECK(cipher_token_known(scratch, "ECDHE-RSA-AES128-GCM-SHA256"));
	CHECK(cipher_token_known(scratch, "HIGH"));
	CHECK(cipher_token_known(scratch, "!aNULL"));
	CHECK(!cipher_token_known(scratch, "NOPE-CIPHER"));
	CHECK(suite13_known(scratch, "TLS_AES_256_GCM_SHA384"));
	CHECK(!suite13_known(scratch, "TLS_AES_999_GCM_SHA384"));
	SSL_CTX_free(scratch);
}

TEST(versions_must_be_contiguous)
{
	int lo, hi;
	char names[48], err[256];
	CHECK(plan_versions(CFG_TLS_V1_2 | CFG_TLS_V1_3, &lo, &hi, names, sizeof names, err, sizeof err));
	CHECK_EQ_INT(lo, TLS1_2_VERSION);
	CHECK_EQ_INT(hi, TLS1_3_VERSION);
	CHECK_STR(names, "tlsv1.2,tlsv1.3");
	CHECK(plan_versions(CFG_TLS_V1_2, &lo, &hi, names, sizeof names, err, sizeof err));
	CHECK_EQ_INT(lo, TLS1_2_VERSION);
	CHECK_EQ_INT(hi, TLS1_2_VERSION);
	CHECK(!plan_versions(CFG_TLS_V1_1 | CFG_TLS_V1_3, &lo, &hi, names, sizeof names, err, sizeof err));
	CHECK(strstr(err, "contiguous") && strstr(err, "tlsv1.2"));
	CHECK(!plan_versions(0, &lo, &hi, names, sizeof names, err, sizeof err));
}

/* ---- PSK ---- */

static bool psk(const char *text, const char *sep, struct tls_psk_table *t, char *err)
{
	return tls_psk_parse(text, strlen(text), "psk.txt", sep, t, err, 256);
}

TEST(psk_file_parsed)
{
	struct tls_psk_table t;
	char err[256] = "";
	CHECK(psk("dev1:secret-one\r\n\n  \ndev2:with:colons\nzeta:z", ":", &t, err));
	CHECK_EQ_INT(t.n, 3);
	const struct tls_psk_entry *e = tls_psk_find(&t, "dev2");
	CHECK(e && e->secret_len == 11 && memcmp(e->secret, "with:colons", 11) == 0);
	e = tls_psk_find(&t, "dev1");
	CHECK(e && e->secret_len == 10 && memcmp(e->secret, "secret-one", 10) == 0); /* CR dropped */
	CHECK(tls_psk_find(&t, "zeta") != NULL);
	CHECK(tls_psk_find(&t, "nobody") == NULL);
	CHECK(tls_psk_find(&t, "dev") == NULL);
	tls_psk_free(&t);
	/* a multi-byte separator; the secret is the text's bytes, not hex */
	CHECK(psk("a::00ff\n", "::", &t, err));
	e = tls_psk_find(&t, "a");
	CHECK(e && e->secret_len == 4 && memcmp(e->secret, "00ff", 4) == 0);
	tls_psk_free(&t);
	CHECK(psk("", ":", &t, err));
	CHECK_EQ_INT(t.n, 0);
	tls_psk_free(&t);
}

TEST(psk_file_errors_name_the_line)
{
	struct tls_psk_table t;
	char err[256];
	CHECK(!psk("ok:1\nno-separator-here\n", ":", &t, err));
	CHECK(strstr(err, "psk.txt:2:") && strstr(err, "separator"));
	CHECK(!psk("ok:1\n:secret\n", ":", &t, err));
	CHECK(strstr(err, "psk.txt:2:") && strstr(err, "empty identity"));
	CHECK(!psk("\n\nid:\n", ":", &t, err));
	CHECK(strstr(err, "psk.txt:3:") && strstr(err, "empty secret"));
	CHECK(!psk("b:1\na:2\nb:3\n", ":", &t, err));
	CHECK(strstr(err, "psk.txt:3:") && strstr(err, "duplicate") && strstr(err, "line 1"));
	char big[600];
	memset(big, 'x', 300);
	snprintf(big + 300, sizeof big - 300, ":s\n");
	CHECK(!psk(big, ":", &t, err));
	CHECK(strstr(err, "psk.txt:1:") && strstr(err, "identity longer"));
	CHECK(t.n == 0 && t.v == NULL);
}

/* ---- extendedKeyUsage ---- */

static X509 *cert_with_eku(const char *eku)
{
	X509 *x = X509_new();
	if (eku) {
		X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_ext_key_usage, eku);
		X509_add_ext(x, ext, -1);
		X509_EXTENSION_free(ext);
	}
	return x;
}

TEST(eku_matching)
{
	X509 *none = cert_with_eku(NULL);
	X509 *client = cert_with_eku("clientAuth");
	X509 *both = cert_with_eku("serverAuth,clientAuth,1.2.3.4.5");
	X509 *any = cert_with_eku("anyExtendedKeyUsage");
	ASN1_OBJECT *oid_client = OBJ_txt2obj("1.3.6.1.5.5.7.3.2", 1), *oid_custom = OBJ_txt2obj("1.2.3.4.5", 1);
	ASN1_OBJECT *oids[2] = { oid_client, oid_custom };

	CHECK_EQ_INT(tls_eku_match(none, CFG_EKU_CLIENT_AUTH, NULL, 0), TLS_EKU_NOT_SET);
	CHECK_EQ_INT(tls_eku_match(client, CFG_EKU_CLIENT_AUTH, NULL, 0), TLS_EKU_OK);
	CHECK_EQ_INT(tls_eku_match(client, CFG_EKU_SERVER_AUTH, NULL, 0), TLS_EKU_UNMATCHED);
	/* all listed usages are required */
	CHECK_EQ_INT(tls_eku_match(client, CFG_EKU_CLIENT_AUTH | CFG_EKU_SERVER_AUTH, NULL, 0), TLS_EKU_UNMATCHED);
	CHECK_EQ_INT(tls_eku_match(both, CFG_EKU_CLIENT_AUTH | CFG_EKU_SERVER_AUTH, NULL, 0), TLS_EKU_OK);
	/* OID form */
	CHECK_EQ_INT(tls_eku_match(client, 0, oids, 1), TLS_EKU_OK);
	CHECK_EQ_INT(tls_eku_match(client, 0, oids, 2), TLS_EKU_UNMATCHED);
	CHECK_EQ_INT(tls_eku_match(both, CFG_EKU_SERVER_AUTH, oids, 2), TLS_EKU_OK);
	/* anyExtendedKeyUsage is not every usage (EMQX compares the list) */
	CHECK_EQ_INT(tls_eku_match(any, CFG_EKU_CLIENT_AUTH, NULL, 0), TLS_EKU_UNMATCHED);
	CHECK_EQ_INT(tls_eku_match(none, 0, oids, 1), TLS_EKU_NOT_SET);
	ASN1_OBJECT_free(oid_client);
	ASN1_OBJECT_free(oid_custom);
	X509_free(none);
	X509_free(client);
	X509_free(both);
	X509_free(any);
}

/* ---- ctl certs ---- */

static char tmp[64];

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
}

/* A self-signed P-256 certificate for cn: PEM files cert/key under tmp. */
static void make_pair(const char *name, const char *cn)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_set_pubkey(x, k);
	X509_sign(x, k, EVP_sha256());
	char path[256];
	snprintf(path, sizeof path, "%s/%s.crt", tmp, name);
	FILE *f = fopen(path, "w");
	PEM_write_X509(f, x);
	fclose(f);
	snprintf(path, sizeof path, "%s/%s.key", tmp, name);
	f = fopen(path, "w");
	PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(k);
}

static bool ctl(const struct config *cfg, struct buf *out, const char *line)
{
	char *copy = xstrdup(line), *argv[32], *save = NULL;
	int argc = 0;
	for (char *t = strtok_r(copy, " ", &save); t && argc < 31; t = strtok_r(NULL, " ", &save))
		argv[argc++] = t;
	argv[argc] = NULL;
	out->len = 0;
	char *data = xasprintf("%s/data", tmp);
	bool ok = tls_bundles_ctl(data, cfg, argc, argv, out);
	free(data);
	free(copy);
	buf_append(out, "", 1);
	out->len--;
	return ok;
}

static mode_t mode_of(const char *rel)
{
	char path[256];
	struct stat st;
	snprintf(path, sizeof path, "%s/%s", tmp, rel);
	return stat(path, &st) == 0 ? st.st_mode & 07777 : 0;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(p);
}

TEST(ctl_certs_add_list_replace_delete)
{
	snprintf(tmp, sizeof tmp, "/tmp/bw-test-tls-XXXXXX");
	CHECK(mkdtemp(tmp) != NULL);
	make_pair("a", "a.example.com");
	make_pair("b", "b.example.com");
	struct buf out = { 0 };
	char line[1024];
#define CTL(...) (snprintf(line, sizeof line, __VA_ARGS__), ctl(NULL, &out, line))

	CHECK(CTL("certs list"));
	CHECK(strstr((char *)out.data, "no certificate bundles"));
	CHECK(CTL("certs add web --chain %s/a.crt --key %s/a.key", tmp, tmp));
	CHECK(strstr((char *)out.data, "added bundle global/web") && strstr((char *)out.data, "CN=a.example.com"));
	CHECK_EQ_INT(mode_of("data/certs/global/web/key.pem"), 0600);
	CHECK_EQ_INT(mode_of("data/certs/global/web"), 0700);
	CHECK_EQ_INT(mode_of("data/certs/global/web/chain.pem"), 0644);
	/* no temporary files left behind */
	CHECK_EQ_INT(mode_of("data/certs/global/web/.key.pem.tmp"), 0);
	/* add refuses to overwrite; replace refuses a missing bundle */
	CHECK(!CTL("certs add global/web --chain %s/b.crt --key %s/b.key", tmp, tmp));
	CHECK(strstr((char *)out.data, "already exists"));
	CHECK(!CTL("certs replace tenant-a/web --chain %s/b.crt --key %s/b.key", tmp, tmp));
	CHECK(strstr((char *)out.data, "no bundle tenant-a/web"));
	/* the key must match the chain's first certificate */
	CHECK(!CTL("certs add tenant-a/mqtt --chain %s/a.crt --key %s/b.key", tmp, tmp));
	CHECK(strstr((char *)out.data, "does not match"));
	CHECK_EQ_INT(mode_of("data/certs/tenant-a/mqtt/chain.pem"), 0);
	CHECK(CTL("certs add tenant-a/mqtt --chain %s/b.crt --key %s/b.key --ca %s/a.crt", tmp, tmp, tmp));
	CHECK(CTL("certs list"));
	CHECK(strstr((char *)out.data, "global/web\tsubject=CN=a.example.com"));
	CHECK(strstr((char *)out.data, "tenant-a/mqtt\tsubject=CN=b.example.com"));
	CHECK(CTL("certs list tenant-a"));
	CHECK(!strstr((char *)out.data, "global/web") && strstr((char *)out.data, "tenant-a/mqtt"));
	CHECK(CTL("certs replace web --chain %s/b.crt --key %s/b.key", tmp, tmp));
	CHECK(strstr((char *)out.data, "replaced bundle global/web") && strstr((char *)out.data, "CN=b.example.com"));
	/* what a listener loads */
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	char dir[256], err[512];
	snprintf(dir, sizeof dir, "%s/data/certs/global/web", tmp);
	CHECK(tls_bundle_load(ctx, dir, "global/web", err, sizeof err));
	snprintf(dir, sizeof dir, "%s/data/certs/global/nope", tmp);
	CHECK(!tls_bundle_load(ctx, dir, "global/nope", err, sizeof err));
	CHECK(strstr(err, "bundle global/nope") && strstr(err, "chain.pem"));
	SSL_CTX_free(ctx);
	/* bad input */
	CHECK(!CTL("certs add ../evil --chain %s/a.crt --key %s/a.key", tmp, tmp));
	CHECK(strstr((char *)out.data, "bad bundle name"));
	CHECK(!CTL("certs add x --chain %s/missing.crt --key %s/a.key", tmp, tmp));
	CHECK(strstr((char *)out.data, "cannot read") && strstr((char *)out.data, "missing.crt"));
	CHECK(!CTL("certs add x --chain %s/a.key --key %s/a.key", tmp, tmp));
	CHECK(strstr((char *)out.data, "no PEM certificate"));
	CHECK(!CTL("certs add x --key %s/a.key", tmp));
	CHECK(!CTL("certs add x --chain"));
	CHECK(!CTL("certs frobnicate"));
	CHECK(strstr((char *)out.data, "usage: certs list"));
	/* delete refuses a bundle a listener uses, unless --force */
	struct cfg_managed_cert mc = { .bundle_name = "web", .ns = "global" };
	struct cfg_listener l = { .type = CFG_LISTENER_SSL, .enable = true, .id = "ssl:default" };
	l.ssl.managed_certs = &mc;
	l.ssl.n_managed_certs = 1;
	struct config cfg = { .listeners = &l, .n_listeners = 1 };
	snprintf(line, sizeof line, "certs delete web");
	CHECK(!ctl(&cfg, &out, line));
	CHECK(strstr((char *)out.data, "used by listener ssl:default"));
	CHECK(CTL("certs list"));
	CHECK(!strstr((char *)out.data, "used_by=ssl:default")); /* no cfg given to this call */
	snprintf(line, sizeof line, "certs list");
	CHECK(ctl(&cfg, &out, line));
	CHECK(strstr((char *)out.data, "global/web") && strstr((char *)out.data, "used_by=ssl:default"));
	snprintf(line, sizeof line, "certs delete web --force");
	CHECK(ctl(&cfg, &out, line));
	CHECK(strstr((char *)out.data, "deleted bundle global/web"));
	CHECK_EQ_INT(mode_of("data/certs/global/web"), 0);
	CHECK(!CTL("certs delete web"));
	CHECK(strstr((char *)out.data, "no bundle global/web"));
	CHECK(CTL("certs delete tenant-a/mqtt"));
#undef CTL
	buf_free(&out);
	nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TEST(ctl_certs_encrypted_key_with_password_file)
{
	snprintf(tmp, sizeof tmp, "/tmp/bw-test-tls-XXXXXX");
	CHECK(mkdtemp(tmp) != NULL);
	make_pair("c", "c.example.com");
	/* re-write c.key encrypted */
	char path[256], pwpath[256], line[1024];
	snprintf(path, sizeof path, "%s/c.key", tmp);
	FILE *f = fopen(path, "r");
	EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	f = fopen(path, "w");
	PEM_write_PrivateKey(f, k, EVP_aes_256_cbc(), NULL, 0, NULL, (void *)"s3cret");
	fclose(f);
	EVP_PKEY_free(k);
	snprintf(pwpath, sizeof pwpath, "%s/pw", tmp);
	write_text(pwpath, "s3cret\n");
	struct buf out = { 0 };
	snprintf(line, sizeof line, "certs add enc --chain %s/c.crt --key %s", tmp, path);
	CHECK(!ctl(NULL, &out, line));
	CHECK(strstr((char *)out.data, "--key-password-file"));
	snprintf(line, sizeof line, "certs add enc --chain %s/c.crt --key %s --key-password-file %s", tmp, path, pwpath);
	CHECK(ctl(NULL, &out, line));
	CHECK_EQ_INT(mode_of("data/certs/global/enc/key-password"), 0600);
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	char dir[256], err[512];
	snprintf(dir, sizeof dir, "%s/data/certs/global/enc", tmp);
	CHECK(tls_bundle_load(ctx, dir, "global/enc", err, sizeof err));
	SSL_CTX_free(ctx);
	buf_free(&out);
	nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
	RUN(cipher_names_iana_translated);
	RUN(cipher_names_unknown_iana_named);
	RUN(cipher_tokens_checked_against_openssl);
	RUN(versions_must_be_contiguous);
	RUN(psk_file_parsed);
	RUN(psk_file_errors_name_the_line);
	RUN(eku_matching);
	RUN(ctl_certs_add_list_replace_delete);
	RUN(ctl_certs_encrypted_key_with_password_file);
	return unit_summary();
}
