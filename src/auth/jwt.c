/* JSON Web Tokens: parsing, signatures, keys and claims (see auth/jwt.h). */
#include "auth/jwt.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "core/alloc.h"
#include "tls/fastkeys.h"

#define JWT_MIN_RSA_BITS 2048

static const char *const alg_names[] = {
	[JWT_ALG_UNKNOWN] = "?", [JWT_HS256] = "HS256", [JWT_HS384] = "HS384", [JWT_HS512] = "HS512",
	[JWT_RS256] = "RS256",   [JWT_RS384] = "RS384", [JWT_RS512] = "RS512", [JWT_PS256] = "PS256",
	[JWT_PS384] = "PS384",   [JWT_PS512] = "PS512", [JWT_ES256] = "ES256", [JWT_ES384] = "ES384",
	[JWT_ES512] = "ES512",   [JWT_EDDSA] = "EdDSA", [JWT_ALG_NONE] = "none",
};

enum jwt_alg jwt_alg_from_name(const char *name)
{
	if (!name)
		return JWT_ALG_UNKNOWN;
	for (int a = JWT_HS256; a <= JWT_ALG_NONE; a++)
		if (strcmp(name, alg_names[a]) == 0)
			return (enum jwt_alg)a;
	return JWT_ALG_UNKNOWN;
}

const char *jwt_alg_name(enum jwt_alg a)
{
	return (a >= JWT_ALG_UNKNOWN && a <= JWT_ALG_NONE) ? alg_names[a] : "?";
}

static bool alg_is_hmac(enum jwt_alg a)
{
	return a >= JWT_HS256 && a <= JWT_HS512;
}
static bool alg_is_rsa(enum jwt_alg a)
{
	return a >= JWT_RS256 && a <= JWT_PS512;
}
static bool alg_is_pss(enum jwt_alg a)
{
	return a >= JWT_PS256 && a <= JWT_PS512;
}
static bool alg_is_ec(enum jwt_alg a)
{
	return a >= JWT_ES256 && a <= JWT_ES512;
}

/* The digest of an algorithm (NULL for EdDSA, which hashes internally). */
static const EVP_MD *alg_md(enum jwt_alg a)
{
	switch (a) {
	case JWT_HS256: case JWT_RS256: case JWT_PS256: case JWT_ES256: return EVP_sha256();
	case JWT_HS384: case JWT_RS384: case JWT_PS384: case JWT_ES384: return EVP_sha384();
	case JWT_HS512: case JWT_RS512: case JWT_PS512: case JWT_ES512: return EVP_sha512();
	default: return NULL;
	}
}

/* ---- encodings ---- */

static int b64_value(unsigned char c, bool url, bool std)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if ((url && c == '-') || (std && c == '+'))
		return 62;
	if ((url && c == '_') || (std && c == '/'))
		return 63;
	return -1;
}

static bool b64_decode_any(const char *in, size_t len, struct buf *out, bool url, bool std)
{
	if (len % 4 == 1)
		return false;
	uint8_t *p = buf_reserve(out, len / 4 * 3 + 3);
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < len; i++) {
		int v = b64_value((unsigned char)in[i], url, std);
		if (v < 0)
			return false;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			p[o++] = (uint8_t)(acc >> bits);
		}
	}
	out->len += o;
	return true;
}

bool jwt_b64url_decode(const char *in, size_t len, struct buf *out)
{
	return b64_decode_any(in, len, out, true, false);
}

bool jwt_b64_decode(const char *in, size_t len, struct buf *out)
{
	size_t pad = 0;
	while (len && in[len - 1] == '=' && pad < 2) {
		len--;
		pad++;
	}
	if (pad && (len + pad) % 4 != 0)
		return false;
	return b64_decode_any(in, len, out, true, true);
}

void jwt_b64url_encode(const uint8_t *in, size_t len, struct buf *out)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	uint8_t *p = buf_reserve(out, (len + 2) / 3 * 4);
	size_t o = 0, i = 0;
	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		p[o++] = (uint8_t)tab[v >> 18];
		p[o++] = (uint8_t)tab[(v >> 12) & 63];
		p[o++] = (uint8_t)tab[(v >> 6) & 63];
		p[o++] = (uint8_t)tab[v & 63];
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		p[o++] = (uint8_t)tab[v >> 18];
		p[o++] = (uint8_t)tab[(v >> 12) & 63];
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		p[o++] = (uint8_t)tab[v >> 18];
		p[o++] = (uint8_t)tab[(v >> 12) & 63];
		p[o++] = (uint8_t)tab[(v >> 6) & 63];
	}
	out->len += o;
}

