// Interop beyond the proxy: TLS (a close_notify followed by FIN is an
// abort, seen on the raw socket), a mod_perl handler that polls
// $r->connection->aborted without printing, TCP keepalive for a client that
// vanished without FIN or RST (AbortGuardKeepAlive, in a network namespace
// the test creates), its settings restored when the request ends, and
// AbortGuardLogStatus on an ordinary handler.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstdio>
#include <future>
#include <sstream>
#include <thread>

#include "child_process.h"
#include "harness.h"

namespace agtest {
namespace {

constexpr int64_t kMaxDetectionUs = 500000;
constexpr int64_t kStoppedEarlyUs = 2500000;
constexpr Millis kIo(10000);
constexpr Millis kLogWait(10000);

// A handler of the mod_perl era: no module API, no writes while it works,
// just $r->connection->aborted in a loop. It logs its times like the C test
// handler (AGT_*_US on CLOCK_MONOTONIC in microseconds).
const char* const kPerlLoop = R"PERL(package AGTest::Loop;
use strict;
use warnings;
use Apache2::RequestRec ();
use Apache2::RequestIO ();
use Apache2::Connection ();
use APR::Table ();
use Apache2::Const -compile => qw(OK);
use Time::HiRes qw(clock_gettime CLOCK_MONOTONIC usleep);

sub now_us { return int(clock_gettime(CLOCK_MONOTONIC) * 1000000) }

sub handler {
    my $r = shift;
    my %args = map { split /=/, $_, 2 } split /&/, ($r->args // '');
    my $start = now_us();
    $r->subprocess_env(AGT_START_US => $start);
    $r->content_type('text/plain');
    $r->print("started\n");
    $r->rflush;
    my $end = $start + ($args{ms} // 5000) * 1000;
    my $noticed;
    while (now_us() < $end) {
        if ($r->connection->aborted) {
            $noticed = now_us();
            last;
        }
        usleep(1000);
    }
    if ($noticed) {
        $r->subprocess_env(AGT_NOTICED_US => $noticed);
    } else {
        $r->print("done\n");
    }
    $r->subprocess_env(AGT_END_US => now_us());
    return Apache2::Const::OK;
}
1;
)PERL";

HttpdPool& interop_pool() {
    static HttpdPool pool([](const std::string& mpm) {
        HttpdOptions o;
        o.name = "interop-" + mpm;
        o.mpm = mpm;
        o.tls = true;
        o.files["perl/AGTest/Loop.pm"] = kPerlLoop;
        o.extra_config = sys_module("perl") +
                         "PerlSwitches -I@RUNDIR@/perl\n"
                         "PerlModule AGTest::Loop\n"
                         "<Location /perl>\n  SetHandler perl-script\n"
                         "  PerlResponseHandler AGTest::Loop\n</Location>\n"
                         "<Location /perl-off>\n  SetHandler perl-script\n"
                         "  PerlResponseHandler AGTest::Loop\n  AbortGuard Off\n</Location>\n"
                         "<Location /ka>\n  SetHandler abortguard-test\n"
                         "  AbortGuardKeepAlive 10s 2s 3\n</Location>\n"
                         "<Location /status499>\n  SetHandler abortguard-test\n"
                         "  AbortGuardLogStatus 499\n</Location>\n";
        return o;
    });
    return pool;
}

class Interop : public HttpdTest {
  protected:
    HttpdPool& pool() override { return interop_pool(); }
    static void TearDownTestSuite() { interop_pool().stop_all(); }

    void expect_noticed_quickly(const AccessLine& line, int64_t close_us, const char* what) {
        EXPECT_EQ(line.aborted, "1") << line.raw;
        ASSERT_TRUE(line.noticed_us) << "the handler never saw the abort: " << line.raw;
        const int64_t latency = *line.noticed_us - close_us;
        EXPECT_GE(latency, 0) << line.raw;
        EXPECT_LT(latency, kMaxDetectionUs) << line.raw;
        ASSERT_TRUE(line.handler_us()) << line.raw;
        EXPECT_LT(*line.handler_us(), kStoppedEarlyUs) << line.raw;
        std::printf("%s_detection_us mpm=%s value=%lld\n", what, mpm().c_str(),
                    static_cast<long long>(latency));
        std::fflush(stdout);
    }

    // The server side of the connection whose client port is `client_port`,
    // as `ss` shows it (with its timer).
    std::string server_socket(int client_port) {
        CommandResult r = run_command(
            {"ss", "-tnoH", "state", "established", "sport", "=",
             ":" + std::to_string(httpd().port()), "dport", "=", ":" + std::to_string(client_port)},
            Millis(10000));
        EXPECT_EQ(r.exit_code, 0) << r.output;
        return r.output;
    }
};

// TLS: the client sends close_notify, then FIN (openssl s_client does both
// when its input ends). The monitor never reads the ciphertext; the FIN
// alone tells.
TEST_P(Interop, TlsCloseNotifyThenFin) {
    const std::string tag = make_tag();
    ChildProcess client;
    ASSERT_TRUE(client.start({"openssl", "s_client", "-connect",
                              "127.0.0.1:" + std::to_string(httpd().tls_port()), "-servername",
                              "localhost", "-msg"}));
    ASSERT_TRUE(client.write(http_get("/slow?ms=5000&flush=1&t=" + tag)));
    ASSERT_TRUE(client.read_until("started\n", kIo)) << client.output();
    const int64_t close_us = monotonic_us();
    client.close_stdin();  // s_client: "DONE", close_notify, close
    ASSERT_TRUE(client.read_until("close_notify", kIo)) << client.output();
    AccessLine line = await(tag);
    EXPECT_EQ(line.reason, "fin") << line.raw;
    expect_noticed_quickly(line, close_us, "tls");
}

// mod_perl: the classic no-write loop on $r->connection->aborted sees a FIN
// within milliseconds, because the module sets c->aborted; without the
// module (AbortGuard Off) it runs its full time.
TEST_P(Interop, ModPerlLoopNoticesFin) {
    const std::string tag = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get("/perl?ms=5000&t=" + tag)));
    ASSERT_TRUE(c.read_until("started\n", kIo)) << c.received();
    c.close_fin();
    AccessLine line = await(tag);
    EXPECT_EQ(line.reason, "fin") << line.raw;
    expect_noticed_quickly(line, c.close_us(), "mod_perl");

