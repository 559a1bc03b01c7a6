/* Keyed hashing (SipHash-1-3) for tables whose keys come from the network, so a
 * client cannot flood one bucket. The key is random per process. */
#ifndef BW_HASH_H
#define BW_HASH_H

#include <stddef.h>
#include <stdint.h>

/* Seed the process-wide key from the OS; call once at start (unit tests may skip it). */
void hash_seed_random(void);
/* SipHash-1-3 of p[0..n) under the process key. */
uint64_t hash_bytes(const void *p, size_t n);

#endif
