// The report's plots: per plot a data file (NAME.dat) and a gnuplot script (NAME.gp) that a user
// can restyle and rerun, then gnuplot draws NAME.png. Lines are one per variant (the mean over its
// seeds, thick) with each seed thin in the same colour when there are several.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "mhc/variant.h"
#include "report/report.h"
#include "sys/file.h"
#include "sys/process.h"

namespace mhc::report {

namespace {

const char* colour_of(const std::string& variant) {
    const VariantInfo* info = variant_find(variant);
    return info ? info->colour : "#9467bd";
}

// "none, mhc_lite and kromhc": the keys of the variants whose mixing passes `pred`.
std::string keys_where(bool (*pred)(Mixing)) {
    std::vector<std::string> keys;
    for (const VariantInfo& i : variant_table())
        if (pred(i.mixing)) keys.push_back(i.key);
    std::string out;
    for (size_t k = 0; k < keys.size(); k++) out += (k ? (k + 1 == keys.size() ? " and " : ", ") : "") + keys[k];
    return out;
}

// The variants whose composite gain is exactly 1.
std::string exact_gain_variants() {
    return keys_where([](Mixing m) { return m == Mixing::identity || m == Mixing::exact_ds; });
}

std::string ds_variant_keys() {
    std::string out;
    for (const VariantInfo& i : variant_table())
        if (is_doubly_stochastic(i.mixing)) out += (out.empty() ? "" : ", ") + std::string(i.key);
    return out;
}

constexpr double kLogFloor = 1e-16;  // zeros on a log axis are drawn here (said in the caption)

std::string g(double v) {  // a number for a .dat file; gnuplot reads NaN as a gap
    if (!std::isfinite(v)) return "NaN";
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
}

std::string quoted(const std::string& s) {  // a gnuplot double-quoted string
    std::string out = "\"";
    for (char c : s) out += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
    return out + "\"";
}

std::string preamble(const std::string& name, const std::string& title, const std::string& xlabel,
                     const std::string& ylabel) {
    std::ostringstream s;
    s << "# Drawn by `mhc compare`. Redraw (after restyling) with: gnuplot " << name << ".gp   (in this directory)\n"
      << "# Data: " << name << ".dat, one block per line group (`index i`); lines starting with # are comments.\n"
      << "if (strstrt(GPVAL_TERMINALS, \"pngcairo\") > 0) {\n"
      << "    set terminal pngcairo size 960,600 noenhanced font \"sans,11\"\n"
      << "} else {\n"
      << "    set terminal png size 960,600 noenhanced\n"
      << "}\n"
      << "set output " << quoted(name + ".png") << "\n"
      << "set title " << quoted(title) << "\n"
      << "set xlabel " << quoted(xlabel) << "\n"
      << "set ylabel " << quoted(ylabel) << "\n"
      << "set grid\nset key outside right top\n"
      << (xlabel == "tokens" ? "set format x \"%.1s%c\"\nset xtics rotate by -30\n" : "");  // 1.2M, not 1.2e+06
    return s.str();
}

// A log y axis over [lo, hi] (the data's range, widened by `pad`), set explicitly: a flat line
// (mhc-lite's gain is exactly 1) would give gnuplot an empty range. Over less than three decades
// gnuplot would label only the powers of ten, so the ticks are listed: 1, 2, 5 (or 1..9) times them.
std::string log_axis(double lo, double hi, double pad) {
    std::ostringstream s;
    lo /= pad, hi *= pad;
    s << "set logscale y\nset yrange [" << g(lo) << ":" << g(hi) << "]\n";
    if (hi / lo >= 1000) return s.str() + "set format y \"%.0e\"\n";
    for (const std::vector<int>& mult : {std::vector<int>{1, 2, 5}, std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8, 9}}) {
        std::vector<double> ticks;
        for (double d = std::pow(10.0, std::floor(std::log10(lo))); d <= hi; d *= 10)
            for (int m : mult)
                if (m * d >= lo && m * d <= hi) ticks.push_back(m * d);
        if (ticks.size() < 3 && mult.size() == 3) continue;
        s << "set format y \"%g\"\nset ytics (";
        for (size_t i = 0; i < ticks.size(); i++) s << (i ? ", " : "") << g(ticks[i]);
        s << ")\n";
        break;
    }
    return s.str();
}

// Points of one run for a series plot: (step, x, y).
struct Point {
    long step;
    double x, y;
};
using Extract = std::function<std::vector<Point>(const RunData&)>;

// A series plot (x vs y per variant). Returns false if no run has any point.
bool series_plot(const ReportInput& in, const std::string& name, const std::string& title,
                 const std::string& xlabel, const std::string& ylabel, bool logy, bool points,
                 const Extract& extract) {
    std::ostringstream dat, plot;
    double lo = INFINITY, hi = -INFINITY;
    dat << "# " << name << ".dat: " << title << "\n# columns: " << xlabel << ", mean over seeds, then each seed\n";
    int index = 0;
    for (const std::string& v : in.variants) {
        std::vector<const RunData*> runs;
        for (const RunData& r : in.runs)
            if (r.variant == v) runs.push_back(&r);
        std::map<long, std::pair<double, std::vector<double>>> rows;  // step -> (sum of x, per-seed y)
        std::map<long, int> xs;  // step -> runs in that sum: x is their mean (seeds' times differ, tokens do not)
        for (size_t i = 0; i < runs.size(); i++)
            for (const Point& p : extract(*runs[i])) {
                if (!std::isfinite(p.y) || (logy && p.y <= 0)) continue;
                auto& row = rows[p.step];
                if (row.second.empty()) row.second.assign(runs.size(), NAN);
                row.first += p.x;
                xs[p.step]++;
                row.second[i] = p.y;
                lo = std::min(lo, p.y), hi = std::max(hi, p.y);
            }
        if (rows.empty()) continue;
        dat << "# index " << index << ": " << v << " (seeds";
        for (const RunData* r : runs) dat << " " << r->seed;
        dat << ")\n";
        for (const auto& [step, row] : rows) {
            dat << g(row.first / xs[step]) << " " << g(spread_of(row.second).mean);
            for (double y : row.second) dat << " " << g(y);
            dat << "\n";
        }
        dat << "\n\n";
        const std::string c = quoted(colour_of(v));
        const std::string label = runs.size() > 1 ? v + " (mean of " + std::to_string(runs.size()) + " seeds)" : v;
        plot << (index ? ", \\\n     " : "plot ") << quoted(name + ".dat") << " index " << index
             << " using 1:2 with " << (points ? "linespoints pt 7 ps 0.7" : "lines") << " lw 2.5 lc rgb " << c
             << " title " << quoted(label);
        for (size_t i = 0; runs.size() > 1 && i < runs.size(); i++)
            plot << ", \\\n     \"\" index " << index << " using 1:" << 3 + i << " with lines lw 0.8 lc rgb " << c
                 << " notitle";
        index++;
    }
    if (index == 0) return false;
    sys::write_file_atomic(in.out_dir + "/" + name + ".dat", dat.str());
    sys::write_file_atomic(in.out_dir + "/" + name + ".gp", preamble(name, title, xlabel, ylabel) +
                                                                 (logy ? log_axis(lo, hi, 1.1) : "") + plot.str() + "\n");
    return true;
}

// A per-site plot from each run's last `diag` record: one or two quantities (solid, dashed) per
// variant, mean over the seeds that have diagnostics; on a log y axis values below kLogFloor are
// drawn at it, a linear one (logy false: similarities) runs up to 1.05. A variant whose diagnostics
// lack the quantity (σ_2 of a single stream) is left out.
struct SiteSeries {
    const char* label;
    double SiteDiag::*field;  // null: no second quantity
};

bool site_plot(const ReportInput& in, const std::vector<std::string>& variants, const std::string& name,
               const std::string& title, const std::string& ylabel, SiteSeries a, SiteSeries b, bool logy,
               std::vector<std::string>& without_diag, long& first_step, long& last_step) {
    std::ostringstream dat, plot;
    const double ymin = logy ? kLogFloor : -INFINITY;
    dat << "# " << name << ".dat: " << title << "\n# columns: site, " << a.label << (b.field ? ", " : "")
        << (b.field ? b.label : "") << " (each the mean over the seeds with diagnostics"
        << (logy ? "; values below " + g(kLogFloor) + " written as it" : "") << ")\n";
    int index = 0;
    double lo = INFINITY, hi = -INFINITY;
    for (const std::string& v : variants) {
        std::map<int, std::pair<std::vector<double>, std::vector<double>>> sites;
        int seeds = 0;
        bool any = false;
        for (const RunData& r : in.runs) {
            if (r.variant != v || r.diag.empty()) continue;
            seeds++;
            first_step = std::min(first_step, r.diag_step);
            last_step = std::max(last_step, r.diag_step);
            for (const SiteDiag& s : r.diag) {
                sites[s.site].first.push_back(s.*a.field);
                sites[s.site].second.push_back(b.field ? s.*b.field : NAN);
                any = any || std::isfinite(s.*a.field);
            }
        }
        if (sites.empty()) without_diag.push_back(v);
        if (!any) continue;
        dat << "# index " << index << ": " << v << " (" << seeds << (seeds == 1 ? " seed" : " seeds") << ")\n";
        for (const auto& [site, vals] : sites) {
            const double ya = std::max(spread_of(vals.first).mean, ymin);
            const double yb = std::max(spread_of(vals.second).mean, ymin);
            for (double y : {ya, yb})
                if (std::isfinite(y)) lo = std::min(lo, y), hi = std::max(hi, y);
            dat << site << " " << g(ya);
            if (b.field) dat << " " << g(yb);
            dat << "\n";
        }
        dat << "\n\n";
        const std::string c = quoted(colour_of(v));
        plot << (index ? ", \\\n     " : "plot ") << quoted(name + ".dat") << " index " << index
             << " using 1:2 with linespoints pt 7 ps 0.8 lw 2.5 lc rgb " << c << " title "
             << quoted(b.field ? v + " " + a.label : v);
        if (b.field)
            plot << ", \\\n     \"\" index " << index << " using 1:3 with linespoints pt 6 ps 0.8 lw 1.5 dt 2 lc rgb "
                 << c << " title " << quoted(v + " " + b.label);
        index++;
    }
    if (index == 0) return false;
    std::ostringstream range;
    if (logy) range << log_axis(lo, hi, 2);
    else range << "set yrange [" << g(std::min(lo, 0.0)) << ":1.05]\n";
    range << "set xtics 1\nset xrange [-0.5:*]\n";
    sys::write_file_atomic(in.out_dir + "/" + name + ".dat", dat.str());
    sys::write_file_atomic(in.out_dir + "/" + name + ".gp",
                           preamble(name, title, "site (2k = block k attention, 2k+1 = block k MLP)", ylabel) +
                               range.str() + plot.str() + "\n");
    return true;
}

std::string step_phrase(long first, long last) {
    if (first > last) return "";
    return first == last ? " at step " + std::to_string(last)
                         : " at steps " + std::to_string(first) + "–" + std::to_string(last);
}

std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size(); i++) s += (i ? ", " : "") + v[i];
    return s;
}

}  // namespace

