/* Certificate identity formats: dn (esockd's RFC 4514 rendering), cn, crt/pem/md5, and the
 * control-character guard. */
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "tls/identity.h"
#include "unit.h"

static X509_NAME *name_of(const char *const *pairs, const int *sets)
{
	X509_NAME *n = X509_NAME_new();
	for (int i = 0; pairs[2 * i]; i++) {
		/* OpenSSL's set: 0 starts a new RDN, -1 joins the previous one (multi-valued) */
		X509_NAME_add_entry_by_txt(n, pairs[2 * i], MBSTRING_UTF8, (const unsigned char *)pairs[2 * i + 1], -1, -1,
					   sets ? sets[i] : 0);
	}
	return n;
}

static void check_dn(const char *const *pairs, const int *sets, const char *want)
{
	X509_NAME *n = name_of(pairs, sets);
	char *dn = identity_dn(n);
	CHECK_STR(dn, want);
	free(dn);
	X509_NAME_free(n);
}

TEST(dn_most_specific_first)
{
	static const char *const p[] = { "C", "SE", "ST", "Stockholm", "L", "Solna", "O", "Acme", "OU", "Sensors",
					 "CN", "device-dn", NULL };
	check_dn(p, NULL, "CN=device-dn,OU=Sensors,O=Acme,L=Solna,ST=Stockholm,C=SE");
}

TEST(dn_attribute_names)
{
	static const char *const p[] = { "DC", "com", "DC", "example", "street", "1 Main", "UID", "u1", "emailAddress",
					 "a@b.c", "serialNumber", "42", "title", "Dr", "SN", "Doe", "GN", "Jo",
					 "initials", "J", "generationQualifier", "III", "pseudonym", "jj", NULL };
	check_dn(p, NULL,
		 "PSEUDONYM=jj,GENERATIONQUALIFIER=III,INITIALS=J,GIVENNAME=Jo,SN=Doe,TITLE=Dr,SERIALNUMBER=42,"
		 "EMAILADDRESS=a@b.c,UID=u1,STREET=1 Main,DC=example,DC=com");
}

TEST(dn_unknown_oid_is_dotted)
{
	static const char *const p[] = { "O", "Acme", "1.2.3.4.5", "x", NULL };
	check_dn(p, NULL, "1.2.3.4.5=x,O=Acme");
}

TEST(dn_escaping)
{
	static const char *const lead_space[] = { "CN", " lead", NULL };
	check_dn(lead_space, NULL, "CN=\\ lead");
	static const char *const lead_hash[] = { "CN", "#x", NULL };
	check_dn(lead_hash, NULL, "CN=\\#x");
	static const char *const trail[] = { "CN", "tail ", NULL };
	check_dn(trail, NULL, "CN=tail\\ ");
	static const char *const specials[] = { "CN", "a,b+c\"d;e<f>g\\h", NULL };
	check_dn(specials, NULL, "CN=a\\,b\\+c\\\"d\\;e\\<f\\>g\\\\h");
	static const char *const inner_space_hash[] = { "CN", "a #b c", NULL };
	check_dn(inner_space_hash, NULL, "CN=a #b c");
	/* esockd escapes from 126 up: '~' and every UTF-8 byte of non-ASCII text */
	static const char *const tilde[] = { "CN", "a~b", NULL };
	check_dn(tilde, NULL, "CN=a\\7Eb");
	static const char *const utf8[] = { "O", "\xC3\x85re", NULL };
	check_dn(utf8, NULL, "O=\\C3\\85re");
	static const char *const leading_comma[] = { "CN", ",x", NULL };
	check_dn(leading_comma, NULL, "CN=\\,x");
}

TEST(dn_multi_valued_rdn_in_certificate_order)
{
	/* O=Acme, then one RDN {CN=dev, UID=7}: most specific RDN first, '+' inside it */
	static const char *const p[] = { "O", "Acme", "CN", "dev", "UID", "7", NULL };
	static const int sets[] = { 0, 0, -1 };
	X509_NAME *n = name_of(p, sets);
	char *dn = identity_dn(n);
	/* the SET members keep the order they have in the encoding */
	const X509_NAME_ENTRY *e1 = X509_NAME_get_entry(n, 1);
	const char *first = OBJ_obj2nid(X509_NAME_ENTRY_get_object(e1)) == NID_commonName ? "CN=dev+UID=7" : "UID=7+CN=dev";
	char want[64];
	snprintf(want, sizeof want, "%s,O=Acme", first);
	CHECK_STR(dn, want);
	free(dn);
	X509_NAME_free(n);
}

