/* bwbench.c: Bulwark's MQTT benchmark load generator: options, scenario orchestration, report.
 *
 * The main thread parses the options, prepares the client TLS context, the addresses and the
 * publisher / subscriber tables, starts --threads workers (bw_loop.c), moves the run through
 * its phases, samples the broker (--pid) from /proc at the phase boundaries, watches for
 * errors and stalls, and prints the figures as text and JSON. See docs/BENCH_TOOL.md.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "bwbench.h"

struct bench g;

static const char *scenario_names[] = { "conn", "idle", "p2p", "fanout", "fanin" };

uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void bench_error(const char *fmt, ...)
{
	pthread_mutex_lock(&g.err_lock);
	if (!g.first_err[0]) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(g.first_err, sizeof g.first_err, fmt, ap);
		va_end(ap);
	}
	atomic_fetch_add(&g.nerr, 1);
	pthread_mutex_unlock(&g.err_lock);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bwbench --scenario conn|idle|p2p|fanout|fanin [options]\n"
		"\n"
		"Connection:\n"
		"  --host ADDR            broker address (127.0.0.1)\n"
		"  --port N               broker port (1883, with --tls 8883)\n"
		"  --tls                  TLS 1.3 (no SNI)\n"
		"  --cafile FILE          verify the broker's certificate against FILE (else no verification)\n"
		"  --cert FILE --key FILE client certificate and key: mutual TLS\n"
		"  --src-addrs LIST       bind client sockets round-robin to these source addresses, e.g.\n"
		"                         127.0.0.1-127.0.0.16 or 127.0.0.2,127.0.0.3 (needed beyond ~28k\n"
		"                         connections to one port)\n"
		"  --mqtt 3|5             protocol version (3 = 3.1.1, default)\n"
		"  --keepalive S          CONNECT keepalive (300)\n"
		"  --threads N            worker threads, one epoll loop each (1)\n"
		"\n"
		"Broker figures:\n"
		"  --pid PID              the broker process: CPU per thread from /proc/PID/task/*/schedstat,\n"
		"                         VmRSS / VmHWM from /proc/PID/status, sampled around the measured phase\n"
		"\n"
		"Scenarios:\n"
		"  conn    -n N connections, -c C at a time: TCP + TLS + CONNECT/CONNACK + DISCONNECT +\n"
		"          close_notify each. Figures: connects per broker-CPU-second, latency from TCP\n"
		"          connect to CONNACK.   --resume: each of the C slots resumes the TLS session of\n"
		"          its previous connection (tickets are read before CONNACK).\n"
		"  idle    open -n N connections (-c C at a time) and hold them --hold S (5) seconds.\n"
		"          Figures: broker RSS per connection, broker CPU while idle.\n"
		"  p2p     -p P pairs: subscriber i on bench/p2p/i, publisher i publishes there.\n"
		"  fanout  -p P publishers to bench/fan, -s S subscribers of bench/fan.\n"
		"  fanin   -p P publishers to bench/in/i, -s S subscribers of $share/g/bench/in/#.\n"
		"\n"
		"Connection scenarios:\n"
		"  -n, --connections N    (1000)\n"
		"  -c, --concurrency C    connection attempts in flight (conn 8, others 64)\n"
		"  --resume               conn: TLS session resumption\n"
		"  --hold S               idle: seconds to hold the connections (5)\n"
		"  --max-fail N           failed connections tolerated before giving up (0)\n"
		"\n"
		"Publish scenarios:\n"
		"  -p, --pubs P           publishers (1)\n"
		"  -s, --subs S           subscribers, fanout / fanin (1)\n"
		"  --qos 0|1              publish and subscribe QoS (0)\n"
		"  --size B               payload bytes, >= 16: 8 B send timestamp, 8 B publisher << 40 | sequence (64)\n"
		"  --warmup S             unmeasured publishing before the measurement (2)\n"
		"  --duration S           measured phase (10)\n"
		"  --rate R               messages/s per publisher, 0 = as fast as allowed (0)\n"
		"  --inflight N           QoS 1: unacked PUBLISH per publisher (64)\n"
		"  --window N             pacing: no subscriber falls more than N messages behind. A publisher\n"
		"                         runs at most N (p2p: ahead of its pair), N / P (fanout: ahead of the\n"
		"                         slowest subscriber) or N * S / P (fanin: ahead of its share of S times\n"
		"                         what the slowest member of the group received from everyone)\n"
		"                         messages ahead; QoS 0 messages that never arrive are written off\n"
		"                         after 0.5 s without progress (a \"pacing stall\") (1000)\n"
		"  --batch N              at most N PUBLISH packets per write (16)\n"
		"  --persistent           persistent sessions (clean session 0; MQTT 5: Session Expiry 1 h):\n"
		"                         with QoS 1 every message is stored for its subscriber\n"
		"  --lat-samples N        latency reservoir size, all threads (1048576)\n"
		"\n"
		"Output and control:\n"
		"  --json FILE            all figures as JSON (- = one line on stdout after the text)\n"
		"  --stall-timeout S      give up after S seconds without progress (10)\n"
		"  --client-prefix STR    client id prefix (bwb<pid>)\n"
		"  -h, --help\n"
		"\n"
		"Exit status: 0 = the run completed, 1 = the broker refused or dropped connections, a\n"
		"handshake failed, or the run stalled (message on stderr), 2 = bad usage or setup.\n");
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "bwbench: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(2);
}

static double num_arg(const char *opt, const char *s, double lo, double hi)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || v < lo || v > hi)
		die("%s: expected a number in %g..%g, got '%s'", opt, lo, hi, s);
	return v;
}

enum {
	OPT_HOST = 256, OPT_PORT, OPT_TLS, OPT_CAFILE, OPT_CERT, OPT_KEY, OPT_SRC, OPT_THREADS, OPT_PID,
	OPT_SCENARIO, OPT_RESUME, OPT_HOLD, OPT_QOS, OPT_SIZE, OPT_DURATION, OPT_WARMUP, OPT_RATE,
	OPT_INFLIGHT, OPT_WINDOW, OPT_BATCH, OPT_MQTT, OPT_KEEPALIVE, OPT_JSON, OPT_MAXFAIL, OPT_STALL,
	OPT_LAT, OPT_PREFIX, OPT_PERSISTENT,
};