    const std::string off = make_tag();
    RawClient d = connect();
    ASSERT_TRUE(d.send(http_get("/perl-off?ms=1000&t=" + off)));
    ASSERT_TRUE(d.read_until("started\n", kIo)) << d.received();
    d.close_fin();
    AccessLine stock = await(off);
    EXPECT_FALSE(stock.noticed_us) << stock.raw;
    ASSERT_TRUE(stock.handler_us()) << stock.raw;
    EXPECT_GE(*stock.handler_us(), 1000000) << stock.raw;
}

// Seconds until the keepalive timer of an `ss -o` line fires, or -1 when
// the socket has no keepalive timer: "timer:(keepalive,9.8sec,0)".
double keepalive_timer_s(const std::string& ss_line) {
    const std::string key = "timer:(keepalive,";
    size_t p = ss_line.find(key);
    if (p == std::string::npos)
        return -1;
    p += key.size();
    size_t unit = p;
    while (unit < ss_line.size() && (std::isdigit(ss_line[unit]) || ss_line[unit] == '.'))
        ++unit;
    const double value = std::atof(ss_line.substr(p, unit - p).c_str());
    const std::string u = ss_line.substr(unit, ss_line.find(',', unit) - unit);
    if (u == "ms")
        return value / 1000;
    if (u == "min")
        return value * 60;
    if (u == "h")
        return value * 3600;
    return value;  // "sec"
}

// AbortGuardKeepAlive (10s 2s 3 here) applies only while the request is
// monitored: once the response is complete and the connection waits for
// its next request, the socket has httpd's own setting again (httpd turns
// SO_KEEPALIVE on for its listeners, with the system's 2-hour idle time).
TEST_P(Interop, KeepAliveOnlyWhileMonitored) {
    const std::string tag = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get("/ka?ms=1000&flush=1&t=" + tag)));
    ASSERT_TRUE(c.read_until("started\n", kIo)) << c.received();
    const std::string during = server_socket(c.local_port());
    EXPECT_GT(keepalive_timer_s(during), 0) << during;
    EXPECT_LE(keepalive_timer_s(during), 10) << during;
    auto response = c.read_response(kIo);
    ASSERT_TRUE(response) << c.received();
    EXPECT_EQ(response->body, "started\ndone\n");
    await(tag);  // logged: the request is over, the connection idles
    const std::string after = server_socket(c.local_port());
    EXPECT_NE(after, "") << "the connection should still be open";
    const double restored = keepalive_timer_s(after);
    EXPECT_TRUE(restored < 0 || restored > 60) << "still our setting: " << after;
}

