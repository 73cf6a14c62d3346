"""Read a source model: a Hugging Face id, a local Hugging Face folder, or a .gguf file.

In: the SOURCE string the user typed. Out: a `Source` with the config, the weights as
float32 numpy arrays under their Hugging Face names, the tokenizer.json text and the
special tokens. Everything after this stage works on numpy only.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from edge.errors import ExportError
from edge.manifest import TokenizerSpec
from export import architectures


@dataclass
class Source:
    name: str
    task: str  # "text-generation" or "feature-extraction"
    config: Any  # transformers.PretrainedConfig
    weights: dict[str, np.ndarray]  # HF state-dict name -> float32 array
    tokenizer_json: str
    tokens: TokenizerSpec
    folder: Path | None = None  # local folder, for sentence-transformers files
    module: Any = None  # the transformers model itself, for the traced fallback


@dataclass(frozen=True)
class _Location:
    kind: str  # "gguf", "folder" or "hub"
    path: str  # file's folder, local folder, or hub id
    gguf_file: str | None = None
    online: bool = False  # hub only: the hub answered; otherwise only its local cache is read


def locate(spec: str) -> _Location:
    """Tell what SOURCE names, without loading anything."""
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ExportError(f"GGUF file {spec} not found. Check the path.")
        return _Location("gguf", str(path.parent), path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ExportError(f"{spec} has no config.json: it is not a Hugging Face model folder.")
        return _Location("folder", str(path))
    if path.exists() or spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        raise ExportError(
            f"source {spec!r} is neither a .gguf file, a model folder nor a hub id "
            "like 'HuggingFaceTB/SmolLM2-135M-Instruct'."
        )
    return _Location("hub", spec, online=hub_reachable())


HUB_PROBE_SECONDS = 3.0


def hub_reachable() -> bool:
    """Whether the hub answers a TCP connection within HUB_PROBE_SECONDS (name lookup
    included). Offline, the hub client's own retries take ~30 s before failing; with this
    answer an id not in the local cache fails at once, and a cached one still exports."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    answered: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=HUB_PROBE_SECONDS).close()
            answered.append(True)
        except OSError:
            answered.append(False)

    worker = threading.Thread(target=probe, daemon=True)  # a stuck name lookup is not ours to wait on
    worker.start()
    worker.join(HUB_PROBE_SECONDS)
    return bool(answered) and answered[0]


def shareable_name(spec: str) -> str:
    """What a bundle records as its source: a hub id as given, a local file or folder by its
    own name only. Bundles get copied to other machines and people; the exporting machine's
    paths (home folder, user name) are nobody else's business. A folder or file inside the
    Hugging Face cache is named by its repository.

    Examples: "/home/ann/models/SmolLM2.Q4_1.gguf" -> "SmolLM2.Q4_1.gguf";
    "~/.cache/huggingface/hub/models--org--name/snapshots/<rev>/x.gguf" -> "org/name/x.gguf"
    """
    path = Path(os.path.abspath(Path(spec).expanduser()))  # not resolve(): cache files are links to blobs
    if not path.exists():
        return spec
    parts = path.parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith("models--"):
            return "/".join([parts[i - 1].removeprefix("models--").replace("--", "/"), *parts[i + 2:]])
    return path.name


def load_config(spec: str):
    """The transformers config of SOURCE alone (no weights)."""
    where = locate(spec)
    return _hub_call(where, _load_config, where)


def load_source(spec: str, task: str | None = None) -> Source:
    """Load config, weights and tokenizer; fail early (before weights) on unknown architectures."""
    where = locate(spec)
    config = load_config(spec)
    task = architectures.check(config, task)
    model = _hub_call(where, _load_model, where, config, task)
    weights = {name: t.detach().to("cpu").float().numpy() for name, t in model.state_dict().items()}
    tokenizer_json, tokens = _hub_call(where, _load_tokenizer, where)
    folder = Path(where.path) if where.kind == "folder" else None
    return Source(spec, task, config, weights, tokenizer_json, tokens, folder, module=model)


