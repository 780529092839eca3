/* The status view (ag_status_view.h) as HTML, as mod_status-style
 * "Key: value" lines and as JSON. Every string that is not a literal of
 * this file goes through ap_escape_html2() or ag_json_escape(): URIs and
 * lock paths are attacker-controlled. */
#include "ag_status_view.h"

#include "apr_lib.h"
#include "apr_strings.h"
#include "http_protocol.h"
#include "util_time.h"

#include <string.h>

#include "abortguard_version.h"
#include "ag_json.h"

#define U64 "%" APR_UINT64_T_FMT
#define I64 "%" APR_INT64_T_FMT

/* -------------------------------------------------------------- labels */

static const char* const counter_labels[AG_STAT_COUNT] = {"Requests monitored",
                                                          "Cleanups run",
                                                          "Cleanups failed",
                                                          "Cleanups slow",
                                                          "Locks released by abort",
                                                          "Stop notices",
                                                          "Grace period actions",
                                                          "Terminations",
                                                          "Terminations refused by the rate bound",
                                                          "Requests cut at exit",
                                                          "Requests skipped",
                                                          "Backend connections cut",
                                                          "Cleanups succeeded"};

static const char* ag_status_counter_label(ag_stat_e which) {
    return (unsigned)which < AG_STAT_COUNT ? counter_labels[which] : "Unknown";
}

static const char* const latency_labels[AG_LATENCY_COUNT] = {
    "Detection latency", "Request to abort latency", "Work after abort"};

static const char* const latency_meanings[AG_LATENCY_COUNT] = {
    "from the kernel reporting the close to the request being marked aborted",
    "from the start of the request to the abort being detected",
    "from the abort to the end of the request: how long the server kept working for a client "
    "that had left"};

static const char* ag_status_latency_label(ag_latency_e which) {
    return (unsigned)which < AG_LATENCY_COUNT ? latency_labels[which] : "Unknown";
}

static const char* ag_status_latency_meaning(ag_latency_e which) {
    return (unsigned)which < AG_LATENCY_COUNT ? latency_meanings[which] : "unknown";
}

static const char* ag_status_reason_name(int reason) {
    const char* name;
    if (reason == AG_STATS_REASONS - 1) {
        return "other";
    }
    if (reason <= AG_REASON_NONE || reason >= AG_STATS_REASONS) {
        return NULL;
    }
    name = ag_reason_name((ag_reason_e)reason);
    return strcmp(name, "unknown") == 0 ? NULL : name;
}

/* ------------------------------------------------------------- helpers */

static const char* esc(request_rec* r, const char* s) {
    return ap_escape_html2(r->pool, s, 1);
}

/* A duration for humans; only digits and literal units, no escaping needed. */
static const char* human_us(apr_pool_t* p, uint64_t us) {
    if (us < 1000) {
        return apr_psprintf(p, U64 "&nbsp;&micro;s", us);
    }
    if (us < 1000000) {
        return apr_psprintf(p, "%.1f&nbsp;ms", (double)us / 1e3);
    }
    return apr_psprintf(p, "%.1f&nbsp;s", (double)us / 1e6);
}

static int64_t ms_since(const ag_status_view* v, int64_t then_ns) {
    return then_ns > 0 && v->now_ns > then_ns ? (v->now_ns - then_ns) / 1000000 : 0;
}

static const char* state_name(const ag_inflight_info* f) {
    return f->aborted_at_ns != 0 ? "aborted" : "running";
}

static const char* inflight_reason(const ag_inflight_info* f) {
    return f->aborted_at_ns != 0 ? ag_reason_name((ag_reason_e)f->reason) : NULL;
}

static int nlocks(const ag_inflight_info* f) {
    return f->nlocks < 0 ? 0 : f->nlocks > 4 ? 4 : f->nlocks;
}

/* The wasted-work table is server-wide and names other virtual hosts'
 * handlers: a page set up from .htaccess does not show it. */
static int show_handlers(const ag_status_view* v) {
    return v->have_counters && !v->vhost_only;
}

