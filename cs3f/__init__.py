"""CS3F: training-free cross-subject anomaly screening of 3D volumes with a frozen 2D encoder.

The library of the screening app. It never imports the MONAI Deploy SDK, so it can be tested,
benchmarked and reused on its own (ARCHITECTURE.md draws the layers). Subpackages, in the order a
study flows through them:

- ``io``: DICOM series in (exact geometry), NIfTI in and out, the DICOM SEG, the result table
  and the report; every file written atomically.
- ``preprocess``: a native volume to its task's standard-space regions (brain MRI, lung CT),
  each with the way back to the source grid.
- ``encoders``: the slice encoders (a registry, name -> factory): DINOv2/v3 and the weight-free
  ``histogram``, ``filterbank``, ``gabor`` and ``pixels``.
- ``method``: the CS3F method itself: tokens, the token store, the nearest-token kernel,
  mutual and coarse-to-fine scoring, voxel maps and fusion, the streaming percentile.
- ``screening``: the batch rules end to end (:class:`~cs3f.screening.Screening`): scores per
  region, maps, patient scores, the voxel threshold and the flag. The app, the benchmarks and
  the evaluation all call it.
"""

__version__ = "0.1.0"
