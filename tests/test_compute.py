"""The compute policy: which precision ``auto`` picks on which CPU, the probe's cache, threads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tinymodels import TINY_ANYIR as TINY

import anyrestore.compute as compute
from anyrestore.compute import choose_path, set_threads
from anyrestore.errors import DeviceError, UsageError
from anyrestore.models import create_model


def tiny(seed: int = 0, **overrides: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("anyir_t", **{**TINY, **overrides})


class Probe:
    """A stand-in for the timing probe: returns a fixed speed-up and counts its calls."""

    def __init__(self, speedup: float) -> None:
        self.speedup, self.calls = speedup, 0

    def __call__(self, model: torch.nn.Module, device: torch.device) -> float:
        self.calls += 1
        return self.speedup


@pytest.fixture
def cpu_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Pretend the CPU has the given bf16 instructions; a fresh probe cache per test."""
    monkeypatch.setenv("ANYRESTORE_CACHE", str(tmp_path))

    def set_isa(isa: str | None) -> None:
        monkeypatch.setattr(compute, "native_bf16", lambda: isa)

    return set_isa


def test_a_cpu_without_native_bf16_runs_fp32_channels_last(cpu_with) -> None:
    cpu_with(None)
    probe = Probe(10.0)
    path = choose_path("cpu", "auto", model=tiny(), probe=probe)
    assert (path.precision, path.channels_last) == ("fp32", True)
    assert probe.calls == 0  # nothing to measure: bf16 would be emulated
    assert "no native bf16" in path.describe()


@pytest.mark.parametrize(("speedup", "expected"), [(3.0, "bf16"), (1.05, "fp32"), (0.8, "fp32")])
def test_native_bf16_is_used_only_when_measured_faster(cpu_with, speedup, expected) -> None:
    cpu_with("AMX-BF16")
    path = choose_path("cpu", "auto", model=tiny(), probe=Probe(speedup))
    assert path.precision == expected
    assert path.reason.startswith("AMX-BF16")
    assert f"{speedup:.1f}" in path.reason or f"{speedup:.2f}" in path.reason


def test_the_measurement_is_cached_per_model_config_and_thread_count(cpu_with) -> None:
    cpu_with("AVX512-BF16")
    probe = Probe(2.0)
    for _ in range(3):
        assert choose_path("cpu", "auto", model=tiny(), probe=probe).precision == "bf16"
    assert probe.calls == 1
    choose_path("cpu", "auto", model=tiny(dim=12, heads=(1, 1, 1, 1)), probe=probe)
    assert probe.calls == 2  # another model configuration is measured on its own
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(before + 1)
        choose_path("cpu", "auto", model=tiny(), probe=probe)
    finally:
        torch.set_num_threads(before)
    assert probe.calls == 3


def test_other_model_code_is_measured_again(cpu_with, monkeypatch: pytest.MonkeyPatch) -> None:
    # After an upgrade that changes the layers, bf16 may compare differently with fp32.
    cpu_with("AMX-BF16")
    probe = Probe(2.0)
    choose_path("cpu", "auto", model=tiny(), probe=probe)
    choose_path("cpu", "auto", model=tiny(), probe=probe)
    assert probe.calls == 1
    monkeypatch.setattr(compute, "model_code_digest", lambda: "other code")
    choose_path("cpu", "auto", model=tiny(), probe=probe)
    assert probe.calls == 2


