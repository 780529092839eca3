// Status page isolation: a tenant who sets `SetHandler abortguard-status`
// in an .htaccess of its own virtual host sees only its own virtual host's
// in-flight requests; the same handler set in the server's configuration
// files (a <Location> of the main config, one inside a <VirtualHost>)
// shows every virtual host's, as before. Two name-based virtual hosts on
// one port; one child (the in-flight table is per child), so prefork, with
// one request per child, has nothing to show and does not run this.
#include <string>
#include <thread>

#include "harness.h"
#include "json.h"

namespace agtest {
namespace {

constexpr Millis kIo(5000);

HttpdOptions isolation_options(const std::string& mpm) {
    HttpdOptions o;
    o.name = "status-isolation-" + mpm;
    o.mpm = mpm;
    o.extra_config =
        "<IfModule !mpm_prefork_module>\n  ServerLimit 1\n  MaxRequestWorkers 8\n"
        "</IfModule>\n"
        "<Location /agstatus>\n  SetHandler abortguard-status\n  AbortGuard Off\n</Location>\n"
        "<VirtualHost *>\n  ServerName a.test\n  DocumentRoot \"@RUNDIR@/a\"\n"
        "  <Location /slow-a>\n    SetHandler abortguard-test\n  </Location>\n"
        "</VirtualHost>\n"
        "<VirtualHost *>\n  ServerName b.test\n  DocumentRoot \"@RUNDIR@/b\"\n"
        "  <Directory \"@RUNDIR@/b\">\n    AllowOverride FileInfo\n  </Directory>\n"
        "  <Location /vstatus>\n    SetHandler abortguard-status\n  </Location>\n"
        "  <Location /slow-b>\n    SetHandler abortguard-test\n  </Location>\n"
        "</VirtualHost>\n";
    o.files["a/index.html"] = "a\n";
    o.files["b/tenant/.htaccess"] = "SetHandler abortguard-status\n";
    return o;
}

HttpdPool& isolation_pool() {
    static HttpdPool pool([](const std::string& mpm) { return isolation_options(mpm); });
    return pool;
}

std::string get(const std::string& host, const std::string& target) {
    return "GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n";
}

class StatusIsolation : public HttpdTest {
  protected:
    HttpdPool& pool() override { return isolation_pool(); }
    static void TearDownTestSuite() { isolation_pool().stop_all(); }

    // A request of `host` that stays in flight until the client closes.
    RawClient hold(const std::string& host, const std::string& path, const std::string& tag) {
        RawClient c = connect();
        EXPECT_TRUE(c.send(get(host, path + "?ms=20000&flush=1&t=" + tag)));
        EXPECT_TRUE(c.read_until("started\n", kIo));
        return c;
    }

    // The URIs the status page at `host`/`path` lists, and its scope.
    std::string page(const std::string& host, const std::string& path, std::string* scope) {
        RawClient c = connect();
        EXPECT_TRUE(c.send(get(host, path + "?json")));
        auto r = c.read_response(kIo);
        EXPECT_TRUE(r && r->status == 200) << host << path;
        if (!r)
            return "";
        auto j = Json::parse(r->body);
        EXPECT_TRUE(j) << r->body;
        std::string uris;
        if (j) {
            *scope = (*j)["inflight"]["scope"].as_string();
            // Server-wide tables of other tenants' traffic: for the admin only.
            const bool admin = *scope == "server";
            EXPECT_EQ((*j)["wasted_by_handler"]["shown"].as_bool(), admin) << host << path;
            EXPECT_EQ((*j)["in_flight_all_children"].is_null(), !admin) << host << path;
            for (const auto& req : (*j)["inflight"]["requests"].items())
                uris += req["uri"].as_string() + " ";
        }
        return uris;
    }
};

TEST_P(StatusIsolation, AnHtaccessStatusPageShowsOnlyItsOwnVirtualHost) {
    const std::string ta = make_tag(), tb = make_tag();
    RawClient a = hold("a.test", "/slow-a", ta);
    RawClient b = hold("b.test", "/slow-b", tb);
    std::string scope;
    const std::string tenant = page("b.test", "/tenant/", &scope);
    EXPECT_EQ(scope, "virtual-host");
    EXPECT_EQ(tenant.find("/slow-a"), std::string::npos) << "vhost A's request on B's page";
    EXPECT_NE(tenant.find("/slow-b"), std::string::npos) << "B's own request is listed";
    // Contrast: the admin's pages, in the configuration files, see both.
    for (const auto& [host, path] :
         {std::pair<std::string, std::string>{"localhost", "/agstatus"}, {"b.test", "/vstatus"}}) {
        const std::string all = page(host, path, &scope);
        EXPECT_EQ(scope, "server") << host << path;
        EXPECT_NE(all.find("/slow-a"), std::string::npos) << host << path;
        EXPECT_NE(all.find("/slow-b"), std::string::npos) << host << path;
    }
    a.close_fin();
    b.close_fin();
    await(ta);
    await(tb);
}

INSTANTIATE_TEST_SUITE_P(Mpm, StatusIsolation, testing::Values("event", "worker"), mpm_param_name);

}  // namespace
}  // namespace agtest
