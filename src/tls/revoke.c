/* Revocation of client certificates: crlfile sets, the distribution-point CRL cache and
 * OCSP answers for client certificates (see revoke.h and docs/REVOCATION.md).
 *
 * Data and locking. One rwlock (writer-preferring) guards everything workers read:
 * every listener's crlfile set and CA certificates, the distribution-point cache and the
 * OCSP records. Readers (handshake checks, live rechecks, the start of async checks) hold
 * it for a lookup only; writers are the main loop (fetch completions, refresh timers,
 * reloads) and hold it to swap pointers only: parsing, signature checks of fetched data
 * and every network call happen outside it. A CRL replaced under the write lock is freed
 * after the lock is released, when no reader can still hold it.
 *
 * Per CRL, which issuer keys verified its signature is remembered (a small table under
 * the entry's own mutex), so a CRL whose issuer is not in cacertfile is verified once
 * against the key of the first chain that needs it, and live rechecks (which have only
 * key hashes) can tell which CRLs they may trust.
 *
 * Everything about fetching (the table of fetches in flight, their waiters, refresh and
 * sweep timers) belongs to the main loop and is touched on its thread only.
 */
#include "tls/revoke.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "config/config.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/hash.h"
#include "core/hmap.h"
#include "core/list.h"
#include "core/log.h"
#include "net/http.h"
#include "net/loop.h"
#include "tls/ocsp_util.h"

#define RV_RETRY_MS 5000u            /* retry after a failed refresh */
#define RV_WARN_MS 60000u            /* at most one warning per minute per subject */
#define RV_OCSP_TTL_S 300            /* an answer without nextUpdate is kept this long */
#define RV_OCSP_UNKNOWN_TTL_S 60     /* "unknown" is often "not published yet": ask again soon */
#define RV_OCSP_REFRESH_S 300        /* retained answers are refreshed at least this often */
#define RV_OCSP_CAPACITY 50000u      /* cached OCSP answers (retained ones are never evicted) */
#define RV_SWEEP_MS 2000u            /* OCSP record sweep: refreshes and expiry */
#define RV_MAX_URLS 4                /* distribution point URLs used per certificate */
#define RV_URL_MAX 1024
#define RV_CRL_MAX_BYTES (256u << 20) /* a crlfile */
#define RV_CRL_MAX_FETCH (64u << 20)  /* a fetched CRL */
#define RV_NVRES 4

/* ---- data -------------------------------------------------------------------------- */

/* One CRL (from a file or a distribution point). */
struct crl_entry {
	X509_CRL *crl;
	char *src;                /* file path or URL, for messages */
	char issuer_str[256];     /* the CRL issuer, one line */
	uint8_t name_hash[20];    /* SHA-1 of the DER issuer name */
	int64_t next_update;      /* Unix seconds, 0 = none */
	pthread_mutex_t vlock;    /* guards vres, nvres, issuer */
	struct {
		uint8_t key_hash[20];
		bool ok;
	} vres[RV_NVRES];         /* signature verification results per issuer key */
	unsigned nvres;
	X509 *issuer;             /* a certificate whose key verified the signature */
	_Atomic uint64_t last_warn;
};

struct crlset {
	struct crl_entry **v;
	size_t n;
};

struct rv_listener {
	const struct cfg_listener *cfg;
	char *id;
	char **files;
	size_t nfiles;
	char *cafile;
	bool chain, dp, ocsp, ocsp_closed;
	uint64_t ocsp_timeout_ms;
	/* under rv->lock: */
	struct crlset set;
	STACK_OF(X509) *cas;      /* cacertfile */
	X509_STORE *store;        /* cacertfile as a store (OCSP responder chains) */
};

/* A cached distribution-point CRL. */
struct dp_entry {
	struct hmap_node node;    /* rv->dp, by URL */
	struct list fifo;         /* rv->dp_fifo, oldest inserted first */
	char *url;
	struct crl_entry *ce;     /* verified against ce->issuer */
	uint8_t key_hash[20];     /* of the issuer key that verified it */
	struct timer refresh;     /* main loop */
	struct revoke *rv;
	_Atomic uint64_t last_warn;
	bool failing;             /* main loop: the last refresh failed */
};

/* What is known about one client certificate from OCSP. */
struct ocsp_rec {
	struct hmap_node node;    /* rv->oc, by ref */
	struct list lru;          /* rv->oc_lru, oldest first */
	struct cert_ref ref;
	X509 *issuer;
	ASN1_INTEGER *serial;
	char *url;
	struct rv_listener *rl;
	int status;               /* V_OCSP_CERTSTATUS_*, -1 = no answer */
	int reason;
	int64_t this_update;
	int64_t valid_until;      /* the answer is used until then (nextUpdate or TTL) */
	int64_t fetched;          /* wall seconds of the last answer */
	int64_t retry_at;         /* wall seconds: after a failure */
	_Atomic int retain;
	bool fetching;            /* main loop */
	_Atomic uint64_t last_warn;
};

enum { FETCH_DP, FETCH_OCSP };

struct fetch {
	struct hmap_node node;    /* rv->fetches, by key */
	char *key;
	int kind;
	char *url;
	X509 *issuer;
	struct ocsp_rec *rec;     /* OCSP */
	OCSP_REQUEST *req;
	OCSP_CERTID *cid;
	struct list waiters;
	struct http_call *call;
	struct revoke *rv;
	bool refresh;             /* DP: refresh of a cached entry */
};

struct need {
	int kind;
	char *url;
	X509 *cert;
	X509 *issuer;
};

struct revoke_wait {
	_Atomic int refs;         /* the caller's handle + the pipeline */
	bool cancelled;           /* thread of `on` only */
	struct revoke *rv;
	struct rv_listener *rl;
	STACK_OF(X509) *chain;
	struct loop *on;
	void (*done)(void *arg, enum revoke_verdict v, const char *why);
	void *arg;
	int outstanding;          /* main loop */
	struct need *needs;
	size_t nneeds;
	enum revoke_verdict v;
	char why[256];
};

struct waiter {
	struct list link;
	struct revoke_wait *w;
};

struct revoke {
	pthread_rwlock_t lock;
	struct rv_listener *ls;
	size_t nls;
	bool crl_closed;
	uint64_t refresh_ms, http_timeout_ms;
	uint32_t capacity;
	struct http_client *http;
	struct loop *main;
	/* under lock: */
	struct hmap dp;
	struct list dp_fifo;
	size_t ndp;
	struct hmap oc;
	struct list oc_lru;
	size_t noc;
	/* main loop only: */
	struct hmap fetches;
	struct timer sweep;
	void (*on_change)(void *arg);
	void *change_arg;
};

/* The network, replaceable by unit tests. */
static struct http_call *(*rv_http_start)(struct http_client *hc, const struct http_request *req, struct loop *l,
					  http_done_fn done, void *arg) = http_start;
static void (*rv_http_cancel)(struct http_call *call) = http_cancel;
/* Wall clock, replaceable by unit tests. */
static int64_t (*rv_now)(void) = clock_wall_s;

/* ---- small helpers ----------------------------------------------------------------- */

/* Rate limit of warnings about one URL, by hash: kind 0 fetch failures, 1 fail_mode decisions. */
enum { WARN_FETCH, WARN_DECIDE };
static _Atomic uint64_t url_warn[2][256];

static _Atomic uint64_t *url_warn_slot(int kind, const char *url)
{
	return &url_warn[kind][hash_bytes(url, strlen(url)) & 255];
}

static bool warn_due(_Atomic uint64_t *last)
{
	uint64_t now = clock_mono_ms() + 1, prev = atomic_load(last);
	if (prev && now - prev < RV_WARN_MS)
		return false;
	return atomic_compare_exchange_strong(last, &prev, now);
}

static void name_hash(const X509_NAME *n, uint8_t out[20])
{
	unsigned len = 0;
	if (!X509_NAME_digest(n, EVP_sha1(), out, &len) || len != 20)
		memset(out, 0, 20);
}

static void key_hash(const X509 *c, uint8_t out[20])
{
	unsigned len = 0;
	if (!X509_pubkey_digest(c, EVP_sha1(), out, &len) || len != 20)
		memset(out, 0, 20);
}

static uint64_t str_hash(const char *s)
{
	return hash_bytes(s, strlen(s));
}

