/* HTTP client: a small HTTP/1.1 (and TLS) server runs on threads inside the test process,
 * a loop on another thread receives the callbacks. */
#include "net/http.c"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "unit.h"

/* ---- test server ---- */

struct srv;

struct sconn {
	struct srv *s;
	int fd; /* -1 once the connection thread closed it (under s->lock) */
	SSL *ssl;
	pthread_t th;
	struct sconn *next;
	char sni[256];
	bool client_cert;
	bool head; /* the current request is a HEAD */
};

struct srv {
	int lfd, port;
	SSL_CTX *ctx; /* NULL: plain HTTP */
	pthread_t th;
	atomic_int accepted, requests;
	pthread_mutex_t lock;
	struct sconn *conns;
};

static ssize_t sc_read(struct sconn *c, void *p, size_t n)
{
	if (c->ssl) {
		int r = SSL_read(c->ssl, p, (int)n);
		return r > 0 ? r : -1;
	}
	ssize_t r;
	do
		r = recv(c->fd, p, n, 0);
	while (r < 0 && errno == EINTR);
	return r > 0 ? r : -1;
}

static bool sc_write(struct sconn *c, const void *p, size_t n)
{
	const char *b = p;
	while (n) {
		ssize_t w;
		if (c->ssl) {
			int r = SSL_write(c->ssl, b, (int)(n > 65536 ? 65536 : n));
			w = r > 0 ? r : -1;
		} else {
			w = send(c->fd, b, n, MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
		}
		if (w <= 0)
			return false;
		b += w;
		n -= (size_t)w;
	}
	return true;
}

static bool sc_respond(struct sconn *c, int status, const char *headers, const void *body, size_t len)
{
	char h[1024];
	int n;
	if (c->head || status == 204 || status == 304)
		len = 0;
	if (status == 204 || status == 304)
		n = snprintf(h, sizeof h, "HTTP/1.1 %d X\r\n%s\r\n", status, headers ? headers : "");
	else
		n = snprintf(h, sizeof h, "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n%s\r\n", status, len,
			     headers ? headers : "");
	return sc_write(c, h, (size_t)n) && (!len || sc_write(c, body, len));
}

static void fill_pattern(char *p, size_t n, size_t off)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (char)('a' + (off + i) % 26);
}

/* One request; false closes the connection. */
static bool sc_handle(struct sconn *c, const char *req, size_t reqlen, const char *path)
{
	char chunk[16384];
	if (strncmp(path, "/echo", 5) == 0)
		return sc_respond(c, 200, "Content-Type: text/plain\r\n", req, reqlen);
	if (strncmp(path, "/status/", 8) == 0) {
		int st = atoi(path + 8);
		char b[32];
		int n = snprintf(b, sizeof b, "status %d", st);
		return sc_respond(c, st, NULL, b, (size_t)n);
	}
	if (strncmp(path, "/delay/", 7) == 0) {
		/* Wait, unless the client goes away (or the server stops) first. */
		struct pollfd pfd = { .fd = c->fd, .events = POLLRDHUP };
		if (poll(&pfd, 1, atoi(path + 7)) != 0)
			return false;
		return sc_respond(c, 200, NULL, "late", 4);
	}
	if (strncmp(path, "/big/", 5) == 0) {
		size_t n = strtoul(path + 5, NULL, 10);
		char h[128];
		snprintf(h, sizeof h, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", n);
		if (!sc_write(c, h, strlen(h)))
			return false;
		for (size_t off = 0; off < n; off += sizeof chunk) {
			size_t k = n - off < sizeof chunk ? n - off : sizeof chunk;
			fill_pattern(chunk, k, off);
			if (!sc_write(c, chunk, k))
				return false;
		}
		return true;
	}
	if (strncmp(path, "/chunked/", 9) == 0) {
		size_t n = strtoul(path + 9, NULL, 10);
		const char *h = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
		if (!sc_write(c, h, strlen(h)))
			return false;
		for (size_t off = 0; off < n; off += 4096) {
			size_t k = n - off < 4096 ? n - off : 4096;
			char len[32];
			snprintf(len, sizeof len, "%zx\r\n", k);
			fill_pattern(chunk, k, off);
			if (!sc_write(c, len, strlen(len)) || !sc_write(c, chunk, k) || !sc_write(c, "\r\n", 2))
				return false;
		}
		return sc_write(c, "0\r\n\r\n", 5);
	}
	if (strcmp(path, "/close") == 0)
		return false;
	if (strcmp(path, "/redirect") == 0)
		return sc_respond(c, 302, "Location: /echo\r\n", "moved", 5);
	if (strcmp(path, "/json") == 0)
		return sc_respond(c, 200, "Content-Type: application/json\r\n", "{}", 2);
	if (strcmp(path, "/sni") == 0)
		return sc_respond(c, 200, NULL, c->sni[0] ? c->sni : "-", c->sni[0] ? strlen(c->sni) : 1);
	if (strcmp(path, "/clientcert") == 0)
		return sc_respond(c, 200, NULL, c->client_cert ? "yes" : "no", c->client_cert ? 3 : 2);
	return sc_respond(c, 404, NULL, "not found", 9);
}

static size_t header_value(const char *hdrs, size_t hlen, const char *name, char *out, size_t outlen)
{
	size_t nl = strlen(name);
	for (const char *p = hdrs; p < hdrs + hlen;) {
		const char *eol = memmem(p, (size_t)(hdrs + hlen - p), "\r\n", 2);
		if (!eol)
			break;
		if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1;
			while (*v == ' ')
				v++;
			size_t n = (size_t)(eol - v) < outlen - 1 ? (size_t)(eol - v) : outlen - 1;
			memcpy(out, v, n);
			out[n] = 0;
			return n;
		}
		p = eol + 2;
	}
	out[0] = 0;
	return 0;
}

