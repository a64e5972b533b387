// mhc eval
#include "cli/cli.h"
#include "mhc/train.h"

namespace mhc::cli {

Runner add_eval(CLI::App& app) {
    struct Opts {
        std::string ckpt, data, format = "auto", order = "random";
        int batch = 8, seq = 0, batches = 0;
        uint64_t seed = 1;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    app.add_option("--ckpt", o->ckpt, "Checkpoint (.safetensors)")->required();
    app.add_option("--data", o->data, "Data file")->required();
    app.add_option("--format", o->format, "Data format: auto, text, u16, llmc")
        ->check(CLI::IsMember({"auto", "text", "u16", "llmc"}));
    app.add_option("--batch", o->batch, "Sequences per batch")->check(CLI::PositiveNumber);
    app.add_option("--seq", o->seq, "Sequence length (default: the model's block_size)")->check(CLI::PositiveNumber);
    app.add_option("--order", o->order, "random windows (seeded), or sequential: window j is tokens "
                   "[jT, jT+T) -> [jT+1, jT+T+1), batch b holds windows bB..bB+B-1")
        ->check(CLI::IsMember({"random", "sequential"}));
    app.add_option("--batches", o->batches, "Batches to evaluate (default: random 20; sequential: all "
                   "that fit)")->check(CLI::PositiveNumber);
    app.add_option("--seed", o->seed, "Seed of the random windows");
    app.add_flag("--json", o->json, "Print the result as one JSON object on the last line");
    return [o] {
        GPT<float> m;
        load_checkpoint(o->ckpt, m);
        const int T = o->seq ? o->seq : m.Tmax;
        if (T > m.Tmax)
            throw std::invalid_argument("--seq " + std::to_string(T) + " exceeds the model's block_size " +
                                        std::to_string(m.Tmax));
        const TokenData data = load_tokens(o->data, data_format_from_string(o->format), m.V);
        const Order order = order_from_string(o->order);
        Batcher b(data, o->batch, T, order, o->seed);
        int K = o->batches;
        if (order == Order::sequential) {
            const long fit = b.num_windows() / o->batch;
            if (fit < 1)
                throw std::invalid_argument(o->data + ": " + std::to_string(b.num_windows()) +
                                            " windows, fewer than one batch of " + std::to_string(o->batch));
            if (K == 0) K = (int)fit;
            if (K > fit)
                throw std::invalid_argument("--batches " + std::to_string(K) + ": only " + std::to_string(fit) +
                                            " sequential batches fit in " + o->data);
        } else if (K == 0) {
            K = 20;
        }
        const double loss = evaluate(m, b, K);
        const long tokens = (long)K * o->batch * T;
        std::fprintf(stderr, "loss %.6f over %d batches (%ld tokens)\n", loss, K, tokens);
        if (o->json) print_json({{"loss", loss}, {"batches", K}, {"tokens", tokens}, {"order", o->order}});
        else std::printf("%.6f\n", loss);
        return 0;
    };
}

}  // namespace mhc::cli
