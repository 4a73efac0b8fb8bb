"""The TensorBoard callback: training curves and weight histograms as TensorBoard events.

Events are written with the ``tensorboard`` package's own writer (``EventFileWriter``, the
one PyTorch's SummaryWriter uses), so ``tensorboard --logdir DIR`` reads them."""
from __future__ import annotations

import os
import time

import numpy as np

from .callbacks import Callback

EVENT_PREFIX = "events.out.tfevents."


def _import_writer():
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        raise ImportError("gl.train.TensorBoard needs the tensorboard package: pip install "
                          "gradlab[tensorboard] (or pip install tensorboard)") from None
    return EventFileWriter, event_pb2, summary_pb2


class TensorBoard(Callback):
    """Write each epoch's record (``loss``, ``val_loss``, metrics such as ``accuracy``,
    ``lr``, ``time``: every number in the epoch's logs but ``epoch``) as a scalar under its
    own name, at step = epoch; and every ``histogram_every`` epochs (0: never) a histogram
    of each parameter, tagged ``weights/<name>``.

    ``log_dir`` must be new or empty, so that a run's curves never mix with another run's
    or land among unrelated files; ``append=True`` also accepts a directory that holds only
    TensorBoard event files (a resumed run continuing its curves). Nothing is created before
    training begins."""

    def __init__(self, log_dir, histogram_every=1, append=False):
        self._writer_parts = _import_writer()
        if isinstance(histogram_every, bool) or not isinstance(histogram_every, int) or \
                histogram_every < 0:
            raise ValueError(f"TensorBoard: histogram_every must be an int >= 0 (0: no "
                             f"histograms), got {histogram_every!r}")
        log_dir = os.fspath(log_dir)
        if os.path.exists(log_dir):
            if not os.path.isdir(log_dir):
                raise ValueError(f"TensorBoard: log_dir {log_dir!r} is a file; give a "
                                 "directory (new or empty)")
            entries = os.listdir(log_dir)
            others = [e for e in entries if not e.startswith(EVENT_PREFIX)]
            if others or (entries and not append):
                raise ValueError(
                    f"TensorBoard: log_dir {log_dir!r} is not empty (it holds "
                    f"{', '.join(sorted(entries)[:3])}{', ...' if len(entries) > 3 else ''}); "
                    "give a new or empty directory" +
                    ("" if others else ", or append=True to continue its event files"))
        self.log_dir, self.histogram_every, self.append = log_dir, histogram_every, append
        self._writer = None

    def on_train_begin(self):
        if not _writes(self):
            return
        writer_cls, _, _ = self._writer_parts
        os.makedirs(self.log_dir, exist_ok=True)
        # flush_secs is only the background flush; on_epoch_end flushes every epoch.
        self._writer = writer_cls(self.log_dir, flush_secs=30)

    def _write(self, step, values):
        _, event_pb2, summary_pb2 = self._writer_parts
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=step,
                                               summary=summary_pb2.Summary(value=values)))

    def on_epoch_end(self, epoch, logs):
        if self._writer is None:  # a rank > 0 of a distributed run
            return
        summary_pb2 = self._writer_parts[2]
        scalars = [summary_pb2.Summary.Value(tag=key, simple_value=float(value))
                   for key, value in logs.items()
                   if key != "epoch" and isinstance(value, (int, float, np.number)) and
                   not isinstance(value, bool)]
        self._write(epoch, scalars)
        if self.histogram_every and epoch % self.histogram_every == 0:
            self._write(epoch, [summary_pb2.Summary.Value(tag=f"weights/{name}",
                                                          histo=histogram(p, summary_pb2))
                                for name, p in self.run.model.named_parameters()])
        self._writer.flush()

    def on_train_end(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _writes(callback):
    return getattr(callback.run, "main_process", True)


def histogram(tensor, summary_pb2, bins=30):
    """A HistogramProto of the tensor's values: ``bins`` equal-width buckets between its min
    and max (``bucket_limit`` holds each bucket's right edge, as TensorBoard reads it)."""
    values = np.asarray(tensor.detach().cpu().numpy(), dtype=np.float64).ravel()
    counts, edges = np.histogram(values, bins=bins)
    return summary_pb2.HistogramProto(
        min=float(values.min()), max=float(values.max()), num=float(values.size),
        sum=float(values.sum()), sum_squares=float(np.dot(values, values)),
        bucket_limit=edges[1:].tolist(), bucket=counts.astype(np.float64).tolist())
