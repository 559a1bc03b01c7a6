/* Development certificates: generation, verification, and what is kept or regenerated. */
#include "tls/devcert.c"

#include <dirent.h>

#include "unit.h"

static char base[64]; /* the mkdtemp directory */
static char dir[128]; /* base/data/certs: created by devcert_ensure */
static mode_t mask;

static char *path_of(enum devcert_file f)
{
	return devcert_path(dir, f);
}

/* Whole file, or NULL; *len gets its length. */
static char *slurp(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return NULL;
	char *buf = xmalloc(65536);
	*len = fread(buf, 1, 65536, fp);
	fclose(fp);
	return buf;
}

/* A snapshot of the four files' contents. */
struct snap {
	char *data[DEVCERT_NFILES];
	size_t len[DEVCERT_NFILES];
};

static void snap_take(struct snap *s)
{
	for (int f = 0; f < DEVCERT_NFILES; f++) {
		char *p = path_of((enum devcert_file)f);
		s->data[f] = slurp(p, &s->len[f]);
		free(p);
	}
}

static bool snap_same(const struct snap *a, const struct snap *b, enum devcert_file f)
{
	return a->data[f] && b->data[f] && a->len[f] == b->len[f] && memcmp(a->data[f], b->data[f], a->len[f]) == 0;
}

static void snap_free(struct snap *s)
{
	for (int f = 0; f < DEVCERT_NFILES; f++)
		free(s->data[f]);
}

static X509 *read_cert(enum devcert_file f)
{
	char *p = path_of(f);
	FILE *fp = fopen(p, "r");
	free(p);
	if (!fp)
		return NULL;
	X509 *x = PEM_read_X509(fp, NULL, NULL, NULL);
	fclose(fp);
	return x;
}

static EVP_PKEY *read_key(enum devcert_file f)
{
	char *p = path_of(f);
	FILE *fp = fopen(p, "r");
	free(p);
	if (!fp)
		return NULL;
	EVP_PKEY *k = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
	fclose(fp);
	return k;
}

static int file_mode(enum devcert_file f)
{
	char *p = path_of(f);
	struct stat st;
	int m = stat(p, &st) == 0 ? (int)(st.st_mode & 07777) : -1;
	free(p);
	return m;
}

static void remove_file(enum devcert_file f)
{
	char *p = path_of(f);
	CHECK(unlink(p) == 0);
	free(p);
}

static int verify(X509 *srv, X509 *ca)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	X509_STORE_add_cert(store, ca);
	X509_STORE_CTX_init(ctx, store, srv, NULL);
	X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
	int rc = X509_verify_cert(ctx);
	if (rc != 1)
		fprintf(stderr, "verify: %s\n", X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return rc;
}

/* The server certificate verifies against the CA, names localhost and 127.0.0.1, and
 * matches the server key. */
static void check_server_cert(void)
{
	X509 *ca = read_cert(DEVCERT_CA_CERT), *srv = read_cert(DEVCERT_SERVER_CERT);
	EVP_PKEY *key = read_key(DEVCERT_SERVER_KEY);
	CHECK(ca && srv && key);
	if (!ca || !srv || !key)
		goto out;
	CHECK_EQ_INT(verify(srv, ca), 1);
	CHECK_EQ_INT(X509_check_private_key(srv, key), 1);

	GENERAL_NAMES *names = X509_get_ext_d2i(srv, NID_subject_alt_name, NULL, NULL);
	bool dns = false, ip4 = false, ip6 = false;
	static const unsigned char lo4[4] = { 127, 0, 0, 1 };
	static const unsigned char lo6[16] = { [15] = 1 };
	for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
		if (g->type == GEN_DNS)
			dns |= ASN1_STRING_length(g->d.dNSName) == 9 &&
			       memcmp(ASN1_STRING_get0_data(g->d.dNSName), "localhost", 9) == 0;
		if (g->type == GEN_IPADD && ASN1_STRING_length(g->d.iPAddress) == 4)
			ip4 |= memcmp(ASN1_STRING_get0_data(g->d.iPAddress), lo4, 4) == 0;
		if (g->type == GEN_IPADD && ASN1_STRING_length(g->d.iPAddress) == 16)
			ip6 |= memcmp(ASN1_STRING_get0_data(g->d.iPAddress), lo6, 16) == 0;
	}
	GENERAL_NAMES_free(names);
	CHECK(dns && ip4 && ip6);

	char cn[64] = "";
	X509_NAME_get_text_by_NID(X509_get_subject_name(srv), NID_commonName, cn, sizeof cn);
	CHECK_STR(cn, "localhost");
	CHECK(X509_get_extended_key_usage(srv) & XKU_SSL_SERVER);
	CHECK(X509_get_key_usage(srv) & KU_DIGITAL_SIGNATURE);
	CHECK(!(X509_get_key_usage(srv) & KU_KEY_CERT_SIGN));
	CHECK_EQ_INT(X509_check_ca(srv), 0);
	const ASN1_OCTET_STRING *akid = X509_get0_authority_key_id(srv), *skid = X509_get0_subject_key_id(ca);
	CHECK(akid && skid && ASN1_OCTET_STRING_cmp(akid, skid) == 0);
	int days = 0, secs = 0;
	CHECK(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(srv)));
	CHECK(days >= 824 && days <= 825);
	CHECK(X509_cmp_current_time(X509_get0_notBefore(srv)) < 0);
	BIGNUM *serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(srv), NULL);
	CHECK(serial && !BN_is_zero(serial) && !BN_is_negative(serial) && BN_num_bits(serial) <= 128);
	BN_free(serial);
	char group[32] = "";
	CHECK(EVP_PKEY_get_group_name(key, group, sizeof group, NULL));
	CHECK_STR(group, "prime256v1");
	CHECK_EQ_INT(X509_get_signature_nid(srv), NID_ecdsa_with_SHA256);