bool jwt_ecdsa_jose_to_der(const uint8_t *sig, size_t len, size_t coord_len, uint8_t **der, size_t *der_len)
{
	*der = NULL;
	*der_len = 0;
	if (!coord_len || len != 2 * coord_len)
		return false;
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(sig, (int)coord_len, NULL);
	BIGNUM *s = BN_bin2bn(sig + coord_len, (int)coord_len, NULL);
	bool ok = false;
	if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
		BN_free(r);
		BN_free(s);
		goto out;
	}
	unsigned char *p = NULL;
	int n = i2d_ECDSA_SIG(es, &p);
	if (n > 0) {
		*der = xmemdup(p, (size_t)n);
		*der_len = (size_t)n;
		ok = true;
	}
	OPENSSL_free(p);
out:
	ECDSA_SIG_free(es);
	return ok;
}

/* ---- tokens ---- */

static json_t *decode_json_part(const char *p, size_t len, const char *what, char *err, size_t errlen)
{
	struct buf b = { 0 };
	json_t *j = NULL;
	if (!jwt_b64url_decode(p, len, &b)) {
		snprintf(err, errlen, "%s is not base64url", what);
		goto out;
	}
	json_error_t je;
	j = json_loadb(b.data ? (const char *)b.data : "", b.len, JSON_REJECT_DUPLICATES, &je);
	if (!j) {
		snprintf(err, errlen, "%s is not JSON", what);
		goto out;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		j = NULL;
		snprintf(err, errlen, "%s is not a JSON object", what);
	}
out:
	buf_free(&b);
	return j;
}

bool jwt_parse(const char *tok, size_t len, struct jwt *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof *t);
	const char *d1 = memchr(tok, '.', len);
	const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok)) : NULL;
	if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok))) {
		snprintf(err, errlen, "not a JWS compact token (three dot-separated parts)");
		return false;
	}
	if (memchr(tok, '\0', len)) {
		snprintf(err, errlen, "token contains a NUL byte");
		return false;
	}
	t->header = decode_json_part(tok, (size_t)(d1 - tok), "header", err, errlen);
	if (!t->header)
		return false;
	const json_t *alg = json_object_get(t->header, "alg");
	if (!json_is_string(alg)) {
		snprintf(err, errlen, "header has no \"alg\"");
		return false;
	}
	if (json_object_get(t->header, "crit")) {
		snprintf(err, errlen, "header has \"crit\" extensions, none are supported");
		return false;
	}
	t->alg = jwt_alg_from_name(json_string_value(alg));
	const json_t *kid = json_object_get(t->header, "kid");
	if (kid && !json_is_string(kid)) {
		snprintf(err, errlen, "header \"kid\" is not a string");
		return false;
	}
	t->kid = kid ? json_string_value(kid) : NULL;
	t->claims = decode_json_part(d1 + 1, (size_t)(d2 - d1 - 1), "payload", err, errlen);
	if (!t->claims)
		return false;
	if (!jwt_b64url_decode(d2 + 1, len - (size_t)(d2 + 1 - tok), &t->sig)) {
		snprintf(err, errlen, "signature is not base64url");
		return false;
	}
	t->signing_len = (size_t)(d2 - tok);
	t->signing_input = xstrndup(tok, t->signing_len);
	return true;
}

void jwt_free(struct jwt *t)
{
	json_decref(t->header);
	json_decref(t->claims);
	free(t->signing_input);
	buf_free(&t->sig);
	memset(t, 0, sizeof *t);
}

/* ---- keys ---- */

void jwt_key_hmac(struct jwt_key *k, const uint8_t *secret, size_t len)
{
	memset(k, 0, sizeof *k);
	k->secret = xmalloc(len ? len : 1);
	if (len)
		memcpy(k->secret, secret, len);
	k->secret_len = len;
}