static void *sc_main(void *arg)
{
	struct sconn *c = arg;
	struct buf in = { 0 };
	if (c->s->ctx) {
		c->ssl = SSL_new(c->s->ctx);
		SSL_set_fd(c->ssl, c->fd);
		if (SSL_accept(c->ssl) != 1)
			goto out;
		const char *sn = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
		if (sn)
			snprintf(c->sni, sizeof c->sni, "%s", sn);
		X509 *peer = SSL_get1_peer_certificate(c->ssl);
		c->client_cert = peer != NULL;
		X509_free(peer);
	}
	for (;;) {
		const char *hend;
		while (in.len < 4 || !(hend = memmem(in.data, in.len, "\r\n\r\n", 4))) {
			if (in.len > 1 << 20)
				goto out;
			ssize_t r = sc_read(c, buf_reserve(&in, 65536), 65536);
			if (r <= 0)
				goto out;
			in.len += (size_t)r;
		}
		size_t hlen = (size_t)(hend - (const char *)in.data) + 4;
		char v[64], conn[64];
		size_t clen = header_value((const char *)in.data, hlen, "Content-Length", v, sizeof v) ? strtoul(v, NULL, 10) : 0;
		header_value((const char *)in.data, hlen, "Connection", conn, sizeof conn);
		while (in.len < hlen + clen) {
			ssize_t r = sc_read(c, buf_reserve(&in, 65536), 65536);
			if (r <= 0)
				goto out;
			in.len += (size_t)r;
		}
		char path[512] = "";
		const char *sp = memchr(in.data, ' ', hlen);
		if (sp) {
			const char *sp2 = memchr(sp + 1, ' ', hlen - (size_t)(sp + 1 - (const char *)in.data));
			size_t n = sp2 ? (size_t)(sp2 - sp - 1) : 0;
			if (n >= sizeof path)
				n = sizeof path - 1;
			memcpy(path, sp + 1, n);
			path[n] = 0;
		}
		atomic_fetch_add(&c->s->requests, 1);
		c->head = in.len >= 5 && memcmp(in.data, "HEAD ", 5) == 0;
		if (!sc_handle(c, (const char *)in.data, hlen + clen, path) || strcasecmp(conn, "close") == 0)
			break;
		buf_consume(&in, hlen + clen);
	}
out:
	buf_free(&in);
	SSL_free(c->ssl);
	c->ssl = NULL;
	pthread_mutex_lock(&c->s->lock);
	close(c->fd);
	c->fd = -1;
	pthread_mutex_unlock(&c->s->lock);
	return NULL;
}

static void *srv_main(void *arg)
{
	struct srv *s = arg;
	for (;;) {
		int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			break;
		}
		atomic_fetch_add(&s->accepted, 1);
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		struct sconn *c = xcalloc(1, sizeof *c);
		c->s = s;
		c->fd = fd;
		pthread_mutex_lock(&s->lock);
		c->next = s->conns;
		s->conns = c;
		pthread_mutex_unlock(&s->lock);
		pthread_create(&c->th, NULL, sc_main, c);
	}
	return NULL;
}

static int listen_any(int *port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof a;
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 128) < 0)
		abort();
	getsockname(fd, (struct sockaddr *)&a, &al);
	*port = ntohs(a.sin_port);
	return fd;
}

static struct srv *srv_start(SSL_CTX *ctx)
{
	struct srv *s = xcalloc(1, sizeof *s);
	s->ctx = ctx;
	pthread_mutex_init(&s->lock, NULL);
	s->lfd = listen_any(&s->port);
	pthread_create(&s->th, NULL, srv_main, s);
	return s;
}

static void srv_stop(struct srv *s)
{
	shutdown(s->lfd, SHUT_RDWR); /* accept returns */
	pthread_join(s->th, NULL);
	close(s->lfd);
	pthread_mutex_lock(&s->lock);
	for (struct sconn *c = s->conns; c; c = c->next)
		if (c->fd >= 0)
			shutdown(c->fd, SHUT_RDWR);
	pthread_mutex_unlock(&s->lock);
	while (s->conns) {
		struct sconn *c = s->conns;
		s->conns = c->next;
		pthread_join(c->th, NULL);
		free(c);
	}
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* ---- certificates ---- */

static char tmpdir[64];
static char cert_pem[128], key_pem[128], other_ca_pem[128];

static void add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!e || !X509_add_ext(x, e, -1))
		abort();
	X509_EXTENSION_free(e);
}

/* A self-signed certificate for localhost, bulwark.test and 127.0.0.1 (its own CA). */
static X509 *make_cert(EVP_PKEY *k, const char *cn, long serial)
{
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_NAME *n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, n);
	X509_set_pubkey(x, k);
	add_ext(x, NID_basic_constraints, "critical,CA:TRUE");
	add_ext(x, NID_key_usage, "critical,digitalSignature,keyCertSign");
	add_ext(x, NID_subject_key_identifier, "hash");
	add_ext(x, NID_subject_alt_name, "DNS:localhost,DNS:bulwark.test,IP:127.0.0.1");
	if (!X509_sign(x, k, EVP_sha256()))
		abort();
	return x;
}

static void write_pem(const char *path, X509 *x, EVP_PKEY *k)
{
	FILE *fp = fopen(path, "w");
	if (!fp)
		abort();
	if (x)
		PEM_write_X509(fp, x);
	if (k)
		PEM_write_PrivateKey(fp, k, NULL, NULL, 0, NULL, NULL);
	fclose(fp);
}

