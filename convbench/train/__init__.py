"""A compact trainer on convbench's own kernels: layers, initialisers, optimisers, data, training.

    from convbench.train import Adam, SGD, TrainConfig, train
"""
from convbench.train.optim import SGD, Adagrad, Adam, LRSchedule, RMSprop, make_optimizer  # noqa: F401
from convbench.train.trainer import TrainConfig, evaluate_checkpoint, train, tune  # noqa: F401
