/* Broker life cycle: start-up (data dir, development certificates, store, restore,
 * listeners, workers), the main thread's loop (signals, control socket), reload, and
 * graceful shutdown. */
#include "broker/broker.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "auth/auth.h"
#include "authz/authz.h"
#include "auth/hashpool.h"
#include "bans/bans.h"
#include "broker/client.h"
#include "broker/msg.h"
#include "broker/publish.h"
#include "broker/retain.h"
#include "broker/route.h"
#include "broker/session.h"
#include "config/config.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/hash.h"
#include "core/log.h"
#include "ctl/ctl.h"
#include "mqtt/mqtt.h"
#include "net/conn.h"
#include "net/fwatch.h"
#include "net/listener.h"
#include "store/store.h"
#include "net/http.h"
#include "tls/devcert.h"
#include "tls/fastkeys.h"
#include "tls/revoke.h"
#include "tls/tls.h"

#include "version.h"
#define BULWARK_VERSION_STR BULWARK_VERSION

struct main_ctx {
	struct broker *b;
	struct loop *loop;
	struct loop_io sig;
	struct ctl_server *ctl;
	struct fwatch *watch;
	int lock_fd;
	bool stop_requested;
};

/* ---- start-up helpers ---- */

static bool mkdir_p(const char *path, mode_t mode)
{
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, mode) < 0 && errno != EEXIST)
			return false;
		*p = '/';
	}
	return mkdir(tmp, mode) == 0 || errno == EEXIST;
}

/* Only one broker per data dir: the control socket and the store belong to it. */
static int lock_data_dir(const char *dir, char *err, size_t errlen)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/bulwark.lock", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		snprintf(err, errlen, "data dir %s is in use by another running bulwark", dir);
		close(fd);
		return -1;
	}
	char pid[32];
	int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
	if (ftruncate(fd, 0) == 0)
		(void)!write(fd, pid, (size_t)n);
	return fd;
}

static bool prepare_dev_certs(struct config *cfg, char *err, size_t errlen)
{
	bool needed = false;
	for (size_t i = 0; i < cfg->n_listeners; i++)
		if (cfg->listeners[i].enable && cfg->listeners[i].type == CFG_LISTENER_SSL && cfg->listeners[i].ssl.dev_cert)
			needed = true;
	if (!needed)
		return true;
	char dir[4096];
	snprintf(dir, sizeof dir, "%s/certs", cfg->data_dir);
	bool generated = false;
	if (!devcert_ensure(dir, &generated)) {
		snprintf(err, errlen, "cannot create the development certificates in %s", dir);
		return false;
	}
	char *ca = devcert_path(dir, DEVCERT_CA_CERT);
	char *cert = devcert_path(dir, DEVCERT_SERVER_CERT);
	char *key = devcert_path(dir, DEVCERT_SERVER_KEY);
	if (generated)
		log_info("generated a development CA and server certificate (SAN localhost, 127.0.0.1)");
	log_info("development CA: %s (clients verify the server with it: mosquitto_sub --cafile %s ...)", ca, ca);
	log_info("development server certificate: %s, key: %s", cert, key);
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		struct cfg_ssl *ssl = &cfg->listeners[i].ssl;
		if (cfg->listeners[i].type != CFG_LISTENER_SSL || !ssl->dev_cert)
			continue;
		free(ssl->certfile);
		free(ssl->keyfile);
		ssl->certfile = xstrdup(cert);
		ssl->keyfile = xstrdup(key);
		if (!ssl->cacertfile)
			ssl->cacertfile = xstrdup(ca);
	}
	free(ca);
	free(cert);
	free(key);
	return true;
}

/* ---- restore ---- */

struct restore_ctx {
	struct broker *b;
	int64_t now;
	size_t sessions, dropped, retained;
};

static struct session *restored_session(struct restore_ctx *rc, const char *cid)
{
	struct worker *w = broker_owner(rc->b, cid, strlen(cid));
	return session_get(w, cid, strlen(cid));
}