out:
	X509_free(ca);
	X509_free(srv);
	EVP_PKEY_free(key);
}

static void check_ca_cert(void)
{
	X509 *ca = read_cert(DEVCERT_CA_CERT);
	EVP_PKEY *key = read_key(DEVCERT_CA_KEY);
	CHECK(ca && key);
	if (!ca || !key)
		goto out;
	CHECK_EQ_INT(X509_check_private_key(ca, key), 1);
	CHECK_EQ_INT(X509_check_ca(ca), 1);
	CHECK(X509_get_extension_flags(ca) & EXFLAG_SS);
	int crit = 0;
	BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(ca, NID_basic_constraints, &crit, NULL);
	CHECK(bc && bc->ca && crit == 1);
	BASIC_CONSTRAINTS_free(bc);
	CHECK_EQ_INT(X509_get_key_usage(ca), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
	CHECK(X509_get0_subject_key_id(ca) != NULL);
	char cn[64] = "";
	X509_NAME_get_text_by_NID(X509_get_subject_name(ca), NID_commonName, cn, sizeof cn);
	CHECK_STR(cn, "Bulwark Development CA");
	int days = 0, secs = 0;
	CHECK(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(ca)));
	CHECK(days >= 3651 && days <= 3652);
	char group[32] = "";
	CHECK(EVP_PKEY_get_group_name(key, group, sizeof group, NULL));
	CHECK_STR(group, "prime256v1");
out:
	X509_free(ca);
	EVP_PKEY_free(key);
}

