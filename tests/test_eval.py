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
    if saved["fid"] is None:
        assert saved["fid_reason"]