static void parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "host", required_argument, NULL, OPT_HOST },
		{ "port", required_argument, NULL, OPT_PORT },
		{ "tls", no_argument, NULL, OPT_TLS },
		{ "cafile", required_argument, NULL, OPT_CAFILE },
		{ "cert", required_argument, NULL, OPT_CERT },
		{ "key", required_argument, NULL, OPT_KEY },
		{ "src-addrs", required_argument, NULL, OPT_SRC },
		{ "threads", required_argument, NULL, OPT_THREADS },
		{ "pid", required_argument, NULL, OPT_PID },
		{ "scenario", required_argument, NULL, OPT_SCENARIO },
		{ "connections", required_argument, NULL, 'n' },
		{ "concurrency", required_argument, NULL, 'c' },
		{ "resume", no_argument, NULL, OPT_RESUME },
		{ "hold", required_argument, NULL, OPT_HOLD },
		{ "pubs", required_argument, NULL, 'p' },
		{ "subs", required_argument, NULL, 's' },
		{ "qos", required_argument, NULL, OPT_QOS },
		{ "size", required_argument, NULL, OPT_SIZE },
		{ "duration", required_argument, NULL, OPT_DURATION },
		{ "warmup", required_argument, NULL, OPT_WARMUP },
		{ "rate", required_argument, NULL, OPT_RATE },
		{ "inflight", required_argument, NULL, OPT_INFLIGHT },
		{ "window", required_argument, NULL, OPT_WINDOW },
		{ "batch", required_argument, NULL, OPT_BATCH },
		{ "persistent", no_argument, NULL, OPT_PERSISTENT },
		{ "mqtt", required_argument, NULL, OPT_MQTT },
		{ "keepalive", required_argument, NULL, OPT_KEEPALIVE },
		{ "json", required_argument, NULL, OPT_JSON },
		{ "max-fail", required_argument, NULL, OPT_MAXFAIL },
		{ "stall-timeout", required_argument, NULL, OPT_STALL },
		{ "lat-samples", required_argument, NULL, OPT_LAT },
		{ "client-prefix", required_argument, NULL, OPT_PREFIX },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bench_opts *o = &g.o;
	*o = (struct bench_opts){
		.host = "127.0.0.1", .threads = 1, .scenario = -1, .n = 1000, .hold = 5, .pubs = 1, .subs = 1,
		.size = 64, .duration = 10, .warmup = 2, .inflight = 64, .window = 1000, .batch = 16,
		.mqtt = 4, .keepalive = 300, .stall = 10, .lat_samples = 1u << 20,
	};
	bool subs_given = false;
	int ch;
	while ((ch = getopt_long(argc, argv, "n:c:p:s:h", opts, NULL)) != -1) {
		switch (ch) {
		case OPT_HOST: o->host = optarg; break;
		case OPT_PORT: o->port = (int)num_arg("--port", optarg, 1, 65535); break;
		case OPT_TLS: o->tls = true; break;
		case OPT_CAFILE: o->cafile = optarg; break;
		case OPT_CERT: o->cert = optarg; break;
		case OPT_KEY: o->key = optarg; break;
		case OPT_SRC: o->src_addrs = optarg; break;
		case OPT_THREADS: o->threads = (int)num_arg("--threads", optarg, 1, 256); break;
		case OPT_PID: o->pid = (int)num_arg("--pid", optarg, 1, 1 << 30); break;
		case OPT_SCENARIO:
			for (int i = 0; i < 5; i++)
				if (strcmp(optarg, scenario_names[i]) == 0)
					o->scenario = i;
			if ((int)o->scenario < 0)
				die("--scenario: expected conn, idle, p2p, fanout or fanin, got '%s'", optarg);
			break;
		case 'n': o->n = (uint64_t)num_arg("-n", optarg, 1, 1e8); break;
		case 'c': o->conc = (uint32_t)num_arg("-c", optarg, 1, 1e6); break;
		case OPT_RESUME: o->resume = true; break;
		case OPT_HOLD: o->hold = num_arg("--hold", optarg, 0, 1e6); break;
		case 'p': o->pubs = (uint32_t)num_arg("-p", optarg, 1, 1 << 23); break;
		case 's': o->subs = (uint32_t)num_arg("-s", optarg, 1, 1 << 23); subs_given = true; break;
		case OPT_QOS: o->qos = (int)num_arg("--qos", optarg, 0, 1); break;
		case OPT_SIZE: o->size = (uint32_t)num_arg("--size", optarg, 16, 64 << 20); break;
		case OPT_DURATION: o->duration = num_arg("--duration", optarg, 0.1, 1e6); break;
		case OPT_WARMUP: o->warmup = num_arg("--warmup", optarg, 0, 1e6); break;
		case OPT_RATE: o->rate = num_arg("--rate", optarg, 0, 1e9); break;
		case OPT_INFLIGHT: o->inflight = (uint32_t)num_arg("--inflight", optarg, 1, 65535); break;
		case OPT_WINDOW: o->window = (uint32_t)num_arg("--window", optarg, 1, 1e9); break;
		case OPT_BATCH: o->batch = (uint32_t)num_arg("--batch", optarg, 1, 65535); break;
		case OPT_PERSISTENT: o->persistent = true; break;
		case OPT_MQTT:
			if (strcmp(optarg, "3") == 0 || strcmp(optarg, "4") == 0 || strcmp(optarg, "3.1.1") == 0)
				o->mqtt = 4;
			else if (strcmp(optarg, "5") == 0)
				o->mqtt = 5;
			else
				die("--mqtt: expected 3 (3.1.1) or 5, got '%s'", optarg);
			break;
		case OPT_KEEPALIVE: o->keepalive = (uint16_t)num_arg("--keepalive", optarg, 0, 65535); break;
		case OPT_JSON: o->json = optarg; break;
		case OPT_MAXFAIL: o->max_fail = (uint64_t)num_arg("--max-fail", optarg, 0, 1e12); break;
		case OPT_STALL: o->stall = num_arg("--stall-timeout", optarg, 0.5, 1e6); break;
		case OPT_LAT: o->lat_samples = (uint32_t)num_arg("--lat-samples", optarg, 1000, 1 << 28); break;
		case OPT_PREFIX: o->prefix = optarg; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); exit(2);
		}
	}
	if (optind < argc)
		die("unexpected argument '%s' (see --help)", argv[optind]);
	if ((int)o->scenario < 0)
		die("--scenario is required (see --help)");
	if (!o->port)
		o->port = o->tls ? 8883 : 1883;
	if (!o->conc)
		o->conc = o->scenario == SC_CONN ? 8 : 64;
	if ((o->cert || o->key || o->cafile) && !o->tls)
		die("--cert / --key / --cafile need --tls");
	if (o->key && !o->cert)
		die("--key needs --cert");
	if (o->resume && (o->scenario != SC_CONN || !o->tls))
		die("--resume applies to --scenario conn with --tls");
	if (o->persistent && (o->scenario == SC_CONN || o->scenario == SC_IDLE))
		die("--persistent applies to the p2p, fanout and fanin scenarios");
	if (o->scenario == SC_P2P) {
		if (subs_given && o->subs != o->pubs)
			die("p2p: -s must equal -p (one subscriber per publisher)");
		o->subs = o->pubs;
	}
	if (!o->prefix) {
		static char pfx[32];
		snprintf(pfx, sizeof pfx, "bwb%d", (int)getpid());
		o->prefix = pfx;
	}
}

