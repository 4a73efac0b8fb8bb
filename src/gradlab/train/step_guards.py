"""What a compiled step's recording depends on outside its tensors, and how it is watched.

``gl.train.compile_step`` (train/compiled.py, whose docstring states the contract) replays
a recorded step without running its Python code, so two kinds of Python state decide
whether a replay is still right:

- what the step's own code *reads* (a loss weight in a closure, a module's setting, a
  global config dict): ``_read_places`` follows the step's code (forward, the loss, the
  methods, helpers and callables they name) and finds the places it reads by name;
  ``_numbers_read_by`` reads them at every call and ``_guarded`` says how each value is
  compared, so that a change records again; ``_modules_read_by`` finds the modules held
  there, whose settings the world signature compares;
- what the step's own code *changes* as it runs (a counter, a kept output, a draw from a
  random generator outside gradlab's ops): ``_StepState`` snapshots those places before a
  recording's pass and compares after it; a replay would not repeat such a change, so the
  step runs eagerly.
"""
from __future__ import annotations

import collections
import collections.abc
import dis
import enum
import functools
import operator
import random
import sys
import sysconfig
import threading
import types
import typing
import warnings

import numpy as np

from ..autograd.tensor import Tensor
from ..backend.generator import Generator
from ..backend.registry import random_restarts
from ..nn.module import Module

_SCALARS = (bool, int, float, str, type(None))
# The containers the guards look into: dicts (OrderedDict, defaultdict and Counter too),
# sequences (a namedtuple too), sets.
_SEQUENCES = (list, tuple, collections.deque)
_CONTAINERS = (dict, set, frozenset) + _SEQUENCES


def _setting(value):
    """A module attribute that can steer its forward: a scalar, or a tuple of scalars
    (``LayerNorm.normalized_shape``)."""
    if type(value) is tuple:
        return all(type(v) in _SCALARS for v in value)
    return type(value) in _SCALARS


# A module's own bookkeeping, which _world_signature compares apart (or, for the mode, not).
_MODULE_OWN = frozenset(("training", "_parameters", "_buffers", "_modules"))

_OTHER = object()  # stands for a value that is not a setting (a function, a list, ...)


class _Same:
    """A value that the step's code reads by name, compared by identity: a tensor (``==``
    on one is elementwise), a callable that is no plain function, any object that is no
    setting. Another one bound to that name must record again, as the recording holds, or
    baked in what it did with, the one it saw. (Modules and functions compare by identity
    as they are; what happens inside a module read this way is guarded with the model's
    modules: ``CompiledStep._modules``.)"""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other):
        return type(other) is _Same and other.obj is self.obj

    __hash__ = None


def _setting_value(value, budget=None, held=False):
    """A setting as it is compared from call to call (``_setting``, a NumPy number, a
    container of settings), or _OTHER. (``budget``, ``held``: _container_value's.)"""
    if _setting(value):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        # np.float64(0.3) is a setting too (a value from np.linspace), and its type decides
        # how it promotes in an op, which equality with 0.3 does not see.
        return (type(value), value)
    # Other values that steer what forward does: x[:, self.cols], .to(self.dtype), a mode
    # as an Enum member (by value); a NumPy array that forward wraps (gl.tensor(self.offset)
    # copies it into the recording) by identity, so one assigned anew records again.
    if type(value) is slice:  # (unhashable before Python 3.12: compared as its parts)
        parts = (value.start, value.stop, value.step)
        return (slice, parts) if _setting(parts) else _OTHER
    if isinstance(value, (np.dtype, enum.Enum)) or (
            isinstance(value, type) and issubclass(value, np.generic)):
        return (type(value), value)
    if isinstance(value, np.ndarray):
        return _Same(value)
    return _container_value(value, budget, held)


# Where installed library code lives (the standard library, site-packages): its functions'
# globals and its classes' instances are not the step's settings.
_LIBRARIES = tuple({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib",
                                                       "platlib")})


# Entries in all, nested ones included, beyond which a container is data, not settings: it
# is compared at every call, which costs about 0.1-0.3 us an entry.
_CONTAINER_ITEMS = 32


