"""Why the models resize without antialiasing: a torchvision Resize exported to ONNX, run by ONNX Runtime and
OpenVINO (f32), against torch, for a few input sizes resized to 256 x 256. With ``antialias=True`` OpenVINO's result
differs (it does not apply ONNX's antialias flag); with ``antialias=False`` all three agree to float32 rounding.

    python benchmarks/studies/resize_parity.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import openvino as ov
import torch
from torchvision.transforms import v2


class Resize(torch.nn.Module):
    def __init__(self, antialias: bool) -> None:
        super().__init__()
        self.resize = v2.Resize((256, 256), antialias=antialias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.resize(images)


def main() -> None:
    torch.manual_seed(0)
    print("| antialias | input | ONNX Runtime max diff | OpenVINO f32 max diff |\n|---|---|---|---|")
    for antialias in (True, False):
        module = Resize(antialias).eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "resize.onnx"
            dims = {2: torch.export.Dim("height", min=16, max=4096), 3: torch.export.Dim("width", min=16, max=4096)}
            torch.onnx.export(
                module,
                (torch.rand(1, 3, 512, 512),),
                str(path),
                dynamo=True,
                opset_version=18,
                input_names=["input"],
                dynamic_shapes=(dims,),
            )
            session = ort.InferenceSession(str(path))
            compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            for shape in ((1, 3, 512, 512), (1, 3, 700, 333), (1, 3, 200, 300)):
                images = torch.rand(*shape)
                reference = module(images).numpy()
                onnx = session.run(None, {"input": images.numpy()})[0]
                openvino = compiled(images.numpy())[0]
                print(
                    f"| {antialias} | {shape[2]} x {shape[3]} | {np.abs(onnx - reference).max():.2g} "
                    f"| {np.abs(openvino - reference).max():.2g} |"
                )


if __name__ == "__main__":
    main()
