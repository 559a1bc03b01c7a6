/* HOCON parser: the subset EMQX users write (SPEC §2).
 *
 * Parses text into a tree of nodes. Every node and every object member remembers
 * the file and line it came from, so the schema layer can report "file:line: key".
 *
 * Supported:
 *   - objects `{ }` (the root braces are optional), arrays `[ ]`
 *   - `=` or `:` between key and value; `key { ... }` without a separator for objects
 *   - dotted keys `a.b.c = 1` (expand into nested objects); quoted keys `"a.b" = 1`
 *     are one key
 *   - duplicate keys: two objects merge recursively, otherwise the later value wins
 *   - strings: "quoted" (JSON escapes: \" \\ \/ \b \f \n \r \t \uXXXX), unquoted
 *     (`verify_peer`, `0.0.0.0:8883`, `etc/certs/a.pem`, `15s`, `1MB`), and
 *     """triple-quoted""" raw multi-line strings (inline PEM)
 *   - unquoted value concatenation: `a = foo bar` is the string "foo bar"; whitespace
 *     between an unquoted and a quoted part is kept ("x" y -> "x y")
 *   - numbers (kept as text too), true/false/on/off/yes/no (booleans only when
 *     unquoted: "true" quoted stays a string), null
 *   - `#` and `//` comments; commas or newlines separate members and array items;
 *     a trailing comma is allowed
 *   - `include "file"` and `include required("file")`: the file's members are merged
 *     into the object where the include appears; relative paths resolve against the
 *     including file's directory; a missing `include "file"` is silently skipped, a
 *     missing `required(...)` is an error; include depth is limited (cycles fail)
 *   - `${VAR}` and `${?VAR}` in unquoted values: replaced by environment variable VAR.
 *     An unset `${VAR}` is an error; an unset `${?VAR}` leaves the key unset (or, in an
 *     array, drops the item). Inside a quoted string `${...}` stays literal text.
 *   - `+=` appends to an array (`a += x` is `a = ${?a} [x]`)
 */
#ifndef BW_HOCON_H
#define BW_HOCON_H

#include <stdbool.h>
#include <stddef.h>

enum hocon_type {
	HOCON_NULL,
	HOCON_BOOL,
	HOCON_NUMBER,
	HOCON_STRING,
	HOCON_ARRAY,
	HOCON_OBJECT,
};

struct hocon_node;

struct hocon_member {
	char *key;               /* one path segment, unescaped */
	const char *file;        /* where the key was written (interned; lives with the tree) */
	int line;
	struct hocon_node *value;
};

struct hocon_node {
	enum hocon_type type;
	const char *file; /* where the value starts */
	int line;
	/* BOOL: "true"/"false"; NUMBER: the literal text; STRING: the decoded value;
	 * NULL: "null". Always NUL-terminated. ARRAY/OBJECT: NULL. */
	char *str;
	bool quoted;   /* STRING written with quotes (plain or triple) */
	bool boolean;  /* BOOL value */
	double number; /* NUMBER value */
	/* ARRAY: items[0..n); OBJECT: members[0..n) in first-definition order. */
	size_t n;
	struct hocon_node **items;
	struct hocon_member *members;
};

struct hocon_error {
	char file[512];
	int line;
	char msg[512];
};

/* Parse a file. Returns the root object, or NULL with *err filled. */
struct hocon_node *hocon_parse_file(const char *path, struct hocon_error *err);
/* Parse text; `name` is used as the file name in positions and errors; includes
 * resolve relative to the current directory. */
struct hocon_node *hocon_parse_string(const char *text, size_t len, const char *name, struct hocon_error *err);
/* Free a tree returned by either parser (including file-name strings). */
void hocon_free(struct hocon_node *root);

/* Member of an object by key (one segment), or NULL. */
const struct hocon_member *hocon_get_member(const struct hocon_node *obj, const char *key);
/* Follow a dotted path ("listeners.ssl.default") through objects; NULL if absent. */
const struct hocon_node *hocon_get_path(const struct hocon_node *root, const char *path);
/* Name of a type ("object", "string", ...). */
const char *hocon_type_str(enum hocon_type t);

/* ---- Added after the original interface (hocon.c owner). ---- */

/* Flags for hocon_parse_string_ex. */
#define HOCON_NO_INCLUDE 0x1u /* `include` is an error ("include is disabled here"): for text that must
			       * not touch the file system (fuzzing, text received over the control socket) */
/* hocon_parse_string with HOCON_* flags; flags 0 behaves exactly like hocon_parse_string. */
struct hocon_node *hocon_parse_string_ex(const char *text, size_t len, const char *name, struct hocon_error *err,
					 unsigned flags);

#endif
