"""The `kf-*` console commands: thin shells over the library.

Commands import TensorFlow only after parsing their arguments, so `--help`
and usage errors stay instant. Importing this package also keeps
TensorFlow's C++ start-up notes (oneDNN, "could not find cuda drivers",
"All log messages before absl::InitializeLog()") out of the commands'
output: TF_CPP_MIN_LOG_LEVEL is set before TensorFlow loads (a value the user
set is kept), and because TF 2.21 writes those notes through absl before it
reads that variable, file descriptor 2 points at /dev/null while the
`tensorflow` package itself executes. Python exceptions from the import are
still raised and shown; only the C++ writes during those seconds are lost.
Set KF_TF_IMPORT_LOGS=1 to see them.
"""

import importlib.abc
import importlib.machinery
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _QuietLoader(importlib.abc.Loader):
    """Runs another loader's `exec_module` with stderr's descriptor muted."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):  # resource readers etc. of the real loader
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            self.loader.exec_module(module)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` as usual and wraps its loader in `_QuietLoader`."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: only the first import runs the package
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


if "tensorflow" not in sys.modules and os.environ.get("KF_TF_IMPORT_LOGS") != "1":
    sys.meta_path.insert(0, _QuietTensorFlowFinder())