static int accept_any_cert(int ok, X509_STORE_CTX *ctx)
{
	(void)ok;
	(void)ctx;
	return 1;
}

static SSL_CTX *make_tls(void)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/bw-http-XXXXXX");
	if (!mkdtemp(tmpdir))
		abort();
	snprintf(cert_pem, sizeof cert_pem, "%s/cert.pem", tmpdir);
	snprintf(key_pem, sizeof key_pem, "%s/key.pem", tmpdir);
	snprintf(other_ca_pem, sizeof other_ca_pem, "%s/other-ca.pem", tmpdir);
	EVP_PKEY *k = EVP_EC_gen("P-256"), *k2 = EVP_EC_gen("P-256");
	X509 *x = make_cert(k, "localhost", 1), *x2 = make_cert(k2, "localhost", 2);
	write_pem(cert_pem, x, NULL);
	write_pem(key_pem, NULL, k);
	write_pem(other_ca_pem, x2, NULL);
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (SSL_CTX_use_certificate(ctx, x) != 1 || SSL_CTX_use_PrivateKey(ctx, k) != 1)
		abort();
	/* Ask for a client certificate, accept any or none (the /clientcert route reports it). */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, accept_any_cert);
	X509_free(x);
	X509_free(x2);
	EVP_PKEY_free(k);
	EVP_PKEY_free(k2);
	return ctx;
}

static void remove_tls_files(void)
{
	unlink(cert_pem);
	unlink(key_pem);
	unlink(other_ca_pem);
	rmdir(tmpdir);
}

/* ---- the callback loop ---- */

static struct loop *tl;
static pthread_t tl_thread;

static void *loop_main(void *arg)
{
	loop_run(arg);
	return NULL;
}

static void tl_start(void)
{
	tl = loop_new(1);
	pthread_create(&tl_thread, NULL, loop_main, tl);
}

static void tl_stop(void)
{
	loop_stop(tl);
	pthread_join(tl_thread, NULL);
	loop_drain(tl);
	loop_free(tl);
	tl = NULL;
}

struct onloop {
	void (*fn)(void *);
	void *arg;
	atomic_int done;
};

static void onloop_run(void *a)
{
	struct onloop *o = a;
	o->fn(o->arg);
	atomic_store(&o->done, 1);
}

/* Run fn(arg) on the test loop's thread and wait for it. */
static void on_loop(void (*fn)(void *), void *arg)
{
	struct onloop o = { fn, arg, 0 };
	loop_post(tl, onloop_run, &o);
	while (!atomic_load(&o.done))
		usleep(200);
}

/* ---- results ---- */

struct result {
	atomic_int done;        /* times the callback ran */
	bool cancelled;         /* loop thread: http_cancel was called */
	bool cancel_self;       /* the callback cancels its own call */
	int status;
	char *error, *ctype;
	uint8_t *body;
	size_t len;
	uint64_t elapsed;
	struct loop *ran_on;
	struct http_call *call;
	uint64_t at_ms;         /* when the callback ran */
	struct result *peer;    /* the callback cancels the peer's call if it has not run yet */
};

static atomic_int total_done, after_cancel;

static void on_done(void *arg, const struct http_response *r)
{
	struct result *res = arg;
	if (res->cancelled)
		atomic_fetch_add(&after_cancel, 1);
	res->status = r->status;
	res->error = r->error ? xstrdup(r->error) : NULL;
	res->ctype = r->content_type ? xstrdup(r->content_type) : NULL;
	res->body = xmalloc(r->body_len + 1);
	if (r->body_len)
		memcpy(res->body, r->body, r->body_len);
	res->body[r->body_len] = 0;
	res->len = r->body_len;
	res->elapsed = r->elapsed_ms;
	res->ran_on = loop_current();
	res->at_ms = clock_mono_ms();
	if (res->cancel_self)
		http_cancel(res->call); /* no-op inside its own callback */
	if (res->peer && !atomic_load(&res->peer->done)) {
		res->peer->cancelled = true;
		http_cancel(res->peer->call);
	}
	atomic_fetch_add(&res->done, 1);
	atomic_fetch_add(&total_done, 1);
}

static struct result *res_new(void)
{
	return xcalloc(1, sizeof(struct result));
}

static void res_free(struct result *r)
{
	if (!r)
		return;
	free(r->error);
	free(r->ctype);
	free(r->body);
	free(r);
}

static bool wait_for(atomic_int *v, int n, uint64_t ms)
{
	uint64_t end = clock_mono_ms() + ms;
	while (atomic_load(v) < n) {
		if (clock_mono_ms() > end)
			return false;
		usleep(500);
	}
	return true;
}

static struct srv *plain, *tls;
static struct http_client *hc;
static char urlbuf[256];

static const char *url_of(const struct srv *s, const char *path)
{
	snprintf(urlbuf, sizeof urlbuf, "%s://127.0.0.1:%d%s", s->ctx ? "https" : "http", s->port, path);
	return urlbuf;
}

/* Start req on the test loop and wait for its callback (up to ms). */
static struct result *run(const struct http_request *req, uint64_t ms)
{
	struct result *r = res_new();
	r->call = http_start(hc, req, tl, on_done, r);
	if (!wait_for(&r->done, 1, ms)) {
		fprintf(stderr, "no callback within %" PRIu64 " ms for %s\n", ms, req->url);
		return r;
	}
	return r;
}

static struct result *get(const char *url)
{
	struct http_request req = { .url = url };
	return run(&req, 5000);
}

