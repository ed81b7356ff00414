"""DART (Gu et al. 2024/25): a denoising autoregressive transformer over a non-Markovian
noising process.

Noising. ``T`` steps, indexed ``k = 0..T-1`` from the noisiest (``x_T``) to the cleanest
(``x_1``); each draws *fresh* noise from the clean image,
``x^(k) = sqrt(gamma_k) x0 + sqrt(1 - gamma_k) eps_k`` with independent ``eps_k``. The levels
match a reference schedule at the descending times ``tau_k = schedule.timesteps(T)[k]``: the
per-step SNR ``gamma_k / (1 - gamma_k)`` is the difference of the reference's cumulative SNRs,
``snr(tau_k) - snr(tau_{k-1})`` (``snr(tau_{-1}) = 0``), so that the history
``x^(0..k)`` carries exactly the information (cumulative SNR ``snr(tau_k)``) of the reference
process's ``x_{tau_k}`` (:class:`DARTLevels`).

Model. :class:`DARTransformer` reads the token sequence ``[x_T, ..., x_t]`` (``K`` patches per
step) with a block-causal mask (full attention within a step and to noisier steps, none to
cleaner ones) and predicts ``x0`` at every step; ``history_mask="block_diagonal"`` lets each
step see only itself (the history-masked baseline, otherwise identical). The class label and the
step index condition every block through adaLN-Zero (as :class:`~neural3d.diffusion.dit.DiT`).

Training (:func:`dart_loss`): all ``T`` steps in one forward pass, the x0-MSE of step ``k``
weighted by the objective's x0-space weight at the cumulative SNR ``snr(tau_k)``
(``weighting: min_snr`` = the clamped SNR ``min(snr, gamma)``).

Sampling (:func:`dart_sample`): ``T`` network calls on one step's ``K`` tokens each, earlier
steps' keys/values coming from a :class:`KVCache`; with classifier-free guidance one cache for
the conditional and one for the null class, ``x0 = u + w (c - u)``; the next step is re-noised
from the (clipped) estimate, and the output is the last ``x0`` estimate.

DART-AR (``token_ar=True``; our reading of the paper's token-level variant): the same
transformer over the flattened token sequence with a fully causal mask and inputs shifted by one
token (a learned start token first): the output at token ``k`` of step ``t`` predicts that
token's ``x0`` from all earlier steps and the tokens ``< k`` of step ``t``. Training is
:func:`dart_loss` unchanged (teacher forcing, one forward pass, each token weighted by its step's
cumulative SNR); sampling (:func:`dart_sample`) generates ``T * K`` tokens one at a time, each
re-noised at its step's level as soon as it is predicted; the output is every token's last
``x0`` estimate. Per token the output is still the MSE-optimal mean (no per-token generative
head such as the paper's flow-matching refinement); diversity comes from the per-token noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from neural3d.diffusion.dit import sincos_2d
from neural3d.diffusion.parameterization import DiffusionObjective
from neural3d.diffusion.schedules import NoiseSchedule

HISTORY_MASKS = ("block_causal", "block_diagonal")


# ---------------------------------------------------------------------------- noising
@dataclass
class DARTLevels:
    """Per-step noise levels, index 0 = the noisiest step ``x_T``.

    ``gamma [T]``: signal fraction of each step; ``snr_cum [T]``: cumulative SNR of the
    history up to each step (= the reference's ``snr(tau_k)``), both float64."""

    gamma: torch.Tensor
    snr_cum: torch.Tensor

    @classmethod
    def from_schedule(cls, schedule: NoiseSchedule, steps: int) -> DARTLevels:
        """Levels matching ``schedule`` at its ``steps`` descending sampling times."""
        snr_cum = schedule.snr(schedule.timesteps(steps)).to(torch.float64)
        snr_step = torch.diff(snr_cum, prepend=snr_cum.new_zeros(1))
        if not bool((snr_step > 0).all()):
            raise ValueError("the reference schedule's SNR must increase along its time grid")
        return cls(snr_step / (1 + snr_step), snr_cum)

    @property
    def steps(self) -> int:
        return len(self.gamma)

    def alpha_sigma_cum(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha, sigma)`` of the reference process at each step's cumulative SNR."""
        lam = torch.log(self.snr_cum)
        return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()


def _randn(shape, generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)


def renoise(x0: torch.Tensor, gamma: float | torch.Tensor,
            noise: torch.Tensor) -> torch.Tensor:
    """One step of the non-Markovian process: ``sqrt(gamma) x0 + sqrt(1 - gamma) noise``."""
    g = torch.as_tensor(gamma, dtype=torch.float64)
    return g.sqrt().to(x0) * x0 + (1 - g).sqrt().to(x0) * noise


def dart_noise(x0: torch.Tensor, levels: DARTLevels,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``T`` noisy steps of ``x0 [B, C, H, W]``: ``(x [B, T, C, H, W], eps [B, T, C, H, W])``
    with independent ``eps`` per step (drawn from ``generator`` on the CPU)."""
    b, shape = x0.shape[0], x0.shape[1:]
    eps = _randn((b, levels.steps, *shape), generator, x0)
    g = levels.gamma.reshape(1, -1, *([1] * len(shape)))
    return renoise(x0[:, None], g, eps), eps


# ---------------------------------------------------------------------------- attention
def attention_mask(n_query_blocks: int, first_block: int, tokens: int,
                   history_mask: str = "block_causal", device=None) -> torch.Tensor:
    """Boolean mask ``[n_query_blocks * tokens, (first_block + n_query_blocks) * tokens]``
    (True = may attend) for the query steps ``first_block ..`` against all keys so far (index 0
    = the noisiest step): ``block_causal`` lets a step see itself and noisier steps,
    ``block_diagonal`` itself only."""
    if history_mask not in HISTORY_MASKS:
        raise ValueError(f"unknown history_mask '{history_mask}' (use one of {HISTORY_MASKS})")
    qb = first_block + torch.arange(n_query_blocks * tokens, device=device) // tokens
    kb = torch.arange((first_block + n_query_blocks) * tokens, device=device) // tokens
    if history_mask == "block_causal":
        return kb[None] <= qb[:, None]
    return kb[None] == qb[:, None]


class KVCache:
    """Keys and values of the steps seen so far, per layer (``[B, heads, N, head_dim]``)."""

    def __init__(self):
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.tokens = 0

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this call's ``k, v`` for ``layer``; returns all keys and values so far."""
        if layer == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
        else:
            self.keys[layer] = torch.cat([self.keys[layer], k], 2)
            self.values[layer] = torch.cat([self.values[layer], v], 2)
        return self.keys[layer], self.values[layer]


class DARTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero modulation per step (``c [B, n, dim]`` over the
    ``n`` steps of ``x [B, n, K, dim]``)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        b, n, k, d = x.shape
        s1, sc1, g1, s2, sc2, g2 = (m[:, :, None] for m in self.ada(c).chunk(6, -1))
        h = (self.norm1(x) * (1 + sc1) + s1).reshape(b, n * k, d)
        q, key, val = self.qkv(h).reshape(b, n * k, 3, self.heads, d // self.heads) \
            .permute(2, 0, 3, 1, 4).unbind(0)
        if cache is not None:
            key, val = cache.extend(layer, key, val)
        a = F.scaled_dot_product_attention(q, key, val, attn_mask=mask)
        a = self.proj(a.transpose(1, 2).reshape(b, n, k, d))
        x = x + g1 * a
        return x + g2 * self.mlp(self.norm2(x) * (1 + sc2) + s2)


class DARTransformer(nn.Module):
    """``DARTransformer(...)(x [B, n, C, H, W], y=None, cache=None) -> x0 [B, n, C, H, W]``.

    ``x`` holds ``n`` consecutive steps starting at the noisiest (``n = steps`` in training);
    with a :class:`KVCache` it holds the next ``n`` steps after those the cache has seen, whose
    keys and values it adds. Tokens: ``patch x patch`` patches (``K = (resolution / patch)^2``
    per step) embedded linearly plus a fixed 2-D sin-cos position; step index and class label
    (null label ``num_classes``; ``y=None`` is the null label) modulate each block
    (adaLN-Zero: a new network outputs exactly 0)."""

    def __init__(self, in_channels: int = 3, resolution: int = 32, patch: int = 4,
                 dim: int = 256, depth: int = 6, heads: int = 4, steps: int = 16,
                 num_classes: int = 0, history_mask: str = "block_causal",
                 mlp_ratio: float = 4.0, token_ar: bool = False):
        super().__init__()
        if resolution % patch:
            raise ValueError("resolution must be divisible by patch")
        if history_mask not in HISTORY_MASKS:
            raise ValueError(f"unknown history_mask '{history_mask}' (use one of "
                             f"{HISTORY_MASKS})")
        self.in_channels, self.resolution, self.patch = in_channels, resolution, patch
        self.steps, self.num_classes, self.null_label = steps, num_classes, num_classes
        if token_ar and history_mask != "block_causal":
            raise ValueError("token_ar (DART-AR) is causal by construction: use "
                             "history_mask=block_causal")
        self.history_mask, self.token_ar = history_mask, token_ar
        self.grid = resolution // patch
        self.tokens = self.grid ** 2
        self.embed_x = nn.Linear(in_channels * patch * patch, dim)
        self.register_buffer("pos", sincos_2d(dim, self.grid, self.grid), persistent=False)
        self.step_embed = nn.Embedding(steps, dim)
        self.label = nn.Embedding(num_classes + 1, dim)
        self.blocks = nn.ModuleList(DARTBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.final = nn.Linear(dim, patch * patch * in_channels)
        for m in (self.ada[1], self.final):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        if token_ar:  # DART-AR's start token: the input before the first token
            self.start = nn.Parameter(torch.zeros(dim))

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, n, C, H, W] -> [B, n, K, C p p]``."""
        b, n, c = x.shape[:3]
        p, g = self.patch, self.grid
        x = x.reshape(b, n, c, g, p, g, p).permute(0, 1, 3, 5, 2, 4, 6)
        return x.reshape(b, n, g * g, c * p * p)

    def unpatchify(self, t: torch.Tensor) -> torch.Tensor:
        b, n = t.shape[:2]
        p, g, c = self.patch, self.grid, self.in_channels
        t = t.reshape(b, n, g, g, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return t.reshape(b, n, c, g * p, g * p)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        if self.token_ar:
            if cache is not None:
                raise ValueError("DART-AR samples token by token: use forward_tokens")
            if x.shape[1] != self.steps:
                raise ValueError(f"DART-AR trains on all {self.steps} steps, got {x.shape[1]}")
            tokens = self.patchify(x).flatten(1, 2)                        # [B, T*K, Cpp]
            out = self.forward_tokens(tokens[:, :-1], 0, y, with_start=True)
            return self.unpatchify(out.reshape(x.shape[0], self.steps, self.tokens, -1))
        b, n = x.shape[:2]
        if x.shape[2:] != (self.in_channels, self.resolution, self.resolution):
            raise ValueError(f"DART expects steps of {self.in_channels}x{self.resolution}x"
                             f"{self.resolution}, got {tuple(x.shape[2:])}")
        first = cache.tokens // self.tokens if cache is not None else 0
        if first + n > self.steps:
            raise ValueError(f"steps {first}..{first + n - 1} exceed the model's {self.steps}")
        if y is None:
            y = torch.full((b,), self.null_label, dtype=torch.long, device=x.device)
        step_ids = torch.arange(first, first + n, device=x.device)
        c = self.label(y.long())[:, None] + self.step_embed(step_ids)[None]   # [B, n, dim]
        h = self.embed_x(self.patchify(x)) + self.pos                         # [B, n, K, dim]
        mask = attention_mask(n, first, self.tokens, self.history_mask, x.device)
        for i, blk in enumerate(self.blocks):
            h = blk(h, c, mask, cache, i)
        if cache is not None:
            cache.tokens += n * self.tokens
        shift, scale = (m[:, :, None] for m in self.ada(c).chunk(2, -1))
        return self.unpatchify(self.final(self.norm(h) * (1 + scale) + shift))


    def forward_tokens(self, prev: torch.Tensor, first: int, y: torch.Tensor | None = None,
                       cache: KVCache | None = None, with_start: bool = False) -> torch.Tensor:
        """DART-AR on flat token positions ``first .. first + m - 1`` (position ``t * K + k`` is
        token ``k`` of step ``t``): ``prev [B, m', C p p]`` are the *inputs*, i.e. the tokens
        one position earlier, with the start token prepended when ``with_start`` (then
        ``m = m' + 1``, ``first`` must be 0). Returns the ``x0`` tokens ``[B, m, C p p]``; with
        a :class:`KVCache` the positions continue after those it holds. Causal over tokens."""
        if not self.token_ar:
            raise ValueError("forward_tokens is DART-AR's (token_ar=True)")
        b = prev.shape[0]
        h = self.embed_x(prev)
        if with_start:
            if first != 0:
                raise ValueError("the start token is the input of position 0")
            h = torch.cat([self.start.expand(b, 1, -1), h], 1)
        m = h.shape[1]
        if cache is not None:
            first = cache.tokens
        if first + m > self.steps * self.tokens:
            raise ValueError(f"positions {first}..{first + m - 1} exceed the model's "
                             f"{self.steps} x {self.tokens} tokens")
        if y is None:
            y = torch.full((b,), self.null_label, dtype=torch.long, device=h.device)
        pos = torch.arange(first, first + m, device=h.device)
        h = (h + self.pos[pos % self.tokens])[:, :, None]                   # [B, m, 1, dim]
        c = self.label(y.long())[:, None] + self.step_embed(pos // self.tokens)[None]
        mask = attention_mask(m, first, 1, "block_causal", h.device)     # causal over tokens
        for i, blk in enumerate(self.blocks):
            h = blk(h, c, mask, cache, i)
        if cache is not None:
            cache.tokens += m
        shift, scale = (v[:, :, None] for v in self.ada(c).chunk(2, -1))
        return self.final(self.norm(h) * (1 + scale) + shift)[:, :, 0]


# ---------------------------------------------------------------------------- training
def dart_loss(model: DARTransformer, x0: torch.Tensor, levels: DARTLevels,
              objective: DiffusionObjective, y: torch.Tensor | None = None,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over steps and samples of the x0-MSE of every step from one forward pass, step
    ``k`` weighted by ``objective.weights(snr_cum[k])`` (x0-space; ``objective`` must predict
    ``x0``). Returns ``(loss, per-step loss [T])``."""
    if objective.parameterization != "x0":
        raise ValueError("DART predicts x0: use diffusion.parameterization=x0")
    x, _ = dart_noise(x0, levels, generator)
    pred = model(x, y)                                            # [B, T, C, H, W]
    b, t = pred.shape[:2]
    alpha, sigma = (v.repeat(b) for v in levels.alpha_sigma_cum())  # [B * T], b-major
    per = objective.prediction_loss(pred.flatten(0, 1), x0.repeat_interleave(t, 0),
                                    torch.zeros_like(pred.flatten(0, 1)), alpha, sigma,
                                    reduce=False).reshape(b, t)
    return per.mean(), per.detach().mean(0)


# ---------------------------------------------------------------------------- sampling
@torch.no_grad()
def dart_sample(model: DARTransformer, n: int, levels: DARTLevels,
                y: torch.Tensor | None = None, cfg_scale: float = 1.0,
                generator: torch.Generator | None = None, device=None,
                clip: float | None = 1.0, trajectory: bool = False):
    """``n`` samples ``[n, C, H, W]``: ``T`` calls, each on one step's tokens with the earlier
    steps from a :class:`KVCache` (one for ``y``, one for the null class when guiding:
    ``x0 = u + cfg_scale (c - u)``); each estimate is clipped to ``[-clip, clip]`` (None: not)
    and re-noised into the next step with fresh noise; returns the last estimate, or with
    ``trajectory`` ``(x0, xs [n, T, C, H, W] the steps fed in, x0s [n, T, C, H, W] the
    estimates)``."""
    if model.token_ar:
        return _dart_ar_sample(model, n, levels, y, cfg_scale, generator, device, clip,
                               trajectory)
    shape = (n, model.in_channels, model.resolution, model.resolution)
    guided_x0, ref = _guided_sampler(model, n, y, cfg_scale, device)
    x = _randn(shape, generator, ref)
    xs, x0s = [], []
    for k in range(levels.steps):
        x0 = guided_x0(lambda labels, cache, x=x: model(x[:, None], labels, cache)[:, 0])
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        xs.append(x)
        x0s.append(x0)
        if k + 1 < levels.steps:
            x = renoise(x0, levels.gamma[k + 1], _randn(shape, generator, ref))
    if trajectory:
        return x0, torch.stack(xs, 1), torch.stack(x0s, 1)
    return x0


def _guided_sampler(model: DARTransformer, n: int, y, cfg_scale: float, device):
    """``(guided_x0, ref)``: ``guided_x0(call)`` evaluates ``call(labels, cache)`` with ``y`` and
    the conditional :class:`KVCache`, and under guidance also with the null labels and their
    own cache, returning ``u + cfg_scale (c - u)``; ``ref`` is a scalar on the device."""
    dev = device if device is not None else next(model.parameters()).device
    y = y.to(dev) if y is not None else None
    guided = y is not None and cfg_scale != 1.0
    cond, null = KVCache(), KVCache()
    null_y = torch.full((n,), model.null_label, dtype=torch.long, device=dev)

    def guided_x0(call):
        x0 = call(y, cond)
        if guided:
            u = call(null_y, null)
            x0 = u + cfg_scale * (x0 - u)
        return x0

    return guided_x0, torch.empty((), device=dev)


def _dart_ar_sample(model: DARTransformer, n: int, levels: DARTLevels, y, cfg_scale: float,
                    generator, device, clip, trajectory: bool):
    """DART-AR sampling: ``T * K`` calls of one token each (see the module docstring); the
    same outputs as :func:`dart_sample`."""
    guided_x0, ref = _guided_sampler(model, n, y, cfg_scale, device)
    T, K = levels.steps, model.tokens
    width = model.in_channels * model.patch ** 2
    dev = ref.device
    xs = torch.empty(n, T, K, width, device=dev)
    x0s = torch.empty_like(xs)
    prev = torch.empty(n, 0, width, device=dev)
    for pos in range(T * K):
        t, k = divmod(pos, K)
        start = pos == 0
        x0 = guided_x0(lambda labels, cache, prev=prev, pos=pos, start=start:
                       model.forward_tokens(prev, pos, labels, cache, with_start=start)[:, -1])
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        x0s[:, t, k] = x0
        xs[:, t, k] = renoise(x0, levels.gamma[t], _randn(x0.shape, generator, ref))
        prev = xs[:, t, k:k + 1]
    out = model.unpatchify(x0s[:, -1:])[:, 0]
    if trajectory:
        return out, model.unpatchify(xs), model.unpatchify(x0s)
    return out
