"""Memory and utilisation readings: host (psutil), training device (MindSpore), accelerators (smi tools).

The app imports this module for host and accelerator readings, so MindSpore is never
imported here at module level, and `memory_row` only reads MindSpore's counters in a process
that has already loaded it (the trainer). Sizes are MiB (2**20 bytes).
"""

from __future__ import annotations

import csv
import functools
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

import psutil

MIB = 2**20
SMI_TIMEOUT_S = 5.0

NVIDIA_SMI_ARGS = (
    "--query-gpu=index,name,memory.used,memory.total,utilization.gpu",
    "--format=csv,noheader,nounits",
)
NPU_SMI_ARGS = ("info",)

# MindSpore's device_target names -> the names in metrics rows.
DEVICE_NAMES = {"CPU": "cpu", "GPU": "gpu", "Ascend": "ascend"}


def _mib(n_bytes: float) -> float:
    return round(n_bytes / MIB, 1)


def process_rss_mb(pid: int | None = None, *, include_children: bool = True) -> float:
    """Resident memory of a process (default: this one), plus all its descendants.

    Descendants matter for a run launched through msrun, whose workers are children of the
    launcher. Pages shared between processes are counted once per process.
    """
    process = psutil.Process(pid)
    processes = [process, *(process.children(recursive=True) if include_children else [])]
    total = 0
    for p in processes:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return _mib(total)


def host_memory_mb() -> tuple[float, float]:
    """(used, total) host memory, where used means not available to new allocations."""
    memory = psutil.virtual_memory()
    return _mib(memory.total - memory.available), _mib(memory.total)


def training_device() -> str:
    """The device this process trains on, as MindSpore's context names it ("cpu", "gpu", "ascend")."""
    import mindspore as ms

    target = ms.get_current_device().device_target
    return DEVICE_NAMES.get(target, target.lower())


def device_memory_mb() -> dict:
    """MindSpore's allocator statistics for this process's device; on the CPU only the device
    name, since MindSpore reports 0 there (host memory is in `rss_mb`)."""
    device = training_device()
    if device == "cpu":
        return {"device": device}
    import mindspore as ms

    return {
        "device": device,
        "device_alloc_mb": _mib(ms.runtime.memory_allocated()),
        "device_peak_mb": _mib(ms.runtime.max_memory_allocated()),
    }


def device_memory_use_mb() -> tuple[float, float] | None:
    """(peak allocated, total) memory of this process's GPU or NPU, from MindSpore; None on the CPU,
    in a process without MindSpore, or where the device does not give its size. Untested: this
    project's host has no GPU or NPU."""
    if "mindspore" not in sys.modules or training_device() == "cpu":
        return None
    import mindspore as ms

    total = _device_total_bytes(ms.get_current_device().device_id)
    return (_mib(ms.runtime.max_memory_allocated()), _mib(total)) if total else None


@functools.cache
def _device_total_bytes(device_id: int) -> int:
    import mindspore as ms

    return getattr(ms.hal.get_device_properties(device_id), "total_memory", 0)


def memory_row() -> dict:
    """The `mem` field of a metrics `train` row, for this process (and its children).

    Device fields come from MindSpore only when this process has already imported it, so a
    light process that calls this never pays for loading MindSpore.
    """
    used, total = host_memory_mb()
    row = {"rss_mb": process_rss_mb(), "host_used_mb": used, "host_total_mb": total}
    if "mindspore" in sys.modules:
        row.update(device_memory_mb())
    else:
        row["device"] = "cpu"
    return row


@dataclass
class AcceleratorReading:
    """One GPU or NPU chip as its management tool reports it; None where the tool says N/A."""

    kind: str
    index: int
    chip: int
    name: str
    memory_used_mb: float | None
    memory_total_mb: float | None
    utilization_percent: float | None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_nvidia_smi(text: str) -> list[AcceleratorReading]:
    """Output of `nvidia-smi` with NVIDIA_SMI_ARGS (CSV: index, name, used MiB, total MiB, util %)."""
    readings = []
    for fields in csv.reader(line for line in text.splitlines() if line.strip()):
        if len(fields) != 5:
            continue
        index, name, used, total, utilization = (field.strip() for field in fields)
        if not index.isdigit():
            continue
        readings.append(
            AcceleratorReading("gpu", int(index), 0, name, _number(used), _number(total), _number(utilization))
        )
    return readings


_USAGE_PAIR = re.compile(r"(\d+)\s*/\s*(\d+)")
_BUS_ID = re.compile(r"[0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f]")


def parse_npu_smi(text: str) -> list[AcceleratorReading]:
    """Output of `npu-smi info`: the table where each NPU has a row "NPU Name | Health | ..."
    followed by one row per chip "Chip | Bus-Id | AICore(%) Memory-Usage(MB) [HBM-Usage(MB)]".

    Device memory is HBM where the chip has it (Ascend 910), else Memory-Usage (Ascend 310).
    """
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.lstrip().startswith("|")]
    usage_columns: list[str] = []
    for cells in rows:
        if len(cells) >= 3 and "Bus-Id" in cells[1]:
            usage_columns = re.findall(r"([\w-]+)-Usage\(MB\)", cells[2])
            break
    memory_column = usage_columns.index("HBM") if "HBM" in usage_columns else 0

    readings = []
    npu, name = None, ""
    for cells in rows:
        head = cells[0].split()
        if len(cells) < 3 or not head or not head[0].isdigit():
            continue
        if _BUS_ID.fullmatch(cells[1]):
            if npu is None:
                continue
            pairs = _USAGE_PAIR.findall(cells[2])
            used, total = (float(v) for v in pairs[memory_column]) if len(pairs) > memory_column else (None, None)
            aicore = cells[2].split()[0] if cells[2].split() else ""
            readings.append(AcceleratorReading("npu", npu, int(head[0]), name, used, total, _number(aicore)))
        elif len(head) >= 2 and not cells[1].isdigit():
            # "NPU Name | Health | ...": a device row (a number there would be a pid of the process table).
            npu, name = int(head[0]), head[1]
    return readings


def _run_tool(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=SMI_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def read_accelerators() -> list[AcceleratorReading]:
    """Every GPU (nvidia-smi) and NPU (npu-smi) on this host; [] where neither tool is installed.

    Runs the tools as subprocesses (up to SMI_TIMEOUT_S each): call it from a worker thread.
    """
    readings = []
    for tool, args, parse in (("nvidia-smi", NVIDIA_SMI_ARGS, parse_nvidia_smi), ("npu-smi", NPU_SMI_ARGS, parse_npu_smi)):
        path = shutil.which(tool)
        if path is None:
            continue
        output = _run_tool([path, *args])
        if output is not None:
            readings += parse(output)
    return readings
