/* Unit tests for auth/jwt.c: encodings, JOSE ECDSA signatures, every algorithm (tokens made
 * here with OpenSSL, plus RFC vectors), token parsing, claims, PEM and JWKS keys. */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/encoder.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "auth/authn_jwt.c" /* the authenticator's static helpers (claims, JWKS cache) */
#include "auth/jwt.h"
#include "config/hocon.h"
#include "core/alloc.h"
#include "tls/fastkeys.h"
#include "testkeys.h"
#include "unit.h"

/* ---- helpers ---- */

static char *b64s(const void *p, size_t n)
{
	struct buf b = { 0 };
	jwt_b64url_encode(p, n, &b);
	buf_append(&b, "", 1);
	return (char *)b.data;
}

static const EVP_MD *md_of(enum jwt_alg a)
{
	switch (a) {
	case JWT_HS256: case JWT_RS256: case JWT_PS256: case JWT_ES256: return EVP_sha256();
	case JWT_HS384: case JWT_RS384: case JWT_PS384: case JWT_ES384: return EVP_sha384();
	case JWT_HS512: case JWT_RS512: case JWT_PS512: case JWT_ES512: return EVP_sha512();
	default: return NULL;
	}
}

/* DER ECDSA-Sig-Value to JOSE r||s. */
static size_t der_to_jose(const uint8_t *der, size_t len, size_t coord, uint8_t *out)
{
	const unsigned char *p = der;
	ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)len);
	if (!s)
		return 0;
	const BIGNUM *r, *ss;
	ECDSA_SIG_get0(s, &r, &ss);
	BN_bn2binpad(r, out, (int)coord);
	BN_bn2binpad(ss, out + coord, (int)coord);
	ECDSA_SIG_free(s);
	return 2 * coord;
}

/* Sign input with alg; pk for asymmetric algorithms, secret for HMAC. Returns sig length. */
static size_t sign(enum jwt_alg a, EVP_PKEY *pk, const char *secret, const char *input, uint8_t *sig)
{
	size_t ilen = strlen(input);
	if (a >= JWT_HS256 && a <= JWT_HS512) {
		unsigned int n = 0;
		HMAC(md_of(a), secret, (int)strlen(secret), (const uint8_t *)input, ilen, sig, &n);
		return n;
	}
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	uint8_t tmp[1024];
	size_t n = sizeof tmp;
	CHECK(EVP_DigestSignInit(ctx, &pctx, md_of(a), NULL, pk) == 1);
	if (a >= JWT_PS256 && a <= JWT_PS512) {
		EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
		EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
	}
	CHECK(EVP_DigestSign(ctx, tmp, &n, (const uint8_t *)input, ilen) == 1);
	EVP_MD_CTX_free(ctx);
	if (a >= JWT_ES256 && a <= JWT_ES512) {
		static const size_t coord[] = { 32, 48, 66 };
		return der_to_jose(tmp, n, coord[a - JWT_ES256], sig);
	}
	memcpy(sig, tmp, n);
	return n;
}

/* A compact token: header {"alg":..., "kid":...} and claims JSON text. */
static char *make_token(enum jwt_alg a, const char *kid, const char *claims, EVP_PKEY *pk, const char *secret)
{
	char hdr[200];
	if (kid)
		snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", jwt_alg_name(a), kid);
	else
		snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", jwt_alg_name(a));
	char *h = b64s(hdr, strlen(hdr)), *c = b64s(claims, strlen(claims));
	char *input = xasprintf("%s.%s", h, c);
	uint8_t sig[1024];
	size_t n = sign(a, pk, secret, input, sig);
	char *s = b64s(sig, n);
	char *tok = xasprintf("%s.%s", input, s);
	free(h);
	free(c);
	free(input);
	free(s);
	return tok;
}

static enum jwt_vres verify_tok(const char *tok, const struct jwt_key *k, size_t n, unsigned allowed, bool use_kid)
{
	struct jwt t;
	char err[128];
	if (!jwt_parse(tok, strlen(tok), &t, err, sizeof err)) {
		jwt_free(&t);
		return (enum jwt_vres)-1;
	}
	enum jwt_vres v = jwt_verify(&t, k, n, allowed, use_kid);
	jwt_free(&t);
	return v;
}

static char *pem_pub(EVP_PKEY *pk)
{
	BIO *b = BIO_new(BIO_s_mem());
	PEM_write_bio_PUBKEY(b, pk);
	char *p = NULL;
	long n = BIO_get_mem_data(b, &p);
	char *s = xstrndup(p, (size_t)n);
	BIO_free(b);
	return s;
}

static struct jwt_key pub_key(EVP_PKEY *pk)
{
	struct jwt_key k;
	char err[128];
	char *pem = pem_pub(pk);
	bool ok = jwt_key_from_pem(pem, strlen(pem), &k, err, sizeof err);
	if (!ok)
		fprintf(stderr, "pub_key: %s\n", err);
	CHECK(ok);
	free(pem);
	return k;
}

static char *bn_b64(EVP_PKEY *pk, const char *param, size_t pad)
{
	BIGNUM *bn = NULL;
	CHECK(EVP_PKEY_get_bn_param(pk, param, &bn) == 1);
	uint8_t buf[600];
	int n = pad ? BN_bn2binpad(bn, buf, (int)pad) : BN_bn2bin(bn, buf);
	BN_free(bn);
	return b64s(buf, (size_t)n);
}

/* A JWK of pk (public part). */
static char *jwk_of(EVP_PKEY *pk, const char *kid, const char *extra)
{
	char *j;
	if (EVP_PKEY_is_a(pk, "RSA")) {
		char *n = bn_b64(pk, OSSL_PKEY_PARAM_RSA_N, 0), *e = bn_b64(pk, OSSL_PKEY_PARAM_RSA_E, 0);
		j = xasprintf("{\"kty\":\"RSA\",\"kid\":\"%s\",\"n\":\"%s\",\"e\":\"%s\"%s}", kid, n, e, extra);
		free(n);
		free(e);
	} else if (EVP_PKEY_is_a(pk, "EC")) {
		char grp[32];
		EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, grp, sizeof grp, NULL);
		const char *crv = strcmp(grp, "prime256v1") == 0 ? "P-256" : strcmp(grp, "secp384r1") == 0 ? "P-384" : "P-521";
		size_t coord = crv[2] == '2' ? 32 : crv[2] == '3' ? 48 : 66;
		char *x = bn_b64(pk, OSSL_PKEY_PARAM_EC_PUB_X, coord), *y = bn_b64(pk, OSSL_PKEY_PARAM_EC_PUB_Y, coord);
		j = xasprintf("{\"kty\":\"EC\",\"kid\":\"%s\",\"crv\":\"%s\",\"x\":\"%s\",\"y\":\"%s\"%s}", kid, crv, x, y,
			      extra);
		free(x);
		free(y);
	} else {
		uint8_t raw[64];
		size_t n = sizeof raw;
		EVP_PKEY_get_raw_public_key(pk, raw, &n);
		char *x = b64s(raw, n);
		j = xasprintf("{\"kty\":\"OKP\",\"kid\":\"%s\",\"crv\":\"%s\",\"x\":\"%s\"%s}", kid,
			      EVP_PKEY_is_a(pk, "ED25519") ? "Ed25519" : "Ed448", x, extra);
		free(x);
	}
	return j;
}