def _container_value(value, budget=None, held=False):
    """A dict, list or tuple of settings (a config dict, a list of dropout rates, nested up
    to three deep; _CONTAINER_ITEMS entries in all), or an object holding them as
    attributes (``_config_object``), by value, as _Frozen, or _OTHER: a
    recording bakes in what forward read from it, and an entry changed in place has no
    __setattr__ to tell. With ``held`` (a container the step's code reads by name), the
    entries that are no settings (tensors, modules, callables, other objects) compare by
    identity (_Same), else they make it _OTHER. ``budget``: [entries left, levels left],
    shared with the containers it is nested in."""
    kind = type(value)
    if isinstance(value, (dict, *_SEQUENCES)):
        d = value
    elif isinstance(value, (set, frozenset)):  # (of scalars only: by value, unordered)
        if len(value) > _CONTAINER_ITEMS or not all(type(v) in _SCALARS for v in value):
            return _OTHER
        return _Frozen((kind, frozenset(value)))
    elif _config_object(value):
        d = _settings_of(value)
    else:
        return _OTHER
    if budget is None:
        budget = [_CONTAINER_ITEMS, 3]
    budget[0] -= len(d)
    if budget[0] < 0 or budget[1] == 0:
        return _OTHER
    budget[1] -= 1
    frozen = [kind]
    for k, v in (d.items() if isinstance(d, dict) else enumerate(d)):
        if type(v) not in _SCALARS:
            entry = v
            v = _setting_value(v, budget, held)
            if v is _OTHER:
                # (a criterion in {"ce": nn.CrossEntropyLoss()}, a tensor, a function, a
                # Path beside the settings of a config dict: the one the recording saw)
                if not held:
                    return _OTHER
                v = _Same(entry)
        if type(k) not in _SCALARS:
            return _OTHER
        frozen.append((k, v))
    budget[1] += 1
    return _Frozen(frozen)


def _config_object(value):
    """An object that may hold settings as attributes, with a plain ``__dict__`` or
    ``__slots__``: a ``types.SimpleNamespace``, a dataclass instance (``slots=True`` too),
    or an instance of a class of your own (``self.opts = Options()``; not a module, a
    tensor or a callable, guarded otherwise)."""
    kind = type(value)
    if type(_attributes(value)) is not dict and not _slots(kind):
        return False
    if kind is types.SimpleNamespace or hasattr(kind, "__dataclass_fields__"):
        return True
    try:
        return not isinstance(value, (Module, Tensor, type, types.ModuleType)) and \
            not callable(value) and _own_class(kind)
    except Exception:  # noqa: BLE001 - an odd object (a __class__ that raises): none of these
        return False


_SLOTS = {}  # class -> the names its __slots__ (and its bases') declare


def _slots(kind):
    """The attribute names that the ``__slots__`` of ``kind`` and its bases declare."""
    found = _SLOTS.get(kind)
    if found is None:
        found = []
        for k in kind.__mro__:
            declared = k.__dict__.get("__slots__") or ()
            found += [n for n in ((declared,) if isinstance(declared, str) else declared)
                      if n not in ("__dict__", "__weakref__")]
        found = _SLOTS[kind] = tuple(found)
    return found


def _settings_of(value):
    """A settings object's attributes as a dict: its ``__dict__``, or its slots' values."""
    d = _attributes(value)
    if type(d) is dict:
        return d
    found = {n: _attribute(value, n, _OTHER) for n in _slots(type(value))}
    return {n: v for n, v in found.items() if v is not _OTHER}  # (a slot never set: none)


def _own_class(kind):
    """Whether ``kind`` is defined in a Python module of your own (``_own_module_dict``)."""
    return _own_module_dict(sys.modules.get(kind.__module__)) is not None


def _changeable(value, depth=3):
    """Whether ``value`` can hold settings that change in place (read at every call)."""
    if isinstance(value, tuple):
        return depth > 0 and any(_changeable(v, depth - 1) for v in value)
    return isinstance(value, _CONTAINERS) or _config_object(value)


class _Frozen(tuple):
    """A container's contents as _container_value read them, led by its type. (Its own
    class: so _StepState knows to compare it by value.)"""

    __slots__ = ()


def _guarded(value):
    """How a value that the step's code reads by name is compared from call to call."""
    # A module or function compares by identity as it is (and tuple equality tries `is`
    # first, in C): cheaper than a _Same at every call. (Tested first: at every call.)
    try:
        if isinstance(value, (Module, types.FunctionType)):
            return value
        if isinstance(value, Tensor):
            return _Same(value)
        v = _setting_value(value, held=True)
    except Exception:  # noqa: BLE001 - an odd object (a __class__ that raises)
        v = _OTHER
    # Anything else by identity: another object bound to the name (a functools.partial
    # with other keywords, a new callable object, a library object) must record again.
    return _Same(value) if v is _OTHER else v


