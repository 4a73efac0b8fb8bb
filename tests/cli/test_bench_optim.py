"""`gradlab bench optim`: tiny sweeps in-process (cwd = tmp_path), its files, its flags, and
every bad input ending in exit 2 with a one-line message and nothing written."""
import datetime
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import devices
import gradlab as gl
from gradlab.bench.optim import cases, options, report, timing
from gradlab.cli.main import build_parser, main

TINY = ["--sizes", "1000:4000:2", "--tensors", "4", "--repeats", "3", "--block-time", "0"]


def _bench(*args):
    return main(["bench", "optim", *args])


def _default_dir(cwd):
    return cwd / f"gradlab-bench-{datetime.date.today().isoformat()}"


def _check_fractions(report):
    """Every measured implementation has a fraction <= FLAG_ABOVE, or is flagged with no
    fraction; returns the names that ran."""
    ran = set()
    for rec in report["results"]:
        for name, impl in rec["implementations"].items():
            if "skipped" in impl:
                continue
            ran.add(name)
            if impl["above_roofline"]:
                assert impl["roofline_fraction"] is None
                assert impl["rate_over_roofline"] > cases.FLAG_ABOVE
            else:
                assert 0 < impl["roofline_fraction"] <= cases.FLAG_ABOVE
                assert impl["roofline_fraction"] == impl["rate_over_roofline"]
            assert impl["gbps"] == pytest.approx(rec["bytes_per_step"] / impl["median_s"] / 1e9)
            assert impl["iqr_s"][0] <= impl["median_s"] <= impl["iqr_s"][1]
            assert len(impl["times_s"]) == report["config"]["repeats"]
    return ran


