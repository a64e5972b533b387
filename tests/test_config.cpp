// Config: the shipped config files, TOML/override/JSON parsing, every validation error, round trips.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <limits>
#include <set>

#include "mhc/config.h"

using mhc::TrainConfig;

namespace {

// The repository's configs/ directory, found from this file's path (tests run from the build tree).
std::string config_path(const std::string& name) {
    return (std::filesystem::path(__FILE__).parent_path().parent_path() / "configs" / name).string();
}

// The message of the std::invalid_argument that f throws ("" and a test failure if it throws none).
std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    ADD_FAILURE() << "no std::invalid_argument thrown";
    return "";
}

TrainConfig finalized(const std::function<void(TrainConfig&)>& change) {
    TrainConfig c;
    change(c);
    mhc::config_finalize(c);
    return c;
}

std::string finalize_error(const std::function<void(TrainConfig&)>& change) {
    return error_of([&] { finalized(change); });
}

TrainConfig from_toml(const std::string& text) { return mhc::config_from_toml_string(text, "test.toml"); }

}  // namespace

// default.toml is the main job's config: the built-in defaults except the learning rates, which
// were measured for the fortunes corpus (see the comment in the file).
TEST(ConfigFiles, DefaultTomlHoldsTheStructDefaultsButItsLearningRates) {
    TrainConfig c = mhc::config_from_toml_file(config_path("default.toml"));
    EXPECT_DOUBLE_EQ(c.learning_rate, 2e-3);
    EXPECT_DOUBLE_EQ(c.min_lr, 2e-4);
    TrainConfig defaults;
    defaults.learning_rate = 2e-3;
    defaults.min_lr = 2e-4;
    EXPECT_EQ(mhc::config_to_json(c), mhc::config_to_json(defaults));
    mhc::config_finalize(c);
    EXPECT_EQ(c.model.hyper_conn_type, mhc::Variant::mhc_lite);
    EXPECT_EQ(c.model.hyper_conn_n, 4);
    EXPECT_EQ(c.lr_decay_iters, c.max_iters);
    EXPECT_EQ(c.checkpoint_interval, c.eval_interval);
}

TEST(ConfigFiles, DefaultTomlSwitchesToTheResidualBaselineWithOneOverride) {
    TrainConfig c = mhc::config_from_toml_file(config_path("default.toml"));
    mhc::config_apply_override(c, "hyper_conn_type=none");
    mhc::config_finalize(c);
    EXPECT_EQ(c.model.hyper_conn_n, 1);
}

TEST(ConfigFiles, PaperTomlIsTheAuthorsSmallModel) {
    TrainConfig c = mhc::config_from_toml_file(config_path("mhc_lite_paper.toml"));
    mhc::config_finalize(c);
    EXPECT_EQ(c.model.n_layer, 6);
    EXPECT_EQ(c.model.n_head, 8);
    EXPECT_EQ(c.model.n_embd, 512);
    EXPECT_EQ(c.model.block_size, 1024);
    EXPECT_EQ(c.model.hyper_conn_type, mhc::Variant::mhc_lite);
    EXPECT_EQ(c.model.hyper_conn_n, 4);
    EXPECT_EQ(c.batch_size, 8);
    EXPECT_EQ(c.gradient_accumulation_steps, 4);
    EXPECT_EQ(c.warmup_iters, 200);
    EXPECT_DOUBLE_EQ(c.learning_rate, 1e-3);
    EXPECT_DOUBLE_EQ(c.min_lr, 1e-4);
    EXPECT_DOUBLE_EQ(c.weight_decay, 0.1);
    EXPECT_DOUBLE_EQ(c.beta1, 0.9);
    EXPECT_DOUBLE_EQ(c.beta2, 0.95);
}

TEST(ConfigFiles, MissingFileNamesThePath) {
    try {
        mhc::config_from_toml_file("/nonexistent/dir/x.toml");
        FAIL() << "no exception";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/x.toml"), std::string::npos) << e.what();
    }
}

// A file read over a base (train --init-from: the checkpoint's model) changes only the keys it has.
TEST(ConfigFiles, KeysLeftOutKeepTheBase) {
    TrainConfig base;
    base.model.n_layer = 7, base.model.n_embd = 96, base.max_iters = 11;
    const TrainConfig c = mhc::config_from_toml_string("max_iters = 3\nn_embd = 64\n", "ft.toml", base);
    EXPECT_EQ(c.model.n_layer, 7);
    EXPECT_EQ(c.model.n_embd, 64);
    EXPECT_EQ(c.max_iters, 3);
    EXPECT_EQ(mhc::config_from_toml_string("", "empty.toml", base).model.n_layer, 7);
    EXPECT_EQ(mhc::config_from_toml_string("", "empty.toml").model.n_layer, TrainConfig().model.n_layer);
}

