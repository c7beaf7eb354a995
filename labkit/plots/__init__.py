"""Pure functions from Traces (or arrays) to plotly Figures. Views never train.

Scrubbers here are static: animation frames, a Play button and a step slider, so they work in a saved notebook or
an exported HTML page with no kernel. The live-kernel versions are in `labkit.widgets`. One module per method
(`plots.l2t`, `plots.dlf`, ...) and the shared pieces in `plots.common`; every public function and constant they
define is also here, as `labkit.plots.<name>`.
"""
from . import arena, common, dlf, dln, l2t, lot

__all__: list[str] = []
for _module in (common, arena, dlf, dln, l2t, lot):
    for _name, _value in vars(_module).items():
        defined_here = getattr(_value, "__module__", _module.__name__) == _module.__name__
        if not _name.startswith("_") and _name.isidentifier() and defined_here and (callable(_value) or _name.isupper()):
            globals()[_name] = _value
            __all__.append(_name)
