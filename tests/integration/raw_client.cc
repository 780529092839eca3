#include "raw_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>

namespace agtest {

int64_t monotonic_us() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

int Deadline::remaining_ms() const {
    auto left = std::chrono::duration_cast<Millis>(end_ - std::chrono::steady_clock::now());
    return static_cast<int>(std::max<int64_t>(0, left.count()));
}

std::string http_get(const std::string& target, const std::string& extra_headers) {
    return "GET " + target + " HTTP/1.1\r\nHost: localhost\r\n" + extra_headers + "\r\n";
}

namespace {

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
}

// Parses a chunked body starting at `pos`; on success stores the body and the
// offset just past the final CRLF.
bool parse_chunked(const std::string& buf, size_t pos, std::string* body, size_t* end) {
    body->clear();
    for (;;) {
        size_t eol = buf.find("\r\n", pos);
        if (eol == std::string::npos)
            return false;
        size_t size = std::strtoul(buf.c_str() + pos, nullptr, 16);
        pos = eol + 2;
        if (size == 0)
            break;
        if (buf.size() < pos + size + 2)
            return false;
        body->append(buf, pos, size);
        pos += size + 2;
    }
    // Trailer section: header lines until an empty line.
    for (;;) {
        size_t eol = buf.find("\r\n", pos);
        if (eol == std::string::npos)
            return false;
        bool empty = eol == pos;
        pos = eol + 2;
        if (empty)
            break;
    }
    *end = pos;
    return true;
}

// Parses one response at `pos`. `eof` says the peer closed, which completes
// a body delimited by the connection close.
bool parse_response(const std::string& buf, size_t pos, bool eof, HttpResponse* out, size_t* end) {
    size_t head_end = buf.find("\r\n\r\n", pos);
    if (head_end == std::string::npos)
        return false;
    HttpResponse r;
    size_t sp = buf.find(' ', pos);
    if (sp == std::string::npos || sp > head_end)
        return false;
    r.status = std::atoi(buf.c_str() + sp + 1);
    size_t line = buf.find("\r\n", pos) + 2;
    while (line < head_end + 2) {
        size_t eol = buf.find("\r\n", line);
        size_t colon = buf.find(':', line);
        if (colon != std::string::npos && colon < eol) {
            size_t v = buf.find_first_not_of(' ', colon + 1);
            r.headers[lower(buf.substr(line, colon - line))] =
                buf.substr(v, eol - std::min(v, eol));
        }
        line = eol + 2;
    }
    size_t body_start = head_end + 4;
    if (r.status / 100 == 1 || r.status == 204 || r.status == 304) {
        *end = body_start;
    } else if (lower(r.headers["transfer-encoding"]) == "chunked") {
        if (!parse_chunked(buf, body_start, &r.body, end))
            return false;
    } else if (r.headers.count("content-length")) {
        size_t len = std::strtoul(r.headers["content-length"].c_str(), nullptr, 10);
        if (buf.size() < body_start + len)
            return false;
        r.body = buf.substr(body_start, len);
        *end = body_start + len;
    } else {
        if (!eof)
            return false;
        r.body = buf.substr(body_start);
        *end = buf.size();
    }
    *out = std::move(r);
    return true;
}

}  // namespace

RawClient::~RawClient() {
    close_fd();
}

RawClient::RawClient(RawClient&& other) noexcept {
    *this = std::move(other);
}

RawClient& RawClient::operator=(RawClient&& other) noexcept {
    if (this != &other) {
        close_fd();
        fd_ = other.fd_;
        other.fd_ = -1;
        data_ = std::move(other.data_);
        consumed_ = other.consumed_;
        peer_closed_ = other.peer_closed_;
        close_us_ = other.close_us_;
    }
    return *this;
}

void RawClient::close_fd() {
    if (fd_ >= 0)
        ::close(fd_);
    fd_ = -1;
}