TEST(ConfigOverride, EveryTypeAndBothStringSpellings) {
    TrainConfig c;
    mhc::config_apply_override(c, "n_layer=7");
    mhc::config_apply_override(c, "learning_rate=3e-4");
    mhc::config_apply_override(c, "min_lr=0");  // an integer where a number is expected
    mhc::config_apply_override(c, "bias=true");
    mhc::config_apply_override(c, "hyper_conn_type=mhc");
    mhc::config_apply_override(c, "data_order=\"sequential\"");
    mhc::config_apply_override(c, " seed = 42 ");
    mhc::config_apply_override(c, "beta2=.99");  // not TOML, but clearly a number
    EXPECT_EQ(c.model.n_layer, 7);
    EXPECT_DOUBLE_EQ(c.learning_rate, 3e-4);
    EXPECT_DOUBLE_EQ(c.min_lr, 0.0);
    EXPECT_TRUE(c.model.bias);
    EXPECT_EQ(c.model.hyper_conn_type, mhc::Variant::mhc);
    EXPECT_EQ(c.data_order, "sequential");
    EXPECT_EQ(c.seed, 42u);
    EXPECT_DOUBLE_EQ(c.beta2, 0.99);
    mhc::config_apply_override(c, "hyper_conn_type='kromhc'");
    EXPECT_EQ(c.model.hyper_conn_type, mhc::Variant::kromhc);
    mhc::config_apply_override(c, "bias=false");
    EXPECT_FALSE(c.model.bias);
}

TEST(ConfigOverride, AliasesAreNormalised) {
    TrainConfig c;
    mhc::config_apply_override(c, "hyper_conn_type=mhc-lite");
    mhc::config_finalize(c);
    EXPECT_EQ(c.model.hyper_conn_type, mhc::Variant::mhc_lite);
    TrainConfig d;
    mhc::config_apply_override(d, "hyper_conn_type=residual");
    mhc::config_finalize(d);
    EXPECT_EQ(d.model.hyper_conn_type, mhc::Variant::residual);
    EXPECT_EQ(d.model.hyper_conn_n, 1);
}

TEST(ConfigOverride, Errors) {
    TrainConfig c;
    std::string m = error_of([&] { mhc::config_apply_override(c, "n_embed=64"); });
    EXPECT_NE(m.find("unknown config key 'n_embed' (did you mean 'n_embd'?)"), std::string::npos) << m;
    m = error_of([&] { mhc::config_apply_override(c, "n_layer=four"); });
    EXPECT_NE(m.find("n_layer"), std::string::npos) << m;
    EXPECT_NE(m.find("integer"), std::string::npos) << m;
    m = error_of([&] { mhc::config_apply_override(c, "n_layer=4.5"); });
    EXPECT_NE(m.find("n_layer"), std::string::npos) << m;
    m = error_of([&] { mhc::config_apply_override(c, "bias=yes"); });
    EXPECT_NE(m.find("bias"), std::string::npos) << m;
    EXPECT_NE(m.find("boolean"), std::string::npos) << m;
    m = error_of([&] { mhc::config_apply_override(c, "hyper_conn_type=3"); });
    EXPECT_NE(m.find("hyper_conn_type"), std::string::npos) << m;
    // An unknown variant is refused where it is given, with the variant table's keys.
    m = error_of([&] { mhc::config_apply_override(c, "hyper_conn_type=mhc_heavy"); });
    EXPECT_EQ(m, "--set hyper_conn_type=mhc_heavy: hyper_conn_type 'mhc_heavy' is unknown (expected none, hc, mhc, "
                 "mhc_lite, kromhc, jpmhc or ohc)");
    m = error_of([] { from_toml("n_layer = 2\nhyper_conn_type = \"mhc_heavy\"\n"); });
    EXPECT_NE(m.find(":2: hyper_conn_type 'mhc_heavy' is unknown"), std::string::npos) << m;
    m = error_of([&] { mhc::config_apply_override(c, "n_layer"); });
    EXPECT_NE(m.find("key=value"), std::string::npos) << m;
    m = error_of([&] { mhc::config_apply_override(c, "n_layer="); });
    EXPECT_NE(m.find("n_layer"), std::string::npos) << m;
    m = error_of([&] { mhc::config_apply_override(c, "data_order=\"random"); });
    EXPECT_NE(m.find("data_order"), std::string::npos) << m;
    m = error_of([&] { mhc::config_apply_override(c, "seed=-1"); });
    EXPECT_NE(m.find("seed"), std::string::npos) << m;
    m = error_of([&] { mhc::config_apply_override(c, "n_layer=99999999999"); });
    EXPECT_NE(m.find("n_layer"), std::string::npos) << m;
    EXPECT_EQ(c.model.n_layer, mhc::ModelConfig().n_layer);  // failed overrides change nothing
}

