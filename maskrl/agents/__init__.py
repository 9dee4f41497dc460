"""What turns an algorithm name, an env and hyperparameters into a model and a run.

``train.py`` and ``evaluate.py`` (:mod:`maskrl.train`, :mod:`maskrl.evaluate`) are thin command lines over this
package; the benchmarks and the tuner use it directly. One module per concept:

- :mod:`~maskrl.agents.registry`: the ``--algo`` names (:data:`~maskrl.agents.registry.ALGOS`) and the one
  :func:`~maskrl.agents.registry.build_model` (name + env + hyperparameters -> untrained model).
- :mod:`~maskrl.agents.hyperparams`: the per-env hyperparameter files (``hyperparams/<EnvName>.yml``) and
  ``key=value`` overrides, read without ``eval``.
- :mod:`~maskrl.agents.env_setup`: the (vectorised) envs an algorithm trains on, with the mask where it needs it.
- :mod:`~maskrl.agents.run_folder`: :class:`~maskrl.agents.run_folder.RunFolder`, the one owner of a run folder's
  file names (``config.yml``, ``best_model.zip``, ``checkpoints/``, ...) and of its lock.
- :mod:`~maskrl.agents.training`: a configuration -> a trained, evaluated run; resuming and extending one.
- :mod:`~maskrl.agents.evaluation`: playing episodes with a model and summarising or recording them; finding a
  run's model.
- :mod:`~maskrl.agents.callbacks`: the callbacks of a run beyond SB3's (mask metrics, progress lines, the ones the
  model's parts ask for).
- :mod:`~maskrl.agents.checkpoints`: atomic, resumable checkpoints and graceful interruption.
- :mod:`~maskrl.agents.safe_load`: loading a run's model from its plain config and tensors, without unpickling.
- :mod:`~maskrl.agents.dqn`: our masked DQN and QR-DQN (mask-aware exploration and TD targets).
- :mod:`~maskrl.agents.replay_buffers`: their default replay buffer, SB3's ``DictReplayBuffer`` specialised to
  a mask plus one feature array.
- :mod:`~maskrl.agents.self_play`: training one seat of a turn-based PettingZoo game against a pool of opponents
  (random, look-ahead, snapshots of the learner) and evaluating win/draw/loss against fixed ones.
- :mod:`~maskrl.agents.contrastive`: our ContrastivePPO (PPO + masked contrastive auxiliary loss).
- :mod:`~maskrl.agents.search_spaces`: the hyperparameter search space of every algorithm, for tuning.
- :mod:`~maskrl.agents.tuning`: hyperparameter tuning with Optuna (``train.py -optimize``).
"""
