# klassterfork image: kf-train and the other kf-* commands (docs/clusters.md).
#
#   docker build -t registry.example.com/klassterfork:0.1.0 .                # CPU
#   docker build --build-arg TENSORFLOW='tensorflow[and-cuda]==2.21.*' \
#       -t registry.example.com/klassterfork:0.1.0-gpu .                     # GPU
#   docker push registry.example.com/klassterfork:0.1.0-gpu
#
# The tag is setup.py's version; docs/cluster/kubernetes.yaml names these two
# images (tests/test_cluster_files.py checks both).
FROM python:3.11-slim

# No system packages: every wheel bundles its native libraries (PyAV: FFmpeg
# with its codecs in av.libs; OpenCV, NumPy, Pillow, h5py likewise), and what
# they link outside the wheels is glibc, libgcc_s, libstdc++ and zlib, all in
# the base image. tests/test_cluster_files.py reads the NEEDED entries of the
# installed wheels' shared libraries to keep that true. The GPU build's CUDA
# libraries come as pip wheels (tensorflow[and-cuda]); the driver comes from
# the node (NVIDIA container toolkit).
ARG TENSORFLOW=tensorflow==2.21.*
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/kf/bin:$PATH

WORKDIR /opt/klassterfork
COPY setup.py pyproject.toml ./
COPY klassterfork/ klassterfork/
# The recipes: kf-train /opt/klassterfork/runs/action/classification/NAME.hjson
COPY runs/ runs/
RUN python -m venv /opt/kf \
    && pip install --no-cache-dir "${TENSORFLOW}" . \
    && groupadd --gid 1000 kf \
    && useradd --create-home --uid 1000 --gid 1000 --shell /usr/sbin/nologin kf

# Runs as the non-root user kf (uid 1000, numeric so that Kubernetes'
# runAsNonRoot can check it). Mount data and experiments as volumes and point
# KF_DATA / KF_EXPERIMENTS at them (the recipes read both).
USER 1000:1000
WORKDIR /home/kf
ENTRYPOINT ["kf-train"]
CMD ["--help"]
