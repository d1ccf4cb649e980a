"""SSIM-AE as an anomalib model: Bergmann et al. (2019), with the training recipe of Rádli & Czúni (2021) §5.

Training takes random ``patch_size`` crops on the fly from the resized defect-free images
(:class:`~anomalib_ssimae.data.augmentation.CropSampler`), ``crops_per_epoch`` of them per epoch in batches of
``batch_size``, and minimises the SSIM loss (Eq. 7) with Adam. Validation logs the same loss on the defect-free
validation images as ``val_loss`` and feeds anomaly maps to anomalib's post-processor. Test, predict and export use
the tiled inference of :class:`~anomalib_ssimae.models.ssim_ae.torch_model.SsimAeModel`. Image checks, the frame
check and position normalisation fitted on the training images, and the training guards are callbacks the model
adds to every run (:mod:`anomalib_ssimae.callbacks`); the export is :mod:`~anomalib_ssimae.models.ssim_ae.export`.

Longer than the package's 300-line guide: the class docstring (the CLI's ``--help``) and the signature list every
argument, 136 lines; the rest is components, optimiser and steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import AUPRO, AUROC, Evaluator, F1Max, F1Score
from anomalib.models.components import AnomalibModule
from anomalib.pre_processing import PreProcessor
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torchvision.transforms.v2 import Compose, Resize

from anomalib_ssimae import callbacks
from anomalib_ssimae.cli_errors import install as install_short_errors
from anomalib_ssimae.components.schedule import CosineLearningRate, check_schedule, updates_for_images
from anomalib_ssimae.components.ssim import ssim_map
from anomalib_ssimae.data.augmentation import CropSampler
from anomalib_ssimae.data.corruption import MaskedBlocks
from anomalib_ssimae.metrics import CheckedEvaluator
from anomalib_ssimae.models.ssim_ae.checkpoint import CheckpointCompatibilityMixin
from anomalib_ssimae.models.ssim_ae.export import CalibratedExportMixin
from anomalib_ssimae.models.ssim_ae.loss import ReconstructionLoss
from anomalib_ssimae.models.ssim_ae.torch_model import OUT_OF_DISTRIBUTION_SCORE, SsimAeModel, TiledReconstruction
from anomalib_ssimae.precision import cpu_flags, training_precision
from anomalib_ssimae.visualization import ReconstructionVisualizer

install_short_errors()  # `anomalib train/test/predict/export`: the package's user errors in two lines


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``256`` or ``[208, 512]`` -> ``(height, width)``."""
    if isinstance(image_size, int):
        return image_size, image_size
    if len(image_size) != 2:
        msg = f"image_size must be an int or [height, width], got {image_size!r}"
        raise ValueError(msg)
    return int(image_size[0]), int(image_size[1])