static const char *CLAIMS = "{\"sub\":\"dev1\",\"exp\":4102444800}";

/* ---- encodings ---- */

TEST(base64url)
{
	static const char *vec[][2] = { { "", "" }, { "f", "Zg" }, { "fo", "Zm8" }, { "foo", "Zm9v" },
					{ "foob", "Zm9vYg" }, { "fooba", "Zm9vYmE" }, { "foobar", "Zm9vYmFy" } };
	for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
		char *e = b64s(vec[i][0], strlen(vec[i][0]));
		CHECK_STR(e, vec[i][1]);
		free(e);
		struct buf d = { 0 };
		CHECK(jwt_b64url_decode(vec[i][1], strlen(vec[i][1]), &d));
		CHECK_EQ_INT(d.len, strlen(vec[i][0]));
		CHECK(d.len == 0 || memcmp(d.data, vec[i][0], d.len) == 0);
		buf_free(&d);
	}
	uint8_t all[256];
	for (int i = 0; i < 256; i++)
		all[i] = (uint8_t)i;
	char *e = b64s(all, sizeof all);
	CHECK(!strchr(e, '+') && !strchr(e, '/') && !strchr(e, '='));
	struct buf d = { 0 };
	CHECK(jwt_b64url_decode(e, strlen(e), &d));
	CHECK_EQ_INT(d.len, 256);
	CHECK(memcmp(d.data, all, 256) == 0);
	free(e);
	d.len = 0;
	CHECK(!jwt_b64url_decode("Zm9v=", 5, &d));  /* padding is not base64url in JWS */
	CHECK(!jwt_b64url_decode("Zm+v", 4, &d));   /* standard alphabet */
	CHECK(!jwt_b64url_decode("Zm9vY", 5, &d));  /* impossible length */
	CHECK(!jwt_b64url_decode("Zm 9v", 5, &d));
	CHECK_EQ_INT(d.len, 0);
	/* Standard base64 for secret_base64_encoded. */
	CHECK(jwt_b64_decode("Zm9vYg==", 8, &d));
	CHECK(jwt_b64_decode("Zm9vYg", 6, &d));
	CHECK(jwt_b64_decode("+/8=", 4, &d));
	CHECK_EQ_INT(d.len, 4 + 4 + 2);
	CHECK(d.data[8] == 0xfb && d.data[9] == 0xff);
	CHECK(!jwt_b64_decode("Zm9vYg=", 7, &d));
	CHECK(!jwt_b64_decode("Zm9v!", 5, &d));
	buf_free(&d);
}

TEST(jose_ecdsa_to_der)
{
	uint8_t sig[64];
	for (int i = 0; i < 32; i++) {
		sig[i] = (uint8_t)(0x80 + i);   /* r with the high bit set: DER adds a 0x00 */
		sig[32 + i] = i < 3 ? 0 : (uint8_t)i; /* s with leading zeros: DER drops them */
	}
	uint8_t *der = NULL;
	size_t n = 0;
	CHECK(jwt_ecdsa_jose_to_der(sig, 64, 32, &der, &n));
	CHECK(der && der[0] == 0x30 && der[2] == 0x02 && der[3] == 33 && der[4] == 0x00 && der[5] == 0x80);
	uint8_t back[64];
	CHECK_EQ_INT(der_to_jose(der, n, 32, back), 64);
	CHECK(memcmp(back, sig, 64) == 0);
	free(der);
	CHECK(!jwt_ecdsa_jose_to_der(sig, 63, 32, &der, &n));
	CHECK(der == NULL);
	CHECK(!jwt_ecdsa_jose_to_der(sig, 64, 48, &der, &n));
	/* A real P-521 signature round trip (66-byte coordinates). */
	EVP_PKEY *pk = test_keygen("EC", "P-521");
	struct jwt_key k = pub_key(pk);
	uint8_t s[200];
	size_t sl = sign(JWT_ES512, pk, NULL, "abc", s);
	CHECK_EQ_INT(sl, 132);
	CHECK(jwt_verify_sig(JWT_ES512, &k, (const uint8_t *)"abc", 3, s, sl));
	CHECK(!jwt_verify_sig(JWT_ES512, &k, (const uint8_t *)"abd", 3, s, sl));
	CHECK(!jwt_verify_sig(JWT_ES512, &k, (const uint8_t *)"abc", 3, s, sl - 1));
	jwt_key_clear(&k);
	EVP_PKEY_free(pk);
}

/* ---- algorithms ---- */

TEST(rfc7515_hs256_vector)
{
	/* RFC 7515 A.1: the header and payload contain CR LF; the key is a JWK "k". */
	const char *tok = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
			  ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
			  ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
	const char *k64 = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
	struct buf kb = { 0 };
	CHECK(jwt_b64url_decode(k64, strlen(k64), &kb));
	struct jwt_key k;
	jwt_key_hmac(&k, kb.data, kb.len);
	CHECK_EQ_INT(verify_tok(tok, &k, 1, JWT_ALGS_HMAC, false), JWT_V_OK);
	CHECK_EQ_INT(verify_tok(tok, &k, 1, JWT_ALGS_ASYM, false), JWT_V_ALG_REFUSED);
	struct jwt t;
	char err[100];
	CHECK(jwt_parse(tok, strlen(tok), &t, err, sizeof err));
	CHECK_EQ_INT(json_integer_value(json_object_get(t.claims, "exp")), 1300819380);
	CHECK(json_is_true(json_object_get(t.claims, "http://example.com/is_root")));
	int64_t exp;
	CHECK_EQ_INT(jwt_check_time(t.claims, 1300819379, &exp), JWT_T_OK);
	CHECK_EQ_INT(exp, 1300819380);
	CHECK_EQ_INT(jwt_check_time(t.claims, 1300819380, &exp), JWT_T_EXPIRED); /* exp must be > now */
	jwt_free(&t);
	jwt_key_clear(&k);
	buf_free(&kb);
}

