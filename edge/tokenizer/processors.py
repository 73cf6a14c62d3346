"""Post-processors: a model's layout around one sequence ([CLS] ids [SEP]) and truncation.

Every supported post-processor reduces to a `Template` for a single sequence: special ids
before and after the text's ids, and the type id of each part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from edge.errors import TokenizerError
from edge.tokenizer import spec as specs

# One part of a template: (ids of a special token, type id), or (None, type id) for the text.
Part = tuple["tuple[int, ...] | None", int]


@dataclass(frozen=True)
class Encoding:
    """What an encoder model takes for one text (no padding: every position is attended)."""

    ids: list[int]
    type_ids: list[int]
    attention_mask: list[int]
    truncated: bool


@dataclass(frozen=True)
class Template:
    parts: tuple[Part, ...] = ((None, 0),)

    @property
    def n_special(self) -> int:
        return sum(len(ids) for ids, _ in self.parts if ids is not None)

    def apply(self, ids: list[int], max_length: int) -> Encoding:
        """Cut `ids` from the right so the whole fits `max_length`, then add the specials.

        Example ([CLS]=101, [SEP]=102): ([7, 8, 9], 4) -> Encoding([101, 7, 8, 102], [0, 0, 0, 0], [1, 1, 1, 1], True)
        """
        budget = max_length - self.n_special
        if budget < 0:
            raise TokenizerError(
                f"max_length {max_length} cannot hold this model's {self.n_special} special tokens; "
                f"use max_length >= {self.n_special}"
            )
        out, type_ids = [], []
        for part, type_id in self.parts:
            part = ids[:budget] if part is None else part
            out += part
            type_ids += [type_id] * len(part)
        return Encoding(out, type_ids, [1] * len(out), len(ids) > budget)


def _template(spec: dict) -> Template:
    specials = spec.get("special_tokens") or {}
    parts = []
    for item in specs.field(spec, "single", "post_processor"):
        (kind, body), = item.items()
        if kind == "Sequence":
            parts.append((None, body.get("type_id", 0)))
            continue
        if body["id"] not in specials:
            raise TokenizerError(
                f"tokenizer.json TemplateProcessing uses {body['id']!r} but does not list its ids; {specs.CORRUPT}"
            )
        parts.append((tuple(specials[body["id"]]["ids"]), body.get("type_id", 0)))
    return Template(tuple(parts))


def _around(spec: dict) -> Template:
    """BertProcessing / RobertaProcessing: cls text sep, all of type 0."""
    (_, cls), (_, sep) = specs.field(spec, "cls", "post_processor"), specs.field(spec, "sep", "post_processor")
    return Template((((cls,), 0), (None, 0), ((sep,), 0)))


def _sequence(spec: dict) -> Template:
    """Only one step may add tokens (Llama 3: ByteLevel offsets, then a template)."""
    adding = [t for t in map(build, specs.field(spec, "processors", "post_processor")) if t.n_special]
    if len(adding) > 1:
        raise specs.unsupported("post_processor Sequence with several token-adding steps", "Sequence", BUILDERS)
    return adding[0] if adding else Template()


BUILDERS: dict[str, Callable[[dict], Template]] = {
    "TemplateProcessing": _template,
    "BertProcessing": _around,
    "RobertaProcessing": _around,
    "ByteLevel": lambda spec: Template(),
    "Sequence": _sequence,
}


def build(spec: dict | None) -> Template:
    """The single-sequence template from a tokenizer.json post_processor (null: no specials)."""
    return specs.build("post_processor", spec, BUILDERS) if spec is not None else Template()
