#include "tls/identity.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include "core/alloc.h"
#include "core/buf.h"

/* Attribute type names esockd prints; anything else is written as a dotted OID. */
static const struct {
	int nid;
	const char *name;
} attr_names[] = {
	{ NID_surname, "SN" },
	{ NID_givenName, "GIVENNAME" },
	{ NID_initials, "INITIALS" },
	{ NID_generationQualifier, "GENERATIONQUALIFIER" },
	{ NID_commonName, "CN" },
	{ NID_localityName, "L" },
	{ NID_stateOrProvinceName, "ST" },
	{ NID_organizationName, "O" },
	{ NID_organizationalUnitName, "OU" },
	{ NID_title, "TITLE" },
	{ NID_countryName, "C" },
	{ NID_serialNumber, "SERIALNUMBER" },
	{ NID_pseudonym, "PSEUDONYM" },
	{ NID_domainComponent, "DC" },
	{ NID_pkcs9_emailAddress, "EMAILADDRESS" },
	{ NID_streetAddress, "STREET" },
	{ NID_userId, "UID" },
};

static void append_type(struct buf *b, const ASN1_OBJECT *obj)
{
	int nid = OBJ_obj2nid(obj);
	for (size_t i = 0; i < sizeof attr_names / sizeof attr_names[0]; i++) {
		if (attr_names[i].nid == nid && nid != NID_undef) {
			buf_append_str(b, attr_names[i].name);
			return;
		}
	}
	char oid[128];
	int n = OBJ_obj2txt(oid, sizeof oid, obj, 1);
	buf_append(b, oid, n > 0 && (size_t)n < sizeof oid ? (size_t)n : strlen(oid));
}

/* RFC 4514 escaping with esockd's choices (see the header). */
static void append_escaped(struct buf *b, const unsigned char *v, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = v[i];
		if (i == 0 && (c == ' ' || c == '#')) {
			buf_append(b, "\\", 1);
			buf_append(b, &c, 1);
		} else if (i == len - 1 && c == ' ') {
			buf_append(b, "\\ ", 2);
		} else if (c == '"' || c == '+' || c == ',' || c == ';' || c == '<' || c == '>' || c == '\\') {
			buf_append(b, "\\", 1);
			buf_append(b, &c, 1);
		} else if (c < 32 || c >= 126) {
			buf_printf(b, "\\%02X", c);
		} else {
			buf_append(b, &c, 1);
		}
	}
}

/* The entry's value as UTF-8 (fresh allocation, *len), or NULL when it is not a string. */
static unsigned char *entry_utf8(const X509_NAME_ENTRY *e, int *len)
{
	unsigned char *out = NULL;
	*len = ASN1_STRING_to_UTF8(&out, X509_NAME_ENTRY_get_data(e));
	return *len >= 0 ? out : NULL;
}

static void append_value(struct buf *b, const X509_NAME_ENTRY *e)
{
	int len;
	unsigned char *u = entry_utf8(e, &len);
	if (u) {
		append_escaped(b, u, (size_t)len);
		OPENSSL_free(u);
		return;
	}
	/* Not a string type: RFC 4514 §2.4, '#' then the hex of the BER encoding. */
	const ASN1_STRING *d = X509_NAME_ENTRY_get_data(e);
	buf_append(b, "#", 1);
	for (int i = 0; i < ASN1_STRING_length(d); i++)
		buf_printf(b, "%02x", ASN1_STRING_get0_data(d)[i]);
}

char *identity_dn(const X509_NAME *name)
{
	struct buf b = { 0 };
	int n = X509_NAME_entry_count(name);
	/* RDNs most specific (last) first; entries inside one RDN in certificate order. */
	int end = n;
	while (end > 0) {
		int set = X509_NAME_ENTRY_set(X509_NAME_get_entry(name, end - 1));
		int start = end - 1;
		while (start > 0 && X509_NAME_ENTRY_set(X509_NAME_get_entry(name, start - 1)) == set)
			start--;
		if (b.len)
			buf_append(&b, ",", 1);
		for (int i = start; i < end; i++) {
			const X509_NAME_ENTRY *e = X509_NAME_get_entry(name, i);
			if (i > start)
				buf_append(&b, "+", 1);
			append_type(&b, X509_NAME_ENTRY_get_object(e));
			buf_append(&b, "=", 1);
			append_value(&b, e);
		}
		end = start;
	}
	buf_append(&b, "", 1);
	return (char *)b.data;
}

char *identity_cn(const X509_NAME *name)
{
	struct buf b = { 0 };
	bool any = false;
	for (int i = -1; (i = X509_NAME_get_index_by_NID(name, NID_commonName, i)) >= 0;) {
		int len;
		unsigned char *u = entry_utf8(X509_NAME_get_entry(name, i), &len);
		if (!u)
			continue;
		if (any)
			buf_append(&b, ",", 1);
		buf_append(&b, u, (size_t)len);
		OPENSSL_free(u);
		any = true;
	}
	if (!any) {
		buf_free(&b);
		return NULL;
	}
	buf_append(&b, "", 1);
	return (char *)b.data;
}

