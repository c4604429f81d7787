"""Where a check runs: the element axis split over devices with ``jax.sharding``.

Elements are padded to a multiple of ``shards · chunk`` (repeats of the first element, dropped
afterwards) and placed one part per device (``NamedSharding`` over a one-axis ``Mesh``);
everything else is replicated, and XLA's SPMD partitioner splits the one program accordingly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["Placement", "as_devices"]


def as_devices(devices: Sequence[Any] | None) -> list[Any]:
    """The devices to use: ``jax.devices()`` by default; a one-line error for anything else."""
    if devices is None:
        return jax.devices()
    found = list(devices) if isinstance(devices, list | tuple) else []
    if not found or not all(isinstance(d, jax.Device) for d in found):
        raise TypeError(f"devices must be a non-empty list of jax.Device (e.g. jax.devices()[:2]), got {devices!r}")
    return found


def padded_count(count: int, multiple: int) -> int:
    return -(-count // multiple) * multiple


class Placement:
    """Pads the element axis and places arguments on ``devices[:shards]``."""

    def __init__(self, shards: int, devices: Sequence[Any]):
        self.shards = shards
        if shards > 1:
            mesh = Mesh(np.asarray(devices[:shards]), ("elements",))
            self._split = NamedSharding(mesh, PartitionSpec("elements"))
            self._whole = NamedSharding(mesh, PartitionSpec())

    @staticmethod
    def pad(elements: np.ndarray, multiple: int) -> np.ndarray:
        extra = padded_count(len(elements), multiple) - len(elements)
        if not extra:
            return elements
        return np.concatenate([elements, np.repeat(np.asarray(elements)[:1], extra, axis=0)])

    def place(self, leaves: list[Any]) -> list[Any]:
        """Elements (the last argument) split over the devices, the rest on every device."""
        if self.shards == 1:
            return leaves
        *rest, elements = leaves
        return [*jax.device_put(rest, self._whole), jax.device_put(elements, self._split)]

    @staticmethod
    def devices_used(array: Any) -> int:
        """How many devices computed a part of ``array`` (1 when fully replicated)."""
        sharding = getattr(array, "sharding", None)
        if sharding is None or sharding.is_fully_replicated:
            return 1
        return len(sharding.device_set)

    @staticmethod
    def gather(stats: Any) -> Any:
        """Statistics on the host; with several hosts, every process gathers every host's part."""
        if jax.process_count() > 1:
            stats = multihost_utils.process_allgather(stats, tiled=True)
        return jax.device_get(stats)