TEST(rfc8037_ed25519_vector)
{
	/* RFC 8037 A.4 (the payload is not JSON, so check the signature directly). */
	const char *x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
	const char *input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
	const char *sig = "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
	char *jwks = xasprintf("{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\"}]}", x);
	struct jwt_key *keys;
	size_t n, skipped;
	char err[200];
	CHECK(jwt_jwks_parse(jwks, strlen(jwks), &keys, &n, &skipped, err, sizeof err));
	CHECK_EQ_INT(n, 1);
	struct buf s = { 0 };
	CHECK(jwt_b64url_decode(sig, strlen(sig), &s));
	CHECK(n == 1 && jwt_verify_sig(JWT_EDDSA, &keys[0], (const uint8_t *)input, strlen(input), s.data, s.len));
	s.data[5] ^= 1;
	CHECK(n == 1 && !jwt_verify_sig(JWT_EDDSA, &keys[0], (const uint8_t *)input, strlen(input), s.data, s.len));
	buf_free(&s);
	jwt_keys_free(keys, n);
	free(jwks);
}

TEST(every_algorithm)
{
	struct {
		enum jwt_alg alg;
		const char *type, *param;
	} cases[] = {
		{ JWT_HS256, NULL, NULL },	 { JWT_HS384, NULL, NULL },	 { JWT_HS512, NULL, NULL },
		{ JWT_RS256, "RSA", "2048" },	 { JWT_RS384, "RSA", "2048" },	 { JWT_RS512, "RSA", "3072" },
		{ JWT_PS256, "RSA", "2048" },	 { JWT_PS384, "RSA", "2048" },	 { JWT_PS512, "RSA", "2048" },
		{ JWT_ES256, "EC", "P-256" },	 { JWT_ES384, "EC", "P-384" },	 { JWT_ES512, "EC", "P-521" },
		{ JWT_EDDSA, "ED25519", NULL }, { JWT_EDDSA, "ED448", NULL },
	};
	EVP_PKEY *rsa = NULL;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		enum jwt_alg a = cases[i].alg;
		bool hmac = !cases[i].type;
		EVP_PKEY *pk = NULL, *other = NULL;
		struct jwt_key k, wrong;
		if (hmac) {
			jwt_key_hmac(&k, (const uint8_t *)"secret", 6);
			jwt_key_hmac(&wrong, (const uint8_t *)"secreT", 6);
		} else {
			bool reuse = strcmp(cases[i].type, "RSA") == 0 && strcmp(cases[i].param, "2048") == 0;
			if (reuse && !rsa)
				rsa = test_keygen("RSA", "2048");
			pk = reuse ? rsa : test_keygen(cases[i].type, cases[i].param);
			other = test_keygen(cases[i].type, cases[i].param);
			k = pub_key(pk);
			wrong = pub_key(other);
		}
		unsigned allowed = hmac ? JWT_ALGS_HMAC : JWT_ALGS_ASYM;
		char *tok = make_token(a, NULL, CLAIMS, pk, "secret");
		if (verify_tok(tok, &k, 1, allowed, false) != JWT_V_OK)
			fprintf(stderr, "algorithm %s (%s) does not verify\n", jwt_alg_name(a), cases[i].type ? cases[i].type : "");
		CHECK_EQ_INT(verify_tok(tok, &k, 1, allowed, false), JWT_V_OK);
		CHECK_EQ_INT(verify_tok(tok, &wrong, 1, allowed, false), JWT_V_BAD_SIG);
		CHECK_EQ_INT(verify_tok(tok, &k, 1, hmac ? JWT_ALGS_ASYM : JWT_ALGS_HMAC, false), JWT_V_ALG_REFUSED);
		/* Either key of a set may verify. */
		struct jwt_key two[2] = { wrong, k };
		CHECK_EQ_INT(verify_tok(tok, two, 2, allowed, false), JWT_V_OK);
		/* Tampered payload: same header and signature, another claim set. */
		char *dot1 = strchr(tok, '.'), *dot2 = strrchr(tok, '.');
		const char *evil = "{\"sub\":\"admin\",\"exp\":4102444800}";
		char *evil_claims = b64s(evil, strlen(evil));
		char *forged = xasprintf("%.*s.%s%s", (int)(dot1 - tok), tok, evil_claims, dot2);
		CHECK_EQ_INT(verify_tok(forged, &k, 1, allowed, false), JWT_V_BAD_SIG);
		/* Truncated signature. */
		char *trunc = xstrndup(tok, strlen(tok) - 4);
		CHECK_EQ_INT(verify_tok(trunc, &k, 1, allowed, false), JWT_V_BAD_SIG);
		free(trunc);
		free(forged);
		free(evil_claims);
		free(tok);
		jwt_key_clear(&k);
		jwt_key_clear(&wrong);
		if (pk != rsa)
			EVP_PKEY_free(pk);
		EVP_PKEY_free(other);
	}
	EVP_PKEY_free(rsa);
}

