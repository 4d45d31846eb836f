"""The Sweeper class Hydra discovers; the work is in ``_impl`` (imported only when used).

Hydra imports every public module of ``hydra_plugins`` at each start (and skips ``_``-prefixed
ones), so this module stays light and Optuna is loaded only when a sweep runs.
"""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class VanOptunaSweeper(Sweeper):
    """Optuna 5 ask/tell over Hydra jobs; settings in :class:`config.VanOptunaSweeperConf`."""

    def __init__(self, **settings: Any) -> None:
        from ._impl import VanOptunaSweeperImpl

        self.sweeper = VanOptunaSweeperImpl(**settings)

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweeper.sweep(arguments)
