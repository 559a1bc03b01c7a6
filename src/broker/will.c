/* Will messages: checked against the ban list and authorization when they are published
 * (EMQX checks both then, not at CONNECT), since bans and rules may change while the
 * publisher is connected or its will is delayed. */
#include <stdlib.h>
#include <string.h>

#include "authz/authz.h"
#include "bans/bans.h"
#include "broker/broker.h"
#include "broker/msg.h"
#include "broker/publish.h"
#include "core/alloc.h"
#include "core/log.h"

struct will_job {
	struct worker *w;
	struct msg *m;
	struct authz_subject *subj;
	struct authz_wait wait;
};

static void will_job_free(struct will_job *j)
{
	msg_unref(j->m);
	authz_subject_unref(j->subj);
	free(j);
}

static void will_publish(struct worker *w, struct msg *m, enum authz_verdict v, const char *client_id)
{
	if (v == AUTHZ_ALLOW) {
		broker_publish(w, m, NULL);
		return;
	}
	log_info("client %s: will message on %.*s not published: not authorized", client_id ? client_id : "?",
		 (int)(m->topic_len > 200 ? 200 : m->topic_len), msg_topic(m));
}

static void will_answered(void *arg, enum authz_verdict v)
{
	struct will_job *j = arg;
	will_publish(j->w, j->m, v, authz_subject_client(j->subj)->clientid);
	will_job_free(j);
}

void broker_publish_will(struct worker *w, const char *client_id, struct msg *m, struct authz_subject *subj)
{
	if (!subj) {
		broker_publish(w, m, NULL);
		msg_unref(m);
		return;
	}
	const struct authz_client *cl = authz_subject_client(subj);
	char why[300];
	if (w->b->bans && bans_check(w->b->bans, cl->clientid, cl->username, cl->username_len,
				     (const struct sockaddr *)&cl->peer, why, sizeof why)) {
		log_info("client %s: will message not published: %s", client_id ? client_id : "?", why);
		msg_unref(m);
		authz_subject_unref(subj);
		return;
	}
	/* Authorization sees the topic as the client wrote it: without the mountpoint. */
	const char *topic = msg_topic(m);
	size_t tlen = m->topic_len;
	size_t mp = cl->mountpoint ? strlen(cl->mountpoint) : 0;
	if (mp && tlen >= mp && memcmp(topic, cl->mountpoint, mp) == 0) {
		topic += mp;
		tlen -= mp;
	}
	struct authz_action a = { .type = AUTHZ_PUBLISH, .topic = topic, .topic_len = tlen, .qos = m->qos,
				  .retain = m->retain };
	struct will_job *j = xcalloc(1, sizeof *j);
	j->w = w;
	j->m = m;
	j->subj = subj;
	enum authz_verdict v = authz_check(subj, &a, w->loop, &j->wait, will_answered, j);
	if (v == AUTHZ_PENDING)
		return;
	will_publish(w, m, v, client_id);
	will_job_free(j);
}
