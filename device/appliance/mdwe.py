"""Would `MemoryDenyWriteExecute=yes` break the model on this board? Try it and see.

systemd implements the setting with a seccomp filter that makes these calls fail (EPERM):
``mmap`` with both PROT_WRITE and PROT_EXEC, ``mprotect``/``pkey_mprotect`` adding
PROT_EXEC, and ``shmat`` with SHM_EXEC. A JIT needs exactly those (XNNPACK can generate
kernels at run time on ARM when built with its JIT; libffi needs W+X pages for ctypes
callbacks where it has no static trampolines), so whether the setting is safe depends on
the TFLite wheel and the CPU. This module installs the same filter on itself, checks that
it is effective, then loads the model and runs it (and a ctypes callback).

    python3 -m lensbox.device.appliance.mdwe      exit 0: safe; 1: breaks; 2: cannot tell

``systemd/install.sh --mdwe=auto`` adds the setting (as a drop-in) only on exit 0.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import mmap
import platform
import sys

PROT_WRITE, PROT_EXEC = 0x2, 0x4
SHM_EXEC = 0o100000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2

# machine -> (AUDIT_ARCH, mmap, mprotect, pkey_mprotect, shmat) syscall numbers.
ARCHES = {
    "x86_64": (0xC000003E, 9, 10, 329, 30),
    "aarch64": (0xC00000B7, 222, 226, 288, 196),
    "armv7l": (0x40000028, 192, 125, 394, 305),  # mmap2 on 32-bit ARM (EABI)
    "armv6l": (0x40000028, 192, 125, 394, 305),
}

# Classic BPF opcodes.
LD_W_ABS, JEQ_K, JSET_K, RET_K = 0x20, 0x15, 0x45, 0x06
ARG2 = 16 + 2 * 8  # offsetof(struct seccomp_data, args[2]) (low 32 bits, little-endian)


class SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def install_filter(machine: str | None = None) -> None:
    machine = machine or platform.machine()
    if machine not in ARCHES:
        raise OSError(errno.ENOSYS, f"no syscall table for {machine}")
    prog = _assemble(machine)
    arr = (SockFilter * len(prog))(*[SockFilter(*ins) for ins in prog])
    fprog = SockFprog(len(prog), arr)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


def _assemble(machine: str) -> list[tuple[int, int, int, int]]:
    """Label-based assembly of the filter (jump offsets computed, not hand-counted)."""
    arch, nr_mmap, nr_mprotect, nr_pkey, nr_shmat = ARCHES[machine]
    deny = SECCOMP_RET_ERRNO | errno.EPERM
    code: list = [
        ("ld", 4),
        ("jeq", arch, None, "allow"),
        ("ld", 0),
        ("jeq", nr_mmap, "mmap", None),
        ("jeq", nr_mprotect, "exec", None),
        ("jeq", nr_pkey, "exec", None),
        ("jeq", nr_shmat, "shm", "allow"),
        ("label", "mmap"),
        ("ld", ARG2),
        ("and", PROT_WRITE | PROT_EXEC),
        ("jeq", PROT_WRITE | PROT_EXEC, "deny", "allow"),
        ("label", "exec"),
        ("ld", ARG2),
        ("jset", PROT_EXEC, "deny", "allow"),
        ("label", "shm"),
        ("ld", ARG2),
        ("jset", SHM_EXEC, "deny", "allow"),
        ("label", "deny"),
        ("ret", deny),
        ("label", "allow"),
        ("ret", SECCOMP_RET_ALLOW),
    ]
    labels, pc = {}, 0
    for ins in code:
        if ins[0] == "label":
            labels[ins[1]] = pc
        else:
            pc += 1
    out, pc = [], 0
    for ins in code:
        op = ins[0]
        if op == "label":
            continue
        if op == "ld":
            out.append((LD_W_ABS, 0, 0, ins[1]))
        elif op == "and":
            out.append((0x54, 0, 0, ins[1]))
        elif op == "ret":
            out.append((RET_K, 0, 0, ins[1]))
        else:
            opcode = JEQ_K if op == "jeq" else JSET_K
            jt = labels[ins[2]] - pc - 1 if ins[2] else 0
            jf = labels[ins[3]] - pc - 1 if ins[3] else 0
            out.append((opcode, jt, jf, ins[1]))
        pc += 1
    return out


def wx_mmap_denied() -> bool:
    """True if an anonymous write+exec mapping is refused (the filter is in force)."""
    try:
        m = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | PROT_EXEC)
    except PermissionError:
        return True
    except OSError as exc:
        return exc.errno == errno.EPERM
    m.close()
    return False


def exercise_model(model_path: str | None, runtime: str) -> str:
    import numpy as np

    from lensbox.device.embedding.model import TFLiteModel

    if model_path is None:
        from lensbox.models import MODEL_PATH

        model_path = str(MODEL_PATH)
    model = TFLiteModel(model_path, 2, runtime)
    batch = np.random.default_rng(0).random((2, model.input_size, model.input_size, 3))
    out = model.run(batch.astype(np.float32))
    if not np.all(np.isfinite(out.features)):
        raise RuntimeError("model output is not finite")
    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
    if callback(41) != 42:
        raise RuntimeError("ctypes callback returned a wrong value")
    return f"{model.runtime}: model and ctypes callback ran under the filter"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python3 -m lensbox.device.appliance.mdwe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default=None, help="model file (default: the shipped one)")
    p.add_argument(
        "--runtime", default="auto", choices=("auto", "ai-edge-litert", "tflite-runtime")
    )
    p.add_argument(
        "--filter-only",
        action="store_true",
        help="only check that the filter blocks W+X memory (no model)",
    )
    args = p.parse_args(argv)
    try:
        install_filter()
    except OSError as exc:
        print(f"cannot tell: {exc}")
        return 2
    if not wx_mmap_denied():
        print("cannot tell: the filter did not block a write+exec mapping")
        return 2
    print("filter active: write+exec mmap refused with EPERM")
    if args.filter_only:
        return 0
    try:
        print(exercise_model(args.model, args.runtime))
    except Exception as exc:
        print(f"breaks: {type(exc).__name__}: {exc}")
        return 1
    print("MemoryDenyWriteExecute=yes is safe here")
    return 0


if __name__ == "__main__":
    sys.exit(main())