static void ld_session(void *arg, const char *cid, uint32_t expiry, uint8_t proto, int64_t disconnected_at)
{
	struct restore_ctx *rc = arg;
	if (!disconnected_at)
		disconnected_at = rc->now; /* it was connected when the broker stopped */
	if (expiry != UINT32_MAX && disconnected_at + (int64_t)expiry <= rc->now) {
		store_session_del(rc->b->store, cid);
		rc->dropped++;
		return;
	}
	struct worker *w = broker_owner(rc->b, cid, strlen(cid));
	struct session *s = session_create(w, cid, strlen(cid));
	s->expiry_interval = expiry;
	s->proto = proto;
	s->stored = true;
	s->disconnected_at = disconnected_at;
	if (expiry != UINT32_MAX) {
		int64_t left = disconnected_at + (int64_t)expiry - rc->now;
		timer_arm(w->loop, &s->expiry_timer, (uint64_t)(left > 0 ? left : 0) * 1000u);
	}
	rc->sessions++;
}

static void ld_sub(void *arg, const char *cid, const char *filter, uint8_t options, uint32_t sub_id)
{
	struct session *s = restored_session(arg, cid);
	if (s)
		session_restore_sub(s, filter, strlen(filter), options, sub_id);
}

static void ld_dlv(void *arg, const char *cid, uint32_t seq, struct msg *m, uint8_t qos, uint8_t flags, uint32_t sub_id,
		   uint16_t pid)
{
	struct session *s = restored_session(arg, cid);
	if (s && (m || (flags & DLV_PUBREL)))
		session_restore_dlv(s, seq, m, qos, flags, sub_id, pid);
	else
		msg_unref(m);
}

static void ld_rel(void *arg, const char *cid, uint16_t pid)
{
	struct restore_ctx *rc = arg;
	struct session *s = restored_session(rc, cid);
	if (s) {
		s->stored = false; /* already in the store: do not write it again */
		session_rel_add(s, pid, 0);
		s->stored = true;
	}
}

static void ld_retained(void *arg, struct msg *m)
{
	struct restore_ctx *rc = arg;
	retain_put(rc->b->retained, m);
	msg_unref(m);
	rc->retained++;
}

static bool restore(struct broker *b, char *err, size_t errlen)
{
	struct restore_ctx rc = { .b = b, .now = clock_wall_s() };
	struct store_loader ld = {
		.arg = &rc,
		.retained = ld_retained,
		.session = ld_session,
		.sub = ld_sub,
		.dlv = ld_dlv,
		.rel = ld_rel,
	};
	if (!store_load(b->store, &ld, err, errlen))
		return false;
	log_info("restored %zu persistent sessions, %zu retained messages (%zu expired sessions removed)", rc.sessions,
		 rc.retained, rc.dropped);
	return true;
}

/* ---- workers ---- */

static void *worker_thread(void *arg)
{
	struct worker *w = arg;
	char name[16];
	snprintf(name, sizeof name, "bw-worker-%d", w->id);
	pthread_setname_np(pthread_self(), name);
	conn_thread_init();
	loop_run(w->loop);
	conn_thread_cleanup();
	broker_publish_thread_cleanup();
	return NULL;
}

/* Runs on each worker: stop accepting, say goodbye to every client, stop the loop. */
static void worker_shutdown(void *arg)
{
	struct worker *w = arg;
	struct broker *b = w->b;
	w->stopping = true;
	for (size_t i = 0; i < b->nlisteners; i++) {
		struct listener *li = &b->listeners[i];
		if (li->regs && w->id < li->nregs)
			loop_del(w->loop, &li->regs[w->id].io);
	}
	/* Every connection, also those still connecting or authenticating. */
	list_for_each_safe(it, &w->clients) {
		struct client *c = container_of(it, struct client, wlink);
		if (conn_closing(&c->conn))
			continue;
		c->normal_disconnect = true; /* the broker is leaving, not the client: no will */
		if (c->version == MQTT_V5 && c->state == CL_CONNECTED) {
			struct buf bb = { 0 };
			mqtt_encode_disconnect(&bb, MQTT_V5, MQTT_RC_SERVER_SHUTTING_DOWN, NULL);
			conn_write(&c->conn, bb.data, bb.len);
			buf_free(&bb);
		}
		conn_flush(&c->conn);
		conn_close(&c->conn, "server shutting down");
	}
	loop_stop(w->loop);
}

/* ---- control commands ---- */

struct gather {
	struct ctl_request *req;
	struct loop *main;
	pthread_mutex_t lock;
	int pending;
	struct buf out;
	char *arg;
	bool found;
};

static void gather_done(void *arg)
{
	struct gather *g = arg;
	if (g->arg)
		ctl_replyf(g->req, g->found, "%s", g->found ? "ok\n" : "no such client\n");
	else
		ctl_reply(g->req, true, (const char *)g->out.data ? (const char *)g->out.data : "", g->out.len);
	buf_free(&g->out);
	free(g->arg);
	pthread_mutex_destroy(&g->lock);
	free(g);
}

