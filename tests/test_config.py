from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pytest

from neural3d.config import (
    ConfigError,
    Range,
    TaggedConfig,
    at_least,
    between,
    from_dict,
    invalid,
    load_config,
    positive,
    save_config,
    to_dict,
    validate,
)


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


# ---------------------------------------------------------------- tagged unions (a local family:
# the mechanism knows nothing about fields)
class Shape(TaggedConfig):
    kinds: ClassVar[dict] = {}


@Shape.register
@dataclass
class Circle(Shape):
    kind: ClassVar[str] = "circle"
    radius: float = 1.0


@Shape.register
@dataclass
class Square(Shape):
    kind: ClassVar[str] = "square"
    side: int = 2
    fill: Literal["none", "solid"] = "none"


@dataclass
class Scene:
    seed: int = 0
    shape: Shape = field(default_factory=Circle)


def test_tagged_yaml_forms(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("shape: {kind: square, side: 5}\n")
    assert load_config(Scene, path).shape == Square(side=5)
    path.write_text("shape: square\n")  # short form: that kind with its defaults
    assert load_config(Scene, path).shape == Square()
    path.write_text("shape: {radius: 3}\n")  # no kind: the current (default) kind
    assert load_config(Scene, path).shape == Circle(radius=3.0)


def test_tagged_overrides_switch_kind_and_validate_against_it(tmp_path):
    assert load_config(Scene, None, ["shape.kind=square", "shape.side=4"]).shape == Square(side=4)
    assert load_config(Scene, None, ["shape=square"]).shape == Square()
    path = tmp_path / "s.yaml"
    path.write_text("shape: {kind: circle, radius: 5}\n")
    # the same kind keeps the values, another kind starts from its defaults
    assert load_config(Scene, path, ["shape.kind=circle"]).shape == Circle(radius=5.0)
    assert load_config(Scene, path, ["shape.kind=square", "shape.kind=circle"]).shape == Circle()
    with pytest.raises(ConfigError, match=r"'shape.sied' of kind 'square'.*did you mean 'side'"):
        load_config(Scene, None, ["shape.kind=square", "shape.sied=4"])
    with pytest.raises(ConfigError, match=r"'shape.side' of kind 'circle'"):
        load_config(Scene, path, ["shape.side=4"])
    with pytest.raises(ConfigError, match=r"shape.kind: unknown kind 'hexagon' \(kinds: circle, "
                                          r"square\)"):
        load_config(Scene, None, ["shape.kind=hexagon"])
    path.write_text("shape: hexagon\n")
    with pytest.raises(ConfigError, match="kinds: circle, square"):
        load_config(Scene, path)
    with pytest.raises(ConfigError, match="shape.fill: expected one of none, solid"):
        load_config(Scene, None, ["shape=square", "shape.fill=dotted"])


def test_tagged_to_dict_round_trip(tmp_path):
    cfg = load_config(Scene, None, ["shape.kind=square", "shape.fill=solid", "seed=2"])
    assert to_dict(cfg) == {"seed": 2, "shape": {"kind": "square", "side": 2, "fill": "solid"}}
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(Scene, tmp_path / "out.yaml") == cfg
    assert from_dict(Shape, {"kind": "circle", "radius": 2}) == Circle(radius=2.0)


def test_tagged_registration_errors():
    @dataclass
    class Other(Shape):
        kind: ClassVar[str] = "circle"

    with pytest.raises(ValueError, match="already registered"):
        Shape.register(Other)
    with pytest.raises(TypeError, match="not a config family"):
        TaggedConfig.register(Circle)


@dataclass
class Limited:
    limits: ClassVar[dict[str, Range]] = {"steps": at_least(1), "lr": positive(),
                                          "drop": between(0, 1, hi_open=True),
                                          "sizes": at_least(1)}
    steps: int = 10
    lr: float = 1e-3
    drop: float = 0.0
    sizes: list = field(default_factory=lambda: [1, 2])
    mode: str = "a"

    def validate(self) -> None:
        if self.mode not in ("a", "b"):
            raise invalid("mode", f"must be a or b, got {self.mode!r}")


@dataclass
class HoldsLimited:
    sub: Limited = field(default_factory=Limited)


@pytest.mark.parametrize("override, message", [
    ("sub.steps=0", "sub.steps: must be >= 1, got 0"),
    ("sub.lr=0", "sub.lr: must be > 0, got 0.0"),
    ("sub.lr=.nan", "sub.lr: must be > 0, got nan"),
    ("sub.lr=.inf", "sub.lr: must be > 0, got inf"),
    ("sub.drop=1", "sub.drop: must be in [0, 1), got 1.0"),
    ("sub.sizes=[3,0]", "sub.sizes[1]: must be >= 1, got 0"),
    ("sub.mode=c", "sub.mode: must be a or b, got 'c'"),
])
def test_limits_and_validate_hooks_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(HoldsLimited, overrides=[override])
    assert str(e.value) == message
    assert load_config(HoldsLimited, overrides=["sub.steps=1", "sub.drop=0.5"]).sub.steps == 1
    built = HoldsLimited(Limited(steps=-1))      # built in code: validate() checks it
    with pytest.raises(ConfigError, match=r"^sub\.steps: must be >= 1, got -1$"):
        validate(built)


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\ninner: {steps: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: YAML syntax error \(line 3"):
        load_config(Outer, bad)


def test_every_default_and_shipped_config_passes_its_limits():
    from pathlib import Path

    from neural3d.fields import FIELD_CONFIGS
    from neural3d.methods.diffusion2d.config import DiffusionExperiment
    from neural3d.methods.fit import FitConfig
    from neural3d.methods.nerfdiff.config import NerfDiffConfig
    from neural3d.methods.pixelnerf.config import PixelNeRFConfig
    from neural3d.methods.ssdnerf.config import SSDNeRFConfig
    from neural3d.methods.stylenerf.config import StyleNeRFConfig

    by_prefix = {"ssdnerf": SSDNeRFConfig, "diffusion": DiffusionExperiment,
                 "stylenerf": StyleNeRFConfig, "eg3d": StyleNeRFConfig,
                 "pixelnerf": PixelNeRFConfig, "nerfdiff": NerfDiffConfig}
    for cls in (FitConfig, *by_prefix.values(), *FIELD_CONFIGS.values()):
        validate(cls())
    root = Path(__file__).resolve().parent.parent / "configs"
    for path in sorted(root.rglob("*.yaml")):
        cls = by_prefix.get(path.name.split("_")[0], FitConfig)
        validate(load_config(cls, path))


# ---------------------------------------------------------------- packaged configs by name
def test_packaged_config_by_name_from_any_directory(tmp_path, monkeypatch, capsys):
    """``--config ssdnerf_toycars`` (no .yaml, not a path) finds the config that travels inside
    the package; paths keep working; an unknown name is one line listing the names."""
    from pathlib import Path

    from neural3d.cli import main
    from neural3d.config import PACKAGED_CONFIGS, find_config, packaged_configs
    from neural3d.methods.ssdnerf.config import SSDNeRFConfig

    repo_configs = Path(__file__).resolve().parents[1] / "configs"
    names = packaged_configs()
    assert {"ssdnerf_toycars", "stylenerf_toycars", "fit/default"} <= set(names)
    assert names == {p.relative_to(repo_configs).with_suffix("").as_posix(): PACKAGED_CONFIGS /
                     p.relative_to(repo_configs) for p in sorted(repo_configs.rglob("*.yaml"))}
    monkeypatch.chdir(tmp_path)                       # no configs/ here
    by_name = load_config(SSDNeRFConfig, "ssdnerf_toycars", ["train.steps=3"])
    by_path = load_config(SSDNeRFConfig, repo_configs / "ssdnerf_toycars.yaml", ["train.steps=3"])
    assert by_name == by_path and by_name.model.plane_res == 16
    assert find_config("fit/default") == PACKAGED_CONFIGS / "fit" / "default.yaml"
    with pytest.raises(ConfigError, match="config file not found: ssdnerf_toycars.yaml"):
        find_config("ssdnerf_toycars.yaml")           # a path (suffix) is never looked up by name
    (tmp_path / "mine.yaml").write_text("train: {steps: 7}\n")
    assert load_config(SSDNeRFConfig, "mine.yaml").train.steps == 7
    assert main(["train", "ssdnerf", "--config", "ssdnerf_toycar", "train.steps=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'ssdnerf_toycar'" in err
    assert "ssdnerf_toycars" in err and "fit/default" in err
