"""reportgen: browsable per-layer feature-visualization reports for any timm model.

The library API is ``reportgen.pipeline.build`` (and ``render_unit``, ``list_layers``,
``rebuild_site``); ``reportgen.cli`` is a thin command line over it.
"""

__version__ = "0.1.0"
