/* OCSP request building, response verification and CRL parsing (see ocsp_util.h). */
#include "tls/ocsp_util.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "core/alloc.h"

int64_t ocsp_util_time(const ASN1_TIME *t)
{
	struct tm tm;
	if (!t || !ASN1_TIME_to_tm(t, &tm))
		return 0;
	return (int64_t)timegm(&tm);
}

const char *ocsp_util_ssl_error(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();
	if (!e)
		snprintf(buf, len, "unknown");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

void ocsp_util_name(const X509_NAME *name, char *out, size_t outlen)
{
	if (!outlen)
		return;
	out[0] = 0;
	BIO *b = BIO_new(BIO_s_mem());
	if (!b)
		return;
	if (X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
		char *p;
		long n = BIO_get_mem_data(b, &p);
		size_t j = 0;
		for (long i = 0; i < n && j + 1 < outlen; i++) {
			unsigned char c = (unsigned char)p[i];
			if (c < 0x20 || c == 0x7f) {
				if (j + 5 >= outlen)
					break;
				j += (size_t)snprintf(out + j, outlen - j, "\\x%02x", c);
			} else {
				out[j++] = (char)c;
			}
		}
		out[j] = 0;
	}
	BIO_free(b);
}

bool ocsp_util_build_request(const ASN1_INTEGER *serial, X509 *issuer, bool nonce, uint8_t **der, size_t *len, OCSP_REQUEST **req_out,
			     OCSP_CERTID **id_out, char *err, size_t errlen)
{
	char ebuf[256];
	bool ok = false;
	OCSP_REQUEST *req = NULL;
	OCSP_CERTID *id = OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(issuer), X509_get0_pubkey_bitstr(issuer),
					   serial);
	if (!id) {
		snprintf(err, errlen, "cannot build the CertID: %s", ocsp_util_ssl_error(ebuf, sizeof ebuf));
		goto out;
	}
	req = OCSP_REQUEST_new();
	OCSP_CERTID *id2 = OCSP_CERTID_dup(id);
	if (!req || !id2 || !OCSP_request_add0_id(req, id2)) {
		OCSP_CERTID_free(id2);
		snprintf(err, errlen, "cannot build the request: %s", ocsp_util_ssl_error(ebuf, sizeof ebuf));
		goto out;
	}
	if (nonce && !OCSP_request_add1_nonce(req, NULL, -1)) {
		snprintf(err, errlen, "cannot add a nonce: %s", ocsp_util_ssl_error(ebuf, sizeof ebuf));
		goto out;
	}
	unsigned char *buf = NULL;
	int n = i2d_OCSP_REQUEST(req, &buf);
	if (n <= 0) {
		snprintf(err, errlen, "cannot encode the request: %s", ocsp_util_ssl_error(ebuf, sizeof ebuf));
		goto out;
	}
	*der = xmemdup(buf, (size_t)n);
	*len = (size_t)n;
	OPENSSL_free(buf);
	ok = true;
out:
	if (ok && req_out) {
		*req_out = req;
		req = NULL;
	}
	if (ok && id_out) {
		*id_out = id;
		id = NULL;
	}
	OCSP_REQUEST_free(req);
	OCSP_CERTID_free(id);
	return ok;
}

/* A response signed by issuer itself: the signer must be issuer (no certificate from the
 * response is looked at), and only its signature is checked. */
static bool verify_by_issuer(OCSP_BASICRESP *bs, X509 *issuer)
{
	STACK_OF(X509) *s = sk_X509_new_null();
	if (!s)
		return false;
	sk_X509_push(s, issuer);
	int r = OCSP_basic_verify(bs, s, NULL, OCSP_TRUSTOTHER | OCSP_NOINTERN);
	sk_X509_free(s);
	return r > 0;
}

/* A response signed by a delegated responder: its certificate must chain to store and be
 * issued by the CertID's issuer with id-kp-OCSPSigning (OpenSSL's ocsp_check_issuer). */
