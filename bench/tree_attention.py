"""Latency of candidate tree attention against copying the prefix once per candidate.

    python bench/tree_attention.py --out bench/results

Writes DIR/tree_attention.json and DIR/tree_attention.md. Shapes are one V-type scoring step of a
SmolLM2-135M-sized value model (9 query heads, 3 kv heads, head dim 64) with k = 20 candidates:
`sdpa_tree_us` is the SDPA reference with the tree mask (the prefix read in place), `copied_us` the same
attention done the naive way, each candidate a sequence of its own with the prefix copied k times, and
`triton_us` the Triton kernel (GPU only; the CPU interpreter is far too slow to time). Times are medians
of repeated calls on this machine; compare ratios, not absolute numbers, across machines.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from qsharp_ext.io import atomic_write_text, markdown_table, write_json
from qsharp_ext.kernels.tree_attention import tree_attention_reference

N_HEADS, N_KV_HEADS, HEAD_DIM, K = 9, 3, 64, 20


def median_seconds(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (and Triton compilation)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copied_prefix_attention(query, key, value, prefix_mask):
    """Each candidate as its own sequence: the prefix K/V copied k times, (B·k, Hkv, P + 1, d)."""
    batch, n_heads, k, head_dim = query.shape
    n_prefix = prefix_mask.shape[1]
    g = n_heads // key.shape[1]

    def per_candidate(t):  # (B, Hkv, P + k, d) -> (B·k, Hkv, P + 1, d)
        prefix = t[:, None, :, :n_prefix].expand(-1, k, -1, -1, -1)  # (B, k, Hkv, P, d)
        own = t[:, :, n_prefix:].transpose(1, 2)[:, :, :, None]  # (B, k, Hkv, 1, d)
        return torch.cat([prefix, own], dim=3).flatten(0, 1).repeat_interleave(g, dim=1)

    q = query.transpose(1, 2).reshape(batch * k, n_heads, 1, head_dim)  # (B·k, H, 1, d)
    mask = torch.cat([prefix_mask, prefix_mask.new_ones(batch, 1)], dim=1)  # (B, P + 1)
    mask = mask.repeat_interleave(k, dim=0)[:, None, None, :]  # (B·k, 1, 1, P + 1)
    out = F.scaled_dot_product_attention(q, per_candidate(key), per_candidate(value), attn_mask=mask)
    return out.reshape(batch, k, n_heads, head_dim).transpose(1, 2)  # (B, H, k, d)


def bench_shape(batch: int, n_prefix: int, device: torch.device, dtype: torch.dtype, repeats: int) -> dict:
    query = torch.randn(batch, N_HEADS, K, HEAD_DIM, device=device, dtype=dtype)
    key = torch.randn(batch, N_KV_HEADS, n_prefix + K, HEAD_DIM, device=device, dtype=dtype)
    value = torch.randn_like(key)
    prefix_mask = torch.ones(batch, n_prefix, dtype=torch.bool, device=device)
    prefix_mask[0, : n_prefix // 4] = False  # one left-padded row
    inputs = (query, key, value, prefix_mask)
    row = {"batch": batch, "prefix": n_prefix, "k": K}
    row["sdpa_tree_us"] = median_seconds(lambda: tree_attention_reference(*inputs), device, repeats) * 1e6
    row["copied_us"] = median_seconds(lambda: copied_prefix_attention(*inputs), device, repeats) * 1e6
    if device.type == "cuda":
        from qsharp_ext.kernels.triton_tree_attention import tree_attention_triton

        row["triton_us"] = median_seconds(lambda: tree_attention_triton(*inputs), device, repeats) * 1e6
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for the JSON and Markdown")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per measurement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    rows = [bench_shape(b, p, device, dtype, args.repeats) for b in (1, 8) for p in (256, 1024)]
    meta = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.machine()}
    meta |= {"dtype": str(dtype), "threads": args.threads, "torch": torch.__version__}
    columns = ["batch", "prefix", "k", "sdpa_tree_us", "copied_us"] + (["triton_us"] if device.type == "cuda" else [])
    write_json(args.out / "tree_attention.json", {"meta": meta, "rows": rows})
    table = markdown_table(rows, columns)
    atomic_write_text(args.out / "tree_attention.md", f"# Candidate tree attention ({meta})\n\n{table}")
    print(table)


if __name__ == "__main__":
    main()
