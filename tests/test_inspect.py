"""`edge inspect`'s numbers against independent oracles: transformers' eager attention,
the positional formulas, HF's weights, and plain numpy over the ONNX initializers."""

from __future__ import annotations

import numpy as np
import pytest

from edge.bundle import open_bundle
from edge.errors import InputError
from edge.inspect import tables
from edge.inspect.attention import AttentionProbe, select, top_sources
from edge.inspect.embeddings import Embeddings
from edge.inspect.positions import positions, sinusoidal
from edge.inspect.tokens import encode
from edge.engine.token_rows import TokenRows
from edge.tokenizer import load_tokenizer

TEXT = "The quick brown fox jumps over the lazy dog because it was late"
FAMILIES = ["llama", "gpt2", "bert"]


@pytest.fixture
def fp32_bundle(request):
    return open_bundle(request.getfixturevalue(f"tiny_{request.param}_bundle_fp32"))


def _ids(bundle, text=TEXT) -> list[int]:
    return encode(load_tokenizer(bundle.file("tokenizer.json")), bundle.manifest, text)


def _hf_attentions(folder, ids, decoder: bool) -> np.ndarray:
    """transformers' eager attention: (layers, heads, seq, seq)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    auto = AutoModelForCausalLM if decoder else AutoModel
    model = auto.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_attentions=True)
    return np.stack([a[0].numpy() for a in out.attentions])


@pytest.mark.exporter  # its bundle comes by name through an indirect parameter: conftest cannot see it
@pytest.mark.parametrize("fp32_bundle", FAMILIES, indirect=True)
def test_attention_equals_transformers_eager(fp32_bundle, request):
    ids = _ids(fp32_bundle)
    ours = AttentionProbe.open(fp32_bundle).weights(ids)  # (L, H, S, S)
    family = request.node.callspec.params["fp32_bundle"]
    decoder = fp32_bundle.manifest.is_decoder
    want = _hf_attentions(request.getfixturevalue(f"tiny_{family}_dir"), ids, decoder)
    assert ours.shape == want.shape
    np.testing.assert_allclose(ours, want, atol=1e-4)
    np.testing.assert_allclose(ours.sum(axis=-1), 1.0, atol=1e-5)
    assert fp32_bundle.manifest.inspect.causal == decoder
    if decoder:
        assert np.all(np.triu(ours, k=1) == 0)  # causal: no weight on later tokens
    else:
        rows, cols = np.triu_indices(len(ids), k=1)
        assert np.all(ours[..., rows, cols] > 0)  # bidirectional: every token sees the later ones


# --- positions: formulas and weights --------------------------------------------------


def test_sinusoidal_table_matches_the_formula():
    from transformers.models.distilbert.modeling_distilbert import create_sinusoidal_embeddings
    import torch

    want = torch.empty(50, 32)
    create_sinusoidal_embeddings(50, 32, want)  # DistilBERT's: sin in even, cos in odd channels
    np.testing.assert_allclose(sinusoidal(50, 32), want.numpy(), atol=1e-6)


LEARNED = {"gpt2": ("tiny_gpt2_bundle_int8", lambda m: m.wpe),
           "bert": ("tiny_bert_bundle_int8", lambda m: m.embeddings.position_embeddings)}


@pytest.mark.parametrize("family", LEARNED)
def test_learned_positions_equal_the_hf_weights(family, request):
    from transformers import AutoModel

    name, table_of = LEARNED[family]
    found = positions(open_bundle(request.getfixturevalue(name)), 40)
    hf = AutoModel.from_pretrained(request.getfixturevalue(f"tiny_{family}_dir"))
    want = table_of(hf).weight.detach().numpy()[:40]
    assert found.kind == "learned"
    np.testing.assert_array_equal(found.table, want)
    unit = want / np.linalg.norm(want, axis=1, keepdims=True)
    assert found.similarity[3] == pytest.approx(np.mean([unit[p] @ unit[p + 3] for p in range(37)]), abs=1e-5)


def _with_positional(bundle, **changes):
    """The same bundle under a manifest whose positional encoding says otherwise."""
    import dataclasses

    model = bundle.manifest.model
    positional = dataclasses.replace(model.positional, **changes)
    manifest = dataclasses.replace(bundle.manifest, model=dataclasses.replace(model, positional=positional))
    return dataclasses.replace(bundle, manifest=manifest)


@pytest.mark.parametrize("base", [None, 500000.0])  # the model's own (10000), and another one
def test_rotary_angles_match_the_models_rotary_embedding(tiny_llama_bundle_int8, tiny_llama_dir, base):
    import torch
    from transformers import AutoConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = AutoConfig.from_pretrained(tiny_llama_dir)
    bundle = open_bundle(tiny_llama_bundle_int8)
    if base is not None:
        config.rope_parameters["rope_theta"] = base
        bundle = _with_positional(bundle, rope_theta=base)
    found = positions(bundle, 64)
    cos, sin = LlamaRotaryEmbedding(config)(torch.zeros(1, 64, 8), torch.arange(64)[None])  # (1, 64, head_dim)
    half = found.table.shape[1]
    np.testing.assert_allclose(np.cos(found.table), cos[0, :, :half].numpy(), atol=1e-5)
    np.testing.assert_allclose(np.sin(found.table), sin[0, :, :half].numpy(), atol=1e-5)
    assert found.base == config.rope_parameters["rope_theta"]
    np.testing.assert_allclose(found.similarity, np.cos(found.table).mean(axis=1), atol=1e-6)


def test_a_sinusoidal_bundle_gets_the_formula(tiny_gpt2_bundle_int8):
    bundle = _with_positional(open_bundle(tiny_gpt2_bundle_int8), kind="sinusoidal")
    found = positions(bundle, 32)
    hidden = bundle.manifest.model.hidden_size
    assert found.kind == "sinusoidal" and found.table.shape == (32, hidden)
    np.testing.assert_allclose(found.table, sinusoidal(32, hidden))
    unit = found.table / np.linalg.norm(found.table, axis=1, keepdims=True)
    assert found.similarity[5] == pytest.approx(np.mean([unit[p] @ unit[p + 5] for p in range(27)]), abs=1e-5)


# --- embeddings: the table and its geometry ----------------------------------------------


def _onnx_table(bundle_dir) -> np.ndarray:
    """The embedding table from the ONNX initializers (the onnx package), dequantized by hand.
    From the inspection graph: it always gathers in-graph (int8 generation graphs take rows)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(bundle_dir / "inspect.onnx")).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    gather = next(n for n in graph.node if n.op_type == "Gather" and n.input[0] in init)  # the first: token ids
    values = init[gather.input[0]]
    if values.dtype == np.float32:
        return values
    scales = init[gather.input[0].replace(".codes", ".scales")]  # (V, H / block)
    return values.astype(np.float32) * np.repeat(scales, values.shape[1] // scales.shape[1], axis=1)


def _hf_ids(bundle_dir, word) -> list[int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(bundle_dir / "tokenizer.json"))
    return min((tok.encode(f, add_special_tokens=False).ids for f in (" " + word, word)), key=len)


def _numpy_nearest(table, vector, exclude, k):
    with np.errstate(invalid="ignore"):  # a zero row (BERT's [PAD]) has no direction: NaN, never a hit
        unit = table / np.linalg.norm(table, axis=1, keepdims=True)
    scores = np.nan_to_num(unit @ (vector / np.linalg.norm(vector)), nan=-np.inf)
    scores[list(exclude)] = -np.inf
    top = np.argsort(-scores)[:k]
    return top.tolist(), scores[top]


BUNDLES = ["tiny_llama_bundle_int8", "tiny_gpt2_bundle_fp32", "tiny_bert_bundle_int8"]


@pytest.mark.parametrize("name", BUNDLES)
def test_embedding_table_equals_the_onnx_initializers(name, request):
    path = request.getfixturevalue(name)
    np.testing.assert_array_equal(tables.token_embeddings(open_bundle(path)), _onnx_table(path))


@pytest.mark.parametrize("name", ["tiny_llama_bundle_int8", "tiny_gpt2_bundle_int8"])
def test_token_rows_read_from_the_file_equal_the_onnx_table(name, request):
    path = request.getfixturevalue(name)
    bundle = open_bundle(path)
    assert bundle.manifest.graph.inputs[0] == "inputs_embeds"
    table = _onnx_table(path)
    ids = np.array([0, 5, 5, len(table) - 1, 17, 3])
    np.testing.assert_array_equal(TokenRows.open(bundle).lookup(ids), table[ids])


@pytest.mark.parametrize("name", BUNDLES)
def test_neighbors_and_analogy_match_numpy(name, request):
    path = request.getfixturevalue(name)
    bundle = open_bundle(path)
    emb = Embeddings(tables.token_embeddings(bundle), load_tokenizer(bundle.file("tokenizer.json")))
    table = _onnx_table(path)
    word, hits = emb.neighbors("king", 10)
    ids = _hf_ids(path, "king")
    assert list(word.ids) == ids
    want_ids, want_scores = _numpy_nearest(table, table[ids].mean(axis=0), ids, 10)
    assert [h.id for h in hits] == want_ids
    np.testing.assert_allclose([h.score for h in hits], want_scores, atol=1e-5)

    words, hits = emb.analogy("king", "man", "woman", 5)
    vectors = [table[_hf_ids(path, w)].mean(axis=0) for w in ("king", "man", "woman")]
    a, b, c = (v / np.linalg.norm(v) for v in vectors)
    exclude = {i for w in ("king", "man", "woman") for i in _hf_ids(path, w)}
    want_ids, want_scores = _numpy_nearest(table, a - b + c, exclude, 5)
    assert [h.id for h in hits] == want_ids
    np.testing.assert_allclose([h.score for h in hits], want_scores, atol=1e-5)


def test_a_word_of_several_tokens_is_the_mean_of_its_pieces(tiny_llama_bundle_int8):
    bundle = open_bundle(tiny_llama_bundle_int8)
    table = tables.token_embeddings(bundle)
    word = Embeddings(table, load_tokenizer(bundle.file("tokenizer.json"))).word("qzxvbnk")
    assert len(word.ids) > 1 and "".join(word.pieces).strip() == "qzxvbnk"
    np.testing.assert_allclose(word.vector, table[list(word.ids)].mean(axis=0))


def test_unknown_word_is_a_clear_error(minilm_dir):
    tokenizer = load_tokenizer(minilm_dir / "tokenizer.json")
    emb = Embeddings(np.ones((tokenizer.vocab_size, 8), np.float32), tokenizer)
    with pytest.raises(InputError, match="not in this model's vocabulary"):
        emb.word("\U00013000")  # an Egyptian hieroglyph: WordPiece gives [UNK]


# --- attention views ---------------------------------------------------------------------


def test_views_and_top_sources():
    rng = np.random.default_rng(0)
    weights = np.tril(rng.random((3, 2, 5, 5)))  # (L, H, S, S)
    weights /= weights.sum(axis=-1, keepdims=True)
    one = select(weights, 1, 0)
    np.testing.assert_array_equal(one.summary, weights[1, 0])
    np.testing.assert_allclose(select(weights, 2, None).summary, weights[2].mean(axis=0))
    grid = select(weights, None, None)
    assert len(grid.panels) == 3
    np.testing.assert_allclose(grid.summary, weights.mean(axis=(0, 1)))
    top = top_sources(one.summary, causal=True)
    assert top[0] == [] and [j for j, _ in top[1]] == [0]
    assert [j for j, _ in top[4]] == np.argsort(-weights[1, 0, 4, :4])[:3].tolist()
    with pytest.raises(InputError, match="layer 3 is out of range") as info:
        select(weights, 3, None)
    assert info.value.param == "layer"
    with pytest.raises(InputError, match="head 2 is out of range") as info:
        select(weights, 0, 2)
    assert info.value.param == "head"


@pytest.mark.parametrize("fp32_bundle", FAMILIES, indirect=True)
def test_inspection_graph_reuses_the_generation_weights(fp32_bundle):
    """Every large initializer of inspect.onnx points into model.onnx.data (rotary tables
    included) except the small rotate-half matrix the fused graph has no use for."""
    import onnx

    proto = onnx.load(str(fp32_bundle.file("inspect.onnx")), load_external_data=False)
    where = {t.name: {e.key: e.value for e in t.external_data}["location"]
             for t in proto.graph.initializer if t.external_data}
    own = {name for name, file in where.items() if file != "model.onnx.data"}
    assert len(where) >= 5 and own <= {"rotary.rotate_half"}
    assert fp32_bundle.file("inspect.onnx.data").exists() == bool(own)