/* Only the four files, no temporaries left behind. */
static int dir_entries(void)
{
	DIR *d = opendir(dir);
	int n = 0;
	if (!d)
		return -1;
	for (struct dirent *e; (e = readdir(d));)
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

TEST(generate)
{
	bool gen = false;
	CHECK(devcert_ensure(dir, &gen));
	CHECK(gen);
	struct stat st;
	CHECK(stat(dir, &st) == 0 && (st.st_mode & 0777) == (0700 & ~mask));
	char parent[160];
	snprintf(parent, sizeof parent, "%s/data", base);
	CHECK(stat(parent, &st) == 0 && (st.st_mode & 0777) == (0700 & ~mask));
	CHECK_EQ_INT(file_mode(DEVCERT_CA_KEY), 0600);
	CHECK_EQ_INT(file_mode(DEVCERT_SERVER_KEY), 0600);
	CHECK_EQ_INT(file_mode(DEVCERT_CA_CERT), 0644 & ~mask);
	CHECK_EQ_INT(file_mode(DEVCERT_SERVER_CERT), 0644 & ~mask);
	CHECK_EQ_INT(dir_entries(), 4);
	check_ca_cert();
	check_server_cert();
}

TEST(second_call_keeps_everything)
{
	struct snap a, b;
	snap_take(&a);
	bool gen = true;
	CHECK(devcert_ensure(dir, &gen));
	CHECK(!gen);
	snap_take(&b);
	for (int f = 0; f < DEVCERT_NFILES; f++)
		CHECK(snap_same(&a, &b, (enum devcert_file)f));
	CHECK(devcert_ensure(dir, NULL));
	snap_free(&a);
	snap_free(&b);
}

TEST(missing_server_cert)
{
	struct snap a, b;
	snap_take(&a);
	remove_file(DEVCERT_SERVER_CERT);
	bool gen = false;
	CHECK(devcert_ensure(dir, &gen));
	CHECK(gen);
	snap_take(&b);
	CHECK(snap_same(&a, &b, DEVCERT_CA_CERT));
	CHECK(snap_same(&a, &b, DEVCERT_CA_KEY));
	CHECK(snap_same(&a, &b, DEVCERT_SERVER_KEY)); /* the key is reused */
	CHECK(b.data[DEVCERT_SERVER_CERT] && !snap_same(&a, &b, DEVCERT_SERVER_CERT));
	CHECK_EQ_INT(dir_entries(), 4);
	check_server_cert();
	snap_free(&a);
	snap_free(&b);
}

TEST(missing_server_key)
{
	struct snap a, b;
	snap_take(&a);
	remove_file(DEVCERT_SERVER_KEY);
	bool gen = false;
	CHECK(devcert_ensure(dir, &gen));
	CHECK(gen);
	snap_take(&b);
	CHECK(snap_same(&a, &b, DEVCERT_CA_CERT) && snap_same(&a, &b, DEVCERT_CA_KEY));
	CHECK(!snap_same(&a, &b, DEVCERT_SERVER_KEY) && !snap_same(&a, &b, DEVCERT_SERVER_CERT));
	CHECK_EQ_INT(file_mode(DEVCERT_SERVER_KEY), 0600);
	check_server_cert();
	snap_free(&a);
	snap_free(&b);
}

/* Write a server certificate for the current server key, valid for `days`, signed by
 * (ca, ca_key). */
static void plant_server_cert(X509 *ca, EVP_PKEY *ca_key, long days)
{
	EVP_PKEY *key = read_key(DEVCERT_SERVER_KEY);
	X509 *x = issue_server(key, ca, ca_key, days);
	CHECK(x && write_pem(dir, DEVCERT_SERVER_CERT, x, NULL));
	X509_free(x);
	EVP_PKEY_free(key);
}

TEST(expiring_server_cert)
{
	X509 *ca = read_cert(DEVCERT_CA_CERT);
	EVP_PKEY *ca_key = read_key(DEVCERT_CA_KEY);
	plant_server_cert(ca, ca_key, 40); /* fine */
	struct snap a, b;
	snap_take(&a);
	bool gen = true;
	CHECK(devcert_ensure(dir, &gen));
	CHECK(!gen);
	plant_server_cert(ca, ca_key, 29); /* expires within 30 days */
	CHECK(devcert_ensure(dir, &gen));
	CHECK(gen);
	snap_take(&b);
	CHECK(snap_same(&a, &b, DEVCERT_SERVER_KEY) && snap_same(&a, &b, DEVCERT_CA_CERT));
	CHECK(!snap_same(&a, &b, DEVCERT_SERVER_CERT));
	check_server_cert(); /* 825 days again */
	snap_free(&a);
	snap_free(&b);
	X509_free(ca);
	EVP_PKEY_free(ca_key);
}

TEST(foreign_server_cert)
{
	/* A server certificate from another CA (same server key) does not verify. */
	EVP_PKEY *other_key = new_key();
	X509 *other = issue_ca(other_key);
	plant_server_cert(other, other_key, 400);
	struct snap a, b;
	snap_take(&a);
	bool gen = false;
	CHECK(devcert_ensure(dir, &gen));
	CHECK(gen);
	snap_take(&b);
	CHECK(snap_same(&a, &b, DEVCERT_SERVER_KEY) && snap_same(&a, &b, DEVCERT_CA_KEY));
	CHECK(!snap_same(&a, &b, DEVCERT_SERVER_CERT));
	check_server_cert();
	snap_free(&a);
	snap_free(&b);
	X509_free(other);
	EVP_PKEY_free(other_key);

	/* Garbage in place of the certificate is replaced too. */
	char *p = path_of(DEVCERT_SERVER_CERT);
	FILE *fp = fopen(p, "w");
	fputs("not a certificate\n", fp);
	fclose(fp);
	free(p);
	CHECK(devcert_ensure(dir, &gen));
	CHECK(gen);
	check_server_cert();
}

TEST(missing_ca_cert)
{
	/* Same CA key: the CA certificate is reissued and the server certificate still verifies. */
	struct snap a, b;
	snap_take(&a);
	remove_file(DEVCERT_CA_CERT);
	bool gen = false;
	CHECK(devcert_ensure(dir, &gen));
	CHECK(gen);
	snap_take(&b);
	CHECK(b.data[DEVCERT_CA_CERT] && !snap_same(&a, &b, DEVCERT_CA_CERT));
	CHECK(snap_same(&a, &b, DEVCERT_CA_KEY));
	CHECK(snap_same(&a, &b, DEVCERT_SERVER_KEY) && snap_same(&a, &b, DEVCERT_SERVER_CERT));
	check_ca_cert();
	check_server_cert();
	snap_free(&a);
	snap_free(&b);
}

TEST(missing_ca)
{
	/* A new CA: the server certificate must be reissued. */
	struct snap a, b;
	snap_take(&a);
	remove_file(DEVCERT_CA_CERT);
	remove_file(DEVCERT_CA_KEY);
	bool gen = false;
	CHECK(devcert_ensure(dir, &gen));
	CHECK(gen);
	snap_take(&b);
	CHECK(!snap_same(&a, &b, DEVCERT_CA_CERT) && !snap_same(&a, &b, DEVCERT_CA_KEY));
	CHECK(!snap_same(&a, &b, DEVCERT_SERVER_CERT));
	CHECK(snap_same(&a, &b, DEVCERT_SERVER_KEY));
	CHECK_EQ_INT(file_mode(DEVCERT_CA_KEY), 0600);
	check_ca_cert();
	check_server_cert();
	snap_free(&a);
	snap_free(&b);

	/* Only the CA key missing: a new CA, its certificate replaced, the server reissued. */
	snap_take(&a);
	remove_file(DEVCERT_CA_KEY);
	CHECK(devcert_ensure(dir, &gen));
	CHECK(gen);
	snap_take(&b);
	CHECK(!snap_same(&a, &b, DEVCERT_CA_CERT) && !snap_same(&a, &b, DEVCERT_SERVER_CERT));
	check_ca_cert();
	check_server_cert();
	snap_free(&a);
	snap_free(&b);
	CHECK_EQ_INT(dir_entries(), 4);
}

TEST(errors)
{
	fprintf(stderr, "(errors logged below are expected)\n");
	/* An unreadable key is an error and is never overwritten. */
	char *p = path_of(DEVCERT_SERVER_KEY);
	FILE *fp = fopen(p, "w");
	fputs("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n", fp);
	fclose(fp);
	size_t len1 = 0, len2 = 0;
	char *before = slurp(p, &len1);
	bool gen = true;
	CHECK(!devcert_ensure(dir, &gen));
	CHECK(!gen);
	char *after = slurp(p, &len2);
	CHECK(before && after && len1 == len2 && memcmp(before, after, len1) == 0);
	free(before);
	free(after);
	CHECK(unlink(p) == 0);
	free(p);
	CHECK(devcert_ensure(dir, &gen)); /* removing it repairs */
	CHECK(gen);
	check_server_cert();

	/* dir is a file. */
	char file[160];
	snprintf(file, sizeof file, "%s/plainfile", base);
	fp = fopen(file, "w");
	fclose(fp);
	CHECK(!devcert_ensure(file, &gen));
	char sub[200];
	snprintf(sub, sizeof sub, "%s/sub", file);
	CHECK(!devcert_ensure(sub, &gen));
	unlink(file);
	CHECK(!devcert_ensure("", &gen));
	CHECK(ERR_peek_error() == 0); /* the error queue is left empty */
}

TEST(file_names)
{
	CHECK_STR(devcert_file_name(DEVCERT_CA_CERT), "dev-ca.pem");
	CHECK_STR(devcert_file_name(DEVCERT_CA_KEY), "dev-ca-key.pem");
	CHECK_STR(devcert_file_name(DEVCERT_SERVER_CERT), "dev-server.pem");
	CHECK_STR(devcert_file_name(DEVCERT_SERVER_KEY), "dev-server-key.pem");
	char *p = devcert_path("data/certs", DEVCERT_SERVER_KEY);
	CHECK_STR(p, "data/certs/dev-server-key.pem");
	free(p);
}

static void cleanup(void)
{
	for (int f = 0; f < DEVCERT_NFILES; f++) {
		char *p = path_of((enum devcert_file)f);
		unlink(p);
		free(p);
	}
	CHECK(dir_entries() == 0);
	CHECK(rmdir(dir) == 0);
	char parent[160];
	snprintf(parent, sizeof parent, "%s/data", base);
	CHECK(rmdir(parent) == 0);
	CHECK(rmdir(base) == 0);
}

int main(void)
{
	mask = umask(0);
	umask(mask);
	snprintf(base, sizeof base, "/tmp/bw-devcert-XXXXXX");
	if (!mkdtemp(base)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(dir, sizeof dir, "%s/data/certs", base);
	RUN(generate);
	RUN(second_call_keeps_everything);
	RUN(missing_server_cert);
	RUN(missing_server_key);
	RUN(expiring_server_cert);
	RUN(foreign_server_cert);
	RUN(missing_ca_cert);
	RUN(missing_ca);
	RUN(errors);
	RUN(file_names);
	cleanup();
	return unit_summary();
}
