// The run directory module (src/train/run_dir): `latest`, metrics.jsonl written, truncated and read
// back (a torn last line included), config.toml, and the checkpoint list with its pruning.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "file_util.h"
#include "mhc/train.h"
#include "sys/file.h"
#include "train/run_dir.h"

using namespace mhc;
namespace fs = std::filesystem;

namespace {

void append_raw(const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::app | std::ios::binary) << text;
}

}  // namespace

TEST(RunDir, Latest) {
    const std::string dir = fresh_dir("run_dir", "latest");
    EXPECT_EQ(run_dir::read_latest(dir), "");
    EXPECT_EQ(run_dir::latest_checkpoint(dir), "");
    EXPECT_EQ(run_dir::latest_step(dir), -1);
    EXPECT_EQ(run_latest_checkpoint(dir), "");

    run_dir::write_latest(dir, 42);
    EXPECT_EQ(slurp(dir + "/latest"), "ckpt_000042\n");
    EXPECT_EQ(run_dir::read_latest(dir), "ckpt_000042");
    EXPECT_EQ(run_dir::latest_checkpoint(dir), dir + "/ckpt_000042.safetensors");
    EXPECT_EQ(run_latest_checkpoint(dir), dir + "/ckpt_000042.safetensors");
    EXPECT_EQ(run_dir::latest_step(dir), 42);
    run_dir::write_latest(dir, 1234567);  // more than six digits: the name just grows
    EXPECT_EQ(run_dir::latest_step(dir), 1234567);
    EXPECT_EQ(names_in(dir), std::set<std::string>{"latest"});

    // Only the first line counts; a name that is not ckpt_N has no step but is still a path.
    sys::write_file_atomic(dir + "/latest", "other\nckpt_000001\n");
    EXPECT_EQ(run_dir::latest_checkpoint(dir), dir + "/other.safetensors");
    EXPECT_EQ(run_dir::latest_step(dir), -1);
    sys::write_file_atomic(dir + "/latest", "ckpt_000007");  // no newline
    EXPECT_EQ(run_dir::latest_step(dir), 7);
    sys::write_file_atomic(dir + "/latest", "ckpt_\n");
    EXPECT_EQ(run_dir::latest_step(dir), -1);
    sys::write_file_atomic(dir + "/latest", "\n");
    EXPECT_EQ(run_dir::latest_checkpoint(dir), "");
}

TEST(RunDir, MetricsAppendReadTruncate) {
    const std::string dir = fresh_dir("run_dir", "metrics"), path = run_dir::metrics_path(dir);
    EXPECT_EQ(path, dir + "/metrics.jsonl");
    std::vector<run_dir::MetricsLine> lines;
    EXPECT_FALSE(run_dir::read_metrics(dir, lines));
    run_dir::truncate_metrics(dir, 3);  // nothing to truncate: no file appears
    EXPECT_FALSE(fs::exists(path));

    run_dir::start_metrics(dir);
    ASSERT_TRUE(run_dir::read_metrics(dir, lines));
    EXPECT_TRUE(lines.empty());
    {
        run_dir::MetricsLog log(dir);
        for (long s = 1; s <= 5; s++) log.append({{"step", s}, {"loss", 1.0 / s}});
    }
    const std::string five = slurp(path);
    ASSERT_TRUE(run_dir::read_metrics(dir, lines));
    ASSERT_EQ(lines.size(), 5u);
    for (long s = 1; s <= 5; s++) {
        EXPECT_EQ(lines[s - 1].rec["step"], s);
        EXPECT_EQ(lines[s - 1].text, lines[s - 1].rec.dump());
    }

    // A crash in the middle of a write leaves a torn last line: read as a line that is not JSON.
    append_raw(path, "{\"step\": 6, \"lo");
    ASSERT_TRUE(run_dir::read_metrics(dir, lines));
    ASSERT_EQ(lines.size(), 6u);
    EXPECT_TRUE(lines[5].rec.is_discarded());
    EXPECT_EQ(lines[5].text, "{\"step\": 6, \"lo");

    // Resuming from step 5 drops the torn line; from step 3, the records after it too, byte for byte.
    run_dir::truncate_metrics(dir, 5);
    EXPECT_EQ(slurp(path), five);
    run_dir::truncate_metrics(dir, 3);
    ASSERT_TRUE(run_dir::read_metrics(dir, lines));
    ASSERT_EQ(lines.size(), 3u);
    EXPECT_EQ(slurp(path), five.substr(0, five.find("{\"loss\":0.25")));
    {
        run_dir::MetricsLog log(dir);  // appends after what is kept
        log.append({{"step", 4}});
    }
    ASSERT_TRUE(run_dir::read_metrics(dir, lines));
    ASSERT_EQ(lines.size(), 4u);
    EXPECT_EQ(lines[3].text, "{\"step\":4}");

    // A line that is not JSON in the middle ends what is kept; blank lines are lines too.
    sys::write_file_atomic(path, "{\"step\":1}\n\n{\"step\":2}\n");
    ASSERT_TRUE(run_dir::read_metrics(dir, lines));
    ASSERT_EQ(lines.size(), 3u);
    EXPECT_EQ(lines[1].text, "");
    run_dir::truncate_metrics(dir, 10);
    EXPECT_EQ(slurp(path), "{\"step\":1}\n");
}

