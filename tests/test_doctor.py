"""`edge doctor` on recorded /proc/cpuinfo texts: features, the int8 kernel, the load warning.

tests/data/cpuinfo/: x86-zen4-epyc.txt was read off the machine these tests were written
on; the Zen 3, Ice Lake and Raspberry Pi 4/5 texts follow the kernels' formats with each
CPU's documented feature flags. The expected kernels are MLAS's dispatch rules, by hand.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from edge.tools import doctor
from edge.cli import main
from edge.tools.doctor import Cpu, QuantizationWarning, int8_support, parse_cpuinfo, quantization_warning
from edge.manifest import GraphSpec, Manifest, ModelConfig, Positional, Quantization, TokenizerSpec
import edge
import edge.cpu

CPUINFO = Path(__file__).parent / "data" / "cpuinfo"
# Methods as the exporter describes them; test_load_warns_on_a_pi4 checks a real export's.
EDGE_INT8 = "MatMulNBits 8-bit asymmetric weights, blocks of 32, accuracy_level 4"
EDGE_INT4 = "MatMulNBits 4-bit asymmetric weights, blocks of 32, accuracy_level 4"
PER_CHANNEL_QINT8 = "MatMulInteger per-channel QInt8 weights, dynamic uint8 activations"


def cpu(name: str) -> Cpu:
    return parse_cpuinfo((CPUINFO / f"{name}.txt").read_text())


# What export/recipes.py records (schema 3); tests/test_pi4.py checks real exports'.
NEEDS_INT8 = {"x86_64": ("avx2",), "aarch64": ("asimddp",)}
NEEDS_PI4 = {"x86_64": ("avx2",), "aarch64": ("asimd",)}


def manifest(scheme: str, method: str, recipe: str = "", needs: dict | None = None, source: str = "") -> Manifest:
    """A schema 1-2 manifest (no CPU features recorded) unless `needs` is given."""
    model = ModelConfig("llama", "text-generation", 1, 2, 1, 4, 8, 16, 32, Positional("rotary", 10000.0, 4))
    graph = GraphSpec("model.onnx", ("input_ids",), ("logits",))
    quantization = Quantization(scheme, method, recipe=recipe, cpu_features=needs)
    return Manifest(model, graph, TokenizerSpec(), quantization, {}, source=source)


@pytest.mark.parametrize("name, arch, model, cores", [
    ("x86-zen4-epyc", "x86_64", "AMD EPYC", 2),
    ("x86-zen3-epyc", "x86_64", "AMD EPYC 7B13", 4),
    ("x86-icelake-xeon", "x86_64", "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", 4),
    ("rpi4-cortex-a72", "aarch64", "Raspberry Pi 4 Model B Rev 1.1 (Cortex-A72)", 4),
    ("rpi5-cortex-a76", "aarch64", "Raspberry Pi 5 Model B Rev 1.0 (Cortex-A76)", 4),
])
def test_parse_recorded_cpuinfo(name, arch, model, cores):
    parsed = cpu(name)
    assert (parsed.arch, parsed.model, parsed.cores) == (arch, model, cores)


def test_parse_by_hand():
    text = "processor : 0\nFeatures : fp asimd asimddp\nCPU implementer : 0x41\nCPU part : 0xd0c\n\nprocessor : 1\n"
    assert parse_cpuinfo(text) == Cpu("aarch64", "Neoverse-N1", 2, frozenset({"fp", "asimd", "asimddp"}))
    assert parse_cpuinfo("processor : 0\nisa : rv64imafdc\n").arch == "unknown"
    assert parse_cpuinfo("") == Cpu("unknown", "unknown", 0, frozenset())


@pytest.mark.parametrize("name, kernel, saturates", [
    ("x86-zen4-epyc", "AVX-512 VNNI", False),
    ("x86-zen3-epyc", "AVX2", True),  # AVX2 without VNNI: U8S8 sums in 16 bits
    ("x86-icelake-xeon", "AVX-512 VNNI", False),
    ("rpi4-cortex-a72", None, False),  # no asimddp: no int8 MatMulNBits kernel
    ("rpi5-cortex-a76", "NEON dot product", False),
])
def test_int8_kernel_of_recorded_cpus(name, kernel, saturates):
    assert int8_support(cpu(name)) == doctor.Int8Support(kernel, saturates)


@pytest.mark.parametrize("features, kernel, saturates", [
    ("fpu sse2 avx avx2 avx_vnni", "AVX-VNNI", False),  # Alder Lake: VNNI without AVX-512
    ("fpu sse2 avx avx2 avx512f avx512bw avx512dq avx512vl", "AVX-512", True),  # Skylake-SP
    ("fpu sse2 sse4_2 avx", None, True),  # Sandy Bridge: no AVX2
])
def test_x86_kernels_by_hand(features, kernel, saturates):
    assert int8_support(parse_cpuinfo(f"processor : 0\nflags : {features}\n")) == doctor.Int8Support(kernel, saturates)


def test_arm_i8mm_and_unknown_arch_by_hand():
    graviton3 = parse_cpuinfo("processor : 0\nFeatures : fp asimd asimddp i8mm\n")
    assert int8_support(graviton3).kernel == "NEON i8mm"
    assert int8_support(parse_cpuinfo("processor : 0\nisa : rv64imafdc\n")) is None


@pytest.mark.parametrize("name, needle", [
    ("rpi4-cortex-a72", "dot-product instructions (asimddp), as on a Raspberry Pi 4"),
    ("rpi5-cortex-a76", "NEON dot product int8 kernel: use them"),
    ("x86-zen3-epyc", "No VNNI: per-channel QInt8"),
    ("x86-icelake-xeon", "AVX-512 VNNI int8 kernel: use them."),
])
def test_recommendation(name, needle):
    assert needle in doctor.recommendation(cpu(name).arch, int8_support(cpu(name)))


@pytest.mark.parametrize("name, scheme, method, expected", [
    ("rpi4-cortex-a72", "int8", EDGE_INT8, "no int8 kernel for MatMulNBits"),
    ("rpi4-cortex-a72", "int4", EDGE_INT4, "no int8 kernel for MatMulNBits"),
    ("rpi5-cortex-a76", "int8", EDGE_INT8, None),
    ("x86-zen3-epyc", "int8", EDGE_INT8, None),  # blockwise MatMulNBits: no U8S8 saturation
    ("x86-zen3-epyc", "int8", PER_CHANNEL_QINT8, "can saturate"),
    ("x86-icelake-xeon", "int8", PER_CHANNEL_QINT8, None),  # VNNI adds in 32 bits
    ("rpi4-cortex-a72", "none", "float32 weights", None),
])
def test_quantization_warning(name, scheme, method, expected):
    message = quantization_warning(manifest(scheme, method), cpu(name))
    assert message is None if expected is None else expected in message


def test_no_warning_for_an_unknown_cpu():
    assert quantization_warning(manifest("int8", EDGE_INT8), None) is None


@pytest.mark.parametrize("name, target, recipe", [
    ("rpi4-cortex-a72", "pi4", "pi4"),
    ("rpi5-cortex-a76", "pi5", "int8"),
    ("x86-zen4-epyc", "native", "int8"),
    ("x86-zen3-epyc", "native", "int8"),
])
def test_fitting_target_and_recipe(name, target, recipe):
    assert (doctor.fitting_target(cpu(name)), doctor.fitting_recipe(cpu(name))) == (target, recipe)


def test_fitting_target_by_hand():
    sandy_bridge = parse_cpuinfo("processor : 0\nflags : fpu sse2 avx\n")
    assert (doctor.fitting_target(sandy_bridge), doctor.fitting_recipe(sandy_bridge)) == ("native", "none")
    assert (doctor.fitting_target(None), doctor.fitting_recipe(None)) == ("portable", "pi4")


@pytest.mark.parametrize("name, recipe, needs, expected", [
    ("rpi4-cortex-a72", "int8", NEEDS_INT8, "need asimddp, which Raspberry Pi 4 Model B Rev 1.1 (Cortex-A72) lacks"),
    ("rpi4-cortex-a72", "pi4", NEEDS_PI4, None),
    ("rpi5-cortex-a76", "int8", NEEDS_INT8, None),
    ("rpi5-cortex-a76", "pi4", NEEDS_PI4, None),
    ("x86-zen3-epyc", "pi4", NEEDS_PI4, None),
    ("rpi4-cortex-a72", "none", {}, None),
])
def test_warning_from_recorded_cpu_features(name, recipe, needs, expected):
    scheme = {"int8": "int8", "pi4": "int4", "none": "none"}[recipe]
    message = quantization_warning(manifest(scheme, EDGE_INT8, recipe, needs), cpu(name))
    assert message is None if expected is None else expected in message


def test_warning_names_the_export_command_for_this_cpu():
    bundle = manifest("int8", EDGE_INT8, "int8", NEEDS_INT8, source="SmolLM2-135M-Instruct.Q4_1.gguf")
    message = quantization_warning(bundle, cpu("rpi4-cortex-a72"))
    assert ("`edge export SmolLM2-135M-Instruct.Q4_1.gguf -o smollm2-135m-instruct.q4_1-pi4 --target pi4`"
            in message)
    old = quantization_warning(manifest("int8", EDGE_INT8), cpu("rpi4-cortex-a72"))  # schema 2: no needs
    assert "no int8 kernel for MatMulNBits" in old and "--target pi4" in old


def test_warn_if_unsuited_warns_once(monkeypatch):
    monkeypatch.setattr(doctor, "host_cpu", lambda: cpu("rpi4-cortex-a72"))
    monkeypatch.setattr(doctor, "_WARNED", set())
    bundle = manifest("int8", EDGE_INT8, "int8", NEEDS_INT8)
    with pytest.warns(QuantizationWarning, match="--target pi4"):
        doctor.warn_if_unsuited(bundle)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        doctor.warn_if_unsuited(bundle)


def test_warn_if_unsuited_warns_with_its_own_category(monkeypatch):
    monkeypatch.setattr(doctor, "_WARNED", set())
    monkeypatch.setattr(doctor, "host_cpu", lambda: cpu("rpi4-cortex-a72"))
    with pytest.warns(QuantizationWarning, match="Raspberry Pi 4 .* no int8 kernel"):
        doctor.warn_if_unsuited(manifest("int8", EDGE_INT8))
    monkeypatch.setattr(doctor, "host_cpu", lambda: cpu("rpi5-cortex-a76"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        doctor.warn_if_unsuited(manifest("int8", EDGE_INT8))


def test_load_warns_on_a_pi4(tiny_llama_bundle_int8, monkeypatch):
    monkeypatch.setattr(doctor, "host_cpu", lambda: cpu("rpi4-cortex-a72"))
    monkeypatch.setattr(doctor, "_WARNED", set())
    with pytest.warns(QuantizationWarning, match=r"int8 bundle's kernels need asimddp.*--target pi4`"):
        edge.load(tiny_llama_bundle_int8)


def test_host_cpu_is_none_when_cpuinfo_describes_another_architecture(monkeypatch):
    """Under qemu-user an aarch64 process reads the x86 host's /proc/cpuinfo."""
    doctor.host_cpu.cache_clear()
    real = doctor.host_cpu()
    other = "aarch64" if real is not None and real.arch == "x86_64" else "x86_64"
    monkeypatch.setattr(edge.cpu.platform, "machine", lambda: other)
    doctor.host_cpu.cache_clear()
    try:
        assert doctor.host_cpu() is None
    finally:
        doctor.host_cpu.cache_clear()


def test_cli_json_shape(capsys):
    assert main(["doctor", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert set(facts) == {"architecture", "cpu", "cores", "features", "int8_kernel", "u8s8_saturates",
                          "onnxruntime", "threads", "recommendation", "target", "recipe"}
    assert facts["target"] == doctor.fitting_target(doctor.host_cpu())
    assert facts["recipe"] == doctor.fitting_recipe(doctor.host_cpu())
    assert isinstance(facts["threads"], int) and facts["threads"] >= 1
    assert all(isinstance(v, bool) for v in facts["features"].values())
    assert facts["recommendation"]


def test_cli_text_on_this_machine(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for row in ("architecture", "int8 features", "int8 kernel", "onnxruntime", "threads", "bundle", "recommendation"):
        assert f"{row}: " in out
    assert f"--target {doctor.fitting_target(doctor.host_cpu())} " in out


def test_cli_text_on_a_pi4(capsys, monkeypatch):
    monkeypatch.setattr(doctor, "host_cpu", lambda: cpu("rpi4-cortex-a72"))
    monkeypatch.setattr(doctor, "process_arch", lambda: "aarch64")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "bundle: edge export SOURCE -o DIR --target pi4 (for Arm without dot product" in out
    assert "--quantize pi4 here" in out
