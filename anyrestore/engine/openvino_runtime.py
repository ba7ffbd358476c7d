"""Run a model's forward pass with OpenVINO (the optional ``anyrestore[openvino]`` extra).

On CPUs with native bf16 OpenVINO's kernels, which fuse the element-wise steps that eager
PyTorch runs one by one over whole maps, restore anyir_t about twice as fast as the eager
path (docs/performance.md). The graphs are traced in ``graph_form``
(``anyrestore.models.layers.tracing``), the same values without the permutes that suit
eager channels-last maps but become transposes in OpenVINO's own layouts. Only models that
declare ``traceable`` qualify: one traced graph must compute the model for every image.

Two graphs per weights, converted on first use and kept on disk (converting one takes
about half a minute on two cores; loading a kept one, a second):

* ``live``: image in, restoration out; the image-wide statistics are computed in the graph
  (a whole-image pass).
* ``replay``: image and every ``GlobalStat`` value in, restoration out (a tile whose
  statistics were recorded on the whole image by the eager model first,
  ``anyrestore.engine.reference``). Converting with the values as graph inputs is what keeps
  them from being frozen into the graph as the values of the image traced.

A kept graph is stored with a SHA-256 digest of its two files and read back only when the
digest matches: OpenVINO reads a ``.bin`` damaged in place (same size, other bytes) without
complaint and would run the damaged weights.

Each graph is converted with a free height and width and fixed to an input's size before
compiling (a fixed size compiles to code about twice as fast as a free one). Compiled
graphs are kept per size for the life of the runner and in OpenVINO's own cache directory,
so a tile size or photo size compiles once per machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import warnings
from collections import OrderedDict
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from anyrestore.compute import cache_root, model_code_digest, openvino_refusal
from anyrestore.errors import UsageError, first_line
from anyrestore.models.layers.bands import whole_maps
from anyrestore.models.layers.globalstats import GlobalStat, set_global_mode
from anyrestore.models.layers.padding import pad_to_multiple
from anyrestore.models.layers.tracing import graph_form

log = logging.getLogger("anyrestore")

Graph = Literal["live", "replay"]
#: Side of the example image the graphs are traced on (its size does not matter: both
#: sides are free in the converted graph).
_TRACE_SIDE = 64
_PRECISION_HINT = {"fp32": "f32", "bf16": "bf16"}
#: Compiled image sizes a runner keeps in memory (the tile size, the edge tiles, a reference).
COMPILED_SIZES = 4


@lru_cache(maxsize=1)
def _core() -> Any:
    """One OpenVINO core for the process, never released before exit.

    Releasing the last core unloads OpenVINO's CPU plugin; after several cores had come and
    gone, forking the process (PyTorch's data-loader workers) crashed it at the next signal.
    """
    import openvino as ov

    return ov.Core()


def cache_dir() -> Path:
    return cache_root() / "openvino"


def graph_key(model: torch.nn.Module) -> str:
    """Names a converted graph: weights, configuration, model code, this module, and the
    OpenVINO and torch versions that traced and converted it."""
    import openvino as ov

    digest = hashlib.sha256()
    config = getattr(model, "config_dict", None)
    digest.update(repr(sorted(config().items()) if callable(config) else type(model)).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    digest.update(model_code_digest().encode())  # a graph traced by other code is stale
    digest.update(Path(__file__).read_bytes())  # so is one converted by another converter
    digest.update(f"{ov.__version__}|torch {torch.__version__}".encode())  # or tracer
    arch = getattr(model, "arch", "model")
    return f"{arch}-{digest.hexdigest()[:16]}"


class _Replayed(torch.nn.Module):
    """The model with its ``GlobalStat`` values as inputs (traced in replay mode)."""

    def __init__(self, model: torch.nn.Module, stats: list[GlobalStat]) -> None:
        super().__init__()
        self.model = model
        self.stats = stats

    def forward(self, x: torch.Tensor, *values: torch.Tensor) -> torch.Tensor:
        for stat, value in zip(self.stats, values, strict=True):
            stat._stored = value
        return self.model(x)


def _convert_traced(ov: Any, module: torch.nn.Module, example: Any, inputs: list[Any]) -> Any:
    """``ov.convert_model`` of ``module`` traced on ``example``, without the trace check.

    Left to itself, OpenVINO has ``torch.jit.trace`` run the model a second time to check the
    trace, about a third of a conversion; the check cannot see what matters here (that the
    graph fits every padded size) and the converted graph is compared with eager PyTorch in
    the tests instead.
    """
    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

    decoder = TorchScriptPythonDecoder(
        module, example_input=example, trace_kwargs={"check_trace": False}
    )
    return ov.convert_model(decoder, input=inputs)


class OpenVinoModel:
    """Calls like the model on a (b, 3, h, w) float tensor; compiled for ``precision``.

    In replay mode (inside ``frozen_global_stats``) it runs the replay graph with the values
    the eager model recorded; otherwise the live graph.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        precision: str,
        threads: int | None = None,
        directory: str | os.PathLike[str] | None = None,
    ) -> None:
        reason = openvino_refusal(model)
        if reason:
            raise UsageError(reason)
        if precision not in _PRECISION_HINT:
            raise UsageError(f"OpenVINO runs fp32 or bf16, not {precision}")
        self.model = model
        self.precision = precision
        self.threads = threads or torch.get_num_threads()
        self.directory = Path(directory) if directory is not None else cache_dir()
        self.stats = [m for m in model.modules() if isinstance(m, GlobalStat)]
        self.pad_multiple = int(getattr(model, "pad_multiple", 1)) or 1
        self.core = _core()
        #: Compiled sizes, most recently used last; each holds its size's activation memory,
        #: so only the last few stay (a folder of scans of many sizes would otherwise keep
        #: every one); recompiling an evicted size reads OpenVINO's cache on disk.
        self._compiled: OrderedDict[tuple[Graph, int, int], Any] = OrderedDict()
        #: Converted graphs that could not be kept on disk: kept here instead, so that each
        #: new size does not convert again.
        self._unsaved: dict[Graph, Any] = {}
        #: Graphs converted (not loaded from disk) by this runner, for reporting and tests.
        self.conversions = 0

    def release(self) -> None:
        """Forget the compiled sizes (and their activation memory), before an
        out-of-memory retry compiles smaller ones."""
        self._compiled.clear()

    @cached_property
    def _key(self) -> str:
        """The weights' key, which names the converted graphs (hashing the weights takes a
        moment: once, on first use)."""
        return graph_key(self.model)

    @cached_property
    def _compiled_cache(self) -> str | None:
        """The folder for OpenVINO's compiled copies of this model (compiled/<key>: some
        OpenVINO releases key a compiled copy by the graph's shapes alone, and another
        weights file of the same variant would load it); None where it cannot be written
        (OpenVINO would fail the compile, not skip the cache)."""
        folder = self.directory / "compiled" / self._key
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # no cache: every run converts and compiles again
            log.debug("no OpenVINO cache in %s: %s", self.directory, exc)
            return None
        return str(folder) if os.access(folder, os.W_OK) else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x.float(), self.pad_multiple)
        replay = bool(self.stats) and self.stats[0].mode == "replay"
        kind: Graph = "replay" if replay else "live"
        compiled = self._compiled_for(kind, padded.shape[-2], padded.shape[-1])
        values = (
            [np.ascontiguousarray(self._value(s).numpy()) for s in self.stats] if replay else []
        )
        outs = []
        for image in padded:
            result = compiled([np.ascontiguousarray(image[None].numpy()), *values])
            outs.append(torch.from_numpy(np.array(result[0], dtype=np.float32, copy=True)))
        return torch.cat(outs)[..., :h, :w]

    @staticmethod
    def _value(stat: GlobalStat) -> torch.Tensor:
        value = stat._stored
        if not isinstance(value, torch.Tensor) or value.shape[0] != 1:
            raise RuntimeError("OpenVINO replays one recorded tensor per statistic")
        return value.float()

    # -- graphs -------------------------------------------------------------------------

    def _compiled_for(self, kind: Graph, height: int, width: int) -> Any:
        key = (kind, height, width)
        if key not in self._compiled:
            graph = self._graph(kind)
            graph.reshape({0: [1, 3, height, width]})
            config = {
                "INFERENCE_PRECISION_HINT": _PRECISION_HINT[self.precision],
                "INFERENCE_NUM_THREADS": self.threads,
                "PERFORMANCE_HINT": "LATENCY",
                # Pinned threads start at the first cores in every process: two runs beside
                # each other (or containers under a CPU quota) would share the same cores.
                "ENABLE_CPU_PINNING": False,
            }
            if self._compiled_cache:
                config["CACHE_DIR"] = self._compiled_cache
            self._compiled[key] = self.core.compile_model(graph, "CPU", config)
            while len(self._compiled) > COMPILED_SIZES:
                self._compiled.popitem(last=False)
        self._compiled.move_to_end(key)
        return self._compiled[key]

    def _graph(self, kind: Graph) -> Any:
        """The converted graph, read from disk (a fresh copy, so it can be reshaped)."""
        if kind in self._unsaved:
            return self._unsaved[kind].clone()
        xml = self.directory / f"{self._key}-{kind}.xml"
        if xml.exists():
            if _digest(xml) != _stored_digest(xml):
                log.warning("%s is damaged or was kept without a checksum; converting again", xml)
            else:
                try:
                    return self.core.read_model(str(xml))
                except Exception as exc:  # unreadable despite the checksum: convert again
                    log.warning("cannot read %s (%s); converting again", xml, exc)
        graph = self._convert(kind)
        try:
            self._save(graph, xml)
        except Exception as exc:  # OpenVINO's writer raises RuntimeError for a full disk too
            log.warning(
                "cannot keep the converted model in %s (%s); it is converted again in each run",
                self.directory,
                first_line(exc),
            )
            self._unsaved[kind] = graph
            return graph.clone()
        if _digest(xml) != _stored_digest(xml):  # another process replacing it right now
            return graph.clone()
        return self.core.read_model(str(xml))

    def _convert(self, kind: Graph) -> Any:
        import openvino as ov

        name = getattr(self.model, "arch", "the model")
        log.warning(
            "converting %s for OpenVINO (%s graph): about half a minute, once per weights file",
            name,
            kind,
        )
        side = max(_TRACE_SIDE, self.pad_multiple) // self.pad_multiple * self.pad_multiple
        example = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
        was_training = self.model.training
        saved = [(s.mode, s._stored) for s in self.stats]  # a tiled run may be replaying
        self.model.eval()
        free = ov.PartialShape([1, 3, -1, -1])
        try:
            # Traced in fp32 (OpenVINO sets the precision when it compiles), without bands of
            # rows (a Python loop over the rows of the traced size), without the tracer's
            # notes on shape-dependent Python, which hold for every padded input.
            with (
                torch.no_grad(),
                torch.autocast("cpu", enabled=False),
                whole_maps(),
                graph_form(),
                warnings.catch_warnings(),
            ):
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace
                if kind == "live":
                    set_global_mode(self.model, "live")
                    graph = _convert_traced(ov, self.model, example, [free])
                else:
                    set_global_mode(self.model, "record")
                    self.model(example)
                    values = [self._value(s) for s in self.stats]
                    set_global_mode(self.model, "replay")
                    shapes = [ov.PartialShape(list(v.shape)) for v in values]
                    graph = _convert_traced(
                        ov, _Replayed(self.model, self.stats), (example, *values), [free, *shapes]
                    )
        finally:
            for stat, (mode, stored) in zip(self.stats, saved, strict=True):
                stat.mode, stat._stored = mode, stored
            self.model.train(was_training)
        self.conversions += 1
        return graph

    @staticmethod
    def _save(graph: Any, xml: Path) -> None:
        """Write the graph's .xml/.bin pair and their digest so a reader never sees half of
        them: the .xml, which a reader looks for, is renamed into place last."""
        import openvino as ov

        xml.parent.mkdir(parents=True, exist_ok=True)
        # Unique to this writer: two threads, or containers sharing the folder (pid 1 each)
        tmp = xml.with_name(f".{xml.stem}.{os.getpid()}.{secrets.token_hex(4)}.xml")
        try:
            ov.save_model(graph, str(tmp), compress_to_fp16=False)
            tmp.with_suffix(".sha256").write_text(_digest(tmp) + "\n")
            for suffix in (".bin", ".sha256"):
                os.replace(tmp.with_suffix(suffix), xml.with_suffix(suffix))
            os.replace(tmp, xml)
        except BaseException:
            for part in (tmp, tmp.with_suffix(".bin"), tmp.with_suffix(".sha256")):
                with contextlib.suppress(OSError):
                    part.unlink()
            raise


def _digest(xml: Path) -> str | None:
    """SHA-256 of a kept graph's .xml and .bin together; None when either cannot be read."""
    sha = hashlib.sha256()
    try:
        for part in (xml, xml.with_suffix(".bin")):
            with part.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    sha.update(chunk)
    except OSError:
        return None
    return sha.hexdigest()


def _stored_digest(xml: Path) -> str | None:
    """The digest written beside a kept graph; None when it is missing (an older cache)."""
    try:
        return xml.with_suffix(".sha256").read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None
