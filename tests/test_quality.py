"""Sample-quality metrics (autoreg.analysis.quality) and their feature classifier
(autoreg.analysis.classifier): what the metrics separate, reproducibility, the one-line errors,
and the callback's numbers in metrics.json, TensorBoard and the HParams metrics."""
from __future__ import annotations

import json

import pytest
import torch

from autoreg.analysis.classifier import classifier_for, data_key, load_classifier, save_classifier, train_classifier
from autoreg.analysis.quality import QualityReference, frechet_distance
from autoreg.build import build_datamodule
from autoreg.cli import train
from autoreg.errors import ConfigError, UserError
from conftest import compose_train, read_events

pytestmark = pytest.mark.usefixtures("one_thread")
NUM = 200  # samples / test images per score: enough for a stable 64-d Fréchet distance, fast on a CPU
DATA = {"name": "mnist", "dataset": "mnist", "bits": 1, "binarize": "static", "source": "bundled"}


@pytest.fixture(scope="module")
def datamodule():
    dm = build_datamodule(compose_train(["data.source=bundled"]).data)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def classifier_file(datamodule, tmp_path_factory):
    """A one-epoch classifier (about 90% test accuracy on the bundled digits), saved as the CLI saves it."""
    torch.manual_seed(0)
    classifier, record = train_classifier(datamodule, epochs=1)
    path = tmp_path_factory.mktemp("classifiers") / "mnist.pt"
    save_classifier(path, classifier, data_key(DATA, datamodule.source_used), datamodule.image_shape, record)
    assert record["test_accuracy"] > 0.8, record
    return path


@pytest.fixture(scope="module")
def reference(datamodule, classifier_file):
    classifier, _ = load_classifier(classifier_file, data_key(DATA, datamodule.source_used), DATA)
    return QualityReference(classifier, datamodule, NUM)


def test_metrics_separate_real_digits_from_noise_and_black_images(reference):
    real = reference.real
    itself = reference.score(real, reference.labels)
    heldout = reference.reference  # validation digits scored as samples
    noise = reference.score(torch.bernoulli(torch.full_like(real, 0.5), generator=torch.Generator().manual_seed(0)))
    black = reference.score(torch.zeros_like(real))

    assert itself["fid"] < 1e-3 and itself["memorisation"] == pytest.approx(1.0)
    assert itself["label_accuracy"] > 0.7  # the one-epoch classifier on these 200 digits
    assert 0 < heldout["fid"] < 20 and 0.8 < heldout["memorisation"] < 1.25
    for bad in (noise, black):
        assert bad["fid"] > 10 * heldout["fid"], (bad, heldout)
        assert bad["classifier_score"] < heldout["classifier_score"] / 2
    assert noise["memorisation"] > 2  # noise is far from every training digit
    assert heldout["classifier_score"] > 3  # real digits: confident and spread over the classes (10 at most)


def test_a_trained_models_samples_score_between_real_digits_and_noise(reference, tmp_path):
    cfg = compose_train(["data.source=bundled", "model.channels=16", "model.depth=2", "data.batch_size=32",
                         "trainer.max_epochs=-1", "trainer.max_steps=150", "trainer.limit_val_batches=1",
                         "trainer.val_check_interval=150", "trainer.check_val_every_n_epoch=null", "trainer.num_sanity_val_steps=0", "trainer.enable_model_summary=false",
                         "callbacks.samples.num=0", "callbacks.progress_bar.refresh_rate=0", "callbacks.sample_quality.num=0",
                         "~logger", "~callbacks.receptive_field"], tmp_path)
    _, objects = train(cfg)
    net = objects["module"].net
    scores, samples = reference.score_model(net, "fast", seed=3)
    again, samples_again = reference.score_model(net, "fast", seed=3)
    assert scores == again and torch.equal(samples, samples_again)  # same seed, same value

    noise = reference.score(torch.bernoulli(torch.full_like(reference.real, 0.5), generator=torch.Generator().manual_seed(0)))
    black = reference.score(torch.zeros_like(reference.real))
    assert reference.reference["fid"] < scores["fid"] < min(noise["fid"], black["fid"]), (scores, noise, black)


