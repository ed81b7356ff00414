"""Single-object fitting end to end (tiny), the render/export-mesh commands, mesh round trip."""

import json

import numpy as np
import pytest
import torch

from neural3d.cli import main


@pytest.fixture(scope="module")
def toy_object(tmp_path_factory):
    from neural3d.data.toy import write_toy_dataset

    root = tmp_path_factory.mktemp("toy")
    write_toy_dataset(root, "cars", objects=1, views=12, test_views=0, res=32, seed=0,
                      progress=False)
    return root / "cars_train" / "car_train_00000"


@pytest.fixture(scope="module")
def fitted(toy_object, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    rc = main(["fit", "--data", str(toy_object), "--steps", "40", "--out", str(out), "--quiet",
               "rays=512", "turntable_frames=4", "grid_warmup=16", "grid_every=8",
               "ckpt_every=20", "grid_res=32"])
    assert rc == 0
    return out


def test_fit_writes_outputs(fitted, capsys):
    m = json.loads((fitted / "metrics.json").read_text())
    assert m["steps"] == 40 and m["field"] == "triplane" and m["eval_views"] == 2
    assert m["psnr"] > 12 and 0 < m["ssim"] <= 1
    assert m["lpips"] is None or m["lpips"] >= 0
    if m["lpips"] is None:
        assert m["lpips_reason"]
    assert m["backend"] in ("torch", "cpp", "cuda")
    assert (fitted / "renders.png").is_file()
    assert (fitted / "turntable.mp4").is_file() or (fitted / "turntable.gif").is_file()
    assert (fitted / "checkpoints" / "last.pt").is_file() and (fitted / "run.json").is_file()


def test_render_and_export_mesh_commands(fitted, tmp_path):
    ckpt = fitted / "checkpoints" / "last.pt"
    assert main(["render", str(ckpt), "--path", "spiral", "--frames", "3",
                 "--out", str(tmp_path / "s.mp4")]) == 0
    assert (tmp_path / "s.mp4").is_file() or (tmp_path / "s.gif").is_file()
    import neural3d
    from neural3d.export import read_mesh

    model = neural3d.load(ckpt).model
    # a level inside the density range of this (short) fit
    from neural3d.export import density_grid

    grid = density_grid(model.density, model.grid.aabb, 24)
    level = float(grid.quantile(0.9))
    assert main(["export-mesh", str(ckpt), "--out", str(tmp_path / "m.ply"), "--res", "24",
                 "--level", str(level)]) == 0
    v, f, c = read_mesh(tmp_path / "m.ply")
    assert len(v) > 0 and len(f) > 0 and c.shape == (len(v), 3)
    assert f.max() < len(v)
    box = model.grid.aabb.numpy()
    assert (v >= box[:3] - 1e-4).all() and (v <= box[3:] + 1e-4).all()


def test_fit_resume_continues(toy_object, tmp_path):
    args = ["fit", "--data", str(toy_object), "--out", str(tmp_path), "--quiet", "rays=256",
            "turntable_frames=0", "grid_res=16", "grid_warmup=4", "grid_every=4"]
    assert main(args + ["--steps", "6"]) == 0
    assert main(args + ["--steps", "10", "--resume"]) == 0
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["step"] == 10 and run["status"] == "finished"


def test_mesh_round_trip_and_sphere_mesh(tmp_path):
    from neural3d.export import extract_mesh, read_mesh, write_mesh

    def dens(p):
        return torch.where(p.norm(dim=-1) < 0.5, 50.0, 0.0)

    def col(p):
        return torch.tensor([1.0, 0.0, 0.0]).expand(p.shape[0], 3)

    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])
    v, f, c = extract_mesh(dens, col, aabb, res=32, level=25.0)
    r = np.linalg.norm(v, axis=1)
    assert abs(r.mean() - 0.5) < 0.05
    assert (c == [255, 0, 0]).all()
    for fmt in ("ply", "obj", "glb"):
        write_mesh(tmp_path / f"s.{fmt}", v, f, c)
        v2, f2, c2 = read_mesh(tmp_path / f"s.{fmt}")
        # OBJ keeps 8 decimals; GLB is +y up in the file, turned back on reading
        assert np.allclose(v, v2, rtol=0, atol=1e-6 if fmt == "obj" else 1e-7), fmt
        assert np.array_equal(f, f2) and np.array_equal(c, c2), fmt
    with pytest.raises(ValueError, match="no surface"):
        extract_mesh(dens, col, aabb, res=16, level=1e6)


def test_unknown_override_is_an_error(toy_object, tmp_path, capsys):
    assert main(["fit", "--data", str(toy_object), "--out", str(tmp_path), "ray=5"]) == 2
    assert "unknown config key 'ray'" in capsys.readouterr().err


# ------------------------------------------------------------------ typed field configs
def test_fit_config_field_forms(tmp_path):
    from neural3d.config import ConfigError, load_config
    from neural3d.fields import (
        HashGridFieldConfig,
        MLPFieldConfig,
        TriplaneFieldConfig,
        build_field,
    )
    from neural3d.methods.fit import FitConfig

    path = tmp_path / "c.yaml"
    path.write_text("field: {kind: hashgrid, n_levels: 8}\n")
    cfg = load_config(FitConfig, path)
    assert cfg.field == HashGridFieldConfig(n_levels=8)
    assert build_field(cfg.field, [-1, -1, -1, 1, 1, 1]).encoding.n_levels == 8
    path.write_text("field: hashgrid\nsteps: 3\n")  # the short form of older files
    assert load_config(FitConfig, path).field == HashGridFieldConfig()
    assert load_config(FitConfig).field == TriplaneFieldConfig()
    assert load_config(FitConfig, None, ["field.kind=mlp", "field.hidden=32"]).field == \
        MLPFieldConfig(hidden=32)
    with pytest.raises(ConfigError, match="field.resolutoin.*did you mean 'resolution'"):
        load_config(FitConfig, None, ["field.resolutoin=64"])
    with pytest.raises(ConfigError, match="unknown kind 'voxel'.*hashgrid, mlp, triplane"):
        load_config(FitConfig, None, ["field.kind=voxel"])