char *identity_map(X509 *cert, enum cfg_peer_cert_as how, size_t *len)
{
	char *out = NULL;
	unsigned char *der = NULL;
	int dlen = 0;
	switch (how) {
	case CFG_PEER_CERT_DISABLED:
		return NULL;
	case CFG_PEER_CERT_CN:
		out = identity_cn(X509_get_subject_name(cert));
		break;
	case CFG_PEER_CERT_DN:
		out = identity_dn(X509_get_subject_name(cert));
		break;
	case CFG_PEER_CERT_CRT:
	case CFG_PEER_CERT_PEM:
	case CFG_PEER_CERT_MD5:
		dlen = i2d_X509(cert, &der);
		if (dlen <= 0)
			return NULL;
		if (how == CFG_PEER_CERT_CRT) {
			out = xmalloc((size_t)dlen + 1);
			memcpy(out, der, (size_t)dlen);
			out[dlen] = '\0';
			*len = (size_t)dlen;
		} else if (how == CFG_PEER_CERT_PEM) {
			size_t cap = 4 * (((size_t)dlen + 2) / 3) + 1;
			out = xmalloc(cap);
			*len = (size_t)EVP_EncodeBlock((unsigned char *)out, der, dlen);
		} else {
			unsigned char md[EVP_MAX_MD_SIZE];
			unsigned int mdlen = 0;
			EVP_Digest(der, (size_t)dlen, md, &mdlen, EVP_md5(), NULL);
			out = xmalloc(2 * mdlen + 1);
			for (unsigned i = 0; i < mdlen; i++)
				snprintf(out + 2 * i, 3, "%02x", md[i]);
			*len = 2 * mdlen;
		}
		OPENSSL_free(der);
		return out;
	}
	if (out)
		*len = strlen(out);
	return out;
}

bool identity_has_control(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; i < len; i++) {
		if (p[i] < 0x20 || p[i] == 0x7F)
			return true;
		if (p[i] == 0xC2 && i + 1 < len && p[i + 1] >= 0x80 && p[i + 1] <= 0x9F)
			return true;
	}
	return false;
}

bool identity_fields_clean(X509 *cert, char *why, size_t whylen)
{
	const X509_NAME *name = X509_get_subject_name(cert);
	for (int i = 0; i < X509_NAME_entry_count(name); i++) {
		const X509_NAME_ENTRY *e = X509_NAME_get_entry(name, i);
		int len;
		unsigned char *u = entry_utf8(e, &len);
		bool bad = u && identity_has_control((const char *)u, (size_t)len);
		OPENSSL_free(u);
		if (bad) {
			struct buf t = { 0 };
			append_type(&t, X509_NAME_ENTRY_get_object(e));
			snprintf(why, whylen, "certificate subject %.*s contains control characters", (int)t.len,
				 (const char *)t.data);
			buf_free(&t);
			return false;
		}
	}
	GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	bool ok = true;
	for (int i = 0; sans && ok && i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		const ASN1_IA5STRING *v = NULL;
		const char *kind = NULL;
		if (g->type == GEN_DNS) {
			v = g->d.dNSName;
			kind = "DNS";
		} else if (g->type == GEN_EMAIL) {
			v = g->d.rfc822Name;
			kind = "email";
		} else if (g->type == GEN_URI) {
			v = g->d.uniformResourceIdentifier;
			kind = "URI";
		}
		if (v && identity_has_control((const char *)ASN1_STRING_get0_data(v), (size_t)ASN1_STRING_length(v))) {
			snprintf(why, whylen, "certificate subject alternative name (%s) contains control characters", kind);
			ok = false;
		}
	}
	GENERAL_NAMES_free(sans);
	return ok;
}

/* ---- Subject alternative names ---- */

static void san_add(char ***v, size_t *n, const char *s, size_t len)
{
	if (*n >= IDENTITY_SANS_MAX || memchr(s, '\0', len))
		return;
	*v = xrealloc(*v, (*n + 2) * sizeof **v);
	(*v)[*n] = xstrndup(s, len);
	(*v)[++*n] = NULL;
}

void identity_sans_get(X509 *cert, struct identity_sans *out)
{
	memset(out, 0, sizeof *out);
	GENERAL_NAMES *sans = cert ? X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL) : NULL;
	for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		const ASN1_STRING *v = NULL;
		char ***dst = NULL;
		size_t *n = NULL;
		switch (g->type) {
		case GEN_DNS:
			v = g->d.dNSName, dst = &out->dns, n = &out->n_dns;
			break;
		case GEN_EMAIL:
			v = g->d.rfc822Name, dst = &out->email, n = &out->n_email;
			break;
		case GEN_URI:
			v = g->d.uniformResourceIdentifier, dst = &out->uri, n = &out->n_uri;
			break;
		case GEN_IPADD: {
			const ASN1_OCTET_STRING *ip = g->d.iPAddress;
			char text[INET6_ADDRSTRLEN];
			int len = ASN1_STRING_length(ip);
			int af = len == 4 ? AF_INET : len == 16 ? AF_INET6 : 0;
			if (af && inet_ntop(af, ASN1_STRING_get0_data(ip), text, sizeof text))
				san_add(&out->ip, &out->n_ip, text, strlen(text));
			continue;
		}
		default:
			continue;
		}
		if (v && ASN1_STRING_length(v) >= 0)
			san_add(dst, n, (const char *)ASN1_STRING_get0_data(v), (size_t)ASN1_STRING_length(v));
	}
	GENERAL_NAMES_free(sans);
}

static void free_list(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

void identity_sans_free(struct identity_sans *s)
{
	free_list(s->dns);
	free_list(s->ip);
	free_list(s->email);
	free_list(s->uri);
	memset(s, 0, sizeof *s);
}