static void gather_finish(struct gather *g)
{
	pthread_mutex_lock(&g->lock);
	bool last = --g->pending == 0;
	pthread_mutex_unlock(&g->lock);
	if (last)
		loop_post(g->main, gather_done, g);
}

struct gather_job {
	struct gather *g;
	struct worker *w;
};

static void list_on_worker(void *arg)
{
	struct gather_job *j = arg;
	struct worker *w = j->w;
	struct buf local = { 0 };
	hmap_for_each(&w->sessions_by_cid, it) {
		struct session *s = container_of(it, struct session, by_cid);
		struct client *c = s->client;
		char id[2048], user[2048];
		client_safe(s->client_id, s->cid_len, id, sizeof id);
		if (c)
			buf_printf(&local, "%s\tconnected\t%s\t%s\tmqtt%s\t%s\tsubscriptions=%zu\tinflight=%u\tqueued=%u\n", id,
				   c->conn.peer_str, c->conn.listener->id,
				   c->version == MQTT_V5 ? "5.0" : c->version == MQTT_V311 ? "3.1.1" : "3.1",
				   c->username ? client_safe(c->username, c->username_len, user, sizeof user) : "-",
				   session_sub_count(s), s->n_inflight, s->q_len);
		else
			buf_printf(&local, "%s\tdisconnected\t-\t-\t-\t-\tsubscriptions=%zu\tinflight=%u\tqueued=%u\n", id,
				   session_sub_count(s), s->n_inflight, s->q_len);
	}
	pthread_mutex_lock(&j->g->lock);
	buf_append(&j->g->out, local.data, local.len);
	pthread_mutex_unlock(&j->g->lock);
	buf_free(&local);
	gather_finish(j->g);
	free(j);
}

static void kick_on_worker(void *arg)
{
	struct gather_job *j = arg;
	struct session *s = session_get(j->w, j->g->arg, strlen(j->g->arg));
	if (s && s->client) {
		client_kick(s->client);
		j->g->found = true;
	}
	gather_finish(j->g);
	free(j);
}

static void run_on_workers(struct main_ctx *mc, struct gather *g, void (*fn)(void *), struct worker *only)
{
	struct broker *b = mc->b;
	g->main = mc->loop;
	pthread_mutex_init(&g->lock, NULL);
	g->pending = only ? 1 : b->nworkers;
	for (int i = 0; i < b->nworkers; i++) {
		struct worker *w = &b->workers[i];
		if (only && w != only)
			continue;
		struct gather_job *j = xmalloc(sizeof *j);
		j->g = g;
		j->w = w;
		loop_post(w->loop, fn, j);
	}
}

static bool reload_tls(struct broker *b, struct buf *report)
{
	bool ok = true;
	if (b->authz && !authz_reload(b->authz, report))
		ok = false;
	if (b->auth && !auth_reload(b->auth, report))
		ok = false;
	if (b->revoke) {
		char *rep = NULL;
		if (!revoke_reload_files(b->revoke, &rep))
			ok = false;
		if (rep) {
			buf_append_str(report, rep);
			free(rep);
		}
	}
	for (size_t i = 0; i < b->nlisteners; i++) {
		struct listener *li = &b->listeners[i];
		if (!li->tls)
			continue;
		char err[512];
		if (tls_server_reload(li->tls, err, sizeof err)) {
			log_info("listener %s: certificates reloaded", li->id);
			buf_printf(report, "listener %s: certificates reloaded\n", li->id);
		} else {
			log_error("listener %s: reload failed, keeping the previous certificates: %s", li->id, err);
			buf_printf(report, "listener %s: reload failed, keeping the previous certificates: %s\n", li->id, err);
			ok = false;
		}
	}
	return ok;
}

