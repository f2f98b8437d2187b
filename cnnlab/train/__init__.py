"""Training, evaluation and prediction: one loop for every model.

    >>> import cnnlab
    >>> result = cnnlab.train("lenet5", "mnist", epochs=2, out="runs/lenet5")  # writes a run
    >>> cnnlab.evaluate(result.run_dir)["top1"]          # on the dataset it trained on
    >>> cnnlab.predict(result.run_dir, ["digit.png"], topk=3)
    >>> cnnlab.train("lenet5", "mnist", epochs=1).metrics    # out=None: nothing written

Layers, each importing only those before it: config, schedule -> distributed -> checkpoint ->
loop (fit one epoch, evaluate, callbacks) -> logging -> inference -> run (run folder, train()).
"""

from cnnlab.train.config import TrainConfig, list_recipes, recipe_path, resolve_config
from cnnlab.train.inference import evaluate, predict
from cnnlab.train.logging import PlainProgress, Progress, RichProgress
from cnnlab.train.loop import Callback, Step, TrainingDiverged, TrainingInterrupted, TrainState
from cnnlab.train.run import RunFolder, TrainResult, default_out, train
from cnnlab.train.schedule import lr_at

__all__ = ["Callback", "PlainProgress", "Progress", "RichProgress", "RunFolder", "Step",
           "TrainConfig", "TrainResult", "TrainState", "TrainingDiverged", "TrainingInterrupted",
           "default_out", "evaluate", "list_recipes", "lr_at", "predict", "recipe_path",
           "resolve_config", "train"]
