// The communicator of one process: rank 0 of 1. Collectives leave the data as it is; there is no
// peer to send to. Also the choice of backend (comm_world) and the helpers built on any backend.
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "train/comm.h"

namespace mhc {

namespace {

struct SingleComm final : Comm {
    const char* backend() const override { return "single"; }
    void send(int peer, const float*, long) override { no_peer(peer); }
    void recv(int peer, float*, long) override { no_peer(peer); }
    void progress() override {}
    void wait_all() override {}
    void allreduce_sum(double*, long) override {}
    void broadcast(float*, long, int) override {}
    void allgatherv(float*, const std::vector<long>&) override {}
    void gatherv(const float* mine, float* all, const std::vector<long>& counts, int) override {
        if (mine != all) std::memmove(all, mine, counts[0] * sizeof(float));
    }
    void allgather(const void* mine, void* all, long bytes) override { std::memmove(all, mine, bytes); }
    void barrier() override {}
    void finish() override {}
    bool report_failure() override { return true; }
    static void no_peer(int peer) {
        throw std::logic_error("single-process communicator: no rank " + std::to_string(peer) + " to talk to");
    }
};

}  // namespace

std::unique_ptr<Comm> comm_single_open() { return std::make_unique<SingleComm>(); }

bool comm_launched_by_mpi() {
    for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"})
        if (std::getenv(var)) return true;
    return false;
}

Comm& comm_world() {
    // Never destroyed: MPI_Finalize belongs to the success path (finish), not to exit.
    static Comm* world = (comm_launched_by_mpi() ? comm_mpi_open() : comm_single_open()).release();
    return *world;
}

GatherUnits comm_gather_units(const std::vector<long>& counts) {
    GatherUnits g;
    g.unit = 1L << 14;
    for (size_t r = 0; r + 1 < counts.size(); r++)
        while (counts[r] % g.unit) g.unit /= 2;
    g.tail = counts.empty() ? 0 : counts.back() % g.unit;
    long at = 0;
    for (long c : counts) {
        const long units = c / g.unit;
        if (units > INT_MAX || at > INT_MAX)
            throw std::runtime_error("a gather of parts of " + std::to_string(c) + " values in units of " +
                                     std::to_string(g.unit) + ": more than MPI's 2^31 - 1 units");
        g.counts.push_back((int)units);
        g.displs.push_back((int)at);
        at += units;
    }
    return g;
}

bool comm_any(Comm& c, bool flag) {
    double x = flag ? 1 : 0;
    c.allreduce_sum(&x, 1);
    return x > 0;
}

long comm_max(Comm& c, long x) {
    std::vector<long> all(c.size);
    c.allgather(&x, all.data(), sizeof x);
    long m = x;
    for (long v : all) m = v > m ? v : m;
    return m;
}

std::string comm_first_message(Comm& c, const std::string& mine) {
    constexpr size_t kLen = 1024;
    std::vector<char> all(kLen * c.size), own(kLen, '\0');
    std::memcpy(own.data(), mine.data(), std::min(mine.size(), kLen - 1));
    c.allgather(own.data(), all.data(), kLen);
    for (int r = 0; r < c.size; r++)
        if (all[r * kLen]) return std::string(&all[r * kLen]);
    return "";
}

int comm_main(const std::function<int(Comm&)>& body) {
    Comm& comm = comm_world();
    int rc;
    try {
        rc = body(comm);
    } catch (const std::exception&) {
        if (!comm.report_failure()) {  // a lower rank prints the error for all
            std::fflush(nullptr);
            _exit(1);
        }
        throw;
    }
    comm.finish();
    return rc;
}

}  // namespace mhc
