"""Artifact directories: content-addressed, written atomically, verified on reuse.

An artifact lives at `<root>/<component>/<fingerprint>/`. It is built in a
staging directory beside it and renamed into place with its `manifest.json`
already inside, so a directory with a manifest is always a finished one.
The fingerprint covers the component's config, its inputs' fingerprints, the
source of the project code it runs and the library versions, so changing any
of them re-runs the component and everything downstream, and nothing else.
Before a build is published, its directory is checked against what the
component's summary declares (`check_outputs`): a build that lacks a split,
holds too few rows or left temporary files fails and is not published.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

MANIFEST = "manifest.json"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
# What writers leave behind when they stop half-way: Beam's file sinks, and files written before a rename.
TEMPORARY_FILES = ("beam-temp-*", "*.tmp", "*.partial")
LIBRARIES = ("keras", "tensorflow-cpu", "jax", "apache-beam", "keras-tuner", "mlflow", "numpy", "pyarrow", "pandas", "scikit-learn", "pydantic")


class ArtifactError(RuntimeError):
    """A missing, unfinished or corrupted artifact."""


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def code_digest(paths: list[str]) -> str:
    """sha256 over the project source files under `paths` (files or packages)."""
    digest = hashlib.sha256()
    for rel in paths:
        target = PROJECT_ROOT / rel
        files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        for file in files:
            digest.update(str(file.relative_to(PROJECT_ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def fingerprint(component: str, config: dict[str, Any], inputs: dict[str, str], code: str) -> str:
    payload = json.dumps(
        {"component": component, "config": config, "inputs": inputs, "code": code,
         "versions": library_versions()},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Artifact:
    """A finished artifact directory and its manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    def read_json(self, name: str) -> Any:
        with open(self.path / name, encoding="utf-8") as f:
            return json.load(f)


