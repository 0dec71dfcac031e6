"""Batch chunks of a layer run in parallel CPU threads, which share torch's threads.

A PixelRNN recurrence is thousands of small kernels per batch (one step per row or diagonal).
Torch runs each kernel on all its threads, which then spend much of the step waiting for one
another; threads that each take a share of the batch do not (experiments/benchmarks/model_speed.py
measures the effect).

Autograd: every chunk records its own graph in its thread, and the backward pass runs the chunks'
backward passes in the threads as well (torch runs a CPU backward on the thread that asks for it).
"""
from __future__ import annotations

import functools
import math
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn


def in_cpu_chunks(layer: nn.Module, forward, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """`forward(x)` for `layer`, on a CPU batch larger than `chunk` images: in equal chunks of at
    most `chunk`, run by up to torch's thread count of threads, which share those torch threads
    (2 cores, 2 chunks: two threads of one torch thread; 16 threads, 2 chunks: two of 8)."""
    if x.device.type != "cpu" or x.shape[0] <= chunk:
        return forward(x)
    chunks = math.ceil(x.shape[0] / chunk)
    # torch.compile cannot trace threads: compiled, the chunks run one after another
    workers = 1 if torch.compiler.is_compiling() else min(torch.get_num_threads(), chunks)
    parts = math.ceil(chunks / workers) * workers  # equal chunks, every thread busy
    base, extra = divmod(x.shape[0], parts)
    sizes = [base + 1] * extra + [base] * (parts - extra)
    if workers < 2:
        return torch.cat([forward(part) for part in x.split(sizes)])
    params = [p for p in layer.parameters() if p.requires_grad]
    if torch.is_grad_enabled() and (x.requires_grad or params):
        return _ChunksInThreads.apply(forward, sizes, workers, x, *params)
    return torch.cat(_map(forward, x.split(sizes), workers))


def _map(function, items, workers: int) -> list:
    """function(item) for each item in a pool of `workers` threads, which share the caller's torch
    threads and take its grad mode, inference mode and CPU autocast (all thread-local in torch)."""
    threads = max(1, torch.get_num_threads() // workers)
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
    autocast = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")

    def run(item):
        torch.set_num_threads(threads)  # per thread (OpenMP and MKL settings are thread-local)
        with (
            torch.inference_mode(inference),
            torch.set_grad_enabled(grad),
            torch.autocast("cpu", dtype=autocast[1], enabled=autocast[0]),
        ):
            return function(item)

    return list(_pool(workers).map(run, items))


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="autoreg-chunks")


class _ChunksInThreads(torch.autograd.Function):
    """`in_cpu_chunks` under autograd (see the module doc). One backward pass per forward: it
    frees the chunks' graphs."""

    @staticmethod
    def forward(ctx, forward, sizes, workers, x, *params):
        inputs = [part.detach().requires_grad_(x.requires_grad) for part in x.split(sizes)]
        with torch.enable_grad():
            ctx.outputs = _map(forward, inputs, workers)
        ctx.inputs, ctx.params, ctx.sizes, ctx.workers = inputs, params, sizes, workers
        return torch.cat([out.detach() for out in ctx.outputs])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        if ctx.outputs is None:
            raise RuntimeError("a recurrent layer run in parallel CPU chunks can be backpropagated once per forward")
        wants_x = ctx.needs_input_grad[3]
        grad_chunks = grad.split(ctx.sizes)

        def chunk_backward(i):
            wrt = ([ctx.inputs[i]] if wants_x else []) + list(ctx.params)
            return torch.autograd.grad(ctx.outputs[i], wrt, grad_chunks[i], allow_unused=True)

        results = _map(chunk_backward, range(len(ctx.sizes)), ctx.workers)
        ctx.outputs = ctx.inputs = None
        grad_x = torch.cat([r[0] for r in results]) if wants_x else None
        grad_params = [
            None if all(r[j] is None for r in results) else sum(r[j] for r in results if r[j] is not None)
            for j in range(wants_x, wants_x + len(ctx.params))
        ]
        return None, None, None, grad_x, *grad_params
