"""``neural3d export``: safetensors inference weights that neural3d.load reads back (identical
renders), coloured meshes (PLY, OBJ, GLB) from a fit and from SSDNeRF/StyleNeRF samples, and
one-line errors for bad formats, outputs and sample indices."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import neural3d
from neural3d.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _torch_backend(monkeypatch):
    monkeypatch.setenv("NEURAL3D_BACKEND", "torch")  # no kernel JIT here


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    from neural3d.data.toy import write_toy_dataset

    root = tmp_path_factory.mktemp("toy")
    write_toy_dataset(root, "cars", objects=4, views=6, test_views=6, res=16, seed=0,
                      test_objects=2, progress=False)
    return root


@pytest.fixture(scope="module")
def runs(toy_root, tmp_path_factory):
    """Tiny checkpoints of fit, SSDNeRF (EMA kept and warmed up) and StyleNeRF."""
    from neural3d.methods import train_method
    from neural3d.methods.ssdnerf import SSDNeRF
    from neural3d.methods.ssdnerf.config import tiny_config as ssd_tiny
    from neural3d.methods.stylenerf.config import tiny_config as sty_tiny
    from neural3d.methods.stylenerf.method import StyleNeRF

    out = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEURAL3D_BACKEND", "torch")
        assert main(["fit", "--data", str(toy_root / "cars_train" / "car_train_00000"),
                     "--steps", "6", "--out", str(out / "fit"), "--quiet", "rays=128",
                     "turntable_frames=0", "grid_res=16", "grid_warmup=2", "grid_every=2",
                     "--threads", "1"]) == 0
        # ema_decay 0.1 over 6 steps: 6 * 0.9 >= 5, so load(ema="auto") takes the EMA copy
        train_method(SSDNeRF(ssd_tiny(toy_root, out / "ssdnerf", steps=6, ema_decay=0.1)),
                     log=lambda *a, **k: None)
        train_method(StyleNeRF(sty_tiny(toy_root, out / "stylenerf", steps=2)),
                     log=lambda *a, **k: None)
    return {m: out / m / "checkpoints" / "last.pt" for m in ("fit", "ssdnerf", "stylenerf")}


def _render(method, name):
    """A deterministic image of each method: the scene, or sample 1 of seed 3."""
    from neural3d.cameras import Cameras, orbit_path

    cams = Cameras.srn(orbit_path(2, 1.3, 20.0), 16)
    if name == "fit":
        return method.render(None, method.camera_path("orbit", 2))
    return method.render(method.sample(2, seed=3)[1], cams)


@pytest.mark.parametrize("name", ["fit", "ssdnerf", "stylenerf"])
def test_safetensors_round_trip_renders_identically(runs, tmp_path, name):
    from safetensors.torch import load_file

    from neural3d.methods.registry import module_states

    out = tmp_path / "exp"
    assert main(["export", str(runs[name]), "--format", "safetensors", "--out", str(out),
                 "--threads", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    rec = json.loads((out / "config.json").read_text())
    assert rec["method"] == name and rec["format_version"] == 1 and "config" in rec
    assert rec["export"]["format"] == "neural3d-safetensors-1"
    before, after = neural3d.load(runs[name]), neural3d.load(out)
    again = neural3d.load(out / "model.safetensors")
    assert type(after) is type(before) and after.cfg == before.cfg
    assert after.checkpoint_step == before.checkpoint_step == rec["export"]["step"]
    img = _render(before, name)
    assert torch.equal(_render(after, name), img) and torch.equal(_render(again, name), img)
    # weights only: exactly the modules' inference weights, no optimiser or trainer state
    ckpt = torch.load(runs[name], weights_only=True)
    flat = load_file(out / "model.safetensors")
    states = module_states(ckpt, "auto")
    expect = {f"{m}.{k}" for m, sd in states.items() for k in sd}
    assert set(flat) - expect <= {"tensors.mean_latent"} and expect <= set(flat)
    for m, sd in states.items():
        for k, v in sd.items():
            assert torch.equal(flat[f"{m}.{k}"], v.cpu()), f"{m}.{k}"
    assert not any(k.startswith(("optimizers", "schedulers", "emas", "rng")) for k in flat)
    if name == "ssdnerf":   # the EMA copy (warmed up), not the raw weights
        assert rec["export"]["ema"] == ["model"]
        raw = ckpt["modules"]["model"]
        assert any(not torch.equal(flat[f"model.{k}"], v) for k, v in raw.items()
                   if v.is_floating_point())
        # reconstruction starts from the mean training latent, which the export carries
        assert torch.equal(after.mean_latent, before.mean_latent)
        assert after.latents is None


def _level(method, name, res):
    """An iso-level inside the density range of sample 0 / the scene (tiny models)."""
    from neural3d.export import density_grid

    if name == "fit":
        fn, box = method.model.density, method.model.grid.aabb
    elif name == "ssdnerf":
        lat = method.sample(1, 0)[0]
        fn = lambda p: method.model.field(p[None], planes=lat)[0][0]  # noqa: E731
        box = torch.tensor(method.cfg.model.aabb)
    else:
        f = method.generator.synthesis.point_field(method.sample(1, 0)[0])
        fn, box = (lambda p: f(p)[0]), torch.tensor(method.cfg.generator.aabb)
    return float(density_grid(fn, box, res).quantile(0.8))


@pytest.mark.parametrize("name", ["fit", "ssdnerf", "stylenerf"])
def test_meshes_in_every_format_with_vertex_colours(runs, tmp_path, name):
    import trimesh

    from neural3d.export import read_mesh

    level = _level(neural3d.load(runs[name]), name, 16)
    verts = {}
    for fmt in ("ply", "obj", "glb"):
        out = tmp_path / f"m.{fmt}"
        assert main(["export", str(runs[name]), "--format", fmt, "--out", str(out),
                     "--resolution", "16", "--level", str(level), "--threads", "1"]) == 0
        mesh = trimesh.load(out, process=False, force="mesh")
        assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
        assert mesh.visual.kind == "vertex"
        assert np.asarray(mesh.visual.vertex_colors).shape == (len(mesh.vertices), 4)
        v, f, c = read_mesh(out)
        assert c.shape == (len(v), 3) and f.max() < len(v)
        verts[fmt] = v
    assert np.allclose(verts["ply"], verts["glb"], atol=1e-6)
    assert np.allclose(verts["ply"], verts["obj"], atol=1e-6)


@pytest.mark.parametrize("name", ["ssdnerf", "stylenerf"])
def test_sample_meshes_are_deterministic_per_index_and_seed(runs, tmp_path, name):
    from neural3d.export import read_mesh

    method = neural3d.load(runs[name])
    level = _level(method, name, 12)

    def mesh(index, seed, path):
        assert main(["export", str(runs[name]), "--out", str(path), "--sample-index",
                     str(index), "--seed", str(seed), "--res", "12", "--level", str(level),
                     "--threads", "1"]) == 0
        return read_mesh(path)

    a, b = mesh(0, 0, tmp_path / "a.ply"), mesh(0, 0, tmp_path / "b.ply")
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    c = mesh(1, 0, tmp_path / "c.ply")
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])


def test_default_output_paths(runs):
    """No --out: RUN/export/ (weights) and RUN/export/<mesh>.<format>."""
    run = runs["fit"].parent.parent
    assert main(["export", str(runs["fit"]), "--format", "safetensors", "--threads", "1"]) == 0
    assert (run / "export" / "model.safetensors").is_file()
    from neural3d.commands.export import output_path

    class A:
        ckpt, out, format, sample_index, seed = str(runs["ssdnerf"]), None, "glb", 2, 5

    assert output_path(A, True) == ("glb", runs["ssdnerf"].parent.parent / "export" /
                                    "sample_002_seed5.glb")
    A.out = "here/m"
    assert output_path(A, True) == ("glb", Path("here/m.glb"))


@pytest.mark.parametrize("args,words", [
    (["--format", "stl"], ["--format", "'stl'", "ply, obj, glb, safetensors"]),
    (["--out", "m.stl"], ["--format", "'ply'"]),   # no format: suffix unknown -> ply ...
    (["--format", "obj", "--out", "m.ply"], ["--out", "does not end in .obj"]),
    (["--format", "safetensors", "--out", "w.bin"], ["--out", "folder"]),
    (["--sample-index", "-1"], ["--sample-index", ">= 0"]),
    (["--sample-index", "1"], ["--sample-index", "one scene"]),
    (["--res", "1"], ["--res"]),
])
def test_bad_export_options_are_one_line_errors(runs, tmp_path, capsys, args, words):
    out = [] if "--out" in args else ["--out", str(tmp_path / "m.ply")]
    rc = main(["export", str(runs["fit"]), *out, *args, "--threads", "1"])
    err = capsys.readouterr().err.strip()
    if args == ["--out", "m.stl"]:     # ... and then the suffix does not match the format
        words = ["--out", "does not end in .ply"]
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert all(w in err for w in words), err
    assert not (tmp_path / "m.ply").exists()


def test_no_surface_and_broken_export_are_one_line_errors(runs, tmp_path, capsys):
    assert main(["export", str(runs["fit"]), "--out", str(tmp_path / "m.ply"), "--res", "8",
                 "--level", "1e9", "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no surface" in err and "--level" in err
    out = tmp_path / "exp"
    assert main(["export", str(runs["fit"]), "--format", "safetensors", "--out", str(out),
                 "--threads", "1"]) == 0
    (out / "model.safetensors").write_bytes(b"\0" * 16)
    assert main(["render", str(out), "--frames", "1", "--out", str(tmp_path / "v.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.safetensors" in err
    (out / "model.safetensors").unlink()
    assert main(["export", str(out), "--format", "safetensors", "--out",
                 str(tmp_path / "again"), "--threads", "1"]) == 2
    assert "model.safetensors" in capsys.readouterr().err
