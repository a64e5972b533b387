// The pieces of issue 15 ("a run you can trust") one by one: the file lock, file fingerprints,
// the memory estimate against the buffers it predicts, AdamW's finiteness check, the fixed
// validation set, the run directory's writer, data record and checkpoint refusal. End to end in
// tests/cli/test_trust.py.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "file_util.h"
#include "gpt_util.h"
#include "mhc/optim.h"
#include "mhc/train.h"
#include "sys/file.h"
#include "sys/lock.h"
#include "train/run_dir.h"
#include "train/val_set.h"

using namespace mhc;
namespace fs = std::filesystem;

TEST(SysLock, OneHolderAtATimeNamedByPid) {
    const std::string dir = fresh_dir("trust", "lock"), p = dir + "/lock";
    {
        sys::FileLock a = sys::lock_file(p, "the thing");
        EXPECT_TRUE(a.held());
        EXPECT_EQ(sys::lock_file_pid(p), (long)::getpid());
        // Another process (locks belong to open files, so a child shows the conflict).
        const pid_t child = ::fork();
        if (child == 0) {
            try {
                sys::lock_file(p, "the thing");
                _exit(1);
            } catch (const std::exception& e) {
                const std::string want = "the thing is in use by process " + std::to_string(::getppid());
                _exit(std::string(e.what()).rfind(want, 0) == 0 ? 0 : 2);
            }
        }
        int status = 0;
        ::waitpid(child, &status, 0);
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    }
    EXPECT_FALSE(fs::exists(p));  // a normal release removes the file
    sys::FileLock b = sys::lock_file(p, "the thing");  // and the next one takes it
    EXPECT_TRUE(b.held());
}

