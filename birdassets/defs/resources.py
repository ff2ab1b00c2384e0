"""Resources: the settings (``BIRDASSETS_HOME`` and what it configures) as one Dagster resource."""

from functools import cached_property

import dagster as dg

from birdassets.settings import Settings, load_settings


class BirdassetsHome(dg.ConfigurableResource):
    """Where birdassets keeps data, checkpoints and the metrics database (``BIRDASSETS_HOME``)."""

    home: str

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.home)