TEST(RunDir, Config) {
    const std::string dir = fresh_dir("run_dir", "config");
    EXPECT_THROW(run_dir::read_config(dir), std::runtime_error);
    TrainConfig cfg;
    cfg.max_iters = 77;
    cfg.model.hyper_conn_type = Variant::mhc_lite;
    run_dir::write_config(dir, cfg);
    EXPECT_EQ(run_dir::config_path(dir), dir + "/config.toml");
    EXPECT_EQ(slurp(run_dir::config_path(dir)), config_to_toml(cfg));
    const TrainConfig back = run_dir::read_config(dir);
    EXPECT_EQ(back.max_iters, 77);
    EXPECT_EQ(back.model.hyper_conn_type, Variant::mhc_lite);
}

TEST(RunDir, PruneKeepsTheNewestAndLatest) {
    const std::string dir = fresh_dir("run_dir", "prune");
    for (long s : {1, 2, 3, 10, 20}) {
        const std::string base = dir + "/" + run_dir::checkpoint_name(s);
        sys::write_file_atomic(base + ".safetensors", "m");
        sys::write_file_atomic(base + ".optim.safetensors", "o");
    }
    sys::write_file_atomic(dir + "/ckpt_30.safetensors", "not ours: the name is not zero-padded to six digits");
    sys::write_file_atomic(dir + "/ckpt_0000040.safetensors", "not ours: padded past six digits");
    sys::write_file_atomic(dir + "/ckpt_00005x.safetensors", "not ours: not a number");
    sys::write_file_atomic(dir + "/notes.txt", "");
    EXPECT_EQ(run_dir::list_checkpoints(dir),
              (std::vector<std::string>{dir + "/ckpt_000001.safetensors", dir + "/ckpt_000002.safetensors",
                                        dir + "/ckpt_000003.safetensors", dir + "/ckpt_000010.safetensors",
                                        dir + "/ckpt_000020.safetensors"}));

    run_dir::write_latest(dir, 2);  // e.g. resumed from an older checkpoint
    run_dir::prune_checkpoints(dir, 2);
    EXPECT_EQ(names_in(dir), (std::set<std::string>{"ckpt_000002.safetensors", "ckpt_000002.optim.safetensors",
                                                    "ckpt_000010.safetensors", "ckpt_000010.optim.safetensors",
                                                    "ckpt_000020.safetensors", "ckpt_000020.optim.safetensors",
                                                    "ckpt_30.safetensors", "ckpt_0000040.safetensors",
                                                    "ckpt_00005x.safetensors", "notes.txt", "latest"}));
    run_dir::write_latest(dir, 20);
    run_dir::prune_checkpoints(dir, 1);
    EXPECT_EQ(run_dir::list_checkpoints(dir), std::vector<std::string>{dir + "/ckpt_000020.safetensors"});
    EXPECT_TRUE(fs::exists(dir + "/ckpt_000020.optim.safetensors"));
}

// Past step 999,999 the names have seven digits: still checkpoints, in step order (not name order,
// where ckpt_1000000 sorts before ckpt_999999), pruned like the others.
TEST(RunDir, CheckpointsPastAMillionStepsAreListedInStepOrder) {
    const std::string dir = fresh_dir("run_dir", "million");
    for (long s : {999'998L, 1'000'000L, 999'999L, 12'000'000L}) {
        const std::string base = dir + "/" + run_dir::checkpoint_name(s);
        sys::write_file_atomic(base + ".safetensors", "m");
        sys::write_file_atomic(base + ".optim.safetensors", "o");
    }
    EXPECT_EQ(run_dir::checkpoint_name(1'000'000), "ckpt_1000000");
    EXPECT_EQ(run_dir::list_checkpoints(dir),
              (std::vector<std::string>{dir + "/ckpt_999998.safetensors", dir + "/ckpt_999999.safetensors",
                                        dir + "/ckpt_1000000.safetensors", dir + "/ckpt_12000000.safetensors"}));
    run_dir::write_latest(dir, 12'000'000);
    EXPECT_EQ(run_dir::latest_step(dir), 12'000'000);
    run_dir::prune_checkpoints(dir, 2);
    EXPECT_EQ(names_in(dir), (std::set<std::string>{"ckpt_1000000.safetensors", "ckpt_1000000.optim.safetensors",
                                                    "ckpt_12000000.safetensors", "ckpt_12000000.optim.safetensors",
                                                    "latest"}));
}

TEST(RunDir, StaleTemporariesAreRemoved) {
    const std::string dir = fresh_dir("run_dir", "stale");
    sys::write_file_atomic(dir + "/ckpt_000005.safetensors", "m");
    sys::write_file_atomic(dir + "/ckpt_000010.safetensors.tmp.12345", "torn");
    sys::write_file_atomic(dir + "/latest.tmp.999", "torn");
    run_dir::remove_stale_temporaries(dir);
    EXPECT_EQ(names_in(dir), std::set<std::string>{"ckpt_000005.safetensors"});
}