TEST(cn_joins_every_value)
{
	static const char *const two[] = { "O", "Acme", "CN", "a", "CN", "b", NULL };
	X509_NAME *n = name_of(two, NULL);
	char *cn = identity_cn(n);
	CHECK_STR(cn, "a,b");
	free(cn);
	X509_NAME_free(n);
	static const char *const none[] = { "O", "Acme", NULL };
	n = name_of(none, NULL);
	CHECK(identity_cn(n) == NULL);
	X509_NAME_free(n);
}

static X509 *self_signed(const char *cn)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME *n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, n);
	X509_set_pubkey(x, k);
	X509_sign(x, k, EVP_sha256());
	EVP_PKEY_free(k);
	return x;
}

TEST(map_crt_pem_md5_from_der)
{
	X509 *x = self_signed("dev-1");
	unsigned char *der = NULL;
	int dlen = i2d_X509(x, &der);
	size_t len = 0;
	char *crt = identity_map(x, CFG_PEER_CERT_CRT, &len);
	CHECK_EQ_INT(len, dlen);
	CHECK_MEM(crt, der, (size_t)dlen);
	free(crt);
	char *pem = identity_map(x, CFG_PEER_CERT_PEM, &len);
	unsigned char b64[4096];
	int blen = EVP_EncodeBlock(b64, der, dlen);
	CHECK_EQ_INT(len, blen);
	CHECK(strchr(pem, '\n') == NULL && strncmp(pem, "-----", 5) != 0);
	CHECK_MEM(pem, b64, (size_t)blen);
	free(pem);
	char *md5 = identity_map(x, CFG_PEER_CERT_MD5, &len);
	unsigned char md[16];
	unsigned int mdlen;
	EVP_Digest(der, (size_t)dlen, md, &mdlen, EVP_md5(), NULL);
	char hex[33];
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	CHECK_EQ_INT(len, 32);
	CHECK_STR(md5, hex);
	free(md5);
	char *cn = identity_map(x, CFG_PEER_CERT_CN, &len);
	CHECK_STR(cn, "dev-1");
	free(cn);
	char *dn = identity_map(x, CFG_PEER_CERT_DN, &len);
	CHECK_STR(dn, "CN=dev-1");
	free(dn);
	CHECK(identity_map(x, CFG_PEER_CERT_DISABLED, &len) == NULL);
	OPENSSL_free(der);
	X509_free(x);
}

TEST(control_characters)
{
	CHECK(identity_has_control("a\x01", 2));
	CHECK(identity_has_control("a\r\nb", 4));
	CHECK(identity_has_control("\x7f", 1));
	CHECK(identity_has_control("\xC2\x85", 2)); /* U+0085 NEL */
	CHECK(identity_has_control("a\0b", 3));
	CHECK(!identity_has_control("device-001", 10));
	CHECK(!identity_has_control("\xC3\xA9t\xC3\xA9", 5)); /* été */
	CHECK(!identity_has_control("\xC2\xA0", 2));           /* U+00A0 is not a control */
	X509 *x = self_signed("bad\r\ninjected");
	char why[128];
	CHECK(!identity_fields_clean(x, why, sizeof why));
	CHECK(strstr(why, "CN") != NULL);
	X509_free(x);
	x = self_signed("good");
	CHECK(identity_fields_clean(x, why, sizeof why));
	X509_free(x);
}

int main(void)
{
	RUN(dn_most_specific_first);
	RUN(dn_attribute_names);
	RUN(dn_unknown_oid_is_dotted);
	RUN(dn_escaping);
	RUN(dn_multi_valued_rdn_in_certificate_order);
	RUN(cn_joins_every_value);
	RUN(map_crt_pem_md5_from_der);
	RUN(control_characters);
	return unit_summary();
}