static void appendf(char **report, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void appendf(char **report, const char *fmt, ...)
{
	if (!report)
		return;
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	size_t old = *report ? strlen(*report) : 0, add = strlen(line);
	*report = xrealloc(*report, old + add + 2);
	memcpy(*report + old, line, add);
	(*report)[old + add] = '\n';
	(*report)[old + add + 1] = 0;
}

static const char *verdict_name(enum revoke_verdict v)
{
	switch (v) {
	case REVOKE_GOOD: return "good";
	case REVOKE_REVOKED: return "revoked";
	case REVOKE_FAILED: return "failed";
	case REVOKE_PENDING: return "pending";
	}
	return "?";
}

/* ---- CRL entries ------------------------------------------------------------------- */

static void crl_entry_free(struct crl_entry *ce)
{
	if (!ce)
		return;
	X509_CRL_free(ce->crl);
	X509_free(ce->issuer);
	pthread_mutex_destroy(&ce->vlock);
	free(ce->src);
	free(ce);
}

static struct crl_entry *crl_entry_new(X509_CRL *crl, const char *src)
{
	struct crl_entry *ce = xcalloc(1, sizeof *ce);
	ce->crl = crl;
	ce->src = xstrdup(src);
	pthread_mutex_init(&ce->vlock, NULL);
	name_hash(X509_CRL_get_issuer(crl), ce->name_hash);
	ocsp_util_name(X509_CRL_get_issuer(crl), ce->issuer_str, sizeof ce->issuer_str);
	ce->next_update = ocsp_util_time(X509_CRL_get0_nextUpdate(crl));
	/* Sort the revoked list now, single-threaded: lookups then never write. */
	ASN1_INTEGER *zero = ASN1_INTEGER_new();
	X509_REVOKED *r;
	if (zero) {
		X509_CRL_get0_by_serial(crl, &r, zero);
		ASN1_INTEGER_free(zero);
	}
	ERR_clear_error();
	return ce;
}

static bool crl_expired(const struct crl_entry *ce, int64_t now)
{
	return ce->next_update && ce->next_update < now;
}

/* Does the CRL list serial (not counting removeFromCRL entries of delta CRLs)? */
static bool crl_lists(const struct crl_entry *ce, const ASN1_INTEGER *serial)
{
	X509_REVOKED *r = NULL;
	return X509_CRL_get0_by_serial(ce->crl, &r, (ASN1_INTEGER *)serial) == 1;
}

/* Has issuer's key (hash kh) verified the CRL? Verifies and remembers on first use.
 * Logs (rate-limited) a CRL whose signature does not verify. */
static bool crl_verified_by(struct crl_entry *ce, X509 *issuer, const uint8_t kh[20])
{
	bool ok = false, known = false;
	pthread_mutex_lock(&ce->vlock);
	for (unsigned i = 0; i < ce->nvres; i++)
		if (!memcmp(ce->vres[i].key_hash, kh, 20)) {
			ok = ce->vres[i].ok;
			known = true;
			break;
		}
	if (!known && issuer) {
		EVP_PKEY *pk = X509_get0_pubkey(issuer);
		ok = pk && X509_CRL_verify(ce->crl, pk) > 0;
		ERR_clear_error();
		if (ce->nvres < RV_NVRES) {
			memcpy(ce->vres[ce->nvres].key_hash, kh, 20);
			ce->vres[ce->nvres].ok = ok;
			ce->nvres++;
		}
		if (ok && !ce->issuer && X509_up_ref(issuer))
			ce->issuer = issuer;
	}
	pthread_mutex_unlock(&ce->vlock);
	if (!known && issuer && !ok && warn_due(&ce->last_warn))
		log_warn("CRL %s of %s: signature does not verify with the issuer's key; CRL ignored", ce->src,
			 ce->issuer_str);
	return ok;
}

/* Does the CRL apply to certificates issued by issuer (name and key)? */
static bool crl_applies(struct crl_entry *ce, const uint8_t nh[20], X509 *issuer, const uint8_t kh[20])
{
	if (memcmp(ce->name_hash, nh, 20) != 0)
		return false;
	if (issuer && X509_NAME_cmp(X509_CRL_get_issuer(ce->crl), X509_get_subject_name(issuer)) != 0)
		return false;
	return crl_verified_by(ce, issuer, kh);
}

static void crlset_free(struct crlset *s)
{
	for (size_t i = 0; i < s->n; i++)
		crl_entry_free(s->v[i]);
	free(s->v);
	s->v = NULL;
	s->n = 0;
}

/* Read a whole file (bounded). */
static uint8_t *read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	size_t cap = 65536, n = 0;
	uint8_t *buf = xmalloc(cap);
	for (;;) {
		if (n == cap) {
			if (cap >= max) {
				snprintf(err, errlen, "%s: larger than %zu bytes", path, max);
				free(buf);
				fclose(f);
				return NULL;
			}
			cap *= 2;
			buf = xrealloc(buf, cap);
		}
		size_t r = fread(buf + n, 1, cap - n, f);
		n += r;
		if (r == 0) {
			if (ferror(f)) {
				snprintf(err, errlen, "%s: %s", path, strerror(errno));
				free(buf);
				fclose(f);
				return NULL;
			}
			break;
		}
	}
	fclose(f);
	*len = n;
	return buf;
}

static STACK_OF(X509) *load_cas(const char *path)
{
	STACK_OF(X509) *s = sk_X509_new_null();
	if (!path || !*path || !s)
		return s;
	BIO *b = BIO_new_file(path, "r");
	if (!b) {
		ERR_clear_error();
		return s;
	}
	X509 *x;
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)))
		sk_X509_push(s, x);
	ERR_clear_error();
	BIO_free(b);
	return s;
}

static X509_STORE *store_from(STACK_OF(X509) *cas)
{
	X509_STORE *st = X509_STORE_new();
	if (!st)
		return NULL;
	for (int i = 0; i < sk_X509_num(cas); i++)
		X509_STORE_add_cert(st, sk_X509_value(cas, i));
	ERR_clear_error();
	return st;
}

/* Load a listener's crlfile set. Each CRL is checked against the issuers in cas (and the
 * issuers learnt by prev) with its name; a CRL whose issuer is elsewhere (the client's
 * chain) is verified when a chain first needs it. */
static bool load_set(const struct rv_listener *rl, STACK_OF(X509) *cas, const struct crlset *prev, struct crlset *out,
		     char *err, size_t errlen)
{
	struct crlset s = { 0 };
	for (size_t i = 0; i < rl->nfiles; i++) {
		size_t len;
		uint8_t *data = read_file(rl->files[i], RV_CRL_MAX_BYTES, &len, err, errlen);
		if (!data)
			goto fail;
		char perr[256];
		STACK_OF(X509_CRL) *crls = ocsp_util_parse_crls(data, len, perr, sizeof perr);
		free(data);
		if (!crls) {
			snprintf(err, errlen, "%s: %s", rl->files[i], perr);
			goto fail;
		}
		X509_CRL *c;
		while ((c = sk_X509_CRL_shift(crls))) {
			struct crl_entry *ce = crl_entry_new(c, rl->files[i]);
			s.v = xrealloc(s.v, (s.n + 1) * sizeof *s.v);
			s.v[s.n++] = ce;
			bool candidate = false, ok = false;
			for (int k = 0; k < sk_X509_num(cas) && !ok; k++) {
				X509 *ca = sk_X509_value(cas, k);
				if (X509_NAME_cmp(X509_get_subject_name(ca), X509_CRL_get_issuer(c)) != 0)
					continue;
				candidate = true;
				uint8_t kh[20];
				key_hash(ca, kh);
				atomic_store(&ce->last_warn, clock_mono_ms() + 1); /* logged below, once */
				ok = crl_verified_by(ce, ca, kh);
			}
			for (size_t k = 0; prev && k < prev->n && !ok; k++) {
				X509 *iss = prev->v[k]->issuer;
				if (!iss || memcmp(prev->v[k]->name_hash, ce->name_hash, 20) != 0 ||
				    X509_NAME_cmp(X509_get_subject_name(iss), X509_CRL_get_issuer(c)) != 0)
					continue;
				uint8_t kh[20];
				key_hash(iss, kh);
				ok = crl_verified_by(ce, iss, kh);
			}
			atomic_store(&ce->last_warn, 0);
			if (!ok && candidate)
				log_warn("listener %s: crlfile %s: the CRL of %s does not verify against its issuer in "
					 "cacertfile; it is ignored for certificates of that issuer", rl->id, rl->files[i],
					 ce->issuer_str);
			else if (!ok)
				log_debug("listener %s: crlfile %s: the issuer of %s is not in cacertfile; the CRL will be "
					  "verified against the client's chain", rl->id, rl->files[i], ce->issuer_str);
			if (crl_expired(ce, rv_now()))
				log_warn("listener %s: crlfile %s: the CRL of %s has expired (nextUpdate passed)", rl->id,
					 rl->files[i], ce->issuer_str);
		}
		sk_X509_CRL_free(crls);
	}
	*out = s;
	return true;
fail:
	crlset_free(&s);
	return false;
}

