"""Typed run settings: frozen dataclasses validated once, at construction, with one-line errors.

    TrainConfig   a training run (`minicnn train`, and every pruning run's baseline)
    PruneConfig   a pruning run: one schedule of amounts, fine-tuned after every step (`minicnn prune`)
    SweepConfig   a grid of pruning runs over seeds (`minicnn sweep`)

The CLI builds them; checkpoints, run.json and sweep.json store them (``to_dict``, flat JSON, the same
keys as the CLI's options); a rerun compares its config with the stored one (``differences``) and
refuses other settings. All three share the data and optimiser settings of ``_Common``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from minicnn import paper
from minicnn.errors import MiniCNNError

MAX_SEED = 2**32 - 1


# ----------------------------------------------------------------------------------- validators
def _finite(name: str, value, *, low: float, low_open: bool = False, high: float | None = None,
            high_open: bool = False) -> float:
    """``value`` as a float within the bounds, else MiniCNNError naming the option."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise MiniCNNError(f"{name} must be a number, got {value!r}") from None
    bounds = ("(" if low_open else "[") + f"{low:g}, " + ("inf)" if high is None else f"{high:g}" +
                                                           (")" if high_open else "]"))
    if not math.isfinite(value):
        raise MiniCNNError(f"{name} must be a finite number in {bounds}, got {value}")
    if value < low or (low_open and value == low) or (high is not None and (value > high or
                                                                            (high_open and value == high))):
        raise MiniCNNError(f"{name} must be in {bounds}, got {value:g}")
    return value


