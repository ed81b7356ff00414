"""Noise schedules for variance-preserving diffusion, all expressed through the log-SNR.

A schedule is a stateless map from time ``t`` in ``[0, 1]`` (``t = 0`` clean, ``t = 1`` pure
noise) to ``log_snr(t) = log(alpha_t^2 / sigma_t^2)``; ``alpha_t^2 = sigmoid(log_snr)`` and
``sigma_t^2 = sigmoid(-log_snr)`` so that ``alpha^2 + sigma^2 = 1``. The forward process is
``x_t = alpha_t * x0 + sigma_t * eps``.

Models always receive the continuous time ``t`` (a float tensor ``[B]``). A *discrete* schedule
(``DiscreteSchedule``, e.g. DDPM's 1000 linear betas) has a table of ``N`` noise levels at the
times ``t_n = n / N`` (``n = 1..N``), interpolates log-SNR linearly in between, and restricts the
sampling grids it hands out (:meth:`NoiseSchedule.timesteps`) to its own times. Continuous
schedules (:class:`CosineSchedule`, :class:`LinearSchedule`) give any ``t``.

:class:`ShiftedSchedule` implements the resolution shift of simple diffusion / Matryoshka
Diffusion: ``snr_shifted(t) = snr(t) / scale**2`` (``log_snr - 2 log scale``). With
``scale = res / base_res`` a larger image gets proportionally more noise at the same ``t``.

Every schedule also answers ``t_from_log_snr`` (the inverse), which the f-DM stage logic and the
ODE solver use.
"""

from __future__ import annotations

import math

import torch

LOG_SNR_MAX = 20.0
LOG_SNR_MIN = -20.0


