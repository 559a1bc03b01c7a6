/* bwbench.h: shared types and prototypes of bwbench, Bulwark's MQTT benchmark load generator.
 *
 * bwbench is a separate program (not linked with the broker). Its parts:
 *   bwbench.c    options, the scenario orchestration on the main thread, the report (text + JSON)
 *   bw_loop.c    worker threads: one epoll loop each, TCP/TLS client connections, MQTT client
 *                state machine, and the per-scenario roles (connect slots, idle holders,
 *                publishers, subscribers)
 *   bw_mqtt.c    minimal MQTT 3.1.1 / 5 encoder and decoder (only the packets bwbench uses)
 *   bw_proc.c    broker figures from /proc: CPU per thread (schedstat), VmRSS / VmHWM
 *   bw_stats.c   latency reservoirs and percentiles, the figure list and its JSON output
 *
 * Threading: the main thread only orchestrates (sets g.phase, samples /proc, watches for
 * progress and errors). Each worker owns its connections, publishers and subscribers; other
 * threads read a worker's counters (relaxed atomics) and, for QoS 0 pacing, the subscribers'
 * receive counters. Nothing else is shared between workers.
 */
#ifndef BW_BENCH_H
#define BW_BENCH_H

#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

/* ---- scenarios and phases ---- */

enum bench_scenario { SC_CONN, SC_IDLE, SC_P2P, SC_FANOUT, SC_FANIN };

/* The main thread moves g.phase forward; workers follow it. */
enum bench_phase {
	PH_RUN,     /* conn / idle: connect (idle: then hold) */
	PH_SUBS,    /* pub/sub: connect and subscribe the subscribers */
	PH_PUBS,    /* pub/sub: connect the publishers */
	PH_WARMUP,  /* pub/sub: publishing, not measured */
	PH_MEASURE, /* pub/sub: publishing, measured */
	PH_DRAIN,   /* pub/sub: publishers stop, in-flight messages arrive */
	PH_STOP,    /* everyone disconnects and the workers exit */
};

/* ---- options ---- */

struct bench_opts {
	const char *host;
	int port;
	bool tls;
	const char *cafile, *cert, *key;
	const char *src_addrs;
	int threads;
	int pid;               /* broker process, 0 = no broker figures */
	enum bench_scenario scenario;
	uint64_t n;            /* conn / idle: connections */
	uint32_t conc;         /* concurrent connection attempts */
	bool resume;           /* conn: resume TLS sessions */
	double hold;           /* idle: seconds to hold */
	uint32_t pubs, subs;   /* pub/sub: publishers, subscribers */
	int qos;
	uint32_t size;         /* payload bytes, >= 16 */
	double duration, warmup;
	double rate;           /* per publisher, msgs/s, 0 = as fast as possible */
	uint32_t inflight;     /* QoS 1 unacked window per publisher */
	uint32_t window;       /* messages a publisher may run ahead of its subscriber(s) */
	uint32_t batch;        /* max PUBLISH packets per write */
	int mqtt;              /* 4 (3.1.1) or 5 */
	bool persistent;       /* pub/sub: persistent sessions (clean 0; v5 Session Expiry 1 h) */
	uint16_t keepalive;
	const char *json;      /* file, "-" = stdout */
	uint64_t max_fail;     /* failed connects tolerated before giving up */
	double stall;          /* seconds without progress before giving up */
	uint32_t lat_samples;  /* latency reservoir size (all threads together) */
	const char *prefix;    /* client id prefix */
};

/* ---- MQTT codec (bw_mqtt.c) ---- */

enum {
	MQTT_CONNECT = 1, MQTT_CONNACK = 2, MQTT_PUBLISH = 3, MQTT_PUBACK = 4,
	MQTT_SUBSCRIBE = 8, MQTT_SUBACK = 9, MQTT_PINGREQ = 12, MQTT_PINGRESP = 13,
	MQTT_DISCONNECT = 14,
};

/* One framed packet: body points into the caller's buffer. */
struct mqtt_pkt {
	uint8_t type, flags;
	const uint8_t *body;
	uint32_t len;
};

