"""The network: segmentation-models-pytorch U-Net with a ResNet-34 encoder.

Weights are never downloaded: ``encoder_weights=None`` by default; a local file
of encoder weights (e.g. torchvision/timm ImageNet ResNet-34) can be loaded, its
first convolution adapted from 3 to ``in_channels`` bands.

``model.pt`` in a bundle is ``{"spec": asdict(ModelSpec), "state_dict": ...}``.

Every PyTorch file (``model.pt``, encoder weights, the training checkpoint) is read with
:func:`load_plain`: ``torch.load(weights_only=True)``, which builds tensors and plain data only
and refuses anything else a pickle could hold (a call to ``os.system``…), so a file from
elsewhere cannot run code; a refusal is one line naming the file.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from coalmine.runtime._optional import optional_import
from coalmine.runtime.bundle import Bundle, ModelSpec
from coalmine.runtime.errors import BundleError, InputError


def load_plain(path: str | Path, what: str, fix: str, *, error: type[Exception] = BundleError,
               map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain data, never code.

    Args:
        path: the file.
        what: what it is, for the message ("model file", "checkpoint").
        fix: what to do when it cannot be read.
        error: the error class to raise.

    Raises:
        ``error``: the file holds other Python objects (refused, not run), or is not a PyTorch
            file, or is damaged — one line naming it.
    """
    import pickle
    import re
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not for the user
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        held = f" (it calls {found.group(1)})" if found else ""
        raise error(f"{what} {path} holds Python objects other than tensors and plain data{held}, which "
                    f"coalmine never loads, as they could run code; {fix}") from None
    except Exception as exc:  # noqa: BLE001 - torch raises KeyError, RuntimeError… for a damaged file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0][:160]
        raise error(f"{what} {path} is not a PyTorch file or is damaged ({type(exc).__name__}: {first}); "
                    f"{fix}") from None


def _smp() -> Any:
    return optional_import("segmentation_models_pytorch", purpose="building the U-Net")


def model_spec(in_channels: int) -> ModelSpec:
    """The spec of a new model with ``in_channels`` inputs, its input-size divisor (tile rule)
    taken from the encoder's output stride, so the bundle records what the network needs."""
    spec = ModelSpec(in_channels=in_channels)
    encoder = _smp().encoders.get_encoder(spec.encoder, in_channels=in_channels, weights=None)
    return replace(spec, size_multiple=int(encoder.output_stride))


def build_model(spec: ModelSpec | None = None, encoder_weights: str | Path | None = None) -> Any:
    """Create the U-Net-ResNet34 for ``spec`` (23 inputs, 1 logit channel by default).

    Args:
        spec: the model description stored in the bundle.
        encoder_weights: optional path to a local state dict of the encoder (ResNet-34). Its
            first convolution is adapted to ``spec.in_channels`` by repeating the RGB kernel
            mean over the extra bands and rescaling, as smp does for pretrained weights.

    Raises:
        InputError: the weights file is missing or does not fit a ResNet-34.
    """
    spec = spec or ModelSpec()
    smp = _smp()
    model = smp.create_model(
        spec.architecture,
        encoder_name=spec.encoder,
        encoder_weights=None,
        in_channels=spec.in_channels,
        classes=spec.classes,
    )
    if encoder_weights is not None:
        p = Path(encoder_weights)
        if not p.is_file():
            raise InputError(f"encoder weights file {p} does not exist; pass --encoder-weights a local .pth file")
        state = load_plain(p, "encoder weights file", "pass --encoder-weights a ResNet-34 state dict (.pth)",
                           error=InputError)
        if not isinstance(state, dict):
            raise InputError(f"encoder weights {p} are not a state dict (a mapping of names to tensors)")
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        w = state.get("conv1.weight")
        if w is None:
            raise InputError(f"encoder weights {p} have no 'conv1.weight': not a ResNet state dict")
        if w.shape[1] != spec.in_channels:
            # Spread the pretrained kernel over all input bands, keeping the activation scale.
            mean = w.mean(dim=1, keepdim=True)
            state["conv1.weight"] = mean.repeat(1, spec.in_channels, 1, 1) * (3.0 / spec.in_channels)
        missing, unexpected = model.encoder.load_state_dict(state, strict=False)
        if unexpected or len(missing) > 0:
            raise InputError(
                f"encoder weights {p} do not fit a {spec.encoder} encoder "
                f"(missing {len(missing)} keys, unexpected {len(unexpected)})"
            )
    return model


def save_model(model: Any, spec: ModelSpec, path: str | Path) -> None:
    """Save weights and spec as ``model.pt``."""
    import torch

    torch.save({"spec": asdict(spec), "state_dict": model.state_dict()}, Path(path))


def load_model(bundle: Bundle, device: str = "cpu") -> Any:
    """Load the bundle's ``model.pt`` into a fresh network in eval mode.

    Raises:
        BundleError: the file holds more than tensors and plain data, is damaged, or does not
            fit its spec (one line naming it).
    """
    p = bundle.file("pytorch")
    ckpt = load_plain(p, "model file", "re-create the bundle with coal-train", map_location=device)
    try:
        spec = ModelSpec(**ckpt["spec"])
        model = build_model(spec)
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise BundleError(f"{p} is not a coalmine model file or does not match its spec ({first}); "
                          "re-create the bundle with coal-train") from None
    return model.to(device).eval()
