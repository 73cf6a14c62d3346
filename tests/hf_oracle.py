"""The oracle for decoder tests: a saved transformers causal LM, run in fp32 with torch."""

from __future__ import annotations

import numpy as np
import torch


def hf_causal_lm(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def hf_logits(folder, ids: list[int]) -> np.ndarray:
    """(seq, vocab) logits of `ids` as one sequence."""
    with torch.no_grad():
        return hf_causal_lm(folder)(torch.tensor([ids])).logits[0].numpy()
