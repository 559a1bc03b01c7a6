/* bw_proc.c: bwbench's broker figures from /proc.
 *
 * CPU: /proc/PID/task/TID/schedstat, first field = nanoseconds the thread has run on a CPU
 * (precise, unlike the 10 ms ticks of /proc/PID/stat). The broker's CPU over a phase is the
 * sum over its threads of the difference between two samples; a thread that exits between
 * the samples loses its share, so /proc/PID/stat's utime + stime (which keeps the time of
 * exited threads) is sampled as well as a cross-check. Memory: VmRSS and VmHWM of
 * /proc/PID/status.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bwbench.h"

/* Reads a small file into buf (NUL-terminated); false if it cannot be read. */
static bool read_small(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	size_t n = fread(buf, 1, cap - 1, f);
	fclose(f);
	buf[n] = 0;
	return n > 0;
}

/* utime + stime (clock ticks) from /proc/PID/stat: fields 14 and 15, after the ")" of comm. */
static uint64_t stat_ticks(int pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	if (!read_small(path, buf, sizeof buf))
		return 0;
	char *p = strrchr(buf, ')');
	if (!p)
		return 0;
	unsigned long long ut = 0, st = 0;
	/* after ")": state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime */
	if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return 0;
	return ut + st;
}

static void status_mem(int pid, struct proc_sample *s)
{
	char path[64], buf[4096];
	snprintf(path, sizeof path, "/proc/%d/status", pid);
	if (!read_small(path, buf, sizeof buf))
		return;
	char *p = strstr(buf, "VmRSS:");
	if (p)
		s->rss_kb = strtoull(p + 6, NULL, 10);
	p = strstr(buf, "VmHWM:");
	if (p)
		s->hwm_kb = strtoull(p + 6, NULL, 10);
}

bool proc_sample_take(int pid, struct proc_sample *s)
{
	memset(s, 0, sizeof *s);
	s->wall_ns = now_ns();
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/task", pid);
	DIR *d = opendir(path);
	if (!d)
		return false;
	int cap = 16;
	s->th = xcalloc((size_t)cap, sizeof *s->th);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		int tid = atoi(de->d_name);
		char p2[96], buf[256];
		snprintf(p2, sizeof p2, "/proc/%d/task/%d/schedstat", pid, tid);
		if (!read_small(p2, buf, sizeof buf))
			continue; /* exited meanwhile */
		if (s->nth == cap) {
			cap *= 2;
			s->th = xrealloc(s->th, (size_t)cap * sizeof *s->th);
		}
		struct proc_thread *t = &s->th[s->nth++];
		t->tid = tid;
		t->ns = strtoull(buf, NULL, 10);
		snprintf(p2, sizeof p2, "/proc/%d/task/%d/comm", pid, tid);
		if (!read_small(p2, t->comm, sizeof t->comm))
			snprintf(t->comm, sizeof t->comm, "?");
		t->comm[strcspn(t->comm, "\n")] = 0;
		s->cpu_ns += t->ns;
	}
	closedir(d);
	s->stat_ticks = stat_ticks(pid);
	status_mem(pid, s);
	s->ok = s->nth > 0;
	return s->ok;
}

void proc_sample_free(struct proc_sample *s)
{
	free(s->th);
	s->th = NULL;
	s->nth = 0;
}

uint64_t proc_thread_ns(const struct proc_sample *s, int tid)
{
	for (int i = 0; i < s->nth; i++)
		if (s->th[i].tid == tid)
			return s->th[i].ns;
	return 0;
}
