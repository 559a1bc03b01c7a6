/* File-system helpers shared by the modules that keep files in the data directory. */
#ifndef BW_FS_H
#define BW_FS_H

#include <stdbool.h>
#include <stddef.h>

/* mkdir -p: create dir and its missing parents with mode 0700, then check that dir is a
 * writable directory. False with err ("PATH: cannot create directory: ...", "not a
 * directory", "not writable") otherwise. */
bool fs_make_dirs(const char *dir, char *err, size_t errlen);

#endif
