"""Exponential moving average of a model's weights."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def rampup_decay(decay: float, step: int, rampup: float) -> float:
    """The EMA decay at ``step`` (0-based) under StyleGAN2-ADA's ramp-up (as SSDNeRF's
    ``momentum_policy='rampup'``): the half-life of ``decay``, ``H = ln 0.5 / ln decay`` steps,
    is capped at ``rampup * (step + 1)`` steps, so early averages forget fast; ``rampup = 0``
    keeps ``decay``. (With ``ema_kimg`` and a batch of ``b`` images, ``decay = 0.5 **
    (b / (1000 ema_kimg))``.)"""
    if rampup <= 0:
        return decay
    half_life = min(math.log(0.5) / math.log(decay), rampup * (step + 1))
    return 0.5 ** (1.0 / max(half_life, 1e-8))


class EMA:
    """``shadow <- decay * shadow + (1 - decay) * param`` after every optimiser step (``decay``
    fixed, or given per call); buffers are copied. ``ema.module`` is a frozen copy of the model
    holding the averaged weights."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float | None = None) -> None:
        decay = self.decay if decay is None else decay
        src = dict(model.named_parameters())
        for name, p in self.module.named_parameters():
            if p.shape != src[name].shape:  # e.g. planes upsampled during fitting
                p.data = src[name].detach().clone()
            else:
                p.lerp_(src[name].detach(), 1.0 - decay)
        src_b = dict(model.named_buffers())
        for name, b in self.module.named_buffers():
            if name in src_b:
                b.data = src_b[name].detach().clone()

    def state_dict(self) -> dict:
        return {"decay": self.decay, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.module.load_state_dict(state["module"])