class SsimAe(CheckpointCompatibilityMixin, CalibratedExportMixin, AnomalibModule):
    """SSIM autoencoder (SSIM-AE) for unsupervised defect segmentation.

    Args:
        image_size: size every image is resized to, ``int`` or ``[height, width]`` in pixels (default 256); both
            sides must be at least ``patch_size``. The anomaly map has this size.
        patch_size: training crop and inference patch side in pixels (paper: 128; a multiple of 16).
        stride: inference patch stride in pixels (paper: 32); the last patches are aligned to the border.
        in_channels: 1 (grayscale, converted inside the model) or 3.
        latent_dim: bottleneck size ``d`` (paper: 100 for textures, 500 for the CPU parts).
        network: ``"ssim_ae"`` (Bergmann et al. Table 1) or ``"extended"`` (Rádli & Czúni Table 2); the variants
            set it (see :data:`~anomalib_ssimae.models.ssim_ae.network.NETWORKS`).
        loss: ``"ssim"`` (Eq. 7), ``"l2"`` or ``"ssim_l1"``.
        l1_weight: weight of the L1 term of ``"ssim_l1"``.
        residual: anomaly map: ``"ssim"`` (1 - SSIM map, Eq. 8), ``"l2"`` or ``"ssim_l2"``.
        score: image anomaly score from the map: ``"max"`` of the map smoothed by a Gaussian of ``score_sigma``
            pixels, ``"mean"``, or ``"top_mean"`` (mean of the highest ``score_fraction`` of pixels); see
            :class:`~anomalib_ssimae.models.ssim_ae.anomaly_map.AnomalyMapGenerator`.
        score_sigma: Gaussian sigma in pixels for ``score: max``. The default 16 had the best image AUROC across the
            datasets compared (``benchmarks/results/image_scores.md``; sigma 4, used before, scored the border band);
            0 takes the maximum of the map itself (DeepPCB's defects of a few pixels).
        score_fraction: fraction of pixels for ``score: top_mean``.
        position_normalization: divide the anomaly map by the residual that defect-free training images show at
            each position, re-estimated from up to ``position_images`` training images at the start of every
            validation (or of test/predict when there was none) and saved in the checkpoint. It removes the raised
            residual along the image border and under uneven lighting; ``benchmarks/results/position_normalization.md``
            has its effect per dataset. ``False`` (default) is the papers' map.
        position_images: training images for ``position_normalization`` (evenly spaced over the training set).
        intensity_normalization: ``"none"`` (default; the papers) or ``"standardize"``: each resized image is
            shifted and scaled to mean 0.5 and standard deviation 0.15 before training crops are cut from it and
            before tiling at inference, so brightness and contrast that change between captures do not weigh in the
            map (:func:`~anomalib_ssimae.models.ssim_ae.torch_model.standardize`; inside the exported graph).
        patch_batch_size: patches cut, reconstructed and stitched per step at inference (validation, test, predict);
            it bounds the memory of large images, whose patches are never all held (validation sums ``val_loss``
            chunk by chunk): at 64, one 2048 x 2048 image peaks at 1602 MiB resident (975 before inference; 5019 with
            all patches in one call), a 1500 x 4000 one at 1874 MiB (``benchmarks/results/large_image_memory.md``).
            Exported graphs take all patches in one call, so that their batch dimension stays dynamic.
        crops_per_epoch: training crops per epoch (paper: 10,000), rounded up to whole batches.
        batch_size: crops per optimiser step (paper: 128). The datamodule's ``train_batch_size`` only sets how many
            images the crops of one training step are drawn from.
        rotation_prob: probability of rotating a crop (paper: 0.3).
        max_rotation: largest rotation angle in degrees (paper: 45).
        hflip_prob: horizontal flip probability (paper: 0.3 for textures, 0 for asymmetric parts).
        vflip_prob: vertical flip probability (as ``hflip_prob``).
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
            (AVX512-BF16 or AMX; about 1.7x faster there) or the GPU has (compute capability 8.0 on), and in fp32
            elsewhere (bf16 was 8x slower on an AVX2-only CPU); ``"bf16-mixed"`` or ``"32-true"`` force one. The
            SSIM loss, validation, test and export always run in fp32 (on a GPU, not TF32). See
            :mod:`anomalib_ssimae.precision`.
        channels_last: train the network in channels-last memory layout (faster convolutions on CPU).
        denoising: train as a denoising autoencoder (Rádli & Czúni §5, Eq. 3-4): each training crop gets
            ``num_blocks`` squares of ``block_size`` pixels in its dominant colour, the network reconstructs the
            clean crop, and the loss weights corrupted pixels by ``alpha`` and the rest by ``beta``. Training only:
            validation, test, predict and export never corrupt. See :mod:`anomalib_ssimae.data.corruption`.
        num_blocks: masked blocks per crop (paper: 1).
        block_size: side of a masked block in pixels (paper: 20).
        alpha: loss weight of corrupted pixels (paper: 1).
        beta: loss weight of clean pixels (paper: 1).
        seed: seeds Python, NumPy and torch (``lightning.seed_everything``) when the model is built, so the weight
            initialisation, the data order and the crops are reproducible: anomalib 2.7's CLI accepts
            ``seed_everything`` but never applies it. ``None`` leaves the random state alone, and so does
            ``load_from_checkpoint``.
        pre_processor: anomalib component; ``True``: resize only (no ImageNet normalisation).
        post_processor: anomalib component; ``True``: anomalib's PostProcessor with F1-adaptive thresholds. For
            thresholds from defect-free images only, pass
            :class:`~anomalib_ssimae.post_processing.DefectFreePostProcessor`.
        evaluator: anomalib component; ``True``: image AUROC/F1Max, pixel AUROC/AUPRO/F1.
        visualizer: anomalib component; ``True``: :class:`ReconstructionVisualizer` (panel plus reconstruction).

    Raises:
        ValueError: naming the argument, for values that would otherwise fail later in training.

    Example:
        >>> model = SsimAe(image_size=[208, 512], latent_dim=100, visualizer=False)
        >>> model.eval().model(torch.rand(1, 3, 208, 512)).anomaly_map.shape
        torch.Size([1, 1, 208, 512])

    See Also:
        :class:`~anomalib_ssimae.models.ssim_ae.torch_model.SsimAeModel` (tiled inference),
        :class:`~anomalib_ssimae.models.ssim_ae.anomaly_map.AnomalyMapGenerator` (map and score).

    Source: Bergmann et al., VISAPP 2019 (arXiv 1807.02011); Rádli & Czúni, WSCG 2021, §3 and §5.
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 256,
        patch_size: int = 128,
        stride: int = 32,
        in_channels: int = 1,
        latent_dim: int = 100,
        network: str = "ssim_ae",
        loss: str = "ssim",
        l1_weight: float = 1.0,
        residual: str = "ssim",
        score: str = "max",
        score_sigma: float = 16.0,
        score_fraction: float = 0.01,
        position_normalization: bool = False,
        position_images: int = 64,
        intensity_normalization: str = "none",
        patch_batch_size: int = 256,
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
        for name, value in (("crops_per_epoch", crops_per_epoch), ("position_images", position_images)):
            if value < 1:
                msg = f"{name} must be at least 1, got {value}"
                raise ValueError(msg)
        check_schedule(lr_schedule, lr_step_size, warmup_crops)
        training_precision(train_precision)  # raises on an unknown value
        self.crop_sampler = CropSampler(
            batch_size=batch_size,
            patch_size=patch_size,
            rotation_prob=rotation_prob,
            max_rotation=max_rotation,
            hflip_prob=hflip_prob,
            vflip_prob=vflip_prob,
        )
        self.corruption = (
            MaskedBlocks(num_blocks=num_blocks, block_size=block_size, patch_size=patch_size) if denoising else None
        )
        if seed is not None:
            seed_everything(seed, workers=True, verbose=False)
        self._image_size = _size(image_size)  # read by configure_pre_processor inside super().__init__
        super().__init__(
            pre_processor=pre_processor, post_processor=post_processor, evaluator=evaluator, visualizer=visualizer
        )
        self.model = SsimAeModel(
            in_channels=in_channels,
            latent_dim=latent_dim,
            patch_size=patch_size,
            stride=stride,
            residual=residual,
            score=score,
            score_sigma=score_sigma,
            score_fraction=score_fraction,
            network=network,
            position_normalization=self._image_size if position_normalization else None,
            patch_batch_size=patch_batch_size,
            intensity_normalization=intensity_normalization,
        )
        self.model.tiler.check_size(*self._image_size)
        self.model.anomaly_map_generator.check_size(*self._image_size)
        if channels_last:
            self.model.network.to(memory_format=torch.channels_last)
        self.loss = ReconstructionLoss(loss, l1_weight, alpha=alpha, beta=beta)
        self.automatic_optimization = False  # several optimiser steps per image batch (crops_per_epoch)
        self._images_seen = 0
        self._bf16 = False  # set at fit start from train_precision and the device
        self._schedule: CosineLearningRate | None = None  # set at fit start for lr_schedule "cosine"
        self.guards = (
            callbacks.TrainingGuards()
        )  # acts between the optimiser steps of training_step; added to every run
        self.grad_norm: torch.Tensor | None = None  # global L2 norm of the last optimiser step's gradients (guards)

    # ------------------------------------------------------------------ anomalib components
    def configure_pre_processor(self, image_size: tuple[int, int] | None = None) -> PreProcessor:
        """Resize only: the autoencoder reconstructs raw [0, 1] intensities, so no ImageNet normalisation.

        Bilinear without antialiasing, in the dataloader as in the exported graph: anomalib exports Resize with
        ``antialias=False`` anyway, and OpenVINO ignores ONNX's antialias flag (0.29 max difference on a 512 -> 256
        resize, ``benchmarks/studies/resize_parity.py``), so one resize everywhere makes exported maps equal to tested ones.
        For a 2x reduction (512 -> 256) it is exactly a 2 x 2 mean.
        """
        return PreProcessor(transform=Compose([Resize(image_size or self._image_size, antialias=False)]))

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """Image AUROC and F1Max, pixel AUROC, AUPRO (FPR <= 0.3) and F1 at the post-processor's threshold; NaN with
        a warning for those the test set cannot define (:class:`~anomalib_ssimae.metrics.CheckedEvaluator`)."""
        return CheckedEvaluator(
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
        """:mod:`anomalib_ssimae.callbacks`: ``RunFolder`` (first: it picks the folder the others write into),
        anomalib's components, then ``RunSummary``, ``PredictionRecords``, ``ValidationMonitor``, ``InputChecks``,
        ``TrainingStatistics`` and :attr:`guards` (``TrainingGuards``)."""
        own = [callbacks.RunSummary(), callbacks.PredictionRecords(), callbacks.ValidationMonitor()]
        checks = [callbacks.InputChecks(), callbacks.TrainingStatistics(), self.guards]
        return [callbacks.RunFolder(), *super().configure_callbacks(), *own, *checks]

    @property
    def learning_type(self) -> LearningType:
        """One-class: trained on defect-free images only."""
        return LearningType.ONE_CLASS

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No gradient clipping (manual optimisation), no sanity validation."""
        return {"gradient_clip_val": 0, "num_sanity_val_steps": 0}

    # ------------------------------------------------------------------ training
    def configure_optimizers(self) -> Any:
        """Adam (paper: lr 2e-4), optional StepLR per epoch; the cosine schedule is set per step in training."""
        optimizer = torch.optim.Adam(
            self.model.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay
        )
        if self.hparams.lr_step_size is None:
            return optimizer
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, self.hparams.lr_step_size, self.hparams.lr_gamma)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def on_fit_start(self) -> None:
        """Choose the training precision; size the cosine schedule; under DDP, a seed per process. The image checks,
        the frame check and the guards come first (:mod:`anomalib_ssimae.callbacks`)."""
        if self.trainer.world_size > 1:  # each process draws its own crops (the same seed would repeat positions)
            torch.manual_seed(int(torch.randint(2**62, ())) + self.global_rank)
        if self.hparams.lr_schedule == "cosine":
            self._schedule = CosineLearningRate(
                self.hparams.learning_rate,
                self.hparams.warmup_crops,
                self.hparams.batch_size * self.trainer.world_size,  # crops per optimiser step, all processes
                self.hparams.crops_per_epoch,
            )
            self._schedule.start(self.trainer)
        precision = training_precision(self.hparams.train_precision, self.device.type)
        self._bf16 = precision == "bf16-mixed"
        units = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16"}) if self.device.type == "cpu" else []
        callbacks.say(
            f"training precision: {precision} (train_precision={self.hparams.train_precision}; "
            f"{self.device.type}{' bf16 units: ' + ', '.join(units) if units else ''})"
        )

    def on_train_epoch_start(self) -> None:
        """Count the images of the epoch, to spread the optimiser steps over them."""
        self._images_seen = 0

    def training_step(self, batch: Batch, batch_idx: int) -> STEP_OUTPUT:
        """Draw augmented crops from the batch images and take optimiser steps on the reconstruction loss
        (:func:`~anomalib_ssimae.components.schedule.updates_for_images` of them)."""
        del batch_idx
        optimizer = self.optimizers()
        images = self.model.prepare(batch.image)
        # crops_per_epoch counts all processes: under DDP each takes 1/world_size of the steps on its share of the
        # images (its sampler's length), and the averaged gradients make a step of world_size x batch_size crops
        loader = self.trainer.train_dataloader
        sampler = getattr(loader, "sampler", None)
        steps = updates_for_images(
            self._images_seen,
            len(images),
            len(sampler) if sampler is not None else len(loader.dataset),
            math.ceil(self.hparams.crops_per_epoch / (self.hparams.batch_size * self.trainer.world_size)),
        )
        self._images_seen += len(images)
        loss = None
        for _ in range(steps):
            if self.guards.stop_between_steps(self.trainer):  # max_time, max_steps, SIGTERM: not only after the batch
                break
            crops = self.crop_sampler(images)
            network_input, mask = self.corruption(crops) if self.corruption is not None else (crops, None)
            if self.hparams.channels_last:
                network_input = network_input.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._bf16):
                _, reconstruction = self.model(network_input)
            loss = self.loss(crops, reconstruction, mask)  # target: the clean crop; the loss runs in fp32
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)  # the guards stop on a non-finite loss before the backward pass
            self.guards.check_collapse(self.trainer, crops, reconstruction.detach())  # and notes grad_norm
            if self._schedule is not None:
                self._schedule.apply(optimizer, self.trainer.global_step)
            optimizer.step()
            self.log("train_loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=len(crops))
            self.guards.log_grad_norm(self, batch_size=len(crops))
        return {"loss": loss} if loss is not None else None

    def on_train_epoch_end(self) -> None:
        """Step the optional StepLR schedule (manual optimisation does not)."""
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    # ------------------------------------------------------------------ validation and test
    def _predict(
        self, batch: Batch, on_chunk: Callable | None = None, check_frames: bool = True
    ) -> tuple[Batch, torch.Tensor, TiledReconstruction]:
        """Tiled reconstruction and anomaly map of the batch; the batch is updated with the map and score and
        carries the reconstruction (``batch.reconstruction``, read by the callbacks and the visualizer). Also
        returns the mask of its defect-free images ``(B,)``. ``on_chunk(good, image_index, inputs, outputs)`` sees
        each chunk of patches (see ``SsimAeModel.reconstruct``). ``batch.out_of_distribution`` ``(B,)`` says which
        frames the frame check rejected (``check_frames``; off in validation, whose scores fit the thresholds)."""
        good = torch.ones(len(batch.image), dtype=torch.bool, device=batch.image.device)
        if batch.gt_label is not None:
            good = ~batch.gt_label.bool().to(good.device)
        hook = None if on_chunk is None else lambda *chunk: on_chunk(good, *chunk)
        tiled = self.model.reconstruct(batch.image, on_chunk=hook)
        batch.update(**self.model.anomaly_prediction(tiled.inputs, tiled.reconstruction, check_frames)._asdict())
        batch.reconstruction = tiled.reconstruction
        # the frames anomaly_prediction rejected, read off their score (no second histogram of the batch)
        batch.out_of_distribution = batch.pred_score == OUT_OF_DISTRIBUTION_SCORE if check_frames else None
        return batch, good, tiled

    def validation_step(self, batch: Batch, batch_idx: int) -> STEP_OUTPUT:
        """Anomaly maps for the post-processor, plus ``val_loss``: the training loss on the tiled patches of the
        defect-free validation images (defective ones are skipped; never corrupted). The loss is a mean over
        patches of one size, so it is summed chunk by chunk as the patches pass: validation holds one chunk of
        patches, not all of them."""
        del batch_idx
        total = torch.zeros(2, dtype=torch.float64)  # loss x patches, patches

        def add_loss(
            good: torch.Tensor, image_index: torch.Tensor, inputs: torch.Tensor, outputs: torch.Tensor
        ) -> None:
            keep = good[image_index]
            if keep.any():
                count = int(keep.sum())
                total[0] += float(self.loss(inputs[keep], outputs[keep])) * count
                total[1] += count

        batch, good, _ = self._predict(batch, on_chunk=add_loss, check_frames=False)
        if total[1] > 0:
            val_loss = (total[0] / total[1]).float()
            self.log("val_loss", val_loss, on_epoch=True, prog_bar=True, batch_size=int(good.sum()))
        return batch

    def test_step(self, batch: Batch, batch_idx: int, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Anomaly maps, plus the reconstruction quality of defect-free test images as in Rádli & Czúni Table 5:
        ``reconstruction_SSIM`` (mean SSIM, in [-1, 1]) and ``reconstruction_MSE`` (on the 0-255 scale)."""
        del batch_idx, args, kwargs
        batch, good, tiled = self._predict(batch)
        if good.any():
            image, rebuilt = tiled.inputs[good].float(), tiled.reconstruction[good].float()
            count = int(good.sum())
            self.log("reconstruction_SSIM", ssim_map(image, rebuilt).mean(), on_epoch=True, batch_size=count)
            self.log("reconstruction_MSE", ((image - rebuilt) * 255).pow(2).mean(), on_epoch=True, batch_size=count)
        return batch

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> STEP_OUTPUT:
        """Anomaly map and score as ``forward`` computes them (and so the exported graph), plus the
        reconstruction for the visualizer."""
        del batch_idx, dataloader_idx
        return self._predict(batch)[0]

    def _drop_reconstruction(self, outputs: Any) -> None:
        """Free the reconstruction the step attached, once the callbacks have used it (Lightning keeps predict
        outputs, and would otherwise keep one reconstruction per image)."""
        if outputs is not None and hasattr(outputs, "reconstruction"):
            del outputs.reconstruction

    def on_validation_batch_end(self, outputs: Any, *args: Any, **kwargs: Any) -> None:
        """See :meth:`_drop_reconstruction` (runs after the callbacks' hooks); also ``on_test_batch_end`` and
        ``on_predict_batch_end``."""
        del args, kwargs
        self._drop_reconstruction(outputs)

    on_test_batch_end = on_predict_batch_end = on_validation_batch_end
