"""A source's recommended sampling: Hugging Face's generation_config.json in, the manifest's
`Sampling` out (or None: the source recommends none, so edge decodes greedily by default).

Only a config that turns sampling on (`do_sample: true`) recommends anything, as in
transformers' own `generate`; the options edge has (temperature, top_k, top_p, min_p,
repetition_penalty) are copied, the rest ignored. A GGUF file carries no such config.
"""

from __future__ import annotations

from edge.errors import SamplingError
from edge.generation.sampler import SamplingParams
from edge.manifest import Sampling
from export.source import locate

FILE = "generation_config.json"
OPTIONS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")


def read_sampling(spec: str, log=lambda message: None) -> Sampling | None:
    """The recommendation in SOURCE's generation_config.json, if it has one edge can use."""
    from transformers import GenerationConfig

    where = locate(spec)
    if where.kind == "gguf":
        return None
    try:
        config = GenerationConfig.from_pretrained(where.path, local_files_only=not where.online)
    except OSError:  # no generation_config.json: nothing recommended
        return None
    return sampling_from(config, log)


def sampling_from(config, log=lambda message: None) -> Sampling | None:
    """Example: GenerationConfig(do_sample=True, temperature=0.2, top_p=0.9)
    -> Sampling("generation_config.json", temperature=0.2, top_p=0.9)"""
    if not config.do_sample:
        return None
    values = {name: getattr(config, name, None) for name in OPTIONS}
    try:
        SamplingParams(**{k: v for k, v in values.items() if v is not None})
    except SamplingError as exc:  # e.g. temperature 0 with do_sample: a config edge cannot follow
        log(f"ignoring {FILE}'s sampling ({exc.render()}): greedy by default")
        return None
    return Sampling(source=FILE, **values)