TEST(key_type_and_algorithm_must_match)
{
	EVP_PKEY *rsa = test_keygen("RSA", "2048"), *ec = test_keygen("EC", "P-256"), *ed = test_keygen("ED25519", NULL);
	struct jwt_key kr = pub_key(rsa), ke = pub_key(ec), kd = pub_key(ed);
	/* Algorithm confusion: an HS256 token whose secret is the RSA public key's PEM. */
	char *pem = pem_pub(rsa);
	char *tok = make_token(JWT_HS256, NULL, CLAIMS, NULL, pem);
	CHECK_EQ_INT(verify_tok(tok, &kr, 1, JWT_ALGS_ASYM, false), JWT_V_ALG_REFUSED);
	CHECK_EQ_INT(verify_tok(tok, &kr, 1, JWT_ALGS_ASYM | JWT_ALGS_HMAC, false), JWT_V_NO_KEY);
	free(tok);
	free(pem);
	/* ES256 token against an RSA or Ed25519 key: no fitting key. */
	tok = make_token(JWT_ES256, NULL, CLAIMS, ec, NULL);
	CHECK_EQ_INT(verify_tok(tok, &kr, 1, JWT_ALGS_ASYM, false), JWT_V_NO_KEY);
	CHECK_EQ_INT(verify_tok(tok, &kd, 1, JWT_ALGS_ASYM, false), JWT_V_NO_KEY);
	CHECK_EQ_INT(verify_tok(tok, &ke, 1, JWT_ALGS_ASYM, false), JWT_V_OK);
	free(tok);
	/* ES384 with a P-256 key: the curve must match the algorithm. */
	CHECK(!jwt_key_fits(&ke, JWT_ES384));
	CHECK(jwt_key_fits(&ke, JWT_ES256));
	CHECK(jwt_key_fits(&kr, JWT_PS512) && jwt_key_fits(&kr, JWT_RS256) && !jwt_key_fits(&kr, JWT_HS256));
	CHECK(jwt_key_fits(&kd, JWT_EDDSA) && !jwt_key_fits(&kd, JWT_ES256));
	/* A JWK "alg" pins the key to that algorithm. */
	kr.alg = JWT_RS256;
	CHECK(!jwt_key_fits(&kr, JWT_PS256));
	tok = make_token(JWT_PS256, NULL, CLAIMS, rsa, NULL);
	CHECK_EQ_INT(verify_tok(tok, &kr, 1, JWT_ALGS_ASYM, false), JWT_V_NO_KEY);
	free(tok);
	jwt_key_clear(&kr);
	jwt_key_clear(&ke);
	jwt_key_clear(&kd);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(ed);
}

TEST(alg_none_and_unknown_are_refused)
{
	struct jwt_key k;
	jwt_key_hmac(&k, (const uint8_t *)"secret", 6);
	const char *none_hdr = "{\"alg\":\"none\"}";
	char *h = b64s(none_hdr, strlen(none_hdr)), *c = b64s(CLAIMS, strlen(CLAIMS));
	char *tok = xasprintf("%s.%s.", h, c);
	CHECK_EQ_INT(verify_tok(tok, &k, 1, ~0u, false), JWT_V_ALG_REFUSED);
	free(tok);
	free(h);
	const char *odd[] = { "{\"alg\":\"NONE\"}", "{\"alg\":\"hs256\"}", "{\"alg\":\"HS1\"}", "{\"alg\":\"RS1\"}" };
	for (size_t i = 0; i < 4; i++) {
		h = b64s(odd[i], strlen(odd[i]));
		tok = xasprintf("%s.%s.c2ln", h, c);
		CHECK_EQ_INT(verify_tok(tok, &k, 1, ~0u, false), JWT_V_ALG_REFUSED);
		free(tok);
		free(h);
	}
	free(c);
	CHECK_EQ_INT(jwt_alg_from_name("EdDSA"), JWT_EDDSA);
	CHECK_EQ_INT(jwt_alg_from_name("none"), JWT_ALG_NONE);
	CHECK_EQ_INT(jwt_alg_from_name("ES256K"), JWT_ALG_UNKNOWN);
	jwt_key_clear(&k);
}

TEST(kid_selection)
{
	EVP_PKEY *p1 = test_keygen("EC", "P-256"), *p2 = test_keygen("EC", "P-256");
	struct jwt_key ks[2] = { pub_key(p1), pub_key(p2) };
	ks[0].kid = xstrdup("one");
	ks[1].kid = xstrdup("two");
	char *t2 = make_token(JWT_ES256, "two", CLAIMS, p2, NULL);
	char *t3 = make_token(JWT_ES256, "three", CLAIMS, p2, NULL);
	char *tn = make_token(JWT_ES256, NULL, CLAIMS, p2, NULL);
	char *t1bad = make_token(JWT_ES256, "one", CLAIMS, p2, NULL); /* kid one, signed by two */
	CHECK_EQ_INT(verify_tok(t2, ks, 2, JWT_ALGS_ASYM, true), JWT_V_OK);
	CHECK_EQ_INT(verify_tok(t3, ks, 2, JWT_ALGS_ASYM, true), JWT_V_NO_KEY);
	CHECK_EQ_INT(verify_tok(tn, ks, 2, JWT_ALGS_ASYM, true), JWT_V_OK); /* no kid: every key is tried */
	CHECK_EQ_INT(verify_tok(t1bad, ks, 2, JWT_ALGS_ASYM, true), JWT_V_BAD_SIG);
	CHECK_EQ_INT(verify_tok(t3, ks, 2, JWT_ALGS_ASYM, false), JWT_V_OK); /* kid ignored */
	free(t2);
	free(t3);
	free(tn);
	free(t1bad);
	jwt_key_clear(&ks[0]);
	jwt_key_clear(&ks[1]);
	EVP_PKEY_free(p1);
	EVP_PKEY_free(p2);
}

/* ---- parsing ---- */

static bool parses(const char *tok)
{
	struct jwt t;
	char err[128];
	bool ok = jwt_parse(tok, strlen(tok), &t, err, sizeof err);
	jwt_free(&t);
	return ok;
}

static char *tok3(const char *hdr, const char *claims)
{
	char *h = b64s(hdr, strlen(hdr)), *c = b64s(claims, strlen(claims));
	char *t = xasprintf("%s.%s.c2ln", h, c);
	free(h);
	free(c);
	return t;
}

TEST(parse_malformed)
{
	CHECK(!parses(""));
	CHECK(!parses("abc"));
	CHECK(!parses("a.b"));
	CHECK(!parses("a.b.c.d"));
	CHECK(!parses("a.b.c.d.e")); /* JWE */
	CHECK(!parses("...."));
	const char *good_h = "{\"alg\":\"HS256\"}";
	struct {
		const char *hdr, *claims;
		bool ok;
	} cases[] = {
		{ good_h, "{\"a\":1}", true },
		{ good_h, "[1,2]", false },
		{ good_h, "\"str\"", false },
		{ good_h, "{\"a\":1,\"a\":2}", false }, /* duplicate claim: ambiguous */
		{ good_h, "{bad json", false },
		{ "[\"HS256\"]", "{}", false },
		{ "{\"typ\":\"JWT\"}", "{}", false },             /* no alg */
		{ "{\"alg\":256}", "{}", false },
		{ "{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", "{}", false },
		{ "{\"alg\":\"HS256\",\"kid\":7}", "{}", false },
		{ "{\"alg\":\"HS256\",\"kid\":\"k1\"}", "{}", true },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *t = tok3(cases[i].hdr, cases[i].claims);
		if (parses(t) != cases[i].ok)
			fprintf(stderr, "parse case %zu\n", i);
		CHECK(parses(t) == cases[i].ok);
		free(t);
	}
	char *t = tok3(good_h, "{}");
	char *bad = xasprintf("%s!", t); /* not base64url in the signature */
	CHECK(!parses(bad));
	free(bad);
	char withnul[128];
	size_t n = strlen(t);
	memcpy(withnul, t, n);
	withnul[n - 1] = '\0';
	struct jwt j;
	char err[100];
	CHECK(!jwt_parse(withnul, n, &j, err, sizeof err));
	jwt_free(&j);
	CHECK(jwt_parse(t, n, &j, err, sizeof err));
	CHECK_EQ_INT(j.alg, JWT_HS256);
	CHECK(j.kid == NULL);
	CHECK_EQ_INT(j.sig.len, 3);
	CHECK(memcmp(j.signing_input, t, j.signing_len) == 0 && t[j.signing_len] == '.');
	jwt_free(&j);
	free(t);
}

