// Real sockets for the core's unit tests: TCP pairs on 127.0.0.1 and the
// three ways a client leaves (FIN, RST, half-close).
#ifndef ABORTGUARD_TESTS_SOCKETS_H
#define ABORTGUARD_TESTS_SOCKETS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace agtest {

// Owns one descriptor; move-only.
class Fd {
  public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) {
            reset();
            fd_ = std::exchange(o.fd_, -1);
        }
        return *this;
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }

    int get() const { return fd_; }
    // Gives up ownership.
    int release() { return std::exchange(fd_, -1); }
    void reset() {
        if (fd_ >= 0)
            ::close(fd_);
        fd_ = -1;
    }

  private:
    int fd_ = -1;
};

inline int check(int rv, const char* what) {
    if (rv < 0)
        throw std::runtime_error(std::string(what) + " failed");
    return rv;
}

// A listening socket on 127.0.0.1 with a kernel-chosen port.
class Listener {
  public:
    Listener() : fd_(check(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), "socket")) {
        sockaddr_in a = loopback(0);
        check(bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), "bind");
        check(listen(fd_.get(), 1024), "listen");
        socklen_t len = sizeof a;
        check(getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&a), &len), "getsockname");
        port_ = ntohs(a.sin_port);
    }

    // A connected pair: the client end and the server's accepted end.
    std::pair<Fd, Fd> connect_pair() const {
        Fd client(check(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), "socket"));
        sockaddr_in a = loopback(port_);
        check(connect(client.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), "connect");
        Fd server(check(accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC), "accept"));
        return {std::move(client), std::move(server)};
    }

  private:
    static sockaddr_in loopback(uint16_t port) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return a;
    }

    Fd fd_;
    uint16_t port_ = 0;
};

// Closes so that the peer receives RST instead of FIN.
inline void close_with_rst(Fd& fd) {
    linger l{1, 0};
    check(setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l), "SO_LINGER");
    fd.reset();
}

inline void half_close(const Fd& fd) {
    check(shutdown(fd.get(), SHUT_WR), "shutdown");
}

// Lets a test hold a few thousand sockets.
inline void raise_fd_limit(rlim_t want) {
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

}  // namespace agtest

#endif  // ABORTGUARD_TESTS_SOCKETS_H
