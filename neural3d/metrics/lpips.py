"""LPIPS through the ``lpips`` package, only with the real backbone weights.

The ``lpips`` wheel ships its linear heads; the AlexNet/VGG16 backbones are torchvision's. We
build ``lpips.LPIPS(..., pnet_rand=True)`` (random backbone, no download inside lpips) and load
the backbone weights ourselves from the torch hub cache (``$TORCH_HOME/hub/checkpoints/``:
``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``) or from a path the user gives
(``backbone_weights``, ``NEURAL3D_LPIPS_{ALEX,VGG}_WEIGHTS``).

When the cached weights are missing, :func:`get_lpips` lets torchvision fetch them into the cache
(:func:`fetch_backbone`: announced, with a socket timeout so that a machine without network
fails fast instead of hanging) unless ``NEURAL3D_OFFLINE=1``; a weights path that was given is
never replaced by a download. When no weights can be had it returns ``(None, reason)`` and the
evaluation reports ``lpips: null`` with that reason: never a figure from a random backbone.
SSDNeRF/pixelNeRF report LPIPS-VGG; ``alex`` is also available.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
#: approximate download sizes (announced before a fetch)
BACKBONE_MB = {"alex": 233, "vgg": 528}


def backbone_path(net: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]


def build_lpips(net: str = "vgg", backbone_weights: str | Path | None = None,
                random_backbone: bool = False) -> torch.nn.Module:
    """An ``lpips.LPIPS`` module (eval, frozen). ``random_backbone=True`` is for wiring tests
    only. Raises ``FileNotFoundError`` when the backbone weights are not available offline."""
    import lpips  # noqa: F401  (optional extra)

    if net not in BACKBONE_FILES:
        raise ValueError(f"LPIPS net must be one of {sorted(BACKBONE_FILES)}, got {net!r}")
    path = Path(backbone_weights) if backbone_weights else backbone_path(net)
    if not random_backbone and not path.is_file():  # checked before building anything
        raise FileNotFoundError(
            f"LPIPS-{net} needs the torchvision backbone weights {path.name}, not found at "
            f"{path} (copy the file there or pass its path)")
    import warnings

    with warnings.catch_warnings():  # lpips calls torchvision with the deprecated pretrained=
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    if not random_backbone:
        import torchvision

        tv = torchvision.models.alexnet() if net == "alex" else torchvision.models.vgg16()
        tv.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        features = tv.features
        for name, sl in model.net.named_children():
            if name.startswith("slice"):
                for idx, layer in sl.named_children():
                    layer.load_state_dict(features[int(idx)].state_dict())
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def offline() -> bool:
    """``NEURAL3D_OFFLINE=1`` (or ``true``/``yes``): never download anything."""
    return os.environ.get("NEURAL3D_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def fetch_backbone(net: str, timeout: float = 20.0) -> Path:
    """Let torchvision download the ImageNet weights of LPIPS-``net``'s backbone into the torch
    hub cache (:func:`backbone_path`; announced on stderr, hash checked). Sockets time out after
    ``timeout`` seconds, so an unreachable server fails fast; any failure raises ``OSError``."""
    import socket

    import torchvision

    weights = (torchvision.models.AlexNet_Weights.IMAGENET1K_V1 if net == "alex"
               else torchvision.models.VGG16_Weights.IMAGENET1K_V1)
    print(f"LPIPS-{net}: downloading the torchvision backbone weights (~{BACKBONE_MB[net]} MB) "
          f"to {backbone_path(net)} (NEURAL3D_OFFLINE=1 turns this off)", file=sys.stderr,
          flush=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # URLError, timeouts, a bad hash (RuntimeError): all "no weights"
        raise OSError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        socket.setdefaulttimeout(previous)
    return backbone_path(net)


def get_lpips(net: str = "vgg", backbone_weights: str | Path | None = None
              ) -> tuple[torch.nn.Module | None, str | None]:
    """``(module, None)`` when real weights are available, else ``(None, reason)``. Missing
    cached weights are fetched (:func:`fetch_backbone`) unless ``NEURAL3D_OFFLINE=1`` or a
    weights path was given."""
    weights = backbone_weights or os.environ.get(f"NEURAL3D_LPIPS_{net.upper()}_WEIGHTS")
    try:
        return build_lpips(net, weights), None
    except ImportError as exc:
        return None, f"the lpips package is not installed ({exc}); pip install 'neural3d[lpips]'"
    except FileNotFoundError as exc:
        missing = str(exc)
    if weights:
        return None, missing
    if offline():
        return None, f"{missing}; not downloaded: offline (NEURAL3D_OFFLINE=1)"
    try:
        fetch_backbone(net)
    except OSError as exc:
        return None, f"{missing}; the download failed (offline?): {exc}"
    return build_lpips(net), None


@torch.no_grad()
def lpips_distance(model: torch.nn.Module, pred: torch.Tensor, target: torch.Tensor,
                   batch: int = 16) -> torch.Tensor:
    """Per-image LPIPS ``[N]`` of images ``[N, H, W, 3]`` (or ``[H, W, 3]``) in [0, 1]."""
    if pred.dim() == 3:
        pred, target = pred[None], target[None]
    dev = next(model.parameters()).device
    out = []
    for i in range(0, pred.shape[0], batch):
        a = pred[i:i + batch].permute(0, 3, 1, 2).float().to(dev) * 2 - 1
        b = target[i:i + batch].permute(0, 3, 1, 2).float().to(dev) * 2 - 1
        out.append(model(a, b).flatten().cpu())
    return torch.cat(out)