/* ---- setup ---- */

static void setup_tls(void)
{
	struct bench_opts *o = &g.o;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx)
		die("SSL_CTX_new failed");
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
				      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	char err[256];
	if (o->cafile) {
		if (SSL_CTX_load_verify_locations(ctx, o->cafile, NULL) != 1) {
			ERR_error_string_n(ERR_get_error(), err, sizeof err);
			die("--cafile %s: %s", o->cafile, err);
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	if (o->cert) {
		const char *key = o->key ? o->key : o->cert;
		if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1) {
			ERR_error_string_n(ERR_get_error(), err, sizeof err);
			die("--cert %s: %s", o->cert, err);
		}
		if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
			ERR_error_string_n(ERR_get_error(), err, sizeof err);
			die("--key %s: %s", key, err);
		}
	}
	g.ssl_ctx = ctx;
}

static void setup_dst(void)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
	char port[16];
	snprintf(port, sizeof port, "%d", g.o.port);
	int r = getaddrinfo(g.o.host, port, &hints, &ai);
	if (r)
		die("--host %s: %s", g.o.host, gai_strerror(r));
	memcpy(&g.dst, ai->ai_addr, ai->ai_addrlen);
	g.dst_len = ai->ai_addrlen;
	freeaddrinfo(ai);
}

static void add_src(const struct sockaddr_storage *sa)
{
	if (g.nsrc % 64 == 0)
		g.src = xrealloc(g.src, (size_t)(g.nsrc + 64) * sizeof *g.src);
	g.src[g.nsrc++] = *sa;
}

/* --src-addrs: comma-separated IPv4/IPv6 addresses and IPv4 ranges A-B. */
static void setup_src(void)
{
	if (!g.o.src_addrs)
		return;
	char *list = strdup(g.o.src_addrs), *save = NULL;
	for (char *item = strtok_r(list, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		struct sockaddr_storage ss = { 0 };
		char *dash = strchr(item, '-');
		if (dash) {
			*dash = 0;
			struct in_addr a, b;
			if (inet_pton(AF_INET, item, &a) != 1 || inet_pton(AF_INET, dash + 1, &b) != 1 ||
			    ntohl(b.s_addr) < ntohl(a.s_addr) || ntohl(b.s_addr) - ntohl(a.s_addr) > 65535)
				die("--src-addrs: bad range '%s-%s'", item, dash + 1);
			for (uint32_t h = ntohl(a.s_addr); h <= ntohl(b.s_addr); h++) {
				struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
				sin->sin_family = AF_INET;
				sin->sin_addr.s_addr = htonl(h);
				add_src(&ss);
			}
			continue;
		}
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		if (inet_pton(AF_INET, item, &sin->sin_addr) == 1)
			sin->sin_family = AF_INET;
		else if (inet_pton(AF_INET6, item, &sin6->sin6_addr) == 1)
			sin6->sin6_family = AF_INET6;
		else
			die("--src-addrs: bad address '%s'", item);
		add_src(&ss);
	}
	free(list);
	for (int i = 0; i < g.nsrc; i++)
		if (g.src[i].ss_family != g.dst.ss_family)
			die("--src-addrs: address family differs from --host");
}

/* Raises RLIMIT_NOFILE to what the run needs (the hard limit too, when privileged). */
static void setup_rlimit(void)
{
	/* stdio, epoll per worker, files opened while sampling /proc, closing connections */
	uint64_t need = 16 + 2ull * (uint64_t)g.o.threads;
	switch (g.o.scenario) {
	case SC_CONN: need += 2ull * g.o.conc; break;
	case SC_IDLE: need += g.o.n; break;
	default: need += (uint64_t)g.o.pubs + g.o.subs; break;
	}
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_max < need) {
		struct rlimit up = { need, need };
		if (setrlimit(RLIMIT_NOFILE, &up) == 0)
			return;
		die("need %llu descriptors, the hard limit is %llu and cannot be raised here (%s): lower -n",
		    (unsigned long long)need, (unsigned long long)rl.rlim_max, strerror(errno));
	}
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
}

