"""The one interface every actuator implements (pageout, cold, migrate, swap_pages).

Apart from the implementations so that each of them (:mod:`.actuators`, :mod:`.swap_pages`)
imports the base from below, and :func:`etmem_scan.actuators.make_actuator` imports them all
without an import circle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import EngineError
from .machine import PAGE_SIZE

if TYPE_CHECKING:  # annotations only: the base class stays importable without numpy
    import numpy as np

__all__ = ["Actuator", "ActuatorError"]


class ActuatorError(EngineError):
    """An actuator could not act (bad argument, unsupported by the kernel, a refused call)."""


class Actuator:
    """The shape every actuator has: bound to roots at creation, given a pid per call."""

    #: a class attribute, or set per instance where one class serves two names (pageout/cold)
    name: str = ""

    def apply(self, pid: int, addrs: np.ndarray, sizes: int | np.ndarray = PAGE_SIZE):
        """Act on the pages ``addrs`` (page starts) of ``pid``, ``sizes`` bytes each."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the actuator holds (files). Idempotent."""

    def __enter__(self) -> Actuator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