class _Places(typing.NamedTuple):
    """What ``_read_places`` finds: ``cells`` (closure cells), ``names`` ((namespace, name)
    pairs), ``attrs`` ((dict, keys) pairs), the places the step's code reads by name;
    ``used``, every name the code followed loads (attributes included); ``cell_labels``,
    how a message names each cell; ``dynamic``, whether it reads attributes by names it
    computes (getattr(self, name), vars(self)). An attribute that the code never names is
    none of the step's (unless it is dynamic): the training loop may keep anything on the
    loss's object or the model (a progress bar, the last batch, a history of losses)."""

    cells: list
    names: list
    attrs: list
    used: set
    cell_labels: list
    dynamic: bool

    def labels(self):
        """How a message names each value ``_read_values`` reads, in its order."""
        out = list(self.cell_labels)
        out += [f"the global {n!r}" for _, n in self.names]
        return out + [k if type(k) is str and k.startswith(_DEFAULT) else f"attribute {k!r}"
                      for _, keys in self.attrs for k in keys]


# Names whose use means that the code may read attributes it does not name: where the code
# followed uses one, every attribute counts as read and every method of its classes as run.
_DYNAMIC = frozenset(("getattr", "vars", "__dict__", "attrgetter", "methodcaller", "exec",
                      "eval", "__getattribute__"))