static void setup_roles(void)
{
	struct bench_opts *o = &g.o;
	if (o->scenario == SC_CONN || o->scenario == SC_IDLE)
		return;
	g.npubs = o->pubs;
	g.nsubs = o->subs;
	/* No subscriber may fall more than --window messages behind: in fanout every subscriber
	 * gets all P publishers' messages, in fanin the S members of the group share them. */
	if (o->scenario == SC_FANOUT)
		g.pub_window = o->window / g.npubs;
	else if (o->scenario == SC_FANIN)
		g.pub_window = (uint64_t)o->window * g.nsubs / g.npubs;
	else
		g.pub_window = o->window;
	if (g.pub_window < 1)
		g.pub_window = 1;
	g.pubs = xcalloc(g.npubs, sizeof *g.pubs);
	g.subs = xcalloc(g.nsubs, sizeof *g.subs);
	for (uint32_t s = 0; s < g.nsubs; s++) {
		g.subs[s].idx = s;
		g.subs[s].ntr = o->scenario == SC_P2P ? 1 : g.npubs;
		g.subs[s].tr = xcalloc(g.subs[s].ntr, sizeof(struct track));
	}
	for (uint32_t p = 0; p < g.npubs; p++) {
		struct pub *pb = &g.pubs[p];
		pb->idx = p;
		if (o->scenario == SC_P2P)
			snprintf(pb->topic, sizeof pb->topic, "bench/p2p/%u", p);
		else if (o->scenario == SC_FANOUT)
			snprintf(pb->topic, sizeof pb->topic, "bench/fan");
		else
			snprintf(pb->topic, sizeof pb->topic, "bench/in/%u", p);
		size_t pid_off;
		pb->hdr_len = (uint32_t)mqtt_enc_publish_hdr(pb->hdr, o->mqtt, pb->topic, o->qos, o->size, &pid_off);
		pb->pid_off = (uint32_t)pid_off;
	}
}

/* ---- running ---- */

struct totals {
	uint64_t ok, fail, resumed, ready, published, delivered, acked, stalls, closing, open, last_ok_ns;
};

static void totals(struct totals *t)
{
	memset(t, 0, sizeof *t);
	for (int i = 0; i < g.nworkers; i++) {
		struct wcount *c = worker_counts(g.workers[i]);
#define LD(x) atomic_load_explicit(&c->x, memory_order_relaxed)
		t->ok += LD(ok);
		t->fail += LD(fail);
		t->resumed += LD(resumed);
		t->ready += LD(ready);
		t->published += LD(published);
		t->delivered += LD(delivered);
		t->acked += LD(acked);
		t->stalls += LD(stalls);
		t->closing += LD(closing);
		t->open += LD(open);
		if (LD(last_ok_ns) > t->last_ok_ns)
			t->last_ok_ns = LD(last_ok_ns);
#undef LD
	}
}

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
	atomic_store(&g.abort, true);
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull) };
	nanosleep(&ts, NULL);
}

/* Checks for the end of the run by error: true if the run must stop. */
static bool run_broken(void)
{
	if (atomic_load(&g.abort))
		return true;
	struct totals t;
	totals(&t);
	if (t.fail > g.o.max_fail) {
		atomic_store(&g.abort, true);
		return true;
	}
	if (g.o.pid) {
		char path[64];
		snprintf(path, sizeof path, "/proc/%d/stat", g.o.pid);
		if (access(path, F_OK) != 0) {
			bench_error("the broker (pid %d) is gone", g.o.pid);
			atomic_store(&g.abort, true);
			return true;
		}
	}
	return false;
}

/* Progress measure for the stall watchdog. */
static uint64_t progress(void)
{
	struct totals t;
	totals(&t);
	return t.ok + t.fail + t.ready + t.published + t.delivered + t.acked;
}

/* Waits until done(arg) (true) or the run breaks / stalls (false). */
static bool wait_until(bool (*done)(void *), void *arg, const char *what)
{
	uint64_t last = progress(), since = now_ns();
	for (;;) {
		if (done(arg))
			return true;
		if (run_broken())
			return false;
		sleep_ns(2000000);
		uint64_t p = progress();
		if (p != last) {
			last = p;
			since = now_ns();
		} else if (now_ns() - since > (uint64_t)(g.o.stall * 1e9)) {
			bench_error("no progress for %.0f s while %s: the broker stalled", g.o.stall, what);
			atomic_store(&g.abort, true);
			return false;
		}
	}
}

/* Sleeps for seconds while watching for errors; false if the run broke. */
static bool sleep_watch(double seconds)
{
	uint64_t end = now_ns() + (uint64_t)(seconds * 1e9);
	while (now_ns() < end) {
		if (run_broken())
			return false;
		uint64_t left = end - now_ns();
		sleep_ns(left < 20000000 ? left : 20000000);
	}
	return !run_broken();
}

static bool done_connects(void *arg)
{
	(void)arg;
	struct totals t;
	totals(&t);
	return t.ok + t.fail >= g.o.n;
}

static bool done_ready(void *arg)
{
	struct totals t;
	totals(&t);
	return t.ready >= *(uint64_t *)arg;
}

static void start_workers(pthread_t *th)
{
	for (int i = 0; i < g.nworkers; i++)
		if (pthread_create(&th[i], NULL, worker_main, g.workers[i]))
			die("pthread_create failed");
}

static void join_workers(pthread_t *th)
{
	for (int i = 0; i < g.nworkers; i++)
		pthread_join(th[i], NULL);
}

static double gen_cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

static void sample(struct proc_sample *s)
{
	memset(s, 0, sizeof *s);
	if (g.o.pid && !proc_sample_take(g.o.pid, s)) {
		bench_error("cannot read /proc/%d (broker gone?)", g.o.pid);
		atomic_store(&g.abort, true);
	}
}

/* ---- report ---- */

struct report {
	struct figures figs;
	struct proc_sample a, b; /* broker threads over the measured phase */
	bool have_threads;
	const char *thread_phase; /* which phase the per-thread CPU covers */
	char warn[256];
};

static double cpu_s(const struct proc_sample *a, const struct proc_sample *b)
{
	return (double)(b->cpu_ns - a->cpu_ns) / 1e9;
}