/* Same CRLs (by DER) in both sets, in any order? */
static bool crl_same(X509_CRL *a, X509_CRL *b)
{
	return X509_CRL_cmp(a, b) == 0 && X509_CRL_match(a, b) == 0;
}

static bool crlset_equal(const struct crlset *a, const struct crlset *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++) {
		bool found = false;
		for (size_t j = 0; j < b->n && !found; j++)
			found = crl_same(a->v[i]->crl, b->v[j]->crl);
		if (!found)
			return false;
	}
	return true;
}

/* Do two CRLs revoke the same serials? */
static bool revoked_equal(X509_CRL *a, X509_CRL *b)
{
	STACK_OF(X509_REVOKED) *ra = X509_CRL_get_REVOKED(a), *rb = X509_CRL_get_REVOKED(b);
	int na = ra ? sk_X509_REVOKED_num(ra) : 0, nb = rb ? sk_X509_REVOKED_num(rb) : 0;
	if (na != nb)
		return false;
	for (int i = 0; i < na; i++) {
		X509_REVOKED *r;
		const ASN1_INTEGER *s = X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(ra, i));
		if (X509_CRL_get0_by_serial(b, &r, (ASN1_INTEGER *)s) != 1)
			return false;
	}
	return true;
}

/* ---- listeners ----------------------------------------------------------------------- */

static struct rv_listener *find_listener(struct revoke *rv, const struct cfg_listener *l)
{
	if (!rv || !l)
		return NULL;
	for (size_t i = 0; i < rv->nls; i++)
		if (rv->ls[i].cfg == l)
			return &rv->ls[i];
	for (size_t i = 0; i < rv->nls; i++)
		if (l->id && !strcmp(rv->ls[i].id, l->id))
			return &rv->ls[i];
	return NULL;
}

static bool listener_active(const struct rv_listener *rl)
{
	return rl->nfiles || rl->dp || rl->ocsp;
}

/* ---- certificate fields -------------------------------------------------------------- */

static bool http_url(const char *s, size_t n)
{
	return n < RV_URL_MAX && ((n > 7 && !strncasecmp(s, "http://", 7)) || (n > 8 && !strncasecmp(s, "https://", 8))) &&
	       !memchr(s, 0, n);
}

/* The http(s) fullName URIs of c's CRL Distribution Points (at most RV_MAX_URLS). */
static size_t dp_urls(X509 *c, char urls[RV_MAX_URLS][RV_URL_MAX])
{
	size_t n = 0;
	STACK_OF(DIST_POINT) *dps = X509_get_ext_d2i(c, NID_crl_distribution_points, NULL, NULL);
	for (int i = 0; dps && i < sk_DIST_POINT_num(dps) && n < RV_MAX_URLS; i++) {
		DIST_POINT *dp = sk_DIST_POINT_value(dps, i);
		if (!dp->distpoint || dp->distpoint->type != 0)
			continue;
		GENERAL_NAMES *gns = dp->distpoint->name.fullname;
		for (int j = 0; j < sk_GENERAL_NAME_num(gns) && n < RV_MAX_URLS; j++) {
			GENERAL_NAME *gn = sk_GENERAL_NAME_value(gns, j);
			if (gn->type != GEN_URI)
				continue;
			const char *s = (const char *)ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
			size_t len = (size_t)ASN1_STRING_length(gn->d.uniformResourceIdentifier);
			if (!http_url(s, len))
				continue;
			memcpy(urls[n], s, len);
			urls[n][len] = 0;
			n++;
		}
	}
	sk_DIST_POINT_pop_free(dps, DIST_POINT_free);
	ERR_clear_error();
	return n;
}

/* The first http(s) OCSP responder of c's Authority Information Access. */
static bool ocsp_url(X509 *c, char url[RV_URL_MAX])
{
	bool found = false;
	STACK_OF(OPENSSL_STRING) *s = X509_get1_ocsp(c);
	for (int i = 0; s && i < sk_OPENSSL_STRING_num(s) && !found; i++) {
		const char *u = sk_OPENSSL_STRING_value(s, i);
		if (http_url(u, strlen(u))) {
			snprintf(url, RV_URL_MAX, "%s", u);
			found = true;
		}
	}
	X509_email_free(s);
	return found;
}

static void ref_of(X509 *c, X509 *issuer, struct cert_ref *r)
{
	memset(r, 0, sizeof *r);
	name_hash(X509_get_issuer_name(c), r->issuer_hash);
	if (issuer)
		key_hash(issuer, r->key_hash);
	const ASN1_INTEGER *sn = X509_get0_serialNumber(c);
	int len = ASN1_STRING_length(sn);
	if (len > 0 && len <= (int)sizeof r->serial) {
		memcpy(r->serial, ASN1_STRING_get0_data(sn), (size_t)len);
		r->serial_len = (uint8_t)len;
	}
}

static bool self_signed(X509 *c)
{
	return X509_check_issued(c, c) == X509_V_OK;
}

size_t revoke_refs_from_chain(STACK_OF(X509) *chain, struct cert_ref *refs, size_t n)
{
	size_t num = chain ? (size_t)sk_X509_num(chain) : 0, i;
	for (i = 0; i < n && i < num; i++) {
		X509 *c = sk_X509_value(chain, (int)i);
		X509 *issuer = i + 1 < num ? sk_X509_value(chain, (int)i + 1) : (self_signed(c) ? c : NULL);
		ref_of(c, issuer, &refs[i]);
	}
	ERR_clear_error();
	return i;
}

static ASN1_INTEGER *serial_of_ref(const struct cert_ref *r)
{
	ASN1_INTEGER *a = ASN1_INTEGER_new();
	if (a && !ASN1_STRING_set(a, r->serial, r->serial_len)) {
		ASN1_INTEGER_free(a);
		return NULL;
	}
	return a;
}

/* ---- caches (readers hold rv->lock) ------------------------------------------------------ */

static struct dp_entry *dp_find(struct revoke *rv, const char *url)
{
	uint64_t h = str_hash(url);
	hmap_for_hash(&rv->dp, h, it) {
		struct dp_entry *de = container_of(it, struct dp_entry, node);
		if (!strcmp(de->url, url))
			return de;
	}
	return NULL;
}

static uint64_t ref_hash(const struct cert_ref *r)
{
	return hash_bytes(r, sizeof *r);
}

static struct ocsp_rec *oc_find(struct revoke *rv, const struct cert_ref *r)
{
	uint64_t h = ref_hash(r);
	hmap_for_hash(&rv->oc, h, it) {
		struct ocsp_rec *o = container_of(it, struct ocsp_rec, node);
		if (!memcmp(&o->ref, r, sizeof *r))
			return o;
	}
	return NULL;
}

static bool oc_answer_valid(const struct ocsp_rec *o, int64_t now)
{
	return o->status >= 0 && o->valid_until >= now;
}

/* ---- the decision ------------------------------------------------------------------------ */

enum eval_mode {
	EVAL_HANDSHAKE, /* what is in memory; a miss is PENDING */
	EVAL_START,     /* the same, collecting what to fetch */
	EVAL_FINAL,     /* after fetching: a miss is a failure, fail_mode decides */
};

struct eval {
	struct revoke *rv;
	struct rv_listener *rl;
	enum eval_mode mode;
	enum revoke_verdict v;
	char *why;
	size_t whylen;
	struct need *needs;
	size_t nneeds;
};

static int rank(enum revoke_verdict v)
{
	switch (v) {
	case REVOKE_REVOKED: return 3;
	case REVOKE_FAILED: return 2;
	case REVOKE_PENDING: return 1;
	default: return 0;
	}
}

