// The comparison report: the table per variant, its definitions, and the plots, as report.md and
// as one HTML page (report.html) that shows the images by relative path.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "report/report.h"
#include "sys/file.h"

namespace mhc::report {

namespace {

std::string fixed(double v, int decimals) {
    if (!std::isfinite(v)) return "—";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    return buf;
}

std::string with_spread(const Spread& s) {
    if (s.n == 0) return "—";
    return s.n == 1 ? fixed(s.mean, 4) : fixed(s.mean, 4) + " ± " + fixed(s.std, 4);
}

std::string html_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            default: out += c;
        }
    }
    return out;
}

// Escaped text whose `quoted` parts become <code>.
std::string html_inline(const std::string& s) {
    std::string out;
    bool code = false;
    size_t at = 0, tick;
    while ((tick = s.find('`', at)) != std::string::npos) {
        out += html_escape(s.substr(at, tick - at)) + (code ? "</code>" : "<code>");
        code = !code;
        at = tick + 1;
    }
    out += html_escape(s.substr(at));
    return code ? out + "</code>" : out;
}

// The table as rows of cells (the header first), shared by the Markdown and the HTML.
std::vector<std::vector<std::string>> table_cells(const std::vector<VariantRow>& rows) {
    std::vector<std::vector<std::string>> t = {{"variant", "runs", "final val loss", "best val loss", "tokens/s",
                                                "peak RSS (MiB)", "max grad norm", "spikes"}};
    for (const VariantRow& r : rows) {
        std::string runs = std::to_string(r.runs);
        if (r.incomplete) runs += " (" + std::to_string(r.incomplete) + " incomplete)";
        std::string spikes = std::to_string(r.spikes);
        if (r.skipped) spikes += " (" + std::to_string(r.skipped) + " skipped)";
        t.push_back({r.variant, runs, with_spread(r.final_val), with_spread(r.best_val), fixed(r.tokens_per_s, 0),
                     fixed(r.peak_rss_mb, 0), fmt_num(r.max_grad_norm, 4), spikes});
    }
    return t;
}

std::vector<std::string> definitions(const std::vector<VariantRow>& rows) {
    int max_seeds = 0;
    for (const VariantRow& r : rows) max_seeds = std::max(max_seeds, r.runs);
    std::vector<std::string> d;
    d.push_back(max_seeds > 1 ? "Final / best val loss: the last / lowest validation loss of each run, as mean ± "
                                "sample standard deviation (n − 1) over the variant's seeds."
                              : "Final / best val loss: the last / lowest validation loss of the run (one seed, "
                                "so no spread).");
    d.push_back("tokens/s: median over the logged steps of all the variant's runs (each step's time without "
                "evaluation). Other load on the machine during a run moves this (mhc compare trains its runs one after "
                "another).");
    d.push_back("peak RSS: the largest `peak_rss_mb` (the training process's peak resident set, VmHWM) of the "
                "variant's runs; — when the metrics do not record it.");
    d.push_back("max grad norm: the largest global gradient norm before clipping over the logged steps.");
    char spike[400];
    std::snprintf(spike, sizeof spike,
                  "spikes, summed over the variant's runs: logged steps whose training loss exceeds the median of "
                  "the previous %d logged losses by more than %.0f%%, or whose gradient norm exceeds %.0f× the "
                  "median of the previous %d logged norms (tested from the %dth logged step on), plus steps whose "
                  "update was skipped as non-finite (shown in brackets). Only logged steps (every log_interval) "
                  "are seen.",
                  kSpikeWindow, 100 * kSpikeLossRise, kSpikeGradFactor, kSpikeWindow, kSpikeMinHistory + 1);
    d.push_back(spike);
    d.push_back("incomplete: the run's latest checkpoint is before its max_iters (it stopped early; running "
                "`mhc compare` again continues it).");
    return d;
}

std::string run_line(const RunData& r) {
    double last_val = NAN;
    for (const Record& x : r.records)
        if (std::isfinite(x.val_loss)) last_val = x.val_loss;
    std::string s = r.name + ": ";
    if (r.ckpt_step >= 0) s += "checkpoint at step " + std::to_string(r.ckpt_step);
    else s += "no checkpoint";
    if (r.max_iters > 0) s += " of " + std::to_string(r.max_iters);
    s += ", " + std::to_string(r.records.size()) + " logged steps, final val loss " + fixed(last_val, 4);
    if (r.bad_lines) s += ", " + std::to_string(r.bad_lines) + " unreadable metrics line(s) ignored";
    return s + " (" + r.dir + ")";
}