/* A handler name as an ?auto value: on one line, whatever it holds. */
static const char* auto_value(apr_pool_t* p, const char* name) {
    char* w = apr_pstrdup(p, name);
    char* c;
    for (c = w; *c != '\0'; ++c) {
        if (apr_iscntrl(*c)) {
            *c = '?';
        }
    }
    return w;
}

/* "h2-reset" -> "h2 reset": ?auto keys allow letters, digits and spaces. */
static const char* auto_word(apr_pool_t* p, const char* name) {
    char* w = apr_pstrdup(p, name);
    char* c;
    for (c = w; *c != '\0'; ++c) {
        if (!apr_isalnum(*c)) {
            *c = ' ';
        }
    }
    return w;
}

/* ---------------------------------------------------------------- ?auto */

static void auto_histogram(request_rec* r, const char* prefix, ag_latency_e l,
                           const ag_stats_histogram* h, int with_buckets) {
    const char* name = ag_status_latency_label(l);
    uint64_t below = 0;
    unsigned b;

    ap_rprintf(r, "%s%s count: " U64 "\n", prefix, name, h->count);
    ap_rprintf(r, "%s%s sum us: " U64 "\n", prefix, name, h->sum_us);
    ap_rprintf(r, "%s%s max us: " U64 "\n", prefix, name, h->max_us);
    ap_rprintf(r, "%s%s p50 us: " U64 "\n", prefix, name, h->p50_us);
    ap_rprintf(r, "%s%s p99 us: " U64 "\n", prefix, name, h->p99_us);
    /* Cumulative, as Prometheus' "le" buckets: samples below each bound. */
    for (b = 0; with_buckets && b + 1 < AG_STATS_BUCKETS; ++b) {
        below += h->buckets[b];
        ap_rprintf(r, "%s%s below " U64 " us: " U64 "\n", prefix, name, ag_stats_bucket_upper_us(b),
                   below);
    }
}

/* "Wasted work handler 1: NAME", its requests, sum and max, largest first;
 * and the requests in flight of every child (server-wide too). */
static void auto_handlers(request_rec* r, const ag_status_view* v, const char* prefix) {
    const ag_stats_snapshot* s = &v->stats;
    unsigned i;
    if (!show_handlers(v)) {
        return;
    }
    ap_rprintf(r, "%sIn flight all children: " U64 "\n", prefix, s->in_flight);
    ap_rprintf(r, "%sWasted work handlers: %u\n", prefix, s->nhandlers);
    for (i = 0; i < s->nhandlers; ++i) {
        const ag_stats_handler* h = &s->handlers[i];
        ap_rprintf(r, "%sWasted work handler %u: %s\n", prefix, i + 1,
                   auto_value(r->pool, h->name));
        ap_rprintf(r, "%sWasted work handler %u requests: " U64 "\n", prefix, i + 1, h->count);
        ap_rprintf(r, "%sWasted work handler %u sum us: " U64 "\n", prefix, i + 1, h->sum_us);
        ap_rprintf(r, "%sWasted work handler %u max us: " U64 "\n", prefix, i + 1, h->max_us);
    }
}