static void on_ctl(void *arg, struct ctl_request *req, int argc, char **argv)
{
	struct main_ctx *mc = arg;
	struct broker *b = mc->b;
	if (strcmp(argv[0], "reload") == 0 && argc == 1) {
		struct buf rep = { 0 };
		bool ok = reload_tls(b, &rep);
		if (!bans_reload(b->bans, &rep))
			ok = false;
		if (!rep.len)
			buf_printf(&rep, "nothing to reload\n");
		ctl_reply(req, ok, (const char *)rep.data, rep.len);
		buf_free(&rep);
		return;
	}
	if (strcmp(argv[0], "users") == 0) {
		struct buf out = { 0 };
		bool ok = b->auth && auth_ctl(b->auth, argc, argv, &out);
		if (!b->auth)
			buf_printf(&out, "authentication is not configured\n");
		ctl_reply(req, ok, (const char *)out.data ? (const char *)out.data : "", out.len);
		buf_free(&out);
		return;
	}
	if (strcmp(argv[0], "rules") == 0) {
		struct buf out = { 0 };
		bool ok = b->authz && authz_ctl(b->authz, argc, argv, &out);
		ctl_reply(req, ok, (const char *)out.data ? (const char *)out.data : "", out.len);
		buf_free(&out);
		return;
	}
	if (strcmp(argv[0], "bans") == 0) {
		struct buf out = { 0 };
		bool ok = bans_ctl(b->bans, argc, argv, &out);
		ctl_reply(req, ok, (const char *)out.data ? (const char *)out.data : "", out.len);
		buf_free(&out);
		return;
	}
	if (strcmp(argv[0], "certs") == 0) {
		struct buf out = { 0 };
		bool ok = tls_bundles_ctl(b->cfg->data_dir, b->cfg, argc, argv, &out);
		if (ok && argc >= 2 && strcmp(argv[1], "list") != 0)
			ok = reload_tls(b, &out); /* new handshakes use the changed bundle at once */
		ctl_reply(req, ok, (const char *)out.data ? (const char *)out.data : "", out.len);
		buf_free(&out);
		return;
	}
	if (strcmp(argv[0], "status") == 0 && argc == 1) {
		size_t clients = 0;
		for (int i = 0; i < b->nworkers; i++)
			clients += b->workers[i].nclients;
		ctl_replyf(req, true, "bulwark %s running, %d workers, %zu clients, %zu subscribed filters, %zu retained\n",
			   BULWARK_VERSION_STR, b->nworkers, clients, route_count(b->routes), retain_count(b->retained));
		return;
	}
	if (strcmp(argv[0], "listeners") == 0 && argc == 1) {
		struct buf out = { 0 };
		for (size_t i = 0; i < b->nlisteners; i++) {
			const struct listener *li = &b->listeners[i];
			if (li->fd < 0)
				continue;
			buf_printf(&out, "%s %s connections=%lu refused=%lu rate_delayed=%lu\n", li->id,
				   li->cfg->bind_str ? li->cfg->bind_str : "-", atomic_load(&li->nconns), atomic_load(&li->refused),
				   atomic_load(&li->conn_delayed));
		}
		ctl_reply(req, true, (const char *)out.data ? (const char *)out.data : "", out.len);
		buf_free(&out);
		return;
	}
	if (strcmp(argv[0], "clients") == 0 && argc >= 2) {
		if (strcmp(argv[1], "list") == 0 && argc == 2) {
			struct gather *g = xcalloc(1, sizeof *g);
			g->req = req;
			run_on_workers(mc, g, list_on_worker, NULL);
			return;
		}
		if (strcmp(argv[1], "kick") == 0 && argc == 3) {
			struct gather *g = xcalloc(1, sizeof *g);
			g->req = req;
			g->arg = xstrdup(argv[2]);
			run_on_workers(mc, g, kick_on_worker, broker_owner(b, argv[2], strlen(argv[2])));
			return;
		}
	}
	ctl_replyf(req, false,
		   "unknown command: %s (try: status, reload, listeners, clients list, clients kick CLIENTID, users ..., rules ..., bans ..., certs ...)\n",
		   argv[0]);
}

/* Runs on each worker when revocation data changed: close live connections whose
 * certificate is now revoked. */
static void recheck_revocation(void *arg)
{
	struct worker *w = arg;
	struct revoke *rv = w->b->revoke;
	/* Decide first, disconnect after the walk: a disconnect may end (free) a session. */
	size_t n = 0, cap = 0;
	struct client **doomed = NULL;
	hmap_for_each(&w->sessions_by_cid, it) {
		struct session *s = container_of(it, struct session, by_cid);
		struct client *c = s->client;
		if (!c || !c->cert || !c->cert->nrefs || conn_closing(&c->conn))
			continue;
		char why[256];
		if (!revoke_is_revoked(rv, c->conn.listener->cfg, c->cert->refs, c->cert->nrefs, why, sizeof why))
			continue;
		char id[128];
		log_warn("client %s (%s): certificate revoked (%s), disconnecting",
			 client_safe(s->client_id, s->cid_len, id, sizeof id), c->cert->dn, why);
		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			doomed = xrealloc(doomed, cap * sizeof *doomed);
		}
		doomed[n++] = c;
	}
	for (size_t i = 0; i < n; i++)
		client_disconnect(doomed[i], MQTT_RC_NOT_AUTHORIZED, "certificate revoked");
	free(doomed);
}

