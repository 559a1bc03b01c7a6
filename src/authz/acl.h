/* ACL rule lists: the rule form shared by every authorization source, its matcher, and
 * the parsers that produce it. Pure code (no broker state, no I/O), unit tested and fuzzed.
 *
 * A rule is (permission, who, action, topics):
 *   - permission: allow | deny;
 *   - who: all | username / clientid equal to a string or matching a regex (POSIX ERE) |
 *     ipaddr CIDR | ipaddrs [CIDR...] | client_attr NAME equal / regex | zone | listener |
 *     and [...] | or [...];
 *   - action: publish | subscribe | all, with optional QoS set (default 0,1,2) and retain
 *     condition (true | false | all, default all; retain only constrains publish);
 *   - topics: filters with placeholders ${username}, ${clientid}, ${cert_common_name},
 *     ${cert_subject}, ${zone}, ${client_attrs.NAME} (v4 compatible %u and %c too); a
 *     placeholder whose value is undefined makes that topic match nothing (it is never
 *     rendered as ""), and so does a value holding '/', '+', '#' or NUL (EMQX 6's
 *     topic_template_allow defaults: a user named "#" cannot widen "u/${username}/#");
 *     {eq, "t/#"} (string form "eq t/#") matches the literal filter text only; `all`
 *     matches every topic including $-topics.
 *   Regexes are POSIX extended (regcomp), not PCRE, and search like re:run (use ^...$);
 *   back-references and large bounded repetitions are refused.
 * Topic matching (EMQX emqx_topic:match): the requested topic (a PUBLISH name, or a
 * SUBSCRIBE filter whose '+'/'#' are plain words) is matched against the rule's topic as a
 * filter; a rule filter starting with '+' or '#' does not match a topic starting with '$'.
 *
 * acl_check walks the rules in order; the first rule whose who, action and a topic match
 * decides (ALLOW/DENY); none: NOMATCH.
 */
#ifndef BW_ACL_H
#define BW_ACL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "authz/authz.h"

struct acl;

struct acl *acl_new(void);
void acl_free(struct acl *a);
size_t acl_count(const struct acl *a);

enum authz_verdict acl_check(const struct acl *a, const struct authz_client *cl, const struct authz_action *act);

/* One rule from parts, as databases and the built-in store give them; who = all.
 *   actions: AUTHZ_PUBLISH | AUTHZ_SUBSCRIBE (both = all);
 *   qos_mask: bit q set for each allowed QoS, 0 = all;
 *   retain: -1 = all, 0 = false, 1 = true;
 *   topic: a filter with placeholders, or "eq FILTER" for a literal match (EMQX's string
 *   form of {eq, ...}). */
struct acl_rule_spec {
	bool allow;
	unsigned actions;
	uint8_t qos_mask;
	int retain;
	const char *topic;
	size_t topic_len;
};
/* Append a rule; false with err on an invalid topic. */
bool acl_add(struct acl *a, const struct acl_rule_spec *spec, char *err, size_t errlen);

/* Parse acl.conf text (EMQX's Erlang-term grammar, reference/emqx.md §5). On error NULL
 * and err = "FNAME:LINE: message". */
struct acl *acl_parse_conf(const char *text, size_t len, const char *fname, char *err, size_t errlen);

/* Parse an ACL granted by authentication (JWT claim / HTTP `acl`), either shape:
 *   - v2: [{"permission":"allow|deny","action":"publish|subscribe|all","topic":"t"|"topics":[..],
 *          "qos":[0,1],"retain":true}, ...];
 *   - v1: {"pub":[topics], "sub":[topics], "all":[topics]} (all allow).
 * NULL with err when it is neither. */
struct acl *acl_parse_json(const char *json, char *err, size_t errlen);

/* Parse an action word: "publish" | "subscribe" | "all" (also "pubsub", and "pub" / "sub" as
 * EMQX's raw rules accept them); 0 when unknown. */
unsigned acl_action_of(const char *s, size_t len);

#endif
