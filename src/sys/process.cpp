// Child processes: fork + exec with the output in a pipe, and an error pipe that tells the parent
// why exec failed (a missing gnuplot is a warning, not a crash). This process's executable and
// peak memory.
#include "sys/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <stdexcept>

#include "sys/file.h"

extern char** environ;

namespace mhc::sys {

Child spawn_child(const std::vector<std::string>& argv, const SpawnOptions& opt) {
    if (argv.empty()) throw std::runtime_error("spawn_child: empty command");
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
    if (pipe2(err, O_CLOEXEC) != 0) {
        close(out[0]), close(out[1]);
        throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    // The environment is built here: after fork only async-signal-safe calls are allowed.
    std::vector<char*> envp;
    for (char** e = environ; *e; e++) {
        const char* eq = std::strchr(*e, '=');
        const size_t klen = eq ? (size_t)(eq - *e) + 1 : std::strlen(*e);
        bool overridden = false;
        for (const auto& kv : opt.env) overridden |= kv.compare(0, klen, *e, klen) == 0;
        if (!overridden) envp.push_back(*e);
    }
    for (const auto& kv : opt.env) envp.push_back(const_cast<char*>(kv.c_str()));
    envp.push_back(nullptr);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
        const int e = errno;
        close(out[0]), close(out[1]), close(err[0]), close(err[1]);
        throw std::runtime_error(argv[0] + ": cannot start: " + std::strerror(e));
    }
    if (pid == 0) {  // the child: only async-signal-safe calls until exec
        if (opt.new_group) setpgid(0, 0);
        if (opt.die_with_parent) {
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent) _exit(1);  // the parent died before prctl
        }
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        sigaction(SIGINT, &dfl, nullptr);
        sigaction(SIGTERM, &dfl, nullptr);
        sigaction(SIGPIPE, &dfl, nullptr);
        sigaction(SIGHUP, &dfl, nullptr);
        const int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, 0);
        dup2(out[1], 1);
        if (opt.merge_stderr) dup2(out[1], 2);
        int e = 0;
        if (!opt.cwd.empty() && chdir(opt.cwd.c_str()) != 0) e = errno;
        else execvpe(args[0], args.data(), envp.data()), e = errno;
        (void)!write(err[1], &e, sizeof e);
        _exit(127);
    }
    if (opt.new_group) setpgid(pid, pid);  // also from here: no window where a signal finds it in ours
    close(out[1]);
    close(err[1]);
    int e = 0;
    ssize_t n;
    while ((n = read(err[0], &e, sizeof e)) < 0 && errno == EINTR) {}
    close(err[0]);
    if (n == (ssize_t)sizeof e) {  // exec (or chdir) failed: the pipe carried errno
        close(out[0]);
        wait_child(pid);
        throw std::runtime_error(argv[0] + (e == ENOENT ? std::string(": not found") : ": cannot start: " +
                                 std::string(std::strerror(e))));
    }
    return {pid, out[0]};
}

bool read_some(int fd, std::string& buf) {
    char tmp[65536];
    for (;;) {
        const ssize_t n = read(fd, tmp, sizeof tmp);
        if (n > 0) return buf.append(tmp, (size_t)n), true;
        if (n == 0) return false;
        if (errno != EINTR) return false;
    }
}

int wait_child(pid_t pid) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return 127;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 127;
}

void close_fd(int& fd) {
    if (fd >= 0) close(fd);
    fd = -1;
}

std::string self_exe() {
    char buf[4096];
    const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) throw std::runtime_error("cannot find the mhc executable (/proc/self/exe)");
    return std::string(buf, (size_t)n);
}

double peak_rss_mb() {
    std::string status;
    if (read_file("/proc/self/status", status)) {
        const size_t at = status.find("\nVmHWM:");  // "VmHWM:    1234 kB"
        if (at != std::string::npos) return std::strtod(status.c_str() + at + 7, nullptr) / 1024.0;
    }
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;  // KiB on Linux
}

std::string fmt_bytes(double bytes) {
    char buf[64];
    if (bytes >= 1024.0 * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.3g GiB", bytes / (1024.0 * 1024 * 1024));
    else if (bytes >= 1024.0 * 1024) std::snprintf(buf, sizeof buf, "%.0f MiB", bytes / (1024.0 * 1024));
    else std::snprintf(buf, sizeof buf, "%.0f KiB", bytes / 1024.0);
    return buf;
}

double memory_limit_bytes(std::string& what) {
    double best = -1;
    auto consider = [&](double bytes, const char* name) {
        if (bytes > 0 && (best < 0 || bytes < best)) best = bytes, what = name;
    };
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) consider((double)pages * page, "physical memory");
    for (const char* f : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
        std::string text;  // "max" (no limit) or a number of bytes
        if (read_file(f, text) && !text.empty() && text[0] >= '0' && text[0] <= '9')
            consider(std::strtod(text.c_str(), nullptr), "the cgroup's memory limit");
    }
    for (auto [res, name] : {std::pair{RLIMIT_AS, "RLIMIT_AS"}, std::pair{RLIMIT_DATA, "RLIMIT_DATA"}}) {
        struct rlimit rl {};
        if (getrlimit(res, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) consider((double)rl.rlim_cur, name);
    }
    return best;
}

}  // namespace mhc::sys
