"""Packaging for modelscope-facemask (setuptools: ModelScope's plugin installer reads top_level.txt)."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
version = {}
exec((ROOT / "modelscope_facemask" / "version.py").read_text(), version)

setup(
    name="modelscope-facemask",
    version=version["__version__"],
    description="FaceMask masked-face recognition (RetinaFace + 5-point alignment + IResNet-252) as a ModelScope plugin",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["modelscope_facemask", "modelscope_facemask.*"]),
    install_requires=[
        "modelscope>=1.24,<2",
        # what `from modelscope.pipelines import pipeline` needs (modelscope declares none of it)
        "addict",
        "simplejson",
        "sortedcontainers",
        "datasets",
        "pyyaml",
        "torch>=2.1",
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "Pillow>=9",
        "safetensors>=0.4",
        "tqdm",
        "onnx>=1.15",  # converts the real mobilenet0.25 detector for the offline demo
        "requests",
    ],
    extras_require={
        # optional engines and tools; a feature whose extra is missing raises an error naming the extra
        "onnx": ["onnxruntime>=1.17"],
        "openvino": ["openvino>=2024.0", "nncf>=2.14"],  # nncf: int8 quantization (facemask quantize)
        "gallery": ["faiss-cpu>=1.8", "pyarrow>=14"],
        "ray": ["ray[data,serve]>=2.9", "pyarrow>=14"],
        # the Hugging Face Hub (publish --hub huggingface, hf:// models); ModelScope usually brings it via datasets
        "huggingface": ["huggingface-hub>=0.23"],
        # facemask serve: the HTTP service (FastAPI + uvicorn, as ModelScope's own server; Prometheus metrics;
        # multipart uploads)
        "serve": ["fastapi>=0.110", "uvicorn>=0.29", "prometheus-client>=0.20", "python-multipart>=0.0.9"],
        "test": [
            "pytest>=7",
            # the layering contract (.importlinter), run by tests/test_import_contract.py
            "import-linter>=2.1",
            # independent references: scikit-image (similarity transform, built-in alignment),
            # torchvision (ModelScope's reference RetinaFace), onnx/onnxruntime (detector conversion)
            "scikit-image>=0.21",
            "torch==2.14.1",
            "torchvision==0.29.1",
            "onnx>=1.15",
            "onnxruntime>=1.17",
            # facemask evaluate --plot (optional at runtime): its real rendering is tested, not skipped
            "matplotlib>=3.7",
            # every optional extra, so that its tests run in CI instead of skipping
            "openvino>=2024.0",
            "nncf>=2.14",
            "faiss-cpu>=1.8",
            "pyarrow>=14",
            "ray[data,serve]>=2.9",
            "huggingface-hub>=0.23",
            "fastapi>=0.110",
            "uvicorn>=0.29",
            "prometheus-client>=0.20",
            "python-multipart>=0.0.9",
            # the web console's test drives Debian's chromium through selenium
            "selenium>=4.20",
        ],
    },
    entry_points={"console_scripts": ["facemask=modelscope_facemask.cli:main"]},
)
