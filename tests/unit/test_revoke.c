/* Unit tests for revocation (src/tls/revoke.c), OCSP helpers (src/tls/ocsp_util.c) and
 * stapling (src/tls/ocsp.c). The PKI, CRLs and OCSP responses are made with the OpenSSL
 * API here; one test has the openssl CLI answer a request built by the code. The network
 * is a fake: the test completes the "HTTP calls" itself. */
#include "../../src/tls/revoke.c"
#include "../../src/tls/ocsp.c"

#include <fcntl.h>
#include <sys/wait.h>

#include <openssl/ec.h>

#include "unit.h"

/* ---- a small PKI ------------------------------------------------------------------ */

struct cred {
	X509 *cert;
	EVP_PKEY *key;
};

static EVP_PKEY *new_key(void)
{
	return EVP_EC_gen("P-256");
}

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext) {
		fprintf(stderr, "extension %d=%s failed\n", nid, value);
		abort();
	}
	X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
}

/* issuer NULL: self-signed. */
static struct cred mk_cert(const char *cn, const struct cred *issuer, long serial, bool ca, const char *dp,
			   const char *ocsp, const char *eku)
{
	struct cred c = { X509_new(), new_key() };
	X509_set_version(c.cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(c.cert), serial);
	X509_NAME *n = X509_NAME_new();
	X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)"Unit", -1, -1, 0);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_subject_name(c.cert, n);
	X509_set_issuer_name(c.cert, issuer ? X509_get_subject_name(issuer->cert) : n);
	X509_NAME_free(n);
	X509_gmtime_adj(X509_getm_notBefore(c.cert), -3600);
	X509_gmtime_adj(X509_getm_notAfter(c.cert), 86400);
	X509_set_pubkey(c.cert, c.key);
	X509 *icert = issuer ? issuer->cert : c.cert;
	add_ext(c.cert, icert, NID_subject_key_identifier, "hash");
	if (issuer)
		add_ext(c.cert, icert, NID_authority_key_identifier, "keyid");
	add_ext(c.cert, icert, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
	if (ca)
		add_ext(c.cert, icert, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature");
	if (dp)
		add_ext(c.cert, icert, NID_crl_distribution_points, dp);
	if (ocsp)
		add_ext(c.cert, icert, NID_info_access, ocsp);
	if (eku)
		add_ext(c.cert, icert, NID_ext_key_usage, eku);
	X509_sign(c.cert, issuer ? issuer->key : c.key, EVP_sha256());
	return c;
}

static void cred_free(struct cred *c)
{
	X509_free(c->cert);
	EVP_PKEY_free(c->key);
}

/* A CRL from issuer (signed by key, normally issuer's) listing serials. */
static X509_CRL *mk_crl(const struct cred *issuer, EVP_PKEY *key, const long *serials, size_t n, long last_s,
			long next_s)
{
	X509_CRL *crl = X509_CRL_new();
	X509_CRL_set_version(crl, 1);
	X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer->cert));
	ASN1_TIME *t = ASN1_TIME_adj(NULL, time(NULL), 0, last_s);
	X509_CRL_set1_lastUpdate(crl, t);
	ASN1_TIME_adj(t, time(NULL), 0, next_s);
	X509_CRL_set1_nextUpdate(crl, t);
	for (size_t i = 0; i < n; i++) {
		X509_REVOKED *r = X509_REVOKED_new();
		ASN1_INTEGER *s = ASN1_INTEGER_new();
		ASN1_INTEGER_set(s, serials[i]);
		X509_REVOKED_set_serialNumber(r, s);
		ASN1_INTEGER_free(s);
		ASN1_TIME_adj(t, time(NULL), 0, last_s);
		X509_REVOKED_set_revocationDate(r, t);
		X509_CRL_add0_revoked(crl, r);
	}
	ASN1_TIME_free(t);
	X509_CRL_sort(crl);
	X509_CRL_sign(crl, key ? key : issuer->key, EVP_sha256());
	return crl;
}

static uint8_t *crl_der(X509_CRL *crl, size_t *len)
{
	unsigned char *p = NULL;
	int n = i2d_X509_CRL(crl, &p);
	uint8_t *out = xmemdup(p, (size_t)n);
	OPENSSL_free(p);
	*len = (size_t)n;
	return out;
}

static char *crl_pem(X509_CRL *crl)
{
	BIO *b = BIO_new(BIO_s_mem());
	PEM_write_bio_X509_CRL(b, crl);
	char *p;
	long n = BIO_get_mem_data(b, &p);
	char *s = xstrndup(p, (size_t)n);
	BIO_free(b);
	return s;
}

static char tmpdir[64];

static char *tmp_path(const char *name)
{
	return xasprintf("%s/%s", tmpdir, name);
}

static char *write_tmp(const char *name, const void *data, size_t len)
{
	char *p = tmp_path(name);
	FILE *f = fopen(p, "wb");
	fwrite(data, 1, len, f);
	fclose(f);
	return p;
}

static char *write_crls(const char *name, X509_CRL **crls, size_t n, bool der)
{
	if (der) {
		size_t len;
		uint8_t *d = crl_der(crls[0], &len);
		char *p = write_tmp(name, d, len);
		free(d);
		return p;
	}
	char *all = xstrdup("");
	for (size_t i = 0; i < n; i++) {
		char *pem = crl_pem(crls[i]);
		char *s = xasprintf("%s%s", all, pem);
		free(all);
		free(pem);
		all = s;
	}
	char *p = write_tmp(name, all, strlen(all));
	free(all);
	return p;
}

static char *write_certs(const char *name, X509 **certs, size_t n)
{
	char *p = tmp_path(name);
	FILE *f = fopen(p, "w");
	for (size_t i = 0; i < n; i++)
		PEM_write_X509(f, certs[i]);
	fclose(f);
	return p;
}

static char *write_key(const char *name, EVP_PKEY *k)
{
	char *p = tmp_path(name);
	FILE *f = fopen(p, "w");
	PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	return p;
}

/* The test PKI: root -> inter -> leaves. */
static struct cred root, inter, other_root, leaf, leaf2, leaf_dp, leaf_ocsp, responder, responder_noeku;
static char *ca_bundle, *root_only;

static void pki_init(void)
{
	root = mk_cert("Unit Root", NULL, 1, true, NULL, NULL, NULL);
	other_root = mk_cert("Unit Root", NULL, 1, true, NULL, NULL, NULL); /* same name, other key */
	inter = mk_cert("Unit Inter", &root, 2, true, NULL, NULL, NULL);
	leaf = mk_cert("leaf", &inter, 100, false, NULL, NULL, "clientAuth");
	leaf2 = mk_cert("leaf2", &inter, 0x123456789aL, false, NULL, NULL, "clientAuth");
	leaf_dp = mk_cert("leaf-dp", &inter, 300, false, "URI:http://crl.test/inter.crl", NULL, "clientAuth");
	leaf_ocsp = mk_cert("leaf-ocsp", &inter, 400, false, NULL, "OCSP;URI:http://ocsp.test/", "clientAuth");
	responder = mk_cert("responder", &inter, 500, false, NULL, NULL, "OCSPSigning");
	responder_noeku = mk_cert("responder-noeku", &inter, 501, false, NULL, NULL, "clientAuth");
	X509 *b[] = { inter.cert, root.cert };
	ca_bundle = write_certs("ca.pem", b, 2);
	root_only = write_certs("root.pem", b + 1, 1);
}

