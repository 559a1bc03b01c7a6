/* Regular expressions matched in linear time (relin.c): POSIX ERE syntax validated by glibc's
 * regcomp, matched by a Thompson NFA simulation, O(length x program size), so a pattern written
 * by an operator cannot let a client stall a worker with a long crafted string (glibc's regexec
 * can take seconds on a 64 KB client ID). Used for ban patterns and acl.conf {re, ...}.
 *
 * Unanchored search, as regexec: the pattern matches anywhere unless it uses ^ / $. Bytes, C
 * locale; "." matches any byte but NUL. Refused at compile time (with a one-line reason):
 * back-references, GNU escapes (\w, \b, \<, ...), [=e=] and [.c.], a repeated anchor or group
 * containing one, and patterns whose expanded program would be too large (or too costly for
 * glibc's regcomp, which validates the syntax). Compiled patterns are immutable: thread-safe matching. */
#ifndef BW_RELIN_H
#define BW_RELIN_H

#include <stdbool.h>
#include <stddef.h>

#define RELIN_PATTERN_MAX 1024 /* bytes of pattern */

struct relin;

/* Validate and compile pattern; false with a one-line reason in err. */
bool relin_compile(const char *pattern, struct relin **out, char *err, size_t errlen);
/* Does the pattern match anywhere in s[0..len)? */
bool relin_match(const struct relin *re, const void *s, size_t len);
void relin_free(struct relin *re);

#endif
