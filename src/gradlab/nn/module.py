"""Module: the base class of layers and models (PyTorch's conventions).

Assigning a Parameter, a Module or a registered buffer as an attribute registers it under
that name; ``named_parameters``/``state_dict`` use dotted paths ("0.weight",
"encoder.fc1.bias"). Registered values live both in the per-kind dicts (``_parameters``,
``_buffers``, ``_modules``: the source of truth for traversal) and in the instance
``__dict__``, so that ``self.weight`` inside ``forward`` is a plain attribute lookup with
no ``__getattr__`` detour (this is the hot path of every training step).
"""
from __future__ import annotations

import copy
from collections import OrderedDict, namedtuple
from operator import attrgetter

from ..autograd.grad_mode import no_grad
from ..autograd.tensor import Tensor, structure_version
from ..backend import get_backend
from .parameter import Parameter

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])

# Counts train()/eval() calls and ``training`` assignments: a compiled step reads every
# module's mode (part of a recording's key) again only when this moved (train/compiled.py).
mode_version = [0]


class Module:
    """Base class for all layers: subclass it, create sub-modules and Parameters in
    ``__init__`` (after ``super().__init__()``), and write ``forward``."""

    training: bool

    def __init__(self):
        d = self.__dict__
        d["training"] = True
        d["_parameters"] = OrderedDict()
        d["_buffers"] = OrderedDict()
        d["_non_persistent"] = set()
        d["_modules"] = OrderedDict()

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward(); define "
                                  f"forward(self, ...) in the subclass")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- registration ---------------------------------------------------------------------
    def _check_init(self):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign a parameter or module before "
                                 f"{type(self).__name__}.__init__ has called "
                                 f"super().__init__()")

    def __setattr__(self, name, value):
        d = self.__dict__
        if name != "training":  # train()/eval() are part of a recording's key instead
            structure_version[0] += 1
        else:
            mode_version[0] += 1
        if isinstance(value, Parameter):
            self._check_init()
            self._forget(name)
            d["_parameters"][name] = value
        elif isinstance(value, Module):
            self._check_init()
            self._forget(name)
            d["_modules"][name] = value
        elif "_parameters" in d and name in d["_parameters"]:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as parameter "
                                f"'{name}' (a gl.nn.Parameter or None is required)")
            d["_parameters"][name] = None
        elif "_modules" in d and name in d["_modules"]:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as child module "
                                f"'{name}' (a gl.nn.Module or None is required)")
            d["_modules"][name] = None
        elif "_buffers" in d and name in d["_buffers"]:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} as buffer '{name}' "
                                f"(a Tensor or None is required)")
            d["_buffers"][name] = value
        d[name] = value

    def _forget(self, name):
        structure_version[0] += 1
        d = self.__dict__
        d["_parameters"].pop(name, None)
        d["_modules"].pop(name, None)
        d["_buffers"].pop(name, None)
        d["_non_persistent"].discard(name)

    def __delattr__(self, name):
        if "_parameters" in self.__dict__:
            self._forget(name)
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Add ``param`` (a Parameter or None) under ``name``."""
        self._register("register_parameter", "_parameters", name, param, Parameter,
                       "a gl.nn.Parameter or None")

    def register_buffer(self, name, tensor, persistent=True):
        """Add a non-learnable tensor (e.g. BatchNorm's running_mean) that moves with
        ``to()`` and, if ``persistent``, is saved in ``state_dict``."""
        self._register("register_buffer", "_buffers", name, tensor, Tensor, "a Tensor or None")
        if not persistent:
            self.__dict__["_non_persistent"].add(name)

    def add_module(self, name, module):
        self._register("add_module", "_modules", name, module, Module, "a gl.nn.Module")

    def _register(self, method, registry, name, value, cls, expected):
        """The one path of the three explicit registrations: check the name and the value's
        type, take ``name`` out of every registry, then put it in ``registry``."""
        self._check_name(registry[1:-1], name)
        if value is not None and not isinstance(value, cls):
            raise TypeError(f"{method}('{name}'): expected {expected}, got "
                            f"{type(value).__name__}")
        self._forget(name)
        self.__dict__[registry][name] = value
        self.__dict__[name] = value

    register_module = add_module

    def _check_name(self, kind, name):
        self._check_init()
        if not isinstance(name, str):
            raise TypeError(f"{kind} name must be a string, got {type(name).__name__}")
        if not name or "." in name:
            raise KeyError(f"{kind} name must be non-empty and contain no '.', got {name!r}")

    # -- traversal ------------------------------------------------------------------------
    def named_modules(self, memo=None, prefix=""):
        """(dotted name, module) for this module and every descendant, each once."""
        if memo is None:
            memo = set()
        stack = [(prefix, self)]
        while stack:  # iterative, pre-order, children in registration order
            name, mod = stack.pop()
            if id(mod) in memo:
                continue
            memo.add(id(mod))
            yield name, mod
            children = [(name + ("." if name else "") + k, m)
                        for k, m in mod._modules.items() if m is not None]
            stack.extend(reversed(children))

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named_members(self, kind, prefix, recurse):
        """(dotted name under ``prefix``, value) of the registry ``kind`` of this module and,
        with ``recurse``, of every descendant; a value shared by two modules comes once."""
        seen = set()
        mods = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for path, mod in mods:
            for name, t in getattr(mod, kind).items():
                if t is None or id(t) in seen:
                    continue
                seen.add(id(t))
                yield (path + "." + name if path else name), t

    def named_parameters(self, prefix="", recurse=True):
        """(dotted name, Parameter) pairs; a parameter shared by two modules appears once."""
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse=True):
        return (p for _, p in self._named_members("_parameters", "", recurse))

    def named_buffers(self, prefix="", recurse=True):
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse=True):
        return (b for _, b in self._named_members("_buffers", "", recurse))

    def get_submodule(self, target):
        mod = self
        for part in target.split(".") if target else []:
            if part not in mod._modules:
                raise AttributeError(f"{type(mod).__name__} has no submodule '{part}' "
                                     f"(looking up '{target}')")
            mod = mod._modules[part]
        return mod

    # -- modes, devices, gradients --------------------------------------------------------
    def train(self, mode=True):
        """Training mode (dropout active, batch statistics); returns self."""
        if not isinstance(mode, bool):
            raise TypeError(f"train(mode) expects a bool, got {type(mode).__name__}")
        for m in self.modules():
            m.__dict__["training"] = mode
        mode_version[0] += 1
        return self

    def eval(self):
        """Evaluation mode: same as ``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Reset every parameter's gradient: to None (default, cheapest), or to zeros."""
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad._data[...] = 0

    def to(self, *args, **kwargs):
        """Move (``to("cuda")``) and/or cast (``to(gl.float64)``, only floating-point
        tensors are cast) every parameter and buffer in place; returns self. Parameters
        keep their identity, so an optimizer built before ``to()`` still holds them."""
        device, dtype = _parse_to(args, kwargs)
        backend = get_backend(device) if device is not None else None
        with no_grad():
            for t in list(self.parameters()) + list(self.buffers()):
                _move(t, backend, dtype)
                if t.grad is not None:
                    _move(t.grad, backend, dtype)
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else
                       (f"cuda:{device}" if isinstance(device, int) else device))

    def float(self):
        return self.to(dtype="float32")

    def double(self):
        return self.to(dtype="float64")

    def apply(self, fn):
        """Call ``fn(m)`` on every sub-module (children first, like PyTorch) and self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # -- state ----------------------------------------------------------------------------
    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """Ordered dict of dotted name -> tensor for every parameter and persistent buffer.
        The tensors share memory with the module's (detached unless ``keep_vars``)."""
        out = OrderedDict() if destination is None else destination
        for mprefix, mod in self.named_modules(prefix=prefix.rstrip(".")):
            dot = mprefix + "." if mprefix else ""
            for name, p in mod._parameters.items():
                if p is not None:
                    out[dot + name] = p if keep_vars else p.detach()
            for name, b in mod._buffers.items():
                if b is not None and name not in mod._non_persistent:
                    out[dot + name] = b if keep_vars else b.detach()
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy values from ``state_dict`` into this module's parameters and buffers.

        Wrongly shaped entries are always an error; with ``strict`` (the default) missing
        and unexpected keys are too. The error lists every problem at once. Values may be
        tensors (any device; copied to the parameter's device and dtype) or arrays.
        Returns (missing_keys, unexpected_keys)."""
        if not hasattr(state_dict, "items"):
            raise TypeError(f"load_state_dict expects a dict of name -> tensor, got "
                            f"{type(state_dict).__name__}")
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        mismatched = []
        for k, target in own.items():
            if k in state_dict:
                shape = tuple(getattr(state_dict[k], "shape", ()))
                if shape != tuple(target.shape):
                    mismatched.append(f"{k}: checkpoint has shape {shape}, the model "
                                      f"{tuple(target.shape)}")
        problems = []
        if mismatched:
            problems.append("size mismatch for " + "; ".join(mismatched))
        if strict and missing:
            problems.append("missing keys: " + ", ".join(repr(k) for k in missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(repr(k) for k in unexpected))
        if problems:
            raise RuntimeError(f"error(s) in loading state_dict for {type(self).__name__}:\n  "
                               + "\n  ".join(problems) + "\nbuild the model with the same "
                               "layer sizes as the one that was saved" +
                               (", or pass strict=False to skip missing/unexpected keys"
                                if not mismatched else ""))
        with no_grad():
            for k, target in own.items():
                if k in state_dict:
                    _copy_into(target, state_dict[k])
        return IncompatibleKeys(missing, unexpected)

    # -- printing -------------------------------------------------------------------------
    _repr_settings = ()  # the attributes extra_repr shows, as name=value

    def extra_repr(self):
        """One-line description of this module's settings, shown inside its repr: by
        default the attributes named in ``_repr_settings`` (strings quoted)."""
        return ", ".join(f"{n}={v!r}" if isinstance(v, str) else f"{n}={v}"
                         for n, v in ((n, getattr(self, n)) for n in self._repr_settings))

    def _get_name(self):
        return type(self).__name__

    def __repr__(self):
        extra = self.extra_repr()
        lines = []
        for name, m in self._modules.items():
            body = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        if not lines:
            return f"{self._get_name()}({extra})"
        head = f"{self._get_name()}(" + (f"\n  {extra}" if extra else "")
        return head + "\n" + "\n".join(lines) + "\n)"

    def __dir__(self):
        return sorted(set(super().__dir__()))

    def __getstate__(self):
        raise TypeError("gradlab modules are not pickled; save model.state_dict() with "
                        "gl.save and load it with gl.load")

    def __deepcopy__(self, memo):
        """``copy.deepcopy(model)``: the same structure with copies of every parameter and
        buffer (shared ones stay shared), in the same modes, on the same device. (Deep
        copies stay in the process; pickling, which would not, is refused above.)"""
        new = object.__new__(type(self))
        memo[id(self)] = new
        d = new.__dict__
        for name, value in self.__dict__.items():
            d[name] = copy.deepcopy(value, memo)
        return new


def _parse_to(args, kwargs):
    from ..autograd.dtypes import as_dtype
    device = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)
    if kwargs:
        raise TypeError(f"to() got unexpected arguments {sorted(kwargs)}")
    for a in args:
        if isinstance(a, Tensor):
            device, dtype = a.device, a.dtype
        elif isinstance(a, str) and a.split(":")[0].strip().lower() in ("cpu", "cuda",
                                                                            "auto"):
            device = a
        elif type(a).__name__ == "Device":
            device = a
        else:
            dtype = a
    dtype = as_dtype(dtype)
    if dtype is not None and dtype.kind != "f":
        raise TypeError(f"Module.to() only casts to floating-point dtypes, got {dtype}")
    return device, dtype


def _move(t, backend, dtype):
    """Rebind ``t``'s array in place (same Tensor object) to another device/dtype."""
    array = t._data
    if backend is not None and backend is not t._backend:
        array = backend.asarray(t._backend.to_numpy(array))
        t._backend = backend
    if dtype is not None and array.dtype.kind == "f" and array.dtype != dtype:
        array = array.astype(dtype)
    if array is not t._data:
        t._data = array
        structure_version[0] += 1
        t._bump()


def _copy_into(target, value):
    """target[...] = value, moving the value to the target's device first if needed."""
    if isinstance(value, Tensor):
        src, be = value._data, value._backend
        if be is not target._backend:
            src = target._backend.asarray(be.to_numpy(src))
    else:
        src = target._backend.asarray(value)
    target._data[...] = src
    target._bump()


def settings_getter(names):
    """A reader of a module's attributes ``names`` as a tuple, at call time (a setting may
    be changed after construction); attrgetter does the reads in C."""
    if not names:
        return lambda module: ()
    if len(names) == 1:
        get = attrgetter(names[0])
        return lambda module: (get(module),)
    return attrgetter(*names)


class _Applies(Module):
    """A module whose forward is the function ``_fn`` applied to its input and its settings:
    the attributes named in ``_repr_settings``, which are the function's next parameters in
    order (``ELU``: ``elu(input, alpha)``)."""

    _fn = None
    _settings = staticmethod(settings_getter(()))

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._settings = staticmethod(settings_getter(cls._repr_settings))

    def forward(self, input):
        return self._fn(input, *self._settings(self))