static void verdict(struct eval *e, enum revoke_verdict v, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void verdict(struct eval *e, enum revoke_verdict v, const char *fmt, ...)
{
	if (rank(v) <= rank(e->v) && !(v == REVOKE_GOOD && e->v == REVOKE_GOOD && e->why && !e->why[0]))
		return;
	e->v = v;
	if (e->why && e->whylen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(e->why, e->whylen, fmt, ap);
		va_end(ap);
	}
}

static void add_need(struct eval *e, int kind, const char *url, X509 *cert, X509 *issuer)
{
	if (e->mode != EVAL_START)
		return;
	e->needs = xrealloc(e->needs, (e->nneeds + 1) * sizeof *e->needs);
	struct need *n = &e->needs[e->nneeds++];
	n->kind = kind;
	n->url = xstrdup(url);
	n->cert = cert;
	n->issuer = issuer;
	X509_up_ref(cert);
	X509_up_ref(issuer);
}

static void needs_free(struct need *n, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		free(n[i].url);
		X509_free(n[i].cert);
		X509_free(n[i].issuer);
	}
	free(n);
}

/* A source could not give an answer: fail_mode decides. */
static void source_failed(struct eval *e, bool closed, _Atomic uint64_t *last_warn, const char *what)
{
	if (closed) {
		verdict(e, REVOKE_FAILED, "%s (fail_mode closed)", what);
	} else {
		if (!last_warn || warn_due(last_warn))
			log_warn("revocation: %s (fail_mode open: accepted)", what);
		verdict(e, REVOKE_GOOD, "%s (fail_mode open)", what);
	}
}

/* Checks c (issued by issuer) against everything that applies. Returns true when the
 * verdict is final (revoked). Caller holds rv->lock for reading. */
static bool eval_cert(struct eval *e, X509 *c, X509 *issuer, bool leaf, int64_t now)
{
	struct revoke *rv = e->rv;
	struct rv_listener *rl = e->rl;
	uint8_t nh[20], kh[20];
	name_hash(X509_get_issuer_name(c), nh);
	key_hash(issuer, kh);
	const ASN1_INTEGER *serial = X509_get0_serialNumber(c);
	char what[512];

	/* crlfile */
	bool any = false, fresh = false;
	struct crl_entry *stale = NULL;
	for (size_t i = 0; i < rl->set.n; i++) {
		struct crl_entry *ce = rl->set.v[i];
		if (!crl_applies(ce, nh, issuer, kh))
			continue;
		any = true;
		if (crl_lists(ce, serial)) {
			verdict(e, REVOKE_REVOKED, "revoked by CRL of %s (crlfile %s)", ce->issuer_str, ce->src);
			return true;
		}
		if (crl_expired(ce, now))
			stale = ce;
		else
			fresh = true;
	}
	if (any && !fresh && stale) {
		snprintf(what, sizeof what, "CRL of %s expired (crlfile %s)", stale->issuer_str, stale->src);
		source_failed(e, rv->crl_closed, &stale->last_warn, what);
	}

	/* distribution points */
	if (rl->dp) {
		char urls[RV_MAX_URLS][RV_URL_MAX];
		size_t n = dp_urls(c, urls);
		struct dp_entry *found = NULL;
		for (size_t i = 0; i < n && !found; i++) {
			struct dp_entry *de = dp_find(rv, urls[i]);
			if (de && !memcmp(de->key_hash, kh, 20) && !memcmp(de->ce->name_hash, nh, 20))
				found = de;
		}
		if (found) {
			if (crl_lists(found->ce, serial)) {
				verdict(e, REVOKE_REVOKED, "revoked by CRL of %s (%s)", found->ce->issuer_str, found->url);
				return true;
			}
			if (crl_expired(found->ce, now)) {
				snprintf(what, sizeof what, "CRL of %s expired (%s)", found->ce->issuer_str, found->url);
				source_failed(e, rv->crl_closed, &found->last_warn, what);
			}
		} else if (n) {
			if (e->mode == EVAL_FINAL) {
				snprintf(what, sizeof what, "CRL distribution point %s unreachable", urls[0]);
				source_failed(e, rv->crl_closed, url_warn_slot(WARN_DECIDE, urls[0]), what);
			} else {
				verdict(e, REVOKE_PENDING, "CRL %s not cached", urls[0]);
				for (size_t i = 0; i < n; i++)
					add_need(e, FETCH_DP, urls[i], c, issuer);
			}
		}
	}

	/* OCSP, leaf only */
	if (leaf && rl->ocsp) {
		char url[RV_URL_MAX];
		if (ocsp_url(c, url)) {
			struct cert_ref ref;
			ref_of(c, issuer, &ref);
			struct ocsp_rec *o = oc_find(rv, &ref);
			if (o && oc_answer_valid(o, now)) {
				if (o->status == V_OCSP_CERTSTATUS_REVOKED) {
					verdict(e, REVOKE_REVOKED, "revoked according to OCSP responder %s", o->url);
					return true;
				}
				if (o->status == V_OCSP_CERTSTATUS_UNKNOWN) {
					snprintf(what, sizeof what, "OCSP responder %s says unknown", o->url);
					source_failed(e, rl->ocsp_closed, &o->last_warn, what);
				}
			} else if (e->mode == EVAL_FINAL) {
				snprintf(what, sizeof what, "no OCSP answer from %s", url);
				source_failed(e, rl->ocsp_closed, url_warn_slot(WARN_DECIDE, url), what);
			} else {
				verdict(e, REVOKE_PENDING, "OCSP answer from %s not cached", url);
				add_need(e, FETCH_OCSP, url, c, issuer);
			}
		}
	}
	return false;
}

/* Decide for chain (leaf first). Caller holds rv->lock for reading. */
static void eval_chain(struct eval *e, STACK_OF(X509) *chain)
{
	int n = chain ? sk_X509_num(chain) : 0;
	int64_t now = rv_now();
	/* Certificates with an issuer in the chain: the leaf, and with crl_check_chain every
	 * intermediate; the last one is the trust anchor. */
	int last = e->rl->chain ? n - 2 : (n >= 2 ? 0 : -1);
	for (int i = 0; i <= last; i++)
		if (eval_cert(e, sk_X509_value(chain, i), sk_X509_value(chain, i + 1), i == 0, now))
			break;
	ERR_clear_error();
}

enum revoke_verdict revoke_check_handshake(struct revoke *rv, const struct cfg_listener *l, X509_STORE_CTX *sctx,
					   char *why, size_t whylen)
{
	if (why && whylen)
		why[0] = 0;
	if (!sctx)
		return REVOKE_GOOD;
	return revoke_check_chain(rv, l, X509_STORE_CTX_get0_chain(sctx), why, whylen);
}

enum revoke_verdict revoke_check_chain(struct revoke *rv, const struct cfg_listener *l, STACK_OF(X509) *chain,
				       char *why, size_t whylen)
{
	if (why && whylen)
		why[0] = 0;
	struct rv_listener *rl = find_listener(rv, l);
	if (!rl || !listener_active(rl) || !chain)
		return REVOKE_GOOD;
	struct eval e = { .rv = rv, .rl = rl, .mode = EVAL_HANDSHAKE, .v = REVOKE_GOOD, .why = why, .whylen = whylen };
	pthread_rwlock_rdlock(&rv->lock);
	eval_chain(&e, chain);
	pthread_rwlock_unlock(&rv->lock);
	return e.v;
}

bool revoke_is_revoked(struct revoke *rv, const struct cfg_listener *l, const struct cert_ref *refs, size_t n,
		       char *why, size_t whylen)
{
	if (why && whylen)
		why[0] = 0;
	struct rv_listener *rl = find_listener(rv, l);
	if (!rl || !listener_active(rl) || !n)
		return false;
	if (!rl->chain)
		n = 1;
	bool revoked = false;
	pthread_rwlock_rdlock(&rv->lock);
	for (size_t i = 0; i < n && !revoked; i++) {
		const struct cert_ref *r = &refs[i];
		ASN1_INTEGER *serial = serial_of_ref(r);
		if (!serial)
			continue;
		for (size_t k = 0; k < rl->set.n && !revoked; k++) {
			struct crl_entry *ce = rl->set.v[k];
			if (crl_applies(ce, r->issuer_hash, NULL, r->key_hash) && crl_lists(ce, serial)) {
				snprintf(why, whylen, "revoked by CRL of %s (crlfile %s)", ce->issuer_str, ce->src);
				revoked = true;
			}
		}
		if (rl->dp && !revoked) {
			hmap_for_each(&rv->dp, it) {
				struct dp_entry *de = container_of(it, struct dp_entry, node);
				if (!memcmp(de->ce->name_hash, r->issuer_hash, 20) && !memcmp(de->key_hash, r->key_hash, 20) &&
				    crl_lists(de->ce, serial)) {
					snprintf(why, whylen, "revoked by CRL of %s (%s)", de->ce->issuer_str, de->url);
					revoked = true;
					break;
				}
			}
		}
		if (i == 0 && rl->ocsp && !revoked) {
			struct ocsp_rec *o = oc_find(rv, r);
			if (o && o->status == V_OCSP_CERTSTATUS_REVOKED) {
				snprintf(why, whylen, "revoked according to OCSP responder %s", o->url);
				revoked = true;
			}
		}
		ASN1_INTEGER_free(serial);
	}
	pthread_rwlock_unlock(&rv->lock);
	ERR_clear_error();
	return revoked;
}

