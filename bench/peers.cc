#include "peers.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace agbench {

namespace fs = std::filesystem;

namespace {

std::string slurp(const std::string& path) {
    std::ifstream in(path);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// "+PGID" when a group starts, "-PGID" once it is stopped: what is left
// unmatched is what bench/run may kill (never a number reused since).
void note_group(pid_t pgid, bool started) {
    const char* path = std::getenv("AG_BENCH_PIDS");
    if (path == nullptr || *path == '\0')
        return;
    std::ofstream out(path, std::ios::app);
    out << (started ? "+" : "-") << pgid << "\n";
}

}  // namespace

int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    int port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
        port = ntohs(a.sin_port);
    ::close(fd);
    return port;
}

bool Child::start(const std::vector<std::string>& argv, const std::string& out_path) {
    stop();
    out_path_ = out_path;
    std::vector<char*> args;
    for (const auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::setpgid(0, 0);
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        const int fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        const int null = ::open("/dev/null", O_RDONLY);
        ::dup2(null, 0);
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        ::execvp(args[0], args.data());
        _exit(127);
    }
    if (pid < 0)
        return false;
    ::setpgid(pid, pid);
    pid_ = pid;
    note_group(pid, true);
    return true;
}

bool Child::wait_output(const std::string& needle, Millis timeout) {
    agtest::Deadline deadline(timeout);
    while (!deadline.expired()) {
        if (output().find(needle) != std::string::npos)
            return true;
        if (pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == pid_) {
            pid_ = -1;
            return output().find(needle) != std::string::npos;
        }
        std::this_thread::sleep_for(Millis(10));
    }
    return false;
}

std::string Child::output() const {
    return slurp(out_path_);
}

std::string Child::run(const std::vector<std::string>& argv, const std::string& out_path,
                       Millis timeout) {
    Child c;
    if (!c.start(argv, out_path))
        return "";
    agtest::Deadline deadline(timeout);
    while (!deadline.expired()) {
        const pid_t r = ::waitpid(c.pid_, nullptr, WNOHANG);
        if (r == c.pid_ || (r < 0 && errno == ECHILD)) {
            note_group(c.pid_, false);
            c.pid_ = -1;
            break;
        }
        std::this_thread::sleep_for(Millis(10));
    }
    c.stop();  // after a timeout
    return c.output();
}

void Child::stop() {
    if (pid_ <= 0)
        return;
    ::kill(-pid_, SIGTERM);
    agtest::Deadline deadline(Millis(5000));
    bool reaped = false;
    while (!deadline.expired()) {
        const pid_t r = ::waitpid(pid_, nullptr, WNOHANG);
        if (r == pid_ || (r < 0 && errno == ECHILD)) {
            reaped = true;
            break;
        }
        std::this_thread::sleep_for(Millis(10));
    }
    // Whatever is left of the group (nginx's workers, a hung child).
    ::kill(-pid_, SIGKILL);
    if (!reaped)
        ::waitpid(pid_, nullptr, 0);
    note_group(pid_, false);
    pid_ = -1;
}

std::string find_program(const std::string& name) {
    if (name.find('/') != std::string::npos)
        return ::access(name.c_str(), X_OK) == 0 ? name : "";
    std::string path = std::getenv("PATH") ? std::getenv("PATH") : "";
    path += ":/usr/sbin:/sbin:/usr/local/sbin";
    std::istringstream dirs(path);
    for (std::string d; std::getline(dirs, d, ':');) {
        if (d.empty())
            continue;
        const std::string p = d + "/" + name;
        if (::access(p.c_str(), X_OK) == 0)
            return p;
    }
    return "";
}

bool port_answers(int port, Millis timeout) {
    agtest::Deadline deadline(timeout);
    while (!deadline.expired()) {
        agtest::RawClient c;
        if (c.connect(port, Millis(200)))
            return true;
        std::this_thread::sleep_for(Millis(20));
    }
    return false;
}

