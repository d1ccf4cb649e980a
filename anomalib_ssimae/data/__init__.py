"""Data: training crops (augmentation), masked-block corruption (denoising variants), image-file and mask reading,
and the datamodules ``anomalib_ssimae.data.MVTecAD`` / ``Folder`` (anomalib's, pairing masks by name: ``folders``)."""

from anomalib_ssimae.data.folders import Folder, MVTecAD

__all__ = ["Folder", "MVTecAD"]