def test_another_cpu_of_the_same_name_is_measured_again(
    cpu_with, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A virtual machine's CPU is often just "AMD EPYC", whether it has AVX512 or only AVX2;
    # a machine image (and its cache) can move from one to the other.
    cpu_with("AVX512-BF16")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    probe = Probe(2.0)
    choose_path("cpu", "auto", model=tiny(), probe=probe)
    # (set both ways: on an AVX2-only machine the real value is the second one already)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    choose_path("cpu", "auto", model=tiny(), probe=probe)
    assert probe.calls == 2


def test_a_measurement_kept_by_another_process_meanwhile_is_not_lost(
    cpu_with, tmp_path: Path
) -> None:
    cpu_with("AMX-BF16")

    def probe_beside_another_process(model: torch.nn.Module, device: torch.device) -> float:
        compute.write_cache("compute.json", {"another process's key": 1.5})
        return 2.0

    choose_path("cpu", "auto", model=tiny(), probe=probe_beside_another_process)
    kept = compute.read_cache("compute.json")
    assert kept["another process's key"] == 1.5
    assert sorted(kept.values()) == [1.5, 2.0]


def test_where_the_cache_cannot_be_written_a_process_measures_once(
    cpu_with, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A read-only home (a container, a locked-down server): an app that builds a restorer
    # per request must not pay for the probe every time.
    cpu_with("AMX-BF16")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("ANYRESTORE_CACHE", str(blocker / "anyrestore"))
    probe = Probe(2.0)
    for _ in range(3):
        assert choose_path("cpu", "auto", model=tiny(), probe=probe).precision == "bf16"
    assert probe.calls == 1 and not (blocker / "anyrestore").exists()


def test_an_unreadable_cache_is_measured_again(cpu_with, tmp_path: Path) -> None:
    cpu_with("AMX-BF16")
    (tmp_path / "compute.json").write_text("not json")
    probe = Probe(2.0)
    assert choose_path("cpu", "auto", model=tiny(), probe=probe).precision == "bf16"
    assert probe.calls == 1


def test_explicit_precisions_are_honoured_or_refused(cpu_with) -> None:
    cpu_with("AMX-BF16")
    probe = Probe(0.5)
    assert choose_path("cpu", "bf16", model=tiny(), probe=probe).precision == "bf16"
    assert choose_path("cpu", "fp32", model=tiny(), probe=probe).reason == "requested"
    assert probe.calls == 0
    with pytest.raises(UsageError, match="fp16 is not supported on the CPU"):
        choose_path("cpu", "fp16")
    cpu_with(None)  # bf16 still runs where it is emulated, and the reason says it is slow
    path = choose_path("cpu", "bf16", model=tiny(), probe=probe)
    assert path.precision == "bf16" and "slower than fp32" in path.describe()
    with pytest.raises(UsageError, match="unknown precision"):
        choose_path("cpu", "fp64")


def test_the_real_probe_leaves_the_model_trainable() -> None:
    # The probe runs the model in inference mode; its parameters must stay ordinary tensors.
    model = tiny().train()
    stream = torch.get_rng_state()
    speedup = compute._time_bf16(model, torch.device("cpu"))
    assert speedup > 0 and model.training
    assert torch.equal(torch.get_rng_state(), stream)  # torch.manual_seed(0) still holds after
    model(torch.rand(2, 3, 16, 16)).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


class PointwiseProbe:
    """A stand-in for the 1x1 probe: GEMM time / convolution time, counting its calls."""

    def __init__(self, speedup: float) -> None:
        self.speedup, self.calls = speedup, 0

    def __call__(self) -> float:
        self.calls += 1
        return self.speedup


@pytest.mark.parametrize(("speedup", "kernel"), [(1.4, "conv"), (1.0, "gemm"), (0.7, "gemm")])
def test_fp32_1x1_convolutions_take_the_kernel_measured_faster(cpu_with, speedup, kernel) -> None:
    cpu_with(None)
    probe = PointwiseProbe(speedup)
    for precision in ("auto", "fp32"):
        path = choose_path("cpu", precision, model=tiny(), pointwise_probe=probe)
        assert path.precision == "fp32" and path.pointwise == kernel
        assert path.as_dict()["pointwise"] == kernel
        assert ("1x1 as convolutions" in path.describe()) == (kernel == "conv")
    assert probe.calls == 1  # measured once per CPU, torch and thread count, then cached


def test_the_1x1_kernel_is_measured_again_for_another_thread_count(cpu_with) -> None:
    cpu_with(None)
    probe = PointwiseProbe(1.4)
    before = torch.get_num_threads()
    try:
        choose_path("cpu", "auto", model=tiny(), pointwise_probe=probe)
        torch.set_num_threads(before + 1)
        choose_path("cpu", "auto", model=tiny(), pointwise_probe=probe)
    finally:
        torch.set_num_threads(before)
    assert probe.calls == 2


def test_bf16_and_unmeasured_paths_keep_the_1x1_gemm(cpu_with) -> None:
    cpu_with("AMX-BF16")
    probe = PointwiseProbe(5.0)
    auto = choose_path("cpu", "auto", model=tiny(), probe=Probe(3.0), pointwise_probe=probe)
    assert (auto.precision, auto.pointwise) == ("bf16", "gemm")
    bf16 = choose_path("cpu", "bf16", model=tiny(), pointwise_probe=probe)
    no_model = choose_path("cpu", "fp32", pointwise_probe=probe)
    assert bf16.pointwise == no_model.pointwise == "gemm" and probe.calls == 0


def test_training_measures_its_own_1x1_kernel(cpu_with) -> None:
    cpu_with(None)
    inference, training = PointwiseProbe(1.0), PointwiseProbe(1.3)
    cpu = torch.device("cpu")
    assert choose_path("cpu", "fp32", model=tiny(), pointwise_probe=inference).pointwise == "gemm"
    kernel, why = compute.training_pointwise(cpu, "fp32", probe=training)
    assert (kernel, training.calls, inference.calls) == ("conv", 1, 1) and "1.30x" in why
    assert compute.training_pointwise(cpu, "fp32", probe=training)[0] == "conv"
    assert training.calls == 1  # cached apart from the inference measurement
    assert compute.training_pointwise(cpu, "bf16", probe=training) == ("gemm", "")


def busy_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, others: int) -> None:
    """Make /proc/loadavg say ``others`` threads besides the caller's are runnable."""
    path = tmp_path / "loadavg"
    path.write_text(f"2.00 2.00 2.00 {others + 1}/300 4242\n")
    monkeypatch.setattr(compute, "LOADAVG", path)


def test_a_measurement_taken_beside_other_work_serves_busy_runs_until_a_quiet_one(
    cpu_with, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Another process taking a core skews the ratio: keeping it for good would keep a wrong
    # choice, measuring again at every start of a machine that is never quiet costs seconds.
    cpu_with("AMX-BF16")
    busy_machine(monkeypatch, tmp_path, others=os.cpu_count() or 1)
    probe, pointwise = Probe(3.0), PointwiseProbe(1.4)
    for _ in range(2):  # a batch or a bench builds several models: measured once
        path = choose_path("cpu", "auto", model=tiny(), probe=probe)
        assert path.precision == "bf16"
        assert compute.training_pointwise(torch.device("cpu"), "fp32", probe=pointwise)[0] == "conv"
    assert (probe.calls, pointwise.calls) == (1, 1)
    monkeypatch.setattr(compute, "_measured", {})  # the next run, on a machine still busy
    assert choose_path("cpu", "auto", model=tiny(), probe=Probe(0.5)).precision == "bf16"
    assert compute.training_pointwise(torch.device("cpu"), "fp32", probe=pointwise)[0] == "conv"
    assert (probe.calls, pointwise.calls) == (1, 1)  # the busy measurements served it
    monkeypatch.setattr(compute, "_measured", {})  # the next run, on a quiet machine
    busy_machine(monkeypatch, tmp_path, others=0)
    quiet = Probe(0.5)  # measured again: bf16 no faster here after all
    for _ in range(2):
        assert choose_path("cpu", "auto", model=tiny(), probe=quiet).precision == "fp32"
    assert quiet.calls == 1
    monkeypatch.setattr(compute, "_measured", {})  # and busy again: the quiet value holds
    busy_machine(monkeypatch, tmp_path, others=os.cpu_count() or 1)
    assert choose_path("cpu", "auto", model=tiny(), probe=Probe(3.0)).precision == "fp32"
    assert quiet.calls == 1


def test_threads_on_cores_the_probe_does_not_use_do_not_count(
    cpu_with, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cpu_with(None)
    torch.set_num_threads(1)  # conftest's _one_torch_thread puts the count back
    busy_machine(monkeypatch, tmp_path, others=compute._cores() - 1)
    probe = PointwiseProbe(1.4)
    choose_path("cpu", "fp32", model=tiny(), pointwise_probe=probe)
    # Kept as a quiet measurement: the next run, on a machine with nothing else running,
    # takes it (one kept as busy would be measured again there)
    monkeypatch.setattr(compute, "_measured", {})
    busy_machine(monkeypatch, tmp_path, others=0)
    choose_path("cpu", "fp32", model=tiny(), pointwise_probe=probe)
    assert probe.calls == 1


def test_the_busy_count_is_the_quietest_sample(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # This process's worker threads may still spin in the first sample; another process's
    # work shows in every one.
    samples = iter(["9/300", "3/300", "5/300"])

    class Changing:  # each read sees the next sample
        def read_text(self) -> str:
            return f"1.0 1.0 1.0 {next(samples)} 77"

    monkeypatch.setattr(compute, "LOADAVG", Changing())
    assert compute.others_running(samples=3, interval=0) == 2
    monkeypatch.setattr(compute, "LOADAVG", tmp_path / "missing")
    assert compute.others_running(interval=0) == 0  # no /proc: nothing known, nothing held back


def test_the_real_1x1_probe_measures_both_kernels() -> None:
    assert compute._time_pointwise() > 0
    assert compute._time_pointwise(gradients=True) > 0


def test_threads_follow_the_option_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert set_threads(None) == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "1,1")  # OpenMP's list form: the outer level
        assert set_threads(None) == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert set_threads(None) >= 1
        with pytest.raises(UsageError, match="at least 1"):
            set_threads(0)
        with pytest.raises(UsageError, match="at most 1024"):
            set_threads(2**31)  # refused, not an overflow deep in torch
        monkeypatch.setenv("OMP_NUM_THREADS", str(2**64))
        assert set_threads(None) == compute._cores()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("hip", "major", "native"), [(None, 7, False), (None, 8, True), ("6.2", 7, True)]
)
def test_auto_takes_bf16_only_on_a_gpu_that_computes_it_natively(
    monkeypatch: pytest.MonkeyPatch, hip: str | None, major: int, native: bool
) -> None:
    # torch.cuda.is_bf16_supported() also says yes on a T4 or V100, which emulate bf16.
    class Properties:
        pass

    props = Properties()
    props.major = major  # type: ignore[attr-defined]
    asked = []
    monkeypatch.setattr(torch.version, "hip", hip)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: asked.append(d) or props)
    assert compute.cuda_native_bf16(torch.device("cuda", 1)) is native
    assert asked in ([torch.device("cuda", 1)], [])  # the GPU asked about, not the current one
    monkeypatch.setattr(compute, "resolve_device", lambda name: torch.device("cuda", 1))
    assert choose_path("cuda:1", "auto").precision == ("bf16" if native else "fp16")
    # What is_bf16_supported() answers on every CUDA GPU, emulating or not
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    if not native:  # asked for by name: refused (exit 2), not run emulated
        with pytest.raises(UsageError, match="bf16 is not supported on cuda:1"):
            choose_path("cuda:1", "bf16")


@pytest.mark.parametrize("value", ["", "-1", "one", "²"])
def test_a_local_rank_that_is_no_gpu_index_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    from anyrestore.compute import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", value)
    with pytest.raises(UsageError, match="LOCAL_RANK=.* is not a GPU index"):
        resolve_device("cuda")


def test_an_omp_num_threads_that_is_no_count_takes_every_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(compute, "_cores", lambda: 2)  # conftest puts the thread count back
    for value in ("²", "two", "0", "-3"):  # "²".isdigit() is True; int("²") fails
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert set_threads(None) == 2, value


def test_more_threads_than_cores_are_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(compute, "_cores", lambda: 2)
    try:
        with caplog.at_level("WARNING", logger="anyrestore"):
            assert set_threads(2) == 2
            assert not caplog.records  # one a core is what the default takes
            assert set_threads(64) == 64  # honoured: the user may know better
        assert "64 threads on 2 cores" in caplog.text and "slower" in caplog.text
    finally:
        torch.set_num_threads(before)


def test_freed_feature_maps_are_reused_without_new_page_faults() -> None:
    # Layers allocate and free maps above glibc's own mmap limit (32 MB); the CLI and
    # training make the heap keep them, so the next map of that size costs no page faults.
    # A fresh interpreter, as the CLI is: the setting is process-wide.
    script = """
import ctypes, resource, sys, torch
try:  # transparent huge pages would fault 2 MB at a time whichever way: count 4 kB pages
    ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE
except (AttributeError, OSError):
    pass
from anyrestore.compute import reuse_freed_memory
def faults_to_fill(megabytes):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(megabytes << 18).fill_(1.0)  # float32: 2**18 values per MB
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
pages = (40 << 20) // resource.getpagesize()
faults_to_fill(48)
default = faults_to_fill(40)
if not reuse_freed_memory():
    sys.exit(3)
reuse_freed_memory()  # a second call is harmless
faults_to_fill(48)  # the heap grows once
print(pages, default, faults_to_fill(40))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if done.returncode == 3:
        pytest.skip("the C library is not glibc")
    assert done.returncode == 0, done.stderr
    pages, default, reused = map(int, done.stdout.split())
    assert default > pages / 2  # by default the next map is faulted in page by page again
    assert reused < pages / 10


def test_a_container_s_cpu_quota_caps_the_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docker run --cpus=2 on a 64-core host: 64 threads would wait at every OpenMP barrier
    # while the container is throttled. v2 keeps quota and period in cpu.max, v1 in two files,
    # on the process's own cgroup or one above it.
    import anyrestore.compute as compute

    v2 = tmp_path / "v2"
    (v2 / "app" / "job").mkdir(parents=True)
    (v2 / "app" / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs on the parent
    (v2 / "app" / "job" / "cpu.max").write_text("max 100000\n")
    (tmp_path / "v2.cgroup").write_text("0::/app/job\n")
    assert compute._cpu_quota(v2, tmp_path / "v2.cgroup") == 2
    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct" / "docker" / "x").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "docker" / "x" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu,cpuacct" / "docker" / "x" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "v1.cgroup").write_text("4:memory:/docker/x\n3:cpu,cpuacct:/docker/x\n")
    assert compute._cpu_quota(v1, tmp_path / "v1.cgroup") == 3
    (tmp_path / "none.cgroup").write_text("3:cpu,cpuacct:/\n0::/\n")
    assert compute._cpu_quota(v1, tmp_path / "none.cgroup") is None  # no files: no quota
    monkeypatch.setattr(compute, "_cpu_quota", lambda: 1)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        assert compute._cores() == 1 and set_threads(None) == 1
    finally:
        torch.set_num_threads(before)


def test_auto_passes_over_a_gpu_this_torch_build_has_no_kernels_for(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A GTX 1050 (sm_61) under a wheel built from sm_75 on: torch reports CUDA available and
    # fails at the first kernel ("no kernel image"), an internal error instead of the CPU.
    from anyrestore.compute import resolve_device

    cuda = torch.cuda
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "device_count", lambda: 1)
    monkeypatch.setattr(cuda, "current_device", lambda: 0)
    monkeypatch.setattr(cuda, "get_device_name", lambda *a: "GeForce GTX 1050")
    monkeypatch.setattr(cuda, "get_arch_list", lambda: ["sm_75", "sm_80", "sm_90", "compute_90"])
    monkeypatch.setattr(cuda, "get_device_capability", lambda *a: (6, 1))
    with caplog.at_level("WARNING", logger="anyrestore"):
        assert resolve_device("auto") == torch.device("cpu")
    assert "no kernels for the GPU (GeForce GTX 1050, sm_61" in caplog.text
    with pytest.raises(DeviceError, match="no kernels for the GPU .*use --device cpu"):
        resolve_device("cuda")  # asked for by name: exit 5, not an internal error at a kernel
    from anyrestore.training.setup import pick_device

    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(DeviceError, match="no kernels for the GPU"):
        pick_device("cuda")
    for capability in ((8, 6), (7, 5), (9, 0), (12, 0)):  # same major, or PTX it compiles
        monkeypatch.setattr(cuda, "get_device_capability", lambda *a, c=capability: c)
        assert resolve_device("auto") == torch.device("cuda", 0), capability
    monkeypatch.setattr(cuda, "get_arch_list", lambda: ["gfx90a", "gfx942"])  # ROCm: not judged
    monkeypatch.setattr(cuda, "get_device_capability", lambda *a: (9, 0))
    assert resolve_device("auto") == torch.device("cuda", 0)


def test_auto_precision_on_a_gpu_without_tensor_cores_is_fp32(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # fp16 on a Pascal GPU gains nothing and an overflow costs a whole fp32 pass again.
    import anyrestore.compute as compute

    class Properties:
        major = 6

    monkeypatch.setattr(compute, "cuda_native_bf16", lambda dev: False)
    monkeypatch.setattr(compute, "resolve_device", lambda name: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: Properties())
    assert compute.choose_path("cuda:0", "auto").precision == "fp32"  # Pascal
    Properties.major = 7
    assert compute.choose_path("cuda:0", "auto").precision == "fp16"  # a T4, a V100


def test_bf16_is_measured_against_fp32_with_its_own_faster_1x1_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Where oneDNN's 1x1 convolution makes fp32 faster, bf16 must beat that fp32, not the GEMM
    # one: auto never picks the slower path.
    from anyrestore.models.layers import pointwise

    seen: list[tuple[bool, str]] = []

    class Records(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append((torch.is_autocast_enabled("cpu"), pointwise._kernel.get()))
            return x

    monkeypatch.setattr(compute, "_pointwise_choice", lambda what, measure: ("conv", "a test"))
    assert compute._time_bf16(Records(), torch.device("cpu"), pointwise.pointwise_kernel) > 0
    assert {kernel for bf16, kernel in seen if not bf16} == {"conv"}
    assert any(bf16 for bf16, _ in seen)
