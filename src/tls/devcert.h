/* Development certificates: a local CA and a "localhost" server certificate it signs, so
 * the TLS listener works out of the box and clients can trust it with one file
 * (mosquitto_sub --cafile DIR/dev-ca.pem). Never meant for production.
 *
 * The four files live in one directory:
 *   DEVCERT_CA_CERT      dev-ca.pem          CA certificate: give this to clients
 *   DEVCERT_CA_KEY       dev-ca-key.pem      CA private key (0600)
 *   DEVCERT_SERVER_CERT  dev-server.pem      server certificate (CN and SAN localhost, 127.0.0.1, ::1)
 *   DEVCERT_SERVER_KEY   dev-server-key.pem  server private key (0600)
 * Keys are ECDSA P-256 in unencrypted PKCS#8 PEM; certificates are PEM, SHA-256 signed.
 *
 * Typical use:
 *   bool gen;
 *   if (!devcert_ensure(dir, &gen)) fail;
 *   char *cert = devcert_path(dir, DEVCERT_SERVER_CERT), *key = devcert_path(dir, DEVCERT_SERVER_KEY);
 *   ... load them into the SSL_CTX ...; free(cert); free(key);
 */
#ifndef BW_DEVCERT_H
#define BW_DEVCERT_H

#include <stdbool.h>

enum devcert_file {
	DEVCERT_CA_CERT,
	DEVCERT_CA_KEY,
	DEVCERT_SERVER_CERT,
	DEVCERT_SERVER_KEY,
};
#define DEVCERT_NFILES 4

/* File name (no directory) of one of the four files, e.g. "dev-ca.pem"; static storage. */
const char *devcert_file_name(enum devcert_file f);
/* "dir/<file name>", in a fresh allocation the caller frees. */
char *devcert_path(const char *dir, enum devcert_file f);

/* Ensure a development CA and a server certificate exist in dir (created 0700, with any
 * missing parents, if missing). Generated with OpenSSL's API: ECDSA P-256 keys;
 *   CA: CN "Bulwark Development CA", basicConstraints critical CA:TRUE, keyUsage critical
 *       keyCertSign+cRLSign, subjectKeyIdentifier, valid 10 years;
 *   server: CN "localhost", SAN DNS:localhost, IP:127.0.0.1 and IP:::1, extendedKeyUsage
 *       serverAuth, keyUsage critical digitalSignature, basicConstraints CA:FALSE,
 *       subject and authority key identifiers, valid 825 days;
 *   both: random 128-bit serial, notBefore one hour in the past (clock skew).
 * Each file is written to a temporary name (keys created 0600 by open(O_CREAT|O_EXCL),
 * certificates 0644, both minus the umask), fsync'd, renamed, and the directory fsync'd.
 *
 * Existing files are kept; only what is missing or unusable is made:
 *   - a missing key is generated; an unreadable key is an error (never overwritten);
 *   - the CA certificate is (re)issued when missing, unparsable, not matching the CA key,
 *     or expiring within 30 days (same key, so certificates it signed still verify);
 *   - the server certificate is (re)issued for the existing server key when missing,
 *     unparsable, not matching the key, not verifying against the CA for serverAuth,
 *     lacking the localhost / 127.0.0.1 names, or expiring within 30 days; and always
 *     when the CA key or the server key was just generated.
 * Sets *generated (when not NULL) to true if any file was written, also on failure.
 * Returns false and logs why (core/log.h) on error. Not safe against a concurrent call
 * on the same directory from another process. */
bool devcert_ensure(const char *dir, bool *generated);

#endif
