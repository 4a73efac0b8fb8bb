"""NumPy's floating-point RuntimeWarnings (log(0), 0/0, an overflow) raised by gradlab's own
array calls are silent, as PyTorch's inf and NaN are (backend/numpy_backend.py's filter);
the user's own NumPy code, gradlab's own warnings, and the user's filters are untouched. Run
in fresh interpreters: pytest sets warning filters of its own around each test."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_OPS = """
import numpy as np, warnings
import gradlab as gl
x = gl.tensor([0.0, -1.0, 1000.0, 1e38], requires_grad=True)
y = gl.log(x) + gl.sqrt(x) + gl.exp(x) + x / 0.0 + x * x
y.sum().backward()
m = gl.nn.Sequential(gl.nn.Linear(3, 2), gl.nn.Softmax(dim=1))
step = gl.train.compile_step(m, lambda o, t: gl.log(o - o).mean() + ((o - t) ** 2).mean(),
                             gl.optim.SGD(m.parameters(), lr=0.1))
for _ in range(5):
    step(gl.randn(4, 3), gl.randn(4, 2))
assert step.info()["replayed"] == 3, step.info()
"""


def _run(code):
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src"), "GRADLAB_DEVICE": "cpu"}
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)


def test_gradlab_ops_and_replays_raise_no_float_warnings_but_user_numpy_does():
    out = _run(_OPS + "print('user', flush=True)\nnp.log(np.zeros(1))\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "user\n"
    lines = [line for line in out.stderr.splitlines() if "RuntimeWarning" in line]
    assert len(lines) == 1 and lines[0].startswith("<string>:") and \
        lines[0].endswith(": RuntimeWarning: divide by zero encountered in log"), out.stderr


def test_the_users_filters_come_first_and_gradlabs_own_warnings_stay():
    out = _run("import warnings\nwarnings.simplefilter('error')\n" + _OPS)
    assert out.returncode != 0
    assert "gradlab/functional/elementwise.py" in out.stderr
    assert out.stderr.rstrip().endswith("RuntimeWarning: divide by zero encountered in log")
    # a compiled step's own warning (a Python decision on a value) is still shown
    out = _run("""
import gradlab as gl
m = gl.nn.Linear(3, 1)
step = gl.train.compile_step(m, lambda o, t: ((o - t) ** 2).mean() * float(o.sum() > 0),
                             gl.optim.SGD(m.parameters(), lr=0.1))
for _ in range(3):
    step(gl.randn(4, 3), gl.randn(4, 1))
""")
    assert out.returncode == 0, out.stderr
    assert "RuntimeWarning: compiled step: running eagerly" in out.stderr
