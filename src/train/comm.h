// The communicator of a training run: which rank this process is among how many, and the few
// transfers data-parallel training needs (src/train/data_parallel.cpp). Two backends: this process
// alone (comm_single.cpp) and MPI (comm_mpi.cpp); a GPU backend (NCCL) is a third implementation of
// the same struct, and the training loop does not change.
//
// Every rank calls the collectives in the same order. Point-to-point transfers are non-blocking:
// post them while the backward still runs, call progress() now and then, and wait_all() when the
// data is needed. Two transfers between the same pair of ranks are matched in the order posted.
//
// Failure (MPI): a rank that stops on an error calls report_failure(); the others, the next time
// they wait for anything, exit(1) quietly, so the error is one line, not one per rank. A rank that
// died without a word (killed, crashed) is noticed by the others waiting on it on the same host:
// the lowest surviving rank prints one line, and they all exit(1). No wait hangs on a dead peer.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace mhc {

struct Comm {
    int rank = 0, size = 1;
    virtual ~Comm() = default;
    virtual const char* backend() const = 0;  // "single", "mpi"

    // Non-blocking point-to-point transfers of floats (peer != rank).
    virtual void send(int peer, const float* data, long count) = 0;
    virtual void recv(int peer, float* data, long count) = 0;
    virtual void progress() = 0;  // lets posted transfers advance; never waits
    virtual void wait_all() = 0;  // returns when every posted transfer is done

    // Collectives.
    virtual void allreduce_sum(double* x, long count) = 0;         // in place
    virtual void broadcast(float* x, long count, int root) = 0;
    // In place: rank r's part of x is its counts[r] values at offset counts[0] + ... + counts[r-1];
    // on return every rank's x holds every part.
    virtual void allgatherv(float* x, const std::vector<long>& counts) = 0;
    // Every rank's `mine` (counts[rank] values) into the root's `all`, laid out as above.
    virtual void gatherv(const float* mine, float* all, const std::vector<long>& counts, int root) = 0;
    // all[r * bytes ..] := rank r's `mine`, on every rank.
    virtual void allgather(const void* mine, void* all, long bytes) = 0;
    virtual void barrier() = 0;

    // The orderly end of a successful run (all ranks): MPI_Finalize. Never called after a failure.
    virtual void finish() = 0;
    // This rank is stopping on an error: tells the others, and returns whether this rank should
    // print it (no lower rank failed at the same time; false means exit(1) without a word).
    virtual bool report_failure() = 0;
};

// The process's communicator, created on first use: MPI when a launcher started us (mpirun's
// OMPI_COMM_WORLD_SIZE, PMIx's PMIX_RANK, PMI's PMI_SIZE in the environment), else this process
// alone, so a plain `mhc train` never initialises MPI. Throws if launched by mpirun but built
// without MPI.
Comm& comm_world();

bool comm_launched_by_mpi();
std::unique_ptr<Comm> comm_single_open();
std::unique_ptr<Comm> comm_mpi_open();  // throws std::runtime_error when built without MPI

// Sums of doubles that only one rank contributes each (the others hold 0) are exact in any order:
// the losses of micro-batches and the gradient's per-block sums of squares are reduced this way,
// so every rank gets the same bits, the same as one process adding them in order.
bool comm_any(Comm& c, bool flag);  // true on every rank if it is true on any
long comm_max(Comm& c, long x);
// The non-empty `mine` of the lowest rank that has one (up to 1023 bytes), on every rank; "" when
// every rank's is empty. For a verdict all ranks must share and rank 0 reports.
std::string comm_first_message(Comm& c, const std::string& mine);

// MPI's counts and displacements are int, so a gather of parts (counts[r] values of rank r, laid
// end to end) goes in units of `unit` values: the largest power of two up to 2^14 that divides
// every part but the last (data parallelism's shards are whole runs of 16,384-value blocks, so
// 2^31 units are 3.5e13 values), with the last part's remainder under one unit, `tail` values,
// sent apart. counts and displs are in units. Throws std::runtime_error (one line) when a count
// or displacement passes 2^31 - 1 units.
struct GatherUnits {
    long unit = 1, tail = 0;
    std::vector<int> counts, displs;
};
GatherUnits comm_gather_units(const std::vector<long>& counts);

// Runs a command's body on this rank of comm_world(): finish() after it returns; if it throws,
// report_failure(), then either rethrow (this rank prints the error) or exit(1) quietly.
int comm_main(const std::function<int(Comm&)>& body);

}  // namespace mhc