void ag_status_render_auto(request_rec* r, const ag_status_view* v, const char* prefix,
                           int with_buckets) {
    const ag_stats_snapshot* s = &v->stats;
    int i;

    if (with_buckets) { /* our own page; mod_status prints these itself */
        ap_rprintf(r, "%sServer pid: %d\n", prefix, (int)v->pid);
        ap_rprintf(r, "%sGeneration: %d\n", prefix, v->generation);
    }
    ap_rprintf(r, "%sCounters: %d\n", prefix, v->have_counters);
    ap_rprintf(r, "%sCounting since: " U64 "\n", prefix, s->created_unix);
    ap_rprintf(r, "%sRestarts: " U64 "\n", prefix, s->generations);
    ap_rprintf(r, "%sChild slots: %u\n", prefix, s->slots);
    ap_rprintf(r, "%sChild slots used: %u\n", prefix, s->slots_used);
    ap_rprintf(r, "%s%s: " U64 "\n", prefix, ag_status_counter_label(AG_STAT_REQUESTS_MONITORED),
               s->counters[AG_STAT_REQUESTS_MONITORED]);
    ap_rprintf(r, "%sAborts: " U64 "\n", prefix, s->aborts_total);
    for (i = 0; i < AG_STATS_REASONS; ++i) {
        const char* name = ag_status_reason_name(i);
        if (name != NULL) {
            ap_rprintf(r, "%sAborts %s: " U64 "\n", prefix, auto_word(r->pool, name), s->aborts[i]);
        }
    }
    for (i = AG_STAT_REQUESTS_MONITORED + 1; i < AG_STAT_COUNT; ++i) {
        ap_rprintf(r, "%s%s: " U64 "\n", prefix, ag_status_counter_label((ag_stat_e)i),
                   s->counters[i]);
    }
    for (i = 0; i < AG_LATENCY_COUNT; ++i) {
        auto_histogram(r, prefix, (ag_latency_e)i, &s->latency[i], with_buckets);
    }
    ap_rprintf(r, "%sIn flight: %d\n", prefix, v->inflight_total);
    auto_handlers(r, v, prefix);
}

/* ----------------------------------------------------------------- JSON */

static void json_histogram(request_rec* r, ag_latency_e l, const ag_stats_histogram* h) {
    unsigned b;
    ap_rprintf(r,
               "\"%s\":{\"unit\":\"us\",\"count\":" U64 ",\"sum\":" U64 ",\"max\":" U64
               ",\"p50\":" U64 ",\"p99\":" U64 ",\"buckets\":[",
               ag_latency_name(l), h->count, h->sum_us, h->max_us, h->p50_us, h->p99_us);
    for (b = 0; b < AG_STATS_BUCKETS; ++b) {
        uint64_t upper = ag_stats_bucket_upper_us(b);
        if (upper != 0) {
            ap_rprintf(r, "%s{\"below\":" U64 ",\"count\":" U64 "}", b ? "," : "", upper,
                       h->buckets[b]);
        } else {
            ap_rprintf(r, ",{\"below\":null,\"count\":" U64 "}", h->buckets[b]);
        }
    }
    ap_rputs("]}", r);
}

static void json_locks(request_rec* r, const ag_status_view* v, const ag_inflight_info* f) {
    int i;
    ap_rputs("[", r);
    for (i = 0; i < nlocks(f); ++i) {
        ap_rprintf(r, "%s{\"path\":\"%s\",\"exclusive\":%s,\"held_ms\":" I64 "}", i ? "," : "",
                   ag_json_escape(r->pool, f->locks[i].path),
                   f->locks[i].exclusive ? "true" : "false", ms_since(v, f->locks[i].since_ns));
    }
    ap_rputs("]", r);
}

static void json_inflight(request_rec* r, const ag_status_view* v) {
    int i;
    ap_rprintf(r,
               "\"inflight\":{\"available\":true,\"pid\":%d,\"scope\":\"%s\",\"total\":%d,"
               "\"shown\":%d,\"requests\":[",
               (int)v->pid, v->vhost_only ? "virtual-host" : "server", v->inflight_total,
               v->flight->nelts);
    for (i = 0; i < v->flight->nelts; ++i) {
        const ag_inflight_info* f = &APR_ARRAY_IDX(v->flight, i, ag_inflight_info);
        const char* reason = inflight_reason(f);
        ap_rprintf(r,
                   "%s{\"age_ms\":" I64
                   ",\"state\":\"%s\",\"reason\":%s%s%s,\"uri\":\"%s\",\"handler\":\"%s\","
                   "\"locks\":",
                   i ? "," : "", ms_since(v, f->start_ns), state_name(f), reason ? "\"" : "",
                   reason ? ag_json_escape(r->pool, reason) : "null", reason ? "\"" : "",
                   ag_json_escape(r->pool, f->uri), ag_json_escape(r->pool, f->handler));
        json_locks(r, v, f);
        ap_rputs("}", r);
    }
    ap_rputs("]}", r);
}

