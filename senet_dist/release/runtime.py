"""A released model: what it carries (``model.json``, :class:`ModelCard`) and how to run it (:func:`open_model` ->
a :class:`Runner`: normalised float32 NCHW -> logits), whether the location is an export (TorchScript or ONNX) or
a checkpoint (the PyTorch model rebuilt from the registry by ``load_model``), on a local path or a URI.

An export directory holds exactly two files: the model (``model.pt`` TorchScript or ``model.onnx``) and
``model.json``. ``model.json`` is written last, so a directory (or object prefix) with a ``model.json`` is complete.

Trust: a ``model.json`` and its folder may come from anyone who can write to the bucket. The card's ``file`` must
name a file inside the folder (no path, no ``..``); the card records the model file's sha256, and a registered
model's file is also checked against the digest in the ``models`` table (``expected_sha256``), which a forged card
cannot change. ONNX files run in onnxruntime and checkpoints load as data only, so neither can run code; a
TorchScript file is a program (``torch.jit.load`` executes its code), so only load TorchScript you trust
(docs/security.md).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from senet_dist.data.preprocess import Preprocess
from senet_dist.devices import resolve_device
from senet_dist.errors import PermanentError
from senet_dist.storage import is_local, join, read_bytes, redact
from senet_dist.train.checkpoint import CheckpointMeta, load_model, read_meta_at

CARD_FILE = "model.json"
FORMATS = {"torchscript": "model.pt", "onnx": "model.onnx"}
CARD_VERSION = 2  # 2: the model file's sha256
INPUT_NAME, OUTPUT_NAME = "images", "logits"
ONNX_EXTRA = "ONNX needs the optional extra: pip install 'senet-dist[export]' (onnx, onnxruntime, onnxscript)"


class ModelFileError(PermanentError, ValueError):
    """A model location that is not a usable release: a bad ``model.json``, a file outside its folder, a digest
    that does not match."""


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    return fmt


@dataclass
class ModelCard:
    """``model.json`` of an export: everything needed to feed the model and to know where it came from."""

    format: str
    file: str
    variant: str
    class_names: list[str]
    preprocess: dict[str, Any]
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    model_id: str | None = None
    run_id: str | None = None
    dataset: dict[str, Any] = field(default_factory=dict)  # name, version, fingerprint
    test_metrics: dict[str, Any] | None = None  # accuracy, macro_f1, ... on dataset_version's test split
    checkpoint: str | None = None
    epoch: int | None = None
    weights: str | None = None  # which of the checkpoint's weights: "model" (trained) or "ema" (moving average)
    sha256: str | None = None  # of ``file``; None for a checkpoint's card and for card version 1
    exported_at: str | None = None
    verification: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    card_version: int = CARD_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def preprocessing(self) -> Preprocess:
        return Preprocess.from_dict(self.preprocess)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, where: str = CARD_FILE) -> ModelCard:
        """Parse a ``model.json``; anything that is not a card (bad JSON, missing keys, a ``file`` that leaves the
        folder, an unknown format) is one :class:`ModelFileError` line."""
        try:
            d = json.loads(text)
            known = set(cls.__dataclass_fields__)
            card = cls(**{k: v for k, v in d.items() if k in known})
        except (ValueError, TypeError, AttributeError) as exc:
            raise ModelFileError(f"{where} is not a senet-dist model card: {' '.join(str(exc).split())}") from None
        if card.format not in (*FORMATS, "pytorch"):
            raise ModelFileError(f"{where}: unknown model format {card.format!r}")
        member(card.file, where)
        return card


def member(name: str, where: str = CARD_FILE) -> str:
    """``name`` if it is a plain file name (what an export folder holds), else :class:`ModelFileError`: a path
    with ``/``, ``\\`` or ``..`` would let a card point outside its folder (``../../etc/passwd``)."""
    if not isinstance(name, str) or not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ModelFileError(f"{where}: model file {name!r} is not a file name inside the model folder: refused")
    return name


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Runner:
    """A loaded model. Call it with a normalised float32 NCHW CPU batch; returns float32 CPU logits."""

    def __init__(self, card: ModelCard, device: torch.device) -> None:
        self.card, self.device = card, device

    @property
    def classes(self) -> list[str]:
        return list(self.card.class_names)

    @property
    def preprocess(self) -> Preprocess:
        return self.card.preprocessing()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TorchRunner(Runner):
    """An ``nn.Module`` or a TorchScript module."""

    def __init__(self, module: Any, card: ModelCard, device: torch.device) -> None:
        super().__init__(card, device)
        self.module = module.to(device).eval()

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images.to(self.device)).float().cpu()


class OnnxRunner(Runner):
    def __init__(self, path: Path, card: ModelCard, device: torch.device) -> None:
        super().__init__(card, device)
        ort = import_onnxruntime()
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: images.float().contiguous().cpu().numpy()})[0]
        return torch.from_numpy(out).float()


def import_onnxruntime() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError(ONNX_EXTRA) from None
    return ort


def card_from_checkpoint(meta: CheckpointMeta, checkpoint: str, weights: str | None = None) -> ModelCard:
    """The card of a plain checkpoint (format ``pytorch``): what an export of it would carry, minus verification."""
    return ModelCard(
        format="pytorch",
        file="checkpoint.pt",
        variant=meta.model,
        class_names=list(meta.classes),
        preprocess=meta.eval_view.to_dict(),
        model_kwargs=dict(meta.model_kwargs),
        run_id=meta.run_name,
        dataset={"version": meta.dataset_version, "fingerprint": meta.dataset_fingerprint},
        checkpoint=redact(checkpoint),
        epoch=meta.epoch,
        weights=weights or meta.better_weights,
    )


def load_file(fmt: str, path: Path, card: ModelCard, device: torch.device) -> Runner:
    """A runner for one exported model file (TorchScript is a program: see the module doc)."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            module = torch.jit.load(str(path), map_location=device)
        return TorchRunner(module, card, device)
    if fmt == "onnx":
        return OnnxRunner(path, card, device)
    raise ValueError(f"unknown export format {fmt!r}")


