// Resuming a run (see resume.h).
#include "train/resume.h"

#include <cstdio>
#include <filesystem>
#include <stdexcept>

namespace mhc {

namespace {

std::string name_of(const std::string& path) { return std::filesystem::path(path).filename().string(); }

// The newest checkpoint, or the newest intact one when it is corrupt and opt allows it.
void load_start(const TrainOptions& opt, GPT<float>& m, AdamW<float>& adam, run_dir::ResumeState& rs) {
    const std::string dir = opt.out_dir, newest = run_dir::latest_checkpoint(dir);
    try {
        run_dir::load_checkpoint(dir, m, adam, rs);
        return;
    } catch (const std::exception& e) {
        const std::string why = e.what();
        const std::string intact = run_dir::load_newest_intact(dir, newest, m, adam, rs);
        if (intact.empty())
            throw std::runtime_error(why + "; no older checkpoint in " + dir + " is intact either");
        if (!opt.resume_from_intact)
            throw std::runtime_error(why + "; the newest intact checkpoint is " + name_of(intact) + " (step " +
                                     std::to_string(rs.step) + "): add --resume-from-intact to resume from it");
        std::fprintf(stderr, "mhc train: %s is corrupt; resuming from %s (step %ld), the newest intact checkpoint\n",
                     name_of(newest).c_str(), name_of(intact).c_str(), rs.step);
        run_dir::write_latest(dir, rs.step);
    }
}

}  // namespace

void resume_run(const TrainOptions& opt, const TrainConfig& cfg, const nlohmann::json& data, GPT<float>& m,
                AdamW<float>& adam, run_dir::ResumeState& rs) {
    const std::string dir = opt.out_dir;
    load_start(opt, m, adam, rs);
    const std::string model_diff = config_json_difference(model_config_to_json(m.cfg), model_config_to_json(cfg.model),
                                                          "in the checkpoint", "in the config");
    if (!model_diff.empty())
        throw std::runtime_error(dir + ": the checkpoint's model differs from the config: " + model_diff +
                                 " (a resumed run keeps its model)");
    const nlohmann::json had = run_dir::read_data_record(dir);
    if (!had.is_object()) {  // a run from before data.json: from now on it is known
        run_dir::write_data_record(dir, data);
    } else {
        const std::string data_diff = run_dir::data_record_difference(had, data);
        if (!data_diff.empty())
            throw std::runtime_error(dir + " was trained on other data (" + data_diff +
                                     "): resume it with the data it was trained on, or start a new run");
    }
}

}  // namespace mhc
