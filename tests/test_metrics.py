"""Metrics: PSNR, SSIM vs scikit-image, LPIPS wiring (random backbone), FID/KID."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from neural3d.metrics import (
    build_lpips,
    evaluate_views,
    frechet_distance,
    get_lpips,
    kid_from_features,
    lpips_distance,
    psnr,
    ssim,
)
from neural3d.metrics.fid import InceptionFeatures, fid_from_features, stylegan_resize


def test_psnr_known_value():
    a = torch.zeros(2, 8, 8, 3)
    b = torch.full((2, 8, 8, 3), 0.1)
    assert psnr(a, b).item() == pytest.approx(20.0, abs=1e-4)
    assert psnr(a, b, reduction="none").shape == (2,)
    with pytest.raises(ValueError):
        psnr(a, b[:, :4])


def _pairs():
    """A fixed random pair and a toy render pair (smooth shaded object, a blurred noisy render)."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(32, 40, 3, generator=g, dtype=torch.float64)
    yield a, (a + 0.15 * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 48, dtype=torch.float64),
                            torch.linspace(-1, 1, 48, dtype=torch.float64), indexing="ij")
    mask = (xx**2 + yy**2 < 0.6).double()
    shade = torch.stack([0.8 - 0.3 * yy, 0.4 + 0.2 * xx, 0.3 + 0 * xx], -1).clamp(0, 1)
    ref = mask[..., None] * shade + (1 - mask[..., None])          # object on white
    blur = torch.nn.functional.avg_pool2d(ref.permute(2, 0, 1)[None], 3, 1, 1,
                                          count_include_pad=False)[0].permute(1, 2, 0)
    yield ref, (blur + 0.02 * torch.randn(ref.shape, generator=g, dtype=torch.float64)).clamp(0, 1)


@pytest.mark.parametrize("pair", range(2))
def test_ssim_default_is_scikit_image_default(pair):
    from skimage.metrics import structural_similarity

    a, b = list(_pairs())[pair]
    ref = structural_similarity(a.numpy(), b.numpy(), channel_axis=-1, data_range=1)
    assert ssim(a, b).item() == pytest.approx(ref, abs=1e-6)
    assert ssim(a, b, variant="uniform").item() == ssim(a, b).item()
    ref_g = structural_similarity(a.numpy(), b.numpy(), gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, data_range=1, channel_axis=-1)
    assert ssim(a, b, variant="gaussian").item() == pytest.approx(ref_g, abs=1e-6)
    assert abs(ref - ref_g) > 1e-4  # the two variants are different numbers
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("variant", ["uniform", "gaussian"])
def test_ssim_batch_is_per_image(variant):
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 24, 24, 3, generator=g)
    b = (a + 0.15 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    kw = ({} if variant == "uniform" else
          {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False})
    ours = ssim(a, b, reduction="none", variant=variant)
    for i in range(2):
        ref = structural_similarity(a[i].numpy(), b[i].numpy(), data_range=1, channel_axis=-1,
                                    **kw)
        assert ours[i].item() == pytest.approx(ref, abs=1e-5)
    with pytest.raises(ValueError, match="variant"):
        ssim(a, b, variant="box")


def test_lpips_wiring_with_random_backbone():
    model = build_lpips("alex", random_backbone=True)
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 32, 32, 3, generator=g), torch.rand(2, 32, 32, 3, generator=g)
    assert torch.allclose(lpips_distance(model, a, a), torch.zeros(2), atol=1e-6)
    d_ab, d_ba = lpips_distance(model, a, b), lpips_distance(model, b, a)
    assert torch.allclose(d_ab, d_ba, atol=1e-6) and (d_ab > 0).all()


def test_lpips_missing_weights_gives_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    model, reason = get_lpips("vgg")
    assert model is None and "vgg16-397923af.pth" in reason
    out = evaluate_views(torch.rand(1, 16, 16, 3), torch.rand(1, 16, 16, 3))
    assert out["lpips"] is None and "offline" in out["lpips_reason"]
    assert math.isfinite(out["psnr"]) and math.isfinite(out["ssim"])


class _FakeLPIPS(torch.nn.Module):
    pass


