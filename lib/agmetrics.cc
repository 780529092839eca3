// extern "C" wrapper of metrics.h: the page is formatted into a string
// first, so that running out of memory half-way sends nothing rather than
// half a page (which a scraper would take for a complete one).
#include "agmetrics.h"

#include <errno.h>

#include <new>

#include "metrics.h"

namespace st = abortguard::stats;
namespace ms = abortguard::metrics;

extern "C" {

int ag_metrics_render(const void* mem, unsigned flags, ag_metrics_sink_fn* sink,
                      void* ctx) noexcept {
    if (mem == nullptr)
        return ENOENT;
    try {
        const st::Snapshot s = static_cast<const st::Block*>(mem)->snapshot();
        abortguard::prometheus::StringSink text;
        ms::write(s, flags == AG_METRICS_SERVER ? ms::Scope::kServer : ms::Scope::kCountersOnly,
                  text);
        sink(text.text().data(), text.text().size(), ctx);
        return 0;
    } catch (...) {
        return ENOMEM;
    }
}

}  // extern "C"
