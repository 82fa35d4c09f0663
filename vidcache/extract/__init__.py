"""The extract stage: decode each video once, run every requested view's model, write the cache.

`vidcache.extract(manifest, cache, config)` is this package called as a function (see api.py): the
package stays importable as a namespace (`vidcache.extract.views`, `vidcache.extract.config`) and the
call reads as the CLI command does.
"""

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from .api import extract

        return extract(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
