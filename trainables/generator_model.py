"""The generator as an MLflow pyfunc model, logged as code (no pickled objects).

The model's artifact `checkpoint` is the dict written by `generator_checkpoint`; loading rebuilds
the networks from their config and reads weights with torch.load(weights_only=True)."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """predict(DataFrame with columns `label`, `num`, optional `seed`) -> one uint8 array per row.

    Raw generator samples: no score filter, no refiner. `gantune generate` draws images exactly
    as the trial did (filter and refiner included)."""

    def load_context(self, context) -> None:
        from gantune.trainables.gans import load_generators

        self.generators = load_generators(context.artifacts["checkpoint"])

    def predict(self, context, model_input: pd.DataFrame, params=None):
        rows = []
        for _, row in model_input.iterrows():
            gan = self.generators[int(row["label"])]
            images = gan.sample(int(row["num"]), seed=int(row.get("seed", 0)))
            rows.append(((images.cpu().numpy() + 1) * 127.5).round().astype(np.uint8))
        return rows


mlflow.models.set_model(GeneratorModel())