OLD_FIELD_DEFAULTS = {  # FIELD_DEFAULTS of neural3d.methods.fit before the typed configs
    "triplane": {"resolution": 128, "channels": 12, "hidden": 64, "layers": 2,
                 "aggregate": "sum", "init_std": 0.1, "density_activation": "trunc_exp"},
    "hashgrid": {"n_levels": 12, "n_features": 2, "log2_hashmap_size": 17,
                 "base_resolution": 8, "max_resolution": 256, "hidden": 64},
    "mlp": {"pos_freqs": 8, "hidden": 128, "layers": 4, "skips": [2],
            "density_activation": "trunc_exp"},
}


@pytest.mark.parametrize("kind", sorted(OLD_FIELD_DEFAULTS))
def test_old_record_field_configs_equal_the_new_defaults(kind):
    from neural3d.fields import FIELD_CONFIGS
    from neural3d.methods.fit import record_field_config

    rec = {"field": kind, "field_kwargs": OLD_FIELD_DEFAULTS[kind]}
    assert record_field_config(rec) == FIELD_CONFIGS[kind]()


def test_old_format_checkpoint_loads(fitted, tmp_path):
    """A checkpoint as the previous code wrote it (trainer format 1, record with `fit_config`,
    `field` + `field_kwargs`) loads through neural3d.load and gives the same densities."""
    import neural3d

    ckpt = torch.load(fitted / "checkpoints" / "last.pt", weights_only=True)
    rec = ckpt["record"]
    assert rec["method"] == "fit" and rec["config"]["field"]["kind"] == "triplane"
    legacy = {k: rec[k] for k in ("aabb", "grid_res", "step", "background", "camera")}
    legacy.update(method="fit", field="triplane", field_kwargs=OLD_FIELD_DEFAULTS["triplane"],
                  fit_config={"field": "triplane", "field_kwargs": {}, "steps": 40,
                              "rays": 512, "tv_weight": 0.01, "grid_res": 32})
    old = {k: v for k, v in ckpt.items() if k not in ("modules", "emas", "schedulers")}
    old.update(format="neural3d-trainer-1", record=legacy)
    torch.save(old, tmp_path / "old.pt")
    new, before = neural3d.load(fitted / "checkpoints" / "last.pt"), neural3d.load(
        tmp_path / "old.pt")
    assert before.cfg.steps == 40 and before.cfg.rays == 512 and before.cfg.grid_res == 32
    pts = torch.rand(100, 3) * 0.6 - 0.3
    assert torch.equal(before.model.density(pts), new.model.density(pts))


def test_fit_config_file_field_is_honoured(toy_object, tmp_path):
    """`--config` with an MLP field and no --field fits an MLP (--field used to override it)."""
    import neural3d
    from neural3d.fields import MLPNeRF

    cfg = tmp_path / "mlp.yaml"
    cfg.write_text("field: {kind: mlp, hidden: 32, layers: 2}\nrays: 64\nturntable_frames: 0\n"
                   "grid_res: 16\n")
    out = tmp_path / "out"
    assert main(["fit", "--data", str(toy_object), "--config", str(cfg), "--steps", "2",
                 "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["field"] == "mlp"
    loaded = neural3d.load(out / "checkpoints" / "last.pt")
    model = loaded.model
    assert isinstance(model.field, MLPNeRF) and len(model.field.layers) == 2
    assert loaded.record()["config"]["field"] == {
                            "kind": "mlp", "pos_freqs": 8, "hidden": 32, "layers": 2,
                            "skips": [2], "density_activation": "trunc_exp",
                            "view_dependent": False, "dir_freqs": 4, "out_channels": 3,
                            "rgb": True}


def test_fit_with_a_view_dependent_triplane(toy_object, tmp_path):
    """field.decoder=view_sh: the fit (occupancy sweeps included) runs, and the loaded field's
    colour depends on the view direction while its density does not."""
    import neural3d

    out = tmp_path / "out"
    assert main(["fit", "--data", str(toy_object), "--steps", "6", "--out", str(out), "--quiet",
                 "field.decoder=view_sh", "rays=128", "turntable_frames=0", "grid_res=16",
                 "grid_warmup=2", "grid_every=2"]) == 0
    field = neural3d.load(out / "checkpoints" / "last.pt").model.field
    assert field.view_dependent
    torch.nn.init.normal_(field.decoder.direction.weight)       # as if trained to use views
    pos = torch.zeros(1, 4, 3)
    up, down = torch.zeros(1, 4, 3), torch.zeros(1, 4, 3)
    up[..., 2], down[..., 2] = 1, -1
    (s_up, c_up), (s_down, c_down) = field(pos, up), field(pos, down)
    assert torch.equal(s_up, s_down) and (c_up - c_down).abs().max() > 1e-3


def test_device_flag_is_checked(toy_object, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert main(["fit", "--data", str(toy_object), "--out", str(tmp_path), "--device",
                 "cuda"]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err
    assert main(["fit", "--data", str(toy_object), "--out", str(tmp_path), "--device",
                 "tpu"]) == 2
    assert "--device 'tpu'" in capsys.readouterr().err
