"""The chance control, registered as method "chance": AFD's update with random weights
(``afd.methods.chance.ChanceAFD``). Like the oracle it reads AFD's ``afd`` section and is a
reference row, not a baseline."""

from __future__ import annotations

from afd.methods.registry import MethodSpec, register

register(MethodSpec("chance", "afd.methods.chance:ChanceAFD", reads="afd", reference=True, order=55))
