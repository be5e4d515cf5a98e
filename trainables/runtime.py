"""How a trial's networks run on its device: bf16 autocast, channels-last memory, torch.compile.

Every switch is a CUDA-only speed-up and a no-op on the CPU, where bf16 convolutions are slower
than fp32 and compilation costs more than a 28 px trial trains; so a CPU search and a GPU search
of the same space compare the same trials. The GAN loops stay fp32 (see docs/performance.md): the
E-GAN diversity fitness is the log of a gradient norm, which bf16's 8-bit mantissa would round
into ties between children."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class RuntimeConfig:
    amp: bool = True
    """CUDA: classifier forward and loss under bf16 autocast (weights, optimiser and backward
    accumulation stay fp32). Ignored on the CPU."""
    channels_last: bool = True
    """CUDA: classifier weights in channels-last (NHWC) memory, the layout cuDNN's fastest
    convolutions use; outputs are unchanged. Ignored on the CPU."""
    compile: bool = False
    """CUDA: torch.compile the classifier in place (pays off only for long classifier budgets; the
    first steps of a trial then include compilation). Ignored on the CPU."""

    def to_dict(self) -> dict:
        return asdict(self)


def uses_cuda(device: torch.device) -> bool:
    return torch.device(device).type == "cuda"


def autocast(cfg: RuntimeConfig | None, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when cfg.amp, else a context that changes nothing."""
    if cfg is None or not cfg.amp or not uses_cuda(device):
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16)


def prepare_model(model: nn.Module, cfg: RuntimeConfig | None, device: torch.device) -> nn.Module:
    """The same module (same state_dict keys), in channels-last memory and compiled when asked
    and on CUDA; untouched otherwise."""
    if cfg is None or not uses_cuda(device):
        return model
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:
        model.compile()  # in place: state_dict keys keep no '_orig_mod.' prefix
    return model
