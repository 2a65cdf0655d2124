"""Containers: Sequential (a pipeline of modules) and ModuleList (a registered list)."""

from __future__ import annotations

from collections import OrderedDict

from ..module import Module


def _index(idx, length: int, where: str) -> int:
    if not isinstance(idx, int) or isinstance(idx, bool):
        raise TypeError(f"{where} indices must be integers or slices, not {type(idx).__name__}")
    if not -length <= idx < length:
        raise IndexError(f"{where} index {idx} is out of range for length {length}")
    return idx % length


def _require_module(value, where: str, position) -> Module:
    if not isinstance(value, Module):
        raise TypeError(f"{where}: element {position} is a {type(value).__name__}, not an nn.Module")
    return value


class _IndexedModules(Module):
    """Shared list behaviour: children named "0", "1", ... renumbered after deletion or insertion."""

    def _renumber(self, modules) -> None:
        self._modules.clear()
        for i, m in enumerate(modules):
            self._modules[str(i)] = m

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def _values(self) -> list:
        return list(self._modules.values())

    def __delitem__(self, idx) -> None:
        values = self._values()
        if isinstance(idx, slice):
            del values[idx]
        else:
            del values[_index(idx, len(values), type(self).__name__)]
        self._renumber(values)

    def append(self, module):
        self.add_module(str(len(self)), _require_module(module, f"{type(self).__name__}.append", len(self)))
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module) -> None:
        values = self._values()
        values.insert(index, _require_module(module, f"{type(self).__name__}.insert", index))
        self._renumber(values)

    def __dir__(self):
        return [k for k in super().__dir__() if not k.isdigit()]


class Sequential(_IndexedModules):
    """Runs its modules in order, each on the previous one's output.

    ``Sequential(m0, m1, ...)`` names the children "0", "1", ... (state_dict keys ``0.weight``);
    ``Sequential(OrderedDict([("conv", m0), ...]))`` names them explicitly.
    """

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], (dict, OrderedDict)):
            for name, m in args[0].items():
                self.add_module(name, _require_module(m, "Sequential", repr(name)))
        else:
            for i, m in enumerate(args):
                self.add_module(str(i), _require_module(m, "Sequential", i))

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return Sequential(OrderedDict(list(self._modules.items())[idx]))
        keys = list(self._modules)
        return self._modules[keys[_index(idx, len(keys), "Sequential")]]

    def __setitem__(self, idx, module) -> None:
        keys = list(self._modules)
        key = keys[_index(idx, len(keys), "Sequential")]
        self._modules[key] = _require_module(module, "Sequential", idx)

    def __add__(self, other):
        if not isinstance(other, Sequential):
            raise TypeError(f"Sequential + {type(other).__name__}: only another Sequential can be added")
        return Sequential(*self, *other)

    def forward(self, input):
        for module in self._modules.values():
            input = module(input)
        return input


class ModuleList(_IndexedModules):
    """A list of modules whose parameters the owner registers (no forward of its own)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ModuleList(self._values()[idx])
        return self._values()[_index(idx, len(self), "ModuleList")]

    def __setitem__(self, idx, module) -> None:
        key = str(_index(idx, len(self), "ModuleList"))
        self._modules[key] = _require_module(module, "ModuleList", idx)

    def __iadd__(self, modules):
        return self.extend(modules)

    def __add__(self, other):
        return ModuleList(self._values() + list(other))

    def forward(self, *args, **kwargs):
        raise TypeError("ModuleList has no forward(): iterate over it and call its modules")