/* ---- change notification ------------------------------------------------------------------ */

static void fire_change_cb(void *arg)
{
	struct revoke *rv = arg;
	if (rv->on_change)
		rv->on_change(rv->change_arg);
}

static void fire_change(struct revoke *rv)
{
	if (!rv->on_change)
		return;
	struct loop *cur = loop_current();
	if (!cur || cur == rv->main || !rv->main)
		fire_change_cb(rv);
	else
		loop_post(rv->main, fire_change_cb, rv);
}

void revoke_on_change(struct revoke *rv, void (*fn)(void *arg), void *arg)
{
	rv->on_change = fn;
	rv->change_arg = arg;
}

/* ---- fetching (main loop) ---------------------------------------------------------------- */

static void wait_unref(struct revoke_wait *w)
{
	if (atomic_fetch_sub(&w->refs, 1) != 1)
		return;
	sk_X509_pop_free(w->chain, X509_free);
	needs_free(w->needs, w->nneeds);
	free(w);
}

static void wait_deliver(void *arg)
{
	struct revoke_wait *w = arg;
	if (!w->cancelled) {
		w->done(w->arg, w->v, w->why);
		atomic_fetch_sub(&w->refs, 1); /* the caller's handle is spent */
	}
	wait_unref(w);
}

/* All fetches of w completed: decide and hand the verdict to w's loop. */
static void wait_finish(struct revoke_wait *w)
{
	struct revoke *rv = w->rv;
	struct eval e = { .rv = rv, .rl = w->rl, .mode = EVAL_FINAL, .v = REVOKE_GOOD, .why = w->why,
			  .whylen = sizeof w->why };
	w->why[0] = 0;
	pthread_rwlock_rdlock(&rv->lock);
	eval_chain(&e, w->chain);
	pthread_rwlock_unlock(&rv->lock);
	w->v = e.v;
	log_debug("revocation: async check on listener %s: %s%s%s", w->rl->id, verdict_name(w->v), w->why[0] ? ": " : "",
		  w->why);
	loop_post(w->on, wait_deliver, w);
}

static void fetch_free(struct fetch *f)
{
	free(f->key);
	free(f->url);
	X509_free(f->issuer);
	OCSP_REQUEST_free(f->req);
	OCSP_CERTID_free(f->cid);
	free(f);
}

/* Remove f from the table, release its waiters (finishing those with nothing else to
 * wait for) and free it. */
static void fetch_complete(struct fetch *f)
{
	struct revoke *rv = f->rv;
	hmap_remove(&rv->fetches, &f->node);
	list_for_each_safe(it, &f->waiters) {
		struct waiter *wt = container_of(it, struct waiter, link);
		list_del_init(&wt->link);
		if (--wt->w->outstanding == 0)
			wait_finish(wt->w);
		free(wt);
	}
	fetch_free(f);
}

static struct fetch *fetch_find(struct revoke *rv, const char *key)
{
	uint64_t h = str_hash(key);
	hmap_for_hash(&rv->fetches, h, it) {
		struct fetch *f = container_of(it, struct fetch, node);
		if (!strcmp(f->key, key))
			return f;
	}
	return NULL;
}

static void dp_refresh_cb(struct timer *t);

static void dp_entry_free(struct dp_entry *de)
{
	timer_cancel(&de->refresh);
	crl_entry_free(de->ce);
	free(de->url);
	free(de);
}

/* Store a verified CRL for url (main loop). Returns true when the set of revoked serials
 * changed for an existing entry. With only_existing, a URL no longer cached is not added. */
static bool dp_store(struct revoke *rv, const char *url, struct crl_entry *ce, bool only_existing, bool *stored)
{
	bool changed = false;
	struct crl_entry *old = NULL;
	struct list evicted;
	list_init(&evicted);
	uint8_t kh[20] = { 0 };
	if (ce->issuer)
		key_hash(ce->issuer, kh);
	pthread_rwlock_wrlock(&rv->lock);
	struct dp_entry *de = dp_find(rv, url);
	*stored = true;
	if (de) {
		old = de->ce;
		de->ce = ce;
		memcpy(de->key_hash, kh, 20);
		changed = !revoked_equal(old->crl, ce->crl) || memcmp(old->name_hash, ce->name_hash, 20) != 0;
	} else if (only_existing) {
		*stored = false;
	} else {
		de = xcalloc(1, sizeof *de);
		de->url = xstrdup(url);
		de->ce = ce;
		de->rv = rv;
		memcpy(de->key_hash, kh, 20);
		timer_init(&de->refresh, dp_refresh_cb);
		hmap_insert(&rv->dp, &de->node, str_hash(url));
		list_push_back(&rv->dp_fifo, &de->fifo);
		rv->ndp++;
		while (rv->ndp > rv->capacity && !list_empty(&rv->dp_fifo)) {
			struct dp_entry *oldest = list_first(&rv->dp_fifo, struct dp_entry, fifo);
			list_del_init(&oldest->fifo);
			hmap_remove(&rv->dp, &oldest->node);
			rv->ndp--;
			list_push_back(&evicted, &oldest->fifo);
		}
	}
	pthread_rwlock_unlock(&rv->lock);
	crl_entry_free(old);
	list_for_each_safe(it, &evicted) {
		struct dp_entry *x = container_of(it, struct dp_entry, fifo);
		log_info("revocation: CRL cache full (capacity %u): evicted %s", rv->capacity, x->url);
		dp_entry_free(x);
	}
	if (*stored && de && rv->main)
		timer_arm(rv->main, &de->refresh, rv->refresh_ms);
	return changed;
}

/* Pick, among the CRLs of a response, the newest one issued and signed by issuer. */
static struct crl_entry *dp_select(STACK_OF(X509_CRL) *crls, X509 *issuer, const char *url, char *err, size_t errlen)
{
	uint8_t kh[20];
	key_hash(issuer, kh);
	X509_CRL *best = NULL;
	int64_t best_time = 0;
	bool named = false;
	for (int i = 0; i < sk_X509_CRL_num(crls); i++) {
		X509_CRL *c = sk_X509_CRL_value(crls, i);
		if (X509_NAME_cmp(X509_CRL_get_issuer(c), X509_get_subject_name(issuer)) != 0)
			continue;
		named = true;
		EVP_PKEY *pk = X509_get0_pubkey(issuer);
		if (!pk || X509_CRL_verify(c, pk) <= 0)
			continue;
		int64_t t = ocsp_util_time(X509_CRL_get0_lastUpdate(c));
		if (!best || t > best_time) {
			best = c;
			best_time = t;
		}
	}
	ERR_clear_error();
	if (!best) {
		char in[256];
		ocsp_util_name(X509_get_subject_name(issuer), in, sizeof in);
		snprintf(err, errlen, named ? "the CRL's signature does not verify with the key of %s"
					    : "no CRL issued by %s in the response", in);
		return NULL;
	}
	X509_CRL_up_ref(best);
	struct crl_entry *ce = crl_entry_new(best, url);
	memcpy(ce->vres[0].key_hash, kh, 20);
	ce->vres[0].ok = true;
	ce->nvres = 1;
	X509_up_ref(issuer);
	ce->issuer = issuer;
	return ce;
}