def _list_files(directory: Path) -> dict[str, dict[str, Any]]:
    return {
        str(p.relative_to(directory)): {"size": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def check_outputs(directory: Path, summary: Mapping[str, Any] | None) -> list[str]:
    """What a component's output directory lacks, against its summary's `output_rows` and `output_files`.

    Each directory in `output_rows` must hold Parquet files whose row counts
    add up to the number declared; each file in `output_files` must exist;
    no file or directory may have a temporary name (`TEMPORARY_FILES`).
    Returns the problems, each naming the path; empty when the output is whole.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = Path(directory)
    summary = summary if isinstance(summary, Mapping) else {}
    problems = [f"missing file {name}" for name in summary.get("output_files", ()) if not (directory / name).is_file()]
    for name, expected in summary.get("output_rows", {}).items():
        files = sorted((directory / name).glob("*.parquet"))
        if not files:
            problems.append(f"{name} has no Parquet files (expected {expected:,} rows)")
            continue
        try:
            rows = sum(pq.ParquetFile(file).metadata.num_rows for file in files)
        except (OSError, pa.ArrowException) as e:
            problems.append(f"{name} has an unreadable Parquet file ({e})")
            continue
        if rows != expected:
            problems.append(f"{name} holds {rows:,} rows in {len(files)} Parquet file(s), expected {expected:,}")
    leftovers = sorted({str(path.relative_to(directory)) for pattern in TEMPORARY_FILES
                        for path in directory.rglob(pattern)})
    if leftovers:
        more = f" and {len(leftovers) - 5} more" if len(leftovers) > 5 else ""
        problems.append(f"temporary files left: {', '.join(leftovers[:5])}{more}")
    return problems


class ArtifactStore:
    """The artifact directories of one output root."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def path(self, component: str, fp: str) -> Path:
        return self.root / component / fp[:16]

    def staging(self, component: str, fp: str) -> Path:
        final = self.path(component, fp)
        return final.with_name(f".staging-{final.name}")

    def _run_id_file(self, component: str, fp: str) -> Path:
        return self.staging(component, fp).with_suffix(".mlflow_run_id")

    def staged_run_id(self, component: str, fp: str) -> str | None:
        """The MLflow run of an unfinished build that left its staging directory to resume from."""
        file = self._run_id_file(component, fp)
        if not (file.is_file() and self.staging(component, fp).is_dir()):
            return None
        return file.read_text().strip() or None

    def record_run_id(self, component: str, fp: str, run_id: str) -> None:
        """Notes which MLflow run builds the artifact, so a resumed build continues that run."""
        self._run_id_file(component, fp).write_text(run_id)

    def load(self, component: str, fp: str) -> Artifact | None:
        """The finished artifact for `fp`, or None; a damaged one is moved aside."""
        path = self.path(component, fp)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            return None
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            problem = self.verify(path, manifest)
        except (OSError, ValueError) as e:
            problem = f"unreadable manifest ({e})"
        if problem:
            quarantine = path.with_name(f"{path.name}.corrupt-{dt.datetime.now():%Y%m%d%H%M%S}")
            path.rename(quarantine)
            raise ArtifactError(f"{component} artifact {path} is damaged: {problem}; moved it aside to {quarantine.name}")
        return Artifact(path, manifest)

    @staticmethod
    def verify(path: Path, manifest: dict[str, Any]) -> str | None:
        """What is wrong with a finished artifact's files, or None."""
        for name, expected in manifest["files"].items():
            file = path / name
            if not file.is_file():
                return f"missing file {name}"
            if file.stat().st_size != expected["size"] or file_sha256(file) != expected["sha256"]:
                return f"file {name} does not match its manifest digest"
        return None

    @contextlib.contextmanager
    def lock(self, component: str, fp: str) -> Iterator[None]:
        """An exclusive lock on one artifact across processes: check, build and publish under it.

        An `flock`, which Linux's NFS client carries out as a POSIX lock on the
        server, so it holds across hosts that share the root over NFS (v4, or
        v3 with lockd) as well as on local disk. A filesystem that refuses
        locks is an error; one that takes them locally only (sshfs, s3fs,
        Lustre's `localflock`) cannot be told apart: docs/scaling.md.
        """
        final = self.path(component, fp)
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(final.with_name(f".lock-{final.name}"), "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)
            except OSError as e:  # ENOLCK, ENOSYS, EOPNOTSUPP
                raise ArtifactError(
                    f"cannot lock {handle.name} ({e.strerror}): output_dir must be on a filesystem with file "
                    "locks shared by every host that uses it (local disk, NFS with locking, CephFS, Lustre "
                    "mounted with -o flock)") from e
            yield

    @contextlib.contextmanager
    def build(
        self, component: str, fp: str, manifest: dict[str, Any], *, resume: bool
    ) -> Iterator[Path]:
        """Yields a staging directory; on success publishes it with its manifest. Call it under `lock`.

        The caller sets `manifest["summary"]` inside the block; the staging
        directory is published only if `check_outputs` finds nothing wrong
        with it, else the build fails with `ArtifactError` naming each problem.

        A failed build never leaves a manifest; it keeps its staging
        directory only for `resume=True` components (training checkpoints,
        tuner state), and a killed one's is cleared by the next build.
        """
        final, staging = self.path(component, fp), self.staging(component, fp)
        staging.parent.mkdir(parents=True, exist_ok=True)
        if not resume and staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(exist_ok=True)
        try:
            yield staging
            problems = check_outputs(staging, manifest.get("summary"))
            if problems:
                raise ArtifactError(f"{component} output is incomplete, so it is not published: {'; '.join(problems)}")
        except BaseException:
            if not resume:
                shutil.rmtree(staging, ignore_errors=True)
                self._run_id_file(component, fp).unlink(missing_ok=True)
            raise
        manifest = {
            **manifest,
            "component": component,
            "fingerprint": fp,
            "versions": library_versions(),
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "files": _list_files(staging),
        }
        tmp = staging / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        os.replace(tmp, staging / MANIFEST)
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
        self._run_id_file(component, fp).unlink(missing_ok=True)