std::string http_body(int port, const std::string& path, Millis timeout) {
    agtest::RawClient c;
    if (!c.connect(port, timeout) ||
        !c.send(agtest::http_get(path, "Connection: close\r\n"), timeout))
        return "";
    auto r = c.read_response(timeout);
    return r ? r->body : "";
}

bool Agpeer::start(const std::string& role, const std::vector<std::string>& extra) {
    role_ = role;
    fs::create_directories(dir_);
    ::chmod(dir_.c_str(), 0755);
    port_ = free_port();
    std::vector<std::string> argv = {
        bin_, role, "-addr", "127.0.0.1:" + std::to_string(port_), "-log", log_path()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    std::remove(log_path().c_str());
    if (!child_.start(argv, dir_ + "/" + role + ".out"))
        return false;
    return child_.wait_output("ready ", Millis(10000)) && port_answers(port_, Millis(5000));
}

bool Nginx::start(int backend_port) {
    fs::create_directories(dir_ + "/logs");
    ::chmod(dir_.c_str(), 0755);
    port_ = free_port();
    // One worker per core, as nginx's "auto"; upstream keep-alive as
    // mod_proxy's connection pool; unbuffered so that a streamed byte reaches
    // the client at once (as mod_proxy_http forwards it); a client that
    // leaves makes nginx close the upstream (proxy_ignore_client_abort off,
    // the default).
    std::ostringstream c;
    c << "worker_processes auto;\n"
      << "daemon off;\n"
      << "pid " << dir_ << "/nginx.pid;\n"
      << "error_log " << dir_ << "/error.log warn;\n"
      << "events { worker_connections 8192; }\n"
      << "http {\n"
      << "  access_log off;\n"
      << "  client_body_temp_path " << dir_ << "/body;\n"
      << "  proxy_temp_path " << dir_ << "/proxy;\n"
      << "  fastcgi_temp_path " << dir_ << "/fastcgi;\n"
      << "  uwsgi_temp_path " << dir_ << "/uwsgi;\n"
      << "  scgi_temp_path " << dir_ << "/scgi;\n"
      << "  keepalive_timeout 5s;\n"
      << "  keepalive_requests 100000;\n"
      << "  upstream agbackend {\n    server 127.0.0.1:" << backend_port
      << ";\n    keepalive 64;\n  }\n"
      << "  server {\n"
      << "    listen 127.0.0.1:" << port_ << " backlog=4096;\n"
      << "    location /px/ {\n"
      << "      proxy_pass http://agbackend/;\n"
      << "      proxy_http_version 1.1;\n"
      << "      proxy_set_header Connection \"\";\n"
      << "      proxy_buffering off;\n"
      << "      proxy_ignore_client_abort off;\n"
      << "      proxy_read_timeout 60s;\n"
      << "    }\n"
      << "    location = /ready { return 200 \"ok\\n\"; }\n"
      << "  }\n"
      << "}\n";
    {
        std::ofstream out(dir_ + "/nginx.conf");
        out << c.str();
    }
    if (!child_.start(
            {bin_, "-p", dir_ + "/", "-c", dir_ + "/nginx.conf", "-e", dir_ + "/error.log"},
            dir_ + "/stdout.log")) {
        error_ = "cannot start " + bin_;
        return false;
    }
    if (!port_answers(port_, Millis(10000)) || http_body(port_, "/ready") != "ok\n") {
        error_ = "nginx did not answer: " + child_.output() + slurp(dir_ + "/error.log");
        child_.stop();
        return false;
    }
    return true;
}

std::string Nginx::version() const {
    const std::string out = dir_ + "/version.txt";
    Child v;
    if (!v.start({bin_, "-v"}, out))
        return "nginx";
    v.wait_output("nginx/", Millis(5000));
    std::string s = v.output();
    v.stop();
    const size_t at = s.find("nginx/");
    if (at == std::string::npos)
        return "nginx";
    s = s.substr(at);
    return s.substr(0, s.find_first_of(" \n"));
}

}  // namespace agbench