void jwt_key_clear(struct jwt_key *k)
{
	free(k->kid);
	EVP_PKEY_free(k->pkey);
	if (k->secret)
		OPENSSL_cleanse(k->secret, k->secret_len);
	free(k->secret);
	memset(k, 0, sizeof *k);
}

void jwt_keys_free(struct jwt_key *keys, size_t n)
{
	for (size_t i = 0; keys && i < n; i++)
		jwt_key_clear(&keys[i]);
	free(keys);
}

/* The coordinate size of an EC key's curve, 0 when it is not one of the JOSE curves. */
static size_t ec_coord_len(const EVP_PKEY *pk)
{
	char name[64];
	size_t nl = 0;
	if (!EVP_PKEY_is_a(pk, "EC") ||
	    !EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof name, &nl))
		return 0;
	if (strcmp(name, "prime256v1") == 0 || strcmp(name, "P-256") == 0)
		return 32;
	if (strcmp(name, "secp384r1") == 0 || strcmp(name, "P-384") == 0)
		return 48;
	if (strcmp(name, "secp521r1") == 0 || strcmp(name, "P-521") == 0)
		return 66;
	return 0;
}

/* Reject key types and sizes no JOSE algorithm of ours uses. */
static bool pkey_acceptable(EVP_PKEY *pk, char *err, size_t errlen)
{
	if (EVP_PKEY_is_a(pk, "RSA") || EVP_PKEY_is_a(pk, "RSA-PSS")) {
		if (EVP_PKEY_get_bits(pk) < JWT_MIN_RSA_BITS) {
			snprintf(err, errlen, "RSA key of %d bits: at least %d are required (RFC 7518)", EVP_PKEY_get_bits(pk),
				 JWT_MIN_RSA_BITS);
			return false;
		}
		return true;
	}
	if (EVP_PKEY_is_a(pk, "EC")) {
		if (!ec_coord_len(pk)) {
			snprintf(err, errlen, "EC key on a curve JOSE does not use (P-256, P-384 and P-521 only)");
			return false;
		}
		return true;
	}
	if (EVP_PKEY_is_a(pk, "ED25519") || EVP_PKEY_is_a(pk, "ED448"))
		return true;
	snprintf(err, errlen, "unsupported key type %s", EVP_PKEY_get0_type_name(pk) ? EVP_PKEY_get0_type_name(pk) : "?");
	return false;
}

bool jwt_key_from_pem(const char *pem, size_t len, struct jwt_key *k, char *err, size_t errlen)
{
	memset(k, 0, sizeof *k);
	EVP_PKEY *pk = NULL;
	OSSL_DECODER_CTX *dctx =
		OSSL_DECODER_CTX_new_for_pkey(&pk, "PEM", NULL, NULL, EVP_PKEY_PUBLIC_KEY, NULL, NULL);
	if (dctx) {
		const unsigned char *p = (const unsigned char *)pem;
		size_t left = len;
		if (!OSSL_DECODER_from_data(dctx, &p, &left))
			pk = NULL;
		OSSL_DECODER_CTX_free(dctx);
	}
	if (!pk) {
		BIO *bio = BIO_new_mem_buf(pem, (int)len);
		X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
		if (x)
			pk = X509_get_pubkey(x);
		X509_free(x);
		BIO_free(bio);
	}
	if (!pk) {
		snprintf(err, errlen, "no public key or certificate found in the PEM text");
		return false;
	}
	if (!pkey_acceptable(pk, err, errlen)) {
		EVP_PKEY_free(pk);
		return false;
	}
	k->pkey = pk;
	return true;
}

/* A base64url member of a JWK as a big-endian integer / bytes. */
static bool jwk_bytes(const json_t *jwk, const char *name, struct buf *out)
{
	const json_t *v = json_object_get(jwk, name);
	out->len = 0;
	return json_is_string(v) && json_string_length(v) > 0 &&
	       jwt_b64url_decode(json_string_value(v), json_string_length(v), out) && out->len > 0;
}

static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = tls_provider_pkey_ctx(type); /* fromdata needs the provider */
	EVP_PKEY *pk = NULL;
	if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		pk = NULL;
	OSSL_PARAM_free(params);
	EVP_PKEY_CTX_free(ctx);
	return pk;
}

