"""Receptive fields measured by autograd against the theory (PixelCNN's blind spot, the Diagonal
BiLSTM's full context), the receptive-field CLI and callback, and the sweep report's tables."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from autoreg.analysis.receptive_field import context_counts, gradient_map
from autoreg.families.pixelcnn import pixelcnn_reach
from autoreg.apps import receptive_field
from autoreg.analysis.report import write_report
from autoreg.cli import train
from autoreg.families import build_model
from autoreg.likelihoods import distribution_for

from conftest import read_events, run_command

RANDOM_IMAGES = torch.randint(0, 2, (8, 1, 20, 20), generator=torch.Generator().manual_seed(0)).float()


def field(name: str, pixel: tuple[int, int], images: torch.Tensor = RANDOM_IMAGES, **model) -> torch.Tensor:
    torch.manual_seed(0)
    net = build_model({"name": name, **model}, tuple(images.shape[1:]), distribution_for(1))
    return gradient_map(net, images, pixel)


@pytest.mark.parametrize(
    "first_kernel, kernel, depth, blind",
    [
        (5, 3, 3, 6),  # h1 >= h - 1: blind spot h L (L + 1) / 2 = 1 * 3 * 4 / 2
        (7, 5, 2, 6),  # 2 * 2 * 3 / 2
        (3, 5, 2, 6),  # h1 = h - 1: the same 2 * 2 * 3 / 2
        (3, 7, 2, 7),  # h1 < h - 1: rows 1, 2 above miss R - e(t) = 7 - 2, 7 - 5
    ],
)
def test_pixelcnn_blind_spot_matches_theory(first_kernel, kernel, depth, blind):
    reached, theory_blind = pixelcnn_reach(first_kernel, kernel, depth)
    assert theory_blind == blind
    f = field("pixelcnn", (10, 10), channels=8, depth=depth, kernel=kernel, first_kernel=first_kernel)
    counts = context_counts(f, (10, 10))
    assert counts.reached == reached and counts.later == 0
    # the missed pixels within the field's radius are exactly the triangle right of the centre column
    radius = first_kernel // 2 + depth * (kernel // 2)
    window = f[10 - radius : 10, 10 - radius : 10 + radius + 1] == 0
    assert int(window.sum()) == blind and not window[:, : radius + 1].any()


def test_dilation_grows_the_pixelcnn_field():
    plain = context_counts(field("pixelcnn", (10, 10), channels=8, depth=2, kernel=3, first_kernel=3), (10, 10))
    dilated = context_counts(field("pixelcnn", (10, 10), channels=8, depth=2, kernel=3, first_kernel=3, dilation=3), (10, 10))
    assert dilated.reached > plain.reached and dilated.later == 0


def test_diagonal_bilstm_sees_all_context_but_the_last_pixel_of_the_row_above():
    """Every earlier pixel is reached, except (r-1, W-1) from columns j < W-4: only first-layer
    (7x7 mask-A) outputs in row r see it, and the recurrence reads row r only left of j (the
    NOTE in autoreg.models.pixelrnn)."""
    images = RANDOM_IMAGES[:, :, :12, :12]
    model = dict(arch="diagonal_bilstm", cell="lstm", depth=2, channels=8)
    centre = field("pixelrnn", (6, 6), images, **model)
    missed = [divmod(q, 12) for q in torch.nonzero(centre.flatten()[: 6 * 12 + 6] == 0).flatten().tolist()]
    assert missed == [(5, 11)] and context_counts(centre, (6, 6)).later == 0
    right = context_counts(field("pixelrnn", (6, 8), images, **model), (6, 8))
    assert right.reached == right.ideal and right.later == 0


def test_row_lstm_field_is_a_triangle():
    """One Row LSTM layer (k = 3) on the 7x7 mask-A layer: its state at (i, j) reads the first
    layer's outputs in row i at [j-1, j] and, through the states above, in row i-t at
    [j-t-1, j+t]; the 7x7 window adds 3 columns each side from the rows below (not the centre
    in its own row), so row t >= 1 above the pixel is reached at [j-t-4, j+t+2], clipped to the
    image, and the current row at [j-4, j-1]."""
    f = field("pixelrnn", (10, 10), arch="row_lstm", cell="gru", depth=1, channels=8, kernel=3)
    for row in range(11):
        t = 10 - row
        lo, hi = (6, 9) if t == 0 else (max(0, 10 - t - 4), min(19, 10 + t + 2))
        assert torch.nonzero(f[row]).flatten().tolist() == list(range(lo, hi + 1)), row
    assert context_counts(f, (10, 10)).later == 0


def test_cli_writes_the_heatmap_and_prints_the_theory(tmp_path, capsys, monkeypatch):
    out = tmp_path / "rf.png"
    run_command(receptive_field, ["model=pixelcnn", "model.depth=3", "model.kernel=5", f"out={out}"], monkeypatch)
    printed = capsys.readouterr().out
    reached, blind = pixelcnn_reach(7, 5, 3)
    assert f"reached {reached} of 406 earlier pixels" in printed  # 28 x 28, centre (14, 14)
    assert f"theory: blind spot {blind}, reached {reached} (measured {reached})" in printed
    assert out.stat().st_size > 5000


def test_cli_rejects_a_bad_value_in_one_line(capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_:
        run_command(receptive_field, ["model.kernel=4"], monkeypatch)
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip() == "error: model.kernel=4 is invalid: it must be an odd integer >= 1 (e.g. 3, 5, 7)"


def test_training_logs_the_field_and_the_cli_draws_a_checkpoint(tiny_cfg, tmp_path, capsys, monkeypatch):
    train(tiny_cfg())  # the default callbacks include ReceptiveFieldImage
    images = read_events(tmp_path)["images"]
    assert [step for step, _ in images["train/receptive_field"]] == [4]
    ckpt = next((tmp_path / "checkpoints").glob("last*.ckpt"))
    run_command(receptive_field, [f"ckpt={ckpt}"], monkeypatch)
    printed = capsys.readouterr().out
    assert "untrained: reached" in printed and "trained: reached" in printed
    assert ckpt.with_name(f"{ckpt.stem}_receptive_field.png").is_file()


def write_job(sweep, num: int, overrides: list[str], metrics: dict | None) -> None:
    job = sweep / f"{num}_{','.join(overrides)}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))


def test_report_sorts_by_the_swept_keys_and_averages_over_seeds(tmp_path):
    sweep = tmp_path / "sweep"
    nll = {("12", "0"): 90.0, ("12", "1"): 92.0, ("2", "0"): 100.0, ("2", "1"): 104.0}
    for num, ((depth, seed), value) in enumerate(nll.items()):
        metrics = {"val/nll": value + 1, "val/bpd": (value + 1) / (784 * 0.6931471805599453), "best/val/nll": value,
                   "params": 1000, "global_step": 50, "train_seconds": 60.0}
        write_job(sweep, num, ["+experiment=depth_sweep_quick", f"model.depth={depth}", f"seed={seed}"], metrics)
    write_job(sweep, 4, ["+experiment=depth_sweep_quick", "model.depth=4", "seed=0"], None)
    report = write_report(sweep).read_text()
    assert "5 jobs, 1 failed. Swept: model.depth, seed." in report
    jobs, means = report.split("## Mean over seeds")
    rows = [line.split(" | ")[:4] for line in jobs.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert rows == [["| 2", "0", "101.00", "100.00"], ["| 2", "1", "105.00", "104.00"], ["| 4", "0", "FAILED", ""],
                    ["| 12", "0", "91.00", "90.00"], ["| 12", "1", "93.00", "92.00"]]
    assert "| 2 | 2 | 102.00 | 2.83 | 100.00 | 104.00 |" in means and "| 12 | 2 | 91.00 | 1.41 |" in means
    assert "50 optimizer steps per job; 4.0 min of training (wall clock) in all (4 jobs)" in report
    assert (sweep / "val_nll.png").is_file() and not (sweep / "curves.png").exists()  # no event files here


def test_report_of_a_sweep_dir_whose_jobs_have_different_override_keys(tmp_path):
    """A job added to a sweep dir later, with an extra override (here the sampler of its quality
    callback): the key counts as swept, the other jobs have its default ('')."""
    sweep = tmp_path / "sweep"
    for num, (cell, extra, value) in enumerate([("lstm", ["callbacks.sample_quality.method=naive"], 92.3), ("gru", [], 93.0)]):
        metrics = {"val/nll": value, "val/bpd": 0.17, "best/val/nll": value, "params": 1000, "global_step": 50, "train_seconds": 60.0}
        write_job(sweep, num, ["+experiment=rnn_cell_sweep_quick", *extra, f"model.cell={cell}"], metrics)
    report = write_report(sweep).read_text()
    assert "Swept: callbacks.sample_quality.method, model.cell." in report
    assert (sweep / "val_nll.png").is_file()


# The learning-curves figure (curves.png) of a short sweep: 15 training points and 2 val points,
# the NLLs of two real 150-step jobs (model.kernel=3,5) logged every 10 steps.
SHORT_TRAIN = {
    "3": [512.0, 409.8, 273.3, 191.1, 177.2, 146.4, 123.8, 114.0, 111.2, 106.5, 107.1, 106.7, 103.1, 102.7, 102.1],
    "5": [522.0, 406.3, 301.0, 222.1, 195.8, 156.6, 133.3, 121.4, 115.5, 108.0, 107.4, 107.9, 104.3, 103.0, 102.6],
}
SHORT_VAL = {"3": [132.5, 103.8], "5": [140.9, 104.5]}


def write_curves_job(sweep, num: int, overrides: list[str], train: list[float], val: list[float], every: int = 10) -> None:
    """A finished job whose event files hold `train` (steps every-1, 2 every-1, ...) and `val`
    (evenly spread up to the last training step) as `train/nll` and `val/nll`."""
    from torch.utils.tensorboard import SummaryWriter

    write_job(sweep, num, overrides, {"val/nll": val[-1], "val/bpd": 0.2, "best/val/nll": min(val), "global_step": every * len(train)})
    writer = SummaryWriter(next(sweep.glob(f"{num}_*")))
    for i, value in enumerate(train):
        writer.add_scalar("train/nll", value, (i + 1) * every - 1)
    for i, value in enumerate(val):
        writer.add_scalar("val/nll", value, (i + 1) * every * len(train) // len(val) - 1)
    writer.close()


@pytest.fixture
def saved_figures(monkeypatch):
    """The matplotlib Figures the report saves, by file name (saved as usual)."""
    from matplotlib.figure import Figure

    figures, savefig = {}, Figure.savefig

    def record(self, fname, *args, **kwargs):
        figures[Path(fname).name] = self
        return savefig(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return figures


def job_lines(ax):
    """(x, y) of the lines that stand for a job (labelled), not the faint logged points behind."""
    return [(list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines() if not line.get_label().startswith("_")]


def inside(ax, x: list[float], y: list[float]) -> bool:
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    return all(x0 <= a <= x1 for a in x) and all(y0 <= b <= y1 for b in y)


def test_curves_of_a_short_sweep_show_every_job_and_every_val_point(tmp_path, saved_figures):
    sweep = tmp_path / "sweep"
    for num, kernel in enumerate(SHORT_TRAIN):
        write_curves_job(sweep, num, [f"model.kernel={kernel}"], SHORT_TRAIN[kernel], SHORT_VAL[kernel])
    write_report(sweep)
    train_ax, val_ax = saved_figures["curves.png"].get_axes()

    val = job_lines(val_ax)
    assert sorted(y for _, ys in val for y in ys) == pytest.approx(sorted(v for vs in SHORT_VAL.values() for v in vs))
    assert all(inside(val_ax, x, y) for x, y in val)  # no val point cut off

    train = job_lines(train_ax)
    assert len(train) == 2
    for (x, y), logged in zip(train, SHORT_TRAIN.values()):
        assert abs(y[-1] - logged[-1]) < 0.5  # 15 points: no EMA lagging behind the data
        assert inside(train_ax, x, y[len(y) // 3 :])  # all but the first steps' hundreds of nats
        assert train_ax.get_ylim()[1] < 200  # ... which would squash the last 100 steps (102-134 nats)
    assert inside(train_ax, [9, 149], []) and train_ax.get_xlim() == val_ax.get_xlim()  # both panels: every step
    assert any("first steps above the axis (up to 522)" in t.get_text() for t in train_ax.texts)


def test_curves_of_a_long_run_smooth_without_lag_over_the_logged_points(tmp_path, saved_figures):
    """300 noisy points: a TensorBoard-like EMA (0.9), debiased (its first point is the first
    logged value), drawn over the faint logged points, and ending near the noise-free curve."""
    rng = torch.Generator().manual_seed(0)
    trend = [95 + 400 * math.exp(-i / 20) for i in range(300)]
    noise = torch.randn(300, generator=rng).mul(3).tolist()
    train = [t + n for t, n in zip(trend, noise)]
    sweep = tmp_path / "sweep"
    write_curves_job(sweep, 0, ["seed=0"], train, [140.0, 100.0, 97.0, 96.0, 95.5])
    write_curves_job(sweep, 1, ["seed=1"], [v + 1 for v in train], [141.0, 101.0, 98.0, 97.0, 96.5])
    write_report(sweep)
    train_ax, val_ax = saved_figures["curves.png"].get_axes()
    assert "EMA 0.9" in train_ax.get_ylabel()
    faint = [line for line in train_ax.get_lines() if line.get_label().startswith("_")]
    assert len(faint) == 2 and all(line.get_alpha() < 0.5 for line in faint)
    assert list(faint[0].get_ydata()) == pytest.approx(train, abs=1e-4)
    for (x, y), offset in zip(job_lines(train_ax), (0, 1)):
        assert y[0] == pytest.approx(train[0] + offset, abs=1e-3)  # debiased: not dragged toward 0
        assert abs(y[-1] - trend[-1] - offset) < 3  # the noise (sd 3) averaged, the trend followed
        assert inside(train_ax, x, y[len(y) // 4 :])
    assert all(inside(val_ax, x, y) for x, y in job_lines(val_ax))


def test_smoothing_weight_ema_and_limits_follow_the_data():
    from autoreg.analysis.report import _ema, smoothing_weight, y_limits

    assert [smoothing_weight(n) for n in (3, 15, 29, 100, 250, 5000)] == [0, 0, 0, 0.75, 0.9, 0.9]
    assert 0.6 <= smoothing_weight(64) < 0.75
    assert _ema([5.0, 4.0, 3.0], 0.0) == [5.0, 4.0, 3.0]
    assert _ema([7.0] * 50, 0.9) == pytest.approx([7.0] * 50)  # debiased: a constant stays put
    assert _ema([2.0, math.nan, 2.0], 0.5)[2] == pytest.approx(2.0)
    # a gentle curve keeps every point; a first step 20x the tail's range is cut and reported
    low, high, clipped = y_limits([[130.0, 120.0, 112.0, 106.0, 103.0, 101.0, 100.0]], clip_head=True)
    assert low < 100 and high > 130 and clipped is None
    low, high, clipped = y_limits([[500.0, 150.0, 110.0, 105.0, 102.0, 101.0, 100.0]], clip_head=True)
    assert low < 100 and 105 < high < 150 and clipped == 500
    low, high, clipped = y_limits([[500.0, 150.0, 110.0, 105.0]], clip_head=False)
    assert low < 105 and high > 500 and clipped is None