static void fig_cpu(struct report *r, const struct proc_sample *a, const struct proc_sample *b, const char *key,
		    const char *label)
{
	if (g.o.pid)
		fig_add(&r->figs, key, label, cpu_s(a, b), 3);
	else
		fig_null(&r->figs, key, label);
}

/* value / broker CPU seconds, or null without --pid. */
static void fig_per_cpu(struct report *r, double cpu, double value, double scale, const char *key, const char *label,
			int dec)
{
	if (g.o.pid && cpu > 0 && value > 0)
		fig_add(&r->figs, key, label, value * scale, dec);
	else
		fig_null(&r->figs, key, label);
}

static void fig_lat(struct report *r, double unit, const char *u)
{
	struct lat_res **rs = xcalloc((size_t)g.nworkers, sizeof *rs);
	for (int i = 0; i < g.nworkers; i++)
		rs[i] = worker_lat(g.workers[i]);
	struct lat_summary ls;
	lat_summarize(rs, g.nworkers, &ls);
	free(rs);
	static char keys[5][32], labels[5][40];
	const char *names[5] = { "p50", "p90", "p99", "max", "mean" };
	double vals[5] = { (double)ls.p50, (double)ls.p90, (double)ls.p99, (double)ls.max, ls.mean };
	for (int i = 0; i < 5; i++) {
		snprintf(keys[i], sizeof keys[i], "lat_%s_%s", names[i], u);
		snprintf(labels[i], sizeof labels[i], "latency %s (%s)", names[i], u);
		if (ls.n)
			fig_add(&r->figs, keys[i], labels[i], vals[i] / unit, 3);
		else
			fig_null(&r->figs, keys[i], labels[i]);
	}
	fig_add(&r->figs, "lat_samples", NULL, (double)ls.n, 0);
}

static void fig_rss(struct report *r, const struct proc_sample *s, const char *key, const char *label)
{
	if (g.o.pid)
		fig_add(&r->figs, key, label, (double)s->rss_kb, 0);
	else
		fig_null(&r->figs, key, label);
}

static void fig_gen(struct report *r, double gen, double wall)
{
	fig_add(&r->figs, "gen_cpu_s", "generator CPU (s)", gen, 3);
	double pct = wall > 0 ? 100.0 * gen / wall : 0;
	fig_add(&r->figs, "gen_cpu_pct", "generator CPU (% of one core)", pct, 1);
	if (pct > 90.0 * g.o.threads)
		snprintf(r->warn, sizeof r->warn,
			 "the generator used %.0f%% CPU with %d thread(s): it may be the bottleneck (try --threads)", pct,
			 g.o.threads);
}

static void print_text(const struct report *r, const char *err)
{
	const struct bench_opts *o = &g.o;
	printf("bwbench %s: %s%s, MQTT %s%s, %d thread(s)", scenario_names[o->scenario],
	       o->tls ? (o->cert ? "mTLS" : "TLS") : "TCP", o->resume ? " (resumption)" : "",
	       o->mqtt == 5 ? "5" : "3.1.1", o->persistent ? " persistent sessions" : "", o->threads);
	if (o->scenario == SC_CONN || o->scenario == SC_IDLE)
		printf(", -n %llu -c %u\n", (unsigned long long)o->n, o->conc);
	else
		printf(", %u pub / %u sub, QoS %d, %u B, %s\n", g.npubs, g.nsubs, o->qos, o->size,
		       o->rate > 0 ? "rate-limited" : "max rate");
	for (int i = 0; i < r->figs.n; i++) {
		const struct figure *f = &r->figs.f[i];
		if (!f->label)
			continue;
		if (f->null)
			printf("  %-44s -\n", f->label);
		else
			printf("  %-44s %.*f\n", f->label, f->decimals, f->value);
	}
	if (r->have_threads) {
		double tot = cpu_s(&r->a, &r->b);
		printf("  broker CPU per thread (%s):\n", r->thread_phase);
		for (int i = 0; i < r->b.nth; i++) {
			const struct proc_thread *t = &r->b.th[i];
			double s = (double)(t->ns - proc_thread_ns(&r->a, t->tid)) / 1e9;
			if (s < 0.0005)
				continue;
			printf("    %-16s %-8d %8.3f s %6.1f %%\n", t->comm, t->tid, s, tot > 0 ? 100 * s / tot : 0);
		}
	}
	if (r->warn[0])
		printf("  WARNING: %s\n", r->warn);
	if (err)
		printf("  ERROR: %s\n", err);
	fflush(stdout);
}

static void write_json(FILE *f, const struct report *r, const char *err)
{
	const struct bench_opts *o = &g.o;
	fprintf(f, "{\"tool\":\"bwbench\",\"scenario\":\"%s\",\"transport\":\"%s\",\"ok\":%s,\"error\":",
		scenario_names[o->scenario], o->tls ? (o->cert ? "mtls" : "tls") : "tcp", err ? "false" : "true");
	if (err)
		json_str(f, err);
	else
		fputs("null", f);
	fprintf(f, ",\"warning\":");
	if (r->warn[0])
		json_str(f, r->warn);
	else
		fputs("null", f);
	fprintf(f,
		",\"params\":{\"n\":%llu,\"concurrency\":%u,\"resume\":%s,\"hold\":%g,\"pubs\":%u,\"subs\":%u,"
		"\"qos\":%d,\"size\":%u,\"duration\":%g,\"warmup\":%g,\"rate\":%g,\"inflight\":%u,\"window\":%u,"
		"\"pub_window\":%llu,\"batch\":%u,\"persistent\":%s,\"mqtt\":%d,\"threads\":%d,\"pid\":%d}",
		(unsigned long long)o->n, o->conc, o->resume ? "true" : "false", o->hold, g.npubs, g.nsubs, o->qos,
		o->size, o->duration, o->warmup, o->rate, o->inflight, o->window, (unsigned long long)g.pub_window,
		o->batch, o->persistent ? "true" : "false", o->mqtt, o->threads, o->pid);
	fprintf(f, ",\"figures\":{");
	for (int i = 0; i < r->figs.n; i++) {
		const struct figure *fg = &r->figs.f[i];
		fprintf(f, "%s\"%s\":", i ? "," : "", fg->key);
		if (fg->null)
			fputs("null", f);
		else
			fprintf(f, "%.*f", fg->decimals, fg->value);
	}
	fprintf(f, "},\"labels\":{");
	for (int i = 0; i < r->figs.n; i++) {
		const struct figure *fg = &r->figs.f[i];
		fprintf(f, "%s\"%s\":", i ? "," : "", fg->key);
		json_str(f, fg->label ? fg->label : fg->key);
	}
	fprintf(f, "},\"broker_threads_phase\":");
	json_str(f, r->have_threads ? r->thread_phase : "");
	fprintf(f, ",\"broker_threads\":[");
	if (r->have_threads) {
		int k = 0;
		for (int i = 0; i < r->b.nth; i++) {
			const struct proc_thread *t = &r->b.th[i];
			double s = (double)(t->ns - proc_thread_ns(&r->a, t->tid)) / 1e9;
			fprintf(f, "%s{\"tid\":%d,\"comm\":", k++ ? "," : "", t->tid);
			json_str(f, t->comm);
			fprintf(f, ",\"cpu_s\":%.6f}", s);
		}
	}
	fprintf(f, "]}\n");
}

