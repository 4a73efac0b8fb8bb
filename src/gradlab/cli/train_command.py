"""``gradlab train``: one run, optionally into a run directory (--out) that it can be
resumed from (--resume), under MPI (--distributed), logging to TensorBoard."""
from __future__ import annotations

import json
import os
import sys
import time

from .inputs import (
    check_env,
    check_model_fits,
    check_ranges,
    choose_device,
    drop_last_rule,
    load_splits,
    run_config,
    say,
)
from .main import UsageError
from .model import build_trial, default_lr

CHECKPOINT = "best_model.gl"


# Options a resumed run keeps from its manifest: none may change, except --epochs, which
# may grow (a longer run), when the schedule does not depend on it. --distributed is kept
# too: it picks the loader (a DistributedSampler's order, not shuffle=True's), so it decides
# what is computed, even on 1 rank, where no world size is recorded to catch a switch.
_RUN_LOCAL = ("command", "resume", "out", "quiet", "overwrite", "tensorboard",
              "histogram_every",  # logging only: a resumed run may log elsewhere
              "compile")  # how steps run, not what they compute
_EPOCH_SCHEDULES = ("step", "cosine", "onecycle")


def cmd_train(args):
    """Train an MLP on the chosen dataset; print (and with --out, write) the test result."""
    from ..distributed import destroy_process_group, is_initialized
    # (not args.distributed: --resume may set it from the run's manifest only later)
    joined_before = is_initialized()
    try:
        return _cmd_train(args)
    finally:
        # A group this command joined is left at its end, so that the process (a test, a
        # notebook calling main()) can run other commands after it.
        if not joined_before and is_initialized():
            destroy_process_group()


def _cmd_train(args):
    from . import rundir
    check_env()
    manifest = _resume_manifest(args) if args.resume else None
    check_ranges(args)
    if args.lr is None:  # the optimizer's own default, written into the run's config
        args.lr = default_lr(args.optimizer)
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise UsageError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    if args.overwrite and not args.out:
        raise UsageError("--overwrite applies to --out DIR; give the directory to reuse")
    if args.out and not args.resume:
        rundir.check_out(args.out, args.overwrite)
    board = _tensorboard(args)
    device = choose_device(args.device)
    world = _init_distributed(args, device, manifest)
    if args.compile is None:
        # The CLI's models are gradlab's own modules and loss, which a replay repeats bit
        # for bit (no Python-side state a guard could miss); the CUDA-graph path has not
        # been measured on a real GPU yet, so there eager stays the default.
        args.compile = device.type == "cpu"
    import gradlab as gl

    from ..data import DataLoader, TensorDataset
    from ..train import CSVLogger, EarlyStopping, ModelCheckpoint

    data = load_splits(args)
    if manifest is not None:
        change = rundir.describe_change(manifest["data"], data["fingerprint"])
        if change:
            raise UsageError(f"--resume {args.resume!r}: the data changed since the run "
                             f"started ({change}); resuming would train on other rows than "
                             "the checkpoints did: restore the original data, or start a new "
                             "run with --out NEWDIR")
    X_tr, y_tr = data["train"]
    config = run_config(args, device)
    check_model_fits(data["features"], data["classes"], config["hidden"], args.batch_size,
                     len(y_tr))
    if world > 1:
        config["world_size"] = world
    drop_last, bn_note = drop_last_rule(args.batchnorm, len(y_tr), args.batch_size)
    gl.manual_seed(args.seed)
    fixed = {**config, "in_features": data["features"], "classes": data["classes"],
             "n_train": len(y_tr) // args.batch_size * args.batch_size if drop_last
             else len(y_tr)}
    model, loss_fn, optimizer, scheduler = build_trial(fixed, {})
    model.to(device)
    if args.distributed:
        from ..distributed import DistributedDataParallel, DistributedSampler
        model = DistributedDataParallel(model)
        sampler = DistributedSampler(TensorDataset(X_tr, y_tr), seed=args.seed,
                                     drop_last=drop_last)
        train_loader = DataLoader(TensorDataset(X_tr, y_tr), batch_size=args.batch_size // world,
                                  sampler=sampler, drop_last=drop_last, seed=args.seed,
                                  device=device)
    else:
        train_loader = DataLoader(TensorDataset(X_tr, y_tr), batch_size=args.batch_size,
                                  shuffle=True, drop_last=drop_last, seed=args.seed,
                                  device=device)
    val_loader = None if data["val"] is None else \
        DataLoader(TensorDataset(*data["val"]), batch_size=1024, device=device)
    test_loader = DataLoader(TensorDataset(*data["test"]), batch_size=1024, device=device)
    monitor = "val_loss" if val_loader is not None else "loss"
    # The reported model is the best epoch's (lowest monitored loss): without
    # --early-stopping the tracker's patience outlasts the run, so it only restores.
    best = EarlyStopping(monitor=monitor, patience=args.early_stopping or args.epochs,
                         restore_best_weights=True)
    callbacks = [best]
    checkpoint = lock = None
    resume = False
    if args.out and not args._main:  # rank > 0: rank 0 sets up --out and says how it went
        manifest, resume = _from_rank_0(None)
    if args.out and args._main:
        try:
            lock, manifest, resume = _claim_out(args, manifest, config, data)
        except Exception as exc:
            if args.distributed:
                _from_rank_0(exc)
            raise
        if args.distributed:
            _from_rank_0((manifest, resume))
    if args.out:
        checkpoint = os.path.join(args.out, CHECKPOINT)
        # (history.csv is rewritten whole from the History at the end of the run)
        callbacks += [CSVLogger(os.path.join(args.out, "history.csv"), append=resume),
                      ModelCheckpoint(checkpoint, monitor=monitor, save_best_only=True)]

    if board is not None:
        callbacks.append(board)
    return _train(args, gl, data, config, device, model, loss_fn, optimizer, scheduler,
                  train_loader, val_loader, test_loader, monitor, best, callbacks, checkpoint,
                  lock, resume, manifest, bn_note, world)


