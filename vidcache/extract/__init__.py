"""The extract stage: decode each video once, run every requested view's model, write the cache.

`vidcache.extract(manifest, cache, config)` is this package called as a function (see api.py): the
package stays importable as a namespace (`vidcache.extract.views`, `vidcache.extract.config`) and the
call reads as the CLI command does.

Three layers, checked by import-linter (pyproject.toml's `extract-layers`):

* the run: api, runner, engines/ (local, ray), stages/ (the pipeline: decode → model → assemble →
  write), decode_process (decode workers as processes), viewset (the requested views, loaded), plan,
  rules, config;
* views/: one folder per view (settings, model, consumer) and base.py, the view API;
* the machinery, which imports no view: stage.py (`VideoStage`: one video's video pass + audio pass),
  nvdec.py (`--decode-device cuda`: NVDEC's pass over a video, the decisions when it falls back to
  the CPU), decode.py (PyAV: open a video, `FrameSampler` picks the frames on screen at the sample times),
  consumers.py, encoder.py (the encoder protocol), weights.py, preprocess, audio/ (audio decode and
  log-mel front end), sampling, streams, colour, spill, watchdog.

Four modules say "decode": decode.py reads frames, stage.py runs a video's passes over them,
stages/decode.py is the pipeline stage that runs `VideoStage` per task, decode_process.py runs that
stage in child processes.
"""

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from .api import extract

        return extract(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
