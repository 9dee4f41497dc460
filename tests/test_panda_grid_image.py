"""Tests of PandaGrid's image observation mode (``obs_mode="image"``, ``maskrl/PandaGridImage-v0``).

The env contract (checkers, including the egocentric view, kwargs errors, masks, ...) is checked in
test_env_contract.py.
"""

from __future__ import annotations

import hashlib

import gymnasium as gym
import numpy as np
import pytest

import maskrl  # noqa: F401  (registers the envs)
from maskrl.envs.panda_grid import IMAGE_COLOURS, PandaGridEnv

FOG = np.array(IMAGE_COLOURS["fog"], dtype=np.uint8)

# sha256 of 300 default-mode steps (observations and rewards) for reset(seed=7) and actions from
# default_rng(123), computed with panda_grid.py as it was before the image mode was added.
DEFAULT_MODE_DIGEST = "a6c6854485edbf19fe6c8578e877b981ad5c18c521e6de2469312c4f85241f33"


def _digest(env: PandaGridEnv) -> str:
    h = hashlib.sha256()
    rng = np.random.default_rng(123)
    obs, _ = env.reset(seed=7)
    for _ in range(300):
        for key in sorted(obs):
            h.update(key.encode())
            h.update(obs[key].tobytes())
        obs, reward, terminated, truncated, _ = env.step(int(rng.integers(5)))
        h.update(np.float64(reward).tobytes())
        if terminated or truncated:
            obs, _ = env.reset()
    return h.hexdigest()


def _seen(env: PandaGridEnv) -> np.ndarray:
    """Bool ``(size, size)``: the cells the panda currently sees."""
    return env._vis[env._panda].reshape(env.size, env.size)


def _cells(image: np.ndarray, size: int, px: int) -> np.ndarray:
    """(size, size, px, px, 3) view: the pixels of every cell."""
    return image.reshape(size, px, size, px, 3).transpose(0, 2, 1, 3, 4)


def test_default_mode_is_unchanged() -> None:
    env = PandaGridEnv()
    assert set(env.observation_space.spaces) == {"entities", "visibility", "action_mask"}
    assert _digest(env) == DEFAULT_MODE_DIGEST


@pytest.mark.parametrize(
    ("make", "side"), [(lambda: gym.make("maskrl/PandaGridImage-v0"), 40), (lambda: PandaGridEnv(obs_mode="image"), 24)]
)
def test_image_mode_spaces(make, side) -> None:
    space = make().observation_space
    assert set(space.spaces) == {"observation", "action_mask"}
    assert space["observation"].shape == (side, side, 3) and space["observation"].dtype == np.uint8


@pytest.mark.parametrize(("size", "px", "view_radius"), [(8, 3, None), (6, 1, 2.5), (9, 4, None)])
def test_fog_exactly_where_the_panda_does_not_see(size: int, px: int, view_radius: float | None) -> None:
    env = PandaGridEnv(size=size, obs_mode="image", image_cell_px=px, view_radius=view_radius)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=3)
    n_fog_seen = 0
    for _ in range(120):
        image = obs["observation"]
        assert image.shape == (size * px, size * px, 3) and image.dtype == np.uint8
        cells = _cells(image, size, px)
        # Every cell is one flat colour.
        assert (cells == cells[:, :, :1, :1]).all()
        colour = cells[:, :, 0, 0]
        fog = (colour == FOG).all(-1)
        np.testing.assert_array_equal(fog, ~_seen(env))
        n_fog_seen += int(fog.sum())
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(5)))
        if terminated or truncated:
            obs, _ = env.reset()
    assert n_fog_seen > 0  # the check above was not vacuous