/* ---- tests ---- */

TEST(get_and_post_echo)
{
	const char *hdrs[] = { "X-Test: hello", "Authorization: Bearer abc", NULL };
	struct http_request req = { .url = url_of(plain, "/echo?x=1"), .headers = hdrs };
	struct result *r = run(&req, 5000);
	CHECK_EQ_INT(r->done, 1);
	CHECK_EQ_INT(r->status, 200);
	CHECK(r->error == NULL);
	CHECK_STR(r->ctype, "text/plain");
	CHECK(r->ran_on == tl);
	CHECK(r->body && strstr((char *)r->body, "GET /echo?x=1 HTTP/1.1\r\n"));
	CHECK(r->body && strstr((char *)r->body, "\r\nX-Test: hello\r\n"));
	CHECK(r->body && strstr((char *)r->body, "\r\nUser-Agent: bulwark/"));
	CHECK(r->elapsed < 5000);
	res_free(r);

	/* POST with a binary body and a content type. */
	static const uint8_t body[] = { 'p', 'a', 'y', 0, 1, 2, 0xff, 'z' };
	const char *ph[] = { "Content-Type: application/ocsp-request", NULL };
	struct http_request post = { .method = "POST", .url = url_of(plain, "/echo"), .headers = ph, .body = body,
				     .body_len = sizeof body };
	r = run(&post, 5000);
	CHECK_EQ_INT(r->status, 200);
	CHECK(r->body && strstr((char *)r->body, "POST /echo HTTP/1.1\r\n"));
	CHECK(r->body && strstr((char *)r->body, "\r\nContent-Type: application/ocsp-request\r\n"));
	CHECK(r->body && strstr((char *)r->body, "\r\nContent-Length: 8\r\n"));
	CHECK(r->body && !strstr((char *)r->body, "Expect:"));
	CHECK(r->len >= sizeof body && memcmp(r->body + r->len - sizeof body, body, sizeof body) == 0);
	res_free(r);

	/* A large POST body arrives intact (no 100-continue). */
	size_t big = 300000;
	char *bb = xmalloc(big);
	fill_pattern(bb, big, 7);
	struct http_request bigpost = { .method = "POST", .url = url_of(plain, "/echo"), .body = bb, .body_len = big };
	r = run(&bigpost, 5000);
	CHECK_EQ_INT(r->status, 200);
	CHECK(r->len > big && memcmp(r->body + r->len - big, bb, big) == 0);
	free(bb);
	res_free(r);

	/* PUT with a body, DELETE and POST without. */
	struct http_request put = { .method = "PUT", .url = url_of(plain, "/echo"), .body = "abc", .body_len = 3 };
	r = run(&put, 5000);
	CHECK(r->body && strstr((char *)r->body, "PUT /echo HTTP/1.1\r\n"));
	CHECK(r->len >= 3 && memcmp(r->body + r->len - 3, "abc", 3) == 0);
	res_free(r);
	struct http_request del = { .method = "DELETE", .url = url_of(plain, "/echo") };
	r = run(&del, 5000);
	CHECK(r->body && strstr((char *)r->body, "DELETE /echo HTTP/1.1\r\n"));
	CHECK(r->body && !strstr((char *)r->body, "Content-Length"));
	res_free(r);
	struct http_request post0 = { .method = "POST", .url = url_of(plain, "/echo") };
	r = run(&post0, 5000);
	CHECK(r->body && strstr((char *)r->body, "\r\nContent-Length: 0\r\n"));
	res_free(r);

	/* HEAD: status, no body. */
	struct http_request head = { .method = "HEAD", .url = url_of(plain, "/json") };
	r = run(&head, 5000);
	CHECK_EQ_INT(r->status, 200);
	CHECK_EQ_INT(r->len, 0);
	res_free(r);

	r = get(url_of(plain, "/json"));
	CHECK_STR(r->ctype, "application/json");
	CHECK_STR((char *)r->body, "{}");
	res_free(r);
}

TEST(status_codes)
{
	static const int codes[] = { 200, 204, 404, 500, 503 };
	for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
		char path[32];
		snprintf(path, sizeof path, "/status/%d", codes[i]);
		struct result *r = get(url_of(plain, path));
		CHECK_EQ_INT(r->status, codes[i]);
		CHECK(r->error == NULL);
		if (codes[i] == 204) {
			CHECK_EQ_INT(r->len, 0);
		} else {
			char want[32];
			snprintf(want, sizeof want, "status %d", codes[i]);
			CHECK_STR((char *)r->body, want);
		}
		res_free(r);
	}
	/* Redirects are returned, not followed. */
	struct result *r = get(url_of(plain, "/redirect"));
	CHECK_EQ_INT(r->status, 302);
	CHECK_STR((char *)r->body, "moved");
	res_free(r);
}