/* A decoded PUBLISH: topic and payload point into the packet body. */
struct mqtt_publish {
	int qos;
	uint16_t pid;
	const uint8_t *topic;
	uint16_t topic_len;
	const uint8_t *payload;
	uint32_t payload_len;
};

/* Frames one packet at p: bytes consumed (> 0), 0 = need more, -1 = malformed. */
long mqtt_frame(const uint8_t *p, size_t len, struct mqtt_pkt *pkt);
/* Encodes CONNECT (clean session, no credentials) into out (>= 64 + strlen(cid) bytes). */
size_t mqtt_enc_connect(uint8_t *out, int version, const char *cid, uint16_t keepalive, bool persistent);
/* Encodes SUBSCRIBE of one filter into out (>= 16 + strlen(filter) bytes). */
size_t mqtt_enc_subscribe(uint8_t *out, int version, uint16_t pid, const char *filter, int qos);
/* Encodes a PUBLISH header (fixed header .. properties) for a payload of payload_len bytes;
 * *pid_off is where the 2-byte packet id goes (QoS > 0). out needs 16 + strlen(topic) bytes. */
size_t mqtt_enc_publish_hdr(uint8_t *out, int version, const char *topic, int qos, uint32_t payload_len,
			    size_t *pid_off);
/* Encodes PUBACK for pid (4 bytes). */
size_t mqtt_enc_puback(uint8_t *out, uint16_t pid);
/* Encodes a packet with no body: PINGREQ or DISCONNECT (2 bytes). */
size_t mqtt_enc_empty(uint8_t *out, int type);
/* CONNACK: the return / reason code, -1 if malformed. */
int mqtt_dec_connack(const struct mqtt_pkt *pkt, int version);
/* SUBACK: the first granted QoS / reason code, -1 if malformed. */
int mqtt_dec_suback(const struct mqtt_pkt *pkt, int version);
/* PUBLISH: fills *out; false if malformed. */
bool mqtt_dec_publish(const struct mqtt_pkt *pkt, int version, struct mqtt_publish *out);

/* ---- latency reservoirs (bw_stats.c) ---- */

/* Uniform sample (Algorithm R) of at most cap values, plus the exact count and maximum. */
struct lat_res {
	uint64_t *v;
	uint32_t cap, n;
	uint64_t seen, max, rng;
};

struct lat_summary {
	uint64_t n, p50, p90, p99, max;
	double mean;
};

/* Allocates a reservoir of cap samples. */
void lat_init(struct lat_res *r, uint32_t cap, uint64_t seed);
/* Adds one value (ns). */
void lat_add(struct lat_res *r, uint64_t ns);
/* Merges nres reservoirs into percentiles; each sample weighs seen / n of its reservoir. */
void lat_summarize(struct lat_res **rs, int nres, struct lat_summary *out);
/* Frees the samples. */
void lat_free(struct lat_res *r);

/* ---- figures: one named number each, printed as text and JSON (bw_stats.c) ---- */

struct figure {
	const char *key;   /* JSON name */
	const char *label; /* text label */
	double value;
	int decimals;
	bool null;         /* not measured */
};

struct figures {
	struct figure *f;
	int n, cap;
};

/* Appends a figure; label NULL = JSON only. */
void fig_add(struct figures *fs, const char *key, const char *label, double value, int decimals);
/* Appends a figure that was not measured (JSON null). */
void fig_null(struct figures *fs, const char *key, const char *label);
/* Writes a JSON string literal (escaped). */
void json_str(FILE *f, const char *s);

/* ---- broker figures from /proc (bw_proc.c) ---- */

struct proc_thread {
	int tid;
	char comm[32];
	uint64_t ns; /* schedstat: time on CPU */
};

struct proc_sample {
	bool ok;
	uint64_t wall_ns;
	uint64_t cpu_ns;      /* sum over threads of schedstat */
	uint64_t stat_ticks;  /* utime + stime from /proc/PID/stat (includes exited threads) */
	uint64_t rss_kb, hwm_kb;
	struct proc_thread *th;
	int nth;
};

