// Scratch files for the tests: directories of their own, files written and read back whole.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
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

// The test program's own scratch directory for a suite: <tmp>/mhc_<suite>_<pid> (created, kept).
inline std::string scratch_dir(const std::string& suite) {
    const std::filesystem::path d = std::filesystem::temp_directory_path() / ("mhc_" + suite + "_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d.string();
}

// bytes written to <scratch_dir(suite)>/name; returns the path.
inline std::string scratch_file(const std::string& suite, const std::string& name, const std::string& bytes) {
    const std::string path = scratch_dir(suite) + "/" + name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
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