/* ---- claims ---- */

static json_t *J(const char *s)
{
	json_t *j = json_loads(s, JSON_DECODE_ANY, NULL);
	CHECK(j != NULL);
	return j;
}

TEST(time_claims)
{
	int64_t now = 1700000000, exp;
	struct {
		const char *claims;
		enum jwt_tres want;
		int64_t exp;
	} cases[] = {
		{ "{}", JWT_T_OK, 0 },
		{ "{\"exp\":1700000001}", JWT_T_OK, 1700000001 },
		{ "{\"exp\":1700000000}", JWT_T_EXPIRED, 0 },
		{ "{\"exp\":1699999999}", JWT_T_EXPIRED, 0 },
		{ "{\"exp\":\"1700000060\"}", JWT_T_OK, 1700000060 }, /* string numbers are converted */
		{ "{\"exp\":\"1600000000\"}", JWT_T_EXPIRED, 0 },
		{ "{\"exp\":1700000000.5}", JWT_T_OK, 1700000001 },
		{ "{\"exp\":\"soon\"}", JWT_T_BAD, 0 },
		{ "{\"exp\":\"\"}", JWT_T_BAD, 0 },
		{ "{\"exp\":null}", JWT_T_BAD, 0 },
		{ "{\"exp\":true}", JWT_T_BAD, 0 },
		{ "{\"nbf\":1700000000}", JWT_T_OK, 0 },
		{ "{\"nbf\":1700000001}", JWT_T_NOT_YET, 0 },
		{ "{\"nbf\":\"1700000100\"}", JWT_T_NOT_YET, 0 },
		{ "{\"nbf\":[1]}", JWT_T_BAD, 0 },
		{ "{\"iat\":1800000000}", JWT_T_OK, 0 },               /* iat is not checked */
		{ "{\"iat\":\"garbage\",\"exp\":1700000100}", JWT_T_OK, 1700000100 },
		{ "{\"exp\":1700000100,\"nbf\":1700000050}", JWT_T_NOT_YET, 0 },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		json_t *c = J(cases[i].claims);
		enum jwt_tres r = jwt_check_time(c, now, &exp);
		if (r != cases[i].want)
			fprintf(stderr, "time case %zu: %s -> %d\n", i, cases[i].claims, r);
		CHECK_EQ_INT(r, cases[i].want);
		if (cases[i].want == JWT_T_OK)
			CHECK_EQ_INT(exp, cases[i].exp);
		json_decref(c);
	}
}

TEST(required_claims)
{
	json_t *c = J("{\"sub\":\"dev1\",\"n\":42,\"b\":true,\"f\":1.5,\"o\":{},\"aud\":[\"a\",\"mqtt\"],\"e\":\"\"}");
	CHECK(jwt_claim_matches(c, "sub", "dev1", 4));
	CHECK(!jwt_claim_matches(c, "sub", "dev", 3));
	CHECK(!jwt_claim_matches(c, "sub", "dev1x", 5));
	CHECK(!jwt_claim_matches(c, "missing", "", 0));
	CHECK(jwt_claim_matches(c, "n", "42", 2));
	CHECK(!jwt_claim_matches(c, "n", "042", 3));
	CHECK(jwt_claim_matches(c, "b", "true", 4));
	CHECK(!jwt_claim_matches(c, "f", "1.5", 3));
	CHECK(!jwt_claim_matches(c, "o", "{}", 2));
	CHECK(jwt_claim_matches(c, "e", "", 0));
	CHECK(jwt_claim_matches(c, "aud", "mqtt", 4));
	CHECK(jwt_claim_matches(c, "aud", "a", 1));
	CHECK(!jwt_claim_matches(c, "aud", "b", 1));
	CHECK(!jwt_claim_matches(c, "aud", "", 0));
	json_decref(c);
	c = J("{\"aud\":\"mqtt\"}");
	CHECK(jwt_claim_matches(c, "aud", "mqtt", 4));
	CHECK(!jwt_claim_matches(c, "aud", "mqt", 3));
	CHECK(!jwt_claim_matches(c, "aud", "", 0));
	json_decref(c);
	c = J("{\"aud\":\"\"}");
	CHECK(!jwt_claim_matches(c, "aud", "", 0));
	json_decref(c);
}

TEST(result_fields)
{
	const char *yes[] = { "true", "\"true\"", "1", "\"1\"", "2", "100" };
	const char *no[] = { "false", "\"false\"", "0", "\"0\"", "null", "\"\"", "-1", "\"yes\"", "1.0", "[]", "{}" };
	for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
		json_t *j = J(yes[i]);
		CHECK(jwt_json_truthy(j));
		json_decref(j);
	}
	for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
		json_t *j = J(no[i]);
		if (jwt_json_truthy(j))
			fprintf(stderr, "truthy: %s\n", no[i]);
		CHECK(!jwt_json_truthy(j));
		json_decref(j);
	}
	CHECK(!jwt_json_truthy(NULL));
	const char *acl_ok[] = { "[]", "[{\"permission\":\"allow\",\"action\":\"pub\",\"topic\":\"t\"}]", "{}",
				 "{\"pub\":[\"a\"],\"sub\":[],\"all\":[\"x/#\"]}" };
	const char *acl_bad[] = { "\"pub\"", "1", "[1]", "[\"t\"]", "{\"pub\":\"a\"}", "{\"publish\":[\"a\"]}", "null" };
	for (size_t i = 0; i < sizeof acl_ok / sizeof acl_ok[0]; i++) {
		json_t *j = J(acl_ok[i]);
		CHECK(jwt_acl_valid(j));
		json_decref(j);
	}
	for (size_t i = 0; i < sizeof acl_bad / sizeof acl_bad[0]; i++) {
		json_t *j = J(acl_bad[i]);
		CHECK(!jwt_acl_valid(j));
		json_decref(j);
	}
	size_t dropped;
	json_t *j = J("{\"site\":\"sto\",\"n\":1,\"z\":\"a\\\"b\"}");
	char *s = jwt_client_attrs(j, &dropped);
	CHECK_STR(s, "{\"site\":\"sto\",\"z\":\"a\\\"b\"}");
	CHECK_EQ_INT(dropped, 1);
	free(s);
	json_decref(j);
	j = J("[\"a\"]");
	CHECK(jwt_client_attrs(j, &dropped) == NULL);
	json_decref(j);
	j = J("{\"n\":1}");
	CHECK(jwt_client_attrs(j, &dropped) == NULL);
	json_decref(j);
}