static void dp_fetch_done(void *arg, const struct http_response *resp)
{
	struct fetch *f = arg;
	struct revoke *rv = f->rv;
	char err[512];
	struct crl_entry *ce = NULL;
	f->call = NULL;
	if (resp->status != 200) {
		if (resp->status)
			snprintf(err, sizeof err, "HTTP status %d", resp->status);
		else
			snprintf(err, sizeof err, "%s", resp->error ? resp->error : "request failed");
	} else {
		char perr[256];
		STACK_OF(X509_CRL) *crls = ocsp_util_parse_crls(resp->body, resp->body_len, perr, sizeof perr);
		if (!crls)
			snprintf(err, sizeof err, "%s", perr);
		else
			ce = dp_select(crls, f->issuer, f->url, err, sizeof err);
		sk_X509_CRL_pop_free(crls, X509_CRL_free);
	}
	bool changed = false, stored = false;
	if (ce) {
		changed = dp_store(rv, f->url, ce, f->refresh, &stored);
		if (!stored)
			crl_entry_free(ce);
		else
			log_debug("revocation: CRL %s fetched (%s)", f->url, changed ? "changed" : "unchanged");
		if (changed)
			log_info("revocation: CRL %s changed", f->url);
		if (stored) {
			pthread_rwlock_rdlock(&rv->lock);
			struct dp_entry *de = dp_find(rv, f->url);
			pthread_rwlock_unlock(&rv->lock);
			if (de && de->failing) {
				log_info("revocation: CRL %s fetched again after failures", f->url);
				de->failing = false;
			}
		}
	} else {
		pthread_rwlock_rdlock(&rv->lock);
		struct dp_entry *de = dp_find(rv, f->url);
		pthread_rwlock_unlock(&rv->lock);
		if (de) {
			/* The first failure of a streak, then at most once a minute. */
			if (!de->failing || warn_due(&de->last_warn))
				log_warn("revocation: refreshing CRL %s failed: %s; keeping the last good CRL, retrying "
					 "every %us", f->url, err, RV_RETRY_MS / 1000);
			else
				log_debug("revocation: refreshing CRL %s failed again: %s", f->url, err);
			if (!de->failing)
				atomic_store(&de->last_warn, clock_mono_ms() + 1);
			de->failing = true;
			timer_arm(rv->main, &de->refresh, RV_RETRY_MS);
		} else if (warn_due(url_warn_slot(WARN_FETCH, f->url))) {
			log_warn("revocation: fetching CRL %s failed: %s", f->url, err);
		} else {
			log_debug("revocation: fetching CRL %s failed: %s", f->url, err);
		}
	}
	fetch_complete(f);
	if (changed)
		fire_change(rv);
}

static struct http_call *start_get(struct revoke *rv, const char *url, uint64_t timeout_ms, size_t max,
				   void (*done)(void *, const struct http_response *), void *arg)
{
	if (!rv->http || !rv->main)
		return NULL;
	struct http_request req = { .method = "GET", .url = url, .timeout_ms = timeout_ms, .max_response = max };
	return rv_http_start(rv->http, &req, rv->main, done, arg);
}

/* Start (or join) the fetch of a distribution point. Returns the fetch, or NULL when it
 * could not start. Main loop. */
static struct fetch *dp_fetch(struct revoke *rv, const char *url, X509 *issuer, bool refresh)
{
	char key[RV_URL_MAX + 4];
	snprintf(key, sizeof key, "d:%s", url);
	struct fetch *f = fetch_find(rv, key);
	if (f)
		return f;
	f = xcalloc(1, sizeof *f);
	f->key = xstrdup(key);
	f->kind = FETCH_DP;
	f->url = xstrdup(url);
	f->rv = rv;
	f->refresh = refresh;
	X509_up_ref(issuer);
	f->issuer = issuer;
	list_init(&f->waiters);
	f->call = start_get(rv, url, rv->http_timeout_ms, RV_CRL_MAX_FETCH, dp_fetch_done, f);
	if (!f->call) {
		log_warn("revocation: cannot fetch CRL %s: no HTTP client", url);
		fetch_free(f);
		return NULL;
	}
	hmap_insert(&rv->fetches, &f->node, str_hash(key));
	return f;
}

static void dp_refresh_cb(struct timer *t)
{
	struct dp_entry *de = container_of(t, struct dp_entry, refresh);
	struct revoke *rv = de->rv;
	X509 *issuer = de->ce->issuer;
	if (!issuer || !dp_fetch(rv, de->url, issuer, true))
		timer_arm(rv->main, &de->refresh, RV_RETRY_MS);
}

/* ---- OCSP records (main loop writes) ----------------------------------------------------- */

static void oc_rec_free(struct ocsp_rec *o)
{
	X509_free(o->issuer);
	ASN1_INTEGER_free(o->serial);
	free(o->url);
	free(o);
}

static void sweep_cb(struct timer *t);

static void sweep_arm(struct revoke *rv)
{
	if (rv->main && !timer_armed(&rv->sweep))
		timer_arm(rv->main, &rv->sweep, RV_SWEEP_MS);
}

/* Find or create the record of (cert, issuer). Main loop. */
static struct ocsp_rec *oc_get(struct revoke *rv, struct rv_listener *rl, X509 *cert, X509 *issuer, const char *url)
{
	struct cert_ref ref;
	ref_of(cert, issuer, &ref);
	struct list evicted;
	list_init(&evicted);
	pthread_rwlock_wrlock(&rv->lock);
	struct ocsp_rec *o = oc_find(rv, &ref);
	if (!o) {
		o = xcalloc(1, sizeof *o);
		o->ref = ref;
		X509_up_ref(issuer);
		o->issuer = issuer;
		o->serial = ASN1_INTEGER_dup(X509_get0_serialNumber(cert));
		o->url = xstrdup(url);
		o->rl = rl;
		o->status = -1;
		o->reason = -1;
		hmap_insert(&rv->oc, &o->node, ref_hash(&ref));
		list_push_back(&rv->oc_lru, &o->lru);
		rv->noc++;
		list_for_each_safe(it, &rv->oc_lru) {
			if (rv->noc <= RV_OCSP_CAPACITY)
				break;
			struct ocsp_rec *x = container_of(it, struct ocsp_rec, lru);
			if (x == o || x->fetching || atomic_load(&x->retain) > 0)
				continue;
			list_del_init(&x->lru);
			hmap_remove(&rv->oc, &x->node);
			rv->noc--;
			list_push_back(&evicted, &x->lru);
		}
	} else if (strcmp(o->url, url) != 0) {
		free(o->url);
		o->url = xstrdup(url);
	}
	pthread_rwlock_unlock(&rv->lock);
	list_for_each_safe(it, &evicted)
		oc_rec_free(container_of(it, struct ocsp_rec, lru));
	sweep_arm(rv);
	return o;
}

static void ocsp_fetch_done(void *arg, const struct http_response *resp)
{
	struct fetch *f = arg;
	struct revoke *rv = f->rv;
	struct ocsp_rec *o = f->rec;
	char err[512];
	struct ocsp_answer ans;
	bool ok = false;
	f->call = NULL;
	if (resp->status != 200) {
		if (resp->status)
			snprintf(err, sizeof err, "HTTP status %d", resp->status);
		else
			snprintf(err, sizeof err, "%s", resp->error ? resp->error : "request failed");
	} else {
		pthread_rwlock_rdlock(&rv->lock);
		X509_STORE *st = o->rl->store;
		if (st)
			X509_STORE_up_ref(st);
		pthread_rwlock_unlock(&rv->lock);
		ok = ocsp_util_check_response(resp->body, resp->body_len, f->cid, o->issuer, NULL, st, f->req, &ans, err,
					      sizeof err);
		X509_STORE_free(st);
	}
	int64_t now = rv_now();
	bool changed = false;
	pthread_rwlock_wrlock(&rv->lock);
	o->fetching = false;
	if (ok) {
		changed = ans.status == V_OCSP_CERTSTATUS_REVOKED && o->status != V_OCSP_CERTSTATUS_REVOKED;
		o->status = ans.status;
		o->reason = ans.reason;
		o->this_update = ans.this_update;
		o->valid_until = ans.next_update ? ans.next_update : now + RV_OCSP_TTL_S;
		if (ans.status == V_OCSP_CERTSTATUS_UNKNOWN && o->valid_until > now + RV_OCSP_UNKNOWN_TTL_S)
			o->valid_until = now + RV_OCSP_UNKNOWN_TTL_S;
		o->fetched = now;
		o->retry_at = 0;
	} else {
		o->retry_at = now + RV_RETRY_MS / 1000;
	}
	pthread_rwlock_unlock(&rv->lock);
	if (ok) {
		log_debug("revocation: OCSP %s: %s", o->url, OCSP_cert_status_str(ans.status));
		if (changed)
			log_info("revocation: OCSP responder %s says a client certificate is revoked", o->url);
	} else if (warn_due(&o->last_warn)) {
		log_warn("revocation: OCSP request to %s failed: %s", o->url, err);
	}
	fetch_complete(f);
	if (changed)
		fire_change(rv);
}