TEST(failures)
{
	/* Timeout: the server answers after 5 s, the call gives up after 300 ms. */
	uint64_t t0 = clock_mono_ms();
	struct http_request slow = { .url = url_of(plain, "/delay/5000"), .timeout_ms = 300 };
	struct result *r = run(&slow, 3000);
	uint64_t took = clock_mono_ms() - t0;
	CHECK_EQ_INT(r->done, 1);
	CHECK_EQ_INT(r->status, 0);
	CHECK(r->error && (strcasestr(r->error, "timeout") || strcasestr(r->error, "timed out")));
	CHECK(r->elapsed >= 290 && r->elapsed < 3000);
	CHECK(took < 3000);
	res_free(r);

	/* Connection refused. */
	int port;
	int fd = listen_any(&port);
	close(fd);
	char u[64];
	snprintf(u, sizeof u, "http://127.0.0.1:%d/x", port);
	r = get(u);
	CHECK_EQ_INT(r->done, 1);
	CHECK_EQ_INT(r->status, 0);
	CHECK(r->error && strcasestr(r->error, "connect"));
	res_free(r);

	/* The server closes without answering. */
	r = get(url_of(plain, "/close"));
	CHECK_EQ_INT(r->status, 0);
	CHECK(r->error && r->error[0]);
	res_free(r);

	/* Not a URL, not http(s), a header with CR LF, a bad method. */
	r = get("not a url");
	CHECK_EQ_INT(r->status, 0);
	CHECK(r->error != NULL);
	res_free(r);
	r = get("file:///etc/passwd");
	CHECK_EQ_INT(r->status, 0);
	CHECK(r->error && strcasestr(r->error, "protocol"));
	res_free(r);
	const char *bad[] = { "X-Evil: a\r\nX-Injected: b", NULL };
	struct http_request inj = { .url = url_of(plain, "/echo"), .headers = bad };
	r = run(&inj, 5000);
	CHECK_EQ_INT(r->status, 0);
	CHECK(r->error && strstr(r->error, "CR or LF"));
	res_free(r);
	struct http_request bm = { .method = "GE T", .url = url_of(plain, "/echo") };
	r = run(&bm, 5000);
	CHECK_EQ_INT(r->status, 0);
	res_free(r);
}

TEST(max_response)
{
	struct http_request req = { .url = url_of(plain, "/big/100000"), .max_response = 1000 };
	struct result *r = run(&req, 5000);
	CHECK_EQ_INT(r->status, 0);
	CHECK_STR(r->error, "response larger than 1000 bytes");
	CHECK_EQ_INT(r->len, 0);
	res_free(r);

	/* Without a Content-Length the limit is enforced while receiving. */
	struct http_request ch = { .url = url_of(plain, "/chunked/100000"), .max_response = 5000 };
	r = run(&ch, 5000);
	CHECK_EQ_INT(r->status, 0);
	CHECK_STR(r->error, "response larger than 5000 bytes");
	res_free(r);

	/* Exactly the limit is fine. */
	struct http_request ex = { .url = url_of(plain, "/chunked/5000"), .max_response = 5000 };
	r = run(&ex, 5000);
	CHECK_EQ_INT(r->status, 200);
	CHECK_EQ_INT(r->len, 5000);
	res_free(r);

	/* 3 MB under the default 4 MB limit arrives intact. */
	size_t n = 3 * 1024 * 1024;
	r = get(url_of(plain, "/big/3145728"));
	CHECK_EQ_INT(r->status, 200);
	CHECK_EQ_INT(r->len, n);
	if (r->len == n) {
		char *want = xmalloc(n);
		fill_pattern(want, n, 0);
		CHECK_MEM(r->body, want, n);
		free(want);
	}
	res_free(r);
	r = get(url_of(plain, "/big/5000000"));
	CHECK_EQ_INT(r->status, 0);
	CHECK_STR(r->error, "response larger than 4194304 bytes");
	res_free(r);
}

TEST(concurrent_50)
{
	enum { N = 50 };
	struct result *rs[N];
	int before = atomic_load(&total_done);
	for (int i = 0; i < N; i++) {
		char path[64];
		snprintf(path, sizeof path, "/echo?n=%d", i);
		struct http_request req = { .url = url_of(plain, path) };
		rs[i] = res_new();
		rs[i]->call = http_start(hc, &req, tl, on_done, rs[i]);
	}
	CHECK(wait_for(&total_done, before + N, 10000));
	for (int i = 0; i < N; i++) {
		char want[64];
		snprintf(want, sizeof want, "GET /echo?n=%d HTTP/1.1", i);
		CHECK_EQ_INT(rs[i]->done, 1);
		CHECK_EQ_INT(rs[i]->status, 200);
		CHECK(rs[i]->body && strstr((char *)rs[i]->body, want));
		res_free(rs[i]);
	}
}

TEST(connection_reuse)
{
	struct http_client *own = http_client_new(2);
	struct http_client *saved = hc;
	hc = own;
	int before = atomic_load(&plain->accepted);
	enum { N = 10 };
	for (int i = 0; i < N; i++) {
		struct result *r = get(url_of(plain, "/echo"));
		CHECK_EQ_INT(r->status, 200);
		res_free(r);
	}
	int conns = atomic_load(&plain->accepted) - before;
	CHECK(conns >= 1 && conns < N);
	CHECK(conns <= 2);
	/* max_per_host bounds concurrent connections: 8 slow calls use at most 2. */
	before = atomic_load(&plain->accepted);
	int done0 = atomic_load(&total_done);
	struct result *rs[8];
	for (int i = 0; i < 8; i++) {
		struct http_request req = { .url = url_of(plain, "/delay/20") };
		rs[i] = res_new();
		rs[i]->call = http_start(hc, &req, tl, on_done, rs[i]);
	}
	CHECK(wait_for(&total_done, done0 + 8, 10000));
	for (int i = 0; i < 8; i++) {
		CHECK_EQ_INT(rs[i]->status, 200);
		res_free(rs[i]);
	}
	CHECK(atomic_load(&plain->accepted) - before <= 2);
	hc = saved;
	http_client_free(own);
}

static void noop(void *arg)
{
	(void)arg;
}

static void cancel_on_loop(void *arg)
{
	struct result *r = arg;
	if (atomic_load(&r->done))
		return; /* done has run: the handle is gone */
	r->cancelled = true;
	http_cancel(r->call);
}