/* ---- keys ---- */

/* A self-signed RSA certificate (PEM) and its key, made once: in the first pass of main(),
 * before tls_fast_keys_install(), after which OpenSSL cannot sign certificates with a
 * provider key (tls/fastkeys.c). */
static const char *rsa_cert_pem(EVP_PKEY **key)
{
	static EVP_PKEY *rsa;
	static char *pem;
	if (!pem) {
		rsa = test_keygen("RSA", "2048");
		X509 *x = X509_new();
		X509_set_version(x, 2);
		ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
		X509_gmtime_adj(X509_getm_notBefore(x), 0);
		X509_gmtime_adj(X509_getm_notAfter(x), 3600);
		X509_set_pubkey(x, rsa);
		X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)"jwt", -1,
					   -1, 0);
		X509_set_issuer_name(x, X509_get_subject_name(x));
		CHECK(X509_sign(x, rsa, EVP_sha256()) > 0);
		BIO *b = BIO_new(BIO_s_mem());
		PEM_write_bio_X509(b, x);
		char *p = NULL;
		long n = BIO_get_mem_data(b, &p);
		pem = xstrndup(p, (size_t)n);
		BIO_free(b);
		X509_free(x);
	}
	*key = rsa;
	return pem;
}

TEST(pem_keys)
{
	char err[200];
	struct jwt_key k;
	EVP_PKEY *rsa = test_keygen("RSA", "2048");
	/* PKCS#1 "RSA PUBLIC KEY". */
	BIO *b = BIO_new(BIO_s_mem());
	OSSL_ENCODER_CTX *ectx = NULL;
	(void)ectx;
	CHECK(PEM_write_bio_PUBKEY(b, rsa) == 1);
	char *p = NULL;
	long n = BIO_get_mem_data(b, &p);
	CHECK(jwt_key_from_pem(p, (size_t)n, &k, err, sizeof err));
	jwt_key_clear(&k);
	BIO_free(b);
	/* A certificate: its public key. */
	EVP_PKEY *cert_key;
	const char *cert = rsa_cert_pem(&cert_key);
	CHECK(jwt_key_from_pem(cert, strlen(cert), &k, err, sizeof err));
	char *tok = make_token(JWT_RS256, NULL, CLAIMS, cert_key, NULL);
	CHECK_EQ_INT(verify_tok(tok, &k, 1, JWT_ALGS_ASYM, false), JWT_V_OK);
	free(tok);
	jwt_key_clear(&k);
	/* PKCS#1 RSAPublicKey PEM, through the type-specific encoder. */
	b = BIO_new(BIO_s_mem());
	OSSL_ENCODER_CTX *ec2 = OSSL_ENCODER_CTX_new_for_pkey(rsa, EVP_PKEY_PUBLIC_KEY, "PEM", "type-specific", NULL);
	CHECK(ec2 && OSSL_ENCODER_to_bio(ec2, b) == 1);
	OSSL_ENCODER_CTX_free(ec2);
	n = BIO_get_mem_data(b, &p);
	CHECK(n > 0 && strstr(p, "BEGIN RSA PUBLIC KEY"));
	CHECK(jwt_key_from_pem(p, (size_t)n, &k, err, sizeof err));
	jwt_key_clear(&k);
	BIO_free(b);
	/* Refused: garbage, small RSA, a curve JOSE does not use. */
	CHECK(!jwt_key_from_pem("hello", 5, &k, err, sizeof err));
	EVP_PKEY *small = test_keygen("RSA", "1024");
	char *pem = pem_pub(small);
	CHECK(!jwt_key_from_pem(pem, strlen(pem), &k, err, sizeof err));
	CHECK(strstr(err, "2048") != NULL);
	free(pem);
	EVP_PKEY_free(small);
	EVP_PKEY *k1 = test_keygen("EC", "secp256k1");
	pem = pem_pub(k1);
	CHECK(!jwt_key_from_pem(pem, strlen(pem), &k, err, sizeof err));
	free(pem);
	EVP_PKEY_free(k1);
	EVP_PKEY_free(rsa);
}