std::vector<PlotFile> write_plot_scripts(const ReportInput& in, std::vector<std::string>& notes) {
    std::vector<PlotFile> plots;
    if (series_plot(in, "val_loss", "Validation loss vs tokens", "tokens", "validation loss", false, true,
                    [](const RunData& r) {
                        std::vector<Point> p;
                        for (const Record& x : r.records)
                            if (std::isfinite(x.val_loss)) p.push_back({x.step, (double)x.tokens, x.val_loss});
                        return p;
                    }))
        plots.push_back({"val_loss", "Validation loss against training tokens, at each evaluation."});
    else
        notes.push_back("No validation-loss plot: no run has a val_loss record.");
    // The same against wall-clock time: what a variant's extra cost per token buys.
    if (series_plot(in, "val_loss_time", "Validation loss vs wall-clock time", "wall-clock time (s)", "validation loss",
                    false, true, [](const RunData& r) {
                        std::vector<Point> p;
                        for (const Record& x : r.records)
                            if (std::isfinite(x.val_loss) && std::isfinite(x.time_s))
                                p.push_back({x.step, x.time_s, x.val_loss});
                        return p;
                    }))
        plots.push_back({"val_loss_time", "Validation loss against wall-clock time since each run started (over its "
                                          "resumes; mhc compare trains its runs one after another), at each evaluation. "
                                          "Seeds are averaged at equal steps, at the mean of their times."});
    else
        notes.push_back("No validation-loss-vs-time plot: no run has val_loss records with time_s (runs from before "
                        "mhc logged it).");

    // Training loss, smoothed: trailing mean over k logged steps, k from the longest run.
    size_t longest = 0;
    for (const RunData& r : in.runs) longest = std::max(longest, r.records.size());
    const size_t k = std::clamp<size_t>(longest / 20, 1, 50);
    if (series_plot(in, "train_loss", "Training loss (smoothed) vs step", "step", "training loss", false, false,
                    [k](const RunData& r) {
                        std::vector<Point> p;
                        std::vector<double> window;
                        for (const Record& x : r.records) {
                            if (!std::isfinite(x.loss)) continue;
                            window.push_back(x.loss);
                            if (window.size() > k) window.erase(window.begin());
                            p.push_back({x.step, (double)x.step, spread_of(window).mean});
                        }
                        return p;
                    }))
        plots.push_back({"train_loss", "Training loss against step, smoothed by a trailing mean over " +
                                           std::to_string(k) + " logged step" + (k == 1 ? "" : "s") + "."});
    else
        notes.push_back("No training-loss plot: no run has a finite training loss.");

    if (series_plot(in, "grad_norm", "Gradient norm (before clipping) vs step", "step", "gradient norm", true, false,
                    [](const RunData& r) {
                        std::vector<Point> p;
                        for (const Record& x : r.records) p.push_back({x.step, (double)x.step, x.grad_norm});
                        return p;
                    }))
        plots.push_back({"grad_norm", "Global gradient norm before clipping, at each logged step (log scale)."});

    const std::string how = "the runs' metrics.jsonl have no `diag` records (mhc train writes them every "
                            "diag_interval steps)";
    std::vector<std::string> no_diag;
    long s0 = LONG_MAX, s1 = LONG_MIN;
    if (site_plot(in, in.variants, "depth_gain", "Composite gain through depth (max over tokens), end of training",
                  "gain of A_k...A_1", {"forward", &SiteDiag::depth_fwd_gain_max},
                  {"backward", &SiteDiag::depth_bwd_gain_max}, true, no_diag, s0, s1))
        plots.push_back({"depth_gain", "Forward (max row sum, solid) and backward (max column sum, dashed) gain of "
                                       "the composite residual map A_k…A_1 up to each site, max over the tokens of the "
                                       "diagnostics batch, from each run's last diagnostics" + step_phrase(s0, s1) +
                                       "; mean over seeds; log scale (SPEC §6). Equal lines overlap (exactly 1 for "
                                       + exact_gain_variants() + "); the last variant is drawn on top." +
                                       (no_diag.empty() ? "" : " No diagnostics for: " + join(no_diag) + ".")});
    else
        notes.push_back("No composite-gain plot: " + how + ".");

    std::vector<std::string> ds_variants;  // the doubly stochastic ones: the DS error is their guarantee
    for (const std::string& v : in.variants)
        if (const VariantInfo* info = variant_find(v); info && is_doubly_stochastic(info->mixing))
            ds_variants.push_back(v);
    no_diag.clear();
    s0 = LONG_MAX, s1 = LONG_MIN;
    if (ds_variants.empty())
        notes.push_back("No DS-error plot: no doubly stochastic variant (" + ds_variant_keys() +
                        ") is in this comparison.");
    else if (site_plot(in, ds_variants, "ds_error", "Doubly-stochastic error of H_res per site, end of training",
                       "DS error", {"max", &SiteDiag::ds_error_max}, {"mean", &SiteDiag::ds_error_mean}, true,
                       no_diag, s0, s1))
        plots.push_back({"ds_error", "DS error of H_res (max |row or column sum − 1|, plus the most negative entry; "
                                     "SPEC §6) per site: max (solid) and mean (dashed) over the tokens, from the last "
                                     "diagnostics" + step_phrase(s0, s1) + ", mean over seeds; log scale. Values "
                                     "below 1e-16, exact zeros included, are drawn at 1e-16." +
                                     (no_diag.empty() ? "" : " No diagnostics for: " + join(no_diag) + ".")});
    else
        notes.push_back("No DS-error plot: " + how + ".");

    // The orthogonal family's guarantee and what separates the two families: stream collapse.
    auto suffix = [&](const std::vector<std::string>& none) {
        return step_phrase(s0, s1) + ", mean over seeds" + (none.empty() ? "" : "; no diagnostics for: " + join(none));
    };
    no_diag.clear();
    s0 = LONG_MAX, s1 = LONG_MIN;
    if (site_plot(in, in.variants, "orth_error", "Orthogonality error of H_res per site, end of training",
                  "orthogonality error", {"max", &SiteDiag::orth_error_max}, {"mean", &SiteDiag::orth_error_mean},
                  true, no_diag, s0, s1))
        plots.push_back({"orth_error", "Orthogonality error of H_res (max |HᵀH − I|; SPEC §6) per site: max (solid) "
                                       "and mean (dashed) over the tokens, from the last diagnostics" + suffix(no_diag) +
                                       "; log scale. It is the guarantee of " + keys_where(is_orthogonal) +
                                       " (exact for jpmhc only with cayley_iters = 0). Values below 1e-16, exact "
                                       "zeros included, are drawn at 1e-16."});
    else
        notes.push_back("No orthogonality-error plot: " + how + ".");
    no_diag.clear();
    s0 = LONG_MAX, s1 = LONG_MIN;
    if (site_plot(in, in.variants, "depth_sigma2", "Second singular value of the composite map through depth",
                  "sigma_2 of A_k...A_1 (mean over tokens)", {"sigma_2", &SiteDiag::depth_sigma2_mean}, {"", nullptr},
                  true, no_diag, s0, s1))
        plots.push_back({"depth_sigma2", "σ_2, the second largest singular value of the composite residual map "
                                         "A_k…A_1 up to each site, mean over the tokens of the diagnostics batch, "
                                         "from the last diagnostics" + suffix(no_diag) + "; log scale (SPEC §6). "
                                         "σ_2 falling with depth is stream collapse: the map shrinks the differences "
                                         "between streams; an orthogonal map keeps it at 1. Variants with one stream "
                                         "have no σ_2."});
    else
        notes.push_back("No σ_2 plot: " + how + " with n >= 2.");
    no_diag.clear();
    s0 = LONG_MAX, s1 = LONG_MIN;
    if (site_plot(in, in.variants, "stream_similarity", "Stream similarity after each site",
                  "mean pairwise cosine similarity of the streams", {"similarity", &SiteDiag::stream_similarity},
                  {"", nullptr}, false, no_diag, s0, s1))
        plots.push_back({"stream_similarity", "Stream similarity after each site: the mean over token positions of "
                                              "the mean pairwise cosine similarity of the n stream vectors (1: the "
                                              "streams are identical; SPEC §6), from the last diagnostics" +
                                              suffix(no_diag) + ". Variants with one stream are left out."});
    else
        notes.push_back("No stream-similarity plot: " + how + " with n >= 2.");
    return plots;
}

