"""Resources: the settings (``BIRDASSETS_HOME`` and what it configures) as one Dagster resource."""

from functools import cached_property

import dagster as dg

from birdassets.settings import Settings, load_settings
from birdassets.store import MetricsStore


class BirdassetsHome(dg.ConfigurableResource):
    """Where birdassets keeps data, checkpoints and the metrics database (``BIRDASSETS_HOME``)."""

    home: str

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.home)

    def store(self) -> MetricsStore:
        store = MetricsStore(self.settings.layout.db_path)
        store.ensure_schema()
        return store
