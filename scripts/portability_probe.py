"""What check-aarch64.sh compares across machines: greedy tokens, logits and embeddings.

`encoder` prints the first int8 encoder bundle in the edge cache (or nothing). `embed`
prints the embeddings of fixed texts as JSON. `logits` feeds the prompt and the tokens an
`edge generate --json` output holds (the x86 one, on every machine: teacher forcing) and
saves the logits that chose each generated token, (tokens, vocab), as .npy. `compare` reads
two `edge generate --json` outputs or two `embed` outputs, `compare-logits` two `logits`
files, the x86 one first; each prints one line and exits 1 when they disagree beyond what
different int8 kernels explain. Runtime dependencies only (numpy + edge), so it runs inside
the arm64 root too.

    python scripts/portability_probe.py encoder
    python scripts/portability_probe.py embed BUNDLE > x86.json
    python scripts/portability_probe.py logits BUNDLE PROMPT x86.generate.json out.npy
    python scripts/portability_probe.py compare x86.json aarch64.json
    python scripts/portability_probe.py compare-logits x86.npy aarch64.npy x86.generate.json
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

TEXTS = ["A cat sat on the mat.", "Quantized models run on small computers.", "Der Himmel ist blau. 空は青い。"]
# Different CPUs run different int8 kernels (AVX-512 VNNI, NEON dot product, a float
# fallback), so logits differ slightly and a near-tie may flip one greedy token, after which
# the texts part ways. So: the first greedy tokens must agree; fed the same tokens, the
# next-token distributions must stay close (KL divergence; for scale, this x86 machine's
# own int8 and fp32 SmolLM2 bundles differ by 0.005 nats on average, 0.013 at most), and
# wherever the machines' top tokens differ it must be a near-tie (the x86 token within
# NEAR_TIE logits of the top one). A broken kernel or graph gives KL far above 1 nat.
# Embeddings must be the same vectors up to float noise.
MIN_LEADING_AGREEMENT = 8
MAX_KL = 0.1
NEAR_TIE = 1.0
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


def teacher_forced_logits(bundle: str, prompt: str, generated: dict) -> np.ndarray:
    """(tokens, vocab) logits at the positions that chose each of `generated`'s tokens, fed the
    prompt as `edge generate` encodes it and then those tokens."""
    import edge

    model = edge.load(bundle)
    prompt_ids = model.encode_prompt(prompt)
    if len(prompt_ids) != generated["prompt_tokens"]:
        sys.exit(f"the prompt encodes to {len(prompt_ids)} tokens here, {generated['prompt_tokens']} in the reference")
    tokens = generated["token_ids"]
    logits = model.decoder.logits(prompt_ids + tokens[:-1])  # (prompt + tokens - 1, vocab)
    return logits[len(prompt_ids) - 1:]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (rows, dim) arrays."""
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def compare_tokens(a: list[int], b: list[int]) -> tuple[bool, str]:
    from edge.generation.chat import common_prefix

    lead = common_prefix(a, b)  # tokens that agree before the first difference
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


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise, (rows, vocab) -> (rows, vocab). Example: [[0, 0]] -> [[-0.693, -0.693]]."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def compare_logits(reference: np.ndarray, other: np.ndarray, tokens: list[int]) -> tuple[bool, str]:
    """Both (tokens, vocab), fed the same tokens; `tokens` are the reference's greedy choices."""
    if reference.shape != other.shape:
        return False, f"logits of shapes {reference.shape} and {other.shape}"
    reference, other = reference.astype(np.float64), other.astype(np.float64)
    rows = np.arange(len(tokens))
    top = other.argmax(axis=1)  # (tokens,)
    gaps = other[rows, top] - other[rows, tokens]  # (tokens,) 0 where the machines agree
    log_p, log_q = log_softmax(reference), log_softmax(other)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=1)  # (tokens,) KL(x86 || other) in nats
    cos = cosines(reference, other)
    line = (f"teacher-forced top-1 {int((top == tokens).sum())}/{len(tokens)} (largest gap to the x86 token "
            f"{gaps.max():.3f}), KL mean {kl.mean():.4f} max {kl.max():.4f} nats, logits cosine min {cos.min():.4f}")
    return bool(kl.max() <= MAX_KL and gaps.max() <= NEAR_TIE), line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("encoder")
    sub.add_parser("embed").add_argument("bundle")
    logits_parser = sub.add_parser("logits")
    for name in ("bundle", "prompt", "generated", "out"):
        logits_parser.add_argument(name)
    compare_parser = sub.add_parser("compare")
    compare_parser.add_argument("reference")
    compare_parser.add_argument("other")
    compare_logits_parser = sub.add_parser("compare-logits")
    for name in ("reference", "other", "generated"):
        compare_logits_parser.add_argument(name)
    args = parser.parse_args(argv)
    if args.command == "encoder":
        print(encoder_bundle())
        return 0
    if args.command == "embed":
        print(json.dumps(embed(args.bundle)))
        return 0
    if args.command == "logits":
        with open(args.generated, encoding="utf-8") as f:
            np.save(args.out, teacher_forced_logits(args.bundle, args.prompt, json.load(f)))
        return 0
    if args.command == "compare-logits":
        with open(args.generated, encoding="utf-8") as f:
            tokens = json.load(f)["token_ids"]
        ok, line = compare_logits(np.load(args.reference), np.load(args.other), tokens)
    else:
        with open(args.reference, encoding="utf-8") as f, open(args.other, encoding="utf-8") as g:
            ok, line = compare(json.load(f), json.load(g))
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
