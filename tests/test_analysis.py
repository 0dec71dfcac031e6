"""Receptive fields measured by autograd against the theory (PixelCNN's blind spot, the Diagonal
BiLSTM's full context), the receptive-field CLI and callback, and the sweep report's tables."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from autoreg.analysis.receptive_field import context_counts, gradient_map, main, pixelcnn_reach
from autoreg.analysis.report import write_report
from autoreg.cli import train
from autoreg.distributions import distribution_for
from autoreg.models import build_model

from conftest import read_events

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


def test_cli_writes_the_heatmap_and_prints_the_theory(tmp_path, capsys):
    out = tmp_path / "rf.png"
    main(["model=pixelcnn", "model.depth=3", "model.kernel=5", f"out={out}"])
    printed = capsys.readouterr().out
    reached, blind = pixelcnn_reach(7, 5, 3)
    assert f"reached {reached} of 406 earlier pixels" in printed  # 28 x 28, centre (14, 14)
    assert f"theory: blind spot {blind}, reached {reached} (measured {reached})" in printed
    assert out.stat().st_size > 5000


def test_cli_rejects_a_bad_value_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["model.kernel=4"])
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip() == "error: model.kernel=4 is invalid: it must be an odd integer >= 1 (e.g. 3, 5, 7)"


def test_training_logs_the_field_and_the_cli_draws_a_checkpoint(tiny_cfg, tmp_path, capsys):
    train(tiny_cfg())  # the default callbacks include ReceptiveFieldImage
    images = read_events(tmp_path)["images"]
    assert [step for step, _ in images["receptive_field"]] == [4]
    ckpt = next((tmp_path / "checkpoints").glob("last*.ckpt"))
    main([f"ckpt={ckpt}"])
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
