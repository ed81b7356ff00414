"""Methods as plugins: one registry that the CLI, the evaluation protocol and checkpoint loading
dispatch through.

A method is a subclass of :class:`Method` decorated with :func:`register_method`::

    @register_method
    class MyMethod(Method):
        name = "mine"
        summary = "one line for `neural3d methods`"
        Config = MyConfig                      # a dataclass with a `train: TrainConfig` section

        def build(self) -> Built: ...          # modules + optimisers (+ scheduler)
        def step(self, trainer, step) -> dict: ...   # losses of one step ("loss" required)
        # optional capabilities, detected by being overridden:
        def sample(self, num, seed=0, **opts) -> list: ...      # states (latents, images, ...)
        def render(self, state, cameras) -> Tensor: ...         # [V, H, W, 3] in [0, 1]
        def reconstruct(self, images, cameras, **opts): ...     # a state from posed views
        def export(self, out, **opts) -> list[Path]: ...        # meshes (neural3d export;
        #   state=: mesh a reconstructed state, for methods that reconstruct)
        # with `render`: where viewers start (neural3d view)
        def home_camera(self) -> Cameras: ...
        # not a capability: tensors that a safetensors export keeps besides the weights
        def inference_tensors(self) -> dict[str, Tensor]: ...

Built-in methods live in the modules and packages of :mod:`neural3d.methods` (each registers
itself on import); third-party packages add theirs through the entry-point group
``neural3d.methods`` (the entry point names a module or a class; loading it registers the
method), as nerfstudio discovers its plugins. Nothing else lists methods.

Checkpoints written through a method carry ``record = {"method", "config", "format_version"}``;
:func:`load` rebuilds any method from that record (:meth:`Method.from_checkpoint`), also from
the safetensors folders of ``neural3d export`` (:mod:`neural3d.methods.weights`).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

#: version of the ``record`` a method stores in its checkpoints
FORMAT_VERSION = 1
#: optional capabilities, in the order ``neural3d methods`` prints them
CAPABILITIES = ("sample", "reconstruct", "render", "export")
ENTRY_POINT_GROUP = "neural3d.methods"


class MethodError(ValueError):
    """Unknown method, a checkpoint of another method, or a capability the method lacks."""


@dataclass
class Built:
    """What :meth:`Method.build` returns for the trainer (:class:`~neural3d.train.Trainer`):
    named modules (``{"model": m}`` for a single network, ``{"G": g, "D": d}`` for a GAN), their
    optimisers by name, an LR scheduler (or ``{optimiser name: scheduler}``), EMA decays by
    module name (None: ``train.ema_decay`` for ``"model"``), ``manual=True`` when ``step`` runs
    its own ``trainer.backward_step`` calls (GANs), and extra state to checkpoint
    (``{name: (get, set)}``)."""

    modules: dict[str, nn.Module]
    optimizers: dict[str, Any] = field(default_factory=dict)
    scheduler: Any = None
    ema: dict[str, float] | None = None
    manual: bool = False
    state: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = field(
        default_factory=dict)


class Method:
    """Base class of every method (see the module docstring).

    ``Method(cfg, device)`` holds the typed config and the device; training goes through
    :func:`neural3d.methods.training.train_method` (build, the shared trainer, ``step``);
    inference instances come from :meth:`from_checkpoint`. ``self.modules`` holds the built or
    loaded modules by name.

    Contracts: :meth:`build` must not read training data (the default :meth:`from_checkpoint`
    calls it to rebuild the modules): read data in :meth:`setup`, or override
    :meth:`from_checkpoint`. In :meth:`step`, call modules through ``trainer.modules[name]``
    (the DDP wrapper under torchrun): a sub-function called on the raw module bypasses DDP's
    gradient reduction, so route such calls through the module's ``forward`` (keyword
    arguments).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Config: ClassVar[type]
    #: the dataset category the model was trained on (evaluation picks the test split by it)
    category: str | None = None

    def __init__(self, cfg: Any, device: str | torch.device = "cpu"):
        if not isinstance(cfg, self.Config):
            raise TypeError(f"{type(self).__name__} needs a {self.Config.__name__}, got "
                            f"{type(cfg).__name__}")
        self.cfg = cfg
        self.device = torch.device(device)
        self.modules: dict[str, nn.Module] = {}
        self.checkpoint_path: str | None = None   # set by load()
        self.checkpoint_step = 0
        self.train_seconds = 0.0                  # set by train_method (evaluation excluded)
        self.clock = None                         # its TrainingClock while it runs

    # ------------------------------------------------------------------ training
    def train_config(self):
        """The shared trainer's :class:`~neural3d.train.TrainConfig` (default ``cfg.train``)."""
        return self.cfg.train

    def build(self) -> Built:
        raise MethodError(f"method {self.name!r} cannot be trained")

    def setup(self, trainer) -> None:
        """Called once the trainer exists, before resuming (named generators, data on device)."""

    def step(self, trainer, step: int) -> Mapping[str, Any]:
        raise MethodError(f"method {self.name!r} cannot be trained")

    def should_stop(self, trainer, step: int) -> bool:
        """True ends training after ``step`` (then checkpointed as at the end)."""
        return False

    def evaluate(self, trainer, step: int) -> Mapping[str, Any]:
        """Scalars and images ``[H, W, 3]`` logged (under ``eval/``) every
        ``train.eval_every`` steps and at the end (default: nothing). Built-in methods return a
        sample grid (generative methods) or a held-out render and held-out PSNR (``fit``).
        Runs with the global RNG forked (training continues as without it); work whose only
        use is the logs can be skipped when ``trainer.logger`` is None. Sample with
        :func:`neural3d.methods.training.eval_module`."""
        return {}

    def finish(self, trainer) -> dict[str, Any]:
        """After training: write the method's outputs; returns a summary (printed by the CLI)."""
        last = trainer.history[-1] if trainer.history else {}
        return {k: v for k, v in last.items() if k != "step"}

    # ------------------------------------------------------------------ checkpoints
    def record(self) -> dict[str, Any]:
        """What a checkpoint stores to rebuild this method (under ``record``)."""
        from neural3d.config import to_dict

        return {"method": self.name, "config": to_dict(self.cfg),
                "format_version": FORMAT_VERSION}

    @classmethod
    def config_from_record(cls, record: Mapping[str, Any]):
        """The typed config of a checkpoint ``record`` (methods override this to read older
        record layouts)."""
        from neural3d.config import from_dict

        return from_dict(cls.Config, dict(record["config"]))

    @classmethod
    def from_checkpoint(cls, ckpt: Mapping[str, Any], device: str | torch.device = "cpu",
                        ema: bool | str = "auto") -> Method:
        """An inference instance: ``build()`` then the checkpoint's weights (the EMA copy of a
        module per :func:`use_ema`), in eval mode."""
        method = cls(cls.config_from_record(ckpt["record"]), device)
        built = method.build()
        states = module_states(ckpt, ema)
        for name, module in built.modules.items():
            load_weights(module, states, name)
            module.to(method.device).eval()
        method.modules = built.modules
        method.loaded(ckpt)
        return method

    def loaded(self, ckpt: Mapping[str, Any]) -> None:
        """Hook after :meth:`from_checkpoint` filled ``self.modules`` (e.g. read extra state)."""

    def check_files(self) -> None:
        """Hook after :func:`rebuild` set :attr:`checkpoint_path`: check that files the
        checkpoint refers to but does not hold (e.g. a latent cache in its run folder) exist,
        raising :class:`~neural3d.train.checkpoint.CheckpointError` naming a missing one."""

    # ------------------------------------------------------------------ capabilities
    def sample(self, num: int, seed: int = 0, **opts):
        """``num`` samples (a list of states for 3D methods, an image tensor for 2D ones)."""
        raise MethodError(f"method {self.name!r} cannot sample")

    def write_samples(self, out: Path, num: int, seed: int = 0, **opts) -> list[Path]:
        """``neural3d sample``: draw ``num`` samples and write what people look at (grids,
        turntables) under ``out``; returns the paths written."""
        raise MethodError(f"method {self.name!r} cannot sample")

    def reconstruct(self, images: torch.Tensor, cameras, **opts):
        raise MethodError(f"method {self.name!r} cannot reconstruct")

    def render(self, state, cameras) -> torch.Tensor:
        raise MethodError(f"method {self.name!r} cannot render")

    def export(self, out: Path, **opts) -> list[Path]:
        """``neural3d export --format ply|obj|glb``: a mesh written to ``out`` (its suffix is
        the format), options ``res``, ``level``, ``sample_index``, ``seed``."""
        raise MethodError(f"method {self.name!r} cannot export")

    def home_camera(self):
        """One camera (``len == 1``, :class:`~neural3d.cameras.Cameras`) looking at what
        :meth:`render` shows, at the method's native image size and intrinsics, with world up +z
        and the scene around the origin: where ``neural3d view`` starts."""
        raise MethodError(f"method {self.name!r} has no camera to view it from")

    def inference_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors besides the modules' weights that inference needs (SSDNeRF: the mean
        training latent); ``neural3d export --format safetensors`` stores them and
        :meth:`from_checkpoint` finds them under ``ckpt["tensors"]``."""
        return {}

    def info(self) -> dict[str, Any]:
        """What an evaluation records about the model (checkpoint, sampler settings, ...)."""
        return {"method": self.name}

    @classmethod
    def capabilities(cls) -> tuple[str, ...]:
        """``train`` when :meth:`step` is implemented, then each of :data:`CAPABILITIES`
        that the class overrides."""
        caps = ["train"] if cls.step is not Method.step else []
        caps += [c for c in CAPABILITIES if getattr(cls, c) is not getattr(Method, c)]
        return tuple(caps)

    # ------------------------------------------------------------------ command line
    @classmethod
    def add_arguments(cls, command: str, parser) -> None:
        """Method-specific options of ``neural3d COMMAND`` for ``command`` in ``train``,
        ``sample``, ``eval nvs``, ``eval generation`` (e.g. ``--sampler`` for ``sample``); they
        arrive as keyword options of the capability (``write_samples``, ``reconstruct``,
        ``sample``)."""


_REGISTRY: dict[str, type[Method]] = {}
_DISCOVERED = False


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: add ``cls`` to the registry under ``cls.name``."""
    if not cls.name:
        raise MethodError(f"{cls.__name__}: a method needs a non-empty `name`")
    if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
        raise MethodError(f"{cls.__name__}: `Config` must be a dataclass")
    other = _REGISTRY.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise MethodError(f"method name {cls.name!r} is taken by {other.__module__}."
                          f"{other.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def unregister_method(name: str) -> None:
    """Remove a method (tests that register a throw-away method clean up with this)."""
    _REGISTRY.pop(name, None)


def discover() -> None:
    """Import the built-in method modules and the ``neural3d.methods`` entry points (once)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    import neural3d.methods as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_") and mod.name not in ("registry", "training"):
            importlib.import_module(f"{pkg.__name__}.{mod.name}")
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        if isinstance(obj, type) and issubclass(obj, Method):
            register_method(obj)


def available_methods() -> dict[str, type[Method]]:
    """All registered methods by name (sorted)."""
    discover()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str, capability: str | None = None) -> type[Method]:
    """The method class called ``name``; with ``capability``, check that it has it."""
    methods = available_methods()
    if name not in methods:
        raise MethodError(f"unknown method {name!r} (available: {', '.join(methods)})")
    cls = methods[name]
    if capability is not None and capability not in cls.capabilities():
        able = [n for n, c in methods.items() if capability in c.capabilities()]
        raise MethodError(f"method {name!r} cannot {capability} (methods that can: "
                          f"{', '.join(able) or 'none'})")
    return cls


# ----------------------------------------------------------------------------- loading
def method_of(ckpt: Mapping[str, Any], path: str | Path = "checkpoint") -> str:
    """The method name a checkpoint was written by (older 2D-diffusion checkpoints stored their
    experiment config without a name: they are ``diffusion``)."""
    rec = ckpt.get("record")
    if not isinstance(rec, Mapping) or not rec:
        raise MethodError(f"{path}: no method record (not written by neural3d's trainer)")
    if "method" in rec:
        return str(rec["method"])
    if {"model", "diffusion", "data"} <= set(rec):
        return "diffusion"
    raise MethodError(f"{path}: the record names no method")


def use_ema(ema: bool | str, step: int, decay: float) -> bool:
    """Whether to take a kept EMA copy: ``"auto"`` takes it once the average has forgotten the
    initial weights (``step * (1 - decay) >= 5``), so short runs (smoke tests) use the raw
    weights; True/False force it."""
    if ema == "auto":
        return step * (1.0 - decay) >= 5
    return bool(ema)


def ema_modules(ckpt: Mapping[str, Any], ema: bool | str = "auto") -> list[str]:
    """The modules whose kept EMA copy :func:`module_states` takes (both layouts)."""
    step = int(ckpt.get("step", 0))
    emas = ckpt.get("emas") or {} if "modules" in ckpt else {"model": ckpt.get("ema")}
    return [name for name, e in emas.items() if e and use_ema(ema, step, float(e["decay"]))]


def module_states(ckpt: Mapping[str, Any], ema: bool | str = "auto") -> dict[str, dict]:
    """Weights by module name from a trainer checkpoint, the EMA copy where one was kept and
    :func:`use_ema` says so (:func:`ema_modules`).

    Reads both layouts: named modules (``ckpt["modules"]``, ``ckpt["emas"][name]``) and the
    single-model one (``ckpt["model"]``, ``ckpt["ema"]``), whose module is ``"model"``."""
    if "modules" in ckpt:
        states = dict(ckpt["modules"])
        for name in ema_modules(ckpt, ema):
            states[name] = ckpt["emas"][name]["module"]
        return states
    return {"model": ckpt["ema"]["module"] if ema_modules(ckpt, ema) else ckpt["model"]}


def load_weights(module: nn.Module, states: Mapping[str, Any], name: str) -> None:
    """``module.load_state_dict(states[name])`` with errors that say what does not fit: a
    missing module, or weights whose names/shapes differ from the module its config builds
    (:class:`~neural3d.train.checkpoint.CheckpointError`)."""
    from neural3d.train.checkpoint import CheckpointError

    if name not in states or not isinstance(states[name], Mapping):
        raise CheckpointError(f"checkpoint holds no weights for module {name!r} "
                              f"(has {sorted(states)})")
    try:
        module.load_state_dict(states[name])
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        detail = " ".join(str(exc).split())
        raise CheckpointError(f"the weights of module {name!r} do not match the module its "
                              f"recorded config builds: {detail[:300]}") from exc


def load(path: str | Path, device: str | torch.device = "cpu", ema: bool | str = "auto",
         method: str | None = None) -> Method:
    """Rebuild any method from its checkpoint (``weights_only`` load), or from the folder (or
    ``model.safetensors``) that ``neural3d export --format safetensors`` wrote
    (:mod:`neural3d.methods.weights`: the weights chosen at export, ``ema`` has no effect),
    ready for inference.

    ``ema``: see :func:`use_ema`. ``method``, when given, must match the checkpoint's."""
    from neural3d.methods.weights import is_export, read_export
    from neural3d.train.checkpoint import load_checkpoint

    ckpt = read_export(path) if is_export(path) else load_checkpoint(path, map_location="cpu")
    return rebuild(ckpt, path, device, ema, method)


def rebuild(ckpt: Mapping[str, Any], path: str | Path, device: str | torch.device = "cpu",
            ema: bool | str = "auto", method: str | None = None) -> Method:
    """:func:`load` of a checkpoint already read from ``path`` (errors name ``path``)."""
    from neural3d.config import ConfigError
    from neural3d.train.checkpoint import CheckpointError

    name = method_of(ckpt, path)
    if method is not None and method != name:
        raise MethodError(f"{path} is a {name!r} checkpoint, not {method!r}")
    cls = get_method(name)
    try:
        inst = cls.from_checkpoint(ckpt, device, ema)
        inst.checkpoint_path = str(path)
        inst.checkpoint_step = int(ckpt.get("step", 0))
        inst.check_files()
    except (ConfigError, CheckpointError) as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: the checkpoint's record does not fit method {name!r} "
                              f"({type(exc).__name__}: {exc})") from exc
    return inst
