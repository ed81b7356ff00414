"""f-DM (Gu et al., ICLR 2023): diffusion through progressive signal transformations.

Time ``[0, 1]`` is cut into ``K`` stages at ``0 = tau_0 < tau_1 < ... < tau_K = 1``. Stage ``k``
carries the signal ``x_k = f_k(x0)``; inside the stage the signal moves continuously from ``x_k``
towards the next stage's signal, ``s_t = (1 - g) x_k + g * P_k x_k`` with
``g = (t - tau_k) / (tau_{k+1} - tau_k)``, and ``z_t = alpha_k(t) s_t + sigma_k(t) eps``.

Transforms:

- ``"downsample"`` (the cascade of 2x stages): ``x_{k+1} = avgpool2(x_k)`` (mean-preserving), so
  stage ``k`` lives at ``res / 2**k``; ``P_k = up(avgpool2(.))`` (nearest upsampling), the
  orthogonal projection onto 2x2-constant images. Average pooling halves the noise std, so the
  noise schedule of stage ``k`` is the resolution-shifted ``snr_k(t) = 4**k snr(t)``
  (:class:`ShiftedSchedule` with ``scale = 2**-k``). At a boundary ``tau`` (stage ``k`` ->
  ``k+1``) the state maps as ``z' = avgpool2(z) / sqrt(alpha^2 + sigma^2 / 4)`` (alpha, sigma of
  stage ``k`` at ``tau``), which is exactly ``alpha_{k+1}(tau) x_{k+1} + sigma_{k+1}(tau) eps'``:
  the SNR measured against the full-resolution signal is continuous, the marginals on the two
  sides agree (tested), and the VP normalisation holds in every stage. Sampling crosses the
  boundary the other way with ``z = up(z') * sqrt(alpha^2 + sigma^2/4) + sigma (I - P) eps_new``:
  the fresh noise is re-injected only in the detail subspace the coarse state does not carry.
- ``"blur"``: same resolution throughout; ``x_k = G_{b_k} * x0`` (Gaussian blur, ``b_0 = 0``,
  growing), ``P_k x_k = x_{k+1}`` (``G`` with ``sqrt(b_{k+1}^2 - b_k^2)``). Dimensions do not
  change, the boundary map is the identity and the base schedule is used in every stage, so the
  SNR is continuous trivially.

The network predicts the stage's clean signal ``x_k`` (x0 parameterisation; the loss weighting is
one of :data:`~neural3d.diffusion.parameterization.WEIGHTINGS`, e.g. ``eps``-equivalent or
``min_snr``). Sampling (:meth:`FDM.sample`) is DDIM(eta) inside stages on the transformed
prediction ``s_hat_t`` and the boundary maps above between them. ``model(z, t, **cond)`` gets the
stage-resolution state; a fully convolutional U-Net serves all stages.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from neural3d.diffusion.guidance import classifier_free_guidance, threshold_x0
from neural3d.diffusion.parameterization import DiffusionObjective
from neural3d.diffusion.schedules import NoiseSchedule, ShiftedSchedule


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding (``sigma`` in pixels; 0 = identity)."""
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    pad = min(r, x.shape[-1] - 1)
    if pad < r:  # tiny images: zero-pad the remainder after reflecting
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        x = F.pad(x, (r - pad,) * 4, mode="replicate")
    else:
        x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class FDM:
    """The f-DM forward process, loss and sampler (stateless; the network is passed in)."""

    def __init__(self, schedule: NoiseSchedule, num_stages: int = 3,
                 transform: str = "downsample", boundaries: Sequence[float] | None = None,
                 blur_sigmas: Sequence[float] | None = None, weighting: str = "min_snr",
                 min_snr_gamma: float = 5.0):
        if transform not in ("downsample", "blur"):
            raise ValueError("transform must be 'downsample' or 'blur'")
        self.base, self.K, self.transform = schedule, int(num_stages), transform
        if boundaries is None:
            boundaries = [k / self.K for k in range(1, self.K)]
        self.tau = [0.0] + [float(b) for b in boundaries] + [1.0]
        if len(self.tau) != self.K + 1 or any(a >= b for a, b in zip(self.tau, self.tau[1:],
                                                                      strict=False)):
            raise ValueError(f"need {self.K - 1} increasing boundaries inside (0, 1)")
        if transform == "blur":
            self.blur = list(blur_sigmas or [0.0] + [2.0 ** k for k in range(self.K)])
            if len(self.blur) != self.K + 1 or self.blur[0] != 0:
                raise ValueError("blur_sigmas: K + 1 increasing values starting at 0")
        self.weighting, self.gamma = weighting, min_snr_gamma

    # -- stages ------------------------------------------------------------------------
    def stage_of(self, t: float) -> int:
        for k in range(self.K):
            if t <= self.tau[k + 1]:
                return k
        return self.K - 1

    def schedule(self, k: int) -> NoiseSchedule:
        if self.transform == "downsample" and k:
            return ShiftedSchedule(self.base, 2.0 ** -k)
        return self.base

    def coeffs(self, k: int, t: float) -> tuple[float, float]:
        a, s = self.schedule(k).alpha_sigma(torch.tensor(float(t), dtype=torch.float64))
        return float(a), float(s)

    def progress(self, k: int, t: float) -> float:
        return min(1.0, max(0.0, (t - self.tau[k]) / (self.tau[k + 1] - self.tau[k])))

    def resolution(self, res: int, k: int) -> int:
        return res // 2 ** k if self.transform == "downsample" else res

    def stage_signal(self, x0: torch.Tensor, k: int) -> torch.Tensor:
        """``x_k = f_k(x0)``."""
        if self.transform == "downsample":
            return F.avg_pool2d(x0, 2 ** k) if k else x0
        return gaussian_blur(x0, self.blur[k])

    def project(self, xk: torch.Tensor, k: int) -> torch.Tensor:
        """``P_k x_k``: the next stage's signal expressed in stage ``k``'s space."""
        if self.transform == "downsample":
            return F.interpolate(F.avg_pool2d(xk, 2), scale_factor=2.0, mode="nearest")
        return gaussian_blur(xk, math.sqrt(self.blur[k + 1] ** 2 - self.blur[k] ** 2))

    def signal(self, xk: torch.Tensor, k: int, t: float) -> torch.Tensor:
        g = self.progress(k, t)
        if g == 0:
            return xk
        return (1 - g) * xk + g * self.project(xk, k)

    # -- forward process -----------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: float, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, stage: int | None = None):
        """``z_t`` for a scalar ``t`` (stage ``stage`` or the one containing ``t``); returns
        ``(z_t, x_k, k)``."""
        k = self.stage_of(t) if stage is None else stage
        xk = self.stage_signal(x0, k)
        if noise is None:
            noise = torch.randn(xk.shape, generator=generator).to(xk)
        a, s = self.coeffs(k, t)
        return a * self.signal(xk, k, t) + s * noise, xk, k

    def to_next_stage(self, z: torch.Tensor, k: int) -> torch.Tensor:
        """Boundary map ``tau_{k+1}``: stage ``k`` state -> stage ``k+1`` state."""
        if self.transform == "blur":
            return z
        a, s = self.coeffs(k, self.tau[k + 1])
        return F.avg_pool2d(z, 2) / math.sqrt(a * a + s * s / 4)

    def to_prev_stage(self, z: torch.Tensor, k: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Boundary map ``tau_k`` backwards: stage ``k`` state -> stage ``k-1`` state, with fresh
        noise in the detail subspace."""
        if self.transform == "blur":
            return z
        a, s = self.coeffs(k - 1, self.tau[k])
        up = F.interpolate(z, scale_factor=2.0, mode="nearest") * math.sqrt(a * a + s * s / 4)
        eps = torch.randn(up.shape, generator=generator).to(up)
        detail = eps - F.interpolate(F.avg_pool2d(eps, 2), scale_factor=2.0, mode="nearest")
        return up + s * detail

    # -- training --------------------------------------------------------------------------
    def loss(self, model: Callable, x0: torch.Tensor, generator: torch.Generator | None = None,
             **cond) -> tuple[torch.Tensor, dict]:
        """Draw ``t ~ U(0, 1]`` per sample; samples are grouped by stage (one model call per
        stage present). The model predicts ``x_k``; weighting as in the module docstring."""
        b = x0.shape[0]
        ts = (1e-4 + (1 - 1e-4) * torch.rand(b, generator=generator)).tolist()
        stages = [self.stage_of(t) for t in ts]
        objective = DiffusionObjective(self.base, "x0", self.weighting, self.gamma)
        total, parts, n = x0.new_zeros(()), {}, 0
        for k in sorted(set(stages)):
            idx = [i for i, s in enumerate(stages) if s == k]
            sel = torch.tensor(idx, device=x0.device)
            xk = self.stage_signal(x0[sel], k)
            eps = torch.randn(xk.shape, generator=generator).to(xk)
            z, a_l, s_l = [], [], []
            for j, i in enumerate(idx):
                a, s = self.coeffs(k, ts[i])
                z.append(a * self.signal(xk[j:j + 1], k, ts[i]) + s * eps[j:j + 1])
                a_l.append(a)
                s_l.append(s)
            z = torch.cat(z)
            tt = torch.tensor([ts[i] for i in idx], dtype=torch.float32, device=x0.device)
            sub = {key: (v[sel] if isinstance(v, torch.Tensor) else v) for key, v in cond.items()}
            pred = model(z, tt, **sub)
            snr = (torch.tensor(a_l) ** 2 / torch.tensor(s_l) ** 2).to(x0)
            w = objective.weights(snr)
            mse = (pred - xk).pow(2).flatten(1).mean(1)
            total = total + (w * mse).sum()
            parts[f"loss_stage{k}"] = mse.mean().detach()
            n += len(idx)
        return total / n, parts

    # -- sampling --------------------------------------------------------------------------
    def steps_per_stage(self, steps: int) -> list[int]:
        lengths = [self.tau[k + 1] - self.tau[k] for k in range(self.K)]
        out = [max(1, round(steps * length)) for length in lengths]
        while sum(out) > max(steps, self.K):
            out[out.index(max(out))] -= 1
        while sum(out) < steps:
            out[out.index(min(out))] += 1
        return out

    @torch.no_grad()
    def sample(self, model: Callable, batch: int, channels: int, resolution: int,
               steps: int = 50, eta: float = 0.0, model_kwargs: dict | None = None,
               cfg_scale: float = 1.0, uncond: dict | None = None,
               thresholding: str | None = None, generator: torch.Generator | None = None,
               device=None, return_stages: bool = False):
        """DDIM(eta) within stages + boundary maps; returns ``[B, C, res, res]`` (and the final
        state of every stage if ``return_stages``)."""
        kwargs = model_kwargs or {}
        if cfg_scale != 1.0:
            model = classifier_free_guidance(model, cfg_scale, uncond or {})
        k = self.K - 1
        r = self.resolution(resolution, k)
        z = torch.randn((batch, channels, r, r), generator=generator).to(device)
        per = self.steps_per_stage(steps)
        finals = []
        for k in range(self.K - 1, -1, -1):
            ts = torch.linspace(self.tau[k + 1], self.tau[k], per[k] + 1).tolist()
            for t, s in zip(ts[:-1], ts[1:], strict=True):
                tt = torch.full((batch,), t, dtype=torch.float32, device=z.device)
                xk = model(z, tt, **kwargs)
                xk = threshold_x0(xk, thresholding)
                a_t, s_t = self.coeffs(k, t)
                eps = (z - a_t * self.signal(xk, k, t)) / s_t
                if s <= 0:
                    z = xk
                    break
                a_s, s_s = self.coeffs(k, s)
                c = eta * s_s / s_t * math.sqrt(max(0.0, 1 - (a_t / a_s) ** 2))
                z = a_s * self.signal(xk, k, s) + math.sqrt(max(0.0, s_s ** 2 - c ** 2)) * eps
                if c > 0:
                    z = z + c * torch.randn(z.shape, generator=generator).to(z)
            finals.append(z)
            if k > 0:
                z = self.to_prev_stage(z, k, generator)
        return (z, finals) if return_stages else z