/* Shown only to a page the configuration files set up ("shown": false and
 * no entries otherwise); largest sum first. */
static void json_handlers(request_rec* r, const ag_status_view* v) {
    const ag_stats_snapshot* s = &v->stats;
    unsigned i;
    if (!show_handlers(v)) {
        ap_rputs(
            "\"in_flight_all_children\":null,\"wasted_by_handler\":{\"shown\":false,"
            "\"handlers\":[]},",
            r);
        return;
    }
    ap_rprintf(r,
               "\"in_flight_all_children\":" U64
               ",\"wasted_by_handler\":{\"shown\":true,"
               "\"handlers\":[",
               s->in_flight);
    for (i = 0; i < s->nhandlers; ++i) {
        const ag_stats_handler* h = &s->handlers[i];
        ap_rprintf(r,
                   "%s{\"handler\":\"%s\",\"other\":%s,\"requests\":" U64 ",\"sum_us\":" U64
                   ",\"max_us\":" U64 "}",
                   i ? "," : "", ag_json_escape(r->pool, h->name), h->other ? "true" : "false",
                   h->count, h->sum_us, h->max_us);
    }
    ap_rputs("]},", r);
}

void ag_status_render_json(request_rec* r, const ag_status_view* v) {
    const ag_stats_snapshot* s = &v->stats;
    int i;

    ap_rprintf(r,
               "{\"module\":\"mod_abortguard\",\"version\":\"%s\",\"pid\":%d,\"generation\":%d,"
               "\"counters_available\":%s,\"counting_since\":" U64 ",\"restarts\":" U64
               ",\"child_slots\":%u,\"child_slots_used\":%u,",
               ABORTGUARD_VERSION, (int)v->pid, v->generation, v->have_counters ? "true" : "false",
               s->created_unix, s->generations, s->slots, s->slots_used);
    for (i = 0; i < AG_STAT_COUNT; ++i) {
        ap_rprintf(r, "\"%s\":" U64 ",", ag_stat_name((ag_stat_e)i), s->counters[i]);
    }
    ap_rprintf(r, "\"aborts\":{\"total\":" U64, s->aborts_total);
    for (i = 0; i < AG_STATS_REASONS; ++i) {
        const char* name = ag_status_reason_name(i);
        if (name != NULL) {
            ap_rprintf(r, ",\"%s\":" U64, ag_json_escape(r->pool, name), s->aborts[i]);
        }
    }
    ap_rputs("},\"latency\":{", r);
    for (i = 0; i < AG_LATENCY_COUNT; ++i) {
        ap_rputs(i ? "," : "", r);
        json_histogram(r, (ag_latency_e)i, &s->latency[i]);
    }
    ap_rputs("},", r);
    json_handlers(r, v);
    json_inflight(r, v);
    ap_rputs("}\n", r);
}

/* ----------------------------------------------------------------- HTML */

static const char* const html_head =
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    "<title>mod_abortguard status</title>\n<style>\n"
    "body{font-family:sans-serif;margin:1em 2em}\n"
    "table{border-collapse:collapse;margin-bottom:1em}\n"
    "th,td{border:1px solid #bbb;padding:2px 8px;text-align:right}\n"
    "th.l,td.l{text-align:left}\n"
    "span.bar{display:inline-block;height:0.8em;background:#3a7}\n"
    "</style></head><body>\n<h1>mod_abortguard status</h1>\n";

static void html_row(request_rec* r, const char* label, uint64_t value) {
    ap_rprintf(r, "<tr><td class=\"l\">%s</td><td>" U64 "</td></tr>\n", esc(r, label), value);
}

