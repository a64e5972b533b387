// Checking a one-line error: its type and a fragment of its message.
#pragma once
#include <gtest/gtest.h>

#include <string>

// f() must throw an E whose message contains fragment and is one line.
template <typename E, typename F>
void expect_error(F&& f, const std::string& fragment) {
    try {
        f();
        ADD_FAILURE() << "no error, expected one containing: " << fragment;
    } catch (const E& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
        EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
}