def _read_places(loss_fn, modules):
    """The ``_Places`` that the step's own Python code reads: ``loss_fn``'s (through a
    ``functools.partial``: its function's, and its bound arguments), those of ``forward``
    of each module class defined outside gradlab and of the methods, properties and
    callables kept on a module (or in a dict or list there) that it names, with the
    class's own settings, and those of the functions, callable objects and objects of
    your own that these hold in their closures (the loss that ``fit``'s wrapper calls),
    read as globals (a helper of ``forward``, a class whose method it calls) or keep on a
    module (self.policy.apply(h)), and the methods of those objects' classes that the
    code names, in turn."""
    cells, names, attrs = [], [], []
    functions = []
    owners = []  # the attribute dicts of the objects whose code is followed
    classes = {}  # id -> a class of your own whose settings are read and methods followed
    methods = {}  # name -> the functions of those classes (and kept on modules) so named
    used = set()  # the attribute (and global) names that the code followed loads
    todo = [] if isinstance(loss_fn, Module) else [loss_fn]

    def add_class(kind, modules_class=False):
        # (a module class from an installed library too: its settings, not its code)
        for k in kind.__mro__:
            if id(k) in classes or k is object or \
                    k.__module__.startswith(("gradlab.", "builtins")) or \
                    not modules_class and not _own_class(k):
                continue
            classes[id(k)] = k
            for n, v in vars(k).items():
                found = _functions_of(v)
                if found:
                    methods.setdefault(n, []).extend(found)
                    # (__getattr__ answers for attributes no code names: self.scale
                    # looked up in self.opts)
                    if n in used or n in ("__getattr__", "__getattribute__"):
                        todo.extend(found)
                elif isinstance(v, type) and _own_class(v):  # a nested class: self.Inner.f
                    add_class(v)

    for m in modules:
        add_class(type(m), modules_class=True)
    for m in modules:  # (code of your own kept on a module: self.act = my_activation, a
        #                  callable object, a functools.partial, a bound method)
        for n, v in m.__dict__.items():
            if _followed(v):
                methods.setdefault(n, []).append(v)
            elif isinstance(v, _CONTAINERS) and len(v) <= _CONTAINER_ITEMS:
                found = [f for f in (v.values() if isinstance(v, dict) else v)
                         if _followed(f)]  # (self.ops = {"act": lambda h: ...})
                methods.setdefault(n, []).extend(found)
            elif _config_object(v):  # an object of your own: self.policy.apply(h)
                add_class(type(v))
                if type(_attributes(v)) is dict:
                    owners.append(vars(v))
    todo += methods.get("forward", ())
    seen = set()
    dynamic = False
    while True:
        while todo:
            fn = todo.pop()
            if id(fn) in seen:
                continue
            seen.add(id(fn))
            if isinstance(fn, functools.partial):
                # Its bound arguments are read at every call (keywords: a dict, may change).
                attrs += [(fn.keywords, list(fn.keywords)), (dict(enumerate(fn.args)),
                                                             list(range(len(fn.args))))]
                if _followed(fn.func):
                    todo.append(fn.func)
                continue
            owner = None
            if isinstance(fn, types.MethodType):
                fn, owner = fn.__func__, fn.__self__
            elif isinstance(fn, (operator.attrgetter, operator.methodcaller)):
                dynamic = True  # (attributes named by strings built at run time)
                continue
            elif not isinstance(fn, types.FunctionType):
                owner, fn = fn, type(fn).__call__  # (compile_step checked it is callable)
            functions.append(fn)
            if owner is not None and not isinstance(owner, Module) and \
                    type(_attributes(owner)) is dict:
                owners.append(owner.__dict__)
                add_class(type(owner))  # (self.penalty(out) reading self.beta)
            if not isinstance(fn, types.FunctionType):
                continue
            # State kept on the function: a mutable default (def forward(self, x, seen=[]))
            # and the function's own attributes (forward.calls).
            held = {f"{_DEFAULT}{n!r} in {fn.__qualname__}()": v
                    for n, v in _defaults(fn) if _changeable(v)}
            if held:
                attrs.append((held, list(held)))
            if fn.__dict__:
                owners.append(fn.__dict__)
            todo += [v for v in map(_cell_value, fn.__closure__ or ()) if _own_callable(v)]
            # Helpers of your own that it calls by name, and their globals in turn
            # (library code is left out: its globals are not settings of the step), and
            # classes of your own whose methods it calls (Helper.compute(self, h)).
            for d, n in _global_places(fn):
                v = d[n]
                if _followed(v):
                    todo.append(v)
                elif isinstance(v, type) and _own_class(v):
                    add_class(v)
            named = _names_used(fn.__code__)
            used.update(named)
            dynamic = dynamic or not _DYNAMIC.isdisjoint(named)
            todo += [f for n in named for f in methods.get(n, ())]
        if not dynamic or all(id(f) in seen for fs in methods.values() for f in fs):
            break
        # getattr(self, name), vars(self), exec: what the code runs or reads cannot be told
        # by name, so all of it is followed and read.
        todo = [f for fs in methods.values() for f in fs]
    for k in classes.values():
        # A setting kept on a class of your own (Scaled.factor = 3.0, read as self.factor):
        # no module's __setattr__ sees it change. (Private ones where the code names them.)
        d = vars(k)
        attrs.append((d, [n for n, v in d.items() if not n.startswith("__") and (
            n[0] != "_" or n in used or dynamic) and (
            _setting_value(v) is not _OTHER or isinstance(v, (Tensor, Module)))]))
    for d in {id(d): d for d in owners}.values():
        # The attributes the code names (self.beta, self._beta, forward.calls), by name.
        named = sorted(k for k in d if type(k) is str and (dynamic or k in used))
        if named:
            attrs.append((d, named))
    for m in modules:
        # A module's containers of settings that the code followed reads (self.cfg["p"]):
        # an entry changed in place has no __setattr__ to tell, so they are read at every
        # call. (Not the others: a history list that the training loop appends to.)
        d = m.__dict__
        held = [n for n in sorted(k for k in d if dynamic or k in used) if _changeable(d[n])
                and _setting_value(d[n]) is not _OTHER]
        if held:
            attrs.append((d, held))
    places = {}
    cell_labels = []
    for fn in {id(f): f for f in functions}.values():
        if isinstance(fn, types.FunctionType):
            cells += fn.__closure__ or ()
            cell_labels += [f"{n!r} in the closure of {fn.__qualname__}"
                            for n in fn.__code__.co_freevars[:len(fn.__closure__ or ())]]
            # (A name bound to a Python module or a class, such as np or gl, is no setting:
            # not read at every call; one that two functions read is read once.)
            places.update(((id(d), n), (d, n)) for d, n in _global_places(fn)
                          if not isinstance(d[n], (types.ModuleType, type)))
    names += places.values()
    return _Places(cells, names, attrs, used, cell_labels, dynamic)


def _attributes(value):
    """``value.__dict__``, or None where it has none (or an odd object raises for it)."""
    return _attribute(value, "__dict__")


def _attribute(value, name, default=None):
    """``getattr(value, name, default)``, ``default`` too where an odd object raises for it
    (a ``__getattr__`` of the user's that looks names up in a dict: KeyError)."""
    try:
        return getattr(value, name, default)
    except Exception:  # noqa: BLE001 - a __getattr__ or property of the user's that raises
        return default


_DEFAULT = "the default of "  # (how _StepState names a mutable default argument)


def _defaults(fn):
    """(parameter name, default value) pairs of a function's arguments."""
    code = fn.__code__
    positional = code.co_varnames[:code.co_argcount]
    found = list(zip(positional[len(positional) - len(fn.__defaults__ or ()):],
                     fn.__defaults__ or ()))
    return found + list((fn.__kwdefaults__ or {}).items())


