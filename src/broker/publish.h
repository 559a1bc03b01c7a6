/* The publish path shared by client PUBLISH, will messages and restored state:
 * retained store update, then routing to every matching subscription. */
#ifndef BW_PUBLISH_H
#define BW_PUBLISH_H

#include <stddef.h>

struct worker;
struct msg;
struct client;

/* Publish m on worker w (the caller keeps its reference): when m->retain, store or clear
 * it as the topic's retained message (and persist that); then deliver to every matching
 * subscription (no-local, QoS downgrade, retain-as-published applied). Returns the
 * number of subscriptions the message was delivered to. */
size_t broker_publish(struct worker *w, struct msg *m, struct client *from);

/* Publish a will message (broker/will.c): takes over the reference on m and the one on
 * subj (may be NULL). The will is dropped, with a log line, when its publisher is banned
 * or authorization denies publishing it; an authorization check that must ask a backend
 * publishes once the answer is in. */
struct authz_subject;
void broker_publish_will(struct worker *w, const char *client_id, struct msg *m, struct authz_subject *subj);

/* Free the calling thread's publish scratch space (at thread exit). */
void broker_publish_thread_cleanup(void);

#endif