static void report_out(struct report *r, const char *err)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	fig_add(&r->figs, "gen_maxrss_kb", "generator peak RSS (KB)", (double)ru.ru_maxrss, 0);
	print_text(r, err);
	if (!g.o.json)
		return;
	if (strcmp(g.o.json, "-") == 0) {
		write_json(stdout, r, err);
		fflush(stdout);
		return;
	}
	FILE *f = fopen(g.o.json, "w");
	if (!f) {
		fprintf(stderr, "bwbench: --json %s: %s\n", g.o.json, strerror(errno));
		return;
	}
	write_json(f, r, err);
	fclose(f);
}

/* ---- scenarios ---- */

static void keep_threads(struct report *r, struct proc_sample *a, struct proc_sample *b, const char *phase)
{
	if (!g.o.pid)
		return;
	r->thread_phase = phase;
	r->a = *a;
	r->b = *b;
	a->th = b->th = NULL;
	r->have_threads = true;
}

static void run_conn(struct report *r, pthread_t *th)
{
	struct proc_sample s0, s1;
	sample(&s0);
	double g0 = gen_cpu_s();
	uint64_t t0 = now_ns();
	start_workers(th);
	wait_until(done_connects, NULL, "connecting");
	join_workers(th);
	sample(&s1);
	double gen = gen_cpu_s() - g0;
	struct totals t;
	totals(&t);
	double wall = t.last_ok_ns > t0 ? (double)(t.last_ok_ns - t0) / 1e9 : 0;
	double cpu = cpu_s(&s0, &s1);
	struct figures *f = &r->figs;
	fig_add(f, "connects", "connects completed", (double)t.ok, 0);
	fig_add(f, "failures", "failures", (double)t.fail, 0);
	if (g.o.tls)
		fig_add(f, "resumed", "TLS sessions resumed", (double)t.resumed, 0);
	fig_add(f, "wall_s", "wall time (s)", wall, 3);
	fig_add(f, "connects_per_s", "connects/s (wall)", wall > 0 ? t.ok / wall : 0, 1);
	fig_cpu(r, &s0, &s1, "broker_cpu_s", "broker CPU (s)");
	fig_per_cpu(r, cpu, cpu > 0 ? t.ok / cpu : 0, 1, "connects_per_broker_cpu_s", "connects per broker-CPU-second",
		    1);
	fig_per_cpu(r, cpu, t.ok ? cpu / t.ok : 0, 1e6, "broker_cpu_us_per_connect", "broker CPU per connect (us)", 1);
	fig_lat(r, 1e6, "ms");
	fig_rss(r, &s1, "broker_rss_kb", "broker RSS after (KB)");
	if (g.o.pid)
		fig_add(f, "broker_hwm_kb", "broker RSS high-water mark (KB)", (double)s1.hwm_kb, 0);
	fig_gen(r, gen, wall);
	keep_threads(r, &s0, &s1, "whole run");
	proc_sample_free(&s0);
	proc_sample_free(&s1);
}

