// UTF-8 for streaming output: characters are printed whole, never split across two writes, and
// bytes that cannot form a character are replaced by U+FFFD (Unicode's "maximal subpart" rule).
#include "mhc/tokenizer.h"

namespace mhc {

namespace {
constexpr const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD
}

int utf8_char_length(const unsigned char* s, size_t n) {
    const unsigned b0 = s[0];
    if (b0 < 0x80) return 1;
    // The well-formed sequences (Unicode Table 3-7): the second byte's range depends on the
    // first, which rules out overlong forms, surrogates and code points above U+10FFFF.
    int need;
    unsigned lo = 0x80, hi = 0xBF;
    if (b0 < 0xC2) return -1;
    else if (b0 < 0xE0) need = 2;
    else if (b0 < 0xF0) need = 3, lo = b0 == 0xE0 ? 0xA0 : 0x80, hi = b0 == 0xED ? 0x9F : 0xBF;
    else if (b0 < 0xF5) need = 4, lo = b0 == 0xF0 ? 0x90 : 0x80, hi = b0 == 0xF4 ? 0x8F : 0xBF;
    else return -1;
    for (int i = 1; i < need; i++) {
        if ((size_t)i >= n) return 0;
        const unsigned b = s[i];
        if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF)) return -i;
    }
    return need;
}

std::string Utf8Stream::push(std::string_view bytes) {
    pending.append(bytes);
    std::string out;
    const unsigned char* p = (const unsigned char*)pending.data();
    size_t i = 0;
    while (i < pending.size()) {
        const int r = utf8_char_length(p + i, pending.size() - i);
        if (r == 0) break;  // the rest of a character may still come
        if (r > 0) out.append(pending, i, (size_t)r), i += (size_t)r;
        else out += kReplacement, i += (size_t)-r;
    }
    pending.erase(0, i);
    return out;
}

std::string Utf8Stream::finish() {
    std::string out = push("");
    if (!pending.empty()) out += kReplacement;  // a character that never completed
    pending.clear();
    return out;
}

}  // namespace mhc
