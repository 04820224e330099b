"""One prepared device check: tests, the digits example, the benchmark tables, one folder.

    bash benchmarks/gpu_check.sh --device cuda --out DIR     # on the GPU (DIR: $OUT)
    bash benchmarks/gpu_check.sh --device cpu --quick        # the same, small, on a CPU

Parts, each with its own timeout, each run even when an earlier one failed:

* ``env``: ``nvidia-smi``, Python, torch, CUDA and cuDNN versions, the device.
* ``tests``: ``tests/test_cuda.py`` (``-m cuda`` on CUDA), junit XML in ``tests.xml``.
* ``digits``: ``python -m examples.mfm_digits --device DEVICE --no-missing --no-baselines`` (bf16
  autocast on CUDA), then ``digits_compile``, the same with ``--compile`` (not in
  ``--quick``: compiling 8 models takes minutes on a small CPU); accuracy, epoch time
  and whole-run time from the metrics JSON.
* ``mmd``: ``benchmarks/mmd_table.py speed --device DEVICE``.
* ``step``: ``benchmarks/mfm_step_table.py --device DEVICE --compile``.

DIR receives at most 8 files: ``summary.json``, one ``<part>.log`` per part and
``tests.xml``. The end of stdout is a compact summary (the parts' key lines).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

ENV_SCRIPT = """
import sys, torch
print("python", sys.version.split()[0])
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
      torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
print("cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"{p.total_memory / 2**30:.0f} GiB", f"sm_{p.major}{p.minor}",
          p.multi_processor_count, "SMs")
