// RequestObserver: who a RequestState reports its life to beyond itself --
// in a child, its Lifecycle (the stop notice for requests that begin in a
// stopping child, the grace timer for aborted ones). The glue hands it to
// each state it creates; no process global wires the two together, so a
// state made without one (a unit test, a child whose lifecycle could not
// start) simply has nobody to tell.
//
// Thread contract: state_created() on the creating thread, once the state is
// in the in-flight table; arm_grace_timer() on the aborting thread, under
// the state's lock (it must not call back into the state); cancel_grace_timer()
// on the thread that ends the state, synchronous (the timer is not running
// and will not run when it returns, unless it is the caller). The observer
// outlives every state it observes.
#ifndef ABORTGUARD_REQUEST_OBSERVER_H
#define ABORTGUARD_REQUEST_OBSERVER_H

#include <cstdint>

namespace abortguard {

class RequestState;

class RequestObserver {
  public:
    // A state began; it may already have to be told of a stop.
    virtual void state_created(RequestState* state) noexcept = 0;
    // The state was aborted: a timer for the grace period, or 0 for none.
    virtual uint64_t arm_grace_timer(RequestState* state) noexcept = 0;
    virtual void cancel_grace_timer(uint64_t timer) noexcept = 0;

  protected:
    ~RequestObserver() = default;
};

}  // namespace abortguard

#endif  // ABORTGUARD_REQUEST_OBSERVER_H
