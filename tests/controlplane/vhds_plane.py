"""Three services with a host of their own, so each route is a virtual host of its own on Delta streams
(VHDS): the config the VHDS and Delta-sharing tests run their control plane on."""

from __future__ import annotations

from controlplane.cache import Group
from tests.controlplane.xds_fixtures import ToyConfig

SERVICES = {"accounts": 9001, "billing": 9002, "carts": 9003}
CONFIG = ToyConfig(services=SERVICES, own_hosts=True)
HOSTS = ["public/accounts.test", "public/billing.test", "public/carts.test"]
EU = Group("eu-west", "edge")
