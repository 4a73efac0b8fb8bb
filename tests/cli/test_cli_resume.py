"""`gradlab train --resume DIR` keeps the run's --distributed mode (exact or refused), and
says nothing about a compiled step when no step ran. The CLI runs in a subprocess; a
1-rank --distributed run needs no mpiexec (MPI starts as a singleton)."""
import json
import os
import subprocess
import sys

import pytest

from gradlab.cli.train_command import compiled_summary

# moons: 432 training rows, 13 batches of 32 an epoch: a run takes well under a second
TINY = ("--dataset", "moons", "--hidden", "8", "--quiet")


def gradlab(*args):
    env = {**os.environ, "GRADLAB_DEVICE": "cpu"}
    env.pop("GRADLAB_EMULATE_CUDA_CHILD", None)
    proc = subprocess.run([sys.executable, "-m", "gradlab", *map(str, args)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return proc


def _ok(proc):
    assert proc.returncode == 0, proc.stderr
    return proc


def _manifest(run):
    return json.loads((run / "gradlab-run.json").read_text())


def _edit_manifest(run, edit):
    manifest = _manifest(run)
    edit(manifest)
    (run / "gradlab-run.json").write_text(json.dumps(manifest))


def _same_result(a, b):
    assert (a / "best_model.gl").read_bytes() == (b / "best_model.gl").read_bytes()
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    assert ma["test_loss"] == mb["test_loss"] and ma["epochs_run"] == mb["epochs_run"] == 2


def _contents(run):
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


def test_a_1_rank_distributed_run_resumes_distributed_without_the_flag(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    _ok(gradlab("train", *TINY, "--epochs", "2", "--distributed", "--out", ref))
    _ok(gradlab("train", *TINY, "--epochs", "1", "--distributed", "--out", run))
    assert _manifest(run)["args"]["distributed"] is True  # recorded, so it can be restored
    # neither --distributed nor mpiexec: the mode (its sampler's batch order) comes back
    # from the manifest, so the extended run ends where the uninterrupted one did
    _ok(gradlab("train", "--resume", run, "--epochs", "2"))
    _same_result(ref, run)
    # a plain run is the other order: the comparison above could tell them apart
    plain = tmp_path / "plain"
    _ok(gradlab("train", *TINY, "--epochs", "2", "--out", plain))
    assert (plain / "best_model.gl").read_bytes() != (ref / "best_model.gl").read_bytes()


def test_a_plain_run_resumed_with_distributed_is_refused_and_left_as_it_was(tmp_path):
    run = tmp_path / "run"
    _ok(gradlab("train", *TINY, "--epochs", "1", "--out", run))
    assert _manifest(run)["args"]["distributed"] is False
    before = _contents(run)
    proc = gradlab("train", "--resume", run, "--epochs", "2", "--distributed")
    assert proc.returncode == 2
    assert "trained without --distributed" in proc.stderr and \
        "drop --distributed" in proc.stderr
    assert _contents(run) == before  # refused before anything was written


def test_a_resumed_distributed_run_refuses_compile_naming_the_runs_mode(tmp_path):
    run = tmp_path / "run"
    _ok(gradlab("train", *TINY, "--epochs", "1", "--distributed", "--out", run))
    proc = gradlab("train", "--resume", run, "--compile")
    assert proc.returncode == 2
    assert "the run trained with --distributed, which trains eagerly: drop --compile" in \
        proc.stderr


def test_a_resume_on_fewer_ranks_says_the_mpiexec_line_to_use(tmp_path):
    run = tmp_path / "run"
    _ok(gradlab("train", *TINY, "--epochs", "1", "--distributed", "--out", run))
    _edit_manifest(run, lambda m: m["config"].update(world_size=2))  # as a 2-rank run writes
    proc = gradlab("train", "--resume", run)
    assert proc.returncode == 2
    assert "the run trained on 2 rank(s), this one has 1" in proc.stderr
    assert f"`mpiexec -n 2 gradlab train --resume {run}`" in proc.stderr


# Manifests written before --distributed was recorded: a world size there (written only for
# more than 1 rank) means distributed; without one, the run resumes plain unless
# --distributed is given, as such resumes always did, and a note says so.
def _legacy(run):
    _edit_manifest(run, lambda m: m["args"].pop("distributed"))


def test_an_old_manifest_without_the_mode_resumes_plain_and_says_how_to_resume_distributed(
        tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    _ok(gradlab("train", *TINY, "--epochs", "2", "--out", ref))
    _ok(gradlab("train", *TINY, "--epochs", "1", "--out", run))
    _legacy(run)
    proc = _ok(gradlab("train", "--resume", run, "--epochs", "2"))
    assert "written before gradlab recorded --distributed" in proc.stderr
    assert "resume it with --distributed instead" in proc.stderr
    _same_result(ref, run)
    # the extension rewrote the manifest: it now records the mode, and says no more
    assert _manifest(run)["args"]["distributed"] is False
    again = _ok(gradlab("train", "--resume", run))
    assert "recorded --distributed" not in again.stderr


def test_an_old_1_rank_distributed_manifest_resumes_exactly_with_the_flag(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    _ok(gradlab("train", *TINY, "--epochs", "2", "--distributed", "--out", ref))
    _ok(gradlab("train", *TINY, "--epochs", "1", "--distributed", "--out", run))
    _legacy(run)
    proc = _ok(gradlab("train", "--resume", run, "--epochs", "2", "--distributed"))
    assert "recorded --distributed" not in proc.stderr  # the flag answered the question
    _same_result(ref, run)
    assert _manifest(run)["args"]["distributed"] is True


def test_an_old_multi_rank_manifest_is_taken_as_distributed(tmp_path):
    run = tmp_path / "run"
    _ok(gradlab("train", *TINY, "--epochs", "1", "--distributed", "--out", run))
    _legacy(run)
    _edit_manifest(run, lambda m: m["config"].update(world_size=2))
    proc = gradlab("train", "--resume", run)
    # distributed (so no note), on 1 rank of the run's 2: the rank check refuses it
    assert proc.returncode == 2 and "recorded --distributed" not in proc.stderr
    assert "the run trained on 2 rank(s), this one has 1" in proc.stderr


def test_resuming_a_finished_compiled_run_prints_no_empty_compiled_summary(tmp_path):
    run = tmp_path / "run"
    first = _ok(gradlab("train", "--dataset", "moons", "--hidden", "8", "--epochs", "1",
                        "--out", run))  # compiled: the CPU default
    assert "compiled step: 11 of 13 steps replayed, 2 recording steps for 1 input " \
        "signature" in first.stdout.splitlines()
    again = _ok(gradlab("train", "--resume", run))  # already finished: no step runs
    assert "compiled step" not in again.stdout
    assert again.stdout.splitlines()[-1].startswith("test accuracy: ")


@pytest.mark.parametrize("eager", [0, 2])
def test_compiled_summary_is_none_only_when_no_step_ran(eager):
    info = {"replayed": 0, "recorded": 0, "eager": eager, "signatures": 0,
            "eager_reasons": []}
    assert compiled_summary(info) == (None if not eager else
                                      "compiled step: 0 of 2 steps replayed, 0 recording "
                                      "steps for 0 input signatures, 2 eager")


# A damaged manifest's config (the run's options, and its world size when it had more than
# 1 rank) is refused, exit 2, before anything is written: it used to reach the world-size
# lookup as an "internal error" (exit 1), or to be taken for a rank count ("mpiexec -n 0").
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("base") / "run"
    _ok(gradlab("train", *TINY, "--epochs", "1", "--out", run))
    return run


def _damaged(tmp_path, finished_run, legacy, edit):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    if legacy:  # the legacy mode reads the world size first, from its own code path
        _legacy(run)
    _edit_manifest(run, edit)
    return run


def _refused(run, needle):
    before = _contents(run)
    # --epochs 2 would extend the run, so a refusal after the claim would show in the files
    proc = gradlab("train", "--resume", run, "--epochs", "2")
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr  # the refusal alone: no note, no "extending the run"
    path = run / "gradlab-run.json"
    assert err[0].startswith("gradlab train: error: ") and f"{path}: {needle}" in err[0]
    assert "the file was edited or damaged: restore it, or start a new run with --out " \
        "NEWDIR" in err[0]
    assert "internal error" not in err[0] and "mpiexec" not in err[0]
    assert _contents(run) == before
    assert proc.stdout == ""


def _drop_config(m):
    del m["config"]


@pytest.mark.parametrize("legacy", [False, True], ids=["recorded-mode", "legacy"])
@pytest.mark.parametrize("edit", [_drop_config, lambda m: m.update(config=None),
                                  lambda m: m.update(config=[]),
                                  lambda m: m.update(config="{}")],
                         ids=["missing", "null", "list", "string"])
def test_a_manifest_whose_config_is_not_a_dict_is_refused_unchanged(tmp_path, finished_run,
                                                                     legacy, edit):
    run = _damaged(tmp_path, finished_run, legacy, edit)
    _refused(run, "'config' is missing or not a dict")


@pytest.mark.parametrize("legacy", [False, True], ids=["recorded-mode", "legacy"])
@pytest.mark.parametrize("ranks,shown", [
    pytest.param(ranks, shown, id=name) for name, ranks, shown in [
        ("zero", 0, "0"), ("negative", -2, "-2"), ("float", 2.0, "2.0"),
        ("bool", True, "True"), ("string", "2", "'2'"), ("null", None, "None"),
        ("list", [2], "[2]")]])
def test_a_manifest_whose_world_size_is_not_a_positive_integer_is_refused_unchanged(
        tmp_path, finished_run, legacy, ranks, shown):
    run = _damaged(tmp_path, finished_run, legacy,
                   lambda m: m["config"].update(world_size=ranks))
    _refused(run, f"'world_size' in 'config' is {shown}, expected a positive integer")


def test_a_recorded_world_size_of_1_is_accepted(tmp_path, finished_run):
    # (gradlab records one only for more than 1 rank, but 1 is a valid count: the run
    # resumes as the 1-rank plain run it is)
    run = _damaged(tmp_path, finished_run, False, lambda m: m["config"].update(world_size=1))
    _ok(gradlab("train", "--resume", run, "--epochs", "2"))
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 2


def test_a_manifest_without_its_list_of_extensions_is_refused_unchanged(tmp_path, finished_run):
    # (an extension appends to it: a missing one was a KeyError, "internal error", exit 1)
    def drop(m):
        del m["extended"]
    run = _damaged(tmp_path, finished_run, False, drop)
    _refused(run, "'extended' is missing or not a list")