std::string markdown(const ReportInput& in, const ReportOutput& out, const std::vector<PlotFile>& drawn) {
    std::ostringstream md;
    md << "# mhc compare\n\n";
    for (const std::string& h : in.header) md << "- " << h << "\n";
    md << "\n" << out.markdown_table << "\n";
    for (const std::string& d : definitions(out.rows)) md << "- " << d << "\n";
    md << "\n## Plots\n\n";
    for (const PlotFile& p : drawn) md << "![" << p.name << "](" << p.name << ".png)\n\n" << p.caption << "\n\n";
    if (!out.gnuplot_found)
        md << "The plots were not drawn: gnuplot was not found. Their scripts and data are here (NAME.gp, "
              "NAME.dat): install gnuplot (Debian: gnuplot-nox) and run `mhc compare --report-only --out "
           << in.out_dir << "`.\n\n";
    for (const std::string& n : out.notes) md << "- " << n << "\n";
    for (const std::string& e : out.plot_errors) md << "- " << e << "\n";
    md << "\n## Runs\n\n";
    for (const RunData& r : in.runs) md << "- " << run_line(r) << "\n";
    return md.str();
}

std::string html(const ReportInput& in, const ReportOutput& out, const std::vector<PlotFile>& drawn) {
    std::ostringstream h;
    h << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>mhc compare</title>\n"
      << "<style>\nbody { font-family: sans-serif; max-width: 1000px; margin: 2em auto; padding: 0 1em; "
         "color: #222; }\ntable { border-collapse: collapse; margin: 1em 0; }\n"
         "th, td { border: 1px solid #bbb; padding: 4px 10px; }\ntd { text-align: right; }\n"
         "td:first-child { text-align: left; }\nth { background: #eee; }\nfigure { margin: 2em 0; }\n"
         "img { max-width: 100%; }\nfigcaption { color: #444; }\n</style>\n</head>\n<body>\n<h1>mhc compare</h1>\n<ul>\n";
    for (const std::string& l : in.header) h << "<li>" << html_escape(l) << "</li>\n";
    h << "</ul>\n<table>\n";
    const auto cells = table_cells(out.rows);
    for (size_t i = 0; i < cells.size(); i++) {
        h << "<tr>";
        for (const std::string& c : cells[i]) h << (i ? "<td>" : "<th>") << html_escape(c) << (i ? "</td>" : "</th>");
        h << "</tr>\n";
    }
    h << "</table>\n<ul>\n";
    for (const std::string& d : definitions(out.rows)) h << "<li>" << html_inline(d) << "</li>\n";
    h << "</ul>\n<h2>Plots</h2>\n";
    for (const PlotFile& p : drawn)
        h << "<figure>\n<img src=\"" << html_escape(p.name) << ".png\" alt=\"" << html_escape(p.name) << "\">\n"
          << "<figcaption>" << html_escape(p.caption) << "</figcaption>\n</figure>\n";
    if (!out.gnuplot_found)
        h << "<p>The plots were not drawn: gnuplot was not found. Their scripts and data are here (NAME.gp, NAME.dat): "
             "install gnuplot (Debian: gnuplot-nox) and run <code>mhc compare --report-only --out "
          << html_escape(in.out_dir) << "</code>.</p>\n";
    if (!out.notes.empty() || !out.plot_errors.empty()) {
        h << "<ul>\n";
        for (const std::string& n : out.notes) h << "<li>" << html_inline(n) << "</li>\n";
        for (const std::string& e : out.plot_errors) h << "<li>" << html_escape(e) << "</li>\n";
        h << "</ul>\n";
    }
    h << "<h2>Runs</h2>\n<ul>\n";
    for (const RunData& r : in.runs) h << "<li>" << html_escape(run_line(r)) << "</li>\n";
    h << "</ul>\n</body>\n</html>\n";
    return h.str();
}

}  // namespace

ReportOutput write_report(const ReportInput& in) {
    namespace fs = std::filesystem;
    fs::create_directories(in.out_dir);
    ReportOutput out;
    for (const std::string& v : in.variants) {
        std::vector<const RunData*> runs;
        for (const RunData& r : in.runs)
            if (r.variant == v) runs.push_back(&r);
        out.rows.push_back(summarize(v, runs));
    }
    const auto cells = table_cells(out.rows);
    std::ostringstream t;
    for (size_t i = 0; i < cells.size(); i++) {
        t << "|";
        for (const std::string& c : cells[i]) t << " " << c << " |";
        t << "\n";
        if (i == 0) {  // the variant column left-aligned, the numbers right-aligned
            t << "|---|";
            for (size_t j = 1; j < cells[0].size(); j++) t << "--:|";
            t << "\n";
        }
    }
    out.markdown_table = t.str();

    // Files of plots this report does not draw would look current: remove them first.
    for (const char* name : {"val_loss", "val_loss_time", "train_loss", "grad_norm", "depth_gain", "ds_error",
                             "orth_error", "depth_sigma2", "stream_similarity"})
        for (const char* ext : {".png", ".gp", ".dat"}) {
            std::error_code ec;
            fs::remove(in.out_dir + "/" + name + ext, ec);
        }
    const std::vector<PlotFile> plots = write_plot_scripts(in, out.notes);
    const std::vector<PlotFile> drawn = draw_plots(in.out_dir, plots, out.gnuplot_found, out.plot_errors);
    for (const PlotFile& p : drawn) out.pngs.push_back(p.name + ".png");
    sys::write_file_atomic(in.out_dir + "/report.md", markdown(in, out, drawn));
    sys::write_file_atomic(in.out_dir + "/report.html", html(in, out, drawn));
    return out;
}

}  // namespace mhc::report
