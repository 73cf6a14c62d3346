#!/usr/bin/env bash
# Prove the runtime on aarch64 (a Raspberry Pi's arm64 Debian) under qemu-user emulation.
#
# Builds once, cached outside the repository, an arm64 Debian root filesystem (debootstrap)
# and a venv in it with the runtime and its `serve` extra (a Pi serving a local app over
# HTTP is a real use), plus pytest and the oracles the runtime tests use (the `openai` and
# `ollama` clients, jsonschema), installed offline from PyPI's aarch64 wheels that pip downloads on this machine
# (none of the exporter's dependencies: no torch). Copies in
# the int8 bundles exported here, and the Pi 4 bundle (`edge export --target pi4`) of the
# same model, exported here. Then, emulating a Raspberry Pi 4 core (Cortex-A72: no int8 dot
# product) and a Pi 5 core (Cortex-A76: with it), it runs `edge info` (verifies the
# checksums), `edge generate` (greedy, 32 tokens) of both decoder bundles, `edge embed` (when
# an encoder bundle and the command exist) and `edge doctor`. It compares the tokens, the
# logits fed this machine's tokens (teacher forcing) and the embeddings with this machine's
# (scripts/portability_probe.py); it counts onnxruntime's "Falling back to using unpacked
# compute mode" lines (MatMulNBits dequantizing its weights on every call) at verbose
# logging: none for the Pi 4 bundle on either core, and the int8 bundle's on the A72 are
# recorded (more than none, or the count would prove nothing). Then it runs the runtime's
# tests (-m "not exporter"). Correctness only: emulated speed says nothing about a Pi
# (benchmarks/pi4_proxy.py counts instructions).
#
#   sudo nice -n 10 scripts/check-aarch64.sh
#
# Environment: PYTHON (this machine's Python with the exporter; default .venv/bin/python),
# EDGE_AARCH64_BUNDLE (decoder bundle; default: the SmolLM2 int8 one, exported once),
# EDGE_AARCH64_PI4_BUNDLE (the Pi 4 bundle; default: SmolLM2 exported with --target pi4 here),
# EDGE_ENCODER_BUNDLE (encoder bundle; default: an int8 one in the edge cache, if any),
# EDGE_AARCH64_BOARDS ("pi4 pi5" by default), EDGE_AARCH64_CACHE (~/.cache/edge/aarch64-rootfs).
# Needs root, Debian's debootstrap and qemu-user-static (installed when missing), and PyPI.
# Exits non-zero on any failure; the last line is a one-line summary.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${EDGE_AARCH64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge/aarch64-rootfs}
ROOTFS=$CACHE/root
WHEELS=$CACHE/wheels
SUITE=bookworm
MIRROR=${EDGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
HOST_PY=${PYTHON:-$REPO/.venv/bin/python}
PROMPT="Explain in two sentences why the sky is blue."
STEP_TIMEOUT=1800  # seconds for one emulated command: a hang fails the check instead of the run
DECODERS=(llm pi4)  # /bundles/llm: the int8 (or EDGE_AARCH64_BUNDLE) bundle; /bundles/pi4: --target pi4
FALLBACK="Falling back to using unpacked compute mode"  # onnxruntime's MatMulNBits, at info level
# Each board's qemu core model, and the /proc/cpuinfo it shows (qemu-user would pass the
# host's x86 one through, which no Pi shows; `edge doctor` and onnxruntime read it).
declare -A CORE=([pi4]=cortex-a72 [pi5]=cortex-a76)
declare -A CPUINFO=([pi4]=rpi4-cortex-a72 [pi5]=rpi5-cortex-a76)
read -r -a BOARDS <<<"${EDGE_AARCH64_BOARDS:-pi4 pi5}"
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}  # this machine runs the repository's code
WORK=$ROOTFS/work  # outputs of both machines, seen as /work inside the root; then in $CACHE/last-run
PROBE=scripts/portability_probe.py
STARTED=$SECONDS
CHECKS=()
FAILED=0
QEMU_CPU=
ENCODER=
EMBED_SKIPPED=

log() { echo "== $*" >&2; }

unmount_all() {
  for mount in proc/cpuinfo sys dev proc; do
    if mountpoint -q "$ROOTFS/$mount"; then umount -l "$ROOTFS/$mount"; fi
  done
}

