// mhc/prepare.h — text files in, token files out (`mhc prepare`).
//
// The inputs are read in order, in pieces, and encoded as they stream by, so a corpus larger than
// memory works. Each file is encoded on its own (a file boundary is a boundary of the encoding).
// The first (1 - val_fraction) of the input bytes, up to the first place at or after that point
// where the text can be cut without changing its encoding (tokenizer_cut_ok), go to train.bin, the
// rest to val.bin. Written into out_dir, each atomically and only when everything succeeded:
//   train.bin, val.bin  uint16 tokens (uint32 when the vocabulary has more than 65,536 ids), raw
//                       ("bin", nanoGPT's layout) or as llm.c shards ("llmc");
//   tokenizer.model / tokenizer.json   the tokenizer (not for bytes);
//   meta.json           the sidecar: dtype, vocabulary, tokenizer, tokens and bytes per file (mhc/data.h).
// A SentencePiece model is trained on the training part only.
#pragma once
#include <string>
#include <vector>

#include "mhc/data.h"

namespace mhc {

struct PrepareOptions {
    std::vector<std::string> inputs;
    std::string out_dir;
    std::string tokenizer = "bytes";  // "bytes", "spm-bpe", "spm-unigram", or a tokenizer file
    int vocab_size = 0;               // spm-bpe / spm-unigram only
    double val_fraction = 0.1;        // in [0, 1); 0: no val.bin
    std::string container = "bin";   // "bin" or "llmc"
    long spm_max_sentences = 2000000;
    int threads = 2;                  // SentencePiece training
    bool progress = false;            // a live line with throughput (on a terminal)
    bool quiet = false;               // nothing on stderr
};

struct PrepareResult {
    TokenMeta meta;
    double seconds = 0;
};

// Throws std::invalid_argument / std::runtime_error with one line naming the problem; then no
// output file is left (nor a temporary, unless the process is killed outright).
PrepareResult prepare_run(const PrepareOptions& opt);

}  // namespace mhc