static void html_intro(request_rec* r, const ag_status_view* v) {
    const ag_stats_snapshot* s = &v->stats;
    ap_rprintf(r, "<p>Served by child %d (generation %d) at %s.</p>\n", (int)v->pid, v->generation,
               esc(r, ap_ht_time(r->pool, v->now, "%Y-%m-%d %H:%M:%S %Z", 0)));
    if (!v->have_counters) {
        ap_rputs(
            "<p><strong>Counters not available</strong>: the shared memory could not be "
            "created (see the error log).</p>\n",
            r);
        return;
    }
    ap_rprintf(r,
               "<p>Counting since %s, over %" APR_UINT64_T_FMT
               " restart(s); %u of %u child slots used.</p>\n",
               esc(r, ap_ht_time(r->pool, apr_time_from_sec((apr_time_t)s->created_unix),
                                 "%Y-%m-%d %H:%M:%S %Z", 0)),
               s->generations, s->slots_used, s->slots);
}

static void html_totals(request_rec* r, const ag_stats_snapshot* s) {
    int i;
    ap_rputs("<h2>Totals</h2>\n<table>\n", r);
    html_row(r, ag_status_counter_label(AG_STAT_REQUESTS_MONITORED),
             s->counters[AG_STAT_REQUESTS_MONITORED]);
    html_row(r, "Aborts", s->aborts_total);
    for (i = AG_STAT_REQUESTS_MONITORED + 1; i < AG_STAT_COUNT; ++i) {
        html_row(r, ag_status_counter_label((ag_stat_e)i), s->counters[i]);
    }
    ap_rputs("</table>\n", r);
}

static void html_reasons(request_rec* r, const ag_stats_snapshot* s) {
    int i;
    ap_rputs(
        "<h2>Aborts by reason</h2>\n<table>\n"
        "<tr><th class=\"l\">Reason</th><th>Aborts</th><th>Share</th></tr>\n",
        r);
    for (i = 0; i < AG_STATS_REASONS; ++i) {
        const char* name = ag_status_reason_name(i);
        if (name == NULL) {
            continue;
        }
        ap_rprintf(r, "<tr><td class=\"l\">%s</td><td>" U64 "</td><td>%.1f%%</td></tr>\n",
                   esc(r, name), s->aborts[i],
                   s->aborts_total ? 100.0 * (double)s->aborts[i] / (double)s->aborts_total : 0.0);
    }
    ap_rputs("</table>\n", r);
}

/* "512 us - 1.0 ms" for bucket b. */
static const char* bucket_range(apr_pool_t* p, unsigned b) {
    uint64_t upper = ag_stats_bucket_upper_us(b);
    if (b == 0) {
        return apr_pstrcat(p, "below ", human_us(p, upper), NULL);
    }
    if (upper == 0) {
        return apr_pstrcat(p, human_us(p, ag_stats_bucket_upper_us(b - 1)), " and more", NULL);
    }
    return apr_pstrcat(p, human_us(p, ag_stats_bucket_upper_us(b - 1)), " &ndash; ",
                       human_us(p, upper), NULL);
}

static void html_buckets(request_rec* r, const ag_stats_histogram* h) {
    unsigned first = AG_STATS_BUCKETS, last = 0, b;
    uint64_t peak = 0;
    for (b = 0; b < AG_STATS_BUCKETS; ++b) {
        if (h->buckets[b] != 0) {
            first = first < b ? first : b;
            last = b;
            peak = peak > h->buckets[b] ? peak : h->buckets[b];
        }
    }
    ap_rputs("<table>\n<tr><th class=\"l\">Latency</th><th>Count</th><th class=\"l\"></th></tr>\n",
             r);
    for (b = first; b <= last && b < AG_STATS_BUCKETS; ++b) {
        ap_rprintf(r,
                   "<tr><td class=\"l\">%s</td><td>" U64
                   "</td><td class=\"l\"><span class=\"bar\" style=\"width:%dpx\"></span></td>"
                   "</tr>\n",
                   bucket_range(r->pool, b), h->buckets[b],
                   (int)(peak ? 1 + 299 * h->buckets[b] / peak : 0));
    }
    ap_rputs("</table>\n", r);
}

