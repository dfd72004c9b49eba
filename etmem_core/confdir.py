"""``etmemd --conf-dir DIR``: the object files in DIR are added at start-up and on SIGHUP.

This is ``etmem obj add`` done by the daemon itself, file by file, in name order (so
``10-project.conf`` can come before ``20-tasks.conf``), with the same checks and messages. A file
that fails is logged with its reason and skipped; the others still go in. With ``start`` the
projects a file adds are started too.

On SIGHUP the directory is read again: a new file is added, a file that is gone is deleted (with
the copy of its text kept when it was added, as ``etmem obj del`` would with the file), a changed
file is deleted and added again, an unchanged one is left alone (and keeps running). Objects
added or deleted at run time with ``etmem obj add/del`` are not the directory's: a reload never
touches them, and deleting a directory file's objects by hand is undone by nothing but the next
change of that file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import objfile
from .errors import OptError

log = logging.getLogger("etmemd.confdir")


def _wanted(name: str) -> bool:
    # hidden files and editors' or package managers' leftovers are not object files
    return not (
        name.startswith(".")
        or name.endswith(("~", ".swp", ".bak", ".dpkg-old", ".dpkg-new", ".rpmnew", ".rpmsave"))
    )


@dataclass
class LoadReport:
    """What one pass over the directory did: file names added, deleted, and failed (reason)."""

    added: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class ConfDir:
    """The object files of one directory, kept in step with the object store."""

    def __init__(self, store: Any, path: str, start: bool = False) -> None:
        self.store = store
        self.path = os.path.abspath(path)
        self.start = start
        self._lock = threading.Lock()
        # name -> (sha256 of the text added, private copy of that text for obj del)
        self._loaded: dict[str, tuple[str, str]] = {}
        self._copies = tempfile.mkdtemp(prefix="etmemd-confdir-")  # mode 0700

    def _files(self) -> dict[str, str]:
        """name -> sha256 of every candidate file now in the directory."""
        found: dict[str, str] = {}
        try:
            names = sorted(os.listdir(self.path))
        except OSError as exc:
            log.error("conf dir %s: cannot be read: %s", self.path, exc.strerror)
            return found
        for name in names:
            full = os.path.join(self.path, name)
            if not _wanted(name) or not os.path.isfile(full):
                continue
            try:
                found[name] = hashlib.sha256(Path(full).read_bytes()).hexdigest()
            except OSError as exc:
                found[name] = f"unreadable: {exc.strerror}"
        return found

    def _delete(self, name: str, report: LoadReport) -> None:
        _, copy = self._loaded.pop(name)
        try:
            self.store.obj_del(copy)
            report.deleted.append(name)
            log.info("conf dir: %s deleted", name)
        except OptError as exc:
            log.error("conf dir: deleting %s: %s", name, exc.reason)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(copy)

    def _add(self, name: str, digest: str, report: LoadReport) -> None:
        full = os.path.join(self.path, name)
        try:
            self.store.obj_add(full)
        except OptError as exc:
            report.failed[name] = exc.reason
            log.error("conf dir: %s skipped: %s", full, exc.reason)
            return
        copy = os.path.join(self._copies, name)
        shutil.copyfile(full, copy)
        os.chmod(copy, 0o600)
        self._loaded[name] = (digest, copy)
        report.added.append(name)
        log.info("conf dir: %s added", full)
        if self.start:
            self._start_projects(full, name, report)

    def _start_projects(self, full: str, name: str, report: LoadReport) -> None:
        try:
            projects = objfile.load_object_file(full).projects
        except Exception as exc:  # it was just added, so this is a race with an edit
            log.error("conf dir: %s: cannot read its projects again: %s", name, exc)
            return
        for section in projects:
            project = section.get("name")
            found = self.store.find_project(project) if project else None
            if found is None or getattr(found, "start", False):
                continue
            try:
                self.store.project_start(project)
                log.info("conf dir: project %s started", project)
            except OptError as exc:
                report.failed[name] = f"project {project} did not start: {exc.reason}"
                log.error("conf dir: %s: project %s did not start: %s", name, project, exc.reason)

    def load(self) -> LoadReport:
        """Bring the object store in step with the directory (start-up and every SIGHUP)."""
        with self._lock:
            report = LoadReport()
            now = self._files()
            # deletions first and in reverse name order, mirroring the order they were added in
            for name in sorted(self._loaded, reverse=True):
                if now.get(name) != self._loaded[name][0]:
                    self._delete(name, report)
            for name, digest in now.items():
                if name not in self._loaded:
                    self._add(name, digest, report)
            log.info(
                "conf dir %s: %d added, %d deleted, %d failed",
                self.path,
                len(report.added),
                len(report.deleted),
                len(report.failed),
            )
            return report

    def close(self) -> None:
        """Forget the private copies (the daemon is exiting; its objects go with it)."""
        shutil.rmtree(self._copies, ignore_errors=True)
