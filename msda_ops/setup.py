"""Opt-in ahead-of-time build of the kernels; the metadata lives in pyproject.toml.

By default the package is pure Python (the kernels compile on first use). With
``MSDA_OPS_BUILD_EXT=1`` the C++ library (and the CUDA one when a GPU or
``MSDA_OPS_BUILD_CUDA=1`` and a toolkit are present) are compiled now, against the torch
already installed, hence ``--no-build-isolation``::

    MSDA_OPS_BUILD_EXT=1 pip install --no-build-isolation ./msda_ops
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup

HERE = Path(__file__).resolve().parent


def _enabled(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _extensions() -> dict[str, Any]:
    if not _enabled("MSDA_OPS_BUILD_EXT"):
        return {}
    import torch
    from torch.utils import cpp_extension

    sys.path.insert(0, str(HERE / "src"))
    from msda_ops.cuda_home import find_cuda_home

    from msda_ops import build

    def relative(paths: list[Path]) -> list[str]:
        return [str(p.relative_to(HERE)) for p in paths]

    include = [str(build.CSRC)]
    libraries = {"cpu": "msda_ops._C"}
    modules = [
        cpp_extension.CppExtension(
            libraries["cpu"],
            relative(build.sources("cpu")),
            include_dirs=include,
            extra_compile_args={"cxx": build.CXX_FLAGS},
            extra_link_args=build._OPENMP,
        )
    ]
    home = find_cuda_home()
    if home is not None and (torch.cuda.is_available() or _enabled("MSDA_OPS_BUILD_CUDA")):
        os.environ["CUDA_HOME"] = str(home)
        cpp_extension.CUDA_HOME = str(home)
        libraries["cuda"] = "msda_ops._C_cuda"
        modules.append(
            cpp_extension.CUDAExtension(
                libraries["cuda"],
                relative(build.sources("cuda")),
                include_dirs=include,
                extra_compile_args={"cxx": build.CXX_FLAGS, "nvcc": build.CUDA_FLAGS},
            )
        )

    class BuildExt(cpp_extension.BuildExtension):
        """Also records which torch the libraries were built for (see build._prebuilt)."""

        def run(self) -> None:
            super().run()
            built = {kind: Path(self.get_ext_fullpath(name)) for kind, name in libraries.items()}
            info = {
                "torch": torch.__version__,
                "libraries": {kind: path.name for kind, path in built.items()},
            }
            if "cuda" in built:  # build._prebuilt loads it only on these architectures
                info["cuda_arch"] = build.cuda_arch_list()
            target = built["cpu"].parent / "_prebuilt.json"
            target.write_text(json.dumps(info, indent=2) + "\n")

    return {"ext_modules": modules, "cmdclass": {"build_ext": BuildExt}}


setup(**_extensions())
