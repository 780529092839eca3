/* Shared memory for the counters. The segment lives in the process pool
 * (which outlives every configuration generation) and is found again there
 * on each restart through pool userdata, so counts survive graceful
 * restarts and no segment is leaked per restart. Anonymous shared memory:
 * the children inherit the mapping from the parent, no file to clean up. */
#include "ag_shm.h"

#include "apr_shm.h"
#include "apr_time.h"
#include "ap_mpm.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "scoreboard.h"

#include <unistd.h>

#include "agstats.h"
#include "ag_private.h"

/* The process pool's userdata key of the segment. */
#define AG_SHM_KEY "mod_abortguard:stats-shm"
/* How long a starting child waits for the parent to record its pid in the
 * scoreboard (the parent writes it right after fork returns). */
#define AG_SLOT_WAIT_MS 200
/* The block's alignment (a cache line: see lib/stats.h). */
#define AG_SHM_ALIGN 64

/* Set in post_config before the children fork; read-only afterwards. */
static void* block;

void* ag_shm_block(void) {
    return block;
}

/* Slots for every child the MPM can ever run, plus one shared spare for a
 * child whose scoreboard entry cannot be found. */
static unsigned wanted_slots(void) {
    int limit = 0;
    if (ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &limit) != APR_SUCCESS || limit < 1) {
        limit = 1;
    }
    return (unsigned)limit + 1;
}

/* The block's place in the segment: APR puts its own header first, and the
 * slots want whole cache lines. */
static void* aligned_base(apr_shm_t* shm, apr_size_t* len) {
    apr_uintptr_t base = (apr_uintptr_t)apr_shm_baseaddr_get(shm);
    apr_uintptr_t aligned = (base + AG_SHM_ALIGN - 1) & ~(apr_uintptr_t)(AG_SHM_ALIGN - 1);
    *len = apr_shm_size_get(shm) - (apr_size_t)(aligned - base);
    return (void*)aligned;
}

/* The segment of an earlier generation, if its layout still fits. */
static void* reuse(apr_shm_t* shm, unsigned nslots) {
    apr_size_t len;
    void* mem = aligned_base(shm, &len);
    return ag_stats_block_open(mem, len, nslots) == 0 ? mem : NULL;
}

static void* create(apr_pool_t* pproc, server_rec* s, unsigned nslots) {
    apr_size_t len = ag_stats_block_size(nslots);
    apr_shm_t* shm = NULL;
    apr_status_t rv = apr_shm_create(&shm, len + AG_SHM_ALIGN, NULL, pproc);
    void* mem;
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                     "AG0701: cannot create %" APR_SIZE_T_FMT
                     " bytes of shared memory for the counters; the status page will "
                     "show none",
                     len);
        return NULL;
    }
    mem = aligned_base(shm, &len);
    if (ag_stats_block_init(mem, len, nslots, (uint64_t)apr_time_sec(apr_time_now())) != 0) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     "AG0704: cannot lay out the counters in shared memory; the status page "
                     "will show none");
        apr_shm_destroy(shm);
        return NULL;
    }
    /* setn: the key is a literal, valid as long as the process. No cleanup:
     * a function of this DSO must not outlive its unloading at a restart. */
    apr_pool_userdata_setn(shm, AG_SHM_KEY, NULL, pproc);
    return mem;
}

static int post_config(apr_pool_t* pconf, apr_pool_t* plog, apr_pool_t* ptemp, server_rec* s) {
    apr_pool_t* pproc = s->process->pool;
    unsigned nslots = wanted_slots();
    void* old = NULL;

    /* The first of the two start-up passes only checks the configuration. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return OK;
    }
    apr_pool_userdata_get(&old, AG_SHM_KEY, pproc);
    block = old != NULL ? reuse(old, nslots) : NULL;
    if (block == NULL) {
        if (old != NULL) {
            /* Another layout (an upgraded module) or a larger ServerLimit:
             * start afresh. Old children keep their own mapping. */
            ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s,
                         "AG0702: the counters' shared memory does not fit this "
                         "configuration; counting starts again from zero");
        }
        block = create(pproc, s, nslots);
    }
    return OK;
}

/* This child's process slot in the scoreboard, or -1. */
static int scoreboard_slot(void) {
    apr_proc_t me;
    int slot, waited;

    me.pid = getpid();
    for (waited = 0; (slot = ap_find_child_by_pid(&me)) < 0 && waited < AG_SLOT_WAIT_MS; ++waited) {
        apr_sleep(apr_time_from_msec(1));
    }
    return slot;
}

/* The child's pool goes at its exit, after its requests' pools (which are
 * its subpools): what is still counted in flight then is what an exit tore
 * down without ending it. Async-signal-safe (prefork exits from a signal
 * handler). */
static apr_status_t child_exit(void* data) {
    (void)data;
    ag_stats_child_exit();
    return APR_SUCCESS;
}

static void child_init(apr_pool_t* pchild, server_rec* s) {
    unsigned nslots = ag_stats_block_slots(block);
    int slot;

    if (block == NULL || nslots == 0) {
        return;
    }
    slot = scoreboard_slot();
    if (slot < 0 || (unsigned)slot >= nslots - 1) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s,
                     "AG0703: no scoreboard entry for this child; it counts in the spare slot");
        slot = (int)nslots - 1;
    }
    if (ag_stats_attach(block, (unsigned)slot, (int64_t)getpid()) == 0) {
        apr_pool_cleanup_register(pchild, NULL, child_exit, apr_pool_cleanup_null);
    }
}

void ag_shm_register_hooks(apr_pool_t* p) {
    (void)p;
    ap_hook_post_config(post_config, NULL, NULL, APR_HOOK_MIDDLE);
    /* First, so that requests and the monitor count from the start. */
    ap_hook_child_init(child_init, NULL, NULL, APR_HOOK_FIRST);
}
