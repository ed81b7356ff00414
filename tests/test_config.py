from dataclasses import dataclass, field

import pytest

from neural3d.config import ConfigError, load_config, save_config


@dataclass
class Inner:
    steps: int = 10
    lr: float = 1e-3
    name: str = "a"
    flag: bool = False


@dataclass
class Outer:
    seed: int = 0
    inner: Inner = field(default_factory=Inner)
    sizes: tuple[int, ...] = (1, 2)


def test_defaults_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\ninner:\n  steps: 20\n")
    cfg = load_config(Outer, path, ["inner.lr=0.5", "inner.flag=true", "sizes=[4, 5]"])
    assert cfg.seed == 3 and cfg.inner.steps == 20 and cfg.inner.lr == 0.5
    assert cfg.inner.flag is True and cfg.sizes == (4, 5) and cfg.inner.name == "a"


def test_round_trip(tmp_path):
    cfg = load_config(Outer, None, ["inner.name=zz", "seed=7"])
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(Outer, tmp_path / "out.yaml") == cfg


def test_unknown_key_suggests_nearest(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        load_config(Outer, None, ["inner.stepz=3"])
    path = tmp_path / "bad.yaml"
    path.write_text("inner:\n  lrr: 1\n")
    with pytest.raises(ConfigError, match="inner.lrr.*did you mean 'lr'"):
        load_config(Outer, path)


def test_type_errors_name_the_key():
    with pytest.raises(ConfigError, match="inner.steps: expected an integer"):
        load_config(Outer, None, ["inner.steps=1.5"])
    with pytest.raises(ConfigError, match="inner.flag: expected true/false"):
        load_config(Outer, None, ["inner.flag=maybe"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Outer, "/nonexistent.yaml")