/* ---- a config with one listener ------------------------------------------------------ */

struct fixture {
	struct config cfg;
	struct cfg_listener l;
	char *files[4];
	struct revoke *rv;
	struct loop *main;
};

static void fx_init(struct fixture *fx, const char *cafile, char **files, size_t nfiles)
{
	memset(fx, 0, sizeof *fx);
	fx->l.type = CFG_LISTENER_SSL;
	fx->l.enable = true;
	fx->l.name = "t";
	fx->l.id = "ssl:t";
	fx->l.ssl.cacertfile = (char *)cafile;
	for (size_t i = 0; i < nfiles; i++)
		fx->files[i] = files[i];
	fx->l.ssl.crlfiles = fx->files;
	fx->l.ssl.n_crlfiles = nfiles;
	fx->l.ssl.ocsp_client.timeout_ms = 5000;
	fx->cfg.listeners = &fx->l;
	fx->cfg.n_listeners = 1;
	fx->cfg.crl_cache.refresh_interval_ms = 60000;
	fx->cfg.crl_cache.http_timeout_ms = 1000;
	fx->cfg.crl_cache.capacity = 100;
}

static bool fx_start(struct fixture *fx, bool with_loop)
{
	char err[512] = "";
	if (with_loop)
		fx->main = loop_new(0);
	fx->rv = revoke_new(&fx->cfg, with_loop ? (struct http_client *)fx : NULL, fx->main, err, sizeof err);
	if (!fx->rv)
		fprintf(stderr, "revoke_new: %s\n", err);
	return fx->rv != NULL;
}

static void fx_free(struct fixture *fx)
{
	revoke_free(fx->rv);
	if (fx->main) {
		loop_drain(fx->main);
		loop_free(fx->main);
	}
}

/* Verify chain leaf -> (untrusted) against the listener's CA file and run the handshake
 * check on the verified chain. */
