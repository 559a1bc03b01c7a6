#include "ctl/ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config/config.h"
#include "core/alloc.h"
#include "core/log.h"
#include "net/loop.h"

#define REQ_MAX (64u * 1024u)
#define CTL_TIMEOUT_MS 10000

struct ctl_server {
	struct loop_io io;
	struct loop *loop;
	char path[108];
	ctl_handler_fn fn;
	void *arg;
};

/* One accepted control connection. */
struct ctl_request {
	struct loop_io io;
	struct ctl_server *srv;
	struct buf in;
	bool dispatched;
	bool replied;
};

bool ctl_socket_path(const char *data_dir, char *out, size_t outlen)
{
	int n = snprintf(out, outlen, "%s/bulwark.sock", data_dir);
	return n > 0 && (size_t)n < outlen && (size_t)n < sizeof(((struct sockaddr_un *)0)->sun_path);
}

static void req_free(struct ctl_request *r)
{
	loop_del(r->srv->loop, &r->io);
	close(r->io.fd);
	buf_free(&r->in);
	free(r);
}

void ctl_reply(struct ctl_request *r, bool ok, const char *text, size_t len)
{
	if (r->replied)
		return;
	r->replied = true;
	/* The main thread is not a worker: a blocking write with a deadline keeps this simple
	 * and still writes a long client list completely. */
	int fl = fcntl(r->io.fd, F_GETFL);
	fcntl(r->io.fd, F_SETFL, fl & ~O_NONBLOCK);
	struct timeval tv = { .tv_sec = 2 };
	setsockopt(r->io.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	char status = ok ? '0' : '1';
	if (write(r->io.fd, &status, 1) == 1) {
		size_t off = 0;
		while (off < len) {
			ssize_t k = write(r->io.fd, text + off, len - off);
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				break;
			off += (size_t)k;
		}
	}
	req_free(r);
}

void ctl_replyf(struct ctl_request *r, bool ok, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0) {
		ctl_reply(r, false, "out of memory", 13);
		return;
	}
	ctl_reply(r, ok, s, (size_t)n);
	free(s);
}

static void dispatch(struct ctl_request *r)
{
	r->dispatched = true;
	loop_del(r->srv->loop, &r->io); /* no more input; the reply closes it */
	int argc = 0;
	char *argv[64];
	char *p = (char *)r->in.data;
	char *end = p + r->in.len;
	while (p < end && argc < 63) {
		char *z = memchr(p, '\0', (size_t)(end - p));
		if (!z)
			break;
		argv[argc++] = p;
		p = z + 1;
	}
	argv[argc] = NULL;
	if (argc == 0) {
		ctl_replyf(r, false, "empty command\n");
		return;
	}
	r->srv->fn(r->srv->arg, r, argc, argv);
}

static void on_req_event(struct loop_io *io, uint32_t events)
{
	(void)events;
	struct ctl_request *r = container_of(io, struct ctl_request, io);
	if (r->dispatched)
		return;
	for (;;) {
		uint8_t *dst = buf_reserve(&r->in, 4096);
		ssize_t n = read(r->io.fd, dst, 4096);
		if (n > 0) {
			r->in.len += (size_t)n;
			if (r->in.len > REQ_MAX) {
				ctl_replyf(r, false, "request too large\n");
				return;
			}
			continue;
		}
		if (n == 0) {
			dispatch(r);
			return;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN)
			return;
		req_free(r);
		return;
	}
}

