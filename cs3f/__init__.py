"""CS3F: training-free cross-subject anomaly scoring of 3D volumes with a frozen 2D encoder.

The method library of the screening app. It never imports the MONAI Deploy SDK, so it can be
tested, benchmarked and reused on its own. Modules, in pipeline order:

- ``encoders``: slices in, per-layer patch grids out (``dinov2`` and the weight-free ``pixels``).
- ``tokens``: three-axis slicing, depth pooling, L2 normalisation, seeded Gaussian projection,
  foreground filtering.
- ``store``: disk-backed fp16 token storage for large batches.
- ``pairs``: the nearest-token kernel (FAISS on CPU or GPU).
- ``scoring``: exact mutual scoring (``mutual_scores``) and coarse-to-fine scoring.
- ``maps``: token scores to voxel maps, fusion over layers and axes, patient scores.
- ``pipeline``: the whole batch, volumes in, maps and patient scores out.
"""

__version__ = "0.1.0"