def _accessors(value):
    """The functions behind a class attribute: a method, a static or class method, a
    property's accessors."""
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    found = [value.fget, value.fset, value.fdel] if isinstance(value, property) else [value]
    return [f for f in found if isinstance(f, types.FunctionType)]


def _functions_of(value):
    """The functions of your own behind a class attribute: ``_accessors``'s, or the function
    that a decorator object of your own wraps (``__wrapped__``, or kept among its
    attributes)."""
    found = _accessors(value)
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if not found and not isinstance(value, property):
        held = _attributes(value)
        found = [_attribute(value, "__wrapped__")]
        if type(held) is dict and _own_class(type(value)):
            found += held.values()
    return [f for f in found if isinstance(f, types.FunctionType) and not _library_code(f)]


_CLASS_NAMES = {}  # module class -> the names its methods (all of its MRO's) use


def _class_names(kind):
    """Every name that the methods, properties and static or class methods of ``kind`` and
    its bases use (``_names_used``), gradlab's own classes' included, and the names in
    its tuples of names (``_args``)."""
    found = _CLASS_NAMES.get(kind)
    if found is None:
        found = set()
        for k in kind.__mro__:
            for v in vars(k).values():
                if type(v) is tuple and all(type(e) is str for e in v):
                    found |= set(v)  # (names read with attrgetter: a loss's _args)
                    continue
                for f in _accessors(v):
                    found |= _names_used(f.__code__)
        found = _CLASS_NAMES[kind] = frozenset(found)
    return found


_NAMES_USED = {}  # code object -> the names it (and the code nested in it) uses


def _names_used(code):
    """Every name ``code`` uses (globals, attributes, methods): co_names, nested code's too,
    and the strings among its constants that could name an attribute."""
    found = _NAMES_USED.get(code)
    if found is None:
        found = set(code.co_names)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                found |= _names_used(const)
            elif isinstance(const, str) and const.isidentifier():  # getattr(self, "beta")
                found.add(const)
        found = _NAMES_USED[code] = frozenset(found)
    return found


def _followed(value):
    """Whether ``value`` is code of your own that the guards follow when the step's code
    names it: a function, method or callable object (``_own_callable``) that is not
    installed library code."""
    return _own_callable(value) and not _library_code(value)


def _library_code(fn):
    """Whether ``fn`` (a function, or a callable object) is installed library code: the
    standard library's, or a site-packages package's."""
    if isinstance(fn, types.MethodType):
        fn = fn.__func__
    elif not isinstance(fn, types.FunctionType):
        fn = type(fn).__call__  # (a slot wrapper, with no __code__, for a C type)
    code = getattr(fn, "__code__", None)
    return code is not None and code.co_filename.startswith(_LIBRARIES)


_GLOBALS_READ = {}  # code object -> the global names it (and the code nested in it) reads


def _globals_read(code):
    """(names, (name, attribute) pairs) that ``code`` loads (or stores) as globals: the names
    are not all of ``co_names``, which holds attribute names too (``self.out`` would guard a
    global ``out``); a pair is a global's attribute read at once (``config.BETA``,
    ``utils.scale(h)``), which matters where the global is a Python module of your own."""
    found = _GLOBALS_READ.get(code)
    if found is None:
        names, pairs = set(), set()
        last = None  # the global just loaded, if the next instruction reads its attribute
        for ins in dis.get_instructions(code):
            if ins.opname in ("LOAD_ATTR", "LOAD_METHOD") and last is not None:
                pairs.add((last, ins.argval))
            last = None
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                names.add(ins.argval)
                last = ins.argval
            elif ins.opname == "STORE_GLOBAL":  # (`global n; n = out`: _StepState sees it)
                names.add(ins.argval)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):  # a lambda or comprehension inside
                inner = _globals_read(const)
                names.update(inner[0])
                pairs.update(inner[1])
        found = _GLOBALS_READ[code] = (sorted(names), sorted(pairs))
    return found


def _own_module_dict(value):
    """The namespace of a Python module of your own (not gradlab's, nor installed library
    code, nor a built-in one), or None."""
    if not isinstance(value, types.ModuleType) or value.__name__.split(".")[0] == "gradlab":
        return None
    where = getattr(value, "__file__", None)
    if where is None and value.__name__ == "__main__":
        return vars(value)  # (a notebook's or an interactive session's: no file)
    return None if not isinstance(where, str) or where.startswith(_LIBRARIES) else vars(value)


def _global_places(fn):
    """(namespace, name) pairs that ``fn`` reads as globals, a module of your own's
    attributes (``config.BETA``) included."""
    glob = fn.__globals__
    names, pairs = _globals_read(fn.__code__)
    places = [(glob, n) for n in names if n in glob]
    for n, attr in pairs:
        d = _own_module_dict(glob.get(n))
        if d is not None and attr in d:
            places.append((d, attr))
    return places


