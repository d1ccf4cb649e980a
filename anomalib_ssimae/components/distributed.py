"""Gathering Python objects from every process of a distributed (DDP) run."""

from __future__ import annotations

from typing import Any

import torch


def from_all_processes(values: list[Any]) -> list[Any]:
    """Under distributed training (DDP), the list items of every process, in rank order; else ``values`` itself.
    Each process validates and tests only its share of the images; thresholds and checks need all of them."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    gathered: list[list[Any] | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, values)
    return [item for part in gathered for item in part or []]
