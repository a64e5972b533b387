// Scratch files for the tests of src/sys and the run directory.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>

#include "sys/file.h"

// An empty directory of its own: <tmp>/mhc_<suite>_<pid>/<name>.
inline std::string fresh_dir(const std::string& suite, const std::string& name) {
    const std::filesystem::path d =
        std::filesystem::temp_directory_path() / ("mhc_" + suite + "_" + std::to_string(::getpid())) / name;
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    return d.string();
}

// The whole file (a failed test if it cannot be read).
inline std::string slurp(const std::string& path) {
    std::string s;
    EXPECT_TRUE(mhc::sys::read_file(path, s)) << path;
    return s;
}

// The names of the entries of a directory.
inline std::set<std::string> names_in(const std::string& dir) {
    std::set<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(dir)) out.insert(e.path().filename().string());
    return out;
}