def _own_callable(value):
    """A function, method or callable object defined outside gradlab (not a module, which
    is guarded as one, nor a class)."""
    if isinstance(value, (type, Module)) or not callable(value):
        return False
    if isinstance(value, (types.FunctionType, types.MethodType)):
        where = getattr(value, "__module__", None)
    else:
        where = type(value).__module__
    return isinstance(where, str) and not where.startswith(("gradlab.", "builtins"))


def _cell_value(cell):
    try:
        return cell.cell_contents
    except ValueError:  # a cell not assigned yet
        return _OTHER


def _read_values(cells, names, attrs):
    """The values in the places the step's code reads by name, as they are now."""
    values = [_cell_value(cell) for cell in cells]
    values += [glob.get(n, _OTHER) for glob, n in names]
    for d, keys in attrs:
        values += [d.get(k, _OTHER) for k in keys]
    return values


def _modules_read_by(loss_fn, modules):
    """The modules, beyond ``modules``, that ``loss_fn`` and the modules' own ``forward``
    code read by name (a ``CrossEntropyLoss`` in a loss lambda's closure, a module kept in
    a global, or in a dict of criteria there: ``_modules_in``), with their submodules, and
    those that these read in turn."""
    seen = {id(m) for m in modules}
    found = []
    while True:
        new = []
        places = _read_places(loss_fn, modules + found)
        values = _read_values(places.cells, places.names, places.attrs)
        # (and a module's attributes that the code names: self.layers = [nn.Linear(...)],
        # a plain list, not registered, so model.modules() leaves its modules out)
        values += [m.__dict__[k] for m in modules + found
                   for k in places.used.intersection(m.__dict__) if k not in _MODULE_OWN]
        for v in values:
            for held in _modules_in(v):
                for m in held.modules():
                    if id(m) not in seen:
                        seen.add(id(m))
                        new.append(m)
        if not new:
            return found
        found += new


def _modules_in(value, depth=3, budget=None):
    """The modules that ``value`` is or holds in a container or as a settings object's
    attribute (``{"ce": nn.CrossEntropyLoss()}``), ``depth`` levels deep. A container of
    over _CONTAINER_ITEMS * 4 entries is data, not looked into (its siblings are), and
    _CONTAINER_ITEMS * 64 entries in all are looked at, at most."""
    if type(value) in _SCALARS:
        return []
    try:
        if isinstance(value, Module):
            return [value]
        if depth == 0 or not isinstance(value, _CONTAINERS) and not _config_object(value):
            return []
        items = value.values() if isinstance(value, dict) else \
            _settings_of(value).values() if not isinstance(value, _CONTAINERS) else value
        if budget is None:
            budget = [_CONTAINER_ITEMS * 64]
        if len(items) > _CONTAINER_ITEMS * 4 or budget[0] < len(items):
            return []
        budget[0] -= len(items)
        return [m for v in list(items) for m in _modules_in(v, depth - 1, budget)]
    except Exception:  # noqa: BLE001 - an odd object of the user's: holds no module we know
        return []


def _numbers_read_by(loss_fn, modules):
    """``numbers()``: what the step's own Python code reads outside its tensor arguments,
    as it is now (``_guarded``): the Python and NumPy numbers (and strings, bools, None,
    and containers of these), which a recording bakes in (``alpha * penalty`` records
    alpha's value), and the tensors, modules and functions read by name, which it holds; a
    change must record again. They are read where ``_read_places`` looks. (Modules' own
    settings are guarded with the modules, their containers of settings here too.) Values
    read elsewhere (two dots away, ``config.loss.BETA``) are not seen: ``reset()``."""
    places = _read_places(loss_fn, modules)
    cells, names, attrs = places[:3]
    if not cells and not names and not attrs:
        return tuple, places

    def numbers():
        return tuple([_guarded(v) for v in _read_values(cells, names, attrs)])
    return numbers, places


