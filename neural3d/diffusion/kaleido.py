"""Kaleido diffusion (Gu et al. 2024): autoregressive latent modelling for diverse conditional
generation, ``p(x | c) = sum_z p(z | c) p(x | c, z)``.

- :class:`KMeansExtractor`: the deterministic latent extractor. ``z`` is the nearest-centroid
  id of each coarse cell of an image (average-pooled to ``pool x pool``, cut into
  ``cells x cells`` cells of ``C (pool/cells)^2`` values each; ``pool = 0`` takes a vector input
  ``[B, D]`` as one cell). The centroids are fitted once on the training set (k-means++ seeded,
  Lloyd iterations, float64 on the CPU) and kept in buffers, so they are checkpointed with the
  model.
- :class:`ARPrior`: ``p(z | c)``, a small causal transformer over ``[c, z_1, .., z_{L-1}]``
  trained with teacher forcing (cross-entropy), sampled token by token.
- :class:`LatentEmbedding` / :class:`LatentConditioned`: the denoiser's conditioning on ``z``
  (a per-position embedding with a null row, summed over positions and added to the
  time + label embedding of a :class:`~neural3d.diffusion.unet.UNet`; optionally also z's
  centroid image as extra input channels).
- :class:`Kaleido`: extractor + prior + a denoiser ``net(x_t, t, y=, z=)``. Training is joint:
  one loss, the diffusion objective conditioned on ``(c, z)`` plus ``prior_weight`` times the
  prior's cross-entropy, in the same optimiser step. The two parts share no parameters and ``z``
  is a fixed function of the data, so this is two-stage training run side by side. For
  classifier-free guidance ``c`` and ``z`` are dropped *together* (to the null label and the
  null latent); sampling draws ``z ~ p(z | c)``, then ``x`` with guidance whose unconditional
  branch has neither.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neural3d.diffusion.guidance import classifier_free_guidance
from neural3d.diffusion.parameterization import DiffusionObjective
from neural3d.diffusion.samplers import sample as run_sampler


# ---------------------------------------------------------------------------- extractor
class KMeansExtractor(nn.Module):
    """``extractor(x) -> z [B, L]`` (long, in ``[0, clusters)``), ``L = cells^2`` (1 for
    vectors). Raises until :meth:`fit` has run (or fitted centroids were loaded)."""

    def __init__(self, clusters: int = 16, channels: int = 3, pool: int = 4, cells: int = 2):
        super().__init__()
        if pool and pool % cells:
            raise ValueError(f"pool {pool} must be divisible by cells {cells}")
        self.clusters, self.pool, self.cells = clusters, pool, cells
        self.length = cells * cells if pool else 1
        dim = channels * (pool // cells) ** 2 if pool else channels
        self.register_buffer("centroids", torch.zeros(clusters, dim))
        self.register_buffer("fitted", torch.tensor(False))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Cell features ``[B, L, D]`` of images ``[B, C, H, W]`` (or vectors ``[B, D]``)."""
        if not self.pool:
            return x[:, None, :]
        b, c = x.shape[:2]
        s, n = self.pool // self.cells, self.cells
        x = F.adaptive_avg_pool2d(x, self.pool).reshape(b, c, n, s, n, s)
        return x.permute(0, 2, 4, 1, 3, 5).reshape(b, n * n, c * s * s)

    @torch.no_grad()
    def fit(self, x: torch.Tensor, iters: int = 50, seed: int = 0) -> None:
        """k-means of all cells of ``x`` (k-means++ initialisation from a generator seeded with
        ``seed``, then ``iters`` Lloyd iterations; an empty cluster takes the point farthest from
        its centroid). Deterministic for the same data."""
        f = self.features(x).reshape(-1, self.centroids.shape[1]).detach().cpu().double()
        if len(f) < self.clusters:
            raise ValueError(f"k-means needs at least {self.clusters} cells, got {len(f)}")
        g = torch.Generator().manual_seed(seed)
        cent = f[torch.randint(len(f), (1,), generator=g)]
        for _ in range(1, self.clusters):
            d2 = torch.cdist(f, cent).min(1).values.pow(2)
            cent = torch.cat([cent, f[torch.multinomial(d2 + 1e-12, 1, generator=g)]])
        for _ in range(iters):
            dist = torch.cdist(f, cent)
            assign = dist.argmin(1)
            new = torch.zeros_like(cent).index_add_(0, assign, f)
            count = torch.bincount(assign, minlength=self.clusters)
            empty = count == 0
            new = new / count.clamp(min=1)[:, None]
            if empty.any():
                far = dist.gather(1, assign[:, None])[:, 0].topk(int(empty.sum())).indices
                new[empty] = f[far]
            if torch.equal(new, cent):
                break
            cent = new
        self.centroids.copy_(cent.to(self.centroids))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.fitted):
            raise RuntimeError("the k-means extractor has not been fitted on the training set")
        f = self.features(x)
        return torch.cdist(f, self.centroids.to(f)[None]).argmin(-1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The centroid image of ``z [B, L]``: ``[B, C, pool, pool]``, each cell filled with its
        centroid (the inverse of :meth:`features`; null ids ``>= clusters`` give zeros).
        ``extractor(decode(z)) == z`` for non-null ``z``: a centroid is nearest to itself."""
        if not self.pool:
            raise ValueError("decode needs an image extractor (pool > 0)")
        s, n = self.pool // self.cells, self.cells
        table = torch.cat([self.centroids, self.centroids.new_zeros(1, self.centroids.shape[1])])
        f = table[z.long().clamp(max=self.clusters)]
        b, c = len(z), f.shape[-1] // (s * s)
        f = f.reshape(b, n, n, c, s, s).permute(0, 3, 1, 4, 2, 5)
        return f.reshape(b, c, self.pool, self.pool)


# ---------------------------------------------------------------------------- prior
class ARPrior(nn.Module):
    """``p(z | c)`` over ``L`` tokens of ``clusters`` values: a causal (pre-norm) transformer
    over ``[c, z_1, .., z_{L-1}]`` with learned positions whose output ``l`` gives the logits of
    ``z_{l+1}``. Labels ``0..num_classes-1`` (``num_classes`` = null label)."""

    def __init__(self, clusters: int, length: int, num_classes: int, dim: int = 64,
                 depth: int = 2, heads: int = 4):
        super().__init__()
        self.clusters, self.length, self.num_classes = clusters, length, num_classes
        self.label = nn.Embedding(num_classes + 1, dim)
        self.token = nn.Embedding(clusters, dim)
        self.pos = nn.Parameter(torch.randn(length, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, clusters))

    def logits(self, y: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, n + 1, clusters]`` of ``z_1 .. z_{n+1}`` given ``prefix = z_1..z_n``
        (``[B, n]``, ``n < L``) and labels ``y [B]``."""
        h = torch.cat([self.label(y.long())[:, None], self.token(prefix.long())], 1)
        n = h.shape[1]
        h = h + self.pos[:n]
        mask = nn.Transformer.generate_square_subsequent_mask(n, device=h.device, dtype=h.dtype)
        return self.head(self.encoder(h, mask=mask, is_causal=True))

    def loss(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Teacher-forced cross-entropy (mean over tokens) of ``z [B, L]`` given ``y``."""
        logits = self.logits(y, z[:, :-1])
        return F.cross_entropy(logits.reshape(-1, self.clusters), z.reshape(-1))

    @torch.no_grad()
    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> torch.Tensor:
        """``z [B, L]`` drawn token by token (categorical draws on the CPU from
        ``generator``)."""
        z = torch.zeros(len(y), 0, dtype=torch.long, device=y.device)
        for _ in range(self.length):
            p = torch.softmax(self.logits(y, z)[:, -1].float().cpu() / temperature, -1)
            nxt = torch.multinomial(p, 1, generator=generator).to(y.device)
            z = torch.cat([z, nxt], 1)
        return z


# ---------------------------------------------------------------------------- conditioning
class LatentEmbedding(nn.Module):
    """``z [B, L]`` (ids in ``[0, clusters)``, ``clusters`` = null) -> ``[B, dim]``: the sum
    over positions of a per-position table; ``z=None`` is the null latent at every position.

    The table starts at zero, so a denoiser it conditions starts as the same network without
    ``z`` and learns to use ``z`` from there (ours: with ``nn.Embedding``'s N(0, 1) rows the sum
    over L positions has sqrt(L) times the label embedding's scale and swamps the time
    embedding it is added to)."""

    def __init__(self, clusters: int, length: int, dim: int):
        super().__init__()
        self.clusters, self.length = clusters, length
        self.table = nn.Embedding(length * (clusters + 1), dim)
        nn.init.zeros_(self.table.weight)

    def null(self, batch: int, device=None) -> torch.Tensor:
        return torch.full((batch, self.length), self.clusters, dtype=torch.long, device=device)

    def forward(self, z: torch.Tensor | None, batch: int, device=None) -> torch.Tensor:
        if z is None:
            z = self.null(batch, device)
        offset = torch.arange(self.length, device=z.device) * (self.clusters + 1)
        return self.table(z.long() + offset).sum(1)


class LatentConditioned(nn.Module):
    """A :class:`~neural3d.diffusion.unet.UNet` whose time + label embedding also gets
    :class:`LatentEmbedding` of ``z``: ``net(x, t, y=None, z=None) -> [B, C, H, W]``.

    With an ``image_of`` extractor (ours; the paper feeds its latents as tokens only) the
    U-Net also reads ``z``'s centroid image (:meth:`KMeansExtractor.decode`, nearest-upsampled
    to ``x``'s size) and a channel of ones as ``C + 1`` extra input channels (zeros for the
    null latent): the coarse layout ``z`` stands for, given where it is in the image. The U-Net
    must be built with ``cond_channels = C + 1``; the input convolution's weights of those
    channels start at zero."""

    def __init__(self, unet: nn.Module, clusters: int, length: int,
                 image_of: KMeansExtractor | None = None):
        super().__init__()
        self.unet = unet
        self.latent = LatentEmbedding(clusters, length, unet.embed.time[-1].out_features)
        self.image_of = image_of
        if image_of is not None:
            channels = image_of.centroids.shape[1] // (image_of.pool // image_of.cells) ** 2
            if unet.cond_channels != channels + 1:
                raise ValueError(f"the U-Net has {unet.cond_channels} cond channels; the latent "
                                 f"image needs {channels + 1} (the image's channels + 1)")
            with torch.no_grad():   # starts as the U-Net without z, like the embedding
                unet.in_conv.weight[:, -unet.cond_channels:].zero_()

    def latent_image(self, z: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        """``[B, C + 1, H, W]``: ``z``'s centroid image and a ones channel where ``z`` is not
        null (``z=None``: all null)."""
        if self.image_of is None:
            return None
        if z is None:
            z = self.latent.null(x.shape[0], x.device)
        picture = F.interpolate(self.image_of.decode(z).to(x), size=x.shape[-2:],
                                mode="nearest")
        present = (z < self.latent.clusters).all(1).to(x)[:, None, None, None]
        return torch.cat([picture, present.expand(-1, 1, *x.shape[-2:])], 1) * present

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                z: torch.Tensor | None = None) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.unet.embed(t, y) + self.latent(z, x.shape[0], x.device)
        return self.unet.out(self.unet.features(x, emb, cond=self.latent_image(z, x)))


# ---------------------------------------------------------------------------- the model
class Kaleido(nn.Module):
    """Extractor + prior + denoiser ``net(x_t, t, y=, z=)`` (see the module docstring).

    ``forward(x0, y, generator) -> (loss, {"diffusion", "prior"})``;
    :meth:`sample` draws ``z`` then ``x``."""

    def __init__(self, net: nn.Module, extractor: KMeansExtractor, prior: ARPrior,
                 objective: DiffusionObjective, null_label: int, cond_drop: float = 0.1,
                 prior_weight: float = 1.0):
        super().__init__()
        if extractor.length != prior.length or extractor.clusters != prior.clusters:
            raise ValueError("extractor and prior disagree on the latent's length or clusters")
        self.net, self.extractor, self.prior = net, extractor, prior
        self.objective, self.null_label = objective, null_label
        self.cond_drop, self.prior_weight = cond_drop, prior_weight

    def fit(self, x: torch.Tensor, iters: int = 50, seed: int = 0) -> None:
        """Fit the extractor on the training set ``x``."""
        self.extractor.fit(x, iters, seed)

    def drop(self, y: torch.Tensor, z: torch.Tensor, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace, with probability ``cond_drop`` per sample, both ``y`` and ``z`` by their
        null values (the same draw for both)."""
        if self.cond_drop <= 0:
            return y, z
        d = (torch.rand(y.shape, generator=generator) < self.cond_drop).to(y.device)
        return (torch.where(d, torch.full_like(y, self.null_label), y),
                torch.where(d[:, None], torch.full_like(z, self.extractor.clusters), z))

    def forward(self, x0: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None):
        z = self.extractor(x0)
        prior = self.prior.loss(z, y)
        y_d, z_d = self.drop(y, z, generator)
        diffusion = self.objective.loss(self.net, x0, generator=generator, y=y_d, z=z_d)
        return diffusion + self.prior_weight * prior, {"diffusion": diffusion.detach(),
                                                       "prior": prior.detach()}

    @torch.no_grad()
    def sample(self, shape: tuple, y: torch.Tensor | None = None, cfg_scale: float = 1.0,
               generator: torch.Generator | None = None, device=None,
               z: torch.Tensor | None = None, **sampler_kw) -> torch.Tensor:
        """Samples of ``shape`` ``[n, ...]``: ``z ~ p(z | y)`` (unless given), then the sampler
        of ``sampler_kw`` (``sampler``, ``steps``, ... of
        :func:`~neural3d.diffusion.samplers.sample`) with classifier-free guidance whose
        unconditional branch has the null label *and* the null latent. ``y=None`` samples the
        unconditional model (null label, null latent)."""
        model, cond = self.net, {}
        if y is not None:
            y = y.to(device)
            z = self.prior.sample(y, generator) if z is None else z.to(device)
            cond = {"y": y, "z": z}
            if cfg_scale != 1.0:
                n = len(y)
                model = classifier_free_guidance(self.net, cfg_scale, {
                    "y": torch.full_like(y, self.null_label),
                    "z": torch.full((n, self.extractor.length), self.extractor.clusters,
                                    dtype=torch.long, device=device)})
        return run_sampler(model, shape, self.objective.schedule,
                           parameterization=self.objective.parameterization, model_kwargs=cond,
                           generator=generator, device=device, **sampler_kw)
