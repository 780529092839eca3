// Why a request was aborted.
//
// Thread contract: plain values and a pure function; usable from any thread.
#ifndef ABORTGUARD_REASON_H
#define ABORTGUARD_REASON_H

#include <cstdint>

namespace abortguard {

// Values are part of the C boundary (agcore.h mirrors them); append only.
enum class Reason : uint8_t {
    kNone = 0,        // not aborted
    kFin = 1,         // the client half-closed or closed its side (FIN)
    kRst = 2,         // the client reset the connection (RST)
    kError = 3,       // another socket error reported by the kernel
    kTimeout = 4,     // the kernel gave up on the peer (retransmission/keepalive)
    kWrite = 5,       // a write to the client failed (seen by httpd, not by us)
    kH2Reset = 6,     // the client reset this HTTP/2 stream (RST_STREAM) or its connection
    kServerStop = 7,  // the child is stopping and AbortGuardStopAborts counts that as an abort
};

// The stable, lower-case name logged and exported as ABORTGUARD_REASON.
const char* reason_name(Reason r) noexcept;

}  // namespace abortguard

#endif  // ABORTGUARD_REASON_H