TEST(SysLock, StaleFileOfADeadHolderIsTakenOver) {
    const std::string dir = fresh_dir("trust", "stale"), p = dir + "/lock";
    const pid_t child = ::fork();
    if (child == 0) {
        sys::FileLock l = sys::lock_file(p, "x");
        _exit(0);  // dies holding it: no destructor runs, the file stays
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    ASSERT_TRUE(fs::exists(p));
    EXPECT_EQ(sys::lock_file_pid(p), (long)child);
    sys::FileLock l = sys::lock_file(p, "x");
    EXPECT_EQ(sys::lock_file_pid(p), (long)::getpid());
}

TEST(SysFile, FingerprintIsSizeAndContentCrc) {
    const std::string dir = fresh_dir("trust", "fingerprint");
    sys::write_file_atomic(dir + "/a", "hello");
    sys::write_file_atomic(dir + "/b", "hellp");
    const sys::Fingerprint a = sys::file_fingerprint(dir + "/a"), b = sys::file_fingerprint(dir + "/b");
    EXPECT_EQ(a.bytes, 5);
    EXPECT_EQ(a.hash, "crc32:3610a686");  // zlib.crc32(b"hello")
    EXPECT_NE(a.hash, b.hash);
    EXPECT_THROW(sys::file_fingerprint(dir + "/missing"), std::runtime_error);
}

TEST(GptMemory, EstimateMatchesTheBuffers) {
    for (const auto& [type, bias] : test::all_model_variants()) {
        const ModelConfig c = test::tiny_config(type, bias, 8);
        GPT<float> m;
        gpt_build(m, c);
        gpt_init(m, 1);
        const int B = 3, T = 5;
        std::vector<int32_t> in(B * T, 1), tg(B * T, 2);
        gpt_forward(m, in.data(), tg.data(), B, T);
        const GptMemory g = gpt_memory_estimate(c, B, T);
        EXPECT_EQ(g.params, (double)m.param.size()) << type;
        EXPECT_EQ(g.activations, (double)(m.act.size() + m.gact.size())) << type;
    }
    ModelConfig huge = test::tiny_config("mhc_lite");
    huge.n_layer = 100000, huge.n_embd = 65536, huge.vocab_size = 50304;
    EXPECT_GT(gpt_memory_estimate(huge, 16, 1024).bytes(), 16 * 1e5 * 12 * 65536.0 * 65536);  // no overflow
}

TEST(AdamWFinite, MirrorsTheStep) {
    std::vector<ParamTensor> t(1);
    t[0].size = 3;
    t[0].decay = true;
    std::vector<float> p = {1, 2, 3}, g = {0.1f, -0.2f, 0.3f};
    AdamW<float> st;
    EXPECT_TRUE(adamw_step_is_finite(st, p.data(), g.data(), t, 1e-3, 0.9, 0.95, 0.1));
    EXPECT_EQ(st.step, 0);  // nothing stored
    EXPECT_TRUE(st.m.empty());
    // g² overflows float: v would be inf (and the update 0 / inf): refused.
    std::vector<float> huge = {1e20f, 0, 0};
    EXPECT_FALSE(adamw_step_is_finite(st, p.data(), huge.data(), t, 1e-3, 0.9, 0.95, 0.1));
    // A learning rate that sends the weights past float's range.
    EXPECT_FALSE(adamw_step_is_finite(st, p.data(), g.data(), t, 1e39, 0.9, 0.95, 0.0));
    adamw_step(st, p.data(), g.data(), t, 1e-3, 0.9, 0.95, 0.1);
    EXPECT_TRUE(adamw_step_is_finite(st, p.data(), g.data(), t, 1e-3, 0.9, 0.95, 0.1));
}

TEST(ValSet, SameWindowsAtEveryEvaluation) {
    TokenData d;
    d.path = "mem";
    d.vocab_size = 11;
    std::vector<uint16_t> ids;
    for (int i = 0; i < 500; i++) ids.push_back((uint16_t)((i * 7) % 11));
    d.tokens = Tokens(std::move(ids));
    TrainConfig cfg;
    cfg.model = test::tiny_config("mhc_lite", false, 8);
    cfg.batch_size = 2;
    cfg.eval_iters = 3;
    GPT<float> m;
    gpt_build(m, cfg.model);
    gpt_init(m, 3);
    const ValSet vs = val_set_make(d, cfg);
    AdamW<float> adam;
    const std::unique_ptr<Engine> e = engine_make("cpu", m, adam);
    const double a = val_set_loss(*e, vs), b = val_set_loss(*e, vs);
    EXPECT_EQ(a, b);
    EXPECT_TRUE(std::isfinite(a));
    Batcher fresh(d, 2, 8, Order::random, cfg.seed ^ 0x5A5A5A5Aull);  // the stream's first batches
    EXPECT_EQ(a, evaluate(m, fresh, 3));
}

TEST(RunDir, WriterLocksAndRemovesADirectoryItCreatedEmpty) {
    const std::string base = fresh_dir("trust", "writer"), dir = base + "/run";
    {
        const run_dir::Writer w = run_dir::take(dir);
        EXPECT_TRUE(w.created);
        EXPECT_EQ(names_in(dir), std::set<std::string>{"lock"});
    }
    EXPECT_FALSE(fs::exists(dir));  // nothing was written: no empty run directory is left
    {
        const run_dir::Writer w = run_dir::take(dir);
        run_dir::start_metrics(dir);
    }
    EXPECT_EQ(names_in(dir), std::set<std::string>{"metrics.jsonl"});  // kept, without its lock
    run_dir::clear(dir);
    EXPECT_TRUE(names_in(dir).empty());
}

TEST(RunDir, DataRecordDifference) {
    const std::string dir = fresh_dir("trust", "data");
    EXPECT_TRUE(run_dir::read_data_record(dir).is_null());
    const nlohmann::json a = {{"train", {{"path", "a.txt"}, {"bytes", 10}, {"hash", "crc32:1"}}},
                              {"val", nullptr}, {"format", "text"}};
    run_dir::write_data_record(dir, a);
    EXPECT_EQ(run_dir::read_data_record(dir), a);
    nlohmann::json moved = a;
    moved["train"]["path"] = "elsewhere/a.txt";  // the same bytes under another name: the same data
    EXPECT_EQ(run_dir::data_record_difference(a, moved), "");
    nlohmann::json other = a;
    other["train"]["hash"] = "crc32:2";
    EXPECT_NE(run_dir::data_record_difference(a, other).find("training data a.txt (10 bytes, crc32:1) then"),
              std::string::npos);
    nlohmann::json with_val = a;
    with_val["val"] = a["train"];
    EXPECT_NE(run_dir::data_record_difference(a, with_val).find("validation data the held-out part"),
              std::string::npos);
    nlohmann::json no_format = a;
    no_format.erase("format");  // compare's requested identity has none
    EXPECT_EQ(run_dir::data_record_difference(a, no_format), "");
}

TEST(RunDir, RefusesToSaveNonFiniteState) {
    const std::string dir = fresh_dir("trust", "nan_save");
    GPT<float> m;
    gpt_build(m, test::tiny_config("mhc_lite"));
    gpt_init(m, 1);
    AdamW<float> opt;
    run_dir::ResumeState rs;
    rs.step = 1;
    rs.time_s = 12.5;
    EXPECT_NO_THROW(run_dir::save_checkpoint(dir, m, opt, rs, "{}"));
    GPT<float> m2;
    AdamW<float> opt2;
    run_dir::ResumeState rs2;
    run_dir::load_checkpoint(dir, m2, opt2, rs2);
    EXPECT_EQ(rs2.time_s, 12.5);
    m.param[m.params[3].offset] = NAN;
    rs.step = 2;
    try {
        run_dir::save_checkpoint(dir, m, opt, rs, "{}");
        FAIL() << "saved NaN";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("'" + m.params[3].name + "' holds NaN or inf"), std::string::npos)
            << e.what();
    }
    EXPECT_EQ(run_dir::latest_step(dir), 1);
    EXPECT_FALSE(fs::exists(dir + "/ckpt_000002.safetensors"));
}

TEST(RunDir, NewestIntactCheckpoint) {
    const std::string dir = fresh_dir("trust", "intact");
    GPT<float> m;
    gpt_build(m, test::tiny_config("none"));
    gpt_init(m, 1);
    AdamW<float> opt;
    run_dir::ResumeState rs;
    for (long s : {2, 4, 6}) {
        rs.step = s;
        run_dir::save_checkpoint(dir, m, opt, rs, "{}");
    }
    std::fstream f(dir + "/ckpt_000006.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-10, std::ios::end);
    f.put('\x7f');
    f.close();
    GPT<float> m2;
    AdamW<float> opt2;
    run_dir::ResumeState rs2;
    EXPECT_THROW(run_dir::load_checkpoint(dir, m2, opt2, rs2), std::runtime_error);
    EXPECT_EQ(run_dir::load_newest_intact(dir, dir + "/ckpt_000006.safetensors", m2, opt2, rs2),
              dir + "/ckpt_000004.safetensors");
    EXPECT_EQ(rs2.step, 4);
    EXPECT_EQ(run_dir::load_newest_intact(dir, dir + "/ckpt_000002.safetensors", m2, opt2, rs2), "");
}