def gguf_tokenizer_json(path: Path) -> str:
    """tokenizer.json text that transformers converts from a GGUF file's vocabulary."""
    tokenizer_json, _ = _load_tokenizer(_Location("gguf", str(path.parent), path.name))
    return tokenizer_json


def _hub_call(where: _Location, fn, *args):
    """Run a loader; turn a failed hub download into one line that says what to do."""
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()  # our one-line error replaces its retry warnings
    try:
        return fn(*args)
    except OSError as exc:
        if where.kind != "hub":
            raise ExportError(f"could not read {where.path}: {exc}".splitlines()[0]) from None
        raise ExportError(
            f"could not fetch {where.path!r} from the Hugging Face hub (offline, or no such "
            "model?). Download it on a connected machine and pass its local folder or a .gguf file."
        ) from None


def _pretrained_kwargs(where: _Location) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"local_files_only": not where.online}
    if where.gguf_file:
        kwargs["gguf_file"] = where.gguf_file
    return kwargs


def _load_config(where: _Location):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(where.path, **_pretrained_kwargs(where))


def _load_model(where: _Location, config, task: str):
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    auto = AutoModelForCausalLM if task == "text-generation" else AutoModel
    model = auto.from_pretrained(where.path, dtype=torch.float32, **_pretrained_kwargs(where))
    return model.eval()


def _load_tokenizer(where: _Location) -> tuple[str, TokenizerSpec]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(where.path, **_pretrained_kwargs(where))
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(f"{where.path} has no fast tokenizer (tokenizer.json); edge needs one.")
    if where.kind == "gguf":
        tokens = _gguf_special_tokens(Path(where.path) / where.gguf_file, tok)
    else:
        tokens = _hf_special_tokens(where, tok)
    return backend.to_str(), tokens


def _gguf_special_tokens(path: Path, tok) -> TokenizerSpec:
    """Special tokens from the GGUF metadata: the converted tokenizer may get them wrong."""
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields

    def value(key: str, default=None):
        return fields[key].contents() if key in fields else default

    bos_id = value("tokenizer.ggml.bos_token_id")
    eos_id = value("tokenizer.ggml.eos_token_id")
    return TokenizerSpec(
        bos_token=tok.convert_ids_to_tokens(bos_id) if bos_id is not None else None,
        bos_token_id=bos_id,
        eos_token=tok.convert_ids_to_tokens(eos_id) if eos_id is not None else None,
        eos_token_ids=(eos_id,) if eos_id is not None else (),
        pad_token_id=value("tokenizer.ggml.padding_token_id"),
        add_bos=bool(value("tokenizer.ggml.add_bos_token", False)),
        chat_template=value("tokenizer.chat_template"),
    )


def _hf_special_tokens(where: _Location, tok) -> TokenizerSpec:
    """Special tokens from the tokenizer plus generation_config.json's eos list."""
    eos_ids = [tok.eos_token_id] if tok.eos_token_id is not None else []
    eos_ids += _generation_eos_ids(where)
    probe = tok("a", add_special_tokens=True)["input_ids"]
    template = tok.chat_template if isinstance(tok.chat_template, str) else None
    return TokenizerSpec(
        bos_token=tok.bos_token,
        bos_token_id=tok.bos_token_id,
        eos_token=tok.eos_token,
        eos_token_ids=tuple(dict.fromkeys(eos_ids)),
        pad_token_id=tok.pad_token_id,
        add_bos=tok.bos_token_id is not None and probe[:1] == [tok.bos_token_id],
        chat_template=template,
    )


def _generation_eos_ids(where: _Location) -> list[int]:
    if where.kind != "folder":
        return []
    path = Path(where.path) / "generation_config.json"
    if not path.is_file():
        return []
    eos = json.loads(path.read_text()).get("eos_token_id")
    return [eos] if isinstance(eos, int) else list(eos or [])