def open_model(
    location: str | Path,
    device: str = "auto",
    *,
    scratch: str | Path | None = None,
    expected_sha256: str | None = None,
) -> Runner:
    """Load an export directory (``model.json``) or a checkpoint / run directory, local or a URI.

    An export's file is checked against its card's digest and, with ``expected_sha256`` (the registry's record of
    a registered model), against that too, before it is loaded. A remote export is downloaded into ``scratch`` (a
    new temporary directory when None; kept for the process)."""
    dev = resolve_device(device, fallback="cpu")
    loc = str(location)
    local = Path(loc.removeprefix("file://")) if is_local(loc) else _download_export(loc, scratch)
    if local is None or not (local / CARD_FILE).is_file():
        loaded = load_model(loc)
        return TorchRunner(loaded.model, card_from_checkpoint(loaded.meta, loaded.location, loaded.weights), dev)
    card = ModelCard.from_json((local / CARD_FILE).read_bytes(), redact(join(loc, CARD_FILE)))
    path = local / card.file
    if not path.is_file():
        raise ModelFileError(f"{redact(loc)} has no {card.file} (named by its {CARD_FILE})")
    _check_digest(path, card, expected_sha256, loc)
    return load_file(card.format, path, card, dev)


def _check_digest(path: Path, card: ModelCard, expected: str | None, loc: str) -> None:
    digest = sha256_bytes(path.read_bytes())
    if card.sha256 is not None and digest != card.sha256:
        raise ModelFileError(f"{redact(loc)}: {card.file} does not match the sha256 in its {CARD_FILE}: refused")
    if expected is not None and digest != expected:
        raise ModelFileError(
            f"{redact(loc)}: {card.file} does not match the sha256 the model registry recorded for it (the file or "
            "its model.json was replaced): refused"
        )


def _download_export(uri: str, scratch: str | Path | None) -> Path | None:
    """A remote export downloaded (only its two files); None when ``uri`` is not an export (a checkpoint then)."""
    try:
        card = ModelCard.from_json(read_bytes(join(uri, CARD_FILE)), redact(join(uri, CARD_FILE)))
    except FileNotFoundError:
        return None
    dest = Path(scratch) if scratch is not None else Path(tempfile.mkdtemp(prefix="senet-model-"))
    dest.mkdir(parents=True, exist_ok=True)
    (dest / CARD_FILE).write_bytes(read_bytes(join(uri, CARD_FILE)))
    try:
        (dest / card.file).write_bytes(read_bytes(join(uri, card.file)))
    except FileNotFoundError:
        raise ModelFileError(f"{redact(uri)} has no {card.file} (named by its {CARD_FILE})") from None
    return dest


def read_card(location: str | Path) -> ModelCard:
    """The card of an export, or of a checkpoint / run directory, without loading the model."""
    from senet_dist.train.checkpoint import locate_checkpoint

    loc = str(location)
    try:
        return ModelCard.from_json(read_bytes(join(loc, CARD_FILE)), redact(join(loc, CARD_FILE)))
    except FileNotFoundError:
        checkpoint = locate_checkpoint(loc)
        return card_from_checkpoint(read_meta_at(checkpoint), checkpoint)


__all__ = [
    "CARD_FILE",
    "FORMATS",
    "ModelCard",
    "ModelFileError",
    "Runner",
    "card_from_checkpoint",
    "check_format",
    "load_file",
    "member",
    "open_model",
    "read_card",
]
