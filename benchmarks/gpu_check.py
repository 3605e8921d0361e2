#!/usr/bin/env python3
"""One self-contained GPU check of gnnsparse's CUDA and Triton kernels: build, correctness, speed.

Run from the repository root on a machine with an NVIDIA GPU (no project packages need to be
installed; torch, and triton for the Triton backend, must be):

    python3 benchmarks/gpu_check.py --out gpu_check.json

It
1. builds the extension in place (``setup.py build_ext --inplace`` with ``GNNSPARSE_CUDA=1`` and
   ``TORCH_CUDA_ARCH_LIST`` set to the GPU's architecture; ``--skip-build`` to reuse a build);
2. checks every CUDA and Triton op (``csr_linear``, ``csr_linear_backward_input``, ``csr_sddmm``,
   ``bsr_linear``, ``bsr_linear_backward_input``, ``bsr_sddmm``) against the float64 reference on
   randomized shapes (empty rows, 0 nnz, full density, odd sizes) in float32, float64, float16,
   bfloat16 (and TF32 for the BSR tensor-core path), in a child process (Triton with one autotune
   config, ``GNNSPARSE_TRITON_CONFIGS=one``; a kernel fault cannot stop the timings);
3. times forward and forward+backward (median of CUDA-event timings, milliseconds) of dense
   ``F.linear`` (cuBLAS), ``torch.sparse`` CSR/BSR (cuSPARSE / torch's kernels), and gnnsparse's CSR
   and BSR16 on the ``cuda`` and ``triton`` backends, at sparsity 50/90/95/99 % for
   (a) X 65536x256, W 256x256 and (b) 4096x4096x4096, in float32 with TF32 off and on, and bfloat16;
4. writes one JSON file (rewritten atomically after every case, so a timeout keeps what was done)
   with the environment, the build log tail, every check, every timing, speedups against dense
   (same dtype setting, same run) and the issue's targets with their verdicts.

Needs: torch (a CUDA build), nvcc and a C++ compiler (the build), triton for the Triton backend.

Exit status: 0 when every correctness check passed, 3 when some failed, 2 without a GPU (nothing is
written then) or with bad arguments, 1 when the build failed or gnnsparse did not load (the build
log is in the JSON).

``--budget`` (seconds, default 450) bounds the whole run including the build: the timing grid
stops when it is used up and says so in the JSON. ``--dry-run`` runs the same code on CPU with
tiny shapes (the ``cpu`` backend stands in for ``cuda``; Triton under ``TRITON_INTERPRET=1``): it
checks the script itself, not a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = time.perf_counter()


def elapsed() -> float:
    return time.perf_counter() - T0


# ---------------------------------------------------------------------------------------------
# Output
class Report:
    def __init__(self, path: str):
        self.path = path
        self.data: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "checks": [], "timings": [],
                           "targets": [], "notes": []}

    def save(self) -> None:
        self.data["elapsed_s"] = round(elapsed(), 1)
        d = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".gpu_check.", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.data, f, indent=1, default=str)
            os.chmod(tmp, 0o644)  # mkstemp creates 0600
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


# ---------------------------------------------------------------------------------------------
# 1. Build
def build(report: Report, device_arch: str | None) -> None:
    env = dict(os.environ, GNNSPARSE_CUDA="1", MAX_JOBS=str(os.cpu_count() or 4))
    if device_arch:
        env.setdefault("TORCH_CUDA_ARCH_LIST", device_arch)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    report.data["build"] = {"seconds": round(time.perf_counter() - t, 1), "returncode": proc.returncode,
                            "arch_list": env.get("TORCH_CUDA_ARCH_LIST"), "log_tail": proc.stdout[-6000:]}
    report.save()


# ---------------------------------------------------------------------------------------------
# 2. Correctness
def random_csr(torch, out_f, in_f, density, seed, device, empty_rows=()):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(out_f, in_f, generator=g) < density
    if density >= 1.0:
        mask[:] = True
    for r in empty_rows:
        if r < out_f:
            mask[r] = False
    crow = torch.zeros(out_f + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(mask.sum(1), 0)
    col = mask.nonzero()[:, 1].contiguous()
    values = torch.randn(col.numel(), generator=g, dtype=torch.float64)
    return crow.to(device), col.to(device), values.to(device)


def random_bsr(torch, out_f, in_f, b, density, seed, device):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(out_f // b, in_f // b, generator=g) < density
    if density >= 1.0:
        mask[:] = True
    crow = torch.zeros(out_f // b + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(mask.sum(1), 0)
    col = mask.nonzero()[:, 1].contiguous()
    values = torch.randn(col.numel(), b, b, generator=g, dtype=torch.float64)
    return crow.to(device), col.to(device), values.to(device)


TOL = {"float64": 1e-9, "float32": 1e-4, "tf32": 5e-3, "float16": 1e-2, "bfloat16": 4e-2}


def compare(torch, got, want) -> tuple[float, float]:
    """(max abs error, max abs error / max(1, max |want|))."""
    if want.numel() == 0:
        return 0.0, 0.0
    err = (got.double() - want.double()).abs().max().item()
    return err, err / max(1.0, want.double().abs().max().item())


def run_checks(report: Report, torch, ops, reference, device, backends, dtypes, small=False) -> None:
    csr_cases = [(1, 1, 1, 1.0, ()), (7, 13, 5, 0.4, (1, 3)), (70, 130, 200, 0.1, (0,)), (257, 64, 300, 0.0, ()),
                 (129, 300, 129, 1.0, ()), (1000, 96, 1000, 0.05, (5, 6, 7))]
    bsr_cases = [(1, 16, 16, 16, 1.0), (37, 64, 48, 16, 0.5), (130, 96, 64, 32, 0.3), (9, 24, 12, 4, 0.6),
                 (5, 16, 32, 8, 0.0), (513, 256, 128, 16, 0.2)]
    if small:  # --dry-run on CPU: Triton's interpreter is slow
        csr_cases = csr_cases[:2] + [(33, 40, 20, 0.3, (2,))]
        bsr_cases = [bsr_cases[0], bsr_cases[3], bsr_cases[4]]
    for backend in backends:
        ns = ops.op_namespace(backend)
        for dname in dtypes:
            for tf32 in ([False, True] if dname == "float32" and device == "cuda" else [False]):
                dt = getattr(torch, dname)
                if device == "cuda":
                    torch.backends.cuda.matmul.allow_tf32 = tf32
                tol = TOL["tf32" if tf32 else dname]
                lo = lambda t: t.to(dt)  # noqa: E731
                hi = lambda t: t.to(dt).double()  # noqa: E731
                jobs = []
                for i, (N, in_f, out_f, dens, empty) in enumerate(csr_cases if not tf32 else []):
                    crow, col, v = random_csr(torch, out_f, in_f, dens, i, device, empty)
                    data = (crow, col, v) + _inputs(torch, N, in_f, out_f, device)
                    jobs += _csr_jobs(ns, reference, lo, hi, data, in_f, out_f,
                                      f"csr N={N} W={out_f}x{in_f} density={dens}")
                for i, (N, in_f, out_f, b, dens) in enumerate(bsr_cases):
                    crow, col, v = random_bsr(torch, out_f, in_f, b, dens, 100 + i, device)
                    data = (crow, col, v) + _inputs(torch, N, in_f, out_f, device)
                    jobs += _bsr_jobs(ns, reference, lo, hi, data, in_f, out_f, b,
                                      f"bsr b={b} N={N} W={out_f}x{in_f} block density={dens}")
                for op, shape, run, ref in jobs:
                    rec = {"backend": backend, "op": op, "case": shape, "dtype": dname + ("+tf32" if tf32 else ""),
                           "tolerance": tol}
                    try:
                        got = run()
                        want = ref()
                        rec["max_abs_err"], rec["max_rel_err"] = compare(torch, got, want)
                        rec["shape_ok"] = tuple(got.shape) == tuple(want.shape) and got.dtype == dt
                        rec["pass"] = bool(rec["shape_ok"] and rec["max_rel_err"] <= tol)
                    except Exception as e:  # recorded, the run goes on
                        rec["pass"] = False
                        rec["error"] = f"{type(e).__name__}: {e}"[:500]
                    report.data["checks"].append(rec)
                report.save()
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False


def _inputs(torch, N, in_f, out_f, device):
    """x [N, in], dY [N, out], bias [out], float64."""
    return (torch.randn(N, in_f, device=device, dtype=torch.float64),
            torch.randn(N, out_f, device=device, dtype=torch.float64),
            torch.randn(out_f, device=device, dtype=torch.float64))


def _csr_jobs(ns, reference, lo, hi, data, in_f, out_f, shape):
    """(op, case, run, reference) for the three CSR ops on one structure and input."""
    crow, col, v, x, gy, bias = data
    return [
        ("csr_linear", shape, lambda: ns.csr_linear(lo(x), crow, col, lo(v), lo(bias), out_f),
         lambda: reference.csr_linear(hi(x), crow, col, hi(v), hi(bias), out_f)),
        ("csr_linear_backward_input", shape, lambda: ns.csr_linear_backward_input(lo(gy), crow, col, lo(v), in_f),
         lambda: reference.csr_linear_backward_input(hi(gy), crow, col, hi(v), in_f)),
        ("csr_sddmm", shape, lambda: ns.csr_sddmm(lo(gy), lo(x), crow, col),
         lambda: reference.csr_sddmm(hi(gy), hi(x), crow, col)),
    ]


def _bsr_jobs(ns, reference, lo, hi, data, in_f, out_f, b, shape):
    """(op, case, run, reference) for the three BSR ops on one structure and input."""
    crow, col, v, x, gy, bias = data
    return [
        ("bsr_linear", shape, lambda: ns.bsr_linear(lo(x), crow, col, lo(v), lo(bias), out_f),
         lambda: reference.bsr_linear(hi(x), crow, col, hi(v), hi(bias), out_f)),
        ("bsr_linear_backward_input", shape, lambda: ns.bsr_linear_backward_input(lo(gy), crow, col, lo(v), in_f),
         lambda: reference.bsr_linear_backward_input(hi(gy), crow, col, hi(v), in_f)),
        ("bsr_sddmm", shape, lambda: ns.bsr_sddmm(lo(gy), lo(x), crow, col, b),
         lambda: reference.bsr_sddmm(hi(gy), hi(x), crow, col, b)),
    ]


# ---------------------------------------------------------------------------------------------
# 3. Timing
def timer(torch, device):
    def measure(fn, min_time=0.15, max_reps=25):
        fn()  # warm-up (also Triton autotuning / compilation)
        fn()
        times = []
        total = 0.0
        while len(times) < 3 or (total < min_time and len(times) < max_reps):
            if device == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                ms = a.elapsed_time(b)
            else:
                t = time.perf_counter()
                fn()
                ms = (time.perf_counter() - t) * 1e3
            times.append(ms)
            total += ms / 1e3
        return statistics.median(times)

    return measure


def run_timings(report: Report, torch, ops, device, shapes, sparsities, settings, budget, gpu_backends) -> None:
    from gnnsparse import reference

    F = torch.nn.functional
    measure = timer(torch, device)
    b = 16
    # the first shape at the first sparsity in every setting (the targets' cases) first, then the rest
    cases = [(shape, setting, sp) for shape in shapes for sp in sparsities for setting in settings]
    cases.sort(key=lambda c: (c[0] != shapes[0] or c[2] != sparsities[0], shapes.index(c[0])))
    inputs = {}
    for (N, in_f, out_f), setting, sp in cases:
        dname = "bfloat16" if setting == "bf16" else "float32"
        dt = getattr(torch, dname)
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = setting == "fp32_tf32"
        if (N, in_f, out_f, dname) not in inputs:
            inputs.clear()  # one shape and dtype on the GPU at a time
            inputs[(N, in_f, out_f, dname)] = (torch.randn(N, in_f, device=device, dtype=dt),
                                               torch.randn(N, out_f, device=device, dtype=dt))
        x0, gy = inputs[(N, in_f, out_f, dname)]
        if elapsed() > budget:
            report.data["notes"].append(f"timing stopped at {elapsed():.0f} s (budget {budget} s) before "
                                        f"N={N} W={out_f}x{in_f} {setting} sparsity {sp}")
            report.save()
            return
        case = {"N": N, "in": in_f, "out": out_f, "setting": setting, "sparsity": sp}
        crow, col, v64 = random_csr(torch, out_f, in_f, 1 - sp, 7, device)
        bcrow, bcol, bv64 = random_bsr(torch, out_f, in_f, b, 1 - sp, 8, device)
        v = v64.to(dt)
        bv = bv64.to(dt)
        bias = torch.randn(out_f, device=device, dtype=dt)
        w = reference.dense_weight(crow, col, v, out_f, in_f)
        methods = {}

        def fb(fwd, params):
            def run():
                for p in params:
                    p.grad = None
                fwd().backward(gy)
            return run

        # dense (cuBLAS on GPU)
        xg = x0.clone().requires_grad_(True)
        wg = w.clone().requires_grad_(True)
        bg = bias.clone().requires_grad_(True)
        methods["dense"] = (lambda: F.linear(x0, w, bias), fb(lambda: F.linear(xg, wg, bg), (xg, wg, bg)))
        # torch.sparse CSR and BSR
        w_csr = torch.sparse_csr_tensor(crow, col, v, (out_f, in_f))
        methods["torch_sparse_csr"] = (lambda: (w_csr @ x0.t()).t() + bias, None)
        try:
            w_bsr = torch.sparse_bsr_tensor(bcrow, bcol, bv, (out_f, in_f))
            methods["torch_sparse_bsr16"] = (lambda: (w_bsr @ x0.t()).t() + bias, None)
        except Exception as e:
            case_err = f"{type(e).__name__}: {e}"[:300]
            report.data["timings"].append(dict(case, method="torch_sparse_bsr16", error=case_err))
        # gnnsparse, each backend, CSR and BSR16
        for be in gpu_backends:
            tr = ops.csr_transpose(crow, col, in_f)
            vg = v.clone().requires_grad_(True)
            methods[f"{be}_csr"] = (
                lambda be=be: ops.csr_linear(x0, crow, col, v, bias, out_f, backend=be),
                fb(lambda be=be, vg=vg, tr=tr: ops.csr_linear(xg, crow, col, vg, bg, out_f, backend=be,
                                                             transpose=tr), (xg, vg, bg)))
            bvg = bv.clone().requires_grad_(True)
            methods[f"{be}_bsr16"] = (
                lambda be=be: ops.bsr_linear(x0, bcrow, bcol, bv, bias, out_f, backend=be),
                fb(lambda be=be, bvg=bvg: ops.bsr_linear(xg, bcrow, bcol, bvg, bg, out_f, backend=be),
                   (xg, bvg, bg)))
        for name, (fwd, fwdbwd) in methods.items():
            rec = dict(case, method=name)
            for phase, fn in (("forward_ms", fwd), ("forward_backward_ms", fwdbwd)):
                if fn is None:
                    continue
                try:
                    rec[phase] = round(measure(fn), 4)
                except Exception as e:
                    rec[phase + "_error"] = f"{type(e).__name__}: {e}"[:300]
                if device == "cuda":
                    torch.cuda.synchronize()
            report.data["timings"].append(rec)
        dense = next(r for r in report.data["timings"] if r.get("method") == "dense"
                     and all(r[k] == case[k] for k in case))
        for r in report.data["timings"]:
            if all(r.get(k) == case[k] for k in case) and r is not dense:
                for phase in ("forward_ms", "forward_backward_ms"):
                    if phase in r and phase in dense:
                        r[phase.replace("_ms", "_speedup_vs_dense")] = float(f"{dense[phase] / r[phase]:.4g}")
        report.save()
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False


# ---------------------------------------------------------------------------------------------
# 4. Targets (issue 5), evaluated on what was measured
def evaluate_targets(report: Report, big) -> None:
    T = report.data["timings"]

    def get(method, setting, sp, phase="forward_ms", shape=big):
        for r in T:
            if (r.get("method") == method and r.get("setting") == setting and r.get("sparsity") == sp
                    and (r["N"], r["in"], r["out"]) == shape and phase in r):
                return r[phase]
        return None

    def target(name, num, den, goal):
        ratio = None if (num is None or den is None) else round(num / den, 3)
        verdict = "not measured" if ratio is None else ("met" if ratio >= goal else "missed")
        report.data["targets"].append({"target": name, "ratio": ratio, "goal": goal, "verdict": verdict})

    target("CUDA CSR forward vs cuBLAS, 90%, float32 (TF32 off), 4096^3: >= 2x faster",
           get("dense", "fp32", 0.9), get("cuda_csr", "fp32", 0.9), 2.0)
    target("CUDA CSR forward vs cuBLAS, 90%, float32 with TF32 on, 4096^3 (informative)",
           get("dense", "fp32_tf32", 0.9), get("cuda_csr", "fp32_tf32", 0.9), 2.0)
    target("CUDA CSR forward vs torch.sparse CSR (cuSPARSE), 90%, float32, 4096^3: >= 3x faster",
           get("torch_sparse_csr", "fp32", 0.9), get("cuda_csr", "fp32", 0.9), 3.0)
    target("CUDA BSR16 bf16 forward vs cuBLAS bf16, 90%, 4096^3: >= 2x faster",
           get("dense", "bf16", 0.9), get("cuda_bsr16", "bf16", 0.9), 2.0)
    tb, cb = get("triton_bsr16", "bf16", 0.9), get("cuda_bsr16", "bf16", 0.9)
    target("Triton BSR16 bf16 forward within 1.3x of CUDA BSR16 (ratio = CUDA time / Triton time >= 1/1.3)",
           cb, tb, round(1 / 1.3, 4))
    checks = report.data["checks"]
    bad = [c for c in checks if not c.get("pass")]
    label = " (dry run: the cpu backend and Triton's interpreter, not CUDA)" if report.data.get("dry_run") else ""
    report.data["targets"].append({"target": "all ops vs reference within tolerance, every case" + label,
                                   "checked": len(checks), "failed": len(bad),
                                   "verdict": "met" if checks and not bad else ("missed" if bad else "not measured")})
    report.save()


# ---------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "gpu_check.json"), help="JSON file to write")
    p.add_argument("--skip-build", action="store_true", help="use the extension already built in place")
    p.add_argument("--budget", type=float, default=450.0, help="seconds for the whole run (timing stops after)")
    p.add_argument("--quick", action="store_true", help="timing: 90%% sparsity and the 4096^3 shape only")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: checks this script, not a GPU")
    p.add_argument("--phase", choices=("all", "checks"), default="all", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not (0 < args.budget < float("inf")):
        p.error(f"--budget must be a finite number of seconds > 0, got {args.budget}")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not args.out or os.path.isdir(args.out):
        p.error(f"--out must name a JSON file, got {args.out!r}")
    if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK):
        p.error(f"--out {args.out!r}: the folder {out_dir!r} does not exist or is not writable")
    report = Report(args.out)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: kernels run on CPU tensors
    import torch

    device = "cuda" if (torch.cuda.is_available() and not args.dry_run) else "cpu"
    if device == "cpu" and not args.dry_run:  # nothing written: an earlier GPU result stays
        print("no CUDA GPU visible (torch.cuda.is_available() is False); use --dry-run on CPU", file=sys.stderr)
        return 2
    report.data["dry_run"] = bool(args.dry_run)
    env = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "device": device, "cpu_count": os.cpu_count()}
    arch = None
    if device == "cuda":
        prop = torch.cuda.get_device_properties(0)
        arch = f"{prop.major}.{prop.minor}"
        env.update(gpu=prop.name, capability=arch, sms=prop.multi_processor_count,
                   memory_gib=round(prop.total_memory / 2**30, 1))
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    report.data["environment"] = env
    report.save()
    try:
        env["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                       timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["commit"] = None
    if not args.skip_build and not args.dry_run:
        build(report, arch)
        if report.data["build"]["returncode"] != 0:  # never test an older build by mistake
            report.data["error"] = "the build failed (see build.log_tail); nothing was checked"
            report.save()
            print(report.data["error"], file=sys.stderr)
            return 1
    sys.path.insert(0, ROOT)
    try:
        from gnnsparse import _ext, ops, reference

        _ext.load()
    except Exception as e:
        report.data["error"] = f"gnnsparse did not load: {type(e).__name__}: {e}"
        report.save()
        print(report.data["error"], file=sys.stderr)
        return 1
    env["cuda_kernels"] = _ext.cuda_built()
    env["cuda_kernels_error"] = _ext.cuda_error()
    env["libraries"] = _ext.library_paths()
    backends = []
    if device == "cuda":
        backends = (["cuda"] if _ext.cuda_built() else []) + (["triton"] if env["triton"] else [])
        dtypes = ["float32", "float64", "float16", "bfloat16"]
    else:
        backends = ["cpu"] + (["triton"] if env["triton"] else [])
        dtypes = ["float32"]
    report.data["backends"] = backends
    report.save()
    print(f"[{elapsed():.0f}s] environment: {env}")
    if device == "cuda" and args.phase == "all":
        # Correctness in a child process: Triton with one autotune config (compile time), and a
        # kernel fault that kills the CUDA context cannot take the timings down with it.
        checks_out = args.out + ".checks.json"
        env_child = dict(os.environ, GNNSPARSE_TRITON_CONFIGS="one")
        try:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--phase", "checks", "--skip-build",
                                   "--out", checks_out, "--budget", str(args.budget)], cwd=ROOT, env=env_child,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=max(60.0, args.budget - elapsed()))
            report.data["checks_process"] = {"returncode": proc.returncode, "output_tail": proc.stdout[-3000:]}
        except subprocess.TimeoutExpired as e:
            report.data["checks_process"] = {"returncode": None, "timeout": True,
                                             "output_tail": (e.stdout or "")[-3000:] if isinstance(e.stdout, str)
                                             else ""}
        if os.path.exists(checks_out):
            with open(checks_out) as f:
                report.data["checks"] = json.load(f).get("checks", [])
            os.unlink(checks_out)
        report.save()
    else:
        try:
            run_checks(report, torch, ops, reference, device, backends, dtypes, small=args.dry_run)
        except Exception:
            report.data["notes"].append("checks crashed: " + traceback.format_exc()[-2000:])
            report.save()
        if args.phase == "checks":
            return 0
    n_bad = sum(not c.get("pass") for c in report.data["checks"])
    print(f"[{elapsed():.0f}s] checks: {len(report.data['checks'])}, failed: {n_bad}")
    if device == "cuda":
        big = (4096, 4096, 4096)
        shapes = [big] if args.quick else [big, (65536, 256, 256)]
        sparsities = [0.9] if args.quick else [0.9, 0.5, 0.95, 0.99]
        settings = ["fp32", "bf16", "fp32_tf32"]
    else:
        big = (64, 32, 32)
        shapes, sparsities, settings = [big], [0.9], ["fp32"]
    try:
        run_timings(report, torch, ops, device, shapes, sparsities, settings, args.budget, backends)
    except Exception:
        report.data["notes"].append("timings crashed: " + traceback.format_exc()[-2000:])
        report.save()
    evaluate_targets(report, big)
    print(f"[{elapsed():.0f}s] wrote {args.out}")
    for t in report.data["targets"]:
        print(f"  {t['verdict']:>12}  {t.get('ratio', '')}  {t['target']}")
    failed = sum(not c.get("pass") for c in report.data["checks"])
    if failed:
        print(f"{failed} correctness checks failed (see 'checks' in the JSON)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
