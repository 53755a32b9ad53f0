"""``sam3-trt serve``: the ``sam3`` model on Triton Inference Server through PyTriton.

PyTriton starts a real ``tritonserver`` (HTTP, gRPC, Prometheus metrics, dynamic batching) whose Python
backend forwards each batch of requests to :class:`~.handler.Sam3Handler` in this process. One handler,
with its own :class:`~sam3_trt.Sam3Processor`, per model instance; on a machine with GPUs the instances
are spread over them (instance ``i`` on GPU ``i % gpus``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from ..errors import Sam3TrtError
from ..specs import SPECS
from .contract import INPUTS, MODEL_NAME, OUTPUTS
from .handler import ServeLimits


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """What ``serve`` runs and where it listens.

    Args:
        artifacts: Export folder (ONNX Runtime) or engine folder (TensorRT).
        backend: ``auto``, ``onnxruntime`` or ``tensorrt`` (as :class:`~sam3_trt.Sam3Processor`).
        host: Address the HTTP, gRPC and metrics endpoints bind to.
        http_port: HTTP/REST port.
        grpc_port: gRPC port.
        metrics_port: Prometheus metrics port.
        instances: Model instances (each its own processor); per GPU when there are GPUs.
        max_batch: Requests Triton's dynamic batcher may group into one call.
        max_queue_delay_us: How long the batcher waits to fill a batch.
        limits: Per-request limits.
        threads: ONNX Runtime threads per instance (default: the CPUs shared between instances).
        exit_timeout_s: On shutdown, how long in-flight requests get to finish.
        triton_log: Where ``tritonserver`` writes its log (default: ``sam3-trt-serve-<http port>.log`` in the
            temp folder), so this process's stdout carries only the ready line.
        warm_up: Before "ready", run each instance on its largest batch (``max_batch`` images, the
            decoder's largest prompt batch), so its memory is at its working size from the first request
            on instead of growing under load (ONNX Runtime's CPU arena keeps what the largest call used).
        clicks: Also answer click requests (``points``): each instance's processor is made with
            ``interactive=True`` (the folder must hold the tracker neck and click head: ``export --video``).
        access_token: The token of Triton's restricted APIs (model repository, statistics, shared memory,
            trace, logging), sent as the ``triton-access-token`` header; ``None``: a random one nobody knows,
            so those APIs stay closed (a client cannot unload the model).
    """

    artifacts: Path
    backend: str = "auto"
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    instances: int = 1
    max_batch: int = SPECS["vision_encoder"].dim("B").max
    max_queue_delay_us: int = 2000
    limits: ServeLimits = dataclasses.field(default_factory=ServeLimits)
    threads: int | None = None
    exit_timeout_s: int = 30
    triton_log: Path | None = None
    warm_up: bool = True
    clicks: bool = False
    access_token: str | None = dataclasses.field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        """The Triton log file."""
        return Path(self.triton_log or Path(tempfile.gettempdir()) / f"sam3-trt-serve-{self.http_port}.log")

    def check(self) -> ServeOptions:
        """Check everything that can be checked before loading a model.

        Raises:
            Sam3TrtError: one line naming the option, its value and the fix.
        """
        if not Path(self.artifacts).is_dir():
            raise Sam3TrtError(f"--artifacts {self.artifacts}: not a folder; pass an export or engine folder")
        if self.backend not in ("auto", "onnxruntime", "tensorrt"):
            raise Sam3TrtError(f"--backend {self.backend!r}: choose auto, onnxruntime or tensorrt")
        for flag, value, low in (("--instances", self.instances, 1), ("--max-batch", self.max_batch, 1)):
            if value < low:
                raise Sam3TrtError(f"{flag} {value}: must be at least {low}")
        if self.exit_timeout_s < 0:
            raise Sam3TrtError(f"--exit-timeout {self.exit_timeout_s}: must be >= 0 seconds")
        if self.max_queue_delay_us < 0:
            raise Sam3TrtError(f"--max-queue-delay-us {self.max_queue_delay_us}: must be >= 0")
        ports = {"--http-port": self.http_port, "--grpc-port": self.grpc_port, "--metrics-port": self.metrics_port}
        if len(set(ports.values())) != len(ports):
            raise Sam3TrtError(f"ports {ports} must differ: give each endpoint its own port")
        for flag, port in ports.items():
            if not 1 <= port <= 65535:
                raise Sam3TrtError(f"{flag} {port}: not a TCP port (1-65535)")
            _check_port_free(self.host, port, flag)
        self.limits.check()
        if self.clicks:
            _check_clicks(Path(self.artifacts))
        return self


def _check_port_free(host: str, port: int, flag: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise Sam3TrtError(
                f"{flag} {port} on {host}: cannot listen there ({exc.strerror}); pick a free port"
            ) from None


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports free on ``host`` now (the OS picks them): for test and benchmark servers."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def check_serving_python() -> None:
    """Refuse a Python that Triton's Python backend cannot embed, with the fix.

    PyTriton's backend stub is a separate program that loads ``libpython`` through the dynamic loader and
    runs this interpreter's standard library in it, so it needs this interpreter's own shared library: an
    interpreter built without ``--enable-shared`` has none, and one whose library is not on the loader's
    path gets the distribution's (another patch release: the stub dies at start). :func:`libpython_env`
    puts this interpreter's library first.
    """
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise Sam3TrtError(
            f"serve needs a Python built with a shared libpython; {sys.executable} ({sys.version.split()[0]}) "
            "is not: use the distribution's Python (e.g. /usr/bin/python3.11 on Debian/Ubuntu), as "
            "`make serve-install` does, or rebuild it with --enable-shared"
        )
    library = Path(sysconfig.get_config_var("LIBDIR") or "") / (sysconfig.get_config_var("INSTSONAME") or "")
    if not library.is_file():
        raise Sam3TrtError(
            f"serve: {sys.executable} reports a shared libpython but {library} does not exist; reinstall that "
            "Python or use the distribution's (make serve-install SERVE_PYTHON=/usr/bin/python3.11)"
        )
    try:
        import pytriton  # noqa: F401
    except ImportError:
        raise Sam3TrtError("serve needs PyTriton: pip install 'sam3-trt[serve]' (or `make serve-install`)") from None


def libpython_env() -> None:
    """Put this interpreter's ``LIBDIR`` first on ``LD_LIBRARY_PATH`` (inherited by tritonserver's stub)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    current = os.environ.get("LD_LIBRARY_PATH", "")
    if libdir and libdir not in current.split(":"):
        os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{current}" if current else libdir


