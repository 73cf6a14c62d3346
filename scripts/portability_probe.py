"""What check-aarch64.sh compares across machines: greedy tokens and embeddings.

`encoder` prints the first int8 encoder bundle in the edge cache (or nothing). `embed`
prints the embeddings of fixed texts as JSON (public API). `compare` reads two
`edge generate --json` outputs, or two `embed` outputs, the x86 one first, prints token
agreement or cosine, and exits 1 when they disagree beyond what different int8 kernels can
explain. Runtime dependencies only (numpy + edge), so it runs inside the arm64 root too.

    python scripts/portability_probe.py encoder
    python scripts/portability_probe.py embed BUNDLE > x86.json
    python scripts/portability_probe.py compare x86.json aarch64.json
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

TEXTS = ["A cat sat on the mat.", "Quantized models run on small computers.", "Der Himmel ist blau. 空は青い。"]
# Different CPUs run different int8 kernels (AVX-512 VNNI, NEON dot product, a float
# fallback), so logits differ in the last bits and a near-tie may flip one greedy token,
# after which the texts part ways. The first tokens must agree; embeddings must be the same
# vectors up to float noise.
MIN_LEADING_AGREEMENT = 8
MIN_COSINE = 0.999


def encoder_bundle() -> str:
    from edge.manifest import Manifest
    from edge.paths import cache_dir

    for manifest_file in sorted((cache_dir() / "bundles").glob("*/manifest.json")):
        manifest = Manifest.read(manifest_file.parent)
        if not manifest.is_decoder and manifest.quantization and manifest.quantization.scheme == "int8":
            return str(manifest_file.parent)
    return ""


def embed(bundle: str) -> dict:
    import edge

    return {"texts": TEXTS, "embeddings": np.asarray(edge.load(bundle).embed(TEXTS), np.float64).tolist()}


def leading_agreement(a: list[int], b: list[int]) -> int:
    """How many tokens agree before the first difference. Example: [1, 2, 3], [1, 2, 4] -> 2."""
    count = 0
    for x, y in zip(a, b):
        if x != y:
            break
        count += 1
    return count


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (texts, dim) arrays."""
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def compare_tokens(a: list[int], b: list[int]) -> tuple[bool, str]:
    lead = leading_agreement(a, b)
    same = sum(x == y for x, y in zip(a, b))
    line = f"greedy tokens {lead}/{len(a)} agree before the first difference, {same}/{len(a)} by position"
    return len(a) == len(b) and lead >= min(MIN_LEADING_AGREEMENT, len(a)), line


def compare_embeddings(a: list, b: list) -> tuple[bool, str]:
    a, b = np.array(a), np.array(b)  # (texts, dim)
    if a.shape != b.shape:
        return False, f"embeddings of shapes {a.shape} and {b.shape}"
    cos = cosines(a, b)
    return bool(cos.min() >= MIN_COSINE), f"embedding cosine min {cos.min():.6f} over {len(cos)} texts"


def compare(reference: dict, other: dict) -> tuple[bool, str]:
    """Two `edge generate --json` outputs (token_ids) or two `embed` outputs (embeddings)."""
    if "token_ids" in reference:
        return compare_tokens(reference["token_ids"], other.get("token_ids", []))
    return compare_embeddings(reference["embeddings"], other.get("embeddings", []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("encoder")
    sub.add_parser("embed").add_argument("bundle")
    compare_parser = sub.add_parser("compare")
    compare_parser.add_argument("reference")
    compare_parser.add_argument("other")
    args = parser.parse_args(argv)
    if args.command == "encoder":
        print(encoder_bundle())
        return 0
    if args.command == "embed":
        print(json.dumps(embed(args.bundle)))
        return 0
    with open(args.reference, encoding="utf-8") as f, open(args.other, encoding="utf-8") as g:
        ok, line = compare(json.load(f), json.load(g))
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