TEST(jwks_parsing)
{
	EVP_PKEY *rsa = test_keygen("RSA", "2048"), *e256 = test_keygen("EC", "P-256"), *e384 = test_keygen("EC", "P-384"),
		 *e521 = test_keygen("EC", "P-521"), *ed = test_keygen("ED25519", NULL), *small = test_keygen("RSA", "1024");
	char *j_rsa = jwk_of(rsa, "r1", ",\"use\":\"sig\",\"alg\":\"RS256\"");
	char *j_256 = jwk_of(e256, "e1", "");
	char *j_384 = jwk_of(e384, "e2", ",\"key_ops\":[\"verify\"]");
	char *j_521 = jwk_of(e521, "e3", "");
	char *j_ed = jwk_of(ed, "d1", "");
	char *j_enc = jwk_of(e256, "enc", ",\"use\":\"enc\"");
	char *j_small = jwk_of(small, "small", "");
	char *j_mismatch = jwk_of(e256, "mm", ",\"alg\":\"RS256\"");
	char *doc = xasprintf("{\"keys\":[%s,%s,%s,%s,%s,%s,%s,%s,"
			      "{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"},"
			      "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"AAAA\"},"
			      "{\"kty\":\"RSA\",\"n\":\"\",\"e\":\"AQAB\"},"
			      "{\"kty\":\"OKP\",\"crv\":\"X25519\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"},"
			      "\"not an object\"]}",
			      j_rsa, j_256, j_384, j_521, j_ed, j_enc, j_small, j_mismatch);
	struct jwt_key *keys;
	size_t n, skipped;
	char err[200];
	CHECK(jwt_jwks_parse(doc, strlen(doc), &keys, &n, &skipped, err, sizeof err));
	CHECK_EQ_INT(n, 5);
	CHECK_EQ_INT(skipped, 8);
	CHECK(n == 5 && strcmp(keys[0].kid, "r1") == 0 && keys[0].alg == JWT_RS256 && strcmp(keys[4].kid, "d1") == 0);
	struct {
		enum jwt_alg alg;
		EVP_PKEY *pk;
		const char *kid;
	} toks[] = { { JWT_RS256, rsa, "r1" }, { JWT_ES256, e256, "e1" }, { JWT_ES384, e384, "e2" },
		     { JWT_ES512, e521, "e3" }, { JWT_EDDSA, ed, "d1" } };
	for (size_t i = 0; i < 5; i++) {
		char *t = make_token(toks[i].alg, toks[i].kid, CLAIMS, toks[i].pk, NULL);
		CHECK_EQ_INT(verify_tok(t, keys, n, JWT_ALGS_ASYM, true), JWT_V_OK);
		free(t);
		t = make_token(toks[i].alg, NULL, CLAIMS, toks[i].pk, NULL);
		CHECK_EQ_INT(verify_tok(t, keys, n, JWT_ALGS_ASYM, true), JWT_V_OK);
		free(t);
	}
	/* The RSA key is pinned to RS256 by its "alg". */
	char *t = make_token(JWT_PS256, "r1", CLAIMS, rsa, NULL);
	CHECK_EQ_INT(verify_tok(t, keys, n, JWT_ALGS_ASYM, true), JWT_V_NO_KEY);
	free(t);
	/* The key marked "enc" was skipped: its kid is unknown. */
	t = make_token(JWT_ES256, "enc", CLAIMS, e256, NULL);
	CHECK_EQ_INT(verify_tok(t, keys, n, JWT_ALGS_ASYM, true), JWT_V_NO_KEY);
	free(t);
	jwt_keys_free(keys, n);

	const char *bad[] = { "", "[]", "{}", "{\"keys\":{}}", "not json", "{\"keys\":\"x\"}" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		CHECK(!jwt_jwks_parse(bad[i], strlen(bad[i]), &keys, &n, &skipped, err, sizeof err));
	CHECK(jwt_jwks_parse("{\"keys\":[]}", 11, &keys, &n, &skipped, err, sizeof err));
	CHECK_EQ_INT(n, 0);
	jwt_keys_free(keys, n);

	free(doc);
	free(j_rsa);
	free(j_256);
	free(j_384);
	free(j_521);
	free(j_ed);
	free(j_enc);
	free(j_small);
	free(j_mismatch);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(e256);
	EVP_PKEY_free(e384);
	EVP_PKEY_free(e521);
	EVP_PKEY_free(ed);
	EVP_PKEY_free(small);
}

TEST(ec_point_off_curve_is_refused)
{
	EVP_PKEY *e256 = test_keygen("EC", "P-256");
	BIGNUM *y = NULL;
	EVP_PKEY_get_bn_param(e256, OSSL_PKEY_PARAM_EC_PUB_Y, &y);
	BN_add_word(y, 1);
	uint8_t yb[32];
	BN_bn2binpad(y, yb, 32);
	BN_free(y);
	char *ys = b64s(yb, 32);
	char *x = bn_b64(e256, OSSL_PKEY_PARAM_EC_PUB_X, 32);
	char *doc = xasprintf("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}]}", x, ys);
	struct jwt_key *keys;
	size_t n, skipped;
	char err[200];
	CHECK(jwt_jwks_parse(doc, strlen(doc), &keys, &n, &skipped, err, sizeof err));
	CHECK_EQ_INT(n, 0);
	CHECK_EQ_INT(skipped, 1);
	jwt_keys_free(keys, n);
	free(doc);
	free(x);
	free(ys);
	EVP_PKEY_free(e256);
}

/* ---- the authenticator: config, claims, JWKS cache ---- */

static struct hocon_node *root;

static struct jwt_cfg *jcfg(const char *body, char *err, size_t errlen)
{
	char *text = xasprintf("authentication {\n%s\n}\n", body);
	struct hocon_error he;
	hocon_free(root);
	root = hocon_parse_string(text, strlen(text), "t.conf", &he);
	free(text);
	CHECK(root != NULL);
	struct cfg_reader r = { .err = err, .errlen = errlen };
	snprintf(r.path, sizeof r.path, "authentication");
	err[0] = '\0';
	return parse(&r, hocon_get_member(root, "authentication"));
}

static struct authn_result judge(const struct jwt_cfg *c, const char *claims, const char *user, const char *cid)
{
	struct authn_request rq = { .username = user, .username_len = user ? strlen(user) : 0, .client_id = cid };
	char *tok = make_token(JWT_HS256, NULL, claims, NULL, "s");
	struct jwt t;
	char err[100];
	CHECK(jwt_parse(tok, strlen(tok), &t, err, sizeof err));
	struct authn_result res;
	judge_claims(c, &rq, &t, &res);
	jwt_free(&t);
	free(tok);
	return res;
}

static void res_clear(struct authn_result *r)
{
	free(r->acl);
	free(r->client_attrs);
	free(r->clientid_override);
}

