// A run directory's records as the report needs them (its files read by train/run_dir) and the
// statistics of the comparison table: mean ± spread over seeds, medians, spikes.
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "report/report.h"
#include "train/run_dir.h"

namespace mhc::report {

bool parse_run_name(const std::string& name, std::string& variant, uint64_t& seed) {
    const size_t at = name.rfind("-s");
    if (at == std::string::npos || at == 0 || at + 2 >= name.size()) return false;
    const std::string digits = name.substr(at + 2);
    if (digits.size() > 19 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return false;
    variant = name.substr(0, at);
    seed = std::stoull(digits);
    return true;
}

std::string run_name(const std::string& variant, uint64_t seed) { return variant + "-s" + std::to_string(seed); }

namespace {

double num(const nlohmann::json& j, const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_number() ? it->get<double>() : NAN;
}

std::vector<SiteDiag> parse_diag(const nlohmann::json& d) {
    std::vector<SiteDiag> out;
    auto sites = d.find("sites");
    if (sites == d.end() || !sites->is_array()) return out;
    for (const auto& s : *sites) {
        if (!s.is_object()) continue;
        SiteDiag x;
        x.site = s.value("site", (int)out.size());
        x.kind = s.contains("kind") && s["kind"].is_string() ? s["kind"].get<std::string>() : "";
        x.ds_error_mean = num(s, "ds_error_mean");
        x.ds_error_max = num(s, "ds_error_max");
        x.depth_fwd_gain_mean = num(s, "depth_fwd_gain_mean");
        x.depth_fwd_gain_max = num(s, "depth_fwd_gain_max");
        x.depth_bwd_gain_mean = num(s, "depth_bwd_gain_mean");
        x.depth_bwd_gain_max = num(s, "depth_bwd_gain_max");
        x.orth_error_mean = num(s, "orth_error_mean");
        x.orth_error_max = num(s, "orth_error_max");
        x.depth_sigma2_mean = num(s, "depth_sigma2_mean");
        x.depth_sigma2_max = num(s, "depth_sigma2_max");
        x.stream_similarity = num(s, "stream_similarity");
        out.push_back(x);
    }
    std::sort(out.begin(), out.end(), [](const SiteDiag& a, const SiteDiag& b) { return a.site < b.site; });
    return out;
}

}  // namespace

RunData read_run(const std::string& dir, const std::string& variant, uint64_t seed) {
    RunData r;
    r.dir = dir;
    r.variant = variant;
    r.seed = seed;
    r.name = run_name(variant, seed);
    r.ckpt_step = run_dir::latest_step(dir);
    try {
        r.max_iters = run_dir::read_config(dir).max_iters;
    } catch (const std::exception&) {
        r.max_iters = -1;  // no config (a hand-made or foreign run directory): completeness unknown
    }
    std::vector<run_dir::MetricsLine> lines;
    if (!run_dir::read_metrics(dir, lines))
        throw std::runtime_error(run_dir::metrics_path(dir) + ": cannot read (is " + dir + " a run directory?)");
    for (const run_dir::MetricsLine& line : lines) {
        if (line.text.find_first_not_of(" \t\r") == std::string::npos) continue;
        const nlohmann::json& j = line.rec;  // discarded when the line is not JSON
        if (!j.is_object() || !j.contains("step")) {
            r.bad_lines++;
            continue;
        }
        Record rec;
        rec.step = (long)num(j, "step");
        rec.tokens = (long)num(j, "tokens");
        rec.loss = num(j, "loss");
        rec.grad_norm = num(j, "grad_norm");
        rec.tokens_per_s = num(j, "tokens_per_s");
        rec.val_loss = num(j, "val_loss");
        rec.peak_rss_mb = num(j, "peak_rss_mb");
        rec.time_s = num(j, "time_s");
        rec.skipped = j.value("skipped", false);
        r.records.push_back(rec);
        auto d = j.find("diag");
        if (d != j.end() && d->is_object()) {
            std::vector<SiteDiag> sites = parse_diag(*d);
            if (!sites.empty()) r.diag = std::move(sites), r.diag_step = rec.step;
        }
    }
    return r;
}

double median_of(std::vector<double> v) {
    v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return !std::isfinite(x); }), v.end());
    if (v.empty()) return NAN;
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

Spread spread_of(const std::vector<double>& v) {
    Spread s;
    double sum = 0;
    for (double x : v)
        if (std::isfinite(x)) sum += x, s.n++;
    if (s.n == 0) return s;
    s.mean = sum / s.n;
    if (s.n < 2) return s;
    double ss = 0;
    for (double x : v)
        if (std::isfinite(x)) ss += (x - s.mean) * (x - s.mean);
    s.std = std::sqrt(ss / (s.n - 1));
    return s;
}

int count_spikes(const std::vector<Record>& records) {
    int spikes = 0;
    std::vector<double> losses, norms;  // finite history of the logged steps before this one
    for (const Record& r : records) {
        if (r.skipped || !std::isfinite(r.loss) || !std::isfinite(r.grad_norm)) {
            spikes++;
            continue;
        }
        if ((int)losses.size() >= kSpikeMinHistory) {
            const size_t w = std::min<size_t>(losses.size(), kSpikeWindow);
            const double ml = median_of({losses.end() - w, losses.end()});
            const double mg = median_of({norms.end() - w, norms.end()});
            if (r.loss > ml * (1 + kSpikeLossRise) || r.grad_norm > kSpikeGradFactor * mg) spikes++;
        }
        losses.push_back(r.loss);
        norms.push_back(r.grad_norm);
    }
    return spikes;
}

VariantRow summarize(const std::string& variant, const std::vector<const RunData*>& runs) {
    VariantRow row;
    row.variant = variant;
    std::vector<double> finals, bests, tps;
    for (const RunData* r : runs) {
        row.runs++;
        row.incomplete += r->incomplete();
        double last = NAN, best = NAN;
        for (const Record& x : r->records) {
            if (std::isfinite(x.val_loss)) last = x.val_loss, best = std::isfinite(best) ? std::min(best, x.val_loss) : x.val_loss;
            tps.push_back(x.tokens_per_s);
            if (std::isfinite(x.peak_rss_mb)) row.peak_rss_mb = std::isfinite(row.peak_rss_mb) ? std::max(row.peak_rss_mb, x.peak_rss_mb) : x.peak_rss_mb;
            if (std::isfinite(x.grad_norm)) row.max_grad_norm = std::isfinite(row.max_grad_norm) ? std::max(row.max_grad_norm, x.grad_norm) : x.grad_norm;
            row.skipped += x.skipped;
        }
        finals.push_back(last);
        bests.push_back(best);
        row.spikes += count_spikes(r->records);
    }
    row.final_val = spread_of(finals);
    row.best_val = spread_of(bests);
    row.tokens_per_s = median_of(tps);
    return row;
}

std::string fmt_num(double v, int sig) {
    if (!std::isfinite(v)) return "—";
    char buf[64];
    const double a = std::fabs(v);
    if (a != 0 && (a >= 1e6 || a < 1e-3)) std::snprintf(buf, sizeof buf, "%.*e", sig - 1, v);
    else std::snprintf(buf, sizeof buf, "%.*g", sig, v);
    return buf;
}

}  // namespace mhc::report