static void on_revoke_change(void *arg)
{
	struct broker *b = arg;
	if (atomic_load(&b->stopping))
		return;
	for (int i = 0; i < b->nworkers; i++)
		loop_post(b->workers[i].loop, recheck_revocation, &b->workers[i]);
}

/* Runs on each worker when bans were added: close every connection a ban now matches, of
 * any ban type (EMQX kicks only on clientid bans). */
static void recheck_bans(void *arg)
{
	struct worker *w = arg;
	/* Decide first, disconnect after the walk: a disconnect may end (free) a session. */
	size_t n = 0, cap = 0;
	struct client **doomed = NULL;
	list_for_each(it, &w->clients) {
		struct client *c = container_of(it, struct client, wlink);
		if (conn_closing(&c->conn))
			continue;
		char why[300];
		if (!bans_check(w->b->bans, c->client_id, c->username, c->username_len,
				(const struct sockaddr *)&c->conn.peer, why, sizeof why))
			continue;
		char id[128];
		log_info("client %s from %s: %s, disconnecting",
			 c->client_id ? client_safe(c->client_id, strlen(c->client_id), id, sizeof id) : "-",
			 c->conn.peer_str, why);
		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			doomed = xrealloc(doomed, cap * sizeof *doomed);
		}
		doomed[n++] = c;
	}
	for (size_t i = 0; i < n; i++)
		client_disconnect(doomed[i], MQTT_RC_ADMINISTRATIVE_ACTION, "banned");
	free(doomed);
}

static void on_bans_change(void *arg)
{
	struct broker *b = arg;
	if (atomic_load(&b->stopping))
		return;
	for (int i = 0; i < b->nworkers; i++)
		loop_post(b->workers[i].loop, recheck_bans, &b->workers[i]);
}

static void on_files_changed(void *arg)
{
	struct main_ctx *mc = arg;
	log_info("certificate files changed: reloading");
	struct buf rep = { 0 };
	reload_tls(mc->b, &rep);
	buf_free(&rep);
}

static void watch_one(void *arg, const char *path)
{
	fwatch_add(arg, path);
}

static void watch_cert_files(struct main_ctx *mc)
{
	struct broker *b = mc->b;
	for (size_t i = 0; i < b->nlisteners; i++) {
		if (!b->listeners[i].tls)
			continue;
		if (!mc->watch && !(mc->watch = fwatch_new(mc->loop, on_files_changed, mc)))
			return;
		tls_server_files(b->listeners[i].tls, watch_one, mc->watch);
		const struct cfg_ssl *ssl = &b->listeners[i].cfg->ssl;
		for (size_t k = 0; k < ssl->n_crlfiles; k++)
			fwatch_add(mc->watch, ssl->crlfiles[k]);
	}
}

/* ---- signals ---- */

static void on_signal(struct loop_io *io, uint32_t events)
{
	(void)events;
	struct main_ctx *mc = container_of(io, struct main_ctx, sig);
	struct signalfd_siginfo si;
	while (read(io->fd, &si, sizeof si) == (ssize_t)sizeof si) {
		if (si.ssi_signo == SIGHUP) {
			log_info("SIGHUP: reloading certificates");
			struct buf rep = { 0 };
			reload_tls(mc->b, &rep);
			bans_reload(mc->b->bans, &rep);
			buf_free(&rep);
		} else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
			log_info("%s: shutting down", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
			mc->stop_requested = true;
			loop_stop(mc->loop);
		}
	}
}

/* ---- main ---- */

/* msg_set_release_hook: a stored message nothing refers to any more loses its row. */
static void release_stored_msg(void *store, uint64_t store_id)
{
	store_msg_del(store, store_id);
}

