"""The benchmark scripts' command lines: a bad argument is a usage error (exit 2, a message
naming it and what to pass instead), caught before any timing process starts."""
import pytest

from benchmarks import isolated


@pytest.mark.parametrize("argv, needles", [
    (["--compiled", "bogus"], ["'bogus'", "tiny", "small", "cli"]),
    (["--interleaved", "--repeats", "3", "tiny"], ["--repeats applies to --compiled"]),
    (["--compiled", "--repeats", "0"], ["--repeats must be at least 1", "0"]),
    (["--out", "stem", "mnist"], ["--out applies to --compiled and --interleaved"]),
    (["--compiled", "--interleaved"], ["not allowed with"]),
])
def test_isolated_bad_arguments_are_usage_errors(argv, needles, capsys, monkeypatch):
    def no_run(*args, **kwargs):
        raise AssertionError("a timing process started despite the bad arguments")
    monkeypatch.setattr(isolated, "run_child", no_run)
    with pytest.raises(SystemExit) as exc:
        isolated.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    missing = [n for n in needles if n not in err]
    assert not missing, f"usage message lacks {missing}: {err!r}"


def test_memory_unknown_shape_is_a_usage_error(capsys, monkeypatch):
    from benchmarks import memory

    def no_run(*args, **kwargs):
        raise AssertionError("a measuring process started despite the bad shape")
    monkeypatch.setattr(memory, "run_child", no_run)
    with pytest.raises(SystemExit) as exc:
        memory.main(["wide", "huge"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'huge'" in err and "mnist" in err and "wide" in err, err
