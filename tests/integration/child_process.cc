#include "child_process.h"
#include "harness.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace agtest {

ChildProcess::~ChildProcess() {
    if (pid_ > 0) {
        ::kill(-pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }
    if (in_ >= 0)
        ::close(in_);
    if (out_ >= 0)
        ::close(out_);
}

bool ChildProcess::start(const std::vector<std::string>& argv) {
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0)
        return false;
    if (::pipe2(out, O_CLOEXEC) != 0) {
        ::close(in[0]);
        ::close(in[1]);
        return false;
    }
    pid_ = ::fork();
    if (pid_ == 0)
        exec_in_child(argv, in[0], out[1]);
    ::close(in[0]);
    ::close(out[1]);
    in_ = in[1];
    out_ = out[0];
    return pid_ > 0;
}

bool ChildProcess::write(const std::string& s) {
    return ::write(in_, s.data(), s.size()) == static_cast<ssize_t>(s.size());
}

void ChildProcess::close_stdin() {
    ::close(in_);
    in_ = -1;
}

bool ChildProcess::read_until(const std::string& needle, Millis timeout) {
    Deadline deadline(timeout);
    while (output_.find(needle) == std::string::npos) {
        pollfd p{out_, POLLIN, 0};
        if (::poll(&p, 1, deadline.remaining_ms()) <= 0)
            return false;
        char buf[4096];
        const ssize_t n = ::read(out_, buf, sizeof buf);
        if (n <= 0)
            return false;
        output_.append(buf, static_cast<size_t>(n));
    }
    return true;
}

}  // namespace agtest