def test_image_shows_seen_entities_and_hides_hidden_ones() -> None:
    # Panda at (2, 0) behind a wall of trees: the scorpion (2, 5) and a watermelon (3, 4) are hidden.
    layout = [
        ".W......",
        "..T.....",
        "P.T..S..",
        "..T.W...",
        "........",
        "........",
        "D.......",
        "........",
    ]
    env = PandaGridEnv(obs_mode="image", image_cell_px=2)
    obs, _ = env.reset(seed=0, options={"layout": layout})
    colour = _cells(obs["observation"], 8, 2)[:, :, 0, 0]
    palette = {name: np.array(colour, dtype=np.uint8) for name, colour in IMAGE_COLOURS.items()}
    np.testing.assert_array_equal(colour[2, 0], palette["panda"])
    np.testing.assert_array_equal(colour[6, 0], palette["dragon"])
    np.testing.assert_array_equal(colour[0, 1], palette["watermelon"])
    np.testing.assert_array_equal(colour[1, 2], palette["tree"])
    np.testing.assert_array_equal(colour[2, 1], palette["ground"])
    vis = _seen(env)
    assert not vis[2, 5] and not vis[3, 4]
    np.testing.assert_array_equal(colour[2, 5], palette["fog"])  # hidden scorpion: only fog
    np.testing.assert_array_equal(colour[3, 4], palette["fog"])  # hidden watermelon: only fog
    # All palette colours are distinct, so a cell's colour names exactly one thing.
    assert len({tuple(c) for c in palette.values()}) == len(palette)


def test_egocentric_view_is_the_global_view_shifted_to_the_panda() -> None:
    size, px = 7, 2
    glob = PandaGridEnv(size=size, obs_mode="image", image_cell_px=px)
    ego = PandaGridEnv(size=size, obs_mode="image", image_cell_px=px, image_view="egocentric")
    assert ego.observation_space["observation"].shape == ((2 * size - 1) * px, (2 * size - 1) * px, 3)
    wall = np.array(IMAGE_COLOURS["wall"], dtype=np.uint8)
    rng = np.random.default_rng(2)
    og, _ = glob.reset(seed=4)
    oe, _ = ego.reset(seed=4)
    for _ in range(60):
        g = _cells(og["observation"], size, px)
        e = _cells(oe["observation"], 2 * size - 1, px)
        assert (e == e[:, :, :1, :1]).all()
        pr, pc = divmod(ego._panda, size)
        window = e[size - 1 - pr : 2 * size - 1 - pr, size - 1 - pc : 2 * size - 1 - pc]
        np.testing.assert_array_equal(window, g)  # the grid, shifted so that the panda is the centre cell
        np.testing.assert_array_equal(e[size - 1, size - 1, 0, 0], IMAGE_COLOURS["panda"])
        outside = np.ones((2 * size - 1, 2 * size - 1), dtype=bool)
        outside[size - 1 - pr : 2 * size - 1 - pr, size - 1 - pc : 2 * size - 1 - pc] = False
        assert (e[outside] == wall).all()
        action = int(rng.integers(5))
        og, _, terminated, truncated, _ = glob.step(action)
        oe, *_ = ego.step(action)
        if terminated or truncated:
            og, _ = glob.reset()
            oe, _ = ego.reset()


def test_image_mode_has_the_same_dynamics_as_the_default_mode() -> None:
    a, b = PandaGridEnv(), PandaGridEnv(obs_mode="image")
    rng = np.random.default_rng(1)
    oa, _ = a.reset(seed=5)
    ob, _ = b.reset(seed=5)
    for _ in range(200):
        np.testing.assert_array_equal(oa["action_mask"], ob["action_mask"])
        action = int(rng.integers(5))
        oa, ra, ta, tra, ia = a.step(action)
        ob, rb, tb, trb, ib = b.step(action)
        assert (ra, ta, tra, ia) == (rb, tb, trb, ib)
        if ta or tra:
            oa, _ = a.reset()
            ob, _ = b.reset()


def test_registered_image_env_works_with_sb3_default_cnn() -> None:
    # Before: 24 x 24 pixels, and SB3's NatureCNN (the default of "MultiInputPolicy") died inside torch.
    from sb3_contrib import MaskablePPO

    model = MaskablePPO("MultiInputPolicy", gym.make("maskrl/PandaGridImage-v0"), n_steps=16, batch_size=16, seed=0)
    assert model.observation_space["observation"].shape == (3, 40, 40)  # NatureCNN needs at least 36 x 36
    model.learn(16)
    assert model.num_timesteps == 16
