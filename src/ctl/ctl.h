/* The control socket: `bulwark ctl ...` talks to a running broker through a Unix socket
 * in the data directory (owner-only permissions).
 *
 * Wire format: the client sends its arguments, each terminated by a NUL byte, then
 * half-closes. The server answers with one status byte ('0' success, '1' failure)
 * followed by free text, then closes. Requests are at most 64 KB.
 *
 * The server runs on the main thread's loop. A command handler may answer at once or
 * later (after asking the workers): it keeps the request and calls ctl_reply once.
 */
#ifndef BW_CTL_H
#define BW_CTL_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

struct loop;
struct ctl_server;
struct ctl_request;

/* Called for each complete request (argv[0] is the command). */
typedef void (*ctl_handler_fn)(void *arg, struct ctl_request *req, int argc, char **argv);

/* Listen on <data_dir>/bulwark.sock (a stale socket is replaced). */
struct ctl_server *ctl_server_start(struct loop *l, const char *data_dir, ctl_handler_fn fn, void *arg, char *err,
				    size_t errlen);
void ctl_server_stop(struct ctl_server *s);
/* Answer a request (exactly once); the text is copied. */
void ctl_reply(struct ctl_request *req, bool ok, const char *text, size_t len);
/* printf-style answer. */
void ctl_replyf(struct ctl_request *req, bool ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The `bulwark ctl` command: parses [-c FILE | --data-dir DIR] and the command, talks to
 * the broker, prints the answer. Returns the process exit status. */
int ctl_client_main(int argc, char **argv);

/* Path of the control socket for a data directory (static buffer is not used: out). */
bool ctl_socket_path(const char *data_dir, char *out, size_t outlen);

#endif