static void html_histogram(request_rec* r, ag_latency_e l, const ag_stats_histogram* h) {
    ap_rprintf(r, "<h3>%s</h3>\n<p>%s.</p>\n", esc(r, ag_status_latency_label(l)),
               esc(r, ag_status_latency_meaning(l)));
    if (h->count == 0) {
        ap_rputs("<p>No samples yet.</p>\n", r);
        return;
    }
    ap_rprintf(r,
               "<p>" U64
               " samples: median &le; %s, 99th percentile &le; %s, maximum %s, "
               "mean %s.</p>\n",
               h->count, human_us(r->pool, h->p50_us), human_us(r->pool, h->p99_us),
               human_us(r->pool, h->max_us), human_us(r->pool, h->sum_us / h->count));
    html_buckets(r, h);
}

static void html_handler_rows(request_rec* r, const ag_stats_snapshot* s) {
    unsigned i;
    ap_rputs(
        "<table>\n<tr><th class=\"l\">Handler</th><th>Aborted requests</th><th>Wasted</th>"
        "<th>Mean</th><th>Maximum</th></tr>\n",
        r);
    for (i = 0; i < s->nhandlers; ++i) {
        const ag_stats_handler* h = &s->handlers[i];
        ap_rprintf(
            r,
            "<tr><td class=\"l\">%s</td><td>" U64 "</td><td>%s</td><td>%s</td><td>%s</td></tr>\n",
            esc(r, h->name), h->count, human_us(r->pool, h->sum_us),
            human_us(r->pool, h->count ? h->sum_us / h->count : 0), human_us(r->pool, h->max_us));
    }
    ap_rputs("</table>\n", r);
}

/* Which applications keep working for clients that left: the top of the
 * table is where the wasted time goes. */
static void html_handlers(request_rec* r, const ag_status_view* v) {
    const ag_stats_snapshot* s = &v->stats;
    ap_rputs("<h2>Wasted work by handler</h2>\n", r);
    if (!show_handlers(v)) {
        ap_rputs(
            "<p>Not shown: the page was set up outside the server's configuration files "
            "(e.g. in .htaccess), and the table names other virtual hosts' handlers.</p>\n",
            r);
        return;
    }
    ap_rprintf(r,
               "<p>Work done after the client left, by handler, largest first: %s in " U64
               " aborted request(s) in all. The first 32 handler names get a row each, later "
               "ones count as (other); (none) is a request without a handler name.</p>\n",
               human_us(r->pool, s->latency[AG_LATENCY_WORK_AFTER_ABORT].sum_us),
               s->latency[AG_LATENCY_WORK_AFTER_ABORT].count);
    if (s->nhandlers == 0) {
        ap_rputs("<p>None yet.</p>\n", r);
        return;
    }
    html_handler_rows(r, s);
}

static const char* html_locks(request_rec* r, const ag_status_view* v, const ag_inflight_info* f) {
    const char* out = "";
    int i;
    for (i = 0; i < nlocks(f); ++i) {
        out = apr_psprintf(r->pool, "%s%s%s (%s, " I64 " ms)", out, i ? "<br>" : "",
                           esc(r, f->locks[i].path), f->locks[i].exclusive ? "exclusive" : "shared",
                           ms_since(v, f->locks[i].since_ns));
    }
    if (f->nlocks > 4) {
        out = apr_psprintf(r->pool, "%s<br>and %d more", out, f->nlocks - 4);
    }
    return out;
}

static void html_inflight(request_rec* r, const ag_status_view* v) {
    int i;
    ap_rprintf(r, "<h2>In-flight monitored requests of child %d</h2>\n", (int)v->pid);
    if (show_handlers(v)) {
        ap_rprintf(r, "<p>In flight in all children: " U64 ".</p>\n", v->stats.in_flight);
    }
    if (v->vhost_only) {
        ap_rputs(
            "<p>Only this virtual host's requests: the page was set up outside the "
            "server's configuration files (e.g. in .htaccess).</p>\n",
            r);
    }
    if (v->inflight_total > v->flight->nelts) {
        ap_rprintf(r, "<p>The %d oldest of %d.</p>\n", v->flight->nelts, v->inflight_total);
    }
    ap_rputs(
        "<table>\n<tr><th>Age</th><th class=\"l\">State</th><th class=\"l\">Handler</th>"
        "<th class=\"l\">URI</th><th class=\"l\">Locks held</th></tr>\n",
        r);
    for (i = 0; i < v->flight->nelts; ++i) {
        const ag_inflight_info* f = &APR_ARRAY_IDX(v->flight, i, ag_inflight_info);
        const char* reason = inflight_reason(f);
        ap_rprintf(r,
                   "<tr><td>" I64
                   " ms</td><td class=\"l\">%s%s%s%s</td><td class=\"l\">%s</td>"
                   "<td class=\"l\">%s</td><td class=\"l\">%s</td></tr>\n",
                   ms_since(v, f->start_ns), state_name(f), reason ? " (" : "",
                   reason ? esc(r, reason) : "", reason ? ")" : "", esc(r, f->handler),
                   esc(r, f->uri), html_locks(r, v, f));
    }
    ap_rputs("</table>\n", r);
}

