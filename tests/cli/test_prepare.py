#!/usr/bin/python3
"""End-to-end tests of `mhc prepare` and of text in and out of `train`, `eval` and `sample` (run by ctest).

    /usr/bin/python3 tests/cli/test_prepare.py BUILD/mhc

- SentencePiece: prepare's ids on all 43 fortune files equal what Debian's `spm_encode` prints for
  the same model and text (line by line, then the newline's byte piece); the streaming cuts change
  nothing (the same output read 1 kB at a time).
- SentencePiece training leaves out lines past its 4,192 bytes and says how many; with none left it
  stops with one line.
- tokenizer.json: the hand-written fixture tests/tokenizers/tiny_bpe.json gives the ids worked out
  by hand; unsupported or malformed files, and every other bad input, give one line and no file.
- uint32: a vocabulary past 65,536 ids makes uint32 files (raw and llm.c LLaMA-3 shards) that
  `train` reads through the sidecar.
- A run's tokenizer: train copies it, sample takes --prompt text and prints valid UTF-8 only, eval
  prints bits per byte (checked against the pieces' byte lengths computed here); missing, mismatched
  or absent tokenizers and out-of-vocabulary ids are one-line errors.
Prints one line per check and a last line `N passed, M failed`; exits non-zero on any failure.
"""
import gzip
import json
import math
import os
import shutil
import struct
import subprocess
import sys

from harness import MHC, TMP, check, ckpt_metadata, last_json, metrics, path, one_line_error, stderr_text, finish

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "..", "tokenizers", "tiny_bpe.json")
FORTUNES = "/usr/share/games/fortunes"

TINY = ["--set", "n_layer=2", "--set", "n_head=2", "--set", "n_embd=32", "--set", "block_size=16",
        "--set", "batch_size=4", "--set", "warmup_iters=2", "--set", "eval_interval=4", "--set", "eval_iters=2",
        "--set", "log_interval=1", "--set", "hyper_conn_n=2", "--set", "diag_interval=0"]


def run(*args, env=None):
    e = dict(os.environ, OMP_NUM_THREADS="2", **(env or {}))
    return subprocess.run([MHC, *args], capture_output=True, env=e)


