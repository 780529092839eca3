// UpstreamCut: tells a request's upstream (the backend a proxy talks to)
// that the client left, by shutting down the upstream socket the moment the
// request's token is aborted.
//
// A request arms it with the backend socket while it waits for or streams
// the backend's response, and disarms it before that socket is closed or
// handed to another request (a pooled backend connection). The cut is
// shutdown(SHUT_RDWR): the backend receives a FIN at once, and a proxy
// blocked reading the backend wakes up with end-of-file instead of waiting
// for a response nobody will read.
//
// Safety property (the same as Monitor::unwatch): once disarm() returns, the
// socket is not being touched and never will be by this object, so the
// caller may close the descriptor or give the connection to another request.
// The cut runs under the object's lock, which disarm() takes. Each socket
// shut down counts once in the shared stats (stats::Counter::kBackendCuts).
//
// Thread contract: arm() and disarm() on the request's thread. The cut runs
// on whichever thread aborts the token (usually the monitor thread), after
// calling `before(arg)` under the lock: `before` must be short, must not
// block and must not call arm()/disarm(). The token must outlive this object
// or never be aborted after its destruction (RequestState owns both).
#ifndef ABORTGUARD_UPSTREAM_CUT_H
#define ABORTGUARD_UPSTREAM_CUT_H

#include <cstdint>
#include <mutex>

#include "status.h"
#include "token.h"

namespace abortguard {

class UpstreamCut {
  public:
    using BeforeFn = void (*)(void* arg);
    // Names one arm(); 0 is never returned by arm().
    using ArmId = uint64_t;

    explicit UpstreamCut(Token& token) noexcept : token_(token) {}
    UpstreamCut(const UpstreamCut&) = delete;
    UpstreamCut& operator=(const UpstreamCut&) = delete;

    // Shuts `fd` down when the token is aborted, or at once if it already
    // is. One socket at a time: arming again replaces the previous socket
    // (which is then no longer touched). `fd` must stay open until the
    // matching disarm() returns. ENOMEM is the only failure.
    Status arm(int fd, BeforeFn before, void* arg, ArmId* id);

    // Synchronous (see above). Ignores an id that is no longer the armed
    // one. Returns true if the socket armed under `id` was shut down.
    bool disarm(ArmId id) noexcept;

  private:
    void cut() noexcept;

    Token& token_;
    std::mutex mu_;
    bool registered_ = false;  // request thread only
    ArmId armed_ = 0;          // guarded by mu_; 0: nothing armed
    ArmId next_ = 1;           // guarded by mu_
    int fd_ = -1;              // guarded by mu_
    BeforeFn before_ = nullptr;
    void* arg_ = nullptr;
    bool done_ = false;  // guarded by mu_: the armed socket was shut down
};

}  // namespace abortguard

#endif  // ABORTGUARD_UPSTREAM_CUT_H
