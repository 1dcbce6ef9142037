/* Clocks: monotonic for durations and deadlines, realtime for logs. */
#ifndef ES_BASE_CLOCK_H
#define ES_BASE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t es_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t es_wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif
