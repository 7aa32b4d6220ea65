"""All settings of a run as one typed object; defaults are the CS3F paper's.

Sources, later wins: the defaults, a YAML file (``--config``), the command line (``--encoder``,
``--task``, and ``--set section.field=value`` for anything else). The resolved object is written
into ``scores.json`` so a run can be repeated.

    task: brain-mri
    encoder: dinov2
    tokens: {q_coarse: 14, q_fine: 2, dim: 128}
    scoring: {variant: MS, rho: 0.1}
    screening: {voxel_percentile: 99.0, flag_mad: 3.0}

Every value is checked where it is defined (the library's settings classes check their own
ranges); an error names the setting as ``section.field``, the name ``--set`` takes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cs3f import __version__
from cs3f.bank import ReferenceBank
from cs3f.decisions import ScreeningRules
from cs3f.encoders import ENCODERS, SliceEncoder
from cs3f.io.result_uids import results_seed
from cs3f.method.batch_scorer import ScoringSettings
from cs3f.method.tokens import TokenSettings
from cs3f.pacs.config import PacsSettings
from cs3f.preprocess import TASKS
from cs3f.preprocess.lung_model import find_weights
from cs3f.preprocess.standard_space import PreprocessSettings
from cs3f.screening import screening_identity

__all__ = ["TASKS", "AppSettings", "SettingsError", "load_settings", "with_lung_weights"]

RULES = Path(__file__).parent / "rules"
TASK_DEFAULTS: dict[str, dict] = {"brain-mri": {}, "lung-ct": {}}
"""Per task, the settings (nested like the YAML) that differ from the defaults below; today
none do beyond the series rules (``rules/<task>.json``) and the preprocessing the task picks.
A new modality is one entry here, one rules file and one entry in cs3f.preprocess.PREPROCESSORS."""


class SettingsError(ValueError):
    """A setting is unknown or has a bad value."""


@dataclass(frozen=True)
class AppSettings:
    """Attributes:
    task: ``brain-mri`` or ``lung-ct``; picks the series rules and the preprocessing.
    encoder: ``dinov2`` or ``dinov3`` (weights from the model path), or a weight-free one:
        ``histogram`` (detects without weights), ``filterbank``, ``gabor``, ``pixels``.
    encoder_batch: slices per encoder forward pass.
    selection_rules: a JSON file in the SDK's series-selection format; empty = the task's.
    tokens, scoring, preprocess: the library's settings (see cs3f.method.tokens,
        cs3f.method.batch_scorer, cs3f.preprocess.standard_space).
    screening: the batch's decision rules (cs3f.screening.ScreeningRules): the SEG threshold's
        ``voxel_percentile``, the flag's ``flag_mad``, the small-batch ``min_batch_warning``.
    report_studies: the report shows figures for this many top-ranked studies (0: none).
    save_preprocessed: also write the standard-space volume and mask of every region.
    show_identifiers: write patient ID, name and accession number into scores.csv, scores.json
        and report.html (default: the study's pseudonym and date only).
    pacs: the PACS, this program's AE title, the query and the listener's rules
        (cs3f.pacs.config.PacsSettings), for ``python -m app pacs`` and ``listen``.
    """

    task: str = "brain-mri"
    encoder: str = "dinov2"
    encoder_batch: int = 32
    selection_rules: str = ""
    tokens: TokenSettings = field(default_factory=TokenSettings)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    preprocess: PreprocessSettings = field(default_factory=PreprocessSettings)
    screening: ScreeningRules = field(default_factory=ScreeningRules)
    report_studies: int = 50
    save_preprocessed: bool = False
    show_identifiers: bool = False
    pacs: PacsSettings = field(default_factory=PacsSettings)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise SettingsError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.encoder not in ENCODERS:
            raise SettingsError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.encoder_batch < 1:
            raise SettingsError(f"encoder_batch must be >= 1, got {self.encoder_batch}")
        if self.report_studies < 0:
            raise SettingsError(f"report_studies must be >= 0, got {self.report_studies}")
        if self.selection_rules and not Path(self.selection_rules).is_file():
            raise SettingsError(f"selection_rules {self.selection_rules} is not a file")

    @property
    def rules_path(self) -> Path:
        return Path(self.selection_rules) if self.selection_rules else RULES / f"{self.task}.json"

    def rules_json(self) -> str:
        """The series-selection rules as a JSON string (checked to parse)."""
        text = self.rules_path.read_text(encoding="utf-8")
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsError(
                f"selection rules {self.rules_path} are not valid JSON: {exc}"
            ) from exc
        return text

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self, encoder: SliceEncoder) -> dict:
        """What a reference bank must share with a run (:func:`cs3f.screening.screening_identity`):
        the task and the preprocessing settings too, but not the worker count, and the files
        it names (the lung model's weights, the Nyul landmarks) by their SHA-256 rather than by
        where they lie ("" stays "": the classical lung mask, the landmarks shipped with cs3f)."""
        preprocess = dataclasses.asdict(self.preprocess)
        del preprocess["workers"]
        for name in ("lung_model", "landmarks"):
            if preprocess[name]:
                digest = hashlib.sha256(Path(preprocess[name]).read_bytes()).hexdigest()
                preprocess[name] = f"sha256:{digest}"
        return screening_identity(
            encoder, self.tokens, self.scoring, self.screening, preprocess | {"task": self.task}
        )

    def rules_sha256(self) -> str:
        """The SHA-256 of the series-selection rules (their JSON, white space and key order
        aside)."""
        rules = json.dumps(json.loads(self.rules_json()), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(rules.encode()).hexdigest()

    def results_seed(self, encoder: SliceEncoder, bank: ReferenceBank | None) -> str:
        """The seed of the UIDs of every object a job next to a PACS derives from a study
        (:mod:`cs3f.io.result_uids`): this version, the run's identity, the reference (the
        bank's fingerprint, or the batch) and what chooses the series: the selection rules'
        SHA-256 and the series the jobs screen from (:attr:`PacsSettings.series`: the modality
        and body part)."""
        reference = bank.fingerprint if bank else "batch"
        selection = {"rules_sha256": self.rules_sha256(), "series": self.pacs.series}
        return results_seed(__version__, self.identity(encoder), reference, selection)


def _check_type(value, default, name: str) -> None:
    """Refuse a value whose type cannot be the field's (``default`` tells it; None: any)."""
    if default is None or isinstance(default, tuple):
        return
    numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
    if numeric and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise SettingsError(f"{name} must be a number, got {value!r}")
    if numeric and isinstance(default, int) and not isinstance(value, int):
        raise SettingsError(f"{name} must be a whole number, got {value!r}")
    if isinstance(default, (bool, str)) and not isinstance(value, type(default)):
        raise SettingsError(f"{name} must be a {type(default).__name__}, got {value!r}")


def _build(cls, values: dict, where: str):
    """A dataclass ``cls`` from a nested dict, refusing unknown keys and values of the wrong
    type; the class's own checks then run, and any error names ``section.field``."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise SettingsError(f"unknown setting(s) {sorted(unknown)} in {where or 'top level'}")
    kwargs = {}
    for name, value in values.items():
        spec = known[name]
        factory = spec.default_factory
        default = spec.default if factory is dataclasses.MISSING else factory()
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise SettingsError(f"{where}{name} must be a mapping")
            kwargs[name] = _build(type(default), value, f"{where}{name}.")
        else:
            _check_type(value, default, f"{where}{name}")
            kwargs[name] = tuple(value) if isinstance(value, list) else value
    try:
        return cls(**kwargs)
    except SettingsError:
        raise
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{where}{exc}") from exc


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = (
            _merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def load_settings(config: Path | None = None, overrides: list[str] = (), **flags) -> AppSettings:
    """Defaults < YAML ``config`` < ``overrides`` ("a.b=value", value parsed as YAML) < ``flags``
    (keyword arguments that are not None)."""
    values: dict = {}
    if config is not None:
        loaded = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise SettingsError(f"{config}: expected a mapping at the top level")
        values = _merge(values, loaded)
    for item in overrides:
        if "=" not in item:
            raise SettingsError(f"--set expects section.field=value, got {item!r}")
        dotted, raw = item.split("=", 1)
        nested: dict = {}
        cursor = nested
        *parents, leaf = dotted.strip().split(".")
        for part in parents:
            cursor = cursor.setdefault(part, {})
        cursor[leaf] = yaml.safe_load(raw)
        values = _merge(values, nested)
    values = _merge(values, {k: v for k, v in flags.items() if v is not None})
    task = values.get("task", AppSettings.task)
    if task not in TASK_DEFAULTS:
        raise SettingsError(f"task must be one of {TASKS}, got {task!r}")
    return _build(AppSettings, _merge(TASK_DEFAULTS[task], values), "")


def with_lung_weights(settings: AppSettings, model_folder: Path | None) -> AppSettings:
    """``settings`` with ``preprocess.lung_model`` set to the lungmask weights in
    ``model_folder/lungmask/``, for a lung CT run that does not name its own; else unchanged."""
    if settings.task != "lung-ct" or settings.preprocess.lung_model or model_folder is None:
        return settings
    try:
        found = find_weights(model_folder)
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc
    if found is None:
        return settings
    preprocess = dataclasses.replace(settings.preprocess, lung_model=str(found))
    return dataclasses.replace(settings, preprocess=preprocess)
