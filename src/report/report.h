// Comparison reports (`mhc compare`): runs' metrics.jsonl read back, the summary table per
// variant, plots drawn by gnuplot, and report.md / report.html. Internal to the command line.
//
// Files: metrics.cpp (reading runs, the table's statistics), plots.cpp (gnuplot data and scripts),
// report.cpp (Markdown, HTML, and the whole report). Child processes (gnuplot) come from sys/process.h.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace mhc::report {

// One line of metrics.jsonl (schemas.md). Missing or null numbers are NaN.
struct Record {
    long step = 0, tokens = 0;
    double loss = NAN, grad_norm = NAN, tokens_per_s = NAN, val_loss = NAN, peak_rss_mb = NAN;
    double time_s = NAN;  // wall-clock seconds since the run started (over its resumes)
    bool skipped = false;
};

// One site of a `diag` record (SPEC §6).
struct SiteDiag {
    int site = 0;
    std::string kind;  // attn or mlp
    double ds_error_mean = NAN, ds_error_max = NAN;
    double depth_fwd_gain_mean = NAN, depth_fwd_gain_max = NAN, depth_bwd_gain_mean = NAN, depth_bwd_gain_max = NAN;
    double orth_error_mean = NAN, orth_error_max = NAN;
    double depth_sigma2_mean = NAN, depth_sigma2_max = NAN, stream_similarity = NAN;  // n >= 2 only
};

// A run directory <variant>-s<seed>, as far as the report needs it.
struct RunData {
    std::string name, dir, variant;
    uint64_t seed = 0;
    std::vector<Record> records;
    long diag_step = -1;          // step of the last record with `diag` (-1: none)
    std::vector<SiteDiag> diag;   // its sites
    long ckpt_step = -1;          // step of the checkpoint `latest` names (-1: none)
    long max_iters = -1;          // from the run's config.toml (-1: unknown)
    int bad_lines = 0;            // metrics lines that were not JSON objects (a torn last line)
    // Known to have stopped before max_iters (interrupted, failed, or still to be continued).
    bool incomplete() const { return max_iters > 0 && ckpt_step < max_iters; }
};

// "mhc_lite-s2" -> ("mhc_lite", 2); false if the name is not of that form.
bool parse_run_name(const std::string& name, std::string& variant, uint64_t& seed);
std::string run_name(const std::string& variant, uint64_t seed);

// Reads a run directory. Throws std::runtime_error (one line) if metrics.jsonl cannot be read.
RunData read_run(const std::string& dir, const std::string& variant, uint64_t seed);

// Spikes (documented in the report): a logged step counts when its update was skipped as
// non-finite, or, with at least kSpikeMinHistory logged steps before it, when its training loss
// exceeds the median of the previous kSpikeWindow logged losses by more than kSpikeLossRise
// (relative), or its gradient norm exceeds kSpikeGradFactor times their median.
constexpr int kSpikeWindow = 10, kSpikeMinHistory = 5;
constexpr double kSpikeLossRise = 0.10, kSpikeGradFactor = 10.0;
int count_spikes(const std::vector<Record>& records);

// Mean and sample standard deviation (n - 1) of the finite values; n = how many there were.
struct Spread {
    double mean = NAN, std = NAN;
    int n = 0;
};
Spread spread_of(const std::vector<double>& v);
double median_of(std::vector<double> v);  // NaN when empty; NaNs are ignored

// One row of the table: a variant over its seeds.
struct VariantRow {
    std::string variant;
    int runs = 0, incomplete = 0;
    Spread final_val, best_val;  // last and lowest val_loss of each run
    double tokens_per_s = NAN;   // median of the logged steps' tokens_per_s over all its runs
    double peak_rss_mb = NAN;    // max over its runs
    double max_grad_norm = NAN;  // max over the logged steps of all its runs
    int spikes = 0, skipped = 0; // summed over its runs
};
VariantRow summarize(const std::string& variant, const std::vector<const RunData*>& runs);

struct ReportInput {
    std::string out_dir;
    std::vector<std::string> variants;  // row order
    std::vector<RunData> runs;
    std::vector<std::string> header;    // lines describing the comparison (config, data, command)
};

struct ReportOutput {
    std::vector<VariantRow> rows;
    std::vector<std::string> pngs;      // file names in out_dir, drawn
    std::vector<std::string> notes;     // plots skipped and why
    bool gnuplot_found = true;
    std::vector<std::string> plot_errors;  // gnuplot failed on a script (one line each)
    std::string markdown_table;
};

// Writes out_dir/report.md, report.html and, per plot, NAME.dat + NAME.gp, then runs gnuplot on
// the scripts to draw NAME.png. Without gnuplot the text files are still written
// (gnuplot_found = false). Throws std::runtime_error if a file cannot be written.
ReportOutput write_report(const ReportInput& in);

// ---- pieces shared between the report's files ----

// One plot: its .dat and .gp are written; draw_plots() turns scripts into PNGs.
struct PlotFile {
    std::string name;     // file stem: NAME.gp, NAME.dat, NAME.png
    std::string caption;  // for report.md / report.html
};
// Writes the plots' .dat and .gp files into out_dir; plots without data become notes.
std::vector<PlotFile> write_plot_scripts(const ReportInput& in, std::vector<std::string>& notes);
// Runs gnuplot on each NAME.gp in out_dir; returns the ones whose NAME.png was drawn.
std::vector<PlotFile> draw_plots(const std::string& out_dir, const std::vector<PlotFile>& plots,
                                 bool& gnuplot_found, std::vector<std::string>& errors);

std::string fmt_num(double v, int sig = 4);  // "—" for NaN

}  // namespace mhc::report
