#include <gtest/gtest.h>

#include "clock.h"
#include "duration.h"

using abortguard::parse_duration;

namespace {

TEST(Duration, AcceptsMsSAndM) {
    int64_t ns = -1;
    ASSERT_TRUE(parse_duration("250ms", &ns));
    EXPECT_EQ(ns, 250 * 1000000LL);
    ASSERT_TRUE(parse_duration("2s", &ns));
    EXPECT_EQ(ns, 2 * 1000000000LL);
    ASSERT_TRUE(parse_duration("1m", &ns));
    EXPECT_EQ(ns, 60 * 1000000000LL);
    ASSERT_TRUE(parse_duration("0s", &ns));
    EXPECT_EQ(ns, 0);
}

TEST(Duration, RejectsEverythingElse) {
    int64_t ns = 7;
    for (const char* bad : std::initializer_list<const char*>{
             "", "5", "s", "-1s", "1.5s", "1 s", "1h", "1sec", "1ms ", "1S",
             "99999999999999999999s", "9999999999999m", static_cast<const char*>(nullptr)}) {
        EXPECT_FALSE(parse_duration(bad, &ns)) << (bad ? bad : "(null)");
    }
    EXPECT_EQ(ns, 7) << "the output is untouched on failure";
}

}  // namespace

TEST(SaturatingTime, AddAndMultiplyClampInsteadOfWrapping) {
    using abortguard::sat_add;
    using abortguard::sat_mul;
    EXPECT_EQ(sat_add(INT64_MAX - 5, 10), INT64_MAX);
    EXPECT_EQ(sat_add(INT64_MIN + 5, -10), INT64_MIN);
    EXPECT_EQ(sat_add(40, 2), 42);
    EXPECT_EQ(sat_mul(INT64_MAX / 10, 1000), INT64_MAX);
    EXPECT_EQ(sat_mul(INT64_MIN / 10, 1000), INT64_MIN);
    EXPECT_EQ(sat_mul(-(INT64_MAX / 10), -1000), INT64_MAX);
    EXPECT_EQ(sat_mul(7, 1000), 7000);
}

TEST(SaturatingTime, AFarTimeoutIsAFarDeadlineNotAPastOne) {
    const int64_t now = abortguard::mono_ns();
    EXPECT_EQ(abortguard::deadline_after(INT64_MAX), INT64_MAX);
    EXPECT_GE(abortguard::deadline_after(0), now);
    EXPECT_LE(abortguard::deadline_after(INT64_MIN), now);
}