def test_tiny_sweep_writes_json_md_png_into_cwd(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _bench("--optimizers", "adam,sgd", *TINY) == 0
    out = _default_dir(tmp_path)
    assert sorted(os.listdir(out)) == ["bench-optim.json", "bench-optim.md", "bench-optim.png"]
    assert os.listdir(tmp_path) == [out.name]  # nothing else written beside it
    report = json.loads((out / "bench-optim.json").read_text())
    assert [(r["optimizer"], r["size"]) for r in report["results"]] == [
        ("adam", 1000), ("adam", 4000), ("sgd", 1000), ("sgd", 4000)]
    for rec in report["results"]:
        per_param = {"adam": 28, "sgd": 20}[rec["optimizer"]]
        assert rec["bytes_per_param"] == per_param
        assert rec["bytes_per_step"] == per_param * rec["size"]
        assert rec["tensors"] == 4 and rec["params_finite_after"]
        assert rec["roofline"]["gbps"] > 0
        assert {"copy 1 thread", "add 1 thread"} <= set(rec["roofline"]["kernels"])
    assert "gradlab" in _check_fractions(report)
    assert report["machine"]["timer_resolution_s"] > 0
    md = (out / "bench-optim.md").read_text()
    assert "## adam: 28 B per parameter" in md and "## sgd: 20 B per parameter" in md
    assert "| 4,000 | gradlab |" in md
    assert (out / "bench-optim.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote " in capsys.readouterr().out


def test_without_torch_the_torch_columns_skip_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    out = tmp_path / "res"
    assert _bench("--optimizers", "adagrad", "--dtype", "float64", "--out", str(out),
                  *TINY) == 0
    report = json.loads((out / "bench-optim.json").read_text())
    for rec in report["results"]:
        assert rec["bytes_per_param"] == 40  # float64: twice fp32's 20 B
        impls = rec["implementations"]
        assert list(impls) == ["gradlab", "torch-forloop", "torch-foreach", "torch-fused"]
        for variant in cases.TORCH_VARIANTS:
            assert "torch is not installed" in impls[variant]["skipped"]
    assert _check_fractions(report) == {"gradlab"}
    assert report["summary"][0]["torch_fastest"] is None
    md = (out / "bench-optim.md").read_text()
    assert "- torch-fused skipped: torch is not installed" in md


def test_torch_variants_run_or_say_why_not(tmp_path):
    torch = pytest.importorskip("torch")
    out = tmp_path / "res"
    assert _bench("--optimizers", "adadelta", "--out", str(out), *TINY) == 0
    rec = json.loads((out / "bench-optim.json").read_text())["results"][0]
    impls = rec["implementations"]
    assert "median_s" in impls["torch-forloop"] and "median_s" in impls["torch-foreach"]
    fused = impls["torch-fused"]  # torch has no fused Adadelta
    assert "median_s" in fused or f"torch {torch.__version__} cannot run" in fused["skipped"]


def test_bytes_per_parameter_of_every_fused_optimizer():
    # fp32: each array the step reads or writes counts 4 B once per direction.
    assert {n: s.words * 4 for n, s in cases.SPECS.items()} == {
        "sgd": 20, "adam": 28, "adamw": 28, "rmsprop": 20, "adagrad": 20, "adadelta": 28,
        "adamax": 28, "nadam": 28, "radam": 28}
    backend = gl.backend.get_backend("cpu")
    for name in cases.SPECS:  # each benchmarked optimizer is a backend entry point
        assert callable(getattr(backend, f"{name.replace('adamw', 'adam')}_step"))


def test_sizes_syntax():
    assert options.parse_sizes("1e4:1e7") == [10000, 21544, 46416, 100000, 215443, 464159,
                                            1000000, 2154435, 4641589, 10000000]
    assert options.parse_sizes("1e4:1e6:3") == [10000, 100000, 1000000]
    assert options.parse_sizes("1e5, 1000,1e5") == [1000, 100000]
    assert options.parse_sizes("5000:5000") == [5000]


class _FakeClock:
    resolution = 1e-9

    def __init__(self, per_step):
        self.per_step = per_step

    def block(self, fn, k):
        return self.per_step


def test_short_steps_are_batched_to_the_block_time():
    assert timing.calibrate(_FakeClock(1e-6), None, 1e-3) * 1e-6 >= 1e-3
    assert timing.calibrate(_FakeClock(2e-3), None, 1e-3) == 1
    assert timing.calibrate(_FakeClock(0.0), None, 1e-3) == cases.MAX_BATCH


def test_a_rate_above_the_roofline_is_flagged_not_reported_as_a_fraction():
    cfg = SimpleNamespace(repeats=3, tensors=1, dtype=np.dtype("float32"))
    spec = cases.SPECS["adam"]
    nbytes = 28 * 1000
    roof = [timing.Timed("roofline: copy", None, None, 8000, 1, [1e-6, 1e-6, 1e-6])]  # 8 GB/s
    timed = [timing.Timed("gradlab", None, None, nbytes, 1, [2e-6, 2e-6, 2e-6]),  # 14 GB/s
             timing.Timed("torch-fused", None, None, nbytes, 1, [7e-6, 7e-6, 7e-6])]  # 4 GB/s
    rec = timing._record(spec, 1000, cfg, nbytes, roof, timed, {}, True)
    fast, slow = rec["implementations"]["gradlab"], rec["implementations"]["torch-fused"]
    assert fast["above_roofline"] and fast["roofline_fraction"] is None
    assert fast["rate_over_roofline"] == pytest.approx(1.75)
    assert not slow["above_roofline"] and slow["roofline_fraction"] == pytest.approx(0.5)
    data = {"config": {"optimizers": ["adam"], "device": "cpu", "dtype": "float32",
                       "tensors": 1, "repeats": 3, "block_time_s": 0, "warmup_steps": 3,
                       "flag_above": cases.FLAG_ABOVE},
            "machine": {"gradlab": "x", "numpy": "x", "torch": None, "python": "x",
                        "timer": "t", "timer_resolution_s": 1e-7},
            "date": "d", "torch_note": None, "results": [rec],
            "bytes_per_param": {"adam": {"bytes": 28, "reads": ["p"], "writes": ["p"],
                                         "assumes": "a", "options": {}}},
            "summary": report.summary([rec])}
    md = report.markdown(data)
    assert "| gradlab | 2.0 us |" in md and "above roofline (x1.75) |" in md
    assert "| torch-fused | 7.0 us |" in md and "| 0.50 |" in md


def test_overwrite_moves_the_old_files_aside(tmp_path):
    out = tmp_path / "res"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert _bench("--optimizers", "sgd", "--no-torch", "--out", str(out), "--overwrite",
                  *TINY) == 0
    (old,) = [p for p in tmp_path.iterdir() if p.name.startswith("res.old-")]
    assert (old / "mine.txt").read_text() == "keep me"
    assert "bench-optim.json" in os.listdir(out) and "mine.txt" not in os.listdir(out)


@pytest.mark.parametrize("args, message", [
    (["--sizes", "1e4:abc"], "'abc' is not a whole number of parameters"),
    (["--sizes", "1e7:1e4"], "the range runs downwards"),
    (["--sizes", "1e4:1e5:0"], "is not a number of points"),
    (["--sizes", "1.5,2000"], "'1.5' is not a whole number"),
    (["--sizes", "50", "--tensors", "100"], "fewer than --tensors 100"),
    (["--optimizers", "adam,lamb"], "unknown optimizer 'lamb'; valid: sgd,adam"),
    (["--tensors", "0"], "--tensors must be >= 1"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--block-time", "nan"], "--block-time must be seconds"),
    (["--device", "tpu"], "valid choices are cpu, cuda and cuda:N"),
    (["--sizes", "1e11"], "free; lower the largest size"),
])
def test_bad_input_is_exit_2_with_one_line_and_nothing_written(tmp_path, monkeypatch,
                                                               capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert _bench(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradlab bench: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_an_out_that_is_a_file_or_holds_files_is_refused(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert _bench("--out", str(target), *TINY) == 2
    assert "is an existing file, not a directory" in capsys.readouterr().err
    full = tmp_path / "full"
    full.mkdir()
    (full / "old.json").write_text("{}")
    assert _bench("--out", str(full), *TINY) == 2
    assert "already holds old.json; choose another --out, or pass --overwrite" in \
        capsys.readouterr().err
    assert os.listdir(full) == ["old.json"] and target.read_text() == "x"


def test_bad_dtype_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        _bench("--dtype", "float16")
    assert exc.value.code == 2
    assert "invalid choice: 'float16'" in capsys.readouterr().err


def test_unknown_option_lists_the_optim_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "optim", "--colour", "red"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --colour red" in err and "--tensors" in err


def test_plain_bench_still_parses_as_before():
    args = build_parser().parse_args(["bench", "--full"])
    assert args.command == "bench" and args.full and args.bench_command is None


def test_help_states_the_timing_method(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "optim", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for phrase in ("warm-up", "perf_counter", "CUDA events", "28 B per parameter",
                   "above roofline", "GRADLAB_NUM_THREADS", "gradlab-bench-<date>"):
        assert phrase in text


@pytest.mark.skipif(devices.REAL_GPU, reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_exit_2_saying_why(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GRADLAB_EMULATE_CUDA_CHILD"}
    proc = subprocess.run([sys.executable, "-m", "gradlab", "bench", "optim", "--device",
                           "cuda", *TINY], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("gradlab bench: error: ") and "Traceback" not in proc.stderr
    assert "GPU" in proc.stderr or "CuPy" in proc.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.cuda
def test_cuda_sweep_writes_its_files(tmp_path):
    if not gl.cuda.is_available():
        why = f"; {devices.EMULATION_SKIPPED}" if devices.EMULATION_SKIPPED else ""
        pytest.skip(f"no CUDA device: {gl.cuda.unavailable_reason()}{why}")
    out = tmp_path / "cuda"
    assert _bench("--device", "cuda", "--optimizers", "adam,sgd", "--sizes", "2000:8000:2",
                  "--tensors", "3", "--repeats", "2", "--block-time", "0", "--out",
                  str(out)) == 0
    report = json.loads((out / "bench-optim.json").read_text())
    assert report["machine"]["timer"] == "CUDA events (cupy.cuda.Event)"
    assert [(r["optimizer"], r["size"]) for r in report["results"]] == [
        ("adam", 2000), ("adam", 8000), ("sgd", 2000), ("sgd", 8000)]
    assert all(r["params_finite_after"] for r in report["results"])
    assert set(report["results"][0]["roofline"]["kernels"]) == {"copy", "add"}
    assert "gradlab" in _check_fractions(report)
    assert (out / "bench-optim.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 8,000 | gradlab |" in (out / "bench-optim.md").read_text()