// AbortGuardLogStatus on an ordinary handler.
TEST_P(Interop, LogStatus499) {
    const std::string tag = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get("/status499?ms=5000&flush=1&t=" + tag)));
    ASSERT_TRUE(c.read_until("started\n", kIo)) << c.received();
    c.close_fin();
    AccessLine line = await(tag);
    EXPECT_EQ(line.status, 499) << line.raw;
    EXPECT_EQ(line.aborted, "1") << line.raw;

    const std::string plain = make_tag();
    RawClient d = connect();
    ASSERT_TRUE(d.send(http_get("/slow?ms=5000&flush=1&t=" + plain)));
    ASSERT_TRUE(d.read_until("started\n", kIo)) << d.received();
    d.close_fin();
    AccessLine unchanged = await(plain);
    EXPECT_EQ(unchanged.status, 200) << "without the directive: " << unchanged.raw;
    EXPECT_EQ(unchanged.aborted, "1") << unchanged.raw;
}

INSTANTIATE_TEST_SUITE_P(Mpm, Interop, testing::ValuesIn(all_mpms()), mpm_param_name);

// ---------------------------------------------------------- configuration

// Rejected, with a message that names the directive and `hint`.
void expect_rejected(const std::string& line, const std::string& directive,
                     const std::string& hint) {
    CommandResult r = syntax_check("<Location /x>\n  " + line + "\n</Location>\n");
    EXPECT_NE(r.exit_code, 0) << "accepted: " << line << "\n" << r.output;
    EXPECT_NE(r.output.find(directive + " "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(hint), std::string::npos) << r.output;
}

TEST(InteropConfig, GoodValuesPass) {
    CommandResult r = syntax_check(
        "AbortGuardProxy Off\nAbortGuardLogStatus 499\nAbortGuardKeepAlive 10s 2s 3\n"
        "<Location /a>\n  AbortGuardProxy On\n  AbortGuardLogStatus Off\n"
        "  AbortGuardKeepAlive Off\n</Location>\n"
        "<Location /b>\n  AbortGuardKeepAlive 1m\n</Location>\n"
        "<Location /c>\n  AbortGuardKeepAlive 30s 5s\n</Location>\n");
    EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST(InteropConfig, BadValuesRejected) {
    expect_rejected("AbortGuardProxy sometimes", "AbortGuardProxy", "On or Off");
    expect_rejected("AbortGuardLogStatus 42", "AbortGuardLogStatus", "or Off");
    expect_rejected("AbortGuardLogStatus 499x", "AbortGuardLogStatus", "100 to 999");
    expect_rejected("AbortGuardKeepAlive 500ms", "AbortGuardKeepAlive", "whole seconds");
    expect_rejected("AbortGuardKeepAlive 10", "AbortGuardKeepAlive", "whole seconds");
    expect_rejected("AbortGuardKeepAlive 10s 2s 0", "AbortGuardKeepAlive", "1 to 127");
    expect_rejected("AbortGuardKeepAlive 40000s", "AbortGuardKeepAlive", "32767s");
}

// ------------------------------------------------------ vanished clients

// A network namespace joined to this one by a veth pair: the client lives
// in it, and "pulling the cable" removes its address, so packets to it are
// dropped silently (no RST, no ICMP: forwarding is off in a new namespace).
// The host side has a permanent neighbour entry, so no ARP failure turns
// the timeout into an "unreachable" error either.
class Netns {
  public:
    bool create(std::string* why) {
        const std::string id = std::to_string(::getpid() % 100000);
        const int subnet = 20 + ::getpid() % 200;
        name_ = "agka" + id;
        host_if_ = "agkh" + id;
        peer_if_ = "agkp" + id;
        host_ip_ = "10.213." + std::to_string(subnet) + ".1";
        peer_ip_ = "10.213." + std::to_string(subnet) + ".2";
        std::string ignored;
        ip({"netns", "del", name_}, &ignored);  // left over by a killed run with our pid
        ip({"link", "del", host_if_}, &ignored);
        if (!ip({"netns", "add", name_}, why))
            return false;
        created_ = true;
        std::string mac;
        return ip({"link", "add", host_if_, "type", "veth", "peer", "name", peer_if_, "netns",
                   name_},
                  why) &&
               ip({"addr", "add", host_ip_ + "/30", "dev", host_if_}, why) &&
               ip({"link", "set", host_if_, "up"}, why) &&
               ip({"-n", name_, "addr", "add", peer_ip_ + "/30", "dev", peer_if_}, why) &&
               ip({"-n", name_, "link", "set", peer_if_, "up"}, why) &&
               ip({"-n", name_, "link", "set", "lo", "up"}, why) && peer_mac(&mac, why) &&
               ip({"neigh", "replace", peer_ip_, "lladdr", mac, "dev", host_if_, "nud",
                   "permanent"},
                  why);
    }

    ~Netns() {
        if (created_) {
            std::string ignored;
            ip({"netns", "del", name_}, &ignored);  // takes the veth pair with it
            ip({"link", "del", host_if_}, &ignored);
        }
    }

    const std::string& host_ip() const { return host_ip_; }

    // A TCP connection from inside the namespace to host_ip:port.
    bool connect(int port, RawClient* client) {
        auto fd = std::async(std::launch::async, [&]() -> int {
            // setns() changes this thread's namespace only; the socket keeps
            // it when the thread ends.
            const std::string path = "/var/run/netns/" + name_;
            int ns = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
            if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) {
                if (ns >= 0)
                    ::close(ns);
                return -1;
            }
            ::close(ns);
            int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            sockaddr_in a{};
            a.sin_family = AF_INET;
            a.sin_port = htons(static_cast<uint16_t>(port));
            ::inet_pton(AF_INET, host_ip_.c_str(), &a.sin_addr);
            const timeval tv{5, 0};
            ::setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
                ::close(s);
                return -1;
            }
            return s;
        });
        int s = fd.get();
        if (s < 0)
            return false;
        client->adopt(s);
        return true;
    }

    // The cable is pulled: the client's address is gone.
    bool vanish_peer(std::string* why) {
        return ip({"-n", name_, "addr", "flush", "dev", peer_if_}, why);
    }

  private:
    static bool ip(const std::vector<std::string>& args, std::string* why) {
        std::vector<std::string> argv = {"ip"};
        argv.insert(argv.end(), args.begin(), args.end());
        CommandResult r = run_command(argv, Millis(10000));
        if (r.exit_code != 0) {
            *why = "ip";
            for (const auto& a : args)
                *why += " " + a;
            *why += ": " + r.output;
            return false;
        }
        return true;
    }

    bool peer_mac(std::string* mac, std::string* why) {
        CommandResult r =
            run_command({"ip", "-n", name_, "-br", "link", "show", "dev", peer_if_}, Millis(10000));
        // "agkp123@if5   UP   aa:bb:cc:dd:ee:ff <...>"
        std::istringstream in(r.output);
        std::string ifname, state;
        if (r.exit_code != 0 || !(in >> ifname >> state >> *mac)) {
            *why = "cannot read the peer's MAC address: " + r.output;
            return false;
        }
        return true;
    }

    bool created_ = false;
    std::string name_, host_if_, peer_if_, host_ip_, peer_ip_;
};

