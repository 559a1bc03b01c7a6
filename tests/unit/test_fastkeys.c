/* node.tls_fast_keys (src/tls/fastkeys.c): every key operation the broker relies on works the
 * same before and after the engine is installed — certificates decoded from DER verify and
 * their keys check signatures (RSA PKCS#1, RSA-PSS, ECDSA), EC keys report their curve, and
 * tls_provider_pkey_ctx() still generates keys and builds them from parameters. Each test runs
 * twice: on the providers, then with the engine installed. */
#define OPENSSL_SUPPRESS_DEPRECATED /* ENGINE_get_pkey_meth_engine, to see the engine is in place */

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/engine.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "tls/fastkeys.h"
#include "testkeys.h"
#include "unit.h"

/* DER of a self-signed certificate for k. Made before the engine is installed: with it,
 * ASN1_item_sign cannot use a provider-decoded private key (fastkeys.c). */
static int self_signed_der(EVP_PKEY *k, unsigned char **der)
{
	X509 *x = X509_new();
	X509_NAME *n = x ? X509_get_subject_name(x) : NULL;
	int len = -1;
	if (x && n && X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"fastkeys", -1, -1, 0) &&
	    X509_set_version(x, X509_VERSION_3) && ASN1_INTEGER_set(X509_get_serialNumber(x), 7) &&
	    X509_set_issuer_name(x, n) && X509_gmtime_adj(X509_getm_notBefore(x), 0) &&
	    X509_gmtime_adj(X509_getm_notAfter(x), 3600) && X509_set_pubkey(x, k) && X509_sign(x, k, EVP_sha256()) > 0)
		len = i2d_X509(x, der);
	X509_free(x);
	return len;
}

static EVP_PKEY *rsa_key, *ec_key;
static unsigned char *rsa_der, *ec_der;
static int rsa_der_len, ec_der_len;

/* The certificate decoded the way a TLS peer's arrives. */
static X509 *decode(const unsigned char *der, int len)
{
	const unsigned char *p = der;
	return len > 0 ? d2i_X509(NULL, &p, len) : NULL;
}

/* Signs with the private key and verifies with pub; pss selects RSA-PSS padding. */
static bool sign_verify(EVP_PKEY *priv, EVP_PKEY *pub, bool pss)
{
	static const unsigned char msg[] = "CertificateVerify stand-in";
	unsigned char sig[512];
	size_t siglen = sizeof sig;
	EVP_MD_CTX *s = EVP_MD_CTX_new(), *v = EVP_MD_CTX_new();
	EVP_PKEY_CTX *sp = NULL, *vp = NULL;
	bool ok = s && v && EVP_DigestSignInit(s, &sp, EVP_sha256(), NULL, priv) == 1 &&
		  (!pss || EVP_PKEY_CTX_set_rsa_padding(sp, RSA_PKCS1_PSS_PADDING) > 0) &&
		  EVP_DigestSign(s, sig, &siglen, msg, sizeof msg) == 1 &&
		  EVP_DigestVerifyInit(v, &vp, EVP_sha256(), NULL, pub) == 1 &&
		  (!pss || EVP_PKEY_CTX_set_rsa_padding(vp, RSA_PKCS1_PSS_PADDING) > 0) &&
		  EVP_DigestVerify(v, sig, siglen, msg, sizeof msg) == 1;
	if (ok) { /* and a damaged signature fails */
		sig[siglen / 2] ^= 1;
		ok = EVP_DigestVerifyInit(v, &vp, EVP_sha256(), NULL, pub) == 1 &&
		     (!pss || EVP_PKEY_CTX_set_rsa_padding(vp, RSA_PKCS1_PSS_PADDING) > 0) &&
		     EVP_DigestVerify(v, sig, siglen, msg, sizeof msg) == 0;
	}
	EVP_MD_CTX_free(s);
	EVP_MD_CTX_free(v);
	return ok;
}

/* Decodes the certificate, checks its self-signature with the decoded key and with the
 * signer's own key object, and its key type; the decoded key (owned by *x), or NULL. */
static EVP_PKEY *decoded_key(const unsigned char *der, int len, EVP_PKEY *signer, const char *type, X509 **x)
{
	*x = decode(der, len);
	EVP_PKEY *pub = *x ? X509_get0_pubkey(*x) : NULL;
	CHECK(pub != NULL);
	if (!pub)
		return NULL;
	CHECK(X509_verify(*x, pub) == 1);
	CHECK(X509_verify(*x, signer) == 1); /* with the provider's key object too */
	CHECK(EVP_PKEY_is_a(pub, type));
	CHECK(sign_verify(signer, pub, false));
	return pub;
}

