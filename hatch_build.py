"""Build hook: compiles `bot/core/_fir.c`, the resampler in C, next to `codec.py`.

Without a C compiler the package still installs and works: `bot.core.codec` falls back to
the same filter in numpy, bit for bit, at about twice the CPU per chunk.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class ResamplerBuildHook(BuildHookInterface):  # type: ignore[misc]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return  # the sdist carries the source
        source = Path(self.root, "bot", "core", "_fir.c")
        target = source.with_name("_fir" + str(sysconfig.get_config_var("EXT_SUFFIX")))
        compiler = shlex.split(str(sysconfig.get_config_var("CC") or "cc"))
        command = [
            *compiler,
            "-O3",
            "-shared",
            "-fPIC",
            f"-I{sysconfig.get_paths()['include']}",
            str(source),
            "-o",
            str(target),
        ]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            print(
                f"bot: the C resampler was not built, numpy does its work: {detail}",
                file=sys.stderr,
            )
            return
        if version != "editable":  # an editable install imports it from the source tree
            build_data["pure_python"] = False
            build_data["infer_tag"] = True
            build_data["force_include"][str(target)] = f"bot/core/{target.name}"
