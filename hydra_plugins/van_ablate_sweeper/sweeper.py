"""The Sweeper class Hydra discovers: a shim over :mod:`van_ablate.sweep.sweeper`.

Hydra imports every public module of ``hydra_plugins`` at each start, so this module stays
light: Optuna and the sweep logic are imported only when a sweep runs.
"""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.van_ablate_sweeper.config import VanOptunaSweeperConf


class VanOptunaSweeper(Sweeper):
    """Optuna 5 ask/tell over Hydra jobs; settings in :class:`config.VanOptunaSweeperConf`."""

    def __init__(self, **settings: Any) -> None:
        from van_ablate.sweep.sweeper import VanOptunaSweeperImpl

        self.sweeper = VanOptunaSweeperImpl(VanOptunaSweeperConf(**settings))

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        """Run the study; returns None as the official plugin's ``sweep`` does (the summary is
        in ``optimization_results.yaml`` and the study)."""
        self.sweeper.sweep(arguments)
