"""One TOML file, validated by typed models (one module per section).

`load_config(path)` returns a :class:`LensboxConfig`; errors name the key's path and what
was expected. Environment variables ``LENSBOX__SECTION__KEY=value`` override the file.
"""

from lensbox.device.config.loader import ConfigError, LensboxConfig, load_config

__all__ = ["ConfigError", "LensboxConfig", "load_config"]