static void on_accept(struct loop_io *io, uint32_t events)
{
	(void)events;
	struct ctl_server *s = container_of(io, struct ctl_server, io);
	for (;;) {
		int fd = accept4(s->io.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		struct ctl_request *r = xcalloc(1, sizeof *r);
		r->io.fd = fd;
		r->io.cb = on_req_event;
		r->srv = s;
		loop_add(s->loop, &r->io, EPOLLIN | EPOLLRDHUP);
	}
}

struct ctl_server *ctl_server_start(struct loop *l, const char *data_dir, ctl_handler_fn fn, void *arg, char *err,
				    size_t errlen)
{
	struct ctl_server *s = xcalloc(1, sizeof *s);
	if (!ctl_socket_path(data_dir, s->path, sizeof s->path)) {
		snprintf(err, errlen, "data_dir path too long for a control socket: %s", data_dir);
		free(s);
		return NULL;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	memcpy(sun.sun_path, s->path, strlen(s->path) + 1);
	unlink(s->path); /* the data dir lock guarantees no other broker owns it */
	mode_t old = umask(077);
	int r = bind(fd, (struct sockaddr *)&sun, sizeof sun);
	umask(old);
	if (r < 0 || listen(fd, 64) < 0) {
		snprintf(err, errlen, "control socket %s: %s", s->path, strerror(errno));
		close(fd);
		free(s);
		return NULL;
	}
	chmod(s->path, 0600);
	s->io.fd = fd;
	s->io.cb = on_accept;
	s->loop = l;
	s->fn = fn;
	s->arg = arg;
	loop_add(l, &s->io, EPOLLIN);
	return s;
}

void ctl_server_stop(struct ctl_server *s)
{
	if (!s)
		return;
	loop_del(s->loop, &s->io);
	close(s->io.fd);
	unlink(s->path);
	free(s);
}

/* ---- client ---- */

static void usage(void)
{
	fprintf(stderr,
		"usage: bulwark ctl [-c FILE | --data-dir DIR] COMMAND...\n"
		"commands:\n"
		"  status                 broker status\n"
		"  reload                 reload certificates (like SIGHUP)\n"
		"  listeners              per listener: address, live connections, connections refused\n"
		"                         (access rules, max_connections), accept pauses for max_conn_rate\n"
		"  clients list           connected clients\n"
		"  clients kick CLIENTID  disconnect a client (DISCONNECT 0x98)\n"
		"  users add USER PASSWORD [--superuser] | delete USER | list | passwd USER PASSWORD\n"
		"                         built-in database users (also --listener ID, --authenticator scram)\n"
		"  rules add username|clientid NAME|all allow|deny publish|subscribe|all TOPIC [--qos 0,1] [--retain B]\n"
		"  rules list [username|clientid NAME | all] | delete ... [INDEX] | clear | import FILE.json\n"
		"                         built-in authorization rules (docs/AUTHORIZATION.md)\n"
		"  bans add|list|delete|clear ...\n"
		"                         banned clients (docs/BANS.md)\n"
		"  certs list [NAMESPACE]\n"
		"  certs add [NAMESPACE/]NAME --chain FILE --key FILE [--ca FILE] [--key-password-file FILE]\n"
		"  certs replace [NAMESPACE/]NAME --chain FILE --key FILE [--ca FILE] [--key-password-file FILE]\n"
		"  certs delete [NAMESPACE/]NAME [--force]\n"
		"                         managed certificate bundles for SNI (managed_certs); changes apply to new\n"
		"                         handshakes at once\n");
}

int ctl_client_main(int argc, char **argv)
{
	const char *data_dir = NULL, *cfg_path = NULL;
	static const struct option opts[] = {
		{ "data-dir", required_argument, NULL, 'd' },
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "+c:d:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'd':
			data_dir = optarg;
			break;
		case 'c':
			cfg_path = optarg;
			break;
		default:
			usage();
			return ch == 'h' ? 0 : 2;
		}
	}
	if (optind >= argc) {
		usage();
		return 2;
	}
	struct config *cfg = NULL;
	if (!data_dir && cfg_path) {
		char err[1024];
		log_set_level(LOG_ERROR);
		cfg = config_load(cfg_path, err, sizeof err);
		if (!cfg) {
			fprintf(stderr, "bulwark ctl: %s\n", err);
			return 1;
		}
		data_dir = cfg->data_dir;
	}
	if (!data_dir)
		data_dir = "data";
	char path[108];
	if (!ctl_socket_path(data_dir, path, sizeof path)) {
		fprintf(stderr, "bulwark ctl: data dir path too long: %s\n", data_dir);
		config_free(cfg);
		return 1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
		fprintf(stderr, "bulwark ctl: cannot reach the broker at %s: %s (is it running with this data dir?)\n",
			path, strerror(errno));
		close(fd);
		config_free(cfg);
		return 1;
	}
	config_free(cfg);
	struct buf req = { 0 };
	for (int i = optind; i < argc; i++) {
		const char *a = argv[i];
		char *abs = NULL;
		/* File arguments are read by the broker, whose working directory may differ. */
		bool file_opt = i > optind && (!strcmp(argv[i - 1], "--chain") || !strcmp(argv[i - 1], "--key") ||
					       !strcmp(argv[i - 1], "--ca") || !strcmp(argv[i - 1], "--key-password-file") ||
					       (i == optind + 2 && !strcmp(argv[optind], "rules") && !strcmp(argv[i - 1], "import")));
		if (file_opt && a[0] != '/' && (abs = realpath(a, NULL)) != NULL)
			a = abs;
		buf_append(&req, a, strlen(a) + 1);
		free(abs);
	}
	struct timeval tv = { .tv_sec = CTL_TIMEOUT_MS / 1000 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	size_t off = 0;
	while (off < req.len) {
		ssize_t n = write(fd, req.data + off, req.len - off);
		if (n <= 0) {
			fprintf(stderr, "bulwark ctl: write: %s\n", strerror(errno));
			buf_free(&req);
			close(fd);
			return 1;
		}
		off += (size_t)n;
	}
	buf_free(&req);
	shutdown(fd, SHUT_WR);
	struct buf resp = { 0 };
	for (;;) {
		uint8_t *dst = buf_reserve(&resp, 4096);
		ssize_t n = read(fd, dst, 4096);
		if (n > 0) {
			resp.len += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "bulwark ctl: no answer from the broker: %s\n", strerror(errno));
			buf_free(&resp);
			close(fd);
			return 1;
		}
		break;
	}
	close(fd);
	if (resp.len == 0) {
		fprintf(stderr, "bulwark ctl: the broker closed the connection without answering\n");
		buf_free(&resp);
		return 1;
	}
	bool ok = resp.data[0] == '0';
	FILE *out = ok ? stdout : stderr;
	fwrite(resp.data + 1, 1, resp.len - 1, out);
	if (resp.len > 1 && resp.data[resp.len - 1] != '\n')
		fputc('\n', out);
	buf_free(&resp);
	return ok ? 0 : 1;
}