def test_missing_classifier_is_one_line_naming_the_command(datamodule, tmp_path):
    with pytest.raises(UserError) as err:
        classifier_for(datamodule, DATA, path=tmp_path / "absent.pt")
    assert "\n" not in str(err.value) and "python -m autoreg.analysis.classifier data=mnist data.source=bundled" in str(err.value)
    with pytest.raises(UserError) as err:
        classifier_for(datamodule, DATA, directory=tmp_path, train_missing=False)
    assert "\n" not in str(err.value) and "python -m autoreg.analysis.classifier" in str(err.value)


def test_classifier_of_another_dataset_is_one_line(datamodule, classifier_file):
    cifar = {"name": "cifar10", "dataset": "cifar10", "bits": 8, "source": "bundled"}
    with pytest.raises(ConfigError) as err:
        load_classifier(classifier_file, data_key(cifar, "bundled"), cifar)
    message = str(err.value)
    assert "\n" not in message and "mnist_1bit_static_bundled" in message and "cifar10_8bit_bundled" in message


def test_more_samples_than_test_images_is_one_line(datamodule, classifier_file):
    classifier, _ = load_classifier(classifier_file, data_key(DATA, datamodule.source_used), DATA)
    with pytest.raises(ConfigError) as err:
        QualityReference(classifier, datamodule, len(datamodule.splits["test"]) + 1)
    assert "\n" not in str(err.value) and "callbacks.sample_quality.num=501" in str(err.value) and "test set (500 images" in str(err.value)


