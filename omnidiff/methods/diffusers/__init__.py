"""Other people's models: diffusers networks, scheduler configs and folders.

* :mod:`~omnidiff.methods.diffusers.network` — a diffusers model class (``UNet2DModel``,
  ``UNet2DConditionModel``, ...) as an omnidiff network ``net(x, t, cond, drop)``: continuous
  time ``t`` becomes the discrete timestep ``k = N t - 1`` it was trained on;
* :mod:`~omnidiff.methods.diffusers.scheduler` — a scheduler config as an omnidiff schedule
  and prediction (exactly, or refused in one line naming the key), and the timesteps a
  diffusers scheduler would use (``grid="diffusers"``);
* :mod:`~omnidiff.methods.diffusers.folder` — a ``save_pretrained`` / pipeline folder read as
  a model.pt payload.

diffusers is optional (``pip install omnidiff[diffusers]``): it is imported when one of these
is used, and its absence is one line.
"""

from omnidiff.methods.diffusers.folder import is_diffusers_folder, read_diffusers_folder
from omnidiff.methods.diffusers.network import DiffusersNet, build_diffusers_net, diffusers
from omnidiff.methods.diffusers.scheduler import diffusers_times, schedule_of_scheduler

__all__ = ["DiffusersNet", "build_diffusers_net", "diffusers", "diffusers_times",
           "schedule_of_scheduler", "is_diffusers_folder", "read_diffusers_folder"]
