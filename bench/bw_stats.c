/* bw_stats.c: bwbench's latency reservoirs, percentiles, the figure list and small helpers.
 *
 * Each worker keeps its own preallocated reservoir (Algorithm R: a uniform sample of at most
 * cap values, plus the exact count and maximum), so recording a latency is a store and
 * never allocates. At the end the reservoirs are merged with weights (a sample of a
 * reservoir that saw `seen` values and kept `n` stands for seen / n values), sorted, and
 * the percentiles read off the cumulative weight.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bwbench.h"

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p) {
		fprintf(stderr, "bwbench: out of memory\n");
		abort();
	}
	return p;
}

void *xrealloc(void *p, size_t size)
{
	p = realloc(p, size ? size : 1);
	if (!p) {
		fprintf(stderr, "bwbench: out of memory\n");
		abort();
	}
	return p;
}

void lat_init(struct lat_res *r, uint32_t cap, uint64_t seed)
{
	memset(r, 0, sizeof *r);
	r->cap = cap ? cap : 1;
	r->v = xcalloc(r->cap, sizeof *r->v);
	r->rng = seed * 0x9E3779B97F4A7C15ull + 1;
}

void lat_add(struct lat_res *r, uint64_t ns)
{
	r->seen++;
	if (ns > r->max)
		r->max = ns;
	if (r->n < r->cap) {
		r->v[r->n++] = ns;
		return;
	}
	/* xorshift64 */
	uint64_t x = r->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	r->rng = x;
	uint64_t j = (uint64_t)(((unsigned __int128)x * r->seen) >> 64); /* uniform in [0, seen) */
	if (j < r->cap)
		r->v[j] = ns;
}

struct wsample {
	uint64_t v;
	double w;
};

static int cmp_wsample(const void *a, const void *b)
{
	uint64_t x = ((const struct wsample *)a)->v, y = ((const struct wsample *)b)->v;
	return x < y ? -1 : x > y;
}

void lat_summarize(struct lat_res **rs, int nres, struct lat_summary *out)
{
	memset(out, 0, sizeof *out);
	size_t total = 0;
	for (int i = 0; i < nres; i++) {
		total += rs[i]->n;
		out->n += rs[i]->seen;
		if (rs[i]->max > out->max)
			out->max = rs[i]->max;
	}
	if (!total)
		return;
	struct wsample *s = xcalloc(total, sizeof *s);
	size_t k = 0;
	double wsum = 0, vsum = 0;
	for (int i = 0; i < nres; i++) {
		double w = rs[i]->n ? (double)rs[i]->seen / rs[i]->n : 0;
		for (uint32_t j = 0; j < rs[i]->n; j++) {
			s[k].v = rs[i]->v[j];
			s[k++].w = w;
			wsum += w;
			vsum += w * (double)rs[i]->v[j];
		}
	}
	qsort(s, total, sizeof *s, cmp_wsample);
	const double q[3] = { 0.50, 0.90, 0.99 };
	uint64_t *dst[3] = { &out->p50, &out->p90, &out->p99 };
	double cum = 0;
	int qi = 0;
	for (size_t i = 0; i < total && qi < 3; i++) {
		cum += s[i].w;
		while (qi < 3 && cum >= q[qi] * wsum)
			*dst[qi++] = s[i].v;
	}
	while (qi < 3)
		*dst[qi++] = s[total - 1].v;
	out->mean = vsum / wsum;
	free(s);
}

void lat_free(struct lat_res *r)
{
	free(r->v);
	r->v = NULL;
}

static struct figure *fig_new(struct figures *fs, const char *key, const char *label)
{
	if (fs->n == fs->cap) {
		fs->cap = fs->cap ? fs->cap * 2 : 32;
		fs->f = xrealloc(fs->f, (size_t)fs->cap * sizeof *fs->f);
	}
	struct figure *f = &fs->f[fs->n++];
	memset(f, 0, sizeof *f);
	f->key = key;
	f->label = label;
	return f;
}

void fig_add(struct figures *fs, const char *key, const char *label, double value, int decimals)
{
	struct figure *f = fig_new(fs, key, label);
	f->value = value;
	f->decimals = decimals;
}

void fig_null(struct figures *fs, const char *key, const char *label)
{
	fig_new(fs, key, label)->null = true;
}

void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s && *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}