def _count(name: str, value, *, low: int, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise MiniCNNError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _seed(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise MiniCNNError(f"{name} must be an integer in 0 ... {MAX_SEED} (2**32 - 1), got {value!r}")
    return value


def _choice(name: str, value, choices) -> str:
    if value not in choices:
        raise MiniCNNError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
    return value


def _distinct(name: str, values: tuple, example: str) -> tuple:
    if not values:
        raise MiniCNNError(f"{name} is empty; pass e.g. {name} {example}")
    repeated = sorted({f"{v:g}" if isinstance(v, float) else str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise MiniCNNError(f"{name} repeats {', '.join(repeated)}; give each value once")
    return values


def _amounts(values) -> tuple[float, ...]:
    from minicnn.pruning.masks import check_amounts

    return tuple(check_amounts(values))


def _method_scope(methods, scope: str, criterion: str) -> None:
    from minicnn.pruning.criteria import get_criterion
    from minicnn.pruning.masks import check_method_scope

    for method in methods:
        check_method_scope(method, scope)
    get_criterion(criterion)


def _rewind(schedule: str, value, choose: str = "--schedule lth") -> str | None:
    """lth's rewind point as stored: "init" or a positive epoch as text (default "init"); None otherwise.
    ``choose``: how the user selects lth, for the error."""
    if schedule != "lth":
        if value is not None:
            raise MiniCNNError("--rewind applies only to the lth schedule (it resets the weights after each "
                               f"pruning step); drop --rewind or pass {choose}")
        return None
    if value is None or str(value).strip() == "init":
        return "init"
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise MiniCNNError(f"--rewind must be init or a baseline epoch >= 1, got {value!r}")
    return str(int(text))


def rewind_epochs(rewind: str | None) -> tuple[int, ...]:
    """The baseline epochs whose weights lth runs with ``rewind`` (as stored) rewind to: (k,) for epoch k,
    () for init or no lth (the baseline's training saves these snapshots)."""
    return (int(rewind),) if rewind not in (None, "init") else ()


def criterion_tag(criterion: str) -> str:
    """What a run folder's name says of its criterion: "-CRITERION", nothing for magnitude (the paper's)."""
    return "" if criterion == "magnitude" else f"-{criterion}"


# --------------------------------------------------------------------------------------- configs
@dataclass(frozen=True, kw_only=True)
class _Common:
    """What every run shares: the model, the optimiser's fixed settings and the data selection."""

    arch: str = paper.ARCH
    batch_size: int = paper.BATCH_SIZE
    momentum: float = 0.0
    weight_decay: float = 0.0
    normalize: str = paper.NORMALIZE
    train_limit: int | None = None
    test_limit: int | None = None

    def __post_init__(self):
        from minicnn.io.data import NORMALIZATIONS
        from minicnn.nn.model import check_arch

        _count("--batch-size", self.batch_size, low=1)
        _count("--train-limit", self.train_limit, low=1, optional=True)
        # a spec that cannot be built, or too large to train here (a batch is at most the training images)
        check_arch(self.arch, min(self.batch_size, self.train_limit or self.batch_size))
        self._set("momentum", _finite("--momentum", self.momentum, low=0.0, high=1.0, high_open=True))
        self._set("weight_decay", _finite("--weight-decay", self.weight_decay, low=0.0))
        _choice("--normalize", self.normalize, NORMALIZATIONS)
        _count("--test-limit", self.test_limit, low=1, optional=True)

    def _set(self, name: str, value) -> None:
        """Store a normalised value (e.g. an int lr as float) in the frozen instance, during validation."""
        object.__setattr__(self, name, value)

    def to_dict(self) -> dict:
        """Flat JSON-ready settings (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict):
        """The config stored by ``to_dict`` (keys of other kinds, e.g. a step number, are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names})

    def differences(self, stored: dict, ignore: tuple = ()) -> list[str]:
        """'lr: 0.8 -> 0.01' for every setting whose stored value differs from this config's. A setting
        absent from ``stored`` (recorded before the setting existed) counts as its default."""
        mine = self.to_dict()
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.default is not dataclasses.MISSING}
        defaults = json.loads(json.dumps(defaults))  # as to_dict stores them (tuples as lists)
        was = {k: stored.get(k, defaults.get(k)) for k in mine}
        return [f"{k}: {was[k]!r} -> {v!r}" for k, v in mine.items() if k not in ignore and was[k] != v]


@dataclass(frozen=True, kw_only=True)
class TrainConfig(_Common):
    """A training run. ``epochs`` may grow on a rerun (the run is extended); the others define the run."""

    epochs: int = paper.BASELINE_EPOCHS
    lr: float = paper.BASELINE_LR
    seed: int = 0

    #: Settings a rerun into the same checkpoint may change (the run continues).
    EXTENDABLE = ("epochs",)

    def __post_init__(self):
        super().__post_init__()
        _count("--epochs", self.epochs, low=1)
        self._set("lr", _finite("--lr", self.lr, low=0.0, low_open=True))
        _seed("--seed", self.seed)

    @classmethod
    def paper_baseline(cls, common: _Common, seed: int) -> "TrainConfig":
        """The paper's baseline (lr 0.8, batch 512, 10 epochs, plain SGD) on ``common``'s model and data."""
        return cls(arch=common.arch, normalize=common.normalize, train_limit=common.train_limit,
                   test_limit=common.test_limit, seed=seed)


@dataclass(frozen=True, kw_only=True)
class PruneConfig(_Common):
    """A pruning run: ``amounts`` applied in turn by ``schedule``, fine-tuned ``epochs`` at ``lr`` after each.
    ``baseline``: the trained checkpoint to prune (None: train the paper's baseline into the run folder).
    ``compact``: fine-tune structured-pruned models with removed units physically dropped (same result).
    ``criterion``: what ranks the weights (``minicnn.pruning.criteria``; magnitude is the paper's).
    ``rewind`` (lth only, default "init"): "init" or a baseline epoch k as text; ``agp_steps`` and
    ``agp_interval`` (agp only; None: 10 updates, a tenth of an epoch's batches): minicnn.pruning.schedules."""

    schedule: str
    method: str
    lr: float
    amounts: tuple[float, ...] = paper.AMOUNTS
    epochs: int = paper.FINE_TUNE_EPOCHS
    scope: str = "layer"
    criterion: str = "magnitude"
    seed: int = 0
    baseline: str | None = None
    compact: bool = True
    rewind: str | None = None
    agp_steps: int | None = None
    agp_interval: int | None = None

    def __post_init__(self):
        super().__post_init__()
        _choice("schedule", self.schedule, paper.ALL_SCHEDULES)
        _method_scope((self.method,), self.scope, self.criterion)
        self._set("rewind", _rewind(self.schedule, self.rewind))
        for name in ("agp_steps", "agp_interval"):
            value = _count(f"--{name.replace('_', '-')}", getattr(self, name), low=1, optional=True)
            if value is not None and self.schedule != "agp":
                raise MiniCNNError(f"--{name.replace('_', '-')} applies only to --schedule agp; drop it")
        self._set("lr", _finite("--lr", self.lr, low=0.0, low_open=True))
        self._set("amounts", _amounts(self.amounts))
        _count("--epochs", self.epochs, low=0)
        _seed("--seed", self.seed)
        if self.baseline is not None:
            self._set("baseline", str(self.baseline))

    def baseline_config(self) -> TrainConfig:
        return TrainConfig.paper_baseline(self, self.seed)


@dataclass(frozen=True, kw_only=True)
class SweepConfig(_Common):
    """A grid: every (schedule, method, criterion, lr) for every seed, each a PruneConfig over ``amounts``,
    all sharing one baseline per seed. ``rewind`` is the lth runs' (default "init"). More ``seeds`` on a
    rerun extend the sweep."""

    schedules: tuple[str, ...] = paper.SCHEDULES
    methods: tuple[str, ...] = paper.METHODS
    lrs: tuple[float, ...] = paper.LRS
    amounts: tuple[float, ...] = paper.AMOUNTS
    seeds: tuple[int, ...] = (0,)
    epochs: int = paper.FINE_TUNE_EPOCHS
    scope: str = "layer"
    criteria: tuple[str, ...] = ("magnitude",)
    compact: bool = True
    rewind: str | None = None

    EXTENDABLE = ("seeds",)

    def __post_init__(self):
        super().__post_init__()
        for value in _distinct("--schedules", tuple(self.schedules), "oneshot,iterative"):
            _choice("schedule", value, paper.ALL_SCHEDULES)
        methods = _distinct("--methods", tuple(self.methods), "unstructured,structured")
        criteria = _distinct("--criteria", tuple(self.criteria), "magnitude,random")
        for criterion in criteria:
            _method_scope(methods, self.scope, criterion)
        self._set("criteria", criteria)
        self._set("rewind", _rewind("lth" if "lth" in self.schedules else "", self.rewind,
                                           "--schedules with lth"))
        lrs = tuple(_finite("--lrs", v, low=0.0, low_open=True) for v in self.lrs)
        self._set("lrs", _distinct("--lrs", lrs, "0.8,0.01,0.0001"))
        seeds = tuple(_seed("--seeds", v) for v in self.seeds)
        self._set("seeds", _distinct("--seeds", seeds, "0,1,2"))
        self._set("schedules", tuple(self.schedules))
        self._set("methods", tuple(self.methods))
        self._set("amounts", _amounts(self.amounts))
        _count("--epochs", self.epochs, low=0)

    @staticmethod
    def _with_criteria(stored: dict) -> dict:
        """Stored settings with ``criteria``: a sweep stored with one ``criterion`` (before ``criteria``)
        is that one criterion."""
        if "criteria" not in stored and "criterion" in stored:
            return {**stored, "criteria": [stored["criterion"]]}
        return stored

    @classmethod
    def from_dict(cls, values: dict):
        return super().from_dict(cls._with_criteria(values))

    def differences(self, stored: dict, ignore: tuple = ()) -> list[str]:
        return super().differences(self._with_criteria(stored), ignore)

    def baseline_path(self, out_dir: Path, seed: int) -> Path:
        return Path(out_dir) / "baselines" / f"seed{seed}.h5"

    def runs(self, out_dir: Path) -> list[tuple[PruneConfig, Path]]:
        """Every (pruning config, run directory) of the grid, seeds outermost. A run's directory is
        SCHEDULE-METHOD-lrLR-seedS, with -CRITERION after METHOD for a criterion other than magnitude."""
        out_dir = Path(out_dir)
        common = {f.name: getattr(self, f.name) for f in dataclasses.fields(_Common)}
        return [(PruneConfig(**common, schedule=schedule, method=method, lr=lr, amounts=self.amounts,
                             epochs=self.epochs, scope=self.scope, seed=seed, compact=self.compact,
                             criterion=criterion, rewind=self.rewind if schedule == "lth" else None,
                             baseline=str(self.baseline_path(out_dir, seed))),
                 out_dir / "runs" / f"{schedule}-{method}{criterion_tag(criterion)}-lr{lr:g}-seed{seed}")
                for seed in self.seeds for schedule in self.schedules for method in self.methods
                for criterion in self.criteria for lr in self.lrs]