static EVP_PKEY *jwk_rsa(const json_t *jwk, char *err, size_t errlen)
{
	struct buf n = { 0 }, e = { 0 };
	EVP_PKEY *pk = NULL;
	BIGNUM *bn = NULL, *be = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	if (!jwk_bytes(jwk, "n", &n) || !jwk_bytes(jwk, "e", &e)) {
		snprintf(err, errlen, "RSA key without valid \"n\" and \"e\"");
		goto out;
	}
	bn = BN_bin2bn(n.data, (int)n.len, NULL);
	be = BN_bin2bn(e.data, (int)e.len, NULL);
	bld = OSSL_PARAM_BLD_new();
	if (!bn || !be || !bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be)) {
		snprintf(err, errlen, "RSA key: out of memory");
		goto out;
	}
	pk = pkey_fromdata("RSA", bld);
	if (!pk)
		snprintf(err, errlen, "RSA key rejected by OpenSSL");
out:
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn);
	BN_free(be);
	buf_free(&n);
	buf_free(&e);
	return pk;
}

/* The point must lie on the curve (invalid-curve attacks). Checked on the encoded point: the
 * same whichever method table the key ends up on (EVP_PKEY_public_check on a built-in
 * context reads a legacy key the provider's key does not have; tls/fastkeys.c). */
static bool ec_point_on_curve(const char *group, const struct buf *pt)
{
	EC_GROUP *g = EC_GROUP_new_by_curve_name(OBJ_sn2nid(group));
	EC_POINT *p = g ? EC_POINT_new(g) : NULL;
	bool ok = p && EC_POINT_oct2point(g, p, pt->data, pt->len, NULL) == 1 && EC_POINT_is_on_curve(g, p, NULL) == 1 &&
		  !EC_POINT_is_at_infinity(g, p);
	EC_POINT_free(p);
	EC_GROUP_free(g);
	ERR_clear_error();
	return ok;
}

static EVP_PKEY *jwk_ec(const json_t *jwk, char *err, size_t errlen)
{
	const char *crv = json_string_value(json_object_get(jwk, "crv"));
	const char *group = NULL;
	size_t coord = 0;
	if (crv && strcmp(crv, "P-256") == 0) {
		group = "prime256v1";
		coord = 32;
	} else if (crv && strcmp(crv, "P-384") == 0) {
		group = "secp384r1";
		coord = 48;
	} else if (crv && strcmp(crv, "P-521") == 0) {
		group = "secp521r1";
		coord = 66;
	} else {
		snprintf(err, errlen, "EC key with unsupported \"crv\" %s", crv ? crv : "(none)");
		return NULL;
	}
	struct buf x = { 0 }, y = { 0 }, pt = { 0 };
	EVP_PKEY *pk = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	if (!jwk_bytes(jwk, "x", &x) || !jwk_bytes(jwk, "y", &y) || x.len != coord || y.len != coord) {
		snprintf(err, errlen, "EC key without valid \"x\" and \"y\" for %s", crv);
		goto out;
	}
	buf_append(&pt, "\x04", 1);
	buf_append(&pt, x.data, x.len);
	buf_append(&pt, y.data, y.len);
	bld = OSSL_PARAM_BLD_new();
	if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt.data, pt.len)) {
		snprintf(err, errlen, "EC key: out of memory");
		goto out;
	}
	pk = ec_point_on_curve(group, &pt) ? pkey_fromdata("EC", bld) : NULL;
	if (!pk)
		snprintf(err, errlen, "EC key rejected by OpenSSL (point not on the curve?)");
out:
	OSSL_PARAM_BLD_free(bld);
	buf_free(&x);
	buf_free(&y);
	buf_free(&pt);
	return pk;
}

