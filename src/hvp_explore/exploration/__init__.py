r"""e-GLASS: new solutions of an inverse problem from the latent geometry at a first solution.

The modules follow the exploration's own order: :mod:`~hvp_explore.exploration.directions` (coupling,
Algorithm 1, generalized directions, combinations), :mod:`~hvp_explore.exploration.steps` (the
largest feasible step along each, as saved), :mod:`~hvp_explore.exploration.distances` (perceptual
distances between solutions), and :mod:`~hvp_explore.exploration.explorer`: :func:`explore`, the
whole pipeline, and the :class:`Explorer` that loads a generator, a metric and a problem once and runs
the stages; :mod:`~hvp_explore.exploration.frames` renders the frames of ``report.html``'s sliders. See
``docs/exploration.md``.
"""

from hvp_explore.exploration.directions import (
    Direction,
    Projection,
    combine_directions,
    coupling_matrix,
    default_k_y,
    eglass_projection,
    make_directions,
    num_directions,
    significant_couplings,
)
from hvp_explore.exploration.distances import pairwise_distances, unobserved_share
from hvp_explore.exploration.explorer import EigenStage, ExplorationResult, Explorer, Solution, eigenpairs, explore, render_solutions
from hvp_explore.exploration.frames import Frames, FrameStrip, exploration_frames
from hvp_explore.exploration.steps import Step, default_eta_max, deliver, ellipsoid_steps, feasible_steps, predicted_steps

__all__ = ["explore", "Explorer", "eigenpairs", "EigenStage", "ExplorationResult", "Solution", "render_solutions", "Direction", "Projection", "coupling_matrix",
           "significant_couplings", "eglass_projection", "make_directions", "combine_directions", "default_k_y", "num_directions",
           "Step", "feasible_steps", "ellipsoid_steps", "predicted_steps", "deliver", "default_eta_max", "pairwise_distances", "unobserved_share",
           "Frames", "FrameStrip", "exploration_frames"]
