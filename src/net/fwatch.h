/* Watching files for changes (inotify), on a loop. Watches the directories of the given
 * files, so replacing a file by rename (how certificate tooling usually writes) is seen
 * as well as rewriting it in place. Changes are debounced: the callback runs once, after
 * the files have been quiet for a moment (a certificate and its key written one after
 * the other cause one reload).
 */
#ifndef BW_FWATCH_H
#define BW_FWATCH_H

#include <stdbool.h>

struct loop;
struct fwatch;

/* Create a watcher on loop l calling fn(arg) after changes settle. NULL when inotify is
 * unavailable (logged). */
struct fwatch *fwatch_new(struct loop *l, void (*fn)(void *arg), void *arg);
/* Watch one file path (its directory is watched; only this name triggers). */
bool fwatch_add(struct fwatch *w, const char *path);
void fwatch_free(struct fwatch *w);

#endif