std::vector<PlotFile> draw_plots(const std::string& out_dir, const std::vector<PlotFile>& plots, bool& gnuplot_found,
                                 std::vector<std::string>& errors) {
    std::vector<PlotFile> drawn;
    gnuplot_found = true;
    for (const PlotFile& p : plots) {
        const std::string png = out_dir + "/" + p.name + ".png";
        ::unlink(png.c_str());  // never leave an old image that looks like this run's
        std::string output;
        int rc;
        try {
            sys::SpawnOptions opt;
            opt.cwd = out_dir;
            sys::Child c = sys::spawn_child({"gnuplot", p.name + ".gp"}, opt);
            rc = sys::finish_child(c, [&](const std::string& line) { output += line + "\n"; });
        } catch (const std::runtime_error& e) {
            if (std::string(e.what()).find("not found") != std::string::npos) {
                gnuplot_found = false;
                return drawn;
            }
            errors.push_back(e.what());
            continue;
        }
        struct stat st {};
        if (rc == 0 && ::stat(png.c_str(), &st) == 0 && st.st_size > 0) {
            drawn.push_back(p);
            continue;
        }
        // gnuplot's last line names the script line and the problem.
        while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
        const size_t nl = output.find_last_of('\n');
        const std::string last = nl == std::string::npos ? output : output.substr(nl + 1);
        errors.push_back("gnuplot " + p.name + ".gp failed (exit " + std::to_string(rc) + ")" +
                         (last.empty() ? "" : ": " + last));
    }
    return drawn;
}

}  // namespace mhc::report
