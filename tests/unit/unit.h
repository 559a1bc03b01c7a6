/* Minimal unit-test harness. A test file defines TEST(name) functions and a
 * main() that calls RUN(name) for each, then returns unit_summary().
 *
 *   TEST(frame_need_more) { CHECK(x == 1); CHECK_EQ_INT(a, b); CHECK_MEM(p, q, n); }
 *   int main(void) { RUN(frame_need_more); return unit_summary(); }
 *
 * A failed CHECK prints file:line and the expression, marks the test failed and
 * continues; unit_summary() returns non-zero when anything failed. */
#ifndef BW_UNIT_H
#define BW_UNIT_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int unit_failures, unit_tests, unit_current_failed;

#define TEST(name) static void test_##name(void)

#define RUN(name)                                                          \
	do {                                                               \
		unit_current_failed = 0;                                   \
		unit_tests++;                                              \
		test_##name();                                             \
		if (unit_current_failed)                                   \
			fprintf(stderr, "FAIL %s\n", #name);               \
	} while (0)

#define CHECK(cond)                                                                          \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
			unit_failures++;                                                     \
			unit_current_failed = 1;                                             \
		}                                                                            \
	} while (0)

#define CHECK_EQ_INT(a, b)                                                                        \
	do {                                                                                      \
		long long va_ = (long long)(a), vb_ = (long long)(b);                             \
		if (va_ != vb_) {                                                                 \
			fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, \
				#a, #b, va_, vb_);                                                \
			unit_failures++;                                                          \
			unit_current_failed = 1;                                                  \
		}                                                                                 \
	} while (0)

#define CHECK_STR(a, b)                                                                           \
	do {                                                                                      \
		const char *sa_ = (a), *sb_ = (b);                                                \
		if (!sa_ || !sb_ || strcmp(sa_, sb_) != 0) {                                      \
			fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__,   \
				__LINE__, #a, #b, sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");    \
			unit_failures++;                                                          \
			unit_current_failed = 1;                                                  \
		}                                                                                 \
	} while (0)

#define CHECK_MEM(a, b, n)                                                                          \
	do {                                                                                        \
		if (memcmp((a), (b), (n)) != 0) {                                                   \
			fprintf(stderr, "%s:%d: memory %s == %s (%zu bytes) differs\n", __FILE__,   \
				__LINE__, #a, #b, (size_t)(n));                                     \
			unit_failures++;                                                            \
			unit_current_failed = 1;                                                    \
		}                                                                                   \
	} while (0)

static inline int unit_summary(void)
{
	fprintf(stderr, "%d tests, %d failed checks\n", unit_tests, unit_failures);
	return unit_failures ? 1 : 0;
}

/* Copy n bytes so they end exactly at an unreadable page: any read past the end
 * faults. Returns a pointer to the copy; release with unit_guard_free. */
static inline const uint8_t *unit_guard_copy(const void *src, size_t n, void **base, size_t *maplen)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	size_t data_pages = (n + pg - 1) / pg;
	if (data_pages == 0)
		data_pages = 1;
	*maplen = (data_pages + 1) * pg;
	uint8_t *m = mmap(NULL, *maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		abort();
	mprotect(m + data_pages * pg, pg, PROT_NONE);
	uint8_t *dst = m + data_pages * pg - n;
	if (n)
		memcpy(dst, src, n);
	*base = m;
	return dst;
}

static inline void unit_guard_free(void *base, size_t maplen)
{
	munmap(base, maplen);
}

#endif