class _StepState:
    """The Python state that the step's own code could change as it runs, seen before the
    recording's forward pass (and, apart, before its backward), to tell afterwards whether
    the pass changed it: a replay runs no Python code, so it would not. Looked at: every
    attribute of the step's modules (a counter ``self._calls += 1``, an output kept as
    ``self._last = out``, a buffer rebound), the places ``_read_places`` finds (closure
    variables, globals read by name, a loss object's attributes, a module class's
    settings, mutable defaults and function attributes), and the random generators outside
    gradlab's ops: Python's and NumPy's global ones (another thread's draws from them count
    too), and any ``random.Random``, NumPy ``Generator`` or ``RandomState`` or
    ``gl.Generator`` found among those values (``random.random() < p`` in forward would
    repeat the recording's draw at every replay)."""

    __slots__ = ("_places", "_values", "_rngs", "_states", "_raw", "_restarts")

    def __init__(self, modules, loss_fn):
        cells, names, attrs = _read_places(loss_fn, modules)[:3]
        places = []  # (how a message names it, a zero-argument reader of its value now)
        for m in modules:
            d, kind = m.__dict__, type(m).__name__
            places.append((f"{kind}'s attributes", lambda d=d: tuple(d)))
            places += [(f"{kind}.{k}", lambda d=d, k=k: d.get(k, _OTHER)) for k in d]
            for group in ("_parameters", "_buffers", "_modules"):
                g = d[group]
                places += [(f"{kind}.{k}", lambda g=g, k=k: g.get(k, _OTHER)) for k in g]
        places += [("a variable in a closure of the step's code",
                    lambda c=c: _cell_value(c)) for c in cells]
        places += [(f"the global {n!r}", lambda g=g, n=n: g.get(n, _OTHER)) for g, n in names]
        for d, _ in attrs:
            places += [(k if type(k) is str and k.startswith(_DEFAULT) else
                        f"attribute {k!r} of the loss, a function or a module class",
                        lambda d=d, k=k: d.get(k, _OTHER)) for k in list(d)]
        self._places = places
        now = [read() for _, read in places]
        self._values = [_snapshot(v) for v in now]
        # (A dict or list of generators too. SystemRandom has no state: it cannot repeat a
        # draw, nor be replayed wrongly.)
        now += [v for c in now if isinstance(c, _CONTAINERS)
                for v in (c.values() if isinstance(c, dict) else c)]
        rngs = {id(r): r for r in now if isinstance(r, _RNG_TYPES)
                and not isinstance(r, random.SystemRandom)}
        # The global generators are every thread's: another Python thread's draws (a
        # loader's noise) look like the step's. Not told apart: a step that does draw from
        # them must not replay, and such a loader is better off with a generator of its own.
        rngs[id(random)] = random  # (the module stands for its global generator)
        rngs[id(np.random)] = np.random
        self._rngs = list(rngs.values())
        self._states = [_rng_state(r) for r in self._rngs]
        self._raw = [r.get_state() if isinstance(r, Generator) else None for r in self._rngs]
        self._restarts = random_restarts()

    def reseeded(self):
        """Whether a gradlab random stream restarted since ``__init__`` (``gl.manual_seed``,
        a Generator's ``manual_seed`` or ``set_state``), which a replay would not do."""
        return random_restarts() != self._restarts

    def changed(self, drawn_by_ops=None):
        """Why a replay could not repeat the pass since ``__init__``, or None.
        ``drawn_by_ops``: {id of a gl.Generator: [(backend, Draw kwargs)]}, the draws that
        the pass's ops made from it (``gl.rand(..., generator=g)``), which a replay makes
        again: such a generator must stand where those draws alone would have left it."""
        for (where, read), before in zip(self._places, self._values):
            now = _snapshot(read())
            if now is not before and not (type(now) is type(before) and (
                    _setting(now) or type(now) in (_Frozen, _Entries)) and now == before):
                return (f"the step's Python code changes {where} as it runs (a counter, a "
                        f"value kept for later, a lazy set-up done at every call); a replay "
                        f"runs no Python code and would not. Keep such state in a tensor "
                        f"updated in place, or change it outside the step")
        for r, before, raw in zip(self._rngs, self._states, self._raw):
            if raw is not None and drawn_by_ops and id(r) in drawn_by_ops:
                before = _after_draws(raw, drawn_by_ops[id(r)])
            if _rng_state(r) != before:
                name = "gl.Generator, in Python" if isinstance(r, Generator) else \
                    getattr(r, "__name__", None) or type(r).__name__
                threads = ""
                if r in (random, np.random) and threading.active_count() > 1:
                    threads = (f" (or another thread drew from {name}'s global generator "
                               f"meanwhile: give that thread a generator of its own, "
                               f"np.random.default_rng())")
                return (f"the step draws from a random generator outside gradlab's ops "
                        f"({name}){threads}; a replay would repeat the recording's draws. "
                        f"Draw with gradlab's ops (gl.rand, dropout, generator= too), whose "
                        f"streams a replay advances")
        return None


_RNG_TYPES = (random.Random, np.random.Generator, np.random.RandomState, Generator)

