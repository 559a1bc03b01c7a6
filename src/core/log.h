/* Logging to stderr, one line per call, safe from any thread.
 * Line format: "2026-11-23T10:00:00.123Z warning: message". */
#ifndef BW_LOG_H
#define BW_LOG_H

#include <stdbool.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERROR };

/* Set the minimum level printed (default LOG_INFO). */
void log_set_level(enum log_level lvl);
/* Parse "debug|info|warning|error" (also "warn", "notice"); false if unknown. */
bool log_level_parse(const char *s, enum log_level *out);
/* True when lvl would be printed; lets callers skip building expensive messages. */
bool log_enabled(enum log_level lvl);
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