def _check_clicks(folder: Path) -> None:
    """``--clicks`` needs the click graphs: say so before any model loads."""
    from ..manifest import check_click_graphs
    from ..runtime.artifacts import resolve_artifacts

    found = resolve_artifacts(folder)
    check_click_graphs(found.manifest, str(found.folder), ", or serve without --clicks")


def _processors(options: ServeOptions) -> list[Any]:
    from ..device import gpu_info
    from ..runtime.processor import Sam3Processor

    gpus = gpu_info()
    count = len(gpus.names) if gpus.available else 0
    threads = options.threads or max(1, (os.cpu_count() or 1) // options.instances)
    processors = []
    for i in range(options.instances):
        proc = Sam3Processor(
            options.artifacts,
            backend=options.backend,
            threads=threads,
            device_index=i % count if count else 0,
            verify=i == 0,  # the files do not change between instances: check them once
            interactive=options.clicks,
        )
        proc.backend.load_all(proc.graphs)  # ONNX Runtime sessions are lazy: create them now, so "ready" means ready
        processors.append(proc)
    return processors


def serve(options: ServeOptions, ready: Any = None) -> None:
    """Load one processor per instance, start Triton and serve until SIGINT/SIGTERM.

    Args:
        options: Checked :class:`ServeOptions`.
        ready: Called with a dict of the endpoints once the model is ready (the CLI prints it).
    """
    import numpy as np
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonLifecyclePolicy, TritonSecurityConfig

    from .handler import Sam3Handler

    check_serving_python()
    libpython_env()
    handlers = [Sam3Handler(p, options.limits) for p in _processors(options)]
    for handler in handlers if options.warm_up else ():
        handler.warm_up(min(options.max_batch, SPECS["vision_encoder"].dim("B").max))
    config = TritonConfig(
        http_address=options.host,
        http_port=options.http_port,
        grpc_address=options.host,
        grpc_port=options.grpc_port,
        metrics_port=options.metrics_port,
        exit_timeout_secs=options.exit_timeout_s,
        log_verbose=0,
        log_file=options.log_path,
    )

    def as_tensor(spec: Any) -> Tensor:
        return Tensor(name=spec.name, dtype=np.dtype(spec.dtype), shape=spec.shape, optional=spec.optional)

    # SIGTERM (docker stop, Kubernetes) shuts down like Ctrl-C: Triton drains in-flight requests first
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    logging.getLogger("pytriton").setLevel(logging.WARNING)
    # Triton starts only once the model is bound, with it in its local model store: it loads the model before
    # it opens its ports, so /v2/health/ready never answers yes for a server with no model (PyTriton's default
    # starts tritonserver first and loads the model through its repository API, a window of about a second
    # where "ready" is true and requests get 404)
    lifecycle = TritonLifecyclePolicy(launch_triton_on_startup=False, local_model_store=True)
    security = TritonSecurityConfig(access_token=options.access_token)  # None: PyTriton draws a random token
    try:
        with Triton(config=config, triton_lifecycle_policy=lifecycle, security_config=security) as triton:
            triton.bind(
                model_name=MODEL_NAME,
                infer_func=[_as_infer_func(h) for h in handlers],
                inputs=[as_tensor(t) for t in INPUTS],
                outputs=[as_tensor(t) for t in OUTPUTS],
                config=ModelConfig(
                    max_batch_size=options.max_batch,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=options.max_queue_delay_us),
                ),
                strict=True,
            )
            triton.run()
            if ready is not None:
                ready(endpoints(options))
            triton.serve()
    finally:
        for handler in handlers:
            handler.processor.close()


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _as_infer_func(handler: Any) -> Any:
    # PyTriton passes Request objects (mappings of name -> array, batch axis first)
    def infer(requests: list[Any]) -> list[dict[str, Any]]:
        return handler([{name: request[name] for name in request} for request in requests])

    return infer


def endpoints(options: ServeOptions) -> dict[str, Any]:
    """The URLs a client and a monitor use."""
    host = "127.0.0.1" if options.host in ("0.0.0.0", "") else options.host
    return {
        "model": MODEL_NAME,
        "http": f"http://{host}:{options.http_port}",
        "grpc": f"grpc://{host}:{options.grpc_port}",
        "metrics": f"http://{host}:{options.metrics_port}/metrics",
        "health": f"http://{host}:{options.http_port}/v2/health/ready",
        "triton_log": str(options.log_path),
        "instances": options.instances,
        "max_batch": options.max_batch,
    }
