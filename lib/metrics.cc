#include "metrics.h"

#include <string>

#include "reason.h"

namespace abortguard {
namespace metrics {

namespace {

using prometheus::Type;
using prometheus::Writer;
using stats::Counter;
using stats::Latency;

#define AG_METRIC(suffix) "apache_abortguard_" suffix

// Plain counters: one sample each, no labels.
struct PlainCounter {
    Counter counter;
    const char* name;
    const char* help;
};

constexpr PlainCounter kPlainCounters[] = {
    {Counter::kRequestsMonitored, AG_METRIC("requests_monitored_total"),
     "Requests monitored for client aborts (AbortGuard On)."},
    {Counter::kBackendCuts, AG_METRIC("backend_cuts_total"),
     "Backend connections of proxied requests shut down because the client left."},
    {Counter::kCleanupsSlow, AG_METRIC("cleanups_slow_total"),
     "Request cleanups that took longer than AbortGuardCleanupWarn."},
    {Counter::kLocksReleasedByAbort, AG_METRIC("locks_released_total"),
     "Locks an aborted request still held, released by the module."},
    {Counter::kStopNotices, AG_METRIC("stop_notices_total"),
     "Stop notices delivered to in-flight requests of stopping children."},
    {Counter::kGraceActions, AG_METRIC("grace_actions_total"),
     "Handlers still running AbortGuardGracePeriod after their client left."},
    {Counter::kTerminations, AG_METRIC("terminations_total"),
     "Children that ended a hung handler (AbortGuardGraceAction terminate)."},
    {Counter::kTerminateRefused, AG_METRIC("terminations_refused_total"),
     "Terminations refused by the server-wide rate bound (AbortGuardTerminateInterval)."},
    {Counter::kRequestsCutAtExit, AG_METRIC("requests_cut_at_exit_total"),
     "Requests still running when a terminating child exited."},
    {Counter::kRequestsSkipped, AG_METRIC("requests_skipped_total"),
     "Requests never handed to their handler: the client had left (AbortGuardSkipAbandoned)."},
};

struct HistogramFamily {
    Latency latency;
    const char* name;
    const char* help;
};

constexpr HistogramFamily kHistograms[] = {
    {Latency::kDetection, AG_METRIC("detection_seconds"),
     "From the kernel reporting the client's close (a socket event: fin, rst, error, timeout) "
     "to the request being marked aborted."},
    {Latency::kRequestToAbort, AG_METRIC("request_to_abort_seconds"),
     "From the start of the request to the abort being detected."},
    {Latency::kWorkAfterAbort, AG_METRIC("work_after_abort_seconds"),
     "From the abort to the end of the request: how long the server kept working for a client "
     "that had left. The sum is the wasted handler time."},
};

void aborts(const stats::Snapshot& s, Writer& w) {
    const char* name = AG_METRIC("aborts_total");
    w.family(name, Type::kCounter, "Requests whose client went away, by how it went.");
    uint64_t other = 0;
    for (uint32_t r = 1; r < stats::kReasonSlots; ++r) {
        const std::string reason = reason_name(static_cast<Reason>(r));
        if (reason == "unknown" || r == stats::kReasonSlots - 1)
            other += s.aborts[r];
        else
            w.sample(name, {{"reason", reason}}, s.aborts[r]);
    }
    if (other != 0)  // reasons this build has no name for: none today
        w.sample(name, {{"reason", "other"}}, other);
}

void cleanups(const stats::Snapshot& s, Writer& w) {
    const char* name = AG_METRIC("cleanups_total");
    w.family(name, Type::kCounter,
             "Request cleanups run, by outcome: succeeded (returned) or failed (threw).");
    w.sample(name, {{"outcome", "succeeded"}}, s.get(Counter::kCleanupsSucceeded));
    w.sample(name, {{"outcome", "failed"}}, s.get(Counter::kCleanupsFailed));
}

void plain_counters(const stats::Snapshot& s, Writer& w) {
    for (const PlainCounter& c : kPlainCounters) {
        w.family(c.name, Type::kCounter, c.help);
        w.sample(c.name, {}, s.get(c.counter));
    }
}

void histograms(const stats::Snapshot& s, Writer& w) {
    for (const HistogramFamily& h : kHistograms) {
        w.family(h.name, Type::kHistogram, h.help);
        w.histogram(h.name, s.latency[static_cast<uint32_t>(h.latency)]);
    }
}

void gauge(Writer& w, const char* name, const char* help, uint64_t value) {
    w.family(name, Type::kGauge, help);
    w.sample(name, {}, value);
}

void block_info(const stats::Snapshot& s, Writer& w) {
    w.family(AG_METRIC("restarts_total"), Type::kCounter,
             "Restarts of httpd the counters survived (graceful or not).");
    w.sample(AG_METRIC("restarts_total"), {}, s.generations);
    gauge(w, AG_METRIC("start_time_seconds"),
          "Unix time when the counters started from zero (httpd's start).", s.created_unix);
    gauge(w, AG_METRIC("child_slots"), "Child process slots of the counters.", s.slots);
    gauge(w, AG_METRIC("child_slots_used"), "Child process slots a child has counted in.",
          s.slots_used);
}

void handlers(const stats::Snapshot& s, Writer& w) {
    const char* seconds = AG_METRIC("handler_work_after_abort_seconds_total");
    const char* requests = AG_METRIC("handler_aborted_requests_total");
    w.family(seconds, Type::kCounter,
             "Work done after the client left, by handler (32 names, then \"(other)\").");
    for (uint32_t i = 0; i < s.nhandlers; ++i)
        w.sample(seconds, {{"handler", s.handlers[i].name}},
                 prometheus::seconds(s.handlers[i].sum_us));
    w.family(requests, Type::kCounter,
             "Aborted requests that ended, by handler (32 names, then \"(other)\").");
    for (uint32_t i = 0; i < s.nhandlers; ++i)
        w.sample(requests, {{"handler", s.handlers[i].name}}, s.handlers[i].count);
}

}  // namespace

void write(const stats::Snapshot& s, Scope scope, prometheus::Sink& sink) {
    Writer w(sink);
    if (scope == Scope::kCountersOnly) {
        w.comment(
            "Set up outside the server's configuration files: server-wide counters only, "
            "no requests in flight, no handler names.");
    }
    plain_counters(s, w);
    aborts(s, w);
    cleanups(s, w);
    histograms(s, w);
    block_info(s, w);
    if (scope == Scope::kServer) {
        gauge(w, AG_METRIC("requests_in_flight"),
              "Requests the module keeps state for now, summed over all children.", s.in_flight);
        handlers(s, w);
    }
}

}  // namespace metrics
}  // namespace abortguard
