#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile int min_level = LOG_INFO;

static const char *const level_names[] = { "debug", "info", "warning", "error" };

void log_set_level(enum log_level lvl)
{
	min_level = (int)lvl;
}

bool log_level_parse(const char *s, enum log_level *out)
{
	static const struct { const char *name; enum log_level lvl; } names[] = {
		{ "debug", LOG_DEBUG }, { "info", LOG_INFO }, { "notice", LOG_INFO },
		{ "warning", LOG_WARNING }, { "warn", LOG_WARNING }, { "error", LOG_ERROR },
		{ "critical", LOG_ERROR }, { "alert", LOG_ERROR }, { "emergency", LOG_ERROR },
	};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		if (strcasecmp(s, names[i].name) == 0) {
			*out = names[i].lvl;
			return true;
		}
	}
	return false;
}

bool log_enabled(enum log_level lvl)
{
	return (int)lvl >= min_level;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	if (!log_enabled(lvl))
		return;
	char line[2048];
	struct timeval tv;
	struct tm tm;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	size_t n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(line + n, sizeof line - n, ".%03dZ %s: ", (int)(tv.tv_usec / 1000),
			      level_names[lvl]);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += (size_t)m;
	if (n > sizeof line - 2)
		n = sizeof line - 2;
	line[n++] = '\n';
	/* One write per line: lines from different threads never interleave. */
	(void)!write(2, line, n);
}
