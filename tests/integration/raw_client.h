// Blocking HTTP/1.1 client on real TCP sockets to 127.0.0.1, so that the
// tests decide exactly when a FIN, an RST or a half-close leaves the client.
// Every read has a deadline; nothing here waits forever.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace agtest {

using Millis = std::chrono::milliseconds;

// CLOCK_MONOTONIC in microseconds: the clock mod_abortguard_test.c writes into
// AGT_*_US, so client and server times can be subtracted.
int64_t monotonic_us();

class Deadline {
  public:
    explicit Deadline(Millis timeout) : end_(std::chrono::steady_clock::now() + timeout) {}
    bool expired() const { return std::chrono::steady_clock::now() >= end_; }
    int remaining_ms() const;

  private:
    std::chrono::steady_clock::time_point end_;
};

struct HttpResponse {
    int status = 0;
    std::map<std::string, std::string> headers;  // names in lower case
    std::string body;                            // de-chunked
};

// "GET target HTTP/1.1" with Host and the given extra header lines
// (each ending in "\r\n").
std::string http_get(const std::string& target, const std::string& extra_headers = "");

class RawClient {
  public:
    RawClient() = default;
    ~RawClient();
    RawClient(RawClient&& other) noexcept;
    RawClient& operator=(RawClient&& other) noexcept;
    RawClient(const RawClient&) = delete;
    RawClient& operator=(const RawClient&) = delete;

    bool connect(int port, Millis timeout = Millis(3000));
    // Takes over a connected TCP socket (made non-blocking here), e.g. one
    // connected from another network namespace.
    void adopt(int fd);
    bool is_open() const { return fd_ >= 0; }
    // The client side's TCP port (0 when not connected).
    int local_port() const;
    // Sends everything (blocking, bounded by timeout).
    bool send(const std::string& data, Millis timeout = Millis(10000));

    // Reads until `needle` occurs in what was received so far (not consumed by
    // read_response). False on timeout or if the peer closed first.
    bool read_until(const std::string& needle, Millis timeout);
    // Reads until at least `total` bytes were received in all.
    bool read_at_least(size_t total, Millis timeout);
    // Reads until the peer closes; false on timeout.
    bool read_all_until_close(Millis timeout);
    // Parses the next complete response (Content-Length, chunked, or until
    // close), reading as needed. Interim 1xx responses are returned too.
    std::optional<HttpResponse> read_response(Millis timeout);

    const std::string& received() const { return data_; }
    bool peer_closed() const { return peer_closed_; }

    // Orderly close: drains unread bytes first (unread data would make the
    // kernel send RST instead of FIN), then shutdown(SHUT_WR) and close.
    void close_fin();
    // Abortive close: SO_LINGER {1, 0} then close, the kernel sends RST.
    void close_rst();
    // shutdown(SHUT_WR) only: FIN leaves, the socket stays open for reading.
    void half_close();
    // monotonic_us() taken just before the FIN/RST left (0 if none yet).
    int64_t close_us() const { return close_us_; }

  private:
    enum class Read { kData, kClosed, kTimeout, kError };
    Read read_some(const Deadline& deadline);
    void drain_nonblocking();
    void close_fd();

    int fd_ = -1;
    std::string data_;     // everything received so far
    size_t consumed_ = 0;  // prefix of data_ already returned by read_response
    bool peer_closed_ = false;
    int64_t close_us_ = 0;
};

}  // namespace agtest