static void run_idle(struct report *r, pthread_t *th)
{
	struct proc_sample s0, s1, s1b, s2, s3;
	memset(&s1b, 0, sizeof s1b);
	memset(&s2, 0, sizeof s2);
	memset(&s3, 0, sizeof s3);
	sample(&s0);
	double g0 = gen_cpu_s();
	uint64_t t0 = now_ns();
	start_workers(th);
	bool ok = wait_until(done_connects, NULL, "connecting");
	uint64_t t1 = now_ns();
	sample(&s1);
	/* Idle CPU is measured after a settle time (the last handshakes' aftermath). */
	double settle = g.o.hold / 2 < 1 ? g.o.hold / 2 : 1;
	ok = ok && sleep_watch(settle);
	uint64_t t1b = now_ns();
	sample(&s1b);
	double g1 = gen_cpu_s();
	ok = ok && sleep_watch(g.o.hold - settle);
	uint64_t t2 = now_ns();
	sample(&s2);
	double g2 = gen_cpu_s();
	atomic_store(&g.phase, PH_STOP);
	join_workers(th);
	if (ok && g.o.pid) {
		sleep_ns(300000000); /* let the broker free what the closed connections held */
		sample(&s3);
	}
	struct totals t;
	totals(&t);
	struct figures *f = &r->figs;
	double setup = (double)(t1 - t0) / 1e9, hold = (double)(t2 - t1) / 1e9, idle = (double)(t2 - t1b) / 1e9;
	double cpu_setup = cpu_s(&s0, &s1), cpu_idle = cpu_s(&s1b, &s2);
	fig_add(f, "connections", "connections held", (double)t.ok, 0);
	fig_add(f, "failures", "failures", (double)t.fail, 0);
	fig_add(f, "setup_s", "time to connect all (s)", setup, 3);
	fig_add(f, "connects_per_s", "connects/s (wall)", setup > 0 ? t.ok / setup : 0, 1);
	fig_cpu(r, &s0, &s1, "broker_cpu_setup_s", "broker CPU while connecting (s)");
	fig_per_cpu(r, cpu_setup, cpu_setup > 0 ? t.ok / cpu_setup : 0, 1, "connects_per_broker_cpu_s",
		    "connects per broker-CPU-second", 1);
	fig_rss(r, &s0, "rss_before_kb", "broker RSS before (KB)");
	fig_rss(r, &s1, "rss_established_kb", "broker RSS all connected (KB)");
	fig_rss(r, &s2, "rss_held_kb", "broker RSS after the hold (KB)");
	double per = t.ok ? ((double)s2.rss_kb - (double)s0.rss_kb) * 1024.0 / (double)t.ok : 0;
	if (g.o.pid && t.ok) {
		fig_add(f, "rss_per_conn_bytes", "broker RSS per connection (bytes)", per, 0);
		fig_add(f, "rss_per_conn_kb", "broker RSS per connection (KB)", per / 1024, 2);
		fig_add(f, "broker_hwm_kb", "broker RSS high-water mark (KB)", (double)s2.hwm_kb, 0);
	} else {
		fig_null(f, "rss_per_conn_bytes", "broker RSS per connection (bytes)");
		fig_null(f, "rss_per_conn_kb", "broker RSS per connection (KB)");
		fig_null(f, "broker_hwm_kb", "broker RSS high-water mark (KB)");
	}
	fig_add(f, "hold_s", "hold (s)", hold, 3);
	fig_add(f, "idle_measured_s", "idle CPU measured over (s, after a settle)", idle, 3);
	fig_cpu(r, &s1b, &s2, "broker_cpu_idle_s", "broker CPU while idle (s)");
	if (g.o.pid && t.ok && idle > 0)
		fig_add(f, "idle_cpu_us_per_conn_s", "broker CPU idle (us per connection per s)",
			cpu_idle * 1e6 / (double)t.ok / idle, 4);
	else
		fig_null(f, "idle_cpu_us_per_conn_s", "broker CPU idle (us per connection per s)");
	if (s3.ok)
		fig_add(f, "rss_after_close_kb", "broker RSS after all closed (KB)", (double)s3.rss_kb, 0);
	else
		fig_null(f, "rss_after_close_kb", "broker RSS after all closed (KB)");
	fig_lat(r, 1e6, "ms");
	fig_add(f, "gen_cpu_setup_s", "generator CPU while connecting (s)", g1 - g0, 3);
	fig_add(f, "gen_cpu_idle_s", "generator CPU while idle (s)", g2 - g1, 3);
	keep_threads(r, &s0, &s1, "while connecting");
	proc_sample_free(&s0);
	proc_sample_free(&s1);
	proc_sample_free(&s1b);
	proc_sample_free(&s2);
	proc_sample_free(&s3);
}

/* Counts set bits of t below n. */
static uint64_t bits_below(const struct track *t, uint64_t n)
{
	uint64_t c = 0, full = n / 64;
	for (uint64_t i = 0; i < full && i < t->nwords; i++)
		c += (uint64_t)__builtin_popcountll(t->bits[i]);
	if (n % 64 && full < t->nwords)
		c += (uint64_t)__builtin_popcountll(t->bits[full] & ((1ull << (n % 64)) - 1));
	return c;
}

/* Loss and duplicates across subscribers (after the workers are joined). */
static void count_loss(uint64_t *lost, uint64_t *cross_dups)
{
	*lost = *cross_dups = 0;
	for (uint32_t p = 0; p < g.npubs; p++) {
		uint64_t sent = g.pubs[p].sent;
		if (g.o.scenario == SC_P2P) {
			*lost += sent - bits_below(&g.subs[p].tr[0], sent);
		} else if (g.o.scenario == SC_FANOUT) {
			for (uint32_t s = 0; s < g.nsubs; s++)
				*lost += sent - bits_below(&g.subs[s].tr[p], sent);
		} else {
			/* fanin: each message must reach exactly one member of the group */
			uint64_t words = (sent + 63) / 64, uni = 0, sum = 0;
			for (uint64_t wd = 0; wd < words; wd++) {
				uint64_t mask = (wd == words - 1 && sent % 64) ? (1ull << (sent % 64)) - 1 : ~0ull;
				uint64_t or = 0;
				for (uint32_t s = 0; s < g.nsubs; s++) {
					const struct track *t = &g.subs[s].tr[p];
					uint64_t v = wd < t->nwords ? t->bits[wd] & mask : 0;
					or |= v;
					sum += (uint64_t)__builtin_popcountll(v);
				}
				uni += (uint64_t)__builtin_popcountll(or);
			}
			*lost += sent - uni;
			*cross_dups += sum - uni;
		}
	}
}

struct drain_arg {
	uint64_t expect_mult;
	uint64_t last_delivered, since;
};

static bool done_drain(void *arg)
{
	struct drain_arg *d = arg;
	struct totals t;
	totals(&t);
	uint64_t expected = t.published * d->expect_mult;
	bool acks = g.o.qos == 0 || t.acked >= t.published;
	if (t.delivered >= expected && acks)
		return true;
	if (t.delivered != d->last_delivered) {
		d->last_delivered = t.delivered;
		d->since = now_ns();
	}
	return now_ns() - d->since > 2000000000ull; /* nothing more for 2 s: the rest is lost */
}

