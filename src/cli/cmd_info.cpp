// mhc info
#include <cmath>
#include <random>

#include "cli/cli.h"
#include "train/run_dir.h"
#include "mhc/data.h"
#include "mhc/diag.h"
#include "train/engine.h"
#include "train/fits.h"

namespace mhc::cli {

Runner add_info(CLI::App& app) {
    struct Opts {
        std::string ckpt, data, format = "auto", device = "cpu";
        int batch = 4, seq = 0;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    add_ckpt_option(app, o->ckpt);
    app.add_option("--data", o->data, "Tokens for the diagnostics: the first windows of this file or "
                   "quoted pattern (default: random tokens, seed 0)");
    add_format_option(app, o->format);
    app.add_option("--batch", o->batch, "Sequences for the diagnostics")->check(at_least(1));
    app.add_option("--seq", o->seq, "Sequence length (0: block_size)")->check(at_least(0));
    add_device_option(app, o->device, false);
    app.add_flag("--json", o->json, "Print the result as one JSON object on the last line");
    return [o] {
        engine_require(o->device);
        GPT<float> m;
        const std::string ckpt = run_dir::load_model(o->ckpt, m);
        const int B = o->batch, T = o->seq ? o->seq : m.Tmax;
        if (T > m.Tmax) throw std::invalid_argument("--seq exceeds the model's block_size " + std::to_string(m.Tmax));
        require_memory_to_run(m.cfg, o->device, B, T, "run the diagnostics");
        std::vector<int32_t> in((size_t)B * T), tg(in.size());
        if (!o->data.empty()) {
            const TokenData d = load_tokens(o->data, data_format_from_string(o->format), m.V);
            Batcher(d, B, T, Order::sequential, 0).next(in.data(), tg.data());
        } else {
            std::mt19937 rng(0);
            for (auto& t : in) t = (int32_t)(rng() % (uint32_t)m.V);
        }
        AdamW<float> no_optimizer;
        const std::unique_ptr<Engine> e = engine_make(o->device, m, no_optimizer);
        e->forward(in.data(), nullptr, B, T);
        const float* logits = e->logits();
        for (long i = 0; i < (long)B * T * m.V; i++)
            if (!std::isfinite(logits[i]))
                throw std::runtime_error(ckpt + ": the model's logits are not finite (NaN or inf) on " +
                                         (o->data.empty() ? std::string("random tokens") : o->data) +
                                         ": its outputs overflow");
        long conn_params = 0;
        for (const auto& p : m.params) conn_params += p.name.find(".hc_") != std::string::npos ? p.size : 0;
        nlohmann::json j = {{"checkpoint", ckpt}, {"config", model_config_to_json(m.cfg)},
                            {"parameters", (long)m.param.size()}, {"connection_parameters", conn_params},
                            {"tokens", B * T}, {"input", o->data.empty() ? "random tokens" : o->data},
                            {"device", o->device}};
        std::printf("%s: %s n=%d, %d layers x %d wide, %d heads, vocab %d, block %d\n", ckpt.c_str(),
                    variant_key(m.cfg.hyper_conn_type), m.n, m.L, m.C, m.H, m.V, m.Tmax);
        std::printf("parameters: %ld (connections %ld, %.2f%%)\n", (long)m.param.size(), conn_params,
                    100.0 * conn_params / m.param.size());
        std::printf("connection diagnostics over %d tokens of %s (SPEC §6; depth = composite map up to the site; "
                    "orth err, depth fwd/bwd/s1: max over tokens; depth s2 (second singular value), stream sim "
                    "(after the site): mean):\n",
                    B * T, o->data.empty() ? "random tokens" : o->data.c_str());
        std::printf("%-5s %-10s %11s %11s %11s %9s %9s %9s %9s %10s %10s %9s %9s %10s%s\n", "site", "branch",
                    "DS err mean", "DS err max", "orth err", "fwd mean", "fwd max", "bwd mean", "bwd max", "depth fwd",
                    "depth bwd", "depth s1", "depth s2", "stream sim",
                    variant_info(m.variant).log_inv_nu ? "  log(1/nu) mean  max  >30" : "");
        nlohmann::json sites = e->diagnostics()["sites"];
        for (auto& s : sites) {
            const int k = s["site"];
            const std::string branch = "h." + std::to_string(k / 2) + "." + s["kind"].get<std::string>();
            auto v = [&s](const char* key) { return s[key].get<double>(); };
            std::printf("%-5d %-10s %11.3e %11.3e %11.3e %9.5f %9.5f %9.5f %9.5f %10.5f %10.5f %9.5f", k,
                        branch.c_str(), v("ds_error_mean"), v("ds_error_max"), v("orth_error_max"), v("fwd_gain_mean"),
                        v("fwd_gain_max"), v("bwd_gain_mean"), v("bwd_gain_max"), v("depth_fwd_gain_max"),
                        v("depth_bwd_gain_max"), v("depth_sigma1_max"));
            if (s.contains("depth_sigma2_mean"))  // n >= 2
                std::printf(" %9.5f %10.5f", v("depth_sigma2_mean"), v("stream_similarity"));
            else
                std::printf(" %9s %10s", "-", "-");
            if (s.contains("log_inv_nu_mean"))
                std::printf("  %14.3f %6.3f %4.2f", v("log_inv_nu_mean"), v("log_inv_nu_max"), v("frac_nu_above_30"));
            std::printf("\n");
            s["branch"] = branch;
        }
        j["sites"] = sites;
        if (o->json) print_json(j);
        return 0;
    };
}

}  // namespace mhc::cli
