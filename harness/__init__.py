"""harness: fine-tune, sweep decoding settings, score and report — through plugins."""

import pluggy

__version__ = "0.2.0"

#: decorator for plugin hook implementations
hookimpl = pluggy.HookimplMarker("harness")

__all__ = ["__version__", "hookimpl"]
