"""Checkpoints: typed payloads per model kind, one writer and one reader of their file.

A checkpoint file is one ``torch.save`` dict of plain types and tensors only (so reading it,
always with ``weights_only=True``, never unpickles code), written atomically. On disk:

``format``  ``"realdeal-checkpoint/1"``
``kind``    ``"autoencoder"``, ``"ldm"`` or ``"refiner"``
``preset``  preset name the run started from
``step``    optimizer steps trained (by this run)
``init_steps``  steps the weights it started from (``--init-from``) had been trained, summed
            along the chain of fine-tunes; written only when not 0
``config``  the resolved run config as a JSON string
``model_config``  the network's config as a JSON string (compared on resume)
``model``, ``ema``  state dicts (training weights, EMA weights)
``ema_updates``, ``optimizer``, ``scaler``, ``rng``  training state (resumable checkpoints;
            slim ones keep ``ema_updates`` and store empty dicts; imports store none)
``extra``   the kind's own values (the typed fields of :class:`AutoencoderCheckpoint`,
            :class:`LDMCheckpoint`, :class:`RefinerCheckpoint`)
``slim``    ``True`` in inference-only checkpoints (EMA weights, no training state)

In memory a checkpoint is one of the payload dataclasses: :func:`save_checkpoint` writes one,
:func:`load_checkpoint` reads one back (the stored kind's class). A field that is ``None`` is
not written, and a key that an older file lacks reads as that field's default, so files keep
exactly the keys they were written with. Defaults for older files (the only hidden defaults):
``step`` 0; ``init_steps`` 0; an ``extra`` field absent → ``None``, except the refiner's
``window``, which falls back to the run config's ``window``, then 64.

The shipped demo models have names: ``demo:autoencoder``, ``demo:ldm`` and ``demo:refiner``
(:func:`resolve_checkpoint`), accepted wherever a checkpoint path is.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import torch

from realdeal.errors import InputError
from realdeal.utils.fs import atomic_path

log = logging.getLogger(__name__)

FORMAT = "realdeal-checkpoint/1"

DEMO_PREFIX = "demo:"
DEMO_MODELS = ("autoencoder", "ldm", "refiner")
"""The shipped demo models, named ``demo:<kind>`` (:func:`resolve_checkpoint`)."""


def shipped_checkpoint_path(kind: str) -> Path:
    """Where the package keeps the shipped demo model ``kind`` (the file may be absent)."""
    return Path(str(resources.files("realdeal"))) / "demo_checkpoints" / f"{kind}.pt"


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """``path``, with the names ``demo:autoencoder``, ``demo:ldm`` and ``demo:refiner`` mapped
    to the demo models shipped inside the package (so commands work from any folder).

    Another ``demo:`` name, or a shipped model this installation lacks, is one
    :class:`InputError` line."""
    text = os.fspath(path)
    if not text.startswith(DEMO_PREFIX):
        return Path(text)
    kind = text[len(DEMO_PREFIX) :]
    if kind not in DEMO_MODELS:
        names = ", ".join(DEMO_PREFIX + k for k in DEMO_MODELS)
        raise InputError(text, f"no shipped model of that name (the shipped ones: {names})")
    found = shipped_checkpoint_path(kind)
    if not found.is_file():
        raise InputError(text, f"this installation holds no shipped demo models ({found} missing)")
    return found


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_PICKLE_PROTOCOL = 0x80  # first byte of the legacy torch.save format (a pickle, protocol ≥ 2)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_torch_file(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = False
) -> Any:
    """What ``torch.save`` wrote to ``path``, read with ``weights_only=True``.

    Any unusable file (missing, empty, text, another format, truncated, holding code) raises
    one :class:`InputError` naming the file: torch itself answers such files with a long
    traceback of varied types (a text file gives ``KeyError`` from deep in the unpickler).
    ``mmap`` memory-maps the zip format (ignored for the legacy format, which cannot be mapped).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise InputError(path, f"cannot be read ({e.strerror or e})") from e
    is_zip = head.startswith(_ZIP_MAGIC)
    if not is_zip and (not head or head[0] != _PICKLE_PROTOCOL):
        what = (
            "an empty file" if not head else "a text file" if _is_text(head) else "another format"
        )
        raise InputError(path, f"not a PyTorch checkpoint ({what})")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap and is_zip)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):  # a class or function: refused, never built
            raise InputError(
                path,
                "holds objects other than tensors and plain values (refused: weights_only=True)",
            ) from e
        raise InputError(
            path, "not a readable checkpoint (truncated or corrupt pickle data)"
        ) from e
    except MemoryError:
        raise
    except Exception as e:  # torch raises RuntimeError, EOFError, KeyError … for damaged files
        raise InputError(
            path, f"not a readable checkpoint (truncated or corrupt: {_first_line(e)})"
        ) from e


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:  # a character cut at the end of the sample is still text
        if e.start < len(head) - 3:
            return False
    return b"\0" not in head