def _as_tensor(t, ref: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t.to(torch.float64) if t.dtype != torch.float64 else t
    return torch.as_tensor(t, dtype=torch.float64)


class NoiseSchedule:
    """Base class. Subclasses implement :meth:`log_snr` (and ideally :meth:`t_from_log_snr`)."""

    #: number of discrete training times, or ``None`` for a continuous-time schedule
    num_steps: int | None = None

    def log_snr(self, t) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def t_from_log_snr(self, log_snr) -> torch.Tensor:
        """Inverse of :meth:`log_snr` by bisection (log-SNR is decreasing in ``t``)."""
        target = _as_tensor(log_snr)
        lo = torch.zeros_like(target)
        hi = torch.ones_like(target)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            above = self.log_snr(mid) > target  # still too clean -> move right
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    # -- derived quantities -------------------------------------------------------------
    def snr(self, t) -> torch.Tensor:
        return torch.exp(self.log_snr(t))

    def alpha_sigma(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha_t, sigma_t)`` as float64 tensors with the shape of ``t``."""
        lam = self.log_snr(t)
        return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()

    def timesteps(self, steps: int, spacing: str = "uniform") -> torch.Tensor:
        """Descending evaluation times ``t_0 = 1 > ... > t_{steps-1} > 0`` for a sampler that
        makes ``steps`` model calls and finishes at clean data (``t = 0``).

        ``spacing``: ``"uniform"`` in ``t`` (discrete: diffusers' "trailing"), ``"logsnr"``
        (uniform in log-SNR between the schedule's ends, DPM-Solver's choice) or ``"karras"``
        (EDM's rho = 7 spacing of ``sigma / alpha``). Discrete schedules round to their own grid
        (``n / N``), kept distinct."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        n = self.num_steps
        t_end = 1.0 / n if n else 1e-3
        if spacing == "uniform":
            ts = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)[:-1]
            if n:  # 'trailing' spacing: always start at n = N, stride N / steps
                ts = torch.round(torch.arange(steps, 0, -1, dtype=torch.float64) * n / steps) / n
        elif spacing in ("logsnr", "karras"):
            lam_hi, lam_lo = float(self.log_snr(1.0)), float(self.log_snr(t_end))
            if spacing == "logsnr":
                lam = torch.linspace(lam_hi, lam_lo, steps, dtype=torch.float64)
            else:  # EDM (Karras et al. 2022) rho = 7 in sigma = exp(-log_snr / 2)
                rho = 7.0
                s_max, s_min = math.exp(-lam_hi / (2 * rho)), math.exp(-lam_lo / (2 * rho))
                ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
                lam = -2 * rho * torch.log(s_max + ramp * (s_min - s_max))
            ts = self.t_from_log_snr(lam)
            ts[0] = 1.0
        else:
            raise ValueError(f"unknown spacing '{spacing}' (use uniform, logsnr or karras)")
        if n:
            if steps > n:
                raise ValueError(f"{steps} steps requested but the schedule has only {n}")
            raw = torch.round(ts * n).long().clamp(1, n).tolist()
            idx = [raw[0]]
            for i in range(1, steps):  # distinct and decreasing, never below 1
                idx.append(max(min(raw[i], idx[-1] - 1), steps - i))
            ts = torch.tensor(idx, dtype=torch.float64) / n
        return ts

    def sample_t(self, batch: int, generator: torch.Generator | None = None,
                 device=None) -> torch.Tensor:
        """Training times: uniform on ``(0, 1]`` (continuous) or on the ``n / N`` grid."""
        if self.num_steps:
            n = torch.randint(1, self.num_steps + 1, (batch,), generator=generator)
            return (n.to(torch.float32) / self.num_steps).to(device)
        u = torch.rand(batch, generator=generator)
        return (1e-4 + (1 - 1e-4) * u).to(device)


class CosineSchedule(NoiseSchedule):
    """Continuous cosine schedule (Nichol & Dhariwal 2021), ``alpha_bar = cos^2(pi/2 * t)``,
    written as ``log_snr = -2 log tan(a t + b)`` and clipped to ``[log_snr_min, log_snr_max]``."""

    def __init__(self, log_snr_min: float = LOG_SNR_MIN, log_snr_max: float = LOG_SNR_MAX):
        self.lmin, self.lmax = log_snr_min, log_snr_max
        self.b = math.atan(math.exp(-0.5 * log_snr_max))
        self.a = math.atan(math.exp(-0.5 * log_snr_min)) - self.b

    def log_snr(self, t) -> torch.Tensor:
        t = _as_tensor(t)
        return -2.0 * torch.log(torch.tan(self.a * t + self.b))

    def t_from_log_snr(self, log_snr) -> torch.Tensor:
        lam = _as_tensor(log_snr)
        return ((torch.atan(torch.exp(-0.5 * lam)) - self.b) / self.a).clamp(0, 1)

    def __repr__(self) -> str:
        return f"CosineSchedule(log_snr_min={self.lmin}, log_snr_max={self.lmax})"


class LinearSchedule(NoiseSchedule):
    """Continuous-time version of DDPM's linear betas (Song et al. 2021, VP-SDE):
    ``log alpha_bar(t) = -(beta_0 t + (beta_1 - beta_0) t^2 / 2)`` with ``beta_0 = 0.1``,
    ``beta_1 = 20``, which matches ``linspace(1e-4, 0.02, 1000)`` at ``t = n / 1000``."""

    def __init__(self, beta_0: float = 0.1, beta_1: float = 20.0, t_min: float = 1e-4):
        self.beta_0, self.beta_1, self.t_min = beta_0, beta_1, t_min

    def log_snr(self, t) -> torch.Tensor:
        t = _as_tensor(t).clamp(min=self.t_min)
        log_abar = -(self.beta_0 * t + 0.5 * (self.beta_1 - self.beta_0) * t * t)
        # log(abar / (1 - abar)) computed stably
        return log_abar - torch.log(-torch.expm1(log_abar))

    def t_from_log_snr(self, log_snr) -> torch.Tensor:
        lam = _as_tensor(log_snr)
        # abar = sigmoid(lam); solve 0.5 (b1-b0) t^2 + b0 t + log abar = 0
        c = -torch.nn.functional.logsigmoid(lam)
        a = 0.5 * (self.beta_1 - self.beta_0)
        return ((-self.beta_0 + torch.sqrt(self.beta_0 ** 2 + 4 * a * c)) / (2 * a)).clamp(0, 1)

    def __repr__(self) -> str:
        return f"LinearSchedule(beta_0={self.beta_0}, beta_1={self.beta_1})"


class DiscreteSchedule(NoiseSchedule):
    """A table of ``N`` cumulative ``alpha_bar`` values at ``t_n = n / N``; log-SNR is linearly
    interpolated in between (and extrapolated linearly on ``[0, 1/N]``)."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if abar.ndim != 1 or len(abar) < 2:
            raise ValueError("alphas_cumprod must be a 1-D table with at least 2 entries")
        if not bool(((abar > 0) & (abar < 1)).all()):
            raise ValueError("alphas_cumprod entries must lie strictly inside (0, 1)")
        self.alphas_cumprod = abar
        self.num_steps = len(abar)
        lam = torch.log(abar) - torch.log1p(-abar)
        lam0 = (2 * lam[0] - lam[1]).clamp(max=LOG_SNR_MAX).reshape(1)
        self._knots = torch.cat([lam0, lam])  # at t = 0, 1/N, ..., 1

    @classmethod
    def linear(cls, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        """DDPM (Ho et al. 2020) betas scaled to ``num_steps`` (as diffusers does)."""
        scale = 1000.0 / num_steps
        betas = torch.linspace(beta_start * scale, beta_end * scale, num_steps,
                               dtype=torch.float64)
        return cls(torch.cumprod(1 - betas, 0))

    @classmethod
    def cosine(cls, num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999):
        """Improved-DDPM cosine betas (Nichol & Dhariwal 2021)."""
        def f(x):
            return math.cos((x + s) / (1 + s) * math.pi / 2) ** 2
        betas = [min(1 - f((i + 1) / num_steps) / f(i / num_steps), max_beta)
                 for i in range(num_steps)]
        return cls(torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), 0))

    def log_snr(self, t) -> torch.Tensor:
        t = _as_tensor(t)
        x = (t * self.num_steps).clamp(0, self.num_steps)
        i0 = x.floor().long().clamp(max=self.num_steps - 1)
        w = x - i0
        return self._knots[i0] * (1 - w) + self._knots[i0 + 1] * w

    def __repr__(self) -> str:
        return f"DiscreteSchedule(num_steps={self.num_steps})"


class ShiftedSchedule(NoiseSchedule):
    """Resolution-shifted schedule: ``snr(t) / scale**2`` (``log_snr - 2 log(scale)``).

    Matryoshka Diffusion / simple diffusion use ``scale = res / base_res`` so that the
    higher resolution is noisier at the same ``t``; f-DM uses ``scale = 1 / 2**k`` in stage ``k``
    (a 2x-downsampled signal has 4x the per-pixel SNR)."""

    def __init__(self, base: NoiseSchedule, scale: float):
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.base, self.scale = base, float(scale)
        self.shift = -2.0 * math.log(scale)
        self.num_steps = base.num_steps

    def log_snr(self, t) -> torch.Tensor:
        return self.base.log_snr(t) + self.shift

    def t_from_log_snr(self, log_snr) -> torch.Tensor:
        return self.base.t_from_log_snr(_as_tensor(log_snr) - self.shift)

    def __repr__(self) -> str:
        return f"ShiftedSchedule({self.base!r}, scale={self.scale})"


def make_schedule(kind: str = "cosine", num_steps: int = 0, shift: float = 1.0) -> NoiseSchedule:
    """Factory used by configs: ``kind`` in {``cosine``, ``linear``}; ``num_steps > 0`` gives the
    discrete DDPM-style table with that many steps, ``0`` the continuous schedule; ``shift`` is
    the ``scale`` of :class:`ShiftedSchedule` (1 = none)."""
    if kind == "cosine":
        sched = DiscreteSchedule.cosine(num_steps) if num_steps else CosineSchedule()
    elif kind == "linear":
        sched = DiscreteSchedule.linear(num_steps) if num_steps else LinearSchedule()
    else:
        raise ValueError(f"unknown schedule '{kind}' (use 'cosine' or 'linear')")
    return ShiftedSchedule(sched, shift) if shift != 1.0 else sched