static void free_all(struct broker *b)
{
	/* Listeners first: they are registered in the worker loops. */
	for (size_t i = 0; i < b->nlisteners; i++) {
		if (b->listeners[i].fd >= 0)
			listener_close(&b->listeners[i]);
		tls_server_free(b->listeners[i].tls);
	}
	free(b->listeners);
	for (int i = 0; i < b->nworkers; i++) {
		struct worker *w = &b->workers[i];
		/* Sessions stay in the store; free their memory only (removing a session from the
		 * emptied map is a no-op). */
		for (struct hmap_node *n = hmap_steal(&w->sessions_by_cid), *next; n; n = next) {
			next = n->next;
			session_free(container_of(n, struct session, by_cid));
		}
		hmap_destroy(&w->sessions_by_id);
		for (int d = 0; d < b->nworkers; d++) {
			for (size_t x = 0; x < w->outboxes[d].n; x++)
				msg_unref(w->outboxes[d].items[x].msg);
			free(w->outboxes[d].items);
		}
		free(w->outboxes);
		loop_free(w->loop);
	}
	free(b->workers);
	route_free(b->routes);
	retain_free(b->retained);
}

static bool open_listeners(struct broker *b, struct loop *main_loop, char *err, size_t errlen)
{
	struct config *cfg = b->cfg;
	b->listeners = xcalloc(cfg->n_listeners ? cfg->n_listeners : 1, sizeof *b->listeners);
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		const struct cfg_listener *lc = &cfg->listeners[i];
		if (!lc->enable)
			continue;
		struct listener *li = &b->listeners[b->nlisteners];
		li->fd = -1;
		if (lc->type == CFG_LISTENER_SSL) {
			char terr[512];
			struct tls_deps deps = { .revoke = b->revoke, .http = b->http, .main_loop = main_loop,
						 .data_dir = cfg->data_dir, .psk = &cfg->psk };
			li->tls = tls_server_new(lc, &deps, terr, sizeof terr);
			if (!li->tls) {
				snprintf(err, errlen, "%s:%d: listeners.ssl.%s: %s", lc->file ? lc->file : "(default)", lc->line,
					 lc->name, terr);
				return false;
			}
		}
		b->nlisteners++;
		if (!listener_open(li, lc, client_accept, err, errlen))
			return false;
	}
	return true;
}

static bool needs_revocation(const struct config *cfg)
{
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		const struct cfg_listener *l = &cfg->listeners[i];
		if (l->enable && l->type == CFG_LISTENER_SSL &&
		    (l->ssl.n_crlfiles || l->ssl.enable_crl_check || l->ssl.ocsp_client.enable))
			return true;
	}
	return false;
}

/* The outbound HTTP client (CRL, OCSP, and later auth backends) and, when a listener
 * checks revocation, the revocation service. */
static bool start_revocation(struct broker *b, struct loop *main_loop, char *err, size_t errlen)
{
	b->http = http_client_new(0);
	if (!needs_revocation(b->cfg))
		return true;
	if (!b->http) {
		snprintf(err, errlen, "revocation checks need the HTTP client, which could not start");
		return false;
	}
	b->revoke = revoke_new(b->cfg, b->http, main_loop, err, errlen);
	if (!b->revoke)
		return false;
	revoke_on_change(b->revoke, on_revoke_change, b);
	return true;
}

static void drain_workers(struct broker *b)
{
	for (int round = 0; round < 8; round++) {
		size_t n = 0;
		for (int i = 0; i < b->nworkers; i++)
			n += loop_drain(b->workers[i].loop);
		if (!n)
			break;
	}
}

/* The hashing pool (cores - 1 threads, at least one) and every authentication chain. */
static bool start_auth_system(struct broker *b, struct loop *main_loop, char *err, size_t errlen)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	b->hashpool = hashpool_new(cores > 2 ? (unsigned)(cores - 1) : 1u, 1024);
	struct authn_env env = {
		.cfg = b->cfg,
		.http = b->http,
		.main_loop = main_loop,
		.hashpool = b->hashpool,
		.data_dir = b->cfg->data_dir,
	};
	b->auth = auth_system_new(b->cfg, &env, err, errlen);
	if (!b->auth)
		return false;
	struct authz_env zenv = {
		.cfg = b->cfg,
		.http = b->http,
		.main_loop = main_loop,
		.data_dir = b->cfg->data_dir,
	};
	b->authz = authz_new(b->cfg->authz, &zenv, err, errlen);
	return b->authz != NULL;
}

