"""Overlapping patch tiling with border-aligned last patches, built on ``F.unfold`` / ``F.fold``.

Inference of the SSIM autoencoder (Bergmann et al. 2019 §4.3; Rádli & Czúni 2021 §5, "128 x 128 patches moving
over the test image with stride 32"): the image is cut into ``patch_size`` patches at ``stride``, every patch is
reconstructed, and overlapping reconstructions are averaged.

Why not anomalib's ``Tiler``: it pads the right and bottom border with zeros when ``(size - patch) % stride != 0``
(a black strip that an autoencoder reconstructs as an anomaly), and its Python loops unroll into a graph that took
67 s to export, against 1.6 s for ``unfold``/``fold``, in anomalib 2.7. Here, when the
stride does not divide ``size - patch``, one more row (column) of patches is placed flush with the bottom (right)
border, so every pixel is covered by real image content.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def axis_runs(size: int, patch_size: int, stride: int) -> list[tuple[int, int]]:
    """Patch positions along one axis as runs ``(first_start, count)`` of starts spaced by ``stride``.

    Example: ``axis_runs(208, 128, 32) == [(0, 3), (80, 1)]``: starts 0, 32, 64 and the border-aligned 80.

    Raises:
        ValueError: if ``size < patch_size`` or the stride is not in ``[1, patch_size]``.
    """
    if size < patch_size:
        msg = f"image side of {size} px is smaller than patch_size {patch_size}; use a larger image_size"
        raise ValueError(msg)
    if not 1 <= stride <= patch_size:
        msg = f"stride must be between 1 and patch_size ({patch_size}), got {stride}"
        raise ValueError(msg)
    count = (size - patch_size) // stride + 1
    runs = [(0, count)]
    if (count - 1) * stride + patch_size < size:
        runs.append((size - patch_size, 1))
    return runs


class PatchTiler:
    """Cut images into overlapping patches and stitch patches back by averaging.

    Args:
        patch_size: side of the square patches in pixels (paper: 128).
        stride: step between patch origins in pixels (paper: 32).

    Shapes: ``tile`` maps ``(B, C, H, W)`` to ``(B * L, C, patch_size, patch_size)`` where ``L`` is the number of
    patches per image (25 for 256 x 256 at 128 / 32); ``untile`` maps that back to ``(B, C, H, W)``. Patches of one
    image are contiguous. All loops run over the (static) image shape, so the operations export to ONNX
    (``Im2Col``-free ``Unfold`` and ``Col2Im``, opset 18).
    """

    def __init__(self, patch_size: int, stride: int) -> None:
        axis_runs(patch_size, patch_size, stride)  # fail at construction on a bad stride, not at the first test
        self.patch_size = patch_size
        self.stride = stride

    def check_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` if an image of ``height x width`` pixels cannot be tiled (a side < ``patch_size``)."""
        if min(height, width) < self.patch_size:
            msg = (
                f"image_size {height} x {width} is smaller than patch_size {self.patch_size}: every side must be >= it"
            )
            raise ValueError(msg)

    def _regions(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """Regions ``(top, left, rows, cols)`` each tiled by a regular grid of patches."""
        p, s = self.patch_size, self.stride
        return [
            (top, left, (n_rows - 1) * s + p, (n_cols - 1) * s + p)
            for top, n_rows in axis_runs(height, p, s)
            for left, n_cols in axis_runs(width, p, s)
        ]

    def num_patches(self, height: int, width: int) -> int:
        """Number of patches per image of ``height x width`` pixels."""
        p, s = self.patch_size, self.stride
        return sum(n for _, n in axis_runs(height, p, s)) * sum(n for _, n in axis_runs(width, p, s))

    def coverage(self, height: int, width: int) -> torch.Tensor:
        """Number of patches over each pixel, ``(height, width)`` float32. The patch origins are the product of the
        row and column starts, so the count is the outer product of the two axes' counts (no ``(p * p, L)`` ones)."""
        counts = []
        for size in (height, width):
            count = torch.zeros(size)
            for first, n in axis_runs(size, self.patch_size, self.stride):
                for start in range(first, first + n * self.stride, self.stride):
                    count[start : start + self.patch_size] += 1
            counts.append(count)
        return counts[0][:, None] * counts[1][None, :]

    def tile(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B * L, C, patch_size, patch_size)``."""
        _, channels, height, width = images.shape
        p = self.patch_size
        columns = [
            F.unfold(images[:, :, top : top + rows, left : left + cols], kernel_size=p, stride=self.stride)
            for top, left, rows, cols in self._regions(height, width)
        ]
        patches = torch.cat(columns, dim=2)  # (B, C*p*p, L)
        return patches.transpose(1, 2).reshape(-1, channels, p, p)

    def _fold(self, patches: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Sum patches ``(B, C*p*p, L)`` into ``(B, C, H, W)``."""
        output = None
        start = 0
        for top, left, rows, cols in self._regions(height, width):
            count = ((rows - self.patch_size) // self.stride + 1) * ((cols - self.patch_size) // self.stride + 1)
            region = F.fold(
                patches[:, :, start : start + count],
                output_size=(rows, cols),
                kernel_size=self.patch_size,
                stride=self.stride,
            )
            region = F.pad(region, (left, width - left - cols, top, height - top - rows))
            output = region if output is None else output + region
            start += count
        return output

    def untile(self, patches: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``(B * L, C, patch_size, patch_size)`` -> ``(B, C, H, W)``, overlaps averaged (divided by
        :meth:`coverage`)."""
        channels, p = patches.shape[1], self.patch_size
        per_image = self.num_patches(height, width)
        columns = patches.reshape(-1, per_image, channels * p * p).transpose(1, 2)
        # Divide by the patch count as a constant, not as fold(ones): OpenVINO 2026.4.1 with two or more streams
        # computed Col2Im(x) / Col2Im(ones) as Col2Im(x) * count (benchmarks/studies/openvino_throughput_repro.py), which
        # corrupted the exported maps for anyone running them with the THROUGHPUT hint. Same values (whole numbers).
        return self._fold(columns, height, width) / self.coverage(height, width).to(patches.device, patches.dtype)

    def apply(
        self,
        images: torch.Tensor,
        function: Callable[[torch.Tensor], torch.Tensor],
        chunk_size: int,
        keep_patches: bool = False,
        on_chunk: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``untile(function(tile(images)))``, cutting, mapping and stitching ``chunk_size`` patches at a time, so
        that the memory is one chunk plus image-sized sums, not ``B * L`` patches (16 times the image at stride 32).

        ``images`` ``(B, C, H, W)``; ``function`` maps ``(N, C, P, P)`` to ``(N, C, P, P)``. Returns the stitched
        ``(B, C, H, W)`` and, if ``keep_patches``, the ``(B * L, C, P, P)`` patches and their images under
        ``function`` in the order of :meth:`tile` (else ``None``, ``None``); stitched and kept outputs take the
        dtype and channels of ``function``'s. With the same chunks given to ``function``, the result equals
        ``untile`` bit for bit on the CPU, whose ``F.fold`` sums in the order followed here (CUDA's sums in another:
        equal to float rounding). Eager only: the Python loops would unroll into an exported graph.

        ``on_chunk(image_index, inputs, outputs)``, if given, sees every chunk: ``(N,)`` int64 index of each patch's
        image in ``images``, its ``(N, C, P, P)`` patches and their images under ``function``; it lets a caller
        reduce over the patches (validation's loss) without keeping them.
        """
        batch, channels, height, width = images.shape
        p, s = self.patch_size, self.stride
        regions = self._regions(height, width)
        patches = [  # (image, region, top, left) in the order of tile
            (index, region, top + row * s, left + col * s)
            for index in range(batch)
            for region, (top, left, rows, cols) in enumerate(regions)
            for row in range((rows - p) // s + 1)
            for col in range((cols - p) // s + 1)
        ]
        sums: list[torch.Tensor] = []
        kept_inputs = images.new_empty((len(patches), channels, p, p)) if keep_patches else None
        kept_outputs = None
        # F.fold adds the patches over a pixel last to first (its loop runs over kernel offsets), one region at a
        # time: chunks and the patches in them go backwards, into one sum per region, for the same float sums.
        for start in reversed(range(0, len(patches), chunk_size)):
            chunk = patches[start : start + chunk_size]
            inputs = torch.stack([images[index, :, top : top + p, left : left + p] for index, _, top, left in chunk])
            outputs = function(inputs)
            if on_chunk is not None:
                on_chunk(torch.tensor([index for index, *_ in chunk], device=images.device), inputs, outputs)
            if not sums:  # allocated at the first chunk, with the outputs' dtype and channels
                sums = [outputs.new_zeros((batch, outputs.shape[1], rows, cols)) for _, _, rows, cols in regions]
                if keep_patches:
                    kept_outputs = outputs.new_empty((len(patches), *outputs.shape[1:]))
            for (index, region, top, left), patch in reversed(list(zip(chunk, outputs, strict=True))):
                region_top, region_left = regions[region][:2]
                top, left = top - region_top, left - region_left
                sums[region][index, :, top : top + p, left : left + p] += patch
            if keep_patches:
                kept_inputs[start : start + len(chunk)] = inputs
                kept_outputs[start : start + len(chunk)] = outputs
        total = sums[0].new_zeros((batch, sums[0].shape[1], height, width))
        for (top, left, rows, cols), region_sum in zip(regions, sums, strict=True):
            total[:, :, top : top + rows, left : left + cols] += region_sum  # regions in _fold's order
        stitched = total / self.coverage(height, width).to(total)
        return stitched, kept_inputs, kept_outputs