// A port free on `ip` right now.
int free_port_on(const std::string& ip) {
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
    socklen_t len = sizeof a;
    int port = 0;
    if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0)
        port = ntohs(a.sin_port);
    ::close(s);
    return port;
}

class VanishedClient : public testing::TestWithParam<std::string> {};

// AbortGuardKeepAlive 1s 1s 1: a client that vanished without a word is
// found after idle + interval x count = 2 s, reason timeout. The same client
// on a location without the directive is not: its request runs to the end.
TEST_P(VanishedClient, FoundByKeepAlive) {
    Netns ns;
    std::string why;
    if (!ns.create(&why)) {
        GTEST_SKIP() << "AbortGuardKeepAlive's vanished-peer test needs to create a network "
                        "namespace and a veth pair (root, iproute2, CAP_NET_ADMIN); not "
                        "permitted here: "
                     << why;
    }
    const int port = free_port_on(ns.host_ip());
    ASSERT_NE(port, 0);
    HttpdOptions o;
    o.name = "vanished-" + GetParam();
    o.mpm = GetParam();
    o.extra_config = "Listen " + ns.host_ip() + ":" + std::to_string(port) +
                     "\n<Location /ka>\n  SetHandler abortguard-test\n"
                     "  AbortGuardKeepAlive 1s 1s 1\n</Location>\n";
    Httpd httpd(o);
    ASSERT_TRUE(httpd.start());
    AccessLog log;
    log.start(httpd.access_log_path());

    const std::string ka_tag = make_tag(), plain_tag = make_tag();
    RawClient ka, plain;
    ASSERT_TRUE(ns.connect(port, &ka));
    ASSERT_TRUE(ns.connect(port, &plain));
    ASSERT_TRUE(ka.send(http_get("/ka?ms=6000&flush=1&t=" + ka_tag)));
    ASSERT_TRUE(plain.send(http_get("/slow?ms=3500&flush=1&t=" + plain_tag)));
    ASSERT_TRUE(ka.read_until("started\n", kIo)) << ka.received();
    ASSERT_TRUE(plain.read_until("started\n", kIo)) << plain.received();
    const int64_t gone_us = monotonic_us();
    ASSERT_TRUE(ns.vanish_peer(&why)) << why;

    auto line = log.wait_for(ka_tag, kLogWait);
    ASSERT_TRUE(line) << "no access log line for " << ka_tag;
    EXPECT_EQ(line->aborted, "1") << line->raw;
    EXPECT_EQ(line->reason, "timeout") << line->raw;
    ASSERT_TRUE(line->noticed_us) << line->raw;
    const int64_t after = *line->noticed_us - gone_us;
    EXPECT_GE(after, 1500000) << "before keepalive could have decided: " << line->raw;
    EXPECT_LT(after, 5000000) << line->raw;
    std::printf("keepalive_detection_us mpm=%s value=%lld (idle 1s + 1 x 1s)\n", GetParam().c_str(),
                static_cast<long long>(after));
    std::fflush(stdout);

    auto stock = log.wait_for(plain_tag, kLogWait);
    ASSERT_TRUE(stock) << "no access log line for " << plain_tag;
    EXPECT_EQ(stock->aborted, "-") << stock->raw;
    EXPECT_FALSE(stock->noticed_us) << stock->raw;

    auto stopped = httpd.stop();
    EXPECT_TRUE(stopped) << stopped.message();
}

INSTANTIATE_TEST_SUITE_P(Mpm, VanishedClient, testing::ValuesIn(all_mpms()), mpm_param_name);

}  // namespace
}  // namespace agtest
