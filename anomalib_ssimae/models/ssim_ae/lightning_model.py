"""SSIM-AE as an anomalib model: Bergmann et al. (2019), with the training recipe of Rádli & Czúni (2021) §5.

Training takes random ``patch_size`` crops on the fly from the resized defect-free images (rotation, flips; see
:mod:`anomalib_ssimae.data.augmentation`), ``crops_per_epoch`` of them per epoch in batches of ``batch_size``,
and minimises the SSIM loss (Eq. 7) with Adam. Validation logs the same loss on the defect-free validation
images as ``val_loss`` (for ``EarlyStopping``/``ModelCheckpoint``) and feeds anomaly maps to anomalib's
post-processor. Test, predict and export use the tiled inference of :class:`SsimAeModel`.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.deploy import CompressionType
from anomalib.metrics import AUPRO, AUROC, Evaluator, F1Max, F1Score
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torchvision.transforms.v2 import Compose, Resize

from anomalib_ssimae.callbacks import PredictionRecords, RunSummary, say
from anomalib_ssimae.components.ssim import ssim_map
from anomalib_ssimae.data.augmentation import sample_patches
from anomalib_ssimae.data.corruption import add_masked_blocks
from anomalib_ssimae.data.validation import check_image_files
from anomalib_ssimae.deploy import write_export_metadata
from anomalib_ssimae.models.ssim_ae.loss import ReconstructionLoss
from anomalib_ssimae.models.ssim_ae.torch_model import SSIM_AE_ENCODER, SsimAeModel, to_model_channels
from anomalib_ssimae.post_processing import DefectFreePostProcessor
from anomalib_ssimae.precision import cpu_flags, training_precision
from anomalib_ssimae.visualization import ReconstructionVisualizer

logger = logging.getLogger(__name__)
LR_SCHEDULES = ("constant", "cosine")


def updates_for_images(images_before: int, batch_images: int, total_images: int, total_updates: int) -> int:
    """Optimiser steps for one image batch, in proportion to its images, so that every training image gives about
    the same number of crops per epoch (a short last batch gets fewer steps).

    Example: 40 images in batches of 32 and 8, 20 steps per epoch -> 16 and 4 steps (sum 20).
    """
    done = images_before * total_updates // total_images
    return (images_before + batch_images) * total_updates // total_images - done


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``256`` or ``[208, 512]`` -> ``(height, width)``."""
    if isinstance(image_size, int):
        return image_size, image_size
    if len(image_size) != 2:
        msg = f"image_size must be an int or [height, width], got {image_size!r}"
        raise ValueError(msg)
    height, width = image_size
    return int(height), int(width)


def _check_arguments(arguments: dict[str, Any]) -> None:
    """Reject values that would fail only later in training, with the argument's name."""
    at_least_one = ("latent_dim", "crops_per_epoch", "batch_size", "num_blocks", "patch_size")
    for name in at_least_one:
        if arguments[name] < 1:
            msg = f"{name} must be at least 1, got {arguments[name]}"
            raise ValueError(msg)
    if arguments["lr_step_size"] is not None and arguments["lr_step_size"] < 1:
        msg = f"lr_step_size must be None or at least 1, got {arguments['lr_step_size']}"
        raise ValueError(msg)
    if arguments["lr_schedule"] not in LR_SCHEDULES:
        msg = f"lr_schedule must be one of {LR_SCHEDULES}, got {arguments['lr_schedule']!r}"
        raise ValueError(msg)
    if arguments["lr_schedule"] == "cosine" and arguments["lr_step_size"] is not None:
        msg = "lr_schedule 'cosine' and lr_step_size (StepLR) exclude each other: set one"
        raise ValueError(msg)
    if arguments["warmup_crops"] < 0:
        msg = f"warmup_crops must be >= 0, got {arguments['warmup_crops']}"
        raise ValueError(msg)
    training_precision(arguments["train_precision"])  # raises on an unknown value
    for name in ("rotation_prob", "hflip_prob", "vflip_prob"):
        if not 0 <= arguments[name] <= 1:
            msg = f"{name} is a probability and must be in [0, 1], got {arguments[name]}"
            raise ValueError(msg)


