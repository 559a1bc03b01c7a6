/* Allocation with one out-of-memory policy: log and abort.
 * A broker that cannot allocate a few bytes cannot keep any promise it made to
 * clients, so every allocation goes through these wrappers and never returns NULL. */
#ifndef BW_ALLOC_H
#define BW_ALLOC_H

#include <stddef.h>

/* malloc/calloc/realloc/strdup that abort on failure. */
void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* Copy of the first n bytes of s, NUL-terminated. */
char *xstrndup(const char *s, size_t n);
/* Copy of n bytes. */
void *xmemdup(const void *p, size_t n);
/* printf into a fresh allocation. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