static void run_pubsub(struct report *r, pthread_t *th)
{
	struct proc_sample s1, s2;
	memset(&s1, 0, sizeof s1);
	memset(&s2, 0, sizeof s2);
	atomic_store(&g.phase, PH_SUBS);
	start_workers(th);
	uint64_t want = g.nsubs;
	bool ok = wait_until(done_ready, &want, "connecting and subscribing the subscribers");
	if (ok) {
		atomic_store(&g.phase, PH_PUBS);
		want = (uint64_t)g.nsubs + g.npubs;
		ok = wait_until(done_ready, &want, "connecting the publishers");
	}
	struct totals c1 = { 0 }, c2 = { 0 };
	uint64_t t1 = 0, t2 = 0;
	double g1 = 0, g2 = 0;
	if (ok) {
		g.t_warmup_ns = now_ns();
		atomic_store_explicit(&g.phase, PH_WARMUP, memory_order_release);
		ok = sleep_watch(g.o.warmup);
	}
	if (ok) {
		sample(&s1);
		g1 = gen_cpu_s();
		totals(&c1);
		t1 = now_ns();
		atomic_store(&g.phase, PH_MEASURE);
		ok = sleep_watch(g.o.duration);
	}
	if (ok) {
		atomic_store(&g.phase, PH_DRAIN);
		t2 = now_ns();
		sample(&s2);
		g2 = gen_cpu_s();
		totals(&c2);
		struct drain_arg d = { .expect_mult = g.o.scenario == SC_FANOUT ? g.nsubs : 1, .since = now_ns() };
		sleep_ns(20000000);
		ok = wait_until(done_drain, &d, "draining");
	}
	atomic_store(&g.phase, PH_STOP);
	join_workers(th);
	if (!ok)
		return;
	struct totals t;
	totals(&t);
	uint64_t lost, cross_dups, dups = 0, unexpected = 0;
	count_loss(&lost, &cross_dups);
	for (int i = 0; i < g.nworkers; i++) {
		uint64_t d, u;
		worker_dups(g.workers[i], &d, &u);
		dups += d;
		unexpected += u;
	}
	struct figures *f = &r->figs;
	double dur = (double)(t2 - t1) / 1e9, cpu = cpu_s(&s1, &s2);
	double pubd = (double)(c2.published - c1.published), deliv = (double)(c2.delivered - c1.delivered);
	fig_add(f, "published", "messages published (measured)", pubd, 0);
	fig_add(f, "delivered", "messages delivered (measured)", deliv, 0);
	fig_add(f, "duration_s", "measured time (s)", dur, 3);
	fig_add(f, "published_per_s", "published msgs/s", pubd / dur, 1);
	fig_add(f, "delivered_per_s", "delivered msgs/s", deliv / dur, 1);
	fig_cpu(r, &s1, &s2, "broker_cpu_s", "broker CPU (s)");
	fig_per_cpu(r, cpu, deliv > 0 ? cpu / deliv : 0, 1e6, "broker_cpu_us_per_delivered",
		    "broker CPU per delivered message (us)", 2);
	fig_per_cpu(r, cpu, pubd > 0 ? cpu / pubd : 0, 1e6, "broker_cpu_us_per_published",
		    "broker CPU per published message (us)", 2);
	if (g.o.pid)
		fig_add(f, "broker_cpu_pct", "broker CPU (% of one core)", 100 * cpu / dur, 1);
	else
		fig_null(f, "broker_cpu_pct", "broker CPU (% of one core)");
	fig_lat(r, 1e3, "us");
	fig_add(f, "published_total", "published, whole run", (double)t.published, 0);
	fig_add(f, "delivered_total", "delivered, whole run", (double)t.delivered, 0);
	fig_add(f, "lost", "lost", (double)lost, 0);
	fig_add(f, "duplicates", "duplicates", (double)(dups + cross_dups), 0);
	fig_add(f, "unexpected", "unexpected messages", (double)unexpected, 0);
	fig_add(f, "pacing_stalls", "pacing stalls (nothing arrived for 0.5 s)", (double)t.stalls, 0);
	fig_rss(r, &s2, "broker_rss_kb", "broker RSS (KB)");
	if (g.o.pid)
		fig_add(f, "broker_hwm_kb", "broker RSS high-water mark (KB)", (double)s2.hwm_kb, 0);
	fig_gen(r, g2 - g1, dur);
	keep_threads(r, &s1, &s2, "measured phase");
	proc_sample_free(&s1);
	proc_sample_free(&s2);
}

int main(int argc, char **argv)
{
	pthread_mutex_init(&g.err_lock, NULL);
	parse_args(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	setup_rlimit();
	setup_dst();
	setup_src();
	if (g.o.tls)
		setup_tls();
	setup_roles();
	if (g.o.pid) {
		struct proc_sample s;
		if (!proc_sample_take(g.o.pid, &s))
			die("--pid %d: cannot read /proc/%d/task", g.o.pid, g.o.pid);
		proc_sample_free(&s);
	}
	g.nworkers = g.o.threads;
	g.workers = xcalloc((size_t)g.nworkers, sizeof *g.workers);
	for (int i = 0; i < g.nworkers; i++)
		g.workers[i] = worker_new(i);
	pthread_t *th = xcalloc((size_t)g.nworkers, sizeof *th);

	struct report r;
	memset(&r, 0, sizeof r);
	switch (g.o.scenario) {
	case SC_CONN:
		atomic_store(&g.phase, PH_RUN);
		run_conn(&r, th);
		break;
	case SC_IDLE:
		atomic_store(&g.phase, PH_RUN);
		run_idle(&r, th);
		break;
	default:
		run_pubsub(&r, th);
		break;
	}

	const char *err = NULL;
	struct totals t;
	totals(&t);
	if (interrupted)
		err = "interrupted";
	else if (atomic_load(&g.abort) || t.fail > g.o.max_fail)
		err = g.first_err[0] ? g.first_err : "the run failed";
	report_out(&r, err);
	if (err)
		fprintf(stderr, "bwbench: %s\n", err);
	if (!err && t.fail)
		fprintf(stderr, "bwbench: %llu connection(s) failed, the first: %s\n", (unsigned long long)t.fail,
			g.first_err);
	proc_sample_free(&r.a);
	proc_sample_free(&r.b);
	free(r.figs.f);
	for (int i = 0; i < g.nworkers; i++)
		worker_free(g.workers[i]);
	free(g.workers);
	free(th);
	if (g.ssl_ctx)
		SSL_CTX_free(g.ssl_ctx);
	return err ? 1 : 0;
}
