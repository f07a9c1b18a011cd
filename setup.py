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
        "numpy",
        "tqdm",
        "tensorboard",
        "matplotlib",
    ],
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "kf-train=klassterfork.cli.train:main",
            "kf-convert=klassterfork.cli.convert:main",
            "kf-synthetic=klassterfork.cli.synthetic:main",
        ]
    },
)
