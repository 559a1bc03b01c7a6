/* fastkeys.c — RSA and EC keys on OpenSSL's built-in methods instead of the 3.0 provider path.
 *
 * OpenSSL 3.0 decodes the public key of every certificate it parses through the provider
 * decoders: OSSL_DECODER_CTX_new_for_pkey assembles a fresh chain out of every decoder of
 * every loaded provider, name lookups under a global read lock each time. That is ~20 % of a
 * full mTLS handshake on this broker (the client's certificate, once per handshake; measured
 * in docs/BENCHMARKS.md). OpenSSL 3.2 caches the chain; Debian 12 ships 3.0.
 *
 * 3.0 keeps one documented way around it: when an ENGINE is registered for a key type's
 * method table, x509_pubkey_decode() decodes keys of that type with the built-in decoder
 * (d2i_RSAPublicKey, o2i_ECPublicKey), and EVP_PKEY_CTXs for that type run on the built-in
 * method table. Those are the same RSA and EC implementations the default provider wraps
 * (constant-time, blinded); what goes is the provider dispatch, fetches and parameter
 * marshalling. The engine registered here has no code of its own: its method table for
 * rsaEncryption and id-ecPublicKey is OpenSSL's (EVP_PKEY_meth_find). Every other algorithm
 * (X25519, Ed25519, RSA-PSS keys, ciphers, digests, KDFs, random) stays on providers.
 *
 * Not with FIPS: the built-in methods are outside the FIPS module, so nothing is installed
 * when FIPS properties are the default. node.tls_fast_keys = false keeps every key on the
 * providers.
 *
 * What changes for the rest of the program once the engine is installed:
 * - EVP_PKEY_CTX_new_from_name("RSA" or "EC") returns a built-in-method context, which can
 *   sign, verify and check but cannot EVP_PKEY_fromdata or generate from parameters.
 *   tls_provider_pkey_ctx() names the type by its OID instead, which maps to no built-in type
 *   and so always reaches the provider.
 * - Certificate signing (ASN1_item_sign: X509_sign, X509_sign_ctx) fails with a private key
 *   the providers decoded or generated. The broker signs certificates only for its
 *   development CA, before installing (broker_main).
 * Signing and verifying with EVP_DigestSign/EVP_DigestVerify, and X509_verify, work with
 * either kind of key (certificates decoded before the install keep provider keys);
 * tests/unit/test_fastkeys.c runs every key operation the broker uses in both modes.
 */
#define OPENSSL_SUPPRESS_DEPRECATED /* ENGINE and EVP_PKEY_meth_find: deprecated in 3.0, kept */

#include "tls/fastkeys.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>

static const int fast_nids[] = { NID_rsaEncryption, NID_X9_62_id_ecPublicKey };

/* ENGINE_PKEY_METHS_PTR: the nid list when pmeth is NULL, else OpenSSL's own method table.
 * The built-in tables are static (no EVP_PKEY_FLAG_DYNAMIC), so the engine's cleanup, which
 * EVP_PKEY_meth_free()s what this returns, leaves them alone. */
static int builtin_pkey_meths(ENGINE *e, EVP_PKEY_METHOD **pmeth, const int **nids, int nid)
{
	(void)e;
	if (!pmeth) {
		*nids = fast_nids;
		return (int)(sizeof fast_nids / sizeof fast_nids[0]);
	}
	*pmeth = NULL;
	for (size_t i = 0; i < sizeof fast_nids / sizeof fast_nids[0]; i++)
		if (fast_nids[i] == nid)
			*pmeth = (EVP_PKEY_METHOD *)EVP_PKEY_meth_find(nid);
	return *pmeth != NULL;
}

static void openssl_error(char *msg, size_t msglen, const char *what)
{
	unsigned long e = ERR_get_error();
	char reason[256] = "no detail";
	if (e)
		ERR_error_string_n(e, reason, sizeof reason);
	ERR_clear_error();
	snprintf(msg, msglen, "node.tls_fast_keys: %s failed (%s); keys stay on the OpenSSL providers", what,
		 reason);
}

/* Registers the engine; false with the reason in msg. */
static bool register_engine(char *msg, size_t msglen)
{
	ENGINE *e = ENGINE_new();
	if (!e) {
		openssl_error(msg, msglen, "ENGINE_new");
		return false;
	}
	/* ENGINE_add: the engine list holds it (and frees it at OpenSSL's exit); our own
	 * reference goes at the end. */
	if (!ENGINE_set_id(e, "bulwark-fastkeys") || !ENGINE_set_name(e, "built-in RSA and EC key methods") ||
	    !ENGINE_set_pkey_meths(e, builtin_pkey_meths) || !ENGINE_add(e)) {
		openssl_error(msg, msglen, "ENGINE setup");
		ENGINE_free(e);
		return false;
	}
	bool ok = ENGINE_register_pkey_meths(e);
	if (!ok) {
		openssl_error(msg, msglen, "ENGINE_register_pkey_meths");
		ENGINE_remove(e);
	}
	ENGINE_free(e);
	return ok;
}

enum tls_fast_keys tls_fast_keys_install(char *msg, size_t msglen)
{
	static bool installed;
	const char *version = OpenSSL_version(OPENSSL_VERSION);
	if (!installed) {
		if (EVP_default_properties_is_fips_enabled(NULL)) {
			snprintf(msg, msglen, "node.tls_fast_keys has no effect: FIPS properties are the default, keys "
					      "stay on the FIPS provider");
			return TLS_FAST_KEYS_FIPS;
		}
		if (OpenSSL_version_num() >= 0x30200000L) {
			snprintf(msg, msglen, "node.tls_fast_keys not needed: %s caches its key decoders", version);
			return TLS_FAST_KEYS_UNNEEDED;
		}
		if (!register_engine(msg, msglen))
			return TLS_FAST_KEYS_FAILED;
		installed = true;
	}
	snprintf(msg, msglen, "RSA and EC keys on OpenSSL's built-in methods (node.tls_fast_keys, %s)", version);
	return TLS_FAST_KEYS_ON;
}

EVP_PKEY_CTX *tls_provider_pkey_ctx(const char *type)
{
	/* The provider knows these key types by their OIDs too (PROV_NAMES_RSA, PROV_NAMES_EC);
	 * evp_pkey_name2type() does not, so EVP_PKEY_CTX_new_from_name skips the engine lookup. */
	if (strcmp(type, "RSA") == 0)
		type = "1.2.840.113549.1.1.1";
	else if (strcmp(type, "EC") == 0)
		type = "1.2.840.10045.2.1";
	return EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
}