for name in ("triton", "geomloss", "pykeops"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as error:
        print(name, "not importable:", type(error).__name__, error)
"""


def parts(device: str, quick: bool, work: Path, out: Path) -> list[tuple[str, int, list[str]]]:
    """(name, timeout in seconds, command) of every part, in order; the timeouts of a
    full run add up to 8 minutes. An empty command is a part skipped in this mode."""
    cuda = device != "cpu"
    tests = [PY, "-m", "pytest", "tests/test_cuda.py", "-q", "-p", "no:cacheprovider", "-rfE"]
    tests += ["-m", "cuda" if cuda else "not cuda", f"--junitxml={out / 'tests.xml'}"]
    if quick:
        tests += ["-k", "float32 and (head or dense or digits)"]
    digits = [PY, "-m", "examples.mfm_digits", "--device", device, "--no-plots", "--no-progress"]
    digits += ["--no-missing", "--no-baselines"]
    digits += ["--subset", "300", "--epochs", "2"] if quick else []
    mmd = [PY, "-m", "benchmarks.mmd_table", "speed", "--device", device]
    mmd += ["--n", "1024", "4096", "16384", "65536", "--d", "64"] if cuda else ["--n", "256"]
    mmd += ["--reps", "2" if quick else "5"] + ([] if cuda else ["--d", "16"])
    step = [PY, "benchmarks/mfm_step_table.py", "--device", device]
    step += ["--rounds", "5"] if quick else ["--rounds", "100", "--compile"]
    env_cmd = ["bash", "-c", f"nvidia-smi || true; {PY} - <<'EOF'\n{ENV_SCRIPT}\nEOF"]
    # torch.compile of the 8 digits models takes minutes on a small CPU: not in --quick.
    compiled = [] if quick else [
        *digits, "--compile", "--metrics-out", str(work / "digits_compile.json"),
        "--out", str(work / "digits_compile"),
    ]  # fmt: skip
    return [
        ("env", 20, env_cmd),
        ("tests", 150 if quick else 90, tests),
        ("digits", 60 if quick else 90, [*digits, "--metrics-out", str(work / "digits.json"),
                                         "--out", str(work / "digits")]),
        ("digits_compile", 130, compiled),
        ("mmd", 60 if quick else 70, mmd),
        ("step", 60 if quick else 80, step),
    ]  # fmt: skip


def run_part(name: str, timeout: int, cmd: list[str], out: Path) -> dict[str, Any]:
    """Run one part with its output in ``out/<name>.log``; never raises.

    On timeout the part first gets SIGINT (pytest then still writes its summary and the
    junit XML), and is killed 15 s later.
    """
    log = out / f"{name}.log"
    start = time.perf_counter()
    rc: int | None = None
    timed_out = False
    with log.open("w") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        try:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        except OSError as error:
            f.write(f"\n[gpu_check] {name}: could not start: {error}\n")
        else:
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                f.flush()
                f.write(f"\n[gpu_check] {name}: timed out after {timeout} s\n")
    seconds = time.perf_counter() - start
    return {"rc": rc, "ok": rc == 0, "timed_out": timed_out, "seconds": round(seconds, 1),
            "timeout": timeout, "log": log.name}  # fmt: skip


def digits_summary(path: Path) -> dict[str, Any] | None:
    """Accuracy, epoch time and whole-run time of one digits run."""
    if not path.exists():
        return None
    whole = json.loads(path.read_text())
    metrics = whole["runs"][str(whole["seeds"][0])]  # the first (here the only) seed
    keep = ("test_accuracy", "validation_accuracy", "best_epoch", "epochs", "epoch_seconds")
    out: dict[str, Any] = {"device": whole.get("device"), "seconds": whole.get("seconds")}
    for model in ("mfm", "discriminative"):
        out[model] = {k: metrics[model][k] for k in keep if k in metrics.get(model, {})}
    mfm, disc = out["mfm"].get("epoch_seconds"), out["discriminative"].get("epoch_seconds")
    if mfm and disc:
        out["mfm_over_discriminative_epoch"] = mfm / disc
    if "missing" in metrics:
        rows = metrics["missing"].values()
        out["missing_mean_surrogate_accuracy"] = sum(r["surrogate_accuracy"] for r in rows) / len(
            metrics["missing"]
        )
    return out


def junit_summary(path: Path) -> dict[str, Any] | None:
    """Counts and the failed test ids of the junit XML."""
    if not path.exists():
        return None
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return None
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [
        f"{case.get('classname', '')}::{case.get('name', '')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return {**counts, "failed": failed}


def tail(path: Path, lines: int) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "runs/gpu_check"))
    p.add_argument("--quick", action="store_true", help="small sizes (CI on a CPU)")
    p.add_argument("--only", nargs="+", default=None, help="run only these parts")
    a = p.parse_args(argv)
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary: dict[str, Any] = {"device": a.device, "quick": a.quick, "parts": {}}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        for name, timeout, cmd in parts(a.device, a.quick, work, out):
            if a.only and name not in a.only:
                continue
            if not cmd:
                summary["parts"][name] = {"skipped": "not in --quick"}
                continue
            print(f"[gpu_check] {name} (timeout {timeout} s) ...", flush=True)
            result = run_part(name, timeout, cmd, out)
            summary["parts"][name] = result
            print(f"[gpu_check] {name}: {'ok' if result['ok'] else 'FAILED'} "
                  f"in {result['seconds']} s", flush=True)  # fmt: skip
        summary["tests"] = junit_summary(out / "tests.xml")
        summary["digits"] = digits_summary(work / "digits.json")
        summary["digits_compile"] = digits_summary(work / "digits_compile.json")
    summary["failed"] = [n for n, r in summary["parts"].items() if r.get("ok") is False]
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    report(summary, out)
    return 1 if summary["failed"] else 0


def report(summary: dict[str, Any], out: Path) -> None:
    """The compact human summary, at the end of stdout."""
    print("\n" + "=" * 30 + " gpu_check summary " + "=" * 30)
    for line in tail(out / "env.log", 40):
        if re.match(
            r"(python|torch|device|cuda available|triton|geomloss|pykeops|\| NVIDIA|\|.*MiB)", line
        ):
            print(line)
    tests = summary.get("tests")
    if tests:
        print(f"\ntests: {tests['tests']} run, {tests['failures']} failed, "
              f"{tests['errors']} errors, {tests['skipped']} skipped")  # fmt: skip
        for test_id in tests["failed"][:25]:
            print(f"  FAILED {test_id}")
    for line in [ln for ln in tail(out / "tests.log", 400) if ln.startswith("E   ")][:20]:
        print("  " + line[:200])
    for key in ("digits", "digits_compile"):
        run = summary.get(key)
        if not run:
            continue
        mfm, disc = run["mfm"], run["discriminative"]
        print(f"\n{key}: whole run {run['seconds']:.1f} s on {run['device']}; MFM test "
              f"{100 * mfm.get('test_accuracy', float('nan')):.2f} % "
              f"({mfm.get('epoch_seconds', float('nan')):.3f} s/epoch, {mfm.get('epochs')} "
              f"epochs), discriminative {100 * disc.get('test_accuracy', float('nan')):.2f} % "
              f"({disc.get('epoch_seconds', float('nan')):.3f} s/epoch); MFM / disc epoch "
              f"{run.get('mfm_over_discriminative_epoch', float('nan')):.2f}x")  # fmt: skip
    print()
    for line in tail(out / "mmd.log", 30):
        if line.startswith(("|", "NVIDIA", "torch")) or "GEMM" in line or "Error" in line:
            print(line)
    print()
    for line in tail(out / "step.log", 12):
        print(line)
    print("\nparts:")
    for name, r in summary["parts"].items():
        if "skipped" in r:
            print(f"  {name:<15} skipped ({r['skipped']})")
            continue
        state = "ok" if r["ok"] else ("TIMEOUT" if r["timed_out"] else f"FAILED rc={r['rc']}")
        print(f"  {name:<15} {state:<12} {r['seconds']:7.1f} s  (log: {r['log']})")
        if not r["ok"]:
            for line in tail(out / r["log"], 6):
                print(f"      {line[:200]}")
    print(f"failed: {summary['failed'] or 'none'}; total {summary['seconds']} s; files in {out}")


if __name__ == "__main__":
    sys.exit(main())
