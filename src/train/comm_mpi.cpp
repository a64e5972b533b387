// The MPI communicator (Open MPI, MPICH, ...): one rank per process, started by mpirun or srun.
//
// Every operation is non-blocking underneath and finished by one wait loop, so that no rank can hang
// on a peer that is gone: while it waits, the loop looks for a failure notice from another rank
// (report_failure) and, every 100 ms, whether the ranks on this host are still alive. Collectives
// are MPI's own; the gradient exchange is point-to-point (data_parallel.cpp sums it in rank order).
#include "train/comm.h"

#include <stdexcept>

#ifndef MHC_HAVE_MPI

namespace mhc {
std::unique_ptr<Comm> comm_mpi_open() {
    throw std::runtime_error("started by an MPI launcher, but this mhc was built without MPI "
                             "(install libopenmpi-dev and rebuild)");
}
}  // namespace mhc

#else

#include <mpi.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>

#include "sys/file.h"

namespace mhc {

namespace {

constexpr int kTagData = 1, kTagFail = 2, kTagTail = 3;
constexpr long kChunk = 1L << 30;  // MPI counts are int: longer transfers go in pieces

using Clock = std::chrono::steady_clock;

struct PeerId {
    int pid = 0;
    char host[64] = {};
};

// A process of this host that is gone: no such pid, or a zombie its launcher has not reaped yet.
bool process_alive(int pid) {
    if (kill(pid, 0) != 0 && errno == ESRCH) return false;
    std::string stat;
    if (!sys::read_file("/proc/" + std::to_string(pid) + "/stat", stat)) return true;  // no /proc: trust kill
    const size_t paren = stat.rfind(')');
    return paren == std::string::npos || paren + 2 >= stat.size() ||
           (stat[paren + 2] != 'Z' && stat[paren + 2] != 'X');
}

// MPI_Type_contiguous of `unit` floats, committed (MPI_Type_free when done).
MPI_Datatype unit_type(long unit) {
    MPI_Datatype t;
    MPI_Type_contiguous((int)unit, MPI_FLOAT, &t);
    MPI_Type_commit(&t);
    return t;
}

struct MpiComm final : Comm {
    std::vector<MPI_Request> pending;  // posted point-to-point transfers
    MPI_Request fail_req = MPI_REQUEST_NULL;
    int fail_from = -1;                // the rank a failure notice came from
    int me = 0;                        // the payload of our own failure notices
    std::vector<PeerId> peers;

    MpiComm() {
        int provided = 0;
        MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);  // only the main thread talks
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        me = rank;
        MPI_Irecv(&fail_from, 1, MPI_INT, MPI_ANY_SOURCE, kTagFail, MPI_COMM_WORLD, &fail_req);
        PeerId id;
        id.pid = (int)getpid();
        gethostname(id.host, sizeof id.host - 1);
        std::vector<PeerId> all(size);
        allgather(&id, all.data(), sizeof id);
        peers = std::move(all);
    }

    const char* backend() const override { return "mpi"; }

    void send(int peer, const float* data, long count) override {
        for (long at = 0; at < count; at += kChunk) {
            pending.emplace_back();
            MPI_Isend(data + at, (int)std::min(kChunk, count - at), MPI_FLOAT, peer, kTagData, MPI_COMM_WORLD,
                      &pending.back());
        }
    }
    void recv(int peer, float* data, long count) override {
        for (long at = 0; at < count; at += kChunk) {
            pending.emplace_back();
            MPI_Irecv(data + at, (int)std::min(kChunk, count - at), MPI_FLOAT, peer, kTagData, MPI_COMM_WORLD,
                      &pending.back());
        }
    }
    void progress() override {
        int done = 0;
        if (!pending.empty()) MPI_Testall((int)pending.size(), pending.data(), &done, MPI_STATUSES_IGNORE);
        if (done) pending.clear();
        if (notice_arrived()) quiet_exit();
    }
    void wait_all() override { wait(pending); }

