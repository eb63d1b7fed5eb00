"""Packaging for kaggle_sf."""

from setuptools import find_packages, setup

setup(
    name="kaggle_sf",
    version="0.1.0",
    description="State Farm Distracted Driver Detection from raw Kaggle files to a tracked, scored submission",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["kaggle_sf", "kaggle_sf.*", "pipelines"]),
    install_requires=[
        "tensorflow>=2.21",
        "keras>=3.15",
        "mlflow>=3.17",
        "optuna>=5.1",
        "optuna-integration>=5.0",
        "kaggle>=2.2",
        "pandas>=3.1",
        "scikit-learn>=1.9",
        "h5py>=3.14",
        "opencv-python-headless>=4.10",
        "simplejpeg>=1.8",
        "pyyaml>=6.0",
        "tqdm>=4.66",
        "filelock>=3.16",
        "matplotlib>=3.9",
        "pillow>=11.0",
        "scipy>=1.14",
    ],
    extras_require={
        "test": ["pytest>=8", "ruff>=0.8", "psycopg2-binary>=2.9"],
        "postgres": ["psycopg2-binary>=2.9"],
    },
)
