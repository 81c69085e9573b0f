"""Load a cell's saved pruned model with plain PyTorch and recompute its clean accuracy on the stored test points.

Usage: python docs/load_pruned_model.py results/digits-smoke/digits/digits_cnn/hydra/unstructured-s0.9-seed0.json
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from benchmark.data import first_n, load_dataset
from benchmark.models import create_model

result_file = Path(sys.argv[1])
r = json.loads(result_file.read_text())
c, d = r["config"], r["config"]["dataset"]
data = load_dataset(d["name"], data_dir=d["data_dir"], val_fraction=d["val_fraction"], split_seed=d["split_seed"],
                    **d["options"])
normalize = d["name"] if c.get("normalize") else None  # the Normalize layer, if the suite used one
model = create_model(c["model"], data.num_classes, data.input_shape[0], normalize=normalize)
model.load_state_dict(load_file(result_file.parents[3] / r["model_file"]["path"]))
x, y = first_n(data.test, r["evaluation"]["n_examples"])
with torch.no_grad():
    clean = (model.eval()(x).argmax(1) == y).float().mean().item()
print(f"clean accuracy {clean:.4f} (stored {r['evaluation']['clean_accuracy']:.4f})")
