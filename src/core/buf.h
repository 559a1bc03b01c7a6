/* Growable byte buffer: data[0..len) is content, cap is allocated size. */
#ifndef BW_BUF_H
#define BW_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
	uint8_t *data;
	size_t len, cap;
};

/* Make room for at least extra more bytes; returns pointer to data + len. */
uint8_t *buf_reserve(struct buf *b, size_t extra);
/* Append n bytes. */
void buf_append(struct buf *b, const void *p, size_t n);
/* Append a NUL-terminated string without its NUL. */
void buf_append_str(struct buf *b, const char *s);
/* printf-append. */
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drop the first n bytes. */
void buf_consume(struct buf *b, size_t n);
/* Free storage and reset to empty. */
void buf_free(struct buf *b);

#endif
