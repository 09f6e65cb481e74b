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

The same inference-only (slim) checkpoint can also be a ``.safetensors`` file
(:func:`save_checkpoint_safetensors`), readable without realdeal and without pickle: its tensors
are the EMA weights under their state-dict names, those of an LDM's embedded autoencoder under
``autoencoder.``; its metadata (string → string) holds ``format`` ``"pt"`` (the safetensors
convention) and, each as a JSON value, ``realdeal_format`` (``"realdeal-checkpoint/1"``), the
non-tensor entries above (``kind``, ``preset``, ``step``, ``init_steps``, ``config``,
``model_config``, ``ema_updates``, ``extra`` — an embedded autoencoder's ``model_config`` as
an object —, ``slim``) and ``network`` (plus ``autoencoder_network`` for an LDM): the class the
weights belong to, its arguments (for a U-Net, the keyword arguments of MONAI's
``DiffusionModelUNet``) and the prefix of their tensor names. :func:`load_checkpoint` reads
both forms (told apart by their first bytes) into the same payload.

The shipped demo models have names: ``demo:autoencoder``, ``demo:ldm``, ``demo:refiner`` and
``demo:refiner-student`` (the refiner's few-step student, a refiner checkpoint;
:func:`resolve_checkpoint`), accepted wherever a checkpoint path is.
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
DEMO_MODELS = ("autoencoder", "ldm", "refiner", "refiner-student")
"""The shipped demo models, named ``demo:<name>`` (:func:`resolve_checkpoint`); the file is
``<name>.pt``. ``refiner-student`` is a refiner checkpoint: the shipped refiner distilled for
few steps."""