def _init_distributed(args, device, manifest):
    """Join the process group under --distributed (MPI; NCCL on CUDA); returns the world
    size (1 without it) and checks it against a resumed run's."""
    args._main = True
    world = 1
    if args.distributed:
        from ..distributed import get_world_size, init_process_group, is_initialized
        if not is_initialized():
            init_process_group("nccl" if device.type == "cuda" else "mpi")
        from ..distributed import get_rank
        world, args._main = get_world_size(), get_rank() == 0
        if args.batch_size % world:
            raise UsageError(f"--distributed: --batch-size {args.batch_size} (the global "
                             f"batch) must be a multiple of the {world} ranks")
        if args.batchnorm and args.batch_size // world < 2:
            raise UsageError(f"--distributed: --batch-size {args.batch_size} over {world} "
                             "ranks leaves 1 row per rank, too few for BatchNorm's batch "
                             "statistics; use a larger --batch-size or --no-batchnorm")
        if args.compile:
            restored = args.resume and "distributed" not in getattr(args, "_given", set())
            raise UsageError(("--resume: the run trained with --distributed, which trains "
                              "eagerly: drop --compile") if restored else
                             "--distributed trains eagerly: drop --compile")
        args.compile = False
    if manifest is not None and manifest["config"].get("world_size", 1) != world:
        ranks = manifest["config"].get("world_size", 1)
        raise UsageError(f"--resume: the run trained on {ranks} rank(s), this one has {world}: "
                         f"resume it on as many, `mpiexec -n {ranks} gradlab train --resume "
                         f"{args.resume}`")
    return world


def _from_rank_0(value):
    """Rank 0's ``value`` on every rank; an exception there is raised on the others too."""
    from ..distributed import broadcast_object
    kind, payload = broadcast_object(("error", str(value)) if isinstance(value, BaseException)
                                     else ("ok", value), 0)
    if kind == "error":
        raise UsageError(f"rank 0 could not set up --out: {payload}")
    return payload