TEST(cancel_before_completion)
{
	/* Cancelled while the server delays. */
	struct http_request req = { .url = url_of(plain, "/delay/600") };
	struct result *r = res_new();
	r->call = http_start(hc, &req, tl, on_done, r);
	usleep(100 * 1000);
	on_loop(cancel_on_loop, r);
	CHECK(r->cancelled);
	/* Cancelled at once (still queued), on a URL that would fail fast. */
	struct result *q = res_new();
	struct http_request req2 = { .url = url_of(plain, "/echo") };
	q->call = http_start(hc, &req2, tl, on_done, q);
	on_loop(cancel_on_loop, q);
	usleep(900 * 1000);
	CHECK_EQ_INT(r->done, 0);
	CHECK_EQ_INT(atomic_load(&after_cancel), 0);
	if (!q->cancelled)
		CHECK_EQ_INT(q->done, 1);
	else
		CHECK_EQ_INT(q->done, 0);
	res_free(r);
	res_free(q);
	http_cancel(NULL);
}

static void start_self_cancel(void *arg)
{
	struct result *r = arg;
	struct http_request req = { .url = url_of(plain, "/status/200") };
	r->cancel_self = true;
	r->call = http_start(hc, &req, tl, on_done, r);
}

TEST(cancel_races_completion)
{
	enum { N = 300 };
	struct result **rs = xcalloc(N, sizeof *rs);
	int cancelled = 0, completed = 0;
	for (int i = 0; i < N; i++) {
		struct http_request req = { .url = url_of(plain, i % 3 ? "/status/200" : "/echo") };
		rs[i] = res_new();
		rs[i]->call = http_start(hc, &req, tl, on_done, rs[i]);
		/* Vary the moment of the cancel: queued, transferring, finished, posted. */
		if (i % 4)
			usleep((useconds_t)((i * 37) % 1500));
		if (i % 2)
			on_loop(cancel_on_loop, rs[i]);
		else
			loop_post(tl, cancel_on_loop, rs[i]);
	}
	/* Let every call settle. */
	for (int i = 0; i < N; i++) {
		uint64_t end = clock_mono_ms() + 5000;
		while (!rs[i]->cancelled && !atomic_load(&rs[i]->done) && clock_mono_ms() < end)
			usleep(500);
	}
	usleep(200 * 1000);
	for (int i = 0; i < N; i++) {
		if (rs[i]->cancelled) {
			cancelled++;
			CHECK_EQ_INT(rs[i]->done, 0);
		} else {
			completed++;
			CHECK_EQ_INT(rs[i]->done, 1);
			CHECK_EQ_INT(rs[i]->status, 200);
		}
	}
	CHECK_EQ_INT(atomic_load(&after_cancel), 0);
	CHECK_EQ_INT(cancelled + completed, N);
	if (getenv("HTTP_TEST_VERBOSE"))
		fprintf(stderr, "cancel race: %d cancelled, %d completed first\n", cancelled, completed);
	for (int i = 0; i < N; i++)
		res_free(rs[i]);
	free(rs);

	/* Cancel from inside the call's own callback is a no-op. */
	struct result *self = res_new();
	on_loop(start_self_cancel, self);
	CHECK(wait_for(&self->done, 1, 5000));
	CHECK_EQ_INT(self->status, 200);
	res_free(self);
}

static size_t ready_on(struct loop *l)
{
	size_t n = 0;
	pthread_mutex_lock(&ready_lock);
	list_for_each(pos, &ready_calls)
		if (container_of(pos, struct http_call, link)->loop == l)
			n++;
	pthread_mutex_unlock(&ready_lock);
	return n;
}

struct blockctx {
	atomic_int started;
	struct result *c, *d;
	size_t seen;
};

/* On the loop thread, keeping it busy until 4 calls are finished and waiting for it; then
 * cancel two of them (they are READY: in the registry, their delivery posted). */
static void block_then_cancel(void *arg)
{
	struct blockctx *b = arg;
	uint64_t end = clock_mono_ms() + 3000;
	while ((!atomic_load(&b->started) || ready_on(tl) < 4) && clock_mono_ms() < end)
		usleep(500);
	b->seen = ready_on(tl);
	cancel_on_loop(b->c);
	cancel_on_loop(b->d);
}

TEST(cancel_ready_and_taken)
{
	for (int round = 0; round < 20; round++) {
		struct result *a = res_new(), *b = res_new(), *c = res_new(), *d = res_new();
		struct blockctx bc = { .c = c, .d = d };
		a->peer = b; /* whichever of a and b runs first cancels the other, taken in the same pass */
		b->peer = a;
		loop_post(tl, block_then_cancel, &bc);
		struct result *all[] = { a, b, c, d };
		for (int i = 0; i < 4; i++) {
			struct http_request req = { .url = url_of(plain, "/status/200") };
			all[i]->call = http_start(hc, &req, tl, on_done, all[i]);
		}
		atomic_store(&bc.started, 1);
		uint64_t end = clock_mono_ms() + 5000;
		while (atomic_load(&a->done) + atomic_load(&b->done) < 1 && clock_mono_ms() < end)
			usleep(500);
		on_loop(noop, NULL); /* everything posted before has run */
		CHECK_EQ_INT(bc.seen, 4);
		CHECK_EQ_INT(atomic_load(&a->done) + atomic_load(&b->done), 1);
		CHECK(a->cancelled != b->cancelled);
		CHECK(c->cancelled && d->cancelled);
		CHECK_EQ_INT(c->done + d->done, 0);
		CHECK_EQ_INT(atomic_load(&after_cancel), 0);
		for (int i = 0; i < 4; i++)
			res_free(all[i]);
	}
}