def test_frechet_distance_grows_with_a_shift_in_feature_space(reference):
    """Half the test digits replaced by black images: further than the digits, nearer than all black."""
    real = reference.real
    half = real.clone()
    half[: len(real) // 2] = 0
    fid_half = frechet_distance(reference.classifier, real, half)
    assert reference.reference["fid"] < fid_half < frechet_distance(reference.classifier, real, torch.zeros_like(real))


def test_callback_writes_scores_to_metrics_tensorboard_and_hparams(tiny_cfg, classifier_file, tmp_path):
    cfg = tiny_cfg(f"callbacks.sample_quality.num={NUM}", f"callbacks.sample_quality.classifier={classifier_file}",
                   "callbacks.sample_quality.every_validation=true", "trainer.max_epochs=2")
    metrics, _ = train(cfg)
    written = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("val/fid", "val/classifier_score", "val/memorisation", "reference/fid", "reference/classifier_test_accuracy",
                "quality_seconds"):
        assert key in written and written[key] == pytest.approx(metrics[key]), key
    assert written["reference/fid"] < written["val/fid"]
    events = read_events(tmp_path)
    assert {"val/fid", "val/classifier_score", "val/memorisation"} <= set(events["scalars"])
    # every_validation: after each epoch's validation; the end of training (the second one's step) is not scored twice
    assert len(events["steps"]["val/fid"]) == 2 and events["steps"]["val/fid"] == events["steps"]["val/nll"]
    assert events["scalars"]["val/fid"][-1] == pytest.approx(written["val/fid"], rel=1e-5)
    assert {"val/fid", "val/classifier_score", "val/memorisation"} <= set(events["metrics"])  # the HParams tab's metrics


def test_callback_without_classifier_and_training_off_fails_with_the_command(tiny_cfg, tmp_path):
    cfg = tiny_cfg(f"callbacks.sample_quality.num={NUM}", f"callbacks.sample_quality.classifier_dir={tmp_path / 'none'}",
                   "callbacks.sample_quality.train_classifier=false")
    with pytest.raises(UserError, match="python -m autoreg.analysis.classifier"):
        train(cfg)


def test_sweep_report_gets_quality_columns_references_and_rank_correlation(tmp_path):
    from autoreg.analysis.report import spearman, write_report
    from test_analysis import write_job

    sweep = tmp_path / "sweep"
    # depth 2 / 4 / 8: NLL falls with depth; FID falls too except at depth 8; job 3 scored by the CLI afterwards
    rows = [("2", 100.0, 40.0, 3.0), ("4", 98.0, 30.0, 4.0), ("8", 96.0, 35.0, 5.0)]
    for num, (depth, nll, fid, score) in enumerate(rows):
        metrics = {"val/nll": nll, "val/bpd": nll / 543.4, "best/val/nll": nll, "params": 1000, "global_step": 50,
                   "train_seconds": 60.0, "val/fid": fid, "val/classifier_score": score, "val/memorisation": 1.2,
                   "reference/fid": 9.5, "reference/classifier_score": 8.4, "reference/classifier_test_accuracy": 0.96,
                   "quality_seconds": 12.0}
        write_job(sweep, num, ["+experiment=depth_sweep_quick", f"model.depth={depth}"], metrics)
    write_job(sweep, 3, ["+experiment=depth_sweep_quick", "model.depth=12"],
              {"val/nll": 95.0, "val/bpd": 95 / 543.4, "best/val/nll": 95.0, "global_step": 50})
    (sweep / "3_+experiment=depth_sweep_quick,model.depth=12" / "checkpoints").mkdir()
    (sweep / "3_+experiment=depth_sweep_quick,model.depth=12" / "checkpoints" / "best_quality.json").write_text(
        json.dumps({"val/fid": 20.0, "val/classifier_score": 6.0, "val/memorisation": 1.1, "num": 400, "classifier": "x.pt"}))

    report = write_report(sweep).read_text()
    assert "FID (classifier) | classifier score | memorisation" in report and "label accuracy" not in report
    assert "| 12 | 95.00 | 95.00 | 0.1748 | 20.00 | 6.00 | 1.100 |" in report
    assert "FID (classifier) 9.50, classifier score 8.40" in report and "test accuracy 0.9600" in report
    nll, fid, score = [100, 98, 96, 95], [40, 30, 35, 20], [3, 4, 5, 6]
    assert f"| FID (classifier) | {spearman(nll, fid):+.2f} |" in report and spearman(nll, fid) == pytest.approx(0.8)
    assert f"| classifier score | {spearman(nll, score):+.2f} |" in report and spearman(nll, score) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)  # ties: mean ranks (scipy's value)


def test_callback_skips_naive_only_models_and_too_small_data_unless_asked(datamodule):
    from types import SimpleNamespace

    from autoreg.analysis.quality import SampleQuality, scored_method
    from autoreg.build import build_module

    naive_only = torch.nn.Linear(1, 1)  # a network without `fast_stepper`
    naive_only.image_shape, naive_only.num_classes = (1, 4, 4), None
    pixelcnn = build_module(compose_train(["model.channels=8", "model.depth=1"])).net
    pixelcnn_pp = build_module(compose_train(["model=pixelcnn_pp", "model.channels=8", "model.nr_resnet=1"])).net
    assert scored_method("auto", naive_only) is None and scored_method("naive", naive_only) == "naive"
    assert scored_method("auto", pixelcnn) == "fast" and scored_method("auto", pixelcnn_pp) == "fast"
    with pytest.raises(ConfigError, match="callbacks.sample_quality.method=slow"):
        scored_method("slow", pixelcnn)

    tiny = SimpleNamespace(splits={"test": range(10), "val": range(500)})
    assert SampleQuality()._num(tiny) == 0 and SampleQuality()._num(datamodule) == 400 and SampleQuality(num=7)._num(tiny) == 7
    with pytest.raises(ConfigError, match="callbacks.sample_quality.num=-1"):
        SampleQuality(num=-1)