def shipped_checkpoint_path(kind: str) -> Path:
    """Where the package keeps the shipped demo model ``kind`` (the file may be absent)."""
    return Path(str(resources.files("realdeal"))) / "demo_checkpoints" / f"{kind}.pt"


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """``path``, with the names ``demo:autoencoder``, ``demo:ldm``, ``demo:refiner`` and
    ``demo:refiner-student`` mapped to the demo models shipped inside the package (so commands
    work from any folder).

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
        raise InputError(path, f"not a PyTorch checkpoint ({_what_file(path, head)})")
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


def _what_file(path: Path, head: bytes) -> str:
    """What a file that is not the expected format looks like, from its first bytes."""
    if not head:
        return "an empty file"
    if _safetensors_header_size(path, head) is not None:
        return "a safetensors file"
    return "a text file" if _is_text(head) else "another format"


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
    """A field value as stored: tuples as lists, embedded payloads and records as their dicts."""
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, (EmbeddedAutoencoder, Distillation)):
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class Distillation:
    """The record of a refiner distilled for few steps (progressive distillation, Salimans &
    Ho 2022; :mod:`realdeal.training.distill`): a student checkpoint is a refiner checkpoint
    that carries one. Stored as a JSON object under ``extra["distilled"]``."""

    teacher_sha256: str
    """sha256 of the teacher checkpoint file the distillation run started from."""
    teacher_steps: int
    """Steps the teacher ran (deterministic DDIM on the halving grid) in the run's first round."""
    rounds: int
    """Rounds of halving behind these weights, counting the teacher's own if it was a student."""
    steps: int
    """The student's native step count: ``teacher_steps / 2^(rounds of this run)``."""
    spacing: str
    """Spacing of the halving grid (``linear`` or ``quadratic``)."""
    timesteps: tuple[int, ...]
    """The native time grid (:func:`~realdeal.diffusion.samplers.halving_timesteps`)."""
    sampler: str = "distilled"
    """The registered sampler the student runs by default."""
    method: str = "progressive-distillation"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Distillation:
        """The record of a stored dict; keys a newer version added are ignored (with a warning)."""
        names = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(d) - names):
            log.warning("distillation record: ignoring unknown values %s", unknown)
        kw = {k: v for k, v in d.items() if k in names}
        kw["timesteps"] = tuple(int(t) for t in kw["timesteps"])
        return cls(**kw)


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
    distilled: Distillation | None = _extra()
    """Set on a student distilled for few steps (:class:`Distillation`); ``None`` on every other
    refiner, older files included."""

    @classmethod
    def _extra_from_dict(cls, extra: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        out = super()._extra_from_dict(extra, config)
        out["window"] = int(extra.get("window", config.get("window", 64)))
        if isinstance(out.get("distilled"), dict):
            out["distilled"] = Distillation.from_dict(out["distilled"])
        elif "distilled" in out:
            raise ValueError(f"extra.distilled must be an object, got {out['distilled']!r:.40}")
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


SAFETENSORS_SUFFIX = ".safetensors"
MODEL_JSON_SUFFIX = ".model.json"
"""The human-readable copy of a ``.safetensors`` checkpoint's metadata beside it."""

_ST_FORMAT_KEY = "realdeal_format"
_ST_PAYLOAD_KEYS = ("kind", "preset", "step", "init_steps", "config", "model_config",
                    "ema_updates", "extra", "slim")  # fmt: skip
"""Non-tensor entries of a checkpoint dict kept in the safetensors metadata (in this order)."""
_ST_AUTOENCODER_PREFIX = "autoencoder."
_MONAI_UNET = "monai.networks.nets.DiffusionModelUNet"


def monai_unet_arguments(model_config: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of MONAI's ``DiffusionModelUNet`` for a U-Net checkpoint's
    ``model_config`` (:class:`realdeal.models.unet.UNetConfig`, whose fields are those
    arguments' names; 3-D; fields newer than the file read as :data:`ADDED_MODEL_FIELDS`)."""
    added = {k: v for k, v in ADDED_MODEL_FIELDS.items() if k not in model_config}
    return {"spatial_dims": 3, **model_config, **added}


def _network(kind: str, model_config: dict[str, Any], prefix: str) -> dict[str, Any]:
    """What the tensors under ``prefix`` are the weights of, and how to build it."""
    if kind == "autoencoder":
        official = model_config.get("layout") == "official"
        cls = ("realdeal.models.official_autoencoder.OfficialAutoencoder" if official
               else "realdeal.models.autoencoder.Autoencoder")  # fmt: skip
        return {"class": cls, "config": model_config, "prefix": prefix}
    return {"class": _MONAI_UNET, "arguments": monai_unet_arguments(model_config), "prefix": prefix}


def _to_json(value: Any) -> str:
    return json.dumps(value, allow_nan=False, ensure_ascii=False)


def _safetensors_form(payload: Checkpoint) -> tuple[StateDict, dict[str, str]]:
    """(tensors, metadata) of a slim payload (see the module docstring)."""
    d = payload.to_dict()
    tensors = dict(payload.weights())
    extra = dict(d["extra"])
    networks = {"network": _network(payload.kind, payload.model_config, "")}
    embedded = extra.get("autoencoder")
    if embedded is not None:
        embedded = dict(embedded)
        for name, t in embedded.pop("ema").items():
            key = _ST_AUTOENCODER_PREFIX + name
            if key in tensors:
                raise ValueError(f"tensor name {key!r} is both the network's and the autoencoder's")
            tensors[key] = t
        embedded["model_config"] = json.loads(embedded["model_config"])
        extra["autoencoder"] = embedded
        networks["autoencoder_network"] = _network(
            "autoencoder", embedded["model_config"], _ST_AUTOENCODER_PREFIX
        )
    meta = {"format": "pt", _ST_FORMAT_KEY: _to_json(FORMAT)}
    for key in _ST_PAYLOAD_KEYS:
        if key in ("config", "model_config"):
            meta[key] = d[key]  # already JSON text
        elif key == "extra":
            meta[key] = _to_json(extra)
        elif key in d:
            meta[key] = _to_json(d[key])
    meta.update((k, _to_json(v)) for k, v in networks.items())
    return tensors, meta


def save_checkpoint_safetensors(
    path: str | os.PathLike, payload: Checkpoint, model_json: bool = True
) -> Path:
    """Write the inference-only form of ``payload`` to ``path`` as a ``.safetensors`` file
    (atomically); returns ``path``. :func:`load_checkpoint` reads it back.

    The file holds the EMA weights (a checkpoint that is not slim is written as
    :meth:`Checkpoint.slimmed` would make it) and every non-tensor value as JSON metadata
    (see the module docstring). ``model_json``: also write that metadata, decoded and indented,
    beside it as ``NAME.model.json`` (:data:`MODEL_JSON_SUFFIX`), for people and tools that
    read no safetensors header. The same payload gives the same bytes (the metadata in a fixed
    order; safetensors itself writes it in a random one), so sha256 records identify it."""
    from safetensors.torch import save as safetensors_bytes

    from realdeal.utils.fs import write_json_atomic

    if payload.kind not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}, got {payload.kind!r}")
    slim = payload if payload.slim else payload.slimmed()
    tensors, meta = _safetensors_form(slim)
    raw = safetensors_bytes({k: t.detach().contiguous() for k, t in tensors.items()}, meta)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    ordered = {"__metadata__": meta, **{k: header[k] for k in tensors}}  # state-dict order
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # tensor data stays 8-byte aligned, as safetensors writes it
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(len(text).to_bytes(8, "little"))
        fh.write(text)
        fh.write(raw[8 + n :])
    if model_json:
        decoded = {k: v if k == "format" else json.loads(v) for k, v in meta.items()}
        write_json_atomic(model_json_path(path), decoded)
    return path


def model_json_path(path: str | os.PathLike) -> Path:
    """Where :func:`save_checkpoint_safetensors` puts the metadata of ``path`` in JSON."""
    path = Path(path)
    stem = (
        path.name[: -len(SAFETENSORS_SUFFIX)]
        if path.name.endswith(SAFETENSORS_SUFFIX)
        else path.stem
    )
    return path.with_name(stem + MODEL_JSON_SUFFIX)


_MAX_SAFETENSORS_HEADER = 100_000_000  # what safetensors itself accepts


def _safetensors_header_size(path: Path, head: bytes) -> int | None:
    """The header length of a safetensors file whose first bytes are ``head``, else ``None``."""
    if len(head) < 10 or head[8:9] != b"{":
        return None
    n = int.from_bytes(head[:8], "little")
    try:
        size = path.stat().st_size
    except OSError:
        return None
    return n if 2 <= n <= min(size - 8, _MAX_SAFETENSORS_HEADER) else None


def is_safetensors_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file that begins as a safetensors file does."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return _safetensors_header_size(path, head) is not None


def read_safetensors_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """The checkpoint dict (as :func:`read_torch_file` gives it for a ``.pt`` file) of a
    ``.safetensors`` file :func:`save_checkpoint_safetensors` wrote; :class:`InputError` (one
    line) if it is unreadable or not a realdeal checkpoint."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            n = _safetensors_header_size(path, head)
            if n is None:
                raise InputError(
                    path, f"not a readable safetensors file ({_what_file(path, head)})"
                )
            f.seek(8)
            header = json.loads(f.read(n))
        names = [k for k in header if k != "__metadata__"]  # the order they were written in
        device = str(map_location) if isinstance(map_location, torch.device) else map_location
        with safe_open(path, framework="pt", device=device) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in names}
    except InputError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # SafetensorError, OSError, JSON errors … for damaged files
        raise InputError(
            path, f"not a readable safetensors file (truncated or corrupt: {_first_line(e)})"
        ) from e
    if meta.get(_ST_FORMAT_KEY) != _to_json(FORMAT):
        raise InputError(path, "not a realdeal checkpoint (no realdeal format marker)")
    try:
        d: dict[str, Any] = {"format": FORMAT}
        for key in _ST_PAYLOAD_KEYS:
            if key in meta:
                d[key] = meta[key] if key in ("config", "model_config") else json.loads(meta[key])
        extra = d.get("extra") or {}
        weights = tensors
        if isinstance(extra.get("autoencoder"), dict):  # an LDM: the embedded one under a prefix
            prefix = _ST_AUTOENCODER_PREFIX
            weights = {k: t for k, t in tensors.items() if not k.startswith(prefix)}
            ae = dict(extra["autoencoder"])
            ae["model_config"] = json.dumps(ae["model_config"])
            ae["ema"] = {k[len(prefix) :]: t for k, t in tensors.items() if k.startswith(prefix)}
            extra["autoencoder"] = ae
        d["model"] = d["ema"] = weights
        d.update(optimizer={}, scaler={}, rng={}, slim=True)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(path, f"is a damaged realdeal checkpoint ({type(e).__name__}: {e})") from e
    return d


def load_checkpoint(
    path: str | os.PathLike, kind: str | None = None, map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """The payload of a checkpoint file, read safely; :class:`InputError` (one line) if unusable.

    ``kind`` is the model kind the caller needs; a checkpoint of another kind is refused.
    The result is the stored kind's class (:class:`LDMCheckpoint` for an LDM, …). ``path``
    may name a shipped demo model (``demo:ldm``, :func:`resolve_checkpoint`). Both forms are
    read: ``torch.save`` files (``.pt``) and ``.safetensors`` files
    (:func:`save_checkpoint_safetensors`), told apart by their first bytes.
    """
    path = resolve_checkpoint(path)
    if is_safetensors_file(path) or path.name.endswith(SAFETENSORS_SUFFIX):
        ckpt = read_safetensors_checkpoint(path, map_location)
    else:
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