bool RawClient::connect(int port, Millis timeout) {
    close_fd();
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd_ < 0)
        return false;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    if (rc != 0 && errno == EINPROGRESS) {
        pollfd p{fd_, POLLOUT, 0};
        int err = 0;
        socklen_t len = sizeof(err);
        rc = (::poll(&p, 1, static_cast<int>(timeout.count())) == 1 &&
              ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0)
                 ? 0
                 : -1;
    }
    if (rc != 0) {
        close_fd();
        return false;
    }
    // Small requests must leave at once, not wait for Nagle.
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return true;
}

void RawClient::adopt(int fd) {
    close_fd();
    fd_ = fd;
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int RawClient::local_port() const {
    sockaddr_in addr{};
    socklen_t len = sizeof(addr);
    if (fd_ < 0 || ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
        return 0;
    return ntohs(addr.sin_port);
}

bool RawClient::send(const std::string& data, Millis timeout) {
    Deadline deadline(timeout);
    size_t sent = 0;
    while (fd_ >= 0 && sent < data.size()) {
        ssize_t n = ::send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
        if (n > 0) {
            sent += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return false;
        pollfd p{fd_, POLLOUT, 0};
        if (deadline.expired() || ::poll(&p, 1, deadline.remaining_ms()) < 0) {
            return false;
        }
    }
    return fd_ >= 0;
}

RawClient::Read RawClient::read_some(const Deadline& deadline) {
    if (fd_ < 0)
        return Read::kError;
    if (peer_closed_)
        return Read::kClosed;
    for (;;) {
        char buf[65536];
        ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
        if (n > 0) {
            data_.append(buf, static_cast<size_t>(n));
            return Read::kData;
        }
        if (n == 0) {
            peer_closed_ = true;
            return Read::kClosed;
        }
        if (errno != EAGAIN && errno != EINTR)
            return Read::kError;
        if (deadline.expired())
            return Read::kTimeout;
        pollfd p{fd_, POLLIN, 0};
        ::poll(&p, 1, deadline.remaining_ms());
    }
}

bool RawClient::read_until(const std::string& needle, Millis timeout) {
    Deadline deadline(timeout);
    while (data_.find(needle, consumed_) == std::string::npos) {
        if (read_some(deadline) != Read::kData)
            return false;
    }
    return true;
}

bool RawClient::read_at_least(size_t total, Millis timeout) {
    Deadline deadline(timeout);
    while (data_.size() < total) {
        if (read_some(deadline) != Read::kData)
            return false;
    }
    return true;
}

bool RawClient::read_all_until_close(Millis timeout) {
    Deadline deadline(timeout);
    for (;;) {
        Read r = read_some(deadline);
        if (r == Read::kClosed)
            return true;
        if (r != Read::kData)
            return false;
    }
}

std::optional<HttpResponse> RawClient::read_response(Millis timeout) {
    Deadline deadline(timeout);
    for (;;) {
        HttpResponse response;
        size_t end = 0;
        if (parse_response(data_, consumed_, peer_closed_, &response, &end)) {
            consumed_ = end;
            return response;
        }
        if (peer_closed_)
            return std::nullopt;  // truncated response
        Read r = read_some(deadline);
        if (r == Read::kTimeout || r == Read::kError)
            return std::nullopt;
    }
}

void RawClient::drain_nonblocking() {
    char buf[65536];
    ssize_t n;
    while ((n = ::recv(fd_, buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
        data_.append(buf, static_cast<size_t>(n));
    }
}

void RawClient::close_fin() {
    if (fd_ < 0)
        return;
    drain_nonblocking();
    close_us_ = monotonic_us();
    ::shutdown(fd_, SHUT_WR);
    close_fd();
}

void RawClient::close_rst() {
    if (fd_ < 0)
        return;
    linger lg{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close_us_ = monotonic_us();
    close_fd();
}

void RawClient::half_close() {
    if (fd_ < 0)
        return;
    close_us_ = monotonic_us();
    ::shutdown(fd_, SHUT_WR);
}

}  // namespace agtest
