"""Minimal hand-written safetensors writer/reader.

Format: 8-byte little-endian unsigned header length N, then N bytes of JSON
header {name: {"dtype", "shape", "data_offsets": [begin, end]}, ...,
"__metadata__": {str: str}} padded with trailing spaces to a multiple of 8,
then the raw little-endian tensor data, packed back to back in header order.

By default every tensor is written as F64 (integer tensors too, converted).
keep_int=True writes integer tensors as I64 instead (token ids, permutation
buffers); float_dtype="F32" writes floating tensors as F32 (checkpoints).
"""

import argparse
import json
import os
import struct
import time

import numpy as np
import torch

_NP = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
       "I16": "<i2", "I8": "i1", "U8": "u1", "U16": "<u2", "U32": "<u4",
       "U64": "<u8", "BOOL": "?"}
_WRITE = {"F64": (torch.float64, "<f8"), "F32": (torch.float32, "<f4"),
          "I64": (torch.int64, "<i8")}


def write_safetensors(path, tensors, metadata=None, keep_int=False, float_dtype="F64"):
    """tensors: list of (name, tensor) or an ordered dict.

    Floating tensors are written as float_dtype ("F64" or "F32"); integer and
    bool tensors as F64, or as I64 when keep_int is true.
    """
    if float_dtype not in ("F64", "F32"):
        raise ValueError("float_dtype must be F64 or F32")
    items = list(tensors.items()) if isinstance(tensors, dict) else list(tensors)
    header = {}
    blobs = []
    offset = 0
    for name, t in items:
        if name in header or name == "__metadata__":
            raise ValueError("duplicate or reserved tensor name %r" % (name,))
        t = torch.as_tensor(t).detach().cpu()
        is_int = not (t.is_floating_point() or t.is_complex())
        code = "I64" if (is_int and keep_int) else float_dtype
        tdt, npdt = _WRITE[code]
        arr = t.to(tdt).contiguous().numpy().astype(npdt)
        data = arr.tobytes(order="C")
        header[name] = {"dtype": code, "shape": [int(d) for d in arr.shape],
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((-len(hj)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """Returns (dict name -> torch tensor, metadata dict).

    F64 -> float64, F32 -> float32, F16 -> float16, BF16 -> float32 (exact),
    I64 -> int64, other integer types -> int64 (U64 must fit).
    """
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        code = info["dtype"]
        buf = raw[base + b:base + e]
        if code == "BF16":
            bits = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        elif code in _NP:
            arr = np.frombuffer(buf, dtype=_NP[code])
            if code in ("I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL"):
                arr = arr.astype(np.int64)
        else:
            raise ValueError("%s: unsupported safetensors dtype %s" % (name, code))
        out[name] = torch.from_numpy(arr.copy()).reshape(info["shape"])
    return out, meta


def write_fixtures(description, cases, argv=None, keep_int=False):
    """The fixture scripts' command line (--out DIR, --quiet): each (name, make) of `cases` becomes
    DIR/name.safetensors from make() -> (tensors, metadata). Returns the exit code."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    for name, make in cases:
        t1 = time.time()
        tensors, meta = make()
        path = os.path.join(args.out, name + ".safetensors")
        write_safetensors(path, tensors, meta, keep_int=keep_int)
        if not args.quiet:
            print("wrote %s (%d tensors, %.2f s)" % (path, len(tensors), time.time() - t1))
    if not args.quiet:
        print("%d fixtures in %.2f s" % (len(cases), time.time() - t0))
    return 0
