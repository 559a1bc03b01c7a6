/* EMQX "variform" expressions (emqx_variform, emqx_variform_bif): the one-line expression
 * language of `mqtt.client_attrs_init` (reference/emqx.md §3.1), e.g.
 *     nth(1, tokens(clientid, '-'))
 *     regex_extract(cn, '^device-([0-9]+)$')
 *     iif(str_eq(zone, 'default'), concat([username, '-', cn]), 'other')
 *
 * Grammar (EMQX's scanner and parser):
 *     expr  := IDENT '(' [arg {',' arg}] ')' | IDENT | 'string' | "string" | INTEGER | FLOAT | true | false
 *     arg   := expr | '[' arg {',' arg} ']'
 *     IDENT := [a-zA-Z][-a-zA-Z0-9_.]*       (variables are dotted paths: user_property.foo)
 * Strings have no escapes (use unescape('\n')). No operators, no user functions.
 *
 * Values are strings, integers, floats, booleans and arrays. An expression is compiled once
 * (variform_compile: syntax, every function name and arity, every variable name through the
 * embedder's resolver, argument types where they are known statically, literal regexes, hash
 * algorithms and mode arguments), then evaluated any number of times, from any number of
 * threads, against a variable lookup callback (variform_eval). Compiled expressions are
 * immutable.
 *
 * Evaluation follows EMQX: a runtime error (wrong argument type, bad base64, unbound variable...)
 * fails the whole expression; coalesce(), iif()'s condition and is_empty() treat an unbound
 * variable as ''. The final value becomes a string: integers in decimal, booleans as
 * true/false, and (a Bulwark extension: EMQX refuses to return an array) an array as its
 * elements joined with ','.
 *
 * Regular expressions: EMQX uses PCRE; Bulwark compiles them as POSIX extended regexes
 * (regcomp REG_EXTENDED) after translating the common PCRE forms: \d \D \s \S \w \W (also
 * \d \s \w inside [...]), \b \B, \A \z \Z, \n \t \r \f \v \e \a \xHH \x{H..}, escaped
 * punctuation, (?:...) groups (not counted as captures), and a leading (?i). Anything else PCRE
 * has and ERE does not -- lazy or possessive quantifiers, look-around, back-references, named
 * groups, \p{..} -- is refused when the expression is compiled. Matching is on bytes (as EMQX's
 * re without the unicode option) and POSIX semantics apply: the leftmost-longest match,
 * '.' matches a newline, '$' only at the very end.
 *
 * Limits (an expression exceeding them fails, at compile or evaluation):
 * VARIFORM_MAX_TEXT bytes of source, VARIFORM_MAX_DEPTH nested calls/arrays, VARIFORM_MAX_STR
 * bytes per string, VARIFORM_MAX_ITEMS elements per array, VARIFORM_MAX_MEM bytes of values
 * per evaluation, VARIFORM_MAX_REGEX_SUBJECT bytes of text a regex function searches (glibc's
 * matcher is quadratic for some patterns: a client must not be able to stall a worker with a
 * long client ID; 4 KiB keeps the worst pattern measured near 0.1 s).
 */
#ifndef BW_VARIFORM_H
#define BW_VARIFORM_H

#include <stdbool.h>
#include <stddef.h>

#define VARIFORM_MAX_TEXT 4096
#define VARIFORM_MAX_DEPTH 32
#define VARIFORM_MAX_STR (256 * 1024)
#define VARIFORM_MAX_ITEMS 65536
#define VARIFORM_MAX_MEM (16 * 1024 * 1024)
#define VARIFORM_MAX_REGEX_SUBJECT 4096

struct variform;

/* What kind of value a variable holds (a string, or an array of strings such as cert_san.dns). */
enum variform_var_kind {
	VARIFORM_VAR_STRING,
	VARIFORM_VAR_LIST,
};

/* A variable's value at evaluation time, filled by the lookup callback. Nothing is copied:
 * the memory must stay valid until variform_eval returns. */
struct variform_value {
	enum variform_var_kind kind;
	const char *s;            /* STRING: s[0..len) */
	size_t len;
	const char *const *items; /* LIST: n strings; lens[i] their lengths, or lens NULL for NUL-terminated */
	const size_t *lens;
	size_t n;
};

/* Compile-time variable resolution: an id >= 0 (passed back to lookup) and the variable's
 * kind for a known name (NUL-terminated), or -1 for an unknown one. */
typedef int (*variform_resolve_fn)(const char *name, void *ud, enum variform_var_kind *kind);
/* Evaluation-time lookup of a variable compiled with id: true and *out filled, or false
 * when the variable is unbound (an error, except under coalesce/iif/is_empty). */
typedef bool (*variform_lookup_fn)(void *ud, int id, const char *name, struct variform_value *out);

/* Compile text[0..len). NULL with a one-line message in err ("column 12: ...") on a syntax
 * error, an unknown function or variable (var_hint, when not NULL, is appended to the
 * unknown-variable message), a wrong arity or argument, or a limit. */
struct variform *variform_compile(const char *text, size_t len, variform_resolve_fn resolve, void *ud,
				  const char *var_hint, char *err, size_t errlen);
/* Evaluate: a fresh NUL-terminated string (*len bytes; it may hold NUL bytes, e.g. from
 * base64_decode), or NULL with a one-line message in err. The message never contains
 * variable values. The caller frees the result. */
char *variform_eval(const struct variform *e, variform_lookup_fn lookup, void *ud, size_t *len, char *err,
		    size_t errlen);
/* The source text of a compiled expression. */
const char *variform_text(const struct variform *e);
/* Free a compiled expression (NULL is fine). */
void variform_free(struct variform *e);

/* The function names variform_compile accepts, NULL-terminated (for documentation and tests). */
extern const char *const variform_function_names[];

#endif
