"""wsconsole.logs: the user log folder (overridable), rotation by size, and the file list the
support bundle collects."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from wsconsole import logs


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private log folder; the handler is removed afterwards."""
    target = tmp_path / "log"
    monkeypatch.setenv(logs.LOG_DIR_ENV, str(target))
    logs.stop_logging()
    try:
        yield target
    finally:
        logs.stop_logging()


def test_default_folder_is_the_platform_user_log_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.delenv(logs.LOG_DIR_ENV, raising=False)
    assert logs.log_dir() == Path(platformdirs.user_log_dir("wsconsole", appauthor=False))


def test_records_rotate_by_size_and_are_listed_newest_first(folder: Path) -> None:
    path = logs.setup_logging(max_bytes=2_000, backups=3)
    assert path == folder / logs.LOG_FILE
    assert logs.setup_logging() == path  # once per process
    log = logging.getLogger("wsconsole.test")
    for n in range(200):
        log.info("record %04d %s", n, "x" * 40)
    files = logs.log_files()
    assert [f.name for f in files] == ["wsconsole.log", "wsconsole.log.1", "wsconsole.log.2",
                                       "wsconsole.log.3"]
    assert all(f.stat().st_size <= 2_000 for f in files)
    assert "record 0199" in files[0].read_text()  # newest in the current file
    assert "record 0000" not in "".join(f.read_text() for f in files)  # oldest rotated away


def test_an_unwritable_folder_means_no_file_not_a_crash(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(logs.LOG_DIR_ENV, str(blocker / "log"))
    logs.stop_logging()
    try:
        assert logs.setup_logging() is None
        assert logs.log_files() == []
    finally:
        logs.stop_logging()