finish() {
  local code=$? status=ok joined
  unmount_all
  if [[ -d $WORK ]]; then rm -rf "$CACHE/last-run" && mv "$WORK" "$CACHE/last-run"; fi  # kept for a look
  if ((code != 0 || FAILED)); then status=FAILED; fi
  joined=$(IFS=';'; echo "${CHECKS[*]:-setup did not finish}")
  echo "check-aarch64: $status in $(((SECONDS - STARTED) / 60))m$(((SECONDS - STARTED) % 60))s: ${joined//;/, }"
  if ((code == 0 && FAILED)); then exit 1; fi
}
trap finish EXIT

# check NAME COMMAND...: run one check, record "NAME ok" or "NAME FAILED", go on with the next.
check() {
  local name=$1
  shift
  log "$name"
  if "$@"; then CHECKS+=("$name ok"); else CHECKS+=("$name FAILED"); FAILED=1; fi
}

# note NAME COMMAND...: as check, but a failure is recorded without failing the run: for a
# bundle run off its target. The Pi 4 bundle on a Pi 5 core goes through MatMulNBits' int8
# (dot product) path for its 4-bit layers, which rounds differently from x86 (so does the
# int4 bundle's; benchmarks/README.md): a finding to report, not a regression of the Pi 4 check.
note() {
  local name=$1
  shift
  log "$name"
  if "$@"; then CHECKS+=("$name ok"); else CHECKS+=("$name differs (off-target, reported)"); fi
}

# arm COMMAND...: run inside the arm64 root, in a clean environment, the runtime's venv first.
arm() {
  timeout "$STEP_TIMEOUT" chroot "$ROOTFS" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/opt/edge/bin:/usr/bin:/bin \
    PIP_DISABLE_PIP_VERSION_CHECK=1 ${QEMU_CPU:+QEMU_CPU=$QEMU_CPU} "$@"
}

# host_edge ARGS...: the edge command of the repository, on this machine.
host_edge() { "$HOST_PY" -c 'import sys; from edge.cli import main; sys.exit(main())' "$@"; }

