"""Containers: Sequential, ModuleList, ModuleDict."""
from __future__ import annotations

from collections import OrderedDict

from .module import Module


class _Indexed(Module):
    """What Sequential and ModuleList share: children named "0", "1", ... as they are
    appended, counted, iterated and indexed like a list."""

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return self._of_items(list(self._modules.items())[idx])
        return list(self._modules.values())[_index(idx, len(self))]


class Sequential(_Indexed):
    """Applies its modules in order: ``Sequential(Linear(2, 8), ReLU(), Linear(8, 1))``,
    or from an OrderedDict of name -> module. Children are named "0", "1", ... otherwise."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)
        self._refresh()

    def _refresh(self):
        # A tuple of the layers, so forward is a plain loop with no dict walk per call.
        self.__dict__["_layers"] = tuple(m for m in self._modules.values() if m is not None)

    def add_module(self, name, module):
        super().add_module(name, module)
        if "_layers" in self.__dict__:
            self._refresh()

    def forward(self, input):
        for layer in self._layers:
            input = layer(input)
        return input

    @staticmethod
    def _of_items(items):  # a slice keeps the children's names, as PyTorch's does
        return Sequential(OrderedDict(items))


class ModuleList(_Indexed):
    """A list of modules whose parameters are registered (a plain Python list would hide
    them from ``parameters()``)."""

    def __init__(self, modules=None):
        super().__init__()
        for m in modules or ():
            self.append(m)

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    @staticmethod
    def _of_items(items):  # a slice is numbered from 0 again, as PyTorch's is
        return ModuleList([m for _, m in items])

    def __setitem__(self, idx, module):
        self.add_module(str(_index(idx, len(self))), module)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList has no forward(); iterate over it instead")


class ModuleDict(Module):
    """A dict of name -> module whose parameters are registered."""

    def __init__(self, modules=None):
        super().__init__()
        for name, m in (modules or {}).items():
            self.add_module(name, m)

    def __getitem__(self, name):
        return self._modules[name]

    def __setitem__(self, name, module):
        self.add_module(name, module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, name):
        return name in self._modules

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()

    def values(self):
        return self._modules.values()

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict has no forward(); index it instead")


def _index(idx, n):
    idx = int(idx)
    if not -n <= idx < n:
        raise IndexError(f"index {idx} is out of range for a container of {n} modules")
    return idx % n