class WarmupCosine:
    """Learning-rate factor per optimiser step: linear warm-up over ``warmup`` steps, then cosine decay to 0 at
    ``total`` steps, or earlier when ``time_fraction`` (the share of a time budget used) is further along than the
    share of steps done: the position is then ``time_fraction * total`` steps. On a machine fast enough to finish
    the steps within the time budget the steps are always further along, so the schedule does not depend on timing.

    Example: ``WarmupCosine(10, 110)`` gives 0.1 at step 0, 1.0 at step 9, 0.5 at step 60 and 0.0 from step 110;
    at step 20 with half the time budget used it gives the factor of step 55.
    """

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup = warmup
        self.total = max(total, warmup + 1)

    def __call__(self, step: int, time_fraction: float = 0.0) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        position = max(step, time_fraction * self.total)
        progress = (position - self.warmup) / (self.total - self.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class SsimAe(AnomalibModule):
    """SSIM autoencoder (SSIM-AE) for unsupervised defect segmentation.

    Args:
        image_size: size every image is resized to, ``int`` or ``[height, width]`` in pixels (default 256); both
            sides must be at least ``patch_size``. The anomaly map has this size.
        patch_size: training crop and inference patch side in pixels (paper: 128; a multiple of 16).
        stride: inference patch stride in pixels (paper: 32); the last patches are aligned to the border.
        in_channels: 1 (grayscale, converted inside the model) or 3.
        latent_dim: bottleneck size ``d`` (paper: 100 for textures, 500 for the CPU parts).
        loss: ``"ssim"`` (Eq. 7), ``"l2"`` or ``"ssim_l1"``.
        l1_weight: weight of the L1 term of ``"ssim_l1"``.
        residual: anomaly map: ``"ssim"`` (1 - SSIM map, Eq. 8), ``"l2"`` or ``"ssim_l2"``.
        score: image anomaly score from the map: ``"max"`` of the map smoothed by a Gaussian of ``score_sigma``
            pixels, ``"mean"``, or ``"top_mean"`` (mean of the highest ``score_fraction`` of pixels); see
            :class:`~anomalib_ssimae.models.ssim_ae.anomaly_map.AnomalyMapGenerator`.
        score_sigma: Gaussian sigma in pixels for ``score: max``. The default 16 had the best image AUROC across the
            datasets compared (``benchmarks/results/image_scores.md``; sigma 4, used before, scored the border band).
        score_fraction: fraction of pixels for ``score: top_mean``.
        crops_per_epoch: training crops per epoch (paper: 10,000), rounded up to whole batches.
        batch_size: crops per optimiser step (paper: 128). The datamodule's ``train_batch_size`` only sets how many
            images the crops of one training step are drawn from.
        rotation_prob, max_rotation: probability and largest angle (degrees) of the rotation (paper: 0.3, 45).
        hflip_prob, vflip_prob: flip probabilities (paper: 0.3 for textures, 0 for asymmetric parts).
        learning_rate: Adam learning rate (paper: 2e-4).
        weight_decay: Adam weight decay (paper: 1e-5; authors' code: 0).
        lr_step_size: if set, StepLR every this many epochs (authors' code: 15, disabled by default).
        lr_gamma: StepLR factor.
        lr_schedule: ``"constant"`` (paper; with ``lr_step_size`` the StepLR above) or ``"cosine"``: linear warm-up
            over ``warmup_crops`` training crops to ``learning_rate``, then cosine decay to 0 at the end of training
            (``trainer.max_steps`` or ``trainer.max_epochs`` x ``crops_per_epoch``), or at ``trainer.max_time`` when
            that comes first (the decay follows whichever is further along). It reached the paper's quality in
            about a quarter of the crops (``benchmarks/results/time_to_quality.md``).
        warmup_crops: length of the warm-up in training crops (``"cosine"`` only).
        train_precision: ``"auto"`` trains the network under bf16 autocast where the CPU has bf16 units
            (AVX512-BF16 or AMX; about 1.7x faster there) and in fp32 elsewhere (bf16 was 8x slower on an
            AVX2-only CPU); ``"bf16-mixed"`` or ``"32-true"`` force one. The SSIM loss, validation, test and export
            always run in fp32. See :mod:`anomalib_ssimae.precision`.
        channels_last: train the network in channels-last memory layout (faster convolutions on CPU).
        denoising: train as a denoising autoencoder (Rádli & Czúni §5, Eq. 3-4): each training crop gets
            ``num_blocks`` squares of ``block_size`` pixels in its dominant colour, the network reconstructs the
            clean crop, and the loss weights corrupted pixels by ``alpha`` and the rest by ``beta``. Training only:
            validation, test, predict and export never corrupt. See :mod:`anomalib_ssimae.data.corruption`.
        num_blocks, block_size: blocks per crop and their side in pixels (paper: 1, 20).
        alpha, beta: loss weights of corrupted and clean pixels (paper: 1, 1).
        seed: seeds Python, NumPy and torch (``lightning.seed_everything``) when the model is built, so the weight
            initialisation, the data order and the crops are reproducible: anomalib 2.7's CLI accepts
            ``seed_everything`` but never applies it. ``None`` leaves the random state alone.
        pre_processor, post_processor, evaluator, visualizer: anomalib components; ``True`` uses this model's
            defaults (resize only; anomalib's PostProcessor with F1-adaptive thresholds; image AUROC/F1Max, pixel
            AUROC/AUPRO/F1; :class:`ReconstructionVisualizer`). For thresholds from defect-free images only, pass
            :class:`~anomalib_ssimae.post_processing.DefectFreePostProcessor`.

    Source: Bergmann et al., VISAPP 2019 (arXiv 1807.02011); Rádli & Czúni, WSCG 2021, §3 and §5.
    """

    encoder: tuple = SSIM_AE_ENCODER  # network architecture; the extended variants override these two
    output_kernel: int | None = None

    def __init__(
        self,
        image_size: int | Sequence[int] = 256,
        patch_size: int = 128,
        stride: int = 32,
        in_channels: int = 1,
        latent_dim: int = 100,
        loss: str = "ssim",
        l1_weight: float = 1.0,
        residual: str = "ssim",
        score: str = "max",
        score_sigma: float = 16.0,
        score_fraction: float = 0.01,
        crops_per_epoch: int = 10_000,
        batch_size: int = 128,
        rotation_prob: float = 0.3,
        max_rotation: float = 45.0,
        hflip_prob: float = 0.3,
        vflip_prob: float = 0.3,
        learning_rate: float = 2e-4,
        weight_decay: float = 0.0,
        lr_step_size: int | None = None,
        lr_gamma: float = 0.5,
        lr_schedule: str = "constant",
        warmup_crops: int = 0,
        train_precision: str = "auto",
        channels_last: bool = True,
        denoising: bool = False,
        num_blocks: int = 1,
        block_size: int = 20,
        alpha: float = 1.0,
        beta: float = 1.0,
        seed: int | None = 42,
        pre_processor: PreProcessor | bool = True,
        post_processor: Any = True,  # anomalib's PostProcessor | bool
        evaluator: Evaluator | bool = True,
        visualizer: Any = True,  # anomalib's Visualizer | bool
    ) -> None:
        _check_arguments(locals())
        if seed is not None:
            seed_everything(seed, workers=True, verbose=False)
        height, width = _size(image_size)
        if min(height, width) < patch_size:
            msg = f"image_size {height} x {width} is smaller than patch_size {patch_size}: every side must be >= it"
            raise ValueError(msg)
        self._image_size = (height, width)  # read by configure_pre_processor inside super().__init__
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        if denoising and not 0 < block_size <= patch_size:
            msg = f"block_size must be between 1 and patch_size {patch_size}, got {block_size}"
            raise ValueError(msg)
        self.model = SsimAeModel(
            in_channels=in_channels,
            latent_dim=latent_dim,
            patch_size=patch_size,
            stride=stride,
            residual=residual,
            score=score,
            score_sigma=score_sigma,
            score_fraction=score_fraction,
            encoder=self.encoder,
            output_kernel=self.output_kernel,
        )
        radius = self.model.anomaly_map_generator.blur.radius
        if score == "max" and min(height, width) <= radius:
            msg = (f"score_sigma {score_sigma} is too large for image_size {height} x {width}: the smoothing kernel "
                   f"radius ({radius} px) must be smaller than every image side")
            raise ValueError(msg)
        if channels_last:
            self.model.network.to(memory_format=torch.channels_last)
        self.loss = ReconstructionLoss(loss, l1_weight, alpha=alpha, beta=beta)
        self.automatic_optimization = False  # several optimiser steps per image batch (crops_per_epoch)
        self._warned_no_good_val = False
        self._warned_f1_without_defects = False
        self._val_defective = 0
        self._images_seen = 0
        self._bf16 = False  # set at fit start from train_precision and the device
        self._schedule: WarmupCosine | None = None  # set at fit start for lr_schedule "cosine"
        self._timer: Timer | None = None  # Lightning's, when trainer.max_time is set (fit start)

    # ------------------------------------------------------------------ anomalib components
    def configure_pre_processor(self, image_size: tuple[int, int] | None = None) -> PreProcessor:
        """Resize only: the autoencoder reconstructs raw [0, 1] intensities, so no ImageNet normalisation.

        Bilinear without antialiasing, in the dataloader as in the exported graph: anomalib exports Resize with
        ``antialias=False`` anyway, and OpenVINO ignores ONNX's antialias flag (0.29 max difference on a 512 -> 256
        resize, ``benchmarks/resize_parity.py``), so one resize everywhere is what makes exported maps equal to tested ones. For a 2x
        reduction (512 -> 256) it is exactly a 2 x 2 mean.
        """
        return PreProcessor(transform=Compose([Resize(image_size or self._image_size, antialias=False)]))

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """Image AUROC and F1Max, pixel AUROC, AUPRO (FPR <= 0.3) and F1 at the post-processor's threshold."""
        return Evaluator(
            test_metrics=[
                AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
                F1Max(fields=["pred_score", "gt_label"], prefix="image_"),
                AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
                AUPRO(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
                F1Score(fields=["pred_mask", "gt_mask"], prefix="pixel_", strict=False),
            ],
        )

    @classmethod
    def configure_visualizer(cls) -> ReconstructionVisualizer:
        """anomalib's image panel plus the reconstruction."""
        return ReconstructionVisualizer()

    def configure_callbacks(self) -> list[Callback]:
        """anomalib's components, :class:`RunSummary` (prints where logs and results are) and
        :class:`PredictionRecords` (JSON lines for ``anomalib predict``)."""
        return [*super().configure_callbacks(), RunSummary(), PredictionRecords()]

    @property
    def learning_type(self) -> LearningType:
        """One-class: trained on defect-free images only."""
        return LearningType.ONE_CLASS

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No gradient clipping (manual optimisation), no sanity validation."""
        return {"gradient_clip_val": 0, "num_sanity_val_steps": 0}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Ignore the evaluator's entries: they hold metric settings (e.g. AUPRO's ``fpr_limit``), not weights,
        and differ whenever a checkpoint is reloaded with another evaluator; drop the score-blur kernel that 0.1.0
        checkpoints saved (it is now derived from ``score_sigma``).
        """
        own = {k: v for k, v in self.state_dict().items() if k.startswith("evaluator.")}
        state_dict = {
            k: v for k, v in state_dict.items() if not k.startswith("evaluator.") and not k.endswith("blur.kernel")
        } | own
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Rebuild a :class:`DefectFreePostProcessor` when the checkpoint has one: ``load_from_checkpoint`` (used by
        ``anomalib export`` and ``predict --ckpt_path``) builds the default components, whose state would not fit."""
        old = self.post_processor
        if ("post_processor.image_fpr_quantiles" in checkpoint.get("state_dict", {}) and old is not None
                and not isinstance(old, DefectFreePostProcessor)):
            self.post_processor = DefectFreePostProcessor(**(checkpoint.get("anomalib_post_processor_config") or {}))
            # `trainer.predict/test/fit(ckpt_path=...)` registered the old one as a callback before loading
            trainer = self._trainer
            if trainer is not None:
                trainer.callbacks[:] = [self.post_processor if cb is old else cb for cb in trainer.callbacks]
        super().on_load_checkpoint(checkpoint)

    # ------------------------------------------------------------------ export
    def to_onnx(self, export_root: Path | str, model_file_name: str = "model",
                input_size: tuple[int, int] | None = None, **kwargs: Any) -> Path:
        """anomalib's ONNX export with opset 18 by default (the stitching uses Col2Im, opset >= 18), plus
        ``calibration.json`` beside the model (:func:`anomalib_ssimae.deploy.export_metadata`)."""
        kwargs.setdefault("opset_version", 18)
        path = super().to_onnx(export_root, model_file_name, input_size, **kwargs)
        say(f"export metadata: {write_export_metadata(self, path.parent)}")
        return path

    def to_openvino(self, export_root: Path | str, model_file_name: str = "model",
                    input_size: tuple[int, int] | None = None, compression_type: CompressionType | None = None,
                    *args: Any, **kwargs: Any) -> Path:
        """anomalib's OpenVINO export plus ``calibration.json``. fp16 compression also rounds the baked thresholds
        and normalisation constants (a score moved 0.59 -> 0.67 in a trial), hence the warning."""
        if compression_type == CompressionType.FP16:
            logger.warning(
                "fp16 compression stores the thresholds and normalisation range in fp16 too, which changes scores "
                "and masks (see README, Deployment); run the f32 model with INFERENCE_PRECISION_HINT f32 instead.",
            )
        path = super().to_openvino(export_root, model_file_name, input_size, compression_type, *args, **kwargs)
        say(f"export metadata: {write_export_metadata(self, path.parent)}")
        return path

    def to_torch(self, export_root: Path | str, model_file_name: str = "model") -> Path:
        """anomalib's pickled torch export plus ``calibration.json``."""
        path = super().to_torch(export_root, model_file_name)
        say(f"export metadata: {write_export_metadata(self, path.parent)}")
        return path

    # ------------------------------------------------------------------ training
    def configure_optimizers(self) -> Any:
        """Adam (paper: lr 2e-4), optional StepLR per epoch or warm-up + cosine decay per optimiser step."""
        optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=self.hparams.learning_rate,
            weight_decay=self.hparams.weight_decay,
        )
        if self.hparams.lr_step_size is None:
            return optimizer
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, self.hparams.lr_step_size, self.hparams.lr_gamma)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def _total_updates(self) -> int:
        """Optimiser steps of the whole training, for the cosine schedule.

        Raises:
            ValueError: if the trainer sets neither ``max_steps`` nor ``max_epochs``.
        """
        per_epoch = math.ceil(self.hparams.crops_per_epoch / self.hparams.batch_size)
        limits = []
        if self.trainer.max_steps is not None and self.trainer.max_steps > 0:
            limits.append(self.trainer.max_steps)
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            limits.append(self.trainer.max_epochs * per_epoch)
        if not limits:
            msg = "lr_schedule 'cosine' needs the training length: set trainer.max_epochs or trainer.max_steps"
            raise ValueError(msg)
        return min(limits)

    def _check_images(self, *splits: str) -> None:
        """Decode every image of the datamodule's given splits; a bad file raises an error naming it."""
        datamodule = getattr(self.trainer, "datamodule", None)
        for split in splits:
            dataset = getattr(datamodule, split, None) if datamodule is not None else None
            samples = getattr(dataset, "samples", None)
            if samples is not None and "image_path" in samples:
                check_image_files(samples["image_path"])

    def on_fit_start(self) -> None:
        """Check the training and validation images before the first step; choose the training precision; size
        the cosine schedule."""
        self._check_images("train_data", "val_data")
        if self.hparams.lr_schedule == "cosine":
            warmup = math.ceil(self.hparams.warmup_crops / self.hparams.batch_size)
            self._schedule = WarmupCosine(warmup, self._total_updates())
            self._timer = next((cb for cb in self.trainer.callbacks if isinstance(cb, Timer)), None)
            if warmup >= self._schedule.total:
                warnings.warn(f"warmup_crops ({self.hparams.warmup_crops}) is as long as the whole training: the "
                              "learning rate never reaches its peak", stacklevel=1)
        precision = training_precision(self.hparams.train_precision, self.device.type)
        self._bf16 = precision == "bf16-mixed"
        units = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16"}) if self.device.type == "cpu" else []
        say(f"training precision: {precision} (train_precision={self.hparams.train_precision}; "
            f"{self.device.type}{' bf16 units: ' + ', '.join(units) if units else ''})")

    def on_test_start(self) -> None:
        """Check the test images."""
        self._check_images("test_data")

    def on_train_epoch_start(self) -> None:
        """Count the images of the epoch, to spread the optimiser steps over them."""
        self._images_seen = 0

    def _updates_for_batch(self, batch_images: int) -> int:
        """Optimiser steps for this image batch (see :func:`updates_for_images`)."""
        total_updates = math.ceil(self.hparams.crops_per_epoch / self.hparams.batch_size)
        total_images = len(self.trainer.train_dataloader.dataset)
        steps = updates_for_images(self._images_seen, batch_images, total_images, total_updates)
        self._images_seen += batch_images
        return steps

    def training_step(self, batch: Batch, batch_idx: int) -> STEP_OUTPUT:
        """Draw augmented crops from the batch images and take optimiser steps on the reconstruction loss."""
        optimizer = self.optimizers()
        images = to_model_channels(batch.image, self.model.in_channels)
        loss = None
        del batch_idx
        for _ in range(self._updates_for_batch(len(images))):
            crops = sample_patches(
                images,
                self.hparams.batch_size,
                self.hparams.patch_size,
                self.hparams.rotation_prob,
                self.hparams.max_rotation,
                self.hparams.hflip_prob,
                self.hparams.vflip_prob,
            )
            mask = None
            network_input = crops
            if self.hparams.denoising:
                network_input, mask = add_masked_blocks(crops, self.hparams.num_blocks, self.hparams.block_size)
            if self.hparams.channels_last:
                network_input = network_input.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._bf16):
                _, reconstruction = self.model(network_input)
            loss = self.loss(crops, reconstruction, mask)  # target: the clean crop; the loss runs in fp32
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            if self._schedule is not None:
                self._set_learning_rate(optimizer)
            optimizer.step()
            self.log("train_loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=len(crops))
        return {"loss": loss} if loss is not None else None

    def _set_learning_rate(self, optimizer: Any) -> None:
        """Cosine schedule from the optimiser steps done (so a resumed run continues it) and, when
        ``trainer.max_time`` is set, from the share of that budget used: a run cut short by the time cap still
        ends its decay instead of stopping at a high rate."""
        time_fraction = 0.0
        if self._timer is not None and self._timer.time_remaining() is not None:
            elapsed = self._timer.time_elapsed()
            time_fraction = elapsed / max(elapsed + self._timer.time_remaining(), 1e-9)
        factor = self._schedule(self.trainer.global_step, time_fraction)
        for group in optimizer.param_groups:
            group["lr"] = self.hparams.learning_rate * factor

    def on_train_epoch_end(self) -> None:
        """Step the optional StepLR schedule (manual optimisation does not)."""
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    # ------------------------------------------------------------------ validation and test
    def _reconstruct(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """Tiled reconstruction of the batch plus the mask of its defect-free images ``(B,)``."""
        inputs, reconstruction, patches, reconstructed = self.model.reconstruct(batch.image)
        good = torch.ones(len(inputs), dtype=torch.bool, device=inputs.device)
        if batch.gt_label is not None:
            good = ~batch.gt_label.bool().to(inputs.device)
        return inputs, reconstruction, patches, reconstructed, good

    def validation_step(self, batch: Batch, batch_idx: int) -> STEP_OUTPUT:
        """Anomaly maps for the post-processor, plus ``val_loss``: the training loss on the tiled patches of the
        defect-free validation images (defective ones are skipped; never corrupted)."""
        inputs, reconstruction, patches, reconstructed, good = self._reconstruct(batch)
        self._val_defective += int((~good).sum())
        if good.any():
            keep = good.repeat_interleave(len(patches) // len(inputs))
            val_loss = self.loss(patches[keep], reconstructed[keep])
            self.log("val_loss", val_loss, on_epoch=True, prog_bar=True, batch_size=int(good.sum()))
        if batch_idx == 0:
            self._log_reconstructions(inputs, reconstruction)
        return batch.update(**self.model.anomaly_prediction(inputs, reconstruction)._asdict())

    def test_step(self, batch: Batch, batch_idx: int, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Anomaly maps, plus the reconstruction quality of defect-free test images as in Rádli & Czúni Table 5:
        ``reconstruction_SSIM`` (mean SSIM, in [-1, 1]) and ``reconstruction_MSE`` (on the 0-255 scale)."""
        del batch_idx, args, kwargs
        inputs, reconstruction, _, _, good = self._reconstruct(batch)
        if good.any():
            image, rebuilt = inputs[good].float(), reconstruction[good].float()
            count = int(good.sum())
            self.log("reconstruction_SSIM", ssim_map(image, rebuilt).mean(), on_epoch=True, batch_size=count)
            self.log("reconstruction_MSE", ((image - rebuilt) * 255).pow(2).mean(), on_epoch=True, batch_size=count)
        return batch.update(**self.model.anomaly_prediction(inputs, reconstruction)._asdict())

    def on_validation_epoch_start(self) -> None:
        """Count the epoch's defective validation images (for the threshold warning)."""
        self._val_defective = 0

    def on_validation_epoch_end(self) -> None:
        """Warn once when no defect-free validation image exists (then val_loss is missing), and once when the
        F1-adaptive threshold is in use without any defective validation image (it then flags almost everything)."""
        post = self.post_processor
        f1_adaptive = isinstance(post, PostProcessor) and not isinstance(post, DefectFreePostProcessor)
        if f1_adaptive and post.enable_thresholding and self._val_defective == 0 and not self._warned_f1_without_defects:
            self._warned_f1_without_defects = True
            warnings.warn(
                "The validation set has no defective images, but the thresholds come from anomalib's F1-adaptive "
                "metric, which then falls back to the highest validation score: an operating point nobody chose. "
                "Use post_processor: {class_path: anomalib_ssimae.post_processing.DefectFreePostProcessor} to set "
                "them for a false-positive rate on defect-free images instead.",
                stacklevel=1,
            )
        if "val_loss" not in self.trainer.callback_metrics and not self._warned_no_good_val:
            self._warned_no_good_val = True
            warnings.warn(
                "The validation set has no defect-free images, so val_loss is not logged and EarlyStopping or "
                "ModelCheckpoint monitoring val_loss cannot work. Give the datamodule defect-free validation images "
                "(e.g. val_split_mode: from_test).",
                stacklevel=1,
            )

    def _log_reconstructions(self, inputs: torch.Tensor, reconstruction: torch.Tensor) -> None:
        """Show up to 4 validation images beside their reconstructions in TensorBoard, and warn on collapse."""
        # A uniform reconstruction of a textured image after a few hundred steps is the collapse users report.
        uniform = reconstruction.float().std(dim=(1, 2, 3)).max() < 1e-3 < inputs.float().std(dim=(1, 2, 3)).max()
        if uniform and self.global_step >= 300:
            logger.warning(
                "Epoch %d, step %d: the reconstructions are uniform images (collapse); check the learning rate "
                "and data.",
                self.current_epoch,
                self.global_step,
            )
        for log in self.loggers:
            if isinstance(log, TensorBoardLogger):
                pairs = torch.cat([inputs[:4], reconstruction[:4]], dim=3).float().clamp(0, 1)
                log.experiment.add_images("val/image_and_reconstruction", pairs, self.current_epoch)
