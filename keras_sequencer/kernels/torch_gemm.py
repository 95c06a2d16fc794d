"""The dense fp32 GEMMs of the torch fused path, by the CPU library that runs them fastest.

``torch.addmm`` runs MKL in torch's x86 wheels. On AMD CPUs MKL runs Sequencer2D's
GEMM shapes below oneDNN's linear, the library torch also ships (behind
``torch.nn.LSTM`` and inductor's frozen linears): ``benchmarks/gemm_libraries.py``
times both on this machine. Without autograd, on CPU, in float32, the fused path
calls oneDNN there; with autograd it keeps ``addmm`` (oneDNN's linear has no
derivative in torch).

``KERAS_SEQUENCER_TORCH_GEMM`` chooses: ``auto`` (the default: oneDNN on AMD CPUs,
MKL elsewhere), ``mkl`` or ``onednn``. Both compute the same product; the results
differ in the last bits, as two BLAS libraries do.
"""

import functools
import os

import torch

CHOICES = ("auto", "mkl", "onednn")
ENVIRONMENT = "KERAS_SEQUENCER_TORCH_GEMM"


def cpu_vendor():
    """The CPU's ``vendor_id`` (``GenuineIntel``, ``AuthenticAMD``) from
    ``/proc/cpuinfo``; ``""`` where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


@functools.cache
def library():
    """``"mkl"`` or ``"onednn"``: what :func:`linear` and :func:`residual_linear`
    call without autograd (read once from :data:`ENVIRONMENT`).

    Raises:
        ValueError: the variable names no choice, or asks for oneDNN where this
            torch build has none (one line naming the variable).
    """
    choice = os.environ.get(ENVIRONMENT, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"{ENVIRONMENT}={choice!r} is not one of {', '.join(CHOICES)}; unset it or pick one.")
    available = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    if choice == "onednn" and not available:
        raise ValueError(f"{ENVIRONMENT}=onednn, but this torch build has no oneDNN linear; unset it or use mkl.")
    if choice == "auto":
        return "onednn" if available and cpu_vendor() == "AuthenticAMD" else "mkl"
    return choice


def _on_onednn(x, kernel, bias):
    return (
        library() == "onednn"
        and not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == kernel.dtype == bias.dtype == torch.float32
    )


def linear(x, kernel, bias):
    """``x @ kernel + bias``: ``(M, C) @ (C, K) + (K,)``, the bias added inside
    the GEMM (``addmm``, or oneDNN's linear, see :func:`library`)."""
    if _on_onednn(x, kernel, bias):
        return torch.ops.mkldnn._linear_pointwise(x, kernel.t(), bias, "none", [], "")
    return torch.addmm(bias, x, kernel)


def residual_linear(residual, x, kernel, bias):
    """``residual + x @ kernel + bias`` ``(M, K)`` by oneDNN's linear with the
    add fused into it, or ``None`` where :func:`library` leaves this product to
    ``addmm`` (the caller accumulates into the residual itself)."""
    if not _on_onednn(x, kernel, bias) or residual.dtype != torch.float32:
        return None
    return torch.ops.mkldnn._linear_pointwise.binary(x, residual, kernel.t().contiguous(), bias, "add")
