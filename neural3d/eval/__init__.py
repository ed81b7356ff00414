"""The evaluation protocol behind ``neural3d eval`` (see :mod:`.protocol`).

- :func:`evaluate_nvs`: novel-view synthesis from given input view(s) of each test object
  (SSDNeRF / pixelNeRF's SRN protocol): PSNR, SSIM, LPIPS per object and mean, and FID of all
  renders against the test-set images.
- :func:`evaluate_generation`: FID/KID of renders of sampled objects at test poses.

Both write ``results.json`` and ``results.md`` and record split, views, resolution, image counts
and the git commit.
"""

from neural3d.eval.protocol import (
    EvalError,
    evaluate_generation,
    evaluate_nvs,
    parse_shard,
    parse_views,
    write_reference_stats,
)

__all__ = ["EvalError", "evaluate_generation", "evaluate_nvs", "parse_shard", "parse_views",
           "write_reference_stats"]
