"""ONNX Runtime over an export folder: the CPU backend (and CUDA/TensorRT execution providers on request)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...errors import Sam3TrtError
from ...specs import ALL_SPECS, SPECS
from ..arrays import to_numpy
from .base import Backend


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime over an export folder.

    Args:
        folder: Export folder with the three ``.onnx`` files.
        providers: ONNX Runtime execution providers; default: CPU (CUDA/TensorRT EPs are used only when
            passed, or by ``providers="auto"`` when installed).
        threads: Intra-op threads (``None``: ONNX Runtime's default).
        memory_arena: Keep ONNX Runtime's CPU arena (fast repeated calls); ``False`` returns each call's
            buffers (the full-size vision graph peaks at several GB).
        fuse_attention: With the CPU provider only, run attention sites as ONNX Runtime's
            ``MultiHeadAttention`` (flash attention, no score matrix; :mod:`.ort_attention`). The
            export's files are not changed; ``fused_sites`` records how many sites each graph got.
    """

    name = "onnxruntime"

    def __init__(
        self,
        folder: str | Path,
        providers: list[str] | str | None = None,
        threads: int | None = None,
        memory_arena: bool = True,
        fuse_attention: bool = True,
    ) -> None:
        super().__init__()
        import onnxruntime as ort

        self.folder = Path(folder)
        #: the graphs whose files the folder holds (an image export lacks the video ones)
        self.graphs = tuple(g for g, spec in ALL_SPECS.items() if (self.folder / spec.onnx_file).is_file())
        if providers == "auto":
            available = ort.get_available_providers()
            wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
            providers = [p for p in wanted if p in available]
        self.providers = list(providers or ["CPUExecutionProvider"])
        self._opts = ort.SessionOptions()
        self._opts.enable_cpu_mem_arena = memory_arena
        if threads:
            self._opts.intra_op_num_threads = threads
        # a graph edited in memory (attention fusion) is passed as bytes: its weights load from here
        self._opts.add_session_config_entry("session.model_external_initializers_file_folder_path", str(self.folder))
        self._ort = ort
        self._sessions: dict[str, Any] = {}
        self._fuse = fuse_attention and self.providers == ["CPUExecutionProvider"]
        #: graph name -> attention sites run as MultiHeadAttention (0 when not fused)
        self.fused_sites: dict[str, int] = {}

    def session(self, graph: str) -> Any:
        """The graph's session, created on first use (a truncated or corrupt file fails here, by name)."""
        if graph not in self._sessions:
            path = self.folder / ALL_SPECS[graph].onnx_file
            if not path.is_file():
                raise Sam3TrtError(f"{path} is missing; re-run `sam3-trt export`")
            try:
                self._sessions[graph] = self._load(graph, path)
            except Exception as exc:  # noqa: BLE001 - ORT raises several types for bad files
                first = str(exc).strip().splitlines()[0][:200]
                raise Sam3TrtError(
                    f"cannot load {path} ({first}); the file is truncated or corrupt: re-run the export"
                ) from None
        return self._sessions[graph]

    def _load(self, graph: str, path: Path) -> Any:
        self.fused_sites[graph] = 0
        if self._fuse:
            import onnx

            from ..ort_attention import fuse_attention

            model, fused = fuse_attention(onnx.load(str(path), load_external_data=False))
            if fused:
                session = self._ort.InferenceSession(model.SerializeToString(), self._opts, providers=self.providers)
                self.fused_sites[graph] = fused
                return session
        return self._ort.InferenceSession(str(path), self._opts, providers=self.providers)

    def _run(self, graph: str, feeds: Mapping[str, Any], sizes: Mapping[str, int]) -> dict[str, Any]:
        spec = ALL_SPECS[graph]
        inputs = {n: to_numpy(feeds[n]) for n in spec.input_names}
        outs = self.session(graph).run(spec.output_names, inputs)
        return dict(zip(spec.output_names, outs, strict=True))

    def load_all(self, graphs: Sequence[str] | None = None) -> None:
        """Create these graphs' sessions (otherwise created on first use; video graphs always are).

        Args:
            graphs: Graph names (default: the three image graphs).
        """
        for graph in SPECS if graphs is None else graphs:
            self.session(graph)

    def _release(self) -> None:
        self._sessions.clear()
