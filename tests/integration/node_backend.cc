#include "node_backend.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

namespace agtest {

NodeBackend::NodeBackend(const std::string& script, const std::string& dir_name) {
    const std::string dir = std::string(AG_TEST_WORKDIR) + "/" + dir_name;
    ::mkdir(dir.c_str(), 0755);
    const std::string port_file = dir + "/port";
    events_ = dir + "/events.log";
    ::unlink(port_file.c_str());
    std::ofstream(events_, std::ios::trunc).close();
    if (!node_.start({"node", std::string(AG_SRCDIR) + "/tests/integration/backends/" + script,
                      port_file, events_}))
        return;
    for (Deadline d(Millis(10000)); !d.expired() && port_ == 0;) {
        std::ifstream in(port_file);
        if (!(in >> port_))
            std::this_thread::sleep_for(Millis(5));  // polling for readiness
    }
}

std::string NodeBackend::output() {
    node_.read_until("\n", Millis(100));
    return node_.output();
}

std::optional<int64_t> BackendEvents::await(const std::string& what, const std::string& tag,
                                            Millis timeout) {
    for (Deadline d(timeout);; std::this_thread::sleep_for(Millis(1))) {
        if (auto us = seen(what, tag))
            return us;
        if (d.expired())
            return std::nullopt;
    }
}

std::optional<int64_t> BackendEvents::seen(const std::string& what, const std::string& tag) {
    for (const auto& line : cursor_.new_lines()) {
        std::istringstream in(line);
        std::string w, t;
        int64_t us = 0;
        if (in >> w >> t >> us)
            noted_[w + " " + t] = us;
    }
    auto it = noted_.find(what + " " + tag);
    return it == noted_.end() ? std::nullopt : std::optional<int64_t>(it->second);
}

}  // namespace agtest
