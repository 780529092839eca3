// The peers bench_httpd measures mod_abortguard beside: processes it starts
// on free loopback ports from files generated into a run dir, and always
// stops (SIGTERM to their process group, bounded wait, SIGKILL; and
// PR_SET_PDEATHSIG, so they go when bench_httpd dies). Each process group
// is noted in $AG_BENCH_PIDS (when set) as "+PGID" when it starts and
// "-PGID" once stopped, so that bench/run can kill what is left if
// bench_httpd itself is killed.
//
// - agpeer (bench/agpeer.go, built by bench/run or bench/smoke with
//   Debian's golang-go): Go's net/http as a detection peer, the app-server
//   backend both proxies front, the refresh storm's users, an HTTP/2 client.
// - nginx (Debian's nginx-light) as a reverse proxy in front of that backend.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "raw_client.h"

namespace agbench {

using agtest::Millis;

// A TCP port on 127.0.0.1 that was free a moment ago.
int free_port();

// A program started in a process group of its own, stdout and stderr to a
// file.
class Child {
  public:
    Child() = default;
    ~Child() { stop(); }
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

    bool start(const std::vector<std::string>& argv, const std::string& out_path);
    // Waits until the output contains `needle` (false: timeout or exit).
    bool wait_output(const std::string& needle, Millis timeout);
    std::string output() const;
    // Runs argv to its end (stopped after `timeout`); its output.
    static std::string run(const std::vector<std::string>& argv, const std::string& out_path,
                           Millis timeout);
    bool running() const { return pid_ > 0; }
    pid_t pid() const { return pid_; }
    // SIGTERM to the group, up to 5 s, then SIGKILL to the group.
    void stop();

  private:
    pid_t pid_ = -1;
    std::string out_path_;
};

// Path of an executable: `name` if it contains '/', else searched in PATH
// and /usr/sbin, /sbin; "" if not found.
std::string find_program(const std::string& name);

// A port accepts connections (polled up to `timeout`).
bool port_answers(int port, Millis timeout);

// GET http://127.0.0.1:port/path with Connection: close; the body ("" on
// failure).
std::string http_body(int port, const std::string& path, Millis timeout = Millis(5000));

// The Go peer program in one of its roles.
class Agpeer {
  public:
    // `binary`: the built bench/agpeer; `run_dir`: created if missing.
    Agpeer(std::string binary, std::string run_dir)
        : bin_(std::move(binary)), dir_(std::move(run_dir)) {}
    // agpeer detect (log: log_path()) or agpeer backend (hold log:
    // log_path()), on a free port.
    bool start(const std::string& role, const std::vector<std::string>& extra = {});
    int port() const { return port_; }
    std::string log_path() const { return dir_ + "/" + role_ + ".log"; }
    void stop() { child_.stop(); }
    pid_t pid() const { return child_.pid(); }

  private:
    std::string bin_, dir_, role_;
    int port_ = 0;
    Child child_;
};

// nginx as a reverse proxy: location /px/ -> http://127.0.0.1:backend/.
class Nginx {
  public:
    Nginx(std::string binary, std::string run_dir)
        : bin_(std::move(binary)), dir_(std::move(run_dir)) {}
    bool start(int backend_port);
    int port() const { return port_; }
    void stop() { child_.stop(); }
    std::string version() const;
    std::string error() const { return error_; }

  private:
    std::string bin_, dir_, error_;
    int port_ = 0;
    Child child_;
};

}  // namespace agbench
