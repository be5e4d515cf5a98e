"""The driver side of gantune (CLI, Tuner, MLflow parent run, promote / generate / report /
evaluate), installed as the package `gantune.search`.

That name is also the API's `gantune.search(...)`: importing any `gantune.search.<module>` binds
this package to the attribute `gantune.search`, so a plain function there would be replaced by the
package on first use. The package itself is therefore callable, and calls gantune.api.search."""

import sys
import types


class _CallableSearch(types.ModuleType):
    def __call__(self, space, **kwargs):
        """gantune.api.search: run a search and return its SearchResult."""
        from gantune.api import search

        return search(space, **kwargs)


sys.modules[__name__].__class__ = _CallableSearch