static EVP_PKEY *jwk_okp(const json_t *jwk, char *err, size_t errlen)
{
	const char *crv = json_string_value(json_object_get(jwk, "crv"));
	int type;
	size_t klen;
	if (crv && strcmp(crv, "Ed25519") == 0) {
		type = EVP_PKEY_ED25519;
		klen = 32;
	} else if (crv && strcmp(crv, "Ed448") == 0) {
		type = EVP_PKEY_ED448;
		klen = 57;
	} else {
		snprintf(err, errlen, "OKP key with unsupported \"crv\" %s", crv ? crv : "(none)");
		return NULL;
	}
	struct buf x = { 0 };
	EVP_PKEY *pk = NULL;
	if (!jwk_bytes(jwk, "x", &x) || x.len != klen)
		snprintf(err, errlen, "OKP key without a valid \"x\" for %s", crv);
	else if (!(pk = EVP_PKEY_new_raw_public_key(type, NULL, x.data, x.len)))
		snprintf(err, errlen, "OKP key rejected by OpenSSL");
	buf_free(&x);
	return pk;
}

/* One JWK into k; false + err when it is skipped. */
static bool jwk_one(const json_t *jwk, struct jwt_key *k, char *err, size_t errlen)
{
	memset(k, 0, sizeof *k);
	if (!json_is_object(jwk)) {
		snprintf(err, errlen, "a key is not an object");
		return false;
	}
	const char *kty = json_string_value(json_object_get(jwk, "kty"));
	const json_t *use = json_object_get(jwk, "use");
	const json_t *kid = json_object_get(jwk, "kid");
	const json_t *alg = json_object_get(jwk, "alg");
	const json_t *ops = json_object_get(jwk, "key_ops");
	if (use && !(json_is_string(use) && strcmp(json_string_value(use), "sig") == 0)) {
		snprintf(err, errlen, "a key is not for signatures (\"use\")");
		return false;
	}
	if (ops) {
		bool verify = false;
		size_t i;
		const json_t *op;
		if (json_is_array(ops))
			json_array_foreach(ops, i, op) verify |= json_is_string(op) && strcmp(json_string_value(op), "verify") == 0;
		if (!verify) {
			snprintf(err, errlen, "a key's \"key_ops\" does not include verify");
			return false;
		}
	}
	if (kid && !json_is_string(kid)) {
		snprintf(err, errlen, "a key's \"kid\" is not a string");
		return false;
	}
	if (alg) {
		k->alg = json_is_string(alg) ? jwt_alg_from_name(json_string_value(alg)) : JWT_ALG_UNKNOWN;
		if (!(JWT_ALGS_ASYM & JWT_ALG_BIT(k->alg))) {
			snprintf(err, errlen, "a key has an unsupported \"alg\"");
			return false;
		}
	}
	EVP_PKEY *pk = NULL;
	if (!kty) {
		snprintf(err, errlen, "a key has no \"kty\"");
		return false;
	} else if (strcmp(kty, "RSA") == 0) {
		pk = jwk_rsa(jwk, err, errlen);
	} else if (strcmp(kty, "EC") == 0) {
		pk = jwk_ec(jwk, err, errlen);
	} else if (strcmp(kty, "OKP") == 0) {
		pk = jwk_okp(jwk, err, errlen);
	} else {
		snprintf(err, errlen, "key type \"%.16s\" is not supported", kty);
		return false;
	}
	if (!pk)
		return false;
	if (!pkey_acceptable(pk, err, errlen)) {
		EVP_PKEY_free(pk);
		return false;
	}
	k->pkey = pk;
	if (k->alg != JWT_ALG_UNKNOWN && !jwt_key_fits(k, k->alg)) {
		snprintf(err, errlen, "a key's \"alg\" %s does not match its type", jwt_alg_name(k->alg));
		jwt_key_clear(k);
		return false;
	}
	k->kid = kid ? xstrdup(json_string_value(kid)) : NULL;
	return true;
}

bool jwt_jwks_parse(const char *json, size_t len, struct jwt_key **keys, size_t *n, size_t *skipped, char *err,
		    size_t errlen)
{
	*keys = NULL;
	*n = 0;
	*skipped = 0;
	err[0] = '\0';
	json_error_t je;
	json_t *doc = json_loadb(json, len, 0, &je);
	const json_t *arr = doc ? json_object_get(doc, "keys") : NULL;
	if (!json_is_array(arr)) {
		snprintf(err, errlen, doc ? "not a JWKS: no \"keys\" array" : "not JSON (line %d: %s)", je.line, je.text);
		json_decref(doc);
		return false;
	}
	size_t cnt = json_array_size(arr);
	struct jwt_key *v = xcalloc(cnt ? cnt : 1, sizeof *v);
	size_t got = 0;
	for (size_t i = 0; i < cnt; i++) {
		char why[160];
		if (jwk_one(json_array_get(arr, i), &v[got], why, sizeof why)) {
			got++;
		} else {
			if (!*skipped)
				snprintf(err, errlen, "key %zu skipped: %s", i + 1, why);
			(*skipped)++;
		}
	}
	json_decref(doc);
	*keys = v;
	*n = got;
	return true;
}

