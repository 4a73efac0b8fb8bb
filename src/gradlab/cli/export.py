"""``gradlab export RUN_DIR --onnx OUT``: a trained run's best model as an ONNX file.

The model is rebuilt from the run's manifest exactly as ``gradlab train`` built it, the
weights come from the run's best_model.gl, and nothing is written until every input has
been checked."""
from __future__ import annotations

import os

from .main import UsageError


def add_parser(sub):
    p = sub.add_parser("export", help="export a trained run's best model (ONNX)",
                       description="Export the best model of a `gradlab train --out RUN_DIR` "
                                   "run. The model takes standardized features: apply the "
                                   "run's metrics.json 'standardization' first.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out directory of a gradlab train run")
    p.add_argument("--onnx", required=True, metavar="OUT",
                   help="the ONNX file to write (opset 17, dynamic batch axis)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    return p


def _rebuild(run_dir, manifest):
    """The run's model, with the best epoch's weights."""
    from .. import load
    from .model import build_mlp
    from .train_command import CHECKPOINT
    path = os.path.join(run_dir, CHECKPOINT)
    if not os.path.isfile(path):
        raise UsageError(f"{run_dir!r} has no {CHECKPOINT}: the run has not finished an epoch "
                         f"yet; finish it with `gradlab train --resume {run_dir}`")
    config, data = manifest.get("config"), manifest["data"]
    keys = ("hidden", "activation", "dropout", "batchnorm")
    if not isinstance(config, dict) or any(k not in config for k in keys) or \
            not isinstance(data.get("features"), int) or not isinstance(data.get("classes"), int):
        raise UsageError(f"{os.path.join(run_dir, 'gradlab-run.json')} lacks the model's "
                         "options (config: hidden, activation, dropout, batchnorm; data: "
                         "features, classes); the file was edited or damaged: restore it")
    model = build_mlp(data["features"], data["classes"], config["hidden"],
                      config["activation"], float(config["dropout"]), bool(config["batchnorm"]))
    try:
        model.load_state_dict(load(path))
    except (KeyError, RuntimeError, ValueError) as exc:
        raise UsageError(f"{path} does not fit the model the manifest describes ({exc}); the "
                         "run directory mixes files of different runs") from None
    return model


def cmd_export(args):
    from . import rundir
    run_dir, out = args.run_dir, args.onnx
    if not os.path.isdir(run_dir):
        raise UsageError(f"RUN_DIR {run_dir!r}: no such directory; give the --out directory "
                         "of a `gradlab train` run")
    manifest = rundir.read_manifest(run_dir)
    if manifest is None:
        raise UsageError(f"{run_dir!r} is not a gradlab run directory (no {rundir.MANIFEST}); "
                         "give the --out directory of a `gradlab train --out DIR` run")
    if os.path.isdir(out):
        raise UsageError(f"--onnx {out!r} is a directory; give a file name, e.g. "
                         f"{os.path.join(out, 'model.onnx')}")
    if os.path.exists(out) and not args.overwrite:
        raise UsageError(f"--onnx {out!r} already exists; pass --overwrite to replace it, or "
                         "choose another name")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise UsageError(f"--onnx {out!r}: directory {parent!r} does not exist; create it first")
    model = _rebuild(run_dir, manifest)

    import gradlab as gl
    try:
        gl.onnx.export(model, gl.zeros(2, manifest["data"]["features"]), out)
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    except gl.onnx.ExportError as exc:
        raise UsageError(f"the model cannot be exported: {exc}") from None
    except OSError as exc:
        raise UsageError(f"writing {out!r} failed: {exc.strerror or exc}") from None
    widths = "-".join(str(s) for s in [manifest["data"]["features"],
                                       *manifest["config"]["hidden"],
                                       manifest["data"]["classes"]])
    print(f"gradlab export: wrote {out} (model {widths} {manifest['config']['activation']}, "
          f"ONNX opset {gl.onnx.OPSET}, input 'input' [batch, {manifest['data']['features']}] "
          "of standardized features, output 'output' logits)")
    return 0
