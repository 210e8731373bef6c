"""Ship predcache's own code and a job's model files to cluster workers that lack them.

A cluster's workers run their own Python: they have predcache only if the job brings it. The
driver packs the imported ``pipelines`` package into a wheel (pure Python, built once per
version and content hash, cached under ``PREDCACHE_HOME/shipping``), which is also a zip that
Python imports directly:

- Spark (any master but ``local``): ``SparkContext.addPyFile`` puts the archive on every
  executor's ``sys.path``; the model files already travel in the job's broadcast.
- Beam (any runner but the DirectRunner): ``--extra_package`` makes every worker
  ``pip install`` the wheel; the model files travel inside the pickled job spec and are
  written to a local folder once per worker process (``localize_model``).

The wheel holds the code only: SQL migrations and bundled models are driver-side files.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import pipelines
from pipelines.engines.spec import JobSpec
from pipelines.resources import SHIPPED

DISTRIBUTION = "predcache"
#: Engine option: folder that caches the built archives (``jobs`` sets ``PREDCACHE_HOME/shipping``).
SHIP_DIR_OPTION = "ship_dir"
#: Engine option: ship code and model even to a local runner (tests the cluster path locally).
FORCE_OPTION = "ship"
#: Engine option filled by ``ship_beam``: the model version's files, and their digest.
MODEL_FILES_OPTION = "shipped_model"
#: Files of a model version that ``load_model`` reads besides the signature's ONNX file.
CARD_FILE = "card.json"
#: Zip entries get this timestamp, so an archive's bytes depend on its content only.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
#: Import name -> the distribution to install, where they differ (for error messages).
_DISTRIBUTIONS = {
    "psycopg": "psycopg[binary]",
    "psycopg_binary": "psycopg[binary]",
    "pydantic_settings": "pydantic-settings",
    "pydantic_core": "pydantic",
    "yaml": "pyyaml",
    "pipelines": "predcache",
}
_MISSING_MODULE = re.compile(r"No module named '([\w.]+)'")


# --- the code archive -------------------------------------------------------------------------


def _package_files() -> list[tuple[str, Path]]:
    """(archive name, file) of every file of the imported ``pipelines`` package, sorted."""
    root = Path(pipelines.__file__).resolve().parent
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or relative.parts[0] == SHIPPED:
            continue
        if "__pycache__" in relative.parts or path.suffix in {".pyc", ".pyo"}:
            continue
        found.append((f"pipelines/{relative.as_posix()}", path))
    return found


def _installed_version() -> tuple[str, list[str]]:
    """predcache's version and runtime requirements (no extras) as installed; bare checkout: 0+checkout."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+checkout", []
    requires = [r for r in dist.requires or [] if "extra ==" not in r]
    return dist.version, requires


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _wheel_bytes(version: str, requires: list[str], members: Iterable[tuple[str, bytes]]) -> bytes:
    dist_info = f"{DISTRIBUTION}-{version}.dist-info"
    entries = list(members)
    entries.append(
        (
            f"{dist_info}/METADATA",
            "\n".join(
                [
                    "Metadata-Version: 2.1",
                    f"Name: {DISTRIBUTION}",
                    f"Version: {version}",
                    *(f"Requires-Dist: {r}" for r in requires),
                    "",
                ]
            ).encode(),
        )
    )
    entries.append(
        (
            f"{dist_info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: predcache shipping\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
    )
    entries.append((f"{dist_info}/top_level.txt", b"pipelines\n"))
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in entries]
    entries.append((f"{dist_info}/RECORD", ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def code_wheel(cache_dir: Path) -> Path:
    """A wheel of the imported ``pipelines`` package (code only), built once per version and content.

    The content hash is the wheel's local version (``0.1.0+<hash>``): a worker that cached an
    older build installs the new one, and an unchanged package reuses the cached file.
    """
    members = [(name, path.read_bytes()) for name, path in _package_files()]
    digest = hashlib.sha256()
    for name, data in members:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    base, requires = _installed_version()
    version = f"{base.split('+')[0]}+{digest.hexdigest()[:12]}"
    path = cache_dir / f"{DISTRIBUTION}-{version}-py3-none-any.whl"
    if not path.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, staging = tempfile.mkstemp(prefix=f".{path.name}-", dir=cache_dir)
        with os.fdopen(fd, "wb") as out:
            out.write(_wheel_bytes(version, requires, members))
        os.chmod(staging, 0o644)
        os.replace(staging, path)  # atomic: concurrent jobs build the same bytes
    return path


def code_zip(cache_dir: Path) -> Path:
    """The code wheel under a ``.zip`` name (Spark puts only .zip/.egg/.jar pyFiles on ``sys.path``).

    The name has no ``+`` (Spark serves the file by URL, where ``+`` may decode as a space).
    """
    wheel = code_wheel(cache_dir)
    path = wheel.with_name(wheel.name.replace("+", "-").removesuffix("-py3-none-any.whl") + ".zip")
    if not path.is_file():
        try:
            os.link(wheel, path)
        except FileExistsError:
            pass
        except OSError:  # no hard links here: a copy, renamed into place
            fd, staging = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
            with os.fdopen(fd, "wb") as out:
                out.write(wheel.read_bytes())
            os.chmod(staging, 0o644)
            os.replace(staging, path)
    return path


def ship_dir(spec: JobSpec) -> Path:
    """Where this job caches its archives."""
    configured = spec.engine_options.get(SHIP_DIR_OPTION)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "predcache-shipping"


# --- the model files --------------------------------------------------------------------------


def model_files(spec: JobSpec) -> dict[str, bytes]:
    """The files ``load_model`` needs for the spec's model version and signature."""
    from pipelines.core.card import load_card
    from pipelines.core.model import resolve_version_dir

    version_dir = resolve_version_dir(spec.models_dir, spec.model, spec.version)
    names = [CARD_FILE, load_card(version_dir).signature_file(spec.signature)]
    return {name: (version_dir / name).read_bytes() for name in names}


def files_digest(files: dict[str, bytes]) -> str:
    """A short digest of named file contents (names a materialized model folder)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()[:16]


def materialize_model(files: dict[str, bytes], digest: str, model: str, version: str, root: Path) -> Path:
    """Write shipped model files under ``root`` once per content; returns the models dir to use.

    The folder is named by content digest, so the per-process ONNX session cache (keyed by
    path) is reused by every later run of the same model version.
    """
    models_dir = root / digest
    target = models_dir / model / version
    if target.is_dir():
        return models_dir
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=root))
    for name, data in files.items():
        (staging / name).write_bytes(data)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staging, target)  # atomic: concurrent workers on one host race harmlessly
    except OSError:
        if not target.is_dir():
            raise
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()
    return models_dir


# --- per engine -------------------------------------------------------------------------------

_spark_shipped: dict[str, set[str]] = {}


def ship_spark(context: Any, master: str, spec: JobSpec) -> Path | None:
    """Add the code archive to the executors of ``context`` unless the master is local.

    Returns the archive shipped (None for a local master). Idempotent per application.
    """
    if master.startswith("local") and not spec.engine_options.get(FORCE_OPTION):
        return None
    archive = code_zip(ship_dir(spec))
    shipped = _spark_shipped.setdefault(str(context.applicationId), set())
    if str(archive) not in shipped:
        context.addPyFile(str(archive))
        shipped.add(str(archive))
    return archive


def _beam_runner(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg.startswith("--runner="):
            return arg.split("=", 1)[1]
        if arg == "--runner" and i + 1 < len(args):
            return args[i + 1]
    return None


def beam_needs_shipping(spec: JobSpec) -> bool:
    """True unless the job runs on the DirectRunner (the default), whose workers share this machine."""
    runner = _beam_runner(list(spec.engine_options.get("beam_args", [])))
    direct = runner is None or runner.rsplit(".", 1)[-1] in {"DirectRunner", "BundleBasedDirectRunner"}
    return bool(spec.engine_options.get(FORCE_OPTION)) or not direct


def ship_beam(spec: JobSpec) -> JobSpec:
    """The spec to run on Beam: for a remote runner, with the code wheel and the model files attached.

    Adds ``--extra_package=<code wheel>`` to ``beam_args`` (unless the caller passed its own
    ``--extra_package``, ``--setup_file`` or ``--sdk_container_image`` with predcache inside)
    and the model version's files to ``engine_options`` (see ``localize_model``).
    """
    if not beam_needs_shipping(spec):
        return spec
    args = list(spec.engine_options.get("beam_args", []))
    brings_own = any(a.startswith(("--extra_package", "--setup_file", "--sdk_container_image")) for a in args)
    if not brings_own:
        args.append(f"--extra_package={code_wheel(ship_dir(spec))}")
    files = model_files(spec)
    options = {**spec.engine_options, "beam_args": args, MODEL_FILES_OPTION: (files, files_digest(files))}
    return replace(spec, engine_options=options)


def localize_model(spec: JobSpec) -> JobSpec:
    """On a worker: the spec reading its model from the shipped files (written locally once), if any."""
    shipped = spec.engine_options.get(MODEL_FILES_OPTION)
    if not shipped:
        return spec
    files, digest = shipped
    root = Path(tempfile.gettempdir()) / "predcache-beam-models"
    return replace(spec, models_dir=materialize_model(files, digest, spec.model, spec.version, root))


# --- errors -----------------------------------------------------------------------------------


def missing_module_error(text: str, *, where: str) -> str | None:
    """One line naming the module a worker could not import, and what to do; None if none is named."""
    found = _MISSING_MODULE.findall(text)
    if not found:
        return None
    module = found[-1].split(".")[0]
    distribution = _DISTRIBUTIONS.get(module, module)
    if module == "pipelines":
        return (
            f"{where} cannot import predcache (module 'pipelines'); install predcache there, or let the job "
            "ship it (it does unless the master or runner is local)"
        )
    return (
        f"{where} cannot import '{module}', a runtime dependency of predcache; install it there "
        f"(pip install '{distribution}') or point the workers at a Python environment that has "
        "predcache's runtime dependencies"
    )
