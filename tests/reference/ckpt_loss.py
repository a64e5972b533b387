#!/usr/bin/python3
"""Mean loss of a checkpoint written by the C++ engine, evaluated by the PyTorch reference.

    /usr/bin/python3 tests/reference/ckpt_loss.py --ckpt FILE --tokens FILE --batch B --seq T
                                                  [--batches K]

The checkpoint is a safetensors file with SPEC section 4 tensor names (mhc_lite: with `perms`
buffers; the tied head as `transformer.wte.weight` or `lm_head.weight`) and `__metadata__`
key `config` = JSON with nanoGPT names (n_layer, n_head, n_embd, vocab_size, block_size, bias)
plus hyper_conn_type, hyper_conn_n, sinkhorn_iters. It is loaded strictly into the reference
GPT, which is evaluated in float32 on sequential windows of the token file:
window j: inputs tokens[jT : jT+T], targets tokens[jT+1 : jT+T+1]; batch b holds windows
bB ... bB+B-1; the first K batches are evaluated. The last line printed is {"loss": <mean>}.

Token files: raw little-endian uint16 (nanoGPT); an llm.c shard if the file starts with the
int32 magic 20240520 (1024-byte header of 256 int32: magic, version 1, token count, then
uint16 tokens); bytes (vocab 256) if the name ends in .txt.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt as G  # noqa: E402
from safetensors_io import read_safetensors  # noqa: E402

LLMC_MAGIC = 20240520
LLMC_HEADER_BYTES = 1024


def read_tokens(path):
    """Returns (np.int64 token array, kind string)."""
    if path.endswith(".txt"):
        with open(path, "rb") as f:
            return np.frombuffer(f.read(), dtype=np.uint8).astype(np.int64), "bytes"
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) >= 4 and int(np.frombuffer(raw[:4], dtype="<i4")[0]) == LLMC_MAGIC:
        if len(raw) < LLMC_HEADER_BYTES:
            raise ValueError("%s: truncated llm.c header" % path)
        header = np.frombuffer(raw[:LLMC_HEADER_BYTES], dtype="<i4")
        if int(header[1]) != 1:
            raise ValueError("%s: unsupported llm.c shard version %d" % (path, int(header[1])))
        ntok = int(header[2])
        body = raw[LLMC_HEADER_BYTES:]
        if len(body) < 2 * ntok:
            raise ValueError("%s: header says %d tokens, file holds %d" % (path, ntok, len(body) // 2))
        return np.frombuffer(body[:2 * ntok], dtype="<u2").astype(np.int64), "llm.c"
    if len(raw) % 2:
        raise ValueError("%s: odd byte count for a uint16 token file" % path)
    return np.frombuffer(raw, dtype="<u2").astype(np.int64), "uint16"


def load_checkpoint(path, dtype=torch.float32):
    tensors, meta = read_safetensors(path)
    if "config" not in meta:
        raise KeyError("%s: no 'config' in __metadata__" % path)
    cfg, unknown = G.GPTConfig.from_json(meta["config"])
    if unknown:
        print("note: ignoring config keys %s" % sorted(unknown), file=sys.stderr)
    model = G.GPT(cfg, dtype=dtype)
    G.load_mhc_state_dict(model, tensors)
    model.eval()
    return model, cfg


def window_batches(tokens, B, T, K):
    need = K * B * T + 1
    if len(tokens) < need:
        raise ValueError("%d batches of %dx%d need %d tokens, file has %d"
                         % (K, B, T, need, len(tokens)))
    for b in range(K):
        xs, ys = [], []
        for j in range(b * B, b * B + B):
            xs.append(tokens[j * T:j * T + T])
            ys.append(tokens[j * T + 1:j * T + T + 1])
        yield torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def eval_loss(model, tokens, B, T, K):
    V = model.config.vocab_size
    if tokens.size and int(tokens[:K * B * T + 1].max()) >= V:
        raise ValueError("token id %d >= vocab_size %d" % (int(tokens[:K * B * T + 1].max()), V))
    losses = []
    with torch.no_grad():
        for x, y in window_batches(tokens, B, T, K):
            _, loss = model(x, y)
            losses.append(float(loss))
    return sum(losses) / len(losses), losses


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--batches", type=int, default=1)
    args = ap.parse_args(argv)
    if args.batch < 1 or args.seq < 1 or args.batches < 1:
        ap.error("--batch, --seq and --batches must be >= 1")
    model, cfg = load_checkpoint(args.ckpt)
    if args.seq > cfg.block_size:
        ap.error("--seq %d > block_size %d" % (args.seq, cfg.block_size))
    tokens, kind = read_tokens(args.tokens)
    mean, losses = eval_loss(model, tokens, args.batch, args.seq, args.batches)
    print("tokens: %d (%s); batches: %s" % (len(tokens), kind, " ".join("%.6f" % l for l in losses)))
    print(json.dumps({"loss": mean}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
