// System utilities (src/sys/): whole-file reads, the read-only handle's errors, atomic writes,
// child processes, peak RSS, and the one seeded generator (mhc/rng.h).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include "file_util.h"
#include "mhc/rng.h"
#include "sys/file.h"
#include "sys/process.h"

using namespace mhc;
namespace fs = std::filesystem;

namespace {

// The message of the std::runtime_error f throws ("" if it throws none).
template <typename F> std::string error_of(F&& f) {
    try {
        f();
    } catch (const std::runtime_error& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST(SysFile, AtomicWriteReplacesAndLeavesNoTemporary) {
    const std::string dir = fresh_dir("sys", "atomic"), p = dir + "/f.txt";
    sys::write_file_atomic(p, "old content, longer than the new one\n");
    EXPECT_EQ(slurp(p), "old content, longer than the new one\n");
    sys::write_file_atomic(p, std::vector<std::string_view>{"new ", "", "content"});
    EXPECT_EQ(slurp(p), "new content");
    EXPECT_EQ(names_in(dir), std::set<std::string>{"f.txt"});
    sys::write_file_atomic(p, "");
    EXPECT_EQ(slurp(p), "");
}

TEST(SysFile, AtomicWriteOfALargePayloadInPieces) {
    const std::string dir = fresh_dir("sys", "large"), p = dir + "/big.bin";
    std::string a(3 << 20, 'a'), b(1 << 20, 'b');
    a[12345] = 'x';
    sys::write_file_atomic(p, std::vector<std::string_view>{a, b, a});
    EXPECT_EQ(slurp(p), a + b + a);
    EXPECT_EQ(names_in(dir).size(), 1u);
    fs::remove_all(dir);  // 7 MiB: not left in the temporary directory
}

TEST(SysFile, AtomicWriteErrorsNameThePath) {
    const std::string p = fresh_dir("sys", "missing") + "/no/such/dir/f.txt";
    const std::string err = error_of([&] { sys::write_file_atomic(p, "x"); });
    EXPECT_EQ(err, p + ": cannot write: No such file or directory");
    // A directory in the way: written in full, then the rename fails; the temporary is removed.
    const std::string dir = fresh_dir("sys", "in-the-way"), target = dir + "/sub";
    fs::create_directories(target + "/inside");
    EXPECT_NE(error_of([&] { sys::write_file_atomic(target, "x"); }).find(target + ": cannot rename into place: "),
              std::string::npos);
    EXPECT_EQ(names_in(dir), std::set<std::string>{"sub"});
}

TEST(SysFile, ReadFile) {
    const std::string dir = fresh_dir("sys", "read");
    std::string s = "stale";
    errno = 0;
    EXPECT_FALSE(sys::read_file(dir + "/absent", s));
    EXPECT_EQ(errno, ENOENT);
    EXPECT_FALSE(sys::read_file(dir, s));  // a directory has no bytes to read
    EXPECT_TRUE(sys::read_file("/proc/self/status", s));  // st_size 0, yet it has content
    EXPECT_NE(s.find("VmHWM:"), std::string::npos);
}

TEST(SysFile, HandleReadsAtOffsetsAndReportsErrors) {
    const std::string dir = fresh_dir("sys", "handle"), p = dir + "/f.bin";
    sys::write_file_atomic(p, "0123456789");
    sys::File f(p);
    EXPECT_EQ(f.size, 10);
    EXPECT_TRUE(f.is_regular);
    EXPECT_FALSE(f.is_dir);
    char buf[4] = {};
    f.read_at(6, buf, 4);
    EXPECT_EQ(std::string(buf, 4), "6789");
    f.read_at(3, nullptr, 0);  // nothing to read: dst is not touched
    EXPECT_EQ(error_of([&] { f.read_at(8, buf, 4); }), p + ": file shrank while being read");

    EXPECT_EQ(error_of([&] { sys::File g(dir + "/absent"); }), dir + "/absent: cannot open: No such file or directory");
    sys::File d(dir);
    EXPECT_TRUE(d.is_dir);
    EXPECT_FALSE(d.is_regular);
    EXPECT_EQ(error_of([&] { d.read_at(0, buf, 1); }), dir + ": read failed: Is a directory");
}

TEST(SysProcess, SpawnsReadsAndWaits) {
    sys::Child c = sys::spawn_child({"sh", "-c", "echo one; echo two >&2; printf three; exit 3"}, {});
    std::vector<std::string> lines;
    EXPECT_EQ(sys::finish_child(c, [&](const std::string& l) { lines.push_back(l); }), 3);
    EXPECT_EQ(lines, (std::vector<std::string>{"one", "two", "three"}));  // stderr merged by default
    EXPECT_EQ(c.out_fd, -1);

    sys::SpawnOptions opt;
    opt.env = {"MHC_SYS_TEST=hello"};
    opt.cwd = "/";
    c = sys::spawn_child({"sh", "-c", "echo $MHC_SYS_TEST; pwd; kill -TERM $$"}, opt);
    lines.clear();
    EXPECT_EQ(sys::finish_child(c, [&](const std::string& l) { lines.push_back(l); }), 128 + 15);
    EXPECT_EQ(lines, (std::vector<std::string>{"hello", "/"}));
}

TEST(SysProcess, MissingProgramIsNotFound) {
    EXPECT_EQ(error_of([] { sys::spawn_child({"mhc-no-such-program"}, {}); }), "mhc-no-such-program: not found");
    EXPECT_THROW(sys::spawn_child({}, {}), std::runtime_error);
}

TEST(SysProcess, SelfExe) {
    const std::string exe = sys::self_exe();
    EXPECT_FALSE(exe.empty());
    EXPECT_TRUE(fs::is_regular_file(exe)) << exe;
}

TEST(SysProcess, PeakRssGrowsAfterTouchingMemory) {
    const double before = sys::peak_rss_mb();
    EXPECT_GT(before, 1.0);
    // The peak may lie well above today's resident set (an earlier test in this process): touch
    // enough that the resident set must pass it by 64 MiB.
    std::string status;
    ASSERT_TRUE(sys::read_file("/proc/self/status", status));
    const size_t at = status.find("\nVmRSS:");
    ASSERT_NE(at, std::string::npos);
    const double rss = std::strtod(status.c_str() + at + 7, nullptr) / 1024.0;
    const size_t bytes = (size_t)((before - rss + 64) * 1024 * 1024);
    std::vector<char> mem(bytes, 1);
    asm volatile("" : : "r"(mem.data()) : "memory");  // the pages must really be written
    const double after = sys::peak_rss_mb();
    EXPECT_GE(after, before + 48) << before << " -> " << after;
    EXPECT_GE(sys::peak_rss_mb(), after);  // a peak never falls
}

TEST(Rng, SplitMix64FirstValuesAndState) {
    // Computed independently (Python: s += 0x9E3779B97F4A7C15 mod 2^64, then the two multiply-xorshift
    // rounds and a final xorshift 31).
    SplitMix64 r(42);
    EXPECT_EQ(r.next(), 0xBDD732262FEB6E95ull);
    EXPECT_EQ(r.next(), 0x28EFE333B266F103ull);
    EXPECT_EQ(r.next(), 0x47526757130F9F52ull);
    EXPECT_EQ(r.state, 15755400384260043881ull);  // 42 + 3 * 0x9E3779B97F4A7C15, the whole state
    SplitMix64 z(0);
    EXPECT_EQ(z.next(), 0xE220A8397B1DCDAFull);
    EXPECT_EQ(z.next(), 0x6E789E6AA1B965F4ull);
    SplitMix64 u(42);
    EXPECT_EQ(u.uniform(), 0.7415648787718233);  // (first >> 11) / 2^53
    // A generator rebuilt from a saved state goes on with the same sequence.
    SplitMix64 a(7);
    a.next();
    SplitMix64 b(a.state);
    EXPECT_EQ(a.next(), b.next());
}
