"""Minimal hand-written safetensors writer/reader (F64 only is needed here).

Format: 8-byte little-endian unsigned header length N, then N bytes of JSON
header {name: {"dtype", "shape", "data_offsets": [begin, end]}, ...,
"__metadata__": {str: str}} padded with trailing spaces to a multiple of 8,
then the raw little-endian tensor data, packed back to back in header order.
"""

import json
import struct

import numpy as np
import torch

_NP = {"F64": "<f8", "F32": "<f4", "I64": "<i8"}


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, tensor) or an ordered dict; all written as F64."""
    items = list(tensors.items()) if isinstance(tensors, dict) else list(tensors)
    header = {}
    blobs = []
    offset = 0
    for name, t in items:
        if name in header or name == "__metadata__":
            raise ValueError("duplicate or reserved tensor name %r" % (name,))
        arr = t.detach().to(torch.float64).cpu().contiguous().numpy().astype("<f8")
        data = arr.tobytes(order="C")
        header[name] = {"dtype": "F64", "shape": [int(d) for d in arr.shape],
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
    """Returns (dict name -> torch tensor (float64 for F64), metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        arr = np.frombuffer(raw[base + b:base + e], dtype=_NP[info["dtype"]])
        out[name] = torch.from_numpy(arr.copy()).reshape(info["shape"])
    return out, meta