TEST(authenticator_claims)
{
	char err[300];
	struct jwt_cfg *c = jcfg("mechanism = jwt\nsecret = s\nverify_claims { sub = \"${clientid}\", "
				 "aud = mqtt, owner = \"u-${username}\", other = \"${peerhost}\" }\nacl_claim_name = perm",
				 err, sizeof err);
	CHECK(c != NULL);
	if (!c) {
		fprintf(stderr, "%s\n", err);
		return;
	}
	CHECK_EQ_INT(c->algorithm, ALG_HMAC); /* inferred from secret */
	const char *base = "\"sub\":\"d1\",\"aud\":[\"x\",\"mqtt\"],\"owner\":\"u-al\",\"other\":\"${peerhost}\"";
	char claims[600];
	snprintf(claims, sizeof claims, "{%s,\"exp\":4102444800,\"is_superuser\":\"true\","
		 "\"perm\":{\"pub\":[\"t/1\"]},\"client_attrs\":{\"site\":\"sto\",\"n\":1},\"clientid_override\":\"d1-x\"}",
		 base);
	struct authn_result r = judge(c, claims, "al", "d1");
	CHECK_EQ_INT(r.verdict, AUTHN_ALLOW);
	CHECK(r.is_superuser);
	CHECK_EQ_INT(r.expire_at, 4102444800);
	CHECK_STR(r.acl, "{\"pub\":[\"t/1\"]}");
	CHECK_STR(r.client_attrs, "{\"site\":\"sto\"}");
	CHECK_STR(r.clientid_override, "d1-x");
	res_clear(&r);
	r = judge(c, claims, "al", "d2");
	CHECK(r.verdict == AUTHN_DENY && r.rc == 0x86 && strstr(r.reason, "sub"));
	r = judge(c, claims, "bob", "d1");
	CHECK(r.verdict == AUTHN_DENY && strstr(r.reason, "owner"));
	snprintf(claims, sizeof claims, "{%s,\"perm\":\"all\"}", base);
	r = judge(c, claims, "al", "d1");
	CHECK(r.verdict == AUTHN_DENY && r.rc == 0x86 && r.acl == NULL);
	snprintf(claims, sizeof claims, "{%s,\"exp\":1}", base);
	r = judge(c, claims, "al", "d1");
	CHECK(r.verdict == AUTHN_DENY && strstr(r.reason, "expired"));
	snprintf(claims, sizeof claims, "{%s,\"nbf\":4102444800}", base);
	r = judge(c, claims, "al", "d1");
	CHECK(r.verdict == AUTHN_DENY && strstr(r.reason, "nbf"));
	snprintf(claims, sizeof claims, "{%s}", base);
	r = judge(c, claims, "al", "d1");
	CHECK(r.verdict == AUTHN_ALLOW && r.expire_at == 0 && !r.is_superuser && !r.acl);
	res_clear(&r);
	cfg_unref(c);

	c = jcfg("mechanism = jwt\nsecret = s\ndisconnect_after_expire = false", err, sizeof err);
	r = judge(c, "{\"exp\":4102444800}", NULL, "d1");
	CHECK(r.verdict == AUTHN_ALLOW && r.expire_at == 0);
	cfg_unref(c);
}

static void feed(struct authn *a, bool periodic, int status, const char *body)
{
	a->fetching = true;
	a->fetch_periodic = periodic;
	struct http_response resp = { .status = status, .body = (const uint8_t *)body, .body_len = body ? strlen(body) : 0,
				       .error = status ? NULL : "Couldn't connect to server" };
	on_jwks(a, &resp);
}

TEST(jwks_cache_failures)
{
	char err[300];
	struct jwt_cfg *c = jcfg("mechanism = jwt\nuse_jwks = true\nendpoint = \"http://127.0.0.1:9/jwks\"\n"
				 "refresh_interval = 60",
				 err, sizeof err);
	CHECK(c != NULL);
	if (!c) {
		fprintf(stderr, "%s\n", err);
		return;
	}
	CHECK_EQ_INT(c->refresh_s, 60);
	CHECK(authn_http_header_find(c->headers, c->nheaders, "accept") >= 0);
	/* An instance without its HTTP client: responses are fed by hand. */
	struct authn *a = xcalloc(1, sizeof *a);
	a->id = xstrdup("jwt");
	pthread_mutex_init(&a->lock, NULL);
	list_init(&a->waiters);
	timer_init(&a->refresh, on_refresh_timer);
	atomic_fetch_add(&c->refs, 1); /* the instance's reference, as create takes it */
	a->cfg = c;
	a->main_loop = loop_new(0);

	EVP_PKEY *pk = test_keygen("EC", "P-256");
	char *k1 = jwk_of(pk, "A", "");
	char *doc = xasprintf("{\"keys\":[%s]}", k1);
	feed(a, true, 200, doc);
	CHECK(a->keys && a->keys->n == 1 && a->fails == 0);
	CHECK(timer_armed(&a->refresh));
	CHECK(timer_remaining_ms(a->main_loop, &a->refresh) > 50000);
	struct keyset *first = a->keys;
	/* Failures keep the keys: periodic ones count, early ones do not. */
	for (int i = 1; i <= 4; i++) {
		feed(a, true, i % 2 ? 500 : 0, NULL);
		CHECK(a->keys == first);
		CHECK_EQ_INT(a->fails, (unsigned)i);
	}
	feed(a, false, 0, NULL);
	feed(a, false, 200, "{\"keys\":[]}"); /* no usable key: a failure */
	feed(a, false, 200, "garbage");
	CHECK(a->keys == first);
	CHECK_EQ_INT(a->fails, 4);
	feed(a, true, 200, "{\"keys\":[{\"kty\":\"oct\",\"k\":\"AA\"}]}");
	CHECK(a->keys == NULL); /* the fifth periodic failure drops them */
	CHECK_EQ_INT(a->fails, 5);
	CHECK(!a->fetching);
	/* An early refresh that works brings them back and resets the count. */
	feed(a, false, 200, doc);
	CHECK(a->keys && a->keys->n == 1 && a->fails == 0);

	free(k1);
	free(doc);
	EVP_PKEY_free(pk);
	struct loop *l = a->main_loop;
	destroy(a);
	loop_free(l);
	cfg_unref(c);
}

static void run_all(void)
{
	RUN(base64url);
	RUN(jose_ecdsa_to_der);
	RUN(rfc7515_hs256_vector);
	RUN(rfc8037_ed25519_vector);
	RUN(every_algorithm);
	RUN(key_type_and_algorithm_must_match);
	RUN(alg_none_and_unknown_are_refused);
	RUN(kid_selection);
	RUN(parse_malformed);
	RUN(time_claims);
	RUN(required_claims);
	RUN(result_fields);
	RUN(pem_keys);
	RUN(jwks_parsing);
	RUN(ec_point_off_curve_is_refused);
	RUN(authenticator_claims);
	RUN(jwks_cache_failures);
}

int main(void)
{
	run_all(); /* keys on the OpenSSL providers */
	char msg[256];
	CHECK_EQ_INT(tls_fast_keys_install(msg, sizeof msg), TLS_FAST_KEYS_ON);
	run_all(); /* node.tls_fast_keys: RSA and EC keys on the built-in methods */
	hocon_free(root);
	return unit_summary();
}
