"""Reading a run's TensorBoard event files with tensorboard's own loader (no log parsing).

One run directory holds the Lightning logger's `events.out.tfevents.*` files: scalars
(`train/nll`, `val/nll`, ...), images (`samples`, `receptive_field`) and the HParams-plugin
summaries (the run's flat config and the names of its metrics). Reports and tests both read runs
through `read_events`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def read_events(run_dir: Path) -> dict[str, Any]:
    """One run's events as plain Python values:

    - `scalars`: tag -> [values] and `steps`: tag -> [global steps], in logging order
    - `images`: tag -> [(step, encoded PNG bytes)]
    - `hparams`: hparam key (the column's display name) -> value; `metrics`: the HParams metric
      tags; `columns`: the HParams experiment's columns in order, as (key, type name, differs,
      discrete domain)
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
    from tensorboard.util import tensor_util

    out: dict[str, Any] = {"scalars": {}, "steps": {}, "images": {}, "hparams": {}, "metrics": [], "columns": []}
    values, display = {}, {}
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                if plugin == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    if data.HasField("session_start_info"):
                        for key, v in data.session_start_info.hparams.items():
                            values[key] = v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                    if data.HasField("experiment"):
                        out["metrics"] = [m.name.tag for m in data.experiment.metric_infos]
                        infos = data.experiment.hparam_infos
                        display = {i.name: i.display_name or i.name for i in infos}
                        out["columns"] = [(display[i.name], api_pb2.DataType.Name(i.type), i.differs,
                                           [getattr(v, v.WhichOneof("kind")) for v in i.domain_discrete.values]) for i in infos]
                elif plugin == "images":  # the loader turns image summaries into [width, height, png]
                    png = tensor_util.make_ndarray(value.tensor)[2]
                    out["images"].setdefault(value.tag, []).append((event.step, png))
                elif value.HasField("simple_value") or plugin == "scalars":
                    v = value.simple_value if value.HasField("simple_value") else float(tensor_util.make_ndarray(value.tensor))
                    out["scalars"].setdefault(value.tag, []).append(v)
                    out["steps"].setdefault(value.tag, []).append(event.step)
    out["hparams"] = {display.get(name, name): v for name, v in values.items()}
    return out
