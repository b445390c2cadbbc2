"""Run a released model: ``open_model(location)`` -> a :class:`Runner` (normalised float32 NCHW -> logits) with
its :class:`~senet_dist.release.metadata.ModelCard`, whether ``location`` is an export (TorchScript or ONNX) or a
checkpoint (the PyTorch model rebuilt from the registry), on a local path or a URI (downloaded once)."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from senet_dist.devices import resolve_device
from senet_dist.release.metadata import CARD_FILE, ModelCard, Preprocess
from senet_dist.storage import download_dir, is_local, join, read_bytes
from senet_dist.train.checkpoint import META_FILE, model_from_checkpoint, read_meta, resolve_checkpoint

ONNX_EXTRA = "ONNX needs the optional extra: pip install 'senet-dist[export]' (onnx, onnxruntime, onnxscript)"


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


def card_from_checkpoint(meta: dict[str, Any], checkpoint: str) -> ModelCard:
    """The card of a plain checkpoint (format ``pytorch``): what an export of it would carry, minus verification."""
    return ModelCard(
        format="pytorch",
        file="checkpoint.pt",
        variant=meta["model"],
        class_names=list(meta["classes"]),
        preprocess=Preprocess.from_checkpoint_meta(meta).to_dict(),
        model_kwargs=dict(meta.get("model_kwargs") or {}),
        run_id=meta.get("run_name"),
        dataset={"version": meta.get("dataset_version"), "fingerprint": meta.get("dataset_fingerprint")},
        checkpoint=checkpoint,
        epoch=meta.get("epoch"),
        weights=meta.get("weights") or meta.get("better_weights") or "model",
    )


def load_file(fmt: str, path: Path, card: ModelCard, device: torch.device) -> Runner:
    """A runner for one exported model file."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            module = torch.jit.load(str(path), map_location=device)
        return TorchRunner(module, card, device)
    if fmt == "onnx":
        return OnnxRunner(path, card, device)
    raise ValueError(f"unknown export format {fmt!r}")


def open_model(location: str | Path, device: str = "auto", *, scratch: str | Path | None = None) -> Runner:
    """Load an export directory (``model.json``) or a checkpoint / run directory, local or a URI.

    A remote location is downloaded into ``scratch`` (a new temporary directory when None; kept for the process)."""
    dev = resolve_device(device, fallback="cpu")
    loc = str(location)
    local = Path(loc.removeprefix("file://")) if is_local(loc) else _download(loc, scratch)
    card_path = local / CARD_FILE
    if card_path.is_file():
        card = ModelCard.from_json(card_path.read_text())
        return load_file(card.format, local / card.file, card, dev)
    ckpt = resolve_checkpoint(local)
    model, meta = model_from_checkpoint(ckpt, map_location="cpu")
    return TorchRunner(model, card_from_checkpoint(meta, loc if not is_local(loc) else str(ckpt)), dev)


def _download(uri: str, scratch: str | Path | None) -> Path:
    dest = Path(scratch) if scratch is not None else Path(tempfile.mkdtemp(prefix="senet-model-"))
    for marker in (CARD_FILE, META_FILE):
        try:
            read_bytes(join(uri, marker))
        except (FileNotFoundError, OSError):
            continue
        download_dir(uri, dest)
        return dest
    raise FileNotFoundError(f"{uri} holds neither an export ({CARD_FILE}) nor a checkpoint ({META_FILE})")


def read_card(location: str | Path) -> ModelCard:
    """The card of an export, or of a checkpoint / run directory, without loading the model."""
    import json

    loc = str(location)
    if is_local(loc):
        local = Path(loc.removeprefix("file://"))
        if (local / CARD_FILE).is_file():
            return ModelCard.from_json((local / CARD_FILE).read_text())
        ckpt = resolve_checkpoint(local)
        return card_from_checkpoint(read_meta(ckpt), str(ckpt))
    try:
        return ModelCard.from_json(read_bytes(join(loc, CARD_FILE)))
    except (FileNotFoundError, OSError):
        return card_from_checkpoint(json.loads(read_bytes(join(loc, META_FILE))), loc)