static enum revoke_verdict hs_check(struct fixture *fx, X509 *cert, STACK_OF(X509) *untrusted, const char *cafile,
				    char *why, size_t whylen, STACK_OF(X509) **chain_out)
{
	X509_STORE *st = X509_STORE_new();
	X509_STORE_load_file(st, cafile);
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	X509_STORE_CTX_init(ctx, st, cert, untrusted);
	enum revoke_verdict v = REVOKE_FAILED;
	if (X509_verify_cert(ctx) == 1) {
		v = revoke_check_handshake(fx->rv, &fx->l, ctx, why, whylen);
		if (chain_out)
			*chain_out = X509_STORE_CTX_get1_chain(ctx);
	} else {
		fprintf(stderr, "chain does not verify: %s\n",
			X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
	}
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(st);
	return v;
}

static STACK_OF(X509) *untrusted_inter(void)
{
	STACK_OF(X509) *s = sk_X509_new_null();
	sk_X509_push(s, inter.cert);
	return s;
}

/* ---- capture of log lines ----------------------------------------------------------------- */

static int saved_stderr = -1;
static char *cap_path;

static void capture_begin(void)
{
	fflush(stderr);
	cap_path = tmp_path("stderr.txt");
	int fd = open(cap_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	saved_stderr = dup(2);
	dup2(fd, 2);
	close(fd);
}

static char *capture_end(void)
{
	fflush(stderr);
	dup2(saved_stderr, 2);
	close(saved_stderr);
	size_t len;
	char err[128];
	uint8_t *d = read_file(cap_path, 1 << 20, &len, err, sizeof err);
	char *s = xstrndup((const char *)d, len);
	free(d);
	unlink(cap_path);
	free(cap_path);
	return s;
}

/* ---- fake HTTP --------------------------------------------------------------------------- */

struct fake_call {
	char *url, *method;
	uint8_t *body;
	size_t body_len;
	uint64_t timeout_ms;
	http_done_fn done;
	void *arg;
	bool cancelled, completed;
};

static struct fake_call calls[64];
static size_t ncalls;

static struct http_call *fake_start(struct http_client *hc, const struct http_request *req, struct loop *l,
				    http_done_fn done, void *arg)
{
	(void)hc;
	(void)l;
	if (ncalls == 64)
		return NULL;
	struct fake_call *c = &calls[ncalls++];
	memset(c, 0, sizeof *c);
	c->url = xstrdup(req->url);
	c->method = xstrdup(req->method ? req->method : "GET");
	if (req->body_len)
		c->body = xmemdup(req->body, req->body_len);
	c->body_len = req->body_len;
	c->timeout_ms = req->timeout_ms;
	c->done = done;
	c->arg = arg;
	return (struct http_call *)c;
}

static void fake_cancel(struct http_call *call)
{
	((struct fake_call *)call)->cancelled = true;
}

static void fake_reset(void)
{
	for (size_t i = 0; i < ncalls; i++) {
		free(calls[i].url);
		free(calls[i].method);
		free(calls[i].body);
	}
	ncalls = 0;
	memset(url_warn, 0, sizeof url_warn);
	rv_http_start = fake_start;
	rv_http_cancel = fake_cancel;
	st_http_start = fake_start;
	st_http_cancel = fake_cancel;
}

/* Complete call i with a status and body (status 0: failure). */
static void fake_complete(size_t i, int status, const void *body, size_t len)
{
	struct fake_call *c = &calls[i];
	struct http_response r = { .status = status, .error = status ? NULL : "timed out", .body = body,
				   .body_len = len };
	c->completed = true;
	c->done(c->arg, &r);
}

/* ---- async results ------------------------------------------------------------------------ */

struct result {
	int n;
	enum revoke_verdict v;
	char why[256];
};

static void on_done(void *arg, enum revoke_verdict v, const char *why)
{
	struct result *r = arg;
	r->n++;
	r->v = v;
	snprintf(r->why, sizeof r->why, "%s", why ? why : "");
}

static int changes;
static void on_change(void *arg)
{
	(void)arg;
	changes++;
}

/* ---- OCSP responses ------------------------------------------------------------------------ */

/* A DER OCSPResponse for cert (issued by issuer) with status, signed by signer. next_s 0:
 * no nextUpdate. req: copy its nonce. */
static uint8_t *mk_ocsp_resp(X509 *cert, const struct cred *issuer, const struct cred *signer, int status,
			     long this_s, long next_s, OCSP_REQUEST *req, size_t *len)
{
	OCSP_CERTID *id = OCSP_cert_to_id(EVP_sha1(), cert, issuer->cert);
	OCSP_BASICRESP *bs = OCSP_BASICRESP_new();
	ASN1_TIME *thisupd = ASN1_TIME_adj(NULL, time(NULL), 0, this_s);
	ASN1_TIME *nextupd = next_s ? ASN1_TIME_adj(NULL, time(NULL), 0, next_s) : NULL;
	ASN1_TIME *revt = ASN1_TIME_adj(NULL, time(NULL), 0, -7200);
	OCSP_basic_add1_status(bs, id, status, status == V_OCSP_CERTSTATUS_REVOKED ? OCSP_REVOKED_STATUS_KEYCOMPROMISE : -1,
			       status == V_OCSP_CERTSTATUS_REVOKED ? revt : NULL, thisupd, nextupd);
	if (req)
		OCSP_copy_nonce(bs, req);
	STACK_OF(X509) *extra = NULL;
	unsigned long flags = 0;
	if (signer->cert != issuer->cert) {
		extra = sk_X509_new_null();
		flags = 0; /* include the signer's certificate */
	}
	OCSP_basic_sign(bs, signer->cert, signer->key, EVP_sha256(), extra, flags);
	sk_X509_free(extra);
	OCSP_RESPONSE *resp = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs);
	unsigned char *p = NULL;
	int n = i2d_OCSP_RESPONSE(resp, &p);
	uint8_t *out = xmemdup(p, (size_t)n);
	OPENSSL_free(p);
	*len = (size_t)n;
	OCSP_RESPONSE_free(resp);
	OCSP_BASICRESP_free(bs);
	OCSP_CERTID_free(id);
	ASN1_TIME_free(thisupd);
	ASN1_TIME_free(nextupd);
	ASN1_TIME_free(revt);
	return out;
}

/* ==== tests ================================================================================ */

TEST(parse_pem_multi_and_der)
{
	long s1[] = { 7 }, s2[] = { 8, 9 };
	X509_CRL *a = mk_crl(&inter, NULL, s1, 1, -60, 86400), *b = mk_crl(&root, NULL, s2, 2, -60, 86400);
	char *pa = crl_pem(a), *pb = crl_pem(b);
	char *both = xasprintf("junk before\n%s\n%s", pa, pb);
	char err[256];
	STACK_OF(X509_CRL) *s = ocsp_util_parse_crls((const uint8_t *)both, strlen(both), err, sizeof err);
	CHECK(s && sk_X509_CRL_num(s) == 2);
	sk_X509_CRL_pop_free(s, X509_CRL_free);
	size_t len;
	uint8_t *der = crl_der(b, &len);
	s = ocsp_util_parse_crls(der, len, err, sizeof err);
	CHECK(s && sk_X509_CRL_num(s) == 1);
	if (s)
		CHECK(X509_CRL_cmp(sk_X509_CRL_value(s, 0), b) == 0);
	sk_X509_CRL_pop_free(s, X509_CRL_free);
	CHECK(ocsp_util_parse_crls((const uint8_t *)"garbage", 7, err, sizeof err) == NULL);
	const char *badpem = "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n";
	CHECK(ocsp_util_parse_crls((const uint8_t *)badpem, strlen(badpem), err, sizeof err) == NULL);
	free(der);
	free(both);
	free(pa);
	free(pb);
	X509_CRL_free(a);
	X509_CRL_free(b);
}

TEST(crlfile_pem_multi_der_and_lookup)
{
	long revoked[] = { 100, 0x123456789aL, 5 };
	X509_CRL *ci = mk_crl(&inter, NULL, revoked, 3, -60, 86400);
	X509_CRL *cr = mk_crl(&root, NULL, NULL, 0, -60, 86400);
	X509_CRL *both[] = { ci, cr };
	char *pem = write_crls("multi.pem", both, 2, false);
	char *der = write_crls("inter.der", &ci, 1, true);
	char *files[] = { pem, der };
	struct fixture fx;
	fx_init(&fx, ca_bundle, files, 2);
	CHECK(fx_start(&fx, false));
	CHECK_EQ_INT(fx.rv->ls[0].set.n, 3);
	char why[256];
	STACK_OF(X509) *u = untrusted_inter();
	CHECK_EQ_INT(hs_check(&fx, leaf.cert, u, ca_bundle, why, sizeof why, NULL), REVOKE_REVOKED);
	CHECK(strstr(why, "CN=Unit Inter") != NULL);
	CHECK_EQ_INT(hs_check(&fx, leaf2.cert, u, ca_bundle, why, sizeof why, NULL), REVOKE_REVOKED);
	CHECK_EQ_INT(hs_check(&fx, leaf_dp.cert, u, ca_bundle, why, sizeof why, NULL), REVOKE_GOOD);
	/* Serial lookup itself. */
	ASN1_INTEGER *a = ASN1_INTEGER_new();
	ASN1_INTEGER_set(a, 5);
	CHECK(crl_lists(fx.rv->ls[0].set.v[0], a));
	ASN1_INTEGER_set(a, 6);
	CHECK(!crl_lists(fx.rv->ls[0].set.v[0], a));
	ASN1_INTEGER_set(a, 0x123456789aL);
	CHECK(crl_lists(fx.rv->ls[0].set.v[0], a));
	ASN1_INTEGER_free(a);
	sk_X509_free(u);
	fx_free(&fx);
	/* A file that is not a CRL fails revoke_new with the file name. */
	char *bad = write_tmp("bad.crl", "nope", 4);
	char *badfiles[] = { bad };
	fx_init(&fx, ca_bundle, badfiles, 1);
	char err[512];
	CHECK(revoke_new(&fx.cfg, NULL, NULL, err, sizeof err) == NULL);
	CHECK(strstr(err, "bad.crl") != NULL);
	char *missing = tmp_path("missing.crl");
	badfiles[0] = missing;
	fx_init(&fx, ca_bundle, badfiles, 1);
	CHECK(revoke_new(&fx.cfg, NULL, NULL, err, sizeof err) == NULL);
	CHECK(strstr(err, "missing.crl") != NULL);
	free(missing);
	free(bad);
	free(pem);
	free(der);
	X509_CRL_free(ci);
	X509_CRL_free(cr);
}

TEST(crl_signed_by_wrong_key_is_ignored_and_logged)
{
	long revoked[] = { 100 };
	EVP_PKEY *k = new_key();
	X509_CRL *forged = mk_crl(&inter, k, revoked, 1, -60, 86400);
	char *p = write_crls("forged.pem", &forged, 1, false);
	char *files[] = { p };
	struct fixture fx;
	fx_init(&fx, ca_bundle, files, 1);
	capture_begin();
	bool ok = fx_start(&fx, false);
	char why[256];
	STACK_OF(X509) *u = untrusted_inter();
	enum revoke_verdict v = ok ? hs_check(&fx, leaf.cert, u, ca_bundle, why, sizeof why, NULL) : REVOKE_FAILED;
	char *log = capture_end();
	CHECK(ok);
	CHECK_EQ_INT(v, REVOKE_GOOD);
	CHECK(strstr(log, "does not verify") != NULL);
	free(log);
	fx_free(&fx);

	/* Issuer not in cacertfile (root only): the CRL is verified against the chain's
	 * intermediate at check time, and a forged one is refused then. */
	fx_init(&fx, root_only, files, 1);
	CHECK(fx_start(&fx, false));
	capture_begin();
	v = hs_check(&fx, leaf.cert, u, root_only, why, sizeof why, NULL);
	log = capture_end();
	CHECK_EQ_INT(v, REVOKE_GOOD);
	CHECK(strstr(log, "does not verify") != NULL);
	free(log);
	fx_free(&fx);

	X509_CRL *real = mk_crl(&inter, NULL, revoked, 1, -60, 86400);
	char *p2 = write_crls("real.pem", &real, 1, false);
	files[0] = p2;
	fx_init(&fx, root_only, files, 1);
	CHECK(fx_start(&fx, false));
	CHECK_EQ_INT(hs_check(&fx, leaf.cert, u, root_only, why, sizeof why, NULL), REVOKE_REVOKED);
	fx_free(&fx);
	sk_X509_free(u);
	free(p);
	free(p2);
	X509_CRL_free(forged);
	X509_CRL_free(real);
	EVP_PKEY_free(k);
}

TEST(expired_crlfile_per_fail_mode)
{
	long revoked[] = { 100 };
	X509_CRL *old = mk_crl(&inter, NULL, revoked, 1, -7200, -3600);
	char *p = write_crls("expired.pem", &old, 1, false);
	char *files[] = { p };
	char why[256];
	STACK_OF(X509) *u = untrusted_inter();
	struct fixture fx;
	for (int closed = 0; closed < 2; closed++) {
		fx_init(&fx, ca_bundle, files, 1);
		fx.cfg.crl_cache.fail_closed = closed;
		capture_begin();
		bool ok = fx_start(&fx, false);
		enum revoke_verdict good = ok ? hs_check(&fx, leaf2.cert, u, ca_bundle, why, sizeof why, NULL) : 9;
		enum revoke_verdict rev = ok ? hs_check(&fx, leaf.cert, u, ca_bundle, why, sizeof why, NULL) : 9;
		char *log = capture_end();
		CHECK(ok);
		CHECK_EQ_INT(good, closed ? REVOKE_FAILED : REVOKE_GOOD);
		CHECK_EQ_INT(rev, REVOKE_REVOKED); /* an expired CRL still proves a revocation */
		CHECK(strstr(log, "expired") != NULL);
		free(log);
		fx_free(&fx);
	}
	/* An expired CRL next to a current one of the same issuer is not a failure. */
	X509_CRL *cur = mk_crl(&inter, NULL, NULL, 0, -60, 3600);
	X509_CRL *two[] = { old, cur };
	char *p2 = write_crls("old-and-new.pem", two, 2, false);
	files[0] = p2;
	fx_init(&fx, ca_bundle, files, 1);
	fx.cfg.crl_cache.fail_closed = true;
	CHECK(fx_start(&fx, false));
	CHECK_EQ_INT(hs_check(&fx, leaf2.cert, u, ca_bundle, why, sizeof why, NULL), REVOKE_GOOD);
	fx_free(&fx);
	sk_X509_free(u);
	free(p);
	free(p2);
	X509_CRL_free(old);
	X509_CRL_free(cur);
}

TEST(chain_option_and_refs)
{
	long inter_serial[] = { 2 };
	X509_CRL *rc = mk_crl(&root, NULL, inter_serial, 1, -60, 86400);
	X509_CRL *ic = mk_crl(&inter, NULL, NULL, 0, -60, 86400);
	X509_CRL *both[] = { rc, ic };
	char *p = write_crls("chain.pem", both, 2, false);
	char *files[] = { p };
	char why[256];
	STACK_OF(X509) *u = untrusted_inter();
	for (int chain = 0; chain < 2; chain++) {
		struct fixture fx;
		fx_init(&fx, ca_bundle, files, 1);
		fx.l.ssl.crl_check_chain = chain;
		CHECK(fx_start(&fx, false));
		STACK_OF(X509) *vchain = NULL;
		CHECK_EQ_INT(hs_check(&fx, leaf.cert, u, ca_bundle, why, sizeof why, &vchain),
			     chain ? REVOKE_REVOKED : REVOKE_GOOD);
		if (chain)
			CHECK(strstr(why, "CN=Unit Root") != NULL);
		struct cert_ref refs[4];
		size_t n = revoke_refs_from_chain(vchain, refs, 4);
		CHECK_EQ_INT(n, 3);
		CHECK_EQ_INT(revoke_is_revoked(fx.rv, &fx.l, refs, n, why, sizeof why), chain);
		/* refs match the OCSP CertID of the leaf */
		OCSP_CERTID *id = OCSP_cert_to_id(EVP_sha1(), leaf.cert, inter.cert);
		ASN1_OCTET_STRING *nh, *kh;
		ASN1_INTEGER *sn;
		OCSP_id_get0_info(&nh, NULL, &kh, &sn, id);
		CHECK(ASN1_STRING_length(nh) == 20 && !memcmp(ASN1_STRING_get0_data(nh), refs[0].issuer_hash, 20));
		CHECK(ASN1_STRING_length(kh) == 20 && !memcmp(ASN1_STRING_get0_data(kh), refs[0].key_hash, 20));
		CHECK(ASN1_STRING_length(sn) == refs[0].serial_len &&
		      !memcmp(ASN1_STRING_get0_data(sn), refs[0].serial, refs[0].serial_len));
		OCSP_CERTID_free(id);
		sk_X509_pop_free(vchain, X509_free);
		fx_free(&fx);
	}
	sk_X509_free(u);
	free(p);
	X509_CRL_free(rc);
	X509_CRL_free(ic);
}

TEST(is_revoked_follows_reload_and_fires_change)
{
	X509_CRL *empty = mk_crl(&inter, NULL, NULL, 0, -60, 86400);
	char *p = write_crls("reload.pem", &empty, 1, false);
	char *files[] = { p };
	struct fixture fx;
	fx_init(&fx, root_only, files, 1); /* issuer learnt from the chain */
	CHECK(fx_start(&fx, false));
	revoke_on_change(fx.rv, on_change, NULL);
	char why[256];
	STACK_OF(X509) *u = untrusted_inter(), *vchain = NULL;
	CHECK_EQ_INT(hs_check(&fx, leaf.cert, u, root_only, why, sizeof why, &vchain), REVOKE_GOOD);
	struct cert_ref refs[3];
	size_t n = revoke_refs_from_chain(vchain, refs, 3);
	CHECK(!revoke_is_revoked(fx.rv, &fx.l, refs, n, why, sizeof why));
	/* unchanged reload: no change callback */
	changes = 0;
	char *report = NULL;
	CHECK(revoke_reload_files(fx.rv, &report));
	CHECK_EQ_INT(changes, 0);
	free(report);
	report = NULL;
	long revoked[] = { 100 };
	X509_CRL *now_revoked = mk_crl(&inter, NULL, revoked, 1, -30, 86400);
	free(write_crls("reload.pem", &now_revoked, 1, false));
	CHECK(revoke_reload_files(fx.rv, &report));
	CHECK_EQ_INT(changes, 1);
	CHECK(revoke_is_revoked(fx.rv, &fx.l, refs, n, why, sizeof why));
	CHECK(strstr(why, "reload.pem") != NULL);
	/* a broken file keeps the previous set and reports */
	free(report);
	report = NULL;
	free(write_tmp("reload.pem", "broken", 6));
	CHECK(!revoke_reload_files(fx.rv, &report));
	CHECK(report && strstr(report, "listener ssl:t:") && strstr(report, "reload.pem"));
	CHECK(revoke_is_revoked(fx.rv, &fx.l, refs, n, why, sizeof why));
	CHECK_EQ_INT(changes, 1);
	free(report);
	sk_X509_pop_free(vchain, X509_free);
	sk_X509_free(u);
	fx_free(&fx);
	free(p);
	X509_CRL_free(empty);
	X509_CRL_free(now_revoked);
}

TEST(dp_cache_eviction_order)
{
	struct fixture fx;
	fx_init(&fx, ca_bundle, NULL, 0);
	fx.cfg.crl_cache.capacity = 2;
	fx.l.ssl.enable_crl_check = true;
	CHECK(fx_start(&fx, false));
	const char *urls[] = { "http://a/1.crl", "http://b/2.crl", "http://c/3.crl" };
	for (int i = 0; i < 3; i++) {
		X509_CRL *c = mk_crl(&inter, NULL, NULL, 0, -60, 86400);
		STACK_OF(X509_CRL) *s = sk_X509_CRL_new_null();
		sk_X509_CRL_push(s, c);
		char err[256];
		struct crl_entry *ce = dp_select(s, inter.cert, urls[i], err, sizeof err);
		CHECK(ce != NULL);
		bool stored;
		dp_store(fx.rv, urls[i], ce, false, &stored);
		CHECK(stored);
		sk_X509_CRL_pop_free(s, X509_CRL_free);
	}
	CHECK_EQ_INT(fx.rv->ndp, 2);
	CHECK(dp_find(fx.rv, urls[0]) == NULL);
	CHECK(dp_find(fx.rv, urls[1]) != NULL);
	CHECK(dp_find(fx.rv, urls[2]) != NULL);
	/* replacing an entry does not reorder: the oldest inserted goes next */
	X509_CRL *c = mk_crl(&inter, NULL, NULL, 0, -30, 86400);
	STACK_OF(X509_CRL) *s = sk_X509_CRL_new_null();
	sk_X509_CRL_push(s, c);
	char err[256];
	bool stored;
	dp_store(fx.rv, urls[1], dp_select(s, inter.cert, urls[1], err, sizeof err), false, &stored);
	dp_store(fx.rv, urls[0], dp_select(s, inter.cert, urls[0], err, sizeof err), false, &stored);
	CHECK(dp_find(fx.rv, urls[1]) == NULL);
	CHECK(dp_find(fx.rv, urls[2]) != NULL && dp_find(fx.rv, urls[0]) != NULL);
	/* a CRL signed by another key is not selected */
	X509_CRL *forged = mk_crl(&inter, other_root.key, NULL, 0, -60, 86400);
	STACK_OF(X509_CRL) *s2 = sk_X509_CRL_new_null();
	sk_X509_CRL_push(s2, forged);
	CHECK(dp_select(s2, inter.cert, urls[0], err, sizeof err) == NULL);
	CHECK(strstr(err, "does not verify") != NULL);
	CHECK(dp_select(s2, root.cert, urls[0], err, sizeof err) == NULL);
	CHECK(strstr(err, "no CRL issued by") != NULL);
	sk_X509_CRL_pop_free(s2, X509_CRL_free);
	sk_X509_CRL_pop_free(s, X509_CRL_free);
	fx_free(&fx);
}

TEST(dp_fetch_coalesced_and_fail_modes)
{
	fake_reset();
	char why[256];
	STACK_OF(X509) *u = untrusted_inter();
	for (int closed = 0; closed < 2; closed++) {
		struct fixture fx;
		fx_init(&fx, ca_bundle, NULL, 0);
		fx.l.ssl.enable_crl_check = true;
		fx.cfg.crl_cache.fail_closed = closed;
		CHECK(fx_start(&fx, true));
		revoke_on_change(fx.rv, on_change, NULL);
		STACK_OF(X509) *vchain = NULL;
		CHECK_EQ_INT(hs_check(&fx, leaf_dp.cert, u, ca_bundle, why, sizeof why, &vchain), REVOKE_PENDING);
		/* a certificate without a distribution point is not pending */
		CHECK_EQ_INT(hs_check(&fx, leaf.cert, u, ca_bundle, why, sizeof why, NULL), REVOKE_GOOD);
		/* three waiters, one fetch; the failure gives fail_mode */
		struct result r[3] = { 0 };
		for (int i = 0; i < 3; i++)
			revoke_check_async(fx.rv, &fx.l, vchain, fx.main, on_done, &r[i]);
		loop_drain(fx.main);
		CHECK_EQ_INT(ncalls, 1);
		CHECK_STR(calls[0].url, "http://crl.test/inter.crl");
		CHECK_EQ_INT(calls[0].timeout_ms, 1000);
		CHECK_EQ_INT(r[0].n, 0);
		capture_begin();
		fake_complete(0, 0, NULL, 0);
		loop_drain(fx.main);
		char *log = capture_end();
		CHECK(strstr(log, "crl.test") != NULL);
		free(log);
		for (int i = 0; i < 3; i++) {
			CHECK_EQ_INT(r[i].n, 1);
			CHECK_EQ_INT(r[i].v, closed ? REVOKE_FAILED : REVOKE_GOOD);
		}
		CHECK(strstr(r[0].why, "unreachable") != NULL);
		/* now the server answers with a CRL revoking leaf_dp */
		long revoked[] = { 300 };
		X509_CRL *crl = mk_crl(&inter, NULL, revoked, 1, -60, 86400);
		size_t len;
		uint8_t *der = crl_der(crl, &len);
		struct result r2 = { 0 }, r3 = { 0 };
		revoke_check_async(fx.rv, &fx.l, vchain, fx.main, on_done, &r2);
		/* a cancelled wait never hears back */
		struct revoke_wait *w3 = revoke_check_async(fx.rv, &fx.l, vchain, fx.main, on_done, &r3);
		loop_drain(fx.main);
		revoke_cancel(w3);
		CHECK_EQ_INT(ncalls, 2);
		fake_complete(1, 200, der, len);
		loop_drain(fx.main);
		CHECK_EQ_INT(r2.n, 1);
		CHECK_EQ_INT(r2.v, REVOKE_REVOKED);
		CHECK_EQ_INT(r3.n, 0);
		/* cached now: the handshake decides alone; a live recheck sees it */
		CHECK_EQ_INT(hs_check(&fx, leaf_dp.cert, u, ca_bundle, why, sizeof why, NULL), REVOKE_REVOKED);
		struct cert_ref refs[3];
		size_t n = revoke_refs_from_chain(vchain, refs, 3);
		CHECK(revoke_is_revoked(fx.rv, &fx.l, refs, n, why, sizeof why));
		/* refresh: failure keeps the last good CRL; a changed CRL fires the callback */
		changes = 0;
		char *report = NULL;
		revoke_reload_files(fx.rv, &report);
		free(report);
		CHECK_EQ_INT(ncalls, 3);
		capture_begin();
		fake_complete(2, 503, "x", 1);
		log = capture_end();
		CHECK(strstr(log, "keeping the last good CRL") != NULL);
		free(log);
		CHECK(revoke_is_revoked(fx.rv, &fx.l, refs, n, why, sizeof why));
		X509_CRL *crl2 = mk_crl(&inter, NULL, NULL, 0, -30, 86400);
		size_t len2;
		uint8_t *der2 = crl_der(crl2, &len2);
		dp_refresh_cb(&dp_find(fx.rv, "http://crl.test/inter.crl")->refresh);
		CHECK_EQ_INT(ncalls, 4);
		fake_complete(3, 200, der2, len2);
		CHECK_EQ_INT(changes, 1);
		CHECK(!revoke_is_revoked(fx.rv, &fx.l, refs, n, why, sizeof why));
		CHECK_EQ_INT(hs_check(&fx, leaf_dp.cert, u, ca_bundle, why, sizeof why, NULL), REVOKE_GOOD);
		/* an expired cached CRL: fail_mode */
		X509_CRL *crl3 = mk_crl(&inter, NULL, NULL, 0, -7200, -60);
		size_t len3;
		uint8_t *der3 = crl_der(crl3, &len3);
		dp_refresh_cb(&dp_find(fx.rv, "http://crl.test/inter.crl")->refresh);
		fake_complete(4, 200, der3, len3);
		capture_begin();
		CHECK_EQ_INT(hs_check(&fx, leaf_dp.cert, u, ca_bundle, why, sizeof why, NULL),
			     closed ? REVOKE_FAILED : REVOKE_GOOD);
		free(capture_end());
		free(der);
		free(der2);
		free(der3);
		X509_CRL_free(crl);
		X509_CRL_free(crl2);
		X509_CRL_free(crl3);
		sk_X509_pop_free(vchain, X509_free);
		fx_free(&fx);
		fake_reset();
	}
	sk_X509_free(u);
}

TEST(both_sources_apply)
{
	fake_reset();
	long revoked[] = { 300 };
	X509_CRL *filecrl = mk_crl(&inter, NULL, revoked, 1, -60, 86400);
	char *p = write_crls("both.pem", &filecrl, 1, false);
	char *files[] = { p };
	struct fixture fx;
	fx_init(&fx, ca_bundle, files, 1);
	fx.l.ssl.enable_crl_check = true;
	CHECK(fx_start(&fx, true));
	char why[256];
	STACK_OF(X509) *u = untrusted_inter();
	/* revoked by the file: decided in the handshake without fetching */
	CHECK_EQ_INT(hs_check(&fx, leaf_dp.cert, u, ca_bundle, why, sizeof why, NULL), REVOKE_REVOKED);
	CHECK_EQ_INT(ncalls, 0);
	fx_free(&fx);
	/* file says nothing, the DP CRL revokes */
	X509_CRL *emptycrl = mk_crl(&inter, NULL, NULL, 0, -60, 86400);
	free(write_crls("both.pem", &emptycrl, 1, false));
	fx_init(&fx, ca_bundle, files, 1);
	fx.l.ssl.enable_crl_check = true;
	CHECK(fx_start(&fx, true));
	STACK_OF(X509) *vchain = NULL;
	CHECK_EQ_INT(hs_check(&fx, leaf_dp.cert, u, ca_bundle, why, sizeof why, &vchain), REVOKE_PENDING);
	struct result r = { 0 };
	revoke_check_async(fx.rv, &fx.l, vchain, fx.main, on_done, &r);
	loop_drain(fx.main);
	size_t len;
	uint8_t *der = crl_der(filecrl, &len);
	CHECK_EQ_INT(ncalls, 1);
	fake_complete(0, 200, der, len);
	loop_drain(fx.main);
	CHECK_EQ_INT(r.v, REVOKE_REVOKED);
	free(der);
	sk_X509_pop_free(vchain, X509_free);
	sk_X509_free(u);
	fx_free(&fx);
	fake_reset();
	free(p);
	X509_CRL_free(filecrl);
	X509_CRL_free(emptycrl);
}

TEST(ocsp_request_and_response_verification)
{
	uint8_t *der;
	size_t len;
	OCSP_REQUEST *req = NULL;
	OCSP_CERTID *id = NULL;
	char err[256];
	CHECK(ocsp_util_build_request(X509_get0_serialNumber(leaf_ocsp.cert), inter.cert, true, &der, &len, &req, &id, err,
				      sizeof err));
	/* the request decodes, has one SHA-1 CertID for the certificate, and a nonce */
	const unsigned char *p = der;
	OCSP_REQUEST *back = d2i_OCSP_REQUEST(NULL, &p, (long)len);
	CHECK(back && OCSP_request_onereq_count(back) == 1);
	OCSP_CERTID *expect = OCSP_cert_to_id(EVP_sha1(), leaf_ocsp.cert, inter.cert);
	CHECK(!OCSP_id_cmp(OCSP_onereq_get0_id(OCSP_request_onereq_get0(back, 0)), expect));
	CHECK(OCSP_REQUEST_get_ext_by_NID(back, NID_id_pkix_OCSP_Nonce, -1) >= 0);
	OCSP_REQUEST_free(back);
	free(der);

	struct ocsp_answer ans;
	int statuses[] = { V_OCSP_CERTSTATUS_GOOD, V_OCSP_CERTSTATUS_REVOKED, V_OCSP_CERTSTATUS_UNKNOWN };
	for (int i = 0; i < 3; i++) {
		uint8_t *r = mk_ocsp_resp(leaf_ocsp.cert, &inter, &inter, statuses[i], -60, 3600, req, &len);
		CHECK(ocsp_util_check_response(r, len, id, inter.cert, NULL, NULL, req, &ans, err, sizeof err));
		CHECK_EQ_INT(ans.status, statuses[i]);
		CHECK(ans.next_update > time(NULL));
		free(r);
	}
	/* delegated responder with id-kp-OCSPSigning: accepted; without: refused */
	uint8_t *r = mk_ocsp_resp(leaf_ocsp.cert, &inter, &responder, V_OCSP_CERTSTATUS_GOOD, -60, 3600, NULL, &len);
	CHECK(ocsp_util_check_response(r, len, id, inter.cert, NULL, NULL, NULL, &ans, err, sizeof err));
	X509_STORE *st = X509_STORE_new();
	X509_STORE_add_cert(st, root.cert);
	CHECK(ocsp_util_check_response(r, len, id, inter.cert, NULL, st, NULL, &ans, err, sizeof err));
	free(r);
	r = mk_ocsp_resp(leaf_ocsp.cert, &inter, &responder_noeku, V_OCSP_CERTSTATUS_GOOD, -60, 3600, NULL, &len);
	CHECK(!ocsp_util_check_response(r, len, id, inter.cert, NULL, st, NULL, &ans, err, sizeof err));
	free(r);
	/* signed by an unrelated key */
	r = mk_ocsp_resp(leaf_ocsp.cert, &inter, &other_root, V_OCSP_CERTSTATUS_GOOD, -60, 3600, NULL, &len);
	CHECK(!ocsp_util_check_response(r, len, id, inter.cert, NULL, st, NULL, &ans, err, sizeof err));
	CHECK(strstr(err, "signature") != NULL);
	free(r);
	/* expired, and for another certificate */
	r = mk_ocsp_resp(leaf_ocsp.cert, &inter, &inter, V_OCSP_CERTSTATUS_GOOD, -7200, -3600, NULL, &len);
	CHECK(!ocsp_util_check_response(r, len, id, inter.cert, NULL, NULL, NULL, &ans, err, sizeof err));
	free(r);
	r = mk_ocsp_resp(leaf.cert, &inter, &inter, V_OCSP_CERTSTATUS_GOOD, -60, 3600, NULL, &len);
	CHECK(!ocsp_util_check_response(r, len, id, inter.cert, NULL, NULL, NULL, &ans, err, sizeof err));
	CHECK(strstr(err, "does not cover") != NULL);
	free(r);
	/* a wrong nonce */
	OCSP_REQUEST *other = OCSP_REQUEST_new();
	OCSP_request_add1_nonce(other, NULL, -1);
	r = mk_ocsp_resp(leaf_ocsp.cert, &inter, &inter, V_OCSP_CERTSTATUS_GOOD, -60, 3600, other, &len);
	CHECK(!ocsp_util_check_response(r, len, id, inter.cert, NULL, NULL, req, &ans, err, sizeof err));
	CHECK(strstr(err, "nonce") != NULL);
	free(r);
	OCSP_REQUEST_free(other);
	/* not OCSP, and an error status */
	CHECK(!ocsp_util_check_response((const uint8_t *)"xx", 2, id, inter.cert, NULL, NULL, NULL, &ans, err, sizeof err));
	OCSP_RESPONSE *tl = OCSP_response_create(OCSP_RESPONSE_STATUS_TRYLATER, NULL);
	unsigned char *q = NULL;
	int n = i2d_OCSP_RESPONSE(tl, &q);
	CHECK(!ocsp_util_check_response(q, (size_t)n, id, inter.cert, NULL, NULL, NULL, &ans, err, sizeof err));
	CHECK(strstr(err, "trylater") != NULL);
	OPENSSL_free(q);
	OCSP_RESPONSE_free(tl);
	X509_STORE_free(st);
	OCSP_CERTID_free(expect);
	OCSP_CERTID_free(id);
	OCSP_REQUEST_free(req);
}

/* The openssl CLI answers a request built by ocsp_util_build_request. */
TEST(ocsp_openssl_cli_response)
{
	char *inter_pem = write_certs("inter.pem", &inter.cert, 1);
	char *inter_key = write_key("inter.key", inter.key);
	char *index = tmp_path("index.txt");
	FILE *f = fopen(index, "w");
	fprintf(f, "V\t300101000000Z\t\t%s\tunknown\t/O=Unit/CN=leaf-ocsp\n", "0190");
	fprintf(f, "R\t300101000000Z\t200101000000Z,keyCompromise\t%s\tunknown\t/O=Unit/CN=leaf\n", "64");
	fclose(f);
	struct {
		X509 *cert;
		int status;
	} cases[] = { { leaf_ocsp.cert, V_OCSP_CERTSTATUS_GOOD },
		      { leaf.cert, V_OCSP_CERTSTATUS_REVOKED },
		      { leaf2.cert, V_OCSP_CERTSTATUS_UNKNOWN } };
	for (int i = 0; i < 3; i++) {
		uint8_t *der;
		size_t len;
		OCSP_REQUEST *req = NULL;
		OCSP_CERTID *id = NULL;
		char err[256];
		CHECK(ocsp_util_build_request(X509_get0_serialNumber(cases[i].cert), inter.cert, true, &der, &len, &req, &id,
					      err, sizeof err));
		char *reqp = write_tmp("req.der", der, len);
		char *respp = tmp_path("resp.der");
		char *cmd = xasprintf("openssl ocsp -index %s -CA %s -rsigner %s -rkey %s -reqin %s -respout %s -ndays 1 "
				      ">/dev/null 2>&1",
				      index, inter_pem, inter_pem, inter_key, reqp, respp);
		int rc = system(cmd);
		CHECK(rc == 0);
		size_t rlen = 0;
		uint8_t *resp = read_file(respp, 1 << 20, &rlen, err, sizeof err);
		struct ocsp_answer ans = { 0 };
		CHECK(resp && ocsp_util_check_response(resp, rlen, id, inter.cert, NULL, NULL, req, &ans, err, sizeof err));
		CHECK_EQ_INT(ans.status, cases[i].status);
		free(resp);
		free(cmd);
		free(reqp);
		free(respp);
		free(der);
		OCSP_REQUEST_free(req);
		OCSP_CERTID_free(id);
	}
	free(inter_pem);
	free(inter_key);
	free(index);
}

TEST(ocsp_client_async_cache_and_fail_modes)
{
	char why[256];
	STACK_OF(X509) *u = untrusted_inter();
	for (int closed = 0; closed < 2; closed++) {
		fake_reset();
		struct fixture fx;
		fx_init(&fx, ca_bundle, NULL, 0);
		fx.l.ssl.ocsp_client.enable = true;
		fx.l.ssl.ocsp_client.fail_closed = closed;
		fx.l.ssl.ocsp_client.timeout_ms = 700;
		CHECK(fx_start(&fx, true));
		revoke_on_change(fx.rv, on_change, NULL);
		STACK_OF(X509) *vchain = NULL;
		CHECK_EQ_INT(hs_check(&fx, leaf_ocsp.cert, u, ca_bundle, why, sizeof why, &vchain), REVOKE_PENDING);
		/* no AIA responder: nothing to ask */
		CHECK_EQ_INT(hs_check(&fx, leaf.cert, u, ca_bundle, why, sizeof why, NULL), REVOKE_GOOD);
		/* timeout */
		struct result r = { 0 };
		revoke_check_async(fx.rv, &fx.l, vchain, fx.main, on_done, &r);
		loop_drain(fx.main);
		CHECK_EQ_INT(ncalls, 1);
		CHECK_STR(calls[0].method, "POST");
		CHECK_STR(calls[0].url, "http://ocsp.test/");
		CHECK_EQ_INT(calls[0].timeout_ms, 700);
		capture_begin();
		fake_complete(0, 0, NULL, 0);
		loop_drain(fx.main);
		free(capture_end());
		CHECK_EQ_INT(r.n, 1);
		CHECK_EQ_INT(r.v, closed ? REVOKE_FAILED : REVOKE_GOOD);
		/* unknown: a failure */
		const unsigned char *p;
		struct result r2 = { 0 };
		revoke_check_async(fx.rv, &fx.l, vchain, fx.main, on_done, &r2);
		loop_drain(fx.main);
		CHECK_EQ_INT(ncalls, 2);
		p = calls[1].body;
		OCSP_REQUEST *req = d2i_OCSP_REQUEST(NULL, &p, (long)calls[1].body_len);
		size_t len;
		uint8_t *resp = mk_ocsp_resp(leaf_ocsp.cert, &inter, &inter, V_OCSP_CERTSTATUS_UNKNOWN, -60, 3600, req, &len);
		capture_begin();
		fake_complete(1, 200, resp, len);
		loop_drain(fx.main);
		free(capture_end());
		free(resp);
		CHECK_EQ_INT(r2.v, closed ? REVOKE_FAILED : REVOKE_GOOD);
		CHECK(strstr(r2.why, "unknown") != NULL);
		/* cached for a minute only, although the responder said an hour */
		struct ocsp_rec *urec = container_of(fx.rv->oc_lru.next, struct ocsp_rec, lru);
		/* +1: time() reads the coarse clock, which may lag the realtime clock the code used */
		CHECK(urec->valid_until <= time(NULL) + RV_OCSP_UNKNOWN_TTL_S + 1);
		/* the unknown answer is cached: the handshake decides alone */
		capture_begin();
		CHECK_EQ_INT(hs_check(&fx, leaf_ocsp.cert, u, ca_bundle, why, sizeof why, NULL),
			     closed ? REVOKE_FAILED : REVOKE_GOOD);
		free(capture_end());
		/* retained: refreshed on reload; good, then revoked fires the change callback */
		struct cert_ref refs[3];
		size_t n = revoke_refs_from_chain(vchain, refs, 3);
		revoke_ocsp_retain(fx.rv, &refs[0]);
		char *report = NULL;
		revoke_reload_files(fx.rv, &report);
		free(report);
		sweep_cb(&fx.rv->sweep);
		CHECK_EQ_INT(ncalls, 3);
		resp = mk_ocsp_resp(leaf_ocsp.cert, &inter, &inter, V_OCSP_CERTSTATUS_GOOD, -60, 3600, NULL, &len);
		fake_complete(2, 200, resp, len);
		free(resp);
		CHECK_EQ_INT(hs_check(&fx, leaf_ocsp.cert, u, ca_bundle, why, sizeof why, NULL), REVOKE_GOOD);
		CHECK(!revoke_is_revoked(fx.rv, &fx.l, refs, n, why, sizeof why));
		changes = 0;
		list_for_each(it, &fx.rv->oc_lru)
			container_of(it, struct ocsp_rec, lru)->retry_at = 1; /* due now */
		sweep_cb(&fx.rv->sweep);
		CHECK_EQ_INT(ncalls, 4);
		resp = mk_ocsp_resp(leaf_ocsp.cert, &inter, &inter, V_OCSP_CERTSTATUS_REVOKED, -60, 3600, NULL, &len);
		fake_complete(3, 200, resp, len);
		free(resp);
		CHECK_EQ_INT(changes, 1);
		CHECK(revoke_is_revoked(fx.rv, &fx.l, refs, n, why, sizeof why));
		CHECK(strstr(why, "OCSP") != NULL);
		CHECK_EQ_INT(hs_check(&fx, leaf_ocsp.cert, u, ca_bundle, why, sizeof why, NULL), REVOKE_REVOKED);
		/* released and expired: forgotten by the sweep */
		revoke_ocsp_release(fx.rv, &refs[0]);
		OCSP_REQUEST_free(req);
		sk_X509_pop_free(vchain, X509_free);
		fx_free(&fx);
	}
	fake_reset();
	sk_X509_free(u);
}

TEST(stapler_validates_before_caching)
{
	fake_reset();
	X509 *chain[] = { responder.cert, inter.cert };
	char *cert = write_certs("server.pem", chain, 2);
	char *issuer = write_certs("issuer.pem", &inter.cert, 1);
	struct cfg_ssl ssl = { 0 };
	ssl.certfile = cert;
	ssl.ocsp.enable_ocsp_stapling = true;
	ssl.ocsp.responder_url = "http://ocsp.test/staple";
	ssl.ocsp.issuer_pem = issuer;
	ssl.ocsp.refresh_interval_ms = 1000; /* raised to the 1 minute minimum */
	ssl.ocsp.refresh_http_timeout_ms = 2000;
	struct loop *main = loop_new(0);
	char err[256];
	struct ocsp_stapler *st = ocsp_stapler_new(&ssl, "ssl:t", (struct http_client *)&ssl, main, err, sizeof err);
	CHECK(st != NULL);
	loop_drain(main);
	CHECK_EQ_INT(ncalls, 1);
	CHECK_STR(calls[0].url, "http://ocsp.test/staple");
	CHECK_EQ_INT(st->refresh_ms, 60000);
	/* a revoked answer is not cached */
	size_t len;
	uint8_t *resp = mk_ocsp_resp(responder.cert, &inter, &inter, V_OCSP_CERTSTATUS_REVOKED, -60, 3600, NULL, &len);
	capture_begin();
	fake_complete(0, 200, resp, len);
	char *log = capture_end();
	CHECK(strstr(log, "revoked") != NULL);
	free(log);
	free(resp);
	CHECK(st->resp == NULL);
	CHECK(timer_armed(&st->timer));
	/* a good one is, and is stapled */
	fetch(st);
	CHECK_EQ_INT(ncalls, 2);
	resp = mk_ocsp_resp(responder.cert, &inter, &inter, V_OCSP_CERTSTATUS_GOOD, -60, 3600, NULL, &len);
	fake_complete(1, 200, resp, len);
	CHECK(st->resp != NULL && st->resp_len == len);
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	ocsp_stapler_attach(st, ctx);
	SSL *s = SSL_new(ctx);
	CHECK_EQ_INT(status_cb(s, st), SSL_TLSEXT_ERR_OK);
	const unsigned char *got = NULL;
	/* (the server-side getter returns what was set) */
	long glen = SSL_get_tlsext_status_ocsp_resp(s, &got);
	CHECK(glen == (long)len && got && !memcmp(got, resp, len));
	free(resp);
	/* an expired cached response is not stapled */
	st->valid_until = time(NULL) - 1;
	CHECK_EQ_INT(status_cb(s, st), SSL_TLSEXT_ERR_NOACK);
	SSL_free(s);
	/* the context keeps the stapler alive after its owner frees it */
	ocsp_stapler_free(st);
	SSL_CTX_free(ctx);
	/* unreadable files */
	ssl.ocsp.issuer_pem = "/nonexistent/issuer.pem";
	CHECK(ocsp_stapler_new(&ssl, "ssl:t", NULL, NULL, err, sizeof err) == NULL);
	CHECK(strstr(err, "issuer.pem") != NULL);
	loop_drain(main);
	loop_free(main);
	free(cert);
	free(issuer);
	fake_reset();
}

int main(void)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/bw-test-revoke-XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	log_set_level(LOG_DEBUG);
	pki_init();
	RUN(parse_pem_multi_and_der);
	RUN(crlfile_pem_multi_der_and_lookup);
	RUN(crl_signed_by_wrong_key_is_ignored_and_logged);
	RUN(expired_crlfile_per_fail_mode);
	RUN(chain_option_and_refs);
	RUN(is_revoked_follows_reload_and_fires_change);
	RUN(dp_cache_eviction_order);
	RUN(dp_fetch_coalesced_and_fail_modes);
	RUN(both_sources_apply);
	RUN(ocsp_request_and_response_verification);
	RUN(ocsp_openssl_cli_response);
	RUN(ocsp_client_async_cache_and_fail_modes);
	RUN(stapler_validates_before_caching);
	struct cred *all[] = { &root, &inter, &other_root, &leaf, &leaf2, &leaf_dp, &leaf_ocsp, &responder,
			       &responder_noeku };
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		cred_free(all[i]);
	free(ca_bundle);
	free(root_only);
	fake_reset();
	char *cmd = xasprintf("rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup failed\n");
	free(cmd);
	return unit_summary();
}
