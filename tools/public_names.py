"""List the public class names that more than one class of gradlab answers to.

Walks gradlab's public namespaces at run time, from ``gradlab`` itself down every public
attribute that is one of its modules (gl.nn, gl.nn.functional, gl.functional, gl.optim,
gl.optim.lr_scheduler, gl.train, gl.data, gl.distributed, gl.utils.data, ...), and
collects each public class under its name. A name reached by two different class objects
is printed with where each is defined and where it is reachable; the exit status is 1
then, else 0.

    python tools/public_names.py
"""
from __future__ import annotations

import collections
import sys
import types


def public_classes(root=None):
    """{class name: {defining "module.qualname": [public paths it is reachable at]}}."""
    if root is None:
        import gradlab as root
    prefix = root.__name__
    found = collections.defaultdict(lambda: collections.defaultdict(list))
    seen, todo = set(), [(prefix, root)]
    while todo:
        path, module = todo.pop()
        if module.__name__ in seen:
            continue
        seen.add(module.__name__)
        for name, value in sorted(vars(module).items()):
            if name.startswith("_"):
                continue
            if isinstance(value, types.ModuleType):
                inside = value.__name__ == prefix or value.__name__.startswith(prefix + ".")
                if inside and not any(p.startswith("_") for p in value.__name__.split(".")):
                    todo.append((f"{path}.{name}", value))
            elif isinstance(value, type) and (value.__module__ or "").startswith(prefix):
                found[name][f"{value.__module__}.{value.__qualname__}"].append(
                    f"{path}.{name}")
    return found


def shared_names(root=None):
    """The entries of ``public_classes`` whose name more than one class answers to."""
    return {name: dict(defs) for name, defs in public_classes(root).items() if len(defs) > 1}


def main():
    shared = shared_names()
    for name, defs in sorted(shared.items()):
        print(f"{name}: {len(defs)} classes")
        for where, paths in sorted(defs.items()):
            print(f"  {where}  (as {', '.join(sorted(paths)[:3])}"
                  + (f" and {len(paths) - 3} more" if len(paths) > 3 else "") + ")")
    print(f"{len(shared)} public class name(s) shared" if shared
          else "no public class name is shared")
    return 1 if shared else 0


if __name__ == "__main__":
    sys.exit(main())