def _lpips_world(monkeypatch, tmp_path, fetch_ok: bool):
    """No network and no 500 MB files: ``build_lpips`` finds "weights" once the fake fetch put
    them in the (temporary) hub cache; returns the list of nets fetched."""
    import neural3d.metrics.lpips as lp

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    fetched = []

    def build(net="vgg", backbone_weights=None, random_backbone=False):
        path = Path(backbone_weights) if backbone_weights else lp.backbone_path(net)
        if not path.is_file():
            raise FileNotFoundError(f"LPIPS-{net}: {path.name} not found at {path}")
        return _FakeLPIPS()

    def fetch(net, timeout=20.0):
        fetched.append(net)
        if not fetch_ok:
            raise OSError("URLError: <urlopen error [Errno -3] name resolution failed>")
        lp.backbone_path(net).parent.mkdir(parents=True, exist_ok=True)
        lp.backbone_path(net).write_bytes(b"weights")
        return lp.backbone_path(net)

    monkeypatch.setattr(lp, "build_lpips", build)
    monkeypatch.setattr(lp, "fetch_backbone", fetch)
    return fetched


def test_lpips_fetches_missing_weights_when_online(tmp_path, monkeypatch):
    monkeypatch.delenv("NEURAL3D_OFFLINE", raising=False)
    fetched = _lpips_world(monkeypatch, tmp_path, fetch_ok=True)
    model, reason = get_lpips("alex")
    assert isinstance(model, _FakeLPIPS) and reason is None and fetched == ["alex"]
    model, reason = get_lpips("alex")  # cached now: no second download
    assert isinstance(model, _FakeLPIPS) and fetched == ["alex"]


def test_lpips_failed_download_is_null_with_reason(tmp_path, monkeypatch):
    monkeypatch.delenv("NEURAL3D_OFFLINE", raising=False)
    fetched = _lpips_world(monkeypatch, tmp_path, fetch_ok=False)
    model, reason = get_lpips("vgg")
    assert model is None and fetched == ["vgg"]
    assert "vgg16-397923af.pth" in reason and "download failed (offline?)" in reason
    out = evaluate_views(torch.rand(1, 16, 16, 3), torch.rand(1, 16, 16, 3))
    assert out["lpips"] is None and "download failed" in out["lpips_reason"]


@pytest.mark.parametrize("value", ["1", "true"])
def test_lpips_offline_opt_out_never_fetches(tmp_path, monkeypatch, value):
    monkeypatch.setenv("NEURAL3D_OFFLINE", value)
    fetched = _lpips_world(monkeypatch, tmp_path, fetch_ok=True)
    model, reason = get_lpips("vgg")
    assert model is None and fetched == [] and "offline (NEURAL3D_OFFLINE=1)" in reason


def test_lpips_given_weights_path_is_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.delenv("NEURAL3D_OFFLINE", raising=False)
    fetched = _lpips_world(monkeypatch, tmp_path, fetch_ok=True)
    model, reason = get_lpips("vgg", tmp_path / "mine.pth")
    assert model is None and fetched == [] and "mine.pth" in reason
    monkeypatch.setenv("NEURAL3D_LPIPS_ALEX_WEIGHTS", str(tmp_path / "env.pth"))
    model, reason = get_lpips("alex")
    assert model is None and fetched == [] and "env.pth" in reason


def test_fetch_backbone_fails_fast_as_oserror(tmp_path, monkeypatch):
    """torchvision's download failing (no network) is an OSError naming the cause; the socket
    timeout is restored."""
    import socket
    import urllib.error

    torchvision = pytest.importorskip("torchvision")
    from neural3d.metrics.lpips import fetch_backbone

    seen = []

    def fail(self, *a, **kw):
        seen.append((self.url, socket.getdefaulttimeout(), kw))
        raise urllib.error.URLError("name resolution failed")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torchvision.models.AlexNet_Weights, "get_state_dict", fail)
    before = socket.getdefaulttimeout()
    with pytest.raises(OSError, match="URLError.*name resolution failed"):
        fetch_backbone("alex", timeout=3.0)
    assert seen == [("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", 3.0,
                     {"progress": False, "check_hash": True})]
    assert socket.getdefaulttimeout() == before


def test_frechet_distance_gaussians():
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
    s = np.diag([1.0, 2.0, 3.0])
    assert frechet_distance(mu1, s, mu1, s) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(mu1, s, mu2, s) == pytest.approx(5.0, abs=1e-8)
    # 1-D: (sqrt(a) - sqrt(b))^2
    assert frechet_distance(np.zeros(1), np.array([[4.0]]), np.zeros(1), np.array([[1.0]])) \
        == pytest.approx(1.0)