def tokens_of(name, width=2, header=0):
    with open(name, "rb") as f:
        b = f.read()[header:]
    return list(struct.unpack("<%d%s" % (len(b) // width, "H" if width == 2 else "I"), b))


def fortune_files():
    return sorted(os.path.join(FORTUNES, f) for f in os.listdir(FORTUNES)
                  if os.path.isfile(os.path.join(FORTUNES, f)) and not os.path.islink(os.path.join(FORTUNES, f))
                  and not f.endswith(".dat") and not f.endswith(".u8"))


def spm_pieces(model):
    r = subprocess.run(["spm_export_vocab", "--model", model], capture_output=True, check=True)
    return [l.split("\t")[0] for l in r.stdout.decode("utf-8").split("\n") if l]


def piece_bytes(piece):
    """Text bytes a SentencePiece piece decodes to (byte pieces one byte, "▁" a space, controls none)."""
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        return 1
    if piece in ("<unk>", "<s>", "</s>"):
        return 0
    return len(piece.replace("\u2581", " ").encode("utf-8"))


def bpe_piece_texts(j):
    """The bytes each id of a byte-level tokenizer.json stands for: GPT-2's byte alphabet maps the
    printable bytes (33-126, 161-172, 174-255) to themselves and the others, in order, to U+0100
    onwards; added tokens as written."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    char_of = {b: chr(b) for b in keep}
    for k, b in enumerate(b for b in range(256) if b not in char_of):
        char_of[b] = chr(256 + k)
    byte_of = {c: b for b, c in char_of.items()}
    text = {i: bytes(byte_of[c] for c in tok) for tok, i in j["model"]["vocab"].items()}
    text.update({a["id"]: a["content"].encode("utf-8") for a in j["added_tokens"]})
    return text


def no_output(d):
    left = [f for f in os.listdir(d) if f in ("train.bin", "val.bin", "meta.json") or ".tmp." in f] \
        if os.path.isdir(d) else []
    return not left, left


# ---------------------------------------------------------------------------------------------------

def test_sentencepiece_equals_spm_encode():
    files = fortune_files()
    check("the fortunes package has its 43 files", len(files) == 43, len(files))
    r = run("prepare", *files, "--out", path("spm"), "--tokenizer", "spm-bpe", "--vocab-size", "1000", "--json")
    meta = last_json(r)
    check("prepare: SentencePiece BPE of 1000 tokens trained on 43 files", r.returncode == 0 and
          meta.get("vocab_size") == 1000 and meta.get("dtype") == "uint16" and
          meta.get("tokenizer", {}).get("kind") == "sentencepiece", stderr_text(r))
    model = path("spm", "tokenizer.model")
    ids = tokens_of(path("spm", "train.bin")) + tokens_of(path("spm", "val.bin"))
    pieces = spm_pieces(model)
    newline = pieces.index("<0x0A>")
    expect, total = [], 0
    for f in files:  # each file on its own: spm_encode's ids per line, then the newline's piece
        with open(f, "rb") as fh:
            text = fh.read()
        total += len(text)
        out = subprocess.run(["spm_encode", "--model", model, "--output_format=id"], input=text,
                             capture_output=True, check=True).stdout.decode().split("\n")
        n = text.count(b"\n")
        for line in out[:n]:
            expect += [int(x) for x in line.split()] + [newline]
        if not text.endswith(b"\n"):
            expect += [int(x) for x in out[n].split()]
    check("prepare's ids = spm_encode's on every fortune file (%d tokens)" % len(expect), ids == expect,
          "first difference at %s" % next((i for i, (a, b) in enumerate(zip(ids, expect)) if a != b), None))
    files_meta = meta.get("files", {})
    check("meta.json: tokens and bytes per file add up", sum(v["tokens"] for v in files_meta.values()) == len(ids)
          and sum(v["bytes"] for v in files_meta.values()) == total, files_meta)
    check("the validation part is about the last 10%",
          0.09 < files_meta.get("val.bin", {}).get("bytes", 0) / total < 0.11, files_meta)
    # Streaming: 1 kB reads cut the text in thousands of places; the files are the same.
    r = run("prepare", *files, "--out", path("spm_small_reads"), "--tokenizer", model,
            env={"MHC_TEST_PREPARE_CHUNK": "1000"})
    same = r.returncode == 0 and all(
        open(path("spm", n), "rb").read() == open(path("spm_small_reads", n), "rb").read() for n in ("train.bin", "val.bin"))
    check("read 1 kB at a time, with the trained model given: the same train.bin and val.bin", same, stderr_text(r))


def test_tokenizer_json():
    text = "the cat's 12 cafés\n"  # by hand, from the fixture's merges (see tests/test_tokenizer_bpe.cpp):
    expect = [116, 257, 32, 263, 116, 259, 32, 260, 32, 265, 115, 10]
    with open(path("small.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    r = run("prepare", path("small.txt"), "--out", path("bpe"), "--tokenizer", FIXTURE, "--val-fraction", "0")
    check("prepare with a tokenizer.json: the ids worked out by hand", r.returncode == 0 and
          tokens_of(path("bpe", "train.bin")) == expect and not os.path.exists(path("bpe", "val.bin")), stderr_text(r))
    check("the tokenizer.json is copied beside the tokens", os.path.exists(path("bpe", "tokenizer.json")))
    # A larger text read in small pieces: the cuts (before a space, after a newline) change nothing.
    big = open(os.path.join(FORTUNES, "computers"), "rb").read() + "naïve café 東京 <|endoftext|> it'll\n".encode() * 50
    with open(path("big.txt"), "wb") as f:
        f.write(big)
    outs = []
    for i, chunk in enumerate(("4194304", "777")):
        r = run("prepare", path("big.txt"), "--out", path("bpe_big%d" % i), "--tokenizer", FIXTURE,
                env={"MHC_TEST_PREPARE_CHUNK": chunk})
        outs.append([open(path("bpe_big%d" % i, n), "rb").read() for n in ("train.bin", "val.bin")] if r.returncode == 0 else i)
    check("tokenizer.json: 777-byte reads give the same files as one read", outs[0] == outs[1])

    # Bits per byte of text with end-of-text tokens: the special token is predicted (its loss
    # counts) but is no text (0 bytes); every other target's bytes through GPT-2's byte alphabet.
    with open(path("docs.txt"), "w", encoding="utf-8") as f:
        f.write("".join("document %d: naïve café<|endoftext|>" % i for i in range(40)))
    r = run("prepare", path("docs.txt"), "--out", path("bpe_docs"), "--tokenizer", FIXTURE, "--val-fraction", "0")
    r = r if r.returncode else run("train", "--data", path("bpe_big0", "train.bin"), *TINY, "--set", "max_iters=2",
                                   "--out", path("run_bpe"), "--quiet")
    ev = last_json(run("eval", "--ckpt", path("run_bpe"), "--data", path("bpe_docs", "train.bin"), "--order", "sequential",
                       "--batch", "4", "--seq", "16", "--batches", "5", "--json"))
    val = tokens_of(path("bpe_docs", "train.bin"))
    targets = [val[w * 16 + 1 + t] for w in range(20) for t in range(16)]
    j = json.load(open(FIXTURE, encoding="utf-8"))
    text = bpe_piece_texts(j)
    special = {a["id"] for a in j["added_tokens"] if a.get("special")}
    nbytes = sum(0 if t in special else len(text[t]) for t in targets)
    check("eval on tokens with <|endoftext|>: bits per byte leaves the special token's 13 bytes out",
          r.returncode == 0 and 269 in targets and ev.get("bytes") == nbytes and
          abs(ev.get("bits_per_byte", 0) - ev.get("loss", 0) * ev.get("tokens", 0) / nbytes / math.log(2)) < 1e-9,
          (ev, nbytes, targets.count(269), stderr_text(r)))
    # A sample ends at the end-of-text token, printed as written; --ignore-eos goes on. Near-uniform
    # draws (temperature 100, all tokens) over 271 ids: 2000 tokens without 269 has odds of 6e-4.
    hot = ["--ckpt", path("run_bpe"), "--prompt", "the", "--max-new-tokens", "2000", "--temperature", "100",
           "--top-k", "0", "--seed", "4"]
    res = last_json(run("sample", *hot, "--json"))
    toks = res.get("tokens", [])
    check("sample ends at <|endoftext|>: the last token, and the only one", res.get("finish_reason") == "stop" and
          toks and toks[-1] == 269 and 269 not in toks[:-1] and res.get("text", "").endswith("<|endoftext|>"), str(res)[:300])
    r = run("sample", *hot)
    check("as text: the sample's end is printed", r.returncode == 0 and r.stdout.endswith(b"<|endoftext|>\n"), r.stdout[-100:])
    res = last_json(run("sample", *hot, "--ignore-eos", "--json"))
    check("sample --ignore-eos: all 2000 tokens, past <|endoftext|>", res.get("finish_reason") == "length" and
          len(res.get("tokens", [])) == 2000 and res["tokens"][:len(toks)] == toks, str(res)[:300])
    # A model padded past its tokenizer (271 ids to 384, as GPT-2's 50257 to 50304) never writes the
    # padding: not when sampled, not in the samples of its training (which start at <|endoftext|>).
    r = run("train", "--data", path("bpe_docs", "train.bin"), *TINY, "--set", "max_iters=2", "--set", "vocab_size=384",
            "--set", "sample_interval=1", "--set", "sample_tokens=300", "--set", "train_split=0.5",
            "--out", path("run_bpe_padded"), "--quiet")
    samples = [m.get("sample", {}) for m in metrics(path("run_bpe_padded"))] if r.returncode == 0 else []
    check("training a padded model: its samples use the tokenizer's 271 ids only", len(samples) == 2 and
          all("text" in s and s["tokens"] and max(s["tokens"]) < 271 for s in samples), (samples, stderr_text(r)))
    res = last_json(run("sample", "--ckpt", path("run_bpe_padded"), "--prompt", "the", "--max-new-tokens", "2000",
                        "--temperature", "100", "--top-k", "0", "--ignore-eos", "--json"))
    check("sampling a padded model (2000 near-uniform draws): the tokenizer's 271 ids only",
          len(res.get("tokens", [])) == 2000 and max(res["tokens"]) < 271, str(res)[:300])


def test_bytes_and_llmc():
    data = bytes(range(256)) * 40
    with open(path("bytes.txt"), "wb") as f:
        f.write(data)
    r = run("prepare", path("bytes.txt"), "--out", path("bytes"))
    train, val = tokens_of(path("bytes", "train.bin")), tokens_of(path("bytes", "val.bin"))
    check("prepare --tokenizer bytes: the bytes, split at exactly 90%",
          r.returncode == 0 and train + val == list(data) and len(train) == int(len(data) * 0.9), stderr_text(r))
    r = run("prepare", path("bytes.txt"), "--out", path("bytes_llmc"), "--format", "llmc")
    with open(path("bytes_llmc", "train.bin"), "rb") as f:
        head = struct.unpack("<3i", f.read(12))
    check("--format llmc: a GPT-2 shard (magic 20240520, version 1, count)",
          r.returncode == 0 and head == (20240520, 1, len(train)) and
          tokens_of(path("bytes_llmc", "train.bin"), 2, 1024) == train, (head, stderr_text(r)))
    check("mhc train reads it", run("train", "--data", path("bytes_llmc", "train.bin"), *TINY, "--set", "max_iters=2",
                                    "--out", path("run_bytes_llmc"), "--quiet").returncode == 0)


def test_uint32():
    j = json.load(open(FIXTURE, encoding="utf-8"))
    j["added_tokens"].append({"id": 70000, "content": "<|big|>", "special": True})
    os.makedirs(path("tok32"), exist_ok=True)
    with open(path("tok32", "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(j, f)
    with open(path("text32.txt"), "w", encoding="utf-8") as f:
        f.write("the cat<|big|> the cat's café\n" * 40)
    for fmt, header in (("bin", 0), ("llmc", 1024)):
        out = path("u32_" + fmt)
        r = run("prepare", path("text32.txt"), "--out", out, "--tokenizer", path("tok32", "tokenizer.json"),
                "--format", fmt, "--json")
        meta = last_json(r)
        ids = tokens_of(os.path.join(out, "train.bin"), 4, header) if r.returncode == 0 else []
        check("prepare (%s): vocabulary 70001 -> uint32 tokens, <|big|> is 70000" % fmt,
              meta.get("dtype") == "uint32" and meta.get("vocab_size") == 70001 and ids[:6] == [116, 257, 32, 263, 116, 70000],
              (ids[:8], stderr_text(r)))
        if fmt == "llmc":
            with open(os.path.join(out, "train.bin"), "rb") as f:
                check("an llm.c LLaMA-3 shard: magic 20240801, version 7", struct.unpack("<2i", f.read(8)) == (20240801, 7))
        r = run("train", "--data", os.path.join(out, "train.bin"), "--val-data", os.path.join(out, "val.bin"), *TINY,
                "--set", "max_iters=2", "--out", path("run_u32_" + fmt), "--json", "--quiet")
        res = last_json(r)
        cfg = open(path("run_u32_" + fmt, "config.toml")).read() if r.returncode == 0 else ""
        check("train reads the uint32 %s files (vocabulary 70001 from the sidecar)" % fmt,
              res.get("steps") == 2 and "vocab_size = 70001" in cfg and
              os.path.exists(path("run_u32_" + fmt, "tokenizer.json")), stderr_text(r))
    r = run("train", "--data", path("u32_bin", "train.bin"), "--format", "u16", *TINY, "--set", "max_iters=2",
            "--out", path("run_u32_as_u16"))
    ok, msg = one_line_error(r)
    check("the same file forced to u16 is refused (its sidecar says uint32)", ok and "dtype uint32" in msg, msg)


def test_run_tokenizer():
    model = path("spm", "tokenizer.model")  # test_sentencepiece_equals_spm_encode's
    # another model, to put in the run's tokenizer's place
    run("prepare", path("small.txt"), path("big.txt"), "--out", path("spm_other"), "--tokenizer", "spm-bpe",
        "--vocab-size", "300", "--val-fraction", "0")
    data = path("spm")
    r = run("train", "--data", os.path.join(data, "train.bin"), "--val-data", os.path.join(data, "val.bin"), *TINY,
            "--set", "max_iters=4", "--out", path("run_spm"), "--quiet")
    ck = path("run_spm", "ckpt_000004.safetensors")
    check("train on SentencePiece data: the run holds tokenizer.model", r.returncode == 0 and
          open(path("run_spm", "tokenizer.model"), "rb").read() == open(model, "rb").read(), stderr_text(r))
    meta = ckpt_metadata(ck)
    tok = json.loads(meta.get("tokenizer", "{}"))
    check("the checkpoint's metadata names it", tok.get("kind") == "sentencepiece" and tok.get("file") == "tokenizer.model"
          and tok.get("vocab_size") == 1000, meta)

    r = run("sample", "--ckpt", ck, "--prompt", "The cat", "--max-new-tokens", "30", "--seed", "3")
    out = r.stdout.decode("utf-8", "strict") if r.returncode == 0 else ""
    check("sample --prompt text prints text", r.returncode == 0 and out.startswith("The cat") and len(out) > 10, stderr_text(r))
    res = last_json(run("sample", "--ckpt", ck, "--prompt", "The cat", "--max-new-tokens", "30", "--seed", "3", "--json"))
    check("sample --json: tokens and their text (the same as streamed)", res.get("tokenizer") == "sentencepiece" and
          len(res.get("tokens", [])) == 30 and "The cat" + res.get("text", "?") + "\n" == out, (res, out))
    broken = []
    for seed in range(1, 6):  # an untrained model picks byte pieces at random: split characters galore
        r = run("sample", "--ckpt", ck, "--prompt", "é", "--max-new-tokens", "200", "--temperature", "3",
                "--top-k", "0", "--seed", str(seed))
        try:
            r.stdout.decode("utf-8", "strict")
        except UnicodeDecodeError as e:
            broken.append((seed, str(e)))
    check("streaming never prints a broken UTF-8 sequence (5 x 200 hot samples)", not broken, broken)

    pieces = spm_pieces(model)
    ev = last_json(run("eval", "--ckpt", ck, "--data", os.path.join(data, "val.bin"), "--order", "sequential",
                       "--batch", "4", "--seq", "16", "--batches", "5", "--json"))
    val = tokens_of(os.path.join(data, "val.bin"))
    targets = [val[w * 16 + 1 + t] for w in range(20) for t in range(16)]
    nbytes = sum(piece_bytes(pieces[t]) for t in targets)
    bpb = ev.get("loss", 0) * ev.get("tokens", 0) / max(nbytes, 1) / math.log(2)
    check("eval: bits per byte = loss x tokens / bytes / ln 2, bytes from the pieces",
          ev.get("bytes") == nbytes and abs(ev.get("bits_per_byte", 0) - bpb) < 1e-9, (ev, nbytes, bpb))

    # --init-from: data in another tokenizer's ids is refused; raw ids (no meta.json) go on with the
    # checkpoint's tokenizer, which the new run keeps.
    r = run("train", "--data", path("bpe_docs", "train.bin"), "--init-from", ck, "--out", path("ft_other_tok"))
    ok, msg = one_line_error(r)
    check("train --init-from a SentencePiece model on tokenizer.json data: one line naming both",
          ok and "sentencepiece" in msg and "hf_bpe" in msg and not os.path.exists(path("ft_other_tok")), msg)
    os.makedirs(path("raw_ids"), exist_ok=True)
    shutil.copy(os.path.join(data, "train.bin"), path("raw_ids", "ids.bin"))
    r = run("train", "--data", path("raw_ids", "ids.bin"), "--init-from", ck, "--set", "max_iters=2",
            "--set", "warmup_iters=1", "--set", "eval_iters=2", "--out", path("ft_raw"), "--quiet")
    check("train --init-from on raw ids: the run keeps the checkpoint's tokenizer.model, and names it",
          r.returncode == 0 and open(path("ft_raw", "tokenizer.model"), "rb").read() == open(model, "rb").read() and
          json.loads(ckpt_metadata(path("ft_raw", "ckpt_000002.safetensors")).get("tokenizer", "{}")).get("kind")
          == "sentencepiece", stderr_text(r))
    # Two files of one vocabulary (an llm.c table written here with the fixture's pieces, and the
    # fixture): a model trained with one fine-tunes on data made with the other.
    j = json.load(open(FIXTURE, encoding="utf-8"))
    pieces = bpe_piece_texts(j)
    table = struct.pack("<256I", *([20240328, 2, len(pieces), 269] + [0] * 252))
    table += b"".join(bytes([len(pieces[i])]) + pieces[i] for i in range(len(pieces)))
    os.makedirs(path("llmc_tok"), exist_ok=True)
    with open(path("llmc_tok", "gpt2_tokenizer.bin"), "wb") as f:
        f.write(table)
    shutil.copy(path("bpe_docs", "train.bin"), path("llmc_tok", "ids.bin"))  # raw ids, no meta.json
    r = run("train", "--data", path("llmc_tok", "ids.bin"), "--tokenizer", path("llmc_tok", "gpt2_tokenizer.bin"),
            *TINY, "--set", "vocab_size=271", "--set", "max_iters=2", "--out", path("run_llmc_tok"), "--quiet")
    r2 = run("train", "--data", path("bpe_docs", "train.bin"), "--init-from", path("run_llmc_tok"), "--set", "max_iters=2",
             "--set", "warmup_iters=1", "--set", "eval_iters=2", "--set", "train_split=0.5", "--out", path("ft_same_vocab"),
             "--quiet")
    check("--init-from a model of llm.c's table on data made with the tokenizer.json of the same pieces: trains",
          r.returncode == 0 and r2.returncode == 0, stderr_text(r) + stderr_text(r2))

    # Errors: one line, naming the problem.
    r = run("sample", "--ckpt", ck, "--prompt-tokens", "1,1000")
    ok, msg = one_line_error(r)
    check("a prompt token id out of the model's vocabulary -> one-line error", ok and "1000" in msg, msg)
    r = run("sample", "--ckpt", ck, "--tokenizer", FIXTURE, "--prompt", "the")
    ok, msg = one_line_error(r)
    check("a tokenizer whose vocabulary differs from the model's -> one-line error",
          ok and "271" in msg and "1000" in msg, msg)
    r = run("train", "--data", os.path.join(data, "train.bin"), "--tokenizer", FIXTURE, *TINY, "--set", "max_iters=2",
            "--out", path("run_mismatch"))
    ok, msg = one_line_error(r)
    check("train with a tokenizer of another vocabulary -> one-line error", ok and "vocabulary" in msg, msg)
    shutil.move(path("run_spm", "tokenizer.model"), path("tokenizer.model.away"))
    r = run("sample", "--ckpt", ck, "--prompt", "The")
    ok, msg = one_line_error(r)
    check("the run's tokenizer missing when text is asked for -> one-line error naming it and --tokenizer",
          ok and "tokenizer.model" in msg and "--tokenizer" in msg, msg)
    r = run("sample", "--ckpt", ck, "--tokenizer", path("tokenizer.model.away"), "--prompt", "The", "--max-new-tokens", "3")
    check("--tokenizer supplies it", r.returncode == 0 and r.stdout.decode().startswith("The"), stderr_text(r))
    with open(path("run_spm", "tokenizer.model"), "wb") as f:
        f.write(open(path("spm_other", "tokenizer.model"), "rb").read() if os.path.exists(path("spm_other")) else b"x")
    r = run("sample", "--ckpt", ck, "--prompt", "The")
    ok, msg = one_line_error(r)
    check("a different file in the tokenizer's place -> one-line error", ok and "is not the tokenizer" in msg, msg)
    with open(path("raw16.bin"), "wb") as f:  # raw uint16 ids without a sidecar: no tokenizer known
        f.write(struct.pack("<2000H", *[i % 300 for i in range(2000)]))
    r = run("train", "--data", path("raw16.bin"), *TINY, "--set", "vocab_size=300",
            "--set", "max_iters=2", "--out", path("run_notok"), "--quiet")
    ck2 = path("run_notok", "ckpt_000002.safetensors")
    r = run("sample", "--ckpt", ck2, "--prompt", "hi")
    ok, msg = one_line_error(r)
    check("no tokenizer at all when text is asked for -> one-line error", ok and "--tokenizer" in msg, msg)
    r = run("sample", "--ckpt", ck2, "--prompt-tokens", "1,2", "--max-new-tokens", "4")
    check("...ids still work without one", r.returncode == 0, stderr_text(r))


def test_bad_input():
    with open(path("empty.txt"), "w"):
        pass
    with open(path("meta_tok.json"), "w") as f:
        json.dump({"model": {"type": "BPE"}, "pre_tokenizer": {"type": "Metaspace"}}, f)
    with open(path("broken.json"), "w") as f:
        f.write('{"model": ')
    gpt2_bin = struct.pack("<256I", *([20240328, 2, 2, 1] + [0] * 252)) + b"\x01a\x01b"
    with open(path("gpt2_tokenizer.bin"), "wb") as f:
        f.write(gpt2_bin)
    os.makedirs(path("prepared_before"), exist_ok=True)
    with open(path("prepared_before", "train.bin"), "wb") as f:
        f.write(b"keep")
    small = path("small.txt")
    with gzip.open(path("corpus.txt.gz"), "wb") as f:
        f.write(b"some text that was compressed\n" * 10)
    long_line = " ".join("word%d" % i for i in range(700))  # 5,380 bytes: past SentencePiece's 4,192
    with open(path("long_lines.txt"), "w") as f:
        f.write((long_line + "\n") * 30)
    cases = [
        ("missing input", [path("nope.txt"), "--out", path("bad1")], "nope.txt"),
        ("an input directory", [TMP, "--out", path("bad2")], "is a directory (give the text files in it)"),
        ("an input that is not a regular file", ["/dev/null", "--out", path("bad2b")],
         "not a regular file (a pipe or a device: prepare needs each input's size before it starts"),
        ("a gzip-compressed input", [path("corpus.txt.gz"), "--out", path("bad2c")],
         "corpus.txt.gz: is gzip-compressed: decompress it first"),
        ("empty input", [path("empty.txt"), "--out", path("bad3")], "0 bytes"),
        ("spm without --vocab-size", [small, "--out", path("bad4"), "--tokenizer", "spm-bpe"], "--vocab-size"),
        ("--vocab-size with bytes", [small, "--out", path("bad5"), "--vocab-size", "100"], "--vocab-size"),
        ("unknown tokenizer", [small, "--out", path("bad6"), "--tokenizer", "gpt5"], "gpt5"),
        ("unsupported tokenizer.json", [small, "--out", path("bad7"), "--tokenizer", path("meta_tok.json")],
         "pre-tokenizer Metaspace"),
        ("malformed tokenizer.json", [small, "--out", path("bad8"), "--tokenizer", path("broken.json")],
         "malformed tokenizer.json"),
        ("a decode-only tokenizer", [small, "--out", path("bad9"), "--tokenizer", path("gpt2_tokenizer.bin")],
         "decodes only"),
        ("--val-fraction 1.5", [small, "--out", path("bad10"), "--val-fraction", "1.5"], "--val-fraction"),
        ("a vocabulary the text cannot fill", [small, "--out", path("bad11"), "--tokenizer", "spm-unigram",
                                               "--vocab-size", "5000"], "SentencePiece training failed"),
        ("an output directory with earlier output", [small, "--out", path("prepared_before")], "never overwrites"),
        ("only lines longer than SentencePiece trains on", [path("long_lines.txt"), "--out", path("bad12"),
                                                            "--tokenizer", "spm-bpe", "--vocab-size", "300"],
         "27 lines are all longer than 4192 bytes"),  # the training part's 90%
    ]
    for name, args, fragment in cases:
        r = run("prepare", *args)
        ok, msg = one_line_error(r)
        out = args[args.index("--out") + 1]
        clean = no_output(out)[0] if out != path("prepared_before") else \
            open(path("prepared_before", "train.bin"), "rb").read() == b"keep"
        check("prepare bad input: %s -> one-line error, no file left" % name, ok and fragment in msg and clean, msg)


def test_long_lines_said():
    # Lines past SentencePiece's 4,192 bytes are left out of its training: said on stderr with their
    # count (one document per line would otherwise train on the short documents alone, silently).
    long_line = " ".join("word%d" % i for i in range(700))
    with open(path("mixed_lines.txt"), "w") as f:
        for i in range(400):
            f.write("the %d quick brown foxes jump over %d lazy dogs\n" % (i, i % 7))
            if i % 100 == 0:
                f.write(long_line + "\n")
    r = run("prepare", path("mixed_lines.txt"), "--out", path("mixed"), "--tokenizer", "spm-bpe", "--vocab-size", "300",
            "--val-fraction", "0")
    err = stderr_text(r)
    check("prepare with some lines past 4192 bytes: trains, and says how many were left out",
          r.returncode == 0 and "4 of 404 lines are longer than 4192 bytes and were left out" in err, err)


def test_help():
    r = run("prepare", "--help")
    h = r.stdout.decode()
    check("prepare --help", r.returncode == 0 and "prepare [OPTIONS] inputs..." in h and "spm-bpe" in h, h)


if __name__ == "__main__":
    if not os.path.isdir(FORTUNES) or shutil.which("spm_encode") is None:
        print("needs Debian's fortunes and sentencepiece packages (scripts/setup.sh installs them)")
        sys.exit(1)
    finish(test_help, test_sentencepiece_equals_spm_encode, test_tokenizer_json, test_bytes_and_llmc, test_uint32,
           test_run_tokenizer, test_bad_input, test_long_lines_said)