TEST(fire_and_forget)
{
	/* No callback: the request still runs, no handle is returned, nothing leaks. */
	int before = atomic_load(&plain->requests);
	struct http_request req = { .url = url_of(plain, "/echo") };
	CHECK(http_start(hc, &req, tl, NULL, NULL) == NULL);
	CHECK(http_start(hc, &req, NULL, on_done, NULL) == NULL);
	CHECK(wait_for(&plain->requests, before + 2, 5000));
}

TEST(get_sync)
{
	uint8_t *body = NULL;
	size_t len = 0;
	char err[256];
	int st = http_get_sync(hc, url_of(plain, "/json"), 2000, &body, &len, err, sizeof err);
	CHECK_EQ_INT(st, 200);
	CHECK_EQ_INT(len, 2);
	CHECK(body && memcmp(body, "{}", 2) == 0);
	CHECK_STR(err, "");
	free(body);

	st = http_get_sync(NULL, url_of(plain, "/status/404"), 2000, &body, &len, err, sizeof err);
	CHECK_EQ_INT(st, 404);
	free(body);

	int port;
	int fd = listen_any(&port);
	close(fd);
	char u[64];
	snprintf(u, sizeof u, "http://127.0.0.1:%d/", port);
	st = http_get_sync(hc, u, 2000, &body, &len, err, sizeof err);
	CHECK_EQ_INT(st, 0);
	CHECK(body == NULL);
	CHECK_EQ_INT(len, 0);
	CHECK(strcasestr(err, "connect") != NULL);

	uint64_t t0 = clock_mono_ms();
	st = http_get_sync(hc, url_of(plain, "/delay/3000"), 200, &body, &len, err, sizeof err);
	CHECK_EQ_INT(st, 0);
	CHECK(clock_mono_ms() - t0 < 2000);
	CHECK(strcasestr(err, "timeout") || strcasestr(err, "timed out"));
}

TEST(free_with_calls_in_flight)
{
	/* The loop runs: every outstanding call completes with "shutting down", promptly. */
	struct http_client *c = http_client_new(0);
	CHECK(c != NULL);
	enum { N = 6 };
	struct result *rs[N];
	for (int i = 0; i < N; i++) {
		struct http_request req = { .url = url_of(plain, "/delay/3000") };
		rs[i] = res_new();
		rs[i]->call = http_start(c, &req, tl, on_done, rs[i]);
	}
	usleep(50 * 1000);
	uint64_t t0 = clock_mono_ms();
	http_client_free(c);
	CHECK(clock_mono_ms() - t0 < 900);
	for (int i = 0; i < N; i++) {
		CHECK(wait_for(&rs[i]->done, 1, 1000));
		CHECK_EQ_INT(rs[i]->status, 0);
		CHECK_STR(rs[i]->error, "shutting down");
		res_free(rs[i]);
	}
}

static void free_client_on_loop(void *arg)
{
	http_client_free(arg);
}

TEST(free_on_loop_thread)
{
	/* Freed on the loop the callbacks are for: they run inside http_client_free. */
	struct http_client *c = http_client_new(0);
	struct result *a = res_new(), *b = res_new();
	struct http_request slow = { .url = url_of(plain, "/delay/3000") };
	a->call = http_start(c, &slow, tl, on_done, a);
	struct http_request fast = { .url = url_of(plain, "/status/200") };
	b->call = http_start(c, &fast, tl, on_done, b);
	usleep(100 * 1000);
	uint64_t t0 = clock_mono_ms();
	on_loop(free_client_on_loop, c);
	CHECK(clock_mono_ms() - t0 < 900);
	CHECK_EQ_INT(a->done, 1);
	CHECK_STR(a->error, "shutting down");
	CHECK_EQ_INT(b->done, 1);
	CHECK_EQ_INT(b->status, 200);
	res_free(a);
	res_free(b);
}

TEST(free_after_loop_stopped)
{
	/* A second loop, stopped before the client is freed: callbacks are dropped, nothing
	 * leaks, a later drain of the loop runs nothing. */
	struct loop *l2 = loop_new(2);
	pthread_t th;
	pthread_create(&th, NULL, loop_main, l2);
	struct http_client *c = http_client_new(0);
	loop_stop(l2);
	pthread_join(th, NULL);
	enum { N = 6 };
	struct result *rs[N];
	for (int i = 0; i < N; i++) {
		struct http_request req = { .url = url_of(plain, i % 2 ? "/delay/3000" : "/status/200") };
		rs[i] = res_new();
		rs[i]->call = http_start(c, &req, l2, on_done, rs[i]);
	}
	usleep(300 * 1000); /* the fast ones are finished and waiting for l2 */
	http_cancel(rs[0]->call); /* its owner gives up (loop stopped: this thread owns it now) */
	rs[0]->cancelled = true;
	uint64_t saved = shutdown_grace_ms;
	shutdown_grace_ms = 200;
	uint64_t t0 = clock_mono_ms();
	http_client_free(c);
	uint64_t took = clock_mono_ms() - t0;
	shutdown_grace_ms = saved;
	CHECK(took >= 190 && took < 1500);
	pthread_mutex_lock(&ready_lock);
	size_t left = 0;
	list_for_each(pos, &ready_calls)
		left++;
	pthread_mutex_unlock(&ready_lock);
	CHECK_EQ_INT(left, 0);
	loop_drain(l2);
	for (int i = 0; i < N; i++) {
		CHECK_EQ_INT(rs[i]->done, 0);
		res_free(rs[i]);
	}
	loop_free(l2);
}

