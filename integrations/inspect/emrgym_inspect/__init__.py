"""EMRGym for Inspect AI: `inspect eval emrgym_inspect/emrgym` (docs/inspect.md)."""

from .task import dataset, emrgym, emrgym_agent, emrgym_scorer, episode_tools, progress, select, server_url

__all__ = ["dataset", "emrgym", "emrgym_agent", "emrgym_scorer", "episode_tools", "progress", "select", "server_url"]