TEST(ConfigToml, UnknownKeyWithAndWithoutSuggestion) {
    std::string m = error_of([] { from_toml("n_layer = 2\nn_embed = 64\n"); });
    EXPECT_EQ(m, "test.toml:2: unknown config key 'n_embed' (did you mean 'n_embd'?)");
    m = error_of([] { from_toml("warmup = 10\n"); });
    EXPECT_NE(m.find("(did you mean 'warmup_iters'?)"), std::string::npos) << m;
    m = error_of([] { from_toml("dropout = 0.0\n"); });
    EXPECT_NE(m.find("unknown config key 'dropout'"), std::string::npos) << m;
    EXPECT_EQ(m.find("did you mean"), std::string::npos) << m;
    m = error_of([] { from_toml("[model]\nn_layer = 2\n"); });
    EXPECT_NE(m.find("'model'"), std::string::npos) << m;
    EXPECT_NE(m.find("flat"), std::string::npos) << m;
}

TEST(ConfigToml, WrongTypeNamesKeyLineAndExpectedType) {
    std::string m = error_of([] { from_toml("\n\nn_layer = \"four\"\n"); });
    EXPECT_NE(m.find("test.toml:3:"), std::string::npos) << m;
    EXPECT_NE(m.find("n_layer"), std::string::npos) << m;
    EXPECT_NE(m.find("integer"), std::string::npos) << m;
    m = error_of([] { from_toml("max_iters = 1e3\n"); });
    EXPECT_NE(m.find("max_iters"), std::string::npos) << m;
    m = error_of([] { from_toml("learning_rate = \"fast\"\n"); });
    EXPECT_NE(m.find("learning_rate"), std::string::npos) << m;
    EXPECT_NE(m.find("number"), std::string::npos) << m;
    m = error_of([] { from_toml("bias = 1\n"); });
    EXPECT_NE(m.find("bias"), std::string::npos) << m;
    m = error_of([] { from_toml("hyper_conn_type = [\"mhc\"]\n"); });
    EXPECT_NE(m.find("hyper_conn_type"), std::string::npos) << m;
    EXPECT_NE(m.find("string"), std::string::npos) << m;
    // Integers are numbers.
    TrainConfig c = from_toml("learning_rate = 1\ngrad_clip = 0\n");
    EXPECT_DOUBLE_EQ(c.learning_rate, 1.0);
    EXPECT_DOUBLE_EQ(c.grad_clip, 0.0);
}

TEST(ConfigToml, SyntaxErrorHasFileAndLine) {
    std::string m = error_of([] { from_toml("n_layer = 2\nn_head = 4\nn_embd = = 3\n"); });
    EXPECT_EQ(m.rfind("test.toml:3:", 0), 0u) << m;
    m = error_of([] { from_toml("n_layer = 2\nn_layer = 3\n"); });  // a duplicate key is a TOML error
    EXPECT_EQ(m.rfind("test.toml:2:", 0), 0u) << m;
}

