"""Identifiers never reach a log: registered values, UIDs, and what other libraries quote."""

import logging
import warnings

import highdicom as hd

from cs3f.redaction import Identifiers


def _logger(name, identifiers, tmp_path):
    handler = logging.FileHandler(tmp_path / "log.txt")
    handler.addFilter(identifiers)
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    return logger, handler


def test_registered_values_become_the_study_label_longest_first():
    ids = Identifiers()
    ids.add(["Doe^John", "Doe", "John", "12345", "", "7"], "<study ab12>")
    text = ids.redact("patient Doe^John (id 12345) also written John Doe; 7 slices")
    assert (
        text
        == "patient <study ab12> (id <study ab12>) also written <study ab12> <study ab12>; 7 slices"
    )


def test_uids_are_hidden_but_versions_and_numbers_stay():
    ids = Identifiers()
    text = ids.redact("series 1.2.840.113619.2.55.3 of cs3f 0.4.1 at 12.5 mm")
    assert text == "series <uid> of cs3f 0.4.1 at 12.5 mm"


def test_other_libraries_quoted_values_are_hidden(tmp_path):
    ids = Identifiers()
    logger, handler = _logger("pydicom.test", ids, tmp_path)
    logger.warning("Invalid value for VR UI: '1.2.3/../4'. Please see <url>")
    own, own_handler = _logger("cs3f.app.test", ids, tmp_path)
    own.warning("reading 'brain-mri' rules")
    handler.close()
    own_handler.close()
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert lines == [
        "Invalid value for VR UI: <value>. Please see <url>",
        "reading 'brain-mri' rules",
    ]


def test_highdicoms_person_name_warning_is_redacted(tmp_path):
    """highdicom quotes a single-component PatientName in a UserWarning; routed through
    logging (as the app does with logging.captureWarnings), the name does not survive."""
    ids = Identifiers()
    ids.add(["Doe"], "<study ab12>")
    _, handler = _logger("py.warnings", ids, tmp_path)
    logging.captureWarnings(False)  # reset: an app run earlier in this process has set it
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            hd.valuerep.check_person_name("Doe")
    finally:
        logging.captureWarnings(False)
        handler.close()
    text = (tmp_path / "log.txt").read_text()
    assert "single component" in text and "Doe" not in text