StateDict = dict[str, torch.Tensor]


def _extra(default: Any = None) -> Any:
    """A dataclass field stored under ``extra`` (``None``: not written)."""
    return dataclasses.field(default=default, metadata={"extra": True})


@dataclasses.dataclass(kw_only=True)
class Checkpoint:
    """What every kind stores; see the module docstring for the file layout."""

    kind: ClassVar[str] = ""
    preset: str = ""
    step: int = 0
    """Optimizer steps of the run that wrote this checkpoint."""
    init_steps: int = 0
    """Steps the weights this run started from (``--init-from``) had already been trained,
    summed along the chain of fine-tunes (0 for a model trained from scratch)."""
    config: dict[str, Any]
    """The resolved run config (stored as a JSON string)."""
    model_config: dict[str, Any]
    """The network's config (stored as a JSON string)."""
    model: StateDict
    ema: StateDict | None = None
    """EMA weights (older files may lack them: the loaders then use ``model``)."""
    ema_updates: int | None = None
    optimizer: dict[str, Any] | None = None
    grad_scaler: dict[str, Any] | None = None
    """The AMP gradient scaler's state (key ``scaler`` on disk)."""
    rng: list[dict[str, torch.Tensor]] | dict[str, Any] | None = None
    """Every rank's RNG state (resumable checkpoints); ``{}`` in slim ones."""
    slim: bool = False

    @property
    def total_steps(self) -> int:
        """Every optimizer step these weights have had: :attr:`init_steps` + :attr:`step`."""
        return self.init_steps + self.step

    @property
    def resumable(self) -> bool:
        """Whether training can continue from this checkpoint (it holds the training state)."""
        return not self.slim and self.optimizer is not None and self.rng is not None

    def weights(self, ema: bool = True) -> StateDict:
        """The EMA weights (if stored and ``ema``), else the training weights."""
        return self.ema if ema and self.ema is not None else self.model

    def slimmed(self) -> Checkpoint:
        """The inference-only copy: EMA weights (cloned) as both weights, no training state."""
        ema = {k: v.clone() for k, v in self.weights().items()}
        return dataclasses.replace(
            self, model=ema, ema=ema, optimizer={}, grad_scaler={}, rng={}, slim=True
        )

    def to_dict(self) -> dict[str, Any]:
        """The dict :func:`save_checkpoint` writes (without the format marker)."""
        d: dict[str, Any] = {
            "kind": self.kind,
            "preset": self.preset,
            "step": self.step,
            **({"init_steps": self.init_steps} if self.init_steps else {}),
            "config": json.dumps(self.config),
            "model_config": json.dumps(self.model_config),
            "model": self.model,
        }
        state = {
            "ema": self.ema,
            "ema_updates": self.ema_updates,
            "optimizer": self.optimizer,
            "scaler": self.grad_scaler,
            "rng": self.rng,
        }
        d.update((k, v) for k, v in state.items() if v is not None)
        d["extra"] = self._extra_to_dict()
        if self.slim:
            d["slim"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Checkpoint:
        """The payload of a checkpoint dict as written by any realdeal version (kind checked)."""
        sub = _PAYLOADS[d["kind"]] if cls is Checkpoint else cls
        config = json.loads(d["config"])
        return sub(
            preset=d.get("preset", ""),
            step=int(d.get("step", 0)),
            init_steps=int(d.get("init_steps", 0)),
            config=config,
            model_config=json.loads(d["model_config"]),
            model=d["model"],
            ema=d.get("ema"),
            ema_updates=None if d.get("ema_updates") is None else int(d["ema_updates"]),
            optimizer=d.get("optimizer"),
            grad_scaler=d.get("scaler"),
            rng=d.get("rng"),
            slim=bool(d.get("slim", False)),
            **sub._extra_from_dict(d.get("extra") or {}, config),
        )

    def _extra_to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.metadata.get("extra") and v is not None:
                out[f.name] = _plain(v)
        return out

    @classmethod
    def _extra_from_dict(cls, extra: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        names = {f.name for f in dataclasses.fields(cls) if f.metadata.get("extra")}
        unknown = sorted(set(extra) - names)
        if unknown:  # written by a newer version: not kept when this payload is saved again
            log.warning("%s checkpoint: ignoring unknown extra values %s", cls.kind, unknown)
        out = {}
        for name in names & set(extra):
            v = extra[name]
            if v is not None:
                out[name] = tuple(v) if isinstance(v, list) else v
        return out


def _plain(v: Any) -> Any:
    """A field value as stored: tuples as lists, embedded payloads as their dicts."""
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, EmbeddedAutoencoder):
        return v.to_dict()
    return v


@dataclasses.dataclass(kw_only=True)
class AutoencoderCheckpoint(Checkpoint):
    """An autoencoder: ``model_config`` is an ``AutoencoderConfig`` (or the released layout's)."""

    kind: ClassVar[str] = "autoencoder"
    image_shape: tuple[int, int, int] | None = _extra()
    """Grid (X, Y, Z) of the training volumes."""
    dataset: str | None = _extra()
    """Prepared dataset the model was trained on (``""`` for imports)."""
    imported_from: dict[str, Any] | None = _extra()
    """Provenance of an import of the authors' released file (file, epoch, loss)."""
    recovered_from: str | None = _extra()
    """How weights whose training run was lost were recovered (a note, e.g. the shipped one's)."""


@dataclasses.dataclass(kw_only=True)
class EmbeddedAutoencoder:
    """The autoencoder an LDM checkpoint carries (its decoder maps samples to images)."""

    model_config: dict[str, Any]
    """Stored as a JSON string."""
    preset: str | None = None
    ema: StateDict
    fingerprint: str | None = None
    """:func:`realdeal.pipelines.autoencoder.checkpoint_fingerprint` of its file."""

    def to_dict(self) -> dict[str, Any]:
        d = {
            "model_config": json.dumps(self.model_config),
            "preset": self.preset,
            "ema": self.ema,
            "fingerprint": self.fingerprint,
        }
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EmbeddedAutoencoder:
        return cls(
            model_config=json.loads(d["model_config"]),
            preset=d.get("preset"),
            ema=d["ema"],
            fingerprint=d.get("fingerprint"),
        )


@dataclasses.dataclass(kw_only=True)
class LDMCheckpoint(Checkpoint):
    """A latent diffusion U-Net with its latent scaling and the autoencoder it samples through."""

    kind: ClassVar[str] = "ldm"
    latent_scaling: dict[str, list[float]] | None = _extra()
    """:meth:`realdeal.models.latent_scaling.LatentScaler.to_dict` (``lo``, ``hi``)."""
    latent_shape: tuple[int, ...] | None = _extra()
    """(C, x, y, z) of a latent."""
    image_shape: tuple[int, int, int] | None = _extra()
    dataset: str | None = _extra()
    """Prepared dataset: the default geometry of ``realdeal sample``."""
    autoencoder: EmbeddedAutoencoder | None = _extra()
    imported_from: dict[str, Any] | None = _extra()

    @classmethod
    def _extra_from_dict(cls, extra: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        out = super()._extra_from_dict(extra, config)
        if "autoencoder" in out:
            out["autoencoder"] = EmbeddedAutoencoder.from_dict(out["autoencoder"])
        return out


@dataclasses.dataclass(kw_only=True)
class RefinerCheckpoint(Checkpoint):
    """A refiner U-Net with its window and the training data's voxel size and intensities."""

    kind: ClassVar[str] = "refiner"
    window: int = _extra(64)
    """Window side in voxels (older files without it: the run config's ``window``, else 64)."""
    image_shape: tuple[int, int, int] | None = _extra()
    spacing: tuple[float, float, float] | None = _extra()
    """Voxel size (mm) of the training data; ``None``: inputs of any voxel size."""
    scaler: dict[str, float] | None = _extra()
    """:meth:`realdeal.data.transforms.IntensityScaler.to_dict` of the training data."""
    dataset: str | None = _extra()
    imported_from: dict[str, Any] | None = _extra()

    @classmethod
    def _extra_from_dict(cls, extra: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        out = super()._extra_from_dict(extra, config)
        out["window"] = int(extra.get("window", config.get("window", 64)))
        return out


_PAYLOADS: dict[str, type[Checkpoint]] = {
    c.kind: c for c in (AutoencoderCheckpoint, LDMCheckpoint, RefinerCheckpoint)
}
KINDS = tuple(_PAYLOADS)


def checkpoint_class(kind: str) -> type[Checkpoint]:
    """The payload class of model kind ``kind``."""
    if kind not in _PAYLOADS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}, got {kind!r}")
    return _PAYLOADS[kind]


def save_checkpoint(path: str | os.PathLike, payload: Checkpoint) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file + rename); returns ``path``.

    Written through a file handle: given a path, ``torch.save`` names the archive inside after
    the (random) temporary file, so the same payload would give different bytes each time;
    this way the same payload gives the same file, and sha256 records identify it."""
    if payload.kind not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}, got {payload.kind!r}")
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save({"format": FORMAT, **payload.to_dict()}, fh)
    return path


def load_checkpoint(
    path: str | os.PathLike, kind: str | None = None, map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """The payload of a checkpoint file, read safely; :class:`InputError` (one line) if unusable.

    ``kind`` is the model kind the caller needs; a checkpoint of another kind is refused.
    The result is the stored kind's class (:class:`LDMCheckpoint` for an LDM, …). ``path``
    may name a shipped demo model (``demo:ldm``, :func:`resolve_checkpoint`).
    """
    path = resolve_checkpoint(path)
    ckpt = read_torch_file(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError(path, "not a realdeal checkpoint (no realdeal format marker)")
    if kind is not None and ckpt.get("kind") != kind:
        raise InputError(
            path, f"is a checkpoint of kind {ckpt.get('kind')!r}, but kind {kind!r} is needed here"
        )
    if ckpt.get("kind") not in KINDS:
        raise InputError(path, f"has an unknown checkpoint kind {ckpt.get('kind')!r}")
    try:
        return Checkpoint.from_dict(ckpt)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(path, f"is a damaged realdeal checkpoint ({type(e).__name__}: {e})") from e


ADDED_MODEL_FIELDS: dict[str, Any] = {"include_fc": True}
"""Network-config fields newer than some checkpoints, with the behaviour those files had: MONAI's
attention output projection (``include_fc``) was always on before it became a field."""


def check_model_config(
    path: str | os.PathLike, ckpt: Checkpoint, model_config: dict[str, Any]
) -> None:
    """Refuse a checkpoint whose network config differs from ``model_config`` (other preset).

    A field added to a network config after a checkpoint was written is read with the value
    that older files meant (:data:`ADDED_MODEL_FIELDS`)."""
    theirs = {k: v for k, v in ADDED_MODEL_FIELDS.items() if k in model_config}
    theirs |= ckpt.model_config
    if theirs != model_config:
        diff = sorted(
            k for k in set(theirs) | set(model_config) if theirs.get(k) != model_config.get(k)
        )
        raise InputError(
            path,
            f"was trained with a different {ckpt.kind} architecture (preset "
            f"{ckpt.preset!r}; differs in {', '.join(diff)})",
        )
