// Processes: children (`mhc compare`'s training runs and gnuplot, `mhc bench`'s measurements, the
// mhc binary itself re-executed), and this process's own executable and peak memory.
#pragma once
#include <sys/types.h>

#include <string>
#include <vector>

namespace mhc::sys {

struct SpawnOptions {
    std::string cwd;            // working directory of the child ("" = ours)
    bool new_group = false;     // its own process group: a terminal's Ctrl-C reaches only us, and we
                                // forward it once (a second SIGINT would make `train` stop at once)
    bool die_with_parent = false;  // SIGTERM when we die, so a training child checkpoints and stops
    bool merge_stderr = true;   // the child's stderr into the pipe too (false: it stays ours)
    std::vector<std::string> env;  // "KEY=VALUE" set in the child's environment (others inherited)
};

struct Child {
    pid_t pid = -1;
    int out_fd = -1;  // the child's stdout (and stderr, if merged); stdin is /dev/null
};

// Starts argv (argv[0] searched in PATH). Throws std::runtime_error naming the program if it
// cannot be started (errno ENOENT -> "not found").
Child spawn_child(const std::vector<std::string>& argv, const SpawnOptions& opt);

// Reads the child's output until EOF, calling on_line for each line (without the newline), then
// waits for it. Returns its exit code, or 128 + signal. on_line may be empty.
template <typename F> int finish_child(Child& c, F&& on_line);
int wait_child(pid_t pid);
void close_fd(int& fd);  // closes and sets -1
// Appends one read (up to 64 KiB) to buf; false at EOF. Interrupted reads (EINTR) are retried.
bool read_some(int fd, std::string& buf);

// The path of the running executable (/proc/self/exe).
std::string self_exe();

// Peak resident set of this process in MiB: VmHWM of the current address space, else (no /proc)
// ru_maxrss. Not ru_maxrss first: a spawned child's ru_maxrss can start at its parent's peak,
// which exec carries over, so a small run started by a large parent would report the parent's.
double peak_rss_mb();

// The most memory this process can have, in bytes: the smallest of the machine's physical memory,
// the cgroup's limit (memory.max, v2 or v1) and RLIMIT_AS / RLIMIT_DATA, each where there is one;
// `what` becomes the one that decides ("physical memory", "the cgroup limit", "RLIMIT_AS" ...).
// -1 when none is known.
double memory_limit_bytes(std::string& what);

// "1.5 GiB", "812 MiB", "12 KiB": a size in bytes, for messages about memory.
std::string fmt_bytes(double bytes);

template <typename F> int finish_child(Child& c, F&& on_line) {
    std::string buf;
    while (read_some(c.out_fd, buf)) {
        size_t nl;
        while ((nl = buf.find('\n')) != std::string::npos) {
            on_line(buf.substr(0, nl));
            buf.erase(0, nl + 1);
        }
    }
    if (!buf.empty()) on_line(buf);
    close_fd(c.out_fd);
    return wait_child(c.pid);
}

}  // namespace mhc::sys