TEST(start_after_stop)
{
	/* http_start on a client that is shutting down completes at once with status 0. This
	 * only happens from callbacks running during http_client_free; simulate it. */
	struct http_client *c = http_client_new(0);
	pthread_mutex_lock(&c->lock);
	c->stopping = true;
	pthread_mutex_unlock(&c->lock);
	struct http_request req = { .url = url_of(plain, "/echo") };
	struct result *r = res_new();
	r->call = http_start(c, &req, tl, on_done, r);
	CHECK(wait_for(&r->done, 1, 2000));
	CHECK_STR(r->error, "shutting down");
	res_free(r);
	http_client_free(c);
}

TEST(https)
{
	/* tls_verify false (the default): a self-signed certificate is accepted. */
	struct result *r = get(url_of(tls, "/echo"));
	CHECK_EQ_INT(r->status, 200);
	CHECK(r->body && strstr((char *)r->body, "GET /echo HTTP/1.1"));
	res_free(r);

	char u[128];
	snprintf(u, sizeof u, "https://localhost:%d/sni", tls->port);
	struct http_request v = { .url = u, .tls_verify = true, .tls_ca_file = cert_pem };
	r = run(&v, 5000);
	CHECK_EQ_INT(r->status, 200);
	CHECK_STR((char *)r->body, "localhost");
	res_free(r);

	/* Verification against the wrong CA, or the system bundle, fails. */
	v.tls_ca_file = other_ca_pem;
	r = run(&v, 5000);
	CHECK_EQ_INT(r->status, 0);
	CHECK(r->error && (strcasestr(r->error, "certificate") || strcasestr(r->error, "SSL")));
	res_free(r);
	v.tls_ca_file = NULL;
	r = run(&v, 5000);
	CHECK_EQ_INT(r->status, 0);
	res_free(r);

	/* tls_sni: connect to 127.0.0.1, send and verify "bulwark.test", keep the Host header. */
	struct http_request s = { .url = url_of(tls, "/sni"), .tls_verify = true, .tls_ca_file = cert_pem,
				  .tls_sni = "bulwark.test" };
	r = run(&s, 5000);
	CHECK_EQ_INT(r->status, 200);
	CHECK_STR((char *)r->body, "bulwark.test");
	res_free(r);
	char host[64];
	snprintf(host, sizeof host, "\r\nHost: 127.0.0.1:%d\r\n", tls->port);
	s.url = url_of(tls, "/echo");
	r = run(&s, 5000);
	CHECK_EQ_INT(r->status, 200);
	CHECK(r->body && strstr((char *)r->body, host));
	res_free(r);
	s.tls_sni = "wrong.test";
	s.url = url_of(tls, "/sni");
	r = run(&s, 5000);
	CHECK_EQ_INT(r->status, 0);
	res_free(r);
	s.tls_verify = false;
	r = run(&s, 5000);
	CHECK_EQ_INT(r->status, 200);
	CHECK_STR((char *)r->body, "wrong.test");
	res_free(r);
	s.tls_sni = "bad:name";
	r = run(&s, 5000);
	CHECK_EQ_INT(r->status, 0);
	CHECK(r->error && strstr(r->error, "tls_sni"));
	res_free(r);

	/* A client certificate, when given, is presented. */
	struct http_request cc = { .url = url_of(tls, "/clientcert"), .tls_cert_file = cert_pem,
				   .tls_key_file = key_pem };
	r = run(&cc, 5000);
	CHECK_EQ_INT(r->status, 200);
	CHECK_STR((char *)r->body, "yes");
	res_free(r);
	cc.tls_cert_file = cc.tls_key_file = NULL;
	r = run(&cc, 5000);
	CHECK_EQ_INT(r->status, 200);
	CHECK_STR((char *)r->body, "no");
	res_free(r);

	/* Synchronous https. */
	uint8_t *body;
	size_t len;
	char err[256];
	CHECK_EQ_INT(http_get_sync(hc, url_of(tls, "/json"), 2000, &body, &len, err, sizeof err), 200);
	free(body);
}

TEST(url_for_log)
{
	char *u = url_for_log("https://user:secret@example.com:8443/path/x?token=abc#frag");
	CHECK_STR(u, "https://example.com:8443/path/x?...");
	free(u);
	u = url_for_log("http://h/a b\n");
	CHECK_STR(u, "http://h/a%20b%0A");
	free(u);
	u = url_for_log("http://h?q");
	CHECK_STR(u, "http://h?...");
	free(u);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	if (getenv("HTTP_TEST_DEBUG"))
		log_set_level(LOG_DEBUG);
	SSL_CTX *ctx = make_tls();
	plain = srv_start(NULL);
	tls = srv_start(ctx);
	tl_start();
	hc = http_client_new(0);
	CHECK(hc != NULL);

	RUN(url_for_log);
	RUN(get_and_post_echo);
	RUN(status_codes);
	RUN(failures);
	RUN(max_response);
	RUN(concurrent_50);
	RUN(connection_reuse);
	RUN(cancel_before_completion);
	RUN(cancel_races_completion);
	RUN(cancel_ready_and_taken);
	RUN(fire_and_forget);
	RUN(get_sync);
	RUN(free_with_calls_in_flight);
	RUN(free_on_loop_thread);
	RUN(free_after_loop_stopped);
	RUN(start_after_stop);
	RUN(https);

	http_client_free(hc);
	tl_stop();
	srv_stop(plain);
	srv_stop(tls);
	SSL_CTX_free(ctx);
	remove_tls_files();
	return unit_summary();
}
