/* One in-flight request as reports show it (the status page, the
 * lifecycle's exit and grace reports): a plain C struct, so that the core
 * fills it and the C glue reads it with no conversion. Neutral: neither the
 * C boundary (agcore.h) nor the core's classes own it.
 *
 * Thread contract: a value type; a filled copy belongs to whoever made it. */
#ifndef ABORTGUARD_INFLIGHT_H
#define ABORTGUARD_INFLIGHT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One in-flight request, as the status page shows it. */
typedef struct {
    uint64_t vhost;           /* the creator's name for its virtual host */
    int64_t start_ns;         /* CLOCK_MONOTONIC */
    int64_t aborted_at_ns;    /* 0 while running */
    int reason;               /* ag_reason_e */
    int stopping;             /* the stop notice reached it */
    int response_done;        /* the handler's response is complete */
    int64_t ending_since_ns;  /* its cleanups began (the request ends); 0 before */
    int64_t cleanup_since_ns; /* the cleanup named below runs since; 0: none */
    char cleanup[96];
    char uri[128]; /* truncated copy */
    char handler[48];
    int nlocks; /* locks held, up to 4 listed */
    struct {
        char path[128];
        int exclusive;
        int64_t since_ns;
    } locks[4];
} ag_inflight_info;
typedef void ag_inflight_fn(const ag_inflight_info* info, void* ctx);

#ifdef __cplusplus
}
#endif

#endif /* ABORTGUARD_INFLIGHT_H */