/* Start (or join) the OCSP request for record o. Main loop. */
static struct fetch *ocsp_fetch(struct revoke *rv, struct ocsp_rec *o)
{
	char key[2 + 2 * sizeof(struct cert_ref) + 1];
	key[0] = 'o';
	key[1] = ':';
	const uint8_t *p = (const uint8_t *)&o->ref;
	for (size_t i = 0; i < sizeof o->ref; i++)
		snprintf(key + 2 + 2 * i, 3, "%02x", p[i]);
	struct fetch *f = fetch_find(rv, key);
	if (f)
		return f;
	f = xcalloc(1, sizeof *f);
	f->key = xstrdup(key);
	f->kind = FETCH_OCSP;
	f->url = xstrdup(o->url);
	f->rv = rv;
	f->rec = o;
	list_init(&f->waiters);
	uint8_t *der = NULL;
	size_t len = 0;
	char err[256];
	if (!o->serial || !ocsp_util_build_request(o->serial, o->issuer, true, &der, &len, &f->req, &f->cid, err, sizeof err)) {
		log_warn("revocation: cannot build an OCSP request for %s: %s", o->url, o->serial ? err : "no serial");
		fetch_free(f);
		return NULL;
	}
	static const char *const headers[] = { "Content-Type: application/ocsp-request",
					       "Accept: application/ocsp-response", NULL };
	struct http_request req = { .method = "POST", .url = o->url, .headers = headers, .body = der, .body_len = len,
				    .timeout_ms = o->rl->ocsp_timeout_ms, .max_response = 1u << 20 };
	if (rv->http && rv->main)
		f->call = rv_http_start(rv->http, &req, rv->main, ocsp_fetch_done, f);
	free(der);
	if (!f->call) {
		log_warn("revocation: cannot ask OCSP responder %s: no HTTP client", o->url);
		fetch_free(f);
		return NULL;
	}
	pthread_rwlock_wrlock(&rv->lock);
	o->fetching = true;
	pthread_rwlock_unlock(&rv->lock);
	hmap_insert(&rv->fetches, &f->node, str_hash(key));
	return f;
}

/* Refresh retained answers when due, forget expired unretained ones. */
static void sweep_cb(struct timer *t)
{
	struct revoke *rv = container_of(t, struct revoke, sweep);
	int64_t now = rv_now();
	struct list dead, due;
	list_init(&dead);
	list_init(&due);
	size_t ndue = 0;
	struct ocsp_rec **todo = NULL;
	pthread_rwlock_wrlock(&rv->lock);
	list_for_each_safe(it, &rv->oc_lru) {
		struct ocsp_rec *o = container_of(it, struct ocsp_rec, lru);
		if (o->fetching)
			continue;
		if (atomic_load(&o->retain) > 0) {
			int64_t at;
			if (o->status < 0 || o->retry_at)
				at = o->retry_at;
			else {
				at = o->fetched + RV_OCSP_REFRESH_S;
				if (o->valid_until < at)
					at = o->valid_until;
			}
			if (now >= at) {
				todo = xrealloc(todo, (ndue + 1) * sizeof *todo);
				todo[ndue++] = o;
			}
		} else if (o->status < 0 ? (o->retry_at && now > o->retry_at + 60) : o->valid_until < now) {
			list_del_init(&o->lru);
			hmap_remove(&rv->oc, &o->node);
			rv->noc--;
			list_push_back(&dead, &o->lru);
		}
	}
	pthread_rwlock_unlock(&rv->lock);
	list_for_each_safe(it, &dead)
		oc_rec_free(container_of(it, struct ocsp_rec, lru));
	for (size_t i = 0; i < ndue; i++)
		if (!ocsp_fetch(rv, todo[i])) {
			pthread_rwlock_wrlock(&rv->lock);
			todo[i]->retry_at = now + RV_RETRY_MS / 1000;
			pthread_rwlock_unlock(&rv->lock);
		}
	free(todo);
	if (rv->noc)
		timer_arm(rv->main, &rv->sweep, RV_SWEEP_MS);
}

void revoke_ocsp_retain(struct revoke *rv, const struct cert_ref *leaf)
{
	if (!rv || !leaf)
		return;
	pthread_rwlock_rdlock(&rv->lock);
	struct ocsp_rec *o = oc_find(rv, leaf);
	if (o)
		atomic_fetch_add(&o->retain, 1);
	pthread_rwlock_unlock(&rv->lock);
}

void revoke_ocsp_release(struct revoke *rv, const struct cert_ref *leaf)
{
	if (!rv || !leaf)
		return;
	pthread_rwlock_rdlock(&rv->lock);
	struct ocsp_rec *o = oc_find(rv, leaf);
	if (o) {
		int v = atomic_load(&o->retain);
		while (v > 0 && !atomic_compare_exchange_weak(&o->retain, &v, v - 1))
			;
	}
	pthread_rwlock_unlock(&rv->lock);
}

/* ---- async checks -------------------------------------------------------------------------- */

/* Main loop: start or join every fetch w needs. */
static void wait_start(void *arg)
{
	struct revoke_wait *w = arg;
	struct revoke *rv = w->rv;
	for (size_t i = 0; i < w->nneeds; i++) {
		struct need *n = &w->needs[i];
		struct fetch *f = NULL;
		if (n->kind == FETCH_DP) {
			pthread_rwlock_rdlock(&rv->lock);
			bool cached = dp_find(rv, n->url) != NULL;
			pthread_rwlock_unlock(&rv->lock);
			if (!cached) {
				f = dp_fetch(rv, n->url, n->issuer, false);
				if (f)
					f->refresh = false; /* joined a refresh of an evicted URL: store the result */
			}
		} else {
			struct ocsp_rec *o = oc_get(rv, w->rl, n->cert, n->issuer, n->url);
			pthread_rwlock_rdlock(&rv->lock);
			bool valid = oc_answer_valid(o, rv_now());
			pthread_rwlock_unlock(&rv->lock);
			if (!valid)
				f = ocsp_fetch(rv, o);
		}
		if (f) {
			struct waiter *wt = xcalloc(1, sizeof *wt);
			wt->w = w;
			list_push_back(&f->waiters, &wt->link);
			w->outstanding++;
		}
	}
	needs_free(w->needs, w->nneeds);
	w->needs = NULL;
	w->nneeds = 0;
	if (w->outstanding == 0)
		wait_finish(w);
}

struct revoke_wait *revoke_check_async(struct revoke *rv, const struct cfg_listener *l, STACK_OF(X509) *chain,
				       struct loop *on, void (*done)(void *arg, enum revoke_verdict v, const char *why),
				       void *arg)
{
	struct revoke_wait *w = xcalloc(1, sizeof *w);
	atomic_init(&w->refs, 2);
	w->rv = rv;
	w->on = on;
	w->done = done;
	w->arg = arg;
	w->v = REVOKE_GOOD;
	w->chain = chain ? X509_chain_up_ref(chain) : NULL;
	w->rl = find_listener(rv, l);
	if (!w->rl || !listener_active(w->rl) || !w->chain) {
		loop_post(on, wait_deliver, w);
		return w;
	}
	struct eval e = { .rv = rv, .rl = w->rl, .mode = EVAL_START, .v = REVOKE_GOOD, .why = w->why,
			  .whylen = sizeof w->why };
	pthread_rwlock_rdlock(&rv->lock);
	eval_chain(&e, w->chain);
	pthread_rwlock_unlock(&rv->lock);
	if (e.v == REVOKE_PENDING && !rv->main) {
		/* No loop to fetch on: what is missing is unreachable. */
		e.mode = EVAL_FINAL;
		e.v = REVOKE_GOOD;
		w->why[0] = 0;
		pthread_rwlock_rdlock(&rv->lock);
		eval_chain(&e, w->chain);
		pthread_rwlock_unlock(&rv->lock);
	}
	if (e.v != REVOKE_PENDING) {
		needs_free(e.needs, e.nneeds);
		w->v = e.v;
		loop_post(on, wait_deliver, w);
		return w;
	}
	w->needs = e.needs;
	w->nneeds = e.nneeds;
	loop_post(rv->main, wait_start, w);
	return w;
}

void revoke_cancel(struct revoke_wait *w)
{
	if (!w)
		return;
	w->cancelled = true;
	wait_unref(w);
}

/* ---- life cycle ---------------------------------------------------------------------------- */

static void listener_free(struct rv_listener *rl)
{
	crlset_free(&rl->set);
	sk_X509_pop_free(rl->cas, X509_free);
	X509_STORE_free(rl->store);
	for (size_t i = 0; i < rl->nfiles; i++)
		free(rl->files[i]);
	free(rl->files);
	free(rl->cafile);
	free(rl->id);
}

struct revoke *revoke_new(const struct config *cfg, struct http_client *http, struct loop *main_loop, char *err,
			  size_t errlen)
{
	struct revoke *rv = xcalloc(1, sizeof *rv);
	pthread_rwlockattr_t attr;
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&rv->lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	rv->http = http;
	rv->main = main_loop;
	rv->crl_closed = cfg->crl_cache.fail_closed;
	rv->refresh_ms = cfg->crl_cache.refresh_interval_ms ? cfg->crl_cache.refresh_interval_ms : 15 * 60000;
	if (rv->refresh_ms < 60000)
		rv->refresh_ms = 60000;
	rv->http_timeout_ms = cfg->crl_cache.http_timeout_ms ? cfg->crl_cache.http_timeout_ms : 15000;
	rv->capacity = cfg->crl_cache.capacity ? cfg->crl_cache.capacity : 100;
	hmap_init(&rv->dp);
	hmap_init(&rv->oc);
	hmap_init(&rv->fetches);
	list_init(&rv->dp_fifo);
	list_init(&rv->oc_lru);
	timer_init(&rv->sweep, sweep_cb);
	rv->ls = xcalloc(cfg->n_listeners ? cfg->n_listeners : 1, sizeof *rv->ls);
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		const struct cfg_listener *l = &cfg->listeners[i];
		if (l->type != CFG_LISTENER_SSL || !l->enable)
			continue;
		struct rv_listener *rl = &rv->ls[rv->nls++];
		rl->cfg = l;
		rl->id = xstrdup(l->id ? l->id : l->name);
		rl->nfiles = l->ssl.n_crlfiles;
		rl->files = xcalloc(rl->nfiles ? rl->nfiles : 1, sizeof *rl->files);
		for (size_t k = 0; k < rl->nfiles; k++)
			rl->files[k] = xstrdup(l->ssl.crlfiles[k]);
		rl->cafile = l->ssl.cacertfile ? xstrdup(l->ssl.cacertfile) : NULL;
		rl->chain = l->ssl.crl_check_chain;
		rl->dp = l->ssl.enable_crl_check;
		rl->ocsp = l->ssl.ocsp_client.enable;
		rl->ocsp_closed = l->ssl.ocsp_client.fail_closed;
		rl->ocsp_timeout_ms = l->ssl.ocsp_client.timeout_ms ? l->ssl.ocsp_client.timeout_ms : 5000;
		rl->cas = load_cas(rl->cafile);
		rl->store = store_from(rl->cas);
		char lerr[512];
		if (!load_set(rl, rl->cas, NULL, &rl->set, lerr, sizeof lerr)) {
			snprintf(err, errlen, "%s", lerr);
			revoke_free(rv);
			return NULL;
		}
		if (rl->nfiles)
			log_info("listener %s: %zu CRL(s) loaded from %zu crlfile(s)", rl->id, rl->set.n, rl->nfiles);
	}
	return rv;
}

bool revoke_reload_files(struct revoke *rv, char **report)
{
	bool ok = true, changed = false;
	for (size_t i = 0; i < rv->nls; i++) {
		struct rv_listener *rl = &rv->ls[i];
		STACK_OF(X509) *cas = load_cas(rl->cafile);
		X509_STORE *store = store_from(cas);
		struct crlset set = { 0 };
		char err[512];
		bool loaded = load_set(rl, cas, &rl->set, &set, err, sizeof err);
		if (!loaded) {
			ok = false;
			log_error("listener %s: crlfile reload failed, keeping the previous CRLs: %s", rl->id, err);
			appendf(report, "listener %s: crlfile reload failed, keeping the previous CRLs: %s", rl->id, err);
		}
		struct crlset old = { 0 };
		STACK_OF(X509) *old_cas;
		X509_STORE *old_store;
		pthread_rwlock_wrlock(&rv->lock);
		old_cas = rl->cas;
		old_store = rl->store;
		rl->cas = cas;
		rl->store = store;
		if (loaded) {
			if (!crlset_equal(&rl->set, &set))
				changed = true;
			old = rl->set;
			rl->set = set;
		}
		pthread_rwlock_unlock(&rv->lock);
		crlset_free(&old);
		sk_X509_pop_free(old_cas, X509_free);
		X509_STORE_free(old_store);
		if (loaded && rl->nfiles) {
			log_info("listener %s: crlfile reloaded: %zu CRL(s)", rl->id, rl->set.n);
			appendf(report, "listener %s: crlfile reloaded: %zu CRL(s)", rl->id, rl->set.n);
		}
	}
	/* A reload also refreshes fetched data now: distribution-point CRLs and the OCSP
	 * answers of live connections (main loop only). */
	struct loop *cur = loop_current();
	if (rv->main && (!cur || cur == rv->main)) {
		pthread_rwlock_rdlock(&rv->lock);
		struct dp_entry **des = xcalloc(rv->ndp + 1, sizeof *des);
		size_t nd = 0;
		list_for_each(it, &rv->dp_fifo)
			des[nd++] = container_of(it, struct dp_entry, fifo);
		list_for_each(it, &rv->oc_lru) {
			struct ocsp_rec *o = container_of(it, struct ocsp_rec, lru);
			if (atomic_load(&o->retain) > 0 && !o->fetching)
				o->retry_at = 1; /* due now (sweep reads it under the write lock) */
		}
		pthread_rwlock_unlock(&rv->lock);
		for (size_t i = 0; i < nd; i++) {
			if (des[i]->ce->issuer && dp_fetch(rv, des[i]->url, des[i]->ce->issuer, true))
				timer_cancel(&des[i]->refresh);
		}
		free(des);
		if (rv->noc)
			timer_arm(rv->main, &rv->sweep, 0);
		if (nd)
			appendf(report, "revocation: refreshing %zu cached CRL(s)", nd);
	}
	if (changed) {
		log_info("revocation: crlfile data changed; rechecking live connections");
		fire_change(rv);
	}
	return ok;
}

void revoke_free(struct revoke *rv)
{
	if (!rv)
		return;
	/* Fetches in flight: cancel the calls; their waiters never complete (their handles
	 * stay valid until revoke_cancel). */
	struct hmap_node *n = hmap_steal(&rv->fetches);
	while (n) {
		struct hmap_node *next = n->next;
		struct fetch *f = container_of(n, struct fetch, node);
		if (f->call)
			rv_http_cancel(f->call);
		list_for_each_safe(it, &f->waiters) {
			struct waiter *wt = container_of(it, struct waiter, link);
			list_del_init(&wt->link);
			wait_unref(wt->w);
			free(wt);
		}
		fetch_free(f);
		n = next;
	}
	timer_cancel(&rv->sweep);
	list_for_each_safe(it, &rv->dp_fifo) {
		struct dp_entry *de = container_of(it, struct dp_entry, fifo);
		list_del_init(&de->fifo);
		dp_entry_free(de);
	}
	hmap_destroy(&rv->dp);
	list_for_each_safe(it, &rv->oc_lru) {
		struct ocsp_rec *o = container_of(it, struct ocsp_rec, lru);
		list_del_init(&o->lru);
		oc_rec_free(o);
	}
	hmap_destroy(&rv->oc);
	for (size_t i = 0; i < rv->nls; i++)
		listener_free(&rv->ls[i]);
	free(rv->ls);
	pthread_rwlock_destroy(&rv->lock);
	free(rv);
}

void revoke_files(struct revoke *rv, void (*fn)(void *arg, const char *path), void *arg)
{
	if (!rv)
		return;
	for (size_t i = 0; i < rv->nls; i++)
		for (size_t k = 0; k < rv->ls[i].nfiles; k++)
			fn(arg, rv->ls[i].files[k]);
}
