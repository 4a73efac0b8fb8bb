"""gl.train: the fit loop, callbacks, metrics, cross-validation, hyper-parameter search
and plots."""
from .callbacks import (
                        Callback,
                        CSVLogger,
                        EarlyStopping,
                        LRSchedulerCallback,
                        ModelCheckpoint,
                        snapshot_state,
)
from .compiled import CompiledStep, compile_step
from .cv import CVResult, cross_validate
from .history import History
from .loop import NonFiniteLossError, evaluate, fit, predict
from .metrics import METRICS, accuracy
from .plots import plot_decision_boundary, plot_history
from .search import SearchResult, grid_search, random_search
from .search_space import choice, int_range, loguniform, parse_space, uniform
from .tensorboard import TensorBoard

__all__ = ["fit", "evaluate", "predict", "History", "NonFiniteLossError", "Callback",
           "EarlyStopping", "ModelCheckpoint", "CSVLogger", "LRSchedulerCallback", "TensorBoard",
           "snapshot_state", "compile_step", "CompiledStep",
           "cross_validate", "CVResult", "grid_search", "random_search", "SearchResult",
           "choice", "uniform", "loguniform", "int_range", "parse_space", "METRICS",
           "accuracy", "plot_history", "plot_decision_boundary"]
