"""The oracle, registered as method "oracle": AFD's update weighted by a judge's exact score
(``afd.methods.oracle.OracleAFD``). It reads AFD's ``afd`` section and has none of its own; reports
list it as the reference row AFD's gain is read against, not as a baseline."""

from __future__ import annotations

from afd.methods.registry import MethodSpec, register

register(MethodSpec("oracle", "afd.methods.oracle:OracleAFD", reads="afd", reference=True, order=50))