void ag_status_render_html(request_rec* r, const ag_status_view* v) {
    int i;
    ap_rputs(html_head, r);
    html_intro(r, v);
    html_totals(r, &v->stats);
    html_reasons(r, &v->stats);
    ap_rputs("<h2>Latency and wasted work</h2>\n", r);
    for (i = 0; i < AG_LATENCY_COUNT; ++i) {
        html_histogram(r, (ag_latency_e)i, &v->stats.latency[i]);
    }
    html_handlers(r, v);
    html_inflight(r, v);
    ap_rputs("</body></html>\n", r);
}

/* ------------------------------------------------- mod_status's section */

static void section_latency(request_rec* r, ag_latency_e l, const ag_stats_histogram* h) {
    ap_rprintf(r, "<dt>%s: ", esc(r, ag_status_latency_label(l)));
    if (h->count == 0) {
        ap_rputs("no samples</dt>\n", r);
        return;
    }
    ap_rprintf(r, "median &le; %s, 99th percentile &le; %s, maximum %s (" U64 " samples)</dt>\n",
               human_us(r->pool, h->p50_us), human_us(r->pool, h->p99_us),
               human_us(r->pool, h->max_us), h->count);
}

/* The three handlers that wasted the most. */
static void section_handlers(request_rec* r, const ag_status_view* v) {
    const ag_stats_snapshot* s = &v->stats;
    unsigned i;
    if (!show_handlers(v) || s->nhandlers == 0) {
        return;
    }
    ap_rputs("<dt>Most work after abort:", r);
    for (i = 0; i < s->nhandlers && i < 3; ++i) {
        ap_rprintf(r, "%s %s %s (" U64 " requests)", i ? "," : "", esc(r, s->handlers[i].name),
                   human_us(r->pool, s->handlers[i].sum_us), s->handlers[i].count);
    }
    ap_rputs("</dt>\n", r);
}

void ag_status_render_section(request_rec* r, const ag_status_view* v) {
    const ag_stats_snapshot* s = &v->stats;
    int i;

    ap_rputs("<hr />\n<h2>mod_abortguard</h2>\n<dl>\n", r);
    ap_rprintf(r, "<dt>Requests monitored: " U64 "</dt>\n<dt>Aborts: " U64,
               s->counters[AG_STAT_REQUESTS_MONITORED], s->aborts_total);
    for (i = 0; i < AG_STATS_REASONS; ++i) {
        const char* name = ag_status_reason_name(i);
        if (name != NULL && s->aborts[i] != 0) {
            ap_rprintf(r, ", %s " U64, esc(r, name), s->aborts[i]);
        }
    }
    ap_rputs("</dt>\n", r);
    for (i = AG_STAT_REQUESTS_MONITORED + 1; i < AG_STAT_COUNT; ++i) {
        ap_rprintf(r, "<dt>%s: " U64 "</dt>\n", esc(r, ag_status_counter_label((ag_stat_e)i)),
                   s->counters[i]);
    }
    for (i = 0; i < AG_LATENCY_COUNT; ++i) {
        section_latency(r, (ag_latency_e)i, &s->latency[i]);
    }
    section_handlers(r, v);
    ap_rputs("</dl>\n", r);
}
