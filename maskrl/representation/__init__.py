"""Representation-level masking, the fourth level of masking: hide *tokens* from a network so that it learns a
representation, rather than hiding actions (the masked distributions) or entities (the visibility mask).

Two uses, both built on the attention masks of :mod:`maskrl.policies.attention_masks` (``True`` = may attend) and the
one transformer block of :mod:`maskrl.policies.attention_block`.

**Masked trajectory pretraining** (SMART, Masked Trajectory Models), a pipeline run in this order:

1. :mod:`maskrl.representation.collect`: play an env with a random-valid or trained policy and record reward-free
   trajectories (``python -m maskrl.representation.collect``, console script ``maskrl-collect-trajectories``);
2. :mod:`maskrl.representation.dataset`: their ``.npz`` file format (read as hostile) and the sampling of windows
   ``o1 a1 ... oK``, zero-padded before an episode's first step;
3. :mod:`maskrl.representation.window`: :class:`~maskrl.representation.window.TrajectoryWindow`, the env wrapper
   that shows an agent the same windows online (keys ``window_observations``, ``window_actions``, ``window_valid``
   of :mod:`maskrl.masks`), so that pretraining and fine-tuning see one layout;
4. :mod:`maskrl.representation.objectives`: the self-supervised objectives (forward dynamics against a momentum
   target, inverse dynamics under the inverse-dynamics mask, masked reconstruction with a masking curriculum);
5. :mod:`maskrl.representation.pretrain`: train the encoder on a dataset and write it to a folder
   (``python -m maskrl.representation.pretrain``, console script ``maskrl-pretrain``);
6. the encoder, :class:`~maskrl.policies.trajectory_transformer.TrajectoryTransformer` with its folder format
   (``encoder.pt`` + ``encoder.json``), and :class:`~maskrl.policies.trajectory_extractor.TrajectoryExtractor`, the
   SB3 features extractor that loads it for fine-tuning. Both are networks a policy is built from, so they live in
   :mod:`maskrl.policies` (which imports nothing from this package).

**Masked contrastive auxiliary loss** (M-CURL), trained alongside RL rather than before it:
:mod:`maskrl.representation.contrastive` holds the InfoNCE loss, frame masking, the sequence reconstructor and the
model that wires them around the policy's own encoder; :class:`maskrl.agents.contrastive.ContrastivePPO` is the
algorithm that adds it to PPO's loss.

Both the forward objective's target encoder and the contrastive key encoder follow their online network by
:func:`maskrl.representation.momentum.momentum_update`.

Importing this package loads nothing (``maskrl.envs`` imports the window wrapper through it); import the modules.
"""
