/* JSON Web Tokens (RFC 7519, JWS compact form RFC 7515, algorithms RFC 7518/8037): the pure
 * part of the JWT authenticator (auth/authn_jwt.c), with no broker state, so it can be unit
 * tested on its own.
 *
 *   - base64url (and plain base64 for `secret_base64_encoded`);
 *   - parsing a compact token into header, claims and signature;
 *   - signature checks for HS256/384/512, RS256/384/512, PS256/384/512, ES256/384/512
 *     (JOSE r||s signatures converted to DER for OpenSSL) and EdDSA (Ed25519, Ed448);
 *     `alg: none` never verifies; a key only verifies the algorithms of its type (an RSA
 *     key never checks an HMAC token: no algorithm confusion);
 *   - keys from PEM (SubjectPublicKeyInfo, PKCS#1 RSA, or a certificate) and from a JWKS
 *     document (RSA n/e, EC P-256/384/521 x/y, OKP Ed25519/Ed448 x);
 *   - claim checks: exp/nbf (numbers or numeric strings, no leeway), required claims
 *     (`aud` string or array), and the result fields shared with the HTTP authenticator
 *     (is_superuser truthiness, client_attrs, the ACL shapes).
 *
 * Thread-safety: every function is reentrant; keys are immutable once built.
 */
#ifndef BW_JWT_H
#define BW_JWT_H

#include <jansson.h>
#include <openssl/types.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum jwt_alg {
	JWT_ALG_UNKNOWN = 0, /* unknown name (or, for a key, "any algorithm its type allows") */
	JWT_HS256,
	JWT_HS384,
	JWT_HS512,
	JWT_RS256,
	JWT_RS384,
	JWT_RS512,
	JWT_PS256,
	JWT_PS384,
	JWT_PS512,
	JWT_ES256,
	JWT_ES384,
	JWT_ES512,
	JWT_EDDSA,
	JWT_ALG_NONE, /* "none": recognised only to be refused */
};

#define JWT_ALG_BIT(a) (1u << (a))
/* The allowlists of the authenticator's variants. */
#define JWT_ALGS_HMAC (JWT_ALG_BIT(JWT_HS256) | JWT_ALG_BIT(JWT_HS384) | JWT_ALG_BIT(JWT_HS512))
#define JWT_ALGS_ASYM                                                                                         \
	(JWT_ALG_BIT(JWT_RS256) | JWT_ALG_BIT(JWT_RS384) | JWT_ALG_BIT(JWT_RS512) | JWT_ALG_BIT(JWT_PS256) |  \
	 JWT_ALG_BIT(JWT_PS384) | JWT_ALG_BIT(JWT_PS512) | JWT_ALG_BIT(JWT_ES256) | JWT_ALG_BIT(JWT_ES384) | \
	 JWT_ALG_BIT(JWT_ES512) | JWT_ALG_BIT(JWT_EDDSA))

/* "HS256" ... "EdDSA", "none"; JWT_ALG_UNKNOWN for anything else (names are case-sensitive). */
enum jwt_alg jwt_alg_from_name(const char *name);
/* The JOSE name of an algorithm ("?" for JWT_ALG_UNKNOWN). */
const char *jwt_alg_name(enum jwt_alg a);

/* ---- encodings ---- */

/* Append the base64url decoding of in[0..len) to out: alphabet A-Z a-z 0-9 - _, no padding
 * (RFC 7515 §2). False (out unchanged in length) on any other byte or an impossible length. */
bool jwt_b64url_decode(const char *in, size_t len, struct buf *out);
/* Append the unpadded base64url encoding of in[0..len) to out. */
void jwt_b64url_encode(const uint8_t *in, size_t len, struct buf *out);
/* Append the decoding of standard base64 (RFC 4648 §4, '=' padding optional; the URL-safe
 * alphabet is accepted too). False on anything else. */
bool jwt_b64_decode(const char *in, size_t len, struct buf *out);
/* JOSE ECDSA signature (r||s, each coord_len bytes, big-endian) to DER ECDSA-Sig-Value.
 * *der is malloc'd. False when len != 2 * coord_len. */
bool jwt_ecdsa_jose_to_der(const uint8_t *sig, size_t len, size_t coord_len, uint8_t **der, size_t *der_len);

/* ---- tokens ---- */

struct jwt {
	json_t *header;          /* the JOSE header object */
	json_t *claims;          /* the claims set object */
	enum jwt_alg alg;        /* from the header (JWT_ALG_UNKNOWN when unrecognised) */
	const char *kid;         /* header "kid" (points into header), NULL when absent */
	char *signing_input;     /* "<b64 header>.<b64 payload>" (copied) */
	size_t signing_len;
	struct buf sig;          /* the decoded signature */
};