/* Samples CPU per thread, RSS and HWM of pid; s->ok false if the process is gone. */
bool proc_sample_take(int pid, struct proc_sample *s);
/* Frees a sample's thread list. */
void proc_sample_free(struct proc_sample *s);
/* CPU ns of thread tid in a sample, 0 if absent. */
uint64_t proc_thread_ns(const struct proc_sample *s, int tid);

/* ---- the run (bw_loop.c, driven by bwbench.c) ---- */

/* Per-subscriber receive state for one publisher: what arrived (bitmap of sequence
 * numbers, for loss and duplicates) and how much (read by publishers for pacing). */
struct track {
	uint64_t *bits;
	uint32_t nwords;
	_Atomic uint64_t recv;
};

struct conn;
struct worker;

struct sub {
	struct conn *c;
	uint32_t idx;
	struct track *tr; /* p2p: 1 (its pair); fanout / fanin: one per publisher */
	uint32_t ntr;
	_Atomic uint64_t recv_total; /* messages received from all publishers (fanin pacing) */
	bool ready;
};

enum { SCHED_NONE, SCHED_RUN, SCHED_WAIT };

struct pub {
	struct conn *c;
	uint32_t idx;
	char topic[48];
	uint8_t hdr[80];     /* encoded PUBLISH header */
	uint32_t hdr_len, pid_off;
	uint64_t sent;       /* sequence number of the next message */
	uint64_t credit;     /* pacing: messages written off as lost (QoS 0) */
	uint64_t allow_until;
	uint64_t last_prog, stall_since;
	uint64_t t0;         /* --rate: when message 0 was due */
	uint32_t inflight;
	uint16_t next_pid;
	uint8_t sched;
	bool ready;
};

/* Counters a worker publishes to the main thread (relaxed atomics, one writer). */
struct wcount {
	_Atomic uint64_t ok, fail, resumed, ready;  /* connections */
	_Atomic uint64_t published, delivered, acked;
	_Atomic uint64_t stalls;
	_Atomic uint64_t last_ok_ns;                /* conn: time of the last CONNACK */
	_Atomic uint64_t closing, open;             /* connections closing / open */
};

struct bench {
	struct bench_opts o;
	SSL_CTX *ssl_ctx;
	struct sockaddr_storage dst;
	socklen_t dst_len;
	struct sockaddr_storage *src;
	int nsrc;
	_Atomic int phase;
	atomic_bool abort;
	_Atomic uint64_t next_conn; /* conn scenario: connections started so far */
	_Atomic uint64_t src_rr;
	struct worker **workers;
	int nworkers;
	struct sub *subs;
	uint32_t nsubs;
	struct pub *pubs;
	uint32_t npubs;
	uint64_t t_warmup_ns;       /* pub/sub: start of publishing (rate schedule origin) */
	uint64_t pub_window;        /* pacing: messages a publisher may run ahead (from --window) */
	pthread_mutex_t err_lock;
	char first_err[512];
	_Atomic uint64_t nerr;      /* errors recorded by bench_error */
	_Atomic uint64_t nfail;     /* failed connections (conn / idle), all workers */
};

extern struct bench g;

/* Allocation that aborts with a message on out-of-memory (bw_stats.c). */
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t size);

/* Monotonic clock in ns. */
uint64_t now_ns(void);
/* Records a failure message (the first one is kept for the report). */
void bench_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Creates worker id with its share of the scenario (see bw_loop.c). */
struct worker *worker_new(int id);
/* Thread body of a worker. */
void *worker_main(void *arg);
/* The worker's counters. */
struct wcount *worker_counts(struct worker *w);
/* The worker's latency reservoir. */
struct lat_res *worker_lat(struct worker *w);
/* Duplicate and unexpected deliveries seen by the worker (read after join). */
void worker_dups(struct worker *w, uint64_t *dups, uint64_t *unexpected);
/* Frees a joined worker. */
void worker_free(struct worker *w);

#endif
