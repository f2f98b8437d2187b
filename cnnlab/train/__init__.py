"""Training, evaluation and prediction: one loop for every model.

    >>> import cnnlab
    >>> result = cnnlab.train("lenet5", "mnist", epochs=2)      # run folder + metrics
    >>> cnnlab.evaluate(result.run_dir, "mnist")["top1"]
    >>> cnnlab.predict(result.run_dir, ["digit.png"], topk=3)
"""

from cnnlab.train.config import TrainConfig, list_recipes, recipe_path, resolve_config
from cnnlab.train.inference import evaluate, predict
from cnnlab.train.logging import PlainProgress, Progress, RichProgress
from cnnlab.train.loop import TrainingDiverged, TrainingInterrupted, TrainResult, train
from cnnlab.train.schedule import lr_at

__all__ = ["PlainProgress", "Progress", "RichProgress", "TrainConfig", "TrainResult",
           "TrainingDiverged", "TrainingInterrupted", "evaluate", "list_recipes", "lr_at",
           "predict", "recipe_path", "resolve_config", "train"]
