#include "h2_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace agtest {

namespace {

enum : uint8_t {
    kData = 0x0,
    kHeaders = 0x1,
    kRstStream = 0x3,
    kSettings = 0x4,
    kPing = 0x6,
    kGoaway = 0x7,
};
enum : uint8_t { kEndStream = 0x1, kAck = 0x1, kEndHeaders = 0x4, kPadded = 0x8, kPriority = 0x20 };

// HPACK integer with an n-bit prefix (RFC 7541, 5.1); `first` holds the
// bits above the prefix.
void put_int(std::string* out, uint8_t first, int prefix_bits, size_t value) {
    const size_t max = (1u << prefix_bits) - 1;
    if (value < max) {
        out->push_back(static_cast<char>(first | value));
        return;
    }
    out->push_back(static_cast<char>(first | max));
    value -= max;
    while (value >= 128) {
        out->push_back(static_cast<char>((value % 128) | 0x80));
        value /= 128;
    }
    out->push_back(static_cast<char>(value));
}

void put_string(std::string* out, const std::string& s) {
    put_int(out, 0x00, 7, s.size());  // H=0: not Huffman-coded
    *out += s;
}

// "Literal Header Field without Indexing -- New Name" (RFC 7541, 6.2.2).
void put_header(std::string* out, const std::string& name, const std::string& value) {
    out->push_back(0x00);
    put_string(out, name);
    put_string(out, value);
}

}  // namespace

H2Client::~H2Client() {
    if (fd_ >= 0)
        ::close(fd_);
}

bool H2Client::connect(int port, Millis timeout) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0)
        return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
        return false;  // loopback: refused at once, never hangs
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const timeval tv{static_cast<time_t>(timeout.count() / 1000),
                     static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return send_all("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") && send_frame(kSettings, 0, 0, "");
}

uint32_t H2Client::get(const std::string& path) {
    const uint32_t id = next_stream_;
    next_stream_ += 2;
    std::string block;
    put_header(&block, ":method", "GET");
    put_header(&block, ":scheme", "http");
    put_header(&block, ":authority", "localhost");
    put_header(&block, ":path", path);
    streams_[id];
    return send_frame(kHeaders, kEndHeaders | kEndStream, id, block) ? id : 0;
}

bool H2Client::reset(uint32_t stream) {
    const std::string cancel("\x00\x00\x00\x08", 4);
    sent_us_ = monotonic_us();
    return send_frame(kRstStream, 0, stream, cancel);
}

void H2Client::close() {
    if (fd_ < 0)
        return;
    sent_us_ = monotonic_us();
    ::shutdown(fd_, SHUT_WR);
    ::close(fd_);
    fd_ = -1;
}

bool H2Client::send_all(const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
        ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        off += static_cast<size_t>(n);
    }
    return true;
}

bool H2Client::send_frame(uint8_t type, uint8_t flags, uint32_t stream,
                          const std::string& payload) {
    std::string f;
    const size_t len = payload.size();
    f.push_back(static_cast<char>((len >> 16) & 0xff));
    f.push_back(static_cast<char>((len >> 8) & 0xff));
    f.push_back(static_cast<char>(len & 0xff));
    f.push_back(static_cast<char>(type));
    f.push_back(static_cast<char>(flags));
    for (int shift = 24; shift >= 0; shift -= 8)
        f.push_back(static_cast<char>((stream >> shift) & (shift == 24 ? 0x7f : 0xff)));
    f += payload;
    return send_all(f);
}

bool H2Client::fill(size_t n, const Deadline& deadline) {
    while (in_.size() < n) {
        pollfd p{fd_, POLLIN, 0};
        int r = ::poll(&p, 1, deadline.remaining_ms());
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        char buf[16384];
        ssize_t got = ::recv(fd_, buf, sizeof buf, 0);
        if (got <= 0)
            return false;
        in_.append(buf, static_cast<size_t>(got));
    }
    return true;
}

bool H2Client::read_frame(const Deadline& deadline) {
    if (fd_ < 0 || !fill(9, deadline))
        return false;
    const auto* h = reinterpret_cast<const unsigned char*>(in_.data());
    const size_t len = (size_t{h[0]} << 16) | (size_t{h[1]} << 8) | h[2];
    const uint8_t type = h[3], flags = h[4];
    const uint32_t stream = ((uint32_t{h[5]} & 0x7f) << 24) | (uint32_t{h[6]} << 16) |
                            (uint32_t{h[7]} << 8) | h[8];
    if (!fill(9 + len, deadline))
        return false;
    std::string payload = in_.substr(9, len);
    in_.erase(0, 9 + len);
    switch (type) {
        case kData: {
            size_t start = 0, pad = 0;
            if ((flags & kPadded) && !payload.empty()) {
                pad = static_cast<unsigned char>(payload[0]);
                start = 1;
            }
            if (start + pad <= payload.size())
                streams_[stream].data += payload.substr(start, payload.size() - start - pad);
            if (flags & kEndStream)
                streams_[stream].ended = true;
            // Give the window back, so long bodies keep flowing.
            if (len > 0) {
                std::string inc;
                for (int shift = 24; shift >= 0; shift -= 8)
                    inc.push_back(static_cast<char>((len >> shift) & 0xff));
                send_frame(0x8, 0, 0, inc);
                send_frame(0x8, 0, stream, inc);
            }
            break;
        }
        case kHeaders:
            if (flags & kEndStream)
                streams_[stream].ended = true;
            break;
        case kRstStream:
            streams_[stream].ended = true;
            break;
        case kSettings:
            if (!(flags & kAck))
                send_frame(kSettings, kAck, 0, "");
            break;
        case kPing:
            if (!(flags & kAck))
                send_frame(kPing, kAck, 0, payload);
            break;
        case kGoaway:
        default:
            break;
    }
    return true;
}

bool H2Client::read_until(uint32_t stream, const std::string& needle, Millis timeout) {
    Deadline deadline(timeout);
    while (streams_[stream].data.find(needle) == std::string::npos) {
        if (streams_[stream].ended || !read_frame(deadline))
            return false;
    }
    return true;
}

bool H2Client::read_until_end(uint32_t stream, Millis timeout) {
    Deadline deadline(timeout);
    while (!streams_[stream].ended) {
        if (!read_frame(deadline))
            return false;
    }
    return true;
}

}  // namespace agtest
