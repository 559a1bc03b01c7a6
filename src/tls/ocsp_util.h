/* OCSP and CRL helpers shared by revocation checking of client certificates (revoke.c)
 * and stapling of the listener's own certificate (ocsp.c). Pure functions over OpenSSL
 * objects: no state, no network, safe from any thread.
 */
#ifndef BW_OCSP_UTIL_H
#define BW_OCSP_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ocsp.h>
#include <openssl/x509.h>

/* What a verified OCSP response says about one certificate. */
struct ocsp_answer {
	int status;          /* V_OCSP_CERTSTATUS_GOOD / _REVOKED / _UNKNOWN */
	int reason;          /* revocation reason (OCSP_REVOKED_STATUS_*), -1 when none */
	int64_t this_update; /* Unix seconds */
	int64_t next_update; /* Unix seconds, 0 when the responder gave none */
};

/* Unix seconds of an ASN1_TIME, 0 when t is NULL or unparsable. */
int64_t ocsp_util_time(const ASN1_TIME *t);

/* Build an OCSP request for the certificate with serial issued by issuer (SHA-1 CertID,
 * optional nonce). On
 * success *der / *len hold a malloc'd DER encoding; *req_out (if not NULL) gets the request
 * (caller frees with OCSP_REQUEST_free) for the nonce check; *id_out a copy of the CertID
 * (caller frees with OCSP_CERTID_free). */
bool ocsp_util_build_request(const ASN1_INTEGER *serial, X509 *issuer, bool nonce, uint8_t **der, size_t *len, OCSP_REQUEST **req_out,
			     OCSP_CERTID **id_out, char *err, size_t errlen);

/* Parse and verify a DER OCSPResponse for id: status successful, a basic response signed
 * by issuer itself or by a responder certificate that issuer delegated (id-kp-OCSPSigning),
 * verified up to store (may be NULL: then only issuer and certificates it signed
 * directly are accepted); untrusted (may be NULL) helps building the responder's chain; the
 * nonce matches req's when both carry one (req may be NULL); thisUpdate/nextUpdate valid now
 * (5 minutes of clock skew). Fills *ans; false with err otherwise. */
bool ocsp_util_check_response(const uint8_t *der, size_t len, OCSP_CERTID *id, X509 *issuer,
			      STACK_OF(X509) *untrusted, X509_STORE *store, OCSP_REQUEST *req, struct ocsp_answer *ans,
			      char *err, size_t errlen);

/* Parse CRLs from a buffer: PEM (one or more "X509 CRL" blocks) or DER. Returns a stack
 * (possibly empty) the caller frees with sk_X509_CRL_pop_free(.., X509_CRL_free), or NULL
 * with err when nothing could be parsed. */
STACK_OF(X509_CRL) *ocsp_util_parse_crls(const uint8_t *data, size_t len, char *err, size_t errlen);

/* Write a one-line RFC 2253 form of name (control characters escaped) into out. */
void ocsp_util_name(const X509_NAME *name, char *out, size_t outlen);

/* The last OpenSSL error as text ("unknown" when the queue is empty); clears the queue. */
const char *ocsp_util_ssl_error(char *buf, size_t len);

#endif