def test_fid_low_rank_path_agrees_with_sqrtm():
    from neural3d.metrics.fid import feature_stats

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 40)), rng.normal(size=(25, 40)) * 1.3 + 0.2
    ref = frechet_distance(*feature_stats(a), *feature_stats(b))
    assert fid_from_features(a, b) == pytest.approx(ref, rel=1e-6)
    assert abs(fid_from_features(a, a)) < 1e-9


def test_kid_zero_in_expectation_and_grows():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    c = rng.normal(size=(200, 16)) + 1.0
    kab, kac = kid_from_features(a, b, num_subsets=20), kid_from_features(a, c, num_subsets=20)
    assert abs(kab) < 0.05 < kac


def test_stylegan_resize_identity_at_299():
    x = torch.rand(1, 3, 299, 299)
    assert torch.allclose(stylegan_resize(x), x, atol=1e-4)


@pytest.mark.slow
def test_fid_self_zero_and_monotone_in_noise():
    ext = InceptionFeatures()
    g = torch.Generator().manual_seed(0)
    # smooth random images, and one fixed low-frequency noise pattern scaled by sigma
    up = torch.nn.functional.interpolate
    base = up(torch.rand(12, 3, 4, 4, generator=g), size=64, mode="bicubic").clamp(0, 1)
    noise = up(torch.randn(12, 3, 8, 8, generator=g), size=64, mode="bilinear")
    base, noise = base.permute(0, 2, 3, 1), noise.permute(0, 2, 3, 1)
    f0 = ext(base)
    assert f0.shape == (12, 2048)
    assert abs(fid_from_features(f0, f0)) < 1e-6
    fids = [fid_from_features(f0, ext((base + sigma * noise).clamp(0, 1)))
            for sigma in (0.05, 0.15, 0.4)]
    assert 1.0 < fids[0] < fids[1] < fids[2], fids


def test_to_8bit_rounds_like_a_saved_png():
    from neural3d.metrics import to_8bit

    x = torch.tensor([0.0, 0.5, 1 / 510 - 1e-4, 1 / 510 + 1e-4, 1.2, -0.1], dtype=torch.float64)
    assert to_8bit(x).tolist() == pytest.approx([0, 128 / 255, 0, 1 / 255, 1, 0])
    u8 = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_8bit(u8), u8.float() / 255)
    assert torch.equal(to_8bit(to_8bit(u8)), u8.float() / 255)  # idempotent on 8-bit values


@pytest.mark.parametrize("n", [30, 90])
def test_feature_stats_stream_merge_and_round_trip(tmp_path, n):
    from neural3d.metrics.fid import FeatureStats, fid_from_stats

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(n, 40)), rng.normal(0.3, 1.2, size=(70, 40))
    st = FeatureStats(40)
    for chunk in np.array_split(a, 7):
        st.add(chunk)
    assert st.n == n and (st.features() is None) == (n > 40)  # rows kept up to D, then sums
    mu, cov = st.mean_cov()
    assert np.allclose(mu, a.mean(0)) and np.allclose(cov, np.cov(a, rowvar=False))
    halves = FeatureStats(40).add(a[: n // 3]).merge(FeatureStats(40).add(a[n // 3:]))
    assert np.allclose(halves.mean_cov()[1], cov)
    st.save(tmp_path / "s.npz")
    back = FeatureStats.load(tmp_path / "s.npz")
    assert back.n == n and np.allclose(back.mean_cov()[1], cov)
    sb = FeatureStats(40).add(b)
    assert fid_from_stats(st, sb) == pytest.approx(
        frechet_distance(*st.mean_cov(), *sb.mean_cov()), rel=1e-6, abs=1e-6)


def test_feature_stats_reservoir_is_a_uniform_sample(tmp_path):
    from neural3d.metrics.fid import FeatureStats

    st = FeatureStats(4, reservoir=50, seed=0)
    rows = np.repeat(np.arange(1000, dtype=np.float64)[:, None], 4, 1)
    for chunk in np.array_split(rows, 13):
        st.add(chunk)
    assert st.features() is None and st.kid_features().shape == (50, 4)
    ids = st.kid_features()[:, 0]
    assert len(set(ids)) == 50 and set(ids) <= set(range(1000))
    assert 300 < ids.mean() < 700  # spread over the stream, not its first rows
    st.save(tmp_path / "r.npz")
    assert np.array_equal(FeatureStats.load(tmp_path / "r.npz").kid_features(), st.kid_features())
