// A minimal HTTP/2 client over cleartext TCP (prior knowledge, "h2c"), on
// a raw socket, so a test decides exactly when a stream is reset
// (RST_STREAM) or the connection closed. Enough of RFC 9113 for GET
// requests: the preface, SETTINGS (acknowledged), HEADERS encoded as HPACK
// literals, DATA collected per stream, PING answered. Response headers are
// not decoded (the tests read bodies and access logs). Every read has a
// deadline.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "raw_client.h"

namespace agtest {

class H2Client {
  public:
    H2Client() = default;
    ~H2Client();
    H2Client(const H2Client&) = delete;
    H2Client& operator=(const H2Client&) = delete;

    // Connects and sends the preface and an empty SETTINGS frame.
    bool connect(int port, Millis timeout = Millis(3000));
    // GET `path` on a new stream (1, 3, 5, ...); returns its id, 0 on error.
    uint32_t get(const std::string& path);
    // RST_STREAM with CANCEL (0x8), as a browser sends for a stopped load.
    bool reset(uint32_t stream);
    // Reads frames until `needle` is in the stream's DATA, or the timeout.
    bool read_until(uint32_t stream, const std::string& needle, Millis timeout);
    // Reads frames until the stream ended (END_STREAM or RST_STREAM).
    bool read_until_end(uint32_t stream, Millis timeout);
    // FIN without GOAWAY: the client just goes away.
    void close();

    const std::string& data(uint32_t stream) { return streams_[stream].data; }
    bool ended(uint32_t stream) { return streams_[stream].ended; }
    // monotonic_us() just before the last reset() or close() left.
    int64_t sent_us() const { return sent_us_; }

  private:
    struct Stream {
        std::string data;
        bool ended = false;
    };
    bool send_frame(uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload);
    bool send_all(const std::string& bytes);
    // Reads and handles one frame; false on timeout, error or close.
    bool read_frame(const Deadline& deadline);
    bool fill(size_t n, const Deadline& deadline);

    int fd_ = -1;
    uint32_t next_stream_ = 1;
    std::string in_;
    std::map<uint32_t, Stream> streams_;
    int64_t sent_us_ = 0;
};

}  // namespace agtest
