// A helper process of a test (openssl s_client, a Node.js backend), with its
// stdin and its stdout plus stderr on pipes, in a process group of its own
// that is killed when the object goes.
#ifndef AGTEST_CHILD_PROCESS_H
#define AGTEST_CHILD_PROCESS_H

#include <sys/types.h>

#include <string>
#include <vector>

#include "raw_client.h"

namespace agtest {

class ChildProcess {
  public:
    ChildProcess() = default;
    ~ChildProcess();  // SIGKILL to its process group, then reaped
    ChildProcess(const ChildProcess&) = delete;
    ChildProcess& operator=(const ChildProcess&) = delete;

    // fork/exec argv[0] (PATH search).
    bool start(const std::vector<std::string>& argv);
    bool write(const std::string& s);
    void close_stdin();
    // Reads its output until `needle` appears in all of it so far.
    bool read_until(const std::string& needle, Millis timeout);
    const std::string& output() const { return output_; }
    pid_t pid() const { return pid_; }

  private:
    pid_t pid_ = -1;
    int in_ = -1, out_ = -1;
    std::string output_;
};

}  // namespace agtest

#endif  // AGTEST_CHILD_PROCESS_H
