"""Processors: plugins that transform a file (and may rename it) before transport.

``PROCESSORS.get(name)`` finds a class by its seed name (``image_optimizer.Max``),
an alias, an entry point in the ``fileconveyor.processors`` group or a
``module:Class`` path; ``create(spec, options)`` also understands ``cmd:COMMAND``.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..registry import Registry
from .base import Context, Output, Processor, ProcessorError, RetryLater, Tool, ToolMissing, apply

__all__ = [
    "PROCESSORS",
    "Context",
    "Output",
    "Processor",
    "ProcessorError",
    "RetryLater",
    "Tool",
    "ToolMissing",
    "apply",
    "create",
]

_P = "fileconveyor.processors."
PROCESSORS: Registry[Processor] = Registry(
    "processor",
    "fileconveyor.processors",
    Processor,
    {
        "filename.SpacesToUnderscores": _P + "filename:SpacesToUnderscores",
        "filename.SpacesToDashes": _P + "filename:SpacesToDashes",
        "unique_filename.Mtime": _P + "unique_filename:Mtime",
        "unique_filename.MD5": _P + "unique_filename:MD5",
        "image_optimizer.Max": _P + "image_optimizer:Max",
        "image_optimizer.KeepMetadata": _P + "image_optimizer:KeepMetadata",
        "image_optimizer.KeepFilename": _P + "image_optimizer:KeepFilename",
        "image_optimizer.KeepMetadataAndFilename": _P + "image_optimizer:KeepMetadataAndFilename",
        "yui_compressor.YUICompressor": _P + "yui_compressor:YUICompressor",
        "google_closure_compiler.GoogleClosureCompiler": _P + "google_closure_compiler:GoogleClosureCompiler",
        "link_updater.CSSURLUpdater": _P + "link_updater:CSSURLUpdater",
        "minify.CSS": _P + "minify:CSS",
        "minify.JS": _P + "minify:JS",
    },
    {
        "spaces-to-underscores": "filename.SpacesToUnderscores",
        "spaces-to-dashes": "filename.SpacesToDashes",
        "mtime": "unique_filename.Mtime",
        "md5": "unique_filename.MD5",
        "optimize-images": "image_optimizer.Max",
        "css-urls": "link_updater.CSSURLUpdater",
        "minify-css": "minify.CSS",
        "minify-js": "minify.JS",
    },
)


def create(spec: str, options: Mapping[str, str] | None = None) -> Processor:
    """A processor instance from what a user wrote: a name, a path, or ``cmd:COMMAND``."""
    if spec.startswith("cmd:"):
        from .command import CommandProcessor

        return CommandProcessor({**(options or {}), "command": spec[4:]})
    return PROCESSORS.get(spec)(options)
