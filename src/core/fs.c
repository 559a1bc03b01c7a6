/* File-system helpers: see fs.h. */
#include "core/fs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"

bool fs_make_dirs(const char *dir, char *err, size_t errlen)
{
	char *p = xstrdup(dir);
	bool ok = false;
	for (char *c = p + 1;; c++) {
		if (*c != '/' && *c != 0)
			continue;
		char saved = *c;
		*c = 0;
		if (mkdir(p, 0700) != 0 && errno != EEXIST) {
			snprintf(err, errlen, "%s: cannot create directory: %s", p, strerror(errno));
			goto out;
		}
		*c = saved;
		if (!saved)
			break;
	}
	struct stat sb;
	if (stat(dir, &sb) != 0) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		goto out;
	}
	if (!S_ISDIR(sb.st_mode)) {
		snprintf(err, errlen, "%s: not a directory", dir);
		goto out;
	}
	if (access(dir, W_OK | X_OK) != 0) {
		snprintf(err, errlen, "%s: data directory is not writable: %s", dir, strerror(errno));
		goto out;
	}
	ok = true;
out:
	free(p);
	return ok;
}