    void allreduce_sum(double* x, long count) override {
        std::vector<MPI_Request> r(1);
        MPI_Iallreduce(MPI_IN_PLACE, x, (int)count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &r[0]);
        wait(r);
    }
    void broadcast(float* x, long count, int root) override {
        std::vector<MPI_Request> r;
        for (long at = 0; at < count; at += kChunk) {
            r.emplace_back();
            MPI_Ibcast(x + at, (int)std::min(kChunk, count - at), MPI_FLOAT, root, MPI_COMM_WORLD, &r.back());
        }
        wait(r);
    }
    // In units (comm_gather_units), then the last rank's tail.
    void allgatherv(float* x, const std::vector<long>& counts) override {
        const GatherUnits g = comm_gather_units(counts);
        MPI_Datatype t = unit_type(g.unit);
        std::vector<MPI_Request> r(1);
        MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, g.counts.data(), g.displs.data(), t, MPI_COMM_WORLD,
                        &r[0]);
        wait(r);
        MPI_Type_free(&t);
        if (g.tail) broadcast(x + total(counts) - g.tail, g.tail, size - 1);
    }
    void gatherv(const float* mine, float* all, const std::vector<long>& counts, int root) override {
        const GatherUnits g = comm_gather_units(counts);
        MPI_Datatype t = unit_type(g.unit);
        std::vector<MPI_Request> r(1);
        MPI_Igatherv(mine, g.counts[rank], t, all, g.counts.data(), g.displs.data(), t, root, MPI_COMM_WORLD, &r[0]);
        wait(r);
        MPI_Type_free(&t);
        const int last = size - 1;
        if (!g.tail || (rank != last && rank != root)) return;
        // Each pointer is made only on the rank whose buffer holds that tail (no pointer past a buffer).
        if (rank == last && rank == root) {
            std::copy(mine + counts[last] - g.tail, mine + counts[last], all + total(counts) - g.tail);
            return;
        }
        r.emplace_back();  // under 2^14 values: one message, with a tag of its own
        if (rank == last)
            MPI_Isend(mine + counts[last] - g.tail, (int)g.tail, MPI_FLOAT, root, kTagTail, MPI_COMM_WORLD, &r[0]);
        else
            MPI_Irecv(all + total(counts) - g.tail, (int)g.tail, MPI_FLOAT, last, kTagTail, MPI_COMM_WORLD, &r[0]);
        wait(r);
    }
    void allgather(const void* mine, void* all, long bytes) override {
        std::vector<MPI_Request> r(1);
        MPI_Iallgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, MPI_COMM_WORLD, &r[0]);
        wait(r);
    }
    void barrier() override {
        std::vector<MPI_Request> r(1);
        MPI_Ibarrier(MPI_COMM_WORLD, &r[0]);
        wait(r);
    }

    void finish() override {
        barrier();  // every rank got here: none of them failed
        MPI_Cancel(&fail_req);
        MPI_Wait(&fail_req, MPI_STATUS_IGNORE);
        MPI_Finalize();
    }

    bool report_failure() override {
        std::vector<MPI_Request> sends;
        for (int p = 0; p < size; p++) {
            if (p == rank) continue;
            sends.emplace_back();
            MPI_Isend(&me, 1, MPI_INT, p, kTagFail, MPI_COMM_WORLD, &sends.back());
        }
        // Ranks that fail together (a bad config, the same bad file) do so within milliseconds:
        // listen a moment for a lower one, which then speaks for all.
        int lowest = rank;
        const auto until = Clock::now() + std::chrono::milliseconds(300);
        while (Clock::now() < until) {
            if (notice_arrived()) lowest = std::min(lowest, fail_from), repost_notice();
            int done = 0;
            if (!sends.empty()) MPI_Testall((int)sends.size(), sends.data(), &done, MPI_STATUSES_IGNORE);
            usleep(1000);
        }
        return lowest == rank;
    }

  private:
    bool notice_arrived() {
        int flag = 0;
        if (fail_req != MPI_REQUEST_NULL) MPI_Test(&fail_req, &flag, MPI_STATUS_IGNORE);
        return flag != 0;
    }
    static long total(const std::vector<long>& counts) {
        long n = 0;
        for (long c : counts) n += c;
        return n;
    }
    void repost_notice() { MPI_Irecv(&fail_from, 1, MPI_INT, MPI_ANY_SOURCE, kTagFail, MPI_COMM_WORLD, &fail_req); }

    // Another rank has reported its error and speaks for all: leave without a word.
    [[noreturn]] static void quiet_exit() {
        std::fflush(nullptr);
        _exit(1);
    }

    // A rank of this host that is gone. The lowest one still alive says so; all leave.
    void check_peers() {
        for (int r = 0; r < (int)peers.size(); r++) {
            if (r == rank || std::strcmp(peers[r].host, peers[rank].host) != 0 || process_alive(peers[r].pid))
                continue;
            if (notice_arrived()) quiet_exit();  // it failed and said so before it went
            int speaker = rank;
            for (int q = 0; q < rank && speaker == rank; q++)
                if (std::strcmp(peers[q].host, peers[rank].host) == 0 && process_alive(peers[q].pid)) speaker = q;
            if (speaker == rank)
                std::fprintf(stderr, "mhc train: rank %d of %d (pid %d) died: every rank stops; the last "
                             "checkpoint is intact (continue with --resume)\n", r, size, peers[r].pid);
            quiet_exit();
        }
    }

    void wait(std::vector<MPI_Request>& reqs) {
        auto next_check = Clock::now() + std::chrono::milliseconds(100);
        for (;;) {
            int done = 0;
            MPI_Testall((int)reqs.size(), reqs.data(), &done, MPI_STATUSES_IGNORE);
            if (done) break;
            if (notice_arrived()) quiet_exit();
            if (Clock::now() >= next_check) {
                if (!peers.empty()) check_peers();
                next_check = Clock::now() + std::chrono::milliseconds(100);
            }
            sched_yield();  // share the core when ranks outnumber cores
        }
        reqs.clear();
    }
};

}  // namespace

std::unique_ptr<Comm> comm_mpi_open() { return std::make_unique<MpiComm>(); }

}  // namespace mhc

#endif
