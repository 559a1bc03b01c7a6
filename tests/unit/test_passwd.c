/* Unit tests for password hashing (src/auth/passwd.c): known vectors for every algorithm
 * and salt position, bcrypt ($2a$/$2b$/$2y$ and fresh hashes), PBKDF2 against RFC 6070
 * (HMAC-SHA1) and RFC 7914 §11 (HMAC-SHA256), comparison rules and config parsing. */
#include "auth/passwd.c"

#include "config/hocon.h"
#include "unit.h"

static struct passwd_cfg simple(enum passwd_algo a, enum passwd_salt_pos pos)
{
	struct passwd_cfg c;
	passwd_default(&c);
	c.algo = a;
	c.salt_position = pos;
	return c;
}

static bool chk(const struct passwd_cfg *c, const char *hash, const char *salt, const char *pw)
{
	return passwd_check(c, hash, strlen(hash), salt, salt ? strlen(salt) : 0, (const uint8_t *)pw, strlen(pw));
}

/* ---- simple algorithms ---- */

struct vec {
	enum passwd_algo algo;
	enum passwd_salt_pos pos;
	const char *hex; /* of "password" with salt "salt" */
};

static const struct vec vectors[] = {
	{ PASSWD_MD5, PASSWD_SALT_DISABLE, "5f4dcc3b5aa765d61d8327deb882cf99" },
	{ PASSWD_MD5, PASSWD_SALT_PREFIX, "67a1e09bb1f83f5007dc119c14d663aa" },
	{ PASSWD_MD5, PASSWD_SALT_SUFFIX, "b305cadbb3bce54f3aa59c64fec00dea" },
	{ PASSWD_SHA, PASSWD_SALT_DISABLE, "5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8" },
	{ PASSWD_SHA, PASSWD_SALT_PREFIX, "59b3e8d637cf97edbe2384cf59cb7453dfe30789" },
	{ PASSWD_SHA, PASSWD_SALT_SUFFIX, "c88e9c67041a74e0357befdff93f87dde0904214" },
	{ PASSWD_SHA256, PASSWD_SALT_DISABLE, "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8" },
	{ PASSWD_SHA256, PASSWD_SALT_PREFIX, "13601bda4ea78e55a07b98866d2be6be0744e3866f13c00c811cab608a28f322" },
	{ PASSWD_SHA256, PASSWD_SALT_SUFFIX, "7a37b85c8918eac19a9089c0fa5a2ab4dce3f90528dcdeec108b23ddf3607b99" },
	{ PASSWD_SHA512, PASSWD_SALT_DISABLE,
	  "b109f3bbbc244eb82441917ed06d618b9008dd09b3befd1b5e07394c706a8bb980b1d7785e5976ec049b46df5f1326af5a2ea6d103"
	  "fd07c95385ffab0cacbc86" },
	{ PASSWD_SHA512, PASSWD_SALT_PREFIX,
	  "2908d2c28dfc047741fc590a026ffade237ab2ba7e1266f010fe49bde548b5987a534a86655a0d17f336588e540cd66f67234b152b"
	  "bb645b4bb85758a1325d64" },
	{ PASSWD_SHA512, PASSWD_SALT_SUFFIX,
	  "fa6a2185b3e0a9a85ef41ffb67ef3c1fb6f74980f8ebf970e4e72e353ed9537d593083c201dfd6e43e1c8a7aac2bc8dbb119c7dfb7d4"
	  "b8f131111395bd70e97f" },
};

TEST(simple_vectors)
{
	for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
		const struct vec *v = &vectors[i];
		struct passwd_cfg c = simple(v->algo, v->pos);
		if (!chk(&c, v->hex, "salt", "password"))
			fprintf(stderr, "vector %zu (algo %d, pos %d) does not match\n", i, v->algo, v->pos);
		CHECK(chk(&c, v->hex, "salt", "password"));
		CHECK(!chk(&c, v->hex, "salt", "passwore"));
		CHECK(!chk(&c, v->hex, "salu", "password") || v->pos == PASSWD_SALT_DISABLE);
		/* upper-case hex matches too */
		char up[200];
		size_t n = strlen(v->hex);
		for (size_t k = 0; k <= n; k++)
			up[k] = (char)((v->hex[k] >= 'a' && v->hex[k] <= 'f') ? v->hex[k] - 32 : v->hex[k]);
		CHECK(chk(&c, up, "salt", "password"));
		/* a truncated hash never matches */
		CHECK(!passwd_check(&c, v->hex, n - 1, "salt", 4, (const uint8_t *)"password", 8));
	}
}

