"""``python -m anomalib_ssimae.deploy``: the same as ``ssimae-predict`` (:mod:`anomalib_ssimae.deploy.cli`)."""

from anomalib_ssimae.deploy.cli import main

main()
