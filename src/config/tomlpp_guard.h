// A pre-check for known undefined behaviour in toml++ 3.3.0, Debian 12's libtomlplusplus-dev.
//
// is_non_ascii_horizontal_whitespace() ends in __builtin_unreachable() for the code points
// U+00A1..U+0499, U+2C6E..U+3067 and U+FB26..U+FEFE (bar the real spaces U+3000), so whenever the
// parser asks whether one of those is whitespace the behaviour is undefined (upstream issues
// marzer/tomlplusplus#190 and #295, fixed upstream by pull request #305, in no Debian release).
// It asks outside strings and comments (after a key or a value, between tokens), in multi-line
// basic strings right after a backslash, and on every character of a token that starts with a
// digit or a sign: to tell numbers from dates it reads ahead to the next space, comma, bracket or
// '#', quotes included. Inside other strings and in comments the characters are safe, so configs
// with accented words in comments and strings still parse.
//
// src/config/config.cpp refuses text this flags before toml::parse (finding F3 in fuzz/README.md),
// with a one-line error instead of handing it to toml++; fuzz_config runs the same check. Refusing the text
// with a one-line error instead of handing it to toml++. TOML allows non-ASCII characters only in
// strings and comments, so outside them this refuses nothing that was valid; inside, it errs on
// the safe side in two rare valid forms: a multi-line string continued by a backslash onto a line
// that starts with such a character, and such a character in a string on the line of a key that
// starts with a digit or a dash (no mhc key does).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace mhc::detail {

inline bool tomlpp_unsafe_codepoint(uint32_t c) {
    return (c > 0xA0 && c < 0x49A) || (c >= 0x2C6E && c < 0x3068 && c != 0x3000) ||
           (c >= 0xFB26 && c < 0xFEFF);
}

// Byte offset of the first code point that toml++ 3.3.0 could classify with undefined behaviour,
// or npos. Decodes UTF-8 leniently (overlong forms too): whatever toml++'s stricter decoder
// accepts is seen here with the same value, and what it refuses it refuses before classifying.
inline size_t tomlpp_unsafe_at(std::string_view s) {
    enum { top, value, comment, basic, literal, ml_basic, ml_literal } st = top;
    enum { plain, after_backslash, skipping } esc = plain;  // ml_basic only
    auto ascii_space = [](uint32_t c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
    auto bare_key_char = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    };
    auto ends_value = [&](uint32_t c) { return ascii_space(c) || c == ',' || c == ']' || c == '}' || c == '#'; };
    for (size_t i = 0; i < s.size();) {
        const unsigned char b = (unsigned char)s[i];
        uint32_t c = b;
        size_t len = 1;
        const size_t need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
        if (need > 1 && i + need <= s.size()) {
            c = b & (0x7F >> need);
            for (size_t k = 1; k < need && len; k++) {
                const unsigned char cb = (unsigned char)s[i + k];
                if ((cb & 0xC0) != 0x80) len = 0;
                c = (c << 6) | (cb & 0x3F);
            }
            if (len) len = need;
            else c = b, len = 1;  // not a sequence: toml++ refuses it as invalid UTF-8
        }
        // A closing delimiter plus the up to two quotes TOML lets stand next to it as content.
        auto close3 = [&](char q) {
            size_t n = 3;
            while (n < 5 && i + n < s.size() && s[i + n] == q) n++;
            return n;
        };
        auto starts = [&](const char* d) { return s.substr(i, 3) == d; };
        switch (st) {
            case value:
                // toml++ reads "1979-05-27 07:32:00" on past one space: so does this, a little
                // further (what then follows a value and a space is a TOML error anyway).
                if (c == ' ' && i + 1 < s.size() && !ends_value((unsigned char)s[i + 1])) break;
                if (!ends_value(c)) {
                    if (tomlpp_unsafe_codepoint(c)) return i;
                    break;
                }
                st = top;
                [[fallthrough]];
            case top:
                if (((c >= '0' && c <= '9') || c == '+' || c == '-') && !(i > 0 && bare_key_char(s[i - 1])))
                    st = value;  // a digit inside a bare key (beta1) is not the start of a value
                else if (c == '#') st = comment;
                else if (c == '"') st = starts("\"\"\"") ? (len = 3, esc = plain, ml_basic) : basic;
                else if (c == '\'') st = starts("'''") ? (len = 3, ml_literal) : literal;
                else if (tomlpp_unsafe_codepoint(c)) return i;
                break;
            case comment:
                if (c == '\n') st = top;
                break;
            case basic:  // an escape takes the next code point whatever it is
                if (c == '\\' && i + 1 < s.size()) len = 1 + ((unsigned char)s[i + 1] < 0x80 ? 1 : 0);
                else if (c == '"' || c == '\n') st = top;
                break;
            case literal:
                if (c == '\'' || c == '\n') st = top;
                break;
            case ml_literal:
                if (starts("'''")) len = close3('\''), st = top;
                break;
            case ml_basic:
                if (esc != plain) {
                    if (tomlpp_unsafe_codepoint(c)) return i;  // is_whitespace() on it
                    if (ascii_space(c)) {
                        esc = skipping;  // a line-ending backslash: blanks and newlines follow
                        break;
                    }
                    const bool escape_char = esc == after_backslash;
                    esc = plain;
                    if (escape_char) break;  // the escape's letter: content, not a delimiter
                }
                if (c == '\\') esc = after_backslash;
                else if (starts("\"\"\"")) len = close3('"'), st = top;
                break;
        }
        i += len;
    }
    return std::string_view::npos;
}

}  // namespace mhc::detail
