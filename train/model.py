"""The network: segmentation-models-pytorch U-Net with a ResNet-34 encoder.

Weights are never downloaded: ``encoder_weights=None`` by default; a local file
of encoder weights (e.g. torchvision/timm ImageNet ResNet-34) can be loaded, its
first convolution adapted from 3 to ``in_channels`` bands.

``model.pt`` in a bundle is ``{"spec": asdict(ModelSpec), "state_dict": ...}``.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from coalmine.runtime._optional import optional_import
from coalmine.runtime.bundle import Bundle, ModelSpec
from coalmine.runtime.errors import BundleError, InputError


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
    import torch

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
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many types here
            raise InputError(f"cannot read encoder weights {p}: {exc}") from exc
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
    """Load the bundle's ``model.pt`` into a fresh network in eval mode."""
    import torch

    p = bundle.file("pytorch")
    try:
        ckpt = torch.load(p, map_location=device, weights_only=True)
        spec = ModelSpec(**ckpt["spec"])
        model = build_model(spec)
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise BundleError(f"{p} is not a coalmine model file or does not match its spec: {exc}") from exc
    return model.to(device).eval()