static bool verify_delegated(OCSP_BASICRESP *bs, X509 *issuer, STACK_OF(X509) *untrusted, X509_STORE *store)
{
	bool ok = false;
	X509_STORE *tmp = NULL;
	STACK_OF(X509) *u = untrusted ? sk_X509_dup(untrusted) : sk_X509_new_null();
	if (!u)
		return false;
	sk_X509_push(u, issuer);
	if (!store) {
		tmp = X509_STORE_new();
		if (!tmp || !X509_STORE_add_cert(tmp, issuer))
			goto out;
		store = tmp;
	}
	ok = OCSP_basic_verify(bs, u, store, OCSP_PARTIAL_CHAIN) > 0;
out:
	X509_STORE_free(tmp);
	sk_X509_free(u);
	return ok;
}

bool ocsp_util_check_response(const uint8_t *der, size_t len, OCSP_CERTID *id, X509 *issuer,
			      STACK_OF(X509) *untrusted, X509_STORE *store, OCSP_REQUEST *req, struct ocsp_answer *ans,
			      char *err, size_t errlen)
{
	char ebuf[256];
	bool ok = false;
	OCSP_BASICRESP *bs = NULL;
	const unsigned char *p = der;
	if (len > (size_t)INT32_MAX) {
		snprintf(err, errlen, "response too large");
		return false;
	}
	OCSP_RESPONSE *resp = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
	if (!resp) {
		snprintf(err, errlen, "not an OCSP response: %s", ocsp_util_ssl_error(ebuf, sizeof ebuf));
		goto out;
	}
	int rs = OCSP_response_status(resp);
	if (rs != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
		snprintf(err, errlen, "responder says %s (%d)", OCSP_response_status_str(rs), rs);
		goto out;
	}
	bs = OCSP_response_get1_basic(resp);
	if (!bs) {
		snprintf(err, errlen, "no basic response: %s", ocsp_util_ssl_error(ebuf, sizeof ebuf));
		goto out;
	}
	if (req && OCSP_check_nonce(req, bs) == 0) {
		snprintf(err, errlen, "nonce mismatch");
		goto out;
	}
	if (!verify_by_issuer(bs, issuer)) {
		ERR_clear_error();
		if (!verify_delegated(bs, issuer, untrusted, store)) {
			snprintf(err, errlen, "signature does not verify: %s", ocsp_util_ssl_error(ebuf, sizeof ebuf));
			goto out;
		}
	}
	int status, reason = -1;
	ASN1_GENERALIZEDTIME *rev = NULL, *thisupd = NULL, *nextupd = NULL;
	if (!OCSP_resp_find_status(bs, id, &status, &reason, &rev, &thisupd, &nextupd)) {
		snprintf(err, errlen, "response does not cover the certificate");
		goto out;
	}
	if (!OCSP_check_validity(thisupd, nextupd, 300, -1)) {
		snprintf(err, errlen, "response is outside its validity period: %s",
			 ocsp_util_ssl_error(ebuf, sizeof ebuf));
		goto out;
	}
	ans->status = status;
	ans->reason = reason;
	ans->this_update = ocsp_util_time(thisupd);
	ans->next_update = ocsp_util_time(nextupd);
	ok = true;
out:
	ERR_clear_error();
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(resp);
	return ok;
}

STACK_OF(X509_CRL) *ocsp_util_parse_crls(const uint8_t *data, size_t len, char *err, size_t errlen)
{
	char ebuf[256];
	if (len > (size_t)INT32_MAX) {
		snprintf(err, errlen, "too large");
		return NULL;
	}
	STACK_OF(X509_CRL) *out = sk_X509_CRL_new_null();
	if (!out) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	static const char marker[] = "-----BEGIN X509 CRL-----";
	if (memmem(data, len, marker, sizeof marker - 1)) {
		BIO *b = BIO_new_mem_buf(data, (int)len);
		X509_CRL *c;
		while (b && (c = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL)))
			sk_X509_CRL_push(out, c);
		BIO_free(b);
		ERR_clear_error(); /* the end of the data reads as an error */
		if (sk_X509_CRL_num(out) == 0) {
			snprintf(err, errlen, "no readable CRL in the PEM data");
			goto fail;
		}
		return out;
	}
	const unsigned char *p = data;
	X509_CRL *c = d2i_X509_CRL(NULL, &p, (long)len);
	if (!c) {
		snprintf(err, errlen, "neither a PEM nor a DER CRL: %s", ocsp_util_ssl_error(ebuf, sizeof ebuf));
		goto fail;
	}
	sk_X509_CRL_push(out, c);
	return out;
fail:
	sk_X509_CRL_pop_free(out, X509_CRL_free);
	return NULL;
}
