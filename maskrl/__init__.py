"""maskrl: masking for deep reinforcement learning on the Stable-Baselines3 stack.

Importing the package registers its gymnasium environments (``maskrl/Kart-v1``, ...).
"""

from maskrl import envs as envs

__version__ = "0.1.0"
