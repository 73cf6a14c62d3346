"""Progress on stderr: a bar with an ETA on a terminal, one line per stage (and quarter) in a pipe;
`edge eval`, `edge index` and `edge export` through the CLI (capsys is not a terminal)."""

from __future__ import annotations

import io

from edge.cli import main
from edge.cli.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_piped_one_line_per_stage_and_quarter():
    out = io.StringIO()
    with Progress("job", out) as progress:
        progress.stage("reading")
        for done in range(1, 11):
            progress(done, 10)
        progress.stage("writing")
    assert out.getvalue().splitlines() == ["job: reading", "job: 3/10 (25%)", "job: 5/10 (50%)", "job: 8/10 (75%)",
                                           "job: 10/10 (100%)", "job: writing"]


def test_terminal_bar_with_eta_redrawn_in_place():
    out, clock = Terminal(), Clock()
    progress = Progress("job", out, clock=clock, width=10)
    progress.stage("embedding")
    progress.update(0, 100)
    clock.now += 2
    progress.update(20, 100)  # 10 items/s since counting began: 80 left -> 8 s
    clock.now += 0.01
    progress.update(21, 100)  # too soon to redraw
    clock.now += 8
    progress.update(100, 100)
    progress.close()
    text = out.getvalue()
    assert text.startswith("job: embedding [0:00]\n")
    frames = text.split("\r")[1:]
    assert frames[0].startswith("job [..........] 0/100   0%  ETA --:--")
    assert frames[1].startswith("job [##........] 20/100  20%  ETA 0:08")
    assert len(frames) == 3 and frames[2].startswith("job [##########] 100/100 100%  done in 0:10")
    assert text.endswith("\n")


def test_a_stage_clears_the_bar_first():
    out = Terminal()
    progress = Progress("job", out, clock=Clock())
    progress.update(1, 4)
    progress.stage("next")
    assert out.getvalue().endswith("\r\x1b[Kjob: next [0:00]\n")


def test_eval_and_index_progress_when_piped(tiny_llama_bundle_int8, tiny_bert_bundle_int8, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    assert main(["eval", str(text), "-m", str(tiny_llama_bundle_int8)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("eval: scoring ") and err[-1].endswith("(100%)") and "\r" not in "".join(err)
    assert main(["index", str(text), "-o", str(tmp_path / "idx"), "-m", str(tiny_bert_bundle_int8)]) == 0
    err = capsys.readouterr().err
    assert "index: embedding the new chunks of" in err and "(100%)" in err and "\r" not in err


def test_export_says_each_stage(tiny_gpt2_dir, tmp_path, capsys):
    assert main(["export", str(tiny_gpt2_dir), "-o", str(tmp_path / "b"), "-q", "int8"]) == 0
    err = capsys.readouterr().err.splitlines()
    stages = [line.split(": ", 1)[1] for line in err]
    assert stages[0].startswith("reading") and stages[-1].startswith("writing")
    for part in ("building the fp32 graph", "building the int8 graph", "measuring quality",
                 "quality: fp32 perplexity", "quality: quantized perplexity", "quality: greedy continuations"):
        assert any(s.startswith(part) for s in stages), (part, stages)
    assert all(line.startswith("export: ") for line in err), err  # no library bars or warnings between
