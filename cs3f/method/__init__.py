"""The CS3F method on arrays, independent of files, DICOM and the app.

- ``tokens``: three-axis slicing, depth pooling, L2 normalisation, seeded Gaussian projection,
  foreground filtering.
- ``store``: disk-backed fp16 token storage for large batches.
- ``pairs``: the nearest-token kernel (FAISS on CPU or GPU).
- ``scoring``: exact mutual scoring and coarse-to-fine scoring.
- ``maps``: token scores to voxel maps, fusion over layers and axes.
- ``batch_scorer``: one region of a whole batch, volumes in, token scores and maps out.
- ``threshold``: the streaming percentile behind the batch's voxel threshold.
"""