TEST(decoded_rsa_certificate_verifies_and_checks_signatures)
{
	X509 *x;
	EVP_PKEY *pub = decoded_key(rsa_der, rsa_der_len, rsa_key, "RSA", &x);
	if (pub) {
		CHECK_EQ_INT(EVP_PKEY_get_bits(pub), 2048);
		CHECK(sign_verify(rsa_key, pub, true));
		CHECK(!sign_verify(ec_key, pub, false)); /* another key's signature does not verify */
	}
	X509_free(x);
}

TEST(decoded_ec_certificate_verifies_and_names_its_curve)
{
	X509 *x;
	EVP_PKEY *pub = decoded_key(ec_der, ec_der_len, ec_key, "EC", &x);
	if (pub) {
		char group[64] = "";
		size_t gl = 0;
		CHECK(EVP_PKEY_get_utf8_string_param(pub, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &gl) == 1);
		CHECK(strcmp(group, "prime256v1") == 0);
	}
	X509_free(x);
}

TEST(rsa_key_from_parameters_verifies)
{
	BIGNUM *n = NULL, *e = NULL;
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY *pub = NULL;
	CHECK(EVP_PKEY_get_bn_param(rsa_key, OSSL_PKEY_PARAM_RSA_N, &n) == 1);
	CHECK(EVP_PKEY_get_bn_param(rsa_key, OSSL_PKEY_PARAM_RSA_E, &e) == 1);
	CHECK(bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
	      OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) && (params = OSSL_PARAM_BLD_to_param(bld)));
	EVP_PKEY_CTX *ctx = tls_provider_pkey_ctx("RSA");
	CHECK(ctx && EVP_PKEY_fromdata_init(ctx) == 1 && EVP_PKEY_fromdata(ctx, &pub, EVP_PKEY_PUBLIC_KEY, params) == 1);
	CHECK(pub && sign_verify(rsa_key, pub, false));
	EVP_PKEY_free(pub);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	BN_free(e);
}

TEST(fresh_keys_sign)
{
	EVP_PKEY *k = test_keygen("EC", "P-256");
	CHECK(k && sign_verify(k, k, false));
	EVP_PKEY_free(k);
}

static void run_all(void)
{
	RUN(decoded_rsa_certificate_verifies_and_checks_signatures);
	RUN(decoded_ec_certificate_verifies_and_names_its_curve);
	RUN(rsa_key_from_parameters_verifies);
	RUN(fresh_keys_sign);
}

int main(void)
{
	rsa_key = test_keygen("RSA", NULL);
	ec_key = test_keygen("EC", "P-256");
	rsa_der_len = rsa_key ? self_signed_der(rsa_key, &rsa_der) : -1;
	ec_der_len = ec_key ? self_signed_der(ec_key, &ec_der) : -1;
	CHECK(rsa_der_len > 0 && ec_der_len > 0);
	if (rsa_der_len <= 0 || ec_der_len <= 0)
		return unit_summary();

	CHECK(ENGINE_get_pkey_meth_engine(NID_rsaEncryption) == NULL);
	run_all(); /* providers only */

	char msg[256];
	CHECK_EQ_INT(tls_fast_keys_install(msg, sizeof msg), TLS_FAST_KEYS_ON);
	CHECK(strstr(msg, "built-in methods") != NULL);
	CHECK_EQ_INT(tls_fast_keys_install(msg, sizeof msg), TLS_FAST_KEYS_ON); /* once is enough */
	ENGINE *e = ENGINE_get_pkey_meth_engine(NID_rsaEncryption);
	CHECK(e != NULL);
	ENGINE_finish(e);
	e = ENGINE_get_pkey_meth_engine(NID_X9_62_id_ecPublicKey);
	CHECK(e != NULL);
	ENGINE_finish(e);
	e = ENGINE_get_pkey_meth_engine(NID_ED25519);
	CHECK(e == NULL); /* everything else stays on providers */
	run_all(); /* with the engine */

	OPENSSL_free(rsa_der);
	OPENSSL_free(ec_der);
	EVP_PKEY_free(rsa_key);
	EVP_PKEY_free(ec_key);
	return unit_summary();
}