bool jwt_key_fits(const struct jwt_key *k, enum jwt_alg a)
{
	if (k->alg != JWT_ALG_UNKNOWN && k->alg != a)
		return false;
	if (alg_is_hmac(a))
		return k->secret != NULL && !k->pkey;
	if (!k->pkey)
		return false;
	if (alg_is_rsa(a))
		return EVP_PKEY_is_a(k->pkey, "RSA") || (alg_is_pss(a) && EVP_PKEY_is_a(k->pkey, "RSA-PSS"));
	if (alg_is_ec(a)) {
		static const size_t coord[] = { 32, 48, 66 };
		return ec_coord_len(k->pkey) == coord[a - JWT_ES256];
	}
	if (a == JWT_EDDSA)
		return EVP_PKEY_is_a(k->pkey, "ED25519") || EVP_PKEY_is_a(k->pkey, "ED448");
	return false;
}

/* ---- verification ---- */

bool jwt_verify_sig(enum jwt_alg alg, const struct jwt_key *k, const uint8_t *input, size_t ilen,
		    const uint8_t *sig, size_t slen)
{
	if (!jwt_key_fits(k, alg))
		return false;
	const EVP_MD *md = alg_md(alg);
	if (alg_is_hmac(alg)) {
		unsigned char mac[EVP_MAX_MD_SIZE];
		unsigned int maclen = 0;
		if (k->secret_len > INT32_MAX ||
		    !HMAC(md, k->secret_len ? k->secret : (const uint8_t *)"", (int)k->secret_len, input, ilen, mac,
			  &maclen))
			return false;
		bool ok = slen == maclen && CRYPTO_memcmp(mac, sig, maclen) == 0;
		OPENSSL_cleanse(mac, sizeof mac);
		return ok;
	}
	uint8_t *der = NULL;
	size_t der_len = 0;
	if (alg_is_ec(alg)) {
		if (!jwt_ecdsa_jose_to_der(sig, slen, ec_coord_len(k->pkey), &der, &der_len))
			return false;
		sig = der;
		slen = der_len;
	}
	bool ok = false;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	if (!ctx || EVP_DigestVerifyInit(ctx, &pctx, md, NULL, k->pkey) != 1)
		goto out;
	if (alg_is_rsa(alg) && EVP_PKEY_is_a(k->pkey, "RSA")) {
		if (alg_is_pss(alg)) {
			if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
			    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) <= 0 ||
			    EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) <= 0)
				goto out;
		} else if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0) {
			goto out;
		}
	}
	ok = EVP_DigestVerify(ctx, sig, slen, input, ilen) == 1;
out:
	EVP_MD_CTX_free(ctx);
	free(der);
	return ok;
}

enum jwt_vres jwt_verify(const struct jwt *t, const struct jwt_key *keys, size_t n, unsigned allowed, bool use_kid)
{
	if (t->alg == JWT_ALG_UNKNOWN || t->alg == JWT_ALG_NONE || !(allowed & JWT_ALG_BIT(t->alg)))
		return JWT_V_ALG_REFUSED;
	bool tried = false;
	for (size_t i = 0; i < n; i++) {
		const struct jwt_key *k = &keys[i];
		if (use_kid && t->kid && (!k->kid || strcmp(k->kid, t->kid) != 0))
			continue;
		if (!jwt_key_fits(k, t->alg))
			continue;
		tried = true;
		if (jwt_verify_sig(t->alg, k, (const uint8_t *)t->signing_input, t->signing_len, t->sig.data, t->sig.len))
			return JWT_V_OK;
	}
	return tried ? JWT_V_BAD_SIG : JWT_V_NO_KEY;
}