TEST(salt_disable_ignores_salt)
{
	struct passwd_cfg c = simple(PASSWD_SHA256, PASSWD_SALT_DISABLE);
	CHECK(chk(&c, "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8", "whatever", "password"));
	CHECK(chk(&c, "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8", NULL, "password"));
}

TEST(plain_is_case_sensitive)
{
	struct passwd_cfg c = simple(PASSWD_PLAIN, PASSWD_SALT_DISABLE);
	CHECK(chk(&c, "Secret", "", "Secret"));
	CHECK(!chk(&c, "secret", "", "Secret"));
	CHECK(!chk(&c, "Secret", "", "Secret "));
	/* plain with a salt stores the salted text (EMQX) */
	c.salt_position = PASSWD_SALT_PREFIX;
	CHECK(chk(&c, "abcSecret", "abc", "Secret"));
	CHECK(chk(&c, "Secret", "", "Secret"));
	CHECK(passwd_check(&c, "Secret", 6, NULL, 0, (const uint8_t *)"Secret", 6));
	c.salt_position = PASSWD_SALT_SUFFIX;
	CHECK(chk(&c, "Secretabc", "abc", "Secret"));
	CHECK(!chk(&c, "abcSecret", "abc", "Secret"));
	/* bytes, not strings: NULs count */
	c.salt_position = PASSWD_SALT_DISABLE;
	CHECK(passwd_check(&c, "a\0b", 3, "", 0, (const uint8_t *)"a\0b", 3));
	CHECK(!passwd_check(&c, "a\0b", 3, "", 0, (const uint8_t *)"a\0c", 3));
}

TEST(absent_password_never_matches)
{
	struct passwd_cfg c = simple(PASSWD_PLAIN, PASSWD_SALT_DISABLE);
	CHECK(!passwd_check(&c, "", 0, "", 0, NULL, 0));
	c = simple(PASSWD_SHA256, PASSWD_SALT_DISABLE);
	CHECK(!passwd_check(&c, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 64, "", 0, NULL, 0));
	/* an empty password is a password */
	CHECK(passwd_check(&c, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 64, "", 0,
			   (const uint8_t *)"", 0));
}

TEST(ct_equal)
{
	CHECK(passwd_ct_equal("abc", 3, "abc", 3));
	CHECK(!passwd_ct_equal("abc", 3, "abd", 3));
	CHECK(!passwd_ct_equal("abc", 3, "abcd", 4));
	CHECK(!passwd_ct_equal("abc", 3, "ABC", 3));
	CHECK(passwd_ct_equal("", 0, "", 0));
	CHECK(hex_equal("0a1b", 4, "0A1B", 4));
	CHECK(!hex_equal("0a1b", 4, "0a1c", 4));
	CHECK(!hex_equal("0a1b", 4, "0a1", 3));
	/* only A-F fold: 'G' is not 'g' and non-letters do not fold into letters */
	CHECK(!hex_equal("g", 1, "G", 1));
	CHECK(!hex_equal("`", 1, "@", 1));
}

/* ---- bcrypt ---- */

