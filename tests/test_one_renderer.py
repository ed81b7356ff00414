"""One renderer: ``neural3d fit``'s FitModel, SSDNeRF's render path and the nerfstudio plugin's
model render the same image for the same triplane field and the same sampler (torch backend).

The nerfstudio part needs nerfstudio (``.venv-ns``) and is skipped without it.
"""

import pytest
import torch

from neural3d.cameras import Cameras, orbit_path
from neural3d.fields import TriplaneFieldConfig
from neural3d.methods.fit import FitModel
from neural3d.methods.ssdnerf import SSDNeRFModel
from neural3d.methods.ssdnerf.config import ModelConfig, SSDNeRFConfig

AABB = (-0.5, -0.5, -0.5, 0.5, 0.5, 0.5)
RES, CH, HIDDEN, LAYERS = 16, 4, 16, 2
FIELD = TriplaneFieldConfig(resolution=RES, channels=CH, hidden=HIDDEN, layers=LAYERS,
                            init_std=0.5, density_activation="trunc_exp")


@pytest.fixture(autouse=True)
def _torch_backend(monkeypatch, one_thread):
    monkeypatch.setenv("NEURAL3D_BACKEND", "torch")


@pytest.fixture(scope="module")
def fit_model():
    """A FitModel with a random triplane and an occupancy grid carved to a ball."""
    torch.manual_seed(0)
    c = (torch.arange(RES) + 0.5) / RES - 0.5
    hull = torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1).norm(dim=-1) < 0.42
    model = FitModel(FIELD, torch.tensor(AABB), RES, hull, step=0.015,
                     background=(1.0, 1.0, 1.0))
    return model.eval()


@pytest.fixture(scope="module")
def cams():
    return Cameras(orbit_path(2, radius=1.3, elevation_deg=25.0), 30.0, 30.0, 12.0, 10.0, 24, 20)


def ssdnerf_like(fit: FitModel, n_samples: int = 48):
    """SSDNeRF with FitModel's decoder; its latent is FitModel's triplane."""
    cfg = SSDNeRFConfig(model=ModelConfig(
        plane_channels=CH, plane_res=RES, decoder_hidden=HIDDEN, decoder_layers=LAYERS,
        density_activation="trunc_exp", aabb=list(AABB), n_samples=n_samples,
        background=[1.0, 1.0, 1.0], unet_channels=8, unet_mult=[1], unet_blocks=1,
        unet_attention=[]))
    model = SSDNeRFModel(cfg).eval()
    model.field.decoder.load_state_dict(fit.field.decoder.state_dict())
    return model, fit.field.planes.detach()


def test_fit_and_ssdnerf_render_the_same_image(fit_model, cams):
    fit_img = torch.stack([fit_model.render_image(cams[i], chunk=100) for i in range(len(cams))])
    ssd, latent = ssdnerf_like(fit_model)
    ssd.renderer.sampler = fit_model.grid  # the same sampler: fit's occupancy grid
    ssd_img = ssd.render_views(latent, cams, chunk=77)
    assert fit_img.shape == ssd_img.shape == (2, 20, 24, 3)
    torch.testing.assert_close(ssd_img, fit_img)
    assert 0.05 < float((fit_img < 0.99).float().mean()) < 0.95  # object and background
    # SSDNeRF's training path (render_rays, in eval mode: no jitter) gives the same pixels
    o, d = cams[0].pixel_rays()
    rays = ssd.render_rays(latent, o.reshape(1, -1, 3), d.reshape(1, -1, 3))["rgb"][0]
    torch.testing.assert_close(rays.reshape(20, 24, 3).clamp(0, 1), fit_img[0])


def test_fit_render_rays_matches_the_renderer_directly(fit_model, cams):
    from neural3d.render import RendererConfig, VolumeRenderer

    o, d = cams[1].pixel_rays()
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    jitter = torch.rand(o.shape[0], generator=torch.Generator().manual_seed(0))
    timings = {}
    ours = fit_model.render_rays(o, d, jitter, timings=timings)
    r = VolumeRenderer(RendererConfig(aabb=AABB))
    ref = r(fit_model.field, o, d, sampler=fit_model.grid, jitter=jitter,
            background=torch.ones(3))
    for k in ("rgb", "opacity", "depth"):
        torch.testing.assert_close(ours[k], ref[k])
    assert float(ours["samples"]) == ref["samples"] == timings["samples"] > 0
    assert ours["backend"] == timings["backend"] == "torch"
    assert {"march", "field", "composite"} <= set(timings)
    # the grid buffers are what checkpoints store
    assert {"grid.aabb", "grid.hull", "grid.occ", "grid.density_ema"} <= set(
        fit_model.state_dict())


def _nerfstudio_model(fit: FitModel, **overrides):
    pytest.importorskip("torchvision", reason="nerfstudio needs torchvision")
    pytest.importorskip("nerfstudio", reason="nerfstudio is only in .venv-ns")
    from nerfstudio.data.scene_box import SceneBox

    from neural3d.integrations.nerfstudio.model import Neural3DModelConfig

    cfg = Neural3DModelConfig(field=FIELD, grid_res=RES, backend="torch",
                              background=(1.0, 1.0, 1.0), **overrides)
    model = cfg.setup(scene_box=SceneBox(aabb=torch.tensor(AABB).reshape(2, 3)),
                      num_train_data=1, metadata={}, device="cpu")
    model.field.load_state_dict(fit.field.state_dict())
    return model.eval()


def _ns_image(model, cams) -> torch.Tensor:
    from nerfstudio.cameras.rays import RayBundle

    o, d = cams.pixel_rays()
    out = []
    for i in range(len(cams)):
        rb = RayBundle(origins=o[i], directions=d[i], pixel_area=torch.ones(*o.shape[1:3], 1),
                       camera_indices=torch.zeros(*o.shape[1:3], 1, dtype=torch.long))
        out.append(model.get_outputs_for_camera_ray_bundle(rb)["rgb"])
    return torch.stack(out).clamp(0, 1)


def test_nerfstudio_plugin_renders_the_same_image(fit_model, cams):
    model = _nerfstudio_model(fit_model, eval_num_rays_per_chunk=123)
    assert model.grid is not None
    model.grid.load_state_dict(fit_model.grid.state_dict())
    model.grid.step = fit_model.grid.step
    fit_img = torch.stack([fit_model.render_image(cams[i]) for i in range(len(cams))])
    torch.testing.assert_close(_ns_image(model, cams), fit_img)


def test_nerfstudio_stratified_mode_is_ssdnerfs_default_sampler(fit_model, cams):
    model = _nerfstudio_model(fit_model, occupancy_grid=False, num_samples=40)
    assert model.grid is None
    ssd, latent = ssdnerf_like(fit_model, n_samples=40)
    torch.testing.assert_close(_ns_image(model, cams), ssd.render_views(latent, cams))