/* Certificates named in the config must load before anything is created on disk. */
static bool check_tls_configs(const struct config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		const struct cfg_listener *lc = &cfg->listeners[i];
		if (!lc->enable || lc->type != CFG_LISTENER_SSL || lc->ssl.dev_cert)
			continue;
		char terr[512];
		struct tls_deps deps = { .data_dir = cfg->data_dir, .psk = &cfg->psk };
		if (!tls_check_config(lc, &deps, terr, sizeof terr)) {
			snprintf(err, errlen, "%s:%d: listeners.ssl.%s.ssl_options: %s",
				 lc->ssl.file ? lc->ssl.file : (lc->file ? lc->file : cfg->source),
				 lc->ssl.file ? lc->ssl.line : lc->line, lc->name, terr);
			return false;
		}
	}
	return true;
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)(const void *)ss)->sin_addr.s_addr) >> 24) == 127;
	if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr;
		return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return true; /* not an internet socket */
}

/* Secure defaults: a listener reachable from the network that lets anyone in — no
 * authentication and no required client certificate — is said loudly at start. */
static void warn_if_open(struct broker *b, const struct cfg_listener *lc)
{
	if (is_loopback(&lc->bind))
		return;
	if (lc->type == CFG_LISTENER_SSL && lc->ssl.verify_peer && lc->ssl.fail_if_no_peer_cert)
		return;
	struct auth_chain *chain = b->auth ? auth_chain_for(b->auth, lc) : NULL;
	bool authn = lc->enable_authn != CFG_AUTHN_FALSE && chain && !auth_chain_empty(chain);
	if (authn)
		return;
	log_warn("listener %s on %s accepts anonymous clients from the network: %s; configure authentication, "
		 "or verify_peer with fail_if_no_peer_cert = true, or bind to 127.0.0.1",
		 lc->id, lc->bind_str,
		 lc->enable_authn == CFG_AUTHN_FALSE ? "enable_authn = false and no client certificate is required"
						     : "no authenticator is configured and no client certificate is required");
}