TEST(ConfigValidate, EveryProblemNamesItsKey) {
    using C = TrainConfig&;
    const std::vector<std::pair<std::function<void(C)>, std::vector<std::string>>> cases = {
        {[](C c) { c.model.n_layer = 0; }, {"n_layer"}},
        {[](C c) { c.model.n_head = 0; }, {"n_head"}},
        {[](C c) { c.model.n_embd = 0; }, {"n_embd"}},
        {[](C c) { c.model.block_size = 0; }, {"block_size"}},
        {[](C c) { c.batch_size = 0; }, {"batch_size"}},
        {[](C c) { c.gradient_accumulation_steps = 0; }, {"gradient_accumulation_steps"}},
        {[](C c) { c.max_iters = 0; }, {"max_iters"}},
        {[](C c) { c.eval_iters = 0; }, {"eval_iters"}},
        {[](C c) { c.model.n_embd = 100, c.model.n_head = 6; }, {"n_embd 100 is not divisible by n_head 6"}},
        {[](C c) { c.learning_rate = 0; }, {"learning_rate"}},
        {[](C c) { c.learning_rate = std::numeric_limits<double>::quiet_NaN(); }, {"learning_rate"}},
        {[](C c) { c.min_lr = -1e-5; }, {"min_lr"}},
        {[](C c) { c.min_lr = 1e-2; }, {"min_lr", "learning_rate"}},
        {[](C c) { c.warmup_iters = -1; }, {"warmup_iters"}},
        {[](C c) { c.lr_decay_iters = 50; }, {"lr_decay_iters", "warmup_iters"}},
        {[](C c) { c.weight_decay = -0.1; }, {"weight_decay"}},
        {[](C c) { c.beta1 = 1.0; }, {"beta1"}},
        {[](C c) { c.beta2 = -0.1; }, {"beta2"}},
        {[](C c) { c.grad_clip = -1; }, {"grad_clip"}},
        {[](C c) { c.eval_interval = 0, c.checkpoint_interval = 5; }, {"eval_interval"}},
        {[](C c) { c.log_interval = 0; }, {"log_interval"}},
        {[](C c) { c.checkpoint_interval = -1; }, {"checkpoint_interval"}},
        {[](C c) { c.diag_interval = -1; }, {"diag_interval"}},
        {[](C c) { c.sample_interval = -1; }, {"sample_interval"}},
        {[](C c) { c.sample_tokens = 0; }, {"sample_tokens"}},
        {[](C c) { c.model.hyper_conn_n = 0; }, {"hyper_conn_n"}},
        {[](C c) { c.model.hyper_conn_n = 9; }, {"hyper_conn_n"}},
        {[](C c) { c.model.hyper_conn_type = mhc::Variant::residual, c.model.hyper_conn_n = 2, c.model.hyper_conn_n_set = true; },
         {"hyper_conn_n", "none"}},
        {[](C c) { c.model.hyper_conn_type = mhc::Variant::kromhc, c.model.hyper_conn_n = 6; }, {"hyper_conn_n", "kromhc"}},
        {[](C c) { c.model.hyper_conn_type = mhc::Variant::ohc, c.model.hyper_conn_n = 3, c.model.hyper_conn_n_set = true; },
         {"hyper_conn_n must be 4", "ohc", "got 3"}},
        {[](C c) { c.model.hyper_conn_n = 7; }, {"hyper_conn_perm_subset", "hyper_conn_n"}},
        {[](C c) { c.model.hyper_conn_perm_subset = 25; }, {"hyper_conn_perm_subset", "24"}},
        {[](C c) { c.model.hyper_conn_perm_subset = -1; }, {"hyper_conn_perm_subset"}},
        {[](C c) { c.model.sinkhorn_iters = 0; }, {"sinkhorn_iters"}},
        {[](C c) { c.model.cayley_iters = -1; }, {"cayley_iters", ">= 0", "got -1"}},
        {[](C c) { c.model.hyper_conn_type = mhc::Variant::jpmhc, c.model.cayley_iters = -3; }, {"cayley_iters"}},
        {[](C c) { c.model.vocab_size = -1; }, {"vocab_size"}},
        {[](C c) { c.data_order = "shuffled"; }, {"data_order", "shuffled"}},
        {[](C c) { c.train_split = 0; }, {"train_split"}},
        {[](C c) { c.train_split = 1; }, {"train_split"}},
        {[](C c) { c.device = "gpu"; }, {"device 'gpu'", "cpu or cuda"}},
        {[](C c) { c.device = "cuda", c.model.n_embd = 258, c.model.n_head = 2; },
         {"device cuda", "head sizes", "up to 128", "got 129"}},
        {[](C c) { c.dtype = "fp16"; }, {"dtype 'fp16'", "fp32 or bf16"}},
        {[](C c) { c.dtype = "bf16"; }, {"dtype bf16 needs device cuda", "dtype=fp32"}},
    };
    for (size_t i = 0; i < cases.size(); i++) {
        const std::string m = finalize_error(cases[i].first);
        for (const std::string& needle : cases[i].second)
            EXPECT_NE(m.find(needle), std::string::npos) << "case " << i << ": '" << m << "' lacks '" << needle << "'";
    }
    EXPECT_EQ(finalize_error([](C c) { c.model.n_embd = 100, c.model.n_head = 6; }),
              "n_embd 100 is not divisible by n_head 6");
}

