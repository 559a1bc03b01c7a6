/* LD_PRELOAD shim for tests: time() runs ahead of the real clock by the number of seconds
 * written in the file named by BW_TIMESHIFT_FILE (read on every call, so a test moves the
 * clock while the broker runs). Only time(): monotonic clocks, timers and log timestamps
 * stay real. OpenSSL dates sessions and tickets, and checks certificate validity, with it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

time_t time(time_t *out)
{
	static time_t (*real)(time_t *);
	if (!real)
		real = (time_t (*)(time_t *))dlsym(RTLD_NEXT, "time");
	time_t now = real(NULL);
	const char *path = getenv("BW_TIMESHIFT_FILE");
	FILE *f = path ? fopen(path, "r") : NULL;
	if (f) {
		long shift;
		if (fscanf(f, "%ld", &shift) == 1)
			now += shift;
		fclose(f);
	}
	if (out)
		*out = now;
	return now;
}
