// A Node.js backend of a test (tests/integration/backends/*.js): started
// once per suite on a port it picks and writes to a file, with an events
// log where the script notes "<what> <tag> <CLOCK_MONOTONIC us>" lines
// (when it saw a request start, its client close, ...).
#pragma once

#include <map>
#include <optional>
#include <string>

#include "child_process.h"
#include "harness.h"

namespace agtest {

class NodeBackend {
  public:
    // Runs `node backends/<script>` with its port file and events log in
    // AG_TEST_WORKDIR/<dir>; port() is 0 if it did not come up in 10 s.
    NodeBackend(const std::string& script, const std::string& dir);

    int port() const { return port_; }
    const std::string& events_path() const { return events_; }
    // What node printed (why it did not start).
    std::string output();

  private:
    ChildProcess node_;
    int port_ = 0;
    std::string events_;
};

// A test's view of a backend's events log: what was noted since start().
class BackendEvents {
  public:
    void start(const NodeBackend& backend) { cursor_.start(backend.events_path()); }
    // When the backend noted `what` for `tag`, waiting up to `timeout`.
    std::optional<int64_t> await(const std::string& what, const std::string& tag, Millis timeout);
    // Whether it has noted it so far.
    std::optional<int64_t> seen(const std::string& what, const std::string& tag);

  private:
    LogCursor cursor_;
    std::map<std::string, int64_t> noted_;
};

}  // namespace agtest