TEST(ConfigValidate, ValidEdgeCases) {
    EXPECT_NO_THROW(finalized([](TrainConfig& c) { c.model.hyper_conn_n = 8, c.model.hyper_conn_perm_subset = 24; }));
    EXPECT_NO_THROW(finalized([](TrainConfig& c) { c.model.hyper_conn_type = mhc::Variant::kromhc, c.model.hyper_conn_n = 8; }));
    EXPECT_NO_THROW(finalized([](TrainConfig& c) { c.model.hyper_conn_n = 6; }));
    EXPECT_NO_THROW(finalized([](TrainConfig& c) { c.model.hyper_conn_n = 3, c.model.hyper_conn_perm_subset = 6; }));
    EXPECT_NO_THROW(finalized([](TrainConfig& c) { c.beta1 = 0, c.grad_clip = 0, c.min_lr = c.learning_rate; }));
    EXPECT_NO_THROW(finalized([](TrainConfig& c) { c.model.hyper_conn_type = mhc::Variant::hc, c.model.hyper_conn_n = 5; }));
    EXPECT_NO_THROW(finalized([](TrainConfig& c) { c.model.hyper_conn_type = mhc::Variant::jpmhc, c.model.hyper_conn_n = 7; }));
    EXPECT_NO_THROW(finalized([](TrainConfig& c) { c.model.hyper_conn_type = mhc::Variant::jpmhc, c.model.cayley_iters = 0; }));
    // ohc's n is fixed at 4: an unset n takes it, an explicit 4 is fine.
    EXPECT_EQ(finalized([](TrainConfig& c) { c.model.hyper_conn_type = mhc::Variant::ohc, c.model.hyper_conn_n = 2; })
                  .model.hyper_conn_n, 4);
    EXPECT_NO_THROW(finalized([](TrainConfig& c) {
        c.model.hyper_conn_type = mhc::Variant::ohc, c.model.hyper_conn_n = 4, c.model.hyper_conn_n_set = true;
    }));
    // An explicit n = 1 is fine for none; an explicit n = 4 is not (see EveryProblemNamesItsKey).
    TrainConfig c = from_toml("hyper_conn_type = \"none\"\nhyper_conn_n = 1\n");
    EXPECT_NO_THROW(mhc::config_finalize(c));
    c = from_toml("hyper_conn_type = \"none\"\nhyper_conn_n = 4\n");
    EXPECT_NE(error_of([&] { mhc::config_finalize(c); }).find("hyper_conn_n"), std::string::npos);
}

TEST(ConfigDerived, LrDecayAndCheckpointIntervalFollowTheirKeys) {
    TrainConfig c = from_toml("max_iters = 500\neval_interval = 50\n");
    mhc::config_apply_override(c, "max_iters=800");  // after the file: the derived value follows it
    mhc::config_finalize(c);
    EXPECT_EQ(c.lr_decay_iters, 800);
    EXPECT_EQ(c.checkpoint_interval, 50);
    TrainConfig again = c;
    mhc::config_finalize(again);  // idempotent
    EXPECT_EQ(mhc::config_to_json(again), mhc::config_to_json(c));

    c = from_toml("max_iters = 500\nlr_decay_iters = 300\ncheckpoint_interval = 100\n");
    mhc::config_finalize(c);
    EXPECT_EQ(c.lr_decay_iters, 300);
    EXPECT_EQ(c.checkpoint_interval, 100);
}

namespace {
// A config with every key away from its default (not necessarily valid), to catch a key that a
// round trip drops or reads into the wrong field.
TrainConfig unusual() {
    TrainConfig c;
    c.model = {3, 2, 48, 300, 64, true, mhc::Variant::kromhc, 8, 7, 3, 5, std::numeric_limits<uint64_t>::max(), true};
    c.batch_size = 3, c.gradient_accumulation_steps = 5, c.learning_rate = 0.1 + 0.2, c.min_lr = 1e-300;
    c.warmup_iters = 11, c.lr_decay_iters = 13, c.max_iters = 17, c.weight_decay = 0.0;
    c.beta1 = 0.123456789012345678, c.beta2 = 1.0 / 3.0, c.grad_clip = 2.0;
    c.eval_interval = 19, c.eval_iters = 23, c.log_interval = 29, c.checkpoint_interval = 31;
    c.diag_interval = 37, c.sample_interval = 41, c.sample_tokens = 43;
    c.seed = 9007199254740993ull, c.data_order = "se\"qu\\en\ttial\n", c.train_split = 0.75;
    return c;
}
}  // namespace