/* Parse a compact JWS token (three base64url parts). The header must be a JSON object with
 * a string "alg" and no "crit"; the payload a JSON object (duplicate keys refused, as
 * ambiguous). False with err filled (no token contents in it); jwt_free is safe either way. */
bool jwt_parse(const char *tok, size_t len, struct jwt *out, char *err, size_t errlen);
void jwt_free(struct jwt *t);

/* ---- keys ---- */

struct jwt_key {
	char *kid;               /* NULL when none */
	enum jwt_alg alg;        /* JWK "alg": the only algorithm the key verifies; JWT_ALG_UNKNOWN = any of its type */
	EVP_PKEY *pkey;          /* public key (RSA, EC, Ed25519/Ed448), or NULL for an HMAC secret */
	uint8_t *secret;         /* HMAC secret */
	size_t secret_len;
};

/* An HMAC key (copies secret). */
void jwt_key_hmac(struct jwt_key *k, const uint8_t *secret, size_t len);
/* A public key from PEM text: "PUBLIC KEY", "RSA PUBLIC KEY" or "CERTIFICATE" (its key). RSA
 * keys must have at least 2048 bits, EC keys be P-256, P-384 or P-521. False + err. */
bool jwt_key_from_pem(const char *pem, size_t len, struct jwt_key *k, char *err, size_t errlen);
/* Parse a JWKS document {"keys": [...]} into *keys (malloc'd array of *n). Keys that are not
 * for signatures ("use" other than "sig"), of an unsupported type or curve, or malformed
 * are skipped and counted in *skipped (with the first reason in err). False + err when the
 * document itself is not a JWKS. Symmetric ("oct") keys are skipped: a JWKS variant accepts
 * asymmetric algorithms only. */
bool jwt_jwks_parse(const char *json, size_t len, struct jwt_key **keys, size_t *n, size_t *skipped, char *err,
		    size_t errlen);
void jwt_key_clear(struct jwt_key *k);
void jwt_keys_free(struct jwt_key *keys, size_t n);
/* True when key k may verify algorithm a (key type, curve and JWK "alg" match). */
bool jwt_key_fits(const struct jwt_key *k, enum jwt_alg a);

/* ---- verification ---- */

enum jwt_vres {
	JWT_V_OK,
	JWT_V_ALG_REFUSED,  /* "none", unknown, or not in the allowlist */
	JWT_V_NO_KEY,       /* the token names a kid no key has, or no key fits the algorithm */
	JWT_V_BAD_SIG,      /* a fitting key exists but the signature does not verify */
};

/* Check t's signature against keys[0..n): algorithms outside allowed (JWT_ALG_BIT mask) are
 * refused; when the token has a kid and use_kid is set, only keys with that kid are tried,
 * otherwise every key that fits the algorithm. */
enum jwt_vres jwt_verify(const struct jwt *t, const struct jwt_key *keys, size_t n, unsigned allowed, bool use_kid);
/* Verify one signature (no allowlist): true when key k fits alg and sig is valid over input. */
bool jwt_verify_sig(enum jwt_alg alg, const struct jwt_key *k, const uint8_t *input, size_t ilen,
		    const uint8_t *sig, size_t slen);

/* ---- claims ---- */

/* A numeric claim: a JSON number, or a string holding a decimal number. */
bool jwt_claim_number(const json_t *v, double *out);

enum jwt_tres { JWT_T_OK, JWT_T_EXPIRED, JWT_T_NOT_YET, JWT_T_BAD };
/* exp must be > now and nbf <= now, each only when present; iat is not checked; no leeway.
 * *exp_out receives exp in whole seconds (0 when absent). */
enum jwt_tres jwt_check_time(const json_t *claims, int64_t now, int64_t *exp_out);

/* Does claims[name] equal expected[0..elen)? "aud": a string must be equal, an array must
 * contain it, an empty expected value never matches. Other claims: a string equal byte for
 * byte, an integer whose decimal text is equal, or a boolean "true"/"false". */
bool jwt_claim_matches(const json_t *claims, const char *name, const char *expected, size_t elen);

/* is_superuser truthiness (EMQX): true, "true", 1, "1" and integers >= 1 are true. */
bool jwt_json_truthy(const json_t *v);
/* The ACL shapes an authentication result may carry: an array of rule objects (v2), or an
 * object whose keys are only pub/sub/all with arrays as values (v1). */
bool jwt_acl_valid(const json_t *v);
/* A client_attrs object reduced to its string->string members, as compact JSON text
 * (malloc'd), or NULL when v is not an object or nothing is left. *dropped counts the
 * members that were not strings. */
char *jwt_client_attrs(const json_t *v, size_t *dropped);

#endif