def _claim_out(args, manifest, config, data):
    """Claim --out (lock, manifest); returns (lock, manifest, resume)."""
    from ..train import checkpoint as ckpt
    from . import rundir
    resume = False
    # Every input is checked: only now is anything written into the directory.
    lock, moved = rundir.claim(args.out, args.overwrite,
                               manifest["run_id"] if manifest is not None else None)
    if moved:
        say(args, f"--overwrite: moved the old contents of {args.out} to {moved}")
    if manifest is None:
        manifest = rundir.new_manifest(_run_args(args), config, data["fingerprint"])
        rundir.write_manifest(args.out, manifest)
    else:
        resume = bool(ckpt.list_checkpoints(args.out))
        if not resume:
            say(args, f"--resume: no checkpoint in {args.out} yet (the run stopped "
                       "before its first one); starting it over from step 0")
        if args.epochs != manifest["args"]["epochs"]:
            manifest["extended"].append({"from": manifest["args"]["epochs"],
                                         "to": args.epochs,
                                         "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
            manifest["args"]["epochs"] = manifest["config"]["epochs"] = args.epochs
            rundir.write_manifest(args.out, manifest)
    return lock, manifest, resume


def _train(args, gl, data, config, device, model, loss_fn, optimizer, scheduler, train_loader,
           val_loader, test_loader, monitor, best, callbacks, checkpoint, lock, resume,
           manifest, bn_note, world):
    from ..train import evaluate, fit
    from ..train.loop import NonFiniteLossError
    layers = "-".join(str(s) for s in [data["features"], *config["hidden"], data["classes"]])
    say(args, f"gradlab train: {args.dataset} ({data['samples']} samples, "
               f"{data['features']} features, {data['classes']} classes) on {device}")
    say(args, f"model {layers} {args.activation}, {args.optimizer} lr={args.lr:g}, "
               f"up to {args.epochs} epochs, batch {args.batch_size}")
    if bn_note:
        say(args, bn_note)
    start = time.perf_counter()
    try:
        history = fit(model, loss_fn, optimizer, train_loader, val_loader, epochs=args.epochs,
                      scheduler=scheduler, callbacks=callbacks, device=device,
                      verbose=0 if args.quiet else 1, l1=args.l1, monitor=monitor,
                      checkpoint_dir=args.out or None,
                      checkpoint_every=(args.checkpoint_every or len(train_loader))
                      if args.out else None, resume=resume, compile=args.compile)
        train_seconds = time.perf_counter() - start
        test = evaluate(model, loss_fn, test_loader, device=device)
        metrics = {"test_accuracy": test["accuracy"], "test_loss": test["loss"],
                   "test_samples": len(data["test"][1]), "epochs_run": len(history),
                   "best_epoch": best.best_epoch, "train_seconds": round(train_seconds, 3),
                   "device": str(device), "stop_reason": history.stop_reason,
                   "gradlab_version": gl.__version__, "config": config,
                   "run_id": manifest["run_id"] if manifest else None}
        if world > 1:
            metrics["world_size"] = world
        if args.out and args._main:
            _write_outputs(args.out, metrics, history, data, model)
    except NonFiniteLossError as exc:
        kept = f"; the last good checkpoint is kept in {checkpoint}" if checkpoint and \
            os.path.exists(checkpoint) else ""
        raise NonFiniteLossError(f"{exc}{kept}", exc.epoch, exc.batch, exc.history) from None
    finally:
        if lock is not None:
            lock.release()
    if history.stop_reason:
        say(args, history.stop_reason)
    summary = compiled_summary(history.compiled) if history.compiled is not None else None
    if summary:
        say(args, summary)
    if not args._main:
        return 0
    print(f"test accuracy: {test['accuracy']:.4f}  (test loss {test['loss']:.4f}, "
          f"{metrics['test_samples']} samples, best epoch {best.best_epoch} of "
          f"{len(history)}, {train_seconds:.1f} s on {device})", flush=True)
    return 0


def compiled_summary(info):
    """One line on how a compiled run's steps ran (``CompiledStep.info()``), or None when
    no step ran (a resumed run that had already finished): "0 of 0 steps" says nothing."""
    steps = info["replayed"] + info["recorded"] + info["eager"]
    if not steps:
        return None

    def count(n, what):
        return f"{n} {what}{'s' if n != 1 else ''}"
    line = (f"compiled step: {info['replayed']} of {count(steps, 'step')} replayed, "
            f"{count(info['recorded'], 'recording step')} for "
            f"{count(info['signatures'], 'input signature')}")
    if info["eager"]:
        line += (f", {info['eager']} eager ({'; '.join(info['eager_reasons'])})"
                 if info["eager_reasons"] else f", {info['eager']} eager")
    return line


def _tensorboard(args):
    """The TensorBoard callback --tensorboard asks for (checked now; it writes nothing until
    training begins), or None."""
    if args.tensorboard is None:
        return None
    if args.histogram_every < 0:
        raise UsageError(f"--histogram-every must be >= 0 (0: no histograms), got "
                         f"{args.histogram_every}")
    directory, default = args.tensorboard, not args.tensorboard
    if default:
        if not args.out:
            raise UsageError("--tensorboard needs a directory (--tensorboard DIR), or --out "
                             "DIR to log under DIR/tensorboard")
        directory = os.path.join(args.out, "tensorboard")
    from ..train import TensorBoard
    try:
        # A resumed run continues its own event files rather than refusing them; under
        # --out --overwrite the old OUT/tensorboard is moved aside with the rest of OUT.
        return TensorBoard(directory, histogram_every=args.histogram_every,
                           append=bool(args.resume) or (default and args.overwrite))
    except (ValueError, ImportError) as exc:
        raise UsageError(f"--tensorboard: {exc}") from None


def _run_args(args):
    return {k: v for k, v in vars(args).items() if k not in _RUN_LOCAL and
            not k.startswith("_")}


def _check_type(path, name, value, action):
    import argparse
    if isinstance(action, (argparse.BooleanOptionalAction, argparse._StoreTrueAction)):
        ok, kind = isinstance(value, bool), "true or false"
    elif value is None:
        ok, kind = action.default is None, "a value"
    elif action.type is int:
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif action.type is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        kind = "a number"
    else:
        ok, kind = isinstance(value, str), "a string"
    if ok and action.choices is not None and value not in action.choices:
        ok, kind = False, f"one of {', '.join(map(str, action.choices))}"
    if not ok:
        raise UsageError(f"--resume: {path}: {name!r} is {value!r}, expected {kind}; the "
                         "file was edited or damaged: restore it, or start a new run with "
                         "--out NEWDIR")


def _resume_manifest(args):
    """Read DIR's manifest, check its options' types, refuse options that would change the
    run, and set ``args`` to the run's options (--out becomes DIR). Returns the manifest."""
    from . import rundir
    from .main import build_parser
    directory = args.resume
    if not os.path.isdir(directory):
        raise UsageError(f"--resume {directory!r}: no such directory; give the --out "
                         "directory of an earlier `gradlab train` run")
    manifest = rundir.read_manifest(directory)
    if manifest is None:
        legacy = os.path.exists(os.path.join(directory, rundir.LEGACY_ARGS))
        raise UsageError(
            f"--resume {directory!r}: no {rundir.MANIFEST} there" +
            (f" ({rundir.LEGACY_ARGS} was written by an older gradlab, which recorded no "
             "data fingerprint, so an exact resume cannot be checked); start a new run with "
             "--out NEWDIR" if legacy else
             "; resume a directory that a `gradlab train --out DIR` run wrote"))
    if args.out and os.path.abspath(args.out) != os.path.abspath(directory):
        raise UsageError("--resume DIR continues in DIR; drop --out (or give the same DIR)")
    if args.overwrite:
        raise UsageError("--resume continues the run in DIR; --overwrite would move it aside: "
                         "drop one of them")
    path = os.path.join(directory, rundir.MANIFEST)
    actions = {a.dest: a for a in build_parser().commands["train"]._actions}
    saved = manifest["args"]
    given = getattr(args, "_given", set())
    # Checked before anything reads it (the legacy mode and the rank check below): a
    # damaged value would otherwise be taken for a rank count ("mpiexec -n 0") or, as
    # True == 1, pass for one rank.
    ranks = manifest["config"].get("world_size", 1)
    if not isinstance(ranks, int) or isinstance(ranks, bool) or ranks < 1:
        raise UsageError(f"--resume: {path}: 'world_size' in 'config' is {ranks!r}, expected "
                         "a positive integer (the run's number of ranks); the file was "
                         "edited or damaged: restore it, or start a new run with --out NEWDIR")
    if "distributed" not in saved:
        saved["distributed"] = _legacy_distributed(args, manifest, given, path)
    missing = [k for k in actions if k not in saved and k not in _RUN_LOCAL and k != "help"]
    if missing:
        raise UsageError(f"--resume: {path} lacks {', '.join(missing)}; the file was edited "
                         "or damaged: restore it, or start a new run with --out NEWDIR")
    for name, value in saved.items():
        if name in actions and name not in _RUN_LOCAL:
            _check_type(path, name, value, actions[name])
    for name in sorted(given - set(_RUN_LOCAL)):
        if name not in saved or getattr(args, name) == saved[name]:
            continue
        flag = "--" + name.replace("_", "-")
        if name == "distributed":  # (a store_true flag: only given as True)
            raise UsageError(f"--resume: the run in {directory} trained without --distributed, "
                             "so resuming it with --distributed would draw its batches in "
                             "another order: drop --distributed (and mpiexec)")
        if name == "epochs":
            if args.epochs < saved["epochs"]:
                raise UsageError(f"--resume: --epochs {args.epochs} is fewer than the run's "
                                 f"{saved['epochs']}; --epochs may only extend a run")
            if saved["schedule"] in _EPOCH_SCHEDULES:
                raise UsageError(f"--resume: --epochs cannot extend this run: its --schedule "
                                 f"{saved['schedule']} was planned over {saved['epochs']} "
                                 "epochs; start a new run with --out NEWDIR")
            print(f"gradlab train: --resume: extending the run from {saved['epochs']} to "
                  f"{args.epochs} epochs", file=sys.stderr)
            continue
        raise UsageError(f"--resume: {flag} {getattr(args, name)!r} differs from the run's "
                         f"{saved[name]!r}: the run's config is fixed; start a new run with "
                         "--out NEWDIR (only --epochs may change, to extend the run)")
    for name, value in saved.items():
        if name in actions and name not in _RUN_LOCAL and not (name == "epochs" and
                                                               "epochs" in given):
            setattr(args, name, value)
    args.out = directory
    return manifest


def _legacy_distributed(args, manifest, given, path):
    """Whether a run whose manifest predates recording --distributed was distributed.

    A world size is recorded only for more than 1 rank, so one there says yes. Without one
    the run was either plain or a 1-rank --distributed run, which nothing recorded tells
    apart: such a resume used to follow the flags given, and still does, so a plain run
    resumes as plain unless --distributed is given (said on stderr, with the flag to use)."""
    ranks = manifest["config"].get("world_size", 1)
    if ranks > 1:  # (_resume_manifest has checked it is a positive integer)
        return True
    if "distributed" in given:
        return bool(args.distributed)
    print(f"gradlab train: --resume: {path} was written before gradlab recorded "
          "--distributed; resuming the run as trained without it (if it was a 1-rank "
          "--distributed run, resume it with --distributed instead)", file=sys.stderr)
    return False


def _write_outputs(out, metrics, history, data, model):
    from ..train import plot_decision_boundary, plot_history
    metrics = dict(metrics)
    metrics["checkpoint"] = CHECKPOINT
    metrics["standardization"] = {"note": "fitted on the training split; apply "
                                          "(x - mean) / scale before the model",
                                  **data["scaler"].state_dict()}
    name = "history.csv"
    try:
        _atomic(os.path.join(out, name), history.to_csv)
        try:
            name = "curves.png"
            _atomic(os.path.join(out, name), lambda p: plot_history(history, p))
            if data["features"] == 2:
                X, y = data["train"]
                name = "decision_boundary.png"
                _atomic(os.path.join(out, name),
                        lambda p: plot_decision_boundary(model, X, y, p))
            metrics["plots"] = True
        except ImportError as exc:
            metrics["plots"] = False
            print(f"note: no curves.png: {exc}", file=sys.stderr)
        name = "metrics.json"
        _atomic(os.path.join(out, name), lambda p: _dump_json(metrics, p))
    except OSError as exc:
        raise UsageError(f"writing {os.path.join(out, name)} failed: {exc.strerror or exc}; "
                         f"the trained model and checkpoints are kept in {out}: free some "
                         f"disk space, then run `gradlab train --resume {out}` to write the "
                         "results") from None


def _dump_json(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def _atomic(path, write):
    """``write(tmp)`` then rename onto ``path``: a failure leaves no half-written file."""
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{ext}"  # (matplotlib picks the format from the extension)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
