"""Files in and out: DICOM series to volumes (``dicom_volume``), NIfTI (``nifti_io``), the DICOM
SEG (``dicom_seg``), the result table and atomic writing (``outputs``), the HTML report
(``report``)."""
