/* What every test module (C and C++) and the bench module need from a
 * request, written once: its query arguments, parsed by httpd itself
 * (ap_args_to_table, which also %-decodes), so no module carries a
 * hand-written parser that could drift; and the monotonic clock the
 * modules' timings use.
 *
 * Thread contract: the query helpers on the request's thread (they
 * allocate from r->pool); the clock from any thread. */
#ifndef AG_TEST_MODULE_HELPERS_H
#define AG_TEST_MODULE_HELPERS_H

#include <time.h>

#include "apr_strings.h"
#include "httpd.h"
#include "util_script.h"

/* The value of `name` in r->args, or `dflt` when it is absent. */
static inline const char* module_arg(request_rec* r, const char* name, const char* dflt) {
    apr_table_t* args;
    const char* value;
    ap_args_to_table(r, &args);
    value = apr_table_get(args, name);
    return value != NULL ? value : dflt;
}

static inline apr_int64_t module_arg_int(request_rec* r, const char* name, apr_int64_t dflt) {
    const char* value = module_arg(r, name, NULL);
    return value != NULL ? apr_atoi64(value) : dflt;
}

/* CLOCK_MONOTONIC in microseconds. */
static inline apr_int64_t module_monotonic_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (apr_int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

#endif /* AG_TEST_MODULE_HELPERS_H */
