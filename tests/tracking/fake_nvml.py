"""A stand-in for the `pynvml` module (package nvidia-ml-py): the API surface tracking/gpu.py uses.

The error classes carry the real names and codes, and their messages are nvidia-ml-py's:
``str(NVMLError_LibraryNotFound())`` is "NVML Shared Library Not Found", as from the real module.
A :class:`FakeNvml` instance goes where the module would: ``gpu_usage_sample(nvml=fake)`` or
``monkeypatch.setitem(sys.modules, "pynvml", fake)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any


class NVMLError(Exception):
    value = 999
    _errcode_to_string = {
        1: "Uninitialized",
        2: "Invalid Argument",
        3: "Not Supported",
        4: "Insufficient Permissions",
        5: "Already Initialized",
        6: "Not Found",
        9: "Driver Not Loaded",
        10: "Timeout",
        12: "NVML Shared Library Not Found",
        13: "Function Not Found",
        15: "GPU is lost",
        16: "GPU requires restart",
        17: "The operating system has blocked the request.",
        18: "RM has detected an NVML/RM version mismatch.",
        999: "Unknown Error",
    }

    def __str__(self) -> str:
        return self._errcode_to_string.get(self.value, f"NVML Error with code {self.value}")


class NVMLError_Uninitialized(NVMLError):  # the real names, as nvidia-ml-py generates them
    value = 1


class NVMLError_NotSupported(NVMLError):
    value = 3


class NVMLError_NoPermission(NVMLError):
    value = 4


class NVMLError_NotFound(NVMLError):
    value = 6


class NVMLError_DriverNotLoaded(NVMLError):
    value = 9


class NVMLError_Timeout(NVMLError):
    value = 10


class NVMLError_LibraryNotFound(NVMLError):
    value = 12


class NVMLError_FunctionNotFound(NVMLError):
    value = 13


class NVMLError_GpuIsLost(NVMLError):
    value = 15


class NVMLError_ResetRequired(NVMLError):
    value = 16


class NVMLError_OperatingSystem(NVMLError):
    value = 17


class NVMLError_LibRmVersionMismatch(NVMLError):
    value = 18


class NVMLError_Unknown(NVMLError):
    value = 999


ERRORS = {cls.__name__: cls for cls in (NVMLError, *NVMLError.__subclasses__())}

GIB = 2**30


@dataclass
class FakeGpu:
    """One device. `fail` maps an NVML function name to the error it raises for this device."""

    uuid: str
    name: str = "NVIDIA A100-SXM4-80GB"
    utilisation: int = 0
    memory_used: int = 0
    memory_total: int = 80 * GIB
    power_mw: int | None = 250_000  # None: NVMLError_NotSupported
    processes: list[tuple[int, int | None]] | None = field(default_factory=list)  # None: NotSupported
    fail: dict[str, NVMLError] = field(default_factory=dict)

    def call(self, function: str, value: Any) -> Any:
        if function in self.fail:
            raise self.fail[function]
        return value


class FakeNvml:
    """The module: nvmlInit/nvmlShutdown, device queries, and the NVMLError classes as attributes."""

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        *,
        init_error: NVMLError | None = None,
        init_errors: list[NVMLError] | None = None,
    ) -> None:
        self.gpus = list(gpus or [])
        self.init_error = init_error  # every nvmlInit raises it
        self.init_errors = list(init_errors or [])  # the next nvmlInit calls raise these, in order
        self.count_error: NVMLError | None = None
        self.inits = 0
        self.shutdowns = 0
        for name, cls in ERRORS.items():
            setattr(self, name, cls)

    def nvmlInit(self) -> None:
        if self.init_errors:
            raise self.init_errors.pop(0)
        if self.init_error is not None:
            raise self.init_error
        self.inits += 1

    def nvmlShutdown(self) -> None:
        if self.inits <= self.shutdowns:
            raise NVMLError_Uninitialized()
        self.shutdowns += 1

    def _initialised(self) -> None:
        if self.inits <= self.shutdowns:
            raise NVMLError_Uninitialized()

    def nvmlDeviceGetCount(self) -> int:
        self._initialised()
        if self.count_error is not None:
            raise self.count_error
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._initialised()
        gpu = self.gpus[index]
        return gpu.call("nvmlDeviceGetHandleByIndex", gpu)

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> str:
        return handle.call("nvmlDeviceGetUUID", handle.uuid)

    def nvmlDeviceGetName(self, handle: FakeGpu) -> str:
        return handle.call("nvmlDeviceGetName", handle.name)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeGpu) -> SimpleNamespace:
        # c_nvmlUtilization_t: gpu and memory, percent
        return handle.call("nvmlDeviceGetUtilizationRates", SimpleNamespace(gpu=handle.utilisation, memory=0))

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu) -> SimpleNamespace:
        # c_nvmlMemory_t: total, free, used (bytes)
        info = SimpleNamespace(
            total=handle.memory_total, used=handle.memory_used, free=handle.memory_total - handle.memory_used
        )
        return handle.call("nvmlDeviceGetMemoryInfo", info)

    def nvmlDeviceGetPowerUsage(self, handle: FakeGpu) -> int:
        if handle.power_mw is None:
            raise NVMLError_NotSupported()
        return handle.call("nvmlDeviceGetPowerUsage", handle.power_mw)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeGpu) -> list[SimpleNamespace]:
        if handle.processes is None:
            raise NVMLError_NotSupported()
        # c_nvmlProcessInfo_t: usedGpuMemory is None where NVML reports NVML_VALUE_NOT_AVAILABLE
        running = [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in handle.processes]
        return handle.call("nvmlDeviceGetComputeRunningProcesses", running)