/* ---- claims ---- */

bool jwt_claim_number(const json_t *v, double *out)
{
	if (json_is_integer(v)) {
		*out = (double)json_integer_value(v);
		return true;
	}
	if (json_is_real(v)) {
		*out = json_real_value(v);
		return isfinite(*out);
	}
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		char *end = NULL;
		if (!*s || !((*s >= '0' && *s <= '9') || *s == '-' || *s == '+'))
			return false;
		errno = 0;
		double d = strtod(s, &end);
		if (end == s || *end || errno || !isfinite(d))
			return false;
		*out = d;
		return true;
	}
	return false;
}

enum jwt_tres jwt_check_time(const json_t *claims, int64_t now, int64_t *exp_out)
{
	*exp_out = 0;
	const json_t *exp = json_object_get(claims, "exp");
	const json_t *nbf = json_object_get(claims, "nbf");
	double d;
	if (exp) {
		if (!jwt_claim_number(exp, &d))
			return JWT_T_BAD;
		if (!(d > (double)now))
			return JWT_T_EXPIRED;
		*exp_out = d >= 9.2e18 ? INT64_MAX : (int64_t)d;
		if (*exp_out <= now) /* 1700000000.5 with now 1700000000: expires within the second */
			*exp_out = now + 1;
	}
	if (nbf) {
		if (!jwt_claim_number(nbf, &d))
			return JWT_T_BAD;
		if (!(d <= (double)now))
			return JWT_T_NOT_YET;
	}
	return JWT_T_OK;
}

static bool value_equals(const json_t *v, const char *expected, size_t elen)
{
	if (json_is_string(v))
		return json_string_length(v) == elen && memcmp(json_string_value(v), expected, elen) == 0;
	if (json_is_integer(v)) {
		char tmp[32];
		int n = snprintf(tmp, sizeof tmp, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return n > 0 && (size_t)n == elen && memcmp(tmp, expected, elen) == 0;
	}
	if (json_is_boolean(v)) {
		const char *s = json_is_true(v) ? "true" : "false";
		return strlen(s) == elen && memcmp(s, expected, elen) == 0;
	}
	return false;
}

bool jwt_claim_matches(const json_t *claims, const char *name, const char *expected, size_t elen)
{
	const json_t *v = json_object_get(claims, name);
	if (!v)
		return false;
	if (strcmp(name, "aud") == 0) {
		if (!elen)
			return false;
		if (json_is_array(v)) {
			size_t i;
			const json_t *it;
			json_array_foreach(v, i, it) if (json_is_string(it) && value_equals(it, expected, elen)) return true;
			return false;
		}
		return json_is_string(v) && value_equals(v, expected, elen);
	}
	return value_equals(v, expected, elen);
}

bool jwt_json_truthy(const json_t *v)
{
	if (json_is_true(v))
		return true;
	if (json_is_integer(v))
		return json_integer_value(v) >= 1;
	if (json_is_string(v))
		return strcmp(json_string_value(v), "true") == 0 || strcmp(json_string_value(v), "1") == 0;
	return false;
}

bool jwt_acl_valid(const json_t *v)
{
	if (json_is_array(v)) {
		size_t i;
		const json_t *it;
		json_array_foreach(v, i, it) if (!json_is_object(it)) return false;
		return true;
	}
	if (json_is_object(v)) {
		const char *k;
		const json_t *it;
		json_object_foreach((json_t *)v, k, it) {
			if (strcmp(k, "pub") != 0 && strcmp(k, "sub") != 0 && strcmp(k, "all") != 0)
				return false;
			if (!json_is_array(it))
				return false;
		}
		return true;
	}
	return false;
}

char *jwt_client_attrs(const json_t *v, size_t *dropped)
{
	*dropped = 0;
	if (!json_is_object(v))
		return NULL;
	json_t *o = json_object();
	const char *k;
	json_t *it;
	json_object_foreach((json_t *)v, k, it) {
		if (json_is_string(it) && *k)
			json_object_set(o, k, it);
		else
			(*dropped)++;
	}
	char *s = json_object_size(o) ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(o);
	if (!s)
		return NULL;
	char *r = xstrdup(s);
	free(s);
	return r;
}