# A NumPy array the step reads is compared by its contents up to this size (two copies per
# recording), by identity beyond.
_ARRAY_CONTENTS = 1 << 24


def _snapshot(value):
    """A value as _StepState compares it: a setting by value (as _Frozen, where it is not a
    scalar that compares as it is: np.int64(4) assigned anew is no change, nor an entry of
    a dict that is the same), another container with its entries by identity (a tensor
    appended to a list of activations, a key added to a defaultdict), a NumPy array by its
    contents (``self.calls += 1`` on one changes it in place), an iterator, generator or
    coroutine by where it stands (``next(self.schedule)`` in forward advances it), anything
    else by identity."""
    if type(value) is np.ndarray and value.nbytes <= _ARRAY_CONTENTS:
        return _Frozen((np.ndarray, value.dtype.str, value.shape, value.tobytes()))
    v = _setting_value(value)
    if v is _OTHER:
        if isinstance(value, _CONTAINERS):
            return _Entries(value)
        if isinstance(value, collections.abc.Iterator) or \
                isinstance(value, (types.GeneratorType, types.CoroutineType)):
            return _Frozen((type(value), _where_it_stands(value)))
        return value
    if v is value:
        return value
    return v if type(v) is _Frozen else _Frozen((v,))


def _where_it_stands(it, depth=3):
    """A comparable account of where an iterator stands: a generator's or coroutine's frame
    (the instruction it waits at, its locals by identity, and the iterator it delegates to
    with ``yield from``), another iterator's pickling state (``__reduce__``:
    itertools.cycle, iter(list), a count), its own identity where it has none."""
    if isinstance(it, (types.GeneratorType, types.CoroutineType)):
        frame = getattr(it, "gi_frame", None) or getattr(it, "cr_frame", None)
        inner = getattr(it, "gi_yieldfrom", None) or getattr(it, "cr_await", None)
        return None if frame is None else (
            frame.f_lasti, tuple(map(id, frame.f_locals.values())),
            None if inner is None or depth == 0 else _where_it_stands(inner, depth - 1))
    if depth == 0:
        return id(it)
    try:
        with warnings.catch_warnings():  # (itertools' pickling is deprecated from 3.12)
            warnings.simplefilter("ignore", DeprecationWarning)
            reduced = it.__reduce__()
    except Exception:  # noqa: BLE001 - no state to read: by identity
        return id(it)
    return _reduced(reduced, depth - 1)


def _reduced(value, depth):
    if type(value) in _SCALARS or isinstance(value, type):
        return value
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(_reduced(v, depth) for v in value[:_CONTAINER_ITEMS * 4]),
                len(value))
    if isinstance(value, collections.abc.Iterator):
        return _where_it_stands(value, depth)
    return id(value)


class _Entries:
    """A container's entries at one moment, compared by identity (``==`` on a tensor
    entry would be elementwise)."""

    __slots__ = ("kind", "keys", "items")

    def __init__(self, container):
        self.kind = type(container)
        mapping = isinstance(container, dict)
        self.keys = tuple(container) if mapping else len(container)
        self.items = list(container.values() if mapping else container)

    def __eq__(self, other):
        return (type(other) is _Entries and self.kind is other.kind and
                self.keys == other.keys and len(self.items) == len(other.items) and
                all(a is b for a, b in zip(self.items, other.items)))

    __hash__ = None


def _after_draws(state, draws):
    """The comparable state of a gl.Generator that was at ``state`` once ``draws`` ((backend,
    Draw kwargs) pairs) are made from it, computed on a copy."""
    copy = np.random.Generator(np.random.PCG64())
    copy.bit_generator.state = state
    for backend, kw in draws:
        backend.draw(kw["kind"], kw["size"], kw["dtype"], copy, kw.get("low", 0),
                     kw.get("high"))
    return _comparable(copy.bit_generator.state)


def _rng_state(rng):
    """A random generator's state as a comparable value."""
    if rng is random or isinstance(rng, random.Random):
        return rng.getstate()
    if rng is np.random or isinstance(rng, np.random.RandomState):
        return _comparable(rng.get_state(legacy=False))
    if isinstance(rng, Generator):
        return _comparable(rng.get_state())
    return _comparable(rng.bit_generator.state)


def _comparable(state):
    """A NumPy bit generator's state (a dict of numbers and arrays) as a tuple."""
    if isinstance(state, dict):
        return tuple((k, _comparable(v)) for k, v in state.items())
    if isinstance(state, np.ndarray):
        return (state.dtype.str, state.tobytes())
    return state

