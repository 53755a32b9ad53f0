"""``sam3-trt gpu-check``: sam3-trt on one GPU, in stages, into one report folder.

Stages (:data:`STAGES`, details in :mod:`.stages`): a environment; b engines built on this GPU and run
(plus engines built ahead of time elsewhere); c tiny parity against eager FP32; d full-size FP16 latency
against eager FP32 and bfloat16 on the same GPU; e full-size FP16 accuracy of two precision policies.
``gpu-check.json`` and ``summary.md`` are rewritten after every stage event, a deadline stops the run
cleanly, ``--resume`` continues it, and ``--simulate`` runs it all through GPU doubles on a CPU.
"""

from .report import REPORT_FILE, SUMMARY_FILE, CheckReport
from .run import DEADLINE_EXIT, STAGES, GpuCheckOptions, gpu_check

__all__ = ["DEADLINE_EXIT", "REPORT_FILE", "STAGES", "SUMMARY_FILE", "CheckReport", "GpuCheckOptions", "gpu_check"]
