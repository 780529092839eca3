/* The shared memory that holds the server-wide counters (lib/agstats.h):
 * created by the parent in post_config, one slot per possible child process
 * (plus a spare one), kept across graceful restarts; each child attaches to
 * the slot of its scoreboard process entry in child_init.
 *
 * Thread contract: the hooks run single-threaded (httpd's parent or a
 * child's start); ag_shm_block() may be read from any thread afterwards. */
#ifndef AG_SHM_H
#define AG_SHM_H

#include "httpd.h"

/* The stats block every process counts into; NULL when it could not be
 * created (then nothing is counted and the status page says so). */
void* ag_shm_block(void);

/* Registers the post_config and child_init hooks. */
void ag_shm_register_hooks(apr_pool_t* p);

#endif /* AG_SHM_H */
