/* Reading configuration values out of a HOCON tree with precise errors: every failure
 * is one line "file:line: dotted.key: message". Used by the schema (schema.c) and by
 * modules that parse their own sections (authenticators, authorization sources), so a
 * feature owns its keys while errors, warnings and the unknown-key policy stay uniform.
 *
 * A struct cfg_reader carries the error buffer and the dotted path of the key being
 * read (push a key before reading it, pop after). Field tables (struct cfg_field) read
 * a whole object: every member must match a field, else "unknown key".
 */
#ifndef BW_CFGREAD_H
#define BW_CFGREAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/hocon.h"

struct config;

enum cfg_ftype {
	CFG_F_BOOL,
	CFG_F_U8,
	CFG_F_U16,
	CFG_F_U32,
	CFG_F_U64,
	CFG_F_U32_INF,     /* integer or "infinity" (stored as 0) */
	CFG_F_U64_INF,
	CFG_F_DURATION_MS, /* "15s"; "infinity" -> UINT64_MAX */
	CFG_F_DURATION_S32, /* "2h" stored as seconds in uint32 */
	CFG_F_DURATION_S32_INF, /* as above, "infinity" -> 0 */
	CFG_F_BYTES32,
	CFG_F_DOUBLE,
	CFG_F_STRING,
	CFG_F_ENUM,        /* stored as int */
	CFG_F_CUSTOM,
	CFG_F_IGNORED,     /* EMQX key Bulwark does not use: warn */
	CFG_F_UNSUPPORTED, /* feature not built yet: refuse */
};

struct cfg_reader;

/* One key of a field table: how to read it into target + off. */
struct cfg_field {
	const char *key;
	enum cfg_ftype type;
	size_t off;
	int64_t min, max;
	const char *const *names; /* CFG_F_ENUM, NULL-terminated */
	bool (*custom)(struct cfg_reader *ld, const struct hocon_member *m, void *target);
};

struct cfg_reader {
	char *err;          /* where the one-line error goes */
	size_t errlen;
	struct config *cfg; /* the config being built (may be NULL for standalone readers) */
	char path[512];     /* dotted path of the current key */
};


/* File name of a member's position ("(config)" when unknown). */
const char *cfgr_file(const struct hocon_member *m);
/* Set the error to "file:line: path: message"; returns false (for return cfgr_fail(...)). */
bool cfgr_fail(struct cfg_reader *r, const struct hocon_member *m, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Append key to the path (returns the old length); restore with cfgr_path_pop. */
size_t cfgr_path_push(struct cfg_reader *r, const char *key);
void cfgr_path_pop(struct cfg_reader *r, size_t old);
/* "file:line: path is an EMQX setting Bulwark does not use; ignored" (warning). */
void cfgr_warn_ignored(struct cfg_reader *r, const struct hocon_member *m);
/* "not supported yet: path (file:line)"; returns false. */
bool cfgr_unsupported(struct cfg_reader *r, const struct hocon_member *m);
/* "file:line: path: unknown key"; returns false. */
bool cfgr_unknown(struct cfg_reader *r, const struct hocon_member *m);
/* The text of a scalar node (string, number, bool), or NULL for objects/arrays/null. */
const char *cfgr_scalar(const struct hocon_node *n);
/* True for the string "infinity". */
bool cfgr_is_infinity(const struct hocon_node *n);
/* Typed getters: false (error set) on a wrong type or range. */
bool cfgr_bool(struct cfg_reader *r, const struct hocon_member *m, bool *out);
bool cfgr_uint(struct cfg_reader *r, const struct hocon_member *m, int64_t min, int64_t max, uint64_t *out);
/* Replaces *out (freeing the old value). */
bool cfgr_string(struct cfg_reader *r, const struct hocon_member *m, char **out);
/* An array of strings or one comma-separated string; NULL-terminated, free with cfgr_free_list. */
char **cfgr_list(struct cfg_reader *r, const struct hocon_member *m, size_t *n_out);
void cfgr_free_list(char **v);
bool cfgr_enum(struct cfg_reader *r, const struct hocon_member *m, const char *const *names, int *out);
/* Read every member of obj through fields into target (parent names obj in errors). */
bool cfgr_load_fields(struct cfg_reader *r, const struct hocon_member *parent, const struct hocon_node *obj,
		      const struct cfg_field *fields, void *target);

#endif