TEST(ConfigJson, RoundTrip) {
    std::vector<TrainConfig> configs(1);  // the defaults
    configs.push_back(unusual());
    configs.push_back(finalized([](TrainConfig&) {}));
    for (const TrainConfig& c : configs) {
        const nlohmann::json j = mhc::config_to_json(c);
        EXPECT_EQ(mhc::config_to_json(mhc::config_from_json(j)), j);
        EXPECT_EQ(mhc::config_from_json(j).seed, c.seed);
        EXPECT_EQ(mhc::config_from_json(j).model.hyper_conn_perm_seed, c.model.hyper_conn_perm_seed);
        EXPECT_EQ(mhc::config_from_json(nlohmann::json::parse(j.dump())).learning_rate, c.learning_rate);
    }
}

TEST(ConfigJson, ModelJsonHasExactlyTheModelKeys) {
    const nlohmann::json j = mhc::model_config_to_json(unusual().model);
    std::set<std::string> keys;
    for (const auto& [k, v] : j.items()) keys.insert(k);
    EXPECT_EQ(keys, (std::set<std::string>{"n_layer", "n_head", "n_embd", "vocab_size", "block_size", "bias",
                                           "hyper_conn_type", "hyper_conn_n", "sinkhorn_iters", "cayley_iters",
                                           "hyper_conn_perm_subset", "hyper_conn_perm_seed"}));
    EXPECT_EQ(mhc::model_config_to_json(mhc::model_config_from_json(j)), j);
    // Missing keys keep their defaults.
    const mhc::ModelConfig m = mhc::model_config_from_json({{"n_layer", 12}});
    EXPECT_EQ(m.n_layer, 12);
    EXPECT_EQ(m.n_embd, mhc::ModelConfig{}.n_embd);
    // A resolved "none" model writes its single stream.
    EXPECT_EQ(mhc::model_config_to_json(finalized([](TrainConfig& c) { c.model.hyper_conn_type = mhc::Variant::residual; }).model)
                  ["hyper_conn_n"], 1);
}

TEST(ConfigJson, StrictLikeToml) {
    std::string m = error_of([] { mhc::config_from_json({{"n_embed", 64}}); });
    EXPECT_NE(m.find("unknown config key 'n_embed' (did you mean 'n_embd'?)"), std::string::npos) << m;
    m = error_of([] { mhc::model_config_from_json({{"batch_size", 8}}); });
    EXPECT_NE(m.find("batch_size"), std::string::npos) << m;
    m = error_of([] { mhc::config_from_json({{"n_layer", "4"}}); });
    EXPECT_NE(m.find("n_layer"), std::string::npos) << m;
    EXPECT_NE(m.find("integer"), std::string::npos) << m;
    m = error_of([] { mhc::config_from_json({{"n_layer", 4.0}}); });
    EXPECT_NE(m.find("n_layer"), std::string::npos) << m;
    m = error_of([] { mhc::config_from_json(nlohmann::json::array()); });
    EXPECT_NE(m.find("object"), std::string::npos) << m;
    EXPECT_DOUBLE_EQ(mhc::config_from_json({{"learning_rate", 1}}).learning_rate, 1.0);
}

TEST(ConfigTomlWriter, RoundTrip) {
    std::vector<TrainConfig> configs(1);  // the defaults
    configs.push_back(unusual());
    configs.push_back(finalized([](TrainConfig&) {}));
    configs.push_back(mhc::config_from_toml_file(config_path("mhc_lite_paper.toml")));
    for (const TrainConfig& c : configs) {
        const std::string text = mhc::config_to_toml(c);
        const TrainConfig back = mhc::config_from_toml_string(text, "written.toml");
        EXPECT_EQ(mhc::config_to_json(back), mhc::config_to_json(c)) << text;
        EXPECT_EQ(mhc::config_to_toml(back), text);
    }
}

TEST(ConfigTomlWriter, ResolvedConfigValidatesAgain) {
    TrainConfig c = mhc::config_from_toml_file(config_path("default.toml"));
    mhc::config_apply_override(c, "hyper_conn_type=residual");
    mhc::config_finalize(c);
    TrainConfig back = mhc::config_from_toml_string(mhc::config_to_toml(c), "resolved.toml");
    mhc::config_finalize(back);
    EXPECT_EQ(mhc::config_to_json(back), mhc::config_to_json(c));
    EXPECT_EQ(back.model.hyper_conn_type, mhc::Variant::residual);
    EXPECT_EQ(back.model.hyper_conn_n, 1);
}
