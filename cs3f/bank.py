"""A reference bank: the tokens of a site's past studies on disk, to screen new studies against.

Layout (format ``cs3f-reference-bank``, version 2):

    BANK/bank.json               the manifest (below)
    BANK/volumes/<id>/<region>/  one folder per volume and region, written once, never changed:
        index.json, *.npy        its token sets (a :class:`~cs3f.method.store.TokenStore`,
                                 features in float16)
        mask.npz                 its standard-space foreground, as packed bits and a shape
    BANK/index/<generation>/     optional, written once: the approximate index, per region and
                                 token key its cells and search settings (:mod:`cs3f.bank_index`)

The manifest holds what scoring against the bank needs and nothing that names a patient:
``identity`` (the encoder's name and weights SHA-256 and every token, scoring and preprocessing
setting, as the caller describes them; a run whose identity differs is refused before any work,
see :meth:`ReferenceBank.check`), the ``regions`` and token keys every volume has, one entry
per volume (a pseudonymous ``id``, the study date, when it was added) and ``calibration``, the
bank's own leave-one-out statistics as the caller computed them (the screening layer's voxel
threshold and patient scores), and ``index``, the generation of the index folder (or null).

The index (:class:`~cs3f.method.token_index.IvfLayout` per region and key, see
:meth:`ReferenceBank.with_index`) is derived from the volumes: ``add`` and ``remove`` drop it
and the caller writes a new one; a damaged one is refused, or left unread to be rebuilt.
Version 1 banks (no index) are read as banks without one; any write makes them version 2.

Writes never leave a bank half-written: :meth:`ReferenceBank.create` writes into a temporary
folder beside BANK and renames it; :meth:`~ReferenceBank.add` and
:meth:`~ReferenceBank.with_index` write their new folders first and then replace ``bank.json``
in one rename; :meth:`~ReferenceBank.remove` replaces ``bank.json`` and then deletes the
volume's folder. A crash leaves the previous bank readable, at worst with an unreferenced
folder. Folders and files are created with the process's umask (a bank shared between accounts
needs a umask, or a group, that lets the others read it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import secrets
import shutil
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cs3f.bank_index import Layouts, read_layouts, write_layouts
from cs3f.identity import as_json, identity_differences
from cs3f.method.store import StoreError, TokenStore
from cs3f.method.token_index import IvfLayout
from cs3f.method.tokens import TokenKey, TokenSet

__all__ = ["MIN_VOLUMES", "BankError", "BankMismatch", "BankVolume", "NewVolume", "ReferenceBank"]

FORMAT, VERSION = "cs3f-reference-bank", 2
READABLE = (1, 2)  # version 1: no index
MANIFEST = "bank.json"
MIN_VOLUMES = 2  # the threshold and flag rule are leave-one-out statistics of the volumes
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class BankError(ValueError):
    """A bank cannot be used: missing, unreadable, cut short, of another format, or misused."""


class BankMismatch(BankError):
    """A run's encoder or settings differ from the bank's (the message names each difference)."""


@dataclass(frozen=True)
class BankVolume:
    """One volume of the bank, as the manifest lists it.

    Attributes:
        id: pseudonymous, unique in the bank; letters, digits, ``_`` and ``-`` (a folder name).
        study_date: ISO date of the study, or "".
        added: ISO time (UTC) it joined the bank.
    """

    id: str
    study_date: str = ""
    added: str = ""


@dataclass(frozen=True)
class NewVolume:
    """A volume to put into a bank: per region, its token sets and standard-space mask."""

    id: str
    tokens: Mapping[str, Mapping[TokenKey, TokenSet]]
    masks: Mapping[str, np.ndarray]
    study_date: str = ""


class ReferenceBank:
    """An opened bank: its manifest, and its volumes' token sets as read-only memmaps.

    Attributes:
        root: the bank's folder.
        identity: see the module docstring.
        regions: the regions every volume has, e.g. ``("brain",)``.
        keys: the token keys every region of every volume has, sorted.
        volumes: the volumes, in the order they were added.
        calibration: the bank's leave-one-out statistics, as given when last written.
        version: the format version it was written in (1 or 2; every write writes 2).
        index: the generation of the index folder, or ``None`` (no index).
        layouts: the index's :class:`IvfLayout` per (region, key), arrays memmapped.
    """

    def __init__(self, root: Path, manifest: dict) -> None:
        self.root = root
        self.identity: dict = manifest["identity"]
        self.regions: tuple[str, ...] = tuple(manifest["regions"])
        self.keys: list[TokenKey] = sorted(TokenKey(*k) for k in manifest["keys"])
        self.volumes = [BankVolume(**v) for v in manifest["volumes"]]
        self.calibration: dict = manifest["calibration"]
        self.version: int = manifest["version"]
        self.index: str | None = manifest.get("index")
        self.layouts: dict[tuple[str, TokenKey], IvfLayout] = {}
        self._stores: dict[tuple[str, str], TokenStore] = {}

    @property
    def fingerprint(self) -> str:
        """64 hex digits of the SHA-256 of what scoring against the bank depends on: its
        identity, volumes and calibration. Adding or removing a volume changes it."""
        content = {"identity": self.identity, "volumes": [asdict(v) for v in self.volumes]}
        text = json.dumps(content | {"calibration": self.calibration}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    # ----- reading

    @classmethod
    def open(cls, root: str | Path, *, index: bool = True) -> ReferenceBank:
        """The bank at ``root``, every volume's files checked to be there and whole, and its
        index too unless ``index`` is false (the index left unread: to rebuild it).

        Raises:
            BankError: no bank there, an unreadable or foreign manifest, another version, a
                volume whose files are missing, cut short or lack a token set (named), or a
                damaged index.
        """
        root = Path(root)
        try:
            manifest = json.loads((root / MANIFEST).read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise BankError(f"{root} is not a readable reference bank ({MANIFEST}: {exc})") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BankError(f"{root / MANIFEST} is not a {FORMAT} manifest")
        if manifest.get("version") not in READABLE:
            raise BankError(
                f"{root} is a version {manifest.get('version')} bank; this program reads "
                f"versions {', '.join(map(str, READABLE))}"
            )
        try:
            bank = cls(root, manifest)
        except (KeyError, TypeError) as exc:
            raise BankError(f"{root / MANIFEST} lacks or mangles {exc}") from exc
        for volume in bank.volumes:
            for region in bank.regions:
                bank._check_volume(volume.id, region)
        if bank.index is not None and index:
            try:
                folder = root / "index" / bank.index
                bank.layouts = read_layouts(folder, bank.volume_ids, bank.token_sets)
            except (OSError, ValueError) as exc:
                message = f"the index of {root} is damaged ({exc}); `bank index` rebuilds it"
                raise BankError(message) from exc
        return bank

    @property
    def volume_ids(self) -> list[str]:
        """The volumes' pseudonymous ids, in :attr:`volumes` order."""
        return [v.id for v in self.volumes]

    def _check_volume(self, volume_id: str, region: str) -> None:
        folder = self.root / "volumes" / volume_id / region
        try:
            store = TokenStore.open(folder)
            with np.load(folder / "mask.npz") as saved:  # the archive's index, not its bits
                if not {"bits.npy", "shape.npy"} <= set(saved.zip.namelist()):
                    raise KeyError("mask.npz lacks its bits or shape")
        except (StoreError, OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise BankError(f"volume {volume_id} ({region}) is damaged: {exc}") from exc
        missing = sorted(set(self.keys) - set(store.keys()))
        if missing:
            raise BankError(f"volume {volume_id} ({region}) lacks the token set {missing[0]}")
        self._stores[(volume_id, region)] = store

    def token_sets(self, region: str, key: TokenKey) -> list[TokenSet]:
        """Every volume's token set of ``key`` in ``region``, in :attr:`volumes` order."""
        return [self._stores[(v.id, region)].get(0, key) for v in self.volumes]

    def volume(self, volume_id: str) -> NewVolume:
        """One volume's token sets and masks per region (memmaps), as it was put in."""
        entry = next(v for v in self.volumes if v.id == volume_id)
        tokens = {
            r: {k: self._stores[(volume_id, r)].get(0, k) for k in self.keys} for r in self.regions
        }
        masks = {r: self.mask(volume_id, r) for r in self.regions}
        return NewVolume(volume_id, tokens, masks, entry.study_date)

    def mask(self, volume_id: str, region: str) -> np.ndarray:
        """The volume's standard-space foreground in ``region``, bool."""
        with np.load(self.root / "volumes" / volume_id / region / "mask.npz") as saved:
            shape = tuple(int(n) for n in saved["shape"])
            bits = np.unpackbits(saved["bits"], count=int(np.prod(shape)))
        return bits.reshape(shape).astype(bool)

    def check(self, identity: Mapping) -> None:
        """Refuse a run whose identity (encoder, weights, settings) is not the bank's.

        Raises:
            BankMismatch: naming every differing field with both values.
        """
        if differences := identity_differences(self.identity, identity):
            named = "; ".join(differences)
            raise BankMismatch(f"this run differs from the bank {self.root}: {named}")

    def describe(self) -> list[str]:
        """Human-readable lines: size, encoder, settings, date range, one line per volume."""
        dates = sorted(v.study_date for v in self.volumes if v.study_date)
        lines = [
            f"reference bank {self.root} (format {FORMAT} version {self.version})",
            f"volumes: {len(self.volumes)}; regions: {', '.join(self.regions)}",
            f"token sets per volume and region: {len(self.keys)}",
            f"study dates: {dates[0]} to {dates[-1]}" if dates else "study dates: none recorded",
        ]
        lines += [f"{name}: {json.dumps(value)}" for name, value in sorted(self.identity.items())]
        lines += [f"calibration: {json.dumps(self.calibration)}"]
        lines += [f"index: {self.index or 'none'}"] + [
            f"  {region} {tuple(key)}: {layout.describe()}"
            for (region, key), layout in sorted(self.layouts.items())
        ]
        lines += [f"  {v.id}  study {v.study_date or '-'}  added {v.added}" for v in self.volumes]
        return lines

    # ----- writing

    @classmethod
    def create(
        cls, root: str | Path, identity: Mapping, volumes: Iterable[NewVolume], calibration: Mapping
    ) -> ReferenceBank:
        """Write a new bank at ``root`` (which must not exist) and open it.

        Raises:
            BankError: ``root`` exists, fewer than :data:`MIN_VOLUMES` volumes, a volume id is
                not a safe name or repeats, or the volumes disagree on regions or token keys.
        """
        root = Path(root)
        if root.exists():
            raise BankError(f"{root} already exists; a new bank needs a new folder")
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = root.parent / f".{root.name}.{secrets.token_hex(4)}"
        staging.mkdir()  # not mkdtemp: its 0700 would make the bank private whatever the umask
        try:
            manifest = {
                "format": FORMAT,
                "version": VERSION,
                "identity": as_json(dict(identity)),
                "regions": [],
                "keys": [],
                "volumes": [],
                "calibration": as_json(dict(calibration)),
                "index": None,
            }
            _write_volumes(staging, manifest, volumes)
            _write_manifest(staging, manifest)
            os.rename(staging, root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls.open(root)

    def add(self, volumes: Iterable[NewVolume], calibration: Mapping) -> ReferenceBank:
        """Add volumes (same regions and keys) and the recomputed calibration; the reopened
        bank, without an index (it covered the old volumes)."""
        manifest = self._manifest(calibration)
        _write_volumes(self.root, manifest, volumes)
        _write_manifest(self.root, manifest)
        self._drop_index()
        return ReferenceBank.open(self.root)

    def with_index(self, layouts: Layouts, target: float) -> ReferenceBank:
        """Store the approximate index of the bank's volumes as they are (one layout per region
        and key, trained for recall ``target``) in place of any earlier one; the reopened bank.

        Raises:
            BankError: a layout does not fit the bank's tokens (the bank is left as it was).
        """
        generation = f"{int(self.index or 0) + 1:04d}"
        try:
            folder = self.root / "index" / generation
            write_layouts(folder, layouts, self.volume_ids, target, self.token_sets)
        except ValueError as exc:
            raise BankError(f"that index does not fit the bank {self.root}: {exc}") from exc
        _write_manifest(self.root, self._manifest(self.calibration) | {"index": generation})
        self._drop_index()
        return ReferenceBank.open(self.root)

    def _drop_index(self) -> None:
        """Delete the index folder this object was opened with (no longer the manifest's)."""
        if self.index is not None:
            shutil.rmtree(self.root / "index" / self.index, ignore_errors=True)

    def remaining(self, volume_id: str) -> list[str]:
        """The volume ids the bank keeps without ``volume_id`` (the ones to recalibrate on).

        Raises:
            BankError: no such volume, or the bank would keep fewer than :data:`MIN_VOLUMES`.
        """
        if volume_id not in self.volume_ids:
            raise BankError(f"the bank has no volume {volume_id!r}")
        if len(self.volumes) <= MIN_VOLUMES:
            raise BankError(
                f"a bank keeps at least {MIN_VOLUMES} volumes (its statistics are leave-one-out); "
                "delete the folder instead"
            )
        return [v for v in self.volume_ids if v != volume_id]

    def remove(self, volume_id: str, calibration: Mapping) -> ReferenceBank:
        """Drop one volume (a study later found abnormal), with the recomputed calibration of
        the :meth:`remaining` ones.

        Raises:
            BankError: as :meth:`remaining`.
        """
        keep = set(self.remaining(volume_id))
        manifest = self._manifest(calibration)
        manifest["volumes"] = [v for v in manifest["volumes"] if v["id"] in keep]
        _write_manifest(self.root, manifest)
        shutil.rmtree(self.root / "volumes" / volume_id, ignore_errors=True)
        self._drop_index()
        return ReferenceBank.open(self.root)

    def _manifest(self, calibration: Mapping) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "identity": self.identity,
            "regions": list(self.regions),
            "keys": [list(k) for k in self.keys],
            "volumes": [asdict(v) for v in self.volumes],
            "calibration": as_json(dict(calibration)),
            "index": None,
        }


def _write_volumes(root: Path, manifest: dict, volumes: Iterable[NewVolume]) -> None:
    """Write each volume's folders under ``root`` and list it in ``manifest``."""
    taken = {v["id"] for v in manifest["volumes"]}
    for volume in volumes:
        if volume.id in taken:
            raise BankError(f"volume {volume.id} is already in the bank (the same study twice?)")
        if not _ID.fullmatch(volume.id):
            raise BankError(f"volume id {volume.id!r} is not a safe name")
        regions = sorted(volume.tokens)
        keys = sorted({tuple(k) for sets in volume.tokens.values() for k in sets})
        if not manifest["volumes"] and not manifest["regions"]:
            manifest["regions"], manifest["keys"] = regions, [list(k) for k in keys]
        if regions != manifest["regions"] or [list(k) for k in keys] != manifest["keys"]:
            raise BankError(f"volume {volume.id} has other regions or token sets than the bank")
        for region in regions:
            folder = root / "volumes" / volume.id / region
            store = TokenStore(folder)
            for key, tokens in volume.tokens[region].items():
                store.put(0, key, tokens)
            store.write_index()
            mask = np.asarray(volume.masks[region], dtype=bool)
            np.savez_compressed(folder / "mask.npz", bits=np.packbits(mask), shape=mask.shape)
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        manifest["volumes"].append(asdict(BankVolume(volume.id, volume.study_date, now)))
        taken.add(volume.id)
    if len(manifest["volumes"]) < MIN_VOLUMES:
        raise BankError(
            f"a bank needs at least {MIN_VOLUMES} volumes (its statistics are leave-one-out), "
            f"got {len(manifest['volumes'])}"
        )


def _write_manifest(root: Path, manifest: dict) -> None:
    """Replace ``bank.json`` in one rename, after the new one is on disk."""
    temporary = root / f".{MANIFEST}.tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(manifest, file, indent=1)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, root / MANIFEST)
