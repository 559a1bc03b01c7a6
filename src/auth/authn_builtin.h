/* Bootstrap files of the password-based built-in database (reference/emqx.md §4.7),
 * exposed for tests and tools. The authenticator itself registers through authn.h.
 *
 * Format by extension:
 *   .csv   a header line naming the columns, then one user per line. bootstrap_type
 *          plain: user_id,password,is_superuser; hash: user_id,password_hash,salt,
 *          is_superuser (salt and is_superuser optional, columns in any order). Fields
 *          may be "quoted" (RFC 4180, "" inside) to hold commas; blank lines are skipped.
 *   .json  an array of objects with the same keys.
 * is_superuser: true/false/1/0 (empty or absent: false).
 */
#ifndef BW_AUTHN_BUILTIN_H
#define BW_AUTHN_BUILTIN_H

#include <stdbool.h>
#include <stddef.h>

struct boot_user {
	char *user_id;
	size_t user_id_len;
	char *secret;       /* plain: the password; hash: password_hash */
	size_t secret_len;
	char *salt;         /* hash only; NULL when absent */
	size_t salt_len;
	bool is_superuser;
	int line;           /* where the user starts in the file */
};

struct boot_list {
	struct boot_user *v;
	size_t n, cap;
};

/* Parse the text of a bootstrap file (len bytes, need not be NUL-terminated; name is used in
 * messages only): CSV, or JSON when json; type 0 = plain, 1 = hash. On success *out holds
 * the users (the caller frees it with builtin_boot_free); on failure *out is empty and err
 * holds "name:line: message", line >= 1 being where the problem is. */
bool builtin_boot_parse(const char *name, const char *text, size_t len, bool json, int type, struct boot_list *out,
			char *err, size_t errlen);
/* Read a bootstrap file (format by extension) and parse it with builtin_boot_parse. */
bool builtin_boot_read(const char *path, int type, struct boot_list *out, char *err, size_t errlen);
/* Free what builtin_boot_parse or builtin_boot_read returned. */
void builtin_boot_free(struct boot_list *l);

#endif