int broker_main(struct config *cfg, const char *config_path)
{
	(void)config_path;
	char err[1024];
	int status = 1;
	struct main_ctx mc = { .lock_fd = -1 };
	struct broker *b = xcalloc(1, sizeof *b);
	mc.b = b;
	b->cfg = cfg;
	atomic_init(&b->next_session_id, 1);
	hash_seed_random();
	tls_global_init();
	conn_thread_init(); /* the main thread reaps connections drained at shutdown */

	/* Signals are handled by the main loop (signalfd); workers inherit the blocked mask. */
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (!check_tls_configs(cfg, err, sizeof err)) {
		log_error("%s", err);
		goto out_early;
	}
	if (!mkdir_p(cfg->data_dir, 0700)) {
		log_error("cannot create data_dir %s: %s", cfg->data_dir, strerror(errno));
		goto out_early;
	}
	mc.lock_fd = lock_data_dir(cfg->data_dir, err, sizeof err);
	if (mc.lock_fd < 0) {
		log_error("%s", err);
		goto out_early;
	}
	if (!prepare_dev_certs(cfg, err, sizeof err)) {
		log_error("%s", err);
		goto out_unlock;
	}
	/* After the development certificates are signed (fastkeys.c: no certificate signing with
	 * provider keys once installed), before the listeners load theirs and threads start. */
	if (cfg->tls_fast_keys) {
		char msg[256];
		if (tls_fast_keys_install(msg, sizeof msg) == TLS_FAST_KEYS_FAILED)
			log_warn("%s", msg);
		else
			log_info("%s", msg);
	}
	/* The control socket exists before any listener accepts: once a port answers, ctl works. */
	mc.loop = loop_new(-1);
	mc.ctl = ctl_server_start(mc.loop, cfg->data_dir, on_ctl, &mc, err, sizeof err);
	if (!mc.ctl) {
		log_error("%s", err);
		goto out_unlock;
	}
	b->store = store_open(cfg->data_dir, cfg->fsync, err, sizeof err);
	if (!b->store) {
		log_error("store: %s", err);
		goto out_unlock;
	}
	msg_set_release_hook(release_stored_msg, b->store);
	b->nworkers = cfg->workers > 0 ? (int)cfg->workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (b->nworkers < 1)
		b->nworkers = 1;
	if (b->nworkers > 256)
		b->nworkers = 256;
	b->routes = route_new();
	b->retained = retain_new();
	b->workers = xcalloc((size_t)b->nworkers, sizeof *b->workers);
	struct loop **loops = xcalloc((size_t)b->nworkers, sizeof *loops);
	for (int i = 0; i < b->nworkers; i++) {
		struct worker *w = &b->workers[i];
		w->id = i;
		w->b = b;
		w->loop = loop_new(i);
		loop_set_user(w->loop, w);
		hmap_init(&w->sessions_by_cid);
		hmap_init(&w->sessions_by_id);
		list_init(&w->clients);
		worker_outbox_init(w);
		loops[i] = w->loop;
	}
	if (!restore(b, err, sizeof err)) {
		log_error("store: %s", err);
		free(loops);
		goto out_free;
	}
	retain_persist_to(b->retained, b->store); /* what restore put there is stored already */
	if (!start_revocation(b, mc.loop, err, sizeof err)) {
		log_error("%s", err);
		free(loops);
		goto out_free;
	}
	if (!start_auth_system(b, mc.loop, err, sizeof err)) {
		log_error("%s", err);
		free(loops);
		goto out_free;
	}
	b->bans = bans_open(cfg, mc.loop, b->nworkers, err, sizeof err);
	if (!b->bans) {
		log_error("banned: %s", err);
		free(loops);
		goto out_free;
	}
	bans_on_change(b->bans, on_bans_change, b);
	if (!open_listeners(b, mc.loop, err, sizeof err)) {
		log_error("%s", err);
		free(loops);
		goto out_free;
	}
	mc.sig.fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	mc.sig.cb = on_signal;
	loop_add(mc.loop, &mc.sig, EPOLLIN);
	watch_cert_files(&mc);
	for (size_t i = 0; i < b->nlisteners; i++)
		listener_attach(&b->listeners[i], loops, b->nworkers);
	free(loops);
	for (int i = 0; i < b->nworkers; i++)
		pthread_create(&b->workers[i].thread, NULL, worker_thread, &b->workers[i]);
	for (size_t i = 0; i < b->nlisteners; i++) {
		const struct cfg_listener *lc = b->listeners[i].cfg;
		log_info("listener %s on %s%s", lc->id, lc->bind_str,
			 lc->type == CFG_LISTENER_SSL ? (lc->ssl.verify_peer ? " (TLS, client certificates verified)" : " (TLS)")
						       : "");
		warn_if_open(b, lc);
	}
	log_info("bulwark %s started (%d workers, data in %s, config %s)", BULWARK_VERSION_STR, b->nworkers,
		 cfg->data_dir, cfg->source);

	loop_run(mc.loop);

	/* Graceful stop: stop accepting, disconnect clients, drain, persist, exit 0. */
	atomic_store(&b->stopping, true);
	for (int i = 0; i < b->nworkers; i++)
		loop_post(b->workers[i].loop, worker_shutdown, &b->workers[i]);
	for (int i = 0; i < b->nworkers; i++)
		pthread_join(b->workers[i].thread, NULL);
	/* Deliveries still travelling between workers land in their (offline) sessions. */
	drain_workers(b);
	/* The hashing pool and authenticators' backend threads may still answer calls of
	 * clients that are gone: stop them while the loops they post to exist, then run what
	 * they posted. */
	hashpool_free(b->hashpool);
	b->hashpool = NULL;
	drain_workers(b);
	auth_system_free(b->auth);
	b->auth = NULL;
	authz_stop(b->authz);
	drain_workers(b);
	authz_free(b->authz);
	b->authz = NULL;
	/* Held-back acknowledgements: the store thread posts their releases to the worker
	 * loops once their writes are committed; run them while those loops exist. */
	if (b->store) {
		for (int round = 0; round < 4; round++) {
			store_sync(b->store);
			drain_workers(b);
		}
	}
	close(mc.sig.fd);
	status = 0;
	log_info("bulwark stopped");
out_free:
	/* Freeing sessions releases messages whose rows must stay for the next start. */
	msg_set_release_hook(NULL, NULL);
	free_all(b);
	bans_close(b->bans);
	auth_system_free(b->auth);
	authz_free(b->authz);
	revoke_free(b->revoke);
	http_client_free(b->http);
	hashpool_free(b->hashpool);
	if (b->store)
		store_close(b->store);
out_unlock:
	fwatch_free(mc.watch);
	ctl_server_stop(mc.ctl);
	loop_free(mc.loop);
	if (mc.lock_fd >= 0)
		close(mc.lock_fd);
out_early:
	conn_thread_cleanup();
	broker_publish_thread_cleanup();
	free(b);
	return status;
}
