"""autoreg.nn.chunks: a layer's CPU batch chunks in parallel threads give the whole batch's results."""
from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from autoreg.nn.chunks import in_cpu_chunks

from conftest import torch_threads


class Spy(nn.Module):
    """A small layer that records, per call, its thread and that thread's torch thread count."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.calls = []
        self.meet = None  # a threading.Barrier the chunks wait at: only chunks run at once pass it

    def forward(self, x):
        return in_cpu_chunks(self, self.chunk, x, chunk=2)

    def chunk(self, x):
        self.calls.append((threading.get_ident(), torch.get_num_threads(), len(x), torch.is_autocast_enabled("cpu")))
        if self.meet is not None:
            self.meet.wait()
        return torch.tanh(self.linear(x)).cumsum(0)[-1:].expand(len(x), -1) * x[:, :2]  # mixes images


@pytest.fixture
def two_threads():
    with torch_threads(2):
        yield


def reference(spy, x, sizes):
    return torch.cat([spy.chunk(part) for part in x.split(sizes)])


def test_chunks_run_in_two_threads_of_one_torch_thread_each(two_threads):
    torch.manual_seed(0)
    spy, x = Spy(), torch.randn(7, 3)
    # Two chunks must run at the same time to pass the barrier (one thread alone would time out,
    # breaking it); which pool thread takes which chunk is the scheduler's choice.
    spy.meet = threading.Barrier(2, timeout=60)
    out = spy(x)
    spy.meet = None
    assert sorted(n for _, _, n, _ in spy.calls) == [1, 2, 2, 2]  # equal chunks, as many as threads x k
    assert {threads for _, threads, _, _ in spy.calls} == {1}
    assert len({ident for ident, _, _, _ in spy.calls}) == 2 and threading.get_ident() not in {c[0] for c in spy.calls}
    assert torch.get_num_threads() == 2  # the caller's own count is untouched
    assert torch.allclose(out, reference(spy, x, [2, 2, 2, 1]))


def test_threads_share_torchs_thread_count():
    """More torch threads than chunks: each chunk's thread gets its share (no core left idle)."""
    spy = Spy()
    with torch_threads(4):
        spy(torch.randn(4, 3))
    assert [(n, threads) for _, threads, n, _ in spy.calls] == [(2, 2), (2, 2)]


def test_gradients_equal_the_sequential_chunks(two_threads):
    torch.manual_seed(0)
    spy = Spy()
    x = torch.randn(7, 3, requires_grad=True)
    weights = torch.randn(7, 2)
    got = torch.autograd.grad((spy(x) * weights).sum(), [x, *spy.parameters()])
    want = torch.autograd.grad((reference(spy, x, [2, 2, 2, 1]) * weights).sum(), [x, *spy.parameters()])
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-6)
    # parameters only (an input that needs no gradient), and no gradient at all
    x = x.detach()
    (spy(x) * weights).sum().backward()
    assert all(torch.allclose(p.grad, w) for p, w in zip(spy.parameters(), torch.autograd.grad((reference(spy, x, [2, 2, 2, 1]) * weights).sum(), list(spy.parameters()))))
    with torch.no_grad():
        assert torch.allclose(spy(x), reference(spy, x, [2, 2, 2, 1]))


def test_threads_keep_the_callers_autocast(two_threads):
    """bf16 autocast is thread-local: the workers must enter it too, or they compute in fp32."""
    torch.manual_seed(0)
    spy, x = Spy(), torch.randn(6, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = spy(x)
        want = reference(spy, x, [2, 2, 1, 1])
    assert {autocast for _, _, _, autocast in spy.calls} == {True}
    assert torch.equal(out, want) and not torch.allclose(out, reference(spy, x, [2, 2, 1, 1]), atol=1e-4)


def test_threads_keep_the_callers_inference_mode(two_threads):
    """Lightning validates and autoreg samples under torch.inference_mode, also thread-local."""
    spy, x = Spy(), torch.randn(5, 3)
    seen = []
    spy.chunk = lambda part: (seen.append(torch.is_inference_mode_enabled()), part * 2)[1]
    with torch.inference_mode():
        out = spy(x)
    assert seen == [True] * 4 and out.is_inference() and torch.equal(out, x * 2)


def test_a_second_backward_is_refused_in_one_line(two_threads):
    spy = Spy()
    out = spy(torch.randn(5, 3, requires_grad=True)).sum()
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backpropagated once per forward"):
        out.backward()


def test_one_torch_thread_runs_the_chunks_in_the_callers_thread():
    spy, x = Spy(), torch.randn(5, 3)
    with torch_threads(1):
        out = spy(x)
    assert {ident for ident, _, _, _ in spy.calls} == {threading.get_ident()}
    assert torch.allclose(out, reference(spy, x, [2, 2, 1]))


def test_torch_compile_traces_the_chunks_without_threads(two_threads):
    """torch.compile cannot trace the thread pool; compiled, the chunks run one after another."""

    class Chunked(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 2)

        def forward(self, x):
            return in_cpu_chunks(self, lambda part: torch.tanh(self.linear(part)), x, chunk=2)

    torch.manual_seed(0)
    net, x = Chunked(), torch.randn(5, 3)
    want = net(x)
    assert torch.allclose(torch.compile(net, backend="eager", fullgraph=True)(x), want)
