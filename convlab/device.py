"""Devices and modes: ``"auto"`` means CUDA when present, else the CPU; where a model lives; eval mode for a block."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["resolve_device", "model_device", "eval_mode", "use_channels_last", "synchronize"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` if available else ``cpu``; other values are checked and passed to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device: expected 'auto', 'cpu', 'cuda[:N]' or a torch.device, got {type(device).__name__}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} was asked for but CUDA is not available here; use 'auto' or 'cpu'")
    return resolved


def use_channels_last(channels_last: bool | None, device: torch.device) -> bool:
    """Whether 4-D inputs and weights go channels_last: ``None`` means on the CPU only (faster oneDNN convolutions
    there; on CUDA the default layout is as fast without the conversion), else what the caller asked for."""
    return device.type == "cpu" if channels_last is None else bool(channels_last)


def synchronize(device: str | torch.device = "cpu") -> None:
    """Wait for ``device``'s queued work before a clock is read (CUDA runs asynchronously); a no-op on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_device(model: nn.Module) -> torch.device:
    """Where ``model`` lives: the device of its first parameter (or buffer); the CPU for a model with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Run the block with ``models`` in eval mode, then put each back in the mode it was in (also after an error).

    ``model.train(mode)`` is what restores it, so a frozen stage that always stays in eval (``convlab.transfer``'s
    BatchNorm policy) keeps doing so.
    """
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
