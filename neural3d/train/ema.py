"""Exponential moving average of a model's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``shadow <- decay * shadow + (1 - decay) * param`` after every optimiser step; buffers
    are copied. ``ema.module`` is a frozen copy of the model holding the averaged weights."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src = dict(model.named_parameters())
        for name, p in self.module.named_parameters():
            if p.shape != src[name].shape:  # e.g. planes upsampled during fitting
                p.data = src[name].detach().clone()
            else:
                p.lerp_(src[name].detach(), 1.0 - self.decay)
        src_b = dict(model.named_buffers())
        for name, b in self.module.named_buffers():
            if name in src_b:
                b.data = src_b[name].detach().clone()

    def state_dict(self) -> dict:
        return {"decay": self.decay, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.module.load_state_dict(state["module"])
