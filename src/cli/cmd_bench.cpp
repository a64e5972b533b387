// mhc bench: training-step throughput per variant, time per phase, peak RSS and MFU against the
// sgemm peak measured in the same run. Every variant (and the sgemm measurement) runs in its own
// process, so that peak RSS is the variant's own and every measurement starts from the same state:
// /proc/self/exe re-executed with the hidden option --child, which prints one JSON line on a pipe
// (sys/process.h: fork + exec; the exec gives the child a fresh OpenMP runtime).
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>

#include "cli/cli.h"
#include "mhc/bench.h"
#include "mhc/data.h"
#include "sys/process.h"
#include "train/engine.h"

namespace mhc::cli {

namespace {

// The mHC-lite authors' configuration (6 layers, 6 heads, 384 wide, block 256, batch 8, vocab 256,
// n = 4, no biases); everything else keeps the built-in defaults.
TrainConfig authors_config() {
    TrainConfig c;
    c.model.n_layer = 6, c.model.n_head = 6, c.model.n_embd = 384, c.model.block_size = 256;
    c.model.vocab_size = 256, c.model.bias = false;
    c.model.hyper_conn_n = 4, c.model.hyper_conn_n_set = true;
    c.batch_size = 8;
    return c;
}

// The base config with one variant: one with a fixed n ("none": a single stream) takes it whatever
// hyper_conn_n says.
TrainConfig with_variant(TrainConfig c, const std::string& v) {
    const VariantInfo& info = *variant_find(v);
    c.model.hyper_conn_type = info.id;
    if (info.fixed_n) c.model.hyper_conn_n_set = false;
    try {
        config_finalize(c);
    } catch (const std::invalid_argument& e) {
        throw std::invalid_argument("variant " + v + ": " + e.what());
    }
    return c;
}

// Runs `mhc bench --child PAYLOAD` with OMP_NUM_THREADS=threads and returns the JSON object it
// prints last. Any failure becomes one line that starts with `what`.
nlohmann::json run_child(const nlohmann::json& payload, int threads, const std::string& what) {
    sys::SpawnOptions opt;
    opt.merge_stderr = false;
    opt.env = {"OMP_NUM_THREADS=" + std::to_string(threads)};
    sys::Child c;
    try {
        c = sys::spawn_child({sys::self_exe(), "bench", "--child", payload.dump()}, opt);
    } catch (const std::exception& e) {
        throw std::runtime_error(what + ": " + e.what());
    }
    std::string last;
    const int code = sys::finish_child(c, [&](const std::string& line) {
        if (!line.empty()) last = line;
    });
    nlohmann::json j;
    try {
        if (!last.empty()) j = nlohmann::json::parse(last);
    } catch (const std::exception&) {}
    if (j.is_object() && j.contains("error")) throw std::runtime_error(what + ": " + j["error"].get<std::string>());
    if (code > 128)
        throw std::runtime_error(what + ": its process was killed by signal " + std::to_string(code - 128) + " (" +
                                 strsignal(code - 128) + ")");
    if (code != 0 || !j.is_object())
        throw std::runtime_error(what + ": its process ended (exit " + std::to_string(code) + ") without a result");
    return j;
}

// The child side: one measurement, one JSON line on stdout; errors as {"error": "..."}.
int child_main(const std::string& arg) {
    try {
        const nlohmann::json p = nlohmann::json::parse(arg);
        nlohmann::json j;
        if (p.at("mode") == "sgemm" || p.at("mode") == "bf16") {
            const auto shapes = p.at("shapes").get<std::vector<std::vector<int>>>();
            const SgemmPeak s = p.at("mode") == "sgemm" ? engine_sgemm_peak(p.at("device"), shapes)
                                                        : engine_bf16_peak(p.at("device"), shapes);
            j = {{"gflops", s.gflops}, {"shape", {s.M, s.N, s.K}}};
        } else {
            // Test hook (tests/cli/test_bench.py): MHC_TEST_BENCH_ABORT=<variant> makes that child crash.
            const char* crash = std::getenv("MHC_TEST_BENCH_ABORT");
            if (crash && p.at("config").at("hyper_conn_type") == crash) std::abort();
            const BenchResult r = bench_variant(config_from_json(p.at("config")), p.at("steps"), p.at("warmup"),
                                                p.at("data"), p.value("time_ops", true));
            j = bench_result_to_json(r);
            j["peak_rss_mb"] = sys::peak_rss_mb();
        }
        j["threads"] = omp_get_max_threads();
        print_json(j);
        return 0;
    } catch (const std::exception& e) {
        print_json({{"error", e.what()}});
        return 1;
    }
}

void progress(const std::string& s) {
    if (isatty(STDERR_FILENO)) std::fprintf(stderr, "\r%-72s%s", s.c_str(), s.empty() ? "\r" : "");
}

void print_table(const nlohmann::json& doc, const TrainConfig& cfg, const std::string& input) {
    const auto& m = cfg.model;
    std::printf("mhc bench: %d layers x %d wide, %d heads, block %d, batch %d x %d accum, vocab %d, n=%d, %s\n",
                m.n_layer, m.n_embd, m.n_head, m.block_size, cfg.batch_size, cfg.gradient_accumulation_steps,
                m.vocab_size, m.hyper_conn_n, input.c_str());
    std::printf("%d timed steps after %d warm-up steps per variant, each variant in its own process, %d threads, "
                "device %s, dtype %s%s\n", doc["steps"].get<int>(), doc["warmup"].get<int>(), doc["threads"].get<int>(),
                cfg.device.c_str(), cfg.dtype.c_str(), cfg.recompute ? ", recompute" : "");
    if (!doc["ops_timed"].get<bool>())  // a graph cannot hold the ops' CUDA events either
        std::printf("%sthe ops are not timed (phases: the optimizer, the rest in other)\n",
                    cfg.cuda_graphs ? "cuda_graphs: each step replayed from CUDA graphs; " : "--no-op-times: ");
    if (cfg.cuda_graphs && doc["warmup"].get<int>() < 2)  // step 1 runs direct, step 2 captures
        std::printf("cuda_graphs: the first step runs without graphs and the second captures them: timed "
                    "steps among those are not replays (--warmup 2 or more)\n");
    const auto& sh = doc["sgemm_shape"];
    std::printf("sgemm peak: %.1f GFLOP/s (%s, %d x %d x %d, best of its repetitions)\n",
                doc["sgemm_peak_gflops"].get<double>(), cfg.device == "cpu" ? "OpenBLAS" : "cuBLAS fp32, TF32 off",
                sh[0].get<int>(), sh[1].get<int>(), sh[2].get<int>());
    // On a GPU its memory is the one that limits a run: the engine's peak there instead of the RSS.
    const bool gpu = cfg.device != "cpu";
    if (gpu) {
        const auto& bs = doc["bf16_shape"];
        std::printf("bf16 peak: %.1f GFLOP/s (cuBLAS bf16 x bf16, fp32 sums, %d x %d x %d): MFU16 is against it\n",
                    doc["bf16_peak_gflops"].get<double>(), bs[0].get<int>(), bs[1].get<int>(), bs[2].get<int>());
    }
    std::printf("\n%-9s %10s %9s %9s %9s %6s%s %8s%s | %6s %6s %6s %6s %6s  (%% of step)\n", "variant", "params",
                "tok/s", "step ms", "min ms", "MFU", gpu ? "  MFU16" : "", gpu ? "GPU MB" : "RSS MB",
                gpu ? "   dev MB" : "", "matmul", "attn", "conn", "optim", "other");
    for (const auto& r : doc["results"]) {
        const auto& ph = r["phases_s"];
        double sum = 0;
        for (const auto& [k, v] : ph.items()) sum += v.get<double>();
        auto pct = [&](const char* k) { return sum > 0 ? 100.0 * ph[k].get<double>() / sum : 0.0; };
        char mfu16[16] = "", used[16] = "";
        if (gpu) {
            std::snprintf(mfu16, sizeof mfu16, " %5.1f%%", 100.0 * r["mfu_bf16"].get<double>());
            std::snprintf(used, sizeof used, " %8.0f", r["device_used_mb"].get<double>());
        }
        std::printf("%-9s %10ld %9.0f %9.1f %9.1f %5.1f%%%s %8.1f%s | %6.1f %6.1f %6.1f %6.1f %6.1f\n",
                    r["variant"].get<std::string>().c_str(), r["params"].get<long>(), r["tokens_per_s"].get<double>(),
                    1e3 * r["step_s_median"].get<double>(), 1e3 * r["step_s_min"].get<double>(),
                    100.0 * r["mfu"].get<double>(), mfu16, r[gpu ? "device_peak_mb" : "peak_rss_mb"].get<double>(), used,
                    pct("matmul"), pct("attention"), pct("connections"), pct("optimizer"), pct("other"));
    }
    std::printf("\nstep ms: median (tok/s and MFU use it); phases: mean per step; %s\n%s\n",
                gpu ? "GPU MB: the engine's peak device memory (its buffers); dev MB: the device's memory in use after "
                      "the steps (total less free: also the CUDA context, cuBLAS's workspace, the kernels' local memory)"
                    : "RSS: the variant's process peak",
                kBenchFlopsNote);
}

// --ops: the model's time per op and step (its phases split by op: the ops' names, model/cpu_ops.h
// and model/cuda_ops.h), one column per variant, the ops in the order of the first variant's time.
void print_ops(const nlohmann::json& doc) {
    const auto& res = doc["results"];
    std::vector<std::pair<double, std::string>> order;
    std::map<std::string, bool> seen;
    for (const auto& r : res)
        for (const auto& [op, s] : r["ops_s"].items())
            if (!seen[op]) seen[op] = true, order.push_back({res[0]["ops_s"].value(op, 0.0), op});
    std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    std::printf("\nms per step by op (the model's forward and backward; the optimizer apart)\n%-26s", "op");
    for (const auto& r : res) std::printf(" %10s", r["variant"].get<std::string>().c_str());
    std::printf("\n");
    for (const auto& [first, op] : order) {
        std::printf("%-26s", op.c_str());
        for (const auto& r : res) std::printf(" %10.3f", 1e3 * r["ops_s"].value(op, 0.0));
        std::printf("\n");
    }
}

}  // namespace

Runner add_bench(CLI::App& app) {
    struct Opts {
        std::string config, variants = variant_keys_csv(), data, child, device;
        std::vector<std::string> sets;
        int steps = 10, warmup = 2, threads = 0;
        bool json = false, ops = false, no_op_times = false;
    };
    auto o = std::make_shared<Opts>();
    app.add_option("--config", o->config, "TOML config (default: the mHC-lite authors' model: 6 layers, 6 heads, "
                   "384 wide, block 256, batch 8, vocab 256, hyper_conn_n 4, no biases)");
    app.add_option("--set", o->sets, "Override one config key: --set key=value (repeatable)")->default_str("");
    app.add_option("--variants", o->variants, "Comma-separated variants (" + variant_choices(false, ", ", ", ") +
                   "; aliases " + variant_other_spellings() + ")")->capture_default_str();
    app.add_option("--steps", o->steps, "Timed training steps per variant (>= 1)")->capture_default_str();
    app.add_option("--warmup", o->warmup, "Untimed steps before them (>= 0)")->capture_default_str();
    app.add_option("--threads", o->threads, "OpenMP threads for every measurement (0: OpenMP's default, " +
                   std::to_string(omp_get_max_threads()) + " here)")->check(at_least(0));
    app.add_option("--data", o->data, "Token or text file (or quoted pattern) the batches come from "
                   "(default: seeded random tokens)");
    add_device_option(app, o->device, true);
    app.add_flag("--ops", o->ops, "Also print the time per op and step (which op the phases' time goes to)");
    app.add_flag("--no-op-times", o->no_op_times,
                 "Do not time the model's ops (on a GPU: no CUDA event around each op; the phases are then the "
                 "optimizer's and other), as with cuda_graphs: the step as training runs it");
    app.add_flag("--json", o->json, "Print the result as one JSON object on the last line");
    app.add_option("--child", o->child, "internal: one measurement in this process")->group("");
    app.footer(std::string("Each variant runs in its own process; tok/s and MFU use the median step time.\n") +
               kBenchFlopsNote + ".");
    return [o] {
        if (!o->child.empty()) return child_main(o->child);
        if (o->steps < 1) throw std::invalid_argument("--steps must be >= 1, got " + std::to_string(o->steps));
        if (o->warmup < 0) throw std::invalid_argument("--warmup must be >= 0, got " + std::to_string(o->warmup));
        const std::vector<std::string> variants = parse_variant_list(o->variants);
        TrainConfig cfg = o->config.empty() ? authors_config() : config_from_toml_file(o->config);
        for (const auto& s : o->sets) config_apply_override(cfg, s);
        if (!o->device.empty()) cfg.device = o->device;
        engine_require(cfg.device);  // once here, rather than in every child
        if (!o->data.empty()) {  // refuse bad data here, once, rather than in every child
            const TokenData d = load_tokens(o->data, DataFormat::automatic, cfg.model.vocab_size);
            if (cfg.model.vocab_size == 0) cfg.model.vocab_size = d.vocab_size;
            Batcher(d, cfg.batch_size, cfg.model.block_size, Order::random, cfg.seed);
        } else if (cfg.model.vocab_size == 0) {
            cfg.model.vocab_size = 256;
        }
        std::vector<TrainConfig> vcfg;
        for (const auto& v : variants) vcfg.push_back(with_variant(cfg, v));
        const int threads = o->threads ? o->threads : omp_get_max_threads();

        // The peak: a large square sgemm, and the model's largest GEMM when it is big enough to time
        // well (a tiny one runs from L1 at a rate no training step can see).
        std::vector<std::vector<int>> shapes = {{2048, 2048, 2048}};
        const std::vector<int> g = largest_model_gemm(vcfg[0]);
        if (2.0 * g[0] * g[1] * g[2] >= 1e9) shapes.push_back(g);
        progress("bench: sgemm peak");
        const nlohmann::json peak =
            run_child({{"mode", "sgemm"}, {"shapes", shapes}, {"device", cfg.device}}, threads, "sgemm peak");
        const double peak_gflops = peak["gflops"];
        // On a GPU also the bf16 peak, the yardstick of mixed-precision training (MFU16).
        const bool gpu = cfg.device != "cpu";
        nlohmann::json peak16;
        if (gpu) {
            progress("bench: bf16 peak");
            // Tensor cores finish a 2048³ product in tens of microseconds: larger squares time well.
            std::vector<std::vector<int>> shapes16 = {{4096, 4096, 4096}, {8192, 8192, 8192}};
            if (2.0 * g[0] * g[1] * g[2] >= 1e9) shapes16.push_back(g);
            peak16 = run_child({{"mode", "bf16"}, {"shapes", shapes16}, {"device", cfg.device}}, threads, "bf16 peak");
        }
        nlohmann::json results = nlohmann::json::array();
        for (size_t i = 0; i < variants.size(); i++) {
            progress("bench: " + variants[i] + " (" + std::to_string(i + 1) + "/" + std::to_string(variants.size()) + ")");
            nlohmann::json r = run_child({{"mode", "variant"}, {"config", config_to_json(vcfg[i])}, {"steps", o->steps},
                                          {"warmup", o->warmup}, {"data", o->data},
                                          {"time_ops", !o->no_op_times}},
                                         threads, "variant " + variants[i]);
            r["mfu"] = r["model_gflop_per_step"].get<double>() / r["step_s_median"].get<double>() / peak_gflops;
            if (gpu)
                r["mfu_bf16"] = r["model_gflop_per_step"].get<double>() / r["step_s_median"].get<double>() /
                                peak16["gflops"].get<double>();
            r.erase("threads");
            results.push_back(r);
        }
        progress("");

        nlohmann::json config = model_config_to_json(cfg.model);
        config.erase("hyper_conn_type");  // one per result
        config["batch_size"] = cfg.batch_size;
        config["gradient_accumulation_steps"] = cfg.gradient_accumulation_steps;
        config["dtype"] = cfg.dtype, config["recompute"] = cfg.recompute, config["cuda_graphs"] = cfg.cuda_graphs;
        nlohmann::json doc = {{"threads", threads}, {"device", cfg.device}, {"sgemm_peak_gflops", peak_gflops},
                              {"sgemm_shape", peak["shape"]}, {"steps", o->steps}, {"warmup", o->warmup},
                              {"config", config}, {"data", o->data.empty() ? "random tokens" : o->data},
                              {"ops_timed", results.at(0).at("ops_timed")},
                              {"flops_note", kBenchFlopsNote}, {"results", results}};
        if (gpu) doc["bf16_peak_gflops"] = peak16["gflops"], doc["bf16_shape"] = peak16["shape"];
        print_table(doc, cfg, o->data.empty() ? "random tokens" : o->data);
        if (o->ops) print_ops(doc);
        if (o->json) print_json(doc);
        return 0;
    };
}

}  // namespace mhc::cli