TEST(bcrypt_known)
{
	struct passwd_cfg c = simple(PASSWD_BCRYPT, PASSWD_SALT_PREFIX);
	/* crypt_blowfish's classic vector and a $2b$/$2y$ pair computed with libxcrypt */
	CHECK(chk(&c, "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "", "U*U"));
	CHECK(!chk(&c, "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "", "U*V"));
	CHECK(chk(&c, "$2b$05$abcdefghijklmnopqrstuuWG29KuyeAicPCJODk1zjyGvyQUU2awu", NULL, "password"));
	CHECK(chk(&c, "$2y$05$abcdefghijklmnopqrstuuWG29KuyeAicPCJODk1zjyGvyQUU2awu", NULL, "password"));
	CHECK(!chk(&c, "$2b$05$abcdefghijklmnopqrstuuWG29KuyeAicPCJODk1zjyGvyQUU2awu", NULL, "Password"));
	/* the salt argument is ignored for bcrypt */
	CHECK(chk(&c, "$2b$05$abcdefghijklmnopqrstuuWG29KuyeAicPCJODk1zjyGvyQUU2awu", "junk", "password"));
	/* malformed stored strings never match */
	CHECK(!chk(&c, "$2b$05$abcdefghijklmnopqrstuuWG29KuyeAicPCJODk1zjyGvyQUU2aw", NULL, "password"));
	CHECK(!chk(&c, "$1$abc$def", NULL, "password"));
	CHECK(!chk(&c, "", NULL, ""));
	/* a NUL in the password is refused rather than truncated */
	CHECK(!passwd_check(&c, "$2b$05$abcdefghijklmnopqrstuuWG29KuyeAicPCJODk1zjyGvyQUU2awu", 60, "", 0,
			    (const uint8_t *)"password\0x", 10));
}

TEST(bcrypt_fresh)
{
	struct passwd_cfg c = simple(PASSWD_BCRYPT, PASSWD_SALT_PREFIX);
	c.salt_rounds = 5;
	char *hash = NULL, *salt = NULL;
	CHECK(passwd_hash(&c, (const uint8_t *)"s3cret", 6, &hash, &salt));
	CHECK(hash && strncmp(hash, "$2b$05$", 7) == 0 && strlen(hash) == 60);
	CHECK_STR(salt, "");
	CHECK(chk(&c, hash, salt, "s3cret"));
	CHECK(!chk(&c, hash, salt, "s3cre"));
	char *hash2 = NULL, *salt2 = NULL;
	CHECK(passwd_hash(&c, (const uint8_t *)"s3cret", 6, &hash2, &salt2));
	CHECK(hash2 && strcmp(hash, hash2) != 0); /* a fresh salt each time */
	free(hash);
	free(salt);
	free(hash2);
	free(salt2);
	/* out-of-range rounds are clamped when hashing */
	c.salt_rounds = 2;
	CHECK(passwd_hash(&c, (const uint8_t *)"x", 1, &hash, &salt));
	CHECK(hash && strncmp(hash, "$2b$05$", 7) == 0);
	free(hash);
	free(salt);
	CHECK(passwd_is_slow(&c));
}

/* ---- pbkdf2 ---- */

static struct passwd_cfg pb(int bits, unsigned iterations, unsigned dk)
{
	struct passwd_cfg c;
	passwd_default(&c);
	c.algo = PASSWD_PBKDF2;
	c.mac_bits = bits;
	c.mac_fun = bits == 160 ? PASSWD_SHA : bits <= 256 ? PASSWD_SHA256 : PASSWD_SHA512;
	c.iterations = iterations;
	c.dk_length = dk;
	return c;
}

TEST(pbkdf2_rfc6070_sha1)
{
	struct passwd_cfg c = pb(160, 1, 0);
	CHECK(chk(&c, "0c60c80f961f0e71f3a9b524af6012062fe037a6", "salt", "password"));
	c.iterations = 4096;
	CHECK(chk(&c, "4b007901b765489abead49d926f721d065a429c1", "salt", "password"));
	CHECK(!chk(&c, "4b007901b765489abead49d926f721d065a429c1", "salt", "passwore"));
	c = pb(160, 4096, 25);
	CHECK(chk(&c, "3d2eec4fe41c849b80c8d83662c0e44a8b291a964cf2f07038", "saltSALTsaltSALTsaltSALTsaltSALTsalt",
		  "passwordPASSWORDpassword"));
	c = pb(160, 4096, 16);
	CHECK(passwd_check(&c, "56fa6aa75548099dcc37d7f03425e0c3", 32, "sa\0lt", 5, (const uint8_t *)"pass\0word", 9));
	CHECK(passwd_check(&c, "56FA6AA75548099DCC37D7F03425E0C3", 32, "sa\0lt", 5, (const uint8_t *)"pass\0word", 9));
}

TEST(pbkdf2_rfc7914_sha256)
{
	struct passwd_cfg c = pb(256, 1, 64);
	CHECK(chk(&c,
		  "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc49ca9cccf179b645991664b39d77ef317c71b8"
		  "45b1e30bd509112041d3a19783",
		  "salt", "passwd"));
	c = pb(256, 80000, 64);
	CHECK(chk(&c,
		  "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56a1d425a1225833549adb841b51c9b3176a272b"
		  "debba1d078478f62b397f33c8d",
		  "NaCl", "Password"));
	CHECK(passwd_is_slow(&c));
	c = pb(256, 1000, 0);
	CHECK(!passwd_is_slow(&c));
}

TEST(pbkdf2_other_macs)
{
	/* default dk_length = the digest size (values from Python's hashlib) */
	struct passwd_cfg c = pb(512, 1000, 0);
	CHECK(chk(&c,
		  "afe6c5530785b6cc6b1c6453384731bd5ee432ee549fd42fb6695779ad8a1c5bf59de69c48f774efc4007d5298f9033c0241d5"
		  "ab69305e7b64eceeb8d834cfec",
		  "salt", "password"));
	c = pb(224, 10, 0);
	CHECK(chk(&c, "ae79fcd9e9144f7294b020432b6946b9f290bd544b61885ca8093775", "salt", "password"));
	c = pb(384, 10, 0);
	CHECK(chk(&c, "e03f8ca570b98475a9bcd7f73442f3990c3ec87f8815478954ceb62ac2f3d709891aadcb5f5c9485c13e79e20a46a146",
		  "salt", "password"));
}

TEST(hash_roundtrip_every_algorithm)
{
	struct passwd_cfg cfgs[] = {
		simple(PASSWD_PLAIN, PASSWD_SALT_PREFIX), simple(PASSWD_MD5, PASSWD_SALT_PREFIX),
		simple(PASSWD_SHA, PASSWD_SALT_SUFFIX),   simple(PASSWD_SHA256, PASSWD_SALT_DISABLE),
		simple(PASSWD_SHA512, PASSWD_SALT_PREFIX), pb(256, 10, 0), pb(160, 3, 40),
	};
	for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
		char *hash = NULL, *salt = NULL;
		CHECK(passwd_hash(&cfgs[i], (const uint8_t *)"pa ss", 5, &hash, &salt));
		if (!hash)
			continue;
		if (cfgs[i].algo == PASSWD_PLAIN) {
			CHECK_STR(salt, "");
			CHECK_STR(hash, "pa ss");
		} else {
			CHECK(strlen(salt) == 32 && strspn(salt, "0123456789abcdef") == 32);
			CHECK(strspn(hash, "0123456789abcdef") == strlen(hash));
		}
		CHECK(chk(&cfgs[i], hash, salt, "pa ss"));
		CHECK(!chk(&cfgs[i], hash, salt, "pa sS"));
		free(hash);
		free(salt);
	}
	struct passwd_cfg c = pb(160, 3, 40);
	char *hash = NULL, *salt = NULL;
	CHECK(passwd_hash(&c, (const uint8_t *)"x", 1, &hash, &salt));
	CHECK(hash && strlen(hash) == 80);
	free(hash);
	free(salt);
	CHECK(!passwd_hash(&c, NULL, 0, &hash, &salt));
}

/* ---- parsing ---- */

static bool parse(const char *text, struct passwd_cfg *out, char *err, size_t errlen)
{
	struct hocon_error herr;
	struct hocon_node *root = hocon_parse_string(text, strlen(text), "t.conf", &herr);
	if (!root) {
		snprintf(err, errlen, "hocon: %s", herr.msg);
		return false;
	}
	const struct hocon_member *m = hocon_get_member(root, "password_hash_algorithm");
	struct cfg_reader r = { .err = err, .errlen = errlen };
	size_t old = cfgr_path_push(&r, "password_hash_algorithm");
	bool ok = m && passwd_parse(&r, m, out);
	cfgr_path_pop(&r, old);
	hocon_free(root);
	return ok;
}

TEST(parse_good)
{
	char err[512] = "";
	struct passwd_cfg c;
	passwd_default(&c);
	CHECK(c.algo == PASSWD_SHA256 && c.salt_position == PASSWD_SALT_PREFIX && c.salt_rounds == 10);
	CHECK(parse("password_hash_algorithm { name = sha256, salt_position = suffix }", &c, err, sizeof err));
	CHECK(c.algo == PASSWD_SHA256 && c.salt_position == PASSWD_SALT_SUFFIX);
	CHECK(parse("password_hash_algorithm { name = plain, salt_position = disable }", &c, err, sizeof err));
	CHECK(c.algo == PASSWD_PLAIN && c.salt_position == PASSWD_SALT_DISABLE);
	CHECK(parse("password_hash_algorithm { name = md5 }", &c, err, sizeof err));
	CHECK(c.algo == PASSWD_MD5 && c.salt_position == PASSWD_SALT_PREFIX);
	CHECK(parse("password_hash_algorithm { name = bcrypt }", &c, err, sizeof err));
	CHECK(c.algo == PASSWD_BCRYPT && c.salt_rounds == 10);
	CHECK(parse("password_hash_algorithm { name = bcrypt, salt_rounds = 7 }", &c, err, sizeof err));
	CHECK(c.salt_rounds == 7);
	CHECK(parse("password_hash_algorithm { name = bcrypt, salt_rounds = 20 }", &c, err, sizeof err));
	CHECK(c.salt_rounds == 10);
	CHECK(parse("password_hash_algorithm { name = bcrypt, salt_rounds = 1 }", &c, err, sizeof err));
	CHECK(c.salt_rounds == 5);
	CHECK(parse("password_hash_algorithm { name = pbkdf2, mac_fun = sha256, iterations = 4096 }", &c, err, sizeof err));
	CHECK(c.algo == PASSWD_PBKDF2 && c.mac_bits == 256 && c.iterations == 4096 && c.dk_length == 0);
	CHECK(passwd_is_slow(&c));
	CHECK(parse("password_hash_algorithm { name = pbkdf2, mac_fun = sha, iterations = 10, dk_length = 16 }", &c, err,
		    sizeof err));
	CHECK(c.mac_bits == 160 && c.mac_fun == PASSWD_SHA && c.dk_length == 16);
	CHECK(!passwd_is_slow(&c));
	CHECK(parse("password_hash_algorithm { name = pbkdf2, mac_fun = sha384, iterations = 1 }", &c, err, sizeof err));
	CHECK(c.mac_bits == 384);
	CHECK(parse("password_hash_algorithm { name = pbkdf2, mac_fun = sha224, iterations = 1 }", &c, err, sizeof err));
	CHECK(c.mac_bits == 224);
	CHECK(parse("password_hash_algorithm { name = pbkdf2, mac_fun = sha512, iterations = 1 }", &c, err, sizeof err));
	CHECK(c.mac_bits == 512 && c.mac_fun == PASSWD_SHA512);
}

static void parse_bad(const char *text, const char *want)
{
	char err[512] = "";
	struct passwd_cfg c;
	passwd_default(&c);
	bool ok = parse(text, &c, err, sizeof err);
	CHECK(!ok);
	if (!strstr(err, want) || strncmp(err, "t.conf:", 7) != 0) {
		fprintf(stderr, "  config: %s\n  error:  %s\n  wanted: %s\n", text, err, want);
		CHECK(0);
	}
	/* a failed parse leaves the output as it was */
	CHECK(c.algo == PASSWD_SHA256);
}

TEST(parse_errors)
{
	parse_bad("password_hash_algorithm { name = sha256, salt = x }", "password_hash_algorithm.salt: unknown key");
	parse_bad("password_hash_algorithm { name = sha1 }", "expected one of plain, md5, sha, sha256, sha512, bcrypt");
	parse_bad("password_hash_algorithm { salt_position = prefix }", "name is required");
	parse_bad("password_hash_algorithm { name = sha256, salt_position = middle }", "salt_position");
	parse_bad("password_hash_algorithm { name = pbkdf2, mac_fun = md4, iterations = 1 }", "md4 is not supported");
	parse_bad("password_hash_algorithm { name = pbkdf2, mac_fun = md5, iterations = 1 }", "md5 is not supported");
	parse_bad("password_hash_algorithm { name = pbkdf2, mac_fun = ripemd160, iterations = 1 }",
		  "ripemd160 is not supported");
	parse_bad("password_hash_algorithm { name = pbkdf2, mac_fun = sha256 }", "pbkdf2 needs iterations");
	parse_bad("password_hash_algorithm { name = pbkdf2, iterations = 3 }", "pbkdf2 needs mac_fun");
	parse_bad("password_hash_algorithm { name = pbkdf2, mac_fun = sha256, iterations = 0 }", "iterations");
	parse_bad("password_hash_algorithm { name = pbkdf2, mac_fun = sha256, iterations = 1, dk_length = 0 }",
		  "dk_length");
	parse_bad("password_hash_algorithm { name = bcrypt, salt_position = prefix }",
		  "salt_position: applies only to plain, md5, sha, sha256 and sha512, not to name = bcrypt");
	parse_bad("password_hash_algorithm { name = sha256, salt_rounds = 5 }", "salt_rounds: applies only to bcrypt");
	parse_bad("password_hash_algorithm { name = md5, iterations = 5 }", "iterations: applies only to pbkdf2");
	parse_bad("password_hash_algorithm = sha256", "expected an object");
	/* line numbers point at the offending key */
	char err[512] = "";
	struct passwd_cfg c;
	CHECK(!parse("password_hash_algorithm {\n  name = sha256\n  bogus = 1\n}", &c, err, sizeof err));
	CHECK(strncmp(err, "t.conf:3: ", 10) == 0);
}

int main(void)
{
	RUN(simple_vectors);
	RUN(salt_disable_ignores_salt);
	RUN(plain_is_case_sensitive);
	RUN(absent_password_never_matches);
	RUN(ct_equal);
	RUN(bcrypt_known);
	RUN(bcrypt_fresh);
	RUN(pbkdf2_rfc6070_sha1);
	RUN(pbkdf2_rfc7914_sha256);
	RUN(pbkdf2_other_macs);
	RUN(hash_roundtrip_every_algorithm);
	RUN(parse_good);
	RUN(parse_errors);
	return unit_summary();
}