host_tools() {
  [[ $EUID -eq 0 ]] || { echo "check-aarch64: needs root (debootstrap, chroot, mount)" >&2; exit 1; }
  if ! command -v debootstrap >/dev/null || [[ ! -x /usr/bin/qemu-aarch64-static ]]; then
    log "installing debootstrap and qemu-user-static"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap qemu-user-static binfmt-support >/dev/null
  fi
  if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  [[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] || update-binfmts --enable qemu-aarch64
}

build_rootfs() {
  [[ -e $ROOTFS/.edge-rootfs-ok ]] && return
  log "debootstrap: arm64 Debian $SUITE into $ROOTFS (once, about 15 minutes)"
  rm -rf "$ROOTFS"
  mkdir -p "$CACHE"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$CACHE/debootstrap.log"
  touch "$ROOTFS/.edge-rootfs-ok"
}

make_work() {
  rm -rf "$WORK"
  mkdir -p "$WORK"
}

mount_rootfs() {
  mountpoint -q "$ROOTFS/proc" || mount -t proc proc "$ROOTFS/proc"
  mountpoint -q "$ROOTFS/sys" || mount -t sysfs sysfs "$ROOTFS/sys"
  mountpoint -q "$ROOTFS/dev" || mount --bind /dev "$ROOTFS/dev"
}

# emulate BOARD: later `arm` commands run on BOARD's qemu core and see its /proc/cpuinfo.
emulate() {
  QEMU_CPU=${CORE[$1]}
  if mountpoint -q "$ROOTFS/proc/cpuinfo"; then umount "$ROOTFS/proc/cpuinfo"; fi
  mount --bind "$REPO/tests/data/cpuinfo/${CPUINFO[$1]}.txt" "$ROOTFS/proc/cpuinfo"
}

# The repository as a wheel, and the aarch64 wheels of its dependencies and pytest for the
# root's Python, fetched here: pip resolving and downloading under emulation is much slower.
host_wheels() {
  local python
  python=$(basename "$(readlink -f "$ROOTFS/usr/bin/python3")")  # python3.11
  log "wheels: the repository, and its dependencies for aarch64 $python"
  mkdir -p "$WORK/src" "$WHEELS"
  tar -C "$REPO" --exclude=.venv --exclude=.git --exclude='*.egg-info' --exclude=build --exclude=__pycache__ \
    -cf - pyproject.toml README.md edge export | tar -C "$WORK/src" -xf -
  "$HOST_PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src"
  "$HOST_PY" -m pip download --quiet --only-binary=:all: --implementation cp --python-version "${python#python}" \
    --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 -d "$WHEELS" \
    "$(echo "$WORK"/dist/*.whl)[serve]" pytest openai ollama jsonschema
  rm -f "$WHEELS"/edge_runtime-*.whl  # pip download copies it there, and would keep an older one
  rm -rf "$ROOTFS/wheels"
  mkdir -p "$ROOTFS/wheels/project"
  cp "$WHEELS"/*.whl "$ROOTFS/wheels/"
  cp "$WORK"/dist/edge_runtime-*.whl "$ROOTFS/wheels/project/"
}

install_runtime() {
  [[ -x $ROOTFS/opt/edge/bin/python ]] || arm python3 -m venv /opt/edge
  log "installing the runtime wheel and its dependencies offline (--no-index) in the arm64 venv"
  arm sh -c 'pip install --quiet --no-index --find-links /wheels "$(echo /wheels/project/*.whl)[serve]" pytest openai ollama jsonschema &&
             pip install --quiet --no-index --no-deps --force-reinstall /wheels/project/*.whl'
  arm python -c 'import importlib.util as u, sys
found = [n for n in ("torch", "transformers", "tokenizers", "onnx", "gguf") if u.find_spec(n)]
sys.exit(f"exporter packages in the runtime venv: {found}" if found else 0)'
  log "arm64 runtime: $(arm python -c 'import platform, numpy, onnxruntime; print(platform.machine(), "numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__)')"
  rm -rf "$ROOTFS/src"
  mkdir -p "$ROOTFS/src"
  cp -r "$REPO/pyproject.toml" "$REPO/tests" "$REPO/scripts" "$REPO/benchmarks" "$ROOTFS/src/"
  CHECKS+=("arm64 runtime installed: $(arm python /src/benchmarks/footprint.py --installed-only)")
}

# The int8 bundles as exported here, and the Pi 4 bundle, copied to another path on another machine.
host_bundles() {
  local llm bundle
  llm=${EDGE_AARCH64_BUNDLE:-$("$HOST_PY" -m export.default)}
  ENCODER=${EDGE_ENCODER_BUNDLE:-$("$HOST_PY" "$REPO/$PROBE" encoder)}
  if [[ -z $ENCODER ]]; then
    EMBED_SKIPPED="no encoder bundle"
  elif ! host_edge embed --help >/dev/null 2>&1; then  # the same code as the arm64 wheel's
    EMBED_SKIPPED="no edge embed command"
    ENCODER=
EMBED_SKIPPED=
  fi
  rm -rf "$ROOTFS/bundles"
  mkdir -p "$ROOTFS/bundles"
  cp -r "$llm" "$ROOTFS/bundles/llm"
  if [[ -n ${EDGE_AARCH64_PI4_BUNDLE:-} ]]; then
    cp -r "$EDGE_AARCH64_PI4_BUNDLE" "$ROOTFS/bundles/pi4"
  else
    log "exporting the Pi 4 bundle of the default model (--target pi4)"
    host_edge export "$("$HOST_PY" -c 'from export.fetch import SMOLLM2, fetch; print(fetch(SMOLLM2))')" \
      -o "$ROOTFS/bundles/pi4" --target pi4 >&2
  fi
  if [[ -n $ENCODER ]]; then cp -r "$ENCODER" "$ROOTFS/bundles/encoder"; fi
  log "x86_64 reference outputs of $llm, the Pi 4 bundle${ENCODER:+ and $ENCODER}"
  for bundle in "${DECODERS[@]}"; do
    host_edge generate --json -m "$ROOTFS/bundles/$bundle" --max-tokens 32 "$PROMPT" >"$WORK/x86_64.$bundle.generate.json"
    "$HOST_PY" "$REPO/$PROBE" logits "$ROOTFS/bundles/$bundle" "$PROMPT" "$WORK/x86_64.$bundle.generate.json" \
      "$WORK/x86_64.$bundle.logits.npy"
  done
  if [[ -n $ENCODER ]]; then "$HOST_PY" "$REPO/$PROBE" embed "$ROOTFS/bundles/encoder" >"$WORK/x86_64.embed.json"; fi
}

# same_as_x86 BOARD COMPARISON FILE...: compare BOARD's outputs with x86_64's (x86 first).
same_as_x86() {
  local board=$1 line code=0
  shift
  line=$("$HOST_PY" "$REPO/$PROBE" "$@") || code=$?
  echo "$line" >&2
  CHECKS+=("$board $line")
  return $code
}

# generate_on BOARD BUNDLE, logits_on BOARD BUNDLE: BUNDLE is one of DECODERS.
generate_on() {
  arm edge generate --json -m "/bundles/$2" --max-tokens 32 "$PROMPT" >"$WORK/$1.$2.generate.json" &&
    "$HOST_PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["text"])' "$WORK/$1.$2.generate.json" >&2 &&
    same_as_x86 "$1 $2" compare "$WORK/x86_64.$2.generate.json" "$WORK/$1.$2.generate.json"
}

logits_on() {
  arm python "/src/$PROBE" logits "/bundles/$2" "$PROMPT" "/work/x86_64.$2.generate.json" "/work/$1.$2.logits.npy" &&
    same_as_x86 "$1 $2" compare-logits "$WORK/x86_64.$2.logits.npy" "$WORK/$1.$2.logits.npy" \
      "$WORK/x86_64.$2.generate.json"
}

# fallback_lines BOARD BUNDLE: how many times onnxruntime, logging at verbose, says it falls
# back to unpacked MatMulNBits in a 4-token `edge generate`.
fallback_lines() {
  arm env EDGE_ORT_LOG_LEVEL=0 edge generate -m "/bundles/$2" --max-tokens 4 "$PROMPT" \
    >/dev/null 2>"$WORK/$1.$2.ort.log" || return
  grep -c "$FALLBACK" "$WORK/$1.$2.ort.log" || true
}

# no_fallback BOARD: the Pi 4 bundle never falls back; on the A72 the int8 bundle's lines are
# recorded, and must be there: it shows the grep sees onnxruntime's message at all.
no_fallback() {
  local pi4 int8
  pi4=$(fallback_lines "$1" pi4) && int8=$(fallback_lines "$1" llm) || return
  CHECKS+=("$1 unpacked-compute lines: pi4 bundle $pi4, int8 bundle $int8")
  [[ $pi4 == 0 ]] && { [[ $1 != pi4 ]] || ((int8 > 0)); }
}

embed_on() {
  arm edge embed -m /bundles/encoder "A cat sat on the mat." "Quantized models run on small computers." >&2 &&
    arm python "/src/$PROBE" embed /bundles/encoder >"$WORK/$1.embed.json" &&
    same_as_x86 "$1" compare "$WORK/x86_64.embed.json" "$WORK/$1.embed.json"
}

runtime_tests() {
  local code=0
  arm sh -c 'cd /src && python -m pytest -q -p no:cacheprovider -m "not exporter" tests' >"$WORK/pytest.txt" 2>&1 || code=$?
  cat "$WORK/pytest.txt" >&2
  CHECKS+=("$1 tests: $(tail -1 "$WORK/pytest.txt" | tr -d '=' | xargs)")
  return $code
}

host_tools
build_rootfs
make_work
mount_rootfs
emulate "${BOARDS[0]}"
host_wheels
install_runtime
host_bundles
for board in "${BOARDS[@]}"; do
  emulate "$board"
  for bundle in "${DECODERS[@]}"; do
    check "$board $bundle info" arm edge info "/bundles/$bundle"
    check "$board $bundle generate" generate_on "$board" "$bundle"
    if [[ $bundle == pi4 && $board != pi4 ]]; then
      note "$board $bundle logits" logits_on "$board" "$bundle"
    else
      check "$board $bundle logits" logits_on "$board" "$bundle"
    fi
  done
  check "$board no fallback" no_fallback "$board"
  if [[ -n $ENCODER ]]; then check "$board embed" embed_on "$board"; fi
  check "$board doctor" arm edge doctor
done
if [[ -n $EMBED_SKIPPED ]]; then CHECKS+=("embed skipped ($EMBED_SKIPPED)"); fi
emulate "${BOARDS[0]}"
check "${BOARDS[0]} tests" runtime_tests "${BOARDS[0]}"
